"""Resumable training: a train stage killed mid-epoch (SIGKILL, OOM killer, preempted
runner) resumes from its last completed epoch on the next run, in the same MLflow run,
and records every epoch exactly once.

The backup lives in `<project>/.losstrace/train-backup/`, outside every DVC output:
DVC deletes a stage's outputs before running it again, so a backup under models/
would be gone exactly when it is needed. It is removed once the stage's outputs are
published.

Keras' own `BackupAndRestore` overwrites one weights file and then a metadata file, so
a kill between (or during) the two leaves weights and epoch out of step. Here each
epoch's files get new names and a single `state.json`, replaced atomically, commits
them: a kill at any instant leaves either the old epoch or the new one, never a mix.
What is committed per epoch:
- model and optimizer variables (`weights-<E>.npz`: weights, dropout seed state, Adam
  moments, step count, learning rate),
- that epoch's records (`epoch-<e>.json`: its history row, true batch losses, dynamics),
- the state of the stateful callbacks (early stopping, ReduceLROnPlateau, and the best-
  checkpoint keeper with its best weights, `best-<e>.npz`), so patience counters and the
  best epoch survive a restart instead of starting over,
- the MLflow run id and a fingerprint of params, prepared data and the code that shapes
  model and batches: a backup made under anything else is discarded, not resumed.

MLflow is written only after an epoch is committed; on resume, committed epochs that
MLflow lacks (killed between commit and log) are logged then, and nothing else is:
each epoch appears once in the metric history.

Not restored: the state of Keras' own shuffling of in-memory arrays (`batching:
pad_to_max`), so there a resumed run is a valid run of the same config but sees other
batches than an uninterrupted one. With `batching: bucket` the batches of every epoch
are a function of (seed, epoch), and with the dropout seed state restored too, a resumed
run continues exactly as the uninterrupted one would have.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np

from losstrace import code_deps
from losstrace.io import atomic_path, read_json, write_json, write_text
from losstrace.params import Params, flatten
from losstrace.training.recorder import Divergence, Recorder, log_epoch

STATE = "state.json"
# Callback attributes that carry training progress (EarlyStopping, ReduceLROnPlateau).
CALLBACK_STATE = ("wait", "best", "best_epoch", "stopped_epoch", "cooldown_counter")


def backup_dir(root: Path, worker: int = 0) -> Path:
    """One backup per worker: under multi_worker each worker restores its own replica."""
    name = "train-backup" if worker == 0 else f"train-backup-worker{worker}"
    return root / ".losstrace" / name


def fingerprint(p: Params, prepared: Path) -> str:
    """What a backup must match to be resumed: every param (the run records them all, and
    MLflow refuses a changed value), the prepared data the stage reads, and the code that
    shapes the model and the batches."""
    h = hashlib.sha256()
    h.update(json.dumps(flatten(p), sort_keys=True, default=str).encode())
    for name in ("train.parquet", "val.parquet", "labels.json", "ingest.json"):
        path = prepared / name
        h.update(name.encode() + (path.read_bytes() if path.exists() else b"-"))
    # The train stage's own code deps: the files whose change reruns it under DVC.
    for rel in code_deps.stage_code("train"):
        h.update(rel.encode() + (code_deps.SRC.parent / rel).read_bytes())
    return h.hexdigest()


class Backup:
    """The backup directory: which run it belongs to and which epoch it holds."""

    def __init__(self, directory: Path, fp: str):
        self.dir, self.fingerprint = Path(directory), fp

    def state(self) -> dict[str, Any] | None:
        """The committed state, or None when there is none (or it is unreadable)."""
        try:
            return json.loads((self.dir / STATE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def matches(self, state: dict[str, Any] | None) -> bool:
        return bool(state) and state.get("fingerprint") == self.fingerprint

    def begin(self, run_id: str | None) -> None:
        """Start a fresh backup for `run_id` (epoch 0: nothing trained yet), so even a kill
        in the first epoch continues the same run."""
        self.clear()
        self.dir.mkdir(parents=True, exist_ok=True)
        write_json(self.dir / STATE, {"run_id": run_id, "fingerprint": self.fingerprint, "epoch": 0, "finished": False})

    def adopt(self, run_id: str | None) -> None:
        """Point a backup being resumed at the run now recording it (an offline training
        resumed once the store answers again gets a run of its own)."""
        state = self.state()
        if state is not None and state.get("run_id") != run_id:
            write_json(self.dir / STATE, {**state, "run_id": run_id})

    def clear(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
        try:
            self.dir.parent.rmdir()  # .losstrace/ itself, once no backup is left in it
        except OSError:
            pass


class ResumeCallback(keras.callbacks.BackupAndRestore):
    """`BackupAndRestore` with an atomic per-epoch commit of weights, records and callback
    state. Place it last in the callback list: its `on_epoch_end` must see the epoch as
    every other callback left it, and its `on_train_begin` must restore their state after
    they have reset themselves."""

    def __init__(
        self,
        backup: Backup,
        recorder: Recorder,
        stateful: list[keras.callbacks.Callback],
        on_commit: Callable[[int], None] | None = None,
        on_restore: Callable[[Recorder], None] | None = None,
    ):
        super().__init__(backup_dir=str(backup.dir), save_freq="epoch", delete_checkpoint=False)
        self.backup, self.rec, self.stateful = backup, recorder, stateful
        self.on_commit, self.on_restore = on_commit, on_restore
        self.start_epoch = 0  # where fit starts: the committed epoch count (epochs when finished)
        self._best_files: dict[int, str] = {}  # stateful index → its saved best weights

    # ------------------------------------------------------------------ restore

    def on_train_begin(self, logs=None):
        self._load_model()

    def _load_model(self):
        state = self.backup.state()
        if not self.backup.matches(state) or not state.get("weights"):
            return  # nothing trained yet (or not ours): start at epoch 0
        if self.model.optimizer is not None and not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        _load_state(self.model, self.backup.dir / state["weights"])
        epoch = int(state["epoch"])
        self._restore_records(state, epoch)
        self._restore_callbacks(state.get("callbacks", []))
        # A finished fit (all epochs, early stop or divergence) that died before its outputs
        # were published runs no epoch again: on_train_end still restores the best weights.
        self.start_epoch = self.params["epochs"] if state.get("finished") else epoch
        self.model._initial_epoch = self.start_epoch  # what BackupAndRestore tells fit
        self.rec.resumed_from = epoch
        if self.on_restore is not None:
            self.on_restore(self.rec)

    def _restore_records(self, state: dict[str, Any], epoch: int) -> None:
        merged: dict[str, list] = {"epochs": [], "batches": [], "dynamics": []}
        for e in range(epoch):
            part = read_json(self.backup.dir / f"epoch-{e}.json")
            for key in merged:
                merged[key] += part.get(key, [])
        restored = Recorder.from_state(
            {**merged, "seconds": state.get("seconds", 0.0), "divergence": state.get("divergence")}, epoch
        )
        self.rec.epochs[:], self.rec.batches[:], self.rec.dynamics[:] = (
            restored.epochs,
            restored.batches,
            restored.dynamics,
        )
        self.rec.seconds, self.rec.divergence = restored.seconds, restored.divergence

    def _restore_callbacks(self, saved: list[dict[str, Any]]) -> None:
        for index, (cb, values) in enumerate(zip(self.stateful, saved)):
            for key, value in values.items():
                if key == "best_weights_file":
                    with np.load(self.backup.dir / value) as npz:
                        cb.best_weights = [npz[f"w{i}"] for i in range(len(npz.files))]
                    self._best_files[index] = value
                else:
                    setattr(cb, key, value)

    # ------------------------------------------------------------------ commit

    def on_epoch_end(self, epoch, logs=None):
        self._current_epoch = epoch + 1
        self._save_model()
        if self.on_commit is not None:
            self.on_commit(epoch)

    def on_train_end(self, logs=None):
        state = self.backup.state()
        if self.backup.matches(state):
            write_json(self.backup.dir / STATE, {**state, "finished": True})

    def _save_model(self):
        """Write the epoch's files under new names, then switch state.json to them."""
        d, epoch = self.backup.dir, self._current_epoch
        d.mkdir(parents=True, exist_ok=True)
        done = epoch - 1
        rows = {
            key: [r for r in getattr(self.rec, key) if r["epoch"] == done] for key in ("epochs", "batches", "dynamics")
        }
        write_text(d / f"epoch-{done}.json", json.dumps(rows))  # key order kept: it is the csv column order
        weights = f"weights-{epoch}.npz"
        _save_state(self.model, d / weights)
        old = self.backup.state() or {}
        div = self.rec.divergence
        state = {
            "run_id": old.get("run_id"),
            "fingerprint": self.backup.fingerprint,
            "epoch": epoch,
            "finished": False,
            "weights": weights,
            "seconds": self.rec.seconds,
            "divergence": div.__dict__ if isinstance(div, Divergence) else None,
            "callbacks": [self._callback_state(i, cb) for i, cb in enumerate(self.stateful)],
        }
        write_json(d / STATE, state)  # the commit: atomic (temp file, then rename)
        self._prune(state)

    def _callback_state(self, index: int, cb) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for key in CALLBACK_STATE:
            v = getattr(cb, key, None)
            if v is not None:
                values[key] = float(v) if key == "best" else int(v)
        if getattr(cb, "restore_best_weights", False) and getattr(cb, "best_weights", None) is not None:
            name = f"best-{index}-{values.get('best_epoch', 0)}.npz"
            if self._best_files.get(index) != name:  # the best epoch changed: save its weights once
                _savez(self.backup.dir / name, {f"w{i}": w for i, w in enumerate(cb.best_weights)})
                self._best_files[index] = name
            values["best_weights_file"] = name
        return values

    def _prune(self, state: dict[str, Any]) -> None:
        """Drop weight files the committed state no longer names (epoch records stay)."""
        keep = {state["weights"], *(c.get("best_weights_file") for c in state["callbacks"])}
        for path in self.backup.dir.iterdir():
            if path.suffix == ".npz" and path.name not in keep:
                path.unlink(missing_ok=True)


def _save_state(model, path: Path) -> None:
    """Model variables (weights and the dropout seed state) and optimizer variables (moments,
    step count, learning rate), in their fixed order: a plain npz is ~25x faster to write
    than Keras' `save_weights`, which walks every attribute of every layer; per epoch that
    difference was 15% of a Japanese Vowels training."""
    arrays = {f"m{i}": keras.ops.convert_to_numpy(v) for i, v in enumerate(model.variables)}
    if model.optimizer is not None:
        arrays.update({f"o{i}": keras.ops.convert_to_numpy(v) for i, v in enumerate(model.optimizer.variables)})
    _savez(path, arrays)


def _load_state(model, path: Path) -> None:
    with np.load(path) as npz:
        for i, v in enumerate(model.variables):
            v.assign(npz[f"m{i}"])
        if model.optimizer is not None:
            for i, v in enumerate(model.optimizer.variables):
                v.assign(npz[f"o{i}"])


def _savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)


def reconcile(logger, rec: Recorder) -> int:
    """Log restored epochs MLflow does not have yet (killed after commit, before logging).

    Returns how many were logged. `loss` at step e means the whole epoch was logged
    (it is written last); batch losses already there are not written twice. A diverged
    epoch has no `loss` (non-finite values are never logged): its `lr` tells instead.
    """
    if logger is None or logger.offline or not rec.epochs:
        return 0  # offline: reports/ keeps every epoch and `losstrace sync` uploads what is missing
    history = logger.client.get_metric_history
    try:
        have = {m.step for m in history(logger.run_id, "loss")}
        if any(not math.isfinite(float(r.get("loss", math.nan))) for r in rec.epochs):
            have |= {m.step for m in history(logger.run_id, "lr")}
        have_batches = frozenset(m.step for m in history(logger.run_id, "batch_loss"))
    except Exception as e:
        from losstrace.record.store import is_outage

        if is_outage(e):
            return 0
        raise
    missing = [r["epoch"] for r in rec.epochs if r["epoch"] not in have]
    for epoch in missing:
        log_epoch(logger, rec, epoch, have_batches)
    return len(missing)
