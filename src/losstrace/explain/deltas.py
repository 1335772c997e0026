"""What changed between two runs: params, data fingerprint, environment and curve behaviour.

Each comparison yields plain entries (a params key, a data aspect, an `env.<package>`, a
curve feature); `diff.py` then asks the catalogue in `mechanisms.py` which of the changes
explains the behaviour that moved.

Behaviour differences smaller than seed-to-seed variation (the tolerances below) are not
changes at all: a `Delta` is material only when its effect reaches 1 (one tolerance).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from losstrace.params import parse_value
from losstrace.record.run_record import RunRecord

# ---------------------------------------------------------------- seed-to-seed tolerances
# Differences below these are what re-running the same config with another seed does;
# a behaviour change must exceed them to count (docs/diagnosis.md, "diff").
RATIO_TOL = 1.3  # noise / jitter ratios: b/a outside [1/1.3, 1.3]
RATIO_EPS = {"batch_noise": 0.02, "epoch_jitter": 0.01}  # absolute floor: 0.001 vs 0.002 is no change
LOSS_TOL = 0.15  # loss levels: |Δ| > 15% of the larger value (floored at 10% of the initial loss),
#                  or > 2.5x the run's own epoch jitter / val noise when that is larger
SHARE_TOL = 0.05  # accuracies and prediction shares: |Δ| > 5 points
OUTPUT_SUM_TOL = 1.5  # a row's mean output sum: b/a outside [1/1.5, 1.5]
RISE_TOL = 0.15  # val rise after its best (relative to the best): |Δ| > 0.15 and > 15% of the larger
EPOCH_TOL_SHARE = 0.1  # epoch counts: |Δ| > max(2, 10% of the run length), widened on jittery runs
BALANCE_TOL = 0.03  # class shares: a label's share moves > 3 points
LENGTH_TOL = 0.1  # sequence length percentiles: > 10% relative

# Params that cannot change training dynamics (or that the data section reports).
_FINGERPRINT_PARAM = re.compile(r"^data\.label_map_hash$|^data\.[^.]+\.(rows|content_hash|ordered_hash|clustered)$")
# fit.callbacks.*: a script's callback settings as given, whose meaning the train.callbacks.* keys carry.
_IMMATERIAL_PREFIXES = ("evaluate.", "diagnose.", "fit.callbacks")
# train.probe_batches: a retired key (batch losses are always recorded) that older runs carry.
# train.noise_scale_every: measuring the noise scale holds every update it takes back (tested).
# model.name: a script's model name, which Keras numbers for every model built (sequential_1, ...).
_IMMATERIAL_KEYS = {"base.seed", "train.metrics", "train.probe_batches", "train.noise_scale_every", "model.name"}
# A script's one-line layer summary and parameter count restate its layer settings: a cause of
# their own only when no layer setting with a key of its own changed (e.g. a Dense layer added).
_SUMMARY_KEYS = {"model.layers", "model.params"}
# A script's learning-rate schedule settings (decay steps, plateau factor, ...): causes of their
# own only when the schedule itself (train.lr_schedule) is the same in both runs.
_SCHEDULE_SETTINGS = "lr_schedule."

_SPLIT_ORDER = ("train", "val", "test")


@dataclass
class Delta:
    """One behaviour feature compared; `effect` is |change| in units of its seed tolerance."""

    feature: str
    a: Any
    b: Any
    change: str
    effect: float
    direction: int  # +1: b higher / appeared; -1: b lower / gone
    ratio: float | None = None

    @property
    def material(self) -> bool:
        return self.effect >= 1.0

    def to_dict(self) -> dict[str, Any]:
        def r(v: Any) -> Any:
            return round(v, 6) if isinstance(v, float) else v

        return {"feature": self.feature, "a": r(self.a), "b": r(self.b), "change": self.change}


@dataclass
class Change:
    """One material difference between the runs: a params key, a data aspect or env.<pkg>."""

    key: str
    kind: str  # param | data | env
    a: Any
    b: Any
    split: str | None = None
    detail: str = ""


# ---------------------------------------------------------------- params / env


def _same(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    pa, pb = parse_value(a), parse_value(b)
    if (
        isinstance(pa, (int, float))
        and isinstance(pb, (int, float))
        and not isinstance(pa, bool)
        and not isinstance(pb, bool)
    ):
        return math.isclose(float(pa), float(pb), rel_tol=1e-9, abs_tol=1e-15)
    return str(pa) == str(pb)


def diff_params(pa: dict[str, Any], pb: dict[str, Any]) -> list[dict[str, Any]]:
    """Params whose values differ (numerically for numbers: "0.001" == "1e-3").

    Fingerprint facts the train stage also logs as params (data.train.rows, ...) are left
    to the data section, which knows what they mean.
    """
    out = []
    for key in sorted(set(pa) | set(pb)):
        if _FINGERPRINT_PARAM.match(key):
            continue
        va, vb = pa.get(key), pb.get(key)
        if not _same(va, vb):
            out.append({"key": key, "a": None if va is None else str(va), "b": None if vb is None else str(vb)})
    return out


def diff_env(ea: dict[str, Any], eb: dict[str, Any]) -> list[dict[str, Any]]:
    """Environment entries that differ, as `env.<package>` (an `env.` prefix in the input is dropped)."""
    na = {k.removeprefix("env."): str(v) for k, v in (ea or {}).items()}
    nb = {k.removeprefix("env."): str(v) for k, v in (eb or {}).items()}
    return [
        {"key": f"env.{k}", "a": na.get(k), "b": nb.get(k)} for k in sorted(set(na) | set(nb)) if na.get(k) != nb.get(k)
    ]


def _seed_changed(params: list[dict[str, Any]]) -> bool:
    return any(p["key"] == "base.seed" for p in params)


# ---------------------------------------------------------------- data


def fingerprint_of(r: RunRecord) -> dict[str, Any] | None:
    """The recorded fingerprint, else the headline facts the train stage logged as params."""
    if r.fingerprint:
        return r.fingerprint
    fp: dict[str, Any] = {}
    for key, value in r.params.items():
        m = re.match(r"^data\.([^.]+)\.(rows|content_hash|ordered_hash|clustered)$", key)
        if m:
            split, field_ = m.groups()
            entry = fp.setdefault(split, {})
            if field_ == "clustered":
                entry.setdefault("order", {})["clustered"] = parse_value(value) is True
            else:
                entry[field_] = parse_value(value) if field_ == "rows" else value
    if "data.label_map_hash" in r.params:
        fp["label_map_hash"] = r.params["data.label_map_hash"]
    return fp or None


def _splits(fp: dict[str, Any]) -> list[str]:
    names = [k for k, v in fp.items() if isinstance(v, dict) and "rows" in v]
    return sorted(names, key=lambda s: (_SPLIT_ORDER.index(s) if s in _SPLIT_ORDER else 99, s))


def diff_data(fa: dict[str, Any] | None, fb: dict[str, Any] | None) -> tuple[list[dict[str, Any]], list[str]]:
    """Data aspects that differ per split, from the two fingerprints (rows, content, order,
    class balance, label set, lengths) plus the label map. Returns (entries, notes)."""
    if not fa or not fb:
        missing = " and ".join(n for n, fp in (("a", fa), ("b", fb)) if not fp)
        return [], [f"no data fingerprint for run {missing}: data not compared"]
    out: list[dict[str, Any]] = []
    for split in _splits({**fa, **fb}):
        sa, sb = fa.get(split), fb.get(split)
        if not isinstance(sa, dict) or not isinstance(sb, dict):
            out.append(
                _entry(
                    "data.rows", split, (sa or {}).get("rows"), (sb or {}).get("rows"), "split present in one run only"
                )
            )
            continue
        out += _split_diff(split, sa, sb)
    if fa.get("label_map_hash") != fb.get("label_map_hash"):
        out.append(
            _entry(
                "data.labels",
                None,
                _short(fa.get("label_map_hash")),
                _short(fb.get("label_map_hash")),
                "label → index map differs",
            )
        )
    return out, []


def _entry(aspect: str, split: str | None, a: Any, b: Any, detail: str) -> dict[str, Any]:
    return {"aspect": aspect, "split": split, "a": a, "b": b, "detail": detail}


def _short(h: Any) -> Any:
    return h[:12] if isinstance(h, str) else h


def _count(x: Any) -> int | None:
    """A row count as recorded: an int, or a float/str that some tools write (2048.0)."""
    try:
        return int(float(x)) if x is not None else None
    except (TypeError, ValueError):
        return None


def _split_diff(split: str, sa: dict[str, Any], sb: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    ra, rb = _count(sa.get("rows")), _count(sb.get("rows"))
    if ra != rb:
        rel = f" ({(rb - ra) / ra:+.1%})" if ra and rb is not None else ""
        out.append(_entry("data.rows", split, ra, rb, f"{(rb or 0) - (ra or 0):+d} rows{rel}"))
    same_content = sa.get("content_hash") == sb.get("content_hash")
    if not same_content:
        out.append(
            _entry(
                "data.content",
                split,
                _short(sa.get("content_hash")),
                _short(sb.get("content_hash")),
                "different rows (order-insensitive content hash differs)",
            )
        )
    oa, ob = sa.get("order") or {}, sb.get("order") or {}
    reordered = same_content and sa.get("ordered_hash") != sb.get("ordered_hash")
    if reordered or bool(oa.get("clustered")) != bool(ob.get("clustered")):
        what = "same rows in a different order" if reordered else "row order statistic changed"
        out.append(_entry("data.order", split, _order_text(oa), _order_text(ob), what))
    out += _balance_diff(split, sa.get("class_counts") or {}, sb.get("class_counts") or {})
    la, lb = sa.get("length") or {}, sb.get("length") or {}
    if la and lb and any(_rel_diff(la.get(k), lb.get(k)) > LENGTH_TOL for k in ("p50", "p90", "p100")):
        out.append(_entry("data.length", split, _length_text(la), _length_text(lb), "sequence lengths changed"))
    return out


def _order_text(o: dict[str, Any]) -> str:
    state = "clustered" if o.get("clustered") else "shuffled"
    z = o.get("runs_z")
    return f"{state} (runs z {z:.1f})" if isinstance(z, (int, float)) else state


def _length_text(length: dict[str, Any]) -> str:
    return " ".join(f"{k}={length[k]:g}" for k in ("p50", "p90", "p100") if isinstance(length.get(k), (int, float)))


def _rel_diff(a: Any, b: Any) -> float:
    if not isinstance(a, (int, float)) or not isinstance(b, (int, float)):
        return 0.0
    return abs(b - a) / max(abs(a), abs(b), 1e-9)


def shares(counts: dict[str, Any]) -> dict[str, float]:
    total = sum(float(v) for v in counts.values()) or 1.0
    return {str(k): float(v) / total for k, v in counts.items()}


def _balance_diff(split: str, ca: dict[str, Any], cb: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    if not ca or not cb:
        return out
    only_a, only_b = sorted(set(ca) - set(cb)), sorted(set(cb) - set(ca))
    if only_a or only_b:
        out.append(
            _entry(
                "data.labels", split, len(ca), len(cb), f"labels only in a: {only_a or '-'}; only in b: {only_b or '-'}"
            )
        )
    sa, sb = shares(ca), shares(cb)
    moves = sorted(((abs(sb.get(k, 0) - sa.get(k, 0)), k) for k in set(sa) | set(sb)), reverse=True)
    if moves and moves[0][0] > BALANCE_TOL:
        detail = "; ".join(f"{k} {sa.get(k, 0):.2f} → {sb.get(k, 0):.2f}" for _, k in moves[:3])
        out.append(
            _entry(
                "data.class_balance",
                split,
                f"max share {max(sa.values()):.2f}",
                f"max share {max(sb.values()):.2f}",
                detail,
            )
        )
    return out


# ---------------------------------------------------------------- behaviour


_RATIO = ("batch_noise", "epoch_jitter")
LOSS_FEATURES = ("best_loss", "final_loss", "best_val_loss", "final_val_loss")
# best_val_epoch is left out: on a flat val tail its argmin is a coin toss between seeds.
_EPOCHS = ("plateau_length", "epochs_to_half")
_SHARE = ("final_accuracy", "final_val_accuracy", "pred_top_share", "saturated_share")
# Which features must move for a finding that flips to count (a threshold crossing by a
# statistic that barely moved is seed noise, not a change).
_CODE_FEATURES = {
    "noisy_loss": ("batch_noise", "epoch_jitter"),
    "plateau": ("plateau_length", "epochs_to_half"),
    "not_learning": ("best_loss", "best_val_loss", "final_val_accuracy"),
    "overfitting": ("val_rise", "final_val_loss"),  # diverged: ungated, a NaN is never seed noise
    "saturated_predictions": ("saturated_share", "final_val_accuracy", "output_sum"),
    "majority_collapse": ("pred_top_share", "final_val_accuracy"),
}


def val_rise(f: dict[str, Any]) -> float | None:
    """(final - best val loss) / max(best, floor): a continuous overfitting measure."""
    fv, bv, floor = f.get("final_val_loss"), f.get("best_val_loss"), f.get("level_floor") or 0.0
    if fv is None or bv is None:
        return None
    return (fv - bv) / max(bv, floor, 1e-12)


def fmt(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, bool):
        return str(x).lower()
    if isinstance(x, float):
        return f"{x:.3g}"
    return str(x)


def diff_behaviour(
    fa: dict[str, Any], fb: dict[str, Any], codes_a: dict[str, str], codes_b: dict[str, str]
) -> list[Delta]:
    """Every compared feature as a Delta (material or not); finding flips included."""
    # A run that bounces by x per epoch has its final/best values uncertain by ~x: the loss
    # and share tolerances widen with the larger jitter (train) or val noise (val) of the two.
    jitter = max(fa.get("epoch_jitter") or 0.0, fb.get("epoch_jitter") or 0.0)
    vnoise = max(fa.get("val_noise") or 0.0, fb.get("val_noise") or 0.0)
    out = _ratio_deltas(fa, fb)
    out += _loss_deltas(fa, fb, jitter, vnoise)
    out += _epoch_deltas(fa, fb, jitter)
    out += _share_deltas(fa, fb, jitter, vnoise)
    out += _linear_delta(
        "val_rise", val_rise(fa), val_rise(fb), lambda x, y: max(RISE_TOL, LOSS_TOL * max(abs(x), abs(y)))
    )
    out += _divergence_delta(fa, fb)
    # What a row's outputs add up to (1 for a distribution): compared as a ratio, since a
    # sigmoid head over K classes sits anywhere from ~0 to ~K/2 while a softmax stays at 1.
    out += _ratio_delta("output_sum", fa.get("output_sum"), fb.get("output_sum"), OUTPUT_SUM_TOL)
    return out + _finding_flips(codes_a, codes_b, {d.feature for d in out if d.material})


def _ratio_deltas(fa: dict[str, Any], fb: dict[str, Any]) -> list[Delta]:
    """Noise and jitter, compared as ratios against a tolerance that widens on short runs."""
    n_epochs = min(fa.get("epochs") or 0, fb.get("epochs") or 0) or 1
    # A spread estimated from n values is uncertain by ~1/sqrt(2n), more on short steep runs:
    # exp(4/sqrt(n)) = 1.9x from 40 values, 1.5x from 100, the 1.3 floor from ~180 on.
    # batch_noise pools the learning-phase batches, epoch_jitter only the epochs.
    n_batches = min(fa.get("batch_noise_steps") or 0, fb.get("batch_noise_steps") or 0) or 1
    ratio_tol = {
        "batch_noise": max(RATIO_TOL, math.exp(4 / math.sqrt(n_batches))),
        "epoch_jitter": max(RATIO_TOL, math.exp(4 / math.sqrt(n_epochs))),
    }
    out: list[Delta] = []
    for name in _RATIO:
        out += _ratio_delta(name, fa.get(name), fb.get(name), ratio_tol[name])
    return out


def _loss_deltas(fa: dict[str, Any], fb: dict[str, Any], jitter: float, vnoise: float) -> list[Delta]:
    """Loss levels: 15% of the larger value (floored at 10% of the initial loss), or 2.5x the noise."""
    scale = 0.1 * max(fa.get("initial_loss") or 0, fb.get("initial_loss") or 0)
    out: list[Delta] = []
    for name in LOSS_FEATURES:
        rel = max(LOSS_TOL, 2.5 * (vnoise if "val" in name else jitter))
        out += _linear_delta(name, fa.get(name), fb.get(name), lambda x, y, rel=rel: rel * max(abs(x), abs(y), scale))
    return out


def _epoch_deltas(fa: dict[str, Any], fb: dict[str, Any], jitter: float) -> list[Delta]:
    """Epoch counts; a loss that never halved counts as halving one epoch past the end."""
    epochs = max(fa.get("epochs") or 0, fb.get("epochs") or 0)
    epoch_tol = max(2.0, EPOCH_TOL_SHARE * epochs) * (1 + 4 * jitter)
    out: list[Delta] = []
    for name in _EPOCHS:
        va, vb = fa.get(name), fb.get(name)
        if name == "epochs_to_half":
            va = va if va is not None or fa.get("epochs") is None else fa["epochs"] + 1
            vb = vb if vb is not None or fb.get("epochs") is None else fb["epochs"] + 1
        out += _linear_delta(name, va, vb, lambda x, y: epoch_tol, unit=" epochs")
    return out


def _share_deltas(fa: dict[str, Any], fb: dict[str, Any], jitter: float, vnoise: float) -> list[Delta]:
    """Accuracies and prediction shares; those of a bouncing curve bounce too (half the jitter as a floor)."""
    out: list[Delta] = []
    for name in _SHARE:
        spread = 0.5 * (vnoise if name != "final_accuracy" else jitter)
        tolerance = max(SHARE_TOL, spread)
        out += _linear_delta(name, fa.get(name), fb.get(name), lambda x, y, t=tolerance: t)
    return out


def _divergence_delta(fa: dict[str, Any], fb: dict[str, Any]) -> list[Delta]:
    """A run that diverges where the other does not: always material, a NaN is never seed noise."""
    da, db = bool(fa.get("diverged")), bool(fb.get("diverged"))
    if da == db:
        return []
    return [Delta("diverged", da, db, "now diverges" if db else "no longer diverges", 3.0, 1 if db else -1)]


def _finding_flips(codes_a: dict[str, str], codes_b: dict[str, str], moved: set[str]) -> list[Delta]:
    """Findings present in one run only; material only when a feature behind the finding moved too."""
    out: list[Delta] = []
    for code in sorted(set(codes_a) | set(codes_b)):
        if (code in codes_a) == (code in codes_b):
            continue
        related = _CODE_FEATURES.get(code)
        effect = 3.0 if related is None or moved.intersection(related) else 0.5
        appeared = code in codes_b
        out.append(
            Delta(
                f"finding.{code}",
                codes_a.get(code),
                codes_b.get(code),
                "appeared" if appeared else "gone",
                effect,
                1 if appeared else -1,
            )
        )
    return out


def _ratio_delta(name: str, a: Any, b: Any, tol: float = RATIO_TOL) -> list[Delta]:
    if a is None or b is None:
        return []
    eps = RATIO_EPS.get(name, 0.01)
    r = (b + eps) / (a + eps)
    effect = abs(math.log(r)) / math.log(tol) if abs(b - a) >= eps else 0.0
    raw = b / a if a > 0 and b > 0 else r  # the text states the plain ratio; eps only steadies `effect`
    if a > 0 and b > 0:
        word = f"{raw:.1f}x higher" if raw >= 1 else f"{1 / raw:.1f}x lower"
    else:  # from or to exactly 0 there is no ratio to state
        word = f"{fmt(a)} → {fmt(b)}"
    return [Delta(name, a, b, word, effect, 1 if r >= 1 else -1, ratio=raw)]


def _linear_delta(name: str, a: Any, b: Any, tol: Callable[[float, float], float], unit: str = "") -> list[Delta]:
    if a is None or b is None:
        return []
    d = float(b) - float(a)
    effect = abs(d) / tol(float(a), float(b))
    text = f"{d:+.0f}{unit}" if unit else f"{d:+.3g}"
    return [Delta(name, a, b, text, effect, 1 if d > 0 else -1)]


def material_changes(
    params: list[dict[str, Any]], data: list[dict[str, Any]], env: list[dict[str, Any]]
) -> list[Change]:
    """Differences that could move training: immaterial params (seed, evaluate.*, diagnose.*,
    a script's model name and raw callback settings) are left out, and so is a script's
    layer summary when a specific setting changed, and its schedule settings when the
    schedule changed; the seed is judged separately."""
    out = [
        Change(p["key"], "param", p["a"], p["b"])
        for p in params
        if p["key"] not in _IMMATERIAL_KEYS and not p["key"].startswith(_IMMATERIAL_PREFIXES)
    ]
    keys = {c.key for c in out}
    if "train.lr_schedule" in keys:  # a script's schedule settings restate a schedule added or swapped
        out = [c for c in out if not c.key.startswith(_SCHEDULE_SETTINGS)]
    if any(k.startswith("train.model.") or k in ("train.output_activation", "train.output_units") for k in keys):
        out = [c for c in out if c.key not in _SUMMARY_KEYS]
    elif "model.layers" in keys:
        out = [c for c in out if c.key != "model.params"]
    seen: set[str] = set()
    for d in data:  # one change per aspect; the train split (which training reads) wins
        key = d["aspect"]
        if key in seen:
            continue
        same = [x for x in data if x["aspect"] == key]
        pick = next((x for x in same if x["split"] == "train"), same[0])
        seen.add(key)
        out.append(Change(key, "data", pick["a"], pick["b"], pick["split"], pick["detail"]))
    out += [Change(e["key"], "env", e["a"], e["b"]) for e in env]
    return out


def seed_changed(params: list[dict[str, Any]]) -> bool:
    """Whether the params entries of `diff_params` include the seed."""
    return any(p["key"] == "base.seed" for p in params)


DATA_ASPECTS = ("data.order", "data.content", "data.class_balance", "data.labels", "data.rows", "data.length")
