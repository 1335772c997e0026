"""Run the real stages for a given configuration in a throwaway workspace.

Shared by `bisect` (one trial per single change), `fix` and the gallery (each classic
problem). Runs are recorded in the caller's MLflow store; the user's workspace and dvc.lock
are never touched. TensorFlow is never imported here: the stages run in a long-lived worker
process (trial_worker.py: one TensorFlow import for every trial, fresh Keras state before
each training), in a process per stage (the fallback when the worker dies, and distributed
trainings), or in this process (tests, which already hold TensorFlow).

A `Session` is what the trials of one command share: the worker, and the prepared splits and
validation results by key (trial_data.py), so ingest and validate run once per distinct
`data.*` / `validate.*` configuration, not once per trial.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from losstrace import params as params_mod
from losstrace.explain.symptoms import curve_features
from losstrace.params import Params
from losstrace.record import store
from losstrace.workflows import trial_data, trial_worker

# Where the stages of a trial run.
WORKER, PROCESS, INPROCESS = "worker", "process", "inprocess"


@dataclass
class Outcome:
    """What one replayed training left: its run, curve features and finding codes.

    `reused`: the stages whose outputs an earlier trial of the session made (ingest,
    validate); `runner`: where train ran (worker, process, inprocess); `seconds`: the trial's
    wall time; `fit_seconds`: its model.fit's (reports/train/run.json).
    """

    run_id: str | None = None
    features: dict[str, Any] = field(default_factory=dict)
    codes: list[str] = field(default_factory=list)
    error: str | None = None
    reports: Path | None = None
    reused: list[str] = field(default_factory=list)
    runner: str | None = None
    seconds: float | None = None
    fit_seconds: float | None = None


def _absolute_vectors(p: Params, root: Path | None) -> Params:
    path = p.train.model.embedding.pretrained
    if not path or root is None or Path(path).is_absolute() or not (Path(root) / path).exists():
        return p
    emb = dataclasses.replace(p.train.model.embedding, pretrained=str((Path(root) / path).resolve()))
    return dataclasses.replace(
        p, train=dataclasses.replace(p.train, model=dataclasses.replace(p.train.model, embedding=emb))
    )


class Session:
    """What the trials of one command share: a scratch dir holding the prepared splits and
    validation results by key, and the runner of the stages (the worker, started on first use).

    mode: `worker` (default), `process` (a new `losstrace` process per stage) or `inprocess`.
    If the worker dies, one warning line says so and the session goes on with a process per
    stage, starting with the stage the worker died in.
    """

    def __init__(self, mode: str = WORKER, keep: bool = False):
        if mode not in (WORKER, PROCESS, INPROCESS):
            raise ValueError(f"unknown trial runner {mode!r}")
        self.mode, self.keep = mode, keep
        self.dir = Path(tempfile.mkdtemp(prefix="losstrace-trials-"))
        self.worker: trial_worker.Worker | None = None

    def prepared_dir(self, key: str) -> Path:
        return self.dir / "prepared" / key[:16]

    def validated_dir(self, key: str) -> Path:
        return self.dir / "validate" / key[:16]

    def run(self, argv: list[str], cwd: Path, env: dict[str, str], fresh_process: bool = False) -> tuple[int, str, str]:
        """One stage: (exit code, its stderr, where it ran)."""
        if self.mode == INPROCESS:
            return (*trial_worker.run_captured(argv, cwd, env), INPROCESS)
        if self.mode == WORKER and not fresh_process:
            try:
                if self.worker is None:
                    self.worker = trial_worker.Worker(env, self.dir / "worker")
                return (*self.worker.run(argv, cwd, env), WORKER)
            except trial_worker.WorkerDied as e:
                if self.worker is not None:
                    self.worker.close()
                self.worker, self.mode = None, PROCESS
                print(f"warning: {e}; the trials go on with a new process per stage", file=sys.stderr)
        return (*trial_worker.run_process(argv, cwd, env), PROCESS)

    def close(self) -> None:
        if self.worker is not None:
            self.worker.close()
            self.worker = None
        if not self.keep:
            shutil.rmtree(self.dir, ignore_errors=True)


class Workspace:
    """A temp project dir per training; prepared data and validation come from the session.

    session: shared with other workspaces of the same command (the gallery's cases and their
    bisects); without one the workspace makes its own and closes it with itself.
    """

    def __init__(
        self,
        store_uri: str,
        kind: str,
        parent_id: str | None = None,
        keep: bool = False,
        inprocess: bool = False,
        session: Session | None = None,
    ):
        self.dir = Path(tempfile.mkdtemp(prefix=f"losstrace-{kind}-"))
        self.keep = keep
        self._own_session = session is None
        # In-process runs share one TensorFlow import with the caller (tests); otherwise the worker.
        self.session = session or Session(INPROCESS if inprocess else WORKER, keep=keep)
        # The store is configuration (every stage reads it from the environment); the run's
        # kind and parent are arguments of the train stage.
        self.env = {**os.environ, "MLFLOW_TRACKING_URI": store_uri, "MLFLOW_EXPERIMENT_NAME": store.experiment_name()}
        self.kind, self.parent_id = kind, parent_id
        self._count = 0

    def train(self, p: Params, source_root: Path | None = None, data_seed: int | None = None) -> Outcome:
        """ingest → validate → train for `p`; validate's error findings do not stop the run.

        data_seed: split the data with this seed instead of p.base.seed (another training
        seed on the same split). A relative pretrained-vectors path is the user's, resolved
        against source_root: the stages run in the temp workspace. Ingest and validate run
        only when no earlier trial of the session had the same key (trial_data.py).
        """
        start = time.perf_counter()
        self._count += 1
        work = self.dir / f"run{self._count}"
        work.mkdir()
        p = _absolute_vectors(p, source_root)
        (work / "params.yaml").write_text(yaml.safe_dump(params_mod.to_nested(p), sort_keys=False))
        out = Outcome()
        root = source_root or work
        seed = p.base.seed if data_seed is None else data_seed
        data_key = trial_data.prepared_key(p.data, seed, root)
        prepared = self._prepared(p, seed, data_key, work, root, out)
        validate_dir = self._validated(p, data_key, prepared, work, out)
        reports = work / "reports" / "train"
        train_args = ["--prepared", str(prepared), "--validate", str(validate_dir), "--models", str(work / "models")]
        train_args += ["--reports", str(reports), "--run-kind", self.kind]
        # A distributed training sets up TensorFlow's devices and collectives for itself: its own process.
        out.runner = self._stage(
            out,
            work,
            "train",
            *train_args,
            *(("--parent-run", self.parent_id) if self.parent_id else ()),
            fresh_process=p.train.distribute != "none",
        )
        out.seconds = round(time.perf_counter() - start, 3)
        if out.error:
            return out
        out.reports = reports
        run = json.loads((reports / "run.json").read_text())
        out.run_id, out.fit_seconds = run["run_id"], run.get("fit_seconds")
        context = json.loads((reports / "context.json").read_text())
        diagnosis = json.loads((reports / "diagnosis.json").read_text())
        out.features = curve_features(
            pd.read_csv(reports / "history.csv"), pd.read_csv(reports / "batches.csv"), context, p.diagnose
        )
        out.codes = sorted({f["code"] for f in diagnosis["findings"] if f["severity"] in ("warning", "error")})
        return out

    def _prepared(self, p: Params, seed: int, key: str, work: Path, root: Path, out: Outcome) -> Path:
        prepared = self.session.prepared_dir(key)
        if prepared.exists():
            out.reused.append("ingest")
            return prepared
        ingest_params = work / "ingest.yaml"
        split = dataclasses.replace(p, base=dataclasses.replace(p.base, seed=seed))
        ingest_params.write_text(yaml.safe_dump(params_mod.to_nested(split), sort_keys=False))
        self._stage(out, root, "ingest", "--params", str(ingest_params), "--out", str(prepared), params=False)
        return prepared

    def _validated(self, p: Params, data_key: str, prepared: Path, work: Path, out: Outcome) -> Path:
        """Validate's outputs for these splits and validate.* params; an error finding is
        published and does not stop the trial (the training shows what it does)."""
        validate_dir = self.session.validated_dir(trial_data.validated_key(data_key, p))
        if out.error:
            return validate_dir
        if validate_dir.exists():
            out.reused.append("validate")
            return validate_dir
        self._stage(out, work, "validate", "--prepared", str(prepared), "--out", str(validate_dir), ok=(0, 1))
        return validate_dir

    def _stage(
        self,
        out: Outcome,
        cwd: Path,
        stage: str,
        *args: str,
        ok: tuple[int, ...] = (0,),
        params: bool = True,
        fresh_process: bool = False,
    ) -> str | None:
        """Run one stage unless the trial already failed; returns where it ran."""
        if out.error:
            return None
        argv = [stage, *(("--params", str(cwd / "params.yaml")) if params else ()), *args]
        code, stderr, runner = self.session.run(argv, cwd, self.env, fresh_process=fresh_process)
        if code not in ok:
            lines = [ln for ln in stderr.splitlines() if ln.startswith("error:")] or stderr.splitlines()[-1:]
            out.error = f"{stage}: {lines[0] if lines else f'exit {code}'}"
        return runner

    def close(self) -> None:
        if self._own_session:
            self.session.close()
        if not self.keep:
            shutil.rmtree(self.dir, ignore_errors=True)
