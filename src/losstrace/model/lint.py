"""Pre-flight checks of params.yaml against the data, before anything is built.

The classic configuration mistakes of the user reports are caught in a second
instead of after 200 epochs. Pure Python: no TensorFlow import, so
`losstrace lint` is instant. Errors stop the train stage; warnings are recorded.
"""

from __future__ import annotations

import math
from typing import Any

from losstrace.findings import Finding
from losstrace.model import heads
from losstrace.params import ONE_HOT_METRICS, CallbackParams, Params, RnnParams, TrainParams

# Usual learning-rate ranges; outside them plateaus (low) or jitter (high) are common.
LR_RANGES = {"adam": (2e-4, 5e-3), "adamw": (2e-4, 5e-3), "rmsprop": (2e-4, 5e-3), "sgd": (1e-3, 0.5)}
MIN_UPDATES = 100  # fewer optimizer steps in all rarely converge from a random init


def _f(code: str, severity: str, message: str, keys: list[str], suggestion: str, **evidence: Any) -> Finding:
    return Finding(code, severity, {"message": message, "keys": keys, **evidence}, suggestion)


def run(p: Params, info: dict[str, Any], labels: dict[str, int]) -> list[Finding]:
    n_classes = len(labels)
    multilabel = bool(info.get("multilabel", False))
    train_rows = int(info.get("splits", {}).get("train", 0))
    findings = head_checks(p, n_classes, multilabel)
    findings += padding_checks(p, info.get("input", "numeric"))
    findings += cudnn_checks(p.train.model.rnn)
    findings += schedule_checks(p, train_rows)
    findings += monitor_checks(p)
    return findings


def head_checks(p: Params, n_classes: int, multilabel: bool) -> list[Finding]:
    """activation_loss_mismatch: output activation, loss and label format must agree (model/heads.py),
    metrics must read labels in the shape the loss gives them, hidden dense layers need an activation."""
    t = p.train
    evidence = {
        "output_activation": t.output_activation,
        "loss": t.loss,
        "n_classes": n_classes,
        "multilabel": multilabel,
    }
    keys = ["train.output_activation", "train.loss"]
    problems = heads.head_problems(t.output_activation, t.loss, n_classes, multilabel, t.from_logits, t.output_units)
    out = [
        _f(
            "activation_loss_mismatch",
            "error",
            x.message,
            keys + list(x.keys),
            f"{x.fix} {x.note}" if x.note else x.fix,
            **evidence,
        )
        for x in problems
    ]
    out += [_f("activation_loss_mismatch", "error", *found, **evidence) for found in _metric_label_checks(t)]
    return out + _dense_activation_checks(t)


def _metric_label_checks(t: TrainParams) -> list[tuple[str, list[str], str]]:
    """(message, keys, suggestion) for metrics that need one-hot labels under a loss on integer ids."""
    one_hot_only = [name for name in t.metrics if name in ONE_HOT_METRICS]
    if not one_hot_only or t.loss != "sparse_categorical_crossentropy":
        return []
    # Keras' AUC/Precision/Recall compare labels and outputs element-wise; with integer
    # ids they fail at the first batch with a shape error.
    names = ", ".join(one_hot_only)
    return [
        (
            f"{names} need one-hot labels shaped like the output, but {t.loss} trains on integer class ids",
            ["train.output_activation", "train.loss", "train.metrics"],
            f"train.loss: {t.loss} → categorical_crossentropy (same loss, one-hot labels), "
            f"or drop {names} from train.metrics",
        )
    ]


def _dense_activation_checks(t: TrainParams) -> list[Finding]:
    """Every hidden dense layer feeds another dense layer (at least the output), so one
    without an activation is a wasted linear map."""
    return [
        _f(
            "activation_loss_mismatch",
            "warning",
            f"hidden dense layer {i} has no activation, so it collapses into the next layer",
            [f"train.model.dense[{i}].activation"],
            f"train.model.dense[{i}].activation: '' → relu",
            layer=f"dense_{i}",
        )
        for i, dense in enumerate(t.model.dense)
        if dense.activation in ("", "linear")
    ]


def padding_checks(p: Params, input_kind: str) -> list[Finding]:
    """unmasked_padding: a final state read after post-padding with no mask is mostly padding."""
    m = p.train.model
    if m.rnn.layers == 0:
        return []  # no recurrent final state: the embedding is pooled over its steps
    reads_final_state = m.pooling == "last" and not m.rnn.return_sequences and m.conv.filters == 0
    # Pre-padded (data.padding: pre), the real steps come last: the final state reads them.
    post = p.data.padding == "post"
    if input_kind in ("text", "tokens") and not m.embedding.mask_zero and reads_final_state and post:
        return [
            _f(
                "unmasked_padding",
                "warning",
                f"the last {m.rnn.cell.upper()} layer returns its final state, but sequences are post-padded and "
                "the embedding has no mask: the state mostly reflects padding (a GRU stuck at loss 0.693 on the "
                "UCI sentences learns at once with the mask)",
                ["train.model.embedding.mask_zero"],
                "train.model.embedding.mask_zero: false → true",
            )
        ]
    return []


def cudnn_checks(rnn: RnnParams) -> list[Finding]:
    """cudnn_ineligible: settings that force Keras' generic kernel, several times slower on a GPU."""
    if rnn.layers == 0:
        return []  # the feed-forward baseline has no recurrent kernel to choose
    reasons = []
    if rnn.cell == "simple":
        reasons.append(("train.model.rnn.cell", "SimpleRNN has no cuDNN kernel", "simple → gru"))
    if rnn.recurrent_dropout > 0:
        reasons.append(
            (
                "train.model.rnn.recurrent_dropout",
                f"recurrent_dropout={rnn.recurrent_dropout:g} > 0",
                f"{rnn.recurrent_dropout:g} → 0 (use train.model.rnn.dropout instead)",
            )
        )
    if rnn.activation != "tanh":
        reasons.append(("train.model.rnn.activation", f"activation={rnn.activation}", f"{rnn.activation} → tanh"))
    if rnn.cell != "simple" and rnn.recurrent_activation != "sigmoid":
        reasons.append(
            (
                "train.model.rnn.recurrent_activation",
                f"recurrent_activation={rnn.recurrent_activation}",
                f"{rnn.recurrent_activation} → sigmoid",
            )
        )
    if rnn.unroll:
        reasons.append(("train.model.rnn.unroll", "unroll=true", "true → false"))
    if not rnn.use_bias:
        reasons.append(("train.model.rnn.use_bias", "use_bias=false", "false → true"))
    if rnn.cell == "gru" and not rnn.reset_after:
        reasons.append(("train.model.rnn.reset_after", "reset_after=false", "false → true"))
    out = []
    for key, why, change in reasons:
        layers = [f"{'bi_' if rnn.bidirectional else ''}{rnn.cell}_{i}" for i in range(rnn.layers)]
        out.append(
            _f(
                "cudnn_ineligible",
                "warning",
                f"{why} rules out the cuDNN kernel for {', '.join(layers)}: on a GPU expect roughly 3-10x "
                "slower recurrent steps (no effect on CPU)",
                [key],
                f"{key}: {change}",
                layers=layers,
            )
        )
    return out


def schedule_checks(p: Params, train_rows: int) -> list[Finding]:
    t = p.train
    out = []
    low, high = LR_RANGES[t.optimizer]
    if not low <= t.learning_rate <= high:
        side = (
            "low: expect a long plateau before the loss moves"
            if t.learning_rate < low
            else "high: expect a jittering or diverging loss"
        )
        target = low * 5 if t.learning_rate < low else high / 5
        out.append(
            _f(
                "learning_rate_range",
                "warning",
                f"learning rate {t.learning_rate:g} is outside the usual {low:g}-{high:g} for {t.optimizer}; {side}",
                ["train.learning_rate"],
                f"train.learning_rate: {t.learning_rate:g} → {target:g}",
                learning_rate=t.learning_rate,
                usual_range=[low, high],
            )
        )
    if train_rows:
        share = t.batch_size / train_rows
        if t.batch_size < 8 or share < 0.005:
            target = max(32, int(2 ** round(math.log2(max(train_rows * 0.01, 8)))))
            target = min(target, train_rows)
            out.append(
                _f(
                    "small_batch",
                    "warning",
                    f"batch size {t.batch_size} is {share:.2%} of {train_rows} training rows: gradient noise "
                    "will make the loss shake",
                    ["train.batch_size"],
                    f"train.batch_size: {t.batch_size} → {target}",
                    batch_size=t.batch_size,
                    share_of_train=round(share, 6),
                    thresholds={"min_batch": 8, "min_share": 0.005},
                )
            )
        updates = t.epochs * -(-train_rows // t.batch_size)
        if updates < MIN_UPDATES:
            out.append(
                _f(
                    "too_few_updates",
                    "info",
                    f"{t.epochs} epochs x {-(-train_rows // t.batch_size)} steps = {updates} updates; "
                    f"fewer than {MIN_UPDATES} rarely converge",
                    ["train.epochs"],
                    f"train.epochs: {t.epochs} → {t.epochs * -(-MIN_UPDATES // updates)}",
                    updates=updates,
                )
            )
    return out


def monitor_checks(p: Params) -> list[Finding]:
    return callback_checks(p.train.callbacks)


def callback_checks(cb: CallbackParams) -> list[Finding]:
    """Early stopping or the kept-weights monitor watching a training metric."""
    out = []
    for key, monitor, active in (
        ("train.callbacks.monitor", cb.monitor, cb.early_stopping),
        ("train.callbacks.checkpoint_monitor", cb.checkpoint_monitor, bool(cb.checkpoint_monitor)),
    ):
        if active and not monitor.startswith("val_"):
            out.append(
                _f(
                    "monitors_training_metric",
                    "warning",
                    f"{key}={monitor} watches a training metric, which keeps improving while the model overfits",
                    [key],
                    f"{key}: {monitor} → val_loss",
                )
            )
    return out
