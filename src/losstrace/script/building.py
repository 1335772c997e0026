"""A model that is not built when fit starts, built the way Keras itself would build it.

`keras.Sequential([Embedding(...), LSTM(...), Dense(...)])` without a `keras.Input` has no
layers, weights or outputs until Keras traces its first training step, after the
callbacks' `on_train_begin`. The recording reads the output layer, lints the layers and
hooks the optimizer before that step, so it builds the model first, from the shapes and
dtypes of the data fit was given: Keras' own symbolic build (what fit does under a
distribution strategy), which creates the same variables the first step would, in the
same order, and runs no data through the model.
"""

from __future__ import annotations

from typing import Any


def build_before_fit(model, x: Any, y: Any) -> bool:
    """Build `model` from fit's inputs when it is not built; True when it is built afterwards.

    x, y: NumPy arrays (or tensors) as fit got them, or a `tf.data.Dataset` as x (its
    element spec gives the shapes; the dataset is never iterated). Anything else (a
    generator, a PyDataset) leaves the model as it is."""
    if model.built and _has_outputs(model):
        return True
    batch = _spec_batch(x, y)
    if batch is None:
        return False
    model._symbolic_build(data_batch=batch)  # Keras' own build from a batch's shapes and dtypes
    return model.built and _has_outputs(model)


def _has_outputs(model) -> bool:
    try:
        return bool(model.outputs)
    except (AttributeError, ValueError):
        return False


def _spec_batch(x: Any, y: Any) -> tuple | None:
    """(x, y, None) whose leaves carry the shapes and dtypes Keras will see, or None."""
    spec = getattr(x, "element_spec", None)
    if spec is not None:  # a tf.data.Dataset of (x, y[, weights]) batches
        return tuple(spec) + (None,) * (3 - len(spec)) if isinstance(spec, tuple) else (spec, None, None)
    if _array_like(x) and (y is None or _array_like(y)):
        return _unbatched(x), None if y is None else _unbatched(y), None
    return None


def _unbatched(v: Any):
    """A symbolic tensor of v's shape with any batch size (as a dataset's spec has)."""
    import keras

    return keras.KerasTensor((None, *tuple(v.shape)[1:]), dtype=keras.backend.standardize_dtype(v.dtype))


def _array_like(v: Any) -> bool:
    return hasattr(v, "shape") and hasattr(v, "dtype") and len(getattr(v, "shape", ())) >= 1
