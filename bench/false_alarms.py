"""False alarms: what diagnose says about runs that should get nothing.

A false alarm is a warning or error finding on a clean run, or a prescription that asks a
clean run to change something (only warnings and errors prescribe, so the two usually go
together; a change without a loud finding would be a bug of the prescription). The rows
are docs/diagnosis.md's "False alarms" table, each measured with today's code:

- simulated curves: the test suite's clean configurations (tests/explain/test_diagnose.py
  `CLEAN`, 8 of them) x seeds 0-2, through `diagnose_curves` and `prescribe`, as the suite
  simulates them (tests/explain/conftest.py);
- a simulated sweep: 4 of those configurations, the most different ones (5 classes at 40
  epochs; Japanese Vowels-sized, 216 rows in 7 steps an epoch; 102 classes, 150 epochs,
  batch 128; SGD at lr 0.01), x 50 more seeds (3-52, none the suite's);
- real trainings through the real stages (ingest, validate, train in the trial worker,
  replay.Workspace, the way bisect and fix replay runs; each seed its own split, as
  `dvc exp run -S base.seed=N` would make it), all findings read from the train stage's
  diagnosis.json (validate's data findings, lint's and the curve's, and the prescription):
  the well-configured baselines the test suite asserts clean, the shipped defaults, and
  BasicMotions at batch 8, which is not clean (its rows say so; they are the control that
  the rules still fire).

Each real run is also diagnosed again from its MLflow record, as `losstrace diagnose RUN
--json` does (runs.diagnose), and the two are compared: the stage sees the dynamics, the
command re-derives the curve findings, and they must agree. The noise-scale arm trains every
real run once more with `train.noise_scale_every` at one measurement per epoch: the
measured noise scale replaces the batch-noise heuristic for the batch advice, so it can
silence a false alarm or add one.
"""

from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .common import REPO, build_params

CLEAN_RUN = {"train.callbacks.checkpoint_monitor": "val_loss"}  # the best epoch kept
BM = {**CLEAN_RUN, "data.source": "basic_motions", "train.epochs": 40}
BM_CLEAN = {**BM, "train.batch_size": 16, "train.model.pooling": "avg"}  # the test suite's baseline
BM_8 = {**BM, "train.batch_size": 8}

SUITE_SEEDS = (0, 1, 2)
SWEEP = (0, 3, 4, 7)  # indexes into test_diagnose.CLEAN: see the module docstring
SWEEP_FIRST_SEED = 3

# Features worth keeping per real run: the numbers the docs quote when a run is not quiet.
FEATURES = (
    "epochs",
    "steps_per_epoch",
    "batch_noise",
    "epoch_jitter",
    "noise_scale",
    "best_loss",
    "final_loss",
    "best_val_loss",
    "best_val_epoch",
    "final_val_loss",
    "final_val_accuracy",
)


@dataclass(frozen=True)
class Real:
    name: str
    overrides: dict[str, Any]


@dataclass(frozen=True)
class Row:
    label: str
    clean: bool  # True: any warning, error or prescription change is a false alarm
    runs: tuple[Real, ...] = field(default_factory=tuple)


def _jv(seed: int, extra: dict[str, Any] | None = None) -> Real:
    return Real(f"Japanese Vowels seed {seed}", {**(extra or {}), "base.seed": seed})


REAL_ROWS: dict[str, Row] = {
    "well_configured": Row(
        "real, well configured (best epoch kept): Japanese Vowels seeds 42, 43, 45; its token traces; "
        "BasicMotions at batch 16, averaged over time, 40 epochs, seeds 42-44",
        True,
        (
            *(_jv(s, CLEAN_RUN) for s in (42, 43, 45)),
            Real("Japanese Vowels tokens seed 42", {**CLEAN_RUN, "data.source": "japanese_vowels_tokens"}),
            *(Real(f"BasicMotions batch 16 avg seed {s}", {**BM_CLEAN, "base.seed": s}) for s in (42, 43, 44)),
        ),
    ),
    "shipped_defaults": Row(
        "real, shipped defaults (last epoch kept, dropout 0.3), 30 epochs: Japanese Vowels seeds 42-44",
        False,  # the overfitting the docs explain is the model's: reported, not a false alarm by itself
        tuple(_jv(s) for s in (42, 43, 44)),
    ),
    "basic_motions_batch8": Row(
        "real, BasicMotions at batch 8 (4 steps an epoch), best epoch kept: last-step and averaged "
        "readout at lr 1e-3 (40 epochs), averaged at lr 3e-4 (80 epochs)",
        False,  # not a clean baseline (docs/diagnosis.md): Adam overshoots on 32 rows
        (
            Real("BasicMotions batch 8 last-step lr 1e-3", {**BM_8, "train.model.pooling": "last"}),
            Real("BasicMotions batch 8 avg lr 1e-3", {**BM_8, "train.model.pooling": "avg"}),
            # At a third of the rate the loss gets low enough to overshoot only later: at 40
            # epochs it is still falling, calm (best val loss at epoch 39, train loss 0.52).
            Real(
                "BasicMotions batch 8 avg lr 3e-4, 80 epochs",
                {**BM_8, "train.model.pooling": "avg", "train.learning_rate": 0.0003, "train.epochs": 80},
            ),
        ),
    ),
}


# ---------------------------------------------------------------- one diagnosis


def loud(findings: list[dict[str, Any]]) -> list[str]:
    """`code:severity` of the warnings and errors, in the diagnosis' order."""
    return [f"{f['code']}:{f['severity']}" for f in findings if f["severity"] in ("warning", "error")]


def verdict(findings: list[dict[str, Any]], prescription: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "loud": loud(findings),
        "info": sorted({f["code"] for f in findings if f["severity"] == "info"}),
        "prescription": [
            {"key": c["key"], "from": c["from"], "to": c["to"], "findings": c["findings"]} for c in prescription
        ],
    }


def summary(label: str, clean: bool, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """A table row: runs, those with a loud finding, those with a prescription, and totals."""
    return {
        "label": label,
        "clean": clean,
        "runs": len(runs),
        "runs_with_warnings": sum(bool(r["loud"]) for r in runs),
        "warnings": sum(len(r["loud"]) for r in runs),
        "runs_with_prescription": sum(bool(r["prescription"]) for r in runs),
        "prescription_changes": sum(len(r["prescription"]) for r in runs),
        "codes": sorted({c for r in runs for c in r["loud"]}),
        "keys": sorted({c["key"] for r in runs for c in r["prescription"]}),
    }


# ---------------------------------------------------------------- simulated


def _simulator():
    """The test suite's simulator and clean configurations: one definition of both."""
    tests = str(REPO / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
    from explain.conftest import simulate
    from explain.test_diagnose import CLEAN

    return simulate, CLEAN


def simulated(configs: list[dict[str, Any]], seeds: list[int]) -> list[dict[str, Any]]:
    from losstrace.explain.diagnose import diagnose_curves
    from losstrace.explain.prescription import as_json, prescribe

    simulate, _ = _simulator()
    out = []
    for i, config in enumerate(configs):
        for seed in seeds:
            history, batches, context = simulate(seed=seed, **config)
            findings = [f.to_dict() for f in diagnose_curves(history, batches, context)]
            out.append({"config": i, "seed": seed, **verdict(findings, as_json(prescribe(findings, context)))})
    return out


def _flagged(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Only the runs that got something are kept (hundreds of quiet ones say nothing)."""
    return [r for r in runs if r["loud"] or r["prescription"]]


# ---------------------------------------------------------------- real


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 4) if math.isfinite(value) else None
    return value


def real_run(ws, run: Real, epochs: int | None, noise_every: int | None) -> dict[str, Any]:
    """One training through the stages; its diagnosis from the stage and from the record."""
    from losstrace.workflows import runs

    overrides = dict(run.overrides)
    if epochs is not None:
        overrides["train.epochs"] = min(epochs, int(overrides.get("train.epochs", epochs)))
    if noise_every:
        overrides["train.noise_scale_every"] = noise_every
    p = build_params(overrides)
    out = ws.train(p, source_root=REPO)
    if out.error:
        raise RuntimeError(f"{run.name}: {out.error}")
    diagnosis = json.loads((out.reports / "diagnosis.json").read_text())
    stage = verdict(diagnosis["findings"], diagnosis.get("prescription") or [])
    # `losstrace diagnose RUN --json`: the curve findings re-derived from the MLflow record.
    before = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = ws.env["MLFLOW_TRACKING_URI"]
    try:
        again = runs.diagnose(out.run_id, ws.dir)
    finally:
        if before is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = before
    command = verdict(again["findings"], again.get("prescription") or [])
    return {
        "name": run.name,
        "overrides": overrides,
        **stage,
        "notes": diagnosis.get("prescription_notes") or [],
        "diagnose_command": command if command != stage else "same",
        "features": {k: _rounded(out.features.get(k)) for k in FEATURES},
        "fit_seconds": out.fit_seconds,
    }


# Training rows after the stratified val split (ingest.json), so the noise-scale arm can be
# given one measurement per epoch before it trains.
TRAIN_ROWS = {"japanese_vowels": 216, "japanese_vowels_tokens": 216, "basic_motions": 32}


def _noise_every(run: Real) -> int:
    """One measurement per epoch: the steps of an epoch on the run's training split."""
    rows = TRAIN_ROWS[run.overrides.get("data.source", "japanese_vowels")]
    batch = int(run.overrides.get("train.batch_size", 32))
    return max(1, -(-rows // batch))


def real(
    work: Path,
    rows: dict[str, Row],
    runs_per_row: int | None,
    epochs: int | None,
    noise_scale: bool,
    session=None,
) -> dict[str, dict[str, Any]]:
    """Every real row's runs in one trial worker (one TensorFlow import, splits reused):
    `session`'s, left open, else one of its own."""
    from losstrace.record import contract
    from losstrace.workflows.replay import WORKER, Session, Workspace

    work.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{work / 'mlflow.db'}"
    arms = {"shipped": False, **({"noise_scale": True} if noise_scale else {})}
    results: dict[str, dict[str, Any]] = {}
    own = session is None
    session = session or Session(WORKER)
    try:
        # A trial's kind: its model is not logged (the kind changes nothing in the diagnosis).
        ws = Workspace(uri, contract.KIND_BISECT_TRIAL, session=session)
        try:
            for key, row in rows.items():
                for arm, on in arms.items():
                    done = [
                        real_run(ws, run, epochs, _noise_every(run) if on else None) for run in row.runs[:runs_per_row]
                    ]
                    results[f"{key}/{arm}"] = {**summary(row.label, row.clean, done), "arm": arm, "per_run": done}
                    print(f"   {key} ({arm}): {_line(results[f'{key}/{arm}'])}", flush=True)
        finally:
            ws.close()
    finally:
        if own:
            session.close()
    return results


def _line(s: dict[str, Any]) -> str:
    return (
        f"{s['runs_with_warnings']}/{s['runs']} runs with warnings/errors {s['codes'] or ''}, "
        f"{s['runs_with_prescription']} with a prescription {s['keys'] or ''}"
    )


# ---------------------------------------------------------------- the table


def measure(
    work: Path,
    sweep_seeds: int,
    runs_per_row: int | None = None,
    epochs: int | None = None,
    noise_scale: bool = True,
    session=None,
) -> dict[str, Any]:
    """Every row of the table. runs_per_row/epochs cap the real rows (--quick); session: a
    trial-worker session to train in (run.py's, shared with trials)."""
    _, clean = _simulator()
    rows: dict[str, dict[str, Any]] = {}
    suite = simulated(list(clean), list(SUITE_SEEDS))
    rows["simulated_suite"] = {
        **summary(
            f"simulated curves: the test suite's {len(clean)} clean configurations x {len(SUITE_SEEDS)} seeds",
            True,
            suite,
        ),
        "flagged": _flagged(suite),
    }
    seeds = list(range(SWEEP_FIRST_SEED, SWEEP_FIRST_SEED + sweep_seeds))
    sweep = simulated([clean[i] for i in SWEEP], seeds)
    rows["simulated_sweep"] = {
        **summary(f"simulated sweep: {len(SWEEP)} configurations x {len(seeds)} seeds", True, sweep),
        "configs": [clean[i] for i in SWEEP],
        "flagged": _flagged(sweep),
    }
    for key in ("simulated_suite", "simulated_sweep"):
        print(f"   {key}: {_line(rows[key])}", flush=True)
    rows.update(real(work, REAL_ROWS, runs_per_row, epochs, noise_scale, session))
    clean_rows = [r for r in rows.values() if r["clean"]]
    return {
        "false_alarm_runs": sum(r["runs"] for r in clean_rows),
        "false_alarm_runs_with_warnings": sum(r["runs_with_warnings"] for r in clean_rows),
        "false_alarm_runs_with_prescription": sum(r["runs_with_prescription"] for r in clean_rows),
        "false_alarm": {"rows": rows, "epochs_cap": epochs, "runs_per_row": runs_per_row},
    }
