"""Each data check: a small bad dataset produces the finding (code, split, observed), a clean one none."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pandas as pd
import pytest

from losstrace.data import checks
from losstrace.findings import Finding
from losstrace.params import ValidateParams

VP = ValidateParams()
LABELS = {"a": 0, "b": 1, "c": 2}


def frame(xs: list, labels: list[str], lengths: list[int] | None = None, source: str = "f.csv") -> pd.DataFrame:
    """A split in the prepared schema (x, label, length, source_file, line)."""
    if lengths is None:
        lengths = [len(x.split()) if isinstance(x, str) else len(x) for x in xs]
    return pd.DataFrame(
        {"x": xs, "label": labels, "length": lengths, "source_file": source, "line": np.arange(1, len(xs) + 1)}
    )


def shuffled_labels(counts: dict[str, int], seed: int = 0) -> list[str]:
    labels = [name for name, n in counts.items() for _ in range(n)]
    return list(np.random.default_rng(seed).permutation(labels))


def unique_texts(n: int, prefix: str) -> list[str]:
    return [f"{prefix} text number {i}" for i in range(n)]


def clean_splits() -> dict[str, pd.DataFrame]:
    """Balanced, shuffled, disjoint, no duplicates, shared vocabulary: no check fires."""
    vocab = [f"w{i}" for i in range(12)]
    rng = np.random.default_rng(1)

    def texts(n: int, start: int) -> list[str]:
        return [" ".join([f"id{start + i}", *rng.choice(vocab, 6)]) for i in range(n)]

    # ids differ per split, so val/test ids are OOV: 1 of 7 words, below max_oov_rate 0.2.
    return {
        "train": frame(texts(60, 0), shuffled_labels({"a": 20, "b": 20, "c": 20}, 1)),
        "val": frame(texts(30, 1000), shuffled_labels({"a": 10, "b": 10, "c": 10}, 2)),
        "test": frame(texts(30, 2000), shuffled_labels({"a": 10, "b": 10, "c": 10}, 3)),
    }


def only(findings: list[Finding], code: str) -> list[Finding]:
    return [f for f in findings if f.code == code]


# ---------------------------------------------------------------- input keys


def test_input_key_is_stable_and_typed():
    # A pinned value: keys feed fingerprints compared across runs and machines.
    assert checks.input_key("hello") == "1ef3d474b722f75e85fff2ee82ef1b05"
    assert checks.input_key("hello") == checks.input_key("hello")
    assert checks.input_key("1 2 3") != checks.input_key([1, 2, 3])  # text vs tokens
    assert checks.input_key([1, 2, 3]) == checks.input_key(np.array([1, 2, 3], dtype=np.int32))
    assert checks.input_key([1, 2, 3]) != checks.input_key([1, 2, 3, 0])


def test_input_key_numeric_forms_agree():
    nested = [[1.0, 2.0], [3.0, -0.0]]
    as_loaded = np.array([np.array([1.0, 2.0]), np.array([3.0, 0.0])], dtype=object)  # how parquet lists load
    assert checks.input_key(nested) == checks.input_key(as_loaded) == checks.input_key(np.array(nested))
    assert checks.input_key(nested) != checks.input_key([[1.0, 2.0, 3.0, 0.0]])  # same floats, other shape
    assert checks.input_key([float("nan")]) == checks.input_key(np.array([np.nan]))


# ---------------------------------------------------------------- runs test


def test_runs_test_moments_match_exhaustive_enumeration():
    labels = ["a", "a", "b", "b", "b", "c"]
    runs = [1 + sum(p[i] != p[i - 1] for i in range(1, len(p))) for p in itertools.permutations(labels)]
    rt = checks.runs_test(labels)
    assert rt.expected == pytest.approx(np.mean(runs))
    assert rt.sd == pytest.approx(np.std(runs))


def test_same_rate_limit_agrees_with_z_threshold():
    rng = np.random.default_rng(0)
    for trial in range(200):
        labels = rng.choice(["a", "b", "c"], size=40, p=[0.5, 0.3, 0.2])
        if trial % 2:
            labels = np.sort(labels[:20]).tolist() + labels[20:].tolist()  # half grouped
        rt = checks.runs_test(list(labels))
        flagged = rt.z < VP.order_z_threshold
        assert flagged == (rt.same_rate > rt.same_rate_limit(VP.order_z_threshold) + 1e-12)


def test_runs_test_degenerate_inputs():
    assert checks.runs_test([]).z == 0.0
    assert checks.runs_test(["a"] * 10).z == 0.0  # one class: order is meaningless
    assert checks.runs_test(["a"] * 10).same_rate_limit(-3.0) == 1.0


# ---------------------------------------------------------------- class balance


def test_class_imbalance_severity_by_split_and_ratio():
    splits = {
        "train": frame(unique_texts(90, "t"), shuffled_labels({"a": 81, "b": 9})),  # 9 > 2 x 4: error
        "val": frame(unique_texts(60, "v"), shuffled_labels({"a": 50, "b": 10})),  # 5 > 4: warning
        "test": frame(unique_texts(60, "s"), shuffled_labels({"a": 30, "b": 30})),
    }
    found = checks.check_class_balance(splits, VP)
    assert [(f.where, f.severity, f.evidence["observed"]) for f in found] == [
        ("train", "error", 9.0),
        ("val", "warning", 5.0),
    ]
    assert found[0].evidence["threshold"] == 4.0 and found[0].evidence["min_class"] == "b"


def test_class_imbalance_of_a_split_stratified_like_train_is_info():
    splits = {
        "train": frame(unique_texts(60, "t"), shuffled_labels({"a": 50, "b": 10})),
        "val": frame(unique_texts(30, "v"), shuffled_labels({"a": 25, "b": 5})),  # train's shares
        "test": frame(unique_texts(30, "s"), shuffled_labels({"a": 27, "b": 3})),  # 0.9 vs 0.83: shifted
    }
    found = {f.where: f for f in checks.check_class_balance(splits, VP)}
    assert (found["train"].severity, found["val"].severity, found["test"].severity) == ("warning", "info", "warning")
    assert found["val"].evidence["max_share_shift_vs_train"] == 0.0
    assert found["test"].evidence["max_share_shift_vs_train"] == pytest.approx(0.0667, abs=1e-4)
    assert "nothing to change" in found["val"].suggestion


def test_class_imbalance_on_multilabel_data_does_not_offer_class_weights():
    labels = ["a|b"] * 10 + ["a"] * 40 + ["b|c"] * 2
    (f,) = checks.check_class_balance({"train": frame(unique_texts(52, "t"), labels)}, VP, delimiter="|")
    assert f.evidence["max_class"] == "a" and f.evidence["min_class"] == "c"
    assert "class_weight: balanced" not in f.suggestion and "single-label" in f.suggestion


def test_class_imbalance_train_between_threshold_and_double_is_warning():
    splits = {"train": frame(unique_texts(60, "t"), shuffled_labels({"a": 50, "b": 10}))}
    (f,) = checks.check_class_balance(splits, VP)
    assert (f.code, f.where, f.severity, f.evidence["observed"]) == ("class_imbalance", "train", "warning", 5.0)


def test_class_missing_from_split_is_infinite_ratio():
    splits = {"train": frame(unique_texts(20, "t"), shuffled_labels({"a": 10, "b": 10}))}
    (f,) = checks.check_class_balance(splits, VP, LABELS)
    assert (f.where, f.severity, f.evidence["observed"], f.evidence["min_class"]) == ("train", "error", "inf", "c")


def test_class_balance_clean():
    assert checks.check_class_balance(clean_splits(), VP, LABELS) == []


def test_class_counts_multilabel_parts():
    labels = pd.Series(["a|b", "b", "a|c", None])
    assert checks.class_counts(labels, ["a", "b", "c", "d"], "|") == {"a": 2, "b": 2, "c": 1, "d": 0}


# ---------------------------------------------------------------- label order


def test_label_order_clustered_on_sorted_rows():
    splits = clean_splits()
    splits["train"] = splits["train"].sort_values("label", kind="stable").reset_index(drop=True)
    (f,) = checks.check_label_order(splits, VP)
    assert (f.code, f.where, f.severity) == ("label_order_clustered", "train", "warning")
    assert f.evidence["runs"] == 3 and f.evidence["observed"] < -6
    assert f.evidence["threshold"] == -3.0
    # The fix as data, so diagnose's prescription and `losstrace fix` carry it.
    assert f.changes == ({"key": "data.shuffle", "from": False, "to": True},)
    assert f.to_dict()["changes"] == [{"key": "data.shuffle", "from": False, "to": True}]


def test_label_order_clean():
    assert checks.check_label_order(clean_splits(), VP) == []


# ---------------------------------------------------------------- label set / encoding


def test_label_set_mismatch_val_label_unseen_in_train():
    splits = clean_splits()
    splits["val"].loc[:2, "label"] = "d"
    (f,) = checks.check_label_set(splits, None)
    assert (f.code, f.where, f.severity, f.evidence["observed"]) == ("label_set_mismatch", "val", "error", ["d"])
    assert f.evidence["rows"] == 3


def test_label_set_mismatch_label_outside_label_map_multilabel():
    splits = {"train": frame(["x y", "y z"], ["a|b", "a|e"]), "val": frame(["q"], ["a|f"])}
    found = checks.check_label_set(splits, {"a": 0, "b": 1, "f": 2}, "|")
    assert [(f.where, f.evidence["not_in_label_map"], f.evidence["unseen_in_train"]) for f in found] == [
        ("train", ["e"], []),
        ("val", [], ["f"]),
    ]


def test_label_set_clean():
    assert checks.check_label_set(clean_splits(), LABELS) == []


@pytest.mark.parametrize(
    "current, key, expected",
    [
        ({"a": 0, "b": 1, "c": 2, "d": 3}, "added", ["d"]),
        ({"a": 0, "b": 1}, "removed", ["c"]),
        ({"a": 0, "b": 1, "z": 2}, "renamed", [{"index": 2, "from": "c", "to": "z"}]),
        (
            {"a": 0, "c": 1, "b": 2},
            "reordered",
            [{"label": "b", "from": 1, "to": 2}, {"label": "c", "from": 2, "to": 1}],
        ),
    ],
)
def test_label_encoding_changed(current, key, expected):
    (f,) = checks.check_label_encoding(current, LABELS, VP)
    assert (f.code, f.where, f.severity) == ("label_encoding_changed", "labels", "error")
    assert f.evidence["observed"] == {key: expected}


def test_label_encoding_change_allowed_is_warning():
    (f,) = checks.check_label_encoding({"a": 0, "b": 1}, LABELS, ValidateParams(allow_label_change=True))
    assert f.severity == "warning"


def test_label_encoding_clean_or_no_reference():
    assert checks.check_label_encoding(dict(LABELS), LABELS, VP) == []
    assert checks.check_label_encoding(LABELS, None, VP) == []


# ---------------------------------------------------------------- duplicates, leakage, conflicts


def test_duplicate_inputs_within_split():
    texts = unique_texts(16, "t") + ["same words"] * 4  # 3 repeats of 20 rows = 0.15
    splits = {"train": frame(texts, shuffled_labels({"a": 10, "b": 10}))}
    splits["train"]["label"] = "a"
    (f,) = checks.check_duplicates(splits, VP)
    assert (f.code, f.where, f.severity, f.evidence["observed"]) == ("duplicate_inputs", "train", "warning", 0.15)
    assert f.evidence["duplicates"] == 3 and f.evidence["examples"][0] == "f.csv:18"


def test_duplicates_clean():
    assert checks.check_duplicates(clean_splits(), VP) == []


def test_train_val_leakage_on_val_and_test():
    splits = clean_splits()
    splits["val"].loc[:5, "x"] = splits["train"]["x"].iloc[:6].to_numpy()  # 6 of 30 = 0.2
    splits["test"].loc[:2, "x"] = splits["train"]["x"].iloc[10:13].to_numpy()  # 3 of 30 = 0.1
    found = checks.check_leakage(splits, VP)
    assert [(f.code, f.where, f.severity, f.evidence["observed"]) for f in found] == [
        ("train_val_leakage", "val", "error", 0.2),
        ("train_val_leakage", "test", "error", 0.1),
    ]
    assert checks.check_leakage(splits, ValidateParams(max_leakage_rate=0.25)) == []


def test_leakage_of_token_inputs():
    train = frame([[1, 2, 3], [4, 5]], ["a", "b"])
    val = frame([np.array([4, 5]), np.array([7])], ["b", "a"])
    (f,) = checks.check_leakage({"train": train, "val": val}, VP)
    assert (f.where, f.evidence["observed"], f.evidence["leaked_rows"]) == ("val", 0.5, 1)


def test_leakage_clean():
    assert checks.check_leakage(clean_splits(), VP) == []


def test_conflicting_labels_within_and_across_splits():
    splits = clean_splits()
    splits["train"].loc[1, "x"] = splits["train"].loc[0, "x"]
    splits["train"].loc[1, "label"] = "b" if splits["train"].loc[0, "label"] != "b" else "c"
    other = "a" if splits["train"].loc[5, "label"] != "a" else "b"
    splits["val"].loc[0, ["x", "label"]] = [splits["train"].loc[5, "x"], other]
    found = checks.check_conflicting_labels(splits)
    assert [(f.code, f.where, f.severity, f.evidence["rows"]) for f in found] == [
        ("conflicting_labels", "train", "warning", 3),
        ("conflicting_labels", "val", "warning", 1),
    ]
    assert found[1].evidence["observed"] == pytest.approx(1 / 30, abs=1e-6)


def test_conflicting_labels_clean():
    splits = clean_splits()
    splits["train"].loc[1, ["x", "label"]] = (
        splits["train"].loc[0, ["x", "label"]].to_numpy()
    )  # a duplicate, same label
    assert checks.check_conflicting_labels(splits) == []


# ---------------------------------------------------------------- truncation, OOV, rejects


def test_truncation_above_max_len():
    splits = {"train": frame(unique_texts(10, "t"), ["a", "b"] * 5, lengths=[3] * 8 + [9, 9])}
    (f,) = checks.check_truncation(splits, VP, max_len=5)
    assert (f.code, f.where, f.severity) == ("truncation", "train", "warning")
    assert (f.evidence["observed"], f.evidence["max_len"], f.evidence["truncated_rows"]) == (0.2, 5, 2)


def test_truncation_default_max_len_is_longest_train_sequence():
    splits = {
        "train": frame(unique_texts(10, "t"), ["a", "b"] * 5, lengths=[4] * 10),
        "val": frame(unique_texts(10, "v"), ["a", "b"] * 5, lengths=[4] * 9 + [12]),
    }
    (f,) = checks.check_truncation(splits, VP, max_len=0)
    assert (f.where, f.evidence["observed"], f.evidence["max_len"], f.evidence["longest"]) == ("val", 0.1, 4, 12)


def test_truncation_clean():
    assert checks.check_truncation(clean_splits(), VP, max_len=0) == []


def test_high_oov_rate_text():
    splits = {
        "train": frame(["the cat sat", "the dog ran"], ["a", "b"]),
        "val": frame(["The cat, flew!", "zebra ran"], ["a", "b"]),  # flew, zebra unseen: 2 of 5
    }
    (f,) = checks.check_oov(splits, VP, "text", "word")
    assert (f.code, f.where, f.severity, f.evidence["observed"]) == ("high_oov_rate", "val", "warning", 0.4)
    assert sorted(f.evidence["examples"]) == ["flew", "zebra"]


def test_high_oov_rate_tokens_and_chars():
    tokens = {"train": frame([[1, 2, 3], [2, 3]], ["a", "b"]), "test": frame([[1, 9], [8, 9]], ["a", "b"])}
    (f,) = checks.check_oov(tokens, VP, "tokens")
    assert (f.where, f.evidence["observed"]) == ("test", 0.75)
    chars = {"train": frame(["abc", "cab"], ["a", "b"]), "val": frame(["ab z", "xyz"], ["a", "b"])}
    (f,) = checks.check_oov(chars, VP, "text", "char")
    assert f.evidence["tokens"] == 6 and f.evidence["observed"] == pytest.approx(4 / 6, abs=1e-6)


def test_oov_clean_and_numeric_skipped():
    assert checks.check_oov(clean_splits(), VP, "text", "word") == []
    numeric = {"train": frame([[[1.0]], [[2.0]]], ["a", "b"]), "val": frame([[[3.0]]], ["a"])}
    assert checks.check_oov(numeric, VP, "numeric") == []


def test_rows_rejected():
    (f,) = checks.check_rows_rejected({"rows_read": 100, "rows_rejected": 4})
    assert (f.code, f.where, f.severity) == ("rows_rejected", "ingest", "warning")
    assert (f.evidence["observed"], f.evidence["rate"]) == (4, 0.04)
    assert checks.check_rows_rejected({"rows_read": 100, "rows_rejected": 0}) == []
    assert checks.check_rows_rejected({}) == []


# ---------------------------------------------------------------- all together


def test_run_checks_clean_dataset_has_no_findings():
    info = {"input": "text", "multilabel": False, "rows_read": 120, "rows_rejected": 0}
    assert checks.run_checks(clean_splits(), LABELS, dict(LABELS), info, VP) == []


def test_run_checks_order_and_json_safe_evidence():
    splits = clean_splits()
    splits["val"].loc[:5, ["x", "label"]] = splits["train"][["x", "label"]].iloc[:6].to_numpy()
    splits["train"] = splits["train"].sort_values("label", kind="stable").reset_index(drop=True)
    info = {"input": "text", "rows_read": 130, "rows_rejected": 10}
    found = checks.run_checks(splits, LABELS, {"a": 0, "b": 1}, info, VP)
    assert [f.code for f in found] == [
        "rows_rejected",
        "label_encoding_changed",
        "train_val_leakage",
        "label_order_clustered",
    ]
    json.dumps([f.to_dict() for f in found], allow_nan=False)


def test_describe_is_one_line_with_threshold():
    f = Finding("train_val_leakage", "error", {"observed": 0.2, "threshold": 0.0}, "", "val")
    assert checks.describe(f) == "share of rows also in train 0.2 (threshold 0.0)"
    f = Finding("label_encoding_changed", "error", {"observed": {"added": ["d"]}}, "", "labels")
    assert checks.describe(f) == "added ['d']"
    f = Finding("expectation_failed", "error", {"observed": {"unexpected_count": 1}, "name": "x_not_null"}, "", "val")
    assert checks.describe(f) == "x_not_null: unexpected_count 1"
