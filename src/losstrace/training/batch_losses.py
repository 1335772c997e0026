"""True per-batch losses, recovered from what Keras 3 reports after each step.

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

Reading the two variables from the host costs two round trips a step (~0.1 ms each on
CPU; Keras runs no batch hook on a worker thread with TensorFlow, whose backend is not
thread-safe). Without tf.distribute, a `step_hook` copies them inside the train step
into a variable instead, one row a step, which the host reads once per epoch; the
figures are the same float32 values either way, so the rows are identical.

A model with its own `train_step` may update the tracker after the optimizer (the order
of Keras' guide), so its figures are read from the host after each step. Whether its
`logs["loss"]` is a running mean or the batch's own loss is the step's choice: only a
"loss" tracker that moves says which, so without one no batch rows are made (`untracked`).
A tracker updated once per batch (`update_state(loss)`, no sample weight) gives the same
losses; the rows' sizes are then fit's batch sizes.
"""

from __future__ import annotations

import math

import keras

from losstrace.training import step_hook
from losstrace.training.recorder import Divergence


class BatchLosses:
    """One epoch's true per-batch losses, recovered from Keras' running means as above.

    steps_per_epoch: Keras' step count for an epoch when known (`Callback.params["steps"]`);
    with it, and one replica stepping once per batch hook, the tracker's figures are kept
    in-graph (`StepLog`) instead of read from the host each step."""

    def __init__(self, model, batch_size: int, n_train: int, steps_per_epoch: int | None = None) -> None:
        self.batch_size, self.n_train = batch_size, n_train
        self.tracker = next((m for m in model.metrics if m.name == "loss" and hasattr(m, "count")), None)
        self._raw: dict[int, tuple[float, float, float]] = {}  # batch -> (running mean, loss sum, samples)
        self._log: StepLog | None = None
        self.own_step = not step_hook.keras_train_step(model)
        self.untracked = False  # an own train_step left the loss tracker still: no batch rows
        self.sizes_assumed = False  # an own train_step's tracker counted batches: sizes from fit's batch size
        if self.tracker is not None and steps_per_epoch and _one_replica_one_step(model) and not self.own_step:
            self._log = StepLog(model, self.tracker, steps_per_epoch + 1)

    def reset(self) -> None:
        self._raw = {}

    def add(self, batch: int, running_mean: float, from_host: bool = False) -> None:
        """Stores this step's figures; rows are built at epoch end (per step: at most two reads).

        from_host: read the tracker now even with a step log (a step that ran before the log existed)."""
        if self._log is not None and not from_host:
            total = seen = None  # filled from the step log at epoch end
        elif self.tracker is not None:
            total, seen = read(self.tracker.total), read(self.tracker.count)
        else:
            total = seen = math.nan  # a model without Keras' loss tracker: rebuilt from running means
        self._raw[batch] = (running_mean, total, seen)

    @property
    def in_step(self) -> bool:
        """Whether the figures are taken inside the train step (which must then be traced anew)."""
        return self._log is not None

    def detach(self) -> None:
        if self._log is not None:
            self._log.detach()

    def _fill_from_log(self) -> None:
        """The epoch's (total, samples) pairs from the step log, one per logged batch hook, in order.
        A step the optimizer skipped (a non-finite loss under loss scaling) leaves the log
        short: the epoch is then rebuilt from running means, as without a tracker."""
        logged = [batch for batch in sorted(self._raw) if self._raw[batch][1] is None]
        figures = self._log.take(len(logged))
        for batch, pair in zip(logged, figures or [(math.nan, math.nan)] * len(logged)):
            self._raw[batch] = (self._raw[batch][0], *pair)

    def rows(self, epoch: int, first_step: int) -> tuple[list[dict], Divergence | None]:
        """The epoch's rows in batch order, (T_k − T_{k−1}) / (S_k − S_{k−1}) each, and the
        first batch whose running mean was NaN/inf (None if none)."""
        if self._log is not None:
            self._fill_from_log()
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
        if self.own_step:
            rows = self._own_step_rows(rows)
        return rows, divergence

    def _own_step_rows(self, rows: list[dict]) -> list[dict]:
        """Rows of a model's own train step: none unless its "loss" tracker moved; sizes
        from fit's batch size when the tracker counted batches, not rows."""
        if self.tracker is None or not rows or all(r["size"] == 0 for r in rows):
            self.untracked = self.untracked or bool(rows)
            return []
        if self.batch_size > 1 and all(r["size"] == 1 for r in rows):
            self.sizes_assumed = True
            left = self.n_train or self.batch_size * len(rows)
            for r in rows:
                r["size"] = max(min(self.batch_size, left), 0)
                left -= r["size"]
        return rows

    def tracker_mean(self) -> float | None:
        """The loss tracker's current mean (after evaluation: the global val loss)."""
        if self.tracker is None:
            return None
        return read(self.tracker.total) / max(read(self.tracker.count), 1.0)


def read(variable) -> float:
    return float(keras.ops.convert_to_numpy(variable))


def _one_replica_one_step(model) -> bool:
    """No tf.distribute (its replicas hold local tracker figures inside the step) and one
    train step per batch hook (`steps_per_execution` runs several between hooks)."""
    import tensorflow as tf

    default = type(tf.distribute.get_strategy()) is type(model.distribute_strategy)
    return default and model.distribute_strategy.num_replicas_in_sync == 1 and int(model.steps_per_execution) == 1


class StepLog:
    """The loss tracker's (total, count) after each train step, written inside the step
    into a ring of `capacity` rows; the host reads the ring once per epoch."""

    def __init__(self, model, tracker, capacity: int) -> None:
        import tensorflow as tf

        self.tracker, self.capacity = tracker, capacity
        self.rows = tf.Variable(tf.zeros((capacity, 2), tf.float64), trainable=False)
        self.written = tf.Variable(tf.zeros((), tf.int64), trainable=False)
        self._taken = 0  # rows the host has read so far
        self.detach = step_hook.on_apply(model, self._record)

    def _record(self, grads, variables) -> None:
        import tensorflow as tf

        pair = tf.cast(tf.stack([self.tracker.total.value, self.tracker.count.value]), tf.float64)
        slot = tf.math.floormod(self.written.read_value(), self.capacity)
        self.rows.scatter_nd_update(tf.reshape(slot, (1, 1)), tf.reshape(pair, (1, 2)))
        self.written.assign_add(1)

    def take(self, n: int) -> list[tuple[float, float]] | None:
        """The next `n` rows in step order, or None when the steps written are not exactly `n`."""
        written = int(self.written.numpy())
        count, start = written - self._taken, self._taken
        self._taken = written
        if count != n or n > self.capacity:
            return None
        rows = self.rows.numpy()
        return [(float(rows[i % self.capacity, 0]), float(rows[i % self.capacity, 1])) for i in range(start, written)]
