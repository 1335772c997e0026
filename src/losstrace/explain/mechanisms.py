"""The catalogue of cause mechanisms: how a change of one kind moves a training curve.

Each mechanism reads one material change (a params key, a data aspect, an `env.<package>`)
and the evidence (both runs' curve features and the material behaviour deltas), and
returns a candidate `(confidence, symptom, why)` when the deltas it predicts are there:
smaller batch → noisier batches by ~sqrt(b_a/b_b); lower learning rate → plateau and slower
descent; rows grouped by label → nothing generalises; ... Confidence is mechanism
specificity x direction/magnitude agreement x size of the effect, so the change whose
mechanism matches the observed symptom best ranks first.

`MECHANISMS` maps keys to mechanisms, first match wins; `mechanism_for` looks one up.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from losstrace.explain.deltas import LOSS_FEATURES, Change, Delta, fmt
from losstrace.explain.diagnose import head_mismatch
from losstrace.explain.symptoms import DEFAULT_LR
from losstrace.params import parse_value

HEAD_KEYS = ("train.output_activation", "train.loss", "train.from_logits", "train.output_units")
_DROPOUT = re.compile(r"^train\.model\.(dropout|rnn\.dropout|rnn\.recurrent_dropout|dense\.\d+\.l2)$")
_CAPACITY = re.compile(
    r"^train\.model\.(rnn\.(units|layers|bidirectional|cell)|dense\.\d+\.units"
    r"|dense\.\d+\.activation|embedding\.dim|conv\.filters)$"
)


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


def effect_weight(effect: float) -> float:
    """Effect size → [0.6, 1]: 0.6 at the seed tolerance, 1.0 at 4x it."""
    return min(1.0, 0.6 + 0.4 * (max(effect, 1.0) - 1.0) / 3.0)


def _num(x: Any) -> float | None:
    v = parse_value(x)
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def symptom_of(d: Delta) -> str:
    return d.feature.removeprefix("finding.")


def describe(d: Delta) -> str:
    if d.feature.startswith("finding."):
        return f"{symptom_of(d)} {d.change}"
    return f"{d.feature} {fmt(d.a)} → {fmt(d.b)} ({d.change})"


def change_text(ch: Change) -> str:
    return f"{ch.key} {fmt(ch.a)} → {fmt(ch.b)}"


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
                0.92 * (0.55 + 0.45 * agree) * effect_weight(d.effect),
                _finding_or(ev, "noisy_loss", "batch_noise"),
                f"{head}; per-batch loss noise {'rose' if d.ratio > 1 else 'fell'} {measured:.1f}x "
                f"({fmt(d.a)} → {fmt(d.b)})",
            )
        )
    j = ev.d("epoch_jitter")
    if j and (j.direction > 0) == (expected > 1):
        cands.append(
            (
                0.6 * effect_weight(j.effect),
                _finding_or(ev, "noisy_loss", "epoch_jitter"),
                f"{head}: at the same learning rate each step is noisier (lr/batch x{ba / bb:.2g}); "
                f"epoch loss jitter {fmt(j.a)} → {fmt(j.b)}",
            )
        )
    h = ev.d("epochs_to_half")
    if h and (h.direction < 0) == (bb < ba):  # smaller batch → more updates per epoch → faster per epoch
        cands.append(
            (
                0.45 * effect_weight(h.effect),
                "epochs_to_half",
                f"train.batch_size {ba:g} → {bb:g} changes updates per epoch x{ba / bb:.2g}; "
                f"epochs to halve the loss {fmt(h.a)} → {fmt(h.b)}",
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
    best = _best(_smaller_steps(head, s, ev) if factor < 1 else _larger_steps(head, s, ev))
    return (best[0] * prior, best[1], best[2]) if best else None


def _smaller_steps(head: str, s: float, ev: Evidence) -> list[Candidate | None]:
    """Smaller steps: a plateau (often at chance), a loss that never leaves its start, slower
    descent, less progress in the same epochs, a calmer curve."""
    fb = ev.fb
    cands: list[Candidate | None] = []
    p = ev.up("plateau_length")
    if p or ev.appeared("plateau"):
        eff = p.effect if p else 3.0
        lvl = fb.get("plateau_level")
        at = f" (flat at {lvl:.3g}{_chance_note(lvl, fb)})" if lvl is not None else ""
        cands.append(
            (
                0.88 * s * effect_weight(eff),
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
                f" ({fmt(ev.fa.get('best_loss'))} → {fmt(fb.get('best_loss'))})",
            )
        )
    h = ev.up("epochs_to_half")
    if h:
        cands.append((0.75 * s * effect_weight(h.effect), "epochs_to_half", f"{head}; slower descent{_half_note(ev)}"))
    for name in ("best_loss", "final_loss"):
        d = ev.up(name)
        if d:
            cands.append(
                (0.55 * s * effect_weight(d.effect), name, f"{head}; {describe(d)}: less progress in the same epochs")
            )
    for name in ("epoch_jitter", "batch_noise"):
        d = ev.down(name)
        if d:
            cands.append((0.55 * s * effect_weight(d.effect), name, f"{head}; calmer curve: {describe(d)}"))
    return cands


def _larger_steps(head: str, s: float, ev: Evidence) -> list[Candidate | None]:
    """Larger steps: divergence, an epoch loss that bounces, a model that jumps out of any
    descent, a plateau that goes away, faster descent, noisier batches."""
    fb = ev.fb
    cands: list[Candidate | None] = []
    if ev.appeared("diverged") or ev.up("diverged"):
        cands.append((0.92 * s, "diverged", f"{head}; the loss now diverges (NaN or > explode_factor x start)"))
    j = ev.up("epoch_jitter")
    if j or ev.appeared("noisy_loss"):
        eff = j.effect if j else 3.0
        cands.append(
            (
                0.85 * s * effect_weight(eff),
                _finding_or(ev, "noisy_loss", "epoch_jitter"),
                f"{head}; steps overshoot, so the epoch loss bounces"
                + (f" (jitter {fmt(j.a)} → {fmt(j.b)})" if j else ""),
            )
        )
    if ev.appeared("not_learning"):
        cands.append((0.6 * s, "not_learning", f"{head}; the model jumps out of any descent and sticks"))
    p = ev.down("plateau_length")
    if p or ev.gone("plateau"):
        cands.append(
            (
                0.8 * s * effect_weight(p.effect if p else 3.0),
                _finding_or(ev, "plateau", "plateau_length"),
                f"{head}; the plateau is gone ({fmt(ev.fa.get('plateau_length'))} → "
                f"{fmt(fb.get('plateau_length'))} epochs){_half_note(ev)}",
            )
        )
    h = ev.down("epochs_to_half")
    if h:
        cands.append((0.7 * s * effect_weight(h.effect), "epochs_to_half", f"{head}; faster descent{_half_note(ev)}"))
    d = ev.up("batch_noise")
    if d:
        cands.append((0.5 * s * effect_weight(d.effect), "batch_noise", f"{head}; {describe(d)}"))
    return cands


def _half_note(ev: Evidence) -> str:
    a, b = ev.fa.get("epochs_to_half"), ev.fb.get("epochs_to_half")
    return f"; epochs to halve the loss {fmt(a)} → {fmt(b)}" if a != b else ""


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
        return (0.12, symptom_of(ev.strongest()), f"train rows were reshuffled ({ch.a} → {ch.b}): a seed-level change")
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
                f"{head}: {mech}; best val loss {fmt(ev.fa.get('best_val_loss'))} → "
                f"{fmt(ev.fb.get('best_val_loss'))} (input-blind level {fmt(blind)})",
            )
        )
    v = ev.d("best_val_loss")
    if v and (v.direction > 0) == grouped:
        cands.append((0.8 * effect_weight(v.effect), "best_val_loss", f"{head}: {mech}; {describe(v)}"))
    acc = ev.d("final_val_accuracy")
    if acc and (acc.direction < 0) == grouped:
        cands.append((0.7 * effect_weight(acc.effect), "final_val_accuracy", f"{head}: {mech}; {describe(acc)}"))
    n = ev.d("batch_noise")
    if n and (n.direction > 0) == grouped:
        cands.append(
            (0.5 * effect_weight(n.effect), "batch_noise", f"{head}: label blocks make batch loss swing; {describe(n)}")
        )
    j = ev.d("epoch_jitter")
    if j and (j.direction > 0) == grouped:
        # A model that learns anyway chases each block in turn: where an epoch ends depends
        # on the block it ended on, so epoch losses bounce (report 001's jitter).
        cands.append(
            (
                0.6 * effect_weight(j.effect),
                _finding_or(ev, "noisy_loss", "epoch_jitter"),
                f"{head}: label blocks pull the model towards one label after another, so the epoch loss "
                f"{'bounces' if grouped else 'settles'}; {describe(j)}",
            )
        )
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
    head = f"{change_text(ch)}"
    cands: list[Candidate | None] = []
    if bad_b and not bad_a:
        why = f"{head} makes activation and loss disagree (fix: {bad_b}), so the loss sticks"
        if ev.appeared("not_learning"):
            cands.append(
                (
                    0.92,
                    "not_learning",
                    f"{why}: best loss {fmt(ev.fb.get('best_loss'))} vs start {fmt(ev.fb.get('initial_loss'))}",
                )
            )
        if ev.appeared("saturated_predictions"):
            cands.append((0.85, "saturated_predictions", f"{why}; outputs pin near 0 or stop summing to 1"))
        d = ev.strongest()
        cands.append((0.55 * effect_weight(d.effect), symptom_of(d), f"{why}; {describe(d)}"))
    elif bad_a and not bad_b:
        why = f"{head} fixes the activation/loss disagreement of run a ({bad_a})"
        if ev.gone("not_learning"):
            cands.append((0.92, "not_learning", f"{why}: the loss now leaves its start"))
        if ev.gone("saturated_predictions"):
            total = ev.fa.get("output_sum")
            sums = f" (a row's outputs added up to {fmt(total)}, now {fmt(ev.fb.get('output_sum'))})" if total else ""
            cands.append((0.85, "saturated_predictions", f"{why}: the outputs are a distribution again{sums}"))
        d = ev.strongest()
        cands.append((0.55 * effect_weight(d.effect), symptom_of(d), f"{why}; {describe(d)}"))
    elif ch.key == "train.loss":
        d = next((ev.d(n) for n in LOSS_FEATURES if ev.d(n)), None)
        if d:
            cands.append(
                (
                    0.45 * effect_weight(d.effect),
                    d.feature,
                    f"{head}: loss values are on a different scale; {describe(d)}",
                )
            )
    return _best(cands)


# ---- regularisation / capacity / epochs


def _regularisation(ch: Change, ev: Evidence, _: list[Change]) -> Candidate | None:
    a, b = _num(ch.a) or 0.0, _num(ch.b) or 0.0
    if a == b:
        return None
    less = b < a
    head = f"{change_text(ch)} {'weakens' if less else 'strengthens'} regularisation"
    cands: list[Candidate | None] = []
    if (ev.appeared("overfitting") and less) or (ev.gone("overfitting") and not less):
        onset = ev.fb.get("overfit_onset") if less else ev.fa.get("overfit_onset")
        cands.append(
            (
                0.88,
                "overfitting",
                f"{head}; val loss {'now' if less else 'no longer'} turns up after its best "
                f"(epoch {fmt(onset)}) while train loss keeps falling",
            )
        )
    r = ev.d("val_rise")
    if r and (r.direction > 0) == less:
        cands.append(
            (
                0.75 * effect_weight(r.effect),
                "val_rise",
                f"{head}; val loss rise after its best {fmt(r.a)} → {fmt(r.b)}",
            )
        )
    v = ev.d("final_val_loss")
    if v and (v.direction > 0) == less:
        cands.append((0.6 * effect_weight(v.effect), "final_val_loss", f"{head}; {describe(v)}"))
    t = ev.d("best_loss")
    if t and (t.direction < 0) == less:
        cands.append(
            (
                0.45 * effect_weight(t.effect),
                "best_loss",
                f"{head}; the train set is fit {'more' if less else 'less'} closely ({describe(t)})",
            )
        )
    return _best(cands)


def _capacity(ch: Change, ev: Evidence, _: list[Change]) -> Candidate | None:
    a, b = _num(ch.a), _num(ch.b)
    more = a is not None and b is not None and b > a
    head = f"{change_text(ch)} changes model capacity"
    cands: list[Candidate | None] = []
    if ev.appeared("overfitting") and (more or a is None):
        cands.append((0.5, "overfitting", f"{head}; more capacity memorises sooner: val loss now turns up"))
    d = ev.strongest()
    cands.append((0.3 * effect_weight(d.effect), symptom_of(d), f"{head}; {describe(d)}"))
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
        cands.append((0.55 * effect_weight(f.effect), "final_loss", f"{head}; {describe(f)}"))
    v = ev.d("final_val_loss")
    if v:
        cands.append((0.4 * effect_weight(v.effect), "final_val_loss", f"{head}; {describe(v)}"))
    return _best(cands)


def _clipnorm(ch: Change, ev: Evidence, _: list[Change]) -> Candidate | None:
    a, b = _num(ch.a) or 0.0, _num(ch.b) or 0.0
    clipped_now = b > 0 and (a == 0 or b < a)
    if (ev.gone("diverged") or ev.down("diverged")) and clipped_now:
        return (0.8, "diverged", f"{change_text(ch)} caps each update: the explosion is gone")
    if (ev.appeared("diverged") or ev.up("diverged")) and not clipped_now:
        return (0.75, "diverged", f"{change_text(ch)} removes the cap on updates: the loss now explodes")
    j = ev.d("epoch_jitter")
    if j and (j.direction < 0) == clipped_now:
        return (0.45 * effect_weight(j.effect), "epoch_jitter", f"{change_text(ch)}; {describe(j)}")
    return None


# ---- data aspects


def _class_balance(ch: Change, ev: Evidence, _: list[Change]) -> Candidate | None:
    head = f"class balance changed ({ch.detail})" if ch.key.startswith("data.") else change_text(ch)
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
        cands.append((0.6 * effect_weight(p.effect), "pred_top_share", f"{head}; {describe(p)}"))
    acc = ev.d("final_val_accuracy")
    if acc:
        cands.append((0.45 * effect_weight(acc.effect), "final_val_accuracy", f"{head}; {describe(acc)}"))
    loss = next((ev.d(n) for n in LOSS_FEATURES if ev.d(n)), None)
    if loss:
        cands.append(
            (
                0.35 * effect_weight(loss.effect),
                loss.feature,
                f"{head}: the prior loss (entropy of class shares) moved "
                f"{fmt(ev.fa.get('prior_loss'))} → {fmt(ev.fb.get('prior_loss'))}; {describe(loss)}",
            )
        )
    return _best(cands)


def _labels(ch: Change, ev: Evidence, _: list[Change]) -> Candidate | None:
    ka, kb = ev.fa.get("n_classes"), ev.fb.get("n_classes")
    d = ev.strongest()
    if ka and kb and ka != kb:
        return (
            0.65 * effect_weight(d.effect),
            symptom_of(d),
            f"the label set changed ({ka} → {kb} classes): the chance level "
            f"ln K moved {fmt(ev.fa.get('chance_loss'))} → {fmt(ev.fb.get('chance_loss'))}; {describe(d)}",
        )
    return (
        0.15 * effect_weight(d.effect),
        symptom_of(d),
        f"the label → index map changed ({ch.detail}); training from scratch "
        "is invariant to a relabelling, so it rarely moves the curve itself",
    )


def _content(ch: Change, ev: Evidence, _: list[Change]) -> Candidate | None:
    d = ev.strongest()
    return (
        0.45 * effect_weight(d.effect),
        symptom_of(d),
        f"different {ch.split or ''} rows ({ch.detail}): the task itself changed; {describe(d)}",
    )


def _rows(ch: Change, ev: Evidence, _: list[Change]) -> Candidate | None:
    a, b = _num(ch.a), _num(ch.b)
    h = ev.d("epochs_to_half")
    if a and b and h and (h.direction < 0) == (b > a):
        return (
            0.45 * effect_weight(h.effect),
            "epochs_to_half",
            f"{ch.split} rows {a:g} → {b:g} change the updates per "
            f"epoch x{b / a:.2g}; epochs to halve the loss {fmt(h.a)} → {fmt(h.b)}",
        )
    d = ev.strongest()
    return (0.3 * effect_weight(d.effect), symptom_of(d), f"{ch.split} rows {fmt(ch.a)} → {fmt(ch.b)}; {describe(d)}")


def _length(ch: Change, ev: Evidence, _: list[Change]) -> Candidate | None:
    d = ev.up("plateau_length") or ev.up("epochs_to_half") or ev.strongest()
    prior = 0.4 if d.feature in ("plateau_length", "epochs_to_half") else 0.25
    return (
        prior * effect_weight(d.effect),
        symptom_of(d),
        f"sequence lengths changed ({ch.a} → {ch.b}): longer sequences carry "
        f"gradients further back and train slower; {describe(d)}",
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
        symptom_of(d),
        f"{change_text(ch)}: version and device changes alter numerics slightly"
        + ("" if small else "; the curve changed too much for that")
        + f"; {describe(d)}",
    )


# ---- data source


def _data_source(ch: Change, ev: Evidence, changes: list[Change]) -> Candidate | None:
    """Another source is another dataset: other rows, classes and sequence lengths, so the task
    itself changed and every curve feature may move with it. It is the root of any data.content /
    data.labels / data.rows change listed beside it, so it ranks just above them."""
    top = ev.strongest()
    if top is None:
        return None
    facts = []
    ka, kb = ev.fa.get("n_classes"), ev.fb.get("n_classes")
    if ka and kb and ka != kb:
        facts.append(f"{ka} → {kb} classes, so the chance loss ln K moved too")
    aspects = sorted({c.key for c in changes if c.kind == "data"})
    if aspects:
        facts.append("the fingerprint confirms it: " + ", ".join(aspects))
    why = (
        f"data.source {ch.a} → {ch.b}: another dataset is another task (its rows, classes and "
        "lengths), so its curve is a new baseline rather than a shifted one"
        + (f"; {'; '.join(facts)}" if facts else "")
        + f"; {describe(top)}"
    )
    prior = 0.7 if ka and kb and ka != kb else 0.55
    return prior * effect_weight(top.effect), symptom_of(top), why


# ---- what the model reads of each sequence


def _padding_reach(ch: Change, ev: Evidence, _: list[Change]) -> Candidate | None:
    """Post-padded sequences without a mask: the last recurrent state is read after the
    padding, so it mostly reflects padding and the loss sits near its start. A mask
    (embedding.mask_zero) or pre-padding lets the state read the real steps."""
    value = parse_value(ch.b)
    reads_real = value is True if ch.key.endswith("mask_zero") else value == "pre"
    head = f"{change_text(ch)} " + (
        "lets the final recurrent state read the real steps instead of the padding"
        if reads_real
        else "makes the final recurrent state read mostly padding"
    )
    return _learning_unlocked(ev, reads_real, head)


def _learning_unlocked(ev: Evidence, better: bool, head: str) -> Candidate | None:
    """A change that lets the model see its signal (better) or hides it: learning starts or stops."""
    cands: list[Candidate | None] = []
    if (ev.gone("not_learning") and better) or (ev.appeared("not_learning") and not better):
        cands.append(
            (
                0.9,
                "not_learning",
                f"{head}: the loss {'now leaves' if better else 'no longer leaves'} its start "
                f"(best loss {fmt(ev.fa.get('best_loss'))} → {fmt(ev.fb.get('best_loss'))}, "
                f"best val loss {fmt(ev.fa.get('best_val_loss'))} → {fmt(ev.fb.get('best_val_loss'))})",
            )
        )
    if (ev.gone("plateau") and better) or (ev.appeared("plateau") and not better):
        cands.append((0.85, "plateau", f"{head}: the plateau {'is gone' if better else 'appears'}{_half_note(ev)}"))
    for name, prior, lower_is_better in (
        ("best_loss", 0.6, True),
        ("final_val_accuracy", 0.55, False),
        ("epochs_to_half", 0.5, True),
    ):
        d = ev.d(name)
        if d and (d.direction < 0) == (lower_is_better == better):
            cands.append((prior * effect_weight(d.effect), name, f"{head}; {describe(d)}"))
    return _best(cands)


def _text_level(ch: Change, ev: Evidence, _: list[Change]) -> Candidate | None:
    """Characters instead of words: no word is unseen at val time, but sequences get longer."""
    chars = str(ch.b) == "char"
    head = f"{change_text(ch)} " + (
        "reads characters: val text has no unseen words, sequences are longer"
        if chars
        else "reads words: shorter sequences, but val words unseen in train carry no signal"
    )
    v = ev.d("best_val_loss")
    return _learning_unlocked(ev, bool(v and v.direction < 0), head) or (
        (0.5 * effect_weight(v.effect), "best_val_loss", f"{head}; {describe(v)}") if v else None
    )


# ---- callbacks and schedules


def _early_stopping(ch: Change, ev: Evidence, _: list[Change]) -> Candidate | None:
    """Early stopping ends training once its monitor stops improving for `patience` epochs:
    fewer epochs, so less time to overfit after the best one."""
    ea, eb = ev.fa.get("epochs"), ev.fb.get("epochs")
    if not ea or not eb or ea == eb:
        return None
    shorter = eb < ea
    head = f"{change_text(ch)} {'ends training sooner' if shorter else 'lets training run longer'} ({ea} → {eb} epochs)"
    cands: list[Candidate | None] = []
    if (ev.gone("overfitting") and shorter) or (ev.appeared("overfitting") and not shorter):
        cands.append(
            (
                0.85,
                "overfitting",
                f"{head}: the val loss rise after its best epoch is {'cut short' if shorter else 'back'}",
            )
        )
    for name, prior in (("val_rise", 0.7), ("final_val_loss", 0.55), ("final_loss", 0.4)):
        d = ev.d(name)
        if d and (d.direction < 0) == shorter:
            cands.append((prior * effect_weight(d.effect), name, f"{head}; {describe(d)}"))
    d = ev.strongest()
    cands.append((0.35 * effect_weight(d.effect), symptom_of(d), f"{head}; {describe(d)}"))
    return _best(cands)


def _checkpoint(ch: Change, ev: Evidence, _: list[Change]) -> Candidate | None:
    """A val checkpoint monitor keeps the best val epoch's weights: the curve is the same, but
    the model saved, evaluated and whose predictions are judged is the best one, not the last."""
    keeps_best = str(parse_value(ch.b) or "").startswith("val_")
    f = ev.fb if keeps_best else ev.fa
    head = (
        f"{change_text(ch)} {'keeps' if keeps_best else 'no longer keeps'} the weights of the best val epoch "
        f"(epoch {fmt(f.get('best_val_epoch'))}: val loss {fmt(f.get('best_val_loss'))}, "
        f"{fmt(f.get('final_val_loss'))} at the last): the curve is the same, the model evaluated is "
        f"{'the best epoch' if keeps_best else 'the last epoch'}'s"
    )
    cands: list[Candidate | None] = []
    for name in ("saturated_share", "pred_top_share"):
        d = ev.d(name)
        if d:
            cands.append((0.7 * effect_weight(d.effect), name, f"{head}; its val predictions: {describe(d)}"))
    d = ev.strongest()
    cands.append((0.25 * effect_weight(d.effect), symptom_of(d), f"{head}; {describe(d)}"))
    return _best(cands)


_SCHEDULES = {
    "constant": "keeps the learning rate constant",
    "cosine": "decays the learning rate along a cosine towards 0",
    "plateau": "lowers the learning rate whenever val loss stalls",
    "scheduler": "sets the learning rate epoch by epoch (LearningRateScheduler)",
    "exponential_decay": "decays the learning rate exponentially",
    "inverse_time_decay": "decays the learning rate as 1 / time",
    "polynomial_decay": "decays the learning rate along a polynomial",
    "piecewise_constant_decay": "lowers the learning rate in steps",
    "cosine_decay_restarts": "decays the learning rate along cosines that restart",
}


def _lr_schedule(ch: Change, ev: Evidence, _: list[Change]) -> Candidate | None:
    """A decaying schedule takes smaller steps late in training: a calmer, lower end of the curve."""
    decays = str(ch.b) != "constant"
    what = " and ".join(
        _SCHEDULES.get(part, "changes the learning rate over training") for part in str(ch.b).split("+")
    )
    head = f"{change_text(ch)} {what}"
    cands: list[Candidate | None] = []
    j = ev.d("epoch_jitter")
    if (j and (j.direction < 0) == decays) or (ev.gone("noisy_loss") and decays):
        cands.append(
            (
                0.8 * effect_weight(j.effect if j else 3.0),
                _finding_or(ev, "noisy_loss", "epoch_jitter"),
                f"{head}: {'smaller' if decays else 'larger'} late steps "
                f"{'settle' if decays else 'shake'} the epoch loss"
                + (f" (jitter {fmt(j.a)} → {fmt(j.b)})" if j else ""),
            )
        )
    for name, prior in (("batch_noise", 0.6), ("final_loss", 0.6), ("final_val_loss", 0.55)):
        d = ev.d(name)
        if d and (d.direction < 0) == decays:
            cands.append((prior * effect_weight(d.effect), name, f"{head}; {describe(d)}"))
    return _best(cands)


def _lr_schedule_setting(ch: Change, ev: Evidence, _: list[Change]) -> Candidate | None:
    """A schedule's own setting (decay steps, plateau factor or patience, ...) under the same
    schedule: how soon and how far the learning rate falls, so how calm the late curve is."""
    head = f"{change_text(ch)}: the same schedule lowers the learning rate at another pace"
    cands: list[Candidate | None] = []
    for name, prior in (("epoch_jitter", 0.5), ("batch_noise", 0.45), ("final_loss", 0.45), ("final_val_loss", 0.4)):
        d = ev.d(name)
        if d:
            cands.append((prior * effect_weight(d.effect), name, f"{head}; {describe(d)}"))
    return _best(cands)


# ---- recurrent kernel settings


_KERNEL = re.compile(r"^train\.model\.rnn\.(activation|recurrent_activation|unroll|use_bias|reset_after)$")


def _kernel(ch: Change, ev: Evidence, _: list[Change]) -> Candidate | None:
    """Settings that decide whether the fast cuDNN kernel can run: speed, not learning."""
    d = ev.strongest()
    what = (
        "unrolling computes the same steps with another kernel"
        if ch.key.endswith(".unroll")
        else "it changes the cell's arithmetic slightly and decides whether the fast cuDNN kernel can run"
    )
    small = d.effect <= 3.0 and not any(k.startswith("finding.") for k in ev.moved)
    return (
        (0.2 if small else 0.08) * effect_weight(d.effect),
        symptom_of(d),
        f"{change_text(ch)}: {what}, so it rarely moves the curve"
        + ("" if small else "; the curve changed more than that")
        + f"; {describe(d)}",
    )


Mechanism = Callable[[Change, Evidence, list[Change]], Candidate | None]

MECHANISMS: list[tuple[Callable[[str], bool], Mechanism]] = [
    (lambda k: k == "train.batch_size", _batch_size),
    (lambda k: k == "train.learning_rate", _learning_rate),
    (lambda k: k == "train.optimizer", _optimizer),
    (lambda k: k == "data.order", _order),
    (lambda k: k == "data.shuffle", _shuffle),
    (lambda k: k == "data.source", _data_source),
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
    (lambda k: k in ("train.model.embedding.mask_zero", "data.padding"), _padding_reach),
    (lambda k: k == "data.text_level", _text_level),
    (
        lambda k: k in ("train.callbacks.early_stopping", "train.callbacks.monitor", "train.callbacks.patience"),
        _early_stopping,
    ),
    (lambda k: k == "train.callbacks.checkpoint_monitor", _checkpoint),
    (lambda k: k == "train.lr_schedule", _lr_schedule),
    (lambda k: k.startswith("lr_schedule."), _lr_schedule_setting),
    (lambda k: bool(_KERNEL.match(k)), _kernel),
]


def mechanism_for(key: str) -> Mechanism | None:
    """The catalogue's mechanism for a change key (first match), or None when it has none."""
    return next((mechanism for match, mechanism in MECHANISMS if match(key)), None)
