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


@pytest.fixture(autouse=True)
def _isolated_tracking(monkeypatch, tmp_path):
    """Each test gets its own MLflow store unless it sets one itself."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)


@pytest.fixture(scope="session")
def prepared(tmp_path_factory):
    """Japanese Vowels ingested once with default params: the real data most train tests use."""
    from losstrace.data import ingest

    tmp = tmp_path_factory.mktemp("prep")
    (tmp / "params.yaml").write_text("")
    ingest.main(tmp / "params.yaml", tmp / "prepared", tmp)
    return tmp / "prepared"
