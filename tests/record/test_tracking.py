"""The tracking module against a real SQLite MLflow store."""

from __future__ import annotations

import pytest

from losstrace.record import contract, reader, store, writer
from support import REPO


def test_run_finishes_with_params_metrics_and_batch_series(tmp_path):
    with writer.start_run(tmp_path, "r1", {contract.KIND_TAG: "train"}) as run:
        run.log_params({"train.batch_size": 32, "train.learning_rate": 0.001})
        for epoch in range(3):
            run.log_metrics({"loss": 1.0 / (epoch + 1), "val_loss": float("nan")}, step=epoch)
        run.log_series("batch_loss", list(range(2500)), [0.5] * 2500)  # > one log_batch call
    c = store.client(store.tracking_uri(tmp_path))
    r = c.get_run(run.run_id)
    assert r.info.status == "FINISHED"
    assert r.data.params["train.batch_size"] == "32"
    assert [m.step for m in c.get_metric_history(run.run_id, "loss")] == [0, 1, 2]
    assert "val_loss" not in r.data.metrics  # NaN values are skipped, not logged as garbage
    assert len(c.get_metric_history(run.run_id, "batch_loss")) == 2500
    assert (tmp_path / "mlflow.db").exists()


def test_exception_marks_the_run_failed(tmp_path):
    with pytest.raises(RuntimeError):
        with writer.start_run(tmp_path, "boom", {contract.KIND_TAG: "train"}) as run:
            raise RuntimeError("crash mid-training")
    assert store.get_run(tmp_path, run.run_id).info.status == "FAILED"


def test_resolve_latest_and_latest_tilde(tmp_path):
    ids = []
    for i in range(3):
        with writer.start_run(tmp_path, f"r{i}", {contract.KIND_TAG: "train"}) as run:
            ids.append(run.run_id)
    assert reader.resolve_run("latest", tmp_path) == ids[-1]
    assert reader.resolve_run("latest~2", tmp_path) == ids[0]
    assert reader.resolve_run(ids[1], tmp_path) == ids[1]
    from losstrace.errors import LosstraceError

    with pytest.raises(LosstraceError, match="only 3 run"):
        reader.resolve_run("latest~5", tmp_path)
    with pytest.raises(LosstraceError, match="no such MLflow run"):
        reader.resolve_run("0123456789abcdef", tmp_path)


def test_a_run_is_found_by_the_start_of_its_id_as_runs_are_printed(tmp_path):
    from losstrace.errors import LosstraceError

    ids = []
    for i in range(3):
        with writer.start_run(tmp_path, f"r{i}", {contract.KIND_TAG: "train"}) as run:
            ids.append(run.run_id)
    for run_id in ids:
        assert reader.resolve_run(run_id[:8], tmp_path) == run_id  # through MLflow's client
        assert reader.read_run(tmp_path, run_id[:8], contract.ARTIFACT_DIR).run_id == run_id  # SQLite read directly
    with pytest.raises(LosstraceError, match="the start of 2 run ids.*give more characters"):
        reader._one_by_prefix("abc123", ["abc123" + "0" * 26, "abc123" + "1" * 26])
    with pytest.raises(LosstraceError, match="no such MLflow run"):
        reader.resolve_run("fffffffe", tmp_path)  # (almost surely) no run id starts so


def test_a_command_run_below_the_store_is_told_where_the_store_is(tmp_path):
    from losstrace.errors import LosstraceError

    with writer.start_run(tmp_path, "r", {contract.KIND_TAG: "train"}):
        pass
    below = tmp_path / "reports" / "train"
    below.mkdir(parents=True)
    with pytest.raises(LosstraceError, match="no MLflow store here") as e:
        store.existing_store(below)
    assert e.value.fix == f"run it from {tmp_path.resolve()}, the folder holding the store"
    elsewhere = tmp_path.parent / (tmp_path.name + "-empty")
    elsewhere.mkdir()
    with pytest.raises(LosstraceError) as e:
        store.existing_store(elsewhere)
    store_above = next((d for d in elsewhere.parents if (d / "mlflow.db").is_file()), None)  # e.g. one in /tmp
    assert ("project root" if store_above is None else str(store_above)) in e.value.fix


@pytest.mark.timeout(120)  # MLflow's retries alone would take about four minutes: the address is probed first
def test_unreachable_server_is_a_one_line_error(tmp_path, monkeypatch):
    from losstrace.errors import LosstraceError

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # nothing listens on the discard port
    for retry_setting in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT"):
        monkeypatch.delenv(retry_setting, raising=False)
    with pytest.raises(LosstraceError) as e:
        with writer.start_run(tmp_path, "x", {}):
            pass
    assert e.value.line().startswith("error: MLflow at http://127.0.0.1:9: cannot open a run")


def test_background_metric_writes_land_before_the_run_ends(tmp_path):
    with writer.start_run(tmp_path, "bg", {contract.KIND_TAG: "train"}) as run:
        for epoch in range(20):
            run.log_metrics({"loss": float(epoch)}, step=epoch)
        run.set_tags({"after": "metrics"})  # a synchronous call waits for the queue first
        c = store.client(store.tracking_uri(tmp_path))
        assert len(c.get_metric_history(run.run_id, "loss")) == 20
    assert c.get_run(run.run_id).info.status == "FINISHED"


def test_quick_epochs_ship_together_and_a_slow_one_at_once(tmp_path, monkeypatch):
    with writer.start_run(tmp_path, "ship", {contract.KIND_TAG: "train"}) as run:
        c = store.client(store.tracking_uri(tmp_path))
        writes = []
        monkeypatch.setattr(run, "_in_background", lambda *a, **kw: writes.append(kw["metrics"]))
        for epoch in range(5):  # five tiny epochs within a second: the first ships, four wait
            run.log_metrics({"loss": float(epoch)}, step=epoch)
        assert [[m.step for m in w] for w in writes] == [[0]]
        monkeypatch.setattr(writer, "SHIP_SECONDS", 0.0)  # as if a second had passed
        run.log_metrics({"loss": 5.0}, step=5)
        assert [[m.step for m in w] for w in writes] == [[0], [1, 2, 3, 4, 5]]
        run.log_metrics({"loss": 6.0}, step=6)  # a slow epoch: shipped at once
        assert [[m.step for m in w] for w in writes][-1] == [6]
        monkeypatch.setattr(writer, "SHIP_SECONDS", 3600.0)
        run.log_metrics({"loss": 7.0}, step=7)
        assert [[m.step for m in w] for w in writes][-1] == [6]
        run.flush()  # the run's end sends whatever still waits, in order
        assert [m.step for w in writes for m in w] == list(range(8))
        assert c.get_metric_history(run.run_id, "loss") == []  # the fake writer sent nothing


def test_metrics_held_after_an_empty_call_still_reach_the_run(tmp_path):
    """An empty series (log_missing with nothing missing) must not start a shipping window
    that keeps later metrics from ever being sent."""
    with writer.start_run(tmp_path, "held", {contract.KIND_TAG: "train"}) as run:
        run.log_series("batch_loss", [], [])
        run.log_metrics({"test_accuracy": 0.9}, step=0)  # held: within a second of the empty call
        run.set_tags({"after": "metrics"})
        c = store.client(store.tracking_uri(tmp_path))
        assert [m.value for m in c.get_metric_history(run.run_id, "test_accuracy")] == [0.9]


def test_an_epoch_is_never_split_across_writes(tmp_path, monkeypatch):
    with writer.start_run(tmp_path, "whole", {contract.KIND_TAG: "train"}) as run:
        writes = []
        monkeypatch.setattr(run, "_in_background", lambda *a, **kw: writes.append(kw["metrics"]))
        monkeypatch.setattr(writer, "SHIP_SECONDS", 3600.0)
        monkeypatch.setattr(writer, "_MAX_BATCH", 10)
        for epoch in range(4):  # four epochs of 4 metrics: 10 per write allows two whole epochs
            run.log_metrics({k: float(epoch) for k in ("loss", "val_loss", "lr", "acc")}, step=epoch)
        run.log_series("batch_loss", list(range(25)), [0.5] * 25)  # one call above the limit: cut
        run.flush()
        # The first epoch ships at once; the held ones go whole, two per write, then the series.
        assert [len(w) for w in writes] == [4, 8, 4, 10, 10, 5]
        assert [{m.step for m in w} for w in writes][:3] == [{0}, {1, 2}, {3}]


def test_logging_a_model_leaves_the_process_tracking_uri_alone(tmp_path, monkeypatch):
    """MLflow's fluent API exports MLFLOW_TRACKING_URI process-wide; every later DVC stage
    or queued experiment started from this process would then record into this store."""
    import os

    import keras
    import numpy as np

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'team.db'}")
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="softmax")])
    with writer.start_run(tmp_path / "elsewhere", "m", {contract.KIND_TAG: "train"}) as run:
        run.log_keras_model(model, np.zeros((2, 3), dtype="float32"))
    assert os.environ["MLFLOW_TRACKING_URI"] == f"sqlite:///{tmp_path / 'team.db'}"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    with writer.start_run(tmp_path, "n", {contract.KIND_TAG: "train"}) as run:
        run.log_keras_model(model, np.zeros((2, 3), dtype="float32"))
    assert "MLFLOW_TRACKING_URI" not in os.environ
    c = store.client(store.tracking_uri(tmp_path))
    exp = c.get_experiment(c.get_run(run.run_id).info.experiment_id)
    assert len(c.search_logged_models([exp.experiment_id])) == 1


def test_a_damaged_run_artifact_is_a_one_line_error_naming_it(tmp_path):
    from support import run_cli

    (tmp_path / "history.csv").write_text("")  # e.g. a disk that filled while it was uploaded
    (tmp_path / "context.json").write_text("{not json")
    with writer.start_run(tmp_path, "damaged", {contract.KIND_TAG: "train"}) as run:
        run.log_artifact(tmp_path / "history.csv", "losstrace")
        run.log_artifact(tmp_path / "context.json", "losstrace")
    r = run_cli("diagnose", run.run_id, cwd=tmp_path)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert r.stderr.startswith(f"error: run {run.run_id}: losstrace/")
    assert "unreadable" in r.stderr and "retrain it" in r.stderr


def test_resume_does_not_log_a_diverged_epoch_twice(tmp_path):
    import math

    from losstrace.training import resume
    from losstrace.training.recorder import Recorder, log_epoch

    rec = Recorder(
        batches=[
            {"step": 0, "epoch": 0, "batch": 0, "loss": 1.0, "size": 8},
            {"step": 1, "epoch": 1, "batch": 0, "loss": math.nan, "size": 8},
        ],
        epochs=[
            {"epoch": 0, "loss": 1.0, "accuracy": 0.5, "lr": 1e-3},
            {"epoch": 1, "loss": math.nan, "accuracy": 0.4, "lr": 1e-3},
        ],
    )
    with writer.start_run(tmp_path, "r", {}, resilient=True) as run:
        for epoch in (0, 1):
            log_epoch(run, rec, epoch)
    with writer.start_run(tmp_path, "r", {}, resume_id=run.run_id, resilient=True) as again:
        assert resume.reconcile(again, rec) == 0  # the NaN epoch has no `loss`, but it is in
    history = store.client(store.tracking_uri(tmp_path)).get_metric_history(run.run_id, "accuracy")
    assert sorted((m.step, m.value) for m in history) == [(0, 0.5), (1, 0.4)]


def test_dvc_dep_tags_read_yaml_as_the_safe_loader_does():
    import yaml

    from losstrace.record import environment

    for name in ("dvc.yaml", "dvc.lock"):
        text = (REPO / name).read_text()
        assert environment._load_yaml(text) == yaml.safe_load(text), name
