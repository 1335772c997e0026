"""Ingest on the real bundled datasets: splits, order, labels, atomic outputs."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from losstrace.errors import LosstraceError
from losstrace.stages import ingest


def _params(tmp_path, **data):
    body = "data:\n" + "".join(f"  {k}: {v}\n" for k, v in data.items())
    f = tmp_path / "params.yaml"
    f.write_text(body)
    return f


@pytest.fixture(scope="module")
def vowels(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("jv")
    summary = ingest.main(_params(tmp), tmp / "prepared", tmp)
    return tmp / "prepared", summary


def test_japanese_vowels_keeps_official_test_and_stratifies_val(vowels):
    out, summary = vowels
    assert summary["official_test"] is True
    assert summary["splits"] == {"train": 216, "val": 54, "test": 370}
    val = pd.read_parquet(out / "val.parquet")
    assert val["label"].value_counts().to_dict() == {str(k): 6 for k in range(1, 10)}
    train = pd.read_parquet(out / "train.parquet")
    assert set(train.columns) >= {"x", "label", "length", "source_file", "line"}
    assert train["length"].between(7, 29).all()
    assert len(train["x"].iloc[0][0]) == 12  # 12 LPC channels per step


def test_labels_json_is_sorted_and_stable(vowels):
    out, _ = vowels
    labels = json.loads((out / "labels.json").read_text())
    assert labels == {str(k): k - 1 for k in range(1, 10)}
    assert (out / "labels.json").read_text().endswith("}\n")


def test_shuffle_false_keeps_source_order(tmp_path):
    summary = ingest.main(_params(tmp_path, shuffle="false"), tmp_path / "p", tmp_path)
    train = pd.read_parquet(tmp_path / "p" / "train.parquet")
    assert summary["splits"]["train"] == 216
    assert train["line"].is_monotonic_increasing  # grouped by speaker, as shipped
    assert train["label"].iloc[0] == "1" and train["label"].iloc[-1] == "9"


def test_same_seed_same_bytes_other_seed_other_order(tmp_path):
    for name, body in (("a", "base: {seed: 42}\n"), ("b", "base: {seed: 42}\n"), ("c", "base:\n  seed: 7\n")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "params.yaml").write_text(body)
        ingest.main(tmp_path / name / "params.yaml", tmp_path / name / "p", tmp_path)
    a, b, c = (tmp_path / n / "p" / "train.parquet" for n in "abc")
    assert a.read_bytes() == b.read_bytes()
    assert pd.read_parquet(a)["line"].tolist() != pd.read_parquet(c)["line"].tolist()


def test_nrc_emotion_single_and_multi_label(tmp_path):
    single = ingest.main(_params(tmp_path, source="nrc_emotion"), tmp_path / "s", tmp_path)
    assert single["input"] == "text" and single["n_classes"] == 8 and not single["official_test"]
    assert sum(single["splits"].values()) == single["rows_read"] == 2344
    (tmp_path / "m").mkdir()
    multi = ingest.main(
        _params(tmp_path / "m", source="nrc_emotion", multilabel="true"), tmp_path / "m" / "p", tmp_path
    )
    assert multi["multilabel"] and multi["n_classes"] == 10
    labels = json.loads((tmp_path / "m/p/labels.json").read_text())
    assert {"positive", "negative", "joy"} <= set(labels)


def test_basic_motions_loads_offline(tmp_path):
    summary = ingest.main(_params(tmp_path, source="basic_motions"), tmp_path / "p", tmp_path)
    assert summary["splits"]["test"] == 40 and summary["n_classes"] == 4


def test_unknown_source_fails_and_keeps_previous_outputs(tmp_path):
    out = tmp_path / "p"
    ingest.main(_params(tmp_path), out, tmp_path)
    before = (out / "train.parquet").read_bytes()
    with pytest.raises(LosstraceError) as e:
        ingest.main(_params(tmp_path, source="japanse_vowels"), out, tmp_path)
    assert "unknown data.source 'japanse_vowels'" in e.value.line()
    assert e.value.exit_code == 2
    assert (out / "train.parquet").read_bytes() == before
    assert not list(tmp_path.glob(".losstrace-stage-*"))


def test_stratified_split_keeps_singletons_in_train():
    import numpy as np

    labels = pd.Series(["a"] * 10 + ["b"] * 5 + ["c"])
    keep, held = ingest.stratified_split(labels, 0.2, np.random.default_rng(0))
    assert sorted(labels.iloc[held].value_counts().to_dict().items()) == [("a", 2), ("b", 1)]
    assert len(keep) + len(held) == len(labels)
    assert "c" in set(labels.iloc[keep])


def test_running_out_of_space_mid_write_fails_in_one_line_and_keeps_previous_outputs(tmp_path):
    """The real console script under a 64 KiB file-size limit (RLIMIT_FSIZE, what `ulimit -f`
    sets): its parquet writes fail part-way with EFBIG, as they would with ENOSPC on a full
    disk (both are the same out-of-space error here). Without root there is no small
    filesystem to fill, and the limit hits the same write calls."""
    import resource
    import subprocess

    from support import BIN

    out = tmp_path / "p"
    ingest.main(_params(tmp_path), out, tmp_path)
    before = {f.name: f.read_bytes() for f in out.iterdir()}
    seed7 = tmp_path / "seed7"
    seed7.mkdir()
    (seed7 / "params.yaml").write_text("base:\n  seed: 7\n")  # another split: every output changes

    def limit_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))

    r = subprocess.run(
        [str(BIN / "losstrace"), "ingest", "--params", str(seed7 / "params.yaml"), "--out", str(out)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        preexec_fn=limit_file_size,
    )
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines() == [r.stderr.strip()]  # one line, no traceback
    assert r.stderr.startswith(f"error: {out}: ")  # names the outputs' folder
    assert "file too large for the file-size limit while writing" in r.stderr
    assert "previous outputs are untouched" in r.stderr
    assert {f.name: f.read_bytes() for f in out.iterdir()} == before
    assert not list(tmp_path.glob(".losstrace-stage-*")) and not list(out.parent.glob(".losstrace-stage-*"))


def test_too_few_rows_to_fill_every_split_is_an_error_not_an_empty_split(tmp_path):
    (tmp_path / "tiny.csv").write_text("text,label\ngood film,pos\nbad film,neg\n")
    with pytest.raises(LosstraceError) as e:
        ingest.main(_params(tmp_path, source="tiny.csv"), tmp_path / "p", tmp_path)
    assert e.value.line().startswith("error: tiny.csv: 2 rows are too few to split (train 2, val 0, test 0)")
    assert not (tmp_path / "p" / "train.parquet").exists()


def test_grouped_split_keeps_identical_inputs_together_and_drops_no_row():
    import numpy as np

    rng = np.random.default_rng(3)
    texts = pd.Series([f"s{i}" for i in rng.integers(0, 60, size=300)])  # ~5 rows a text
    labels = pd.Series(["pos" if int(t[1:]) % 3 else "neg" for t in texts])
    keep, held = ingest.stratified_split(labels, 0.2, np.random.default_rng(0), texts)
    assert sorted([*keep, *held]) == list(range(300))
    assert not set(texts.iloc[keep]) & set(texts.iloc[held])
    for label, share in (labels.iloc[held].value_counts() / labels.value_counts()).items():
        assert 0.1 <= share <= 0.25, (label, share)  # still stratified, to the nearest whole group


def test_grouped_split_without_repeats_is_the_plain_split():
    import numpy as np

    labels = pd.Series(list("aabbbcccccaab") * 7)
    unique = pd.Series([f"x{i}" for i in range(len(labels))])
    plain = ingest.stratified_split(labels, 0.2, np.random.default_rng(5))
    grouped = ingest.stratified_split(labels, 0.2, np.random.default_rng(5), unique)
    assert all(np.array_equal(a, b) for a, b in zip(plain, grouped, strict=True))


def test_repeated_sentences_do_not_leak_unless_grouping_is_off(tmp_path):
    from losstrace.data import checks
    from losstrace.params import ValidateParams

    lines = [f"sentence {i % 40} here\t{i % 2}" for i in range(200)]  # each sentence 5 times
    (tmp_path / "s.tsv").write_text("\n".join(lines) + "\n")
    for grouped, leaks in ((True, False), (False, True)):
        out = tmp_path / f"prepared-{grouped}"
        params = _params(tmp_path, source="s.tsv", header="false", group_duplicates=str(grouped).lower())
        summary = ingest.main(params, out, tmp_path)
        assert sum(summary["splits"].values()) == 200
        splits = {name: pd.read_parquet(out / f"{name}.parquet") for name in ingest.SPLITS}
        assert bool(checks.check_leakage(splits, ValidateParams())) is leaks
