"""A team's project over time, with real DVC, git and MLflow: the CI report on two real
runs, a DVC remote round trip onto a fresh clone, queued experiments run in parallel,
and outputs that cannot be written (previous ones must survive).

One project for the whole module (trainings are the cost): run A (epochs 2) is committed
as the baseline; then two experiments are queued and run in parallel, B (learning rate
100x lower: a certain regression) and C (a smaller batch), and B is applied to the workspace.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from support import BIN, make_project, run_cli, run_tool

pytestmark = pytest.mark.slow
GIT = ("git", "-c", "user.email=t@t", "-c", "user.name=t")


QUEUED = {"bad-lr": ["-S", "train.learning_rate=0.00001"], "small-batch": ["-S", "train.batch_size=16"]}


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> dict:
    root = make_project(tmp_path_factory.mktemp("team") / "project")
    run_tool("dvc", "exp", "run", "-S", "train.epochs=2", cwd=root)
    run_tool(*GIT, "add", "-A", cwd=root)
    run_tool(*GIT, "commit", "-qm", "baseline: run A", cwd=root)
    run_a, before = _run_id(root), {r.info.run_id for r in _train_runs(root)}
    for name, sets in QUEUED.items():
        run_tool("dvc", "exp", "run", "--queue", "--name", name, "-S", "train.epochs=2", *sets, cwd=root)
    try:
        run_tool("dvc", "queue", "start", "-j", "2", cwd=root)
        status = _wait_for_queue(root, timeout=900)
    finally:
        run_tool("dvc", "queue", "stop", cwd=root, check=False)
    run_tool("dvc", "exp", "apply", "bad-lr", cwd=root)
    return {"root": root, "a": run_a, "b": _run_id(root), "queue_status": status, "runs_before": before}


def _run_id(root: Path) -> str:
    return json.loads((root / "reports/train/run.json").read_text())["run_id"]


def _store(root: Path):
    from losstrace.record import store

    return store.client(store.tracking_uri(root))


# ---------------------------------------------------------------- ci-report


def test_ci_report_fails_on_a_regression_and_explains_it(project, tmp_path):
    root, summary = project["root"], tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    r = run_cli(
        "ci-report",
        "--rev",
        "HEAD",
        "--out",
        str(tmp_path / "report.md"),
        "--html",
        str(tmp_path / "d.html"),
        cwd=root,
        env={"GITHUB_STEP_SUMMARY": str(summary)},
    )
    assert r.returncode == 1, r.stderr
    assert r.stderr.strip().startswith("ci-report: regression in test.accuracy")
    report = (tmp_path / "report.md").read_text()
    assert report.startswith("# losstrace CI report\n\n**Regression.** `test.accuracy` fell")
    assert "| test.accuracy |" in report and "**regressed**" in report
    # The explanation compares the run committed at the rev with the workspace's.
    assert f"({project['a'][:8]})" in report and f"({project['b'][:8]})" in report
    assert "| train.learning_rate | 0.001 | 1e-05 |" in report
    assert summary.read_text() == "earlier step\n" + report + "\n"  # appended, not overwritten
    assert "<svg" in (tmp_path / "d.html").read_text()


def test_ci_report_passes_within_the_params_thresholds(project, tmp_path):
    # ci-report reads only the ci section; every other section keeps its defaults.
    (tmp_path / "params.yaml").write_text("ci:\n  max_accuracy_drop: 1.0\n  max_macro_f1_drop: 1.0\n")
    r = run_cli("ci-report", "--rev", "HEAD", "--params", str(tmp_path / "params.yaml"), cwd=project["root"])
    assert r.returncode == 0, r.stderr
    assert "**OK.**" in r.stdout and "## losstrace diff" in r.stdout


def test_ci_report_refuses_a_named_run_that_does_not_exist_and_writes_nothing(project, tmp_path):
    root = project["root"]
    r = run_cli("ci-report", "--rev", "HEAD", "--run", "0" * 32, "--out", str(tmp_path / "r.md"), cwd=root)
    assert r.returncode == 2 and r.stderr.strip() == (
        f"error: run {'0' * 32}: no such MLflow run (pass a run id (or its first 8 characters), latest or latest~N)"
    )
    r = run_cli("ci-report", "--rev", "HEAD", "--out", str(tmp_path / "r.md"), "--html", str(tmp_path), cwd=root)
    assert r.returncode == 2 and r.stderr.strip().startswith(f"error: {tmp_path}: is a directory")
    assert not (tmp_path / "r.md").exists()  # the Markdown is not written without its HTML twin


def test_read_commands_name_a_tracking_server_that_is_away(project):
    # Port 9 (discard) has no server: diagnose and diff give up, in one line. (Without the
    # retries setting they give up after ~7 s of MLflow's retries instead of ~4 minutes.)
    for args in (["diagnose", project["b"]], ["diff", project["a"], project["b"]]):
        r = run_cli(
            *args,
            cwd=project["root"],
            env={"MLFLOW_TRACKING_URI": "http://127.0.0.1:9", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"},
        )
        assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert r.stderr.startswith("error: MLflow at http://127.0.0.1:9: unreachable:")


def test_diff_html_into_a_read_only_directory_fails_in_one_line(project, tmp_path):
    out = tmp_path / "locked"
    out.mkdir()
    with read_only(out):
        r = run_unprivileged("diff", project["a"], project["b"], "--html", str(out / "d.html"), cwd=project["root"])
    assert r.returncode == 2 and r.stderr.strip() == (
        f"error: {out}: permission denied while writing (make it readable/writable for this user, "
        "or choose another path)"
    )
    assert list(out.iterdir()) == []


# ---------------------------------------------------------------- DVC remote


def test_dvc_remote_round_trip_restores_data_and_models_on_a_fresh_clone(project, tmp_path):
    root = project["root"]
    run_tool("dvc", "remote", "add", "-d", "-f", "team", str(tmp_path / "remote"), cwd=root)
    run_tool(*GIT, "commit", "-qm", "dvc remote", ".dvc/config", cwd=root)
    run_tool("dvc", "push", "--all-commits", cwd=root)  # HEAD holds run A's lock, the workspace run B's
    clone = tmp_path / "clone"
    run_tool("git", "clone", "-q", str(root), str(clone), cwd=tmp_path)
    assert not (clone / "models/model.keras").exists()
    run_tool("dvc", "pull", cwd=clone)
    lock = yaml.safe_load((clone / "dvc.lock").read_text())
    outs = {o["path"]: o["md5"] for st in lock["stages"].values() for o in st.get("outs", [])}
    assert _md5(clone / "models/model.keras") == outs["models/model.keras"]
    prepared = sorted(p.name for p in (root / "data/prepared").iterdir())
    assert prepared == sorted(p.name for p in (clone / "data/prepared").iterdir())
    for name in prepared:
        assert (clone / "data/prepared" / name).read_bytes() == (root / "data/prepared" / name).read_bytes(), name
    cached = root / ".dvc/cache/files/md5" / outs["models/model.keras"][:2] / outs["models/model.keras"][2:]
    assert (clone / "models/model.keras").read_bytes() == cached.read_bytes()
    assert "up to date" in run_tool("dvc", "status", cwd=clone).stdout  # nothing to rerun on the clone


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------- queued experiments


def test_queued_experiments_ran_in_parallel_into_the_project_store(project):
    root, status = project["root"], project["queue_status"]
    rows = {ln.split()[1]: ln.split()[-1] for ln in status.splitlines() if len(ln.split()) >= 4}  # task name ... status
    assert rows.get("bad-lr") == rows.get("small-batch") == "Success", status
    # Queued runs execute in temp copies under .dvc/tmp/exps; they must land in the project's store.
    new = [r for r in _train_runs(root) if r.info.run_id not in project["runs_before"]]
    assert sorted((r.data.params["train.batch_size"], r.data.params["train.learning_rate"]) for r in new) == [
        ("16", "0.001"),
        ("32", "1e-05"),
    ]
    assert all(r.info.status == "FINISHED" and "test_accuracy" in r.data.metrics for r in new)
    assert project["b"] in {r.info.run_id for r in new}  # the applied experiment's run.json points at its run


def _train_runs(root: Path) -> list:
    from losstrace.record import contract, store

    c = _store(root)
    exp = c.get_experiment_by_name(store.experiment_name())
    return c.search_runs([exp.experiment_id], filter_string=f"tags.`{contract.KIND_TAG}` = 'train'")


def _wait_for_queue(root: Path, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = run_tool("dvc", "queue", "status", cwd=root).stdout
        if " Queued" not in out and " Running" not in out:
            return out
        time.sleep(3)
    raise AssertionError(f"queue still busy after {timeout}s:\n{out}")


# ---------------------------------------------------------------- outputs that cannot be written


@contextmanager
def read_only(path: Path):
    mode = path.stat().st_mode
    path.chmod(0o555)
    try:
        yield
    finally:
        path.chmod(mode)


def run_unprivileged(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The real console script, unable to write where permissions forbid it.

    The suite runs as root in some sandboxes, and root ignores file modes through
    CAP_DAC_OVERRIDE; setpriv drops that capability (and DAC_READ_SEARCH) from the child,
    so a chmod 555 directory refuses it exactly as it refuses an ordinary user.
    """
    prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"] if os.geteuid() == 0 else []
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run([*prefix, str(BIN / "losstrace"), *args], cwd=cwd, env=env, capture_output=True, text=True)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_ingest_into_a_read_only_directory_fails_in_one_line_and_keeps_the_old_data(project, tmp_path):
    root = project["root"]
    text = (root / "params.yaml").read_text()
    assert "  seed: 42" in text
    (tmp_path / "params.yaml").write_text(text.replace("  seed: 42", "  seed: 7", 1))  # new split, new bytes
    before = _snapshot(root / "data/prepared")
    with read_only(root / "data/prepared"):
        r = run_unprivileged("ingest", "--params", str(tmp_path / "params.yaml"), "--out", "data/prepared", cwd=root)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines() == [r.stderr.strip()]
    assert r.stderr.startswith("error: data/prepared: permission denied while writing")  # the folder refused
    assert _snapshot(root / "data/prepared") == before
    assert not list((root / "data").glob(".losstrace-stage-*"))  # no half-published leftovers either


def test_evaluate_into_a_read_only_directory_fails_in_one_line_and_keeps_the_old_metrics(project):
    root = project["root"]
    before = _snapshot(root / "reports/evaluate")
    history = len(_store(root).get_metric_history(project["b"], "test_accuracy"))
    with read_only(root / "reports/evaluate"):
        r = run_unprivileged("evaluate", "--params", "params.yaml", cwd=root)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines() == [r.stderr.strip()]
    assert r.stderr.startswith("error: reports/evaluate: permission denied while writing")
    assert _snapshot(root / "reports/evaluate") == before
    assert not list(root.glob(".losstrace-stage-*"))
    # Nothing half-recorded either: the run got no test metrics from the failed evaluation.
    assert len(_store(root).get_metric_history(project["b"], "test_accuracy")) == history
