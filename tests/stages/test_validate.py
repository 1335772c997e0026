"""The validate stage with real Great Expectations: results.json, Data Docs, error and crash paths."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from losstrace.errors import LosstraceError
from losstrace.io import to_json
from losstrace.params import ValidateParams
from losstrace.stages import validate

VP = ValidateParams()
LABELS = {"a": 0, "b": 1, "c": 2}
INFO = {
    "source": "synthetic",
    "input": "text",
    "multilabel": False,
    "label_delimiter": "|",
    "rows_read": 400,
    "rows_rejected": 0,
    "splits": {"train": 240, "val": 80, "test": 80},
    "official_test": False,
}
SIZES = {"train": 240, "val": 80, "test": 80}


def text_frame(n: int, seed: int) -> pd.DataFrame:
    """n distinct shuffled, balanced rows over a 40-word vocabulary (every word also occurs in train)."""
    rng = np.random.default_rng(seed)
    vocab = [f"w{i}" for i in range(40)]
    xs = [" ".join([*rng.choice(vocab, 8), vocab[i % 40]]) + f" {vocab[(i // 40) % 40]}" for i in range(n)]
    labels = rng.permutation(np.resize(["a", "b", "c"], n))
    return pd.DataFrame(
        {
            "x": xs,
            "label": labels,
            "length": [len(x.split()) for x in xs],
            "source_file": "synthetic.csv",
            "line": np.arange(1, n + 1),
        }
    )


def clean_splits() -> dict[str, pd.DataFrame]:
    return {name: text_frame(n, seed) for seed, (name, n) in enumerate(SIZES.items())}


def leaky_splits() -> dict[str, pd.DataFrame]:
    """16 of val's 80 inputs (0.2) copied from train, labels included (pure leakage, no conflicts)."""
    splits = clean_splits()
    splits["val"].loc[:15, ["x", "label", "length"]] = splits["train"][["x", "label", "length"]].iloc[:16].to_numpy()
    return splits


def write_prepared(root: Path, splits: dict[str, pd.DataFrame], labels=LABELS, info=INFO) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, frame in splits.items():
        frame.to_parquet(root / f"{name}.parquet", index=False)
    (root / "labels.json").write_text(json.dumps(labels))
    (root / "ingest.json").write_text(json.dumps(info))
    return root


def write_params(path: Path) -> Path:
    path.write_text("validate:\n  max_class_ratio: 4.0\n  order_z_threshold: -3.0\ndata:\n  max_len: 0\n")
    return path


def snapshot(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory):
    docs = tmp_path_factory.mktemp("clean") / "datadocs"
    start = time.perf_counter()
    result = validate.run(clean_splits(), LABELS, dict(LABELS), INFO, VP, docs)
    return result, docs, time.perf_counter() - start


# ---------------------------------------------------------------- run()


def test_clean_run_passes_every_expectation(clean_run):
    result, _, _ = clean_run
    results = result["results"]
    assert results["success"] is True and results["findings"] == []
    names = {(e["split"], e["name"]) for e in results["expectations"]}
    for split in SIZES:
        for name in (
            "label_not_null",
            "x_not_null",
            "label_in_label_map",
            "length_at_least_1",
            "label_order_random",
            "class_balance",
        ):
            assert (split, name) in names
    assert ("val", "label_in_train_labels") in names and ("train", "label_in_train_labels") not in names
    assert all(e["success"] for e in results["expectations"])
    assert all(set(e) >= {"split", "expectation", "success", "observed"} for e in results["expectations"])
    json.dumps(results, allow_nan=False)
    assert result["fingerprint"]["train"]["rows"] == 240


def test_datadocs_index_and_pages_show_every_expectation(clean_run):
    result, docs, _ = clean_run
    index = (docs / "index.html").read_text()
    for split in SIZES:
        assert f"validations/{split}/" in index and f"validations/{split}_classes/" in index
    pages = {p.parent.parent.parent.name: p.read_text() for p in (docs / "validations").rglob("*.html")}
    assert set(pages) == {*SIZES, *(f"{s}_classes" for s in SIZES)}
    for e in result["results"]["expectations"]:
        page = pages[e["split"] if e["name"] != "class_balance" else f"{e['split']}_classes"]
        assert e["name"] in page and e["expectation"] in page


def test_the_same_data_gives_byte_identical_datadocs(clean_run, tmp_path):
    # GX stamps pages with wall-clock times and random ids; dvc.lock hashes the folder.
    _, docs, _ = clean_run
    validate.run(clean_splits(), LABELS, dict(LABELS), INFO, VP, tmp_path / "datadocs")
    assert snapshot(tmp_path / "datadocs") == snapshot(docs)


def offline_index_links(docs: Path) -> dict[str, tuple[str, str]]:
    """The index as a browser without network shows it: scripts dropped, links of the plain list."""
    index = re.sub(r"<script.*?</script>", "", (docs / "index.html").read_text(), flags=re.S)
    section = re.search(r'<section id="losstrace-offline-index".*?</section>', index, flags=re.S).group(0)
    rows = re.findall(r'<tr><td><a href="([^"]+)">([^<]+)</a></td><td>(.*?)</td>', section)
    return {name: (href, re.sub(r"<[^>]+>", "", status).split()[-1]) for href, name, status in rows}


def test_datadocs_index_lists_every_validation_without_scripts(clean_run):
    _, docs, _ = clean_run
    links = offline_index_links(docs)
    assert set(links) == {*SIZES, *(f"{s}_classes" for s in SIZES)}
    for name, (href, status) in links.items():
        assert status == "passed" and (docs / href).is_file() and href.startswith(f"validations/{name}/")
        assert (docs / "expectations" / f"{name}.html").is_file()


def test_grouped_and_leaky_data_fail_the_right_checks(tmp_path):
    splits = leaky_splits()
    splits["train"] = splits["train"].sort_values("label", kind="stable").reset_index(drop=True)
    result = validate.run(splits, LABELS, None, INFO, VP, tmp_path / "datadocs")["results"]
    assert result["success"] is False
    found = {(f["code"], f["where"]): f for f in result["findings"]}
    assert found[("train_val_leakage", "val")]["severity"] == "error"
    assert found[("train_val_leakage", "val")]["evidence"]["observed"] == 0.2
    assert found[("label_order_clustered", "train")]["severity"] == "warning"
    order = next(e for e in result["expectations"] if e["split"] == "train" and e["name"] == "label_order_random")
    assert order["success"] is False and order["observed"] > 0.9  # same_as_prev mean of sorted rows
    assert all(e["success"] for e in result["expectations"] if e["split"] != "train")
    assert offline_index_links(tmp_path / "datadocs")["train"][1] == "FAILED"


def test_datadocs_status_icons_are_glyphs_not_a_web_font(clean_run):
    _, docs, _ = clean_run
    for page in docs.rglob("*.html"):
        text = page.read_text()
        assert not re.search(r'<i class="[^"]*fa-(check-circle|times)', text), page  # blank offline
    page = next((docs / "validations" / "train").rglob("*.html")).read_text()
    assert page.count('aria-label="passed"') >= 5  # one per expectation of train's rows suite


def test_datadocs_status_icons_show_offline_in_chromium(tmp_path):
    """A failed and a passed expectation are told apart on screen with no network."""
    import matplotlib.image

    from browser import OFFLINE, screenshot

    splits = clean_splits()
    splits["train"] = splits["train"].sort_values("label", kind="stable").reset_index(drop=True)
    validate.run(splits, LABELS, None, INFO, VP, tmp_path / "datadocs")
    page = next((tmp_path / "datadocs" / "validations" / "train").rglob("*.html"))
    pixels = matplotlib.image.imread(screenshot(page.as_uri(), tmp_path / "shot.png", tmp_path / "profile", *OFFLINE))
    rgb = (pixels[..., :3] * 255).astype(int)

    def painted(colour: str) -> int:
        target = np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)])
        return int((np.abs(rgb - target).max(axis=-1) < 40).sum())

    from losstrace.data.datadocs import ICONS

    assert painted(ICONS["fa-times"][1]) > 20, "no red failure mark drawn"
    assert painted(ICONS["fa-check-circle"][1]) > 20, "no green pass mark drawn"


def test_null_inputs_and_empty_sequences_are_errors(tmp_path):
    splits = clean_splits()
    splits["val"].loc[3, "x"] = None
    splits["test"].loc[0, "length"] = 0
    result = validate.run(splits, LABELS, None, INFO, VP, tmp_path / "datadocs")["results"]
    failed = [
        (f["where"], f["evidence"]["name"], f["evidence"]["observed"]["unexpected_count"])
        for f in result["findings"]
        if f["code"] == "expectation_failed"
    ]
    assert failed == [("val", "x_not_null", 1), ("test", "length_at_least_1", 1)]
    assert result["success"] is False


def test_numeric_multilabel_data_through_gx(tmp_path):
    rng = np.random.default_rng(0)

    def numeric(n: int) -> pd.DataFrame:
        xs = [[list(rng.normal(size=2)) for _ in range(int(rng.integers(2, 5)))] for _ in range(n)]
        labels = rng.permutation(np.resize(["a", "a|b", "b"], n))
        return pd.DataFrame(
            {
                "x": xs,
                "label": labels,
                "length": [len(x) for x in xs],
                "source_file": "n.npz",
                "line": np.arange(1, n + 1),
            }
        )

    splits = {"train": numeric(30), "val": numeric(12), "test": numeric(12)}
    splits["val"].loc[0, "label"] = "a|z"
    info = {"input": "numeric", "multilabel": True, "label_delimiter": "|"}
    result = validate.run(splits, {"a": 0, "b": 1}, None, info, VP, tmp_path / "datadocs")["results"]
    failed = {(e["split"], e["name"]) for e in result["expectations"] if not e["success"]}
    # "z" is also a 1-row class, so val's class_balance fails too; train and test pass everything.
    assert failed >= {("val", "label_in_label_map"), ("val", "label_in_train_labels")}
    assert {split for split, _ in failed} == {"val"}
    (mismatch,) = [f for f in result["findings"] if f["code"] == "label_set_mismatch"]
    assert (mismatch["where"], mismatch["evidence"]["observed"]) == ("val", ["z"])


# ---------------------------------------------------------------- main()


def test_main_publishes_outputs_quietly(tmp_path, capfd):
    prepared = write_prepared(tmp_path / "prepared", clean_splits())
    out = tmp_path / "reports" / "validate"
    assert validate.main(prepared, out, write_params(tmp_path / "params.yaml"), tmp_path / "absent.json") == 0
    results_text = (out / "results.json").read_text()
    assert results_text == to_json(json.loads(results_text))  # indent 2, sorted keys, newline
    assert json.loads(results_text)["success"] is True
    assert set(json.loads((out / "fingerprint.json").read_text())) == {"label_map_hash", "train", "val", "test"}
    assert (out / "datadocs" / "index.html").is_file()
    assert not list((tmp_path / "reports").glob(".losstrace-stage-*"))
    captured = capfd.readouterr()
    assert "Calculating Metrics" not in captured.err and "%|" not in captured.err
    assert captured.out.startswith("validate: 0 error(s), 0 warning(s)")


def test_main_error_finding_writes_results_then_raises_one_line(tmp_path):
    prepared = write_prepared(tmp_path / "prepared", leaky_splits())
    out = tmp_path / "validate"
    with pytest.raises(LosstraceError) as exc:
        validate.main(prepared, out, write_params(tmp_path / "params.yaml"), None)
    message = str(exc.value)
    assert exc.value.exit_code == 1 and "\n" not in message
    assert message.startswith(
        "error: validate: train_val_leakage on val: share of rows also in train 0.2 (threshold 0.0)"
    )
    assert "data.group_duplicates: true" in message and "validate.max_leakage_rate" in message
    results = json.loads((out / "results.json").read_text())
    assert results["success"] is False
    assert [f["code"] for f in results["findings"] if f["severity"] == "error"] == ["train_val_leakage"]
    assert (out / "fingerprint.json").is_file() and (out / "datadocs" / "index.html").is_file()


def test_failures_leave_previous_outputs_intact(tmp_path, monkeypatch):
    prepared = write_prepared(tmp_path / "prepared", clean_splits())
    params = write_params(tmp_path / "params.yaml")
    out = tmp_path / "validate"
    validate.main(prepared, out, params, None)
    before = snapshot(out)

    # A crash after GX has built the new Data Docs into the staging dir publishes nothing.
    def boom(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(validate, "fingerprint", boom)
    with pytest.raises(RuntimeError):
        validate.main(prepared, out, params, None)
    monkeypatch.undo()
    assert snapshot(out) == before
    assert not list(tmp_path.glob(".losstrace-stage-*"))

    # Bad input: a split without its label column is exit 2, outputs untouched.
    pd.read_parquet(prepared / "val.parquet").drop(columns="label").to_parquet(prepared / "val.parquet")
    with pytest.raises(LosstraceError) as exc:
        validate.main(prepared, out, params, None)
    assert exc.value.exit_code == 2 and "missing column(s) label" in str(exc.value)
    assert snapshot(out) == before


def test_reference_label_map(tmp_path):
    assert validate.load_reference(None) is None
    assert validate.load_reference(tmp_path / "missing.json") is None
    ref = tmp_path / "ref.json"
    ref.write_text(json.dumps({"a": 0, "b": 1}))
    assert validate.load_reference(ref) == {"a": 0, "b": 1}
    ref.write_text(json.dumps(["a", "b"]))
    with pytest.raises(LosstraceError):
        validate.load_reference(ref)


def test_missing_prepared_file_is_bad_input(tmp_path):
    with pytest.raises(LosstraceError) as exc:
        validate.main(tmp_path / "nowhere", tmp_path / "out", write_params(tmp_path / "params.yaml"), None)
    assert exc.value.exit_code == 2 and "train.parquet" in str(exc.value)
