"""cuDNN vs the generic kernel for the default LSTM, on a CUDA machine.

Keras runs LSTM/GRU layers on the fused cuDNN kernel only with the default settings;
`recurrent_dropout > 0` (among others, see lint's `cudnn_ineligible`) silently falls
back to a step-by-step loop. This times both on the same data and reports the device,
so users see what the lint warning costs. On a CPU-only machine it says so and stops.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .common import UCI_GLOB, build_params, median, prepare, skipped, timed

DATA = {
    "data.source": UCI_GLOB,
    "data.header": False,
    "train.loss": "binary_crossentropy",
    "train.output_activation": "sigmoid",
}


def gpu_name() -> str | None:
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return None
    return tf.config.experimental.get_device_details(gpus[0]).get("device_name", gpus[0].name)


def _samples_per_s(p, ds, reps: int) -> float:
    import keras

    from losstrace.stages import train

    speeds = []
    for _ in range(reps):
        keras.backend.clear_session()
        train.seed_everything(p.base.seed)
        seconds, (_, rec) = timed(lambda: train.run(p, ds, None))
        speeds.append(len(ds.x["train"]) * len(rec.epochs) / seconds)
    return median(speeds)


def measure(work: Path, epochs: int, reps: int) -> dict[str, Any]:
    device = gpu_name()
    if device is None:
        return {"gpu": skipped("no GPU")}
    base = {**DATA, "train.epochs": epochs, "train.device": "gpu"}
    p, ds, _ = prepare(work, base)  # the default LSTM(64) of params.yaml
    no_cudnn = build_params({**base, "train.model.rnn.recurrent_dropout": 0.1})
    _samples_per_s(p, ds, 1)  # warm-up: CUDA context, cuDNN autotuning
    cudnn = _samples_per_s(p, ds, reps)
    generic = _samples_per_s(no_cudnn, ds, reps)
    return {
        "gpu": {
            "device": device,
            "model": "default LSTM(64) on UCI sentiment",
            "epochs": epochs,
            "cudnn_samples_per_s": cudnn,
            "no_cudnn_samples_per_s": generic,
            "cudnn_speedup": cudnn / generic,
        }
    }
