"""RunRecord: everything `diff` needs about one recorded training run, already loaded.

Whoever reads MLflow (or the files under reports/) builds these; `diff_runs` and the
reports only ever see this plain dataclass, so they stay pure and fast (no MLflow,
no TensorFlow) and tests can build records by hand.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from losstrace.record.contract import BATCH_COLUMNS, HISTORY_COLUMNS

# What a run reached, read into `RunRecord.outcomes`: val from the last epoch the train
# stage logged, test from the evaluate stage (logged into the same run).
OUTCOME_METRICS = ("val_accuracy", "val_loss", "test_accuracy", "test_loss", "test_macro_f1")


def _empty(columns: tuple[str, ...]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=float) for c in columns})


@dataclass
class RunRecord:
    """One training run as recorded.

    params: flat `{"train.batch_size": "32", ...}`; MLflow stores every value as a string.
    env: `{"python": "3.11.7", "tensorflow": "2.21.0", "device": "cpu", "determinism": ...}`;
        keys may also carry the `env.` tag prefix, diff strips it.
    fingerprint: reports/validate/fingerprint.json as a dict, or None when it was not recorded.
    history: per-epoch frame (epoch, loss, val_loss, accuracy, val_accuracy, lr).
    batches: per-batch frame (step, epoch, batch, loss, size); may be empty.
    context: the dict the train stage built for diagnosis (n_classes, class_shares, ...).
    findings: the recorded diagnosis findings as dicts (data, lint and curve codes).
    outcomes: results the run reached, by metric name (`val_accuracy`, `test_loss`, ...):
        the last value MLflow holds of each; empty when none was read.
    """

    run_id: str
    name: str = ""
    params: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    fingerprint: dict[str, Any] | None = None
    history: pd.DataFrame = field(default_factory=lambda: _empty(HISTORY_COLUMNS))
    batches: pd.DataFrame = field(default_factory=lambda: _empty(BATCH_COLUMNS))
    context: dict[str, Any] = field(default_factory=dict)
    findings: list[dict[str, Any]] = field(default_factory=list)
    outcomes: dict[str, float] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """Short human name for tables and plot legends: the run name, else the id prefix."""
        short = self.run_id[:8]
        return f"{self.name} ({short})" if self.name and self.name != self.run_id else short
