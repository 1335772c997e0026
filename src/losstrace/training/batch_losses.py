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
"""

from __future__ import annotations

import math

import keras

from losstrace.training.recorder import Divergence


class BatchLosses:
    """One epoch's true per-batch losses, recovered from Keras' running means as above."""

    def __init__(self, model, batch_size: int, n_train: int) -> None:
        self.batch_size, self.n_train = batch_size, n_train
        self.tracker = next((m for m in model.metrics if m.name == "loss" and hasattr(m, "count")), None)
        self._raw: dict[int, tuple[float, float, float]] = {}  # batch -> (running mean, loss sum, samples)

    def reset(self) -> None:
        self._raw = {}

    def add(self, batch: int, running_mean: float) -> None:
        """Stores this step's figures; rows are built at epoch end (no work per step beyond two reads)."""
        if self.tracker is not None:
            total, seen = read(self.tracker.total), read(self.tracker.count)
        else:
            total = seen = math.nan  # a model without Keras' loss tracker: rebuilt from running means
        self._raw[batch] = (running_mean, total, seen)

    def rows(self, epoch: int, first_step: int) -> tuple[list[dict], Divergence | None]:
        """The epoch's rows in batch order, (T_k − T_{k−1}) / (S_k − S_{k−1}) each, and the
        first batch whose running mean was NaN/inf (None if none)."""
        rows: list[dict] = []
        divergence = None
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
            step = first_step + len(rows)
            rows.append({"step": step, "epoch": epoch, "batch": batch, "loss": loss, "size": int(round(n))})
            if not math.isfinite(mean) and divergence is None:
                divergence = Divergence(epoch, batch, mean)
            prev_mean, prev_total, prev_seen = mean, total, seen
        self._raw = {}
        return rows, divergence

    def tracker_mean(self) -> float | None:
        """The loss tracker's current mean (after evaluation: the global val loss)."""
        if self.tracker is None:
            return None
        return read(self.tracker.total) / max(read(self.tracker.count), 1.0)


def read(variable) -> float:
    return float(keras.ops.convert_to_numpy(variable))
