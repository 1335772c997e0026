"""Keras callbacks that record training dynamics cheaply for diagnosis and MLflow.

Keras 3 hands `on_train_batch_end` the epoch's running mean loss, not the batch's
own loss. The running mean is the loss tracker's total / count (both summed over
samples), so the true loss of batch k is recovered exactly from two consecutive
states:  (T_k − T_{k−1}) / (S_k − S_{k−1}), with T the summed loss and S the samples
seen so far in the epoch. No extra forward pass is needed, and the batch's size comes
with it: S_k − S_{k−1}, which matters once batches vary in size (length bucketing).
Reading the tracker's variables, not `logs["loss"]`, also keeps this exact under
`tf.distribute`: there `logs["loss"]` is the mean of the replicas' own running means
(wrong whenever a batch splits unevenly), while the tracker's sum-on-read variables,
read outside the replicas, are the global sums.

Per epoch, when given a probe batch, it also records the gradient norm of each layer
on that fixed batch (one extra forward/backward pass per epoch) and the weight-update
ratio ||Δw|| / ||w|| of each layer over the epoch: vanishing or exploding gradients and
a learning rate too small or too large for a layer show up there first.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import keras
import numpy as np


@dataclass
class Divergence:
    epoch: int
    batch: int
    loss: float


@dataclass
class Recorder:
    """What training leaves behind for history.csv, batches.csv, dynamics.csv and the run."""

    batches: list[dict] = field(default_factory=list)  # step, epoch, batch, loss, size
    epochs: list[dict] = field(default_factory=list)  # epoch, loss, val_loss, ..., lr
    dynamics: list[dict] = field(default_factory=list)  # epoch, layer, grad_norm, update_ratio
    divergence: Divergence | None = None
    seconds: float = 0.0
    kept_epoch: int | None = None  # the epoch whose weights the returned model holds
    resumed_from: int | None = None  # epochs restored from a resume backup (None: a fresh fit)

    def to_state(self) -> dict[str, Any]:
        """Plain JSON-able records, for the resume backup."""
        state = asdict(self)
        state["divergence"] = asdict(self.divergence) if self.divergence else None
        return state

    @classmethod
    def from_state(cls, state: dict[str, Any], completed_epochs: int) -> Recorder:
        """Records of the first `completed_epochs` epochs only: rows of an epoch that was
        recorded but not committed (killed in between) are dropped, it runs again."""
        def keep(rows: Iterable[dict]) -> list[dict]:
            return [r for r in rows if r["epoch"] < completed_epochs]

        div = state.get("divergence")
        return cls(keep(state.get("batches", [])), keep(state.get("epochs", [])), keep(state.get("dynamics", [])),
                   Divergence(**div) if div and div["epoch"] < completed_epochs else None,
                   float(state.get("seconds", 0.0)), state.get("kept_epoch"))


def epoch_metrics(rec: Recorder, epoch: int) -> tuple[dict[str, float], list[int], list[float]]:
    """The MLflow record of one epoch: curve metrics and dynamics (step=epoch), and the
    true per-batch losses (step=global batch step). Built from the Recorder alone, so a
    resumed run can log an epoch that was committed but never logged."""
    row = next(r for r in rec.epochs if r["epoch"] == epoch)
    metrics = {k: v for k, v in row.items() if k != "epoch"}
    for d in rec.dynamics:
        if d["epoch"] == epoch:
            metrics[f"grad_norm/{d['layer']}"] = d["grad_norm"]
            metrics[f"update_ratio/{d['layer']}"] = d["update_ratio"]
    rows = [r for r in rec.batches if r["epoch"] == epoch]
    return metrics, [r["step"] for r in rows], [r["loss"] for r in rows]


def log_epoch(logger, rec: Recorder, epoch: int, skip_batch_steps: frozenset[int] = frozenset()) -> None:
    """Two MLflow calls per epoch: batch losses first, curve metrics last, so a run that
    has `loss` at step e has all of epoch e (what resume checks)."""
    metrics, steps, losses = epoch_metrics(rec, epoch)
    kept = [(s, v) for s, v in zip(steps, losses) if s not in skip_batch_steps]
    if kept:
        logger.log_series("batch_loss", [s for s, _ in kept], [v for _, v in kept])
    logger.log_metrics(metrics, step=epoch)


class DynamicsCallback(keras.callbacks.Callback):
    """Recovers true per-batch losses, stops at the first NaN/inf, records per-epoch
    dynamics on a probe batch, and logs once per epoch (or leaves logging to the
    resume backup, which must commit the epoch first: `defer_logging`)."""

    def __init__(self, recorder: Recorder, n_train: int, batch_size: int, logger=None, first_epoch: int = 0,
                 probe: tuple[np.ndarray, np.ndarray] | None = None, defer_logging: bool = False,
                 exact_epoch_loss: bool = False):
        super().__init__()
        self.rec, self.n_train, self.batch_size, self.logger = recorder, n_train, batch_size, logger
        self.probe, self.defer_logging = probe, defer_logging
        # Under tf.distribute Keras' epoch `loss` is a mean of per-replica means; replace it
        # (and val_loss) with the tracker's exact global mean, so batch losses average back
        # to it. Other metrics stay Keras' own (exact when replicas get equal shares).
        self.exact_epoch_loss = exact_epoch_loss
        self._epoch = first_epoch
        self._tracker = None
        self._epoch_rows: list[dict] = []
        self._start_weights: dict[str, list[np.ndarray]] | None = None
        self._grad_fn = None  # the compiled probe pass, built at the first epoch end

    @property
    def step(self) -> int:
        """Global batch step of the next batch: continues after a resumed run's records."""
        return len(self.rec.batches) + len(self._epoch_rows)

    def on_train_begin(self, logs=None):
        self._epoch_rows = []
        self._tracker = next((m for m in self.model.metrics if m.name == "loss" and hasattr(m, "count")), None)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch, self._seen, self._total, self._prev_mean, self._epoch_rows = epoch, 0.0, 0.0, 0.0, []
        self._start_weights = self._layer_weights() if self.probe is not None else None
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        mean = float(logs["loss"])
        if self._tracker is not None:
            total, seen = _read(self._tracker.total), _read(self._tracker.count)
            n = seen - self._seen
            true_loss = (total - self._total) / n if n > 0 else mean
        else:  # a model without Keras' loss tracker: fixed batch sizes, running means
            n = float(min(self.batch_size, self.n_train - self._seen))
            seen, total = self._seen + n, (self._seen + n) * mean
            true_loss = (seen * mean - self._seen * self._prev_mean) / n if n > 0 else mean
        self._seen, self._total, self._prev_mean = seen, total, mean
        self._epoch_rows.append({"step": self.step, "epoch": self._epoch, "batch": batch, "loss": true_loss,
                                 "size": int(round(n))})
        if not math.isfinite(mean):
            self.rec.divergence = Divergence(self._epoch, batch, mean)
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        if self.exact_epoch_loss and self._seen > 0:
            logs["loss"] = self._total / self._seen
            if "val_loss" in logs and self._tracker is not None:  # evaluation just refilled the tracker
                logs["val_loss"] = _read(self._tracker.total) / max(_read(self._tracker.count), 1.0)
        self.rec.seconds += time.perf_counter() - self._t0
        self.rec.batches.extend(self._epoch_rows)
        self._epoch_rows = []
        lr = _current_lr(self.model)
        self.rec.epochs.append({"epoch": epoch, **{k: float(v) for k, v in logs.items() if k != "learning_rate"},
                                "lr": lr})
        if self.probe is not None:
            self.rec.dynamics.extend(self._dynamics(epoch))
        if self.logger is not None and not self.defer_logging:
            log_epoch(self.logger, self.rec, epoch)

    # ------------------------------------------------------------------ dynamics

    def _layers(self) -> list:
        return [layer for layer in self.model.layers if layer.trainable_weights]

    def _layer_weights(self) -> dict[str, list[np.ndarray]]:
        return {layer.name: [keras.ops.convert_to_numpy(w) for w in layer.trainable_weights] for layer in self._layers()}

    def _dynamics(self, epoch: int) -> list[dict]:
        """Per layer: gradient norm on the probe batch now, and ||Δw|| / ||w|| over the epoch."""
        grads = self._probe_grad_norms()
        end = self._layer_weights()
        rows = []
        for name, now in end.items():
            before = self._start_weights.get(name) if self._start_weights else None
            ratio = math.nan
            if before is not None:
                w = math.sqrt(sum(float(np.sum(np.square(b, dtype=np.float64))) for b in before))
                dw = math.sqrt(sum(float(np.sum(np.square(a.astype(np.float64) - b))) for a, b in zip(now, before)))
                ratio = dw / w if w > 0 else math.nan
            rows.append({"epoch": epoch, "layer": name, "grad_norm": grads.get(name, math.nan), "update_ratio": ratio})
        return rows

    def _probe_grad_norms(self) -> dict[str, float]:
        """One forward/backward pass on the fixed probe batch, in inference mode: dropout
        off, so it draws nothing from the random streams training uses (same curves with
        or without dynamics) and the norms compare epoch to epoch. Compiled once: an eager
        recurrent backward pass costs more than a whole small epoch."""
        if self._grad_fn is None:
            self._grad_fn = _probe_function(self.model, self._layers(), *self.probe)
        norms = np.sqrt(keras.ops.convert_to_numpy(self._grad_fn()).astype(np.float64))
        return {layer.name: float(n) for layer, n in zip(self._layers(), norms)}


def _probe_function(model, layers: list, x: np.ndarray, y: np.ndarray):
    """A tf.function returning each layer's summed squared gradient on (x, y)."""
    import tensorflow as tf

    variables = [v for layer in layers for v in layer.trainable_weights]
    sizes = [len(layer.trainable_weights) for layer in layers]
    loss_fn = keras.losses.get(model.loss)
    x, y = tf.constant(x), tf.constant(y)

    def squared(g) -> tf.Tensor:
        if g is None:
            return tf.constant(0.0, tf.float64)
        if isinstance(g, tf.IndexedSlices):  # embeddings: sum the rows of repeated ids first
            ids, pos = tf.unique(g.indices)
            g = tf.math.unsorted_segment_sum(g.values, pos, tf.shape(ids)[0])
        return tf.reduce_sum(tf.square(tf.cast(g, tf.float64)))

    # autograph=False: Keras layers need no AutoGraph conversion (as in Keras' own train
    # function), and skipping it makes tracing several times cheaper.
    @tf.function(autograph=False)
    def per_layer() -> tf.Tensor:
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=False))
            if model.losses:  # L2 penalties are part of what the optimizer follows
                loss = loss + tf.add_n([tf.cast(r, loss.dtype) for r in model.losses])
        squares = [squared(g) for g in tape.gradient(loss, variables)]
        out, i = [], 0
        for k in sizes:
            out.append(tf.add_n(squares[i : i + k]))
            i += k
        return tf.stack(out)

    return per_layer


def _read(variable) -> float:
    return float(keras.ops.convert_to_numpy(variable))


def _current_lr(model) -> float:
    opt = model.optimizer
    lr = opt.learning_rate
    if callable(lr) and not hasattr(lr, "numpy"):
        lr = lr(opt.iterations)
    try:
        return float(keras.ops.convert_to_numpy(lr))
    except Exception:
        return float(lr)
