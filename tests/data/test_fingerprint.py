"""Fingerprint: order-insensitive vs order-sensitive hashes, label map hash, stable JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd

from losstrace.data.fingerprint import fingerprint, label_map_hash
from losstrace.io import to_json

LABELS = {"a": 0, "b": 1, "c": 2}


def frame(xs: list, labels: list[str]) -> pd.DataFrame:
    lengths = [len(x.split()) if isinstance(x, str) else len(x) for x in xs]
    return pd.DataFrame(
        {"x": xs, "label": labels, "length": lengths, "source_file": "f.csv", "line": np.arange(1, len(xs) + 1)}
    )


def text_split(n: int = 60, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    xs = [" ".join(f"w{v}" for v in rng.integers(0, 30, rng.integers(2, 9))) + f" #{i}" for i in range(n)]
    return frame(xs, list(rng.choice(["a", "b", "c"], n)))


def test_shape_and_values():
    fp = fingerprint({"train": text_split(), "val": text_split(20, 1)}, LABELS)
    assert set(fp) == {"label_map_hash", "train", "val"}
    train = fp["train"]
    assert set(train) == {"rows", "class_counts", "order", "length", "content_hash", "ordered_hash"}
    assert train["rows"] == 60
    assert list(train["class_counts"]) == ["a", "b", "c"] and sum(train["class_counts"].values()) == 60
    assert set(train["order"]) == {"runs_z", "adjacent_same_rate", "clustered"}
    assert list(train["length"]) == ["p0", "p5", "p25", "p50", "p75", "p95", "p100"]
    assert train["length"]["p0"] <= train["length"]["p50"] <= train["length"]["p100"]
    json.dumps(fp, allow_nan=False)


def test_reordered_rows_same_content_different_order():
    split = text_split()
    reordered = split.sample(frac=1.0, random_state=3).reset_index(drop=True)
    a, b = fingerprint({"train": split}, LABELS)["train"], fingerprint({"train": reordered}, LABELS)["train"]
    assert a["content_hash"] == b["content_hash"]
    assert a["ordered_hash"] != b["ordered_hash"]
    assert a["class_counts"] == b["class_counts"] and a["length"] == b["length"]


def test_rows_added_change_rows_and_content():
    split = text_split()
    grown = pd.concat([split, frame(["a brand new row"], ["b"])], ignore_index=True)
    a, b = fingerprint({"train": split}, LABELS)["train"], fingerprint({"train": grown}, LABELS)["train"]
    assert (a["rows"], b["rows"]) == (60, 61)
    assert a["content_hash"] != b["content_hash"]


def test_relabelled_row_changes_content_hash():
    split = text_split()
    flipped = split.copy()
    flipped.loc[0, "label"] = "a" if split.loc[0, "label"] != "a" else "b"
    a, b = fingerprint({"train": split}, LABELS)["train"], fingerprint({"train": flipped}, LABELS)["train"]
    assert a["content_hash"] != b["content_hash"]


def test_label_map_change_changes_label_map_hash():
    split = {"train": text_split()}
    base = fingerprint(split, LABELS)["label_map_hash"]
    assert fingerprint(split, {"a": 0, "c": 1, "b": 2})["label_map_hash"] != base  # reordered
    assert fingerprint(split, {"a": 0, "b": 1, "d": 2})["label_map_hash"] != base  # renamed
    assert fingerprint(split, {"c": 2, "a": 0, "b": 1})["label_map_hash"] == base  # key order is irrelevant
    assert label_map_hash(LABELS) == base


def test_grouped_rows_are_clustered():
    split = text_split(90)
    grouped = split.sort_values("label", kind="stable").reset_index(drop=True)
    assert fingerprint({"train": split}, LABELS)["train"]["order"]["clustered"] is False
    order = fingerprint({"train": grouped}, LABELS)["train"]["order"]
    assert order["clustered"] is True and order["runs_z"] < -3 and order["adjacent_same_rate"] > 0.9


def test_class_counts_zero_filled_and_multilabel():
    split = frame(["x y", "y z", "z"], ["a|b", "b", "a"])
    fp = fingerprint({"train": split}, {"a": 0, "b": 1, "c": 2}, delimiter="|")
    assert fp["train"]["class_counts"] == {"a": 2, "b": 2, "c": 0}


def test_token_and_numeric_inputs():
    tokens = frame([[1, 2, 3], [4, 5]], ["a", "b"])
    as_arrays = frame([np.array([1, 2, 3]), np.array([4, 5])], ["a", "b"])
    same = [fingerprint({"t": f}, LABELS)["t"]["content_hash"] for f in (tokens, as_arrays)]
    assert same[0] == same[1]
    numeric = frame([[[0.1, 0.2], [0.3, 0.4]], [[1.0, 2.0]]], ["a", "b"])
    assert fingerprint({"n": numeric}, LABELS)["n"]["length"]["p100"] == 2.0


def test_empty_split():
    empty = frame([], [])
    fp = fingerprint({"test": empty}, LABELS)["test"]
    assert fp["rows"] == 0 and fp["length"]["p50"] is None and fp["order"]["clustered"] is False
    json.dumps(fp, allow_nan=False)


def test_deterministic_across_processes():
    """Same data → byte-identical JSON in a fresh interpreter with another hash seed."""
    code = (
        "import sys, numpy as np, pandas as pd\n"
        "from losstrace.data.fingerprint import fingerprint\n"
        "from losstrace.io import to_json\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "from test_fingerprint import text_split, LABELS\n"
        "sys.stdout.write(to_json(fingerprint({'train': text_split(), 'val': text_split(20, 1)}, LABELS)))\n"
    )
    here = os.path.dirname(__file__)
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code, here], capture_output=True, text=True, env=env, check=True).stdout
    assert out == to_json(fingerprint({"train": text_split(), "val": text_split(20, 1)}, LABELS))
