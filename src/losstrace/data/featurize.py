"""Prepared rows → fixed-shape arrays. Every statistic is fitted on train only.

- numeric: per-channel standardisation, post-padding with 0.0 after scaling; the
  model's Masking layer treats an all-zero step as padding.
- tokens: a vocabulary of train ids; 0 = padding, 1 = out-of-vocabulary.
- text: Keras TextVectorization adapted on train (word or char level); 0 = padding, 1 = OOV.

The fitted state is a small JSON document (`models/featurizer.json`) so evaluate and
later inference featurize exactly as training did.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

PAD, OOV = 0, 1


@dataclass
class Featurizer:
    kind: str  # numeric|tokens|text
    max_len: int
    channels: int = 0
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)
    vocab: list[str] = field(default_factory=list)  # index i+2 ↔ vocab[i] (tokens: ids as str)
    text_level: str = "word"

    @property
    def vocab_size(self) -> int:
        return len(self.vocab) + 2

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Featurizer":
        return cls(**d)

    def transform(self, xs: pd.Series) -> tuple[np.ndarray, dict[str, float]]:
        """Arrays plus stats (truncation rate, OOV rate) for the record."""
        if self.kind == "numeric":
            return self._numeric(xs)
        if self.kind == "tokens":
            return self._ids([[str(t) for t in seq] for seq in xs])
        return self._ids(tokenize(xs, self.text_level))

    def _numeric(self, xs: pd.Series) -> tuple[np.ndarray, dict[str, float]]:
        out = np.zeros((len(xs), self.max_len, self.channels), dtype=np.float32)
        mean, std = np.asarray(self.mean), np.asarray(self.std)
        truncated = 0
        for i, seq in enumerate(xs):
            arr = _as_steps(seq)
            truncated += arr.shape[0] > self.max_len
            arr = arr[: self.max_len]
            out[i, : arr.shape[0]] = (arr - mean) / std
            # A real step that standardises to exactly all-zero would read as padding;
            # nudge it so the mask stays truthful.
            zero_rows = ~out[i, : arr.shape[0]].any(axis=1)
            out[i, : arr.shape[0]][zero_rows] = 1e-6
        return out, {"truncation_rate": truncated / max(len(xs), 1)}

    def _ids(self, seqs: list[list[str]]) -> tuple[np.ndarray, dict[str, float]]:
        index = {tok: i + 2 for i, tok in enumerate(self.vocab)}
        out = np.zeros((len(seqs), self.max_len), dtype=np.int32)
        truncated = oov = total = 0
        for i, seq in enumerate(seqs):
            truncated += len(seq) > self.max_len
            ids = [index.get(tok, OOV) for tok in seq[: self.max_len]]
            oov += sum(1 for t in ids if t == OOV)
            total += len(ids)
            out[i, : len(ids)] = ids
        return out, {"truncation_rate": truncated / max(len(seqs), 1), "oov_rate": oov / max(total, 1)}


def _as_steps(seq: Any) -> np.ndarray:
    arr = np.asarray([np.asarray(step, dtype=np.float64) for step in seq], dtype=np.float64)
    return arr.reshape(len(arr), -1)


def tokenize(texts: pd.Series, level: str) -> list[list[str]]:
    """Lower-case, punctuation stripped — the same standardisation TextVectorization uses by default."""
    cleaned = texts.str.lower().str.replace(r"[!\"#$%&()\*\+,\-\./:;<=>?@\[\\\]\^_`{|}~']", "", regex=True)
    if level == "char":
        return [list(t.replace(" ", "")) for t in cleaned]
    return [t.split() for t in cleaned]


def fit(train: pd.DataFrame, kind: str, max_len: int, max_tokens: int, text_level: str) -> Featurizer:
    """Fit on the training split only (leaking val/test statistics would flatter val loss)."""
    lengths = train["length"].to_numpy()
    max_len = int(max_len) if max_len > 0 else int(max(lengths.max(initial=1), 1))
    if kind == "numeric":
        steps = np.concatenate([_as_steps(seq) for seq in train["x"]])
        std = steps.std(axis=0)
        std[std == 0] = 1.0
        return Featurizer(kind, max_len, channels=steps.shape[1], mean=steps.mean(axis=0).tolist(), std=std.tolist())
    if kind == "tokens":
        seqs = [[str(t) for t in seq] for seq in train["x"]]
        level = "word"
    else:
        seqs = tokenize(train["x"], text_level)
        level = text_level
    return Featurizer(kind, max_len, vocab=_vocabulary(seqs, max_tokens), text_level=level)


def _vocabulary(seqs: list[list[str]], max_tokens: int) -> list[str]:
    """Most frequent first, ties broken alphabetically so the vocabulary is deterministic."""
    counts: dict[str, int] = {}
    for seq in seqs:
        for tok in seq:
            counts[tok] = counts.get(tok, 0) + 1
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return [tok for tok, _ in ranked[: max(max_tokens - 2, 1)]]


def encode_labels(labels: pd.Series, label_index: dict[str, int], multilabel: bool, delimiter: str, loss: str) -> np.ndarray:
    """Label format follows the loss: integer ids, one-hot, or multi-hot."""
    k = len(label_index)
    if multilabel:
        y = np.zeros((len(labels), k), dtype=np.float32)
        for i, value in enumerate(labels):
            for name in value.split(delimiter):
                y[i, label_index[name]] = 1.0
        return y
    ids = labels.map(label_index).to_numpy(dtype=np.int64)
    if loss == "categorical_crossentropy":
        return np.eye(k, dtype=np.float32)[ids]
    if loss == "binary_crossentropy" and k == 2:
        return ids.astype(np.float32).reshape(-1, 1)
    if loss == "binary_crossentropy":
        return np.eye(k, dtype=np.float32)[ids]
    return ids
