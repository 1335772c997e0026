"""bench/: the results file holds every promised key with a number (or says why not).

Timings are printed by the bench and never asserted here: the machine is shared and
noisy. The fast test runs the cheap benchmarks (ingest, gpu); the slow one the rest at
their --quick sizes, so a change to train.run, the stages or the CLI that breaks a
benchmark is caught before `make bench`.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from support import REPO

MACHINE_KEYS = ("cpu", "cores", "ram_gb", "python", "tensorflow", "date")


def _bench(tmp_path, *args: str) -> tuple[dict, str]:
    out = tmp_path / "results.json"
    r = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "run.py"),
            "--quick",
            "--out",
            str(out),
            "--work",
            str(tmp_path / "work"),
            *args,
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(out.read_text()), r.stdout


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _number_or_skipped(value) -> bool:
    return _number(value) or (isinstance(value, dict) and set(value) == {"skipped"})


def _check_machine(results: dict) -> None:
    machine = results["machine"]
    assert all(machine.get(k) for k in MACHINE_KEYS), machine
    assert _number(machine["cores"]) and _number(machine["ram_gb"])


def test_cheap_subset_writes_numeric_figures_and_leaves_the_readme(tmp_path):
    results, stdout = _bench(tmp_path, "--only", "ingest", "--only", "gpu")
    _check_machine(results)
    sizes = results["ingest_validate"]
    assert set(sizes) == {"1000", "5000"}
    for figures in sizes.values():
        assert _number(figures["seconds"]) and _number(figures["peak_mb"]), figures
    assert _number(results["ingest_validate_scaling_exponent"])
    gpu = results["gpu"]
    assert gpu == {"skipped": "no GPU"} or _number(gpu["cudnn_speedup"])
    assert "errors" not in results
    assert "Ingest + validate, 1,000 rows" in stdout  # the table is printed as the run goes
    assert "section rewritten" not in stdout  # partial and quick runs never rewrite the README


@pytest.mark.slow
def test_quick_training_benchmarks_write_their_keys(tmp_path):
    # ingest and gpu: the cheap subset above already runs them.
    results, _ = _bench(
        tmp_path,
        *(
            arg
            for name in (
                "stage_cost",
                "trials",
                "false_alarms",
                "cli",
                "repro",
                "tracking",
                "gns",
                "keras",
                "bucketing",
            )
            for arg in ("--only", name)
        ),
    )
    assert "errors" not in results, results.get("errors")
    _check_machine(results)
    for key in (
        "tracking_overhead_ratio",
        "gns_overhead_ratio",
        "noop_repro_ratio",
        "cli_help_seconds",
        "diff_seconds",
        "repro_force_seconds",
        "fit_seconds",
        "repro_force_fit_ratio",
        "keras_callback_overhead_ratio",
        "mlflow_autolog_overhead_ratio",
        "bisect_trial_seconds",
        "bisect_trial_fit_seconds",
        "false_alarm_runs",
        "false_alarm_runs_with_warnings",
        "false_alarm_runs_with_prescription",
    ):
        assert _number(results[key]), (key, results[key])
    rows = results["false_alarm"]["rows"]
    assert {"simulated_suite", "simulated_sweep", "well_configured/shipped", "basic_motions_batch8/shipped"} <= set(
        rows
    )
    assert all(row["runs"] > 0 for row in rows.values())
    stages = results["stage_cost"]["stages"]
    assert results["stage_cost"]["order"] == ["ingest", "validate", "train", "evaluate"]
    assert set(stages) == set(results["stage_cost"]["order"])
    assert all(_number(s["seconds"]) for s in stages.values())
    assert {s: v["work"] for s, v in stages.items() if "work" in v} == {
        "validate": "checks and suite",
        "train": "model.fit",
        "evaluate": "predictions",
    }
    assert _number_or_skipped(results["bucketing_speedup"])
    for arm in ("pad_to_max", "bucket"):
        acc = results["bucketing_accuracy"][arm]
        assert acc == {"skipped": "train.batching not available"} or (_number(acc["val"]) and _number(acc["test"]))


def _import_bench() -> None:
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))


def test_readme_section_is_replaced_alone():
    _import_bench()
    from bench.readme import replace_section

    text = "# t\n\n## A\na\n\n## Benchmarks\nold\n```\n## not a heading\n```\n\n## GPU\ng\n"
    new = replace_section(text, "## Benchmarks\nnew\n")
    assert new == "# t\n\n## A\na\n\n## Benchmarks\nnew\n\n## GPU\ng\n"
    assert replace_section("# t\n\n## GPU\ng\n", "## Benchmarks\nnew\n") == "# t\n\n## GPU\ng\n\n## Benchmarks\nnew\n"


def test_interleave_rotates_the_order():
    _import_bench()
    from bench.common import interleave

    order: list[str] = []
    arms = {name: (lambda n=name: order.append(n) or 1.0) for name in "abc"}
    times = interleave(arms, 3)
    assert order == list("abcbcacab") and all(len(t) == 3 for t in times.values())


def test_stage_spans_run_from_announcement_to_lock_update_or_next_stage():
    _import_bench()
    from bench.stage_cost import stage_spans, stage_work

    lines = [
        (0.0, "Running stage 'ingest':"),
        (1.0, "ingest: japanese_vowels: train 216, val 54, test 370"),
        (1.5, "Running stage 'validate':"),  # ingest's lock entry unchanged: DVC prints no update
        (4.0, "validate: 0 error(s), 0 warning(s); see r.json (checks and suite 2.5 s)"),
        (4.5, "Updating lock file 'dvc.lock'"),
        (5.0, "Running stage 'evaluate':"),
        (6.0, "evaluate: test accuracy 0.9, macro-F1 0.9, loss 0.1 (370 rows predicted in 0.4 s)"),
    ]
    assert stage_spans(lines, end=7.0) == {"ingest": 1.5, "validate": 3.0, "evaluate": 2.0}
    assert stage_work("\n".join(line for _, line in lines)) == {"validate": 2.5, "evaluate": 0.4}


def test_a_prescription_on_a_quiet_run_counts_as_a_false_alarm_of_its_own():
    _import_bench()
    from bench.false_alarms import summary, verdict

    quiet = verdict([{"code": "noisy_loss", "severity": "info"}], [])
    prescribed = verdict([], [{"key": "train.batch_size", "from": 32, "to": 64, "findings": ["lint"], "why": ""}])
    loud = verdict([{"code": "overfitting", "severity": "warning"}], [])
    row = summary("r", True, [quiet, prescribed, loud])
    assert quiet == {"loud": [], "info": ["noisy_loss"], "prescription": []}
    assert (row["runs"], row["runs_with_warnings"], row["runs_with_prescription"]) == (3, 1, 1)
    assert row["codes"] == ["overfitting:warning"] and row["keys"] == ["train.batch_size"]
