"""User-file loading: every data line becomes a row or a reject, errors name file:line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from losstrace.data.files import Loaded, Reject, load_files
from losstrace.errors import LosstraceError
from losstrace.params import DataParams

REPO = Path(__file__).resolve().parents[2]
UCI = Path(__file__).resolve().parents[2] / "data" / "external" / "uci-sentiment"  # a copy of the workplace data


def load(root: Path, source: str, **kw) -> Loaded:
    loaded = load_files(DataParams(source=source, **kw), root)
    # The accounting invariant holds for every successful load.
    assert len(loaded.frame) + len(loaded.rejects) == loaded.lines_read
    assert list(loaded.frame.columns) == ["x", "label", "length", "source_file", "line"]
    return loaded


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8", newline="")
    return path


def load_error(root: Path, source: str, **kw) -> LosstraceError:
    with pytest.raises(LosstraceError) as info:
        load_files(DataParams(source=source, **kw), root)
    assert info.value.exit_code == 2
    assert info.value.line().startswith("error: ")
    return info.value


def only_reject(loaded: Loaded) -> Reject:
    assert len(loaded.rejects) == 1, loaded.rejects
    return loaded.rejects[0]


# ----------------------------------------------------------------- literal TSV


@pytest.mark.skipif(not UCI.is_dir(), reason="data/external/uci-sentiment is not present")
def test_uci_sentiment_three_files_load_literally():
    quoted = next(
        (n, line.split("\t")[0])
        for n, line in enumerate((UCI / "amazon_cells_labelled.txt").read_text(encoding="utf-8").splitlines(), 1)
        if '"' in line
    )
    loaded = load(REPO, "data/external/uci-sentiment/*.txt", header=False)
    frame = loaded.frame
    assert len(frame) == 3000 and loaded.rejects == [] and loaded.lines_read == 3000
    assert loaded.input_kind == "text"
    assert sorted(frame["label"].unique()) == ["0", "1"]
    counts = frame["source_file"].value_counts()
    assert sorted(counts.index) == [
        f"data/external/uci-sentiment/{n}_labelled.txt" for n in ("amazon_cells", "imdb", "yelp")
    ]
    assert (counts == 1000).all()
    # Files are read in sorted order, each numbered from line 1.
    assert frame["source_file"].iloc[0].endswith("amazon_cells_labelled.txt")
    assert frame.groupby("source_file")["line"].agg(["min", "max"]).values.tolist() == [[1, 1000]] * 3
    line, text = quoted
    row = frame[frame["source_file"].str.endswith("amazon_cells_labelled.txt") & (frame["line"] == line)].iloc[0]
    assert row["x"] == text and '"' in row["x"]


def test_tsv_is_read_literally_quotes_are_text(tmp_path):
    lines = [
        'He said "hi" and left\t1',
        '"starts with a quote\t0',
        'an unbalanced " quote\t1',
        '"fully quoted"\t0',
        'ends with a quote"\t1',
        "trailing spaces kept  \t0",
    ]
    write(tmp_path / "q.tsv", "\n".join(lines) + "\n")
    loaded = load(tmp_path, "q.tsv", header=False)
    assert loaded.rejects == []
    assert loaded.frame["x"].tolist() == [line.split("\t")[0] for line in lines]
    assert loaded.frame["line"].tolist() == [1, 2, 3, 4, 5, 6]
    assert loaded.frame["source_file"].unique().tolist() == ["q.tsv"]
    assert loaded.frame["length"].tolist() == [5, 4, 3, 2, 4, 3]  # a lone '"' is no token: the layer strips it


def test_tsv_header_columns_by_name_and_crlf(tmp_path):
    write(tmp_path / "h.tsv", "id\tlabel\ttext\r\n1\tpos\tgood film\r\n2\tneg\tbad\r\n\r\n")
    loaded = load(tmp_path, "h.tsv")
    assert loaded.frame["x"].tolist() == ["good film", "bad"]
    assert loaded.frame["label"].tolist() == ["pos", "neg"]
    assert loaded.frame["line"].tolist() == [2, 3]
    assert loaded.lines_read == 2  # header and trailing blank line are not data lines


def test_char_level_length(tmp_path):
    write(tmp_path / "c.tsv", "ab cd\t0\nxyz\t1\na, b, c!\t1\n")
    loaded = load(tmp_path, "c.tsv", header=False, text_level="char")
    # the characters the model sees: spaces and punctuation are not tokens at char level
    assert loaded.frame["length"].tolist() == [4, 3, 3]


def test_source_file_is_relative_to_root_for_absolute_globs(tmp_path):
    write(tmp_path / "d" / "b.tsv", "x\t1\n")
    write(tmp_path / "d" / "a.tsv", "y\t0\n")
    loaded = load(tmp_path, str(tmp_path / "d" / "*.tsv"), header=False)
    assert loaded.frame["source_file"].tolist() == ["d/a.tsv", "d/b.tsv"]


# -------------------------------------------------------------------------- CSV


def test_csv_quoted_fields_and_multiline_records(tmp_path):
    write(
        tmp_path / "c.csv",
        'text,label\n"hello, world",pos\n"two\nlines",neg\nplain "inner" quote,pos\n',
    )
    loaded = load(tmp_path, "c.csv")
    assert loaded.frame["x"].tolist() == ["hello, world", "two\nlines", 'plain "inner" quote']
    assert loaded.frame["line"].tolist() == [2, 3, 5]  # a record's line is where it starts
    assert loaded.lines_read == 3


def test_csv_malformed_record_is_a_reject_and_reading_continues(tmp_path):
    write(tmp_path / "c.csv", 'text,label\ngood,pos\n"bad"x,neg\nfine,neg\n')
    loaded = load(tmp_path, "c.csv")
    reject = only_reject(loaded)
    assert (reject.file, reject.line) == ("c.csv", 3)
    assert loaded.frame["x"].tolist() == ["good", "fine"]


# ---------------------------------------------------------------------- rejects


def test_wrong_field_count_is_a_reject_with_its_line(tmp_path):
    write(tmp_path / "f.tsv", "a\t1\nb\t0\nno tab here\nc\td\t1\ne\t0\n")
    loaded = load(tmp_path, "f.tsv", header=False)
    assert [(r.line, r.reason) for r in loaded.rejects] == [
        (3, "1 tab-separated field, expected 2 (text and label)"),
        (4, "3 tab-separated fields, expected 2 (text and label)"),
    ]
    assert loaded.frame["line"].tolist() == [1, 2, 5]
    assert loaded.lines_read == 5


def test_wrong_field_count_with_header(tmp_path):
    write(tmp_path / "f.csv", "text,label\na,1\nb,0,extra\nc,0\n")
    reject = only_reject(load(tmp_path, "f.csv"))
    assert (reject.line, reject.reason) == (3, "3 comma-separated fields, expected 2")


def test_empty_line_in_the_middle_is_a_reject_trailing_blank_is_not(tmp_path):
    write(tmp_path / "b.tsv", "a\t1\n\nb\t0\n\n\n")
    loaded = load(tmp_path, "b.tsv", header=False)
    reject = only_reject(loaded)
    assert (reject.line, reject.reason) == (2, "empty line")
    assert loaded.lines_read == 3


def test_empty_label_is_a_reject(tmp_path):
    write(tmp_path / "e.tsv", "a\t1\nb\t  \nc\t0\n")
    loaded = load(tmp_path, "e.tsv", header=False)
    reject = only_reject(loaded)
    assert (reject.file, reject.line, reject.reason) == ("e.tsv", 2, "empty label")


def test_non_utf8_line_is_a_reject_not_a_crash(tmp_path):
    write(tmp_path / "u.tsv", "caf\xc3\xa9\t1\n".encode("latin-1") + b"bad \xff byte\t0\n" + "ok \u00e9\t0\n".encode())
    loaded = load(tmp_path, "u.tsv", header=False)
    reject = only_reject(loaded)
    assert reject.line == 2 and "not valid UTF-8" in reject.reason
    assert loaded.frame["line"].tolist() == [1, 3]


def test_non_utf8_line_in_csv_is_a_reject(tmp_path):
    write(tmp_path / "u.csv", b"text,label\nfine,1\nbad \xe9,0\nok,0\n")
    loaded = load(tmp_path, "u.csv")
    reject = only_reject(loaded)
    assert reject.line == 3 and "not valid UTF-8" in reject.reason


def test_non_integer_token_is_a_reject(tmp_path):
    write(tmp_path / "t.tsv", "text\tlabel\n12 5 5 9\t1\n3 ab 4\t0\n7\t0\n")
    loaded = load(tmp_path, "t.tsv", input="tokens")
    reject = only_reject(loaded)
    assert (reject.line, reject.reason) == (3, "non-integer token 'ab' in column 'text'")
    assert loaded.input_kind == "tokens"
    assert loaded.frame["x"].tolist() == [[12, 5, 5, 9], [7]]
    assert loaded.frame["length"].tolist() == [4, 1]


def test_tokens_are_detected_automatically(tmp_path):
    write(tmp_path / "t.tsv", "1 2 3\ta\n4  5\tb\n")
    loaded = load(tmp_path, "t.tsv", header=False)
    assert loaded.input_kind == "tokens"
    assert loaded.frame["x"].tolist() == [[1, 2, 3], [4, 5]]


def test_nan_and_missing_value_inside_numeric_parquet_are_rejects(tmp_path):
    table = pa.table(
        {
            "text": [[[0.1, 0.2], [0.3, 0.4]], [[0.5, float("nan")], [0.1, 0.1]], [[1.0, None]], [[2.0, 2.0]]],
            "label": ["a", "b", "a", "b"],
        }
    )
    pq.write_table(table, tmp_path / "n.parquet")
    loaded = load(tmp_path, "n.parquet")
    assert [r.line for r in loaded.rejects] == [2, 3]
    assert "step 1, channel 2" in loaded.rejects[0].reason
    assert "missing or non-finite" in loaded.rejects[1].reason
    assert loaded.frame["line"].tolist() == [1, 4]


def test_nan_inside_npz_sequence_is_a_reject(tmp_path):
    x = np.full((3, 4, 2), np.nan)
    x[0, :2] = 1.0
    x[1, :3] = 2.0
    x[1, 1, 0] = np.nan  # one channel missing at step 2: inside the sequence, not padding
    x[2, :1] = 3.0
    np.savez(tmp_path / "s.npz", x=x, y=np.array([0, 1, 1]))
    loaded = load(tmp_path, "s.npz")
    reject = only_reject(loaded)
    assert (reject.line, "step 2, channel 1" in reject.reason) == (2, True)


def test_npz_values_after_padding_are_rejected_not_cut(tmp_path):
    x = np.full((3, 4, 1), np.nan)
    x[0, :2] = 1.0
    x[1, 0], x[1, 2] = 1.0, 1.0  # a gap, then data again
    x[2, :4] = 1.0
    np.savez(tmp_path / "g.npz", x=x, y=np.array(["a", "b", "b"]))
    reject = only_reject(load(tmp_path, "g.npz"))
    assert reject.line == 2 and "after the NaN padding" in reject.reason


def test_all_rows_rejected_is_an_error_naming_the_first(tmp_path):
    write(tmp_path / "r.tsv", "a,1\nb,0\n")  # a CSV read as TSV: one field per line
    err = load_error(tmp_path, "r.tsv", header=False)
    assert err.where == "r.tsv:1"
    assert "all 2 data lines were rejected" in err.what


# ------------------------------------------------------------------- multilabel


def test_multilabel_labels_are_sorted_unique_and_joined(tmp_path):
    write(tmp_path / "m.tsv", "text\tlabel\na\tjoy|anger\nb\t anger | joy |joy\nc\tfear\nd\t|\n")
    loaded = load(tmp_path, "m.tsv", multilabel=True)
    assert loaded.frame["label"].tolist() == ["anger|joy", "anger|joy", "fear"]
    reject = only_reject(loaded)
    assert (reject.line, reject.reason) == (5, "empty label")


def test_multilabel_custom_delimiter(tmp_path):
    write(tmp_path / "m.csv", 'text,tags\nx,"b;a"\ny,c\n')
    loaded = load(tmp_path, "m.csv", multilabel=True, label_delimiter=";", label_column="tags")
    assert loaded.frame["label"].tolist() == ["a;b", "c"]


# -------------------------------------------------------------- parquet and npz


def test_parquet_text_round_trip(tmp_path):
    pd.DataFrame({"text": ['a "quoted" one', "two words"], "label": [1, 0]}).to_parquet(tmp_path / "t.parquet")
    loaded = load(tmp_path, "t.parquet")
    assert loaded.input_kind == "text"
    assert loaded.frame[["x", "label", "length", "line"]].values.tolist() == [
        ['a "quoted" one', "1", 3, 1],
        ["two words", "0", 2, 2],
    ]


def test_parquet_tokens_round_trip(tmp_path):
    pq.write_table(pa.table({"ids": [[3, 1, 4], [1, 5]], "y": ["p", "q"]}), tmp_path / "t.parquet")
    loaded = load(tmp_path, "t.parquet", text_column="ids", label_column="y")
    assert loaded.input_kind == "tokens"
    assert loaded.frame["x"].tolist() == [[3, 1, 4], [1, 5]]
    assert loaded.frame["length"].tolist() == [3, 2]


def test_parquet_numeric_round_trip(tmp_path):
    seqs = [[[0.5, 1.0], [1.5, 2.0], [2.5, 3.0]], [[4.0, 5.0]]]
    pq.write_table(pa.table({"text": seqs, "label": ["a", "b"]}), tmp_path / "n.parquet")
    loaded = load(tmp_path, "n.parquet")
    assert loaded.input_kind == "numeric"
    assert loaded.frame["x"].tolist() == seqs
    assert loaded.frame["length"].tolist() == [3, 1]


def test_parquet_flat_float_list_is_univariate(tmp_path):
    pq.write_table(pa.table({"text": [[1.0, 2.0], [3.0]], "label": ["a", "b"]}), tmp_path / "u.parquet")
    loaded = load(tmp_path, "u.parquet")
    assert loaded.frame["x"].tolist() == [[[1.0], [2.0]], [[3.0]]]


def test_npz_nan_padding_gives_per_row_lengths(tmp_path):
    x = np.full((3, 5, 2), np.nan)
    x[0, :5] = 1.0
    x[1, :2] = [[1.0, 2.0], [3.0, 4.0]]
    x[2, :4] = 0.5
    np.savez(tmp_path / "p.npz", x=x, y=np.array([0, 1, 0]))
    loaded = load(tmp_path, "p.npz")
    assert loaded.input_kind == "numeric"
    assert loaded.frame["length"].tolist() == [5, 2, 4]
    assert loaded.frame["x"].iloc[1] == [[1.0, 2.0], [3.0, 4.0]]
    assert loaded.frame["line"].tolist() == [1, 2, 3]
    assert loaded.frame["label"].tolist() == ["0", "1", "0"]


# ------------------------------------------------------------------------ errors


def test_missing_file(tmp_path):
    err = load_error(tmp_path, "nope.tsv")
    assert err.line().startswith("error: nope.tsv: file not found")


def test_glob_matching_nothing(tmp_path):
    err = load_error(tmp_path, "data/*.tsv")
    assert err.where == "data/*.tsv" and "no files match" in err.what


def test_empty_file(tmp_path):
    write(tmp_path / "e.tsv", "")
    err = load_error(tmp_path, "e.tsv")
    assert err.where == "e.tsv" and "empty" in err.what


def test_blank_lines_only_is_empty(tmp_path):
    write(tmp_path / "e.csv", "\n\n")
    err = load_error(tmp_path, "e.csv", header=False)
    assert err.where == "e.csv" and "empty" in err.what


def test_header_only(tmp_path):
    write(tmp_path / "h.csv", "text,label\n")
    err = load_error(tmp_path, "h.csv")
    assert err.where == "h.csv:1" and "no data lines" in err.what


def test_missing_label_column_names_columns_found(tmp_path):
    write(tmp_path / "m.tsv", "sentence\tsentiment\nhi\t1\n")
    err = load_error(tmp_path, "m.tsv", text_column="sentence")
    assert err.where == "m.tsv:1"
    assert "'label'" in err.what and "'sentence', 'sentiment'" in err.what
    assert "data.label_column" in err.fix


def test_misnamed_text_column_suggests_the_close_one(tmp_path):
    write(tmp_path / "m.csv", "review,label\nhi,1\n")
    err = load_error(tmp_path, "m.csv", text_column="reviews")
    assert err.line() == (
        "error: m.csv:1: no column 'reviews' (columns found: 'review', 'label') "
        "(set data.text_column to one of the columns found (did you mean 'review'?), "
        "or set data.header: false if the first line is data)"
    )


def test_missing_parquet_column(tmp_path):
    pd.DataFrame({"body": ["a"], "label": ["x"]}).to_parquet(tmp_path / "p.parquet")
    err = load_error(tmp_path, "p.parquet")
    assert err.where == "p.parquet" and "'body', 'label'" in err.what and "data.text_column" in err.fix


def test_single_class(tmp_path):
    write(tmp_path / "s.tsv", "a\tx\nb\tx\n")
    err = load_error(tmp_path, "s.tsv", header=False)
    assert err.where == "s.tsv" and "only one class 'x'" in err.what


def test_corrupt_parquet(tmp_path):
    write(tmp_path / "c.parquet", b"PAR1 this is not really parquet")
    err = load_error(tmp_path, "c.parquet")
    assert err.where == "c.parquet" and "Parquet" in err.what


def test_npz_mismatched_lengths(tmp_path):
    np.savez(tmp_path / "m.npz", x=np.zeros((3, 2, 1)), y=np.array([0, 1]))
    err = load_error(tmp_path, "m.npz")
    assert err.where == "m.npz" and "x has 3 rows but y has 2" in err.what


@pytest.mark.parametrize("present", ["x", "y"])
def test_npz_missing_array(tmp_path, present):
    np.savez(tmp_path / "m.npz", **{present: np.zeros((2, 2, 1)) if present == "x" else np.array([0, 1])})
    err = load_error(tmp_path, "m.npz")
    missing = "y" if present == "x" else "x"
    assert err.where == "m.npz" and f"no array {missing}" in err.what


def test_npz_non_numeric_x(tmp_path):
    np.savez(tmp_path / "s.npz", x=np.array([[["a"]], [["b"]]]), y=np.array([0, 1]))
    err = load_error(tmp_path, "s.npz")
    assert err.where == "s.npz" and "non-numeric" in err.what


def test_unknown_format(tmp_path):
    write(tmp_path / "d.json", "{}")
    err = load_error(tmp_path, "d.json")
    assert err.where == "d.json" and "data.format" in err.fix


# ------------------------------------------------------------------ edge cases


def test_utf8_bom_is_not_part_of_the_header(tmp_path):
    write(tmp_path / "b.csv", "\ufefftext,label\nhi,1\nho,0\n")
    assert load(tmp_path, "b.csv").frame["x"].tolist() == ["hi", "ho"]


def test_unterminated_csv_quote_is_one_reject_at_its_first_line(tmp_path):
    write(tmp_path / "q.csv", 'text,label\na,1\nb,0\n"never closed,1\nc,0\n')
    loaded = load(tmp_path, "q.csv")
    reject = only_reject(loaded)
    assert reject.line == 4 and "malformed CSV record" in reject.reason and "lines 4-5" in reject.reason


def test_forced_text_input_keeps_digit_strings(tmp_path):
    write(tmp_path / "t.tsv", "1 2\ta\n3\tb\n")
    loaded = load(tmp_path, "t.tsv", header=False, input="text")
    assert loaded.input_kind == "text" and loaded.frame["x"].tolist() == ["1 2", "3"]


def test_numeric_input_from_text_file_is_an_error(tmp_path):
    write(tmp_path / "t.tsv", "1 2\ta\n3\tb\n")
    err = load_error(tmp_path, "t.tsv", header=False, input="numeric")
    assert err.where == "t.tsv" and "not numeric" in err.what


def test_files_of_different_input_kinds_are_an_error(tmp_path):
    write(tmp_path / "d" / "a.tsv", "text\tlabel\nhello\tx\nworld\ty\n")
    np.savez(tmp_path / "d" / "b.npz", x=np.ones((2, 3, 1)), y=np.array([0, 1]))
    err = load_error(tmp_path, "d/*")
    assert "d/a.tsv: text" in err.what and "d/b.npz: numeric" in err.what


def test_a_file_whose_lines_are_all_rejected_is_an_error_even_among_good_files(tmp_path):
    write(tmp_path / "a.tsv", "good\t1\nfine\t0\n")
    write(tmp_path / "b.tsv", "x,1\ny,0\n")
    err = load_error(tmp_path, "*.tsv", header=False)
    assert err.where == "b.tsv:1"


def test_npz_nan_label_and_empty_sequence_are_rejects(tmp_path):
    x = np.ones((4, 2, 1))
    x[2] = np.nan  # nothing before the padding
    np.savez(tmp_path / "l.npz", x=x, y=np.array([0.0, np.nan, 1.0, 1.0]))
    loaded = load(tmp_path, "l.npz")
    assert [(r.line, r.reason.split(" (")[0]) for r in loaded.rejects] == [(2, "empty label"), (3, "empty sequence")]
    assert loaded.frame["label"].tolist() == ["0", "1"]  # integral floats read as ints


def test_parquet_negative_token_id_is_a_reject(tmp_path):
    pq.write_table(pa.table({"text": [[1, 2], [3, -1], [4]], "label": ["a", "b", "b"]}), tmp_path / "n.parquet")
    reject = only_reject(load(tmp_path, "n.parquet"))
    assert (reject.line, reject.reason) == (2, "negative token id -1 in column 'text'")


def test_header_that_is_not_utf8_is_an_error(tmp_path):
    write(tmp_path / "h.tsv", b"t\xffext\tlabel\na\t1\n")
    err = load_error(tmp_path, "h.tsv")
    assert err.where == "h.tsv:1" and "not valid UTF-8" in err.what


def test_numeric_files_must_share_one_channel_count(tmp_path):
    pq.write_table(pa.table({"text": [[[1.0, 2.0]], [[3.0, 4.0]]], "label": ["a", "b"]}), tmp_path / "c2.parquet")
    pq.write_table(
        pa.table({"text": [[[1.0, 2.0, 3.0]], [[4.0, 5.0, 6.0]]], "label": ["a", "b"]}), tmp_path / "c3.parquet"
    )
    pq.write_table(pa.table({"text": [[[1.0, 2.0]], [[0.0, 1.0]]], "label": ["b", "a"]}), tmp_path / "d2.parquet")
    e = load_error(tmp_path, "*.parquet")
    assert e.line().startswith("error: c3.parquet: 3 channels per time step, while c2.parquet, d2.parquet have 2")


def test_parquet_list_labels_are_label_sets_only_for_multilabel_data(tmp_path):
    pq.write_table(
        pa.table({"text": ["happy day", "sad night", "calm"], "label": [["joy", "trust"], ["sadness"], None]}),
        tmp_path / "m.parquet",
    )
    loaded = load(tmp_path, "m.parquet", multilabel=True)
    assert loaded.frame["label"].tolist() == ["joy|trust", "sadness"]
    assert [(r.line, r.reason) for r in loaded.rejects] == [(3, "empty label")]
    e = load_error(tmp_path, "m.parquet")
    assert e.line() == (
        "error: m.parquet: label column 'label' holds lists (list<element: string>) "
        "(set data.multilabel: true for multi-label data)"
    )


def test_float32_labels_keep_their_own_digits(tmp_path):
    y = np.array([0.1, 0.1, 2.0, 0.25], dtype=np.float32)
    np.savez(tmp_path / "f.npz", x=np.ones((4, 2, 1)), y=y)
    assert load(tmp_path, "f.npz").frame["label"].tolist() == ["0.1", "0.1", "2", "0.25"]
    pq.write_table(
        pa.table({"text": ["a", "b", "c"], "label": pa.array([0.1, 0.2, 1.0], pa.float32())}), tmp_path / "f.parquet"
    )
    assert load(tmp_path, "f.parquet").frame["label"].tolist() == ["0.1", "0.2", "1"]


def test_a_text_with_no_tokens_left_is_a_reject_not_an_empty_sample(tmp_path):
    write(tmp_path / "p.tsv", "great phone\t1\n!!! ...\t0\nbad\t0\n")
    loaded = load(tmp_path, "p.tsv", header=False, on_bad_rows="skip")
    assert loaded.frame["x"].tolist() == ["great phone", "bad"]
    assert [(r.line, r.reason) for r in loaded.rejects] == [
        (2, "no tokens left in column 1 (text) after lower-casing and stripping punctuation")
    ]
