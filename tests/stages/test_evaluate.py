"""Test metrics: what evaluate and the training metrics score, on probabilities and on logits."""

from __future__ import annotations

import dataclasses
import json
import sys

import numpy as np
import yaml

from losstrace.params import TrainParams
from losstrace.stages import evaluate
from support import REPO, run_tool


def _constant_model(units: int, value: float):
    """A model whose every output is `value` (a logit or a probability), whatever the input."""
    import keras

    return keras.Sequential(
        [
            keras.Input((3,)),
            keras.layers.Dense(units, kernel_initializer="zeros", bias_initializer=keras.initializers.Constant(value)),
        ]
    )


def test_a_linear_head_is_scored_on_its_logits_not_as_probabilities():
    import keras

    from losstrace.model import zoo

    # Every logit is 0.3 (probability 0.57) and every label is 1: every prediction is right.
    x, y = np.zeros((8, 3), np.float32), np.ones((8, 1), np.float32)
    model = _constant_model(1, 0.3)
    t = dataclasses.replace(
        TrainParams(),
        loss="binary_crossentropy",
        output_activation="linear",
        from_logits=True,
        metrics=("accuracy", "auc", "precision", "recall"),
    )
    model.compile(loss=keras.losses.BinaryCrossentropy(from_logits=True), metrics=zoo._metrics(t, units=1))
    keras_metrics = model.evaluate(x, y, verbose=0, return_dict=True)
    assert keras_metrics["accuracy"] == 1.0 and keras_metrics["precision"] == 1.0 and keras_metrics["recall"] == 1.0
    scored = evaluate.run(model, x, y, {"neg": 0, "pos": 1}, multilabel=False, batch_size=4, from_logits=True)
    assert scored["accuracy"] == 1.0
    # The same logits read as probabilities (the old behaviour) would call every row negative.
    assert evaluate.run(model, x, y, {"neg": 0, "pos": 1}, False, 4, from_logits=False)["accuracy"] == 0.0


def test_multilabel_macro_f1_scores_every_label_not_each_rows_top_one():
    y = np.array([[0, 1], [1, 1]], np.float32)
    probs = np.array([[0.1, 0.9], [0.6, 0.9]])
    scored = evaluate.label_scores(y, probs >= 0.5, ["a", "b"])
    assert scored["macro_f1"] == 1.0  # every label of every row is right
    assert scored["per_class"] == {
        "a": {"precision": 1.0, "recall": 1.0, "support": 1},
        "b": {"precision": 1.0, "recall": 1.0, "support": 2},
    }
    half = evaluate.label_scores(y, np.array([[False, True], [False, True]]), ["a", "b"])
    assert half["macro_f1"] == 0.5 and half["per_class"]["a"]["recall"] == 0.0


def test_dvc_metrics_show_reads_at_100_columns():
    """metrics.json holds the headline numbers only; the per-class ones (3 columns a class,
    31 columns for Japanese Vowels) sit in per_class.json, an output DVC does not print."""
    shown = run_tool(sys.executable, "-m", "dvc", "metrics", "show", cwd=REPO, env={"COLUMNS": "100"}).stdout
    assert "test.accuracy" in shown and "per_class" not in shown
    assert max(len(line) for line in shown.splitlines()) <= 100, shown
    committed = json.loads((REPO / "reports/evaluate/per_class.json").read_text())["test"]["per_class"]
    assert (
        sum(c["support"] for c in committed.values())
        == json.loads((REPO / "reports/evaluate/metrics.json").read_text())["test"]["rows"]
    )
    evaluate_stage = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["evaluate"]
    assert [next(iter(m)) for m in evaluate_stage["metrics"]] == ["reports/evaluate/metrics.json"]
    assert "reports/evaluate/per_class.json" in [next(iter(o)) for o in evaluate_stage["outs"]]
