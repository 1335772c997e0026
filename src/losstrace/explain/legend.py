"""What the diff's words mean, shown beside the tables so a reader need not open the code.

`GLOSSARY` explains the behaviour feature names and the cause confidence; `OUTCOME_METRICS`
are the results each run reached (val from the last epoch, test from `evaluate`), shown
beside the behaviour features. Pure: no MLflow, no TensorFlow.
"""

from __future__ import annotations

import math
from typing import Any

from losstrace.record.run_record import OUTCOME_METRICS, RunRecord

DOCS = "docs/diagnosis.md#diff-what-changed-and-why"

GLOSSARY = {
    "confidence": "0–1: how well the change's known mechanism predicts the behaviour that moved "
    "(mechanism specificity × agreement in direction and size × effect size); compare causes by it, "
    "it is not a probability",
    "batch_noise": "spread of the per-batch loss around its rolling trend (relative)",
    "epoch_jitter": "how much the epoch loss bounces around its smooth descent (relative)",
    "best_loss": "lowest epoch train loss",
    "final_loss": "train loss of the last epoch",
    "best_val_loss": "lowest val loss",
    "final_val_loss": "val loss of the last epoch",
    "plateau_length": "epochs the loss stayed flat before dropping",
    "epochs_to_half": "epochs until the loss fell halfway from its start to its best",
    "final_accuracy": "train accuracy of the last epoch",
    "final_val_accuracy": "val accuracy of the last epoch",
    "pred_top_share": "share of val predictions that go to the most predicted class (1.0 = one class only)",
    "saturated_share": "share of output probabilities pinned near 0 or 1 (> 0.99 or < 0.01)",
    "val_rise": "how far val loss rose after its best, relative to the best (overfitting)",
    "diverged": "the loss became NaN/inf or exploded",
    "finding.*": "a diagnosis finding that appeared or disappeared (codes in docs/diagnosis.md)",
}


def outcomes(a: RunRecord, b: RunRecord) -> list[dict[str, Any]]:
    """`[{"metric", "a", "b", "change"}]` for every outcome metric either run recorded."""
    rows = []
    for metric in OUTCOME_METRICS:
        va, vb = a.outcomes.get(metric), b.outcomes.get(metric)
        if va is None and vb is None:
            continue
        both = va is not None and vb is not None and math.isfinite(va) and math.isfinite(vb)
        rows.append({"metric": metric, "a": va, "b": vb, "change": f"{vb - va:+.4g}" if both else "-"})
    return rows


def terms(diff: dict[str, Any]) -> list[tuple[str, str]]:
    """(term, meaning) for `confidence` and each behaviour feature the diff shows."""
    shown = ["confidence"] if diff.get("causes") else []
    for entry in diff.get("behaviour") or []:
        name = "finding.*" if entry["feature"].startswith("finding.") else entry["feature"]
        if name not in shown:
            shown.append(name)
    return [(t, GLOSSARY[t]) for t in shown if t in GLOSSARY]
