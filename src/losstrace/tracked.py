"""Files of the user's project a stage reads must be DVC dependencies of that stage.

dvc.yaml is static, so it templates the paths from params.yaml: ingest depends on
`${data.source_dep}` (the user's data file, or the folder holding a glob's matches) and
train on `${train.model.builder_dep}` (the builder's file or package folder). Editing,
adding or removing a file under those paths then reruns the stage. A stage refuses to
read a file no dependency covers: its changes would be invisible to `dvc status`.

The check runs where DVC is in charge: inside a DVC stage (DVC sets DVC_STAGE) and in
`losstrace lint`. A stage run by hand or in a replay workspace has no DVC to inform.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml

from losstrace.errors import LosstraceError

_TEMPLATE = re.compile(r"\$\{\s*([\w.]+)\s*\}")


def under_dvc() -> bool:
    """True inside a stage command that `dvc repro` / `dvc exp run` started."""
    return bool(os.environ.get("DVC_STAGE"))


def stage_deps(root: Path, stage: str, flat_params: dict[str, Any]) -> list[str] | None:
    """`stage`'s deps in root/dvc.yaml with ${key} filled from params; None without a dvc.yaml."""
    path = Path(root) / "dvc.yaml"
    if not path.is_file():
        return None
    try:
        stages = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("stages", {})
    except yaml.YAMLError:
        return None
    deps = (stages.get(stage) or {}).get("deps") or []
    return [_TEMPLATE.sub(lambda m: str(flat_params.get(m.group(1), m.group(0))), str(d)) for d in deps]


def covers(dep: str, path: Path, root: Path) -> bool:
    """True when `path` is the dep itself or lies inside the dep folder."""
    root = Path(root).resolve()
    dep_path = (root / dep).resolve()
    target = Path(path) if Path(path).is_absolute() else root / path
    target = target.resolve()
    return target == dep_path or dep_path in target.parents


def require(files: list[Path], key: str, value: str, stage: str, root: Path, flat_params: dict[str, Any]) -> None:
    """Each of `files` must lie under params `key` (= value) and under one of `stage`'s deps."""
    root = Path(root)
    inside = (root / value).resolve()
    if root.resolve() not in (inside, *inside.parents):
        raise LosstraceError(
            "params.yaml", f"{key}={value} is outside the project", "DVC tracks files inside the project only"
        )
    for path in files:
        if not covers(value, path, root):
            raise LosstraceError(
                "params.yaml",
                f"{_shown(path, root)} is not under {key}={value}, so DVC would not see it change",
                f"set {key}: {_suggest(files, root)}",
            )
    deps = stage_deps(root, stage, flat_params)
    if deps is not None and not all(any(covers(d, p, root) for d in deps) for p in files):
        raise LosstraceError(
            "dvc.yaml",
            f"the {stage} stage does not depend on {value}",
            f"add `- ${{{key}}}` to stages.{stage}.deps",
        )


def _shown(path: Path, root: Path) -> str:
    try:
        return Path(path).resolve().relative_to(Path(root).resolve()).as_posix()
    except ValueError:
        return str(path)


def _suggest(files: list[Path], root: Path) -> str:
    """One file: the file itself; several: the deepest folder holding them all."""
    if len(files) == 1:
        return _shown(files[0], root)
    parents = [set(Path(f).resolve().parents) for f in files]
    common = max(set.intersection(*parents), key=lambda d: len(d.parts))
    return _shown(common, root) or "."
