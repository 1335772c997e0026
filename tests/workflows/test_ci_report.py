"""ci-report's gate and rendering on hand-made metrics (the real two-run test is in test_team.py)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from losstrace.params import CiParams
from losstrace.workflows import ci_report
from support import run_cli, run_tool

METRICS = {  # the shape `dvc metrics diff --json` gives, merged over files
    "test.accuracy": {"old": 0.9, "new": 0.85, "diff": -0.05},
    "test.macro_f1": {"old": 0.88, "new": 0.87, "diff": -0.01},
    "test.loss": {"old": 0.3, "new": 0.5, "diff": 0.2},
    "test.rows": {"old": 370, "new": 370, "diff": 0},
    "test.per_class.1.recall": {"old": 1.0, "new": 0.5, "diff": -0.5},
}


def test_only_a_drop_past_the_threshold_fails():
    rows = {c.metric: c for c in ci_report.checks(METRICS, CiParams(max_accuracy_drop=0.02, max_macro_f1_drop=0.03))}
    assert set(rows) == {"test.accuracy", "test.macro_f1", "test.loss", "test.rows"}  # per-class left out
    assert rows["test.accuracy"].failed and not rows["test.macro_f1"].failed
    assert not rows["test.loss"].failed  # shown, not gated
    relaxed = ci_report.checks(METRICS, CiParams(max_accuracy_drop=0.05, max_macro_f1_drop=0.03))
    assert not any(c.failed for c in relaxed)  # exactly at the threshold passes


def test_a_rev_without_metrics_is_reported_ungated():
    rows = ci_report.checks({"test.accuracy": {"old": None, "new": 0.8}}, CiParams())
    md = ci_report.render("main", rows, "")
    assert not rows[0].failed and "**OK, ungated.**" in md and "| test.accuracy | - | 0.8000 | - |" in md


def test_a_gated_metric_missing_from_the_workspace_fails_the_gate():
    # dvc metrics diff reports new: null when the workspace lost metrics.json
    rows = ci_report.checks(
        {"test.accuracy": {"old": 0.9, "new": None}, "test.macro_f1": {"old": 0.8, "new": 0.8}}, CiParams()
    )
    assert [c.metric for c in rows if c.failed] == ["test.accuracy"]
    md = ci_report.render("main", rows, "")
    assert md.startswith(
        "# losstrace CI report\n\n**Regression.** `test.accuracy` is missing from the workspace (0.9000 at `main`)"
    )


def test_report_names_the_regression_and_its_threshold():
    md = ci_report.render("main", ci_report.checks(METRICS, CiParams()), "> note\n")
    assert md.startswith("# losstrace CI report\n\n**Regression.** `test.accuracy` fell 0.0500 (0.9000 → 0.8500)")
    assert "`ci.max_accuracy_drop` = 0.02" in md
    assert "| test.accuracy | 0.9000 | 0.8500 | -0.0500 | 0.02 | **regressed** |" in md
    assert "| test.rows | 370 | 370 | +0 | - |  |" in md
    assert md.endswith("> note\n")


def test_baseline_run_comes_from_the_rev_and_offline_runs_are_skipped(tmp_path):
    run_json = tmp_path / "reports" / "train" / "run.json"
    run_json.parent.mkdir(parents=True)
    run_json.write_text(json.dumps({"run_id": "aaa", "tracking_uri": "sqlite:///x"}))
    run_tool("git", "init", "-q", cwd=tmp_path)
    run_tool("git", "-c", "user.email=t@t", "-c", "user.name=t", "add", "-A", cwd=tmp_path)
    run_tool("git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "base", cwd=tmp_path)
    run_json.write_text(json.dumps({"run_id": None, "offline": True}))
    assert ci_report.committed_run_id(tmp_path, "HEAD") == "aaa"
    assert ci_report.committed_run_id(tmp_path, "no-such-rev") is None
    assert ci_report.workspace_run_id(tmp_path) is None  # offline: nothing to diff until `losstrace sync`
    note, result = ci_report.explain(tmp_path, "aaa", None)
    assert result is None and "losstrace sync" in note


def test_new_commands_have_help_and_ci_report_stays_light(tmp_path):
    for command in ("ci-report", "sync"):
        r = run_cli(command, "--help", cwd=tmp_path)
        assert r.returncode == 0 and r.stdout.startswith(f"usage: losstrace {command}")
    code = "import sys; from losstrace.workflows import ci_report, sync; print('tensorflow' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_the_workspace_run_is_never_replaced_by_another_one(tmp_path):
    from losstrace.errors import LosstraceError
    from losstrace.workflows import runs

    assert runs.default_ref(tmp_path) == "latest"  # nothing trained here yet
    run_json = tmp_path / "reports/train/run.json"
    run_json.parent.mkdir(parents=True)
    run_json.write_text(json.dumps({"run_id": "abc", "tracking_uri": "sqlite:///x.db"}))
    assert runs.default_ref(tmp_path) == "abc"
    # Recorded offline: "latest" would silently describe some other training.
    run_json.write_text(json.dumps({"run_id": None, "offline": True, "tracking_uri": "http://team:5000"}))
    with pytest.raises(LosstraceError, match="recorded offline.*losstrace sync"):
        runs.default_ref(tmp_path)
