"""The head rules in one place: lint, diagnose, the zoo and evaluation read the same answers."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from losstrace import params
from losstrace.explain.diagnose import head_mismatch
from losstrace.model import heads, lint, zoo

ACTIVATIONS = ("softmax", "sigmoid", "linear")
LOSSES = ("sparse_categorical_crossentropy", "categorical_crossentropy", "binary_crossentropy")
HEADS = list(itertools.product(ACTIVATIONS, LOSSES, (False, True), (0, 1, 2, 3), (2, 3), (False, True)))


def _params(act: str, loss: str, logits: bool, units: int) -> params.Params:
    train = {"output_activation": act, "loss": loss, "from_logits": logits, "output_units": units}
    return params.from_dict(params.Params, {"train": train}, "")


@pytest.mark.parametrize(("act", "loss", "logits", "units", "k", "multilabel"), HEADS)
def test_diagnose_suggests_the_first_fix_lint_gives(act, loss, logits, units, k, multilabel):
    """A recorded run's head is judged by the lint's rules: diagnose's fix is lint's first suggestion."""
    found = [f for f in lint.head_checks(_params(act, loss, logits, units), k, multilabel) if f.severity == "error"]
    ctx = {
        "n_classes": k,
        "multilabel": multilabel,
        "params": {
            "train.output_activation": act,
            "train.loss": loss,
            "train.from_logits": logits,
            "train.output_units": units,
        },
    }
    fix = head_mismatch(ctx)
    assert (fix is None) == (not found)
    if found:
        assert found[0].suggestion.startswith(fix)


@pytest.mark.parametrize("loss", ["mse", "mean_absolute_error", "huber", "my_custom_loss"])
def test_a_loss_that_is_not_a_cross_entropy_is_not_judged_as_a_classifiers(loss):
    assert heads.head_problems("linear", loss, 0, False, False) == []
    assert heads.head_problems("sigmoid", loss, 7, False, False, units=1) == []


def test_units_follow_the_label_shape():
    assert heads.output_units(0, "binary_crossentropy", 2, False) == 1  # one 0/1 column
    assert heads.output_units(0, "binary_crossentropy", 2, True) == 2  # a unit per label
    assert heads.output_units(0, "sparse_categorical_crossentropy", 2, False) == 2
    assert heads.output_units(5, "binary_crossentropy", 2, False) == 5  # set by hand
    train = params.TrainParams(loss="binary_crossentropy")
    assert zoo.output_units(train, 2, False) == 1


def test_probabilities_from_logits():
    logits = np.array([[0.0, np.log(3.0)]])
    assert np.allclose(heads.as_probabilities(logits, True, multilabel=False), [[0.25, 0.75]])
    assert np.allclose(heads.as_probabilities(logits, True, multilabel=True), [[0.5, 0.75]])
    assert heads.as_probabilities(logits, False, multilabel=False) is logits


def test_class_ids_read_every_label_shape():
    ids = np.array([0, 2, 1])
    assert heads.class_ids(ids).tolist() == [0, 2, 1]
    assert heads.class_ids(np.eye(3, dtype=np.float32)[ids]).tolist() == [0, 2, 1]
    assert heads.class_ids(np.array([[0.0], [1.0], [1.0]])).tolist() == [0, 1, 1]


def test_predicted_ids_read_a_single_sigmoid_column_at_one_half():
    assert heads.predicted_ids(np.array([[0.2, 0.8], [0.9, 0.1]])).tolist() == [1, 0]
    assert heads.predicted_ids(np.array([[0.49], [0.5]])).tolist() == [0, 1]


def test_lint_stays_numpy_free():
    import subprocess
    import sys

    code = "import sys, losstrace.model.lint; print('numpy' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
