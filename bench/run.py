"""Run the losstrace benchmarks and record their figures.

Prints a table as they go, writes bench/results.json and, after a full run, rewrites
the README's Benchmarks section.

    python bench/run.py                 # everything, README sizes (make bench; ~22 min here, 11 of them false_alarms)
    python bench/run.py --quick         # small sizes: a smoke test of the whole suite
    python bench/run.py --only cli      # one benchmark (repeatable), merged into results.json

Benchmarks: stage_cost, trials, false_alarms, tracking, gns, keras, bucketing, ingest, repro, cli, gpu (bench/<module>.py each).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: make the `bench` package importable
    sys.path.insert(0, str(REPO))

from bench.common import quiet_env  # noqa: E402

quiet_env()  # before anything below can import TensorFlow or MLflow

from bench import machine, readme, report  # noqa: E402


@dataclass(frozen=True)
class Sizes:
    tracking_epochs: int
    tracking_reps: int
    bucket_epochs: int
    bucket_reps: int
    ingest_rows: tuple[int, ...]
    project_epochs: int
    repro_reps: int
    cli_reps: int
    gpu_epochs: int
    gpu_reps: int
    stage_cost_reps: int
    stage_cost_epochs: int | None  # None: params.yaml's own (the default pipeline)
    trial_reps: int  # bisect trials timed in the worker after its first
    trial_epochs: int
    false_alarm_seeds: int  # simulated sweep seeds per configuration
    false_alarm_runs: int | None  # real trainings per table row; None = the row's all
    false_alarm_epochs: int | None  # cap on their epochs; None = the row's own
    false_alarm_noise_scale: bool  # also train each real run with the noise scale measured
    warm_up: bool  # tracking, gns, keras: pay one-off costs (imports, first graphs, stores) untimed


FULL = Sizes(
    tracking_epochs=30,
    tracking_reps=5,
    bucket_epochs=8,
    bucket_reps=20,
    ingest_rows=(10_000, 100_000, 1_000_000),
    project_epochs=2,
    repro_reps=5,
    cli_reps=5,
    gpu_epochs=5,
    gpu_reps=3,
    stage_cost_reps=5,
    stage_cost_epochs=None,
    trial_reps=5,
    trial_epochs=5,
    false_alarm_seeds=50,
    false_alarm_runs=None,
    false_alarm_epochs=None,
    false_alarm_noise_scale=True,
    warm_up=True,
)
QUICK = Sizes(
    tracking_epochs=1,
    tracking_reps=1,
    bucket_epochs=2,
    bucket_reps=1,
    ingest_rows=(1_000, 5_000),
    project_epochs=1,
    repro_reps=1,
    cli_reps=1,
    gpu_epochs=1,
    gpu_reps=1,
    stage_cost_reps=1,
    stage_cost_epochs=1,  # = project_epochs: stage_cost reproduces the shared project
    trial_reps=1,
    trial_epochs=1,
    false_alarm_seeds=1,
    false_alarm_runs=1,
    false_alarm_epochs=2,  # at 1 the clean rows already warn (not_learning): 2 keeps them quiet
    false_alarm_noise_scale=False,
    warm_up=False,  # quick figures are not quoted
)


class Context:
    """What the benchmarks share: sizes, a scratch directory, the reproduced temp project,
    and a trial-worker session."""

    def __init__(self, sizes: Sizes, work: Path) -> None:
        from bench.project import Project

        self.sizes, self.work = sizes, work
        self.project = Project(work / "project", sizes.project_epochs)
        self._session: Any = None

    def trial_session(self) -> Any:
        """The trial worker trials starts (it runs first and times its start-up) and
        false_alarms trains in afterwards: one worker start-up, the default split made once."""
        if self._session is None:
            from losstrace.workflows.replay import WORKER, Session

            self._session = Session(WORKER)
        return self._session

    def close(self) -> None:
        if self._session is not None:
            self._session.close()


def _tracking(ctx: Context) -> dict[str, Any]:
    from bench import tracking_overhead

    s = ctx.sizes
    return tracking_overhead.measure(ctx.work / "tracking", s.tracking_epochs, s.tracking_reps, warm_up=s.warm_up)


def _gns(ctx: Context) -> dict[str, Any]:
    from bench import tracking_overhead

    s = ctx.sizes
    return tracking_overhead.measure_noise_scale(
        ctx.work / "gns", s.tracking_epochs, s.tracking_reps, warm_up=s.warm_up
    )


def _keras(ctx: Context) -> dict[str, Any]:
    from bench import keras_overhead

    s = ctx.sizes
    return keras_overhead.measure(ctx.work / "keras", s.tracking_epochs, s.tracking_reps, warm_up=s.warm_up)


def _bucketing(ctx: Context) -> dict[str, Any]:
    from bench import bucketing

    return bucketing.measure(ctx.work / "bucketing", ctx.sizes.bucket_epochs, ctx.sizes.bucket_reps)


def _ingest(ctx: Context) -> dict[str, Any]:
    from bench import ingest_scaling

    return ingest_scaling.measure_all(ctx.work / "ingest", ctx.sizes.ingest_rows)


def _repro(ctx: Context) -> dict[str, Any]:
    from bench import project

    return project.noop_repro(ctx.project, ctx.sizes.repro_reps)


def _cli(ctx: Context) -> dict[str, Any]:
    from bench import project

    return project.cli(ctx.project, ctx.sizes.cli_reps)


def _stage_cost(ctx: Context) -> dict[str, Any]:
    from bench import stage_cost

    s = ctx.sizes
    # At the project's epochs (--quick) stage_cost forces the shared project: one pipeline, not two.
    shared = ctx.project if s.stage_cost_epochs == s.project_epochs else None
    return stage_cost.measure(ctx.work / "stage_cost", s.stage_cost_reps, s.stage_cost_epochs, shared)


def _trials(ctx: Context) -> dict[str, Any]:
    from bench import trial_cost

    return trial_cost.measure(ctx.work / "trials", ctx.sizes.trial_reps, ctx.sizes.trial_epochs, ctx.trial_session())


def _false_alarms(ctx: Context) -> dict[str, Any]:
    from bench import false_alarms

    s = ctx.sizes
    return false_alarms.measure(
        ctx.work / "false_alarms",
        s.false_alarm_seeds,
        s.false_alarm_runs,
        s.false_alarm_epochs,
        s.false_alarm_noise_scale,
        ctx.trial_session(),
    )


def _gpu(ctx: Context) -> dict[str, Any]:
    from bench import gpu

    return gpu.measure(ctx.work / "gpu", ctx.sizes.gpu_epochs, ctx.sizes.gpu_reps)


# Run order: the subprocess benchmarks first, before this process holds TensorFlow.
BENCHMARKS: dict[str, Callable[[Context], dict[str, Any]]] = {
    "stage_cost": _stage_cost,
    "trials": _trials,
    "false_alarms": _false_alarms,
    "cli": _cli,
    "repro": _repro,
    "ingest": _ingest,
    "tracking": _tracking,
    "gns": _gns,
    "keras": _keras,
    "bucketing": _bucketing,
    "gpu": _gpu,
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/run.py", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test, not figures to quote")
    parser.add_argument(
        "--only",
        action="append",
        choices=list(BENCHMARKS),
        metavar="NAME",
        help=f"run only this benchmark (repeatable): {', '.join(BENCHMARKS)}",
    )
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results.json", help="results file")
    parser.add_argument(
        "--readme",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="rewrite README.md's Benchmarks section (default: only after a full, non-quick run)",
    )
    parser.add_argument("--work", type=Path, help="keep scratch files here (default: a temp dir, removed)")
    return parser.parse_args(argv)


def load_previous(path: Path, partial: bool) -> dict[str, Any]:
    """A partial run (--only) updates the figures it measured and keeps the others."""
    if partial and path.exists():
        return json.loads(path.read_text())
    return {}


def save(path: Path, results: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


def run_all(names: list[str], ctx: Context, results: dict[str, Any], out: Path) -> bool:
    """Each benchmark in turn; its rows are printed and results saved as soon as it ends.
    A failing benchmark is recorded under `errors` and the others still run."""
    ok = True
    errors = results.setdefault("errors", {})
    for name in names:
        print(f"== {name} ...", flush=True)
        t0 = time.perf_counter()
        try:
            results.update(BENCHMARKS[name](ctx))
            errors.pop(name, None)
        except Exception as e:  # noqa: BLE001 - reported, and the exit status says so
            ok = False
            traceback.print_exc()
            errors[name] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        print(report.terminal(report.rows(name, results)) + f"\n   ({time.perf_counter() - t0:.0f} s)", flush=True)
        save(out, results)
    if not errors:
        results.pop("errors")
    return ok


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    names = [n for n in BENCHMARKS if not args.only or n in args.only]
    partial = bool(args.only)
    results = load_previous(args.out, partial)
    results.update(machine=machine.describe(), quick=args.quick)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="losstrace-bench-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        ctx = Context(QUICK if args.quick else FULL, work)
        try:
            ok = run_all(names, ctx, results, args.out)
        finally:
            ctx.close()
    seconds = time.perf_counter() - t0
    results["seconds_partial" if partial else "seconds_total"] = seconds
    save(args.out, results)
    print(f"results: {args.out} ({seconds / 60:.1f} min)")
    write_readme = args.readme if args.readme is not None else not (args.quick or partial)
    if write_readme:
        readme.update(REPO / "README.md", results)
        print("README.md: Benchmarks section rewritten")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
