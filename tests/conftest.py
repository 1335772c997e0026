"""Shared fixtures: real components, shrunk data and epochs, everything under tmp_path."""

from __future__ import annotations

import os

import pytest

# No network here: telemetry off everywhere, before any library is imported.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


LEAK_SENSITIVE = ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "DVC_ROOT", "TF_CONFIG")


@pytest.fixture(autouse=True)
def _isolated_tracking(monkeypatch, tmp_path):
    """Each test gets its own MLflow store unless it sets one itself (through monkeypatch
    or a subprocess env). A variable left behind in this process would send every later
    subprocess (DVC stages, queued experiments) to another test's store: fail loudly."""
    before = {k: os.environ.get(k) for k in LEAK_SENSITIVE}
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    yield
    monkeypatch.undo()  # what the test set through monkeypatch is not a leak
    leaked = {k: os.environ.get(k) for k in LEAK_SENSITIVE if os.environ.get(k) != before[k]}
    for k in leaked:
        os.environ.pop(k, None) if before[k] is None else os.environ.__setitem__(k, before[k])
    assert not leaked, f"the test left {leaked} in os.environ"


@pytest.fixture(scope="session")
def prepared(tmp_path_factory):
    """Japanese Vowels ingested once with default params: the real data most train tests use."""
    from losstrace.stages import ingest

    tmp = tmp_path_factory.mktemp("prep")
    (tmp / "params.yaml").write_text("base: {seed: 42}\n")  # the dataclass defaults
    ingest.main(tmp / "params.yaml", tmp / "prepared", tmp)
    return tmp / "prepared"
