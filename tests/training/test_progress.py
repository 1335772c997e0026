"""Training progress: a line per epoch off a terminal, a tqdm bar on one, a closing
summary, and no effect on the recorded curves. Real Keras on shrunk runs."""

from __future__ import annotations

import io

import numpy as np

from losstrace.record import run_files
from losstrace.stages import train
from losstrace.training import progress
from support import shrunk


def _fit(p, prepared):
    train.seed_everything(p.base.seed)
    return train.run(p, train.load_dataset(p, prepared))


def test_progress_leaves_the_recorded_curves_byte_identical(prepared, monkeypatch, capsys):
    p = shrunk(epochs=3)
    _, shown = _fit(p, prepared)
    assert capsys.readouterr().err.count("train: epoch ") == 3  # it was attached and spoke
    import keras

    monkeypatch.setattr(progress, "Progress", lambda epochs: keras.callbacks.Callback())
    _, silent = _fit(p, prepared)
    assert capsys.readouterr().err == ""
    # history.csv and batches.csv as the train stage writes them
    for frame, rows in ((run_files.history_frame, "epochs"), (run_files.batches_frame, "batches")):
        assert frame(getattr(shown, rows)).to_csv(index=False) == frame(getattr(silent, rows)).to_csv(index=False)


def _tiny_fit(callback, epochs: int = 3) -> None:
    import keras

    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).normal(size=(64, 5, 2)).astype("float32")
    y = (x.sum(axis=(1, 2)) > 0).astype("int32")
    model = keras.Sequential([keras.Input((5, 2)), keras.layers.LSTM(4), keras.layers.Dense(2, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, validation_split=0.25, epochs=epochs, batch_size=16, verbose=0, callbacks=[callback])


def test_a_plain_line_per_epoch_off_a_terminal_then_a_summary():
    out = io.StringIO()
    _tiny_fit(progress.Progress(3, stream=out, tty=False))
    lines = out.getvalue().splitlines()
    assert [ln.split(":")[1].strip() for ln in lines[:3]] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"]
    assert all(", val loss " in ln and " elapsed, ~" in ln and ln.endswith(" left") for ln in lines[:3])
    assert len(lines) == 4 and lines[3].startswith("train: 3/3 epochs in ")
    assert "best val loss " in lines[3] and "final val accuracy " in lines[3]


def test_a_bar_on_a_terminal_with_the_losses_and_the_same_summary():
    out = io.StringIO()
    _tiny_fit(progress.Progress(3, stream=out, tty=True))
    text = out.getvalue()
    assert "\r" in text and "3/3" in text and "loss " in text and "val loss " in text  # tqdm redraws one line
    assert "train: epoch" not in text  # no plain lines on a terminal
    assert text.splitlines()[-1].startswith("train: 3/3 epochs in ")


def test_clock_is_short():
    assert [progress.clock(s) for s in (4.4, 65, 3725)] == ["4s", "1m05s", "1h02m"]
