"""`losstrace fix RUN`: prove the prescription by re-running it.

The run's recorded configuration is replayed (as bisect does: a temporary workspace,
the run's own data split, the user's workspace and dvc.lock untouched) with other
training seeds for the spread, then with the whole prescription and, when it holds
several changes, with each change alone. A change is verified when every symptom it
targets that the original re-runs show is gone and neither best val loss nor val
accuracy got worse beyond the seed spread. Every trial is an MLflow run nested under one
parent `fix` run.

`--apply` writes the verified changes into params.yaml the way `dvc exp run -S` does
(so the file keeps its form and the diff is the changed lines). A run recorded from a
user's own script has no params.yaml to replay: the changes come back as the Keras
argument to change.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path
from typing import Any

from losstrace import params as params_mod
from losstrace.errors import LosstraceError
from losstrace.explain.code_advice import code_advice
from losstrace.params import Params
from losstrace.record import contract, reader, store, writer
from losstrace.workflows import bisect, runs
from losstrace.workflows.replay import Session, Workspace

ORIGINAL = "original"
ALL = "prescription"
# Runs made from a params.yaml, which a workspace can replay; any other (a user's script,
# another tool's run) gets the changes as code advice.
REPLAYABLE = (contract.KIND_TRAIN, contract.KIND_GALLERY)
# Outcomes a fix must not make worse, and which way is worse.
GUARDED = {"best_val_loss": +1, "final_val_accuracy": -1}


# ---------------------------------------------------------------- plan


def plan(p: Params, prescription: list[dict[str, Any]], seeds: int, epochs: int) -> list[tuple[bisect.Trial, Any]]:
    """The original's seeds, the whole prescription, then each change alone (when several)."""
    trials = bisect.seed_trials(p, seeds, epochs, ORIGINAL)
    groups = [(ALL, prescription)]
    if len(prescription) > 1:
        groups += [(f"{ORIGINAL} + {c['key']}", [c]) for c in prescription]
    for name, changes in groups:
        values = {c["key"]: c["to"] for c in changes}
        trial = bisect.Trial(name, ",".join(values), values, data_seed=p.base.seed)
        try:
            trials.append((trial, bisect.with_epochs(params_mod.override(p, values), epochs)))
        except LosstraceError as e:
            trial.error = f"invalid: {e.what} ({e.fix})"
            trials.append((trial, None))
    return trials


# ---------------------------------------------------------------- judge


def judge(trials: list[bisect.Trial], prescription: list[dict[str, Any]]) -> dict[str, Any]:
    """Per change trial: which targeted symptoms went away, what got worse, verified or not."""
    seeds = [t for t in trials if (t.name == ORIGINAL or t.name.startswith(f"{ORIGINAL} seed")) and not t.error]
    if not seeds:
        raise LosstraceError("fix", "the re-run of the original failed", "see the trials' errors (--json)")
    spread = bisect.seed_spread(seeds)
    seen = {c for t in seeds for c in t.codes}
    targets = {c["key"]: c["findings"] for c in prescription}
    verdicts = []
    for t in trials:
        if t.change is None:
            continue
        keys = t.change.split(",")
        codes = list(dict.fromkeys(code for k in keys for code in targets.get(k, [])))
        verdicts.append(_verdict(t, keys, codes, seeds, seen, spread))
    whole = next((v for v in verdicts if v["trial"] == ALL), None)
    return {
        "verified": bool(whole and whole["verified"]),
        "seed_spread": {f: spread[f] for f in GUARDED},
        "original_findings": sorted(seen),
        "changes": verdicts,
    }


def _verdict(
    t: bisect.Trial,
    keys: list[str],
    codes: list[str],
    seeds: list[bisect.Trial],
    seen: set[str],
    spread: dict[str, float],
) -> dict[str, Any]:
    out: dict[str, Any] = {"trial": t.name, "keys": keys, "run_id": t.run_id}
    if t.error:
        return {**out, "verified": False, "error": t.error, "symptoms": {}, "worse": {}}
    symptoms = {c: ("not reproduced" if c not in seen else "remains" if c in t.codes else "gone") for c in codes}
    worse = {}
    for feature, sign in GUARDED.items():
        base = _mean([s.features.get(feature) for s in seeds])
        value = t.features.get(feature)
        if (
            base is not None
            and value is not None
            and (value - base) * sign > 0
            and bisect._beyond(base, value, spread[feature])
        ):
            worse[feature] = {"original": round(base, 4), "trial": round(float(value), 4)}
    fixed = [c for c, s in symptoms.items() if s == "gone"]
    verified = bool(fixed) and all(s != "remains" for s in symptoms.values()) and not worse
    reason = (
        "every targeted symptom the original shows is gone, nothing got worse"
        if verified
        else "got worse beyond the seed spread"
        if worse
        else "the symptom remains"
        if any(s == "remains" for s in symptoms.values())
        else "the original's re-runs do not show the symptom, so there is nothing to verify"
    )
    return {**out, "symptoms": symptoms, "worse": worse, "verified": verified, "reason": reason}


def _mean(values: list[Any]) -> float | None:
    nums = [float(v) for v in values if isinstance(v, (int, float)) and v == v]
    return sum(nums) / len(nums) if nums else None


def verified_changes(prescription: list[dict[str, Any]], judged: dict[str, Any]) -> list[dict[str, Any]]:
    """All of the prescription when it verified as a whole; else the changes verified alone."""
    if judged["verified"]:
        return list(prescription)
    alone = {v["keys"][0] for v in judged["changes"] if v["verified"] and len(v["keys"]) == 1}
    return [c for c in prescription if c["key"] in alone]


# ---------------------------------------------------------------- apply


def override(key: str, value: Any) -> str:
    """`key=value` as `dvc exp run -S` and hydra read it."""
    if isinstance(value, bool):
        text = str(value).lower()
    elif value == "" or value is None:
        text = "''"
    else:
        text = str(value)
    return f"{key}={text}"


def exp_run_line(changes: list[dict[str, Any]]) -> str:
    return "dvc exp run " + " ".join(f"-S '{override(c['key'], c['to'])}'" for c in changes)


def apply(path: Path, changes: list[dict[str, Any]]) -> None:
    """Write the changes into params.yaml as `dvc exp run -S` would: DVC's own round trip
    keeps comments, quoting and key order, so only the changed lines differ."""
    from dvc.utils.hydra import apply_overrides

    if not path.is_file():
        raise LosstraceError(str(path), "no params.yaml to apply the changes to", "run fix in the project root")
    params_mod.load(path)  # a broken file is reported as such, before it is rewritten
    apply_overrides(path, [override(c["key"], c["to"]) for c in changes])
    params_mod.load(path)


# ---------------------------------------------------------------- script runs

# A params key → the Keras argument a user's own script sets instead.
# ---------------------------------------------------------------- main


def main(
    ref: str,
    root: Path,
    seeds: int = 2,
    epochs: int = 0,
    apply_to: Path | None = None,
    inprocess: bool = False,
    session: Session | None = None,
) -> dict[str, Any]:
    run_id = reader.resolve_run(ref, root)
    kind = reader.read_run(root, run_id, contract.ARTIFACT_DIR).tags.get(contract.KIND_TAG, "")
    diagnosis = runs.diagnose(run_id, root)
    prescription = diagnosis.get("prescription") or []
    result: dict[str, Any] = {
        "run_id": run_id,
        "kind": kind,
        "prescription": prescription,
        "notes": diagnosis.get("prescription_notes") or [],
        "verified": False,
        "trials": [],
        "changes": [],
    }
    if not prescription:
        return {**result, "note": "diagnose prescribes no params change for this run: nothing to fix"}
    rec = reader.load_record(run_id, root)
    if kind not in REPLAYABLE:
        note = "recorded from your own script: change these arguments there (fix cannot re-run a script)"
        return {**result, "advice": code_advice(prescription, rec.params), "note": note}
    p = params_mod.from_flat(rec.params)
    trials = plan(p, prescription, max(seeds, 1), epochs)
    tags = {contract.KIND_TAG: contract.KIND_FIX, "fix.run": run_id}
    with writer.start_run(root, f"fix {run_id[:8]}", tags) as parent:
        ws = Workspace(
            store.tracking_uri(root), contract.KIND_FIX_TRIAL, parent.run_id, inprocess=inprocess, session=session
        )
        bisect.run_trials(ws, trials, root, "fix trials")
        judged = judge([t for t, _ in trials], prescription)
        chosen = verified_changes(prescription, judged)
        result.update(judged)
        result.update(
            {
                "trials": [dataclasses.asdict(t) for t, _ in trials],
                "parent_run_id": parent.run_id,
                "apply": [{"key": c["key"], "from": c["from"], "to": c["to"]} for c in chosen],
                "exp_run": exp_run_line(chosen) if chosen else None,
            }
        )
        parent.set_tags({"fix.verified": str(result["verified"]).lower()})
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "fix.json"
            path.write_text(json.dumps(result, indent=2, sort_keys=True, default=str))
            parent.log_artifact(path, contract.ARTIFACT_DIR)
    if apply_to is not None:
        result.update(apply_verified(apply_to, chosen, run_id))
    return result


def apply_verified(params_path: Path, chosen: list[dict[str, Any]], run_id: str) -> dict[str, str]:
    """--apply: write the verified changes; with none verified, say why the file is unchanged
    (a bare "verified: false" leaves the user guessing whether anything was written)."""
    if chosen:
        apply(params_path, chosen)
        return {"applied_to": str(params_path)}
    return {
        "not_applied": f"not applied: no change was verified, so {params_path} is unchanged "
        f"(see the other suggestions in `losstrace diagnose {run_id[:8]}`, or judge on more epochs with --epochs)"
    }


# ---------------------------------------------------------------- render


def render(result: dict[str, Any]) -> str:
    lines = [f"fix {result['run_id'][:8]}   verified: {str(result['verified']).lower()}"]
    if result.get("note"):
        lines.append(result["note"])
    for a in result.get("advice") or []:
        lines.append(f"  {a['key']}: {a['from']} → {a['to']}   →  {a['code']}")
    for v in result.get("changes") or []:
        mark = "verified" if v["verified"] else "NOT verified"
        lines.append(f"  {v['trial']:<44} {mark}: {v.get('error') or v.get('reason', '')}")
        for code, status in v.get("symptoms", {}).items():
            lines.append(f"      {code}: {status}")
        for feature, w in v.get("worse", {}).items():
            lines.append(f"      worse: {feature} {w['original']:.4g} → {w['trial']:.4g}")
    if result.get("applied_to"):
        lines.append(
            f"applied to {result['applied_to']}: " + ", ".join(f"{c['key']}={c['to']}" for c in result["apply"])
        )
    elif result.get("not_applied"):
        lines.append(result["not_applied"])
    elif result.get("exp_run"):
        lines.append(f"to try it as an experiment: {result['exp_run']}   (or rerun with --apply)")
    return "\n".join(lines)
