"""Your own Keras model in the pipeline: `train.model.builder: "package.module:function"`.

The function lives in the project (importable from its root, which goes first on
sys.path), receives an `InputSpec` and returns a Keras model, compiled or not. An
uncompiled model is compiled exactly as the zoo compiles its own (train.optimizer,
learning_rate, loss, metrics). Every way a builder can fail — a module or function that
is not there, a function that raises, a model whose inputs or outputs cannot take the
data and labels — is one `where: what (fix)` line naming the builder, before training.

No TensorFlow at import: `losstrace lint` resolves the builder's file statically.
"""

from __future__ import annotations

import difflib
import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from losstrace.errors import LosstraceError, first_line
from losstrace.model import zoo
from losstrace.params import TrainParams

# Canonical loss names of the losses train.loss offers, by Keras class name.
LOSS_NAMES = {
    "SparseCategoricalCrossentropy": "sparse_categorical_crossentropy",
    "CategoricalCrossentropy": "categorical_crossentropy",
    "BinaryCrossentropy": "binary_crossentropy",
}


@dataclass(frozen=True)
class InputSpec:
    """What a builder needs to know about the data, and the train params.

    input_kind: text|tokens|numeric. text and tokens arrive as int32 ids of shape
    (batch, sequence_length), 0 = padding, 1 = out-of-vocabulary, vocab[i] = id i + 2;
    numeric as float32 (batch, sequence_length, channels), padding steps all 0.0.
    sequence_length is None when train.batching: bucket feeds batches of varying width.
    output_units is what the labels need from the last layer (train.loss decides).
    """

    input_kind: str
    vocab_size: int
    sequence_length: int | None
    channels: int
    n_classes: int
    multilabel: bool
    output_units: int
    padding: str  # pre | post (data.padding); a recorded script may also say none: no row is padded
    train: TrainParams
    vocab: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()


def input_spec(
    train: TrainParams, padding: str, info: dict[str, Any], fz, labels: dict[str, int], max_len
) -> InputSpec:
    """The spec of the prepared data (ingest.json, the fitted featurizer, labels.json)."""
    multilabel = bool(info["multilabel"])
    numeric = info["input"] == "numeric"
    return InputSpec(
        input_kind=info["input"],
        vocab_size=0 if numeric else fz.vocab_size,
        sequence_length=max_len,
        channels=fz.channels if numeric else 0,
        n_classes=len(labels),
        multilabel=multilabel,
        output_units=zoo.output_units(train, len(labels), multilabel),
        padding=padding,
        train=train,
        vocab=tuple(fz.vocab),
        labels=tuple(sorted(labels, key=labels.get)),
    )


def module_file(builder: str, root: Path) -> Path | None:
    """The project file holding the builder's module (found without importing it)."""
    base = Path(root).joinpath(*builder.partition(":")[0].split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def load(builder: str, root: Path) -> Callable:
    """Import the builder's module from the project and return its function."""
    module_name, _, func_name = builder.partition(":")
    if module_file(builder, root) is None:
        raise LosstraceError(
            builder,
            f"no module {module_name} in the project ({module_name.replace('.', '/')}.py not found)",
            "fix train.model.builder; the module path starts at the project root",
        )
    project = str(Path(root).resolve())
    if project not in sys.path:
        sys.path.insert(0, project)
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # the user's module: anything can go wrong while it runs
        raise LosstraceError(
            builder, f"importing {module_name} raised {type(e).__name__}: {first_line(e)}", "fix the module"
        ) from e
    fn = getattr(module, func_name, None)
    if not callable(fn):
        names = [n for n, v in vars(module).items() if callable(v) and not n.startswith("_")]
        close = difflib.get_close_matches(func_name, names, n=1)
        hint = f"did you mean {module_name}:{close[0]}?" if close else "fix train.model.builder"
        raise LosstraceError(builder, f"{module_name} has no function {func_name}", hint)
    return fn


def build(train: TrainParams, spec: InputSpec, steps_per_epoch: int, root: Path = Path(".")):
    """The model to train: the zoo's, or the builder's checked and compiled."""
    if not train.model.builder:
        return zoo.build(
            train,
            spec.input_kind,
            spec.sequence_length,
            spec.channels,
            spec.vocab_size,
            spec.n_classes,
            spec.multilabel,
            steps_per_epoch,
            list(spec.vocab),
        )
    builder = train.model.builder
    fn = load(builder, root)
    try:
        model = fn(spec)
    except LosstraceError:
        raise
    except Exception as e:  # the user's function
        raise LosstraceError(
            builder, f"raised {type(e).__name__}: {first_line(e)}", "fix the builder (LOSSTRACE_DEBUG=1 shows where)"
        ) from e
    check_fits(builder, model, spec)
    if getattr(model, "compiled", False):
        _check_compiled_loss(builder, model, train)
    else:
        zoo.compile_model(model, train, steps_per_epoch, spec.output_units, spec.multilabel)
    return model


def check_fits(builder: str, model, spec: InputSpec) -> None:
    """A Keras model with one input shaped like the data and one output shaped like the labels."""
    import keras

    if not isinstance(model, keras.Model):
        raise LosstraceError(
            builder, f"returned {type(model).__name__}, not a Keras model", "return a keras.Model or Sequential"
        )
    if not model.built or len(model.inputs or []) != 1 or len(model.outputs or []) != 1:
        raise LosstraceError(
            builder,
            "the model needs exactly one input and one output, built",
            "start with keras.Input(shape=...) and end with one Dense layer",
        )
    want_in = (spec.sequence_length,) if spec.input_kind != "numeric" else (spec.sequence_length, spec.channels)
    got_in = tuple(model.inputs[0].shape[1:])
    if len(got_in) != len(want_in) or any(g is not None and w is not None and g != w for g, w in zip(got_in, want_in)):
        raise LosstraceError(
            builder,
            f"the model takes inputs shaped {got_in} but the data is {want_in} per row",
            "use keras.Input(shape=(spec.sequence_length,)) for text/tokens, "
            "(spec.sequence_length, spec.channels) for numeric",
        )
    got_out = tuple(model.outputs[0].shape[1:])
    if got_out != (spec.output_units,):
        raise LosstraceError(
            builder,
            f"the model outputs shape {got_out} per row but the labels need ({spec.output_units},) "
            f"({spec.n_classes} {'labels' if spec.multilabel else 'classes'}, {spec.train.loss})",
            "end with keras.layers.Dense(spec.output_units) after the last recurrent state or a pooling",
        )


def compiled_loss_name(model) -> str | None:
    """train.loss's name for the loss a model was compiled with; None if it is another loss."""
    loss = getattr(model, "loss", None)
    if isinstance(loss, str):
        import keras

        loss = keras.losses.get(loss)
    name = type(loss).__name__ if not callable(loss) or hasattr(loss, "get_config") else getattr(loss, "__name__", "")
    if name in LOSS_NAMES:
        return LOSS_NAMES[name]
    name = getattr(loss, "__name__", name)
    return name if name in LOSS_NAMES.values() else None


def _check_compiled_loss(builder: str, model, train: TrainParams) -> None:
    """Labels are encoded for train.loss (ids, one-hot, multi-hot): the model must train on it."""
    name = compiled_loss_name(model)
    if name is not None and name != train.loss:
        raise LosstraceError(
            builder,
            f"the model is compiled with {name} but train.loss is {train.loss} (labels are encoded for train.loss)",
            f"set train.loss: {name}, or return the model uncompiled",
        )
