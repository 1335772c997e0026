"""Prepared rows → fixed-shape arrays. Every statistic is fitted on train only.

- numeric: per-channel standardisation (unless `standardize` is off), padding with 0.0
  after scaling; the model's Masking layer treats an all-zero step as padding.
- padding: `post` (default) puts a short sequence's padding after it, `pre` before it,
  as Keras' `pad_sequences` does by default; truncation keeps the first max_len steps
  either way.
- tokens: a vocabulary of train ids (most frequent first, ties in ascending string
  order); 0 = padding, 1 = out-of-vocabulary.
- text: a `keras.layers.TextVectorization` (standardize="lower_and_strip_punctuation",
  output_mode="int") adapted on the train split only, in batches of 10k strings.
  Word level uses split="whitespace"; char level splits like split="character" after
  deleting ASCII whitespace, so spaces are not tokens. The learned vocabulary (most
  frequent first, ties in descending byte order, at most max(data.max_tokens, 3) ids
  counting the two reserved ones) is saved; transform rebuilds the same layer
  from it, so train, evaluate and inference map strings to ids identically. 0 = padding,
  1 = OOV ("[UNK]"), texts are cut after max_len tokens. TensorFlow and Keras are
  imported only on this path.

The fitted state is a small JSON document (`models/featurizer.json`) so evaluate and
later inference featurize exactly as training did. `tokenize` and `token_counts` are
pure-Python copies of the layer's standardisation and splitting for the data checks,
which must not import TensorFlow.
"""

from __future__ import annotations

import string
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

PAD, OOV = 0, 1
OOV_TOKEN = "[UNK]"
# Strings go through the TextVectorization layer in batches of this many.
TEXT_CHUNK = 10_000

# TextVectorization's "lower_and_strip_punctuation" is tf.strings.lower, which lower-cases
# ASCII letters only ("CAFÉ" → "cafÉ"), then a regex deleting the ASCII punctuation in
# string.punctuation. Its "whitespace" split is tf.strings.split: ASCII whitespace only
# (a no-break space stays inside a token), empty tokens dropped. On UTF-8 bytes the same
# operations are bytes.translate / bytes.lower / bytes.split, which touch ASCII only.
_PUNCTUATION = string.punctuation.encode("ascii")
ASCII_WHITESPACE = " \t\n\x0b\x0c\r"
_WHITESPACE_RE2 = r"[ \t\n\x0b\x0c\r]"  # the same set, for tf.strings.regex_replace


@dataclass
class Featurizer:
    kind: str  # numeric|tokens|text
    max_len: int
    channels: int = 0
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)
    vocab: list[str] = field(default_factory=list)  # index i+2 ↔ vocab[i] (tokens: ids as str)
    text_level: str = "word"
    padding: str = "post"  # post|pre
    standardize: bool = True  # numeric only; False keeps mean 0, std 1 (identity)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab) + 2

    def to_dict(self) -> dict[str, Any]:
        # The later knobs are written only when set, so a default featurizer.json keeps
        # the bytes it had before they existed (evaluate reads either form).
        out = dict(self.__dict__)
        for key, default in (("padding", "post"), ("standardize", True)):
            if out[key] == default:
                del out[key]
        return out

    def _place(self, n: int) -> slice:
        """Where a sequence of n kept steps goes in a padded row of max_len."""
        return slice(self.max_len - n, self.max_len) if self.padding == "pre" else slice(0, n)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Featurizer:
        return cls(**d)

    def transform(self, xs: pd.Series) -> tuple[np.ndarray, dict[str, float]]:
        """Arrays plus stats for the record.

        truncation_rate: share of rows longer than max_len; oov_rate (tokens, text): share
        of the kept tokens (after truncation) mapped to OOV.
        """
        if self.kind == "numeric":
            return self._numeric(xs)
        if self.kind == "tokens":
            return self._ids([[str(t) for t in seq] for seq in xs])
        return self._text(xs)

    def _text(self, xs: pd.Series) -> tuple[np.ndarray, dict[str, float]]:
        """Strings → ids through a TextVectorization layer holding the saved vocabulary."""
        import tensorflow as tf

        layer = _text_layer(self.text_level, vocabulary=self.vocab)
        texts = _strings(xs)
        out = np.zeros((len(texts), self.max_len), dtype=np.int32)
        truncated = oov = total = 0
        for start, chunk in _chunks(texts):
            ids = layer(tf.constant(chunk, dtype=tf.string))  # ragged: one row of ids per text
            truncated += int(tf.math.count_nonzero(ids.row_lengths() > self.max_len))
            kept = ids[:, : self.max_len]
            oov += int(tf.math.count_nonzero(tf.equal(kept.flat_values, OOV)))
            total += int(tf.size(kept.flat_values))
            padded = kept.to_tensor(default_value=PAD, shape=[len(chunk), self.max_len]).numpy()
            if self.padding == "pre":
                padded = _pre_pad(padded, kept.row_lengths().numpy())
            out[start : start + len(chunk)] = padded
        return out, {"truncation_rate": truncated / max(len(texts), 1), "oov_rate": oov / max(total, 1)}

    def _numeric(self, xs: pd.Series) -> tuple[np.ndarray, dict[str, float]]:
        out = np.zeros((len(xs), self.max_len, self.channels), dtype=np.float32)
        mean, std = np.asarray(self.mean), np.asarray(self.std)
        truncated = 0
        for i, seq in enumerate(xs):
            arr = _as_steps(seq)
            truncated += arr.shape[0] > self.max_len
            arr = arr[: self.max_len]
            at = self._place(arr.shape[0])
            out[i, at] = (arr - mean) / std
            # A real step that standardises to exactly all-zero would read as padding;
            # nudge it so the mask stays truthful.
            zero_rows = ~out[i, at].any(axis=1)
            out[i, at][zero_rows] = 1e-6
        return out, {"truncation_rate": truncated / max(len(xs), 1)}

    def _ids(self, seqs: list[list[str]]) -> tuple[np.ndarray, dict[str, float]]:
        """Token-id sequences (as strings) → ids through the saved vocabulary."""
        index = {tok: i + 2 for i, tok in enumerate(self.vocab)}
        out = np.zeros((len(seqs), self.max_len), dtype=np.int32)
        truncated = oov = total = 0
        for i, seq in enumerate(seqs):
            truncated += len(seq) > self.max_len
            ids = [index.get(tok, OOV) for tok in seq[: self.max_len]]
            oov += sum(1 for t in ids if t == OOV)
            total += len(ids)
            out[i, self._place(len(ids))] = ids
        return out, {"truncation_rate": truncated / max(len(seqs), 1), "oov_rate": oov / max(total, 1)}


def _pre_pad(post_padded: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Move each row's first `length` ids to the row's end (padding first)."""
    out = np.zeros_like(post_padded)
    width = post_padded.shape[1]
    for i, n in enumerate(np.minimum(lengths, width)):
        if n:
            out[i, width - n :] = post_padded[i, :n]
    return out


def _as_steps(seq: Any) -> np.ndarray:
    arr = np.asarray([np.asarray(step, dtype=np.float64) for step in seq], dtype=np.float64)
    return arr.reshape(len(arr), -1)


def _standardized(text: str) -> bytes:
    return text.encode("utf-8").translate(None, _PUNCTUATION).lower()


def standardize(text: str) -> str:
    """TextVectorization's "lower_and_strip_punctuation", in pure Python."""
    return _standardized(text).decode("utf-8")


def split(text: str, level: str) -> list[str]:
    """The layer's split of a standardised text: ASCII-whitespace words, or non-whitespace characters."""
    if level == "char":
        return [c for c in text if c not in ASCII_WHITESPACE]
    return [w.decode("utf-8") for w in text.encode("utf-8").split()]


_ASCII_WHITESPACE_BYTES = ASCII_WHITESPACE.encode("ascii")


def token_count(text: str, level: str) -> int:
    """len(tokenize([text], level)[0]) without building the token list: the sequence
    length the model will see (data.max_len, truncation and length checks use it)."""
    data = _standardized(text)
    if level == "char":
        return len(data.translate(None, _ASCII_WHITESPACE_BYTES).decode("utf-8"))
    return len(data.split())


def tokenize(texts: Iterable[Any], level: str) -> list[list[str]]:
    """The tokens the fitted TextVectorization layer sees, without TensorFlow (for the data checks).

    A test keeps this equal to the layer on punctuation, case, accents and Unicode whitespace.
    """
    return [split(standardize(str(t)), level) for t in texts]


def token_counts(texts: Iterable[str], level: str) -> Counter:
    """Occurrences of `tokenize`'s tokens over many texts, without a list per text."""
    data = _standardized("\n".join(texts))  # "\n": a word boundary, and dropped at char level
    if level == "char":
        counts = Counter(data.decode("utf-8"))
        for space in ASCII_WHITESPACE:
            counts.pop(space, None)
        return counts
    return Counter({w.decode("utf-8"): n for w, n in Counter(data.split()).items()})


def _strings(xs: Iterable[Any]) -> list[str]:
    return [str(t) for t in xs]


def _chunks(texts: list[str]) -> Iterator[tuple[int, list[str]]]:
    for start in range(0, len(texts), TEXT_CHUNK):
        yield start, texts[start : start + TEXT_CHUNK]


def _split_chars(inputs: Any) -> Any:
    """split= for char level: one token per Unicode character, ASCII whitespace dropped."""
    import tensorflow as tf

    return tf.strings.unicode_split(tf.strings.regex_replace(inputs, _WHITESPACE_RE2, ""), "UTF-8")


def _text_layer(level: str, *, max_tokens: int | None = None, vocabulary: list[str] | None = None) -> Any:
    """The TextVectorization layer fit adapts and transform rebuilds from the saved vocabulary.

    Ragged int output (one row of ids per text); transform truncates and pads to max_len
    itself so it can count truncated texts and OOV ids on the same pass.
    """
    import keras

    if vocabulary is not None:
        # "" is id 0 and "[UNK]" id 1, so vocabulary[i] gets id i + 2. Keras cannot build an
        # empty lookup table: a train split without tokens gets " ", which no split yields,
        # so every token still maps to OOV.
        vocabulary = ["", OOV_TOKEN, *(vocabulary or [" "])]
    return keras.layers.TextVectorization(
        max_tokens=max_tokens,
        standardize="lower_and_strip_punctuation",
        split=_split_chars if level == "char" else "whitespace",
        output_mode="int",
        vocabulary=vocabulary,
        ragged=True,
    )


def _text_vocabulary(texts: pd.Series, level: str, max_tokens: int) -> list[str]:
    """Adapt a TextVectorization layer on the train texts; its vocabulary without "" and "[UNK]".

    Order is the layer's: by count, ties by descending byte order, so it depends only
    on the multiset of train tokens, not on row order or the hash seed.
    """
    import tensorflow as tf

    layer = _text_layer(level, max_tokens=max(int(max_tokens), 3))
    layer.adapt(tf.constant(chunk, dtype=tf.string) for _, chunk in _chunks(_strings(texts)))
    vocab = layer.get_vocabulary(include_special_tokens=False)
    # Plain str (Keras returns numpy strings) so the vocabulary serialises as JSON.
    return [tok.decode("utf-8") if isinstance(tok, bytes) else str(tok) for tok in vocab]


def fit(
    train: pd.DataFrame,
    kind: str,
    max_len: int,
    max_tokens: int,
    text_level: str,
    *,
    padding: str = "post",
    standardize: bool = True,
) -> Featurizer:
    """Fit on the training split only (leaking val/test statistics would flatter val loss).

    max_len 0 means the longest train row by the prepared `length` column (for text: the
    layer's token count, `token_count`).
    """
    lengths = train["length"].to_numpy()
    max_len = int(max_len) if max_len > 0 else int(max(lengths.max(initial=1), 1))
    if kind == "numeric":
        steps = np.concatenate([_as_steps(seq) for seq in train["x"]])
        mean, std = steps.mean(axis=0), steps.std(axis=0)
        std[std == 0] = 1.0
        if not standardize:
            mean, std = np.zeros_like(mean), np.ones_like(std)
        return Featurizer(
            kind,
            max_len,
            channels=steps.shape[1],
            mean=mean.tolist(),
            std=std.tolist(),
            padding=padding,
            standardize=standardize,
        )
    if kind == "tokens":
        seqs = [[str(t) for t in seq] for seq in train["x"]]
        return Featurizer(kind, max_len, vocab=_vocabulary(seqs, max_tokens), text_level="word", padding=padding)
    vocab = _text_vocabulary(train["x"], text_level, max_tokens)
    return Featurizer(kind, max_len, vocab=vocab, text_level=text_level, padding=padding)


def _vocabulary(seqs: list[list[str]], max_tokens: int) -> list[str]:
    """Token ids: most frequent first, ties in ascending string order; max_tokens - 2 entries (at least 1)."""
    counts: dict[str, int] = {}
    for seq in seqs:
        for tok in seq:
            counts[tok] = counts.get(tok, 0) + 1
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return [tok for tok, _ in ranked[: max(max_tokens - 2, 1)]]


def encode_labels(
    labels: pd.Series, label_index: dict[str, int], multilabel: bool, delimiter: str, loss: str
) -> np.ndarray:
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
