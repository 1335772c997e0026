"""Input keys: what "the same input" means, for the checks and for ingest's split.

`input_key` is a stable blake2b digest of a canonical encoding, so equality means "the
model would see the same input", independent of pandas/pyarrow versions and of the
Python hash seed. Ingest keeps rows with one key in one split; validate's leakage and
duplicate checks and the fingerprint compare the same keys.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

KEY_BYTES = 16


def input_key(x: Any) -> str:
    """Stable hex digest of one input: text as its string, tokens as the int list, numeric as float64 bytes."""
    return hashlib.blake2b(_encode_input(x), digest_size=KEY_BYTES).hexdigest()


def input_keys(xs: Iterable[Any], index: pd.Index | None = None) -> pd.Series:
    """`input_key` of every row, aligned with `index`.

    Object dtype on purpose: pandas hashes Python strings fast, while `isin` on
    Arrow-backed strings is ~15x slower at a million rows.
    """
    return pd.Series([input_key(x) for x in xs], index=index, dtype=object)


def split_keys(splits: Mapping[str, pd.DataFrame]) -> dict[str, pd.Series]:
    """Input keys per split; computed once and shared by the checks and the fingerprint."""
    return {name: input_keys(frame["x"], frame.index) for name, frame in splits.items()}


def _encode_input(x: Any) -> bytes:
    # A type tag keeps "1 2" (text) and [1, 2] (tokens) apart; the shape keeps
    # a T×C array apart from the same floats laid out as C×T.
    if isinstance(x, str):
        return b"s:" + x.encode("utf-8")
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return b"null"
    arr = _as_array(x)
    shape = ",".join(map(str, arr.shape)).encode()
    if arr.dtype.kind in "iub":
        return b"i:" + shape + b":" + arr.astype("<i8").tobytes()
    if arr.dtype.kind == "f":
        canon = arr.astype("<f8") + 0.0  # -0.0 → 0.0
        canon[np.isnan(canon)] = np.nan  # one NaN bit pattern
        return b"f:" + shape + b":" + canon.tobytes()
    raise TypeError(f"cannot key an input of dtype {arr.dtype}")


def _as_array(x: Any) -> np.ndarray:
    """Nested lists / object arrays of steps (how parquet lists load) → one numeric array."""
    arr = np.asarray(x)
    if arr.dtype != object:
        return arr
    if arr.size == 0:
        return np.zeros(0, dtype="<f8")
    try:
        dense = np.asarray(arr.tolist())
        if dense.dtype != object:
            return dense
    except ValueError:
        pass
    # Ragged steps: flatten, ending each step with a marker so step boundaries still count.
    return np.concatenate([np.append(np.asarray(s, dtype="<f8").ravel(), np.inf) for s in arr])
