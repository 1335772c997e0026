"""What a run ran on: package versions, device, git state, DVC input hashes.

Recorded as MLflow tags so `losstrace diff` can name an environment change.
Imports nothing heavy: versions come from package metadata.
"""

from __future__ import annotations

import functools
import platform
import subprocess
from importlib import metadata
from pathlib import Path

import yaml

KEY_PACKAGES = (
    "tensorflow",
    "tensorflow-cpu",
    "keras",
    "numpy",
    "pandas",
    "mlflow",
    "dvc",
    "great-expectations",
    "aeon",
    "scikit-learn",
    "pyarrow",
)


@functools.cache  # installed versions do not change under a running process
def package_versions() -> dict[str, str]:
    out = {}
    for name in KEY_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def env_tags() -> dict[str, str]:
    tags = {f"env.{k}": v for k, v in package_versions().items()}
    tags["env.python"] = platform.python_version()
    tags["env.platform"] = f"{platform.system()}-{platform.machine()}"
    return tags


def git_tags(root: Path) -> dict[str, str]:
    def git(*args: str) -> str | None:
        try:
            r = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return r.stdout.strip() if r.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {}
    status = git("status", "--porcelain", "--untracked-files=no") or ""
    # mlflow.source.git.commit is the tag the MLflow UI shows in the run header.
    return {"mlflow.source.git.commit": commit, "git.commit": commit, "git.dirty": str(bool(status)).lower()}


def _load_yaml(text: str):
    """Safe YAML through libyaml's C parser when present: dvc.lock lists every source file
    of every stage, and the pure-Python parser takes a fifth of a second over it. Same
    constructor and resolver, so the same values."""
    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # noqa: S506


def dvc_dep_tags(root: Path, stage: str) -> dict[str, str]:
    """md5 of each dependency of `stage` as dvc.lock recorded it (upstream stages lock first)."""
    lock = root / "dvc.lock"
    if not lock.exists():
        return {}
    try:
        stages = (_load_yaml(lock.read_text()) or {}).get("stages", {})
    except yaml.YAMLError:
        return {}
    hashes: dict[str, str] = {}
    for entry in stages.values():
        for out in entry.get("outs", []) or []:
            if "md5" in out:
                hashes[out["path"]] = out["md5"]
    deps = (_load_yaml((root / "dvc.yaml").read_text()) or {}).get("stages", {}).get(stage, {}).get("deps", [])
    return {f"dvc.dep.{d}": hashes[d] for d in deps if d in hashes}
