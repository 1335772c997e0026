"""The Keras callback that records a training: true batch losses, epoch rows, layer dynamics, logging.

Each job has its own part: `batch_losses` recovers each batch's own loss from Keras'
running means, `gradient_norms` takes per-layer norms inside the train step, `noise_scale`
measures the gradient noise scale there every N steps, `recorder` holds the rows and logs
an epoch. The pipeline's train stage and `losstrace.keras` (a
user's own script) both record through `RecordingCallback`.
"""

from __future__ import annotations

import math
import time

import keras

from losstrace.record import contract
from losstrace.training import step_hook
from losstrace.training.batch_losses import BatchLosses
from losstrace.training.gradient_norms import LayerDynamics
from losstrace.training.noise_scale import NoiseScale
from losstrace.training.recorder import Recorder, log_epoch


class RecordingCallback(keras.callbacks.Callback):
    """Records every batch and epoch into a `Recorder` and stops at the first NaN/inf loss.

    logger: a record.writer.RunLogger (or None): each epoch is logged when it ends, unless
        `defer_logging` (the resume backup commits the epoch first, then logs it).
    dynamics: also record per-layer gradient norms and update ratios.
    exact_epoch_loss: replace Keras' epoch `loss`/`val_loss` with the loss tracker's exact
        global mean; under tf.distribute Keras' figure is a mean of per-replica means.
    noise_scale_every: measure the gradient noise scale every this many steps (0 = off);
        each epoch row then carries the contract's NOISE_SCALE_COLUMNS.
    """

    def __init__(
        self,
        recorder: Recorder,
        n_train: int,
        batch_size: int,
        logger=None,
        dynamics: bool = False,
        defer_logging: bool = False,
        exact_epoch_loss: bool = False,
        noise_scale_every: int = 0,
    ):
        super().__init__()
        self.rec, self.n_train, self.batch_size, self.logger = recorder, n_train, batch_size, logger
        self.dynamics, self.defer_logging, self.exact_epoch_loss = dynamics, defer_logging, exact_epoch_loss
        self._losses: BatchLosses | None = None
        self.noise_scale_every = int(noise_scale_every)
        self._layers: LayerDynamics | None = None
        self._in_step = False  # whether this fit records inside the train step
        self._noise: NoiseScale | None = None
        self.noise_scale_measurements = 0  # set at train end
        self._t0 = 0.0
        self._epoch_lr: float | None = None  # the learning rate this epoch's steps ran with
        self._lr_read = False
        self._read_next_from_host = False  # the step that ran before recording started

    def on_train_begin(self, logs=None):
        self.detach()  # a callback begun before (another fit) leaves no hook on the optimizer
        steps = (self.params or {}).get("steps")
        self._losses = BatchLosses(self.model, self.batch_size, self.n_train, steps)
        if self.dynamics:  # weights may have been restored (resume) since any last fit: a fresh copy
            self._layers = LayerDynamics(self.model)
        self._in_step = self._layers is not None or self._losses.in_step
        if self._in_step:
            # Recording runs inside the traced train step (step_hook). A model fitted before
            # already holds a traced step, without this fit's recording (or with an earlier
            # fit's), so the step is traced anew; Keras traces lazily, so a first fit pays
            # nothing extra.
            self.model.make_train_function(force=True)
        if self.noise_scale_every > 0 and step_hook.keras_train_step(self.model):
            # Last: it wraps the train function built just above. A model's own train step
            # may apply gradients other than once per batch, which the estimator assumes.
            self._noise = NoiseScale(self.model, self.noise_scale_every, self.n_train or None)

    def join_after_first_step(self, epoch: int, batch: int, logs) -> None:
        """Start recording a fit whose first step has just run (Keras built the model in it).
        That step's loss is read from the host; its gradient norms were never taken.
        `on_train_begin` has run already (it attaches the in-step recording)."""
        self.on_epoch_begin(epoch)
        self._read_next_from_host = True
        self.on_train_batch_end(batch, logs)

    @property
    def batch_losses_untracked(self) -> bool:
        """A model's own train step left Keras' loss tracker still: no per-batch losses."""
        return self._losses is not None and self._losses.untracked

    @property
    def batch_sizes_counted(self) -> bool:
        """The batches' row counts were counted (not filled in from fit's batch size)."""
        return self._losses is None or not self._losses.sizes_assumed

    @property
    def measures_noise_scale(self) -> bool:
        return self._noise is not None and self._noise.enabled

    def on_train_end(self, logs=None):
        self.detach()
        if self.logger is not None and not self.defer_logging:
            self.logger.flush()  # the last epochs go now, not after saving and diagnosis

    def detach(self) -> None:
        """Remove the in-step recording (at train end, or when fit raised before it)."""
        if self._losses is not None:
            self._losses.detach()
        if self._layers is not None:
            self._layers.detach()
            self._layers = None
        if self._noise is not None:
            self.noise_scale_measurements = self._noise.measurements
            self._noise.detach()
            self._noise = None
        if self._in_step:
            # Drop the traced step that records, so a later fit without recording runs none of it.
            self.model.train_function = None
            self._in_step = False

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_lr, self._lr_read = None, False
        self._losses.reset()
        if self._layers is not None:
            self._layers.begin_epoch()
        if self._noise is not None:
            self._noise.reset()
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if not self._lr_read:
            self._epoch_lr, self._lr_read = epoch_lr(self.model), True
        if "loss" not in (logs or {}):  # a model's own train_step reporting other figures
            return
        mean = float(logs["loss"])
        self._losses.add(batch, mean, from_host=self._read_next_from_host)
        self._read_next_from_host = False
        if not math.isfinite(mean):
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        rows, divergence = self._losses.rows(epoch, first_step=len(self.rec.batches))
        seen = sum(r["size"] for r in rows)
        if self.exact_epoch_loss and seen > 0:
            logs["loss"] = sum(r["loss"] * r["size"] for r in rows) / seen
            tracked = self._losses.tracker_mean()
            if "val_loss" in logs and tracked is not None:  # evaluation just refilled the tracker
                logs["val_loss"] = tracked
        if self.rec.divergence is None:
            self.rec.divergence = divergence
        self.rec.seconds += time.perf_counter() - self._t0
        self.rec.batches.extend(rows)
        row = {k: float(v) for k, v in logs.items() if k != "learning_rate"}
        lr = self._epoch_lr if self._epoch_lr is not None else current_lr(self.model)
        self.rec.epochs.append({"epoch": epoch, **row, "lr": lr, **self._noise_columns()})
        if self._layers is not None:
            self.rec.dynamics.extend(self._layers.rows(epoch))
        if self.logger is not None and not self.defer_logging:
            log_epoch(self.logger, self.rec, epoch)

    def _noise_columns(self) -> dict[str, float]:
        measured = self._noise.read() if self._noise is not None else None
        if measured is None:  # off, or no step of this epoch was due
            return {}
        return {
            contract.NOISE_SCALE: measured["b_simple"],
            contract.NOISE_TRACE: measured["tr_sigma"],
            contract.NOISE_SIGNAL: measured["g2"],
        }


def epoch_lr(model) -> float | None:
    """The learning rate an epoch runs with, read after its first step: every callback's
    `on_epoch_begin` has set it by then (LearningRateScheduler), and none's `on_epoch_end` has
    changed it yet (ReduceLROnPlateau lowers it for the next epoch, before a callback after it
    reads it). None for a schedule, which moves within the epoch: read at its end."""
    if not isinstance(getattr(step_hook.innermost_optimizer(model), "_learning_rate", None), keras.Variable):
        return None
    return current_lr(model)


def current_lr(model) -> float:
    opt = model.optimizer
    lr = opt.learning_rate
    if callable(lr) and not hasattr(lr, "numpy"):
        lr = lr(opt.iterations)
    try:
        return float(keras.ops.convert_to_numpy(lr))
    except Exception:
        return float(lr)
