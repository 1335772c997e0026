"""What recording a user's own `model.fit` costs: losstrace.keras against mlflow.keras.autolog and bare fit.

The same user-style script three ways, each from the same seed on the same arrays
(Japanese Vowels as the pipeline featurizes it, a plain Keras LSTM compiled by hand):
- `bare`: `model.fit(...)` alone;
- `losstrace`: `losstrace.keras.autolog()` then the same fit: the lint and the train-step
  hooks at fit start, the data fingerprint and the run with its params opened beside the
  training, true batch losses and per-layer gradient norms during it, the diagnosis and
  summary at its end (the run files are uploaded after fit returns);
- `mlflow_autolog`: `mlflow.keras.autolog(log_models=False)` then the same fit.

Each arm's figure is the wall time of the `model.fit` call, so everything either
recorder does inside fit counts (both start and end their runs there). Arms are
interleaved and the ratios are medians of per-repetition ratios (bench.common).
Ratios: `keras_callback_overhead_ratio` = losstrace / bare,
`mlflow_autolog_overhead_ratio` = mlflow_autolog / bare.
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path
from typing import Any

from .common import interleave, median, paired_ratio, prepare, timed


def _model(n_classes: int, channels: int, seed: int):
    import keras

    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((None, channels)),
            keras.layers.Masking(),
            keras.layers.LSTM(64),
            keras.layers.Dense(n_classes, activation="softmax"),
        ],
        name="user_lstm",
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def measure(work: Path, epochs: int, reps: int, warm_up: bool = True) -> dict[str, Any]:
    import mlflow

    import losstrace.keras

    p, ds, _ = prepare(work / "data", {"train.epochs": epochs})
    n_classes, channels = len(ds.labels), ds.featurizer.channels
    x, y, val = ds.x["train"], ds.y["train"], (ds.x["val"], ds.y["val"])
    store = work / "store"
    store.mkdir(parents=True, exist_ok=True)

    def fit(recorder: str) -> float:
        model = _model(n_classes, channels, p.base.seed)
        cwd = os.getcwd()
        os.chdir(store)
        try:
            if recorder == "losstrace":
                losstrace.keras.autolog(summary=False)
            elif recorder == "mlflow_autolog":
                mlflow.set_tracking_uri(f"sqlite:///{store / 'mlflow-autolog.db'}")
                mlflow.keras.autolog(log_models=False, silent=True)
            with contextlib.redirect_stderr(io.StringIO()):
                seconds, _ = timed(
                    lambda: model.fit(
                        x, y, batch_size=p.train.batch_size, epochs=epochs, validation_data=val, verbose=0
                    )
                )
            losstrace.keras.flush()  # the run's upload, after fit returned: not counted, not left to the next arm
        finally:
            losstrace.keras.autolog(disable=True)
            mlflow.keras.autolog(disable=True)
            os.chdir(cwd)
        return seconds

    for arm in ("bare", "losstrace", "mlflow_autolog") if warm_up else ():  # one-off imports and store creation
        fit(arm)
    times = interleave({arm: (lambda arm=arm: fit(arm)) for arm in ("bare", "losstrace", "mlflow_autolog")}, reps)
    return {
        "keras_overhead_epochs": epochs,
        "keras_overhead_reps": reps,
        "keras_bare_fit_seconds": median(times["bare"]),
        "keras_callback_fit_seconds": median(times["losstrace"]),
        "mlflow_autolog_fit_seconds": median(times["mlflow_autolog"]),
        "keras_callback_overhead_ratio": paired_ratio(times["losstrace"], times["bare"]),
        "mlflow_autolog_overhead_ratio": paired_ratio(times["mlflow_autolog"], times["bare"]),
    }
