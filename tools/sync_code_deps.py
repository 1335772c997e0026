"""Rewrite each stage's source-file deps in dvc.yaml from the stage's import closure.

`python tools/sync_code_deps.py` after adding, moving or removing a module a stage
imports; tests/test_layout.py fails until dvc.yaml lists exactly the closure. Only the
stage's run of `- src/losstrace/...` lines is replaced: comments, templated deps and
the rest of the file stay as written.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from losstrace import code_deps  # noqa: E402

SRC_DEP = re.compile(r"^(\s+)- src/losstrace/\S+\s*$")
STAGE = re.compile(r"^  (\w+):\s*$")


def sync(text: str) -> str:
    out: list[str] = []
    stage = None
    lines = text.splitlines(keepends=True)
    i = 0
    while i < len(lines):
        line = lines[i]
        found = STAGE.match(line)
        if found:
            stage = found.group(1)
        dep = SRC_DEP.match(line)
        if dep and stage in code_deps.STAGE_MODULES:
            while i < len(lines) and SRC_DEP.match(lines[i]):
                i += 1
            out += [f"{dep.group(1)}- {path}\n" for path in code_deps.stage_code(stage)]
            continue
        out.append(line)
        i += 1
    return "".join(out)


def main() -> int:
    path = ROOT / "dvc.yaml"
    before = path.read_text(encoding="utf-8")
    after = sync(before)
    if after != before:
        path.write_text(after, encoding="utf-8")
        print("dvc.yaml: source deps updated; run dvc repro and commit dvc.lock")
    else:
        print("dvc.yaml: source deps already match the stages' imports")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
