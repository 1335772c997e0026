"""Run the real stages for a given configuration in a throwaway workspace.

Shared by `bisect` (one trial per single change) and the gallery (each classic
problem). Stages run as subprocesses of this Python, so TensorFlow is never
imported here and every run gets a clean process and seed; runs are recorded in
the caller's MLflow store. The user's workspace and dvc.lock are never touched.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from losstrace import params as params_mod
from losstrace.explain.symptoms import curve_features
from losstrace.params import Params
from losstrace.record import store


@dataclass
class Outcome:
    """What one replayed training left: its run, curve features and finding codes."""

    run_id: str | None = None
    features: dict[str, Any] = field(default_factory=dict)
    codes: list[str] = field(default_factory=list)
    error: str | None = None
    reports: Path | None = None


def _absolute_vectors(p: Params, root: Path | None) -> Params:
    path = p.train.model.embedding.pretrained
    if not path or root is None or Path(path).is_absolute() or not (Path(root) / path).exists():
        return p
    emb = dataclasses.replace(p.train.model.embedding, pretrained=str((Path(root) / path).resolve()))
    return dataclasses.replace(
        p, train=dataclasses.replace(p.train, model=dataclasses.replace(p.train.model, embedding=emb))
    )


class Workspace:
    """A temp project dir; prepared data is shared between runs with the same data params."""

    def __init__(
        self, store_uri: str, kind: str, parent_id: str | None = None, keep: bool = False, inprocess: bool = False
    ):
        self.dir = Path(tempfile.mkdtemp(prefix=f"losstrace-{kind}-"))
        self.keep = keep
        # In-process runs share one TensorFlow import (tests); subprocesses isolate each run (CLI).
        self.inprocess = inprocess
        # The store is configuration (every stage reads it from the environment); the run's
        # kind and parent are arguments of the train stage.
        self.env = {**os.environ, "MLFLOW_TRACKING_URI": store_uri, "MLFLOW_EXPERIMENT_NAME": store.experiment_name()}
        self.kind, self.parent_id = kind, parent_id
        self._count = 0

    def train(self, p: Params, source_root: Path | None = None, data_seed: int | None = None) -> Outcome:
        """ingest → validate → train for `p`; validate's error findings do not stop the run.

        data_seed: split the data with this seed instead of p.base.seed (another training
        seed on the same split). A relative pretrained-vectors path is the user's, resolved
        against source_root: the stages run in the temp workspace.
        """
        self._count += 1
        work = self.dir / f"run{self._count}"
        work.mkdir()
        p = _absolute_vectors(p, source_root)
        (work / "params.yaml").write_text(yaml.safe_dump(params_mod.to_nested(p), sort_keys=False))
        out = Outcome()
        prepared = self._prepared(p, work, source_root or work, out, data_seed)
        if out.error:
            return out
        validate_dir = work / "reports" / "validate"
        self._stage(out, work, "validate", "--prepared", str(prepared), "--out", str(validate_dir), ok=(0, 1))
        reports = work / "reports" / "train"
        train_args = ["--prepared", str(prepared), "--validate", str(validate_dir), "--models", str(work / "models")]
        train_args += ["--reports", str(reports), "--run-kind", self.kind]
        self._stage(out, work, "train", *train_args, *(("--parent-run", self.parent_id) if self.parent_id else ()))
        if out.error:
            return out
        out.reports = reports
        out.run_id = json.loads((reports / "run.json").read_text())["run_id"]
        context = json.loads((reports / "context.json").read_text())
        diagnosis = json.loads((reports / "diagnosis.json").read_text())
        out.features = curve_features(
            pd.read_csv(reports / "history.csv"), pd.read_csv(reports / "batches.csv"), context, p.diagnose
        )
        out.codes = sorted({f["code"] for f in diagnosis["findings"] if f["severity"] in ("warning", "error")})
        return out

    def _prepared(self, p: Params, work: Path, source_root: Path, out: Outcome, data_seed: int | None) -> Path:
        seed = p.base.seed if data_seed is None else data_seed
        key = hashlib.sha1(json.dumps([seed, params_mod.to_nested(p.data)], sort_keys=True).encode()).hexdigest()
        prepared = self.dir / "prepared" / key[:12]
        if not prepared.exists():
            ingest_params = work / "ingest.yaml"
            split = dataclasses.replace(p, base=dataclasses.replace(p.base, seed=seed))
            ingest_params.write_text(yaml.safe_dump(params_mod.to_nested(split), sort_keys=False))
            self._stage(
                out, source_root, "ingest", "--params", str(ingest_params), "--out", str(prepared), params=False
            )
        return prepared

    def _stage(
        self, out: Outcome, cwd: Path, stage: str, *args: str, ok: tuple[int, ...] = (0,), params: bool = True
    ) -> None:
        if out.error:
            return
        argv = [stage, *(("--params", str(cwd / "params.yaml")) if params else ()), *args]
        code, stderr = self._inprocess(argv, cwd) if self.inprocess else self._subprocess(argv, cwd)
        if code not in ok:
            lines = [ln for ln in stderr.splitlines() if ln.startswith("error:")] or stderr.splitlines()[-1:]
            out.error = f"{stage}: {lines[0] if lines else f'exit {code}'}"

    def _subprocess(self, argv: list[str], cwd: Path) -> tuple[int, str]:
        r = subprocess.run(
            [sys.executable, "-m", "losstrace", *argv], cwd=cwd, env=self.env, capture_output=True, text=True
        )
        return r.returncode, r.stderr

    def _inprocess(self, argv: list[str], cwd: Path) -> tuple[int, str]:
        """The stage's own function in this process (one TensorFlow import for every trial)."""
        import contextlib
        import io

        from losstrace.errors import LosstraceError

        saved_env, saved_cwd = dict(os.environ), os.getcwd()
        err = io.StringIO()
        code = 0
        try:
            os.environ.update(self.env)
            os.chdir(cwd)
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                run_stage(argv)
        except LosstraceError as e:
            err.write(e.line() + "\n")
            code = e.exit_code
        finally:
            os.chdir(saved_cwd)
            os.environ.clear()
            os.environ.update(saved_env)
        return code, err.getvalue()

    def close(self) -> None:
        if not self.keep:
            shutil.rmtree(self.dir, ignore_errors=True)


def run_stage(argv: list[str]) -> None:
    """Run one stage from the argv `losstrace <stage> ...` would take, calling its module directly."""
    from losstrace.stages import ingest, train, validate

    stage, *rest = argv
    a = _stage_args(rest)
    if stage == "ingest":
        ingest.main(Path(a["params"]), Path(a["out"]), Path("."))
    elif stage == "validate":
        validate.main(Path(a["prepared"]), Path(a["out"]), Path(a["params"]), Path("data/labels.reference.json"))
    elif stage == "train":
        paths = [Path(a[k]) for k in ("params", "prepared", "validate", "models", "reports")]
        train.main(*paths, Path("."), kind=a.get("run-kind", "train"), parent_run_id=a.get("parent-run"))
    else:
        raise ValueError(f"replay runs ingest, validate and train, not {stage}")


def _stage_args(rest: list[str]) -> dict[str, str]:
    """`--key value` pairs (replay builds these argvs itself, always in pairs)."""
    return {rest[i][2:]: rest[i + 1] for i in range(0, len(rest), 2)}
