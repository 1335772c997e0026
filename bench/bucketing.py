"""Length bucketing vs pad-to-max on the UCI sentiment sentences.

UCI sentences are 12 words on average and 71 at most, so padding every batch to
the longest sentence makes most recurrent steps run over padding. The arms differ
only in `train.batching`; speed is training samples per second over the epochs after
the first (the first also pays graph tracing, and bucketing traces graphs for several
batch widths), with the end-to-end figure reported beside it. Accuracy must stay
equal (±1 point); batches of other rows take another path through training, so one
seed's accuracy differs between arms by chance alone: test accuracy moves ~1.4 points
from seed to seed and the paired bucket − pad difference by ~2 points, so 3 seeds
(once showing −3.4 points) cannot resolve ±1. Each repetition therefore uses a new seed
for both arms, the verdict is the paired mean difference with its standard error over
20 seeds (a 27-seed study found −0.35 ± 0.41 points). Accuracy is the last epoch's:
this model's val loss is lowest after epoch 1-2 and then rises while accuracy still
climbs (overconfidence), so keeping the best-val-loss epoch scores less accurate
models, and noisier ones (20 seeds: +0.42 ± 0.87 points that way). Trimming a batch to its
longest row changes no prediction (1e-7 on a trained model): only which rows share a
batch differs between the arms.

Until `train.batching` exists in params.py the bucket arm records that it was
skipped; it runs by itself once the key lands.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from statistics import mean, stdev
from typing import Any

import pandas as pd

from .common import UCI_GLOB, build_params, has_param, interleave, median, paired_ratio, prepare, skipped, timed

ARMS = ("pad_to_max", "bucket")

# A GRU(32) sentiment model (examples/sentiment_gru.yaml) with Adam at a rate that
# learns in a few epochs; the example's RMSprop at 1e-3 sits on a plateau for ~17.
MODEL = {
    "data.source": UCI_GLOB,
    "data.header": False,
    "train.model.embedding.dim": 32,
    "train.model.rnn.cell": "gru",
    "train.model.rnn.units": 32,
    "train.model.dropout": 0.2,
    "train.loss": "binary_crossentropy",
    "train.output_activation": "sigmoid",
    "train.optimizer": "adam",
    "train.learning_rate": 0.005,
    "train.batch_size": 32,
}


def _epoch_timer():
    """A callback measuring each epoch's training steps only (begin → validation start)."""
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.train_seconds: list[float] = []
            self._t0: float | None = None

        def on_epoch_begin(self, epoch, logs=None):
            self._t0 = time.perf_counter()

        def on_test_begin(self, logs=None):
            if self._t0 is not None:  # the first evaluation of the epoch ends its training steps
                self.train_seconds.append(time.perf_counter() - self._t0)
                self._t0 = None

    return EpochTimer()


def _test_split(ds, prepared: Path, loss: str):
    from losstrace.data import featurize

    frame = pd.read_parquet(prepared / "test.parquet")
    x, _ = ds.featurizer.transform(frame["x"])
    y = featurize.encode_labels(frame["label"], ds.labels, ds.info["multilabel"], ds.info["label_delimiter"], loss)
    return x, y


def _train_once(p, ds, test) -> dict[str, Any]:
    """One seeded training: samples/s (steady and end to end) and accuracies."""
    import keras

    from losstrace.stages import train

    keras.backend.clear_session()
    train.seed_everything(p.base.seed)
    timer = _epoch_timer()
    seconds, (model, rec) = timed(lambda: train.run(p, ds, None, callbacks_extra=[timer]))
    n = len(ds.x["train"])
    steady = timer.train_seconds[1:] or timer.train_seconds
    scores = model.evaluate(test[0], test[1], batch_size=256, verbose=0, return_dict=True)
    return {
        "samples_per_s": n / median(steady),
        "end_to_end_samples_per_s": n * len(rec.epochs) / seconds,
        "first_epoch_train_seconds": timer.train_seconds[0],
        "val_accuracy": float(rec.epochs[-1]["val_accuracy"]),
        "test_accuracy": float(scores["accuracy"]),
    }


def _with_seed(p, seed: int):
    return dataclasses.replace(p, base=dataclasses.replace(p.base, seed=seed))


def measure(work: Path, epochs: int, reps: int) -> dict[str, Any]:
    available = has_param("train.batching")
    base = {**MODEL, "train.epochs": epochs}
    if available:
        base["train.batching"] = "pad_to_max"
    p, ds, prepared = prepare(work, base)  # one split (seed 42) for every arm and seed
    test = _test_split(ds, prepared, p.train.loss)
    params = {"pad_to_max": p}
    if available:
        params["bucket"] = build_params({**base, "train.batching": "bucket"})
    runs: dict[str, list[dict[str, Any]]] = {arm: [] for arm in params}

    def arm(name: str):
        def go() -> float:
            seed = p.base.seed + len(runs[name])  # repetition k of every arm uses seed 42 + k
            runs[name].append(_train_once(_with_seed(params[name], seed), ds, test))
            return runs[name][-1]["samples_per_s"]

        return go

    interleave({name: arm(name) for name in params}, reps)
    arms: dict[str, Any] = {name: _summarise(rs) for name, rs in runs.items()}
    accuracy = {name: _accuracy(a) for name, a in arms.items()}
    if not available:
        arms["bucket"] = accuracy["bucket"] = skipped("train.batching not available")
    else:
        accuracy["difference"] = _paired_difference(runs)
    return {
        "bucketing_speedup": _speedup(runs, "samples_per_s", available),
        "bucketing_accuracy": accuracy,
        "bucketing": {
            "data": "UCI sentiment sentences (3 files, 3000 rows)",
            "model": "GRU(32), word level",
            "epochs": epochs,
            "seeds": [p.base.seed + k for k in range(reps)],
            "train_rows": int(len(ds.x["train"])),
            "max_len": int(ds.featurizer.max_len),
            "arms": arms,
            "end_to_end_speedup": _speedup(runs, "end_to_end_samples_per_s", available),
        },
    }


def _paired_difference(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """bucket − pad_to_max test accuracy per seed, in points: mean and standard error."""
    diffs = [(b["test_accuracy"] - p["test_accuracy"]) * 100 for b, p in zip(runs["bucket"], runs["pad_to_max"])]
    se = stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else None
    return {"test_mean_points": mean(diffs), "test_se_points": se, "seeds": len(diffs)}


def _summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median speed over repetitions; accuracies averaged over their seeds."""
    tests = [r["test_accuracy"] for r in runs]
    return {
        "samples_per_s": median([r["samples_per_s"] for r in runs]),
        "end_to_end_samples_per_s": median([r["end_to_end_samples_per_s"] for r in runs]),
        "first_epoch_train_seconds": median([r["first_epoch_train_seconds"] for r in runs]),
        "val_accuracy": mean([r["val_accuracy"] for r in runs]),
        "test_accuracy": mean(tests),
        "test_accuracy_by_seed": tests,
    }


def _speedup(runs: dict[str, list[dict[str, Any]]], key: str, available: bool) -> float | dict[str, str]:
    """bucket / pad_to_max, the median of per-repetition ratios (each pair ran back to back)."""
    if not available:
        return skipped("train.batching not available")
    return paired_ratio([r[key] for r in runs["bucket"]], [r[key] for r in runs["pad_to_max"]])


def _accuracy(arm: dict[str, Any]) -> dict[str, Any]:
    if "skipped" in arm:
        return arm
    return {"val": arm["val_accuracy"], "test": arm["test_accuracy"], "test_by_seed": arm["test_accuracy_by_seed"]}
