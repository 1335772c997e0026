"""The measured gradient noise scale on real TensorFlow: right on a problem whose noise scale is
computed by brute force, batch-independent on the bundled data, and invisible when off."""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pandas as pd
import pytest

from losstrace.record import contract, run_files
from losstrace.stages import train
from losstrace.training.callbacks import RecordingCallback
from losstrace.training.noise_scale import estimates
from losstrace.training.recorder import Recorder
from support import shrunk

# Each measurement is unbiased; over these ~250 the estimate of B_simple landed within 9 % of
# the truth on both problems for seeds 0-3 (0.1-9 %; tr(Σ) and |G|² alone within 8 %), so
# 15 % leaves room for scatter while a bias fails it: the micro-batch size off by 2 in tr(Σ)'s
# formula doubles it, and |g_big|² taken for |G|² reads 40-90 % high on these problems.
TOLERANCE = 0.15


def _per_example_gradients(kind: str, x: np.ndarray, y: np.ndarray, w: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Each row's gradient of its own loss, flattened (kernel then bias), by hand."""
    z = x @ w + bias
    if kind == "mse":  # Keras' MSE of one output: (z - y)²
        r = 2 * (z - y)
    else:  # softmax regression under sparse categorical cross-entropy: softmax(z) - onehot(y)
        p = np.exp(z - z.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        r = p - np.eye(w.shape[1])[y[:, 0]]
    return np.concatenate([(x[:, :, None] * r[:, None, :]).reshape(len(x), -1), r], axis=1)


def _problem(kind: str, rows: int = 4096, d: int = 8, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, d)).astype("float32")
    if kind == "mse":
        y = (x @ rng.normal(size=(d, 1)) + 2.0 * rng.normal(size=(rows, 1))).astype("float32")
        layer, loss = keras.layers.Dense(1), "mse"
    else:
        y = np.argmax(x[:, :3] + rng.gumbel(size=(rows, 3)), axis=1)[:, None].astype("int64")
        layer, loss = keras.layers.Dense(3), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((d,)), layer])
    # A learning rate of 0 keeps the weights where the brute force looks at them.
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.0), loss=loss)
    return model, x, y


@pytest.mark.parametrize("kind", ["mse", "softmax"])
def test_the_estimate_matches_the_brute_force_noise_scale(kind):
    model, x, y = _problem(kind)
    w, bias = (v.numpy().astype(np.float64) for v in model.weights)
    g = _per_example_gradients(kind, x.astype(np.float64), y, w, bias)
    true_g2 = float(np.sum(g.mean(axis=0) ** 2))  # |G|²
    true_trace = float(np.sum(g.var(axis=0)))  # tr(Σ) over the training set
    rec = Recorder()
    model.fit(
        x,
        y,
        batch_size=32,
        epochs=2,
        verbose=0,
        callbacks=[RecordingCallback(rec, len(x), 32, noise_scale_every=1)],
    )
    history = run_files.history_frame(rec.epochs)
    trace = history[contract.NOISE_TRACE].mean()
    g2 = history[contract.NOISE_SIGNAL].mean()
    assert trace == pytest.approx(true_trace, rel=TOLERANCE)
    assert g2 == pytest.approx(true_g2, rel=TOLERANCE)
    assert trace / g2 == pytest.approx(true_trace / true_g2, rel=TOLERANCE)
    assert 5 < true_trace / true_g2 < 500  # a noise scale a batch of 32 could be on either side of


def test_batches_drawn_without_replacement_from_a_small_training_set_stay_unbiased():
    """Keras draws each batch's rows without replacement from N: with N = 216 (Japanese Vowels)
    the i.i.d. formulas read |G|² low by tr(Σ)/(N-1); given N, the estimates are unbiased."""
    rng = np.random.default_rng(0)
    rows, b = 216, 16
    g = rng.normal(size=(rows, 5)) + 0.3  # per-example gradients of a training set
    true_trace, true_g2 = float(g.var(axis=0).sum()), float(np.sum(g.mean(axis=0) ** 2))
    draws = np.array([rng.permutation(rows)[: 2 * b] for _ in range(20000)])
    halves = g[draws[:, :b]].mean(axis=1), g[draws[:, b:]].mean(axis=1)
    small = (np.sum(halves[0] ** 2, axis=1) + np.sum(halves[1] ** 2, axis=1)) / 2
    big = np.sum(((halves[0] + halves[1]) / 2) ** 2, axis=1)
    trace, g2 = estimates(small.mean(), big.mean(), b, 2 * b, rows)
    assert trace == pytest.approx(true_trace, rel=0.02) and g2 == pytest.approx(true_g2, rel=0.02)
    naive = estimates(small.mean(), big.mean(), b, 2 * b)[1]
    assert naive == pytest.approx(true_g2 - true_trace / (rows - 1), rel=0.03)


def _fit(prepared, **train_kw):
    p = shrunk(**train_kw)
    train.seed_everything(p.base.seed)
    ds = train.load_dataset(p, prepared)
    model, rec = train.run(p, ds)
    return p, ds, model, rec


def test_off_leaves_the_history_columns_and_on_leaves_the_training_as_it_was(prepared):
    dropout = dataclasses.replace(shrunk().train.model, dropout=0.3)  # random masks: the state put back matters
    _, _, _, off = _fit(prepared, model=dropout)
    _, _, _, on = _fit(prepared, model=dropout, noise_scale_every=2)
    h_off, h_on = run_files.history_frame(off.epochs), run_files.history_frame(on.epochs)
    assert list(h_off.columns) == [*contract.HISTORY_COLUMNS]
    assert list(h_on.columns) == [*contract.HISTORY_COLUMNS, *contract.NOISE_SCALE_COLUMNS]
    # Same updates, same curves: measuring holds each update back and restores the state.
    pd.testing.assert_frame_equal(h_on[list(contract.HISTORY_COLUMNS)], h_off)
    assert pd.DataFrame(on.batches).equals(pd.DataFrame(off.batches))
    assert (h_on[contract.NOISE_SCALE] > 0).all()


def test_bundled_data_tells_batch_4_from_batch_64(prepared):
    """B_simple is a property of the problem, not of the batch (McCandlish et al. 2018): both
    runs measure about the same, so batch 4 sits far below it and is told to grow, while
    batch 64 is at or above it and is left alone."""
    files = {}
    for batch, epochs, every in ((4, 2, 2), (64, 4, 1)):
        p, ds, model, rec = _fit(prepared, batch_size=batch, epochs=epochs, noise_scale_every=every)
        files[batch] = train.summarise(p, ds, model, rec, [], [], "run", "title")
    small, large = (files[b].context["noise_scale"]["b_simple"] for b in (4, 64))
    assert max(small, large) / min(small, large) < 3, (small, large)
    assert small > 2 * 4 and large < 64  # the theory's verdicts on the two batches

    noisy = [f for f in files[4].diagnosis["findings"] if f["code"] == "noisy_loss"]
    assert noisy and noisy[0]["severity"] == "warning", files[4].diagnosis["findings"]
    assert noisy[0]["evidence"]["noise_scale"] == pytest.approx(small, rel=0.01)
    assert noisy[0]["suggestion"].startswith("train.batch_size: 4 → 16 (noise scale ≈ ")  # 216 rows: >= 8 steps
    assert "below it" in noisy[0]["suggestion"]
    batch = next(c for c in files[4].diagnosis["prescription"] if c["key"] == "train.batch_size")
    assert (batch["from"], batch["to"]) == (4, 16) and "measured gradient noise scale" in batch["why"]

    flagged = [f for f in files[64].diagnosis["findings"] if f["code"] == "noisy_loss" and f["severity"] != "info"]
    assert not flagged
    assert all(c["key"] != "train.batch_size" for c in files[64].diagnosis["prescription"])


def test_asking_for_more_steps_than_the_training_has_says_nothing_was_measured(prepared, capsys):
    _, _, _, rec = _fit(prepared, noise_scale_every=50)  # 2 epochs of 7 steps
    assert list(run_files.history_frame(rec.epochs).columns) == [*contract.HISTORY_COLUMNS]
    assert "train.noise_scale_every=50 measured nothing" in capsys.readouterr().err


class OwnUpdates(keras.Model):
    """A train_step that updates the weights itself, never through the optimizer's apply."""

    def train_step(self, data):
        import tensorflow as tf

        x, y = data
        with tf.GradientTape() as tape:
            loss = self.compute_loss(x=x, y=y, y_pred=self(x, training=True))
        for v, g in zip(self.trainable_variables, tape.gradient(loss, self.trainable_variables)):
            v.assign_sub(0.01 * g)
        return {"loss": loss}


def test_a_train_step_that_bypasses_the_optimizer_is_left_unmeasured():
    _, x, y = _problem("mse", rows=256)
    inputs = keras.Input((x.shape[1],))
    own = OwnUpdates(inputs, keras.layers.Dense(1)(inputs))
    own.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    rec = Recorder()
    callback = RecordingCallback(rec, len(x), 32, noise_scale_every=2)
    own.fit(x, y, batch_size=32, epochs=2, verbose=0, callbacks=[callback])
    assert callback.noise_scale_measurements == 0  # tried once, saw no capture, stopped
    assert list(run_files.history_frame(rec.epochs).columns) == [*contract.HISTORY_COLUMNS]
    assert len(rec.epochs) == 2
