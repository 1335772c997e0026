"""Runs recorded by other tools (a plain `mlflow.keras.autolog()`), read as losstrace runs.

Such a run has per-epoch metrics and fit/optimizer params but none of losstrace's
files. Its metric and param names are mapped to the run contract's (`acc` →
`accuracy`, `optimizer_learning_rate` → `train.learning_rate`, ...), so the
epoch-level diagnosis rules and `diff` work on it. What it lacks (the true per-batch
loss, gradient norms, the data fingerprint) becomes one info finding each, saying how
to record it: never an error.
"""

from __future__ import annotations

import re
from typing import Any

import pandas as pd

from losstrace.params import float32_shortest
from losstrace.record import contract

# History columns from the names Keras' logs (and so MLflow's autolog) use.
METRIC_NAMES = {
    "loss": "loss",
    "val_loss": "val_loss",
    "accuracy": "accuracy",
    "acc": "accuracy",
    "binary_accuracy": "accuracy",
    "categorical_accuracy": "accuracy",
    "sparse_categorical_accuracy": "accuracy",
    "val_accuracy": "val_accuracy",
    "val_acc": "val_accuracy",
    "val_binary_accuracy": "val_accuracy",
    "val_categorical_accuracy": "val_accuracy",
    "val_sparse_categorical_accuracy": "val_accuracy",
    "learning_rate": "lr",
    "lr": "lr",
}
# Params of mlflow.keras.autolog (fit's arguments, `optimizer_<config key>`) → the pipeline's keys.
PARAM_NAMES = {
    "batch_size": "train.batch_size",
    "epochs": "train.epochs",
    "shuffle": "train.shuffle",
    "class_weight": "train.class_weight",
    "validation_split": "train.validation_split",
    "optimizer_name": "train.optimizer",
    "optimizer_learning_rate": "train.learning_rate",
    "optimizer_clipnorm": "train.clipnorm",
}
HOW_TO_RECORD = "record the training with `import losstrace.keras; losstrace.keras.autolog()` before model.fit"


def is_foreign(files: dict[str, bytes], tags: dict[str, str]) -> bool:
    """A run without losstrace's files that is not one of losstrace's own workflow runs."""
    return contract.HISTORY not in files and tags.get(contract.KIND_TAG) in (None, contract.KIND_SCRIPT)


def params(raw: dict[str, str]) -> dict[str, str]:
    """The run's params under the pipeline's keys; optimizer settings as `optimizer.<key>`; the rest as they are."""
    out: dict[str, str] = {}
    for key, value in raw.items():
        if key in PARAM_NAMES:
            mapped = PARAM_NAMES[key]
            out[mapped] = _param_value(mapped, value)
        elif key.startswith("optimizer_"):
            out[f"optimizer.{key[len('optimizer_') :]}"] = value
        else:
            out[key] = value
    return out


def _param_value(key: str, value: str) -> str:
    if key == "train.optimizer":
        # Keras 3 snake-cases the class name (RMSprop → rm_sprop, AdamW → adam_w) and numbers
        # each further optimizer of a process (rmsprop_11): the class is what a diff compares.
        return re.sub(r"_\d+$", "", value).lower().replace("_", "")
    if key == "train.clipnorm" and value in ("None", ""):
        return "0.0"
    if key == "train.learning_rate":
        # Autolog logs the optimizer's float32 variable: 1e-4 arrives as 9.999999747378752e-05.
        try:
            return str(float32_shortest(float(value)))
        except ValueError:
            return value
    return value


def history(series: dict[str, list[tuple[int, float]]]) -> pd.DataFrame:
    """Per-epoch frame from metric histories {key: [(step, value), ...]} (step = epoch)."""
    columns: dict[str, dict[int, float]] = {}
    for key, points in series.items():
        name = METRIC_NAMES.get(key)
        if name is None or name in columns and key not in ("accuracy", "val_accuracy", "loss", "val_loss"):
            continue  # the canonical name wins over its aliases
        columns[name] = {int(step): float(value) for step, value in points}
    epochs = sorted({e for values in columns.values() for e in values})
    frame = pd.DataFrame({"epoch": epochs})
    for name in contract.HISTORY_COLUMNS[1:]:
        values = columns.get(name, {})
        frame[name] = [values.get(e, float("nan")) for e in epochs]
    return frame


def missing_records(has_history: bool) -> list[dict[str, Any]]:
    """One info finding: what such a run does not hold, and how to get it."""
    missing = ["batch_loss", "gradient_norms", "fingerprint"] if has_history else ["history"]
    message = (
        "recorded by another tool: no true per-batch loss (batch noise is judged from epochs only), "
        "no per-layer gradient norms and no data fingerprint (class balance, row order, content hashes)"
        if has_history
        else "recorded by another tool, with no per-epoch loss: nothing to diagnose from its curves"
    )
    evidence = {"message": message, "missing": missing}
    return [{"code": "not_recorded", "severity": "info", "evidence": evidence, "suggestion": HOW_TO_RECORD}]


def context(mapped: dict[str, str]) -> dict[str, Any]:
    """What the diagnosis rules can know about such a run: its params and batch size."""
    out: dict[str, Any] = {"params": dict(mapped)}
    try:
        out["batch_size"] = int(float(mapped["train.batch_size"]))
    except (KeyError, ValueError):
        pass
    return out
