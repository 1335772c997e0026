"""Ingest stage: source → seeded, stratified train/val/test parquet files.

The official test split is kept when a source has one; otherwise a stratified
test split is carved out with `data.test_size`. `data.shuffle: false` keeps the
source row order so the effect of grouped rows can be studied (and detected).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd

from losstrace import params as params_mod
from losstrace import tracked
from losstrace.data import featurize
from losstrace.data.sources import Source, load_source
from losstrace.errors import LosstraceError
from losstrace.io import Staging, to_json
from losstrace.params import DataParams

SPLITS = ("train", "val", "test")


def stratified_split(labels: pd.Series, size: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Positions (keep, held_out): each label loses round(n * size) rows to held_out.

    Labels with a single row stay in `keep` so every held-out label is also trained on.
    """
    keep, held = [], []
    for _, positions in sorted(labels.groupby(labels.values, sort=True).indices.items()):
        positions = rng.permutation(positions)
        n_held = int(round(len(positions) * size)) if len(positions) > 1 else 0
        n_held = min(n_held, len(positions) - 1)
        held.append(positions[:n_held])
        keep.append(positions[n_held:])
    return np.sort(np.concatenate(keep)), np.sort(np.concatenate(held))


def label_map(frames: list[pd.DataFrame], multilabel: bool, delimiter: str) -> dict[str, int]:
    """label → index over individual labels, sorted so the map is stable across runs."""
    names: set[str] = set()
    for frame in frames:
        for value in frame["label"].unique():
            names.update(value.split(delimiter) if multilabel else [value])
    return {name: i for i, name in enumerate(sorted(names))}


def text_lengths(texts: pd.Series, level: str) -> np.ndarray:
    """Tokens per text as the model will see them (standardised, then split)."""
    return np.fromiter((featurize.token_count(t, level) for t in texts), dtype=np.int64, count=len(texts))


def run(source: Source, data: DataParams, seed: int) -> dict:
    """Split and order the source; return the frames and the ingest summary."""
    rng = np.random.default_rng(seed)
    train_part = source.train.reset_index(drop=True)
    if source.test is not None:
        test = source.test.reset_index(drop=True)
    else:
        keep, held = stratified_split(train_part["label"], data.test_size, rng)
        train_part, test = train_part.iloc[keep].reset_index(drop=True), train_part.iloc[held].reset_index(drop=True)
    if source.val is not None:  # the user's own validation rows: nothing is held out of train
        splits = {"train": train_part, "val": source.val.reset_index(drop=True), "test": test}
    else:
        keep, held = stratified_split(train_part["label"], data.val_size, rng)
        splits = {"train": train_part.iloc[keep], "val": train_part.iloc[held], "test": test}

    for name in SPLITS:
        frame = splits[name].reset_index(drop=True)
        if data.shuffle:
            frame = frame.iloc[rng.permutation(len(frame))].reset_index(drop=True)
        if source.input_kind == "text":
            frame = frame.assign(length=text_lengths(frame["x"], data.text_level))
        splits[name] = frame

    empty = [name for name in SPLITS if splits[name].empty]
    if empty:
        # Validation and early stopping on an empty split would run, and mean nothing.
        sizes = ", ".join(f"{name} {len(splits[name])}" for name in SPLITS)
        raise LosstraceError(
            data.source,
            f"{len(train_part) + len(test)} rows are too few to split ({sizes})",
            f"add rows (each class needs a few in every split), or raise "
            f"data.{'val' if 'val' in empty else 'test'}_size",
        )
    labels = label_map(list(splits.values()), data.multilabel, data.label_delimiter)
    if len(labels) < 2:
        only = next(iter(labels), "")
        raise LosstraceError(data.source, f"only one class {only!r}", "a classifier needs at least two labels")
    summary = {
        "source": data.source,
        "input": source.input_kind,
        "multilabel": data.multilabel,
        "label_delimiter": data.label_delimiter,
        "official_test": source.test is not None,
        **({"val_source": data.val_source} if source.val is not None else {}),
        "rows_read": source.lines_read,
        "rows_rejected": len(source.rejects),
        "splits": {name: len(splits[name]) for name in SPLITS},
        "n_classes": len(labels),
    }
    return {"splits": splits, "labels": labels, "summary": summary}


def check_rejects(source: Source, data: DataParams) -> None:
    if source.rejects and data.on_bad_rows == "fail":
        first = source.rejects[0]
        raise LosstraceError(
            f"{first.file}:{first.line}",
            f"{first.reason} ({len(source.rejects)} bad line(s) in all)",
            "fix the input, or set data.on_bad_rows: skip to drop and list them in rejects.csv",
        )


def require_tracked(p: params_mod.Params, files: list[Path], root: Path) -> None:
    """The user's data files lie under data.source_dep, which ingest's deps hold."""
    if files:
        flat = params_mod.flatten(p)
        tracked.require(files, "data.source_dep", p.data.source_dep, "ingest", root, flat)


def write_rejects(path: Path, rejects: list) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file", "line", "reason"])
        for r in rejects:
            writer.writerow([r.file, r.line, r.reason])


def main(params_path: Path, out_dir: Path, root: Path = Path(".")) -> dict:
    p = params_mod.load(params_path)
    source = load_source(p.data, root)
    if tracked.under_dvc():
        require_tracked(p, source.files, root)
    check_rejects(source, p.data)
    result = run(source, p.data, p.base.seed)
    with Staging(out_dir.parent) as stage:
        for name, frame in result["splits"].items():
            frame.to_parquet(stage.path(out_dir / f"{name}.parquet"), index=False)
        stage.path(out_dir / "labels.json").write_text(to_json(result["labels"]), encoding="utf-8")
        stage.path(out_dir / "ingest.json").write_text(to_json(result["summary"]), encoding="utf-8")
        write_rejects(stage.path(out_dir / "rejects.csv"), source.rejects)
    return result["summary"]
