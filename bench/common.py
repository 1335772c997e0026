"""Helpers every benchmark shares: quiet environment, timing, subprocess peak memory,
params and featurized datasets built the way the pipeline builds them."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the venv's bin: losstrace and dvc live here
UCI_GLOB = str(REPO / "data" / "external" / "uci-sentiment" / "*.txt")

QUIET_ENV = {
    "TF_CPP_MIN_LOG_LEVEL": "3",
    "TF_ENABLE_ONEDNN_OPTS": "0",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "GX_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
}


def quiet_env() -> None:
    """Set before TensorFlow or MLflow load; a user's tracking server must never get bench runs."""
    os.environ.update(QUIET_ENV)
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "DVC_ROOT"):
        os.environ.pop(key, None)


def tool_env() -> dict[str, str]:
    """Environment for subprocesses: the venv first on PATH (DVC stages call `losstrace`)."""
    return {**os.environ, **QUIET_ENV, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}


def skipped(reason: str) -> dict[str, str]:
    return {"skipped": reason}


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def interleave(arms: dict[str, Callable[[], float]], reps: int) -> dict[str, list[float]]:
    """Run every arm once per repetition, rotating the order (A B C, B C A, ...).

    On a shared machine the load drifts over minutes; alternating the arms exposes
    each to the same drift, and rotating removes any first-in-the-round advantage.
    Each arm returns the seconds it wants counted.
    """
    names = list(arms)
    out: dict[str, list[float]] = {n: [] for n in names}
    for rep in range(reps):
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:
            out[name].append(arms[name]())
    return out


def paired_ratio(num: list[float], den: list[float]) -> float:
    """Median of per-repetition ratios: each pair ran back to back, so it shares the load."""
    return median([a / b for a, b in zip(num, den)])


# ------------------------------------------------------------------ subprocesses


@dataclass
class Measured:
    seconds: float
    peak_mb: float
    returncode: int
    stdout: str
    stderr: str


def measure(cmd: Sequence[str], cwd: Path) -> Measured:
    """Wall time and peak RSS of a command, from the kernel's own accounting (wait4).

    ru_maxrss of the reaped child is its high-water mark, so no polling can miss a
    short peak; it covers the process and any children it waited for. Output goes to
    anonymous temp files (no pipe to fill, nothing left in the project).
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(list(cmd), cwd=cwd, env=tool_env(), stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    return Measured(seconds, usage.ru_maxrss / 1024, proc.returncode, stdout, stderr)


def wall(cmd: Sequence[str], cwd: Path) -> float:
    """Seconds of a command that must succeed."""
    m = measure(cmd, cwd)
    if m.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({m.returncode}) in {cwd}:\n{m.stdout}\n{m.stderr}")
    return m.seconds


# ------------------------------------------------------------------ params and data


def has_param(dotted: str) -> bool:
    """Whether this checkout's params schema knows a key, so an arm can wait for a feature
    another change is adding and pick it up the day it lands."""
    import dataclasses
    import typing

    from losstrace.params import Params

    cls: Any = Params
    for part in dotted.split("."):
        if not dataclasses.is_dataclass(cls) or part not in {f.name for f in dataclasses.fields(cls)}:
            return False
        cls = typing.get_type_hints(cls)[part]
    return True


def params_dict(overrides: dict[str, Any]) -> dict[str, Any]:
    """The project's params.yaml with dotted overrides applied, as a nested dict."""
    from losstrace.params import override_nested

    raw = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8")) or {}
    return override_nested(raw, overrides)


def build_params(overrides: dict[str, Any]):
    from losstrace.params import Params, from_dict

    return from_dict(Params, params_dict(overrides), "")


def prepare(workdir: Path, overrides: dict[str, Any]):
    """Ingest with the real stage into `workdir`, then featurize as the train stage does.

    Returns (params, Dataset, prepared dir)."""
    from losstrace import params as params_mod
    from losstrace.stages import ingest, train

    workdir.mkdir(parents=True, exist_ok=True)
    params_path = workdir / "params.yaml"
    params_path.write_text(yaml.safe_dump(params_dict(overrides), sort_keys=False), encoding="utf-8")
    prepared = workdir / "data" / "prepared"
    ingest.main(params_path, prepared, workdir)
    p = params_mod.load(params_path)
    return p, train.load_dataset(p, prepared), prepared
