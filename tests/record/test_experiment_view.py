"""The MLflow UI opens losstrace's experiment on its training runs, not MLflow 3's GenAI
overview: the experiment carries the kind tag, and the README's link opens the Runs table
in a real headless Chromium against a real `mlflow server`."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from browser import OFFLINE, chromium, dump_dom
from losstrace.record import contract, experiment_view, store, writer

REPO = Path(__file__).resolve().parents[2]


def _experiment(root: Path):
    c = store.client(store.tracking_uri(root))
    return c, c.get_experiment_by_name(store.experiment_name())


def test_a_new_experiment_is_tagged_as_model_training(tmp_path):
    with writer.start_run(tmp_path, "r1", {contract.KIND_TAG: "train"}):
        pass
    _, exp = _experiment(tmp_path)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"


def test_an_older_experiment_is_tagged_and_a_kind_someone_chose_is_kept(tmp_path):
    c = store.client(store.tracking_uri(tmp_path))
    c.create_experiment(store.experiment_name())  # as losstrace made it before the tag
    with writer.start_run(tmp_path, "r1", {contract.KIND_TAG: "train"}):
        pass
    _, exp = _experiment(tmp_path)
    assert exp.tags[experiment_view.KIND_TAG] == experiment_view.KIND
    c.set_experiment_tag(exp.experiment_id, experiment_view.KIND_TAG, "genai_development")
    with writer.start_run(tmp_path, "r2", {contract.KIND_TAG: "train"}):
        pass
    assert _experiment(tmp_path)[1].tags[experiment_view.KIND_TAG] == "genai_development"


@pytest.mark.slow
def test_the_readme_link_opens_the_runs_table_in_headless_chromium(tmp_path):
    chromium()  # skip (or fail in CI) before starting a server
    from test_server import Server  # the suite's `mlflow server` runner

    link = re.search(r"<(http://127\.0\.0\.1:5000/#/experiments/1\?[^>]*)>", (REPO / "README.md").read_text())
    assert link, "README gives no direct link to the losstrace experiment's runs"
    with writer.start_run(tmp_path, "lstm-readme-link", {contract.KIND_TAG: "train"}) as run:
        run.log_metrics({"loss": 1.0}, step=0)
    assert _experiment(tmp_path)[1].experiment_id == "1"  # the id the README's link names
    server = Server(tmp_path / "server")
    server.home.mkdir()
    shutil.copy(tmp_path / "mlflow.db", server.home / "store.db")  # the store losstrace wrote
    server.start()
    try:
        url = link.group(1).replace("127.0.0.1:5000", f"127.0.0.1:{server.port}")
        # Only 127.0.0.1 answers: the UI must not need the network to show its runs.
        dom = dump_dom(url, tmp_path / "profile", *OFFLINE, "--virtual-time-budget=20000")
    finally:
        server.stop()
    assert "lstm-readme-link" in dom  # the Runs table lists the run
    assert "Detect issues" not in dom and ">Overview<" not in dom  # the GenAI overview
