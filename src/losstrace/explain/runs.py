"""Read recorded runs back from MLflow alone, so runs from CI or another machine compare too.

The train stage logs history.csv, batches.csv, context.json, diagnosis.json and the
data fingerprint as artifacts under `losstrace/`; this module turns them back into a
`RunRecord`. No TensorFlow import: `diff` answers in about a second.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from .. import tracking
from ..errors import LosstraceError
from ..params import DiagnoseParams, from_dict
from .record import RunRecord

ARTIFACT_DIR = "losstrace"
ENV_TAGS = ("device", "determinism")


def default_ref(root: Path) -> str:
    """The run behind the outputs in the workspace (a DVC run-cache restore keeps its id), else the latest."""
    run_json = root / "reports" / "train" / "run.json"
    if run_json.exists():
        try:
            return json.loads(run_json.read_text())["run_id"]
        except (ValueError, KeyError):
            pass
    return "latest"


def load_record(ref: str | None, root: Path) -> RunRecord:
    run_id = tracking.resolve_run(ref or default_ref(root), root)
    run = tracking.get_run(root, run_id)
    tags = run.data.tags
    env = {k[len("env."):]: v for k, v in tags.items() if k.startswith("env.")}
    env.update({k: tags[k] for k in ENV_TAGS if k in tags})
    with tempfile.TemporaryDirectory(prefix="losstrace-run-") as tmp:
        folder = tracking.download_artifacts(root, run_id, ARTIFACT_DIR, Path(tmp))
        if folder is None:
            raise LosstraceError(f"run {run_id}", "has no losstrace artifacts (not a losstrace training run?)",
                                 "pick a run recorded by `dvc repro` / `losstrace train`")
        history = _csv(folder / "history.csv")
        batches = _csv(folder / "batches.csv")
        context = _json(folder / "context.json") or {}
        fingerprint = _json(folder / "fingerprint.json")
        diagnosis = _json(folder / "diagnosis.json") or {}
    return RunRecord(
        run_id=run_id,
        name=run.info.run_name or "",
        params=dict(run.data.params),
        env=env,
        fingerprint=fingerprint,
        history=history if history is not None else RunRecord(run_id).history,
        batches=batches if batches is not None else RunRecord(run_id).batches,
        context=context,
        findings=diagnosis.get("findings", []),
    )


def diagnose(ref: str | None, root: Path) -> dict[str, Any]:
    """Recompute curve findings from the record with the run's own thresholds; keep data/lint findings."""
    from ..findings import Finding
    from .diagnose import CURVE_CODES, diagnose_curves, merge_findings

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
    from .diff import diff_runs

    a, b = load_record(ref_a, root), load_record(ref_b, root)
    return {"diff": diff_runs(a, b), "a": a, "b": b}


def _recorded_thresholds(params: dict[str, str]) -> DiagnoseParams:
    raw = {}
    for key, value in params.items():
        if key.startswith("diagnose."):
            name = key[len("diagnose."):]
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


def _csv(path: Path) -> pd.DataFrame | None:
    return pd.read_csv(path) if path.exists() else None


def _json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.exists() else None
