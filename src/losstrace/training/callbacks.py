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
read outside the replicas, are the global sums. (Keras would run an `async_safe` batch
hook on a worker thread, but not on TensorFlow, whose backend is not thread-safe: the
hook costs a host round trip per step, ~0.1 ms on CPU.)

With `dynamics`, it also records per epoch each layer's gradient norm over the epoch's
own training steps (root mean square and maximum of the per-step norms, before any
clipping) and its weight-update ratio ||Δw|| / ||w|| over the epoch: vanishing or
exploding gradients and a learning rate too small or too large for a layer show up
there first. The norms are taken where the optimizer receives the gradients, inside
Keras' compiled train step (see `GradientNorms`), instead of by an extra forward and
backward pass over a fixed probe batch: that pass needed a second graph traced (~0.25 s)
and cost ~5 ms per epoch, 10% of the default Japanese Vowels training on its own.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import keras
import numpy as np

from losstrace.record import contract


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
    dynamics: list[dict] = field(default_factory=list)  # epoch, layer, grad_norm, grad_norm_max, update_ratio
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
        return cls(
            keep(state.get("batches", [])),
            keep(state.get("epochs", [])),
            keep(state.get("dynamics", [])),
            Divergence(**div) if div and div["epoch"] < completed_epochs else None,
            float(state.get("seconds", 0.0)),
            state.get("kept_epoch"),
        )


def epoch_metrics(rec: Recorder, epoch: int) -> tuple[dict[str, float], list[int], list[float]]:
    """The MLflow record of one epoch: curve metrics and dynamics (step=epoch), and the
    true per-batch losses (step=global batch step). Built from the Recorder alone, so a
    resumed run can log an epoch that was committed but never logged. Records are in
    epoch order, so this reads from the end: the usual call (the epoch just finished)
    costs the epoch's own rows, not the whole run's."""
    row = next(r for r in reversed(rec.epochs) if r["epoch"] == epoch)
    metrics = {k: v for k, v in row.items() if k != "epoch"}
    for d in _epoch_rows(rec.dynamics, epoch):
        for series in contract.DYNAMICS_SERIES:
            metrics[contract.dynamics_metric(series, d["layer"])] = d[series]
    rows = _epoch_rows(rec.batches, epoch)
    return metrics, [r["step"] for r in rows], [r["loss"] for r in rows]


def _epoch_rows(rows: list[dict], epoch: int) -> list[dict]:
    """The rows of `epoch` from a list sorted by epoch, scanning back from the end."""
    out: list[dict] = []
    for r in reversed(rows):
        if r["epoch"] < epoch:
            break
        if r["epoch"] == epoch:
            out.append(r)
    return out[::-1]


def log_epoch(logger, rec: Recorder, epoch: int, skip_batch_steps: frozenset[int] = frozenset()) -> None:
    """Two MLflow calls per epoch: batch losses first, curve metrics last, so a run that
    has `loss` at step e has all of epoch e (what resume checks)."""
    metrics, steps, losses = epoch_metrics(rec, epoch)
    kept = [(s, v) for s, v in zip(steps, losses) if s not in skip_batch_steps]
    if kept:
        logger.log_series(contract.BATCH_LOSS, [s for s, _ in kept], [v for _, v in kept])
    logger.log_metrics(metrics, step=epoch)


class DynamicsCallback(keras.callbacks.Callback):
    """Recovers true per-batch losses, stops at the first NaN/inf, records per-epoch
    dynamics (gradient norms of the training steps, update ratios), and logs once per epoch (or leaves logging to the
    resume backup, which must commit the epoch first: `defer_logging`)."""

    def __init__(
        self,
        recorder: Recorder,
        n_train: int,
        batch_size: int,
        logger=None,
        first_epoch: int = 0,
        dynamics: bool = False,
        defer_logging: bool = False,
        exact_epoch_loss: bool = False,
    ):
        super().__init__()
        self.rec, self.n_train, self.batch_size, self.logger = recorder, n_train, batch_size, logger
        self.dynamics, self.defer_logging = dynamics, defer_logging
        # Under tf.distribute Keras' epoch `loss` is a mean of per-replica means; replace it
        # (and val_loss) with the tracker's exact global mean, so batch losses average back
        # to it. Other metrics stay Keras' own (exact when replicas get equal shares).
        self.exact_epoch_loss = exact_epoch_loss
        self._epoch = first_epoch
        self._tracker = None
        self._raw: dict[int, tuple[float, float, float]] = {}  # batch -> (running mean, loss sum, samples)
        self._start_weights: dict[str, list[np.ndarray]] | None = None
        self._end_weights: dict[str, list[np.ndarray]] | None = None
        self._norms: GradientNorms | None = None

    def on_train_begin(self, logs=None):
        self._raw = {}
        self._tracker = next((m for m in self.model.metrics if m.name == "loss" and hasattr(m, "count")), None)
        self._end_weights = None  # weights may have been restored (resume) since any last fit
        if self.dynamics:  # before the first step: Keras traces its train step lazily
            self._norms = GradientNorms(self.model, self._layers())

    def on_train_end(self, logs=None):
        if self._norms is not None:
            self._norms.detach()
            self._norms = None
        if self.logger is not None and not self.defer_logging:
            self.logger.flush()  # the last epochs go now, not after saving and diagnosis

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch, self._raw = epoch, {}
        if self._norms is not None:
            # Last epoch's end is this epoch's start: nothing touches the weights in between
            # (callbacks restore them at train begin or end), so copy them once per epoch.
            self._start_weights = self._end_weights or self._layer_weights()
        if self._norms is not None:
            self._norms.reset()
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        """Stores this step's figures (rows are built at epoch end) and stops on NaN/inf."""
        mean = float(logs["loss"])
        if self._tracker is not None:
            total, seen = _read(self._tracker.total), _read(self._tracker.count)
        else:
            total = seen = math.nan  # a model without Keras' loss tracker: rebuilt from running means
        self._raw[batch] = (mean, total, seen)
        if not math.isfinite(mean):
            self.model.stop_training = True

    def _batch_rows(self) -> list[dict]:
        """The epoch's true batch losses, in batch order: (T_k − T_{k−1}) / (S_k − S_{k−1})."""
        rows: list[dict] = []
        prev_mean = prev_total = prev_seen = 0.0
        for batch in sorted(self._raw):
            mean, total, seen = self._raw[batch]
            if math.isnan(seen):  # fixed batch sizes, running means
                n = float(min(self.batch_size, self.n_train - prev_seen))
                seen, total = prev_seen + n, (prev_seen + n) * mean
                loss = (seen * mean - prev_seen * prev_mean) / n if n > 0 else mean
            else:
                n = seen - prev_seen
                loss = (total - prev_total) / n if n > 0 else mean
            rows.append(
                {
                    "step": len(self.rec.batches) + len(rows),
                    "epoch": self._epoch,
                    "batch": batch,
                    "loss": loss,
                    "size": int(round(n)),
                }
            )
            if not math.isfinite(mean) and self.rec.divergence is None:
                self.rec.divergence = Divergence(self._epoch, batch, mean)
            prev_mean, prev_total, prev_seen = mean, total, seen
        return rows

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        rows = self._batch_rows()
        seen = sum(r["size"] for r in rows)
        if self.exact_epoch_loss and seen > 0:
            logs["loss"] = sum(r["loss"] * r["size"] for r in rows) / seen
            if "val_loss" in logs and self._tracker is not None:  # evaluation just refilled the tracker
                logs["val_loss"] = _read(self._tracker.total) / max(_read(self._tracker.count), 1.0)
        self.rec.seconds += time.perf_counter() - self._t0
        self.rec.batches.extend(rows)
        self._raw = {}
        lr = _current_lr(self.model)
        self.rec.epochs.append(
            {"epoch": epoch, **{k: float(v) for k, v in logs.items() if k != "learning_rate"}, "lr": lr}
        )
        if self._norms is not None:
            self.rec.dynamics.extend(self._dynamics(epoch))
        if self.logger is not None and not self.defer_logging:
            log_epoch(self.logger, self.rec, epoch)

    # ------------------------------------------------------------------ dynamics

    def _layers(self) -> list:
        return [layer for layer in self.model.layers if layer.trainable_weights]

    def _layer_weights(self) -> dict[str, list[np.ndarray]]:
        return {
            layer.name: [keras.ops.convert_to_numpy(w) for w in layer.trainable_weights] for layer in self._layers()
        }

    def _dynamics(self, epoch: int) -> list[dict]:
        """Per layer: RMS and max gradient norm over the epoch's steps, ||Δw|| / ||w|| over the epoch."""
        rms, peak = self._norms.read()
        end = self._end_weights = self._layer_weights()
        rows = []
        for i, (name, now) in enumerate(end.items()):
            before = self._start_weights.get(name) if self._start_weights else None
            ratio = math.nan
            if before is not None:
                w = math.sqrt(sum(float(np.sum(np.square(b, dtype=np.float64))) for b in before))
                dw = math.sqrt(sum(float(np.sum(np.square(a.astype(np.float64) - b))) for a, b in zip(now, before)))
                ratio = dw / w if w > 0 else math.nan
            rows.append(
                {"epoch": epoch, "layer": name, "grad_norm": rms[i], "grad_norm_max": peak[i], "update_ratio": ratio}
            )
        return rows


class GradientNorms:
    """Each layer's gradient norm at every training step, accumulated inside the train graph.

    For the length of a fit, the innermost optimizer's `apply` (what Keras' train step
    hands the gradients to; under mixed precision the loss-scale wrapper hands it the
    unscaled ones) is wrapped on the instance: before applying, it adds each layer's
    squared gradient norm to a running sum and maximum held in variables. The callback
    reads them once per epoch, so a step costs a few reductions and no host round trip.
    The wrapper is removed at train end, so the saved optimizer is the plain Keras one.

    Under tf.distribute the optimizer sees each replica's local gradients, on its share of
    the batch and scaled by 1/replicas (Keras divides each replica's loss so the sum is the
    global mean): they are scaled back, so a figure is the mean over replica-steps of a
    replica's own gradient norm, read on the chief. The maximum is approximate there:
    replicas update it concurrently.
    """

    def __init__(self, model, layers: list) -> None:
        import tensorflow as tf

        opt = model.optimizer
        while hasattr(opt, "inner_optimizer"):  # LossScaleOptimizer (mixed precision)
            opt = opt.inner_optimizer
        self._opt = opt
        self._replicas = float(model.distribute_strategy.num_replicas_in_sync)
        self._layer_of = {id(v): i for i, layer in enumerate(layers) for v in layer.trainable_weights}
        n = len(layers)
        # Plain host variables, deliberately outside any distribution scope: replicas add to
        # them locally (no cross-replica traffic per step) and the chief reads its own.
        self._sum = tf.Variable(tf.zeros(n, tf.float64), trainable=False)
        self._max = tf.Variable(tf.zeros(n, tf.float64), trainable=False)
        self._steps = tf.Variable(tf.zeros((), tf.float64), trainable=False)
        original = opt.apply

        def apply(grads, trainable_variables=None):
            if trainable_variables is not None:
                self._record(grads, trainable_variables)
            return original(grads, trainable_variables)

        opt.apply = apply

    def _record(self, grads, variables) -> None:
        import tensorflow as tf

        parts: list[list] = [[] for _ in range(self._sum.shape[0])]
        for g, v in zip(grads, variables):
            i = self._layer_of.get(id(v))
            if g is not None and i is not None:
                parts[i].append(_squared_norm(g))
        squares = tf.stack([tf.add_n(p) if p else tf.constant(0.0, tf.float64) for p in parts])
        squares = squares * self._replicas**2  # undo Keras' 1/replicas loss scaling
        self._sum.assign_add(squares)
        self._max.assign(tf.maximum(self._max, squares))
        self._steps.assign_add(1.0)

    def reset(self) -> None:
        for v in (self._sum, self._max, self._steps):
            v.assign(np.zeros(v.shape, np.float64))

    def read(self) -> tuple[list[float], list[float]]:
        """(root mean square, max) of the per-step norms since the last reset, per layer."""
        steps = float(self._steps.numpy())
        if steps == 0:
            return [math.nan] * self._sum.shape[0], [math.nan] * self._sum.shape[0]
        return ([math.sqrt(s / steps) for s in self._sum.numpy()], [math.sqrt(m) for m in self._max.numpy()])

    def detach(self) -> None:
        self._opt.__dict__.pop("apply", None)


def _squared_norm(g):
    import tensorflow as tf

    if isinstance(g, tf.IndexedSlices):  # embeddings: sum the rows of repeated ids first
        ids, pos = tf.unique(g.indices)
        g = tf.math.unsorted_segment_sum(g.values, pos, tf.shape(ids)[0])
    return tf.reduce_sum(tf.square(tf.cast(g, tf.float64)))


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
