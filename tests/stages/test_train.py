"""The train core on real TensorFlow with shrunk epochs: batch-loss recovery, determinism, NaN stop."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from losstrace.record import run_files
from losstrace.stages import train
from support import shrunk


def fit(p, prepared):
    train.seed_everything(p.base.seed)
    ds = train.load_dataset(p, prepared)
    return train.run(p, ds)


def test_recovered_batch_losses_average_back_to_the_epoch_loss(prepared):
    p = shrunk(batch_size=50)  # 216 rows: 4 full batches and one of 16
    _, rec = fit(p, prepared)
    batches = pd.DataFrame(rec.batches)
    history = run_files.history_frame(rec.epochs)
    assert batches.groupby("epoch")["size"].apply(list).tolist() == [[50, 50, 50, 50, 16]] * 2
    weighted = batches.groupby("epoch").apply(lambda d: np.average(d["loss"], weights=d["size"]))
    assert np.allclose(weighted.to_numpy(), history["loss"].to_numpy(), rtol=1e-5)
    # The true losses vary batch to batch; Keras' running mean would be smoother.
    first_epoch = batches[batches.epoch == 0]["loss"].to_numpy()
    assert np.ptp(first_epoch) > 0
    assert list(batches["step"]) == list(range(10))


def test_same_seed_gives_identical_history(prepared):
    p = shrunk()
    _, a = fit(p, prepared)
    _, b = fit(p, prepared)
    assert run_files.history_frame(a.epochs).to_csv() == run_files.history_frame(b.epochs).to_csv()
    assert pd.DataFrame(a.batches).equals(pd.DataFrame(b.batches))


def test_history_has_the_contract_columns(prepared):
    _, rec = fit(shrunk(), prepared)
    h = run_files.history_frame(rec.epochs)
    assert list(h.columns[:6]) == ["epoch", "loss", "val_loss", "accuracy", "val_accuracy", "lr"]
    assert h["epoch"].tolist() == [0, 1]
    assert h["lr"].tolist() == pytest.approx([0.001, 0.001])


def test_nan_loss_stops_training_at_once(prepared):
    p = shrunk(epochs=5)
    train.seed_everything(p.base.seed)
    ds = train.load_dataset(p, prepared)
    ds.x["train"][:] = np.nan  # a NaN that slipped into the inputs poisons the first batch
    _, rec = train.run(p, ds)
    assert rec.divergence is not None
    assert (rec.divergence.epoch, rec.divergence.batch) == (0, 0)
    assert len(rec.epochs) == 1  # stopped in the first epoch, not after 5


def test_gpu_requested_without_gpu_is_a_clear_error():
    from losstrace.errors import LosstraceError

    with pytest.raises(LosstraceError, match="train.device=gpu but TensorFlow sees no GPU"):
        train.select_device("gpu")
    assert train.select_device("auto") == "CPU"


def test_balanced_class_weights_turn_train_imbalance_into_info():
    from losstrace.findings import Finding

    found = [
        Finding("class_imbalance", "warning", {"observed": 6.0, "min_count": 73}, "set ...", "train"),
        Finding("class_imbalance", "error", {"observed": "inf", "min_count": 0}, "set ...", "train"),
        Finding("class_imbalance", "warning", {"observed": 6.0, "min_count": 9}, "set ...", "test"),
    ]
    weighted = train._weighted_imbalance(found, shrunk(class_weight="balanced"), multilabel=False)
    assert [f.severity for f in weighted] == ["info", "error", "warning"]  # a class with no rows: no weight helps
    assert weighted[0].evidence["handled_by"] == "train.class_weight: balanced"
    assert train._weighted_imbalance(found, shrunk(), multilabel=False) == found
    assert train._weighted_imbalance(found, shrunk(class_weight="balanced"), multilabel=True) == found
