"""What a training leaves behind: per-batch, per-epoch and per-layer rows, and how an epoch is logged.

Built by the recording callback, committed by the resume backup, turned into the run's
files (record/run_files.py) at the end. Plain rows, so a resumed run can log an epoch
from the records alone.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from losstrace.record import contract


@dataclass
class Divergence:
    epoch: int
    batch: int
    loss: float


@dataclass
class Recorder:
    """What training leaves behind for history.csv, batches.csv, dynamics.csv and the run."""

    batches: list[dict] = field(default_factory=list)  # step, epoch, batch, loss, size
    epochs: list[dict] = field(default_factory=list)  # epoch, loss, val_loss, ..., lr
    dynamics: list[dict] = field(default_factory=list)  # epoch, layer, grad_norm, grad_norm_max, update_ratio
    divergence: Divergence | None = None
    seconds: float = 0.0
    kept_epoch: int | None = None  # the epoch whose weights the returned model holds
    resumed_from: int | None = None  # epochs restored from a resume backup (None: a fresh fit)
    fit_seconds: float = 0.0  # wall time of this process's model.fit, set-up and tracing included

    @classmethod
    def from_state(cls, state: dict[str, Any], completed_epochs: int) -> Recorder:
        """Records of the first `completed_epochs` epochs only: rows of an epoch that was
        recorded but not committed (killed in between) are dropped, it runs again."""

        def keep(rows: Iterable[dict]) -> list[dict]:
            return [r for r in rows if r["epoch"] < completed_epochs]

        div = state.get("divergence")
        return cls(
            keep(state.get("batches", [])),
            keep(state.get("epochs", [])),
            keep(state.get("dynamics", [])),
            Divergence(**div) if div and div["epoch"] < completed_epochs else None,
            float(state.get("seconds", 0.0)),
            state.get("kept_epoch"),
        )


def epoch_metrics(rec: Recorder, epoch: int) -> tuple[dict[str, float], list[int], list[float]]:
    """The MLflow record of one epoch: curve metrics and dynamics (step=epoch), and the
    true per-batch losses (step=global batch step). Built from the Recorder alone, so a
    resumed run can log an epoch that was committed but never logged. Records are in
    epoch order, so this reads from the end: the usual call (the epoch just finished)
    costs the epoch's own rows, not the whole run's."""
    row = next(r for r in reversed(rec.epochs) if r["epoch"] == epoch)
    metrics = {k: v for k, v in row.items() if k != "epoch"}
    for d in _epoch_rows(rec.dynamics, epoch):
        for series in contract.DYNAMICS_SERIES:
            metrics[contract.dynamics_metric(series, d["layer"])] = d[series]
    rows = _epoch_rows(rec.batches, epoch)
    return metrics, [r["step"] for r in rows], [r["loss"] for r in rows]


def _epoch_rows(rows: list[dict], epoch: int) -> list[dict]:
    """The rows of `epoch` from a list sorted by epoch, scanning back from the end."""
    out: list[dict] = []
    for r in reversed(rows):
        if r["epoch"] < epoch:
            break
        if r["epoch"] == epoch:
            out.append(r)
    return out[::-1]


def log_epoch(logger, rec: Recorder, epoch: int, skip_batch_steps: frozenset[int] = frozenset()) -> None:
    """Two MLflow calls per epoch: batch losses first, curve metrics last, so a run that
    has `loss` at step e has all of epoch e (what resume checks)."""
    metrics, steps, losses = epoch_metrics(rec, epoch)
    kept = [(s, v) for s, v in zip(steps, losses) if s not in skip_batch_steps]
    if kept:
        logger.log_series(contract.BATCH_LOSS, [s for s, _ in kept], [v for _, v in kept])
    logger.log_metrics(metrics, step=epoch)
