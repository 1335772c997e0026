"""Where `data.source` points: a bundled dataset or user files."""

from __future__ import annotations

import dataclasses
import glob
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from losstrace.data.bundled import BUNDLED, load_bundled
from losstrace.errors import LosstraceError
from losstrace.params import DataParams


@dataclass
class Source:
    """Everything ingest needs from a source, before splitting."""

    train: pd.DataFrame  # the (official) training part
    test: pd.DataFrame | None  # the official test part, if the source has one
    input_kind: str  # text|tokens|numeric
    rejects: list = field(default_factory=list)  # data.files.Reject
    lines_read: int = 0
    val: pd.DataFrame | None = None  # the user's own validation rows (data.val_source)
    files: list[Path] = field(default_factory=list)  # the project files read


def load_source(data: DataParams, root: Path) -> Source:
    """The source, plus the user's validation file(s) when data.val_source names them."""
    source = _load_main(data, root)
    if not data.val_source:
        return source
    from losstrace.data.files import load_files, matched_paths

    val = load_files(dataclasses.replace(data, source=data.val_source), root)
    if val.input_kind != source.input_kind:
        raise LosstraceError(
            data.val_source,
            f"holds {val.input_kind} inputs but data.source holds {source.input_kind}",
            "point data.val_source at rows shaped like the training rows",
        )
    return dataclasses.replace(
        source,
        val=val.frame,
        rejects=source.rejects + val.rejects,
        lines_read=source.lines_read + val.lines_read,
        files=source.files + matched_paths(data.val_source, root),
    )


def _load_main(data: DataParams, root: Path) -> Source:
    if data.source in BUNDLED:
        train, test, kind = load_bundled(data.source, data.multilabel, data.label_delimiter)
        if data.input not in ("auto", kind):
            raise LosstraceError(
                "params.yaml", f"data.input={data.input} but {data.source} holds {kind} inputs", "set data.input: auto"
            )
        rows = len(train) + (0 if test is None else len(test))
        return Source(train=train, test=test, input_kind=kind, lines_read=rows)
    if not _looks_like_path(data.source, root):
        raise LosstraceError(
            "params.yaml",
            f"unknown data.source {data.source!r}",
            f"use one of {', '.join(BUNDLED)} or a path/glob to CSV, TSV, Parquet or NPZ files",
        )
    from losstrace.data.files import load_files, matched_paths  # user-file parsing only when needed

    loaded = load_files(data, root)
    return Source(
        train=loaded.frame,
        test=None,
        input_kind=loaded.input_kind,
        rejects=loaded.rejects,
        lines_read=loaded.lines_read,
        files=matched_paths(data.source, root),
    )


def _looks_like_path(source: str, root: Path) -> bool:
    """A bare word like `japanse_vowels` is a misspelt dataset, not a missing file."""
    if any(ch in source for ch in "/\\*?[.") or glob.has_magic(source):
        return True
    return (root / source).exists()
