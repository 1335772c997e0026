"""One prescription per run: every finding's params changes reconciled into one set.

Each rule suggests changes for its own symptom, so two rules can pull one key two ways
(a plateau raises the learning rate, jitter lowers it) or treat one symptom twice (lint
and `noisy_loss` both size the batch). Applying all of them is impossible, and applying
any one blindly can undo another's fix. Here conflicts are settled by mechanism, and each
change says why; no key appears twice. Only warnings and errors prescribe: an info
finding reports, it does not ask for a change.

Pure: a list of finding dicts (as diagnosis.json holds them) and the run's context
(flat `params`, `train_rows`) in, a list of `{key, from, to, why, findings}` out.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from losstrace.explain.diagnose import NOISE_SCALE_ROOM, _nice_lr, change, show
from losstrace.findings import SEVERITIES, Finding, parse_changes

LR = "train.learning_rate"
BATCH = "train.batch_size"
SCHEDULE = "train.lr_schedule"
MIN_STEPS = 8  # a batch may grow while an epoch keeps at least this many updates (as diagnose)

# Why a finding's change helps, in one line each (lint findings carry their own message).
MECHANISM = {
    "diverged": "the loss exploded: a smaller step (and clipping) keeps updates bounded",
    "not_learning": "the loss never left its start: the model must first be able to fit at all",
    "noisy_loss": "the loss scatters beyond its trend: sampling noise or a step too large for it",
    "plateau": "the loss sat flat before dropping: a larger step (or a mask) shortens the wait",
    "overfitting": "val loss rises while train loss falls: regularise, or keep the best epoch",
    "saturated_predictions": "outputs are pinned near 0/1 while the model is not that right",
    "majority_collapse": "the model predicts (almost) one class",
}


@dataclass
class Candidate:
    """One change one finding asks for."""

    key: str
    old: Any
    new: Any
    code: str
    severity: str
    finding: dict[str, Any]


@dataclass
class Prescription:
    """The reconciled changes, and what was left out (and why)."""

    changes: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, key: str, old: Any, new: Any, why: str, codes: list[str]) -> None:
        if old == new or any(c["key"] == key for c in self.changes):
            return
        self.changes.append({"key": key, "from": old, "to": new, "why": why, "findings": _unique(codes)})


def prescribe(findings: list[dict[str, Any] | Finding], context: dict[str, Any]) -> Prescription:
    """Reconcile the warnings' and errors' changes; see the module docstring."""
    params = context.get("params") or {}
    cands = candidates(findings, params)
    out = Prescription()
    by_key: dict[str, list[Candidate]] = {}
    for c in cands:
        by_key.setdefault(c.key, []).append(c)
    codes = {c.code for c in cands} | {_d(f)["code"] for f in findings if _d(f).get("severity") != "info"}
    _one_fix_per_symptom(by_key, out)
    old_batch = _current(params, BATCH, context.get("batch_size"))
    _batch(by_key.pop(BATCH, []), by_key.get(LR, []), context, out)
    noise = sorted(codes & GRADIENT_NOISE)
    _learning_rate(by_key.pop(LR, []), by_key.pop(SCHEDULE, []), params, out, _batch_growth(out, old_batch, noise))
    _regularisation(by_key, codes, params, out)
    for key, group in by_key.items():
        _single_key(key, group, out)
    return out


def as_json(p: Prescription) -> list[dict[str, Any]]:
    return [dict(c) for c in p.changes]


def with_prescription(diagnosis: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
    """The diagnosis JSON with its `prescription` (and `prescription_notes`: what was left out, why).

    Findings that size the batch or the learning rate are told the prescription's, so the
    run's advice names one value of each (see agree_with_prescription)."""
    p = prescribe(diagnosis.get("findings") or [], context)
    findings = agree_with_prescription(diagnosis.get("findings") or [], p)
    return {
        **diagnosis,
        "findings": findings,
        "prescription": as_json(p),
        **({"prescription_notes": p.notes} if p.notes else {}),
    }


# The keys several rules size on their own, and where a finding keeps the value it asked for.
AGREED = {BATCH: "batch_size_asked", LR: "learning_rate_asked"}


def agree_with_prescription(findings: list[dict[str, Any] | Finding], p: Prescription) -> list[dict[str, Any]]:
    """The findings (as dicts) with every batch size and learning rate set to the prescription's.

    lint's rule of thumb (1% of the rows), noisy_loss's noise-sized batch and the
    prescription's capped one are three sizes for one run, and a plateau's raise is bounded
    by the gradient noise other findings warn of; the prescription's value is the one that
    weighed the others (and `losstrace fix` applies it), so a finding that asked for another
    names it, and keeps its own in `evidence.<batch_size|learning_rate>_asked`. When the
    prescription keeps the value, the finding's suggestion says so."""
    out = [_d(f) for f in findings]
    for key, evidence_key in AGREED.items():
        target = next((c for c in p.changes if c["key"] == key), None)
        kept = next((n for n in p.notes if n.startswith(f"{key} not ")), None)
        if target is None and kept is None:
            continue
        out = [_agree(f, key, evidence_key, target, kept) for f in out]
    return out


def _agree(f: dict[str, Any], key: str, evidence_key: str, target: dict | None, kept: str | None) -> dict[str, Any]:
    asked = [c for c in f.get("changes") or [] if c["key"] == key and not c.get("alternative")]
    if not asked or (target is not None and asked[0]["to"] == target["to"]):
        return f
    f = {**f, "evidence": {**(f.get("evidence") or {}), evidence_key: asked[0]["to"]}}
    if target is not None:
        clause = re.compile(rf"{re.escape(key)}: [^\s;,()]+ → [^\s;,()]+")
        f["suggestion"] = clause.sub(change(key, target["from"], target["to"]), f["suggestion"], 1)
        f["changes"] = [{**c, "to": target["to"]} if c is asked[0] else c for c in f["changes"]]
        f["suggestion"] += f" (the prescription's value; this rule alone asked for {show(asked[0]['to'])})"
    else:
        f["suggestion"] += f"; the prescription keeps {key}: {kept.split(': ', 1)[-1]}"
    return f


# ---------------------------------------------------------------- candidates


def _d(f: dict[str, Any] | Finding) -> dict[str, Any]:
    return f.to_dict() if isinstance(f, Finding) else f


def candidates(findings: list[dict[str, Any] | Finding], params: dict[str, Any]) -> list[Candidate]:
    """Every warning's and error's first-choice changes (alternatives after `or` are not
    taken), in the findings' order; companions get their `from` from the run's params."""
    out: list[Candidate] = []
    for f in map(_d, findings):
        if f.get("severity") not in ("error", "warning"):
            continue
        for ch in f.get("changes") or parse_changes(f.get("suggestion", "")):
            if ch.get("alternative"):
                continue
            old = _current(params, ch["key"], ch.get("from"))
            if old == ch["to"]:
                continue
            out.append(Candidate(ch["key"], old, ch["to"], f["code"], f["severity"], f))
    return out


def _current(params: dict[str, Any], key: str, fallback: Any) -> Any:
    """The run's value of `key` (MLflow strings parsed back), else what the finding said."""
    from losstrace.findings import parse_value

    if key not in params:
        return fallback
    value = params[key]
    return parse_value(str(value).lower() if isinstance(value, bool) else str(value))


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _why(c: Candidate) -> str:
    ev = c.finding.get("evidence") or {}
    return f"{c.code}: {ev.get('message') or MECHANISM.get(c.code) or c.finding.get('suggestion', '')}"


# ---------------------------------------------------------------- mechanisms


# Two keys that fix one symptom: the first is kept, the second would only double it.
SAME_SYMPTOM = (
    (
        "train.model.embedding.mask_zero",
        "data.padding",
        "the mask already keeps padding out of the final state; pre-padding as well changes nothing more",
    ),
)


def _one_fix_per_symptom(by_key: dict[str, list[Candidate]], out: Prescription) -> None:
    for kept, dropped, why in SAME_SYMPTOM:
        if kept in by_key and dropped in by_key:
            by_key.pop(dropped)
            out.notes.append(f"{dropped} not changed: {why}")


def _pow2_at_most(x: float) -> int:
    return int(2 ** math.floor(math.log2(max(x, 1))))


def _batch(group: list[Candidate], lr_group: list[Candidate], context: dict[str, Any], out: Prescription) -> None:
    """One batch size for lint's rule of thumb and noisy_loss's measurement.

    The size sized from the measured noise wins over the rule of thumb (1% of the rows);
    a measured gradient noise scale (context `noise_scale`, train.noise_scale_every)
    sizes lint's batch too, or keeps it when the batch is already near the noise scale;
    all are capped so an epoch keeps >= MIN_STEPS updates. When noisy_loss named the
    learning rate as the driver, the curve says the step, not sampling, is the noise:
    the batch stays. With no room left under the cap the batch stays too, and the
    step (noisy_loss's learning-rate change) is what is left.
    """
    if not group:
        return
    old = group[0].old
    codes = [c.code for c in group]
    rows = int(context.get("train_rows") or 0)
    cap = _pow2_at_most(rows / MIN_STEPS) if rows else None
    if cap is not None and isinstance(old, (int, float)) and cap <= old:
        out.notes.append(
            f"{BATCH} not changed ({', '.join(codes)} asked for it): {rows} training rows leave no room for a "
            f"batch above {old} with >= {MIN_STEPS} steps per epoch; a smaller step is the knob left"
        )
        return
    noisy = [c for c in group if c.code == "noisy_loss"]
    if not noisy and any(c.code == "noisy_loss" for c in lr_group):
        out.notes.append(
            f"{BATCH} not changed ({', '.join(codes)} asked for it): noisy_loss measured the step size, not "
            "batch sampling, as the driver of the noise, so the learning rate is changed instead"
        )
        return
    scale = (context.get("noise_scale") or {}).get("b_simple")
    if not noisy and scale and isinstance(old, (int, float)):
        if old * NOISE_SCALE_ROOM >= scale:
            out.notes.append(
                f"{BATCH} not changed ({', '.join(codes)} asked for it): the measured gradient noise scale is "
                f"≈ {scale:.0f} samples and batch {old} is within {NOISE_SCALE_ROOM}x of it, where a larger "
                "batch buys few steps"
            )
            return
        target = max(_pow2_at_most(scale), old)
        why = f"{_why(group[0])}; sized by the measured gradient noise scale ≈ {scale:.0f} samples"
        if cap is not None and target > cap:
            target = cap
            why += f"; capped at {cap} so the {rows} training rows still give >= {MIN_STEPS} steps per epoch"
        out.add(BATCH, old, target, why, codes)
        return
    target = noisy[0].new if noisy else max(c.new for c in group)
    why = _why(noisy[0] if noisy else group[0])
    measured = (noisy[0].finding.get("evidence") or {}).get("noise_scale") if noisy else None
    if measured:
        why += f"; sized by the measured gradient noise scale ≈ {measured:.0f} samples"
    if len(group) > 1 and noisy:
        others = ", ".join(f"{c.code} {c.new}" for c in group if c.code != "noisy_loss")
        why += f"; {target} is sized from the measured noise (the rule of thumb said {others})"
    if cap is not None and target > cap:
        target = cap
        why += f"; capped at {cap} so the {rows} training rows still give >= {MIN_STEPS} steps per epoch"
    out.add(BATCH, old, target, why, codes)


# Findings that warn of gradient noise: a larger step adds to it (noise ∝ learning rate / batch).
GRADIENT_NOISE = {"noisy_loss", "small_batch"}


def _batch_growth(out: Prescription, old_batch: Any, noise: list[str]) -> tuple[float, list[str]] | None:
    """(how many times the prescribed batch exceeds the run's, the gradient-noise findings)
    when such a finding is a warning or error, else None."""
    if not noise:
        return None
    change = next((c for c in out.changes if c["key"] == BATCH), None)
    try:
        factor = float(change["to"]) / float(old_batch) if change else 1.0
    except (TypeError, ValueError, ZeroDivisionError):
        factor = 1.0
    return max(factor, 1.0), noise


def _learning_rate(
    group: list[Candidate],
    schedule: list[Candidate],
    params: dict[str, Any],
    out: Prescription,
    noise: tuple[float, list[str]] | None = None,
) -> None:
    """One learning rate. Opposite moves are settled by what each symptom says about the step.

    - diverged: the step is too large, whatever else; raising it would re-explode.
    - not_learning: the loss never moved; predicting one class or pinned outputs then
      come from the stuck model, not an overshoot, and a smaller step keeps it stuck.
    - plateau and noisy_loss: too small early, too large late: start higher and decay
      with a cosine schedule instead of moving the constant rate both ways.
    - otherwise the more severe finding (then the earlier: data, lint, curve) decides.
    - a raise while a warning says the gradient is noisy (noisy_loss, small_batch; `noise`)
      grows the step at most as much as the prescribed batch grows: the noise of an update
      goes as learning rate / batch, so a larger raise would undo the batch's fix (the
      linear scaling rule). A stuck model (not_learning) is raised anyway.
    Within the chosen direction the smallest move is taken.
    """
    for c in schedule:
        out.add(c.key, c.old, c.new, _why(c), [c.code])
    if not group:
        return
    old = group[0].old
    ups = [c for c in group if c.new > old]
    downs = [c for c in group if c.new < old]
    if not (ups and downs):
        if ups and noise and "not_learning" not in {c.code for c in ups}:
            _take_within_noise(ups, noise, out)
            return
        _take(ups or downs, out)
        return
    up_codes, down_codes = {c.code for c in ups}, {c.code for c in downs}
    if "diverged" in down_codes:
        _take(downs, out, f"raising it ({', '.join(sorted(up_codes))}) would undo the fix for the divergence")
    elif "not_learning" in up_codes:
        _take(
            ups,
            out,
            f"{', '.join(sorted(down_codes))} asked for a smaller step, but with a loss that never moved that "
            "is the stuck model, not an overshoot, and a smaller step would keep it stuck",
        )
    elif "plateau" in up_codes and "noisy_loss" in down_codes:
        _warm_then_decay(ups, params, out)
    else:
        first = min(group, key=lambda c: SEVERITIES.index(c.severity))
        side = ups if first in ups else downs
        other = sorted(down_codes if side is ups else up_codes)
        _take(side, out, f"{', '.join(other)} asked the opposite; the {first.severity} {first.code} decides")


def _take(side: list[Candidate], out: Prescription, settled: str = "") -> None:
    """The smallest move of one direction, credited to every finding that asked for it."""
    old = side[0].old
    pick = min(side, key=lambda c: abs(math.log(c.new / old)) if old and c.new else 0.0)
    why = _why(pick) + (f"; {settled}" if settled else "")
    out.add(pick.key, old, pick.new, why, [c.code for c in side])


def _take_within_noise(ups: list[Candidate], noise: tuple[float, list[str]], out: Prescription) -> None:
    """A raise bounded by the batch's growth (see _learning_rate)."""
    factor, codes = noise
    old = ups[0].old
    pick = min(ups, key=lambda c: abs(math.log(c.new / old)) if old and c.new else 0.0)
    bound = old * factor
    if pick.new <= bound * 1.01:
        _take(ups, out)
        return
    asked = ", ".join(sorted({c.code for c in ups}))
    why = f"{', '.join(codes)} warn{'s' if len(codes) == 1 else ''} of gradient noise, which grows with learning rate / batch size"
    if factor <= 1.01:
        out.notes.append(
            f"{LR} not raised ({asked} asked for {pick.new:g}): {why}, and the batch does not grow to make room"
        )
        return
    new = min(_nice_lr(bound), pick.new)
    out.add(
        LR,
        old,
        new,
        f"{_why(pick)}; raised {factor:g}x, as much as the batch grows, not to {pick.new:g}: {why}",
        [c.code for c in ups],
    )


def _warm_then_decay(ups: list[Candidate], params: dict[str, Any], out: Prescription) -> None:
    plateau = next(c for c in ups if c.code == "plateau")
    ev = plateau.finding.get("evidence") or {}
    span = f"epochs {ev.get('start_epoch')}-{int(ev.get('start_epoch', 0)) + int(ev.get('length', 0)) - 1}"
    why = (
        f"plateau ({span}) asks for a larger step, noisy_loss for a smaller one: too small early and too "
        f"large late is a schedule, not two opposite moves: start at {plateau.new:g} and decay it (cosine)"
    )
    codes = ["plateau", "noisy_loss"]
    out.add(LR, plateau.old, plateau.new, why, codes)
    current = str(_current(params, SCHEDULE, "constant"))
    if current != "cosine":
        out.add(SCHEDULE, current, "cosine", why, codes)


DROPOUT_KEYS = ("train.model.dropout", "train.model.rnn.dropout")
RECURRENT_DROPOUT = "train.model.rnn.recurrent_dropout"


def _regularisation(
    by_key: dict[str, list[Candidate]], codes: set[str], params: dict[str, Any], out: Prescription
) -> None:
    """Dropout only ever grows (the larger of two asks), and removing recurrent dropout
    for the cuDNN kernel moves it to the layer's input dropout while the run overfits,
    so the speed fix does not undo the overfitting fix."""
    for key in DROPOUT_KEYS:
        group = by_key.pop(key, [])
        if group:
            pick = max(group, key=lambda c: c.new)
            out.add(key, pick.old, pick.new, _why(pick), [c.code for c in group])
    rd = by_key.pop(RECURRENT_DROPOUT, [])
    if not rd:
        return
    c = rd[0]
    out.add(c.key, c.old, c.new, _why(c), [x.code for x in rd])
    old_rd = float(c.old or 0)
    if "overfitting" in codes and old_rd > 0:
        key = "train.model.rnn.dropout"
        current = next((x for x in out.changes if x["key"] == key), None)
        before = float(_current(params, key, 0.0) or 0.0)
        if current is None and before < old_rd:
            out.add(
                key,
                before,
                old_rd,
                f"{RECURRENT_DROPOUT} {old_rd:g} → 0 would remove regularisation an overfitting run needs: moved "
                "to the layer's input dropout, which keeps the cuDNN kernel",
                [c.code, "overfitting"],
            )


def _single_key(key: str, group: list[Candidate], out: Prescription) -> None:
    """Any other key: one ask is taken; several different ones go to the most severe
    (then the earliest) finding, and the others are named."""
    first = min(group, key=lambda c: SEVERITIES.index(c.severity))
    others = sorted({f"{c.code} ({c.new})" for c in group if c.new != first.new})
    why = _why(first) + (f"; {', '.join(others)} asked otherwise, the {first.severity} decides" if others else "")
    out.add(key, first.old, first.new, why, [c.code for c in group if c.new == first.new] + [first.code])
