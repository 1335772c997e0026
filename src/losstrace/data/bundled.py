"""Datasets that ship inside dependencies, so `dvc repro` needs no download.

Each loader returns the official splits as frames in the prepared-data schema
(docs/architecture.md); `line` is the 1-based row index in the official split.
"""

from __future__ import annotations

import json
import os
from importlib import resources

import numpy as np
import pandas as pd

BUNDLED = ("japanese_vowels", "japanese_vowels_tokens", "basic_motions", "nrc_emotion")

# The eight basic emotions of the NRC lexicon; the other two affect labels are
# the sentiments "positive" and "negative" (only used by the multi-label variant).
NRC_EMOTIONS = ("anger", "anticipation", "disgust", "fear", "joy", "sadness", "surprise", "trust")


def load_bundled(name: str, multilabel: bool, delimiter: str) -> tuple[pd.DataFrame, pd.DataFrame | None, str]:
    """Return (train part, official test part or None, input kind)."""
    if name == "japanese_vowels":
        return _aeon("JapaneseVowels", "train"), _aeon("JapaneseVowels", "test"), "numeric"
    if name == "japanese_vowels_tokens":
        train, test = _aeon("JapaneseVowels", "train"), _aeon("JapaneseVowels", "test")
        edges = _token_edges(train)
        return _tokenize(train, edges), _tokenize(test, edges), "tokens"
    if name == "basic_motions":
        return _aeon("BasicMotions", "train"), _aeon("BasicMotions", "test"), "numeric"
    if name == "nrc_emotion":
        return _nrc(multilabel, delimiter), None, "text"
    raise ValueError(name)


def _aeon(dataset: str, split: str) -> pd.DataFrame:
    # aeon keeps these UCR/UEA archives inside its wheel; load_classification
    # reads them offline. Variable-length series come back as a list of (C, T).
    os.environ.setdefault("TQDM_DISABLE", "1")
    from aeon.datasets import load_classification

    X, y = load_classification(dataset, split=split)
    rows = [np.asarray(series, dtype=np.float64).T for series in X]  # → (T, C)
    return pd.DataFrame(
        {
            "x": [r.tolist() for r in rows],
            "label": [str(v) for v in y],
            "length": np.array([r.shape[0] for r in rows], dtype=np.int64),
            "source_file": f"aeon:{dataset}/{split}",
            "line": np.arange(1, len(rows) + 1, dtype=np.int64),
        }
    )


TOKEN_BINS = 8  # per channel; two channels → 64 symbols


def _token_edges(train: pd.DataFrame) -> list[np.ndarray]:
    """Quantile bin edges of the first two LPC channels, from the official train part only."""
    steps = np.concatenate([np.asarray(x)[:, :2] for x in train["x"]])
    qs = np.linspace(0, 1, TOKEN_BINS + 1)[1:-1]
    return [np.quantile(steps[:, c], qs) for c in range(2)]


def _tokenize(frame: pd.DataFrame, edges: list[np.ndarray]) -> pd.DataFrame:
    """Japanese Vowels as token traces: each frame vector-quantised to one of 64 symbols.

    A real, offline stand-in for the integer-id traces (system calls, events) users bring:
    variable length, a small vocabulary, and order that matters.
    """

    def symbols(x) -> list[int]:
        arr = np.asarray(x)
        b0, b1 = np.searchsorted(edges[0], arr[:, 0]), np.searchsorted(edges[1], arr[:, 1])
        return (b0 * TOKEN_BINS + b1 + 1).astype(int).tolist()

    return frame.assign(
        x=[symbols(x) for x in frame["x"]],
        source_file=frame["source_file"].str.replace("aeon:", "aeon-tokens:", regex=False),
    )


def _nrc(multilabel: bool, delimiter: str) -> pd.DataFrame:
    """Word → emotion from the NRC lexicon shipped in nrclex.

    Single-label: only words carrying exactly one of the eight emotions (a word
    with two emotions has no single right answer). Multi-label: every word with
    at least one of the ten affect labels, labels joined by `delimiter`.
    """
    with resources.files("nrclex.data").joinpath("nrc_en.json").open("r", encoding="utf-8") as fh:
        lexicon: dict[str, list[str]] = json.load(fh)
    words, labels = [], []
    for word in sorted(lexicon):
        affects = sorted(set(lexicon[word]))
        if multilabel:
            if affects:
                words.append(word)
                labels.append(delimiter.join(affects))
        else:
            emotions = [a for a in affects if a in NRC_EMOTIONS]
            if len(emotions) == 1:
                words.append(word)
                labels.append(emotions[0])
    return pd.DataFrame(
        {
            "x": words,
            "label": labels,
            "length": np.ones(len(words), dtype=np.int64),
            "source_file": "nrclex:nrc_en.json",
            "line": np.arange(1, len(words) + 1, dtype=np.int64),
        }
    )
