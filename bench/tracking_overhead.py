"""Tracking overhead: what the train stage's recording costs against bare Keras.

The same model, data and epochs (the default params: an LSTM on Japanese Vowels), each
arm from the same seed, each adding one layer of what the stage does to the last:
- `fit_bare`: plain `model.fit` without any callback;
- `fit`: the same training a user without losstrace runs: `model.fit` with the training
  controls params configure (learning-rate schedule, early stopping, the best-epoch
  keeper; `train.training_controls`) and class weights, and nothing recorded;
- `callback_no_dynamics` (when `train.dynamics` exists): `train.run(logger=None)` with
  dynamics recording off: true per-batch losses and the NaN stop only;
- `callback`: `train.run(logger=None)`: plus dynamics (per-step layer gradient
  norms, update ratios);
- `mlflow`: plus a real RunLogger on a temp SQLite store: the run is opened, params
  logged, per-epoch metrics and batch losses sent, the run finished;
- `resume_backup` (when `train.resume` exists and is on): plus the per-epoch backup a
  killed stage resumes from, as `train.main` sets it up.

The headline ratio, `tracking_overhead_ratio`, is `mlflow` over `fit`: tracking and
dynamics recording against the same training without them. `resume_backup` is a
training control of its own (a killed stage resumes), reported as `stage_overhead_ratio`
(the stage's training as a user runs it, over `fit`). Each layer is also reported against
the one before, and in milliseconds per epoch. Separately, the whole stage (`train.main`) is timed once with its parts,
because what it does after fit (saving the model, logging it as an MLflow model,
uploading artifacts) is real cost a user waits for, though it does not slow training.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .common import build_params, has_param, interleave, median, paired_ratio, prepare, timed


def _fresh(p) -> None:
    """Same weights and shuffles for every arm, and no Keras state left from the last one."""
    import keras

    from losstrace.stages import train

    keras.backend.clear_session()
    train.seed_everything(p.base.seed)


def _plain_fit(p, ds, controls: bool = True) -> float:
    """The model train.run builds, fitted with Keras alone: with the training controls and
    class weights train.run uses (`controls`), or with no callback at all."""
    from losstrace.model import zoo
    from losstrace.stages import train

    _fresh(p)
    t = p.train

    def go() -> None:
        steps = math.ceil(len(ds.x["train"]) / t.batch_size)
        model = zoo.build(
            t,
            ds.info["input"],
            ds.featurizer.max_len,
            ds.featurizer.channels,
            ds.featurizer.vocab_size,
            len(ds.labels),
            ds.info["multilabel"],
            steps,
            ds.featurizer.vocab,
        )
        callbacks = train.training_controls(t)[0] if controls else []
        weights = (
            train.class_weights(ds.y["train"], len(ds.labels))
            if controls and t.class_weight == "balanced" and not ds.info["multilabel"]
            else None
        )
        model.fit(
            ds.x["train"],
            ds.y["train"],
            validation_data=(ds.x["val"], ds.y["val"]),
            batch_size=t.batch_size,
            epochs=t.epochs,
            shuffle=t.shuffle,
            verbose=0,
            callbacks=callbacks,
            class_weight=weights,
        )

    return timed(go)[0]


def _run_untracked(p, ds) -> float:
    from losstrace.stages import train

    _fresh(p)
    return timed(lambda: train.run(p, ds, None))[0]


def _run_tracked(p, ds, root: Path, prepared: Path | None = None) -> float:
    """What the stage does around fit: open a run, log params, train with the logger
    (and, given `prepared`, with the resume backup main makes), finish the run."""
    from losstrace import params as params_mod
    from losstrace.record import contract, writer
    from losstrace.stages import train

    _fresh(p)

    def go() -> None:
        backup = _backup(p, root, prepared) if prepared is not None else None
        with writer.start_run(root, "bench-tracking", {contract.KIND_TAG: "bench"}) as logger:
            logger.log_params(params_mod.flatten(p))
            if backup is not None:
                backup.begin(logger.run_id)
            train.run(p, ds, logger, backup=backup)
        if backup is not None:
            backup.clear()

    return timed(go)[0]


def _backup(p, root: Path, prepared: Path):
    from losstrace.training import resume

    return resume.Backup(resume.backup_dir(root), resume.fingerprint(p, prepared))


def arms(p, ds, store: Path, prepared: Path, overrides: dict[str, Any]) -> dict[str, Callable[[], float]]:
    """The arms in order, each adding one layer of the stage to the one before."""
    out: dict[str, Callable[[], float]] = {
        "fit_bare": lambda: _plain_fit(p, ds, controls=False),
        "fit": lambda: _plain_fit(p, ds),
    }
    if has_param("train.dynamics"):
        no_dynamics = build_params({**overrides, "train.dynamics": False})
        out["callback_no_dynamics"] = lambda: _run_untracked(no_dynamics, ds)
    out["callback"] = lambda: _run_untracked(p, ds)
    out["mlflow"] = lambda: _run_tracked(p, ds, store)
    if has_param("train.resume") and p.train.resume:
        out["resume_backup"] = lambda: _run_tracked(p, ds, store, prepared)
    return out


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
    from losstrace.record import writer
    from losstrace.stages import train

    totals = {"fit": 0.0, "log_keras_model": 0.0, "log_artifacts": 0.0}
    with contextlib.ExitStack() as stack:
        stack.enter_context(_timing(train, "run", totals, "fit"))
        stack.enter_context(_timing(writer.RunLogger, "log_keras_model", totals, "log_keras_model"))
        stack.enter_context(_timing(writer.RunLogger, "log_artifact", totals, "log_artifacts"))
        total = timed(
            lambda: train.main(
                params_path, prepared, root / "reports" / "validate", root / "models", root / "reports" / "train", root
            )
        )[0]
    outside = total - totals["fit"]
    return {
        "seconds": total,
        "fit_seconds": totals["fit"],
        "outside_fit_seconds": outside,
        "log_keras_model_seconds": totals["log_keras_model"],
        "log_artifacts_seconds": totals["log_artifacts"],
        "other_seconds": outside - totals["log_keras_model"] - totals["log_artifacts"],
        "outside_fit_share": outside / total,
    }


def _warm_up(p, ds, store: Path) -> None:
    """Pay one-time costs outside the timed arms: TensorFlow's first graphs, MLflow's import
    and the new SQLite store's schema migrations (seconds, once per store)."""
    from losstrace.record import contract, writer

    _plain_fit(p, ds)
    with writer.start_run(store, "bench-warm-up", {contract.KIND_TAG: "bench"}):
        pass


def _layers(times: dict[str, list[float]], epochs: int) -> list[dict[str, Any]]:
    """Each arm against the one before it, in order: paired ratio and paired difference in
    milliseconds per epoch (medians over repetitions, so both come from the same pairs).

    The costs are (nearly) fixed per epoch, so the milliseconds say how the ratios
    would shrink on epochs longer than Japanese Vowels' tiny ones."""
    names = list(times)
    return [
        {
            "arm": name,
            "vs": prev,
            "ratio": paired_ratio(times[name], times[prev]),
            "ms_per_epoch": median([a - b for a, b in zip(times[name], times[prev])]) / epochs * 1000,
        }
        for prev, name in zip(names, names[1:])
    ]


def measure(work: Path, epochs: int, reps: int, warm_up: bool = True) -> dict[str, Any]:
    overrides: dict[str, Any] = {"train.epochs": epochs}
    if has_param("train.batching"):
        overrides["train.batching"] = "pad_to_max"  # the arm plain fit can reproduce
    p, ds, prepared = prepare(work, overrides)
    store = work / "store"
    timed_arms = arms(p, ds, store, prepared, overrides)
    if warm_up:
        _warm_up(p, ds, store)
    times = interleave(timed_arms, reps)
    stage = list(times)[-1]
    ratio = paired_ratio(times["mlflow"], times["fit"])
    layers = _layers(times, epochs)
    per_epoch_ms = {
        "fit_epoch": median(times["fit"]) / epochs * 1000,
        **{layer["arm"]: layer["ms_per_epoch"] for layer in layers},
    }
    return {
        "tracking_overhead_ratio": ratio,
        "stage_overhead_ratio": paired_ratio(times[stage], times["fit"]),
        "tracking_overhead_per_epoch_ms": per_epoch_ms,
        "tracking_overhead": {
            "data": "japanese_vowels (default params)",
            "epochs": epochs,
            "train_rows": int(len(ds.x["train"])),
            "batch_size": p.train.batch_size,
            "reps": reps,
            "headline_arm": "mlflow",
            "stage_arm": stage,
            "seconds": {name: median(ts) for name, ts in times.items()},
            "layers": layers,
            "train_main": stage_breakdown(prepared.parents[1] / "params.yaml", prepared, store),
        },
    }


# ---------------------------------------------------------------- measured noise scale

# Steps between two noise-scale measurements in the headline arm: the default training has
# 7 steps an epoch, 210 in 30 epochs, so 50 gives 4 measurements, enough for a run figure
# the batch advice can use (each costs about two steps; see training/noise_scale.py).
GNS_EVERY = 50


def measure_noise_scale(
    work: Path, epochs: int, reps: int, every: int = GNS_EVERY, warm_up: bool = True
) -> dict[str, Any]:
    """`gns_overhead_ratio`: the default training (`train.run(logger=None)`, as the
    `callback` arm) with `train.noise_scale_every` on over the same training off, paired
    per repetition and interleaved like the tracking arms, both from the same seed (the
    measurement changes no update, so both train the same steps). A second on-arm
    measures once per epoch (every = steps per epoch), the cost of a noise-scale figure in
    every epoch of this 7-step training. `b_simple` is each arm's figure pooled over all its
    measured epochs (not only the learning ones the advice uses), for orientation."""
    from losstrace.explain.symptoms import measured_noise_scale
    from losstrace.record import run_files
    from losstrace.stages import train

    overrides: dict[str, Any] = {"train.epochs": epochs, "train.batching": "pad_to_max"}
    p, ds, _ = prepare(work, overrides)
    steps = math.ceil(len(ds.x["train"]) / p.train.batch_size)
    per_epoch = build_params({**overrides, "train.noise_scale_every": steps})
    headline = build_params({**overrides, "train.noise_scale_every": every})
    scales: dict[str, float | None] = {}

    def arm(q, name: str) -> Callable[[], float]:
        def go() -> float:
            _fresh(q)
            seconds, (_, rec) = timed(lambda: train.run(q, ds, None))
            measured = measured_noise_scale(run_files.history_frame(rec.epochs))
            scales[name] = measured["b_simple"] if measured else None
            return seconds

        return go

    arms_ = {"off": arm(p, "off"), "on": arm(headline, "on"), "every_epoch": arm(per_epoch, "every_epoch")}
    if warm_up:
        _plain_fit(p, ds)  # TensorFlow's first graphs, outside the timed arms
    times = interleave(arms_, reps)
    total_steps = steps * epochs

    def cost(name: str, n: int) -> dict[str, Any]:
        extra = median([a - b for a, b in zip(times[name], times["off"])])
        return {
            "ratio": paired_ratio(times[name], times["off"]),
            "measurements": n,
            "ms_per_measurement": extra / n * 1000 if n else None,
            "b_simple": scales.get(name),
        }

    def count(n: int) -> int:  # calls n, 2n, ...; never the first call, where Keras traces
        return total_steps // n - (1 if n == 1 else 0)

    on, each = cost("on", count(every)), cost("every_epoch", count(steps))
    return {
        "gns_overhead_ratio": on["ratio"],
        "gns_overhead": {
            "data": "japanese_vowels (default params)",
            "epochs": epochs,
            "steps": total_steps,
            "reps": reps,
            "every": every,
            "seconds": {name: median(ts) for name, ts in times.items()},
            "on": on,
            "every_epoch": {**each, "every": steps},
        },
    }
