"""Training progress on stderr: a bar on a terminal, one plain line per epoch elsewhere.

A training can take minutes; without this the stage is silent until it ends. The
callback only reads the logs Keras hands every callback: it draws no random numbers
and changes no weight, so the recorded curves are the same with or without it. It
writes to stderr so stdout keeps only the stage's result line.
"""

from __future__ import annotations

import math
import sys
import time
from typing import IO, Any

import keras


def clock(seconds: float) -> str:
    """`42s`, `3m05s` or `1h02m`: short enough for a progress line."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _num(logs: dict[str, Any], key: str) -> str:
    value = logs.get(key)
    return "-" if value is None else f"{float(value):.4f}"


class Progress(keras.callbacks.Callback):
    """Per-epoch progress and a closing summary line, on `stream` (default: stderr).

    On a terminal a tqdm bar over the epochs; otherwise (CI logs, files) one line per
    epoch, so a log shows how far a killed job got.
    """

    def __init__(self, epochs: int, stream: IO[str] | None = None, tty: bool | None = None):
        super().__init__()
        self.epochs = epochs
        self.stream = stream if stream is not None else sys.stderr
        self.tty = tty if tty is not None else bool(getattr(self.stream, "isatty", lambda: False)())
        self._bar = None
        self._t0 = 0.0
        self._first: int | None = None  # first epoch of this fit (a resumed one starts later)
        self._last: dict[str, Any] = {}
        self._best: tuple[float, int] | None = None  # (val loss, 1-based epoch)
        self._done = 0

    def on_train_begin(self, logs=None):
        self._t0 = time.perf_counter()
        if self.tty:
            from tqdm import tqdm

            # Epochs are seconds apart: draw every update (mininterval 0), clear the bar at the
            # end. disable=False: the terminal was checked above, and a TQDM_DISABLE left by a
            # data loader run in the same process (aeon's is silenced that way) must not hide it.
            self._bar = tqdm(
                total=self.epochs,
                file=self.stream,
                unit="epoch",
                desc="train",
                leave=False,
                mininterval=0,
                disable=False,
            )

    def on_epoch_begin(self, epoch, logs=None):
        if self._first is None:
            self._first = epoch
            if self._bar is not None:
                self._bar.update(epoch)  # epochs restored by a resume count as done

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        self._last, self._done = logs, epoch + 1
        val = logs.get("val_loss")
        if val is not None and math.isfinite(float(val)) and (self._best is None or float(val) < self._best[0]):
            self._best = (float(val), epoch + 1)
        elapsed = time.perf_counter() - self._t0
        ran = epoch + 1 - (self._first or 0)
        left = elapsed / max(ran, 1) * (self.epochs - epoch - 1)
        numbers = f"loss {_num(logs, 'loss')}, val loss {_num(logs, 'val_loss')}"
        if self._bar is not None:
            self._bar.set_postfix_str(numbers, refresh=False)
            self._bar.update(1)
        else:
            print(
                f"train: epoch {epoch + 1}/{self.epochs}: {numbers}, {clock(elapsed)} elapsed, ~{clock(left)} left",
                file=self.stream,
                flush=True,
            )

    def on_train_end(self, logs=None):
        if self._bar is not None:
            self._bar.close()
        print(self.summary(time.perf_counter() - self._t0), file=self.stream, flush=True)

    def summary(self, seconds: float) -> str:
        """`train: 6/6 epochs in 41s; best val loss 0.1234 at epoch 5; final val accuracy 0.9500`."""
        ended = "" if self._done >= self.epochs else " (stopped early)"
        parts = [f"train: {self._done}/{self.epochs} epochs in {clock(seconds)}{ended}"]
        if self._best is not None:
            parts.append(f"best val loss {self._best[0]:.4f} at epoch {self._best[1]}")
        if self._last.get("val_accuracy") is not None:
            parts.append(f"final val accuracy {float(self._last['val_accuracy']):.4f}")
        return "; ".join(parts)
