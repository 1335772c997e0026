"""Which source files a stage runs: the import closure of its module, read statically.

dvc.yaml lists these files as the stage's code dependencies (a test derives the closure
and compares, so the list cannot drift), and a training's resume backup hashes the train
stage's closure, so a code change that alters the model or the batches never resumes an
old backup. Imports inside functions count too: a stage may run them.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "losstrace"
SRC = Path(__file__).resolve().parent.parent  # the folder holding the package

# The module each DVC stage runs (the CLI only dispatches to it).
STAGE_MODULES = {
    "ingest": "losstrace.stages.ingest",
    "validate": "losstrace.stages.validate",
    "train": "losstrace.stages.train",
    "evaluate": "losstrace.stages.evaluate",
}


def module_file(module: str, src: Path = SRC) -> Path | None:
    """The file of a package module, None when `module` is not one (a name imported from it)."""
    base = src.joinpath(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _imported(path: Path, module: str) -> set[str]:
    """Package modules `path` imports, anywhere in the file, as absolute dotted names."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    here = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = here.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{a.name}" for a in node.names)  # `from pkg import module`
    return {m for m in found if m == PACKAGE or m.startswith(PACKAGE + ".")}


def closure(module: str, src: Path = SRC) -> list[str]:
    """Source files (posix paths relative to src's parent, e.g. `src/losstrace/io.py`) that
    running `module` may execute: it, every package module it imports transitively, and
    the `__init__.py` of each package on the way."""
    seen: set[Path] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__
            path = module_file(".".join(parts[:i]), src)
            if path is None or path in seen:
                continue
            seen.add(path)
            todo.extend(_imported(path, ".".join(parts[:i])))
    root = src.parent
    return sorted(p.relative_to(root).as_posix() for p in seen)


def stage_code(stage: str, src: Path = SRC) -> list[str]:
    return closure(STAGE_MODULES[stage], src)
