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
from losstrace.record import foreign
from losstrace.record.contract import (
    ARTIFACT_DIR,
    BATCHES,
    CONTEXT,
    DIAGNOSIS,
    DYNAMICS,
    FINGERPRINT,
    HISTORY,
    KIND_SCRIPT,
    KIND_TAG,
    KIND_TRAIN,
    OFFLINE_PARAMS,
    OFFLINE_TAGS,
    RUN_NAME_TAG,
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

TRAININGS = (KIND_TRAIN, KIND_SCRIPT)  # what `latest` counts: pipeline and script trainings, and foreign runs


def resolve_run(ref: str, root: Path = Path(".")) -> str:
    """`latest`, `latest~N`, a run id or the start of one (as runs are printed) → run id.

    `latest` counts trainings: the pipeline's, users' scripts recorded by losstrace.keras,
    and runs of other tools that logged a `loss` metric (losstrace's own bisect, gallery
    and fix runs are not trainings to diagnose). In the losstrace experiment first; when
    it holds none, in every experiment of the store."""
    with answering(root):
        return _resolve_run(ref, root)


def _resolve_run(ref: str, root: Path) -> str:
    m = re.fullmatch(r"latest(?:~(\d+))?", ref)
    c = client(existing_store(root))
    if not m:
        try:
            return c.get_run(ref).info.run_id
        except Exception as e:
            if is_outage(e):
                raise
        if _SHORT_ID.fullmatch(ref):
            ids = [
                run.info.run_id
                for exp in c.search_experiments()
                for run in c.search_runs([exp.experiment_id], max_results=50000)
                if run.info.run_id.startswith(ref)
            ]
            return _one_by_prefix(ref, ids)
        raise LosstraceError(f"run {ref}", NO_SUCH_RUN, _RUN_REF_FIX)
    back = int(m.group(1) or 0)
    exp = c.get_experiment_by_name(experiment_name())
    runs = _trainings(c, [exp.experiment_id], back + 1) if exp is not None else []
    if not runs:
        runs = _trainings(c, [x.experiment_id for x in c.search_experiments()], back + 1)
    if not runs and back == 0:
        raise LosstraceError(redact(tracking_uri(root)), "no losstrace runs recorded", _NO_RUNS_FIX)
    if len(runs) <= back:
        raise LosstraceError(f"run {ref}", f"only {len(runs)} run(s) recorded", "use a smaller N or a run id")
    return runs[back].info.run_id


_NO_RUNS_FIX = "run `dvc repro`, or record your script with losstrace.keras.autolog()"
NO_SUCH_RUN = "no such MLflow run"  # what a run id the store does not hold is told (callers tell it apart)
_RUN_REF_FIX = "pass a run id (or its first 8 characters), latest or latest~N"
_SHORT_ID = re.compile(r"[0-9a-f]{6,31}")  # the start of a run id: runs are printed with 8 characters


def _one_by_prefix(ref: str, ids: list[str]) -> str:
    """The one run id starting with `ref`; none or several is a one-line error."""
    if len(ids) == 1:
        return ids[0]
    if not ids:
        raise LosstraceError(f"run {ref}", NO_SUCH_RUN, _RUN_REF_FIX)
    raise LosstraceError(f"run {ref}", f"the start of {len(ids)} run ids", "give more characters of the run id")


def _trainings(c, experiment_ids: list[str], wanted: int) -> list:
    """The newest `wanted` training runs of these experiments (see resolve_run)."""
    found = []
    token = None
    while len(found) < wanted:
        page = c.search_runs(experiment_ids, order_by=["attributes.start_time DESC"], max_results=200, page_token=token)
        for run in page:
            kind = run.data.tags.get(KIND_TAG)
            if kind in TRAININGS or (kind is None and "loss" in run.data.metrics):
                found.append(run)
        token = page.token
        if not token:
            break
    return found[:wanted]


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


def read_run(root: Path, ref: str, artifact_dir: str) -> RecordedRun:
    kept = _kept_folder(ref, root)
    if kept is not None:
        return _read_kept(kept)
    uri = existing_store(root)
    if uri.startswith("sqlite:///"):
        try:
            return _read_run_sqlite(Path(uri[len("sqlite:///") :]), ref, artifact_dir)
        except _FastPathUnavailable:
            pass
    with answering(root):
        return _read_run_client(root, ref, artifact_dir)


def _kept_folder(ref: str, root: Path) -> Path | None:
    """A script's run kept on disk while the store was away (its folder), or None."""
    if "/" not in ref and "\\" not in ref:
        return None
    for folder in (Path(ref), root / ref):
        if (folder / HISTORY).is_file() and (folder / OFFLINE_PARAMS).is_file():
            return folder
    raise LosstraceError(
        ref, "not a run's folder (no history.csv and params.json)", "pass a losstrace-runs/<name> folder or a run id"
    )


def _read_kept(folder: Path) -> RecordedRun:
    files = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    try:
        params = json.loads(files.pop(OFFLINE_PARAMS))
        tags = json.loads(files.pop(OFFLINE_TAGS, b"{}"))
    except ValueError as e:
        raise LosstraceError(
            str(folder / OFFLINE_PARAMS), f"unreadable ({first_line(e)})", "the kept run is damaged"
        ) from None
    return RecordedRun(str(folder), tags.get(RUN_NAME_TAG, folder.name), params, tags, files)


class _FastPathUnavailable(Exception):
    pass


def _read_run_sqlite(db: Path, ref: str, artifact_dir: str) -> RecordedRun:
    import sqlite3

    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    except sqlite3.Error:
        raise _FastPathUnavailable from None
    try:
        run_id = _sqlite_resolve(con, ref)
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


def _sqlite_resolve(con, ref: str) -> str:
    m = re.fullmatch(r"latest(?:~(\d+))?", ref)
    if not m:
        found = con.execute(
            "SELECT run_uuid FROM runs WHERE run_uuid = ? AND lifecycle_stage = 'active'", (ref,)
        ).fetchone()
        if found:
            return found[0]
        if not _SHORT_ID.fullmatch(ref):
            raise LosstraceError(f"run {ref}", NO_SUCH_RUN, _RUN_REF_FIX)
        rows = con.execute(
            "SELECT run_uuid FROM runs WHERE substr(run_uuid, 1, ?) = ? AND lifecycle_stage = 'active'",
            (len(ref), ref),
        ).fetchall()
        return _one_by_prefix(ref, [r[0] for r in rows])
    back = int(m.group(1) or 0)
    rows = _sqlite_trainings(con, experiment_name(), back + 1) or _sqlite_trainings(con, None, back + 1)
    if not rows and back == 0:
        raise LosstraceError(experiment_name(), "no losstrace runs recorded", _NO_RUNS_FIX)
    if len(rows) <= back:
        raise LosstraceError(f"run {ref}", f"only {len(rows)} run(s) recorded", "use a smaller N or a run id")
    return rows[back][0]


def _sqlite_trainings(con, experiment: str | None, wanted: int) -> list:
    """resolve_run's `latest` rule in SQL, in one experiment (or all: None)."""
    return con.execute(
        "SELECT r.run_uuid FROM runs r JOIN experiments e ON r.experiment_id = e.experiment_id "
        "LEFT JOIN tags t ON t.run_uuid = r.run_uuid AND t.key = ? "
        "WHERE r.lifecycle_stage = 'active' AND (? IS NULL OR e.name = ?) AND ("
        "t.value IN (?, ?) OR (t.value IS NULL AND EXISTS ("
        "SELECT 1 FROM latest_metrics m WHERE m.run_uuid = r.run_uuid AND m.key = 'loss'))) "
        "ORDER BY r.start_time DESC LIMIT ?",
        (KIND_TAG, experiment, experiment, *TRAININGS, wanted),
    ).fetchall()


def _read_run_client(root: Path, ref: str, artifact_dir: str) -> RecordedRun:
    import tempfile

    run_id = resolve_run(ref, root)
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
    if foreign.is_foreign(run.files, run.tags):
        return _foreign_record(root, run)
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


def _foreign_record(root: Path, run: RecordedRun) -> RunRecord:
    """A run of another tool: history from its metric histories, params mapped (record.foreign)."""
    series = metric_histories(root, run.run_id)
    history = foreign.history(series)
    mapped = foreign.params(run.params)
    return RunRecord(
        run_id=run.run_id,
        name=run.name,
        params=mapped,
        env=environment_of(run.tags),
        history=history,
        context=foreign.context(mapped),
        findings=foreign.missing_records(has_history=len(history) > 0),
        outcomes={k: float(v) for k, v in run.metrics.items() if k in OUTCOME_METRICS and v is not None},
    )


def metric_histories(root: Path, run_id: str) -> dict[str, list[tuple[int, float]]]:
    """Every metric of a run as [(step, value), ...] per key (the last value logged at a step wins)."""
    uri = existing_store(root)
    if uri.startswith("sqlite:///"):
        import sqlite3

        try:
            con = sqlite3.connect(f"file:{uri[len('sqlite:///') :]}?mode=ro", uri=True)
            try:
                rows = con.execute(
                    "SELECT key, step, value FROM metrics WHERE run_uuid = ? ORDER BY key, step, timestamp",
                    (run_id,),
                ).fetchall()
            finally:
                con.close()
            return _series(rows)
        except sqlite3.Error:
            pass
    with answering(root):
        c = client(uri)
        keys = c.get_run(run_id).data.metrics
        return _series([(k, m.step, m.value) for k in keys for m in c.get_metric_history(run_id, k)])


def _series(rows) -> dict[str, list[tuple[int, float]]]:
    out: dict[str, dict[int, float]] = {}
    for key, step, value in rows:
        out.setdefault(key, {})[int(step)] = float(value)
    return {k: sorted(v.items()) for k, v in out.items()}
