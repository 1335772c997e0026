"""Curve features: scale-free, robust to epoch count, and right on known curves."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from losstrace.explain import symptoms
from losstrace.explain.symptoms import (
    chance_loss,
    curve_features,
    decreasing_fit,
    epoch_jitter,
    longest_plateau,
    prior_loss,
    val_prior_loss,
)


def test_chance_and_prior_loss_follow_the_number_and_balance_of_classes():
    assert chance_loss({"n_classes": 5}) == pytest.approx(math.log(5))
    assert chance_loss({"n_classes": 2}) == pytest.approx(math.log(2))
    multi = {"multilabel": True, "class_shares": {"a": 0.5, "b": 0.1}}
    expected = (math.log(2) + -(0.1 * math.log(0.1) + 0.9 * math.log(0.9))) / 2
    assert chance_loss(multi) == pytest.approx(expected)
    skewed = {"n_classes": 2, "class_shares": {"a": 0.9, "b": 0.1}}
    assert prior_loss(skewed) == pytest.approx(-(0.9 * math.log(0.9) + 0.1 * math.log(0.1)))
    assert prior_loss(skewed) < chance_loss(skewed)


def test_val_prior_is_what_an_input_blind_model_fitted_on_train_scores_on_val():
    train = {"a": 0.6, "b": 0.3, "c": 0.1}
    stratified = {"n_classes": 3, "class_shares": train, "val_class_shares": train}
    assert val_prior_loss(stratified) == pytest.approx(prior_loss(stratified))
    shifted = {**stratified, "val_class_shares": {"a": 0.2, "b": 0.4, "c": 0.4}}
    expected = -(0.2 * math.log(0.6) + 0.4 * math.log(0.3) + 0.4 * math.log(0.1))
    assert val_prior_loss(shifted) == pytest.approx(expected) and val_prior_loss(shifted) > prior_loss(shifted)
    # Balanced class weights teach the model equal shares: on val that scores ln K.
    weighted = {**stratified, "params": {"train.class_weight": "balanced"}}
    assert val_prior_loss(weighted) == pytest.approx(math.log(3))
    # Multi-label: per-label binary cross-entropy of val's shares against train's.
    multi = {"multilabel": True, "class_shares": {"x": 0.5, "y": 0.2}, "val_class_shares": {"x": 0.4, "y": 0.2}}
    bce = lambda v, t: -(v * math.log(t) + (1 - v) * math.log(1 - t))  # noqa: E731
    assert val_prior_loss(multi) == pytest.approx((bce(0.4, 0.5) + bce(0.2, 0.2)) / 2)
    assert val_prior_loss({"n_classes": 3, "class_shares": train}) is None  # older runs: no val shares


def test_batch_noise_scales_like_one_over_sqrt_batch(make_run):
    small = curve_features(*make_run(batch_size=8, train_rows=4096, seed=1))["batch_noise"]
    large = curve_features(*make_run(batch_size=128, train_rows=4096, seed=1))["batch_noise"]
    # sqrt(128 / 8) = 4; the robust estimate and the level floor allow some slack.
    assert 3.0 < small / large < 5.0


def test_batch_noise_is_scale_free_and_robust_to_epoch_count(make_run):
    h, b, c = make_run(epochs=40, seed=3)
    base = curve_features(h, b, c)["batch_noise"]
    scaled_b = b.assign(loss=b["loss"] * 10)
    scaled_h = h.assign(loss=h["loss"] * 10, val_loss=h["val_loss"] * 10)
    assert curve_features(scaled_h, scaled_b, c)["batch_noise"] == pytest.approx(base, rel=1e-6)
    long = curve_features(*make_run(epochs=150, tau=22, seed=3))["batch_noise"]
    assert long == pytest.approx(base, rel=0.2)


def test_decreasing_fit_is_the_identity_on_decreasing_curves_and_never_increases():
    y = np.array([3.0, 2.0, 1.5, 1.4, 1.0])
    assert np.allclose(decreasing_fit(y), y)
    bumpy = np.array([3.0, 2.0, 2.4, 1.5, 1.7, 1.0])
    fit = decreasing_fit(bumpy)
    assert np.all(np.diff(fit) <= 1e-12)
    assert fit.sum() == pytest.approx(bumpy.sum())  # least-squares pooling keeps the mean


def test_epoch_jitter_is_zero_for_smooth_descent_and_grows_with_bouncing(make_run):
    smooth = np.array([2.0 * math.exp(-t / 5) + 0.2 for t in range(40)])
    assert epoch_jitter(smooth, 0.2) == pytest.approx(0.0, abs=1e-12)
    calm = curve_features(*make_run(seed=4))["epoch_jitter"]
    bouncing = curve_features(*make_run(epoch_jitter=0.25, seed=4))["epoch_jitter"]
    assert calm < 0.01 < 0.04 < bouncing


def test_plateau_found_with_its_start_and_length(make_run):
    f = curve_features(*make_run(plateau=(3, 12), epochs=50))
    assert abs(f["plateau_start"] - 3) <= 1
    assert abs(f["plateau_length"] - 12) <= 2
    assert f["plateau_drop"] >= 0.2


def test_flat_converged_tail_and_slow_steady_descent_are_not_plateaus():
    tail = np.array([0.3 + 2 * math.exp(-t / 3) for t in range(80)])  # long flat end, no drop after
    assert longest_plateau(tail, 0.2, 0.02, 5, 0.2) is None
    slow = np.array([2.3 * 0.99**t for t in range(300)])  # 1 %/epoch for 300 epochs: a descent
    assert longest_plateau(slow, 0.1, 0.02, 5, 0.2) is None
    # ... whereas the same flat start followed by a sharp drop is one.
    stepped = np.concatenate([np.full(15, 2.3), 2.3 * 0.7 ** np.arange(1, 10)])
    assert longest_plateau(stepped, 0.1, 0.02, 5, 0.2)["length"] == 15


def test_overfitting_onset_at_the_val_minimum(make_run):
    f = curve_features(*make_run(epochs=60, overfit_at=25))
    assert abs(f["overfit_onset"] - 25) <= 2
    assert f["overfit_rise"] > 0.1 and f["overfit_train_fall"] > 0
    assert curve_features(*make_run(epochs=60))["overfit_onset"] is None


def test_val_that_never_beats_the_prior_is_not_overfitting(make_run):
    f = curve_features(*make_run(val_stuck=True))
    assert f["overfit_onset"] is None
    assert f["val_vs_prior"] >= 1.0


def test_initial_loss_reads_the_untrained_model_from_batches(make_run):
    h, b, c = make_run(n_classes=10, tau=1.0)
    with_batches = curve_features(h, b, c)
    without = curve_features(h, b.iloc[0:0], c)
    assert with_batches["initial_loss"] == pytest.approx(math.log(10), rel=0.1)
    assert with_batches["initial_from_batches"] and not without["initial_from_batches"]
    # Keras' epoch-0 mean already includes learning, so it is lower than the start.
    assert without["initial_loss"] < with_batches["initial_loss"]


@pytest.mark.parametrize("kwargs", [{"nan_at": 7}, {"explode_at": 7}])
def test_divergence_detected(make_run, kwargs):
    f = curve_features(*make_run(**kwargs))
    assert f["diverged"] is True
    if "nan_at" in kwargs:
        assert f["first_nonfinite_epoch"] == 7
    else:
        assert f["max_loss_ratio"] > 10


def test_one_spiking_batch_is_not_an_explosion(make_run):
    h, b, c = make_run(n_classes=2)
    b = b.copy()
    b.loc[len(b) // 2, "loss"] = 16.0  # one batch far above 10 x ln 2
    assert curve_features(h, b, c)["diverged"] is False


def test_epochs_to_half_measures_speed(make_run):
    fast = curve_features(*make_run(tau=3))["epochs_to_half"]
    slow = curve_features(*make_run(tau=12))["epochs_to_half"]
    assert fast < slow


def test_features_tolerate_missing_columns_and_are_json_serialisable(make_run):
    h, b, c = make_run()
    f = curve_features(h[["epoch", "loss"]], None, {"n_classes": 3})
    assert f["final_val_loss"] is None and f["batch_noise"] is None and f["final_val_accuracy"] is None
    json.dumps(curve_features(h, b, c))
    json.dumps(f)


def test_empty_history_yields_nones_not_errors():
    f = curve_features(pd.DataFrame(columns=["epoch", "loss"]), pd.DataFrame(), {})
    assert f["epochs"] == 0 and f["initial_loss"] is None and f["plateau_length"] == 0


def test_lr_default_ratio_uses_the_optimizer(make_run):
    f = curve_features(*make_run(lr=0.01, optimizer="sgd"))
    assert f["lr_default_ratio"] == pytest.approx(1.0)
    assert symptoms.DEFAULT_LR["adam"] == pytest.approx(1e-3)
