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


def test_a_float32_setting_reads_back_as_the_number_it_was_set_from():
    import struct

    for set_to in (1e-4, 1e-3, 3e-3, 2e-5, 0.123456789, 1 / 3):
        held = struct.unpack("<f", struct.pack("<f", set_to))[0]  # what a Keras variable holds
        shown = params.float32_shortest(held)
        assert struct.pack("<f", shown) == struct.pack("<f", held) and len(repr(shown)) <= len(repr(held))
    assert params.float32_shortest(struct.unpack("<f", struct.pack("<f", 1e-4))[0]) == 0.0001
    assert params.float32_shortest(0.001) == 0.001


def test_dense_layers_parse_and_flatten():
    p = params.from_dict(params.Params, {"train": {"model": {"dense": [{"units": 10, "activation": "relu"}]}}}, "")
    flat = params.flatten(p)
    assert flat["train.model.dense.0.units"] == 10
    assert flat["train.batch_size"] == 32
    assert flat["train.metrics"] == "accuracy"


@pytest.mark.parametrize(
    "yaml_text, message",
    [
        ("base: {seed: -1}\n", "base.seed=-1 must be >= 0"),
        ("train: {batch_size: 0}\n", "train.batch_size=0 must be >= 1"),
        ("train: {epochs: -3}\n", "train.epochs=-3 must be >= 1"),
        ("train: {noise_scale_every: -1}\n", "train.noise_scale_every=-1 must be >= 0"),
        ("train: {learning_rate: 1e999}\n", "train.learning_rate=inf must be a finite number"),
        ("train: {model: {embedding: {dim: 0}}}\n", "train.model.embedding.dim=0 must be >= 1"),
        ("train: {callbacks: {patience: -2}}\n", "train.callbacks.patience=-2 must be >= 0"),
        ("data: {max_len: -1}\n", "data.max_len=-1 must be >= 0"),
        ("data: {max_tokens: -5}\n", "data.max_tokens=-5 must be >= 3"),
        ("evaluate: {batch_size: 0}\n", "evaluate.batch_size=0 must be >= 1"),
        ("validate: {max_class_ratio: -1}\n", "validate.max_class_ratio=-1 must be >= 1"),
        ("validate: {max_oov_rate: 2}\n", "validate.max_oov_rate=2 is a share of rows, outside [0, 1]"),
        ("diagnose: {noise_ratio: -0.1}\n", "diagnose.noise_ratio=-0.1 must be >= 0"),
        ("diagnose: {plateau_min_epochs: 0}\n", "diagnose.plateau_min_epochs=0 must be >= 1"),
    ],
)
def test_out_of_range_values_name_the_key_and_value(tmp_path, yaml_text, message):
    f = tmp_path / "params.yaml"
    f.write_text(yaml_text)
    with pytest.raises(LosstraceError) as e:
        params.load(f)
    assert e.value.line().startswith(f"error: {f}: {message} (set ")


def test_an_empty_or_binary_params_file_is_an_error_not_the_defaults(tmp_path):
    f = tmp_path / "params.yaml"
    f.write_text("# only a comment\n")
    with pytest.raises(LosstraceError, match="holds no params"):
        params.load(f)
    f.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff")
    with pytest.raises(LosstraceError, match="not UTF-8 text"):
        params.load(f)


def test_parse_value_reads_mlflow_strings():
    assert params.parse_value("0.001") == pytest.approx(0.001)
    assert params.parse_value("32") == 32 and isinstance(params.parse_value("32"), int)
    assert params.parse_value("True") is True and params.parse_value("false") is False
    assert params.parse_value("adam") == "adam"


def test_override_sets_dotted_keys_and_checks_them():
    p = params.override(params.Params(), {"train.batch_size": 8, "train.model.rnn.cell": "gru"})
    assert p.train.batch_size == 8 and p.train.model.rnn.cell == "gru"
    assert params.override(p, {}) == p  # the nested round trip keeps every value
    dense = params.override(p, {"train.model.dense": [{"units": 16, "activation": "relu"}]})
    assert params.lookup(dense, "train.model.dense.0.units") == 16
    with pytest.raises(LosstraceError, match="unknown key train.batch_szie"):
        params.override(p, {"train.batch_szie": 8})
    with pytest.raises(LosstraceError, match="must be an integer"):
        params.override(p, {"train.batch_size": "eight"})


def test_override_nested_creates_missing_sections():
    raw = {"train": {"epochs": 3}}
    assert params.override_nested(raw, {"train.epochs": 1, "data.shuffle": False}) is raw
    assert raw == {"train": {"epochs": 1}, "data": {"shuffle": False}}


def test_from_flat_reads_back_what_flatten_records():
    p = params.override(params.Params(), {"train.learning_rate": 0.003, "train.model.dense": [{"units": 16}]})
    flat = {k: str(v) for k, v in params.flatten(p).items()}
    assert params.from_flat(flat) == p
