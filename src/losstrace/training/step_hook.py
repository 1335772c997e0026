"""Run recording code inside Keras' compiled train step, where the optimizer gets the gradients.

Keras 3 hands callbacks nothing from inside a step but the running-mean logs; reading a
variable from the host costs a round trip (~0.1 ms on CPU, more than a small LSTM step's
recording is worth). Work done inside the traced step instead costs a few graph ops
and no round trip: the recorders here add to variables that the host reads once per
epoch.

The hook wraps the innermost optimizer's `apply` on the instance (under mixed precision
the loss-scale wrapper hands it the unscaled gradients). Keras' train step calls it
after the loss tracker has taken the step's loss, and tf.function orders ops on the same
variable in program order, so a hook reading the tracker sees this step's figures.
Hooks chain, and may be detached in any order; the optimizer is plain once all are.
"""

from __future__ import annotations

from collections.abc import Callable


def keras_train_step(model) -> bool:
    """Whether fit runs Keras' own train step, whose order (loss tracker, then `apply`) the
    hooks rely on; False for a model class (or instance) with a `train_step` of its own."""
    if "train_step" in vars(model):
        return False
    return getattr(type(model).train_step, "__module__", "").startswith("keras.")


def innermost_optimizer(model):
    opt = model.optimizer
    while hasattr(opt, "inner_optimizer"):  # LossScaleOptimizer (mixed precision)
        opt = opt.inner_optimizer
    return opt


def on_apply(model, record: Callable[[list, list | None], None]) -> Callable[[], None]:
    """Call `record(grads, variables)` in the train step before each optimizer update.

    Returns the function that removes the hook. The model's train step must be traced
    after this (see RecordingCallback): a step traced before does not contain it."""
    opt = innermost_optimizer(model)
    inner = opt.apply  # the class's method, or a hook installed before this one

    def apply(grads, trainable_variables=None):
        if apply.active:  # read when the step is traced
            record(grads, trainable_variables)
        return inner(grads, trainable_variables)

    apply.active, apply.inner = True, inner
    opt.apply = apply

    def detach() -> None:
        apply.active = False
        # Unwind detached hooks from the top; a live one stays, with its chain below it.
        while True:
            top = vars(opt).get("apply")
            if top is None or getattr(top, "active", True):
                return
            if hasattr(top.inner, "active"):
                opt.apply = top.inner
            else:  # only the class's own method is left: a plain optimizer is saved
                del opt.apply
                return

    return detach
