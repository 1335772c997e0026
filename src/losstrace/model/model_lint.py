"""Lint a built Keras model (a builder's), from its layers rather than from params.

The same findings as the params lint (model/lint.py), read off the model itself:
- activation_loss_mismatch: the actual output layer's activation and units against the
  loss and the labels, through the params lint's own head rules;
- cudnn_ineligible: each LSTM/GRU layer's settings against cuDNN's conditions, and a mask
  over pre-padded input (cuDNN needs masks strictly right-padded), SimpleRNN always;
- unmasked_padding: a recurrent layer returning its final state whose input carries no
  mask, when sequences are post-padded (pre-padded, the real steps come last).
Imports Keras: only the train stage calls it, on the model it is about to fit.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from losstrace.findings import Finding
from losstrace.model import builder as builder_mod
from losstrace.model import lint
from losstrace.params import Params

CUDNN_CELLS = ("LSTM", "GRU")
# Settings cuDNN needs, per layer attribute (Keras' LSTM/GRU docstrings list them).
CUDNN_NEEDS = {"activation": "tanh", "recurrent_activation": "sigmoid", "unroll": False, "use_bias": True}


def run(model, spec: builder_mod.InputSpec, p: Params, output=None) -> list[Finding]:
    """output: (the op making the model's output, its width) when the model has no
    `outputs` (a subclassed model's traced call); None there skips the head checks."""
    findings = head_checks(model, spec, p, output)
    for layer, wrapper in recurrent_layers(model):
        findings += cudnn_checks(layer, wrapper, spec)
        findings += padding_checks(model, layer, wrapper, spec)
    return findings


def params_lint(p: Params, info: dict[str, Any], labels: dict[str, int]) -> list[Finding]:
    """Before the model exists: the whole params lint for the zoo; for a builder only the
    checks that do not describe a zoo model (learning rate, batch, epochs, monitors)."""
    if not p.train.model.builder:
        return lint.run(p, info, labels)
    train_rows = int(info.get("splits", {}).get("train", 0))
    return lint.schedule_checks(p, train_rows) + lint.monitor_checks(p)


# Output operations that are an activation themselves (keras.ops.softmax(...), layers.Softmax)
# and so carry no `activation` attribute.
ACTIVATION_OPS = {"Softmax": "softmax", "Sigmoid": "sigmoid", "LogSoftmax": "log_softmax"}


def activation_name(layer) -> str:
    if type(layer).__name__ in ACTIVATION_OPS:
        return ACTIVATION_OPS[type(layer).__name__]
    fn = getattr(layer, "activation", None)
    return getattr(fn, "__name__", str(fn)) if fn is not None else "linear"


def output_layer(model):
    return model.outputs[0]._keras_history.operation


def head_checks(model, spec: builder_mod.InputSpec, p: Params, output=None) -> list[Finding]:
    """The params lint's head rules on what the model really ends with.

    output: (op, units) of a model without `outputs`; None there: nothing to check."""
    if output is None and not has_outputs(model):
        return []
    out, units = output if output is not None else (output_layer(model), int(model.outputs[0].shape[-1]))
    if out is None or units is None:
        return []
    act = activation_name(out)
    loss_obj = getattr(model, "loss", None)
    compiled = builder_mod.compiled_loss_name(model)
    if compiled is None and loss_obj is not None:
        return []  # a loss the head rules do not know (mse, a custom one): nothing to check it against
    loss = compiled or p.train.loss
    from_logits = bool(getattr(loss_obj, "from_logits", p.train.from_logits))
    if act not in ("softmax", "sigmoid", "linear"):
        return []  # the rules know these three output activations
    train = dataclasses.replace(
        p.train,
        output_activation=act,
        loss=loss,
        from_logits=from_logits,
        output_units=units,
        model=dataclasses.replace(p.train.model, dense=()),
    )
    found = lint.head_checks(dataclasses.replace(p, train=train), spec.n_classes, spec.multilabel)
    return [_about_layer(f, out.name) for f in found]


def has_outputs(model) -> bool:
    """Whether the model carries its graph (`model.outputs`): functional or a built Sequential."""
    try:
        return bool(model.outputs)
    except (AttributeError, ValueError):
        return False


def _about_layer(f: Finding, layer: str) -> Finding:
    """Point a head finding at the builder's output layer instead of train.* keys it did not use."""
    evidence = {**f.evidence, "layer": layer}
    suggestion = f.suggestion.replace("train.output_activation", f"the activation of layer {layer}")
    suggestion = suggestion.replace("train.output_units", f"the units of layer {layer}")
    return Finding(f.code, f.severity, evidence, suggestion, f.where)


def leaf_layers(model) -> list:
    """`model.layers` with nested models opened up (a Sequential inside a subclassed model)."""
    import keras

    found = []
    for layer in model.layers:
        found += leaf_layers(layer) if isinstance(layer, keras.Model) else [layer]
    return found


def recurrent_layers(model) -> list[tuple[Any, Any]]:
    """(recurrent layer, its Bidirectional wrapper or None), in model order."""
    from keras import layers

    found = []
    for layer in leaf_layers(model):
        if isinstance(layer, layers.Bidirectional):
            found.append((layer.forward_layer, layer))
        elif isinstance(layer, layers.RNN) or type(layer).__name__ in ("LSTM", "GRU", "SimpleRNN"):
            found.append((layer, None))
    return found


def cudnn_checks(layer, wrapper, spec: builder_mod.InputSpec) -> list[Finding]:
    cell = type(layer).__name__
    name = (wrapper or layer).name
    if cell not in CUDNN_CELLS:
        return [_cudnn(name, f"{cell} has no cuDNN kernel", "use a GRU or LSTM layer")]
    reasons = []
    for attr, needed in CUDNN_NEEDS.items():
        value = getattr(layer, attr, needed)
        value = activation_name(layer) if attr == "activation" else value
        if attr == "recurrent_activation":
            value = getattr(getattr(layer, "cell", layer), attr, None)
            value = getattr(value, "__name__", needed)
        if value != needed:
            reasons.append(f"{attr}={value}")
    if getattr(layer, "recurrent_dropout", 0) > 0:
        reasons.append(f"recurrent_dropout={layer.recurrent_dropout:g}")
    if cell == "GRU" and not getattr(layer, "reset_after", True):
        reasons.append("reset_after=False")
    if spec.padding == "pre" and _masked(wrapper or layer):
        reasons.append("a mask over pre-padded input (cuDNN needs strictly right-padded masks)")
    return [_cudnn(name, why, "keep Keras' defaults for it") for why in reasons]


def _cudnn(name: str, why: str, fix: str) -> Finding:
    return Finding(
        "cudnn_ineligible",
        "warning",
        {
            "message": f"{why} rules out the cuDNN kernel for {name}: on a GPU expect roughly 3-10x "
            "slower recurrent steps (no effect on CPU)",
            "keys": [f"layer {name}"],
            "layers": [name],
        },
        f"layer {name}: {fix}",
    )


def padding_checks(model, layer, wrapper, spec: builder_mod.InputSpec) -> list[Finding]:
    outer = wrapper or layer
    if getattr(layer, "return_sequences", False) or spec.padding in ("pre", "none") or _masked(outer):
        return []
    return [
        Finding(
            "unmasked_padding",
            "warning",
            {
                "message": f"{outer.name} returns its final state, but sequences are post-padded and its input "
                "carries no mask: the state mostly reflects padding (a layer between the mask and it, "
                "such as Conv1D, drops Keras' mask)",
                "keys": ["data.padding", f"layer {outer.name}"],
                "layer": outer.name,
            },
            f"data.padding: post → pre, or mask the input of {outer.name} "
            "(Embedding(mask_zero=True) / Masking, and only mask-preserving layers before it)",
        )
    ]


def _masked(layer) -> bool:
    """Whether the layer's (first) call received a mask, implicit or passed explicitly."""
    from keras.src import backend

    nodes = getattr(layer, "_inbound_nodes", [])
    if not nodes:
        return False
    node = nodes[0]
    kwargs = getattr(getattr(node, "arguments", None), "kwargs", {}) or {}
    if kwargs.get("mask") is not None:
        return True
    return any(backend.get_keras_mask(t) is not None for t in node.input_tensors)
