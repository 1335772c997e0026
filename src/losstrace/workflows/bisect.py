"""`losstrace bisect A B`: prove which single change from run B moves run A's curve.

Re-runs A's recorded configuration with each single param change from B applied
(data aspects such as `data.shuffle` or `data.source` are params too), on A's data,
with A's seed, in a temporary workspace: the user's workspace and dvc.lock are never
touched. A and B are replayed as well, and A is re-run with other seeds so a change
counts only if it moves behaviour beyond seed-to-seed spread (at least half of what moved
from A to B), or gives a warning or error finding B has and no seed of A has. Every trial is an MLflow
run nested under one parent bisect run.

No TensorFlow import here: the trials run the real stages in one long-lived worker process
(replay.py), reusing the prepared data and validation results of earlier trials with the same
data and validate params; a trial's `reused` lists the stages it did not run again.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from losstrace import params as params_mod
from losstrace.errors import LosstraceError
from losstrace.params import Params
from losstrace.record import contract, store, writer
from losstrace.record.reader import load_record
from losstrace.workflows.replay import Session, Workspace

# Behaviour features compared between trials: noise, plateau, level, generalisation.
FEATURES = (
    "batch_noise",
    "epoch_jitter",
    "plateau_length",
    "loss_drop",
    "best_val_loss",
    "final_val_loss",
    "final_val_accuracy",
    "overfit_rise",
    "epochs_to_half",
)
CULPRIT_SHARE = 0.5  # a culprit reproduces at least half of A→B's behaviour change
# Changes that cannot alter the curve, so replaying them would only spend time.
INERT = ("evaluate.", "diagnose.", "validate.")


@dataclass
class Trial:
    name: str
    change: str | None
    value: Any = None
    run_id: str | None = None
    features: dict[str, Any] = field(default_factory=dict)
    codes: list[str] = field(default_factory=list)
    error: str | None = None
    share: float | None = None
    moved: dict[str, float] = field(default_factory=dict)
    data_seed: int | None = None  # the seed of the split it trains on, when not its own base.seed
    reused: list[str] = field(default_factory=list)  # stages an earlier trial's outputs stood in for


def changed_keys(pa: Params, pb: Params) -> list[tuple[str, Any, Any]]:
    """Flat params keys whose value differs (dense layers compare as one key)."""
    fa, fb = _comparable(pa), _comparable(pb)
    out = []
    for key in sorted(set(fa) | set(fb)):
        if fa.get(key) != fb.get(key) and not key.startswith(INERT):
            out.append((key, fa.get(key), fb.get(key)))
    return out


def _comparable(p: Params) -> dict[str, Any]:
    flat = {k: v for k, v in params_mod.flatten(p).items() if not k.startswith("train.model.dense")}
    flat["train.model.dense"] = json.dumps(params_mod.to_nested(p.train.model.dense))
    return flat


def apply_change(p: Params, key: str, pb: Params) -> Params:
    """A's params with `key` taken from B."""
    return params_mod.override(p, {key: params_mod.lookup(pb, key)})


def with_epochs(p: Params, epochs: int) -> Params:
    return p if epochs <= 0 else dataclasses.replace(p, train=dataclasses.replace(p.train, epochs=epochs))


def with_seed(p: Params, seed: int) -> Params:
    return dataclasses.replace(p, base=dataclasses.replace(p.base, seed=seed))


def seed_trials(p: Params, seeds: int, epochs: int, label: str = "A") -> list[tuple[Trial, Params | None]]:
    """`label` re-run, then N-1 re-runs with other training seeds on its split: the spread."""
    trials: list[tuple[Trial, Params | None]] = [(Trial(label, None), with_epochs(p, epochs))]
    trials += [
        (
            Trial(f"{label} seed {p.base.seed + i}", None, data_seed=p.base.seed),
            with_epochs(with_seed(p, p.base.seed + i), epochs),
        )
        for i in range(1, seeds)
    ]
    return trials


def plan(pa: Params, pb: Params, seeds: int, epochs: int) -> list[tuple[Trial, Params | None]]:
    """A, A with other seeds, B, then A + each single change of B.

    The seed re-runs train on A's split (only training randomness varies), so the spread
    is the one a change trial, trained on A's data, is compared against. B is replayed
    with A's inert sections (validate, evaluate, diagnose thresholds): they cannot change
    the training, and scoring B on other thresholds than the trials would credit B with
    findings no single change can reproduce. A change that is invalid on its own (it
    needs another of B's changes) is an errored trial, not the end of the bisect.
    """
    trials = seed_trials(pa, seeds, epochs)
    same_scale = dataclasses.replace(pb, validate=pa.validate, evaluate=pa.evaluate, diagnose=pa.diagnose)
    trials.append((Trial("B", None), with_epochs(same_scale, epochs)))
    for key, _, value_b in changed_keys(pa, pb):
        trial = Trial(f"A + {key}", key, value_b)
        if key == "train.epochs" and epochs > 0:
            trial.error = "not replayed: --epochs sets every trial's epoch count, the change itself"
            trials.append((trial, None))
            continue
        try:
            trials.append((trial, with_epochs(apply_change(pa, key, pb), epochs)))
        except LosstraceError as e:
            trial.error = f"invalid on its own: {e.what} ({e.fix})"
            trials.append((trial, None))
    return trials


def judge(trials: list[Trial]) -> tuple[list[str], dict[str, Any]]:
    """Score each change trial by the share of A→B's behaviour change it reproduces."""
    done = [t for t in trials if not t.error]
    a = next((t for t in done if t.name == "A"), None)
    b = next((t for t in done if t.name == "B"), None)
    if a is None or b is None:
        raise LosstraceError("bisect", "the replay of A or B failed", "see the trials' errors (--json)")
    seeds = [t for t in done if t.name.startswith("A seed") or t.name == "A"]
    feats = {id(t): _features(t) for t in done}
    spread = seed_spread(seeds)
    fa_all, fb_all = feats[id(a)], feats[id(b)]
    moved = {f: (fa_all[f], fb_all[f]) for f in FEATURES if _beyond(fa_all[f], fb_all[f], spread[f])}
    # A finding counts as new only if no re-run of A (any seed) had it.
    new_codes = sorted(set(b.codes) - {c for t in seeds for c in t.codes})
    culprits = []
    for t in done:
        if t.change is None:
            continue
        progress = {}
        for f, (fa, fb) in moved.items():
            tf = feats[id(t)][f]
            if _beyond(fa, tf, spread[f]):
                progress[f] = round(max(0.0, min(1.0, (tf - fa) / (fb - fa))), 3)
            else:
                progress[f] = 0.0
        t.moved = progress
        t.share = round(sum(progress.values()) / len(progress), 3) if progress else 0.0
        reproduces = [c for c in new_codes if c in t.codes]
        # A change is a culprit when it reproduces most of the curve change, or a warning or
        # error B has and no seed of A has: a wrong head (sigmoid + categorical loss) may
        # leave the curve within seed spread while the run is still misconfigured.
        if (moved and t.share >= CULPRIT_SHARE) or reproduces:
            culprits.append(t)
    culprits.sort(key=lambda t: (-(t.share or 0), t.change))
    summary = {
        "moved_features": {f: {"a": v[0], "b": v[1], "seed_spread": spread[f]} for f, v in moved.items()},
        "new_findings_in_b": new_codes,
    }
    return [t.change for t in culprits], summary


# Features that are None when the symptom is absent: absent is zero, so appearing counts as moving.
ZERO_WHEN_ABSENT = ("overfit_rise", "plateau_length")


def seed_spread(seeds: list[Trial]) -> dict[str, float]:
    """Per feature, how far the seed re-runs of one configuration spread (max - min)."""
    return {f: _spread([_features(t)[f] for t in seeds]) for f in FEATURES}


def _features(t: Trial) -> dict[str, Any]:
    return {f: (0.0 if t.features.get(f) is None and f in ZERO_WHEN_ABSENT else t.features.get(f)) for f in FEATURES}


def _spread(values: list[Any]) -> float:
    nums = [float(v) for v in values if isinstance(v, (int, float)) and v == v]
    return max(nums) - min(nums) if len(nums) > 1 else 0.0


def _beyond(x: Any, y: Any, spread: float) -> bool:
    """y differs from x by more than the seed spread (and a small relative tolerance)."""
    if not isinstance(x, (int, float)) or not isinstance(y, (int, float)):
        return False
    return abs(y - x) > max(2 * spread, 0.05 * abs(x), 1e-9)


def main(
    ref_a: str,
    ref_b: str,
    root: Path,
    seeds: int = 2,
    epochs: int = 0,
    inprocess: bool = False,
    session: Session | None = None,
) -> dict[str, Any]:
    """session: the trial runner and data cache to share (the gallery's); else bisect's own."""
    rec_a, rec_b = load_record(ref_a, root), load_record(ref_b, root)
    pa, pb = params_mod.from_flat(rec_a.params), params_mod.from_flat(rec_b.params)
    trials = plan(pa, pb, max(seeds, 1), epochs)
    if not any(t.change and p is not None for t, p in trials):
        return {
            "culprits": [],
            "trials": [],
            "a": rec_a.run_id,
            "b": rec_b.run_id,
            "note": "no replayable param changes between A and B (compare data and env with `losstrace diff`)",
        }
    store_uri = store.tracking_uri(root)
    tags = {contract.KIND_TAG: "bisect", "bisect.a": rec_a.run_id, "bisect.b": rec_b.run_id}
    with writer.start_run(root, f"bisect {rec_a.run_id[:8]}..{rec_b.run_id[:8]}", tags) as parent:
        ws = Workspace(store_uri, "bisect-trial", parent.run_id, inprocess=inprocess, session=session)
        run_trials(ws, trials, root, "bisect trials")
        culprits, summary = judge([t for t, _ in trials])
        result = {
            "a": rec_a.run_id,
            "b": rec_b.run_id,
            "culprits": culprits,
            **summary,
            "trials": [dataclasses.asdict(t) for t, _ in trials],
            "parent_run_id": parent.run_id,
        }
        parent.set_tags({"bisect.culprits": ",".join(culprits) or "none"})
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "bisect.json"
            path.write_text(json.dumps(result, indent=2, sort_keys=True, default=str))
            parent.log_artifact(path, "losstrace")
    return result


def run_trials(ws: Workspace, trials: list[tuple[Trial, Params | None]], root: Path, desc: str) -> None:
    """Train every planned trial in `ws` (then close it), filling in its run, features and codes."""
    from losstrace.workflows import progress

    try:
        for trial, p in progress.each(trials, desc, "trial", name=lambda planned: planned[0].name):
            if p is None:  # errored when planned
                continue
            outcome = ws.train(p, source_root=root, data_seed=trial.data_seed)
            trial.run_id, trial.error, trial.codes = outcome.run_id, outcome.error, outcome.codes
            trial.reused = list(outcome.reused)
            trial.features = {k: outcome.features.get(k) for k in FEATURES}
    finally:
        ws.close()


def render(result: dict[str, Any]) -> str:
    if not result.get("trials"):
        return result.get("note", "nothing to bisect")
    lines = [f"bisect {result['a'][:8]} → {result['b'][:8]}   culprits: {', '.join(result['culprits']) or 'none'}", ""]
    moved = result.get("moved_features", {})
    if moved:
        lines.append("behaviour that moved A → B (beyond seed spread):")
        for f, v in moved.items():
            lines.append(f"  {f:<20} {_fmt(v['a'])} → {_fmt(v['b'])}   (seed spread {_fmt(v['seed_spread'])})")
    else:
        lines.append("A and B behave alike within seed-to-seed spread: no change to blame.")
    lines += ["", f"{'trial':<36} {'share of A→B':>12}  findings"]
    for t in result["trials"]:
        share = "" if t["share"] is None else f"{t['share']:.2f}"
        what = t["error"] or ", ".join(t["codes"]) or "-"
        lines.append(f"{t['name'][:36]:<36} {share:>12}  {what}")
    return "\n".join(lines)


def _fmt(x: Any) -> str:
    return f"{x:.4g}" if isinstance(x, float) else str(x)
