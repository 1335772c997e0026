"""Where a model's predictions come from: the layer or op that makes its output, and the output's width.

A functional model (`keras.Input` ... `keras.Model`, or a built `Sequential`) carries its
graph: `model.outputs`. A subclassed model (`class M(keras.Model): def call(...)`) has
none, only Python. Its `call` is traced once on symbolic inputs shaped like fit's data:
each layer and `keras.ops` function inside it records itself as in a functional model, so
the output leads back to what makes it (the last Dense, or a softmax applied after it) and
masks show on the recurrent layers' inputs, which is what the lint reads. No data runs
through the model and no weight is created (it is built before). The nodes the trace adds
to the user's layers are removed when the reading ends: the model goes back as it came.

A call that cannot run on symbolic tensors (TensorFlow functions on its input, Python
branches on values) leaves the output layer unknown; its width then comes from Keras' own
shape inference, and `note` says what was not read.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from typing import Any

from losstrace.model.model_lint import has_outputs as functional


@dataclasses.dataclass
class Outputs:
    """The first output of a model: what makes it, and its width."""

    layer: Any = None  # the layer or keras.ops operation making it (None: unknown)
    units: int | None = None  # the output's last dimension (None: unknown)
    note: str | None = None  # what could not be read, and why

    @property
    def activation(self) -> str:
        """The output's activation, `unknown` when the output layer is not known."""
        from losstrace.model.model_lint import activation_name

        return activation_name(self.layer) if self.layer is not None else "unknown"


@contextlib.contextmanager
def read(model, x: Any) -> Iterator[Outputs]:
    """The model's first output; `x`: symbolic inputs shaped like fit's (None: unknown).

    For a subclassed model the traced nodes stay on its layers inside the `with` (the lint
    reads masks from them) and are removed when it ends."""
    if functional(model):
        out = model.outputs[0]
        yield Outputs(producer(out), _units(out))
        return
    if x is None:
        yield Outputs(note="its call could not be traced: fit's input gives no shapes")
        return
    snapshot = _node_counts(model)
    try:
        yield _trace(model, x)
    finally:
        _restore(snapshot)


def producer(tensor):
    """The layer or op making `tensor`; inside a nested functional model, its own output layer."""
    op = tensor._keras_history.operation
    while functional(op) and op.outputs:
        op = op.outputs[0]._keras_history.operation
    return op


def _trace(model, x) -> Outputs:
    import keras

    kwargs = {"training": False} if getattr(model, "_call_has_training_arg", False) else {}
    try:
        out = keras.tree.flatten(model.call(x, **kwargs))[0]
        history = getattr(out, "_keras_history", None)
        if history is not None:
            return Outputs(producer(out), _units(out))
        why = "its call returns no Keras tensor"
    except Exception as e:  # a call that is not symbolic-friendly: only the shape is read
        why = f"its call does not run on symbolic inputs ({type(e).__name__})"
    return Outputs(units=_inferred_units(model, x), note=why)


def _inferred_units(model, x) -> int | None:
    """The output width by Keras' own shape inference (a graph trace, as fit's build does)."""
    import keras
    from keras.src import backend

    try:
        spec = keras.tree.flatten(backend.compute_output_spec(model, x, training=False))[0]
        return _units(spec)
    except Exception:
        return None


def _units(tensor) -> int | None:
    shape = getattr(tensor, "shape", None)
    return int(shape[-1]) if shape and shape[-1] is not None else None


def _node_counts(model) -> list[tuple[Any, int, int, int]]:
    layers = list(model._flatten_layers(include_self=True, recursive=True))
    return [(lyr, len(lyr._inbound_nodes), len(lyr._outbound_nodes), len(lyr._losses)) for lyr in layers]


def _restore(snapshot) -> None:
    for layer, inbound, outbound, losses in snapshot:
        del layer._inbound_nodes[inbound:]
        del layer._outbound_nodes[outbound:]
        del layer._losses[losses:]
