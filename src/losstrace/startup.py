"""Process start-up for anything that runs the stages: the CLI and the trial worker.

Both must start TensorFlow the same way, or a trial in the worker would not equal the same
stage run from the command line: the environment TensorFlow reads once at import, and the
import of Keras without the scikit-learn it never needs here.
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping


def quiet_tf(env: MutableMapping[str, str] | None = None) -> None:
    """Defaults TensorFlow and Great Expectations read at import (os.environ unless `env` given)."""
    env = os.environ if env is None else env
    # Keep TF's C++ start-up chatter out of stage logs.
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # oneDNN kernels round differently on different CPU instruction sets; off, the same
    # params and data give the same bytes on every x86 machine (costs little for RNNs).
    env.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    env.setdefault("GX_ANALYTICS_ENABLED", "false")


class KerasWithoutSklearn:
    """While Keras itself is being imported, scikit-learn looks absent; afterwards it is not.

    Keras imports scikit-learn (1-2 s of a stage's start-up) only for its sklearn wrappers,
    which no stage uses, and runs without it when it is not installed. A meta path finder
    that declines only during Keras' own import keeps scikit-learn importable for anything
    else in the process, and leaves a stage that stops before Keras (lint) untouched.
    """

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        keras = sys.modules.get("keras")
        loading_keras = keras is not None and getattr(getattr(keras, "__spec__", None), "_initializing", False)
        if loading_keras and (name == "sklearn" or name.startswith("sklearn.")):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)


def lean_keras() -> None:
    """For the stages that load Keras: skip what Keras imports but no stage uses."""
    if not any(isinstance(f, KerasWithoutSklearn) for f in sys.meta_path):
        sys.meta_path.insert(0, KerasWithoutSklearn())
