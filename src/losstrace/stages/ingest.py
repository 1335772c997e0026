"""Ingest stage: source → seeded, stratified train/val/test parquet files.

Identical inputs stay in one split (`data.group_duplicates`, on by default): a split
made by ingest never puts a row in val or test whose input train also holds, the
leakage validate stops on. An official test split is the source's; overlap with it
is the data's, and validate reports it.

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
from losstrace.data.keys import input_keys
from losstrace.data.sources import Source, load_source
from losstrace.errors import LosstraceError
from losstrace.io import Staging, to_json
from losstrace.params import DataParams

SPLITS = ("train", "val", "test")


def stratified_split(
    labels: pd.Series, size: float, rng: np.random.Generator, groups: pd.Series | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Positions (keep, held_out): each label loses round(n * size) rows to held_out.

    Labels with a single row stay in `keep` so every held-out label is also trained on.
    With `groups` (one key per row), rows sharing a key move together: a group counts under
    its first row's label, and held_out takes whole groups (in shuffled order) while they
    fit the label's quota, so no row is dropped and no group straddles the two parts.
    Without repeated keys this is the same split, row for row, as without groups.
    """
    members = _group_members(labels, groups)
    first_labels = labels.iloc[[m[0] for m in members]]
    keep, held = [], []
    for _, group_ids in sorted(first_labels.groupby(first_labels.values, sort=True).indices.items()):
        group_ids = rng.permutation(group_ids)
        rows = sum(len(members[g]) for g in group_ids)
        quota = min(int(round(rows * size)), rows - 1) if rows > 1 else 0
        taken = 0
        for i, g in enumerate(group_ids):
            fits = taken + len(members[g]) <= quota and i < len(group_ids) - 1  # one group always trains
            (held if fits else keep).append(members[g])
            taken += len(members[g]) if fits else 0
    return np.sort(np.concatenate(keep)), np.sort(np.concatenate(held) if held else np.zeros(0, dtype=np.int64))


def _group_members(labels: pd.Series, groups: pd.Series | None) -> list[np.ndarray]:
    """Row positions of each group, groups ordered by their first row (singletons without groups)."""
    if groups is None:
        return [np.array([i]) for i in range(len(labels))]
    codes, _ = pd.factorize(groups.to_numpy(), sort=False)  # codes follow first appearance
    order = np.argsort(codes, kind="stable")
    return np.split(order, np.flatnonzero(np.diff(codes[order])) + 1)


def _groups(frame: pd.DataFrame, data: DataParams) -> pd.Series | None:
    """Each row's input key when identical inputs must share a split (data.group_duplicates)."""
    return input_keys(frame["x"], frame.index) if data.group_duplicates else None


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
        keep, held = stratified_split(train_part["label"], data.test_size, rng, _groups(train_part, data))
        train_part, test = train_part.iloc[keep].reset_index(drop=True), train_part.iloc[held].reset_index(drop=True)
    if source.val is not None:  # the user's own validation rows: nothing is held out of train
        splits = {"train": train_part, "val": source.val.reset_index(drop=True), "test": test}
    else:
        keep, held = stratified_split(train_part["label"], data.val_size, rng, _groups(train_part, data))
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
