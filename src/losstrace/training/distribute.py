"""Scale-out on TensorFlow's own engine (`train.distribute`), nothing else.

- `mirrored`: one process, one model replica per local device (every GPU, or every
  logical CPU when there is no GPU), gradients all-reduced each step.
- `multi_worker`: one process per machine (or per test process), described by the
  standard `TF_CONFIG` environment variable; gradients all-reduced across workers.
  Only the chief (task `chief`, or `worker` 0 when the cluster has no chief) records:
  MLflow and the stage outputs. The other workers train in lockstep and write their
  copies to a temp dir, as TensorFlow's multi-worker guide prescribes.

`batch_size` stays the *global* batch size: each step consumes batch_size rows split
across the replicas, so curves and the true per-batch losses mean the same thing with
and without distribution. The recovered batch losses and the recorded epoch `loss` and
`val_loss` are exact global means (see callbacks.py). Two Keras behaviours remain: a
batch that does not split evenly (the last one, or bucketed ones) gets each replica's
mean loss weighted equally, so its gradient weighs rows slightly unequally; and other
metrics (accuracy, ...) are the mean of the replicas' own values, exact on even splits.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from losstrace.errors import LosstraceError


def make_strategy(kind: str):
    """The `tf.distribute` strategy for `train.distribute`, or None for `none`.

    multi_worker must be created before TensorFlow runs any op (it sets up the
    collective runtime), so the train stage builds it right after choosing the device.
    """
    import tensorflow as tf

    if kind == "none":
        return None
    if kind == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
        return tf.distribute.MirroredStrategy(devices=devices)
    if not os.environ.get("TF_CONFIG"):
        raise LosstraceError(
            "params.yaml",
            "train.distribute=multi_worker but TF_CONFIG is not set",
            "set TF_CONFIG on every worker (cluster and task), or use train.distribute: mirrored",
        )
    return tf.distribute.MultiWorkerMirroredStrategy()


def scope(strategy):
    """`strategy.scope()`, or a no-op context without a strategy."""
    return strategy.scope() if strategy is not None else contextlib.nullcontext()


def replicas(strategy) -> int:
    return strategy.num_replicas_in_sync if strategy is not None else 1


def task() -> tuple[str, int]:
    """(task type, index) from TF_CONFIG; ("worker", 0) when it is not set."""
    cfg: dict[str, Any] = json.loads(os.environ.get("TF_CONFIG") or "{}")
    t = cfg.get("task") or {}
    return str(t.get("type", "worker")), int(t.get("index", 0))


def is_chief() -> bool:
    kind, index = task()
    cluster = json.loads(os.environ.get("TF_CONFIG") or "{}").get("cluster", {})
    return kind == "chief" or (kind == "worker" and index == 0 and "chief" not in cluster)


def worker_id() -> int:
    """0 for the chief, 1.. for the others (names each worker's own resume backup)."""
    if is_chief():
        return 0
    kind, index = task()
    return index + 1 if kind == "worker" else index + 1000


def is_multi_worker(strategy) -> bool:
    import tensorflow as tf

    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def barrier(strategy) -> None:
    """Under multi_worker, wait until every worker gets here (no-op otherwise).

    The chief records for a while after `fit` (predictions, outputs, the MLflow model);
    a worker that exits meanwhile stops the heartbeats TensorFlow's coordination service
    expects, and the service then aborts the whole cluster, the chief included. So every
    worker ends with one tiny all-reduce that the chief joins only when it is done.
    """
    if not is_multi_worker(strategy):
        return
    import tensorflow as tf

    @tf.function
    def one() -> tf.Tensor:
        return strategy.reduce("SUM", strategy.run(lambda: tf.constant(1.0)), axis=None)

    one()


def undistributed(model):
    """The trained model as an ordinary one (same weights, compile state and optimizer),
    for everything after `fit` that only the chief does. Under multi_worker a distributed
    `predict` is a collective op: the chief alone calling it would wait forever for the
    others. A save/load round trip outside the strategy's scope leaves no distribution."""
    import keras

    with tempfile.TemporaryDirectory(prefix="losstrace-model-") as tmp:
        model.save(Path(tmp) / "model.keras")
        return keras.models.load_model(Path(tmp) / "model.keras")


@contextlib.contextmanager
def fit_guard(model, strategy, x_sample, y_sample) -> Iterator[None]:
    """Make Keras 3's `fit` work under MultiWorkerMirroredStrategy (no-op otherwise).

    Keras 3.15 `fit` fails under it in two places (keras-team/keras#20585, open):
    - before training it reduces a distributed sample batch with `strategy.reduce`, which
      the collective strategy cannot do on a PerReplica of inputs;
    - every step it averages each scalar metric with `strategy.reduce("MEAN", v, axis=0)`,
      and a scalar has no axis 0.
    So: build the compiled metrics from a plain local sample instead (the model itself is
    built already), and, for the length of this fit only, average scalars with axis=None.
    Every worker then sees the same logs, so early stopping and LR decisions agree.
    """
    if not is_multi_worker(strategy):
        yield
        return
    import tensorflow as tf
    from keras.src.backend.tensorflow import trainer as tf_trainer

    with strategy.scope():
        model._symbolic_build(data_batch=(x_sample, y_sample))
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None
    original = tf_trainer.reduce_per_replica

    def reduce(values, strat, reduction):
        if reduction in ("auto", "mean") and is_multi_worker(strat):
            return tf.nest.map_structure(lambda v: strat.reduce("MEAN", v, axis=None), values)
        return original(values, strat, reduction)

    tf_trainer.reduce_per_replica = reduce
    try:
        yield
    finally:
        tf_trainer.reduce_per_replica = original
