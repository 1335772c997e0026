"""Keras callbacks that record training dynamics cheaply for diagnosis and MLflow.

Keras 3 hands `on_train_batch_end` the epoch's running mean loss, not the batch's
own loss. The running mean is weighted by samples, so the true loss of batch k is
recovered exactly from two consecutive means:  (S_k·m_k − S_{k−1}·m_{k−1}) / n_k,
with S the samples seen so far in the epoch. No extra forward pass is needed.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import keras


@dataclass
class Divergence:
    epoch: int
    batch: int
    loss: float


@dataclass
class Recorder:
    """What training leaves behind for history.csv, batches.csv and the run."""

    batches: list[dict] = field(default_factory=list)  # step, epoch, batch, loss, size
    epochs: list[dict] = field(default_factory=list)  # epoch, loss, val_loss, ..., lr
    divergence: Divergence | None = None
    seconds: float = 0.0


class DynamicsCallback(keras.callbacks.Callback):
    """Recovers true per-batch losses, stops at the first NaN/inf, logs once per epoch."""

    def __init__(self, recorder: Recorder, n_train: int, batch_size: int, logger=None, first_epoch: int = 0):
        super().__init__()
        self.rec, self.n_train, self.batch_size, self.logger = recorder, n_train, batch_size, logger
        self.step = sum(1 for _ in recorder.batches)
        self._epoch = first_epoch

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch, self._seen, self._prev_mean, self._epoch_rows = epoch, 0, 0.0, []
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        mean = float(logs["loss"])
        n = min(self.batch_size, self.n_train - self._seen)
        seen = self._seen + n
        true_loss = (seen * mean - self._seen * self._prev_mean) / n if n > 0 else mean
        self._seen, self._prev_mean = seen, mean
        row = {"step": self.step, "epoch": self._epoch, "batch": batch, "loss": true_loss, "size": n}
        self._epoch_rows.append(row)
        self.step += 1
        if not math.isfinite(mean):
            self.rec.divergence = Divergence(self._epoch, batch, mean)
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        self.rec.seconds += time.perf_counter() - self._t0
        self.rec.batches.extend(self._epoch_rows)
        lr = _current_lr(self.model)
        row = {"epoch": epoch, **{k: float(v) for k, v in logs.items() if k != "learning_rate"}, "lr": lr}
        self.rec.epochs.append(row)
        if self.logger is not None:
            self.logger.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=epoch)
            self.logger.log_series("batch_loss", [r["step"] for r in self._epoch_rows],
                                   [r["loss"] for r in self._epoch_rows])


def _current_lr(model) -> float:
    opt = model.optimizer
    lr = opt.learning_rate
    if callable(lr) and not hasattr(lr, "numpy"):
        lr = lr(opt.iterations)
    try:
        return float(keras.ops.convert_to_numpy(lr))
    except Exception:
        return float(lr)
