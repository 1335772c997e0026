"""What a user's `model.fit` was given, as the run contract describes data.

Arrays passed to fit (or held by a `tf.data.Dataset` / generator, which are only
described, never iterated a second time) become the same records the pipeline keeps:
class counts and shares, the label-order statistic (rows grouped by class), content
and order hashes, sequence lengths and the padding side. Keras' `validation_split`
takes the *last* rows, so the split is reproduced exactly as Keras makes it.

A regression target (a regression loss, or targets that are not class labels: real
values, sequences) has no classes: its rows are labelled by the quartile of training
targets they fall in (`q1`..`q4`, one scalar per row: the mean of a row's targets), so
the fingerprint counts them and the label-order check catches rows sorted by target.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from losstrace.data import fingerprint as fingerprint_mod
from losstrace.data.checks import check_class_balance, check_label_order, check_label_set
from losstrace.data.keys import KEY_BYTES
from losstrace.findings import Finding
from losstrace.params import ValidateParams


@dataclass
class Split:
    """One split's inputs and label ids (multi-hot rows for multi-label data)."""

    x: np.ndarray
    y: np.ndarray


@dataclass
class FitData:
    """The arrays fit trains and validates on, and what could not be described."""

    train: Split | None = None
    val: Split | None = None
    validation: str = "none"  # none | validation_data | validation_split | dataset
    not_fingerprinted: list[str] = field(default_factory=list)  # why, for each input that was not
    regression: bool = False  # targets are values, not classes (see `is_regression`)

    @property
    def train_rows(self) -> int | None:
        return None if self.train is None else int(len(self.train.x))


def from_fit_args(x: Any, y: Any, validation_data: Any, validation_split: float) -> FitData:
    """Arrays from fit's arguments; datasets and generators are recorded as not fingerprinted."""
    data = FitData()
    xs, ys = _arrays(x), _arrays(y)
    if xs is None or ys is None:
        data.not_fingerprinted.append(
            "fit got no labels (x alone)"
            if xs is not None and y is None
            else f"training input is a {type(x).__name__} (only NumPy-like arrays are read)"
        )
        data.validation = "dataset" if validation_data is not None else "none"
        return data
    if validation_split and not validation_data:
        cut = int(len(xs) * (1.0 - validation_split))  # Keras takes the last rows
        data.train, data.val, data.validation = Split(xs[:cut], ys[:cut]), Split(xs[cut:], ys[cut:]), "validation_split"
        return data
    data.train = Split(xs, ys)
    if validation_data is not None:
        data.validation = "validation_data"
        vx, vy = _validation_arrays(validation_data)
        if vx is None:
            data.not_fingerprinted.append(f"validation input is a {type(validation_data).__name__}")
        else:
            data.val = Split(vx, vy)
    return data


def _validation_arrays(validation_data: Any) -> tuple[np.ndarray | None, np.ndarray | None]:
    if isinstance(validation_data, (tuple, list)) and len(validation_data) >= 2:
        return _arrays(validation_data[0]), _arrays(validation_data[1])
    return None, None


def _arrays(v: Any) -> np.ndarray | None:
    """A NumPy view of an array-like (NumPy, a tensor with .numpy(), a list); None otherwise."""
    if v is None or isinstance(v, dict):
        return None
    if isinstance(v, np.ndarray):
        return v
    if hasattr(v, "numpy") and hasattr(v, "shape") and hasattr(v, "dtype"):
        return np.asarray(v.numpy())
    if isinstance(v, list):
        try:
            return np.asarray(v)
        except (ValueError, TypeError):
            return None
    return None


# ---------------------------------------------------------------- labels

# Keras' regression losses by the names a compiled model carries (string, class or function).
REGRESSION_LOSSES = frozenset(
    {
        "mse",
        "mae",
        "mape",
        "msle",
        "mean_squared_error",
        "mean_absolute_error",
        "mean_absolute_percentage_error",
        "mean_squared_logarithmic_error",
        "huber",
        "huber_loss",
        "log_cosh",
        "logcosh",
        "cosine_similarity",
        "poisson",
    }
)
QUARTILES = ("q1", "q2", "q3", "q4")


def is_regression(loss: str | None, data: FitData) -> bool:
    """Whether fit's targets are values, not classes: a regression loss says so; an unknown
    loss (a custom one) is judged by the targets: sequences, or real values that are not
    whole numbers (class ids, one-hot and multi-hot rows all are)."""
    name = (loss or "").lower()
    if name in REGRESSION_LOSSES:
        return True
    if "crossentropy" in name or "hinge" in name or data.train is None:
        return False
    y = np.asarray(data.train.y)
    if y.ndim > 2:
        return True
    return y.dtype.kind == "f" and bool(np.any(np.abs(y - np.rint(y)) > 1e-6))


def target_quartiles(train_y: np.ndarray, y: np.ndarray) -> pd.Series:
    """Each row's quartile (`q1`..`q4`) among the training targets, a row's target being the
    mean of its values; cut points shared by equal quartiles merge them."""
    cuts = np.unique(np.quantile(_row_targets(train_y), [0.25, 0.5, 0.75]))
    return pd.Series(np.asarray(QUARTILES)[np.searchsorted(cuts, _row_targets(y), side="right")])


def _row_targets(y: np.ndarray) -> np.ndarray:
    y = np.asarray(y, dtype=np.float64)
    return y.reshape(len(y), -1).mean(axis=1) if y.ndim > 1 else y


def label_ids(y: np.ndarray) -> tuple[np.ndarray, bool]:
    """(label ids per row, multi-label?). One-hot rows give their index; a single 0/1 column
    its value; multi-hot rows (several 1s) stay as rows."""
    y = np.asarray(y)
    if y.ndim == 1 or (y.ndim == 2 and y.shape[1] == 1):
        flat = y.reshape(-1)
        return (np.rint(flat).astype(np.int64) if flat.dtype.kind == "f" else flat.astype(np.int64)), False
    if y.ndim == 2:
        if np.all(np.isclose(y.sum(axis=1), 1.0)):
            return y.argmax(axis=1).astype(np.int64), False
        return (y > 0.5).astype(np.int64), True
    raise ValueError(f"labels of shape {y.shape}")


def n_classes(data: FitData, model_outputs: int) -> int:
    """Classes the model tells apart: the output width, or 2 for one sigmoid unit."""
    if model_outputs > 1:
        return model_outputs
    if data.train is not None:
        ids, multi = label_ids(data.train.y)
        if not multi:
            return max(2, int(ids.max()) + 1 if len(ids) else 2)
    return 2


def label_strings(ids: np.ndarray, multilabel: bool) -> pd.Series:
    """Label ids as the pipeline's label strings (multi-label: sorted ids joined by '|')."""
    if not multilabel:
        return pd.Series(ids.astype(str))
    return pd.Series(["|".join(str(i) for i in np.flatnonzero(row)) for row in ids])


def shares(y: np.ndarray, names: list[str]) -> dict[str, float]:
    ids, multilabel = label_ids(y)
    if multilabel:
        values = ids.mean(axis=0)
    else:
        values = np.bincount(ids, minlength=len(names)) / max(len(ids), 1)
    return {names[i]: round(float(v), 6) for i, v in enumerate(values[: len(names)])}


# ---------------------------------------------------------------- inputs


def lengths_and_padding(x: np.ndarray) -> tuple[np.ndarray, str]:
    """Real steps per row and the padding side: pre, post, or none when no row is padded.

    A step is padding when all its values are 0 (token id 0, or an all-zero frame), and a
    row is padded when its first or last step is: sequences that all run the full length
    (sensor windows cut to one length) have nothing for a mask to hide."""
    if x.ndim < 2:
        return np.ones(len(x), dtype=np.int64), "none"
    real = x != 0 if x.ndim == 2 else np.any(x != 0, axis=tuple(range(2, x.ndim)))
    lengths = real.sum(axis=1).astype(np.int64)
    padded = ~real[:, 0] | ~real[:, -1]
    if not padded.any():
        return lengths, "none"
    first_real, last_real = real[padded, 0], real[padded, -1]
    return lengths, "pre" if last_real.mean() > first_real.mean() else "post"


def input_kind(x: np.ndarray) -> str:
    return "tokens" if x.ndim == 2 and x.dtype.kind in "iu" else "numeric"


def _row_keys(x: np.ndarray) -> pd.Series:
    """One blake2b digest per row of its bytes (dtype and shape included), vectorised per row."""
    import hashlib

    rows = np.ascontiguousarray(x).reshape(len(x), -1)
    tag = f"{rows.dtype.str}:{x.shape[1:]}".encode()
    return pd.Series(
        [hashlib.blake2b(tag + r.tobytes(), digest_size=KEY_BYTES).hexdigest() for r in rows], dtype=object
    )


def frames(data: FitData) -> tuple[dict[str, pd.DataFrame], dict[str, pd.Series], dict[str, int], bool]:
    """Per split: a frame of (label, length) as the data checks read it, the input keys,
    the label map and whether the data is multi-label."""
    splits: dict[str, pd.DataFrame] = {}
    keys: dict[str, pd.Series] = {}
    multilabel = False
    for name, split in (("train", data.train), ("val", data.val)):
        if split is None or len(split.x) == 0:
            continue
        if data.regression:
            labels = target_quartiles(data.train.y, split.y)
        else:
            ids, multilabel = label_ids(split.y)
            labels = label_strings(ids, multilabel)
        lengths, _ = lengths_and_padding(split.x)
        splits[name] = pd.DataFrame({"label": labels, "length": lengths})
        keys[name] = _row_keys(split.x)
    if data.regression:
        return splits, keys, {q: i for i, q in enumerate(QUARTILES)}, False
    ids = sorted({part for f in splits.values() for lab in f["label"] for part in str(lab).split("|") if part}, key=int)
    return splits, keys, {i: int(i) for i in ids}, multilabel


def describe(data: FitData, thresholds: ValidateParams, shuffle: bool) -> tuple[dict[str, Any] | None, list[Finding]]:
    """(the data fingerprint or None, data findings: label order, label set, class balance,
    and an info line for each input that could not be fingerprinted).

    shuffle: fit's own `shuffle`. Keras then reshuffles the training rows every epoch, so a
    grouped training order only matters through `validation_split` (it takes the last
    rows, before any shuffle) or when fit does not shuffle."""
    notes = [
        Finding(
            "not_fingerprinted",
            "info",
            {"message": f"{why}: no content or order hash, class counts or label-order check for it"},
            "pass NumPy arrays to fit to have them fingerprinted (a tf.data pipeline is never read twice)",
        )
        for why in data.not_fingerprinted
    ]
    if data.train is None:
        return None, notes
    splits, keys, labels, multilabel = frames(data)
    delimiter = "|" if multilabel else None
    fp = fingerprint_mod.fingerprint(splits, labels, delimiter=delimiter, keys=keys)
    found = check_label_order(splits, thresholds) + check_label_set(splits, delimiter=delimiter)
    if not data.regression:  # quartiles are cut points of train's own targets, not classes to balance
        found += check_class_balance(splits, thresholds, delimiter=delimiter)
    return fp, [_for_a_script(f, data, shuffle) for f in found] + notes


_SHUFFLE_FIX = "shuffle x and y together before fit (e.g. sklearn.utils.shuffle(x, y, random_state=0))"


def _for_a_script(f: Finding, data: FitData, shuffle: bool) -> Finding:
    """Pipeline findings phrased for a script: the fix is code, and fit's own shuffle counts."""
    if f.code == "label_order_clustered":
        if data.regression:
            f = Finding(f.code, f.severity, {**f.evidence, "labels": "quartiles of the target"}, f.suggestion, f.where)
        if f.where != "train":  # Keras scores the whole validation set each epoch: its order is never seen
            return Finding(
                f.code,
                "info",
                {
                    **f.evidence,
                    "why": "validation rows are scored all together each epoch, so their order does not matter",
                },
                "nothing to change",
                f.where,
            )
        if data.validation == "validation_split":
            why = (
                "validation_split takes the last rows, so validation sees "
                + ("other target values" if data.regression else "other classes")
                + " than training"
            )
            fix = (
                # Time-ordered windows (forecasting) must not be shuffled across the split: that
                # would train on the future the validation is meant to predict.
                "pass validation_data: a later period for time-ordered windows, else " + _SHUFFLE_FIX
                if data.regression
                else _SHUFFLE_FIX + " or pass validation_data"
            )
            return Finding(f.code, "warning", {**f.evidence, "why": why}, fix, f.where)
        if shuffle and f.where == "train":  # Keras reshuffles every epoch: batches are mixed anyway
            return Finding(
                f.code, "info", {**f.evidence, "handled_by": "fit(shuffle=True)"}, "nothing to change", f.where
            )
        return Finding(f.code, f.severity, f.evidence, _SHUFFLE_FIX + ", or fit(shuffle=True)", f.where)
    if f.code == "label_set_mismatch":
        return Finding(f.code, f.severity, f.evidence, _SHUFFLE_FIX + ", or split with stratify=y", f.where)
    if f.code == "class_imbalance":
        fix = f.suggestion.replace("train.class_weight: balanced", "fit(class_weight=...) with balanced weights")
        return Finding(f.code, f.severity, f.evidence, fix, f.where)
    return f
