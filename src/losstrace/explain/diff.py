"""The pure core of `losstrace diff`: what changed between two runs, and which change moved the curve.

Four comparisons (params, data fingerprint, environment, curve behaviour), then causes:
every material change is tested against the behaviour changes its *mechanism* predicts
(smaller batch → noisier batches by ~sqrt(b_a/b_b); lower learning rate → plateau and
slower descent; rows grouped by label → nothing generalises; ...). Confidence is
mechanism specificity x direction/magnitude agreement x size of the effect, so the
change whose mechanism matches the observed symptom best ranks first.

Behaviour differences smaller than seed-to-seed variation (the tolerances below) are
not changes at all; when nothing material moved the answer is the single cause
`{"change": "none", ..., "why": "within seed-to-seed variation ..."}`.

Pure numpy/pandas, ~10 ms per 5000-batch run: no MLflow, no TensorFlow.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from losstrace.explain import source_mechanism
from losstrace.explain.diagnose import findings_from_features, head_mismatch
from losstrace.explain.symptoms import DEFAULT_LR, curve_features, parse_value
from losstrace.params import DiagnoseParams
from losstrace.record.run_record import RunRecord

# ---------------------------------------------------------------- seed-to-seed tolerances
# Differences below these are what re-running the same config with another seed does;
# a behaviour change must exceed them to count (docs/diagnosis.md, "diff").
RATIO_TOL = 1.3  # noise / jitter ratios: b/a outside [1/1.3, 1.3]
RATIO_EPS = {"batch_noise": 0.02, "epoch_jitter": 0.01}  # absolute floor: 0.001 vs 0.002 is no change
LOSS_TOL = 0.15  # loss levels: |Δ| > 15% of the larger value (floored at 10% of the initial loss),
#                  or > 2.5x the run's own epoch jitter / val noise when that is larger
SHARE_TOL = 0.05  # accuracies and prediction shares: |Δ| > 5 points
RISE_TOL = 0.15  # val rise after its best (relative to the best): |Δ| > 0.15 and > 15% of the larger
EPOCH_TOL_SHARE = 0.1  # epoch counts: |Δ| > max(2, 10% of the run length), widened on jittery runs
BALANCE_TOL = 0.03  # class shares: a label's share moves > 3 points
LENGTH_TOL = 0.1  # sequence length percentiles: > 10% relative

# Params that cannot change training dynamics (or that the data section reports).
_FINGERPRINT_PARAM = re.compile(r"^data\.label_map_hash$|^data\.[^.]+\.(rows|content_hash|ordered_hash|clustered)$")
_IMMATERIAL_PREFIXES = ("evaluate.", "diagnose.")
# train.probe_batches: a retired key (batch losses are always recorded) that older runs carry.
_IMMATERIAL_KEYS = {"base.seed", "train.metrics", "train.probe_batches"}
HEAD_KEYS = ("train.output_activation", "train.loss", "train.from_logits", "train.output_units")
_DROPOUT = re.compile(r"^train\.model\.(dropout|rnn\.dropout|rnn\.recurrent_dropout|dense\.\d+\.l2)$")
_CAPACITY = re.compile(
    r"^train\.model\.(rnn\.(units|layers|bidirectional|cell)|dense\.\d+\.units"
    r"|embedding\.dim|conv\.filters)$"
)
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


@dataclass
class Cause:
    change: str
    symptom: str
    confidence: float
    why: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "change": self.change,
            "symptom": self.symptom,
            "confidence": round(self.confidence, 3),
            "why": self.why,
        }


# ---------------------------------------------------------------- entry point


def diff_runs(a: RunRecord, b: RunRecord, thresholds: DiagnoseParams | None = None) -> dict[str, Any]:
    """The diff JSON: `{"params", "data", "env", "behaviour", "causes"}` (+ "notes" when data was not compared)."""
    t = thresholds or DiagnoseParams()
    ctx_a, ctx_b = run_context(a), run_context(b)
    fa = curve_features(a.history, a.batches, ctx_a, t)
    fb = curve_features(b.history, b.batches, ctx_b, t)
    params = diff_params(a.params, b.params)
    data, notes = diff_data(fingerprint_of(a), fingerprint_of(b))
    env = diff_env(a.env, b.env)
    deltas = diff_behaviour(fa, fb, finding_codes(a, fa, ctx_a, t), finding_codes(b, fb, ctx_b, t))
    evidence = Evidence(fa, fb, ctx_a, ctx_b, {d.feature: d for d in deltas if d.material})
    changes = material_changes(params, data, env)
    causes = rank_causes(changes, evidence, seed_changed=_seed_changed(params))
    out: dict[str, Any] = {
        "params": params,
        "data": data,
        "env": env,
        "behaviour": [d.to_dict() for d in sorted(deltas, key=lambda d: -d.effect) if d.material],
        "causes": [c.to_dict() for c in causes],
    }
    if notes:
        out["notes"] = notes
    return out


def run_context(r: RunRecord) -> dict[str, Any]:
    """The record's context, with its params filled in from the record's (string) params."""
    ctx = dict(r.context or {})
    ctx["params"] = {**{k: parse_value(v) for k, v in r.params.items()}, **(ctx.get("params") or {})}
    return ctx


def finding_codes(r: RunRecord, f: dict[str, Any], ctx: dict[str, Any], t: DiagnoseParams) -> dict[str, str]:
    """code → severity of the curve warnings/errors, recomputed so both runs are judged by
    the same rules. Data and lint findings are consequences of the data/params diffs
    (already listed there), not curve behaviour; a recorded NaN stop is kept, since a
    history cut short by TerminateOnNaN may no longer show it."""
    out = {x.code: x.severity for x in findings_from_features(f, r.history, ctx, t) if x.severity != "info"}
    if any(d.get("code") == "diverged" and d.get("severity") == "error" for d in r.findings or []):
        out.setdefault("diverged", "error")
    return out


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
_LOSS = ("best_loss", "final_loss", "best_val_loss", "final_val_loss")
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
    "saturated_predictions": ("saturated_share", "final_val_accuracy"),
    "majority_collapse": ("pred_top_share", "final_val_accuracy"),
}


def val_rise(f: dict[str, Any]) -> float | None:
    """(final - best val loss) / max(best, floor): a continuous overfitting measure."""
    fv, bv, floor = f.get("final_val_loss"), f.get("best_val_loss"), f.get("level_floor") or 0.0
    if fv is None or bv is None:
        return None
    return (fv - bv) / max(bv, floor, 1e-12)


def _fmt(x: Any) -> str:
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
    out: list[Delta] = []
    n_epochs = min(fa.get("epochs") or 0, fb.get("epochs") or 0) or 1
    # A spread estimated from n values is uncertain by ~1/sqrt(2n), more on short steep runs:
    # exp(4/sqrt(n)) = 1.9x from 40 values, 1.5x from 100, the 1.3 floor from ~180 on.
    # batch_noise pools the learning-phase batches, epoch_jitter only the epochs.
    n_batches = min(fa.get("batch_noise_steps") or 0, fb.get("batch_noise_steps") or 0) or 1
    ratio_tol = {
        "batch_noise": max(RATIO_TOL, math.exp(4 / math.sqrt(n_batches))),
        "epoch_jitter": max(RATIO_TOL, math.exp(4 / math.sqrt(n_epochs))),
    }
    for name in _RATIO:
        out += _ratio_delta(name, fa.get(name), fb.get(name), ratio_tol[name])
    scale = 0.1 * max(fa.get("initial_loss") or 0, fb.get("initial_loss") or 0)
    # A run that bounces by x per epoch has its final/best values uncertain by ~x: widen
    # the tolerance to 2.5x the larger jitter (train) or val noise (val) of the two runs.
    jitter = max(fa.get("epoch_jitter") or 0.0, fb.get("epoch_jitter") or 0.0)
    vnoise = max(fa.get("val_noise") or 0.0, fb.get("val_noise") or 0.0)
    for name in _LOSS:
        rel = max(LOSS_TOL, 2.5 * (vnoise if "val" in name else jitter))
        out += _linear_delta(name, fa.get(name), fb.get(name), lambda x, y, rel=rel: rel * max(abs(x), abs(y), scale))
    epochs = max(fa.get("epochs") or 0, fb.get("epochs") or 0)
    epoch_tol = max(2.0, EPOCH_TOL_SHARE * epochs) * (1 + 4 * jitter)
    for name in _EPOCHS:
        va, vb = fa.get(name), fb.get(name)
        if name == "epochs_to_half":  # never reached → counts as one past the end
            va = va if va is not None or fa.get("epochs") is None else fa["epochs"] + 1
            vb = vb if vb is not None or fb.get("epochs") is None else fb["epochs"] + 1
        out += _linear_delta(name, va, vb, lambda x, y: epoch_tol, unit=" epochs")
    for name in _SHARE:
        # Accuracies of a bouncing curve bounce too: half the (val) jitter as a floor.
        spread = 0.5 * (vnoise if name != "final_accuracy" else jitter)
        tolerance = max(SHARE_TOL, spread)
        out += _linear_delta(name, fa.get(name), fb.get(name), lambda x, y, t=tolerance: t)
    out += _linear_delta(
        "val_rise", val_rise(fa), val_rise(fb), lambda x, y: max(RISE_TOL, LOSS_TOL * max(abs(x), abs(y)))
    )
    if bool(fa.get("diverged")) != bool(fb.get("diverged")):
        out.append(
            Delta(
                "diverged",
                bool(fa.get("diverged")),
                bool(fb.get("diverged")),
                "now diverges" if fb.get("diverged") else "no longer diverges",
                3.0,
                1 if fb.get("diverged") else -1,
            )
        )
    moved = {d.feature for d in out if d.material}
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
        word = f"{_fmt(a)} → {_fmt(b)}"
    return [Delta(name, a, b, word, effect, 1 if r >= 1 else -1, ratio=raw)]


def _linear_delta(name: str, a: Any, b: Any, tol: Callable[[float, float], float], unit: str = "") -> list[Delta]:
    if a is None or b is None:
        return []
    d = float(b) - float(a)
    effect = abs(d) / tol(float(a), float(b))
    text = f"{d:+.0f}{unit}" if unit else f"{d:+.3g}"
    return [Delta(name, a, b, text, effect, 1 if d > 0 else -1)]


# ---------------------------------------------------------------- causes


@dataclass
class Evidence:
    """What the mechanisms read: both runs' features and contexts, and the material deltas."""

    fa: dict[str, Any]
    fb: dict[str, Any]
    ctx_a: dict[str, Any]
    ctx_b: dict[str, Any]
    moved: dict[str, Delta]

    def d(self, feature: str) -> Delta | None:
        return self.moved.get(feature)

    def up(self, feature: str) -> Delta | None:
        d = self.moved.get(feature)
        return d if d and d.direction > 0 else None

    def down(self, feature: str) -> Delta | None:
        d = self.moved.get(feature)
        return d if d and d.direction < 0 else None

    def appeared(self, code: str) -> bool:
        return bool(self.up(f"finding.{code}"))

    def gone(self, code: str) -> bool:
        return bool(self.down(f"finding.{code}"))

    def strongest(self) -> Delta | None:
        return max(self.moved.values(), key=lambda d: d.effect, default=None)


Candidate = tuple[float, str, str]  # (confidence, symptom, why)


def _m(effect: float) -> float:
    """Effect size → [0.6, 1]: 0.6 at the seed tolerance, 1.0 at 4x it."""
    return min(1.0, 0.6 + 0.4 * (max(effect, 1.0) - 1.0) / 3.0)


def _num(x: Any) -> float | None:
    v = parse_value(x)
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def material_changes(
    params: list[dict[str, Any]], data: list[dict[str, Any]], env: list[dict[str, Any]]
) -> list[Change]:
    """Differences that could move training: immaterial params (seed, evaluate.*, diagnose.*)
    are left out; the seed is judged separately."""
    out = [
        Change(p["key"], "param", p["a"], p["b"])
        for p in params
        if p["key"] not in _IMMATERIAL_KEYS and not p["key"].startswith(_IMMATERIAL_PREFIXES)
    ]
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


def rank_causes(changes: list[Change], ev: Evidence, seed_changed: bool = False) -> list[Cause]:
    """Causes most likely first; the single "none" cause when behaviour stayed within seed noise."""
    top = ev.strongest()
    if top is None:
        listed = ", ".join(c.key for c in changes)
        why = "within seed-to-seed variation: no curve feature moved beyond its seed tolerance"
        why += f" (the differences {listed} did not move the curve)" if listed else ""
        return [Cause("none", "no material behaviour change", 0.9 if not changes else 0.7, why)]
    if not changes:
        if seed_changed:
            return [
                Cause(
                    "base.seed",
                    _symptom(top),
                    0.5,
                    f"only the seed differs; {_describe(top)} is larger than typical seed-to-seed "
                    "variation but nothing else changed",
                )
            ]
        return [
            Cause(
                "none",
                _symptom(top),
                0.5,
                f"no param, data or env difference: {_describe(top)} comes from nondeterministic "
                "training, beyond typical seed-to-seed variation",
            )
        ]
    causes = [explain_change(c, ev, changes) for c in changes]
    order = {"param": 0, "data": 1, "env": 2}
    return sorted(causes, key=lambda c: (-round(c.confidence, 3), order.get(_kind_of(c.change), 3)))


DATA_ASPECTS = ("data.order", "data.content", "data.class_balance", "data.labels", "data.rows", "data.length")


def _kind_of(key: str) -> str:
    return "env" if key.startswith("env.") else "data" if key in DATA_ASPECTS else "param"


def _symptom(d: Delta) -> str:
    return d.feature.removeprefix("finding.")


def _describe(d: Delta) -> str:
    if d.feature.startswith("finding."):
        return f"{_symptom(d)} {d.change}"
    return f"{d.feature} {_fmt(d.a)} → {_fmt(d.b)} ({d.change})"


def explain_change(ch: Change, ev: Evidence, all_changes: list[Change]) -> Cause:
    """The best mechanism-backed explanation for one change, else a low generic one."""
    for match, mechanism in MECHANISMS:
        if match(ch.key):
            found = mechanism(ch, ev, all_changes)
            if found:
                conf, symptom, why = found
                return Cause(ch.key, symptom, min(max(conf, 0.0), 1.0), why)
            break
    top = ev.strongest()
    base = 0.04 if ch.kind == "env" else 0.15
    return Cause(
        ch.key,
        _symptom(top),
        base * _m(top.effect),
        f"{_change_text(ch)}; no known mechanism links it to {_describe(top)}",
    )


def _change_text(ch: Change) -> str:
    return f"{ch.key} {_fmt(ch.a)} → {_fmt(ch.b)}"


def _best(cands: list[Candidate | None]) -> Candidate | None:
    real = [c for c in cands if c]
    return max(real, key=lambda c: c[0]) if real else None


def _finding_or(ev: Evidence, code: str, feature: str) -> str:
    return code if ev.appeared(code) or ev.gone(code) else feature


# ---- batch size


def _batch_size(ch: Change, ev: Evidence, _: list[Change]) -> Candidate | None:
    ba, bb = _num(ch.a), _num(ch.b)
    if not ba or not bb:
        return None
    expected = math.sqrt(ba / bb)  # gradient (and batch-loss) noise std ∝ 1/sqrt(batch)
    head = (
        f"train.batch_size {ba:g} → {bb:g} {'multiplies' if expected > 1 else 'divides'} gradient noise by "
        f"~{max(expected, 1 / expected):.1f}x (sqrt({ba:g}/{bb:g}))"
    )
    cands: list[Candidate | None] = []
    d = ev.d("batch_noise")
    if d and d.ratio and (d.ratio > 1) == (expected > 1):
        lr_, le = abs(math.log(d.ratio)), abs(math.log(expected))
        agree = min(lr_, le) / max(lr_, le, 1e-9)
        measured = max(d.ratio, 1 / d.ratio)
        cands.append(
            (
                0.92 * (0.55 + 0.45 * agree) * _m(d.effect),
                _finding_or(ev, "noisy_loss", "batch_noise"),
                f"{head}; per-batch loss noise {'rose' if d.ratio > 1 else 'fell'} {measured:.1f}x "
                f"({_fmt(d.a)} → {_fmt(d.b)})",
            )
        )
    j = ev.d("epoch_jitter")
    if j and (j.direction > 0) == (expected > 1):
        cands.append(
            (
                0.6 * _m(j.effect),
                _finding_or(ev, "noisy_loss", "epoch_jitter"),
                f"{head}: at the same learning rate each step is noisier (lr/batch x{ba / bb:.2g}); "
                f"epoch loss jitter {_fmt(j.a)} → {_fmt(j.b)}",
            )
        )
    h = ev.d("epochs_to_half")
    if h and (h.direction < 0) == (bb < ba):  # smaller batch → more updates per epoch → faster per epoch
        cands.append(
            (
                0.45 * _m(h.effect),
                "epochs_to_half",
                f"train.batch_size {ba:g} → {bb:g} changes updates per epoch x{ba / bb:.2g}; "
                f"epochs to halve the loss {_fmt(h.a)} → {_fmt(h.b)}",
            )
        )
    return _best(cands)


# ---- learning rate / optimizer


def _lr_candidates(factor: float, label: str, ev: Evidence, prior: float) -> Candidate | None:
    """Mechanisms of a step-size change by `factor` (b/a)."""
    if factor <= 0 or abs(math.log10(factor)) < 0.05:
        return None
    s = min(1.0, 0.5 + 0.5 * abs(math.log10(factor)))  # 10x = full strength, 2x = 0.65
    word = f"{1 / factor:.3g}x smaller" if factor < 1 else f"{factor:.3g}x larger"
    head = f"{label} takes {word} steps"
    fb = ev.fb
    cands: list[Candidate | None] = []
    if factor < 1:
        p = ev.up("plateau_length")
        if p or ev.appeared("plateau"):
            eff = p.effect if p else 3.0
            lvl = fb.get("plateau_level")
            at = f" (flat at {lvl:.3g}{_chance_note(lvl, fb)})" if lvl is not None else ""
            cands.append(
                (
                    0.88 * s * _m(eff),
                    _finding_or(ev, "plateau", "plateau_length"),
                    f"{head}; a {fb.get('plateau_length')}-epoch plateau from epoch {fb.get('plateau_start')}"
                    f"{at}{_half_note(ev)}",
                )
            )
        if ev.appeared("not_learning"):
            cands.append(
                (
                    0.7 * s,
                    "not_learning",
                    f"{head}; the loss no longer leaves its start"
                    f" ({_fmt(ev.fa.get('best_loss'))} → {_fmt(fb.get('best_loss'))})",
                )
            )
        h = ev.up("epochs_to_half")
        if h:
            cands.append((0.75 * s * _m(h.effect), "epochs_to_half", f"{head}; slower descent{_half_note(ev)}"))
        for name in ("best_loss", "final_loss"):
            d = ev.up(name)
            if d:
                cands.append(
                    (0.55 * s * _m(d.effect), name, f"{head}; {_describe(d)}: less progress in the same epochs")
                )
        for name in ("epoch_jitter", "batch_noise"):
            d = ev.down(name)
            if d:
                cands.append((0.55 * s * _m(d.effect), name, f"{head}; calmer curve: {_describe(d)}"))
    else:
        if ev.appeared("diverged") or ev.up("diverged"):
            cands.append((0.92 * s, "diverged", f"{head}; the loss now diverges (NaN or > explode_factor x start)"))
        j = ev.up("epoch_jitter")
        if j or ev.appeared("noisy_loss"):
            eff = j.effect if j else 3.0
            cands.append(
                (
                    0.85 * s * _m(eff),
                    _finding_or(ev, "noisy_loss", "epoch_jitter"),
                    f"{head}; steps overshoot, so the epoch loss bounces"
                    + (f" (jitter {_fmt(j.a)} → {_fmt(j.b)})" if j else ""),
                )
            )
        if ev.appeared("not_learning"):
            cands.append((0.6 * s, "not_learning", f"{head}; the model jumps out of any descent and sticks"))
        p = ev.down("plateau_length")
        if p or ev.gone("plateau"):
            cands.append(
                (
                    0.8 * s * _m(p.effect if p else 3.0),
                    _finding_or(ev, "plateau", "plateau_length"),
                    f"{head}; the plateau is gone ({_fmt(ev.fa.get('plateau_length'))} → "
                    f"{_fmt(fb.get('plateau_length'))} epochs){_half_note(ev)}",
                )
            )
        h = ev.down("epochs_to_half")
        if h:
            cands.append((0.7 * s * _m(h.effect), "epochs_to_half", f"{head}; faster descent{_half_note(ev)}"))
        d = ev.up("batch_noise")
        if d:
            cands.append((0.5 * s * _m(d.effect), "batch_noise", f"{head}; {_describe(d)}"))
    best = _best(cands)
    return (best[0] * prior, best[1], best[2]) if best else None


def _half_note(ev: Evidence) -> str:
    a, b = ev.fa.get("epochs_to_half"), ev.fb.get("epochs_to_half")
    return f"; epochs to halve the loss {_fmt(a)} → {_fmt(b)}" if a != b else ""


def _chance_note(level: float, f: dict[str, Any]) -> str:
    chance = f.get("chance_loss")
    return f" ≈ chance ln K = {chance:.3g}" if chance and abs(level - chance) <= 0.05 * chance else ""


def _learning_rate(ch: Change, ev: Evidence, _: list[Change]) -> Candidate | None:
    la, lb = _num(ch.a), _num(ch.b)
    if not la or not lb:
        return None
    return _lr_candidates(lb / la, f"train.learning_rate {la:g} → {lb:g}", ev, 1.0)


def _optimizer(ch: Change, ev: Evidence, changes: list[Change]) -> Candidate | None:
    """A new optimizer at the same lr changes the effective step (SGD's usual lr is 10x Adam's)."""
    da, db = DEFAULT_LR.get(str(ch.a).lower()), DEFAULT_LR.get(str(ch.b).lower())
    la = _num(ev.ctx_a["params"].get("train.learning_rate")) or da
    lb = _num(ev.ctx_b["params"].get("train.learning_rate")) or db
    if not (da and db and la and lb):
        return None
    factor = (lb / db) / (la / da)
    return _lr_candidates(
        factor, f"train.optimizer {ch.a} → {ch.b} (lr relative to its default x{factor:.3g})", ev, 0.7
    )


# ---- data order / shuffle


def _order(ch: Change, ev: Evidence, _: list[Change]) -> Candidate | None:
    if ch.split not in (None, "train"):
        return (0.05, "none", f"data.order changed on {ch.split} only; evaluation order does not affect training")
    a_cl, b_cl = str(ch.a).startswith("clustered"), str(ch.b).startswith("clustered")
    if a_cl == b_cl:
        return (0.12, _symptom(ev.strongest()), f"train rows were reshuffled ({ch.a} → {ch.b}): a seed-level change")
    return _grouping(
        ev,
        b_cl,
        f"train rows {'are now grouped by label' if b_cl else 'are now shuffled'} ({ch.a} → {ch.b}; {ch.detail})",
        1.0,
    )


def _grouping(ev: Evidence, grouped: bool, head: str, prior: float) -> Candidate | None:
    """Rows grouped by label: each block teaches "predict this label", nothing transfers."""
    mech = (
        "each block of one label teaches the model to predict that label, so what it fits does not transfer"
        if grouped
        else "mixed batches let the model learn the inputs instead of the current block's label"
    )
    cands: list[Candidate | None] = []
    if (ev.appeared("not_learning") and grouped) or (ev.gone("not_learning") and not grouped):
        blind = ev.fb.get("val_prior_loss") or ev.fb.get("prior_loss")
        cands.append(
            (
                0.93,
                "not_learning",
                f"{head}: {mech}; best val loss {_fmt(ev.fa.get('best_val_loss'))} → "
                f"{_fmt(ev.fb.get('best_val_loss'))} (input-blind level {_fmt(blind)})",
            )
        )
    v = ev.d("best_val_loss")
    if v and (v.direction > 0) == grouped:
        cands.append((0.8 * _m(v.effect), "best_val_loss", f"{head}: {mech}; {_describe(v)}"))
    acc = ev.d("final_val_accuracy")
    if acc and (acc.direction < 0) == grouped:
        cands.append((0.7 * _m(acc.effect), "final_val_accuracy", f"{head}: {mech}; {_describe(acc)}"))
    n = ev.d("batch_noise")
    if n and (n.direction > 0) == grouped:
        cands.append((0.5 * _m(n.effect), "batch_noise", f"{head}: label blocks make batch loss swing; {_describe(n)}"))
    best = _best(cands)
    return (best[0] * prior, best[1], best[2]) if best else None


def _shuffle(ch: Change, ev: Evidence, changes: list[Change]) -> Candidate | None:
    """data.shuffle is the knob; data.order (when fingerprinted) is the mechanism and ranks first."""
    grouped = parse_value(ch.b) is False
    has_order = any(c.key == "data.order" for c in changes)
    head = f"data.shuffle {ch.a} → {ch.b} {'keeps the source order' if grouped else 'shuffles the rows'}"
    return _grouping(ev, grouped, head + (" (see data.order)" if has_order else ""), 0.9 if has_order else 0.85)


# ---- output head


def _head(ch: Change, ev: Evidence, _: list[Change]) -> Candidate | None:
    bad_a, bad_b = head_mismatch(ev.ctx_a), head_mismatch(ev.ctx_b)
    head = f"{_change_text(ch)}"
    cands: list[Candidate | None] = []
    if bad_b and not bad_a:
        why = f"{head} makes activation and loss disagree (fix: {bad_b}), so the loss sticks"
        if ev.appeared("not_learning"):
            cands.append(
                (
                    0.92,
                    "not_learning",
                    f"{why}: best loss {_fmt(ev.fb.get('best_loss'))} vs start {_fmt(ev.fb.get('initial_loss'))}",
                )
            )
        if ev.appeared("saturated_predictions"):
            cands.append((0.85, "saturated_predictions", f"{why}; outputs pin near 0"))
        d = ev.strongest()
        cands.append((0.55 * _m(d.effect), _symptom(d), f"{why}; {_describe(d)}"))
    elif bad_a and not bad_b:
        why = f"{head} fixes the activation/loss disagreement of run a ({bad_a})"
        if ev.gone("not_learning"):
            cands.append((0.92, "not_learning", f"{why}: the loss now leaves its start"))
        d = ev.strongest()
        cands.append((0.55 * _m(d.effect), _symptom(d), f"{why}; {_describe(d)}"))
    elif ch.key == "train.loss":
        d = next((ev.d(n) for n in _LOSS if ev.d(n)), None)
        if d:
            cands.append(
                (0.45 * _m(d.effect), d.feature, f"{head}: loss values are on a different scale; {_describe(d)}")
            )
    return _best(cands)


# ---- regularisation / capacity / epochs


def _regularisation(ch: Change, ev: Evidence, _: list[Change]) -> Candidate | None:
    a, b = _num(ch.a) or 0.0, _num(ch.b) or 0.0
    if a == b:
        return None
    less = b < a
    head = f"{_change_text(ch)} {'weakens' if less else 'strengthens'} regularisation"
    cands: list[Candidate | None] = []
    if (ev.appeared("overfitting") and less) or (ev.gone("overfitting") and not less):
        onset = ev.fb.get("overfit_onset") if less else ev.fa.get("overfit_onset")
        cands.append(
            (
                0.88,
                "overfitting",
                f"{head}; val loss {'now' if less else 'no longer'} turns up after its best "
                f"(epoch {_fmt(onset)}) while train loss keeps falling",
            )
        )
    r = ev.d("val_rise")
    if r and (r.direction > 0) == less:
        cands.append(
            (0.75 * _m(r.effect), "val_rise", f"{head}; val loss rise after its best {_fmt(r.a)} → {_fmt(r.b)}")
        )
    v = ev.d("final_val_loss")
    if v and (v.direction > 0) == less:
        cands.append((0.6 * _m(v.effect), "final_val_loss", f"{head}; {_describe(v)}"))
    t = ev.d("best_loss")
    if t and (t.direction < 0) == less:
        cands.append(
            (
                0.45 * _m(t.effect),
                "best_loss",
                f"{head}; the train set is fit {'more' if less else 'less'} closely ({_describe(t)})",
            )
        )
    return _best(cands)


def _capacity(ch: Change, ev: Evidence, _: list[Change]) -> Candidate | None:
    a, b = _num(ch.a), _num(ch.b)
    more = a is not None and b is not None and b > a
    head = f"{_change_text(ch)} changes model capacity"
    cands: list[Candidate | None] = []
    if ev.appeared("overfitting") and (more or a is None):
        cands.append((0.5, "overfitting", f"{head}; more capacity memorises sooner: val loss now turns up"))
    d = ev.strongest()
    cands.append((0.3 * _m(d.effect), _symptom(d), f"{head}; {_describe(d)}"))
    return _best(cands)


def _epochs(ch: Change, ev: Evidence, _: list[Change]) -> Candidate | None:
    a, b = _num(ch.a), _num(ch.b)
    if a is None or b is None:
        return None
    longer = b > a
    head = f"train.epochs {a:g} → {b:g} {'trains longer' if longer else 'stops earlier'}"
    cands: list[Candidate | None] = []
    if (ev.appeared("overfitting") and longer) or (ev.gone("overfitting") and not longer):
        cands.append(
            (0.6, "overfitting", f"{head}: {'time to' if longer else 'no time to'} overfit after the best epoch")
        )
    f = ev.d("final_loss")
    if f and (f.direction < 0) == longer:
        cands.append((0.55 * _m(f.effect), "final_loss", f"{head}; {_describe(f)}"))
    v = ev.d("final_val_loss")
    if v:
        cands.append((0.4 * _m(v.effect), "final_val_loss", f"{head}; {_describe(v)}"))
    return _best(cands)


def _clipnorm(ch: Change, ev: Evidence, _: list[Change]) -> Candidate | None:
    a, b = _num(ch.a) or 0.0, _num(ch.b) or 0.0
    clipped_now = b > 0 and (a == 0 or b < a)
    if (ev.gone("diverged") or ev.down("diverged")) and clipped_now:
        return (0.8, "diverged", f"{_change_text(ch)} caps each update: the explosion is gone")
    if (ev.appeared("diverged") or ev.up("diverged")) and not clipped_now:
        return (0.75, "diverged", f"{_change_text(ch)} removes the cap on updates: the loss now explodes")
    j = ev.d("epoch_jitter")
    if j and (j.direction < 0) == clipped_now:
        return (0.45 * _m(j.effect), "epoch_jitter", f"{_change_text(ch)}; {_describe(j)}")
    return None


# ---- data aspects


def _class_balance(ch: Change, ev: Evidence, _: list[Change]) -> Candidate | None:
    head = f"class balance changed ({ch.detail})" if ch.key.startswith("data.") else _change_text(ch)
    cands: list[Candidate | None] = []
    if ev.appeared("majority_collapse") or ev.gone("majority_collapse"):
        top = ev.fb.get("pred_top_share")
        cands.append(
            (
                0.85,
                "majority_collapse",
                f"{head}: guessing the majority class "
                f"{'became' if ev.appeared('majority_collapse') else 'stopped being'} the cheap way down"
                + (f"; {top:.0%} of predictions on one class" if top is not None else ""),
            )
        )
    p = ev.d("pred_top_share")
    if p:
        cands.append((0.6 * _m(p.effect), "pred_top_share", f"{head}; {_describe(p)}"))
    acc = ev.d("final_val_accuracy")
    if acc:
        cands.append((0.45 * _m(acc.effect), "final_val_accuracy", f"{head}; {_describe(acc)}"))
    loss = next((ev.d(n) for n in _LOSS if ev.d(n)), None)
    if loss:
        cands.append(
            (
                0.35 * _m(loss.effect),
                loss.feature,
                f"{head}: the prior loss (entropy of class shares) moved "
                f"{_fmt(ev.fa.get('prior_loss'))} → {_fmt(ev.fb.get('prior_loss'))}; {_describe(loss)}",
            )
        )
    return _best(cands)


def _labels(ch: Change, ev: Evidence, _: list[Change]) -> Candidate | None:
    ka, kb = ev.fa.get("n_classes"), ev.fb.get("n_classes")
    d = ev.strongest()
    if ka and kb and ka != kb:
        return (
            0.65 * _m(d.effect),
            _symptom(d),
            f"the label set changed ({ka} → {kb} classes): the chance level "
            f"ln K moved {_fmt(ev.fa.get('chance_loss'))} → {_fmt(ev.fb.get('chance_loss'))}; {_describe(d)}",
        )
    return (
        0.15 * _m(d.effect),
        _symptom(d),
        f"the label → index map changed ({ch.detail}); training from scratch "
        "is invariant to a relabelling, so it rarely moves the curve itself",
    )


def _content(ch: Change, ev: Evidence, _: list[Change]) -> Candidate | None:
    d = ev.strongest()
    return (
        0.45 * _m(d.effect),
        _symptom(d),
        f"different {ch.split or ''} rows ({ch.detail}): the task itself changed; {_describe(d)}",
    )


def _rows(ch: Change, ev: Evidence, _: list[Change]) -> Candidate | None:
    a, b = _num(ch.a), _num(ch.b)
    h = ev.d("epochs_to_half")
    if a and b and h and (h.direction < 0) == (b > a):
        return (
            0.45 * _m(h.effect),
            "epochs_to_half",
            f"{ch.split} rows {a:g} → {b:g} change the updates per "
            f"epoch x{b / a:.2g}; epochs to halve the loss {_fmt(h.a)} → {_fmt(h.b)}",
        )
    d = ev.strongest()
    return (0.3 * _m(d.effect), _symptom(d), f"{ch.split} rows {_fmt(ch.a)} → {_fmt(ch.b)}; {_describe(d)}")


def _length(ch: Change, ev: Evidence, _: list[Change]) -> Candidate | None:
    d = ev.up("plateau_length") or ev.up("epochs_to_half") or ev.strongest()
    prior = 0.4 if d.feature in ("plateau_length", "epochs_to_half") else 0.25
    return (
        prior * _m(d.effect),
        _symptom(d),
        f"sequence lengths changed ({ch.a} → {ch.b}): longer sequences carry "
        f"gradients further back and train slower; {_describe(d)}",
    )


# ---- environment


def _env(ch: Change, ev: Evidence, _: list[Change]) -> Candidate | None:
    """Package versions move numerics slightly; a qualitatively new curve rarely comes from them."""
    d = ev.strongest()
    flips = any(k.startswith("finding.") for k in ev.moved)
    small = d.effect <= 3.0 and not flips
    prior = 0.15 if ch.key in ("env.device", "env.determinism") else 0.12
    conf = prior if small else 0.04
    return (
        conf,
        _symptom(d),
        f"{_change_text(ch)}: version and device changes alter numerics slightly"
        + ("" if small else "; the curve changed too much for that")
        + f"; {_describe(d)}",
    )


MECHANISMS: list[tuple[Callable[[str], bool], Callable[[Change, Evidence, list[Change]], Candidate | None]]] = [
    (lambda k: k == "train.batch_size", _batch_size),
    (lambda k: k == "train.learning_rate", _learning_rate),
    (lambda k: k == "train.optimizer", _optimizer),
    (lambda k: k == "data.order", _order),
    (lambda k: k == "data.shuffle", _shuffle),
    (lambda k: k in HEAD_KEYS, _head),
    (lambda k: bool(_DROPOUT.match(k)), _regularisation),
    (lambda k: bool(_CAPACITY.match(k)), _capacity),
    (lambda k: k == "train.epochs", _epochs),
    (lambda k: k == "train.clipnorm", _clipnorm),
    (lambda k: k in ("data.class_balance", "train.class_weight"), _class_balance),
    (lambda k: k == "data.labels", _labels),
    (lambda k: k == "data.content", _content),
    (lambda k: k == "data.rows", _rows),
    (lambda k: k == "data.length", _length),
    (lambda k: k.startswith("env."), _env),
    (lambda k: k == "data.source", source_mechanism.data_source),
]
