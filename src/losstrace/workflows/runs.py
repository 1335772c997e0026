"""`diagnose` and `diff` of recorded runs: find the runs, read them back, hand them to the analysis.

Runs are read from MLflow alone (record.reader), so runs from CI or another machine
compare too. No TensorFlow import: `diff` answers in about a second.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from losstrace.errors import LosstraceError
from losstrace.params import DiagnoseParams, from_dict, parse_value
from losstrace.record import reader


def default_ref(root: Path) -> str:
    """The run behind the outputs in the workspace (a checkout of old reports keeps its id), else the latest.

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


def _workspace_record(root: Path):
    """The record of the run behind the workspace's reports. Reports checked out from git
    can name a run of another machine's store (the committed ones do): say so, not just
    "no such run"."""
    ref = default_ref(root)
    try:
        return reader.load_record(ref, root)
    except LosstraceError as e:
        if ref == "latest" or e.what != reader.NO_SUCH_RUN:
            raise
        raise LosstraceError(
            str(root / "reports" / "train" / "run.json"),
            f"names run {ref}, which this MLflow store does not hold (the reports were trained elsewhere)",
            "`dvc repro -f train` records them here, or name a run (e.g. latest)",
        ) from None


def diagnose(ref: str | None, root: Path) -> dict[str, Any]:
    """Recompute curve findings from the record with the run's own thresholds; keep data/lint findings."""
    from losstrace.explain.diagnose import CURVE_CODES, diagnose_curves, merge_findings
    from losstrace.explain.prescription import with_prescription
    from losstrace.explain.report import headline
    from losstrace.findings import Finding

    rec = reader.load_record(ref, root) if ref else _workspace_record(root)
    thresholds = _recorded_thresholds(rec.params)
    curve = diagnose_curves(rec.history, rec.batches, rec.context, thresholds)
    recorded = [Finding(**f) for f in rec.findings]
    others = [f for f in recorded if f.code not in CURVE_CODES]
    # A NaN stop is only visible in the recorded finding (the history ends early).
    kept = [f for f in recorded if f.code == "diverged" and not any(c.code == "diverged" for c in curve)]
    result = with_prescription(merge_findings(others, [], curve + kept), rec.context)
    result["run_id"] = rec.run_id
    result["headline"] = headline(rec.history)
    return result


def diff(ref_a: str, ref_b: str, root: Path) -> dict[str, Any]:
    from losstrace.explain.diff import diff_runs
    from losstrace.explain.legend import outcomes

    a, b = reader.load_record(ref_a, root), reader.load_record(ref_b, root)
    result = diff_runs(a, b)
    # Which runs were compared and what they reached: added keys, the contract's stay as they are.
    result["a"] = {"run_id": a.run_id, "name": a.name}
    result["b"] = {"run_id": b.run_id, "name": b.name}
    result["outcomes"] = outcomes(a, b)
    # What diagnose prescribes for each run, so the report says what to change next.
    result["prescription"] = {tag: _prescription(r) for tag, r in (("a", a), ("b", b))}
    return {"diff": result, "a": a, "b": b}


def _prescription(rec) -> list[dict[str, Any]]:
    from losstrace.explain.prescription import as_json, prescribe

    return as_json(prescribe(rec.findings, rec.context))


def _recorded_thresholds(params: dict[str, str]) -> DiagnoseParams:
    raw = {}
    for key, value in params.items():
        if key.startswith("diagnose."):
            name = key[len("diagnose.") :]
            raw[name] = parse_value(value)
    try:
        return from_dict(DiagnoseParams, raw, "diagnose.")
    except LosstraceError:
        return DiagnoseParams()  # recorded by another losstrace version: current defaults
