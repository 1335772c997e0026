"""The tracking module's offline behaviour, on a dead port and a real SQLite store (fast)."""

from __future__ import annotations

import json
import socket

import pytest

from losstrace.errors import LosstraceError
from losstrace.record import store, writer


@pytest.fixture
def dead_uri(monkeypatch) -> str:
    with socket.socket() as s:  # a port nothing listens on once the socket closes
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    return f"http://127.0.0.1:{port}"


def test_resilient_logger_goes_offline_once_and_keeps_quiet(dead_uri, capsys):
    logger = writer.RunLogger(store.client(dead_uri), "0" * 32, dead_uri, resilient=True)
    logger.log_metrics({"loss": 1.0}, step=0)
    logger.flush()  # metrics are written by a background thread
    assert logger.offline and "Max retries exceeded" in logger.offline
    logger.log_params({"a": 1})  # no second attempt, no second warning
    logger.finish(ok=True)
    assert capsys.readouterr().err.count("warning: MLflow at") == 1


def test_plain_logger_still_raises_on_an_outage(dead_uri):
    logger = writer.RunLogger(store.client(dead_uri), "0" * 32, dead_uri)
    logger.log_metrics({"loss": 1.0}, step=0)  # queued; the writer's failure surfaces at the next flush
    with pytest.raises(Exception) as e:
        logger.flush()
    assert store.is_outage(e.value)


def test_a_rejected_call_is_not_an_outage(tmp_path):
    with writer.start_run(tmp_path, "r", {}, resilient=True) as run:
        run.log_params({"p": 1})
        with pytest.raises(Exception) as e:
            run.log_params({"p": 2})  # MLflow refuses to change a param: a bug, not a missing server
        assert not store.is_outage(e.value) and run.offline is None


def test_offline_ok_opens_an_offline_run_instead_of_failing(tmp_path, monkeypatch, dead_uri):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", dead_uri)
    with pytest.raises(LosstraceError, match="cannot open a run"):
        with writer.start_run(tmp_path, "r", {}):
            pass
    with writer.start_run(tmp_path, "r", {}, offline_ok=True) as run:
        run.log_metrics({"loss": 1.0}, step=0)
    assert run.run_id is None and run.offline == "unreachable at start"


def test_reopening_an_offline_run_sends_nothing(tmp_path):
    with writer.reopen_run(tmp_path, None, offline=True) as run:
        run.log_metrics({"test_accuracy": 0.9}, step=0)
        run.log_artifact(tmp_path / "missing.json", "evaluate")
    assert not (tmp_path / "mlflow.db").exists()


def test_queued_experiments_record_into_the_dvc_root(tmp_path, monkeypatch):
    monkeypatch.setenv("DVC_ROOT", str(tmp_path / "project"))  # what `dvc exp run --queue` sets
    assert (
        store.tracking_uri(tmp_path / "project/.dvc/tmp/exps/tmpabc")
        == f"sqlite:///{(tmp_path / 'project' / 'mlflow.db').resolve()}"
    )


def test_sync_of_a_broken_offline_record_fails_before_opening_a_run(tmp_path):
    from support import run_cli

    reports = tmp_path / "reports" / "train"
    reports.mkdir(parents=True)
    run_json = reports / "run.json"
    record = {"name": "r", "tags": {}, "params": {"train.epochs": "2"}, "metrics": {}}
    for content, message in (
        ({"offline": True, "run_id": None, "record": record}, f"error: {reports / 'history.csv'}: file not found"),
        ({"offline": True, "run_id": None}, f"error: {run_json}: offline record lacks name, tags, params, metrics"),
        ([], f"error: {run_json}: holds a list, not the train stage's run record"),
    ):
        run_json.write_text(json.dumps(content))
        r = run_cli("sync", "--reports", str(reports), cwd=tmp_path)
        assert r.returncode == 2 and r.stderr.startswith(message), r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
        assert json.loads(run_json.read_text()) == content  # untouched
    assert not (tmp_path / "mlflow.db").exists()  # no run was opened, so no store was made
