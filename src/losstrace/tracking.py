"""The only module that talks to MLflow.

Nothing happens at import: the tracking URI, telemetry switch and experiment are
resolved when a run is opened. Default store: `sqlite:///<project>/mlflow.db`
with artifacts in `<project>/mlruns`; `MLFLOW_TRACKING_URI` overrides both (a
team server). One experiment per project (`MLFLOW_EXPERIMENT_NAME`, default
"losstrace").

Logging is batched: per-epoch metrics go in one call per epoch and per-batch
losses in one call per epoch, so tracking costs a few percent of training at most.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import LosstraceError

DEFAULT_EXPERIMENT = "losstrace"
KIND_TAG = "losstrace.kind"  # train | bisect | bisect-trial
_MAX_BATCH = 1000  # MLflow's limit on metrics per log_batch call


def _quiet_env() -> None:
    # No network here and none wanted: telemetry off before MLflow is imported.
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def tracking_uri(root: Path = Path(".")) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(root / 'mlflow.db').resolve()}"


def experiment_name() -> str:
    return os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT


def client(uri: str):
    _quiet_env()
    import logging

    from mlflow.tracking import MlflowClient

    # MLflow logs store migrations at INFO on every new SQLite file: noise in stage output.
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    return MlflowClient(tracking_uri=uri)


def existing_store(root: Path) -> str:
    """The tracking URI for read-only commands; a missing local store is an error, not a new empty DB."""
    uri = tracking_uri(root)
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).exists():
        raise LosstraceError(uri[len("sqlite:///"):], "no MLflow store here, so no losstrace runs recorded",
                             "run `dvc repro` first, or set MLFLOW_TRACKING_URI")
    return uri


def _experiment_id(c, uri: str, root: Path) -> str:
    name = experiment_name()
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = (root / "mlruns").resolve().as_uri() if uri.startswith("sqlite:") else None
    return c.create_experiment(name, artifact_location=location)


class RunLogger:
    """A handle on one MLflow run; every call names the run explicitly (no global state)."""

    def __init__(self, c, run_id: str, uri: str):
        self.client, self.run_id, self.uri = c, run_id, uri

    def log_params(self, flat: dict[str, Any]) -> None:
        from mlflow.entities import Param

        params = [Param(k, _param_value(v)) for k, v in sorted(flat.items())]
        for i in range(0, len(params), 100):
            self.client.log_batch(self.run_id, params=params[i : i + 100])

    def set_tags(self, tags: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, str(v)[:5000]) for k, v in sorted(tags.items())]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, tags=items[i : i + 100])

    def log_metrics(self, values: dict[str, float], step: int) -> None:
        """One call for many metrics at the same step (per-epoch curves use step=epoch)."""
        from mlflow.entities import Metric

        ts = _now_ms()
        metrics = [Metric(k, float(v), ts, step) for k, v in values.items() if _finite(v)]
        self._log_metrics(metrics)

    def log_series(self, key: str, steps: list[int], values: list[float]) -> None:
        """A whole series (e.g. one epoch's per-batch losses) in as few calls as MLflow allows."""
        from mlflow.entities import Metric

        ts = _now_ms()
        self._log_metrics([Metric(key, float(v), ts, int(s)) for s, v in zip(steps, values) if _finite(v)])

    def _log_metrics(self, metrics: list) -> None:
        for i in range(0, len(metrics), _MAX_BATCH):
            self.client.log_batch(self.run_id, metrics=metrics[i : i + _MAX_BATCH])

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_keras_model(self, model, input_example) -> None:
        """MLflow's Keras flavour with an inferred signature, so `mlflow.pyfunc.load_model` works."""
        import mlflow
        from mlflow.models import infer_signature

        signature = infer_signature(input_example, model.predict(input_example, verbose=0))
        mlflow.set_tracking_uri(self.uri)
        with mlflow.start_run(run_id=self.run_id, nested=mlflow.active_run() is not None):
            mlflow.keras.log_model(model, name="model", signature=signature)

    def finish(self, ok: bool) -> None:
        self.client.set_terminated(self.run_id, "FINISHED" if ok else "FAILED")


@contextmanager
def start_run(root: Path, run_name: str, tags: dict[str, Any], resume_id: str | None = None,
              parent_id: str | None = None) -> Iterator[RunLogger]:
    """Open (or resume) a run; it ends FINISHED on success and FAILED on any exception."""
    uri = tracking_uri(root)
    c = client(uri)
    try:
        if resume_id:
            c.update_run(resume_id, status="RUNNING")
            run_id = resume_id
        else:
            all_tags = dict(tags)
            if parent_id:
                all_tags["mlflow.parentRunId"] = parent_id
            all_tags["mlflow.runName"] = run_name
            run_id = c.create_run(_experiment_id(c, uri, root), run_name=run_name,
                                  tags={k: str(v) for k, v in all_tags.items()}).info.run_id
    except Exception as e:  # unreachable server, locked or corrupt store
        raise LosstraceError(f"MLflow at {_redact(uri)}", f"cannot open a run: {_first_line(e)}",
                             "start the tracking server or fix MLFLOW_TRACKING_URI", exit_code=1) from None
    logger = RunLogger(c, run_id, uri)
    try:
        yield logger
    except BaseException:
        logger.finish(ok=False)
        raise
    logger.finish(ok=True)


@contextmanager
def reopen_run(root: Path, run_id: str) -> Iterator[RunLogger]:
    """Log more into an existing run (evaluate → the train run) without changing its status."""
    uri = tracking_uri(root)
    c = client(uri)
    try:
        c.get_run(run_id)
    except Exception as e:
        raise LosstraceError(f"MLflow at {_redact(uri)}", f"run {run_id} not found: {_first_line(e)}",
                             "run `dvc repro -f train` to record a fresh run", exit_code=1) from None
    yield RunLogger(c, run_id, uri)


def resolve_run(ref: str, root: Path = Path("."), kind: str = "train") -> str:
    """`latest`, `latest~N` or a run id → run id."""
    m = re.fullmatch(r"latest(?:~(\d+))?", ref)
    c = client(existing_store(root))
    if not m:
        try:
            return c.get_run(ref).info.run_id
        except Exception:
            raise LosstraceError(f"run {ref}", "no such MLflow run", "pass a run id, latest or latest~N") from None
    back = int(m.group(1) or 0)
    exp = c.get_experiment_by_name(experiment_name())
    if exp is None:
        raise LosstraceError(_redact(tracking_uri(root)), "no losstrace runs recorded", "run `dvc repro` first")
    runs = c.search_runs([exp.experiment_id], filter_string=f"tags.`{KIND_TAG}` = '{kind}'",
                         order_by=["attributes.start_time DESC"], max_results=back + 1)
    if len(runs) <= back:
        raise LosstraceError(f"run {ref}", f"only {len(runs)} run(s) recorded", "use a smaller N or a run id")
    return runs[back].info.run_id


def download_artifacts(root: Path, run_id: str, path: str, dst: Path) -> Path | None:
    """Fetch one artifact (file or dir) of a run, or None if the run has none at `path`."""
    _quiet_env()
    from mlflow.artifacts import download_artifacts as dl

    try:
        return Path(dl(run_id=run_id, artifact_path=path, dst_path=str(dst), tracking_uri=tracking_uri(root)))
    except Exception:
        return None


def get_run(root: Path, run_id: str):
    return client(tracking_uri(root)).get_run(run_id)


def _param_value(v: Any) -> str:
    s = str(v)
    return s if len(s) <= 6000 else s[:5997] + "..."


def _finite(v: Any) -> bool:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return False
    return f == f and f not in (float("inf"), float("-inf"))


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)


def _redact(uri: str) -> str:
    return re.sub(r"//[^/@]*@", "//***@", uri)


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


# --- Reading runs back -------------------------------------------------------------
# `losstrace diff` must answer in about a second, and importing MLflow alone takes
# 2-3 s. For the default local store (SQLite + file artifacts) runs are read straight
# from MLflow's tables with the standard library; any other store, or any surprise in
# the schema, goes through MlflowClient.


class RecordedRun:
    """One run's identity, params, tags and the files under one artifact folder."""

    def __init__(self, run_id: str, name: str, params: dict[str, str], tags: dict[str, str], files: dict[str, bytes]):
        self.run_id, self.name, self.params, self.tags, self.files = run_id, name, params, tags, files


def read_run(root: Path, ref: str, artifact_dir: str, kind: str = "train") -> RecordedRun:
    uri = existing_store(root)
    if uri.startswith("sqlite:///"):
        try:
            return _read_run_sqlite(Path(uri[len("sqlite:///"):]), ref, artifact_dir, kind)
        except _FastPathUnavailable:
            pass
    return _read_run_client(root, ref, artifact_dir, kind)


class _FastPathUnavailable(Exception):
    pass


def _read_run_sqlite(db: Path, ref: str, artifact_dir: str, kind: str) -> RecordedRun:
    import sqlite3

    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    except sqlite3.Error:
        raise _FastPathUnavailable
    try:
        run_id = _sqlite_resolve(con, ref, kind)
        row = con.execute("SELECT name, artifact_uri FROM runs WHERE run_uuid = ?", (run_id,)).fetchone()
        params = dict(con.execute("SELECT key, value FROM params WHERE run_uuid = ?", (run_id,)).fetchall())
        tags = dict(con.execute("SELECT key, value FROM tags WHERE run_uuid = ?", (run_id,)).fetchall())
    except sqlite3.Error:
        raise _FastPathUnavailable
    finally:
        con.close()
    name, artifact_uri = row
    if not (artifact_uri or "").startswith("file://"):
        raise _FastPathUnavailable
    from urllib.parse import unquote, urlparse

    folder = Path(unquote(urlparse(artifact_uri).path)) / artifact_dir
    files = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} if folder.is_dir() else {}
    return RecordedRun(run_id, name or "", params, tags, files)


def _sqlite_resolve(con, ref: str, kind: str) -> str:
    m = re.fullmatch(r"latest(?:~(\d+))?", ref)
    if not m:
        found = con.execute("SELECT run_uuid FROM runs WHERE run_uuid = ? AND lifecycle_stage = 'active'",
                            (ref,)).fetchone()
        if not found:
            raise LosstraceError(f"run {ref}", "no such MLflow run", "pass a run id, latest or latest~N")
        return found[0]
    back = int(m.group(1) or 0)
    rows = con.execute(
        "SELECT r.run_uuid FROM runs r JOIN experiments e ON r.experiment_id = e.experiment_id "
        "JOIN tags t ON t.run_uuid = r.run_uuid "
        "WHERE e.name = ? AND r.lifecycle_stage = 'active' AND t.key = ? AND t.value = ? "
        "ORDER BY r.start_time DESC LIMIT ?", (experiment_name(), KIND_TAG, kind, back + 1)).fetchall()
    if not rows and back == 0:
        raise LosstraceError(experiment_name(), "no losstrace runs recorded", "run `dvc repro` first")
    if len(rows) <= back:
        raise LosstraceError(f"run {ref}", f"only {len(rows)} run(s) recorded", "use a smaller N or a run id")
    return rows[back][0]


def _read_run_client(root: Path, ref: str, artifact_dir: str, kind: str) -> RecordedRun:
    import tempfile

    run_id = resolve_run(ref, root, kind)
    run = get_run(root, run_id)
    with tempfile.TemporaryDirectory(prefix="losstrace-run-") as tmp:
        folder = download_artifacts(root, run_id, artifact_dir, Path(tmp))
        files = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} if folder and folder.is_dir() else {}
    return RecordedRun(run_id, run.info.run_name or "", dict(run.data.params), dict(run.data.tags), files)
