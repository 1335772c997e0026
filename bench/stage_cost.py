"""What the pipeline costs beside its own work: `dvc repro -f` of the default pipeline, per stage.

A fresh copy of the shipped pipeline (the test suite's `make_project`, default params) is
reproduced once (warm-up: DVC's caches, the MLflow store), then forced N times (--quick:
the CLI benchmarks' project at the same epochs, forced without a warm-up; bench/project.py). Each run's
output is read line by line as it comes: a stage's seconds run from DVC's "Running stage"
to its "Updating lock file" (the command and DVC's hashing of its outputs); what is left
of the total is DVC itself (start-up, status, the lock file). Beside each stage, the work it
exists for, as the stage itself reports it: `model.fit` for train (reports/train/run.json),
predictions for evaluate and the checks and Great Expectations suite for validate (their
summary lines). What a stage spends outside its work is start-up (imports) and bookkeeping.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .common import BIN, REPO, median, tool_env, wall
from .project import Project

STAGES = ("ingest", "validate", "train", "evaluate")
TARGET_RATIO = 5.0  # `dvc repro -f` at most this many times the fit it exists for
# The work figures the stages print on their summary line (train's also lives in run.json).
WORK_PATTERNS = {
    "validate": re.compile(r"\(checks and suite ([0-9.]+) s\)"),
    "evaluate": re.compile(r"predicted in ([0-9.]+) s\)"),
}
WORK_LABELS = {"train": "model.fit", "validate": "checks and suite", "evaluate": "predictions"}
_RUNNING = re.compile(r"Running stage '([^']+)'")


def stage_spans(lines: list[tuple[float, str]], end: float) -> dict[str, float]:
    """Seconds per stage from timestamped `dvc repro` output lines: from "Running stage 'x'"
    to its "Updating lock file" (DVC prints none when the stage's lock entry did not change),
    else to the next stage's start, else to `end`."""
    spans: dict[str, float] = {}
    current: tuple[str, float] | None = None
    for t, line in lines:
        m = _RUNNING.search(line)
        if current is not None and (m or "Updating lock file" in line):
            spans[current[0]] = t - current[1]
            current = None
        if m:
            current = (m.group(1), t)
    if current is not None:
        spans[current[0]] = end - current[1]
    return spans


def stage_work(text: str) -> dict[str, float]:
    """The work seconds validate and evaluate print on their summary lines."""
    out = {}
    for stage, pattern in WORK_PATTERNS.items():
        m = pattern.search(text)
        if m:
            out[stage] = float(m.group(1))
    return out


def repro_force(root: Path) -> dict[str, Any]:
    """One `dvc repro -f`: total seconds, each stage's seconds and each stage's work."""
    env = {**tool_env(), "PYTHONUNBUFFERED": "1"}  # every line as it is printed, for its timestamp
    lines: list[tuple[float, str]] = []
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [str(BIN / "dvc"), "repro", "-f"],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append((time.perf_counter() - t0, line.rstrip("\n")))
    returncode = proc.wait()
    total = time.perf_counter() - t0
    text = "\n".join(line for _, line in lines)
    if returncode != 0:
        raise RuntimeError(f"`dvc repro -f` failed ({returncode}) in {root}:\n{text}")
    spans = stage_spans(lines, total)
    missing = [s for s in STAGES if s not in spans]
    if missing:
        raise RuntimeError(f"`dvc repro -f` ran no stage {', '.join(missing)}:\n{text}")
    work = stage_work(text)
    work["train"] = json.loads((root / "reports" / "train" / "run.json").read_text())["fit_seconds"]
    return {"seconds": total, "stages": spans, "work": work}


def measure(work: Path, reps: int, epochs: int | None = None, project: Project | None = None) -> dict[str, Any]:
    """`reps` forced reproductions of the default pipeline (train.epochs overridden when given).

    project: the shared bench project, at `epochs` (--quick): no warm-up (quick figures are
    not quoted), the first forced run reproduces it, and each is recorded in it for the CLI
    benchmark's diff."""
    if project is not None:
        root = project.built()
    else:
        sys.path.insert(0, str(REPO / "tests"))
        from support import make_project  # the test suite's copy of the pipeline, one definition

        root = make_project(work, {"train.epochs": epochs} if epochs else None)
        wall([str(BIN / "dvc"), "repro"], root)  # warm-up, not counted: creates the store, fills caches
    runs = []
    for _ in range(reps):
        runs.append(repro_force(root))
        if project is not None:
            project.record_run("nothing: the same params forced again (stage_cost)")
    stages = {
        s: {
            "seconds": median([r["stages"][s] for r in runs]),
            **(
                {"work": WORK_LABELS[s], "work_seconds": median([r["work"][s] for r in runs])}
                if all(s in r["work"] for r in runs)
                else {}
            ),
        }
        for s in STAGES
    }
    dvc = median([r["seconds"] - sum(r["stages"].values()) for r in runs])
    return {
        "repro_force_seconds": median([r["seconds"] for r in runs]),
        "fit_seconds": median([r["work"]["train"] for r in runs]),
        # Each repetition's own total / fit: both felt the same load.
        "repro_force_fit_ratio": median([r["seconds"] / r["work"]["train"] for r in runs]),
        "stage_cost": {
            # results.json sorts keys, so the pipeline order is kept as a list.
            "order": list(STAGES),
            "stages": stages,
            "dvc_seconds": dvc,
            "reps": reps,
            "train_epochs": epochs or "params.yaml",
            "target_ratio": TARGET_RATIO,
            "runs": runs,
        },
    }
