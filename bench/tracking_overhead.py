"""Tracking overhead: what recording a training costs against bare Keras.

Three arms on the same model, data and epochs (the default params: an LSTM on
Japanese Vowels), each built from the same seed:
- `fit`: plain `model.fit` without any callback, what a user without losstrace runs;
- `run_bare`: `train.run(logger=None)`: our DynamicsCallback (true per-batch losses,
  NaN stop) with nothing sent anywhere;
- `run_tracked`: `train.run` with a real RunLogger on a temp SQLite store: the run is
  opened, params logged, per-epoch metrics and batch losses sent, the run finished;
- `run_no_dynamics` (when `train.dynamics` exists): `run_bare` without the per-epoch
  probe pass (layer gradient norms, update ratios), to tell its cost from the rest.

The headline ratio is run_tracked / fit. Separately, the whole stage (`train.main`)
is timed once with its parts, because what it does after fit (saving the model,
logging it as an MLflow model, uploading artifacts) is real cost a user waits for,
even though it does not slow training itself.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .common import build_params, has_param, interleave, median, paired_ratio, prepare, timed


def _fresh(p) -> None:
    """Same weights and shuffles for every arm, and no Keras state left from the last one."""
    import keras

    from losstrace import train

    keras.backend.clear_session()
    train.seed_everything(p.base.seed)


def _plain_fit(p, ds) -> float:
    """The model train.run builds, fitted with Keras alone."""
    from losstrace.model import zoo

    _fresh(p)

    def go() -> None:
        steps = math.ceil(len(ds.x["train"]) / p.train.batch_size)
        model = zoo.build(p.train, ds.info["input"], ds.featurizer.max_len, ds.featurizer.channels,
                          ds.featurizer.vocab_size, len(ds.labels), ds.info["multilabel"], steps, ds.featurizer.vocab)
        model.fit(ds.x["train"], ds.y["train"], validation_data=(ds.x["val"], ds.y["val"]),
                  batch_size=p.train.batch_size, epochs=p.train.epochs, shuffle=p.train.shuffle, verbose=0)

    return timed(go)[0]


def _run_bare(p, ds) -> float:
    from losstrace import train

    _fresh(p)
    return timed(lambda: train.run(p, ds, None))[0]


def _run_tracked(p, ds, root: Path) -> float:
    """Everything the stage sends to MLflow around fit: open, params, curves, finish."""
    from losstrace import params as params_mod
    from losstrace import train, tracking

    _fresh(p)

    def go() -> None:
        with tracking.start_run(root, "bench-tracking", {tracking.KIND_TAG: "bench"}) as logger:
            logger.log_params(params_mod.flatten(p))
            train.run(p, ds, logger)

    return timed(go)[0]


@contextlib.contextmanager
def _timing(owner: Any, name: str, totals: dict[str, float], key: str) -> Iterator[None]:
    """Add the time spent in owner.name to totals[key] while the block runs."""
    original = getattr(owner, name)

    def wrapper(*args, **kwargs):
        seconds, out = timed(lambda: original(*args, **kwargs))
        totals[key] += seconds
        return out

    setattr(owner, name, wrapper)
    try:
        yield
    finally:
        setattr(owner, name, original)


def stage_breakdown(params_path: Path, prepared: Path, root: Path) -> dict[str, float]:
    """Seconds of one `train.main` and of its parts; "other" is lint, featurize,
    predictions, diagnosis, plots and writing the outputs."""
    from losstrace import train, tracking

    totals = {"fit": 0.0, "log_keras_model": 0.0, "log_artifacts": 0.0}
    with contextlib.ExitStack() as stack:
        stack.enter_context(_timing(train, "run", totals, "fit"))
        stack.enter_context(_timing(tracking.RunLogger, "log_keras_model", totals, "log_keras_model"))
        stack.enter_context(_timing(tracking.RunLogger, "log_artifact", totals, "log_artifacts"))
        total = timed(lambda: train.main(params_path, prepared, root / "reports" / "validate", root / "models",
                                         root / "reports" / "train", root))[0]
    outside = total - totals["fit"]
    return {"seconds": total, "fit_seconds": totals["fit"], "outside_fit_seconds": outside,
            "log_keras_model_seconds": totals["log_keras_model"], "log_artifacts_seconds": totals["log_artifacts"],
            "other_seconds": outside - totals["log_keras_model"] - totals["log_artifacts"],
            "outside_fit_share": outside / total}


def _warm_up(p, ds, store: Path) -> None:
    """Pay one-time costs outside the timed arms: TensorFlow's first graphs, MLflow's import
    and the new SQLite store's schema migrations (seconds, once per store)."""
    from losstrace import tracking

    _plain_fit(p, ds)
    with tracking.start_run(store, "bench-warm-up", {tracking.KIND_TAG: "bench"}):
        pass


def measure(work: Path, epochs: int, reps: int) -> dict[str, Any]:
    overrides: dict[str, Any] = {"train.epochs": epochs}
    if has_param("train.batching"):
        overrides["train.batching"] = "pad_to_max"  # the arm plain fit can reproduce
    p, ds, prepared = prepare(work, overrides)
    store = work / "store"
    arms = {
        "fit": lambda: _plain_fit(p, ds),
        "run_bare": lambda: _run_bare(p, ds),
        "run_tracked": lambda: _run_tracked(p, ds, store),
    }
    if has_param("train.dynamics"):  # separates the probe pass from the rest of the callback
        no_dynamics = build_params({**overrides, "train.dynamics": False})
        arms["run_no_dynamics"] = lambda: _run_bare(no_dynamics, ds)
    _warm_up(p, ds, store)
    times = interleave(arms, reps)
    ratio = paired_ratio(times["run_tracked"], times["fit"])
    ratios = {
        "tracked_vs_fit": ratio,
        "callback_vs_fit": paired_ratio(times["run_bare"], times["fit"]),
        "mlflow_vs_callback": paired_ratio(times["run_tracked"], times["run_bare"]),
    }
    if "run_no_dynamics" in times:
        ratios["callback_without_dynamics_vs_fit"] = paired_ratio(times["run_no_dynamics"], times["fit"])
        ratios["dynamics_vs_callback_without"] = paired_ratio(times["run_bare"], times["run_no_dynamics"])
    return {
        "tracking_overhead_ratio": ratio,
        "tracking_overhead": {
            "data": "japanese_vowels (default params)",
            "epochs": epochs,
            "train_rows": int(len(ds.x["train"])),
            "reps": reps,
            "seconds": {name: median(ts) for name, ts in times.items()},
            "ratios": ratios,
            "train_main": stage_breakdown(prepared.parents[1] / "params.yaml", prepared, store),
        },
    }
