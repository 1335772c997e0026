"""What an output head must be for its loss and labels: the one home of these rules.

The output activation, the loss, `from_logits`, the number of output units and the shape
of the labels must agree, or training sticks (sigmoid outputs under a categorical loss
drift towards 0; softmax over one unit always outputs 1.0) or fails on its first batch.
The params lint (`model/lint.py`), the lint of a built model (`model/model_lint.py`), the
model zoo (`model/zoo.py`), evaluation and the curve diagnosis of a recorded run
(`explain/diagnose.py`, which cannot assume the lint ran) all ask this module.

Label shapes follow the loss (`data/featurize.encode_labels`): integer class ids for
sparse categorical cross-entropy, one-hot rows for categorical cross-entropy, one 0/1
column for binary cross-entropy on two exclusive classes, and multi-hot rows for
multi-label data. Pure Python (numpy only inside the array helpers): `losstrace lint`
imports it without numpy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

EXCLUSIVE_LOSSES = ("categorical_crossentropy", "sparse_categorical_crossentropy")
CROSS_ENTROPIES = (*EXCLUSIVE_LOSSES, "binary_crossentropy")  # the losses these rules know


def binary_head(loss: str, n_classes: int, multilabel: bool) -> bool:
    """Binary cross-entropy on two exclusive classes: one sigmoid unit, labels one 0/1 column."""
    return loss == "binary_crossentropy" and n_classes == 2 and not multilabel


def output_units(units: int, loss: str, n_classes: int, multilabel: bool) -> int:
    """The units of the output layer: `units` when set, else what the labels need."""
    return units or (1 if binary_head(loss, n_classes, multilabel) else n_classes)


@dataclass(frozen=True)
class HeadProblem:
    """One disagreement of the head: why, the params key that fixes it and the fix (`key: old → new`)."""

    message: str
    key: str
    old: str
    new: str
    note: str = ""  # said after the fix in lint's suggestion: what else to set or an alternative
    keys: tuple[str, ...] = field(default=())  # keys involved beyond the activation and the loss

    @property
    def fix(self) -> str:
        return f"{self.key}: {self.old} → {self.new}"


def head_problems(
    activation: str, loss: str, n_classes: int, multilabel: bool, from_logits: bool, units: int = 0
) -> list[HeadProblem]:
    """Every disagreement between activation, loss, from_logits, units and the labels, most basic
    first; none for a loss that is not a classifier's cross-entropy (mse, a custom loss)."""
    if loss not in CROSS_ENTROPIES:
        return []
    out = _loss_problems(activation, loss, n_classes, multilabel)
    if activation == "softmax" and output_units(units, loss, n_classes, multilabel) == 1:
        out.append(
            HeadProblem(
                "softmax over a single unit always outputs 1.0; nothing can be learned",
                "train.output_activation",
                "softmax",
                "sigmoid",
                keys=("train.output_units",),
            )
        )
    out += _logits_problems(activation, from_logits)
    if units:
        out += _units_problems(units, loss, n_classes, multilabel)
    return out


def head_mismatch(
    activation: str, loss: str, n_classes: int, multilabel: bool, from_logits: bool, units: int = 0
) -> str | None:
    """The fix (`key: old → new`) of the most basic head disagreement, or None when the head agrees."""
    found = head_problems(activation, loss, n_classes, multilabel, from_logits, units)
    return found[0].fix if found else None


def _loss_problems(activation: str, loss: str, n_classes: int, multilabel: bool) -> list[HeadProblem]:
    """The loss (and activation) against exclusive or multi-label classes."""
    if multilabel:
        if loss != "binary_crossentropy":
            return [
                HeadProblem(
                    f"{loss} on multi-label data treats each row as one class; the loss cannot fit multi-hot targets",
                    "train.loss",
                    loss,
                    "binary_crossentropy",
                    note="(with train.output_activation: sigmoid)",
                )
            ]
        if activation == "softmax":
            return [
                HeadProblem(
                    "softmax makes labels compete, but multi-label rows carry several labels at once",
                    "train.output_activation",
                    "softmax",
                    "sigmoid",
                )
            ]
        return []
    out = []
    if activation == "sigmoid" and loss in EXCLUSIVE_LOSSES and n_classes > 2:
        out.append(
            HeadProblem(
                f"sigmoid outputs do not sum to 1, so {loss} over {n_classes} exclusive classes gets stuck "
                "and predictions drift towards 0",
                "train.output_activation",
                "sigmoid",
                "softmax",
            )
        )
    if loss == "binary_crossentropy" and n_classes > 2:
        out.append(
            HeadProblem(
                f"binary_crossentropy on {n_classes} exclusive classes scores each class independently",
                "train.loss",
                "binary_crossentropy",
                "sparse_categorical_crossentropy",
                note="(train.output_activation: softmax)",
            )
        )
    return out


def _logits_problems(activation: str, from_logits: bool) -> list[HeadProblem]:
    """A linear head outputs logits and only a linear head does: from_logits must say so."""
    if activation == "linear" and not from_logits:
        return [
            HeadProblem(
                "a linear output with from_logits: false feeds raw scores to a loss expecting probabilities",
                "train.from_logits",
                "false",
                "true",
                keys=("train.from_logits",),
            )
        ]
    if activation != "linear" and from_logits:
        return [
            HeadProblem(
                f"from_logits: true applies {activation} a second time inside the loss",
                "train.from_logits",
                "true",
                "false",
                keys=("train.from_logits",),
            )
        ]
    return []


def _units_problems(units: int, loss: str, n_classes: int, multilabel: bool) -> list[HeadProblem]:
    """Set output units must match the label shape: one 0/1 column, or one column per label or class."""
    expected = output_units(0, loss, n_classes, multilabel)
    if units == expected:
        return []
    if expected == 1:
        shape = "one 0/1 column"
    else:
        kind = "label" if multilabel else "class"
        shape = f"{n_classes} {kind} {'columns' if loss != 'sparse_categorical_crossentropy' else 'scores'}"
    return [
        HeadProblem(
            f"train.output_units={units} but {loss} on this data needs {shape} ({n_classes} "
            f"{'labels' if multilabel else 'classes'})",
            "train.output_units",
            str(units),
            "0",
            keys=("train.output_units",),
        )
    ]


# ---------------------------------------------------------------- arrays


def as_probabilities(outputs: Any, from_logits: bool, multilabel: bool) -> Any:
    """Model outputs as probabilities: a linear head (`train.from_logits: true`) outputs
    logits, which a 0.5 threshold or an argmax-free statistic would misread."""
    if not from_logits:
        return outputs
    import numpy as np  # here, so that lint's import of this module stays numpy-free

    z = outputs.astype(np.float64)
    if multilabel or z.shape[1] == 1:
        return 1.0 / (1.0 + np.exp(-z))
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def class_ids(y: Any) -> Any:
    """The integer class id of each row of exclusive-class labels, in any of their shapes:
    ids, one-hot rows, or one 0/1 column."""
    if y.ndim == 1:
        return y
    return y.argmax(axis=1) if y.shape[1] > 1 else y[:, 0].astype(int)


def predicted_ids(probs: Any) -> Any:
    """The predicted class of each row: the top score, or a single sigmoid column at 0.5."""
    return probs.argmax(axis=1) if probs.shape[1] > 1 else (probs[:, 0] >= 0.5).astype(int)
