"""Benchmarks on a reproduced temp copy of the project: no-op `dvc repro` and CLI start-up.

One project serves both (built on first use): the shipped pipeline copied by the test
suite's `make_project` into a fresh git repo, with shrunk epochs, then `dvc repro`.
- No-op repro: on an up-to-date repo `dvc repro` must cost what `dvc status` costs
  (DVC's own hashing), nothing of ours: no stage runs, nothing imports TensorFlow.
- CLI: `losstrace --help` (users type it first) and `losstrace diff A B` on two
  recorded runs (a second training with another batch size), each the median of N.

At --quick stage_cost reproduces this same project (run.py: its epochs match) without a
warm-up: its forced repro is the project's first reproduction, so the quick run builds one
project and runs its four stages once (plus train and evaluate for the diff's second run).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

from .common import BIN, REPO, interleave, measure, median, paired_ratio, wall


class Project:
    """A reproduced temp project and the runs it recorded, each with what it changed."""

    def __init__(self, work: Path, epochs: int) -> None:
        self.work, self.epochs = work, epochs
        self.root: Path | None = None
        self.runs: list[tuple[str, str]] = []  # (run id, what changed since the first run)

    def built(self) -> Path:
        """The project's files in a fresh git repo, made the first time they are needed."""
        if self.root is None:
            sys.path.insert(0, str(REPO / "tests"))
            from support import make_project  # the test suite's copy of the pipeline, one definition

            self.root = make_project(self.work, {"train.epochs": self.epochs})
        return self.root

    def ready(self) -> Path:
        """The project reproduced (by `dvc repro` here unless another benchmark did)."""
        root = self.built()
        if not self.runs:
            self._repro("nothing: the first run")
        return root

    def second_run(self) -> tuple[str, str, str]:
        """Two recorded runs to diff and what the second changed: a training another
        benchmark already recorded here, else a new one with the batch size halved."""
        root = self.ready()
        if len(self.runs) < 2:
            params = yaml.safe_load((root / "params.yaml").read_text())
            params["train"]["batch_size"] = max(params["train"]["batch_size"] // 2, 1)
            (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
            self._repro("train.batch_size halved")
        (run_a, _), (run_b, change) = self.runs[:2]
        return run_a, run_b, change

    def record_run(self, change: str) -> None:
        """Note the training the last reproduction of this project recorded and what it
        changed since the first run."""
        run_id = json.loads((self.built() / "reports" / "train" / "run.json").read_text())["run_id"]
        self.runs.append((run_id, change if self.runs else "nothing: the first run"))

    def _repro(self, change: str) -> None:
        wall([str(BIN / "dvc"), "repro"], self.root)
        self.record_run(change)


def _noop_repro(root: Path) -> float:
    m = measure([str(BIN / "dvc"), "repro"], root)
    if m.returncode != 0 or "Running stage" in m.stdout:
        raise RuntimeError(f"`dvc repro` on an up-to-date project was not a no-op:\n{m.stdout}\n{m.stderr}")
    return m.seconds


def noop_repro(project: Project, reps: int) -> dict[str, Any]:
    root = project.ready()
    arms = {"repro": lambda: _noop_repro(root), "status": lambda: wall([str(BIN / "dvc"), "status"], root)}
    for arm in arms.values():  # warm-up: DVC's site cache and the file system cache
        arm()
    times = interleave(arms, reps)
    return {
        "noop_repro_ratio": median(times["repro"]) / median(times["status"]),
        "noop_repro": {
            "repro_seconds": median(times["repro"]),
            "status_seconds": median(times["status"]),
            "paired_ratio": paired_ratio(times["repro"], times["status"]),
            "reps": reps,
            "train_epochs": project.epochs,
        },
    }


def _median_wall(cmd: list[str], cwd: Path, reps: int) -> float:
    wall(cmd, cwd)  # warm-up, not counted: the first start also reads the venv from disk
    return median([wall(cmd, cwd) for _ in range(reps)])


def cli(project: Project, reps: int) -> dict[str, Any]:
    losstrace = str(BIN / "losstrace")
    help_seconds = _median_wall([losstrace, "--help"], project.work.parent, reps)
    run_a, run_b, change = project.second_run()
    diff_seconds = _median_wall([losstrace, "diff", run_a, run_b], project.ready(), reps)
    return {
        "cli_help_seconds": help_seconds,
        "diff_seconds": diff_seconds,
        "cli": {"reps": reps, "diff_runs": [run_a, run_b], "diff_change": change},
    }
