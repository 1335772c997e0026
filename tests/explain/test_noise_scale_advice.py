"""A measured gradient noise scale in the batch advice: noisy_loss and the prescription size the
batch from it, clear a batch already near it, and fall back to the scatter heuristic without it."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from losstrace.explain.diagnose import diagnose_curves
from losstrace.explain.prescription import prescribe
from losstrace.explain.symptoms import curve_features, measured_noise_scale, noise_scale_context
from losstrace.findings import Finding
from losstrace.record import contract


def measured(history: pd.DataFrame, b_simple: float, signal: float = 0.5) -> pd.DataFrame:
    """The history as a training with train.noise_scale_every > 0 leaves it: per-epoch tr(Σ)
    and |G|² estimates whose ratio of means is b_simple (|G|² shrinking as the loss falls)."""
    g2 = signal * np.linspace(1.0, 0.4, len(history))
    trace = np.full(len(history), b_simple * g2.mean())
    return history.assign(**{contract.NOISE_SCALE: trace / g2, contract.NOISE_TRACE: trace, contract.NOISE_SIGNAL: g2})


def noisy(findings: list[Finding]) -> Finding:
    hits = [f for f in findings if f.code == "noisy_loss"]
    assert len(hits) == 1, [f.code for f in findings]
    return hits[0]


def test_the_run_value_is_the_ratio_of_the_epoch_means_not_a_mean_of_ratios():
    h = pd.DataFrame(
        {
            "epoch": [0, 1, 2, 3],
            contract.NOISE_TRACE: [20.0, 18.0, np.nan, 16.0],  # epoch 2: no step was due
            contract.NOISE_SIGNAL: [1.0, 0.5, np.nan, 0.001],  # a near-zero |G|² late on
        }
    )
    got = measured_noise_scale(h)
    assert got["b_simple"] == pytest.approx(18.0 / (1.501 / 3), rel=1e-4)
    assert got["epochs"] == 3
    assert got["b_simple"] < np.nanmean(h[contract.NOISE_TRACE] / h[contract.NOISE_SIGNAL]) / 100


def test_not_measured_or_unresolved_is_none_and_leaves_the_context_alone(make_run):
    history, batches, context = make_run()
    assert measured_noise_scale(history) is None and noise_scale_context(history, batches, 0.1) == {}
    unresolved = history.assign(**{contract.NOISE_TRACE: 10.0, contract.NOISE_SIGNAL: -0.1})
    assert measured_noise_scale(unresolved) is None  # |G|² below what the measurements resolve
    assert curve_features(history, batches, context)["noise_scale"] is None


def test_a_batch_far_below_the_noise_scale_is_raised_towards_it(make_run):
    history, batches, context = make_run(batch_size=4, train_rows=1024)
    f = noisy(diagnose_curves(measured(history, 180.0), batches, context))
    assert f.severity == "warning" and f.evidence["driver"] == "batch_size"
    assert f.evidence["noise_scale"] == pytest.approx(180.0)
    assert f.evidence["noise_scale_vs_batch"] == pytest.approx(45.0)
    # The largest power of two up to the noise scale, capped at >= 8 steps per epoch (1024 / 8).
    assert f.suggestion == "train.batch_size: 4 → 128 (noise scale ≈ 180 samples; batch 4 is 45x below it)"
    assert "fewer steps" in f.evidence["why"]
    # Without the measurement: the scatter heuristic, as before.
    plain = noisy(diagnose_curves(history, batches, context))
    assert "noise scale" not in plain.suggestion and "noise_scale" not in plain.evidence
    assert plain.suggestion.startswith("train.batch_size: 4 → ") and "1/sqrt(batch)" in plain.suggestion


def test_the_example_of_the_issue_batch_16_eleven_times_below(make_run):
    history, batches, context = make_run(batch_size=16, train_rows=4096, sample_cv=1.6)
    f = noisy(diagnose_curves(measured(history, 180.0), batches, context))
    assert "noise scale ≈ 180 samples; batch 16 is 11x below it" in f.suggestion
    assert f.suggestion.startswith("train.batch_size: 16 → 128")


def test_a_batch_at_or_above_the_noise_scale_is_not_the_knob(make_run):
    history, batches, context = make_run(batch_size=16, train_rows=4096, sample_cv=1.6)
    assert noisy(diagnose_curves(history, batches, context)).severity == "warning"  # unmeasured: grow the batch
    f = noisy(diagnose_curves(measured(history, 20.0), batches, context))
    assert f.severity == "info"
    assert f.suggestion.startswith("nothing to change: batch 16 is 1.2x below the measured noise scale ≈ 20")
    assert "per-sample spread" in f.evidence["why"]
    assert not f.changes


def test_bouncing_epochs_at_the_noise_scale_name_the_step(make_run):
    history, batches, context = make_run(batch_size=16, train_rows=4096, sample_cv=1.6, epoch_jitter=0.12)
    assert noisy(diagnose_curves(history, batches, context)).evidence["driver"] == "batch_size"  # unmeasured
    f = noisy(diagnose_curves(measured(history, 10.0), batches, context))
    assert f.severity == "warning" and f.evidence["driver"] == "learning_rate"
    assert f.suggestion.startswith("train.learning_rate: 0.001 → ")
    assert "batch 16 is 1.6x above the measured noise scale ≈ 10 samples" in f.evidence["why"]


def test_the_prescription_sizes_lints_batch_by_the_measured_noise_scale():
    lint = Finding("small_batch", "warning", {}, "train.batch_size: 4 → 32")
    context = {"train_rows": 4096, "params": {"train.batch_size": 4}}
    assert prescribe([lint], context).changes[0]["to"] == 32  # unmeasured: the rule of thumb
    sized = prescribe([lint], {**context, "noise_scale": {"b_simple": 300.0}}).changes
    assert sized[0]["to"] == 256 and "noise scale ≈ 300" in sized[0]["why"]
    capped = prescribe([lint], {**context, "train_rows": 512, "noise_scale": {"b_simple": 300.0}}).changes
    assert capped[0]["to"] == 64  # >= 8 steps per epoch
    kept = prescribe([lint], {**context, "noise_scale": {"b_simple": 6.0}})
    assert kept.changes == [] and "within 2x" in kept.notes[0]


def test_the_measured_target_is_a_power_of_two_under_the_noise_scale(make_run):
    history, batches, context = make_run(batch_size=4, train_rows=1 << 16)
    for scale in (100.0, 128.0, 1000.0):
        f = noisy(diagnose_curves(measured(history, scale), batches, context))
        new = int(f.suggestion.split("→ ")[1].split()[0])
        assert new == 2 ** math.floor(math.log2(scale))


def test_measuring_the_noise_scale_is_no_cause_in_a_diff():
    from losstrace.explain.deltas import material_changes

    changes = material_changes([{"key": "train.noise_scale_every", "a": 0, "b": 10}], [], [])
    assert changes == []
