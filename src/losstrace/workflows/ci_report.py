"""`losstrace ci-report`: a scheduled retrain's verdict, as Markdown for the CI job summary.

The gate: `dvc metrics diff REV` compares the workspace's test metrics with those
committed at REV, and a headline metric that fell further than params.yaml's `ci`
section allows fails the job (exit 1). It needs only git and DVC.

The explanation: `losstrace diff` between the run committed at REV (its
reports/train/run.json, so the same rev the metrics come from) and the run behind the
workspace. It needs both runs on the tracking store (a team server); when one is
missing, as on a CI runner with a throwaway local store, the report says so and the
gate still decides.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from losstrace import params as params_mod
from losstrace.errors import LosstraceError
from losstrace.io import write_text
from losstrace.params import CiParams
from losstrace.record import reader

GATES = {"test.accuracy": "max_accuracy_drop", "test.macro_f1": "max_macro_f1_drop"}  # metric → ci.* key
RUN_JSON = Path("reports/train/run.json")


@dataclass(frozen=True)
class Check:
    """One headline metric at the rev and in the workspace, and how far it may drop."""

    metric: str
    old: float | None
    new: float | None
    allowed_drop: float | None = None  # None = shown, not gated

    @property
    def change(self) -> float | None:
        return None if self.old is None or self.new is None else self.new - self.old

    @property
    def missing(self) -> bool:
        """A gated metric the rev has and the workspace lost: evaluate did not run or failed."""
        return self.allowed_drop is not None and self.old is not None and self.new is None

    @property
    def failed(self) -> bool:
        # A tiny epsilon: metrics.json rounds to 6 digits, so an exact-threshold drop is not a failure.
        if self.missing:
            return True
        return self.allowed_drop is not None and self.change is not None and -self.change > self.allowed_drop + 1e-9


def metrics_diff(root: Path, rev: str) -> dict[str, dict[str, Any]]:
    """`dvc metrics diff REV --all` as {metric: {"old": ..., "new": ...}} over every metrics file."""
    r = subprocess.run(
        [sys.executable, "-m", "dvc", "metrics", "diff", rev, "--all", "--json"],
        cwd=root,
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        reason = next((ln for ln in r.stderr.splitlines() if ln.strip()), f"exit {r.returncode}")
        raise LosstraceError(
            f"dvc metrics diff {rev}",
            reason.removeprefix("ERROR: "),
            "pass a rev git knows (in CI: actions/checkout with fetch-depth: 0)",
        )
    merged: dict[str, dict[str, Any]] = {}
    for per_file in (json.loads(r.stdout or "{}") or {}).values():
        merged.update(per_file)
    return merged


def checks(metrics: dict[str, dict[str, Any]], ci: CiParams) -> list[Check]:
    """The headline metrics (per-class ones left out), gated where params.yaml's ci section says."""
    out = []
    for name, values in sorted(metrics.items()):
        if ".per_class." in name:
            continue
        key = GATES.get(name)
        out.append(
            Check(name, _number(values.get("old")), _number(values.get("new")), getattr(ci, key) if key else None)
        )
    return out


def committed_run_id(root: Path, rev: str, run_json: Path = RUN_JSON) -> str | None:
    """The MLflow run whose outputs are committed at `rev` (run.json is a git-tracked DVC output)."""
    r = subprocess.run(["git", "show", f"{rev}:./{run_json.as_posix()}"], cwd=root, capture_output=True, text=True)
    return _run_id(r.stdout) if r.returncode == 0 else None


def workspace_run_id(root: Path, run_json: Path = RUN_JSON) -> str | None:
    """The run behind the workspace's outputs; None when there is none or it is still offline."""
    path = root / run_json
    return _run_id(path.read_text(encoding="utf-8")) if path.exists() else None


def _run_id(text: str) -> str | None:
    try:
        info = json.loads(text)
    except ValueError:
        return None
    return None if info.get("offline") else info.get("run_id")


def explain(root: Path, baseline: str | None, current: str | None) -> tuple[str, dict[str, Any] | None]:
    """`losstrace diff` Markdown between the two runs, or a note saying why there is none."""
    if not baseline or not current:
        which = "the rev has no recorded run" if not baseline else "the workspace run is not on the store yet"
        return f"> No run diff: {which} (offline runs: `losstrace sync`).\n", None
    if baseline == current:
        return f"> No run diff: the workspace holds the run committed at the rev ({current}).\n", None
    from losstrace.explain import report
    from losstrace.workflows import runs

    try:
        result = runs.diff(baseline, current, root)
    except LosstraceError as e:
        return f"> No run diff: {e.where}: {e.what} ({e.fix}).\n", None
    return report.render_markdown(result["diff"], result["a"], result["b"]), result


def render(rev: str, rows: list[Check], explanation: str) -> str:
    """The report: verdict first, then the metrics table, then the run diff."""
    failed = [c for c in rows if c.failed]
    gated = [c for c in rows if c.allowed_drop is not None and c.change is not None]
    if failed:
        verdict = "**Regression.** " + "; ".join(
            f"`{c.metric}` is missing from the workspace ({_fmt(c.old)} at `{rev}`): evaluate did not write it"
            if c.missing
            else f"`{c.metric}` fell {-c.change:.4f} ({_fmt(c.old)} → {_fmt(c.new)}), more than "
            f"`ci.{GATES[c.metric]}` = {c.allowed_drop:g}"
            for c in failed
        )
    elif gated:
        verdict = f"**OK.** No gated metric fell further than params.yaml's `ci` section allows (vs `{rev}`)."
    else:
        verdict = f"**OK, ungated.** `{rev}` has no committed metrics to compare with."
    lines = [
        "# losstrace CI report",
        "",
        verdict,
        "",
        f"## Test metrics: `{rev}` → workspace",
        "",
        "| metric | " + rev.replace("|", "\\|") + " | workspace | change | allowed drop | |",
        "|---|---|---|---|---|---|",
    ]
    for c in rows:
        allowed = "-" if c.allowed_drop is None else f"{c.allowed_drop:g}"
        status = "**regressed**" if c.failed else ""
        lines.append(
            f"| {c.metric} | {_fmt(c.old)} | {_fmt(c.new)} | {_fmt(c.change, signed=True)} | {allowed} | {status} |"
        )
    return "\n".join(lines) + "\n\n" + explanation


def main(
    root: Path,
    params_path: Path,
    rev: str,
    run_ref: str | None = None,
    baseline_ref: str | None = None,
    out: Path | None = None,
    html: Path | None = None,
) -> dict[str, Any]:
    ci = params_mod.load(params_path).ci
    for path in (out, html):  # before anything is written: no report without its HTML twin
        if path is not None and path.is_dir():
            raise LosstraceError(str(path), "is a directory", "give a file path, e.g. reports/ci.md")
    rows = checks(metrics_diff(root, rev), ci)
    # A run named on the command line must exist; the defaults may legitimately be absent
    # (an offline run, a rev recorded on another store) and only cost the diff.
    baseline = reader.resolve_run(baseline_ref, root) if baseline_ref else committed_run_id(root, rev)
    current = reader.resolve_run(run_ref, root) if run_ref else workspace_run_id(root)
    explanation, result = explain(root, baseline, current)
    markdown = render(rev, rows, explanation)
    if out:
        write_text(out, markdown)
    if html and result:
        from losstrace.explain import report

        write_text(html, report.render_html(result["diff"], result["a"], result["b"]))
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:  # GitHub shows this file on the run's page; other steps append to it too
        with open(summary, "a", encoding="utf-8") as f:
            f.write(markdown + "\n")
    return {
        "markdown": markdown,
        "failed": [c.metric for c in rows if c.failed],
        "baseline": baseline,
        "run": current,
        "diffed": result is not None,
    }


def _number(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _fmt(v: float | None, signed: bool = False) -> str:
    if v is None:
        return "-"
    if float(v).is_integer():  # row counts stay whole numbers
        return f"{int(v):+d}" if signed else str(int(v))
    return f"{v:+.4f}" if signed else f"{v:.4f}"
