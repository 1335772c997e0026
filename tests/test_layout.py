"""The shape of the code: stage code deps, import direction, pure analysis."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest
import yaml

from losstrace import code_deps

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src" / "losstrace"


def _module(path: Path) -> str:
    parts = list(path.relative_to(REPO / "src").with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _top_level_imports(path: Path) -> set[str]:
    """Package modules imported at module level (what runs on import)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("losstrace"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("losstrace"))
    return {m for m in found if code_deps.module_file(m) is not None}


@pytest.mark.parametrize("stage", sorted(code_deps.STAGE_MODULES))
def test_dvc_yaml_code_deps_are_the_stage_import_closure(stage):
    deps = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][stage]["deps"]
    listed = sorted(d for d in deps if isinstance(d, str) and d.startswith("src/"))
    expected = code_deps.stage_code(stage)
    assert listed == expected, f"dvc.yaml's {stage} deps drifted from its imports: run python tools/sync_code_deps.py"


def test_the_sync_tool_restores_a_dropped_dep_and_keeps_the_rest_of_dvc_yaml():
    sys.path.insert(0, str(REPO / "tools"))
    import sync_code_deps

    text = (REPO / "dvc.yaml").read_text()
    dropped = text.replace("      - src/losstrace/training/recorder.py\n", "", 1)
    assert dropped != text
    assert sync_code_deps.sync(dropped) == text


def test_the_closure_follows_imports_inside_functions(tmp_path):
    pkg = tmp_path / "losstrace"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from losstrace.sub import b\n")
    (pkg / "sub" / "b.py").write_text("from . import c\n")
    (pkg / "sub" / "c.py").write_text("")
    (pkg / "unused.py").write_text("")
    assert code_deps.closure("losstrace.a", tmp_path) == [
        f"{tmp_path.name}/losstrace/{p}" for p in ("__init__.py", "a.py", "sub/__init__.py", "sub/b.py", "sub/c.py")
    ]


def test_no_import_cycles_at_module_level():
    graph = {_module(p): _top_level_imports(p) for p in PACKAGE.rglob("*.py")}
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in graph.get(node, ()):
            if state.get(dep) == 1:
                raise AssertionError("import cycle: " + " → ".join([*path, node, dep]))
            if dep not in state:
                visit(dep, [*path, node])
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node, [])


def test_only_the_entry_points_import_the_cli():
    importers = [_module(p) for p in PACKAGE.rglob("*.py") if "losstrace.cli" in code_deps._imported(p, _module(p))]
    assert importers == ["losstrace.__main__"]  # `python -m losstrace`


@pytest.mark.parametrize(
    "layer, forbidden",
    [
        (
            "explain",
            (
                "losstrace.record.store",
                "losstrace.record.writer",
                "losstrace.record.reader",
                "losstrace.stages",
                "losstrace.training",
                "losstrace.workflows",
                "losstrace.cli",
            ),
        ),
        ("record", ("losstrace.stages", "losstrace.workflows", "losstrace.cli", "losstrace.training")),
        ("data", ("losstrace.stages", "losstrace.workflows", "losstrace.record", "losstrace.training")),
    ],
)
def test_layers_import_only_downwards(layer, forbidden):
    for path in (PACKAGE / layer).rglob("*.py"):
        for dep in code_deps._imported(path, _module(path)):
            assert not dep.startswith(forbidden), f"{path.relative_to(REPO)} imports {dep}"


def test_pure_analysis_imports_no_mlflow_tensorflow_or_subprocess():
    heavy = ("mlflow", "tensorflow", "keras", "subprocess")
    for path in (PACKAGE / "explain").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else ([node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            )
            for name in names:
                assert name.split(".")[0] not in heavy, f"{path.relative_to(REPO)} imports {name}"


def _readme_tree() -> list[tuple[str, str]]:
    """(folder path, entry text) of each line of the README's src/losstrace and tests trees."""
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    out, stack = [], []
    for line in lines:
        head, sep, _ = line.partition("── ")
        if not sep or not set(head) <= set("│├└ "):
            continue
        depth = len(head) // 4
        name = line[len(head) + len(sep) :].split("<-")[0].strip()
        stack[depth:] = [name]
        out.append(("".join(stack[:depth]), name))
    return out


def test_readme_tree_lists_every_source_module_and_test_folder():
    tree = _readme_tree()
    listed = {parent + name for parent, name in tree if name.endswith(".py")}
    sources = {
        str(p.relative_to(REPO))
        for p in PACKAGE.rglob("*.py")
        if p.name != "__init__.py" and "__pycache__" not in p.parts
    }
    assert sources - listed == set(), "add these to the README's file tree"
    assert {x for x in listed if x.startswith("src/")} - sources == set(), "the README lists files that are gone"
    tests_line = " ".join(name for parent, name in tree if parent == "tests/")
    test_folders = {p.name for p in (REPO / "tests").iterdir() if p.is_dir() and p.name != "__pycache__"}
    test_files = {p.name for p in (REPO / "tests").glob("*.py")}
    assert {f for f in test_folders | test_files if f not in tests_line} == set(), (
        "add these to the README's tests tree"
    )
