"""Writing a run into MLflow: a handle that batches metrics and survives a store that goes away.

Logging is batched: per-epoch metrics go in one call per epoch and per-batch
losses in one call per epoch, so tracking costs a few percent of training at most.
"""

from __future__ import annotations

import math
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from losstrace.errors import LosstraceError, first_line
from losstrace.record.store import (
    _experiment_id,
    client,
    is_outage,
    nothing_listens,
    redact,
    scoped_tracking_uri,
    tracking_uri,
)

_MAX_BATCH = 1000  # MLflow's limit on metrics per log_batch call
SHIP_SECONDS = 1.0  # the longest a logged metric waits for company before it is sent


class RunLogger:
    """A handle on one MLflow run; every call names the run explicitly (no global state).

    A `resilient` logger outlives its store: when the store stops answering it goes
    offline (`offline` holds why) instead of raising, so a half-done training is never
    thrown away for want of a tracking server. Its caller keeps every record in
    reports/, and `losstrace sync` uploads what the store missed. A store that answers
    and rejects a call still raises: that is a bug, not an outage.
    """

    def __init__(self, c, run_id: str | None, uri: str, resilient: bool = False, offline: str | None = None):
        self.client, self.run_id, self.uri = c, run_id, uri
        self.resilient, self.offline = resilient, offline
        # Metric batches are written by one background thread, in order, so the store's
        # write (tens of ms on SQLite) overlaps the next epoch instead of stalling it.
        # Metrics logged less than SHIP_SECONDS after the last shipment wait and go with
        # the next one: an epoch of 0.1 s would otherwise cost a store write per epoch.
        # Epochs slower than that ship at once. The training callback flushes at the end of
        # fit, unless the resume backup defers its logging (the default): then the last
        # epochs go with the next write after training (artifacts), or at the run's end.
        self._pending: list[list] = []  # one list per logging call, never split across writes
        self._last_ship = -math.inf
        self._queue: Any = None
        self._writer: Any = None
        self._failure: BaseException | None = None

    def _in_background(self, *args: Any, **kwargs: Any) -> None:
        import queue

        if self._queue is None:
            self._queue = queue.Queue()
            self._writer = threading.Thread(target=self._drain, name="losstrace-mlflow", daemon=True)
            self._writer.start()
        self._queue.put((args, kwargs))

    def _drain(self) -> None:
        while True:
            args, kwargs = self._queue.get()
            try:
                if self._failure is None:
                    self._send(*args, **kwargs)
            except BaseException as e:  # re-raised on the caller's thread at the next flush
                self._failure = e
            finally:
                self._queue.task_done()

    def _ship(self) -> None:
        """Queue the held metrics as few writes as MLflow allows, whole logging calls per write:
        an epoch's metrics land together (resume reads `loss` at step e as "epoch e is in")."""
        if not self._pending:
            return
        calls, self._pending = self._pending, []
        self._last_ship = time.monotonic()
        batch: list = []
        for call in calls:
            if batch and len(batch) + len(call) > _MAX_BATCH:
                self._in_background("log_batch", self.run_id, metrics=batch)
                batch = []
            for i in range(0, len(call), _MAX_BATCH):  # only a call above MLflow's limit is cut
                part = call[i : i + _MAX_BATCH]
                if len(part) == _MAX_BATCH:
                    self._in_background("log_batch", self.run_id, metrics=part)
                else:
                    batch += part
        if batch:
            self._in_background("log_batch", self.run_id, metrics=batch)

    def flush(self) -> None:
        """Send held metrics and wait for the writes; raise what the background writer hit."""
        if self._pending:
            self._ship()
        if self._queue is not None:
            self._queue.join()
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise failure

    def _send(self, call: str | Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """`self.client.<call>(...)` (or `call(...)`), skipped once offline; an outage turns a resilient logger offline."""
        on_writer = self._writer is not None and threading.get_ident() == self._writer.ident
        if not on_writer and (self._pending or self._writer is not None):
            self.flush()  # keep order: held and queued metrics land before anything logged after them
        if self.offline:
            return
        try:
            (getattr(self.client, call) if isinstance(call, str) else call)(*args, **kwargs)
        except Exception as e:
            if not (self.resilient and is_outage(e)):
                raise
            self.offline = first_line(e)
            print(
                f"warning: MLflow at {redact(self.uri)} stopped answering ({self.offline}); continuing offline, "
                "every record stays in reports/ (run `losstrace sync` when it is back)",
                file=sys.stderr,
            )

    def log_params(self, flat: dict[str, Any]) -> None:
        from mlflow.entities import Param

        params = [Param(k, _param_value(v)) for k, v in sorted(flat.items())]
        for i in range(0, len(params), 100):
            self._send("log_batch", self.run_id, params=params[i : i + 100])

    def set_tags(self, tags: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, str(v)[:5000]) for k, v in sorted(tags.items())]
        for i in range(0, len(items), 100):
            self._send("log_batch", self.run_id, tags=items[i : i + 100])

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
        if metrics:
            self._pending.append(metrics)
        if time.monotonic() - self._last_ship >= SHIP_SECONDS:
            self._ship()

    def log_missing(self, key: str, steps: Sequence[int], values: Sequence[float]) -> int:
        """Log only the steps of `key` the run lacks (a resumed or repeated sync duplicates nothing)."""
        self.flush()  # what this logger still holds or queues counts as had
        if self.offline:
            return 0  # reports/ keeps the values; `losstrace sync` sends what the run lacks
        found: list = []
        self._send(lambda: found.extend(self.client.get_metric_history(self.run_id, key)))
        if self.offline:  # the read found the store gone (a resilient logger)
            return 0
        have = {m.step for m in found}
        todo = [(int(s), float(v)) for s, v in zip(steps, values) if int(s) not in have]
        self.log_series(key, [s for s, _ in todo], [v for _, v in todo])
        return len(todo)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self._send("log_artifact", self.run_id, str(path), artifact_path)

    def has_model(self) -> bool:
        """Whether a model logged from this run exists (MLflow 3 LoggedModel)."""
        exp_id = self.client.get_run(self.run_id).info.experiment_id
        found = self.client.search_logged_models(
            [exp_id], filter_string=f"source_run_id = '{self.run_id}'", max_results=1
        )
        return len(found) > 0

    def log_keras_model(self, model, input_example, output_example=None) -> None:
        """MLflow's Keras flavour with an inferred signature, so `mlflow.pyfunc.load_model` works.

        `output_example`: the model's outputs for `input_example` when the caller has them;
        predicting a new batch shape retraces Keras' predict function (about a second)."""
        if self.offline:
            return
        import mlflow
        from mlflow.models import infer_signature

        if output_example is None:
            output_example = model.predict(input_example, verbose=0)
        signature = infer_signature(input_example, output_example)

        def log() -> None:
            with (
                scoped_tracking_uri(self.uri),
                mlflow.start_run(run_id=self.run_id, nested=mlflow.active_run() is not None),
            ):
                # Explicit requirements: MLflow would otherwise spawn a subprocess that re-imports
                # TensorFlow just to infer them (seconds per run).
                mlflow.keras.log_model(model, name="model", signature=signature, pip_requirements=_model_requirements())

        self._send(log)

    def finish(self, ok: bool) -> None:
        self._send("set_terminated", self.run_id, "FINISHED" if ok else "FAILED")


def _model_requirements() -> list[str]:
    from importlib import metadata

    reqs = []
    for name in ("tensorflow", "tensorflow-cpu", "keras", "numpy"):
        try:
            reqs.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return reqs


@contextmanager
def start_run(
    root: Path,
    run_name: str,
    tags: dict[str, Any],
    resume_id: str | None = None,
    parent_id: str | None = None,
    resilient: bool = False,
    offline_ok: bool = False,
    uri: str | None = None,
    offline_note: str = "records stay in reports/ for `losstrace sync` (train.tracking.offline_ok)",
) -> Iterator[RunLogger]:
    """Open (or resume) a run; it ends FINISHED on success and FAILED on any exception.

    uri: the store, when the caller has resolved it (default: `tracking_uri(root)`).

    resilient: the store going away mid-run turns the logger offline instead of failing
    the caller (see RunLogger). offline_ok: the same when it is unreachable at the start;
    without it that is a one-line error naming the URI, raised before any work is done.
    An offline run stays open (RUNNING, or not created at all) until `losstrace sync`.
    offline_note: where the records of an offline run go, for the warning.
    """
    uri = uri or tracking_uri(root)
    c = client(uri)
    offline = None
    try:
        why = nothing_listens(uri)
        if why:
            raise ConnectionError(why)
        if resume_id:
            c.update_run(resume_id, status="RUNNING")
            run_id = resume_id
        else:
            all_tags = dict(tags)
            if parent_id:
                all_tags["mlflow.parentRunId"] = parent_id
            all_tags["mlflow.runName"] = run_name
            run_id = c.create_run(
                _experiment_id(c, uri, root), run_name=run_name, tags={k: str(v) for k, v in all_tags.items()}
            ).info.run_id
    except Exception as e:  # unreachable server, locked or corrupt store
        if not offline_ok:
            raise LosstraceError(
                f"MLflow at {redact(uri)}",
                f"cannot open a run: {first_line(e)}",
                "start the tracking server or fix MLFLOW_TRACKING_URI",
                exit_code=1,
            ) from None
        print(
            f"warning: MLflow at {redact(uri)} is unreachable ({first_line(e)}); training offline, {offline_note}",
            file=sys.stderr,
        )
        # A resumed run keeps its id offline, so `losstrace sync` completes it, not a new one.
        run_id, offline = resume_id, "unreachable at start"
    logger = RunLogger(c, run_id, uri, resilient=resilient or offline_ok, offline=offline)
    try:
        yield logger
    except BaseException:
        logger.finish(ok=False)
        raise
    logger.finish(ok=True)


@contextmanager
def reopen_run(root: Path, run_id: str | None, offline: bool = False) -> Iterator[RunLogger]:
    """Log more into an existing run (evaluate → the train run) without changing its status.

    For a run recorded offline (run.json `"offline": true`) nothing is sent: the caller's
    outputs are the record and `losstrace sync` uploads them with the rest of the run.
    """
    uri = tracking_uri(root)
    if offline or run_id is None:
        yield RunLogger(None, run_id, uri, offline="run recorded offline")
        return
    c = client(uri)
    try:
        c.get_run(run_id)
    except Exception as e:
        if is_outage(e):
            raise  # the caller decides: fail, or keep its outputs for `losstrace sync`
        raise LosstraceError(
            f"MLflow at {redact(uri)}",
            f"run {run_id} not found: {first_line(e)}",
            "run `dvc repro -f train` to record a fresh run",
            exit_code=1,
        ) from None
    yield RunLogger(c, run_id, uri)


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
