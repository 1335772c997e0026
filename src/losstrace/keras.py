"""Record your own Keras training as a losstrace run: `autolog()` or `LosstraceCallback`.

    import losstrace.keras
    losstrace.keras.autolog()          # one line before model.fit, like mlflow.keras.autolog()
    model.fit(x, y, batch_size=16, epochs=30, validation_data=(xv, yv))

or explicitly:

    model.fit(x, y, ..., callbacks=[losstrace.keras.LosstraceCallback(x=x, y=y, batch_size=16)])

Each fit becomes an MLflow run (the active run if there is one, else a new run in the
`losstrace` experiment of the configured store; by default `./mlflow.db`) carrying the
same records as a pipeline run, so `losstrace diagnose` and `losstrace diff` read it
the same way. Recording never breaks training: anything that fails costs one warning
line and the training goes on.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from typing import Any

import keras

from losstrace.script import building, fit_data, model_facts
from losstrace.script.recording import ScriptRun, flush, warn
from losstrace.training.callbacks import RecordingCallback
from losstrace.training.recorder import Recorder

__all__ = ["LosstraceCallback", "autolog", "flush"]


class LosstraceCallback(keras.callbacks.Callback):
    """Records the fit it is passed to. Give it the arrays fit gets to have the data
    fingerprinted (content and order hashes, class counts, rows grouped by class);
    `autolog()` passes them itself.

    callbacks: the other callbacks fit gets, to record what their monitors watch
        (`fit.callbacks.*`, `train.callbacks.*`); `autolog()` passes them itself.
    run_name: the MLflow run's name (default: model name, batch size, learning rate and a
        short hash of every setting). dynamics: per-layer gradient norms, taken inside the
        train step. log_model: also log the model with MLflow's Keras flavour.
    summary: print a short diagnosis on stderr when fit ends.
    noise_scale_every: every this many steps, measure the gradient noise scale (the
        batch size past which a larger one stops paying; `noise_scale` in the history and
        the batch advice), at about one extra step per measurement; 0 = off.
    """

    def __init__(
        self,
        run_name: str | None = None,
        *,
        x: Any = None,
        y: Any = None,
        validation_data: Any = None,
        validation_split: float = 0.0,
        batch_size: int | None = None,
        shuffle: Any = True,
        class_weight: Any = None,
        callbacks: Any = None,
        dynamics: bool = True,
        log_model: bool = False,
        summary: bool = True,
        noise_scale_every: int = 0,
    ) -> None:
        super().__init__()
        self._args = dict(
            x=x,
            y=y,
            validation_data=validation_data,
            validation_split=validation_split,
            batch_size=batch_size,
            shuffle=shuffle,
            class_weight=class_weight,
            callbacks=tuple(c for c in callbacks or () if not isinstance(c, LosstraceCallback)),
        )
        self._options = dict(
            run_name=run_name,
            dynamics=dynamics,
            log_model=log_model,
            summary=summary,
            noise_scale_every=noise_scale_every,
        )
        self._run: ScriptRun | None = None
        self._recording: RecordingCallback | None = None
        self._rec = Recorder()
        self._waits_for_build = False  # a model Keras builds in the first step: recording starts after it
        self._epoch = 0
        self._fit_inputs = None  # symbolic inputs shaped like fit's arrays (None: a generator's)

    def on_train_begin(self, logs=None):
        a, o = self._args, self._options
        self._rec, self._waits_for_build, self._fit_inputs = Recorder(), False, None
        self._run = ScriptRun(
            self.model, None, fit_data.FitData(), o["run_name"], o["dynamics"], o["log_model"], o["summary"]
        )
        with self._run.guard("reading the fit") as ok:
            if not ok:
                return
            self._run.data = data = fit_data.from_fit_args(a["x"], a["y"], a["validation_data"], a["validation_split"])
            x, y = (data.train.x, data.train.y) if data.train is not None else (a["x"], a["y"])
            self._fit_inputs = building.symbolic_inputs(x)
            if building.build_before_fit(self.model, x, y):
                self._start(self._fit_inputs, logs)
            else:
                # No shapes to build it from before fit (a generator or PyDataset, or arrays
                # this callback was not given): Keras builds the model in its first train
                # step, and the recording starts right after it.
                self._waits_for_build = True

    def _start(self, inputs, logs) -> None:
        """Open the run and attach the recording to a built model."""
        a, o = self._args, self._options
        data = self._run.data
        epochs = int(self.params.get("epochs") or 0)
        batch_size = a["batch_size"] if a["batch_size"] is not None else (32 if data.train is not None else None)
        self._run.fit = model_facts.FitArgs(
            batch_size,
            epochs,
            model_facts.applied_shuffle(a["x"], a["shuffle"]),
            a["class_weight"],
            data.validation,
            a["callbacks"],
        )
        self._run.start(inputs)
        self._recording = RecordingCallback(
            self._rec,
            data.train_rows or 0,
            batch_size or 32,
            None,  # the run opens beside the training: its epochs are logged by `ScriptRun.log_epochs`
            dynamics=o["dynamics"],
            noise_scale_every=o["noise_scale_every"],
        )
        self._recording.set_model(self.model)
        self._recording.set_params(self.params)
        self._recording.on_train_begin(logs)
        if o["noise_scale_every"] and not self._recording.measures_noise_scale:
            warn("noise scale not measured: it needs Keras' own train_step, steps_per_execution=1 and one device")

    def _start_after_first_step(self, batch, logs) -> None:
        self._waits_for_build = False
        with self._run.guard("reading the model its first step built") as ok:
            if not ok:
                return
            if not self.model.built:
                raise ValueError("the model is still not built after its first step: start it with keras.Input(...)")
            inputs = self._fit_inputs if self._fit_inputs is not None else building.inputs_as_built(self.model)
            self._start(inputs, logs)
            self._recording.join_after_first_step(self._epoch, batch, logs)
            if self._options["dynamics"]:
                self._run.gaps.append(
                    (
                        "first_step_gradients",
                        "the model was built by its first training step, before recording could start: "
                        "that step has no gradient norms",
                        "start the model with keras.Input(...), or build it, before fit",
                    )
                )

    def _forward(self, hook: str, *args) -> None:
        if self._run is None or self._recording is None:
            return
        with self._run.guard(hook) as ok:
            if ok:
                getattr(self._recording, hook)(*args)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._forward("on_epoch_begin", epoch, logs)

    def on_test_begin(self, logs=None):
        if self._run is not None and self._run.val_predictions is not None:
            with self._run.guard("validation predictions") as ok:
                if ok:
                    self._run.val_predictions.reset()

    def on_train_batch_end(self, batch, logs=None):
        if self._waits_for_build:
            self._start_after_first_step(batch, logs)
        else:
            self._forward("on_train_batch_end", batch, logs)

    def on_epoch_end(self, epoch, logs=None):
        self._forward("on_epoch_end", epoch, logs)
        if self._run is not None and self._recording is not None:
            with self._run.guard("logging the epoch") as ok:
                if ok:
                    self._run.log_epochs(self._rec)

    def on_train_end(self, logs=None):
        self._forward("on_train_end", logs)
        if self._recording is not None and self._run is not None and self._run.broken:
            with contextlib.suppress(Exception):  # a broken recording still leaves the optimizer as it came
                self._recording.detach()
        if self._run is not None and self._recording is not None:
            with self._run.guard("finishing the run") as ok:
                if ok:
                    self._run.finish(
                        self._rec, self._recording.batch_losses_untracked, self._recording.batch_sizes_counted
                    )
            with contextlib.suppress(Exception):  # the model goes back to the user as it came
                self._run.detach()

    def abandon(self) -> None:
        """Fit raised before its end: end the run as FAILED (never raises itself)."""
        with contextlib.suppress(Exception):  # the model goes back to the user as it came
            if self._recording is not None:
                self._recording.detach()
            if self._run is not None:
                self._run.detach()
        if self._run is not None and self._recording is not None and not self._run.broken:
            try:
                self._run.close_failed()
            except Exception as e:  # the user's own exception is the one to see
                warn(f"could not mark the run failed ({type(e).__name__})")


_FIT_ARGS = ("x", "y", "batch_size", "validation_data", "validation_split", "shuffle", "class_weight", "callbacks")
_patched: dict[str, Any] = {}


def autolog(
    *,
    run_name: str | None = None,
    dynamics: bool = True,
    log_model: bool = False,
    summary: bool = True,
    noise_scale_every: int = 0,
    disable: bool = False,
) -> None:
    """Record every later `model.fit` of any Keras model in this process. Calling it again
    changes the options (never records twice); `disable=True` stops recording. A fit that
    already has a LosstraceCallback is left alone."""
    _patched["options"] = dict(
        run_name=run_name,
        dynamics=dynamics,
        log_model=log_model,
        summary=summary,
        noise_scale_every=noise_scale_every,
    )
    if disable:
        if "fit" in _patched:
            keras.Model.fit = _patched.pop("fit")
        return
    if "fit" in _patched:
        return
    original = keras.Model.fit
    signature = inspect.signature(original)

    @functools.wraps(original)
    def fit(self, *args, **kwargs):
        callback = _callback_for(signature, self, args, kwargs)
        if callback is not None:
            kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), callback]
        try:
            return original(self, *args, **kwargs)
        except BaseException:
            if callback is not None:
                callback.abandon()  # the run ends FAILED instead of reading RUNNING for ever
            raise

    _patched["fit"] = original
    keras.Model.fit = fit


def _callback_for(signature, model, args, kwargs) -> LosstraceCallback | None:
    """A callback carrying fit's arguments, or None when the fit records itself already."""
    try:
        if "callbacks" not in kwargs and len(args) >= 6:  # callbacks given positionally: leave the call as it is
            return None
        if any(isinstance(c, LosstraceCallback) for c in kwargs.get("callbacks") or []):
            return None
        bound = signature.bind(model, *args, **kwargs)
        bound.apply_defaults()
        fit_args = {k: bound.arguments.get(k) for k in _FIT_ARGS}
        return LosstraceCallback(**_patched["options"], **fit_args)
    except Exception as e:  # never the user's training
        warn(f"autolog could not read this fit's arguments ({type(e).__name__}: {e}); training goes on unrecorded")
        return None
