"""Atomic file output: a stage either publishes all its outputs or leaves the old ones.

Writers stage into a sibling temp path and `os.replace` it into place, so a crash
or a bad-input error never leaves a half-written file behind.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from losstrace.errors import LosstraceError, first_line, from_os_error


def to_json(obj: Any) -> str:
    """Canonical JSON: indent 2, sorted keys, trailing newline (stable diffs, byte-identical reruns)."""
    return json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n"


def _json_default(o: Any) -> Any:
    # numpy scalars and arrays sneak in from pandas/numpy computations.
    if hasattr(o, "item") and callable(o.item) and getattr(o, "ndim", 0) == 0:
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def read_json(path: str | Path) -> Any:
    p = Path(path)
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LosstraceError(str(p), "file not found", "run the stage that produces it, e.g. `dvc repro`") from None
    except json.JSONDecodeError as e:
        raise LosstraceError(f"{p}:{e.lineno}", f"invalid JSON: {e.msg}", "regenerate it with `dvc repro -f`") from None
    except UnicodeDecodeError as e:
        raise LosstraceError(str(p), f"not UTF-8 JSON (byte {e.start})", "regenerate it with `dvc repro -f`") from None


def read_prepared(path: str | Path) -> Any:
    """A prepared split (ingest's parquet) as a DataFrame; a missing or damaged file is one line."""
    import pandas as pd

    p = Path(path)
    if not p.is_file():
        raise LosstraceError(str(p), "file not found", "run `losstrace ingest` (or `dvc repro ingest`) first")
    try:
        return pd.read_parquet(p)
    except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
        raise LosstraceError(
            str(p), f"not a readable parquet file ({first_line(e, 120)})", "regenerate it with `dvc repro -f ingest`"
        ) from None


@contextmanager
def atomic_path(dest: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temp path next to `dest`; on success move it over `dest` atomically."""
    dest = Path(dest)
    _mkdir(dest.parent)
    if dest.is_dir():  # os.replace would fail late, after the content was computed
        raise LosstraceError(str(dest), "is a directory", "give a file path")
    fd, tmp = _guard_write(
        dest.parent,
        lambda: tempfile.mkstemp(prefix=f".{dest.name}.", suffix=suffix or dest.suffix, dir=dest.parent),
        name_it=True,
    )
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o644)  # mkstemp makes 0600; outputs are ordinary shared files
    try:
        yield tmp_path
        os.replace(tmp_path, dest)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text(dest: str | Path, text: str) -> None:
    with atomic_path(dest) as tmp:
        _guard_write(dest, lambda: tmp.write_text(text, encoding="utf-8"))


def write_json(dest: str | Path, obj: Any) -> None:
    write_text(dest, to_json(obj))


class Staging:
    """Collect a stage's outputs in a temp dir, then publish them all at once.

    Publishing replaces each output file/dir; outputs are only touched after the
    stage's work has fully succeeded.
    """

    def __init__(self, root: str | Path = "."):
        self.root = Path(root)
        _mkdir(self.root)
        self.dir = Path(
            _guard_write(self.root, lambda: tempfile.mkdtemp(prefix=".losstrace-stage-", dir=self.root), name_it=True)
        )
        self._targets: list[tuple[Path, Path]] = []

    def path(self, dest: str | Path) -> Path:
        """Where to write what will become `dest` on publish."""
        dest = Path(dest)
        staged = self.dir / f"{len(self._targets)}_{dest.name}"
        self._targets.append((staged, dest))
        return staged

    def publish(self) -> None:
        ready = [(staged, dest) for staged, dest in self._targets if staged.exists()]
        # Every destination folder must take a file before the first output is replaced:
        # a stage writing to two folders (models/, reports/train/) must not publish one
        # and then fail on the other.
        for parent in sorted({dest.parent for _, dest in ready}):
            _mkdir(parent)
            fd, probe = _guard_write(
                parent, lambda parent=parent: tempfile.mkstemp(prefix=".losstrace-probe-", dir=parent), name_it=True
            )
            os.close(fd)
            os.unlink(probe)
        for staged, dest in ready:
            old = None
            if dest.is_dir():
                old = dest.with_name(f".{dest.name}.old")
                shutil.rmtree(old, ignore_errors=True)
                os.replace(dest, old)
            _guard_write(dest, lambda staged=staged, dest=dest: os.replace(staged, dest))
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        self.discard()

    def discard(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Staging:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self.publish()
            elif isinstance(exc, OSError) and exc.filename is None and from_os_error(exc) is not None:
                # Writers such as pyarrow drop the file name, and a stage may register all its
                # outputs before writing any: name the folder that holds them.
                parents = [str(dest.parent) for _, dest in self._targets]
                exc.filename = os.path.commonpath(parents) if parents else str(self.root)
        finally:  # a publish that failed (read-only target, full disk) leaves no temp dir behind
            self.discard()


def _mkdir(path: Path) -> None:
    _guard_write(path, lambda: path.mkdir(parents=True, exist_ok=True))


def _guard_write(path: str | Path, action: Callable[[], Any], name_it: bool = False) -> Any:
    """Turn permission, wrong-kind-of-path and disk-full errors into one-line user errors.

    name_it: report `path` even when the error names another file (a temp name the user
    never chose, from mkstemp/mkdtemp inside `path`)."""
    try:
        return action()
    except OSError as e:
        if e.filename is None or name_it:
            e.filename = str(path)
        raise from_os_error(e, writing=True) or e  # noqa: B904 (the mapped error names the path; the OSError stays as context)
