"""Scale-free features of a loss curve: the numbers the diagnosis rules and `diff` reason with.

Every feature is relative to the curve's own scale (its initial loss, its chance level
ln K, its trend) or counted in epochs, so one threshold holds for a 9-class vowel
task at loss 2.2 and a binary sentiment task at 0.69, for 10 epochs or 1000.

Pure numpy/pandas: no TensorFlow, no MLflow (`losstrace diff` must answer in ~1 s).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from losstrace.params import DiagnoseParams, parse_value
from losstrace.record import contract

Feature = float | int | None

# Usual default learning rate per optimizer: the reference for "high" and "low" rates.
# Keras' defaults for the adaptive ones; plain SGD conventionally runs ~10x higher.
DEFAULT_LR = {"adam": 1e-3, "adamw": 1e-3, "rmsprop": 1e-3, "sgd": 1e-2}

# Robust std of a normal sample = 1.4826 * its median absolute deviation.
_MAD_TO_STD = 1.4826


# ---------------------------------------------------------------- small helpers


def param(context: dict[str, Any], key: str, default: Any = None) -> Any:
    """A params value from the context, parsed from MLflow's strings when needed."""
    value = (context.get("params") or {}).get(key, default)
    return parse_value(value)


def _num(value: Any) -> float | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _column(frame: pd.DataFrame | None, name: str) -> np.ndarray:
    """A column as float array (all-NaN when absent), in epoch/step order."""
    if frame is None or frame.empty or name not in frame.columns:
        return np.full(0 if frame is None else len(frame), np.nan)
    return pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=float)


def _sorted(frame: pd.DataFrame | None, key: str) -> pd.DataFrame:
    if frame is None or frame.empty:
        return pd.DataFrame()
    return frame.sort_values(key, kind="stable").reset_index(drop=True) if key in frame.columns else frame


def _last_finite(values: np.ndarray) -> float | None:
    finite = values[np.isfinite(values)]
    return float(finite[-1]) if finite.size else None


def _round(x: Any, digits: int = 6) -> Any:
    """JSON-friendly: python floats rounded, numpy scalars unwrapped, NaN → None."""
    if x is None or isinstance(x, (bool, np.bool_)):
        return None if x is None else bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    f = float(x)
    return round(f, digits) if math.isfinite(f) else None


# ---------------------------------------------------------------- reference levels


def chance_loss(context: dict[str, Any]) -> float | None:
    """The loss of an untrained model that outputs uniform probabilities.

    Single-label: ln K (K=2 gives ln 2, the binary sigmoid case too). Multi-label with a
    binary cross-entropy per label: the mean binary entropy of the label shares, i.e. the
    loss of predicting each label's frequency, the best a model can do without the input.
    """
    shares = [s for s in (_num(v) for v in (context.get("class_shares") or {}).values()) if s is not None]
    if context.get("multilabel"):
        if not shares:
            return math.log(2)
        return float(np.mean([_binary_entropy(s) for s in shares]))
    k = int(context.get("n_classes") or len(shares) or 0)
    return math.log(k) if k >= 2 else None


def prior_loss(context: dict[str, Any]) -> float | None:
    """The loss of a model that learned only the class frequencies (entropy of the shares).

    Equal to ln K for balanced classes; lower when one class dominates. A loss that never
    gets below it has learned nothing from the inputs.
    """
    if context.get("multilabel"):
        return chance_loss(context)
    shares = np.array([s for s in (_num(v) for v in (context.get("class_shares") or {}).values()) if s and s > 0])
    if shares.size < 2:
        return chance_loss(context)
    shares = shares / shares.sum()
    return float(-(shares * np.log(shares)).sum())


def val_prior_loss(context: dict[str, Any]) -> float | None:
    """The val loss of the best model that ignores the inputs, fitted on train.

    That model predicts train's class shares (uniform ones under `train.class_weight:
    balanced`, which weighs the classes equal), so on val it scores the cross-entropy of
    val's shares against them. It equals `prior_loss` when val is stratified like train,
    and is the fair bar when it is not (multi-label splits, where rare label combinations
    stay in train, or an official test split). None without val shares (older runs).
    """
    val = {k: _num(v) for k, v in (context.get("val_class_shares") or {}).items()}
    train = {k: _num(v) for k, v in (context.get("class_shares") or {}).items()}
    if not val or not train:
        return None
    eps = 1e-7  # a val class train never saw would cost log(0): validate stops that case first
    if context.get("multilabel"):
        terms = [
            -(
                v * math.log(min(max(train.get(k) or 0.0, eps), 1 - eps))
                + (1 - v) * math.log(1 - min(max(train.get(k) or 0.0, eps), 1 - eps))
            )
            for k, v in val.items()
            if v is not None
        ]
        return float(np.mean(terms)) if terms else None
    if param(context, "train.class_weight", "none") == "balanced":
        predicted = {k: 1.0 / len(train) for k in train}
    else:
        total = sum(v for v in train.values() if v) or 1.0
        predicted = {k: (v or 0.0) / total for k, v in train.items()}
    return float(-sum(v * math.log(max(predicted.get(k, 0.0), eps)) for k, v in val.items() if v))


def _binary_entropy(p: float) -> float:
    if p <= 0 or p >= 1:
        return 0.0
    return float(-(p * math.log(p) + (1 - p) * math.log(1 - p)))


def majority_share(context: dict[str, Any]) -> float | None:
    """Share of the most frequent training class: the accuracy of always guessing it."""
    shares = [s for s in (_num(v) for v in (context.get("class_shares") or {}).values()) if s is not None]
    if not shares or context.get("multilabel"):
        return None
    return max(shares) / (sum(shares) or 1.0)


def initial_loss(history: pd.DataFrame, batches: pd.DataFrame) -> float | None:
    """The loss before learning: mean of the first few recorded batches.

    The epoch-0 value Keras reports is a running mean over the first epoch, so it already
    includes learning; the first batches are the untrained model. k = a tenth of an epoch,
    at least 3 and at most 32 batches: enough to average small-batch scatter, few enough
    that learning has barely started. Without batches the epoch-0 loss is the stand-in.
    """
    b = _sorted(batches, "step")
    if not b.empty:
        per_epoch = int(b.groupby("epoch").size().max()) if "epoch" in b.columns else len(b)
        k = int(min(max(per_epoch // 10, 3), 32))
        first = _column(b, "loss")[:k]
        first = first[np.isfinite(first)]
        if first.size:
            return float(np.mean(first))
    return _last_finite(_column(_sorted(history, "epoch"), "loss")[:1])


# ---------------------------------------------------------------- batch-level noise


def steps_per_epoch(batches: pd.DataFrame, context: dict[str, Any]) -> int | None:
    """Batches per epoch: counted from the batch log, else ceil(train_rows / batch_size)."""
    if batches is not None and not batches.empty and "epoch" in batches.columns:
        return int(batches.groupby("epoch").size().median())
    rows, size = _num(context.get("train_rows")), _num(context.get("batch_size"))
    return int(math.ceil(rows / size)) if rows and size else None


def noise_residuals(batches: pd.DataFrame, floor: float, steps: int | None) -> np.ndarray | None:
    """Per-batch loss residuals around their own trend, relative to the trend, while learning.

    Trend = centred rolling median over about one epoch of steps (at least 9, at most
    101), so it follows the descent but not the batch-to-batch scatter. Only steps whose
    trend is still above `floor` (a share of the initial loss) count: once a model has
    converged to ~0 every batch is ~0, and a run that converges sooner (more updates, e.g.
    a smaller batch) would otherwise look calmer. If fewer than 20 steps are above the
    floor, all steps count, each measured against max(trend, floor). The last, smaller
    batch of an epoch (size < half the usual) is left out: it is noisier by construction.
    """
    b = _sorted(batches, "step")
    if b.empty:
        return None
    loss = _column(b, "loss")
    keep = np.isfinite(loss)
    sizes = _column(b, "size")
    if np.isfinite(sizes).any():
        keep &= ~(sizes < 0.5 * np.nanmedian(sizes))
    loss = loss[keep]
    if loss.size < 20:
        return None
    window = int(min(max(steps or 9, 9), 101)) | 1  # odd, centred
    trend = pd.Series(loss).rolling(window, center=True, min_periods=1).median().to_numpy()
    learning = trend >= floor
    if learning.sum() >= 20:
        return (loss[learning] - trend[learning]) / trend[learning]
    return (loss - trend) / np.maximum(trend, floor)


def batch_noise(rel: np.ndarray) -> float:
    """Std of the relative per-batch residuals (see noise_residuals), as the eye sees it.

    Spikes count, but residuals beyond 5 robust sigmas are clipped so one wild batch
    cannot dominate. Sampling alone makes this ~ (per-sample loss CV) / sqrt(batch size).
    """
    centre = np.median(rel)
    sigma = _MAD_TO_STD * np.median(np.abs(rel - centre))
    clipped = np.clip(rel - centre, -5 * sigma, 5 * sigma) if sigma > 0 else rel - centre
    return float(np.sqrt(np.mean(clipped**2)))


# ---------------------------------------------------------------- epoch-level shape


def decreasing_fit(y: np.ndarray) -> np.ndarray:
    """Closest never-increasing sequence to y in least squares (pool-adjacent-violators).

    A training loss under a fixed objective should not go up from epoch to epoch;
    what the best non-increasing curve cannot explain is jitter.
    """
    means: list[float] = []
    counts: list[int] = []
    for v in y:
        means.append(float(v))
        counts.append(1)
        while len(means) > 1 and means[-2] < means[-1]:
            m2, c2 = means.pop(), counts.pop()
            m1, c1 = means.pop(), counts.pop()
            means.append((m1 * c1 + m2 * c2) / (c1 + c2))
            counts.append(c1 + c2)
    return np.repeat(means, counts)


def epoch_jitter(loss: np.ndarray, floor: float) -> float | None:
    """RMS departure of the epoch train loss from its best never-increasing fit, / level.

    Zero for any smooth decreasing curve whatever its speed; grows when epochs bounce up
    and down. Epoch means average over the whole training set, so this is the optimizer's
    own oscillation (learning rate too high for the batch size), not batch sampling noise.
    """
    y = loss[np.isfinite(loss)]
    if y.size < 4:
        return None
    fit = decreasing_fit(y)
    return float(np.sqrt(np.mean(((y - fit) / np.maximum(fit, floor)) ** 2)))


def val_noise(val: np.ndarray, floor: float) -> float | None:
    """Robust std of val loss around its 5-epoch rolling median, / level.

    A small val set makes val loss scatter from epoch to epoch; how
    much it does sets how far two runs' val losses can differ by chance alone.
    """
    y = val[np.isfinite(val)]
    if y.size < 6:
        return None
    trend = pd.Series(y).rolling(5, center=True, min_periods=1).median().to_numpy()
    rel = (y - trend) / np.maximum(trend, floor)
    return float(_MAD_TO_STD * np.median(np.abs(rel - np.median(rel))))


def epoch_moves(loss: np.ndarray, floor: float, flat: float) -> tuple[float | None, float | None]:
    """(share of epochs whose loss rose by more than `flat` of its level, mean |Δ| / level)."""
    y = loss[np.isfinite(loss)]
    if y.size < 2:
        return None, None
    rel = np.diff(y) / np.maximum(y[:-1], floor)
    return float(np.mean(rel > flat)), float(np.mean(np.abs(rel)))


def falling_tail(curve: np.ndarray, floor: float, flat: float) -> int:
    """How many of the last epoch-to-epoch changes are each a fall of more than `flat` of
    the level, counted back from the last epoch: a curve still descending when the run
    stopped (the level it reached says how short the run was, not that it is stuck)."""
    y = curve[np.isfinite(curve)]
    count = 0
    for prev, cur in zip(y[-2::-1], y[:0:-1], strict=True):
        if prev - cur <= flat * max(prev, floor):
            break
        count += 1
    return count


def longest_plateau(
    loss: np.ndarray, floor: float, flat: float, min_epochs: int, drop: float
) -> dict[str, float | int] | None:
    """The longest flat stretch that is followed by a real drop, or None.

    Flat: every epoch-to-epoch change is below `flat` of the level AND the loss stays
    within drop/2 of where the stretch began (so a long, slow but steady descent is not
    "flat"). Followed by a drop: within the next max(length, min_epochs) epochs the loss
    falls at least `drop` below the stretch's median level (the caller raises `drop` to
    3x the epoch jitter on bouncing curves, where one bounce can fall 20 %). A flat tail with nothing
    after it is convergence, not a plateau. The curve is first smoothed by a 3-epoch
    rolling median, which keeps the step at the plateau's end but not one-epoch wobbles.
    Returns start epoch (0-based index), length (epochs), level and the relative drop.
    """
    y = pd.Series(np.asarray(loss, dtype=float)).rolling(3, center=True, min_periods=1).median().to_numpy()
    n = y.size
    best: dict[str, float | int] | None = None
    s = 0
    while s < n - min_epochs:
        if not np.isfinite(y[s]):
            s += 1
            continue
        e = s
        while e + 1 < n and np.isfinite(y[e + 1]):
            lvl = max(y[s], floor)
            step_ok = abs(y[e + 1] - y[e]) < flat * max(y[e], floor)
            drift_ok = abs(y[e + 1] - y[s]) <= 0.5 * drop * lvl
            if not (step_ok and drift_ok):
                break
            e += 1
        length = e - s + 1
        if length >= min_epochs and (best is None or length > best["length"]):
            level = float(np.median(y[s : e + 1]))
            after = y[e + 1 : e + 1 + max(length, min_epochs)]
            after = after[np.isfinite(after)]
            if after.size:
                fall = (level - float(after.min())) / max(level, floor)
                if fall >= drop:
                    best = {"start": s, "length": length, "level": level, "drop": fall}
        s += 1 if length < min_epochs else max(1, length // 2)
    return best


def overfit_onset(
    loss: np.ndarray,
    val: np.ndarray,
    floor: float,
    rise: float,
    min_epochs: int,
    learned_below: float | None,
    flat: float,
) -> dict[str, float | int] | None:
    """Where val loss turns up for good while train loss keeps falling, or None.

    On a 3-epoch rolling median of val loss (one noisy val epoch is not overfitting):
    its minimum at epoch e*, then at least `min_epochs` later epochs more than `rise`
    above that minimum (relative to max(min, floor)), while the train loss at the end is
    still lower than at e* by more than `flat`. The minimum must be below
    `learned_below` (the prior loss, less a margin): a val loss that never beat the class
    frequencies did not learn and then overfit, it never learned.
    """
    if val.size < min_epochs + 2 or not np.isfinite(val).any():
        return None
    smooth = pd.Series(val).rolling(3, center=True, min_periods=1).median().to_numpy()
    if not np.isfinite(smooth).any():
        return None
    e = int(np.nanargmin(smooth))
    vmin = float(smooth[e])
    if learned_below is not None and vmin >= learned_below:
        return None
    threshold = vmin + rise * max(vmin, floor)
    later = smooth[e + 1 :]
    above = int(np.sum(later[np.isfinite(later)] > threshold))
    train_then, train_end = loss[e] if e < loss.size else np.nan, _last_finite(loss)
    if above < min_epochs or not np.isfinite(train_then) or train_end is None:
        return None
    if train_end >= train_then - flat * max(train_then, floor):
        return None
    final = _last_finite(smooth)
    return {
        "epoch": e,
        "min_val_loss": vmin,
        "epochs_above": above,
        "val_rise": (float(np.nanmax(later)) - vmin) / max(vmin, floor),
        "final_val_rise": ((final or vmin) - vmin) / max(vmin, floor),
        "train_fall_since": (float(train_then) - train_end) / max(float(train_then), floor),
    }


def epochs_to_reach(loss: np.ndarray, target: float) -> int | None:
    """Number of epochs trained until the epoch loss first got to `target` or below."""
    hits = np.nonzero(np.isfinite(loss) & (loss <= target))[0]
    return int(hits[0]) + 1 if hits.size else None


def divergence(
    history: pd.DataFrame, batches: pd.DataFrame, init: float | None, factor: float, steps: int | None
) -> dict[str, Any]:
    """NaN/inf anywhere, or a train loss trend above `factor` x the initial loss.

    Only train loss can explode: a val loss may legitimately soar when an overfit model
    is confidently wrong. Per-batch losses are judged on their rolling-median trend, since
    one batch of 4 confidently wrong samples can spike far above the start harmlessly.
    """
    h = _sorted(history, "epoch")
    b = _sorted(batches, "step")
    epochs = _column(h, "epoch")
    out: dict[str, Any] = {"diverged": False, "first_nonfinite_epoch": None, "max_loss_ratio": None, "recovered": None}
    bad_epochs: list[float] = []
    for name in ("loss", "val_loss"):
        col = _column(h, name)
        # An all-NaN val column is a run without validation (the history keeps the column).
        if name in h.columns and not (name == "val_loss" and np.isnan(col).all()):
            bad_epochs += list(epochs[~np.isfinite(col)])
    bl = _column(b, "loss")
    if bl.size:
        bad_epochs += list(_column(b, "epoch")[~np.isfinite(bl)])
    if bad_epochs:
        out["diverged"] = True
        out["first_nonfinite_epoch"] = int(np.nanmin(bad_epochs)) if np.isfinite(bad_epochs).any() else 0
    if init and init > 0:
        peaks = [_column(h, "loss")]
        if bl.size >= 9:
            w = int(min(max(steps or 9, 9), 101)) | 1
            peaks.append(pd.Series(bl).rolling(w, center=True, min_periods=1).median().to_numpy())
        finite = np.concatenate([p[np.isfinite(p)] for p in peaks])
        if finite.size:
            out["max_loss_ratio"] = float(finite.max() / init)
            if out["max_loss_ratio"] > factor:
                out["diverged"] = True
    if out["diverged"]:
        last = _last_finite(_column(h, "loss"))
        tail_ok = len(h) > 0 and np.isfinite(_column(h, "loss")[-1:]).all()
        out["recovered"] = bool(tail_ok and last is not None and init is not None and last <= init)
    return out


# ---------------------------------------------------------------- measured noise scale


def measured_noise_scale(history: pd.DataFrame | None, floor: float | None = None) -> dict[str, float | int] | None:
    """The run's gradient noise scale B_simple from the history's per-epoch estimates
    (train.noise_scale_every > 0), or None when it was not measured.

    The ratio of the epochs' mean tr(Σ) to their mean |G|² (each epoch counts once): the
    paper's ratio of means, never a mean of per-epoch ratios, which a near-zero |G|² in one
    late epoch would blow up. Given the level `floor`, only epochs whose train loss is still
    above it count (all of them if none measured there), as for `batch_noise`: B_simple
    grows as a model converges and |G| shrinks (the Japanese Vowels LSTM at batch 32: ~25
    in its first epochs, ~600 pooled over 30 epochs, most of them converged), and the batch
    advice is about the noise while learning. None too when the mean |G|² is not positive:
    the measurements were too few to resolve the signal under the noise.
    """
    if history is None or history.empty or contract.NOISE_TRACE not in history.columns:
        return None
    h = _sorted(history, "epoch")
    trace, g2 = _column(h, contract.NOISE_TRACE), _column(h, contract.NOISE_SIGNAL)
    seen = np.isfinite(trace) & np.isfinite(g2)
    if floor is not None:
        learning = seen & (_column(h, "loss") > floor)
        seen = learning if learning.any() else seen
    if not seen.any() or float(np.mean(g2[seen])) <= 0:
        return None
    t, g = float(np.mean(trace[seen])), float(np.mean(g2[seen]))
    return {"b_simple": _round(t / g, 4), "tr_sigma": _round(t), "g2": _round(g), "epochs": int(seen.sum())}


def noise_scale_context(
    history: pd.DataFrame | None, batches: pd.DataFrame | None, floor_share: float
) -> dict[str, Any]:
    """`{"noise_scale": {...}}` for a run's context when its training measured it (the
    prescription sizes the batch from it; the same epochs as `curve_features`' noise_scale),
    else nothing: unmeasured contexts stay as they were."""
    init = initial_loss(_sorted(history, "epoch"), _sorted(batches, "step"))
    measured = measured_noise_scale(history, floor_share * init if init and init > 0 else None)
    return {"noise_scale": measured} if measured else {}


# ---------------------------------------------------------------- the feature set


def curve_features(
    history: pd.DataFrame,
    batches: pd.DataFrame | None,
    context: dict[str, Any],
    thresholds: DiagnoseParams | None = None,
) -> dict[str, Feature]:
    """All scale-free features of one run's curves.

    Keys (None when the data to compute it is missing):
      epochs, steps_per_epoch, batch_size, n_classes
      initial_loss       median loss of the first 3 batches (else epoch-0 loss)
      first_epoch_loss   Keras' epoch-0 loss (a running mean over that epoch)
      initial_from_batches  whether initial_loss saw the untrained model (batch log present)
      chance_loss        uniform-output loss: ln K; multi-label: mean binary entropy of shares
      prior_loss         loss of predicting the class frequencies (entropy of the shares)
      val_prior_loss     val loss of that input-blind predictor (val shares scored against train's;
                         uniform under class_weight: balanced); prior_loss without val shares
      level_floor        level_floor_share x initial loss: the denominator floor of every ratio
      final_loss, best_loss, best_epoch, final_val_loss, best_val_loss, best_val_epoch
      loss_drop          1 - best_loss / initial_loss: the share of the start the model removed
      val_vs_prior       best_val_loss / val_prior_loss: ~1 or more = nothing generalises
      batch_noise        std of batch loss around its trend, / trend, while still learning
      batch_noise_steps  how many batches that estimate used (its precision ~ 1/sqrt(n))
      noise_cv_implied   batch_noise * sqrt(batch_size): per-sample spread sampling would need
      epoch_jitter       RMS departure of epoch loss from a never-increasing fit, / level
      epoch_up_share     share of epochs whose train loss rose by > plateau_rel_change
      epoch_mean_abs_change  mean |Δ loss| / level per epoch
      loss_falling_epochs, val_falling_epochs  the last epochs each falling by > plateau_rel_change
                         (counted back from the last epoch: still descending when the run stopped)
      first_val_loss     the first epoch's val loss
      accuracy_range     max - min train accuracy over the epochs
      val_noise          robust std of val loss around its 5-epoch rolling median, / level
      plateau_start, plateau_length, plateau_level, plateau_drop  (longest plateau-then-drop)
      overfit_onset, overfit_rise, overfit_epochs_above, overfit_train_fall
      epochs_to_half     epochs until the loss got halfway from initial to best
      final_accuracy, final_val_accuracy, best_val_accuracy, majority_share
      diverged, first_nonfinite_epoch, max_loss_ratio, recovered
      lr_initial, lr_final, lr_default_ratio (lr / the optimizer's usual default)
      pred_top_share, saturated_share, pinned_output_share, mean_max_prob (val predictions)
      noise_scale        measured gradient noise scale B_simple in samples (train.noise_scale_every),
                         over the epochs still above the level floor
      noise_scale_epochs how many epochs that pooled
      output_sum         mean sum of a row's outputs (1 for a softmax; sigmoids over K classes drift)
    """
    t = thresholds or DiagnoseParams()
    h = _sorted(history, "epoch")
    b = _sorted(batches, "step")
    loss, val = _column(h, "loss"), _column(h, "val_loss")
    init = initial_loss(h, b)
    chance, prior = chance_loss(context), prior_loss(context)
    val_prior = val_prior_loss(context)
    scale = init if init and init > 0 else (chance or 1.0)
    floor = t.level_floor_share * scale
    steps = steps_per_epoch(b, context)
    bsize = _num(context.get("batch_size")) or _num(param(context, "train.batch_size"))

    f: dict[str, Feature] = {
        "epochs": int(len(h)),
        "steps_per_epoch": steps,
        "batch_size": int(bsize) if bsize else None,
        "n_classes": int(context["n_classes"]) if context.get("n_classes") else None,
        "initial_loss": init,
        "first_epoch_loss": _last_finite(loss[:1]),
        "initial_from_batches": bool(not b.empty and np.isfinite(_column(b, "loss")[:3]).any()),
        "chance_loss": chance,
        "prior_loss": prior,
        "level_floor": floor,
        "val_prior_loss": val_prior if val_prior is not None else prior,
    }
    f.update(_levels(loss, val, h, init, f["val_prior_loss"]))
    rel = noise_residuals(b, floor, steps)
    f["batch_noise"] = None if rel is None else batch_noise(rel)
    f["batch_noise_steps"] = None if rel is None else int(rel.size)
    f["noise_cv_implied"] = f["batch_noise"] * math.sqrt(bsize) if f["batch_noise"] is not None and bsize else None
    f["epoch_jitter"] = epoch_jitter(loss, floor)
    f["epoch_up_share"], f["epoch_mean_abs_change"] = epoch_moves(loss, floor, t.plateau_rel_change)

    f["loss_falling_epochs"] = falling_tail(loss, floor, t.plateau_rel_change)
    f["val_falling_epochs"] = falling_tail(val, floor, t.plateau_rel_change)
    f["first_val_loss"] = _last_finite(val[np.isfinite(val)][:1])
    acc = _column(h, "accuracy")
    f["accuracy_range"] = float(np.ptp(acc[np.isfinite(acc)])) if np.isfinite(acc).any() else None

    f["val_noise"] = val_noise(val, floor)
    # On a bouncing curve a 20 % fall can be one bounce: the drop must also beat 3x the jitter.
    needed_drop = max(t.plateau_drop, 3 * (f["epoch_jitter"] or 0.0))
    plat = longest_plateau(loss, floor, t.plateau_rel_change, t.plateau_min_epochs, needed_drop)
    f.update({"plateau_start": None, "plateau_length": 0, "plateau_level": None, "plateau_drop": None})
    if plat:
        f.update({f"plateau_{k}": v for k, v in plat.items()})

    learned_below = prior * (1 - t.not_learning_rel_drop) if prior else None
    ov = overfit_onset(loss, val, floor, t.overfit_rel_rise, t.overfit_min_epochs, learned_below, t.plateau_rel_change)
    f["overfit_onset"] = ov["epoch"] if ov else None
    f["overfit_rise"] = ov["final_val_rise"] if ov else None
    f["overfit_epochs_above"] = ov["epochs_above"] if ov else None
    f["overfit_train_fall"] = ov["train_fall_since"] if ov else None

    best = f["best_loss"]
    f["epochs_to_half"] = (
        epochs_to_reach(loss, init - 0.5 * (init - best))
        if init is not None and best is not None and best < init
        else None
    )
    f.update(_accuracy(h, context))
    f.update(divergence(h, b, init, t.explode_factor, steps))
    f.update(_learning_rate(h, context))
    f.update(_predictions(context))
    measured = measured_noise_scale(h, floor)
    f["noise_scale"] = measured["b_simple"] if measured else None
    f["noise_scale_epochs"] = measured["epochs"] if measured else None
    return {k: _round(v) if isinstance(v, (float, np.floating)) else v for k, v in f.items()}


def _levels(
    loss: np.ndarray, val: np.ndarray, h: pd.DataFrame, init: float | None, prior: float | None
) -> dict[str, Feature]:
    """Final and best train/val loss and where the best fell."""
    out: dict[str, Feature] = {"final_loss": _last_finite(loss), "final_val_loss": _last_finite(val)}
    epochs = _column(h, "epoch")
    for name, col in (("", loss), ("val_", val)):
        ok = np.isfinite(col)
        if ok.any():
            i = int(np.nanargmin(np.where(ok, col, np.nan)))
            out[f"best_{name}loss"] = float(col[i])
            out[f"best_{name}epoch"] = int(epochs[i]) if np.isfinite(epochs[i]) else i
        else:
            out[f"best_{name}loss"] = out[f"best_{name}epoch"] = None
    best = out["best_loss"]
    out["loss_drop"] = 1 - best / init if best is not None and init else None
    bv = out["best_val_loss"]
    out["val_vs_prior"] = bv / prior if bv is not None and prior else None
    return out


def _accuracy(h: pd.DataFrame, context: dict[str, Any]) -> dict[str, Feature]:
    acc, vacc = _column(h, "accuracy"), _column(h, "val_accuracy")
    return {
        "final_accuracy": _last_finite(acc),
        "final_val_accuracy": _last_finite(vacc),
        "best_val_accuracy": float(np.nanmax(vacc)) if np.isfinite(vacc).any() else None,
        "majority_share": majority_share(context),
    }


def _learning_rate(h: pd.DataFrame, context: dict[str, Any]) -> dict[str, Feature]:
    lr = _column(h, "lr")
    configured = _num(param(context, "train.learning_rate"))
    first = float(lr[np.isfinite(lr)][0]) if np.isfinite(lr).any() else configured
    default = DEFAULT_LR.get(str(param(context, "train.optimizer", "adam")).lower())
    return {
        "lr_initial": first,
        "lr_final": _last_finite(lr) if np.isfinite(lr).any() else configured,
        "lr_default_ratio": first / default if first and default else None,
    }


def _predictions(context: dict[str, Any]) -> dict[str, Feature]:
    p = context.get("predictions") or {}
    shares = {k: _num(v) for k, v in (p.get("pred_class_shares") or {}).items()}
    shares = {k: v for k, v in shares.items() if v is not None}
    return {
        "pred_top_share": max(shares.values()) if shares else None,
        "saturated_share": _num(p.get("max_prob_share_above_0_99")),
        "pinned_output_share": _num(p.get("pinned_output_share")),
        "mean_max_prob": _num(p.get("mean_max_prob")),
        "output_sum": _num(p.get("mean_output_sum")),
    }
