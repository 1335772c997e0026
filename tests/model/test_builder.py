"""train.model.builder: a user's own Keras model, each way it can fail as one line, and
the lint of the built model's layers (real Keras, tiny models, no training)."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import pytest

from losstrace import params
from losstrace.errors import LosstraceError
from losstrace.model import builder, model_lint

MODULE = '''
import keras
from keras import layers


def conv_gru(spec):
    """Embedding → BatchNormalization → Conv1D → GRU: Conv1D drops the embedding's mask."""
    x = keras.Input(shape=(spec.sequence_length,), dtype="int32")
    h = layers.Embedding(spec.vocab_size, 8, mask_zero=True)(x)
    h = layers.BatchNormalization()(h)
    h = layers.Conv1D(8, 3, padding="same", activation="relu")(h)
    h = layers.GRU(8)(h)
    return keras.Model(x, layers.Dense(spec.output_units, activation="softmax", name="out")(h))


def masked_gru(spec):
    x = keras.Input(shape=(spec.sequence_length,), dtype="int32")
    h = layers.Embedding(spec.vocab_size, 8, mask_zero=True)(x)
    h = layers.GRU(8)(h)
    return keras.Model(x, layers.Dense(spec.output_units, activation="softmax")(h))


def sigmoid_head(spec):
    x = keras.Input(shape=(spec.sequence_length,), dtype="int32")
    h = layers.GRU(8)(layers.Embedding(spec.vocab_size, 8, mask_zero=True)(x))
    return keras.Model(x, layers.Dense(spec.output_units, activation="sigmoid", name="out")(h))


def compiled_own(spec):
    model = masked_gru(spec)
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="sparse_categorical_crossentropy")
    return model


def compiled_other_loss(spec):
    model = masked_gru(spec)
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    return model


def raises(spec):
    raise ValueError("units must be positive")


def wrong_units(spec):
    x = keras.Input(shape=(spec.sequence_length,), dtype="int32")
    h = layers.GRU(8)(layers.Embedding(spec.vocab_size, 8)(x))
    return keras.Model(x, layers.Dense(spec.output_units + 2, activation="softmax")(h))


def sequence_out(spec):
    x = keras.Input(shape=(spec.sequence_length,), dtype="int32")
    h = layers.GRU(8, return_sequences=True)(layers.Embedding(spec.vocab_size, 8)(x))
    return keras.Model(x, layers.Dense(spec.output_units, activation="softmax")(h))


def not_a_model(spec):
    return "model"


def numeric_input(spec):
    x = keras.Input(shape=(spec.sequence_length, 3))
    return keras.Model(x, layers.Dense(spec.output_units, activation="softmax")(layers.GRU(4)(x)))
'''


@pytest.fixture
def project(tmp_path, monkeypatch):
    # A unique package per test: importlib caches modules by name for the process.
    name = f"my_models_{abs(hash(str(tmp_path))) % 10**8}"
    pkg = tmp_path / name
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "nets.py").write_text(textwrap.dedent(MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path, f"{name}.nets"


def spec(fn: str, padding: str = "post", loss: str = "sparse_categorical_crossentropy") -> builder.InputSpec:
    p = params.Params()
    train = dataclasses.replace(p.train, loss=loss, model=dataclasses.replace(p.train.model, builder=fn))
    return builder.InputSpec("tokens", 30, 12, 0, 3, False, 3, padding, train)


def build(root: Path, module: str, fn: str, **kw):
    s = spec(f"{module}:{fn}", **kw)
    return builder.build(s.train, s, 4, root), s


def test_builder_model_is_compiled_with_the_train_params_when_uncompiled(project):
    root, module = project
    model, s = build(root, module, "conv_gru")
    assert model.compiled
    assert type(model.optimizer).__name__ == "Adam"
    assert float(model.optimizer.learning_rate) == pytest.approx(s.train.learning_rate)
    assert builder.compiled_loss_name(model) == "sparse_categorical_crossentropy"


def test_a_model_compiled_by_the_builder_keeps_its_optimizer(project):
    root, module = project
    model, _ = build(root, module, "compiled_own")
    assert type(model.optimizer).__name__ == "SGD"


@pytest.mark.parametrize(
    "target, message",
    [
        ("my_models.nowhere:build", "no module my_models.nowhere in the project"),
        ("{m}:buld", "has no function buld"),
        ("{m}:raises", "raised ValueError: units must be positive"),
        ("{m}:wrong_units", "outputs shape (5,) per row but the labels need (3,)"),
        ("{m}:sequence_out", "outputs shape (12, 3) per row"),
        ("{m}:not_a_model", "returned str, not a Keras model"),
        ("{m}:numeric_input", "takes inputs shaped (12, 3) but the data is (12,)"),
        ("{m}:compiled_other_loss", "compiled with categorical_crossentropy but train.loss is"),
    ],
)
def test_each_bad_builder_is_one_line_naming_it(project, target, message):
    root, module = project
    target = target.format(m=module)
    s = spec(target)
    with pytest.raises(LosstraceError) as err:
        builder.build(s.train, s, 4, root)
    line = err.value.line()
    assert "\n" not in line and line.startswith(f"error: {target}: ") and message in line, line


def test_a_misspelt_function_gets_a_did_you_mean(project):
    root, module = project
    s = spec(f"{module}:conv_gr")
    with pytest.raises(LosstraceError, match=f"did you mean {module}:conv_gru"):
        builder.build(s.train, s, 4, root)


def test_builder_must_be_package_module_function():
    with pytest.raises(LosstraceError, match="is not package.module:function"):
        params.from_dict(params.Params, {"train": {"model": {"builder": "my_models/nets.py"}}}, "")


def codes(findings) -> list[str]:
    return [f.code for f in findings]


def test_lint_sees_conv1d_dropping_the_mask_before_a_post_padded_final_state(project):
    root, module = project
    model, s = build(root, module, "conv_gru")
    findings = model_lint.run(model, s, params.Params())
    unmasked = [f for f in findings if f.code == "unmasked_padding"]
    assert [f.evidence["layer"] for f in unmasked] == [model.get_layer(index=4).name]
    # pre-padded, the final state reads the real steps last
    model, s = build(root, module, "conv_gru", padding="pre")
    assert "unmasked_padding" not in codes(model_lint.run(model, s, params.Params()))


def test_lint_of_a_masked_gru_post_padded_is_clean_and_pre_padded_loses_cudnn(project):
    root, module = project
    model, s = build(root, module, "masked_gru")
    assert codes(model_lint.run(model, s, params.Params())) == []
    model, s = build(root, module, "masked_gru", padding="pre")
    findings = model_lint.run(model, s, params.Params())
    assert codes(findings) == ["cudnn_ineligible"]
    assert "right-padded" in findings[0].evidence["message"]


def test_lint_reads_the_output_layers_activation_not_the_params(project):
    root, module = project
    model, s = build(root, module, "sigmoid_head")
    # params.yaml says softmax; the model ends in sigmoid over 3 exclusive classes
    findings = [f for f in model_lint.run(model, s, params.Params()) if f.severity == "error"]
    assert codes(findings) == ["activation_loss_mismatch"]
    assert findings[0].evidence["layer"] == "out"
    assert "the activation of layer out: sigmoid → softmax" in findings[0].suggestion


def test_params_lint_of_a_builder_skips_the_zoo_checks():
    p = params.from_dict(
        params.Params,
        {"train": {"output_activation": "sigmoid", "model": {"builder": "m.n:f", "rnn": {"recurrent_dropout": 0.2}}}},
        "",
    )
    info = {"multilabel": False, "input": "tokens", "splits": {"train": 500}}
    assert codes(model_lint.params_lint(p, info, {"a": 0, "b": 1, "c": 2})) == []


def test_a_builder_file_dvc_does_not_watch_is_one_line(tmp_path):
    from losstrace.model import builder_check

    (tmp_path / "nets").mkdir()
    (tmp_path / "nets/gru.py").write_text("def build(spec):\n    pass\n")
    p = params.from_dict(params.Params, {"train": {"model": {"builder": "nets.gru:build"}}}, "")
    with pytest.raises(LosstraceError) as err:
        builder_check.require_tracked(p, tmp_path, always=True)
    assert err.value.line() == (
        "error: params.yaml: nets/gru.py is not under train.model.builder_dep=src/losstrace/model/zoo.py, "
        "so DVC would not see it change (set train.model.builder_dep: nets/gru.py)"
    )
    p = params.from_dict(params.Params, {"train": {"model": {"builder": "nets.gru:build", "builder_dep": "nets"}}}, "")
    assert builder_check.require_tracked(p, tmp_path, always=True) == tmp_path / "nets/gru.py"
