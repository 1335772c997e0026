"""Runs of another tool: a plain mlflow.keras.autolog() run is diagnosed and diffed, never refused."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from losstrace.record import foreign, reader, store
from losstrace.workflows import runs
from support import run_cli


def _autolog_run(lr: float, seed: int = 0) -> str:
    import mlflow

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(240, 10, 2)).astype("float32")
    y = (x[:, :, 0].mean(axis=1) > 0).astype("int64")
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((10, 2)), keras.layers.GRU(8), keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer=keras.optimizers.RMSprop(lr), loss="sparse_categorical_crossentropy", metrics=["acc"])
    mlflow.keras.autolog(log_models=False, silent=True)
    try:
        with store.scoped_tracking_uri(store.tracking_uri()), mlflow.start_run() as run:
            model.fit(x, y, batch_size=16, epochs=5, validation_split=0.2, verbose=0)
    finally:
        mlflow.keras.autolog(disable=True)
    return run.info.run_id


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Two autolog trainings, once for the module, recorded in ./mlflow.db of a folder of its own."""
    folder = tmp_path_factory.mktemp("foreign")
    with pytest.MonkeyPatch.context() as m:
        m.chdir(folder)
        ids = _autolog_run(1e-4), _autolog_run(1e-2)
    return folder, ids


@pytest.fixture
def in_folder(two_runs, monkeypatch):
    monkeypatch.chdir(two_runs[0])
    return two_runs[1]


def test_an_autolog_run_reads_as_a_record_with_mapped_names(in_folder):
    rec = reader.load_record(in_folder[0], store.project_root())
    assert list(rec.history["epoch"]) == [0, 1, 2, 3, 4]
    assert rec.history["accuracy"].notna().all() and rec.history["val_accuracy"].notna().all()  # from acc / val_acc
    assert (
        rec.params["train.learning_rate"] == "0.0001"  # autolog logs the float32: 9.999999747378752e-05
        and rec.params["train.optimizer"] == "rmsprop"
    )
    assert rec.params["train.batch_size"] == "16" and rec.batches.empty
    assert [f["code"] for f in rec.findings] == ["not_recorded"]


def test_an_autolog_run_is_diagnosed_through_the_cli_with_one_info_note(in_folder, two_runs):
    r = run_cli("diagnose", "--json", cwd=two_runs[0])  # no argument: the latest training, the autolog run
    assert r.returncode == 0, r.stderr
    import json

    diagnosis = json.loads(r.stdout)
    assert diagnosis["run_id"] == in_folder[1]
    notes = [f for f in diagnosis["findings"] if f["code"] == "not_recorded"]
    assert len(notes) == 1 and notes[0]["severity"] == "info" and "losstrace.keras.autolog()" in notes[0]["suggestion"]


def test_two_autolog_runs_diff_with_the_learning_rate_first(in_folder):
    result = runs.diff(*in_folder, store.project_root())
    assert result["diff"]["causes"][0]["change"] == "train.learning_rate"


def test_history_prefers_the_canonical_metric_name_over_an_alias():
    frame = foreign.history({"acc": [(0, 0.1)], "accuracy": [(0, 0.9)], "loss": [(0, 1.0), (1, 0.5)]})
    assert list(frame["accuracy"][:1]) == [0.9] and list(frame["loss"]) == [1.0, 0.5]


def test_a_numbered_optimizer_name_reads_as_its_class():
    # Keras numbers each further optimizer of a process: rmsprop_11 after ten others.
    from losstrace.record.foreign import params

    assert params({"optimizer_name": "rmsprop_11"})["train.optimizer"] == "rmsprop"
    assert params({"optimizer_name": "adam_w"})["train.optimizer"] == "adamw"


def _dense_autolog_run(optimizer, epochs: int = 10, seed: int = 2) -> str:
    """The user trial's plain script: Dense 16 + sigmoid, binary cross-entropy, mlflow.keras.autolog."""
    import mlflow

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(300, 10)).astype("float32")
    y = (x[:, 0] + x[:, 1] > 0).astype("int32")
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [keras.Input((10,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(1, activation="sigmoid")]
    )
    model.compile(optimizer=optimizer, loss="binary_crossentropy", metrics=["acc"])
    mlflow.keras.autolog(log_models=False, silent=True)
    try:
        with store.scoped_tracking_uri(store.tracking_uri()), mlflow.start_run() as run:
            model.fit(x, y, epochs=epochs, batch_size=32, validation_split=0.2, verbose=0)
    finally:
        mlflow.keras.autolog(disable=True)
    return run.info.run_id


def test_a_plain_autolog_run_whose_loss_barely_moves_is_not_called_clean(tmp_path, monkeypatch):
    """SGD at 1e-4: the loss moves ~0.1% in 10 epochs and accuracy not at all. Without a
    batch log or class shares only the curve can tell, and it does; Adam at its default on
    the same data learns and stays clean."""
    monkeypatch.chdir(tmp_path)
    stuck = _dense_autolog_run(keras.optimizers.SGD(1e-4))
    healthy = _dense_autolog_run(keras.optimizers.Adam(1e-3))
    diagnosis = runs.diagnose(stuck, store.project_root())
    (f,) = [f for f in diagnosis["findings"] if f["code"] == "not_learning"]
    assert f["severity"] == "warning" and f["evidence"]["loss_drop"] < 0.02
    assert f["suggestion"].startswith("train.learning_rate: 0.0001 → 0.001")
    assert [c["key"] for c in diagnosis["prescription"]] == ["train.learning_rate"]
    loud = [f["code"] for f in runs.diagnose(healthy, store.project_root())["findings"] if f["severity"] != "info"]
    assert loud == []
    # The text output gives the finding in a sentence, not only its evidence.
    text = " ".join(run_cli("diagnose", stuck, cwd=tmp_path, check=True).stdout.split())
    assert "warning not_learning over 10 epochs the train loss moved" in text and "change nothing" in text
