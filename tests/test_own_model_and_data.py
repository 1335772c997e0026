"""Real DVC: a user's data files are ingest dependencies, and a user's own model
(`train.model.builder`) trains through `dvc repro`, its file a train dependency.

Small data: 90 generated text rows of 3 classes; Japanese Vowels for the builder's model
(270 training rows) at 2 epochs.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest

from support import make_project, run_cli, run_tool

pytestmark = pytest.mark.slow

WORDS = {"pos": ["good", "great", "fine", "nice"], "neg": ["bad", "awful", "poor", "sad"], "mid": ["ok", "so", "meh"]}


def write_rows(path: Path, seed: int, rows_per_class: int = 15) -> None:
    rng = np.random.default_rng(seed)
    lines = ["text,label"]
    for label, words in WORDS.items():
        for _ in range(rows_per_class):
            lines.append(" ".join(rng.choice(words + ["the", "a"], size=rng.integers(3, 8))) + f",{label}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def ingest_changed(root: Path) -> bool:
    status = json.loads(run_tool("dvc", "status", "--json", "ingest", cwd=root).stdout or "{}")
    return "ingest" in status


def repro_ingest(root: Path) -> str:
    return run_tool("dvc", "repro", "--single-item", "ingest", cwd=root).stdout


@pytest.fixture(scope="module")
def data_project(tmp_path_factory):
    root = tmp_path_factory.mktemp("own-data")
    write_rows(root / "data/user/a.csv", 0)
    write_rows(root / "data/user/b.csv", 1)
    make_project(root, {"data.source": "data/user/*.csv", "data.source_dep": "data/user"})
    assert "Running stage 'ingest'" in repro_ingest(root)
    assert not ingest_changed(root)
    return root


def test_editing_a_user_data_file_reruns_ingest(data_project):
    root = data_project
    path = root / "data/user/a.csv"
    header, *rows = path.read_text().splitlines()
    path.write_text("\n".join([header, *reversed(rows)]) + "\n")  # same rows, another order
    assert ingest_changed(root)
    assert "Running stage 'ingest'" in repro_ingest(root)
    assert not ingest_changed(root)


def test_adding_or_removing_a_matching_file_reruns_ingest(data_project):
    root = data_project
    write_rows(root / "data/user/c.csv", 2)
    assert ingest_changed(root)
    repro_ingest(root)
    assert json.loads((root / "data/prepared/ingest.json").read_text())["rows_read"] == 135
    (root / "data/user/c.csv").unlink()
    assert ingest_changed(root)
    repro_ingest(root)
    assert json.loads((root / "data/prepared/ingest.json").read_text())["rows_read"] == 90


def test_user_data_outside_source_dep_is_a_one_line_error(tmp_path):
    write_rows(tmp_path / "data/user/a.csv", 0)
    root = make_project(tmp_path, {"data.source": "data/user/a.csv"})  # source_dep left at the lock file
    r = run_tool("dvc", "repro", "ingest", cwd=root, check=False)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    line = (
        "error: params.yaml: data/user/a.csv is not under data.source_dep=requirements.lock, "
        "so DVC would not see it change (set data.source_dep: data/user/a.csv)"
    )
    assert line in r.stderr.splitlines()
    assert not (root / "data/prepared").exists()
    # Run by hand (no DVC to inform), ingest reads the file: replays and tests do that.
    run_cli("ingest", "--params", "params.yaml", "--out", "data/prepared", cwd=root, check=True)


def test_a_dvc_yaml_without_the_source_dep_is_a_one_line_error(tmp_path):
    write_rows(tmp_path / "data/user/a.csv", 0)
    root = make_project(tmp_path, {"data.source": "data/user/a.csv", "data.source_dep": "data/user/a.csv"})
    dvc_yaml = root / "dvc.yaml"
    dvc_yaml.write_text(dvc_yaml.read_text().replace("      - ${data.source_dep}\n", ""))
    r = run_tool("dvc", "repro", "ingest", cwd=root, check=False)
    assert r.returncode != 0
    line = (
        "error: dvc.yaml: the ingest stage does not depend on data/user/a.csv "
        "(add `- ${data.source_dep}` to stages.ingest.deps)"
    )
    assert line in r.stderr.splitlines()


def test_a_user_validation_file_replaces_the_split(tmp_path):
    write_rows(tmp_path / "data/user/train.csv", 0)
    write_rows(tmp_path / "data/user/val.csv", 5, rows_per_class=4)
    root = make_project(
        tmp_path,
        {"data.source": "data/user/train.csv", "data.val_source": "data/user/val.csv", "data.source_dep": "data/user"},
    )
    run_cli("ingest", "--params", "params.yaml", "--out", "data/prepared", cwd=root, check=True)
    splits = json.loads((root / "data/prepared/ingest.json").read_text())["splits"]
    assert splits == {"train": 36, "val": 12, "test": 9}  # test_size 0.2 of 45; val is the file's 12 rows


BUILDER = '''
import keras
from keras import layers


def build(spec):
    """BatchNormalization and Conv1D before the GRU, as in the user reports."""
    x = keras.Input(shape=(spec.sequence_length, spec.channels))
    h = layers.Masking(0.0)(x)
    h = layers.BatchNormalization()(h)
    h = layers.Conv1D(16, 3, padding="same", activation="relu")(h)
    h = layers.GRU(16)(h)
    return keras.Model(x, layers.Dense(spec.output_units, activation="softmax", name="out")(h))


def broken(spec):
    raise RuntimeError("no GPU named cuda:3")
'''


@pytest.fixture(scope="module")
def model_project(tmp_path_factory):
    root = tmp_path_factory.mktemp("own-model")
    (root / "my_models").mkdir()
    (root / "my_models/__init__.py").write_text("")
    (root / "my_models/conv_gru.py").write_text(textwrap.dedent(BUILDER))
    make_project(
        root,
        {
            "train.model.builder": "my_models.conv_gru:build",
            "train.model.builder_dep": "my_models",
            "train.epochs": 2,
        },
    )
    run_tool("dvc", "repro", cwd=root)
    return root


def test_a_builders_batchnorm_conv_gru_model_trains_through_dvc_repro(model_project):
    root = model_project
    history = (root / "reports/train/history.csv").read_text().splitlines()
    assert len(history) == 3  # header + 2 epochs
    metrics = json.loads((root / "reports/evaluate/metrics.json").read_text())["test"]
    assert 0 < metrics["accuracy"] <= 1
    from losstrace.record import store

    run_id = json.loads((root / "reports/train/run.json").read_text())["run_id"]
    run = store.client(store.tracking_uri(root)).get_run(run_id)
    assert run.data.params["train.model.builder"] == "my_models.conv_gru:build"
    # The lint read the built model: Conv1D dropped the Masking layer's mask before the GRU.
    lint = json.loads((root / "reports/train/lint.json").read_text())["findings"]
    assert "unmasked_padding" in [f["code"] for f in lint]
    assert not json.loads(run_tool("dvc", "status", "--json", cwd=root).stdout or "{}")


def test_editing_the_builder_reruns_train(model_project):
    root = model_project
    path = root / "my_models/conv_gru.py"
    original = path.read_text()
    path.write_text(original.replace("Conv1D(16", "Conv1D(8"))
    try:
        status = json.loads(run_tool("dvc", "status", "--json", cwd=root).stdout)
        assert "train" in status and "ingest" not in status
    finally:
        path.write_text(original)


def test_a_builder_that_raises_stops_train_with_one_line(model_project):
    root = model_project
    params = root / "params.yaml"
    text = params.read_text()
    params.write_text(text.replace("my_models.conv_gru:build", "my_models.conv_gru:broken"))
    before = (root / "reports/train/history.csv").read_bytes()
    try:
        r = run_cli(
            "train", "--params", "params.yaml", "--prepared", "data/prepared", "--validate", "reports/validate",
            "--models", "models", "--reports", "reports/train",
            cwd=root,
        )  # fmt: skip
    finally:
        params.write_text(text)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1] == (
        "error: my_models.conv_gru:broken: raised RuntimeError: no GPU named cuda:3 "
        "(fix the builder (LOSSTRACE_DEBUG=1 shows where))"
    )
    assert (root / "reports/train/history.csv").read_bytes() == before
