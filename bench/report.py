"""results.json → table rows, for the terminal while the run goes and for the README.

One function per benchmark turns its keys into (figure, value, target, met) rows,
so the printed table and the README table can never disagree.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Row = tuple[str, str, str, str]  # figure, measured, target, met


def _skip(value: Any) -> str | None:
    if isinstance(value, dict) and "skipped" in value:
        return f"skipped: {value['skipped']}"
    if isinstance(value, dict) and "error" in value:
        return f"failed: {value['error']}"
    return None


def _met(ok: bool | None) -> str:
    return "–" if ok is None else ("yes" if ok else "no")


LAYER_LABELS = {
    "fit": "training controls (early stopping, best-epoch keeper) vs no callback",
    "callback_no_dynamics": "+ our callback (true batch loss, NaN stop)",
    "callback": "+ dynamics (train.dynamics: per-step gradient norms, update ratios)",
    "mlflow": "+ MLflow logging (SQLite store)",
    "resume_backup": "+ per-epoch resume backup (train.resume)",
}


def tracking_rows(r: dict[str, Any]) -> list[Row]:
    t = r["tracking_overhead"]
    ratio, ms, main = r["tracking_overhead_ratio"], r["tracking_overhead_per_epoch_ms"], t["train_main"]
    rows: list[Row] = [
        (
            "Tracking overhead: tracked training / the same `model.fit` untracked",
            f"{ratio:.3f}× (an untracked epoch: {ms['fit_epoch']:.0f} ms)",
            "≤ 1.05",
            _met(ratio <= 1.05),
        )
    ]
    for layer in t["layers"]:
        rows.append(
            (
                f"  {LAYER_LABELS.get(layer['arm'], layer['arm'])}",
                f"{layer['ratio']:.3f}× ({layer['ms_per_epoch']:+.0f} ms per epoch)",
                "",
                "–",
            )
        )
    stage = r.get("stage_overhead_ratio")
    if stage is not None:
        rows.append(("  the stage's training, resume backup included / untracked", f"{stage:.3f}×", "reported", "–"))
    parts = (
        f"MLflow model {main['log_keras_model_seconds']:.1f} s, artifacts {main['log_artifacts_seconds']:.1f} s, "
        f"rest {main['other_seconds']:.1f} s"
    )
    rows.append(
        (
            "`train.main` time outside fit (not training cost)",
            f"{main['outside_fit_seconds']:.1f} s of {main['seconds']:.1f} s ({main['outside_fit_share']:.0%}): "
            + parts,
            "reported",
            "–",
        )
    )
    return rows


def gns_rows(r: dict[str, Any]) -> list[Row]:
    ratio, g = r["gns_overhead_ratio"], r["gns_overhead"]
    on, each = g["on"], g["every_epoch"]

    def detail(arm: dict[str, Any]) -> str:
        ms = arm["ms_per_measurement"]
        scale = f", B_simple {arm['b_simple']:.0f} over the run" if arm.get("b_simple") else ""
        return f"{arm['measurements']} measurements, {ms:+.0f} ms each{scale}" if ms is not None else "none"

    return [
        (
            f"Noise scale (train.noise_scale_every={g['every']}) / the same training without",
            f"{ratio:.3f}× ({detail(on)})",
            "≤ 1.02",
            _met(ratio <= 1.02),
        ),
        (
            f"  once per epoch (every={each['every']})",
            f"{each['ratio']:.3f}× ({detail(each)})",
            "reported",
            "–",
        ),
    ]


def bucketing_rows(r: dict[str, Any]) -> list[Row]:
    speed, acc = r["bucketing_speedup"], r["bucketing_accuracy"]
    skip = _skip(speed)
    rows: list[Row] = [
        (
            "Bucketing speedup: samples/s, bucket / pad-to-max (UCI, GRU 32)",
            skip or f"{speed:.2f}×",
            "≥ 1.5×",
            _met(None if skip else speed >= 1.5),
        )
    ]
    diff = acc.get("difference")
    for arm in ("pad_to_max", "bucket"):
        a = acc[arm]
        if _skip(a):
            rows.append((f"  accuracy {arm} (val / test)", _skip(a), "±1 point", "–"))
            continue
        seeds = len(a.get("test_by_seed", [])) or 1
        label = f"  accuracy {arm} (val / test, last epoch, mean of {seeds} seed{'s' if seeds > 1 else ''})"
        rows.append((label, f"{a['val']:.3f} / {a['test']:.3f}", "", "–"))
    if diff:
        se = diff["test_se_points"]
        value = f"{diff['test_mean_points']:+.2f}" + (f" ± {se:.2f} (SE)" if se is not None else "") + " points"
        rows.append(
            (
                f"  test accuracy, bucket − pad-to-max, paired over {diff['seeds']} seeds",
                value,
                "±1 point",
                _met(abs(diff["test_mean_points"]) <= 1.0),
            )
        )
    return rows


def ingest_rows(r: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for n, m in sorted(r["ingest_validate"].items(), key=lambda kv: int(kv[0])):
        big = int(n) >= 1_000_000
        rows.append(
            (
                f"Ingest + validate, {int(n):,} rows",
                f"{m['seconds']:.1f} s, {m['peak_mb']:.0f} MB peak",
                "< 2 GB" if big else "linear",
                _met(m["peak_mb"] < 2048) if big else "–",
            )
        )
    exp = r.get("ingest_validate_scaling_exponent")
    if isinstance(exp, float):
        rows.append(("  time exponent between the two largest sizes", f"{exp:.2f}", "≤ 1 (linear)", _met(exp <= 1.1)))
    return rows


def repro_rows(r: dict[str, Any]) -> list[Row]:
    n = r["noop_repro"]
    ratio = r["noop_repro_ratio"]
    # The bench fails unless `dvc repro` ran no stage: nothing of ours ran, which is the target.
    return [
        (
            "No-op `dvc repro` / `dvc status`",
            f"{ratio:.2f}× ({n['repro_seconds']:.2f} s vs {n['status_seconds']:.2f} s)",
            "no stage runs (ours adds nothing)",
            "yes",
        )
    ]


def cli_rows(r: dict[str, Any]) -> list[Row]:
    h, d = r["cli_help_seconds"], r["diff_seconds"]
    return [
        ("`losstrace --help`", f"{h:.2f} s", "< 0.5 s", _met(h < 0.5)),
        ("`losstrace diff A B` (two recorded runs)", f"{d:.2f} s", "< 2 s", _met(d < 2.0)),
    ]


def gpu_rows(r: dict[str, Any]) -> list[Row]:
    g = r["gpu"]
    if _skip(g):
        return [("GPU: cuDNN vs recurrent_dropout (default LSTM)", _skip(g), "reported", "–")]
    return [
        (
            f"GPU ({g['device']}): cuDNN / no cuDNN samples/s",
            f"{g['cudnn_speedup']:.2f}× ({g['cudnn_samples_per_s']:.0f} vs {g['no_cudnn_samples_per_s']:.0f})",
            "reported",
            "–",
        )
    ]


def stage_cost_rows(r: dict[str, Any]) -> list[Row]:
    c, total, fit, ratio = r["stage_cost"], r["repro_force_seconds"], r["fit_seconds"], r["repro_force_fit_ratio"]
    rows: list[Row] = [
        (
            "`dvc repro -f` of the default pipeline / the train stage's `model.fit`",
            f"{ratio:.1f}× ({total:.1f} s vs {fit:.1f} s)",
            f"≤ {c['target_ratio']:g}×",
            _met(ratio <= c["target_ratio"]),
        )
    ]
    for stage, s in c["stages"].items():
        work = f" ({s['work']} {s['work_seconds']:.1f} s)" if "work" in s else ""
        rows.append((f"  stage {stage}: wall (its own work)", f"{s['seconds']:.1f} s{work}", "", "–"))
    rows.append(("  DVC itself (start-up, status, lock file)", f"{c['dvc_seconds']:.1f} s", "", "–"))
    return rows


def trials_rows(r: dict[str, Any]) -> list[Row]:
    t, seconds, fit = r["bisect_trial"], r["bisect_trial_seconds"], r["bisect_trial_fit_seconds"]
    target = t["target"]
    return [
        (
            f"One bisect trial ({t['epochs']} epochs) in the trial worker, after the first / its `model.fit`",
            f"{seconds:.1f} s vs fit {fit:.1f} s ({t['over_target_seconds']:+.1f} s against the target)",
            f"≤ {target['fit_factor']:g} × fit + {target['extra_seconds']:g} s",
            _met(t["over_target_seconds"] <= 0),
        ),
        ("  the first trial (worker start-up, ingest, validate)", f"{t['first_trial_seconds']:.1f} s", "", "–"),
        (
            "  a trial with the train stage in its own process (fallback)",
            f"{t['process_trial_seconds']:.1f} s (fit {t['process_trial_fit_seconds']:.1f} s)",
            "",
            "–",
        ),
    ]


def keras_rows(r: dict[str, Any]) -> list[Row]:
    ours, theirs = r["keras_callback_overhead_ratio"], r["mlflow_autolog_overhead_ratio"]
    bare = r["keras_bare_fit_seconds"]
    return [
        (
            "User script: `losstrace.keras.autolog()` fit / bare fit",
            f"{ours:.3f}× ({r['keras_callback_fit_seconds']:.1f} s vs {bare:.1f} s, {r['keras_overhead_epochs']} epochs)",
            "≤ 1.03",
            _met(ours <= 1.03),
        ),
        (
            "  the same fit under `mlflow.keras.autolog()` / bare fit",
            f"{theirs:.3f}× ({r['mlflow_autolog_fit_seconds']:.1f} s)",
            "reported",
            "–",
        ),
    ]


# Table order (results.json sorts its keys): the docs' rows, each arm after its row.
FALSE_ALARM_LABELS = {
    "simulated_suite": "",  # "": the row's own label, which counts its configurations and seeds
    "simulated_sweep": "",
    "well_configured": "real, well configured (best epoch kept; JV, its tokens, BasicMotions batch 16)",
    "shipped_defaults": "real, shipped defaults (JV, last epoch kept)",
    "basic_motions_batch8": "real, BasicMotions batch 8 (not a clean baseline)",
}
FALSE_ALARM_ARMS = {"": "", "shipped": "", "noise_scale": ", noise scale measured"}


def false_alarms_rows(r: dict[str, Any]) -> list[Row]:
    rows_ = r["false_alarm"]["rows"]
    runs, warned, prescribed = (
        r["false_alarm_runs"],
        r["false_alarm_runs_with_warnings"],
        r["false_alarm_runs_with_prescription"],
    )
    out: list[Row] = [
        (
            "False alarms: clean runs with a warning/error or a prescription",
            f"{warned} warned, {prescribed} prescribed, of {runs} runs",
            "0",
            _met(warned == 0 and prescribed == 0),
        )
    ]
    order = {
        f"{name}/{arm}" if arm else name: i
        for i, (name, arm) in enumerate((n, a) for n in FALSE_ALARM_LABELS for a in FALSE_ALARM_ARMS)
    }
    for key in sorted(rows_, key=lambda k: order.get(k, len(order))):
        row = rows_[key]
        name, _, arm = key.partition("/")
        label = (FALSE_ALARM_LABELS.get(name, name) or row["label"]) + FALSE_ALARM_ARMS.get(arm, f", {arm}")
        codes = f" ({', '.join(sorted({c.split(':')[0] for c in row['codes']}))})" if row["codes"] else ""
        out.append(
            (
                f"  {label}",
                f"{row['runs_with_warnings']}/{row['runs']} warned{codes}, {row['runs_with_prescription']} prescribed",
                "0" if row["clean"] else "reported",
                _met(row["runs_with_warnings"] == 0 and row["runs_with_prescription"] == 0) if row["clean"] else "–",
            )
        )
    return out


ROWS: dict[str, Callable[[dict[str, Any]], list[Row]]] = {
    "stage_cost": stage_cost_rows,
    "trials": trials_rows,
    "false_alarms": false_alarms_rows,
    "tracking": tracking_rows,
    "gns": gns_rows,
    "keras": keras_rows,
    "bucketing": bucketing_rows,
    "ingest": ingest_rows,
    "repro": repro_rows,
    "cli": cli_rows,
    "gpu": gpu_rows,
}


def rows(name: str, results: dict[str, Any]) -> list[Row]:
    """The rows of one benchmark, or one row saying it failed or has not run."""
    failed = results.get("errors", {}).get(name)
    if failed:
        return [(name, f"failed: {failed}", "", "–")]
    try:
        return ROWS[name](results)
    except KeyError:
        return [(name, "not run", "", "–")]


def terminal(rows_: list[Row]) -> str:
    return "\n".join(f"{fig:<70} {val:<44} {target:<22} {met}" for fig, val, target, met in rows_)


def markdown(rows_: list[Row]) -> str:
    lines = ["| Figure | Measured | Target | Met |", "|---|---|---|---|"]
    for fig, val, target, met in rows_:
        shown = f"↳ {fig.strip()}" if fig.startswith("  ") else fig
        lines.append(f"| {shown} | {val} | {target} | {met} |")
    return "\n".join(lines)
