"""Data fingerprint: what `diff` compares to tell *which* aspect of the data changed.

Shape (a contract: diff reads fingerprints recorded by older versions), keys grouped by split:

    {"label_map_hash": str,
     "<split>": {"rows", "class_counts", "order": {"runs_z", "adjacent_same_rate", "clustered"},
                 "length": {"p0", "p5", "p25", "p50", "p75", "p95", "p100"},
                 "content_hash", "ordered_hash"}}

`content_hash` ignores row order (same rows shuffled → same hash) while
`ordered_hash` does not, so a diff can say "same data, new order" apart from
"new data". Hashes are blake2b over canonical bytes (never Python's `hash` or
pandas' hashing), so they are equal across runs, machines and library versions.
Floats are rounded to 6 decimals so reruns produce byte-identical JSON.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from losstrace.data.checks import KEY_BYTES, class_counts, input_keys, runs_test

PERCENTILES = (0, 5, 25, 50, 75, 95, 100)
_NULL_LABEL = b"\x00null"


def fingerprint(
    splits: Mapping[str, pd.DataFrame],
    labels: Mapping[str, int],
    *,
    delimiter: str | None = None,
    order_z_threshold: float = -3.0,
    keys: Mapping[str, pd.Series] | None = None,
) -> dict[str, Any]:
    """Fingerprint every split plus the label map.

    `delimiter` splits multi-label rows for `class_counts`; `keys` reuses input keys
    already computed by the checks (hashing 1M rows once instead of twice).
    """
    out: dict[str, Any] = {"label_map_hash": label_map_hash(labels)}
    for name, frame in splits.items():
        split_keys = keys[name] if keys is not None else input_keys(frame["x"], frame.index)
        out[name] = split_fingerprint(frame, split_keys, labels, delimiter, order_z_threshold)
    return out


def split_fingerprint(
    frame: pd.DataFrame,
    keys: pd.Series,
    labels: Mapping[str, int],
    delimiter: str | None,
    order_z_threshold: float,
) -> dict[str, Any]:
    rt = runs_test(frame["label"])
    records = row_records(keys, frame["label"])
    return {
        "rows": int(len(frame)),
        "class_counts": class_counts(frame["label"], labels, delimiter),
        "order": {
            "runs_z": _round(rt.z),
            "adjacent_same_rate": _round(rt.same_rate),
            "clustered": bool(rt.z < order_z_threshold),
        },
        "length": length_percentiles(frame["length"]),
        "content_hash": _digest(np.sort(records).tobytes()),
        "ordered_hash": _digest(records.tobytes()),
    }


def row_records(keys: pd.Series, labels: pd.Series) -> np.ndarray:
    """One fixed-width record per row: input-key digest ‖ label digest, as a numpy bytes array.

    Fixed width means sorting and concatenating need no separators (no ambiguity),
    and numpy sorts 1M records in milliseconds.
    """
    n = len(keys)
    key_bytes = np.frombuffer(bytes.fromhex("".join(keys.tolist())), dtype=np.uint8).reshape(n, KEY_BYTES)
    codes, uniques = pd.factorize(labels, use_na_sentinel=True)
    label_table = np.frombuffer(b"".join(_label_digest(u) for u in [*uniques, None]), dtype=np.uint8).reshape(
        len(uniques) + 1, KEY_BYTES
    )
    label_bytes = label_table[codes]  # code -1 (null) picks the last row: the null digest
    rec = np.ascontiguousarray(np.hstack([key_bytes, label_bytes]))
    return rec.view(f"S{2 * KEY_BYTES}").ravel()


def _label_digest(label: Any) -> bytes:
    raw = _NULL_LABEL if label is None else str(label).encode("utf-8")
    return hashlib.blake2b(raw, digest_size=KEY_BYTES).digest()


def length_percentiles(lengths: pd.Series) -> dict[str, float | None]:
    """p0…p100 of sequence lengths (linear interpolation); None for an empty split."""
    values = lengths.dropna().to_numpy(dtype=np.float64)
    if not len(values):
        return {f"p{q}": None for q in PERCENTILES}
    return {f"p{q}": _round(v) for q, v in zip(PERCENTILES, np.percentile(values, PERCENTILES))}


def label_map_hash(labels: Mapping[str, int]) -> str:
    """Hash of the label→index map in canonical JSON: any rename, addition or reindex changes it."""
    canon = json.dumps({str(k): int(v) for k, v in labels.items()}, sort_keys=True, separators=(",", ":"))
    return _digest(canon.encode("utf-8"))


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=KEY_BYTES).hexdigest()


def _round(value: float) -> float:
    return round(float(value), 6)
