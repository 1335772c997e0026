"""Each curve rule fires on its case with the right evidence and suggestion; clean runs fire nothing."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pandas as pd
import pytest

from losstrace.explain.diagnose import diagnose_curves, merge_findings
from losstrace.explain.symptoms import curve_features
from losstrace.findings import Finding
from losstrace.params import DiagnoseParams


def codes(findings: list[Finding]) -> list[str]:
    return [f.code for f in findings]


def only(findings: list[Finding], code: str) -> Finding:
    hits = [f for f in findings if f.code == code]
    assert len(hits) == 1, codes(findings)
    return hits[0]


CLEAN = [
    {},  # 5 classes, 40 epochs, batch 32
    {"n_classes": 2, "epochs": 100, "tau": 20, "train_rows": 5000},
    {"n_classes": 10, "epochs": 10, "tau": 2, "train_rows": 1000},
    {"n_classes": 9, "epochs": 60, "train_rows": 216, "tau": 8, "final_share": 0.03},  # Japanese Vowels-sized
    {"n_classes": 102, "epochs": 150, "tau": 25, "batch_size": 128, "train_rows": 20000, "final_share": 0.3},
    {"with_batches": False},
    {"with_batches": False, "n_classes": 3, "epochs": 25, "tau": 4},
    {"lr": 0.01, "optimizer": "sgd", "batch_size": 64},
]


@pytest.mark.parametrize("kwargs", CLEAN)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_clean_runs_fire_nothing(make_run, kwargs, seed):
    assert diagnose_curves(*make_run(seed=seed, **kwargs)) == []


def test_small_batches_make_noisy_loss_with_batch_size_as_driver(make_run):
    f = only(diagnose_curves(*make_run(batch_size=4, train_rows=1024)), "noisy_loss")
    assert f.severity == "warning"
    assert f.evidence["driver"] == "batch_size"
    assert f.evidence["batch_noise"] > f.evidence["noise_ratio"] == DiagnoseParams().noise_ratio
    assert f.evidence["noise_cv_implied"] <= f.evidence["sampling_cv_max"]
    assert f.suggestion.startswith("train.batch_size: 4 → ")
    new = int(f.suggestion.split("→ ")[1].split()[0])
    # Enough to bring noise under the threshold if noise ∝ 1/sqrt(batch) ...
    assert f.evidence["batch_noise"] * math.sqrt(4 / new) < DiagnoseParams().noise_ratio
    # ... without dropping below 8 steps per epoch.
    assert new <= 1024 / 8


def test_epoch_jitter_at_high_lr_names_the_learning_rate(make_run):
    f = only(diagnose_curves(*make_run(lr=0.01, epoch_jitter=0.25)), "noisy_loss")
    assert f.severity == "warning"
    assert f.evidence["driver"] == "learning_rate"
    assert f.evidence["epoch_jitter"] > f.evidence["jitter_ratio"]
    assert f.evidence["lr_vs_default"] == pytest.approx(10.0)
    assert f.suggestion.startswith("train.learning_rate: 0.01 → 0.001")


def test_mild_batch_noise_is_info_not_warning(make_run):
    run = make_run(batch_size=8)
    noise = curve_features(*run)["batch_noise"]
    just_above = dataclasses.replace(DiagnoseParams(), noise_ratio=noise / 1.05)  # within 10 %: mild
    well_above = dataclasses.replace(DiagnoseParams(), noise_ratio=noise / 1.3)
    assert only(diagnose_curves(*run, just_above), "noisy_loss").severity == "info"
    assert only(diagnose_curves(*run, well_above), "noisy_loss").severity == "warning"


def test_plateau_then_drop_at_too_low_lr(make_run):
    f = only(diagnose_curves(*make_run(lr=0.0001, plateau=(0, 17), epochs=50)), "plateau")
    assert f.severity == "warning"
    assert f.evidence["start_epoch"] == 0
    assert abs(f.evidence["length"] - 17) <= 1
    assert f.evidence["plateau_min_epochs"] == 5 and f.evidence["plateau_rel_change"] == 0.02
    assert f.evidence["at_chance"] is True
    assert f.suggestion == "train.learning_rate: 0.0001 → 0.001"


def test_plateau_ended_by_the_lr_schedule_is_info(make_run):
    h, b, c = make_run(plateau=(10, 8), epochs=40)
    h = h.copy()
    h.loc[h["epoch"] >= 17, "lr"] = 0.0001
    f = only(diagnose_curves(h, b, c), "plateau")
    assert f.severity == "info" and f.evidence["ended_by_lr_schedule"] is True


def test_loss_flat_at_chance_is_not_learning(make_run):
    f = only(diagnose_curves(*make_run(stuck=True, n_classes=6)), "not_learning")
    assert f.severity == "error"
    assert f.evidence["chance_loss"] == pytest.approx(math.log(6), rel=1e-3)
    assert f.evidence["best_loss"] >= f.evidence["initial_loss"] * (1 - f.evidence["not_learning_rel_drop"])
    assert "plateau" not in codes(diagnose_curves(*make_run(stuck=True, n_classes=6)))


def test_rows_sorted_by_class_not_learning_suggests_shuffling(make_run):
    findings = diagnose_curves(*make_run(val_stuck=True, params={"data.shuffle": False, "train.shuffle": False}))
    f = only(findings, "not_learning")
    assert "val loss never gets below" in f.evidence["pattern"]
    assert f.evidence["best_val_loss"] >= f.evidence["prior_loss"] * 0.95
    assert "data.shuffle: false → true" in f.suggestion
    assert "overfitting" not in codes(findings)


def test_val_stuck_with_epoch_reshuffling_points_at_generalisation_not_order(make_run):
    # Keras reshuffles every epoch, so grouped source rows cannot be the cause here.
    f = only(
        diagnose_curves(*make_run(val_stuck=True, params={"data.shuffle": False, "train.shuffle": True})),
        "not_learning",
    )
    assert "data.shuffle" not in f.suggestion
    assert "memorises" in f.suggestion and "train.model.dropout" in f.suggestion


def test_val_stuck_is_judged_against_what_an_input_blind_model_scores_on_val(make_run):
    """Train skewed, val balanced (an official split): a constant model fitted on train
    scores the cross-entropy of val's shares against train's on val, well above train's
    entropy. A val loss 10% under that bar is learning, though it never gets under the
    train-share entropy; the same val loss on a stratified val split is not."""
    train_shares = {"a": 0.4, "b": 0.2, "c": 0.2, "d": 0.1, "e": 0.1}
    balanced_val = dict.fromkeys(train_shares, 0.2)
    bar = -sum(0.2 * math.log(t) for t in train_shares.values())
    entropy = -sum(t * math.log(t) for t in train_shares.values())
    h, b, c = make_run(epochs=20)
    h["val_loss"] = np.linspace(bar, bar * 0.90, len(h))
    assert bar * 0.90 > entropy * 0.95  # the old bar (train entropy) would call this stuck

    learning = diagnose_curves(h, b, {**c, "class_shares": train_shares, "val_class_shares": balanced_val})
    assert "not_learning" not in codes(learning)
    stratified = {**c, "class_shares": train_shares, "val_class_shares": train_shares}
    f = only(diagnose_curves(h, b, stratified), "not_learning")
    assert f.evidence["val_prior_loss"] == pytest.approx(entropy, rel=1e-3)


def test_not_learning_suggests_only_changes_that_change_something(make_run):
    params = {"data.shuffle": True, "data.text_level": "char", "train.model.dropout": 0.3}
    h, b, c = make_run(val_stuck=True, params=params)
    f = only(diagnose_curves(h, b, {**c, "input": "text"}), "not_learning")
    assert "0.3 → 0.3" not in f.suggestion and "text_level: char" not in f.suggestion
    assert "pretrained embeddings" in f.suggestion and "little signal" in f.suggestion
    numeric = only(diagnose_curves(h, b, {**c, "input": "numeric"}), "not_learning")
    assert "pretrained" not in numeric.suggestion and "text_level" not in numeric.suggestion
    # A pipeline run's validate stage checked leakage (and OOV only for text); a script run's arrays neither.
    piped = {**c, "input": "numeric", "params": {**c["params"], "data.source": "japanese_vowels"}}
    piped_fix = only(diagnose_curves(h, b, piped), "not_learning").suggestion
    assert "train_val_leakage" in piped_fix and "high_oov_rate" not in piped_fix
    assert "data findings" not in numeric.suggestion and "high_oov_rate" not in numeric.suggestion


def test_not_learning_and_plateau_say_what_they_saw_in_a_sentence(make_run):
    stuck = only(diagnose_curves(*make_run(stuck=True, n_classes=6)), "not_learning")
    assert stuck.evidence["message"].startswith("the train loss stays at its start")
    plateau = only(diagnose_curves(*make_run(lr=0.0001, plateau=(0, 17), epochs=50)), "plateau")
    assert (
        plateau.evidence["message"].startswith("the loss sat flat at") and "larger step" in plateau.evidence["message"]
    )


def test_sigmoid_with_categorical_ce_stuck_loss_suggests_softmax(make_run):
    run = make_run(
        stuck=True,
        stuck_level=0.46,
        n_classes=7,
        params={"train.output_activation": "sigmoid", "train.loss": "categorical_crossentropy"},
    )
    f = only(diagnose_curves(*run), "not_learning")
    assert f.suggestion.startswith("train.output_activation: sigmoid → softmax")


def test_a_stuck_regression_is_not_told_to_change_a_classifier_head(make_run):
    """A linear output under mse is a regression head: no from_logits fix; the advice speaks of targets."""
    h, b, c = make_run(stuck=True, params={"train.output_activation": "linear", "train.loss": "mse"})
    regression = {**c, "task": "regression", "n_classes": 0, "class_shares": {}}
    f = only(diagnose_curves(h, b, regression), "not_learning")
    assert "from_logits" not in f.suggestion and "standardise" in f.suggestion
    classifier = {**c, "params": {**c["params"], "train.loss": "sparse_categorical_crossentropy"}}
    assert "train.from_logits: false → true" in only(diagnose_curves(h, b, classifier), "not_learning").suggestion


def test_overfitting_without_dropout(make_run):
    f = only(diagnose_curves(*make_run(epochs=80, overfit_at=30)), "overfitting")
    assert f.severity == "warning"
    assert abs(f.evidence["best_val_epoch"] - 30) <= 2
    assert f.evidence["val_rise"] > f.evidence["overfit_rel_rise"]
    assert f.evidence["epochs_above"] >= f.evidence["overfit_min_epochs"]
    assert "train.model.dropout: 0.0 → 0.3" in f.suggestion
    assert "train.callbacks.checkpoint_monitor" in f.suggestion


def test_overfitting_suggestion_moves_on_when_dropout_is_set_and_best_weights_kept(make_run):
    run = make_run(
        epochs=80, overfit_at=30, params={"train.model.dropout": 0.5, "train.callbacks.checkpoint_monitor": "val_loss"}
    )
    f = only(diagnose_curves(*run), "overfitting")
    assert f.severity == "info"
    assert f.suggestion.startswith("train.model.rnn.dropout: 0.0 → 0.2")


def test_nan_loss_is_diverged_and_nothing_else(make_run):
    findings = diagnose_curves(*make_run(nan_at=5, lr=0.01))
    assert codes(findings) == ["diverged"]
    f = findings[0]
    assert f.severity == "error" and f.evidence["first_nonfinite_epoch"] == 5
    assert f.suggestion == "train.learning_rate: 0.01 → 0.001; train.clipnorm: 0.0 → 1.0"


def test_explosion_is_diverged(make_run):
    f = only(diagnose_curves(*make_run(explode_at=12)), "diverged")
    assert f.evidence["max_loss_ratio"] > f.evidence["explode_factor"]


def test_explosion_carries_the_gradient_norm_evidence(make_run):
    h, b, c = make_run(explode_at=12)
    rows = [
        {"epoch": e, "layer": layer, "grad_norm": g, "grad_norm_max": g * 1.5}
        for e in range(len(h))
        for layer, g in (("lstm_0", 0.5 * 3.0 ** max(0, e - 10)), ("output", 0.2))
    ]
    rows[-1]["grad_norm_max"] = float("nan")  # the last epoch's norms were already NaN
    f = only(diagnose_curves(h, b, {**c, "grad_norms": pd.DataFrame(rows)}), "diverged")
    ev = f.evidence
    assert (ev["grad_norm_peak_layer"], ev["grad_norm_statistic"]) == ("lstm_0", "grad_norm_max")
    assert ev["grad_norm_first_epoch"] == pytest.approx(0.75) and ev["grad_norm_peak_epoch"] == len(h) - 1
    assert ev["grad_norm_growth"] == pytest.approx(3.0 ** (len(h) - 11), rel=1e-3)
    assert ev["grad_nonfinite_epoch"] == len(h) - 1
    assert "grad_norm_peak" not in only(diagnose_curves(h, b, c), "diverged").evidence  # none recorded


def test_saturated_predictions_only_when_confidence_outruns_accuracy(make_run):
    preds = {"max_prob_share_above_0_99": 0.97, "mean_max_prob": 0.99, "pred_class_shares": {"c0": 0.3, "c1": 0.7}}
    overconfident = make_run(n_classes=2, predictions=preds, val_gap=2.0)  # val acc well below 0.9
    f = only(diagnose_curves(*overconfident), "saturated_predictions")
    assert f.evidence["saturated_share"] == 0.97 and f.evidence["saturation_share"] == 0.9
    h, b, c = make_run(n_classes=2, predictions=preds)
    h = h.assign(val_accuracy=0.98)
    assert "saturated_predictions" not in codes(diagnose_curves(h, b, c))


def test_sigmoid_outputs_drifting_to_zero_are_saturated(make_run):
    preds = {
        "max_prob_share_above_0_99": 0.0,
        "mean_max_prob": 0.004,
        "pred_class_shares": {f"c{i}": 1 / 10 for i in range(10)},
    }
    run = make_run(n_classes=10, predictions=preds, params={"train.output_activation": "sigmoid"})
    f = only(diagnose_curves(*run), "saturated_predictions")
    assert f.evidence["outputs_below_uniform"] is True
    assert f.suggestion == "train.output_activation: sigmoid → softmax"


def test_majority_collapse_compares_with_the_majority_share(make_run):
    collapsed = {
        "pred_class_shares": {"c0": 0.95, "c1": 0.02, "c2": 0.03},
        "max_prob_share_above_0_99": 0.0,
        "mean_max_prob": 0.5,
    }
    f = only(diagnose_curves(*make_run(n_classes=3, predictions=collapsed)), "majority_collapse")
    assert f.evidence["pred_top_share"] == 0.95 and f.evidence["top_class_share"] == pytest.approx(1 / 3, abs=1e-3)
    h, b, c = make_run(n_classes=3, predictions=collapsed)
    c["class_shares"] = {"c0": 0.94, "c1": 0.03, "c2": 0.03}  # predicting c0 95 % of the time is just right
    assert "majority_collapse" not in codes(diagnose_curves(h, b, c))


def test_thresholds_come_from_diagnose_params(make_run):
    run = make_run(batch_size=4, train_rows=1024)
    assert "noisy_loss" in codes(diagnose_curves(*run))
    lenient = dataclasses.replace(DiagnoseParams(), noise_ratio=5.0)
    assert "noisy_loss" not in codes(diagnose_curves(*run, lenient))
    f = only(diagnose_curves(*run, dataclasses.replace(DiagnoseParams(), noise_ratio=0.3)), "noisy_loss")
    assert f.evidence["noise_ratio"] == 0.3


@pytest.mark.parametrize(
    "kwargs,code,factors",
    [
        ({"batch_size": 4, "train_rows": 1024}, "noisy_loss", (0.1, 10.0)),
        ({"plateau": (2, 10)}, "plateau", (0.1, 10.0)),
        # Overfitting also checks val once beat the prior ln K, an absolute anchor: scale down only.
        ({"epochs": 60, "overfit_at": 20}, "overfitting", (0.05, 0.5)),
    ],
)
def test_rules_are_scale_free(make_run, kwargs, code, factors):
    h, b, c = make_run(**kwargs)
    for k in factors:
        scaled = diagnose_curves(
            h.assign(loss=h["loss"] * k, val_loss=h["val_loss"] * k), b.assign(loss=b["loss"] * k), c
        )
        assert code in codes(scaled)


def test_merge_orders_by_severity_then_source_and_keeps_the_contract_shape():
    data = [
        Finding("class_imbalance", "warning", {"ratio": 5.0}, "train.class_weight: none → balanced"),
        {"code": "label_order_clustered", "severity": "error", "evidence": {}, "suggestion": "", "where": "train"},
    ]
    lint = [Finding("cudnn_ineligible", "info", {}, "")]
    curve = [Finding("not_learning", "error", {}, "x"), Finding("plateau", "warning", {}, "y")]
    out = merge_findings(data, lint, curve, run_id="abc")
    assert out["run_id"] == "abc"
    assert [f["code"] for f in out["findings"]] == [
        "label_order_clustered",
        "not_learning",
        "class_imbalance",
        "plateau",
        "cudnn_ineligible",
    ]
    assert set(out["findings"][1]) == {"code", "severity", "evidence", "suggestion"}
    json.dumps(out)
    twice = merge_findings(curve, [], curve)
    assert len(twice["findings"]) == 2


def test_findings_are_json_serialisable(make_run):
    for kwargs in ({"batch_size": 4}, {"plateau": (0, 10)}, {"nan_at": 3}, {"overfit_at": 10, "epochs": 50}):
        json.dumps(merge_findings([], [], diagnose_curves(*make_run(**kwargs))))


def test_batch_noise_of_a_tiny_training_set_is_info_when_the_batch_cannot_grow(make_run):
    # Japanese Vowels: 216 rows at batch 32 scatter ~0.2 from per-sample spread alone; a
    # bigger batch would leave fewer than 8 steps per epoch, and the epoch curve is calm.
    tiny = only(diagnose_curves(*make_run(batch_size=32, train_rows=216, sample_cv=1.2)), "noisy_loss")
    assert tiny.severity == "info" and tiny.evidence["driver"] == "batch_size"
    assert tiny.suggestion.startswith("nothing to change") and "8 steps per epoch" in tiny.suggestion
    # The same scatter on a training set with room to grow the batch is a warning with a batch fix.
    roomy = only(diagnose_curves(*make_run(batch_size=32, train_rows=4096, sample_cv=1.2)), "noisy_loss")
    assert roomy.severity == "warning" and roomy.suggestion.startswith("train.batch_size: 32 → ")


def test_bouncing_epochs_on_a_tiny_training_set_blame_the_step_the_batch_cannot_grow(make_run):
    # BasicMotions at batch 8: 32 rows, 4 steps per epoch, and the epoch loss jumps back up
    # once low. The batch cannot grow without leaving fewer than 8 steps, so the fix, and its why, is the step.
    f = only(diagnose_curves(*make_run(batch_size=8, train_rows=32, sample_cv=0.6, epoch_jitter=0.15)), "noisy_loss")
    assert f.severity == "warning" and f.evidence["driver"] == "batch_size"
    assert f.suggestion.startswith("train.learning_rate: 0.001 → ") and "train.clipnorm: 0.0 → 1.0" in f.suggestion
    assert "fewer than 8 steps per epoch" in f.evidence["why"] and "learning rate" in f.evidence["why"]


def test_a_run_without_validation_is_not_diverged(make_run):
    # The train stage keeps a val_loss column, all NaN, when a run has no validation.
    h, b, c = make_run()
    found = diagnose_curves(h.assign(val_loss=np.nan, val_accuracy=np.nan), b, c)
    assert "diverged" not in codes(found)
    nan_later = h.assign(val_loss=np.where(h["epoch"] >= 20, np.nan, h["val_loss"]))
    assert only(diagnose_curves(nan_later, b, c), "diverged").evidence["first_nonfinite_epoch"] == 20


def test_scatter_beyond_sampling_at_a_low_learning_rate_does_not_lower_it_further(make_run):
    f = only(diagnose_curves(*make_run(batch_size=64, lr=1e-4, sample_cv=4.0, seed=2)), "noisy_loss")
    assert f.evidence["driver"] == "batch_size" and f.suggestion.startswith("train.batch_size: 64 → ")
    assert "already low" in f.evidence["why"] and "<=" not in f.evidence["why"]


def test_the_batch_cap_uses_the_batch_log_when_train_rows_were_not_recorded(make_run):
    h, b, c = make_run(epochs=40, batch_size=4, train_rows=128, sample_cv=0.8, seed=1)
    with_rows = only(diagnose_curves(h, b, c), "noisy_loss").suggestion
    del c["train_rows"]
    assert (
        only(diagnose_curves(h, b, c), "noisy_loss").suggestion
        == with_rows
        == "train.batch_size: 4 → 16 (noise ∝ 1/sqrt(batch): expect ~2.0x less)"
    )  # 128 rows / 16 = 8 steps


def test_a_high_learning_rate_is_lowered_to_the_optimizer_default(make_run):
    f = only(diagnose_curves(*make_run(epochs=20, lr=0.1, explode_at=10)), "diverged")
    assert f.suggestion.startswith("train.learning_rate: 0.1 → 0.001;")


def test_overfitting_suggestions_are_never_empty_and_name_the_monitor_in_use(make_run):
    kept = {
        "train.model.dropout": 0.5,
        "train.model.rnn.dropout": 0.3,
        "train.callbacks.checkpoint_monitor": "val_loss",
    }
    f = only(diagnose_curves(*make_run(epochs=40, overfit_at=15, params=kept)), "overfitting")
    assert f.severity == "info" and "best epoch" in f.suggestion and "→" not in f.suggestion
    watch_loss = {"train.callbacks.checkpoint_monitor": "loss", "train.callbacks.early_stopping": True}
    f = only(diagnose_curves(*make_run(epochs=40, overfit_at=15, params=watch_loss)), "overfitting")
    assert "train.callbacks.checkpoint_monitor: loss → val_loss" in f.suggestion


def test_prediction_rules_never_suggest_a_no_op_and_tolerate_missing_shares(make_run):
    below_uniform = {
        "mean_max_prob": 0.1,
        "max_prob_share_above_0_99": 0.0,
        "pred_class_shares": {"c0": 0.3, "c1": 0.2, "c2": 0.2, "c3": 0.2, "c4": 0.1},
    }
    f = only(diagnose_curves(*make_run(epochs=20, predictions=below_uniform)), "saturated_predictions")
    assert "softmax → softmax" not in f.suggestion
    collapsed = {"pred_class_shares": {"c0": 0.95, "c1": 0.05, "c2": None}}
    assert (
        only(diagnose_curves(*make_run(epochs=20, predictions=collapsed)), "majority_collapse").evidence["top_class"]
        == "c0"
    )
    # An older run without n_classes: the class shares still tell an imbalanced train set.
    h, b, c = make_run(epochs=20, predictions={"pred_class_shares": {"c0": 0.97, "c1": 0.03}})
    c["class_shares"] = {"c0": 0.8, "c1": 0.05, "c2": 0.05, "c3": 0.05, "c4": 0.05}
    del c["n_classes"]
    assert only(diagnose_curves(h, b, c), "majority_collapse").suggestion == "train.class_weight: none → balanced"


def test_noise_of_a_recovered_explosion_is_secondary_to_it(make_run):
    h, b, c = make_run(epochs=30, lr=0.01)
    spike = (b["epoch"] >= 10) & (b["epoch"] < 13)
    b.loc[spike, "loss"] *= 60
    h["loss"] = b.groupby("epoch")["loss"].mean().to_numpy()
    found = diagnose_curves(h, b, c)
    assert only(found, "diverged").severity == "warning"
    noisy = only(found, "noisy_loss")
    assert noisy.severity == "info" and noisy.evidence["secondary_to"] == "diverged"


def test_a_checkpoint_on_val_accuracy_is_named_and_warns_when_it_keeps_a_worse_val_loss(make_run):
    """Report 000: ModelCheckpoint(monitor="val_accuracy") keeps the best-accuracy epoch."""
    params = {
        "train.callbacks.checkpoint_monitor": "val_accuracy",
        "fit.callbacks.ModelCheckpoint.monitor": "val_accuracy",
    }
    h, b, c = make_run(epochs=30, overfit_at=10, params=params)
    # Val accuracy peaks late, after the val loss turned up: the kept model is not the loss curve's best.
    h["val_accuracy"] = np.linspace(0.5, 0.9, len(h))
    f = only(diagnose_curves(h, b, c), "monitors_val_metric")
    ev = f.evidence
    assert f.severity == "warning" and ev["mode"] == "max" and ev["kept_epoch"] == 29
    assert ev["best_val_loss_epoch"] < 15 and ev["val_loss_excess"] >= ev["overfit_rel_rise"]
    assert f.suggestion == "train.callbacks.checkpoint_monitor: val_accuracy → val_loss"
    # Both statistics pick the same epoch: said, as info.
    h2, b2, c2 = make_run(epochs=30, params=params)
    h2["val_accuracy"] = -h2["val_loss"]  # best where the val loss is lowest
    assert only(diagnose_curves(h2, b2, c2), "monitors_val_metric").severity == "info"
    # A monitor the user set to "min" is read as such, whatever its name.
    mins = {**params, "fit.callbacks.ModelCheckpoint.mode": "min"}
    h3, b3, c3 = make_run(epochs=30, params=mins)
    assert (
        only(diagnose_curves(h3.assign(val_accuracy=h3["val_loss"]), b3, c3), "monitors_val_metric").evidence["mode"]
        == "min"
    )
    for monitor in ("val_loss", "", "loss"):
        quiet = make_run(epochs=30, params={"train.callbacks.checkpoint_monitor": monitor})
        assert "monitors_val_metric" not in codes(diagnose_curves(*quiet))


def test_a_single_label_head_whose_outputs_do_not_sum_to_1_is_named(make_run):
    """Report 003: sigmoid outputs over 102 exclusive classes add up to ~40, not 1."""
    shares = {f"c{i}": 1 / 102 for i in range(102)}
    sigmoid = {
        "max_prob_share_above_0_99": 0.0,
        "mean_max_prob": 0.87,
        "mean_output_sum": 36.3,
        "pred_class_shares": shares,
    }
    run = make_run(n_classes=102, predictions=sigmoid, params={"train.output_activation": "sigmoid"})
    f = only(diagnose_curves(*run), "saturated_predictions")
    assert f.evidence["outputs_not_a_distribution"] is True and f.evidence["mean_output_sum"] == 36.3
    assert f.evidence["outputs_below_uniform"] is False
    assert f.suggestion == "train.output_activation: sigmoid → softmax"
    softmax = {**sigmoid, "mean_max_prob": 0.3, "mean_output_sum": 1.0}
    assert "saturated_predictions" not in codes(diagnose_curves(*make_run(n_classes=102, predictions=softmax)))
    h, b, c = make_run(n_classes=102, predictions=sigmoid)
    assert "saturated_predictions" not in codes(diagnose_curves(h, b, {**c, "multilabel": True}))
