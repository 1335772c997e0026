"""Curve diagnosis: turn a run's curve features into findings that say why and what to change.

Each rule is a small function `(features, context, thresholds) -> Finding | None`.
Evidence always carries the statistic that fired AND its threshold (with the params key
that sets it); the suggestion is phrased as a params change computed from the run's own
values (`train.batch_size: 16 → 64`). docs/diagnosis.md explains every rule.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from losstrace.explain.symptoms import DEFAULT_LR, curve_features, param
from losstrace.findings import SEVERITIES, Finding
from losstrace.model import heads
from losstrace.params import DiagnoseParams

Features = dict[str, Any]

CURVE_CODES = (
    "diverged",
    "not_learning",
    "noisy_loss",
    "plateau",
    "overfitting",
    "saturated_predictions",
    "majority_collapse",
    "monitors_val_metric",
)


# ---------------------------------------------------------------- formatting


def show(value: Any) -> str:
    """A params value as a user would write it in params.yaml: 0.0, 0.001, 64, true."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.1f}" if value.is_integer() and abs(value) < 1e6 else f"{value:g}"
    if value is None or value == "":
        return '""'
    return str(value)


def change(key: str, old: Any, new: Any) -> str:
    """`key: old → new`, the one phrasing every suggestion uses."""
    return f"{key}: {show(old)} → {show(new)}"


def _r(x: Any, digits: int = 4) -> Any:
    return round(float(x), digits) if isinstance(x, (int, float)) and not isinstance(x, bool) else x


def _lr_context(ctx: dict[str, Any]) -> tuple[float, str, float]:
    """(learning rate, optimizer, lr / the optimizer's usual default)."""
    opt = str(param(ctx, "train.optimizer", "adam")).lower()
    lr = float(param(ctx, "train.learning_rate", DEFAULT_LR.get(opt, 1e-3)))
    return lr, opt, lr / DEFAULT_LR.get(opt, 1e-3)


def _nice_lr(x: float) -> float:
    """Round a suggested learning rate to one significant digit (0.00347 → 0.003)."""
    if x <= 0:
        return x
    exp = math.floor(math.log10(x))
    return round(round(x / 10**exp) * 10**exp, 12)


def _lower_lr(lr: float, opt: str) -> float:
    """A high lr drops to the optimizer default (or a third when already at/below it)."""
    default = DEFAULT_LR.get(opt, 1e-3)
    return _nice_lr(default if lr > default * 1.5 else lr / 3)


def _raise_lr(lr: float, opt: str) -> float:
    """x10 at or below the optimizer default (RMSprop at 0.0001 → 0.001 ends a GRU's ln 2 plateau on the UCI sentences), x3 above."""
    return _nice_lr(lr * 10 if lr <= DEFAULT_LR.get(opt, 1e-3) * 1.01 else lr * 3)


def _pow2_at_least(x: float) -> int:
    return int(2 ** math.ceil(math.log2(max(x, 1))))


def _pow2_at_most(x: float) -> int:
    return int(2 ** math.floor(math.log2(max(x, 1))))


# ---------------------------------------------------------------- rules


def rule_diverged(f: Features, ctx: dict[str, Any], t: DiagnoseParams) -> Finding | None:
    """NaN/inf anywhere, or train loss trend > explode_factor x the initial loss."""
    if not f["diverged"]:
        return None
    lr, opt, _ = _lr_context(ctx)
    clip = float(param(ctx, "train.clipnorm", 0.0) or 0.0)
    ev = {
        "first_nonfinite_epoch": f["first_nonfinite_epoch"],
        "max_loss_ratio": _r(f["max_loss_ratio"]),
        "explode_factor": t.explode_factor,
        "threshold_key": "diagnose.explode_factor",
        "initial_loss": _r(f["initial_loss"]),
        "learning_rate": lr,
        "optimizer": opt,
        "recovered": f["recovered"],
    }
    ev.update(gradient_evidence(ctx.get("grad_norms")))
    steps = [change("train.learning_rate", lr, _lower_lr(lr, opt))]
    if clip <= 0:
        steps.append(change("train.clipnorm", 0.0, 1.0))
    severity = "warning" if f["recovered"] and f["first_nonfinite_epoch"] is None else "error"
    return Finding("diverged", severity, ev, "; ".join(steps))


def gradient_evidence(norms: Any) -> dict[str, Any]:
    """How the layers' gradient norms moved: the first epoch's largest, the peak (layer,
    epoch), their ratio, and the first epoch whose norms were no longer finite. `norms`:
    dynamics rows (epoch, layer, grad_norm[, grad_norm_max]) as a frame or records; the
    per-step maximum is used where recorded, since one exploding step is the evidence."""
    if norms is None:
        return {}
    frame = norms if isinstance(norms, pd.DataFrame) else pd.DataFrame(norms)
    col = next((c for c in ("grad_norm_max", "grad_norm", "norm") if c in frame.columns), None)
    if frame.empty or col is None or "epoch" not in frame.columns:
        return {}
    values = pd.to_numeric(frame[col], errors="coerce")
    finite = frame[np.isfinite(values)].assign(_v=values[np.isfinite(values)])
    out: dict[str, Any] = {}
    bad = frame.loc[~np.isfinite(values), "epoch"]
    if len(bad):
        out["grad_nonfinite_epoch"] = int(bad.min())
    if finite.empty:
        return out
    first = finite[finite["epoch"] == finite["epoch"].min()]["_v"].max()
    peak = finite.loc[finite["_v"].idxmax()]
    out.update(
        {
            "grad_norm_first_epoch": _r(first),
            "grad_norm_peak": _r(peak["_v"]),
            "grad_norm_peak_layer": str(peak.get("layer", "")),
            "grad_norm_peak_epoch": int(peak["epoch"]),
            "grad_norm_growth": _r(peak["_v"] / first) if first > 0 else None,
            "grad_norm_statistic": col,
        }
    )
    return out


def head_mismatch(ctx: dict[str, Any]) -> str | None:
    """The params change that fixes an output activation / loss / label disagreement, if any.

    The lint's rules (model/heads.py) applied to the recorded params: a recorded run may
    predate the lint or have been forced past it, and a stuck loss is the symptom it produces.
    """
    return heads.head_mismatch(
        str(param(ctx, "train.output_activation", "softmax")),
        str(param(ctx, "train.loss", "sparse_categorical_crossentropy")),
        int(ctx.get("n_classes") or 0),
        bool(ctx.get("multilabel")),
        bool(param(ctx, "train.from_logits", False)),
        int(param(ctx, "train.output_units", 0) or 0),
    )


# A curve still falling over its last this many epochs (each by > plateau_rel_change) is
# learning when the run stopped: its level says the run was short, not that it is stuck.
STILL_FALLING_EPOCHS = 2
# Train accuracy that moves less than this over the epochs (a point) has not changed its
# mind about any meaningful share of the rows.
FLAT_ACCURACY = 0.01


def rule_not_learning(f: Features, ctx: dict[str, Any], t: DiagnoseParams) -> Finding | None:
    """The loss never leaves its starting level, or val loss never beats the class prior.

    Train-stuck: best epoch loss >= initial x (1 - drop). The initial loss comes from the
    first batches; without batches Keras' epoch-0 mean would hide a model that learned
    everything in epoch 0, so the stuck level must then also sit at the prior loss.
    Val-stuck: best val loss >= val prior x (1 - drop) although train loss fell (the val
    prior: what an input-blind model fitted on train scores on val): what the
    model fits does not transfer, the signature of rows grouped by label (each block
    teaches "predict this class") and of a head that cannot express the labels.
    A curve that is below the prior and still falling steadily when the run stops
    (STILL_FALLING_EPOCHS) is learning: a short run, not a stuck one.
    Curve only (no batches and no class prior, as in a plain mlflow.keras.autolog run):
    over >= plateau_min_epochs the train (and val) loss moves < plateau_rel_change in all
    and train accuracy < FLAT_ACCURACY. Stuck at the start and converged within epoch 0
    look alike then, so it is a warning, not an error.
    """
    drop = t.not_learning_rel_drop
    init, best, prior = f["initial_loss"], f["best_loss"], f["prior_loss"]
    if init is None or best is None:
        return None
    seen_start = bool(f["initial_from_batches"])
    falling = (f.get("loss_falling_epochs") or 0) >= STILL_FALLING_EPOCHS and (prior is None or best < prior)
    train_stuck = (
        best >= init * (1 - drop) and (seen_start or (prior is not None and best >= prior * (1 - drop))) and not falling
    )
    bv, val_prior = f["best_val_loss"], f["val_prior_loss"]
    val_falling = (f.get("val_falling_epochs") or 0) >= STILL_FALLING_EPOCHS
    val_stuck = (
        val_prior is not None
        and bv is not None
        and bv >= val_prior * (1 - drop)
        and not (val_falling and bv < val_prior)
    )
    curve_only = not seen_start and prior is None and not train_stuck and _barely_moves(f, t)
    if not (train_stuck or val_stuck or curve_only):
        return None
    pattern = (
        "train loss barely moves from its first epoch (class prior unknown)"
        if curve_only
        else "train and val loss stay at their start"
        if train_stuck and (val_stuck or bv is None)
        else "train loss stays at its start"
        if train_stuck
        else "train loss falls but val loss never gets below the class-prior level"
    )
    ev = {
        "pattern": pattern,
        "initial_loss": _r(init),
        "best_loss": _r(best),
        "loss_drop": _r(f["loss_drop"]),
        "chance_loss": _r(f["chance_loss"]),
        "prior_loss": _r(prior),
        "val_prior_loss": _r(val_prior),
        "best_val_loss": _r(bv),
        "not_learning_rel_drop": drop,
        "threshold_key": "diagnose.not_learning_rel_drop",
        "final_val_accuracy": _r(f["final_val_accuracy"]),
        "majority_share": _r(f["majority_share"]),
    }
    if curve_only:
        ev.update(
            {
                "epochs": f["epochs"],
                "accuracy_range": _r(f.get("accuracy_range")),
                "plateau_rel_change": t.plateau_rel_change,
                "threshold_keys": ["diagnose.plateau_rel_change", "diagnose.plateau_min_epochs"],
            }
        )
    ev["message"] = _not_learning_message(f, drop, pattern, curve_only, train_stuck, val_stuck)
    fix = _not_learning_fix(f, ctx, t, train_stuck or curve_only, val_stuck)
    return Finding("not_learning", "warning" if curve_only else "error", ev, fix)


def _barely_moves(f: Features, t: DiagnoseParams) -> bool:
    """Over >= plateau_min_epochs, train and val loss each moved < plateau_rel_change of
    their first epoch's level in all, and train accuracy (when logged) < FLAT_ACCURACY."""
    if (f["epochs"] or 0) < t.plateau_min_epochs or not f["initial_loss"]:
        return False
    if (f["loss_drop"] or 0.0) >= t.plateau_rel_change:
        return False
    first_val, bv = f.get("first_val_loss"), f["best_val_loss"]
    if first_val and bv is not None and 1 - bv / first_val >= t.plateau_rel_change:
        return False
    acc_range = f.get("accuracy_range")
    return acc_range is None or acc_range < FLAT_ACCURACY


def _not_learning_message(
    f: Features, drop: float, pattern: str, curve_only: bool, train_stuck: bool, val_stuck: bool
) -> str:
    """The finding in one sentence, with the numbers that decided it."""
    init, best = f["initial_loss"], f["best_loss"]
    if curve_only:
        acc = f.get("accuracy_range")
        return (
            f"over {f['epochs']} epochs the train loss moved {f['loss_drop'] or 0.0:.2%} ({init:.4g} → {best:.4g})"
            + ("" if acc is None else f" and train accuracy by {acc:.3g}" if acc else " and train accuracy not at all")
            + ": the updates change nothing; with no class prior recorded, a loss stuck at its start "
            "cannot be told from one that converged in the first epoch"
        )
    if train_stuck:
        prior = f["prior_loss"]
        return (
            f"the train loss stays at its start: its best {best:.4g} is within {drop:.0%} of the initial {init:.4g}"
            + (f" (the class-prior level is {prior:.4g})" if prior else "")
            + ("; val loss never gets below the class-prior level either" if val_stuck else "")
        )
    return (
        f"train loss falls ({init:.4g} → {best:.4g}) but the best val loss {f['best_val_loss']:.4g} is not "
        f"{drop:.0%} below {f['val_prior_loss']:.4g}, what a model blind to the inputs scores on val: what the "
        "model fits does not carry over to val"
    )


def _not_learning_fix(f: Features, ctx: dict[str, Any], t: DiagnoseParams, train_stuck: bool, val_stuck: bool) -> str:
    """Suggestions ordered by how directly the run's own context points at them."""
    fixes: list[str] = []
    head = head_mismatch(ctx)
    if head:
        fixes.append(head)
    grouped_feed = param(ctx, "data.shuffle", True) is False and param(ctx, "train.shuffle", True) is False
    if grouped_feed:
        # Rows grouped by label and fed in file order: each block teaches "predict this class".
        fixes.append(change("data.shuffle", False, True))
    elif val_stuck and not train_stuck:
        # Keras reshuffles every epoch, so order is not it: what the model fits does not transfer.
        tries = []
        # Only the pipeline's validate stage checks leakage and OOV (a script run's arrays get
        # the class and order checks alone); older pipeline runs lack "input" and were text.
        validated = "data.source" in (ctx.get("params") or {})
        kind = ctx.get("input", "text" if validated else "")
        text = kind == "text"
        if text and param(ctx, "data.text_level", "word") != "char":
            tries.append("data.text_level: char")
        if text and not param(ctx, "train.model.embedding.pretrained", ""):
            tries.append("pretrained embeddings")
        dropout = float(param(ctx, "train.model.dropout", 0.0) or 0.0)
        if dropout < 0.3:
            tries.append(change("train.model.dropout", dropout, 0.3))
        # OOV only exists for text and token inputs.
        checks = ["high_oov_rate", "train_val_leakage"] if kind in ("text", "tokens") else ["train_val_leakage"]
        fixes.append(
            "the model memorises training inputs that val does not share"
            + (f": check {' and '.join(checks)} in the data findings" if validated else "")
            + (", try " + " or ".join(tries) if tries else "")
            + "; if none helps, the inputs may carry little signal about the labels"
        )
    if param(ctx, "train.model.embedding.mask_zero", True) is False:
        fixes.append(change("train.model.embedding.mask_zero", False, True))
    lr, opt, ratio = _lr_context(ctx)
    if ratio <= 1 / t.lr_factor:
        fixes.append(change("train.learning_rate", lr, _raise_lr(lr, opt)))
    elif ratio >= t.lr_factor:
        fixes.append(change("train.learning_rate", lr, _lower_lr(lr, opt)))
    if not fixes:
        check = (
            "that the targets follow from the inputs, and standardise them (their scale is the loss's)"
            if ctx.get("task") == "regression"
            else "that labels match inputs (label order, activation/loss)"
        )
        fixes.append(change("train.learning_rate", lr, _raise_lr(lr, opt)) + f"; also check {check}")
    return "; ".join(fixes)


def rule_noisy_loss(f: Features, ctx: dict[str, Any], t: DiagnoseParams) -> Finding | None:
    """Batch loss scatters far beyond its trend, or epoch loss bounces.

    batch_noise > noise_ratio: sampling noise of small batches (~ 1/sqrt(batch)) or an
    optimizer that jumps within epochs. epoch_jitter > jitter_ratio: epochs go up and
    down; epoch means average the whole train set, so this is the optimizer oscillating
    (learning rate high for the batch size). The driver named is the likelier knob.
    A measured gradient noise scale (train.noise_scale_every) sizes the batch instead of
    the scatter, and clears the batch when it is already near or above it.
    """
    noise, jitter = f["batch_noise"], f["epoch_jitter"]
    batch_hit = noise is not None and noise > t.noise_ratio
    epoch_hit = jitter is not None and jitter > t.jitter_ratio
    if not (batch_hit or epoch_hit):
        return None
    lr, opt, lr_ratio = _lr_context(ctx)
    bsize = f["batch_size"] or int(param(ctx, "train.batch_size", 32))
    cv = f["noise_cv_implied"]
    scale = f.get("noise_scale")
    driver = _noise_driver(batch_hit, epoch_hit, cv, lr_ratio, bsize, t)
    at_scale = scale is not None and driver == "batch_size" and bsize * NOISE_SCALE_ROOM >= scale
    if at_scale and epoch_hit:
        driver = "learning_rate"  # the batch is not the knob (measured): the bounce is the step
    rows = ctx.get("train_rows")
    ev = {
        "driver": driver,
        "batch_noise": _r(noise),
        "noise_ratio": t.noise_ratio,
        "epoch_jitter": _r(jitter),
        "jitter_ratio": t.jitter_ratio,
        "threshold_keys": ["diagnose.noise_ratio", "diagnose.jitter_ratio"],
        "epoch_up_share": _r(f["epoch_up_share"]),
        "batch_size": bsize,
        "train_rows": rows,
        "steps_per_epoch": f["steps_per_epoch"],
        "noise_cv_implied": _r(cv),
        "sampling_cv_max": t.sampling_cv_max,
        "learning_rate": lr,
        "optimizer": opt,
        "lr_vs_default": _r(lr_ratio),
        "lr_factor": t.lr_factor,
    }
    if scale is not None:
        ev["noise_scale"] = _r(scale, 1)
        ev["noise_scale_vs_batch"] = _r(scale / bsize, 2)
    ev["why"] = _noise_why(driver, noise, jitter, bsize, cv, lr, opt, lr_ratio, t, scale)
    suggestion = _noise_fix(driver, f, ctx, bsize, noise, lr, opt, t, scale)
    # Mild = batch-level only and within 10% of the threshold: worth knowing, not a warning.
    strong = epoch_hit or (noise is not None and noise >= 1.1 * t.noise_ratio)
    if at_scale and not epoch_hit:
        # Measured: the batch already holds about as many samples as the gradient's noise
        # scale, where a larger one buys few steps. The scatter is the per-sample spread of
        # the loss, which a larger batch would only smooth in the plot.
        strong = False
        suggestion = (
            f"nothing to change: batch {bsize} is {_times(bsize, scale)} the measured noise scale "
            f"≈ {scale:.0f} samples, where a larger batch buys few steps"
        )
    elif driver == "batch_size" and not epoch_hit and not suggestion.startswith("train.batch_size"):
        # Calm epochs, and the batch cannot grow without dropping under 8 steps per epoch:
        # the scatter is the per-sample spread of a small training set, not a setting to fix.
        strong = False
        ev["why"] += "; the batch is already as large as the training set allows (>= 8 steps per epoch)"
        suggestion = (
            "nothing to change: the epoch curve is calm and a larger batch would leave fewer than "
            "8 steps per epoch; more training rows would smooth it"
        )
    elif driver == "batch_size" and not suggestion.startswith("train.batch_size"):
        # The epoch curve bounces and the batch cannot grow: the step is what is left to
        # shrink, so say so rather than blame the batch and then suggest the learning rate.
        ev["why"] += (
            "; a larger batch would leave fewer than 8 steps per epoch, so a smaller step "
            "(learning rate or clipping) is the knob left"
        )
    severity = "warning" if strong else "info"
    return Finding("noisy_loss", severity, ev, suggestion)


# A batch within this factor of the measured noise scale (or above it) is not the knob: at
# B = B_noise / 2 a larger batch saves at most a third of the steps (steps ∝ 1 + B_noise/B).
NOISE_SCALE_ROOM = 2


def _times(bsize: int, scale: float) -> str:
    """How a batch compares with the noise scale, in words: "11x below", "1.6x above"."""
    if bsize >= scale:
        return f"{bsize / scale:.1f}x above" if bsize >= 1.05 * scale else "at"
    return f"{scale / bsize:.{0 if scale / bsize >= 10 else 1}f}x below"


def _noise_driver(
    batch_hit: bool, epoch_hit: bool, cv: float | None, lr_ratio: float, bsize: int, t: DiagnoseParams
) -> str:
    """ "learning_rate" or "batch_size": which knob the evidence points at.

    Learning rate when: it is high for the optimizer and either the epoch curve bounces or
    batch sampling cannot explain the scatter (or there is no batch log to tell); or only
    the epoch curve bounces although batches are not small; or the batch scatter is too
    large for sampling alone and the rate is not already low. Otherwise the batch is the
    likelier knob: noisy batches with a calm epoch curve are sampling noise of small batches.
    """
    sampling_explains = cv is not None and cv <= t.sampling_cv_max
    if lr_ratio >= t.lr_factor and (epoch_hit or not sampling_explains):
        return "learning_rate"
    if epoch_hit and not batch_hit and bsize >= 32:
        return "learning_rate"
    if batch_hit and cv is not None and not sampling_explains and lr_ratio > 1 / t.lr_factor:
        return "learning_rate"
    return "batch_size"


def _noise_why(
    driver: str,
    noise: float | None,
    jitter: float | None,
    bsize: int,
    cv: float | None,
    lr: float,
    opt: str,
    lr_ratio: float,
    t: DiagnoseParams,
    scale: float | None = None,
) -> str:
    if driver == "batch_size" and scale is not None:
        measured = f"noise scale ≈ {scale:.0f} samples (measured); batch {bsize} is {_times(bsize, scale)} it"
        if bsize * NOISE_SCALE_ROOM >= scale:
            return f"{measured}: the loss scatter is per-sample spread, not gradient noise a larger batch removes"
        return (
            f"{measured}: below the noise scale a larger batch takes proportionally fewer steps for the same progress"
        )
    if driver == "batch_size":
        head = f"batch of {bsize}: sampling noise scales ~1/sqrt(batch); implied per-sample spread"
        if cv is None:
            return f"{head} unknown (no batch log or batch size), so the batch is the first knob to try"
        if cv <= t.sampling_cv_max:
            return f"{head} {cv:.2f} <= {t.sampling_cv_max}, so small batches explain the scatter"
        return (
            f"{head} {cv:.2f} > {t.sampling_cv_max}, more than sampling alone gives, but the learning rate is "
            f"already low ({lr_ratio:.3g}x the {opt} default), so a larger batch is the knob left"
        )
    parts = [f"learning rate {show(lr)} is {lr_ratio:.3g}x the {opt} default {show(DEFAULT_LR.get(opt, 1e-3))}"]
    if scale is not None and bsize * NOISE_SCALE_ROOM >= scale:
        parts.append(f"batch {bsize} is {_times(bsize, scale)} the measured noise scale ≈ {scale:.0f} samples")
    if jitter is not None and jitter > t.jitter_ratio:
        parts.append(
            f"epoch loss itself bounces (jitter {jitter:.3g} > {t.jitter_ratio}), which batch sampling "
            "cannot cause since every epoch averages the whole train set"
        )
    if cv is not None and cv > t.sampling_cv_max:
        parts.append(
            f"batch noise would need a per-sample spread of {cv:.3g} > {t.sampling_cv_max} to come from sampling alone"
        )
    return "; ".join(parts)


def _noise_fix(
    driver: str,
    f: Features,
    ctx: dict[str, Any],
    bsize: int,
    noise: float | None,
    lr: float,
    opt: str,
    t: DiagnoseParams,
    scale: float | None = None,
) -> str:
    """Batch: grow it until sampling noise ~ falls under the threshold (noise ∝ 1/sqrt(b)),
    or, measured, up to the noise scale; keeping >= 8 steps per epoch. LR (or no room to
    grow the batch): lower it."""
    rows = int(ctx.get("train_rows") or 0) or int(f["steps_per_epoch"] or 0) * bsize
    if driver == "batch_size" and scale is not None:
        target = _pow2_at_most(scale)
        if rows:
            target = min(target, _pow2_at_most(rows / 8))
        if target > bsize:
            return change("train.batch_size", bsize, target) + (
                f" (noise scale ≈ {scale:.0f} samples; batch {bsize} is {_times(bsize, scale)} it)"
            )
    elif driver == "batch_size":
        factor = (noise / t.noise_ratio) ** 2 * 1.2 if noise else 4.0
        target = _pow2_at_least(max(bsize * factor, bsize * 2))
        if rows:
            target = min(target, _pow2_at_most(rows / 8))
        if target > bsize:
            return (
                change("train.batch_size", bsize, target)
                + f" (noise ∝ 1/sqrt(batch): expect ~{math.sqrt(target / bsize):.1f}x less)"
            )
    return change("train.learning_rate", lr, _lower_lr(lr, opt)) + (
        "" if float(param(ctx, "train.clipnorm", 0.0) or 0) > 0 else f"; or {change('train.clipnorm', 0.0, 1.0)}"
    )


def rule_plateau(f: Features, ctx: dict[str, Any], t: DiagnoseParams, history: pd.DataFrame) -> Finding | None:
    """Loss flat for >= plateau_min_epochs, then a real drop (see symptoms.longest_plateau)."""
    if not f["plateau_length"]:
        return None
    start, length = int(f["plateau_start"]), int(f["plateau_length"])
    lr, opt, lr_ratio = _lr_context(ctx)
    sched_drop = _lr_dropped_at(history, start + length)
    ev = {
        "start_epoch": start,
        "length": length,
        "level": _r(f["plateau_level"]),
        "drop_after": _r(f["plateau_drop"]),
        "chance_loss": _r(f["chance_loss"]),
        "plateau_min_epochs": t.plateau_min_epochs,
        "plateau_rel_change": t.plateau_rel_change,
        "plateau_drop": t.plateau_drop,
        "threshold_keys": ["diagnose.plateau_min_epochs", "diagnose.plateau_rel_change", "diagnose.plateau_drop"],
        "learning_rate": lr,
        "lr_vs_default": _r(lr_ratio),
        "ended_by_lr_schedule": sched_drop,
    }
    chance = f["chance_loss"]
    if chance and abs(f["plateau_level"] - chance) <= 0.05 * chance:
        ev["at_chance"] = True
    ev["message"] = (
        f"the loss sat flat at {f['plateau_level']:.4g}"
        + (" (the chance level)" if ev.get("at_chance") else "")
        + f" for {length} epochs (epochs {start}-{start + length - 1}), then fell {f['plateau_drop']:.0%}: "
        + (
            "the drop follows a learning-rate cut by the schedule"
            if sched_drop
            else f"a larger step shortens such a wait (learning rate {show(lr)} is {lr_ratio:.3g}x the {opt} default)"
        )
    )
    if sched_drop:
        return Finding(
            "plateau",
            "info",
            ev,
            "the drop follows a learning-rate reduction by the schedule; "
            + change("train.learning_rate", lr, _lower_lr(lr, opt))
            + " would reach it sooner",
        )
    fixes = [change("train.learning_rate", lr, _raise_lr(lr, opt))]
    if param(ctx, "train.model.embedding.mask_zero", True) is False:
        fixes.append(change("train.model.embedding.mask_zero", False, True))
    return Finding("plateau", "warning", ev, "; ".join(fixes))


def _lr_dropped_at(history: pd.DataFrame, epoch: int) -> bool:
    """Did a schedule lower the lr within 2 epochs before the drop?"""
    if history is None or "lr" not in history.columns or history.empty:
        return False
    lr = pd.to_numeric(history.sort_values("epoch")["lr"], errors="coerce").to_numpy()
    lo, hi = max(epoch - 2, 1), min(epoch + 1, len(lr) - 1)
    return bool(any(lr[i] < lr[i - 1] * 0.95 for i in range(lo, hi + 1)))


def rule_overfitting(f: Features, ctx: dict[str, Any], t: DiagnoseParams) -> Finding | None:
    """Val loss turns up for good after its minimum while train loss keeps falling."""
    if f["overfit_onset"] is None:
        return None
    ev = {
        "best_val_epoch": f["overfit_onset"],
        "best_val_loss": _r(f["best_val_loss"]),
        "final_val_loss": _r(f["final_val_loss"]),
        "val_rise": _r(f["overfit_rise"]),
        "epochs_above": f["overfit_epochs_above"],
        "train_fall_since": _r(f["overfit_train_fall"]),
        "overfit_rel_rise": t.overfit_rel_rise,
        "overfit_min_epochs": t.overfit_min_epochs,
        "threshold_keys": ["diagnose.overfit_rel_rise", "diagnose.overfit_min_epochs"],
    }
    fixes = []
    drop = float(param(ctx, "train.model.dropout", 0.0) or 0.0)
    rnn_drop = float(param(ctx, "train.model.rnn.dropout", 0.0) or 0.0)
    if drop < 0.3:
        fixes.append(change("train.model.dropout", drop, 0.3))
    elif rnn_drop < 0.2:
        fixes.append(change("train.model.rnn.dropout", rnn_drop, 0.2))
    monitor = str(param(ctx, "train.callbacks.checkpoint_monitor", "") or "")
    guarded = monitor.startswith("val_")
    if not guarded:
        if not param(ctx, "train.callbacks.early_stopping", False):
            fixes.append(change("train.callbacks.early_stopping", False, True))
        fixes.append(change("train.callbacks.checkpoint_monitor", monitor, "val_loss"))
    if not fixes:
        fixes.append(
            f"the best epoch ({f['overfit_onset']}) is kept already; more training rows, "
            "or a smaller model (train.model.rnn.units), would move the minimum later"
        )
    ev["best_weights_kept"] = guarded
    return Finding("overfitting", "info" if guarded else "warning", ev, "; ".join(fixes))


# A single-label head's outputs should add up to 1 per row; beyond this factor either way
# (a row summing to < 0.5 or > 2) they are not a distribution over the classes.
OUTPUT_SUM_FACTOR = 2.0


def rule_saturated(f: Features, ctx: dict[str, Any], t: DiagnoseParams) -> Finding | None:
    """Outputs pinned at 0/1 when the model is not that right (overconfident), or a
    single-label head whose outputs do not sum to 1: all drifting to 0, or independent
    sigmoids adding up to many times 1 (Keras 3 trains a sigmoid head under a categorical
    loss on its logits, as a softmax, so nothing ties the sigmoids' level: it drifts)."""
    sat, acc, mmp = f["saturated_share"], f["final_val_accuracy"], f["mean_max_prob"]
    k = f["n_classes"] or 0
    total = f.get("output_sum")
    single = k >= 2 and not ctx.get("multilabel")
    off = single and total is not None and not (1 / OUTPUT_SUM_FACTOR <= total <= OUTPUT_SUM_FACTOR)
    low = (mmp is not None and single and mmp < 1.0 / k) or off
    high = sat is not None and sat >= t.saturation_share and (acc is None or acc < sat - 0.05)
    if not (low or high):
        return None
    ev = {
        "saturated_share": _r(sat),
        "saturation_share": t.saturation_share,
        "threshold_key": "diagnose.saturation_share",
        "final_val_accuracy": _r(acc),
        "mean_max_prob": _r(mmp),
        "pinned_output_share": _r(f["pinned_output_share"]),
    }
    if total is not None:
        ev["mean_output_sum"] = _r(total)
    if off:
        ev["outputs_not_a_distribution"] = True
        ev["message"] = (
            f"a row's {k} outputs add up to {total:.3g} on average, not 1: the head does not give a "
            "distribution over the classes, so its values cannot be read as class probabilities"
        )
    if low:
        ev["outputs_below_uniform"] = bool(mmp is not None and mmp < 1.0 / k)
        act = str(param(ctx, "train.output_activation", "sigmoid"))
        return Finding(
            "saturated_predictions",
            "warning",
            ev,
            head_mismatch(ctx)
            or (
                change("train.output_activation", act, "softmax")
                if act != "softmax"
                else "a softmax head cannot average below uniform: check that the recorded predictions are this model's"
            ),
        )
    lr, opt, _ = _lr_context(ctx)
    drop = float(param(ctx, "train.model.dropout", 0.0) or 0.0)
    fix = (
        change("train.model.dropout", drop, 0.3)
        if drop < 0.3
        else change("train.learning_rate", lr, _lower_lr(lr, opt))
    )
    return Finding("saturated_predictions", "warning", ev, head_mismatch(ctx) or fix)


def rule_majority_collapse(f: Features, ctx: dict[str, Any], t: DiagnoseParams) -> Finding | None:
    """The model predicts (almost) one class, more often than that class occurs.

    With predictions: top predicted share >= collapse_share and at least halfway from that
    class's true share to 1 (95% predictions of a 95% class is no collapse). Without them:
    val accuracy stuck at the majority share of an imbalanced train set.
    """
    if ctx.get("multilabel"):
        return None
    major = f["majority_share"]
    top = f["pred_top_share"]
    preds = {
        c: float(v) for c, v in ((ctx.get("predictions") or {}).get("pred_class_shares") or {}).items() if v is not None
    }
    k = f["n_classes"] or len(ctx.get("class_shares") or preds)
    ev: dict[str, Any] = {
        "collapse_share": t.collapse_share,
        "threshold_key": "diagnose.collapse_share",
        "majority_share": _r(major),
    }
    if top is not None and preds:
        label = max(preds, key=preds.get)
        true = float((ctx.get("class_shares") or {}).get(label, major or 0.0) or 0.0)
        if top < t.collapse_share or top < true + (1 - true) / 2:
            return None
        ev.update(
            {"basis": "val predictions", "pred_top_share": _r(top), "top_class": label, "top_class_share": _r(true)}
        )
    else:
        acc = f["final_val_accuracy"]
        if major is None or acc is None or k < 2 or major < 1.5 / k or abs(acc - major) > 0.01:
            return None
        ev.update({"basis": "val accuracy equals the majority share", "final_val_accuracy": _r(acc)})
    weight = str(param(ctx, "train.class_weight", "none"))
    lr, opt, _ = _lr_context(ctx)
    fix = (
        change("train.class_weight", weight, "balanced")
        if (major or 0) * max(k, 1) >= 1.5 and weight != "balanced"
        else change("train.learning_rate", lr, _lower_lr(lr, opt))
    )
    return Finding("majority_collapse", "warning", ev, fix)


def rule_monitors_val_metric(history: pd.DataFrame, ctx: dict[str, Any], t: DiagnoseParams) -> Finding | None:
    """The weights kept (a best-only checkpoint, or early stopping that restores) are picked
    by a val metric other than val loss, e.g. val_accuracy.

    Accuracy moves in steps of one val row and ignores confidence, so on a shaking curve
    its best epoch is partly chance, and it need not be the epoch the val loss calls best:
    the model kept is then not the one the loss curve shows. Warning when the kept epoch's
    val loss is `overfit_rel_rise` or more above the best val loss; info when the two agree
    on this run (the choice still ties the kept model to the noisier statistic).
    """
    monitor = str(param(ctx, "train.callbacks.checkpoint_monitor", "") or "")
    if not monitor.startswith("val_") or monitor == "val_loss" or history is None:
        return None
    if monitor not in history.columns or "val_loss" not in history.columns:
        return None
    mode = _monitor_mode(monitor, ctx)
    frame = history.sort_values("epoch")
    watched = pd.to_numeric(frame[monitor], errors="coerce").to_numpy(dtype=float)
    val_loss = pd.to_numeric(frame["val_loss"], errors="coerce").to_numpy(dtype=float)
    if mode is None or not np.isfinite(watched).any() or not np.isfinite(val_loss).any():
        return None
    epochs = frame["epoch"].to_numpy()
    kept = int(np.nanargmax(watched) if mode == "max" else np.nanargmin(watched))  # first best, as Keras keeps
    best = int(np.nanargmin(val_loss))
    excess = float(val_loss[kept] / val_loss[best] - 1.0) if val_loss[best] > 0 else 0.0
    ev = {
        "monitor": monitor,
        "mode": mode,
        "kept_epoch": int(epochs[kept]),
        "kept_monitor_value": _r(watched[kept]),
        "kept_val_loss": _r(val_loss[kept]),
        "best_val_loss_epoch": int(epochs[best]),
        "best_val_loss": _r(val_loss[best]),
        "val_loss_excess": _r(excess),
        "overfit_rel_rise": t.overfit_rel_rise,
        "threshold_key": "diagnose.overfit_rel_rise",
    }
    differs = kept != best and excess >= t.overfit_rel_rise
    if differs:
        ev["message"] = (
            f"{monitor} picks the weights kept (epoch {epochs[kept]}), whose val loss {val_loss[kept]:.4g} is "
            f"{excess:.0%} above the best val loss {val_loss[best]:.4g} (epoch {epochs[best]}): the model kept "
            "is not the one the loss curve calls best"
        )
    else:
        ev["message"] = (
            f"{monitor} picks the weights kept (epoch {epochs[kept]}; best val loss at epoch {epochs[best]}, "
            f"{excess:.0%} apart): on this run they agree, but {monitor} moves in steps of one val row and "
            "ignores confidence, so on a shaking curve its best epoch is partly chance"
        )
    return Finding(
        "monitors_val_metric",
        "warning" if differs else "info",
        ev,
        change("train.callbacks.checkpoint_monitor", monitor, "val_loss"),
    )


_HIGHER_IS_BETTER = ("acc", "auc", "precision", "recall", "f1")


def _monitor_mode(monitor: str, ctx: dict[str, Any]) -> str | None:
    """min or max: the callback's own mode when a script recorded it, else from the name
    (as Keras' "auto" does for the metrics it knows); None when the name does not say."""
    params = ctx.get("params") or {}
    for key, value in params.items():
        if key.startswith("fit.callbacks.") and key.endswith(".monitor") and str(value) == monitor:
            mode = str(params.get(key.removesuffix(".monitor") + ".mode", "auto"))
            if mode in ("min", "max"):
                return mode
    name = monitor.removeprefix("val_").lower()
    if "loss" in name or "error" in name:
        return "min"
    return "max" if any(word in name for word in _HIGHER_IS_BETTER) else None


# ---------------------------------------------------------------- entry points


def diagnose_curves(
    history: pd.DataFrame,
    batches: pd.DataFrame | None,
    context: dict[str, Any],
    thresholds: DiagnoseParams | None = None,
) -> list[Finding]:
    """All curve findings of one run, most severe first.

    A run that reached NaN/inf is judged on diverged and the prediction rules only:
    plateaus and noise on a NaN curve say nothing. When the run is not learning, or
    exploded and recovered, noise is demoted to info: blocks of one label (or the
    explosion) make the loss swing, and the fix is the cause, not the batch.
    """
    t = thresholds or DiagnoseParams()
    f = curve_features(history, batches, context, t)
    found = findings_from_features(f, history, context, t)
    # Not curve behaviour (diff leaves it out): which epoch's weights the user keeps.
    monitor = rule_monitors_val_metric(history, context, t)
    return sorted(found + ([monitor] if monitor else []), key=lambda x: SEVERITIES.index(x.severity))


def diagnose_training(
    history: pd.DataFrame,
    batches: pd.DataFrame,
    dynamics: pd.DataFrame,
    context: dict[str, Any],
    thresholds: DiagnoseParams,
    divergence: Any = None,
    learning_rate: float = 1e-3,
) -> list[Finding]:
    """Curve findings at the end of a training, with what only the training saw.

    divergence: where the loss first went NaN/inf (epoch, batch, loss), when the training
    stopped on it: the history ends early, so the curves alone may not show it.
    The dynamics rows are gradient-norm evidence for `diverged`."""
    curve = diagnose_curves(history, batches, {**context, "grad_norms": dynamics}, thresholds)
    if divergence is None or any(f.code == "diverged" for f in curve):
        return curve
    d = divergence
    lr = learning_rate
    evidence = {"epoch": d.epoch, "batch": d.batch, "loss": str(d.loss), **gradient_evidence(dynamics)}
    return [*curve, Finding("diverged", "error", evidence, f"train.learning_rate: {lr:g} → {lr / 10:g}")]


def findings_from_features(
    f: Features, history: pd.DataFrame, context: dict[str, Any], t: DiagnoseParams
) -> list[Finding]:
    """The rules applied to precomputed features (diff reuses the features it already has)."""
    out: list[Finding] = []
    div = rule_diverged(f, context, t)
    if div:
        out.append(div)
    if div is None or div.severity != "error":
        stuck = rule_not_learning(f, context, t)
        out += [x for x in (stuck,) if x]
        noisy = rule_noisy_loss(f, context, t)
        # The swings have a cause already reported: label blocks (not learning), or the
        # explosion the run recovered from, which dominates the scatter and has the same fix.
        primary = stuck or div
        if noisy and primary:
            noisy = Finding(noisy.code, "info", {**noisy.evidence, "secondary_to": primary.code}, noisy.suggestion)
        out += [x for x in (noisy, rule_plateau(f, context, t, history), rule_overfitting(f, context, t)) if x]
    out += [x for x in (rule_saturated(f, context, t), rule_majority_collapse(f, context, t)) if x]
    return sorted(out, key=lambda x: SEVERITIES.index(x.severity))


def merge_findings(
    data_findings: Iterable[Finding | dict[str, Any]],
    lint_findings: Iterable[Finding | dict[str, Any]],
    curve_findings: Iterable[Finding | dict[str, Any]],
    run_id: str = "",
) -> dict[str, Any]:
    """The diagnose JSON: `{"run_id", "findings": [...]}`, errors, then warnings, then info.

    Within a severity the order is data, lint, curve and each list's own order (stable),
    because upstream causes (grouped rows, a wrong head) explain downstream curves.
    An exact repeat (same code, where and severity) is kept once.
    """
    merged: list[dict[str, Any]] = []
    seen: set[tuple[str, str, str]] = set()
    for group in (data_findings, lint_findings, curve_findings):
        for item in group or ():
            d = item.to_dict() if isinstance(item, Finding) else dict(item)
            key = (d.get("code", ""), d.get("where", ""), d.get("severity", ""))
            if key in seen:
                continue
            seen.add(key)
            merged.append(d)
    merged.sort(key=lambda d: SEVERITIES.index(d["severity"]) if d.get("severity") in SEVERITIES else len(SEVERITIES))
    return {"run_id": run_id, "findings": merged}
