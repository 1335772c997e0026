"""Read recorded runs back from MLflow alone, so runs from CI or another machine compare too.

The train stage logs history.csv, batches.csv, context.json, diagnosis.json and the
data fingerprint as artifacts under `losstrace/`; this module turns them back into a
`RunRecord`. No TensorFlow import: `diff` answers in about a second.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pandas as pd

from losstrace.errors import LosstraceError, first_line
from losstrace.params import DiagnoseParams, from_dict
from losstrace.record import tracking
from losstrace.record.run_record import RunRecord

ARTIFACT_DIR = "losstrace"
ENV_TAGS = ("device", "determinism")


def default_ref(root: Path) -> str:
    """The run behind the outputs in the workspace (a DVC run-cache restore keeps its id), else the latest.

    A training recorded offline is not (completely) in MLflow yet: answering with the
    latest run instead would silently describe some other training.
    """
    run_json = root / "reports" / "train" / "run.json"
    if run_json.exists():
        try:
            info = json.loads(run_json.read_text())
        except ValueError:
            return "latest"
        if info.get("offline"):
            raise LosstraceError(
                str(run_json),
                "the workspace's training was recorded offline and is not in MLflow yet",
                "run `losstrace sync` first, or name a run (e.g. latest)",
            )
        if info.get("run_id"):
            return info["run_id"]
    return "latest"


def load_record(ref: str | None, root: Path) -> RunRecord:
    run = tracking.read_run(root, ref or default_ref(root), ARTIFACT_DIR)
    if "history.csv" not in run.files:
        raise LosstraceError(
            f"run {run.run_id}",
            "has no losstrace artifacts (not a losstrace training run?)",
            "pick a run recorded by `dvc repro` / `losstrace train`",
        )
    env = {k[len("env.") :]: v for k, v in run.tags.items() if k.startswith("env.")}
    env.update({k: run.tags[k] for k in ENV_TAGS if k in run.tags})
    empty = RunRecord(run.run_id)

    def artifact(name: str) -> Any:
        """A parsed artifact, None when absent; a damaged one is a one-line error naming it."""
        data = run.files.get(name)
        if data is None:
            return None
        try:
            return _csv(data) if name.endswith(".csv") else _json(data)
        except (ValueError, UnicodeDecodeError) as e:  # EmptyDataError, ParserError, JSONDecodeError
            raise LosstraceError(
                f"run {run.run_id}: {ARTIFACT_DIR}/{name}",
                f"unreadable ({first_line(e)})",
                "the run's artifacts are damaged: retrain it (`dvc repro -f train`)",
            ) from None

    grad_norms = artifact("dynamics.csv")
    return RunRecord(
        run_id=run.run_id,
        name=run.name,
        params=run.params,
        env=env,
        fingerprint=artifact("fingerprint.json"),
        history=artifact("history.csv"),
        batches=empty.batches if "batches.csv" not in run.files else artifact("batches.csv"),
        context={**(artifact("context.json") or {}), **({"grad_norms": grad_norms} if grad_norms is not None else {})},
        findings=(artifact("diagnosis.json") or {}).get("findings", []),
    )


def diagnose(ref: str | None, root: Path) -> dict[str, Any]:
    """Recompute curve findings from the record with the run's own thresholds; keep data/lint findings."""
    from losstrace.explain.diagnose import CURVE_CODES, diagnose_curves, merge_findings
    from losstrace.findings import Finding

    rec = load_record(ref, root)
    thresholds = _recorded_thresholds(rec.params)
    curve = diagnose_curves(rec.history, rec.batches, rec.context, thresholds)
    recorded = [Finding(**f) for f in rec.findings]
    others = [f for f in recorded if f.code not in CURVE_CODES]
    # A NaN stop is only visible in the recorded finding (the history ends early).
    kept = [f for f in recorded if f.code == "diverged" and not any(c.code == "diverged" for c in curve)]
    result = merge_findings(others, [], curve + kept)
    result["run_id"] = rec.run_id
    return result


def diff(ref_a: str, ref_b: str, root: Path) -> dict[str, Any]:
    from losstrace.explain.diff import diff_runs

    a, b = load_record(ref_a, root), load_record(ref_b, root)
    return {"diff": diff_runs(a, b), "a": a, "b": b}


def _recorded_thresholds(params: dict[str, str]) -> DiagnoseParams:
    raw = {}
    for key, value in params.items():
        if key.startswith("diagnose."):
            name = key[len("diagnose.") :]
            raw[name] = _number(value)
    try:
        return from_dict(DiagnoseParams, raw, "diagnose.")
    except LosstraceError:
        return DiagnoseParams()  # recorded by another losstrace version: current defaults


def _number(value: str) -> Any:
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            continue
    return value


def _csv(data: bytes) -> pd.DataFrame:
    return pd.read_csv(io.BytesIO(data))


def _json(data: bytes | None) -> Any:
    return json.loads(data) if data else None
