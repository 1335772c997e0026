"""Pure data checks on the prepared splits: pandas/numpy only, no Great Expectations.

Each check returns `Finding`s whose evidence carries the `observed` value, the
`threshold` it was held against and enough detail (counts, example rows) to act
on without re-running anything; `where` names the split (or `labels` / `ingest`).
`validate` mirrors the label, balance and order checks as GX expectations so they
also show in Data Docs; the checks here decide severities.

Inputs are compared through `input_key` (data/keys.py): equal keys mean "the model
would see the same input".
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from losstrace.data import featurize
from losstrace.data.keys import KEY_BYTES, _as_array, input_key, input_keys, split_keys  # noqa: F401 (re-exported)
from losstrace.findings import Finding
from losstrace.params import ValidateParams

SPLITS = ("train", "val", "test")
_MAX_EXAMPLES = 5


# ---------------------------------------------------------------- label helpers


def label_parts(labels: pd.Series, delimiter: str | None = None) -> pd.Series:
    """Individual labels of all rows: the label itself, or its parts when multi-label."""
    s = labels.dropna().astype(str)
    if delimiter:
        s = s.str.split(delimiter, regex=False).explode()
        s = s[s != ""]
    return s


def class_counts(labels: pd.Series, names: Iterable[str] = (), delimiter: str | None = None) -> dict[str, int]:
    """Rows per individual label, sorted; labels of `names` absent from the split count 0."""
    counts = {str(k): int(v) for k, v in label_parts(labels, delimiter).value_counts().items()}
    for name in names:
        counts.setdefault(name, 0)
    return dict(sorted(counts.items()))


@dataclass(frozen=True)
class RunsTest:
    """Wald–Wolfowitz runs test generalised to K categories.

    Under a random order of `n` labels with class counts n_k the number of runs R
    (maximal blocks of equal adjacent labels) has
    E[R] = n + 1 - S2/n and Var[R] = (S2 (S2 + n(n+1)) - 2n S3 - n^3) / (n^2 (n-1)),
    S2 = sum n_k^2, S3 = sum n_k^3. Grouped rows give far fewer runs: z << 0.
    """

    n: int
    runs: int
    expected: float
    sd: float

    @property
    def z(self) -> float:
        return (self.runs - self.expected) / self.sd if self.sd > 0 else 0.0

    @property
    def same_rate(self) -> float:
        """Share of adjacent pairs with equal labels: (n - R) / (n - 1)."""
        return (self.n - self.runs) / (self.n - 1) if self.n > 1 else 0.0

    @property
    def expected_same_rate(self) -> float:
        """`same_rate` expected under random order: (n - E[R]) / (n - 1)."""
        return (self.n - self.expected) / (self.n - 1) if self.n > 1 else 0.0

    def same_rate_limit(self, z_threshold: float) -> float:
        """Largest `same_rate` with z >= z_threshold: the runs test restated as a bound on a mean.

        z < t  ⇔  R < E + t·sd  ⇔  (n - R)/(n - 1) > (n - E - t·sd)/(n - 1).
        """
        if self.n < 2 or self.sd == 0:
            return 1.0
        return min(1.0, max(0.0, (self.n - self.expected - z_threshold * self.sd) / (self.n - 1)))


def runs_test(labels: Sequence[Any] | pd.Series) -> RunsTest:
    codes, _ = pd.factorize(pd.Series(labels), use_na_sentinel=False)
    n = len(codes)
    if n == 0:
        return RunsTest(0, 0, 0.0, 0.0)
    runs = 1 + int(np.count_nonzero(codes[1:] != codes[:-1]))
    counts = np.bincount(codes).astype(np.float64)
    s2, s3 = float((counts**2).sum()), float((counts**3).sum())
    expected = n + 1 - s2 / n
    var = (s2 * (s2 + n * (n + 1)) - 2 * n * s3 - n**3) / (n**2 * (n - 1)) if n > 1 else 0.0
    return RunsTest(n, runs, expected, math.sqrt(max(var, 0.0)))


def same_as_prev(labels: pd.Series) -> pd.Series:
    """1.0 where a row's label equals the previous row's, NaN on the first row (no predecessor)."""
    same = (labels == labels.shift()).astype(np.float64)
    if len(same):
        same.iloc[0] = np.nan
    return same


# ---------------------------------------------------------------- checks


SHARE_TOLERANCE = 0.05  # a val/test class share within 5 points of train's: the same distribution


def check_class_balance(
    splits: Mapping[str, pd.DataFrame],
    vp: ValidateParams,
    label_names: Iterable[str] = (),
    delimiter: str | None = None,
) -> list[Finding]:
    """`class_imbalance`: largest / smallest class count per split above validate.max_class_ratio.

    Severity: in train it changes what the model learns, but moderate imbalance is normal
    and handled by `train.class_weight: balanced`; only a ratio above twice the threshold
    (or a class with no training rows at all) is an error, anything between is a warning.
    In val/test it only skews the metrics: a warning when the split's class shares differ
    from train's (e.g. an official test split), `info` when they match train's within
    5 points (a stratified split): the imbalance is then train's, already reported there.
    Classes of labels.json missing from a split count as 0 (ratio "inf").
    """
    names = list(label_names)
    out = []
    train_shares: dict[str, float] | None = None
    for split, frame in ordered_splits(splits):
        counts = class_counts(frame["label"], names, delimiter)
        total = sum(counts.values()) or 1
        shares = {k: n / total for k, n in counts.items()}
        if split == "train":
            train_shares = shares
        if len(counts) < 2:
            continue
        (max_cls, max_n), (min_cls, min_n) = _extremes(counts)
        ratio = max_n / min_n if min_n else math.inf
        if ratio <= vp.max_class_ratio:
            continue
        error_above = 2 * vp.max_class_ratio
        severity = "error" if split == "train" and ratio > error_above else "warning"
        shift = None
        if split != "train" and train_shares is not None:
            shift = max(abs(shares.get(k, 0.0) - train_shares.get(k, 0.0)) for k in set(shares) | set(train_shares))
            if shift <= SHARE_TOLERANCE and min_n:
                severity = "info"
        fix = (
            "resample or collect more rows of the rare label (train.class_weight applies to single-label data only)"
            if delimiter
            else "set train.class_weight: balanced, or resample/collect more rows of the rare class"
        )
        if severity == "info":
            fix = "nothing to change here: same class shares as train (see train's class_imbalance)"
        out.append(
            Finding(
                "class_imbalance",
                severity,
                {
                    "observed": _num(ratio),
                    "threshold": vp.max_class_ratio,
                    **({"error_above": error_above} if split == "train" else {}),
                    **(
                        {"max_share_shift_vs_train": round(shift, 4), "share_tolerance": SHARE_TOLERANCE}
                        if shift is not None
                        else {}
                    ),
                    "max_class": max_cls,
                    "max_count": max_n,
                    "min_class": min_cls,
                    "min_count": min_n,
                    "class_counts": counts,
                },
                fix,
                split,
            )
        )
    return out


def check_label_order(splits: Mapping[str, pd.DataFrame], vp: ValidateParams) -> list[Finding]:
    """`label_order_clustered`: runs-test z below validate.order_z_threshold (rows grouped by label).

    A warning, not an error: ingest shuffles by default, and `data.shuffle: false` on
    grouped data is a legitimate experiment; it must be visible, not blocked.
    """
    out = []
    for split, frame in ordered_splits(splits):
        rt = runs_test(frame["label"])
        if not rt.z < vp.order_z_threshold:
            continue
        out.append(
            Finding(
                "label_order_clustered",
                "warning",
                {
                    "observed": _num(rt.z),
                    "threshold": vp.order_z_threshold,
                    "runs": rt.runs,
                    "expected_runs": _num(rt.expected),
                    "adjacent_same_rate": _num(rt.same_rate),
                    "rows": rt.n,
                },
                "shuffle the rows (data.shuffle: true): grouped labels make batch losses swing between classes",
                split,
                # As data, so the prescription (and `losstrace fix`) carries it: the sentence above
                # cannot say `false → true`, since a grouped val_source file is clustered whatever
                # data.shuffle is (the prescription then skips it: the run already has true).
                changes=(SHUFFLE_CHANGE,),
            )
        )
    return out


SHUFFLE_CHANGE = {"key": "data.shuffle", "from": False, "to": True}


def check_label_set(
    splits: Mapping[str, pd.DataFrame],
    labels: Mapping[str, int] | None = None,
    delimiter: str | None = None,
) -> list[Finding]:
    """`label_set_mismatch` (error): val/test labels never seen in train, or any label outside labels.json.

    A label the model never trained on can only be predicted wrong, and one outside
    the label map cannot even be encoded.
    """
    train = set(label_parts(splits["train"]["label"], delimiter)) if "train" in splits else set()
    known = set(labels) if labels else None
    out = []
    for split, frame in ordered_splits(splits):
        parts = label_parts(frame["label"], delimiter)
        present = set(parts)
        unseen = sorted(present - train) if split != "train" else []
        unmapped = sorted(present - known) if known is not None else []
        if not unseen and not unmapped:
            continue
        bad = set(unseen) | set(unmapped)
        out.append(
            Finding(
                "label_set_mismatch",
                "error",
                {
                    "observed": sorted(bad),
                    "unseen_in_train": unseen,
                    "not_in_label_map": unmapped,
                    "rows": int(parts[parts.isin(bad)].index.nunique()),
                    "train_labels": sorted(train),
                },
                "re-split so every label has training rows (ingest stratifies by label), or drop the label",
                split,
            )
        )
    return out


def check_label_encoding(
    labels: Mapping[str, int], reference: Mapping[str, int] | None, vp: ValidateParams
) -> list[Finding]:
    """`label_encoding_changed`: labels.json differs from the recorded reference map.

    A changed label→index map silently re-means every output unit, so a model or
    metric compared across the change is wrong. Error unless validate.allow_label_change.
    """
    if reference is None:
        return []
    change = label_map_change(labels, reference)
    if not any(change.values()):
        return []
    return [
        Finding(
            "label_encoding_changed",
            "warning" if vp.allow_label_change else "error",
            {
                "observed": {k: v for k, v in change.items() if v},
                **change,
                "current": dict(sorted(labels.items())),
                "reference": dict(sorted(reference.items())),
            },
            "if the change is intended set validate.allow_label_change: true and update the reference map",
            "labels",
        )
    ]


def label_map_change(labels: Mapping[str, int], reference: Mapping[str, int]) -> dict[str, list]:
    """Classify differences: renamed (same index, old name gone, new name new), reordered, added, removed."""
    new_names, old_names = set(labels) - set(reference), set(reference) - set(labels)
    by_index_new = {i: name for name, i in labels.items()}
    renamed = [
        {"index": i, "from": old, "to": by_index_new[i]}
        for old, i in sorted(reference.items(), key=lambda kv: kv[1])
        if old in old_names and by_index_new.get(i) in new_names
    ]
    renamed_to = {r["to"] for r in renamed}
    renamed_from = {r["from"] for r in renamed}
    return {
        "added": sorted(new_names - renamed_to),
        "removed": sorted(old_names - renamed_from),
        "renamed": renamed,
        "reordered": [
            {"label": name, "from": reference[name], "to": labels[name]}
            for name in sorted(set(labels) & set(reference))
            if labels[name] != reference[name]
        ],
    }


def check_duplicates(
    splits: Mapping[str, pd.DataFrame], vp: ValidateParams, keys: Mapping[str, pd.Series] | None = None
) -> list[Finding]:
    """`duplicate_inputs` (warning): share of rows repeating an earlier input of the same split.

    Repeats over-weight some inputs and inflate accuracy on them; a few are normal.
    """
    keys = keys or split_keys(splits)
    out = []
    for split, frame in ordered_splits(splits):
        dup = keys[split].duplicated().to_numpy()
        n, n_dup = len(frame), int(dup.sum())
        rate = n_dup / n if n else 0.0
        if rate <= vp.max_duplicate_rate:
            continue
        out.append(
            Finding(
                "duplicate_inputs",
                "warning",
                {
                    "observed": _num(rate),
                    "threshold": vp.max_duplicate_rate,
                    "duplicates": n_dup,
                    "rows": n,
                    "examples": _locations(frame, dup),
                },
                "deduplicate the source (keep one row per input)",
                split,
            )
        )
    return out


_LEAKAGE_FIX = (
    "set data.group_duplicates: true so ingest keeps identical inputs in one split, deduplicate "
    "an official test split that overlaps train, or raise validate.max_leakage_rate to the share you accept"
)


def check_leakage(
    splits: Mapping[str, pd.DataFrame], vp: ValidateParams, keys: Mapping[str, pd.Series] | None = None
) -> list[Finding]:
    """`train_val_leakage` (error): share of val/test rows whose exact input is also in train.

    Leaked rows are memorised, so val/test loss flatters the model.
    """
    if "train" not in splits:
        return []
    keys = keys or split_keys(splits)
    train_keys = pd.Index(keys["train"].unique())
    out = []
    for split, frame in ordered_splits(splits):
        if split == "train":
            continue
        leaked = keys[split].isin(train_keys).to_numpy()
        n, n_leak = len(frame), int(leaked.sum())
        rate = n_leak / n if n else 0.0
        if n_leak == 0 or rate <= vp.max_leakage_rate:
            continue
        out.append(
            Finding(
                "train_val_leakage",
                "error",
                {
                    "observed": _num(rate),
                    "threshold": vp.max_leakage_rate,
                    "leaked_rows": n_leak,
                    "rows": n,
                    "examples": _locations(frame, leaked),
                },
                _LEAKAGE_FIX,
                split,
            )
        )
    return out


def check_conflicting_labels(
    splits: Mapping[str, pd.DataFrame], keys: Mapping[str, pd.Series] | None = None
) -> list[Finding]:
    """`conflicting_labels` (warning): the same input carries different labels (within or across splits).

    Such rows put a floor under the achievable loss; reported on every split holding one.
    """
    keys = keys or split_keys(splits)
    ordered = ordered_splits(splits)
    if not ordered:
        return []
    # Integer codes instead of strings: a million (key, label) pairs deduplicate in a few MB.
    key_codes, _ = pd.factorize(pd.concat([keys[s] for s, _ in ordered], ignore_index=True))
    label_codes, _ = pd.factorize(pd.concat([f["label"] for _, f in ordered], ignore_index=True), use_na_sentinel=False)
    pairs = pd.DataFrame({"key": key_codes, "label": label_codes}).drop_duplicates()
    conflicting = pairs.loc[pairs["key"].duplicated(keep=False), "key"].unique()
    if not len(conflicting):
        return []
    hits = np.split(np.isin(key_codes, conflicting), np.cumsum([len(f) for _, f in ordered])[:-1])
    out = []
    for (split, frame), hit in zip(ordered, hits):
        n_hit = int(hit.sum())
        if not n_hit:
            continue
        out.append(
            Finding(
                "conflicting_labels",
                "warning",
                {
                    "observed": _num(n_hit / len(frame)),
                    "threshold": 0.0,
                    "rows": n_hit,
                    "inputs": int(keys[split][hit].nunique()),
                    "examples": _locations(frame, hit, with_label=True),
                },
                "fix or drop the contradictory rows; no model can fit both labels",
                split,
            )
        )
    return out


def check_truncation(splits: Mapping[str, pd.DataFrame], vp: ValidateParams, max_len: int = 0) -> list[Finding]:
    """`truncation` (warning): share of sequences longer than data.max_len (0 = longest train sequence).

    Truncated sequences lose their tail; for an RNN reading the last state that is
    often the informative part.
    """
    limit = effective_max_len(splits, max_len)
    out = []
    for split, frame in ordered_splits(splits):
        lengths = frame["length"].to_numpy()
        cut = int((lengths > limit).sum()) if limit else 0
        rate = cut / len(lengths) if len(lengths) else 0.0
        if rate <= vp.max_truncation_rate:
            continue
        out.append(
            Finding(
                "truncation",
                "warning",
                {
                    "observed": _num(rate),
                    "threshold": vp.max_truncation_rate,
                    "max_len": limit,
                    "truncated_rows": cut,
                    "rows": len(lengths),
                    "longest": int(lengths.max()),
                },
                f"raise data.max_len above {limit} (0 = longest training sequence)",
                split,
            )
        )
    return out


def effective_max_len(splits: Mapping[str, pd.DataFrame], max_len: int) -> int:
    """data.max_len, or the longest training sequence when it is 0 (as featurize does)."""
    if max_len > 0:
        return max_len
    train = splits.get("train")
    return int(train["length"].max()) if train is not None and len(train) else 0


def check_oov(
    splits: Mapping[str, pd.DataFrame], vp: ValidateParams, input_kind: str, text_level: str = "word"
) -> list[Finding]:
    """`high_oov_rate` (warning): share of val/test token occurrences never seen in train.

    Measured against the full train vocabulary; data.max_tokens caps the featurizer's
    vocabulary further, and train reports that OOV rate separately.
    """
    if input_kind not in ("text", "tokens") or "train" not in splits:
        return []
    vocab = token_counts(splits["train"]["x"], input_kind, text_level)
    out = []
    for split, frame in ordered_splits(splits):
        if split == "train":
            continue
        counts = token_counts(frame["x"], input_kind, text_level)
        total = sum(counts.values())
        unseen = Counter({tok: c for tok, c in counts.items() if tok not in vocab})
        n_oov = sum(unseen.values())
        rate = n_oov / total if total else 0.0
        if rate <= vp.max_oov_rate:
            continue
        out.append(
            Finding(
                "high_oov_rate",
                "warning",
                {
                    "observed": _num(rate),
                    "threshold": vp.max_oov_rate,
                    "oov_tokens": n_oov,
                    "tokens": total,
                    "train_vocabulary": len(vocab),
                    "examples": [
                        str(tok)
                        for tok, _ in sorted(unseen.items(), key=lambda kv: (-kv[1], str(kv[0])))[:_MAX_EXAMPLES]
                    ],
                },
                "val/test text differs from train: check the source/domain, or use char-level text (data.text_level)",
                split,
            )
        )
    return out


def token_counts(xs: pd.Series, input_kind: str, text_level: str = "word", chunk: int = 20000) -> Counter:
    """Token occurrences as the train featurizer's TextVectorization sees them, counted in chunks.

    Text goes through featurize's pure-Python copy of the layer's standardisation and
    split (ASCII-only lower-casing, ASCII punctuation removed, ASCII whitespace as the
    separator and, at char level, dropped), so no TensorFlow is imported here.
    """
    if input_kind == "tokens":
        arrays = [np.asarray(x, dtype=np.int64).ravel() for x in xs]
        flat = np.concatenate(arrays) if arrays else np.zeros(0, np.int64)
        values, counts = np.unique(flat, return_counts=True)
        return Counter(dict(zip(values.tolist(), counts.tolist())))
    texts = xs.dropna()
    total: Counter = Counter()
    for start in range(0, len(texts), chunk):
        total.update(featurize.token_counts([str(t) for t in texts.iloc[start : start + chunk]], text_level))
    return total


def check_rows_rejected(ingest_info: Mapping[str, Any]) -> list[Finding]:
    """`rows_rejected` (warning): ingest skipped unparseable lines (data.on_bad_rows: skip)."""
    rejected = int(ingest_info.get("rows_rejected", 0) or 0)
    if rejected <= 0:
        return []
    read = int(ingest_info.get("rows_read", 0) or 0)
    return [
        Finding(
            "rows_rejected",
            "warning",
            {"observed": rejected, "threshold": 0, "rows_read": read, "rate": _num(rejected / read) if read else None},
            "see data/prepared/rejects.csv for each line and why it did not parse",
            "ingest",
        )
    ]


def run_checks(
    splits: Mapping[str, pd.DataFrame],
    labels: Mapping[str, int],
    reference_labels: Mapping[str, int] | None,
    ingest_info: Mapping[str, Any],
    vp: ValidateParams,
    *,
    max_len: int = 0,
    text_level: str = "word",
    keys: Mapping[str, pd.Series] | None = None,
) -> list[Finding]:
    """All checks in a fixed order (ingest, label map, then per-split checks), so output is stable."""
    delimiter = label_delimiter(ingest_info)
    keys = keys or split_keys(splits)
    kind = str(ingest_info.get("input") or detect_input_kind(splits))
    return [
        *check_rows_rejected(ingest_info),
        *check_label_encoding(labels, reference_labels, vp),
        *check_label_set(splits, labels, delimiter),
        *check_leakage(splits, vp, keys),
        *check_class_balance(splits, vp, labels, delimiter),
        *check_label_order(splits, vp),
        *check_conflicting_labels(splits, keys),
        *check_duplicates(splits, vp, keys),
        *check_truncation(splits, vp, max_len),
        *check_oov(splits, vp, kind, text_level),
    ]


def label_delimiter(ingest_info: Mapping[str, Any]) -> str | None:
    """The multi-label delimiter from ingest.json, or None for single-label data."""
    return str(ingest_info.get("label_delimiter") or "|") if ingest_info.get("multilabel") else None


def detect_input_kind(splits: Mapping[str, pd.DataFrame]) -> str:
    """text|tokens|numeric from the first non-null input (when ingest.json does not say)."""
    for _, frame in ordered_splits(splits):
        for x in frame["x"].dropna().head(1):
            if isinstance(x, str):
                return "text"
            return "tokens" if _as_array(x).dtype.kind in "iub" else "numeric"
    return "numeric"


# What `observed` measures, per code, for one-line messages.
_OBSERVED_AS = {
    "class_imbalance": "largest/smallest class ratio",
    "label_order_clustered": "runs-test z",
    "label_set_mismatch": "labels",
    "train_val_leakage": "share of rows also in train",
    "conflicting_labels": "share of rows with conflicting labels",
    "duplicate_inputs": "share of repeated inputs",
    "truncation": "share of truncated sequences",
    "high_oov_rate": "OOV share",
    "rows_rejected": "rejected rows",
}


def describe(finding: Finding) -> str:
    """One-line summary of what was observed, and the threshold when there is one."""
    ev = finding.evidence
    observed = ev.get("observed")
    if isinstance(observed, dict):
        text = "; ".join(f"{k} {_short(v)}" for k, v in observed.items())
    else:
        text = _short(observed)
    label = _OBSERVED_AS.get(finding.code) or (f"{ev['name']}:" if "name" in ev else "")
    if label:
        text = f"{label} {text}"
    if "threshold" in ev:
        text += f" (threshold {ev['threshold']})"
    return text


# ---------------------------------------------------------------- helpers


def ordered_splits(splits: Mapping[str, pd.DataFrame]) -> list[tuple[str, pd.DataFrame]]:
    """train, val, test first, then any other split by name."""
    rank = {s: i for i, s in enumerate(SPLITS)}
    return sorted(splits.items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0]))


def _extremes(counts: Mapping[str, int]) -> tuple[tuple[str, int], tuple[str, int]]:
    """(largest class, count), (smallest class, count); ties go to the first name."""
    items = sorted(counts.items())
    return max(items, key=lambda kv: kv[1]), min(items, key=lambda kv: kv[1])


def _locations(frame: pd.DataFrame, mask: np.ndarray, with_label: bool = False) -> list[str]:
    """A few `source_file:line` references so the user can find the rows."""
    positions = np.flatnonzero(mask)[:_MAX_EXAMPLES]
    has_source = "source_file" in frame.columns and "line" in frame.columns
    out = []
    for pos in positions:
        row = frame.iloc[pos]
        where = f"{row['source_file']}:{row['line']}" if has_source else f"row {pos}"
        out.append(f"{where} ({row['label']})" if with_label else where)
    return out


def _num(value: float) -> float | str:
    """JSON-safe, rounded number; infinity as the string "inf" (JSON has no infinity)."""
    value = float(value)
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if math.isnan(value):
        return "nan"
    return round(value, 6)


def _short(value: Any, limit: int = 80) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
