"""Synthetic but realistic training curves for the explain tests.

A run is simulated per batch, like Keras records it: an exponential decay from the
chance level ln K towards a final loss, optionally time-warped by a plateau, with
per-batch sampling noise of std `sample_cv / sqrt(batch_size)` (relative; 0.6 is what real runs show: Japanese Vowels 0.37, NRC words 0.72), optional
epoch-level optimizer jitter, and a val curve that tracks train (or turns up, or
stays at chance). Epoch loss is the mean of its batches, as Keras reports it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest

from losstrace.record.run_record import RunRecord


def simulate(
    *,
    epochs: int = 40,
    batch_size: int = 32,
    train_rows: int = 2048,
    n_classes: int = 5,
    lr: float = 0.001,
    optimizer: str = "adam",
    final_share: float = 0.15,
    tau: float = 6.0,
    sample_cv: float = 0.6,
    epoch_jitter: float = 0.0,
    plateau: tuple[int, int] | None = None,
    stuck: bool = False,
    stuck_level: float | None = None,
    val_gap: float = 0.08,
    val_noise: float = 0.015,
    overfit_at: int | None = None,
    overfit_rate: float = 0.04,
    val_stuck: bool = False,
    nan_at: int | None = None,
    explode_at: int | None = None,
    seed: int = 0,
    with_batches: bool = True,
    params: dict[str, Any] | None = None,
    predictions: dict[str, Any] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """(history, batches, context) of one simulated run; see the module docstring."""
    rng = np.random.default_rng(seed)
    steps = max(1, train_rows // batch_size)
    init = math.log(n_classes)
    final = init * final_share
    sigma = sample_cv / math.sqrt(batch_size)

    def trend(t: np.ndarray) -> np.ndarray:
        if stuck:
            return np.full_like(t, stuck_level if stuck_level is not None else init)
        te = t.copy()
        if plateau:
            p0, plen = plateau
            te = np.where(t < p0, t, np.where(t < p0 + plen, p0, t - plen))
        return final + (init - final) * np.exp(-te / tau)

    step = np.arange(epochs * steps)
    epoch = step // steps
    t = step / steps
    level = trend(t)
    factor = np.exp(epoch_jitter * rng.standard_normal(epochs) - epoch_jitter**2 / 2)[epoch]
    noise = np.exp(sigma * rng.standard_normal(step.size) - sigma**2 / 2)
    # An epoch's batches partition the train set, so their sampling noise cancels in the
    # epoch mean: centre it per epoch (Keras' epoch loss does not carry batch sampling noise).
    noise = noise - pd.Series(noise).groupby(epoch).transform("mean").to_numpy() + 1.0
    loss = level * factor * noise
    if explode_at is not None:
        loss = np.where(epoch >= explode_at, loss * 50.0, loss)
    if nan_at is not None:
        loss = np.where(epoch >= nan_at, np.nan, loss)
    batches = pd.DataFrame(
        {"step": step, "epoch": epoch, "batch": step % steps, "loss": loss, "size": np.full(step.size, batch_size)}
    )

    ep = np.arange(epochs)
    train_loss = batches.groupby("epoch")["loss"].mean().to_numpy()
    val = trend(ep + 1.0) * (1 + val_gap)
    if overfit_at is not None:
        val = val + init * overfit_rate * np.maximum(0, ep - overfit_at)
    if val_stuck:
        val = init * (1.02 + 0.004 * ep)
    val = val * (1 + val_noise * rng.standard_normal(epochs))
    if nan_at is not None:
        val = np.where(ep >= nan_at, np.nan, val)
    acc = 1 / n_classes + (1 - 1 / n_classes) * np.clip(1 - train_loss / init, 0, 1)
    vacc = 1 / n_classes + (1 - 1 / n_classes) * np.clip(1 - val / init, 0, 1)
    history = pd.DataFrame(
        {
            "epoch": ep,
            "loss": train_loss,
            "val_loss": val,
            "accuracy": acc,
            "val_accuracy": vacc,
            "lr": np.full(epochs, lr),
        }
    )
    context = {
        "n_classes": n_classes,
        "class_shares": {f"c{i}": 1 / n_classes for i in range(n_classes)},
        "batch_size": batch_size,
        "train_rows": steps * batch_size,
        "multilabel": False,
        "params": {
            "train.batch_size": batch_size,
            "train.learning_rate": lr,
            "train.optimizer": optimizer,
            "train.model.dropout": 0.0,
            "train.model.rnn.dropout": 0.0,
            "data.shuffle": True,
            "train.output_activation": "softmax",
            "train.loss": "sparse_categorical_crossentropy",
            "train.epochs": epochs,
            "train.clipnorm": 0.0,
            "base.seed": seed,
            **(params or {}),
        },
    }
    if predictions is not None:
        context["predictions"] = predictions
    return history, (batches if with_batches else batches.iloc[0:0]), context


def fingerprint(
    *,
    clustered: bool = False,
    rows: int = 2048,
    n_classes: int = 5,
    content: str = "c0",
    order_seed: int = 0,
    shares: list[float] | None = None,
    label_map: str = "L0",
) -> dict[str, Any]:
    """A fingerprint.json-shaped dict; `content` names the row set, `order_seed` their order."""
    shares = shares or [1 / n_classes] * n_classes
    counts = {f"c{i}": int(round(s * rows)) for i, s in enumerate(shares)}

    def split(n: int, name: str) -> dict[str, Any]:
        z = -40.0 if clustered and name == "train" else 0.3 - 0.1 * order_seed
        return {
            "rows": n,
            "class_counts": {k: int(v * n / rows) for k, v in counts.items()},
            "order": {"runs_z": z, "adjacent_same_rate": 0.98 if z < -3 else 1 / n_classes, "clustered": z < -3},
            "length": {"p0": 5, "p50": 20, "p90": 35, "p100": 40},
            "content_hash": f"{content}-{name}",
            "ordered_hash": f"{content}-{name}-{'sorted' if clustered and name == 'train' else order_seed}",
        }

    return {
        "train": split(rows, "train"),
        "val": split(rows // 4, "val"),
        "test": split(rows // 4, "test"),
        "label_map_hash": label_map,
    }


def record(
    run_id: str, *, fp: dict[str, Any] | None = None, env: dict[str, str] | None = None, name: str = "", **sim: Any
) -> RunRecord:
    """A RunRecord around `simulate(**sim)` with MLflow-style string params."""
    history, batches, context = simulate(**sim)
    params = {k: str(v) for k, v in context["params"].items()}
    return RunRecord(
        run_id=run_id,
        name=name or run_id,
        params=params,
        env=env
        or {
            "python": "3.11.7",
            "tensorflow": "2.21.0",
            "keras": "3.12.0",
            "numpy": "2.3.5",
            "device": "cpu",
            "determinism": "op-determinism",
        },
        fingerprint=fp if fp is not None else fingerprint(),
        history=history,
        batches=batches,
        context=context,
        findings=[],
    )


@pytest.fixture
def make_run():
    """Factory: make_run(**kwargs) -> (history, batches, context)."""
    return simulate


@pytest.fixture
def make_record():
    """Factory: make_record(run_id, fp=..., env=..., **simulate_kwargs) -> RunRecord."""
    return record


@pytest.fixture
def make_fingerprint():
    return fingerprint
