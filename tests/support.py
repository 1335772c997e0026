"""Helpers for tests that drive the real console script, DVC and git."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def run_cli(*args: str, cwd: Path, env: dict | None = None, check: bool = False) -> subprocess.CompletedProcess:
    """Run the real `losstrace` console script."""
    full_env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", **(env or {})}
    r = subprocess.run([str(BIN / "losstrace"), *args], cwd=cwd, env=full_env, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise AssertionError(f"losstrace {' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r


def run_tool(*args: str, cwd: Path, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run dvc/git with the venv first on PATH (DVC stage commands call `losstrace`); `env` adds variables."""
    full_env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", **(env or {})}
    r = subprocess.run(list(args), cwd=cwd, env=full_env, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r


def make_project(dest: Path, params_overrides: dict[str, object] | None = None) -> Path:
    """Copy the pipeline (dvc.yaml, params.yaml, requirements.lock, src, .dvc config) into a fresh git repo.

    requirements.lock is ingest's data dependency for the bundled datasets (data.source_dep)."""
    import yaml

    dest.mkdir(parents=True, exist_ok=True)
    for name in ("dvc.yaml", "params.yaml", "requirements.lock"):
        shutil.copy(REPO / name, dest / name)
    shutil.copytree(REPO / "src", dest / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    (dest / ".dvc").mkdir(exist_ok=True)
    shutil.copy(REPO / ".dvc" / "config", dest / ".dvc" / "config")
    shutil.copy(REPO / ".gitignore", dest / ".gitignore")
    if params_overrides:
        from losstrace.params import override_nested

        params = override_nested(yaml.safe_load((dest / "params.yaml").read_text()), params_overrides)
        (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run_tool("git", "init", "-q", cwd=dest)
    run_tool("git", "-c", "user.email=t@t", "-c", "user.name=t", "add", "-A", cwd=dest)
    run_tool("git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "init", cwd=dest)
    return dest


def shrunk(**train_kw):
    """Default params with train.* overrides and 2 epochs unless given: real code, small cost."""
    import dataclasses

    from losstrace import params

    p = params.Params()
    return dataclasses.replace(p, train=dataclasses.replace(p.train, **{"epochs": 2, **train_kw}))
