"""Length bucketing (`train.batching: bucket`): batches of similar-length rows, each
padded only to its own longest row.

Padding every sentence to the longest one makes each recurrent step run over mostly
padding (UCI sentences: 12 words on average, 71 at most). Grouping rows of similar
length into the same batch and trimming each batch to its longest row cuts that work.

Which rows make up each batch is planned in numpy, per epoch, as a pure function of
(seed, epoch), rather than by a stateful `tf.data` shuffle, for three reasons:
- the callback recovering true per-batch losses needs every batch's size, and a plan
  gives them exactly (bucketing makes them vary);
- a resumed training (BackupAndRestore) gets the same batches for epoch k as an
  uninterrupted one, whatever the iterator state was when the process died;
- two runs with the same seed see the same batches, so curves are comparable.
`tf.data` then gathers, trims and prefetches each planned batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np


def sequence_lengths(x: np.ndarray) -> np.ndarray:
    """Real (unpadded) steps per row of post-padded arrays: ids > 0, or numeric steps
    that are not all-zero (the same rule the zoo's masks use)."""
    real = x != 0 if x.ndim == 2 else np.any(x != 0, axis=-1)
    if real.shape[1] == 0:
        return np.zeros(len(x), dtype=np.int64)
    # Post-padding: the length runs up to the last real step (0 for an empty row).
    last = real.shape[1] - np.argmax(real[:, ::-1], axis=1)
    return np.where(real.any(axis=1), last, 0).astype(np.int64)


def bucket_boundaries(lengths: np.ndarray, buckets: int) -> tuple[int, ...]:
    """Inclusive upper length of each bucket, at quantiles of the (training) lengths.

    Quantiles give buckets of about equal row counts, so no bucket is left with a few
    rows that would make many tiny, noisy batches.
    """
    if len(lengths) == 0:
        return (1,)
    qs = np.quantile(lengths, np.arange(1, buckets + 1) / buckets, method="higher")
    return tuple(sorted({int(q) for q in qs} | {int(lengths.max())}))


@dataclass(frozen=True)
class BatchPlan:
    """Which rows form which batch, epoch by epoch, for one split.

    Rows are split into length buckets; each bucket is cut into batches of `batch_size`
    (its last batch smaller); with `shuffle`, rows are permuted within their bucket and
    batches are permuted across buckets every epoch. The bucket sizes never change, so
    the number of batches and the multiset of their sizes are the same every epoch.
    """

    lengths: np.ndarray
    boundaries: tuple[int, ...]
    batch_size: int
    seed: int = 0
    shuffle: bool = True
    _members: tuple[np.ndarray, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        ids = np.minimum(
            np.searchsorted(np.asarray(self.boundaries), self.lengths, side="left"), len(self.boundaries) - 1
        )
        object.__setattr__(self, "_members", tuple(np.flatnonzero(ids == b) for b in range(len(self.boundaries))))

    def __len__(self) -> int:
        return sum(-(-len(m) // self.batch_size) for m in self._members)

    def epoch(self, epoch: int) -> list[np.ndarray]:
        """Row indices of every batch of `epoch`, in the order they are fed."""
        rng = np.random.default_rng([self.seed, epoch])
        batches: list[np.ndarray] = []
        for rows in self._members:
            rows = rng.permutation(rows) if self.shuffle else rows
            batches += [rows[i : i + self.batch_size] for i in range(0, len(rows), self.batch_size)]
        if self.shuffle:
            return [batches[i] for i in rng.permutation(len(batches))]
        return sorted(batches, key=lambda b: int(b[0]))  # as close to file order as buckets allow

    def sizes(self, epoch: int) -> list[int]:
        return [len(b) for b in self.epoch(epoch)]

    def widths(self, epoch: int) -> list[int]:
        """The padded length of each batch: its longest row (at least 1 step)."""
        return [max(int(self.lengths[b].max()), 1) for b in self.epoch(epoch)]


def plans(
    x_train: np.ndarray, x_val: np.ndarray, batch_size: int, buckets: int, seed: int, shuffle: bool
) -> tuple[BatchPlan, BatchPlan]:
    """Training and validation plans over the same buckets (boundaries from train only)."""
    lengths = sequence_lengths(x_train)
    bounds = bucket_boundaries(lengths, buckets)
    return (
        BatchPlan(lengths, bounds, batch_size, seed, shuffle),
        BatchPlan(sequence_lengths(x_val), bounds, batch_size, seed, shuffle=False),
    )


def dataset(
    x: np.ndarray, y: np.ndarray, batch_plan: BatchPlan, epochs: int, first_epoch: Callable[[], int] = lambda: 0
):
    """A `tf.data.Dataset` of the planned batches of epochs first_epoch() .. epochs-1, in turn.

    Each element is (x[rows][:, :width], y[rows]) with width = the batch's longest row, so
    masking is unchanged (padding stays zeros at the end). Fit with
    `steps_per_epoch=len(batch_plan)`: Keras then keeps one iterator across epochs.
    `first_epoch` is read when iteration starts, i.e. after a resumed fit restored its epoch.
    """
    import tensorflow as tf

    def rows() -> Iterator[np.ndarray]:
        for e in range(first_epoch(), epochs):
            yield from (b.astype(np.int64) for b in batch_plan.epoch(e))

    ds = tf.data.Dataset.from_generator(rows, output_signature=tf.TensorSpec([None], tf.int64))
    return _gather(ds, x, y, batch_plan.lengths)


def _gather(index_ds, x: np.ndarray, y: np.ndarray, lengths: np.ndarray):
    import tensorflow as tf

    xs, ys, ls = tf.constant(x), tf.constant(y), tf.constant(lengths, tf.int64)

    def take(idx):
        width = tf.maximum(tf.reduce_max(tf.gather(ls, idx)), 1)  # an all-empty batch keeps one step
        return tf.gather(xs, idx)[:, :width], tf.gather(ys, idx)

    options = tf.data.Options()
    options.deterministic = True
    # The index stream is a generator, not files: shard the planned batches' elements
    # across workers (multi_worker) instead of trying file sharding first.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return (
        index_ds.map(take, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .prefetch(tf.data.AUTOTUNE)
        .with_options(options)
    )


def eval_dataset(x: np.ndarray, y: np.ndarray, batch_plan: BatchPlan):
    """Validation through the same bucketing (one fixed, unshuffled plan), re-iterable."""
    import tensorflow as tf

    batches = batch_plan.epoch(0)
    flat = np.concatenate(batches).astype(np.int64) if batches else np.zeros(0, np.int64)
    ends = np.cumsum([len(b) for b in batches]).astype(np.int64)
    starts = ends - np.asarray([len(b) for b in batches], dtype=np.int64)
    flat_t = tf.constant(flat)
    index_ds = tf.data.Dataset.from_tensor_slices((starts, ends)).map(lambda s, e: flat_t[s:e])
    return _gather(index_ds, x, y, batch_plan.lengths)
