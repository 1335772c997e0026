"""Reading runs back: `latest` / `latest~N` / a run id → the run's params, tags and artifact files.

`losstrace diff` must answer in about a second, and importing MLflow alone takes
2-3 s. For the default local store (SQLite + file artifacts) runs are read straight
from MLflow's tables with the standard library; any other store, or any surprise in
the schema, goes through MlflowClient.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import pandas as pd

from losstrace.errors import LosstraceError, first_line
from losstrace.record.contract import (
    ARTIFACT_DIR,
    BATCHES,
    CONTEXT,
    DIAGNOSIS,
    DYNAMICS,
    FINGERPRINT,
    HISTORY,
    KIND_TAG,
    environment_of,
)
from losstrace.record.run_record import OUTCOME_METRICS, RunRecord
from losstrace.record.store import (
    answering,
    client,
    download_artifacts,
    existing_store,
    experiment_name,
    get_run,
    is_outage,
    redact,
    tracking_uri,
)


def resolve_run(ref: str, root: Path = Path("."), kind: str = "train") -> str:
    """`latest`, `latest~N` or a run id → run id."""
    with answering(root):
        return _resolve_run(ref, root, kind)


def _resolve_run(ref: str, root: Path, kind: str) -> str:
    m = re.fullmatch(r"latest(?:~(\d+))?", ref)
    c = client(existing_store(root))
    if not m:
        try:
            return c.get_run(ref).info.run_id
        except Exception as e:
            if is_outage(e):
                raise
            raise LosstraceError(f"run {ref}", "no such MLflow run", "pass a run id, latest or latest~N") from None
    back = int(m.group(1) or 0)
    exp = c.get_experiment_by_name(experiment_name())
    if exp is None:
        raise LosstraceError(redact(tracking_uri(root)), "no losstrace runs recorded", "run `dvc repro` first")
    runs = c.search_runs(
        [exp.experiment_id],
        filter_string=f"tags.`{KIND_TAG}` = '{kind}'",
        order_by=["attributes.start_time DESC"],
        max_results=back + 1,
    )
    if len(runs) <= back:
        raise LosstraceError(f"run {ref}", f"only {len(runs)} run(s) recorded", "use a smaller N or a run id")
    return runs[back].info.run_id


class RecordedRun:
    """One run's identity, params, tags and the files under one artifact folder."""

    def __init__(
        self,
        run_id: str,
        name: str,
        params: dict[str, str],
        tags: dict[str, str],
        files: dict[str, bytes],
        metrics: dict[str, float] | None = None,
    ):
        self.run_id, self.name, self.params, self.tags, self.files = run_id, name, params, tags, files
        self.metrics = metrics or {}  # each metric's latest value


def read_run(root: Path, ref: str, artifact_dir: str, kind: str = "train") -> RecordedRun:
    uri = existing_store(root)
    if uri.startswith("sqlite:///"):
        try:
            return _read_run_sqlite(Path(uri[len("sqlite:///") :]), ref, artifact_dir, kind)
        except _FastPathUnavailable:
            pass
    with answering(root):
        return _read_run_client(root, ref, artifact_dir, kind)


class _FastPathUnavailable(Exception):
    pass


def _read_run_sqlite(db: Path, ref: str, artifact_dir: str, kind: str) -> RecordedRun:
    import sqlite3

    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    except sqlite3.Error:
        raise _FastPathUnavailable from None
    try:
        run_id = _sqlite_resolve(con, ref, kind)
        row = con.execute("SELECT name, artifact_uri FROM runs WHERE run_uuid = ?", (run_id,)).fetchone()
        params = dict(con.execute("SELECT key, value FROM params WHERE run_uuid = ?", (run_id,)).fetchall())
        tags = dict(con.execute("SELECT key, value FROM tags WHERE run_uuid = ?", (run_id,)).fetchall())
        metrics = dict(con.execute("SELECT key, value FROM latest_metrics WHERE run_uuid = ?", (run_id,)).fetchall())
    except sqlite3.Error:
        raise _FastPathUnavailable from None
    finally:
        con.close()
    name, artifact_uri = row
    if not (artifact_uri or "").startswith("file://"):
        raise _FastPathUnavailable
    from urllib.parse import unquote, urlparse

    folder = Path(unquote(urlparse(artifact_uri).path)) / artifact_dir
    files = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} if folder.is_dir() else {}
    return RecordedRun(run_id, name or "", params, tags, files, metrics)


def _sqlite_resolve(con, ref: str, kind: str) -> str:
    m = re.fullmatch(r"latest(?:~(\d+))?", ref)
    if not m:
        found = con.execute(
            "SELECT run_uuid FROM runs WHERE run_uuid = ? AND lifecycle_stage = 'active'", (ref,)
        ).fetchone()
        if not found:
            raise LosstraceError(f"run {ref}", "no such MLflow run", "pass a run id, latest or latest~N")
        return found[0]
    back = int(m.group(1) or 0)
    rows = con.execute(
        "SELECT r.run_uuid FROM runs r JOIN experiments e ON r.experiment_id = e.experiment_id "
        "JOIN tags t ON t.run_uuid = r.run_uuid "
        "WHERE e.name = ? AND r.lifecycle_stage = 'active' AND t.key = ? AND t.value = ? "
        "ORDER BY r.start_time DESC LIMIT ?",
        (experiment_name(), KIND_TAG, kind, back + 1),
    ).fetchall()
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
    return RecordedRun(
        run_id, run.info.run_name or "", dict(run.data.params), dict(run.data.tags), files, dict(run.data.metrics)
    )


def load_record(ref: str, root: Path) -> RunRecord:
    """A recorded run as the analysis sees it; a damaged artifact is a one-line error naming it."""
    run = read_run(root, ref, ARTIFACT_DIR)
    if HISTORY not in run.files:
        raise LosstraceError(
            f"run {run.run_id}",
            "has no losstrace artifacts (not a losstrace training run?)",
            "pick a run recorded by `dvc repro` / `losstrace train`",
        )
    env = environment_of(run.tags)
    empty = RunRecord(run.run_id)

    def artifact(name: str) -> Any:
        """A parsed artifact, None when absent; a damaged one is a one-line error naming it."""
        data = run.files.get(name)
        if data is None:
            return None
        try:
            return _csv(data) if name.endswith(".csv") else _json(data)
        except (ValueError, UnicodeDecodeError) as e:  # EmptyDataError, ParserError, JSONDecodeError
            raise LosstraceError(
                f"run {run.run_id}: {ARTIFACT_DIR}/{name}",
                f"unreadable ({first_line(e)})",
                "the run's artifacts are damaged: retrain it (`dvc repro -f train`)",
            ) from None

    grad_norms = artifact(DYNAMICS)
    return RunRecord(
        run_id=run.run_id,
        name=run.name,
        params=run.params,
        env=env,
        fingerprint=artifact(FINGERPRINT),
        history=artifact(HISTORY),
        batches=empty.batches if BATCHES not in run.files else artifact(BATCHES),
        context={**(artifact(CONTEXT) or {}), **({"grad_norms": grad_norms} if grad_norms is not None else {})},
        findings=(artifact(DIAGNOSIS) or {}).get("findings", []),
        outcomes={k: float(v) for k, v in run.metrics.items() if k in OUTCOME_METRICS and v is not None},
    )


def _csv(data: bytes) -> pd.DataFrame:
    return pd.read_csv(io.BytesIO(data))


def _json(data: bytes | None) -> Any:
    return json.loads(data) if data else None
