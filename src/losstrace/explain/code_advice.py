"""A prescription as code: the `fit` / `compile` / layer argument to change in a user's own script.

Runs recorded from a user's script (losstrace.keras) carry the pipeline's param keys, but
their author changes code, not params.yaml: `train.batch_size: 4 → 32` reads
`model.fit(..., batch_size=32)`. Used by `losstrace fix` and the summary printed when a
recorded fit ends.
"""

from __future__ import annotations

from typing import Any

CODE_ADVICE = {
    "train.batch_size": "model.fit(..., batch_size={to})",
    "train.epochs": "model.fit(..., epochs={to})",
    "train.learning_rate": "model.compile(optimizer={optimizer}(learning_rate={to}), ...)",
    "train.lr_schedule": "{schedule}",
    "train.clipnorm": "model.compile(optimizer={optimizer}(..., clipnorm={to}), ...)",
    "train.optimizer": "model.compile(optimizer={to_class}(...), ...)",
    "train.output_activation": 'the output layer: Dense(n_outputs, activation="{to}")',
    "train.loss": 'model.compile(loss="{to}", ...)',
    "train.from_logits": "model.compile(loss=keras.losses.<YourLoss>(from_logits={to_py}), ...)",
    "train.class_weight": "model.fit(..., class_weight={{c: n_rows / (n_classes * rows_of[c]) for c in classes}})",
    "train.model.dropout": "Dropout({to}) before the output layer",
    "train.model.rnn.dropout": "LSTM/GRU(..., dropout={to})",
    "train.model.rnn.recurrent_dropout": "LSTM/GRU(..., recurrent_dropout={to})",
    "train.model.rnn.cell": "{to_upper}(...) instead of the current recurrent layer",
    "train.model.embedding.mask_zero": "Embedding(..., mask_zero={to_py})",
    "data.padding": 'pad_sequences(..., padding="{to}")',
    "data.shuffle": "shuffle the rows before splitting, and model.fit(..., shuffle=True)",
    "train.shuffle": "model.fit(..., shuffle={to_py})",
    "train.callbacks.early_stopping": (
        'callbacks=[keras.callbacks.EarlyStopping(monitor="val_loss", patience=5, restore_best_weights=True)]'
    ),
    "train.callbacks.checkpoint_monitor": (
        'callbacks=[keras.callbacks.ModelCheckpoint(path, monitor="{to}", save_best_only=True)]'
    ),
    "train.callbacks.monitor": 'keras.callbacks.EarlyStopping(monitor="{to}", ...)',
}
SCHEDULES = {
    "cosine": (
        "model.compile(optimizer={optimizer}(learning_rate=keras.optimizers.schedules.CosineDecay({lr}, "
        "decay_steps=epochs * steps_per_epoch)), ...)"
    ),
    "plateau": 'callbacks=[keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5)]',
    "constant": "a plain learning_rate number in the optimizer",
}
OPTIMIZERS = {"adam": "Adam", "adamw": "AdamW", "rmsprop": "RMSprop", "sgd": "SGD"}


def code_advice(prescription: list[dict[str, Any]], params: dict[str, Any]) -> list[dict[str, Any]]:
    """Each change as the `fit` / `compile` / layer argument to change in a user's script."""
    opt = str(params.get("train.optimizer", "adam")).lower()
    lr = next((c["to"] for c in prescription if c["key"] == "train.learning_rate"), params.get("train.learning_rate"))
    out = []
    for c in prescription:
        to = c["to"]
        fields = {
            "to": to,
            "to_py": str(to).capitalize() if isinstance(to, bool) else to,
            "to_upper": str(to).upper(),
            "to_class": OPTIMIZERS.get(str(to), str(to)),
            "optimizer": f"keras.optimizers.{OPTIMIZERS.get(opt, 'Adam')}",
        }
        fields["schedule"] = SCHEDULES.get(str(to), str(to)).format(
            optimizer=fields["optimizer"], lr=lr if lr is not None else "<your learning rate>"
        )
        template = CODE_ADVICE.get(c["key"], "{key}: set the matching argument of your script to {to}")
        code = template.format(key=c["key"], **fields)
        out.append({**c, "code": code})
    return out
