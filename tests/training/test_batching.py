"""Length bucketing: the plan in numpy, the tf.data batches it feeds, and a real
fit on Japanese Vowels (7-29 steps per utterance, so bucketing has lengths to group)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from losstrace import params
from losstrace.errors import LosstraceError
from losstrace.record import run_files
from losstrace.stages import train
from losstrace.training import batching
from support import shrunk


def ragged_ids(n: int = 300, max_len: int = 40, seed: int = 0) -> np.ndarray:
    """Post-padded token ids with lengths 1..max_len (0 = padding)."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, max_len), dtype=np.int32)
    for i, k in enumerate(rng.integers(1, max_len + 1, size=n)):
        x[i, :k] = rng.integers(2, 50, size=k)
    return x


def test_sequence_lengths_of_ids_and_numeric_steps():
    ids = np.array([[5, 3, 0, 0], [0, 0, 0, 0], [1, 2, 3, 4]])
    assert batching.sequence_lengths(ids).tolist() == [2, 0, 4]
    steps = np.zeros((2, 3, 2), dtype=np.float32)
    steps[0, :2] = 1.0
    steps[1, 0, 1] = -0.5  # one non-zero channel makes the step real
    assert batching.sequence_lengths(steps).tolist() == [2, 1]


def test_plan_covers_every_row_once_per_epoch_in_length_buckets():
    lengths = batching.sequence_lengths(ragged_ids())
    bounds = batching.bucket_boundaries(lengths, 4)
    plan = batching.BatchPlan(lengths, bounds, batch_size=16, seed=7)
    lower = dict(zip(bounds, (0,) + bounds[:-1]))
    sizes = []
    for epoch in range(3):
        batches = plan.epoch(epoch)
        assert len(batches) == len(plan)
        assert np.array_equal(np.sort(np.concatenate(batches)), np.arange(len(lengths)))
        for rows in batches:
            bucket = bounds[int(np.searchsorted(bounds, lengths[rows].max()))]
            assert lengths[rows].min() > lower[bucket]  # one bucket per batch
        assert max(plan.widths(epoch)) <= bounds[-1] and all(s <= 16 for s in plan.sizes(epoch))
        sizes.append(sorted(plan.sizes(epoch)))
    assert sizes[0] == sizes[1] == sizes[2]  # bucket sizes fixed: same multiset of batch sizes
    same = batching.BatchPlan(lengths, bounds, batch_size=16, seed=7)
    assert all(np.array_equal(a, b) for a, b in zip(plan.epoch(1), same.epoch(1)))  # a function of (seed, epoch)
    assert not all(np.array_equal(a, b) for a, b in zip(plan.epoch(0), plan.epoch(1)))  # reshuffled per epoch


def test_dataset_pads_each_batch_only_to_its_longest_row():
    x = ragged_ids(n=120)
    y = np.arange(len(x))
    train_plan, _ = batching.plans(x, x[:10], batch_size=16, buckets=4, seed=0, shuffle=True)
    bounds = np.asarray(train_plan.boundaries)
    fed = list(batching.dataset(x, y, train_plan, epochs=2).as_numpy_iterator())
    assert len(fed) == 2 * len(train_plan)
    for (xb, yb), rows, width in zip(
        fed, train_plan.epoch(0) + train_plan.epoch(1), train_plan.widths(0) + train_plan.widths(1)
    ):
        assert np.array_equal(yb, rows)
        longest = int(train_plan.lengths[rows].max())
        assert xb.shape == (len(rows), width) and width == longest
        assert width <= bounds[np.searchsorted(bounds, longest)]  # never past its bucket's boundary
        assert np.array_equal(xb, x[rows][:, :width])  # the rows themselves, padding untouched
    assert min(xb.shape[1] for xb, _ in fed) < x.shape[1] // 2  # short buckets really are short


def test_bucketing_with_conv_is_refused_when_params_load():
    with pytest.raises(LosstraceError, match="train.batching=bucket"):
        params.from_dict(
            params.Params,
            {
                "train": {
                    "batching": "bucket",
                    "model": {"rnn": {"return_sequences": True}, "conv": {"filters": 4}, "pooling": "max"},
                }
            },
            "",
        )


# ------------------------------------------------------------------ a real fit


def fit(p, prepared):
    train.seed_everything(p.base.seed)
    ds = train.load_dataset(p, prepared)
    model, rec = train.run(p, ds)
    return model, rec, ds


def test_bucketed_fit_is_deterministic_exact_and_predicts_the_same_shape(prepared):
    p = shrunk(batching="bucket", buckets=4, batch_size=24)
    model, rec, ds = fit(p, prepared)
    _, again, _ = fit(p, prepared)
    history, batches = run_files.history_frame(rec.epochs), pd.DataFrame(rec.batches)
    assert history.to_csv() == run_files.history_frame(again.epochs).to_csv()
    assert batches.equals(pd.DataFrame(again.batches))

    plan, _ = batching.plans(ds.x["train"], ds.x["val"], 24, 4, p.base.seed, True)
    for epoch in (0, 1):  # the true size of every (varying) batch, as planned
        assert batches[batches.epoch == epoch]["size"].tolist() == plan.sizes(epoch)
    assert len(set(plan.sizes(0))) > 1
    weighted = batches.groupby("epoch").apply(lambda d: np.average(d["loss"], weights=d["size"]))
    assert np.allclose(weighted.to_numpy(), history["loss"].to_numpy(), rtol=1e-5)
    assert list(batches["step"]) == list(range(len(batches)))

    padded, _, _ = fit(shrunk(), prepared)
    x = ds.x["val"]
    assert model.predict(x, verbose=0).shape == padded.predict(x, verbose=0).shape == (len(x), len(ds.labels))
