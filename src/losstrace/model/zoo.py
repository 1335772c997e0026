"""Build a compiled Keras model from `train.*` params alone — no code edits per model.

Covers the models of the user reports: Embedding (learned or frozen pretrained) or
Masking → a stack of 0..n LSTM/GRU/SimpleRNN layers (optionally bidirectional; 0 = the
feed-forward baseline) → optional Conv1D → pooling → dense hidden layers → output head.

Masks: the recurrent layers get Keras' implicit mask (Embedding mask_zero / Masking), so
they skip padding and output zeros there. Keras 3's Conv1D and GlobalMaxPooling1D do not
support masks: they warn and drop them, and a max over padded steps floors every feature
at 0 (or, without a recurrent layer, lets the padding embedding win). So after the stack
the zoo applies the mask itself with keras.ops (saved with the model, no custom layer):
padded steps are zeroed, the mask is shifted through a "valid" Conv1D, and max/avg pool
over real steps only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from losstrace.errors import LosstraceError
from losstrace.model import heads
from losstrace.params import ONE_HOT_METRICS, ModelParams, RnnParams, TrainParams

CELLS = {"lstm": "LSTM", "gru": "GRU", "simple": "SimpleRNN"}


def output_units(train: TrainParams, n_classes: int, multilabel: bool) -> int:
    """The output layer's units for these params and labels (model/heads.py decides)."""
    return heads.output_units(train.output_units, train.loss, n_classes, multilabel)


def build(
    train: TrainParams,
    input_kind: str,
    max_len: int,
    channels: int,
    vocab_size: int,
    n_classes: int,
    multilabel: bool,
    steps_per_epoch: int,
    vocab: list[str] | None = None,
):
    import keras
    from keras import layers

    m = train.model
    if input_kind == "numeric":
        inputs = keras.Input(shape=(max_len, channels), dtype="float32", name="x")
        # Post-padded steps are all-zero after standardisation: mask them so the
        # recurrent state is not overwritten by padding (and cuDNN stays eligible).
        h = layers.Masking(mask_value=0.0, name="mask")(inputs)
    else:
        inputs = keras.Input(shape=(max_len,), dtype="int32", name="x")
        h = _embedding(train, vocab_size, vocab)(inputs)

    h = _recurrent_stack(m.rnn, h, sequence_out=m.pooling != "last")
    if m.pooling != "last":
        h = _sequence_head(m, h, step_mask(inputs, input_kind, m.embedding.mask_zero), max_len)
    if m.dropout > 0:
        h = layers.Dropout(m.dropout, name="dropout")(h)
    for j, dense in enumerate(m.dense):
        reg = keras.regularizers.L2(dense.l2) if dense.l2 > 0 else None
        act = dense.activation or None
        h = layers.Dense(dense.units, activation=act, kernel_regularizer=reg, name=f"dense_{j}")(h)
    units = output_units(train, n_classes, multilabel)
    out_act = None if train.output_activation == "linear" else train.output_activation
    outputs = layers.Dense(units, activation=out_act, name="output", dtype="float32")(h)

    name = f"{m.rnn.cell}_classifier" if m.rnn.layers else "feedforward_classifier"
    model = keras.Model(inputs, outputs, name=name)
    compile_model(model, train, steps_per_epoch, units, multilabel)
    return model


def compile_model(model, train: TrainParams, steps_per_epoch: int, units: int, multilabel: bool) -> None:
    """train.optimizer / learning_rate / loss / metrics onto a built model (the zoo's or a builder's)."""
    model.compile(
        optimizer=optimizer(train, steps_per_epoch), loss=_loss(train), metrics=_metrics(train, units, multilabel)
    )


def _recurrent_stack(rnn: RnnParams, h, sequence_out: bool):
    """rnn.layers recurrent layers; inner ones always return sequences, the last one when
    asked to or when pooling/Conv1D follow. 0 layers leaves `h` as it is."""
    from keras import layers

    for i in range(rnn.layers):
        last = i == rnn.layers - 1
        cell = getattr(layers, CELLS[rnn.cell])
        kwargs = dict(
            units=rnn.units,
            return_sequences=(not last) or rnn.return_sequences or sequence_out,
            dropout=rnn.dropout,
            recurrent_dropout=rnn.recurrent_dropout,
            activation=rnn.activation,
            use_bias=rnn.use_bias,
            unroll=rnn.unroll,
        )
        if rnn.cell != "simple":
            kwargs["recurrent_activation"] = rnn.recurrent_activation
        if rnn.cell == "gru":
            kwargs["reset_after"] = rnn.reset_after
        layer = cell(**kwargs, name=f"{rnn.cell}_{i}")
        h = layers.Bidirectional(layer, name=f"bi_{rnn.cell}_{i}")(h) if rnn.bidirectional else layer(h)
    return h


def step_mask(inputs, input_kind: str, mask_zero: bool):
    """(batch, steps) bool, True on real steps; None when padding is deliberately unmasked.

    Derived from the inputs exactly as Masking / Embedding(mask_zero) derive theirs.
    """
    from keras import ops

    if input_kind == "numeric":
        return ops.any(ops.not_equal(inputs, 0.0), axis=-1)
    return ops.not_equal(inputs, 0) if mask_zero else None


def _sequence_head(m: ModelParams, h, mask, max_len: int):
    """Optional Conv1D, then pooling over real steps: (batch, steps, f) → (batch, f')."""
    from keras import layers, ops

    if mask is not None:
        # An op, not a layer: it consumes Keras' implicit mask, so Conv1D and the
        # pooling below never see (and warn about dropping) it; the explicit mask rules.
        h = ops.where(ops.expand_dims(mask, -1), h, 0.0)
    if m.conv.filters > 0:
        k = m.conv.kernel_size
        if max_len < k:
            raise LosstraceError(
                "params.yaml",
                f"train.model.conv.kernel_size={k} is longer than the sequences ({max_len} steps)",
                f"set data.max_len: {k} or more (pads short sequences), or lower train.model.conv.kernel_size",
            )
        h = layers.Conv1D(m.conv.filters, k, padding="valid", name="conv")(h)
        if mask is not None:
            # Window j covers steps j..j+k-1: it is real when it covers any real step,
            # so every non-empty sequence keeps at least one window. Post-padded, that is
            # a window starting on a real step; pre-padded, one ending on a real step.
            width = max_len - k + 1
            covered = mask[:, :width]
            for i in range(1, k):
                covered = ops.logical_or(covered, mask[:, i : i + width])
            mask = covered
    return _pool(m.pooling, h, mask)


def _embedding(train: TrainParams, vocab_size: int, vocab: list[str] | None):
    import keras
    from keras import layers

    e = train.model.embedding
    if not e.pretrained:
        return layers.Embedding(vocab_size, e.dim, mask_zero=e.mask_zero, name="embedding")
    matrix = load_vectors(Path(e.pretrained), vocab or [], e.dim)
    return layers.Embedding(
        vocab_size,
        matrix.shape[1],
        mask_zero=e.mask_zero,
        trainable=e.trainable,
        embeddings_initializer=keras.initializers.Constant(matrix),
        name="embedding",
    )


def load_vectors(path: Path, vocab: list[str], dim: int) -> np.ndarray:
    """word2vec/GloVe text vectors → an embedding matrix aligned with the vocabulary.

    Row 0 (padding) and 1 (OOV) and words missing from the file stay zero.
    """
    if not path.exists():
        raise LosstraceError(str(path), "pretrained vectors file not found", "fix train.model.embedding.pretrained")
    wanted = {w: i + 2 for i, w in enumerate(vocab)}
    matrix: np.ndarray | None = None
    with open(path, encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, 1):
            parts = line.rstrip().split(" ")
            if lineno == 1 and len(parts) == 2 and all(p.isdigit() for p in parts):
                continue  # word2vec header: "<count> <dim>"
            if len(parts) < 2:
                continue
            if matrix is None:
                matrix = np.zeros((len(vocab) + 2, len(parts) - 1), dtype=np.float32)
            if parts[0] in wanted:
                try:
                    matrix[wanted[parts[0]]] = np.asarray(parts[1:], dtype=np.float32)
                except ValueError:
                    raise LosstraceError(
                        f"{path}:{lineno}", "not a vector of numbers of the file's width", "fix the vectors file"
                    ) from None
    if matrix is None:
        raise LosstraceError(str(path), "no vectors in file", "use a word2vec/GloVe text file")
    return matrix


def _pool(kind: str, h, mask):
    """max | avg | avg_max over time; over real steps only when there is a mask."""
    from keras import layers

    if kind == "max":
        return _max_pool(h, mask)
    if kind == "avg":
        return _avg_pool(h, mask)
    return layers.Concatenate(name="avg_max")([_avg_pool(h, mask), _max_pool(h, mask)])


def _avg_pool(h, mask):
    from keras import layers, ops

    if mask is None:
        return layers.GlobalAveragePooling1D(name="avg_pool")(h)
    # Not GlobalAveragePooling1D(mask=...): it divides by zero (NaN loss) on a row with
    # no real step, e.g. a text that was only punctuation.
    weights = ops.cast(ops.expand_dims(mask, -1), h.dtype)
    return ops.sum(h * weights, axis=1) / ops.maximum(ops.sum(weights, axis=1), 1.0)


def _max_pool(h, mask):
    from keras import layers, ops

    if mask is None:
        return layers.GlobalMaxPooling1D(name="max_pool")(h)
    # Keras 3's GlobalMaxPooling1D ignores masks: push padded steps far below any
    # activation first. A row with no real step at all (an empty text) gets 0, not -1e9.
    pooled = ops.max(ops.where(ops.expand_dims(mask, -1), h, -1e9), axis=1)
    return ops.where(ops.any(mask, axis=1, keepdims=True), pooled, 0.0)


def optimizer(train: TrainParams, steps_per_epoch: int):
    import keras

    lr = train.learning_rate
    if train.lr_schedule == "cosine":
        lr = keras.optimizers.schedules.CosineDecay(lr, decay_steps=max(train.epochs * steps_per_epoch, 1))
    kwargs = {"learning_rate": lr}
    if train.clipnorm > 0:
        kwargs["clipnorm"] = train.clipnorm
    if train.optimizer == "sgd":
        return keras.optimizers.SGD(momentum=train.momentum, nesterov=train.nesterov, **kwargs)
    cls = {"adam": keras.optimizers.Adam, "rmsprop": keras.optimizers.RMSprop, "adamw": keras.optimizers.AdamW}
    return cls[train.optimizer](**kwargs)


def _loss(train: TrainParams):
    import keras

    cls = {
        "sparse_categorical_crossentropy": keras.losses.SparseCategoricalCrossentropy,
        "categorical_crossentropy": keras.losses.CategoricalCrossentropy,
        "binary_crossentropy": keras.losses.BinaryCrossentropy,
    }[train.loss]
    return cls(from_logits=train.from_logits)


def _metrics(train: TrainParams, units: int, multilabel: bool = False) -> list:
    import keras

    out: list = []
    for name in train.metrics:
        if name in ONE_HOT_METRICS and train.loss == "sparse_categorical_crossentropy":
            # Keras' AUC/Precision/Recall compare labels and outputs element by element;
            # integer ids fail at fit with a shape error deep inside the metric.
            raise LosstraceError(
                "params.yaml",
                f"train.metrics: {name} needs one-hot labels, but "
                "sparse_categorical_crossentropy trains on integer class ids",
                "set train.loss: categorical_crossentropy (same loss, one-hot labels) "
                f"or remove {name} from train.metrics",
            )
        # Thresholded metrics decide at 0.5 on probabilities, at 0 on logits (a linear head).
        threshold = 0.0 if train.from_logits else 0.5
        if name == "accuracy" and (multilabel and units > 1 or units == 1 and train.from_logits):
            # Keras resolves "accuracy" by output shape, not loss: several units mean
            # argmax (categorical) accuracy, meaningless on multi-hot labels, and one unit
            # means a 0.5 threshold, wrong on logits. Score each yes/no against the threshold.
            out.append(keras.metrics.BinaryAccuracy(name="accuracy", threshold=threshold))
        elif name == "accuracy":
            out.append("accuracy")  # argmax over several units: the same on logits
        elif name == "auc":
            out.append(
                keras.metrics.AUC(
                    name="auc",
                    multi_label=units > 1 and train.loss == "binary_crossentropy",
                    from_logits=train.from_logits,
                )
            )
        elif name == "precision":
            out.append(keras.metrics.Precision(name="precision", thresholds=threshold))
        elif name == "recall":
            out.append(keras.metrics.Recall(name="recall", thresholds=threshold))
        else:
            raise LosstraceError(
                "params.yaml", f"unknown metric {name!r} in train.metrics", "use accuracy, auc, precision or recall"
            )
    return out
