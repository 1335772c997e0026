from pathlib import Path

import pytest

from losstrace import params
from losstrace.errors import LosstraceError

REPO = Path(__file__).resolve().parents[1]


def test_repo_params_load_and_every_section_present():
    p = params.load(REPO / "params.yaml")
    assert p.base.seed == 42
    assert p.data.source == "japanese_vowels"
    assert p.train.model.rnn.cell in ("lstm", "gru")


def test_misspelt_key_is_an_error_with_a_suggestion(tmp_path):
    f = tmp_path / "params.yaml"
    f.write_text("train:\n  batch_szie: 64\n")
    with pytest.raises(LosstraceError) as e:
        params.load(f)
    line = e.value.line()
    assert line.startswith(f"error: {f}: unknown key train.batch_szie")
    assert "did you mean train.batch_size?" in line


def test_wrong_type_and_bad_choice_are_errors(tmp_path):
    f = tmp_path / "params.yaml"
    f.write_text("train:\n  batch_size: big\n")
    with pytest.raises(LosstraceError, match="train.batch_size='big' must be an integer"):
        params.load(f)
    f.write_text("train:\n  model:\n    rnn:\n      cell: transformer\n")
    with pytest.raises(LosstraceError, match="train.model.rnn.cell='transformer' is not one of lstm, gru, simple"):
        params.load(f)


def test_invalid_yaml_names_the_line(tmp_path):
    f = tmp_path / "params.yaml"
    f.write_text("base:\n  seed: 1\n train: [\n")
    with pytest.raises(LosstraceError) as e:
        params.load(f)
    assert e.value.where.startswith(f"{f}:")


def test_dense_layers_parse_and_flatten():
    p = params.from_dict(params.Params, {"train": {"model": {"dense": [{"units": 10, "activation": "relu"}]}}}, "")
    flat = params.flatten(p)
    assert flat["train.model.dense.0.units"] == 10
    assert flat["train.batch_size"] == 32
    assert flat["train.metrics"] == "accuracy"
