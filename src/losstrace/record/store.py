"""Where runs live: the MLflow tracking URI, the experiment, and telling an outage from a rejection.

Nothing happens at import: the tracking URI, telemetry switch and experiment are
resolved when a run is opened. Default store: `sqlite:///<project>/mlflow.db`
with artifacts in `<project>/mlruns`, where <project> is the DVC repo root even for
queued experiments; `MLFLOW_TRACKING_URI` overrides both (a team server). One
experiment per project (`MLFLOW_EXPERIMENT_NAME`, default "losstrace").
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from losstrace.errors import LosstraceError, first_line
from losstrace.record import experiment_view

DEFAULT_EXPERIMENT = "losstrace"


def quiet_env() -> None:
    """Telemetry off before MLflow is imported (no network here and none wanted). Call it on
    the main thread before a thread opens a run: that thread then sets no environment
    variable while TensorFlow's threads may read them."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def project_root(root: Path = Path(".")) -> Path:
    """The project whose default store a command uses.

    `dvc exp run --queue` (and `--temp`) runs stages in a throwaway copy under
    .dvc/tmp/exps and sets DVC_ROOT to the real repository: a queued run must record
    into the project's store, not into one deleted with the copy.
    """
    return Path(os.environ.get("DVC_ROOT") or root)


def tracking_uri(root: Path = Path(".")) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(project_root(root) / 'mlflow.db').resolve()}"


@contextmanager
def scoped_tracking_uri(uri: str) -> Iterator[None]:
    """MLflow's fluent API (the Keras flavour has no client form) pointed at `uri` for one block.

    `mlflow.set_tracking_uri` also exports MLFLOW_TRACKING_URI to the whole process, so
    every later subprocess (a DVC stage, a queued experiment) would record into this
    store. Put both the module setting and the environment back afterwards.
    """
    import mlflow
    from mlflow.tracking._tracking_service import utils as tracking_utils

    before_env = os.environ.get("MLFLOW_TRACKING_URI")
    before = tracking_utils._tracking_uri  # None: "not set", which get_tracking_uri() hides
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before)
        if before_env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = before_env


def experiment_name() -> str:
    return os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT


def client(uri: str):
    quiet_env()
    import logging

    from mlflow.tracking import MlflowClient

    # MLflow logs store migrations at INFO on every new SQLite file: noise in stage output.
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    return MlflowClient(tracking_uri=uri)


def existing_store(root: Path) -> str:
    """The tracking URI for read-only commands; a missing local store is an error, not a new empty DB."""
    uri = tracking_uri(root)
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///") :]).exists():
        db = Path(uri[len("sqlite:///") :])
        above = next((d for d in db.parent.parents if (d / "mlflow.db").is_file()), None)
        raise LosstraceError(
            str(db),
            "no MLflow store here, so no losstrace runs recorded",
            f"run it from {above}, the folder holding the store"
            if above is not None
            else "run it from the project root, run `dvc repro` first, or set MLFLOW_TRACKING_URI",
        )
    return uri


def _experiment_id(c, uri: str, root: Path) -> str:
    name = experiment_name()
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        experiment_view.ensure_runs_view(c, exp)
        return exp.experiment_id
    # Artifacts live next to the SQLite file, wherever the run was started from (a bisect
    # or gallery workspace is temporary; the store is not).
    location = (
        (Path(uri[len("sqlite:///") :]).parent / "mlruns").resolve().as_uri() if uri.startswith("sqlite:///") else None
    )
    try:
        return c.create_experiment(name, artifact_location=location, tags=experiment_view.TAGS)
    except Exception:
        # Queued experiments start together: another one may have created it a moment ago.
        exp = c.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def is_outage(e: BaseException) -> bool:
    """True when the store is away (refused, timed out, retries used up, SQLite file locked),
    false when it answered and rejected the call. MLflow wraps the cause, so walk the chain."""
    import requests

    away = (
        requests.exceptions.ConnectionError,
        requests.exceptions.Timeout,
        requests.exceptions.RetryError,
        ConnectionError,
        TimeoutError,
    )
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, away) or type(cur).__name__ == "OperationalError":  # sqlite3 / SQLAlchemy
            return True
        cur = cur.__cause__ or cur.__context__
    return False


def nothing_listens(uri: str, timeout: float = 3.0) -> str | None:
    """Why nothing can answer at an HTTP tracking server's address; None when something
    listens there, or the store is not a server (a file, SQLite) or is reached by proxy.

    A refused or timed-out connection is known in milliseconds; MLflow's own retries
    would take about four minutes to say the same, and a training must not wait on them."""
    import socket
    import urllib.parse

    parts = urllib.parse.urlsplit(uri)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    if any(os.environ.get(k) for k in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")):
        return None  # the proxy, not this machine, connects to the server
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return None  # a malformed port: MLflow's own error names it better
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout):
            return None
    except OSError as e:
        return f"nothing answers at {parts.hostname}:{port} ({e.strerror or type(e).__name__})"


def fail_fast_reads() -> None:
    """Read-only commands (diagnose, diff, ci-report) give up on an absent server in seconds.

    MLflow's default retries (about four minutes) suit a training that must outlive a blip;
    a person waiting on `losstrace diff` wants to hear at once that the server is away.
    An explicit MLFLOW_HTTP_REQUEST_* setting wins.
    """
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")


@contextmanager
def answering(root: Path) -> Iterator[None]:
    """Turn a store that is away, unknown or corrupt into the one-line error naming it."""
    try:
        yield
    except LosstraceError:
        raise
    except Exception as e:
        uri = tracking_uri(root)
        if is_outage(e) and "not a database" not in str(e):
            raise unreachable(uri, e) from None
        text = first_line(e)
        if "not a database" in text or "malformed" in text:
            raise LosstraceError(
                redact(uri),
                f"not a readable MLflow store ({text})",
                "point MLFLOW_TRACKING_URI at the right store, or move the damaged file away",
            ) from None
        if "unsupported URI" in text or ("tracking store" in text and "scheme" in text):
            raise LosstraceError(
                f"MLFLOW_TRACKING_URI={redact(uri)}",
                "not a tracking URI MLflow knows",
                "use sqlite:///path/mlflow.db, http://host:port or file:///path",
            ) from None
        raise


def get_run(root: Path, run_id: str):
    return client(tracking_uri(root)).get_run(run_id)


def run_exists(root: Path, run_id: str | None) -> bool:
    """Whether the store holds `run_id` (an offline record may name a run the store never got)."""
    if not run_id:
        return False
    try:
        get_run(root, run_id)
    except Exception as e:
        if is_outage(e):
            raise unreachable(tracking_uri(root), e) from None
        return False
    return True


def download_artifacts(root: Path, run_id: str, path: str, dst: Path) -> Path | None:
    """Fetch one artifact (file or dir) of a run, or None if the run has none at `path`."""
    quiet_env()
    from mlflow.artifacts import download_artifacts as dl

    try:
        return Path(dl(run_id=run_id, artifact_path=path, dst_path=str(dst), tracking_uri=tracking_uri(root)))
    except Exception:
        return None


def unreachable(
    uri: str, e: BaseException, fix: str = "start the tracking server or fix MLFLOW_TRACKING_URI"
) -> LosstraceError:
    """The one-line error for a store that is away, naming the (redacted) URI."""
    return LosstraceError(f"MLflow at {redact(uri)}", f"unreachable: {first_line(e)}", fix, exit_code=1)


def redact(uri: str) -> str:
    """The URI without credentials, fit for messages."""
    return re.sub(r"//[^/@]*@", "//***@", uri)
