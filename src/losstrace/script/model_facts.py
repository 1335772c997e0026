"""A user's compiled Keras model and fit arguments, read as the pipeline's params.

The keys are the pipeline's own (`train.batch_size`, `train.learning_rate`,
`train.model.rnn.recurrent_dropout`, ...) wherever the meaning is the same, so
`diff` ranks causes between two script runs, or a script run and a pipeline run, by
the same mechanisms. What the pipeline has no key for is kept under `model.*` and
`optimizer.*` (a layer summary, parameter count, every optimizer setting).
"""

from __future__ import annotations

import collections.abc
import dataclasses
import re
from typing import Any

from losstrace import params as params_mod
from losstrace.errors import LosstraceError
from losstrace.model.model_lint import leaf_layers
from losstrace.params import CallbackParams, Params

# Keras optimizer classes → train.optimizer values the diagnosis knows (others keep their name).
OPTIMIZERS = {"Adam": "adam", "AdamW": "adamw", "RMSprop": "rmsprop", "SGD": "sgd"}
RECURRENT = ("LSTM", "GRU", "SimpleRNN")


@dataclasses.dataclass
class FitArgs:
    """What fit was called with, as far as a script run records it."""

    batch_size: int | None
    epochs: int
    shuffle: Any
    class_weight: Any
    validation: str  # none | validation_data | validation_split | dataset
    callbacks: tuple = ()  # the user's own callbacks given to fit (ours left out)


def applied_shuffle(x: Any, shuffle: Any) -> Any:
    """fit's `shuffle` as Keras applies it. Keras ignores it for a `tf.data.Dataset`, a Python
    generator and a torch `DataLoader` (their own order stands), so such a run records
    "by the input" rather than a shuffle that never happened."""
    is_tf_dataset = hasattr(x, "element_spec")  # as Keras' own data adapters tell a dataset
    is_iterator = isinstance(x, collections.abc.Iterator) and not hasattr(x, "shape")
    is_torch_loader = type(x).__module__.startswith("torch.utils.data")
    return "by the input" if is_tf_dataset or is_iterator or is_torch_loader else shuffle


def learning_rate(model) -> float | None:
    """The optimizer's learning rate; with a schedule, the schedule's first (as the pipeline's
    `train.learning_rate` is the cosine schedule's start)."""
    import keras

    schedule = lr_schedule(model)
    lr = schedule(0) if schedule is not None else getattr(_inner(model), "learning_rate", None)
    if lr is None:
        return None
    try:
        return params_mod.float32_shortest(float(keras.ops.convert_to_numpy(lr)))
    except Exception:
        return None


def lr_schedule(model):
    """The `keras.optimizers.schedules.LearningRateSchedule` the optimizer was given, or None."""
    import keras

    lr = getattr(_inner(model), "_learning_rate", None)  # the optimizer's own slot: the property evaluates it
    return lr if isinstance(lr, keras.optimizers.schedules.LearningRateSchedule) else None


def _inner(model):
    opt = getattr(model, "optimizer", None)
    while hasattr(opt, "inner_optimizer"):  # LossScaleOptimizer
        opt = opt.inner_optimizer
    return opt


def _optimizer(model) -> tuple[str, dict[str, Any]]:
    opt = _inner(model)
    name = type(opt).__name__
    settings: dict[str, Any] = {}
    try:
        config = opt.get_config()
    except Exception:
        config = {}
    for key, value in sorted(config.items()):
        if key not in ("name", "learning_rate") and isinstance(value, (int, float, bool, str)) and value is not None:
            settings[f"optimizer.{key}"] = value
    return OPTIMIZERS.get(name, name.lower()), settings


def _layer_summary(model) -> str:
    """`Embedding(5000,64,mask) > LSTM(64) > Dense(10,softmax)`: what a person compares first."""
    parts = []
    for layer in leaf_layers(model):
        kind = type(layer).__name__
        if kind == "InputLayer":
            continue
        inner = getattr(layer, "forward_layer", None) or layer
        bits = []
        for attr in ("input_dim", "units", "filters", "rate"):
            if getattr(inner, attr, None) is not None:
                bits.append(
                    f"{getattr(inner, attr):g}"
                    if isinstance(getattr(inner, attr), float)
                    else str(getattr(inner, attr))
                )
        act = getattr(getattr(inner, "activation", None), "__name__", None)
        if act and act not in ("linear", "tanh") and kind not in RECURRENT:
            bits.append(act)
        if getattr(inner, "mask_zero", False):
            bits.append("mask")
        label = f"Bidirectional({type(inner).__name__})" if inner is not layer else kind
        parts.append(f"{label}({','.join(bits)})" if bits else label)
    return " > ".join(parts)


def _recurrent(model) -> tuple[Any, Any, int]:
    """(first recurrent layer, its Bidirectional wrapper or None, how many recurrent layers)."""
    found = []
    for layer in leaf_layers(model):
        inner = getattr(layer, "forward_layer", None)
        if inner is not None and type(inner).__name__ in RECURRENT:
            found.append((inner, layer))
        elif type(layer).__name__ in RECURRENT:
            found.append((layer, None))
    return (*found[0], len(found)) if found else (None, None, 0)


def model_params(model, fit: FitArgs, loss_name: str | None, output_activation: str) -> dict[str, Any]:
    """Flat params of a script run, under the pipeline's keys where they mean the same."""
    optimizer, settings = _optimizer(model)
    flat: dict[str, Any] = {
        "train.batch_size": fit.batch_size if fit.batch_size is not None else "",
        "train.epochs": fit.epochs,
        "train.shuffle": fit.shuffle if isinstance(fit.shuffle, bool) else str(fit.shuffle),
        "train.optimizer": optimizer,
        "train.learning_rate": learning_rate(model) if learning_rate(model) is not None else "",
        "train.clipnorm": settings.get("optimizer.clipnorm") or 0.0,
        "train.loss": loss_name or loss_label(model),
        "train.output_activation": output_activation,
        "train.class_weight": "none" if not fit.class_weight else "custom",
        "train.validation": fit.validation,
        "model.layers": _layer_summary(model),
        "model.params": int(model.count_params()) if model.built else "",
        "model.name": model.name,
        **settings,
    }
    layer, wrapper, count = _recurrent(model)
    if layer is not None:
        flat.update(
            {
                "train.model.rnn.cell": type(layer).__name__.lower().replace("simplernn", "simple"),
                "train.model.rnn.units": int(getattr(layer, "units", 0)),
                "train.model.rnn.layers": count,
                "train.model.rnn.bidirectional": wrapper is not None,
                "train.model.rnn.dropout": float(getattr(layer, "dropout", 0.0)),
                "train.model.rnn.recurrent_dropout": float(getattr(layer, "recurrent_dropout", 0.0)),
            }
        )
    embedding = next((lyr for lyr in leaf_layers(model) if type(lyr).__name__ == "Embedding"), None)
    if embedding is not None:
        flat["train.model.embedding.mask_zero"] = bool(getattr(embedding, "mask_zero", False))
        flat["train.model.embedding.dim"] = int(getattr(embedding, "output_dim", 0))
    dropouts = [float(lyr.rate) for lyr in leaf_layers(model) if type(lyr).__name__ == "Dropout"]
    flat["train.model.dropout"] = dropouts[-1] if dropouts else 0.0
    flat.update(callback_params(fit.callbacks))
    flat.update(lr_schedule_params(lr_schedule(model), fit.callbacks))
    return flat


# What a monitoring callback was told, recorded as fit.callbacks.<class>.<setting>.
MONITOR_SETTINGS = ("monitor", "mode", "save_best_only", "restore_best_weights", "patience", "min_delta")


def callback_params(callbacks) -> dict[str, Any]:
    """The user's callbacks: every monitoring callback's settings under `fit.callbacks.*`, and
    what they mean under the pipeline's keys. `train.callbacks.checkpoint_monitor` is what
    picks the weights the user keeps: a best-only ModelCheckpoint's monitor (the file
    saved), else a restoring EarlyStopping's (Keras restores its best epoch at the end)."""
    flat: dict[str, Any] = {"fit.callbacks": ",".join(type(c).__name__ for c in callbacks) or "none"}
    early = checkpoint = restoring = None
    for cb in callbacks:
        kind = type(cb).__name__
        if not hasattr(cb, "monitor"):
            continue
        for setting in MONITOR_SETTINGS:
            value = getattr(cb, setting, None)
            if isinstance(value, (str, int, float, bool)):
                flat[f"fit.callbacks.{kind}.{setting}"] = abs(value) if setting == "min_delta" else value
        if kind == "EarlyStopping" and early is None:
            early = cb
            restoring = cb if getattr(cb, "restore_best_weights", False) else None
        elif kind == "ModelCheckpoint" and getattr(cb, "save_best_only", False) and checkpoint is None:
            checkpoint = cb
    flat["train.callbacks.early_stopping"] = early is not None
    if early is not None:
        flat["train.callbacks.monitor"] = str(early.monitor)
        flat["train.callbacks.patience"] = int(early.patience)
    keeper = checkpoint or restoring
    flat["train.callbacks.checkpoint_monitor"] = str(keeper.monitor) if keeper is not None else ""
    return flat


# Keras' learning-rate schedules and callbacks → train.lr_schedule values the pipeline has
# (its cosine is CosineDecay, its plateau ReduceLROnPlateau); others: the class name, snake-cased.
SCHEDULES = {"CosineDecay": "cosine", "ReduceLROnPlateau": "plateau", "LearningRateScheduler": "scheduler"}
# What each schedule callback was told; the schedule objects' own come from their config.
SCHEDULE_CALLBACK_SETTINGS = {
    "ReduceLROnPlateau": ("monitor", "mode", "factor", "patience", "min_delta", "min_lr", "cooldown"),
    "LearningRateScheduler": ("schedule",),
}


def lr_schedule_params(schedule, callbacks) -> dict[str, Any]:
    """`train.lr_schedule` (`constant` without one; several joined by `+`) and each schedule's
    settings under `lr_schedule.<setting>` (its start is `train.learning_rate`)."""
    names: list[str] = []
    flat: dict[str, Any] = {}
    if schedule is not None:
        names.append(_schedule_name(type(schedule).__name__))
        try:
            config = schedule.get_config()
        except Exception:  # a user's schedule without a config: its class is what is known
            config = {}
        for key, value in sorted(config.items()):
            if key not in ("name", "initial_learning_rate") and isinstance(value, (int, float, bool, str)):
                flat[f"lr_schedule.{key}"] = value
            elif isinstance(value, (list, tuple)) and all(isinstance(v, (int, float)) for v in value):
                flat[f"lr_schedule.{key}"] = ",".join(f"{v:g}" for v in value)  # boundaries, values
    for cb in callbacks:
        kind = _schedule_callback(cb)
        if kind is None:
            continue
        names.append(_schedule_name(kind))
        for setting in SCHEDULE_CALLBACK_SETTINGS[kind]:
            value = getattr(cb, setting, None)
            if callable(value):  # LearningRateScheduler's function: its name
                value = getattr(value, "__name__", None) or type(value).__name__
            if isinstance(value, (str, int, float, bool)):
                flat[f"lr_schedule.{setting}"] = abs(value) if setting == "min_delta" else value
    return {"train.lr_schedule": "+".join(names) or "constant", **flat}


def _schedule_callback(cb) -> str | None:
    """The Keras schedule callback `cb` is (a subclass of your own included), or None."""
    import keras

    return next((k for k in SCHEDULE_CALLBACK_SETTINGS if isinstance(cb, getattr(keras.callbacks, k))), None)


def _schedule_name(kind: str) -> str:
    return SCHEDULES.get(kind) or re.sub(r"(?<!^)(?=[A-Z])", "_", kind).lower()


def callback_settings(flat: dict[str, Any]) -> CallbackParams:
    """The pipeline's callback params of a script run, for the monitor lint."""
    return CallbackParams(
        early_stopping=bool(flat.get("train.callbacks.early_stopping")),
        monitor=str(flat.get("train.callbacks.monitor", "val_loss")),
        patience=max(int(flat.get("train.callbacks.patience", 5)), 0),
        checkpoint_monitor=str(flat.get("train.callbacks.checkpoint_monitor", "")),
    )


def loss_label(model) -> str:
    """The compiled loss's own name: as given (`"mse"`), a loss object's name, a function's name."""
    loss = getattr(model, "loss", None)
    if isinstance(loss, str):
        return loss
    return getattr(loss, "name", None) or getattr(loss, "__name__", None) or type(loss).__name__


def as_params(flat: dict[str, Any], n_classes: int, multilabel: bool) -> Params:
    """The pipeline Params closest to the script's settings, for the lint and diagnosis rules.

    A setting the pipeline cannot express (another optimizer, a custom loss) keeps the
    default for that key: the rules that read it then say nothing wrong about it."""
    p = Params()
    train = {}
    for key, field in (
        ("train.batch_size", "batch_size"),
        ("train.epochs", "epochs"),
        ("train.optimizer", "optimizer"),
        ("train.learning_rate", "learning_rate"),
        ("train.loss", "loss"),
        ("train.output_activation", "output_activation"),
        ("train.clipnorm", "clipnorm"),
    ):
        value = flat.get(key)
        if value in ("", None):
            continue
        try:
            candidate = dataclasses.replace(p.train, **{field: value})
        except (LosstraceError, TypeError, ValueError):
            continue
        train[field] = getattr(candidate, field)
    train["output_units"] = 0 if n_classes <= 2 and not multilabel else n_classes
    try:
        return dataclasses.replace(p, train=dataclasses.replace(p.train, **train))
    except (LosstraceError, TypeError, ValueError):
        return p


def diagnose_params_flat() -> dict[str, Any]:
    """The diagnosis thresholds a script run is judged by (the shipped defaults)."""
    return params_mod.flatten(Params().diagnose, "diagnose.")
