"""A model that is not built when fit starts, built the way Keras itself would build it.

`keras.Sequential([Embedding(...), LSTM(...), Dense(...)])` without a `keras.Input` has no
layers, weights or outputs until Keras traces its first training step, after the
callbacks' `on_train_begin`. The recording reads the output layer, lints the layers and
hooks the optimizer before that step, so it builds the model first, from the shapes and
dtypes of the data fit was given: Keras' own symbolic build (what fit does under a
distribution strategy), which creates the same variables the first step would, in the
same order, and runs no data through the model. A subclassed model (`class M(keras.Model)`
with its own `call`) is built the same way.
"""

from __future__ import annotations

from typing import Any

from losstrace.script import outputs


def build_before_fit(model, x: Any, y: Any) -> bool:
    """Build `model` from fit's inputs when it is not built; True when it is built afterwards.

    x, y: NumPy arrays (or tensors, or dicts and lists of them) as fit got them, or a
    `tf.data.Dataset` as x (its element spec gives the shapes; the dataset is never
    iterated). Anything else (a generator, a PyDataset) leaves the model as it is."""
    if model.built and (outputs.functional(model) or _all_built(model)):
        return True
    batch = _spec_batch(x, y)
    if batch is None:
        return False
    if batch[1] is None and getattr(model, "optimizer", None) is not None:
        # No targets (a train_step of the model's own, fit(x) alone): Keras' build would also
        # build the compiled loss on them. The model alone, then its optimizer, as the step would.
        from keras.src import backend

        backend.compute_output_spec(model, batch[0], training=False)
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
    else:
        model._symbolic_build(data_batch=batch)  # Keras' own build from a batch's shapes and dtypes
    return model.built and (outputs.functional(model) or _all_built(model))


def symbolic_inputs(x: Any):
    """Symbolic tensors shaped like one batch of fit's inputs (any batch size), or None."""
    batch = _spec_batch(x, None)
    return None if batch is None else batch[0]


def inputs_as_built(model):
    """Symbolic inputs shaped like those Keras built `model` on in its first step, or None.

    For a model a generator or PyDataset fed: its first call kept the input's shape (any
    batch size) but not its dtype. Floats are given: the trace only reads which layers and
    ops make the output, and an Embedding casts what it is given to ids. Only a single
    input is rebuilt."""
    import keras

    shapes = getattr(model, "_build_shapes_dict", None) or {}
    if len(shapes) != 1:
        return None
    shape = next(iter(shapes.values()))
    if not isinstance(shape, (tuple, list)) or not all(d is None or isinstance(d, int) for d in shape):
        return None
    return keras.KerasTensor((None, *tuple(shape)[1:]), dtype="float32")


def _all_built(model) -> bool:
    """A subclassed model is built when every layer is (Keras' own test before a step)."""
    return all(layer.built for layer in model._flatten_layers())


def _spec_batch(x: Any, y: Any) -> tuple | None:
    """(x, y, None) whose leaves are symbolic tensors of the shapes and dtypes Keras will see, or None."""
    import keras

    spec = getattr(x, "element_spec", None)
    if spec is not None:  # a tf.data.Dataset of (x, y[, weights]) batches
        parts = tuple(spec) + (None,) * (3 - len(spec)) if isinstance(spec, tuple) else (spec, None, None)
        return tuple(None if p is None else keras.tree.map_structure(_symbolic, p) for p in parts)
    if _arrays(x) and (y is None or _arrays(y)):
        return _unbatched(x), None if y is None else _unbatched(y), None
    return None


def _symbolic(spec):
    import keras

    return keras.KerasTensor(tuple(spec.shape), dtype=keras.backend.standardize_dtype(spec.dtype))


def _unbatched(v: Any):
    """Symbolic tensors of v's leaves' shapes with any batch size (as a dataset's spec has)."""
    import keras

    return keras.tree.map_structure(
        lambda a: keras.KerasTensor((None, *tuple(a.shape)[1:]), dtype=keras.backend.standardize_dtype(a.dtype)), v
    )


def _arrays(v: Any) -> bool:
    """An array, or a dict / list / tuple of arrays (a model with several inputs)."""
    if isinstance(v, (dict, list, tuple)):
        import keras

        leaves = keras.tree.flatten(v)
        return bool(leaves) and all(_array_like(a) for a in leaves)
    return _array_like(v)


def _array_like(v: Any) -> bool:
    return hasattr(v, "shape") and hasattr(v, "dtype") and len(getattr(v, "shape", ())) >= 1
