"""A shared MLflow tracking server as a team runs it, and what happens when it fails.

A real `mlflow server` on 127.0.0.1 (SQLite backend store, artifacts stored and served
by the server from a local directory); two clones of the project train against it at
the same time and `losstrace diff` compares a run from each. Then the faults: a server
unreachable at the start (a one-line error before training, or, with
`train.tracking.offline_ok`, an offline run that `losstrace sync` uploads later), the
server killed mid-training (nothing lost; sync completes the same run), and a server
down while evaluate uploads (a one-line error, or the upload left to sync).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
import yaml

from support import BIN, make_project, run_cli, run_tool

pytestmark = pytest.mark.slow
# A dead server fails in milliseconds instead of after MLflow's ~4 minutes of retries.
FAST_FAIL = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
LONG_EPOCHS = 40  # ~6 s of training: the server is killed between the first epoch and the last


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`mlflow server` in a process group of its own, so stopping it takes its workers too."""

    def __init__(self, home: Path):
        self.home, self.port = home, free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 300) -> Server:
        """Start on the same port and store as before (a restart keeps every run)."""
        self.home.mkdir(parents=True, exist_ok=True)
        cmd = [
            str(BIN / "mlflow"),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{self.home / 'store.db'}",
            "--artifacts-destination",
            str(self.home / "artifacts"),
            "--serve-artifacts",
        ]
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        with open(self.home / "server.log", "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"mlflow server exited with {self.proc.returncode}:\n{self.log_tail()}")
            if self.healthy():
                return self
            time.sleep(0.5)
        self.stop()
        raise AssertionError(f"mlflow server not healthy after {timeout}s:\n{self.log_tail()}")

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Signal the server's process group (started above, so its id is the server's pid)."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        except ProcessLookupError:
            pass
        self.proc = None

    def log_tail(self) -> str:
        return "\n".join((self.home / "server.log").read_text(errors="replace").splitlines()[-30:])


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("server"))
    try:
        yield s.start()
    finally:
        s.stop(signal.SIGKILL)


@pytest.fixture(scope="module")
def clones(server, tmp_path_factory) -> dict:
    """Two teammates' clones, trained at the same time against the one server.

    Alice prepares and validates the data; bob's clone is a copy of hers, prepared data and
    DVC cache included, as `git clone` and `dvc pull` give a teammate: his pipeline starts
    at train, and the two trainings (and evaluations) run side by side."""
    base = tmp_path_factory.mktemp("clones")
    a = make_project(base / "alice")
    run_tool("dvc", "repro", "validate", cwd=a)
    b = base / "bob"
    shutil.copytree(a, b)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "MLFLOW_TRACKING_URI": server.uri}
    procs = [
        subprocess.Popen(
            ["dvc", "exp", "run", *args], cwd=root, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        for root, args in ((a, ["-S", "train.epochs=2"]), (b, ["-S", "train.epochs=2", "-S", "train.batch_size=16"]))
    ]
    for p in procs:
        out, _ = p.communicate(timeout=1800)
        assert p.returncode == 0, out
    return {"a": a, "b": b, "run_a": _run_json(a)["run_id"], "run_b": _run_json(b)["run_id"]}


def _run_json(root: Path, reports: str = "reports/train") -> dict:
    return json.loads((root / reports / "run.json").read_text())


def _client(uri: str):
    from losstrace.record import store

    return store.client(uri)


def test_two_clones_log_to_one_server_and_diff_compares_them(server, clones):
    c = _client(server.uri)
    for run_id in (clones["run_a"], clones["run_b"]):
        run = c.get_run(run_id)
        assert run.info.status == "FINISHED" and "test_accuracy" in run.data.metrics
        assert [m.step for m in c.get_metric_history(run_id, "val_loss")] == [0, 1]
    # Artifacts went through the server into its artifact root; no clone has a local store.
    assert len(list((server.home / "artifacts").rglob("history.csv"))) >= 2
    for root in (clones["a"], clones["b"]):
        assert not (root / "mlflow.db").exists() and not (root / "mlruns").exists()
    r = run_cli(
        "diff", clones["run_a"], clones["run_b"], "--json", cwd=clones["a"], env={"MLFLOW_TRACKING_URI": server.uri}
    )
    assert r.returncode == 0, r.stderr
    diff = json.loads(r.stdout)
    assert {"key": "train.batch_size", "a": "32", "b": "16"} in diff["params"]
    assert diff["causes"] and diff["causes"][0]["change"] == "train.batch_size"


def _outputs(root: Path) -> dict[str, bytes]:
    files = [root / "models/model.keras", *sorted((root / "reports/train").iterdir())]
    return {str(p.relative_to(root)): p.read_bytes() for p in files if p.is_file()}


def test_unreachable_server_fails_training_before_it_starts(clones):
    root, dead = clones["a"], f"http://127.0.0.1:{free_port()}"
    before = _outputs(root)
    r = run_cli("train", cwd=root, env={"MLFLOW_TRACKING_URI": dead, **FAST_FAIL})
    assert r.returncode == 1, r.stdout + r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith(f"error: MLflow at {dead}: cannot open a run"), r.stderr
    assert "Traceback" not in r.stderr and "train:" not in r.stdout
    assert _outputs(root) == before  # nothing trained, nothing overwritten


def test_offline_training_is_uploaded_later_by_sync_as_one_complete_run(server, clones):
    root, dead = clones["b"], f"http://127.0.0.1:{free_port()}"
    r = run_tool(
        "dvc",
        "exp",
        "run",
        "-S",
        "train.tracking.offline_ok=true",
        "-S",
        "train.epochs=2",
        "-S",
        "train.batch_size=16",
        cwd=root,
        env={"MLFLOW_TRACKING_URI": dead, **FAST_FAIL},
    )
    assert "recorded offline" in r.stdout, r.stdout + r.stderr
    info = _run_json(root)
    assert info["run_id"] is None and info["offline"] is True
    assert info["record"]["params"]["train.tracking.offline_ok"] is True
    for name in ("history.csv", "batches.csv", "context.json", "diagnosis.json", "lint.json", "curves.png"):
        assert (root / "reports/train" / name).exists(), name
    batches = pd.read_csv(root / "reports/train/batches.csv")

    r = run_cli("sync", cwd=root, env={"MLFLOW_TRACKING_URI": server.uri})
    assert r.returncode == 0, r.stderr
    info = _run_json(root)
    assert "offline" not in info and info["tracking_uri"] == server.uri
    run_id, c = info["run_id"], _client(server.uri)
    run = c.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["train.tracking.offline_ok"] == "True" and run.data.params["train.batch_size"] == "16"
    assert "data.train.content_hash" in run.data.params
    assert [m.step for m in c.get_metric_history(run_id, "val_loss")] == [0, 1]
    assert len(c.get_metric_history(run_id, "batch_loss")) == len(batches)
    # the per-layer gradient series, named as an online training names them
    layer = pd.read_csv(root / "reports/train/dynamics.csv")["layer"].iloc[0]
    assert [m.step for m in c.get_metric_history(run_id, f"grad_norm/{layer}")] == [0, 1]
    assert [m.step for m in c.get_metric_history(run_id, f"update_ratio/{layer}")] == [0, 1]
    metrics = json.loads((root / "reports/evaluate/metrics.json").read_text())
    assert run.data.metrics["test_accuracy"] == pytest.approx(metrics["test"]["accuracy"])
    assert run.data.tags["losstrace.synced"] == "true" and len(run.data.tags["git.commit"]) == 40
    uploaded = {Path(a.path).name for folder in ("losstrace", "evaluate") for a in c.list_artifacts(run_id, folder)}
    assert {
        "history.csv",
        "batches.csv",
        "context.json",
        "diagnosis.json",
        "lint.json",
        "curves.png",
        "featurizer.json",
        "fingerprint.json",
        "results.json",
        "metrics.json",
        "confusion.png",
    } <= uploaded
    assert len(c.search_logged_models([run.info.experiment_id], filter_string=f"source_run_id = '{run_id}'")) == 1
    # run.json is a DVC output: its new hash is in dvc.lock, so the next repro retrains nothing.
    assert "up to date" in run_tool("dvc", "status", cwd=root).stdout
    again = run_cli("sync", cwd=root, env={"MLFLOW_TRACKING_URI": server.uri})
    assert again.returncode == 0 and "nothing recorded offline" in again.stdout


@pytest.fixture(scope="module")
def killed(server, clones, tmp_path_factory) -> dict:
    """A training whose server is killed once its first epoch reached it: the training ends
    offline, the server comes back and `losstrace sync` completes the run. What the server
    held is read as each step ends, since the evaluate-outage test goes on with this run
    (a finished run without test metrics) rather than train one of its own."""
    root, tmp = clones["a"], tmp_path_factory.mktemp("killed")
    out = tmp / "out"
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["train"]["epochs"] = LONG_EPOCHS
    (tmp / "params.yaml").write_text(yaml.safe_dump(params))
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "MLFLOW_TRACKING_URI": server.uri,
        "MLFLOW_EXPERIMENT_NAME": "killed",
        **FAST_FAIL,
    }
    train = subprocess.Popen(
        [
            str(BIN / "losstrace"),
            "train",
            "--params",
            str(tmp / "params.yaml"),
            "--models",
            str(out / "models"),
            "--reports",
            str(out / "reports"),
        ],
        cwd=root,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        run_id = _wait_for_first_epoch(_client(server.uri), train)
        server.stop(signal.SIGKILL)
        stdout, stderr = train.communicate(timeout=900)
    finally:
        if train.poll() is None:
            train.kill()
        if server.proc is None:
            server.start()  # same port and store: the other tests keep their server
    c = _client(server.uri)
    run_json = out / "reports/run.json"

    def read_run_json() -> dict | None:
        return json.loads(run_json.read_text()) if run_json.exists() else None

    offline = read_run_json()
    before = {"val_loss": len(c.get_metric_history(run_id, "val_loss")), "status": c.get_run(run_id).info.status}
    sync = run_cli(
        "sync",
        "--reports",
        str(out / "reports"),
        "--models",
        str(out / "models"),
        "--evaluate",
        str(out / "evaluate"),
        cwd=root,
        env={"MLFLOW_TRACKING_URI": server.uri, "MLFLOW_EXPERIMENT_NAME": "killed"},
    )
    run = c.get_run(run_id)
    after = {
        "run_json": read_run_json(),
        "status": run.info.status,
        "val_loss_steps": [m.step for m in c.get_metric_history(run_id, "val_loss")],
        "batch_loss": len(c.get_metric_history(run_id, "batch_loss")),
        "runs": len(c.search_runs([run.info.experiment_id])),
        "models": len(c.search_logged_models([run.info.experiment_id], filter_string=f"source_run_id = '{run_id}'")),
    }
    return {
        "root": root,
        "out": out,
        "params": tmp / "params.yaml",
        "run_id": run_id,
        "train": (train.returncode, stdout, stderr),
        "offline": offline,
        "before_sync": before,
        "sync": sync,
        "after_sync": after,
    }


def test_server_killed_mid_training_loses_nothing_and_sync_completes_the_run(killed):
    out, run_id = killed["out"], killed["run_id"]
    returncode, stdout, stderr = killed["train"]
    assert returncode == 0, stderr
    assert "stopped answering" in stderr and "recorded offline" in stdout
    assert len(pd.read_csv(out / "reports/history.csv")) == LONG_EPOCHS  # every epoch kept on disk
    assert killed["offline"]["offline"] is True and killed["offline"]["run_id"] == run_id

    before = killed["before_sync"]
    assert 1 <= before["val_loss"] < LONG_EPOCHS  # the server saw part of it
    assert before["status"] == "RUNNING"
    assert killed["sync"].returncode == 0, killed["sync"].stderr
    after = killed["after_sync"]
    assert after["run_json"]["run_id"] == run_id  # the same run, completed
    assert after["status"] == "FINISHED"
    assert after["val_loss_steps"] == list(range(LONG_EPOCHS))  # no duplicates
    assert after["batch_loss"] == len(pd.read_csv(out / "reports/batches.csv"))
    assert after["runs"] == 1
    assert after["models"] == 1


def _wait_for_first_epoch(c, train: subprocess.Popen, timeout: float = 900) -> str:
    """The id of the run once the server holds its first epoch's metrics."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if train.poll() is not None:
            raise AssertionError(f"training ended before the server was killed:\n{train.stderr.read()}")
        exp = c.get_experiment_by_name("killed")
        runs = c.search_runs([exp.experiment_id]) if exp else []
        if runs and c.get_metric_history(runs[0].info.run_id, "val_loss"):
            return runs[0].info.run_id
        time.sleep(0.2)
    raise AssertionError("no epoch reached the server")


def test_server_down_during_evaluate_fails_in_one_line_or_leaves_the_upload_to_sync(server, killed, tmp_path):
    # The run of `killed`, trained and synced: finished on the server, no test metrics yet.
    root, out, run_id = killed["root"], killed["out"], killed["run_id"]
    assert killed["sync"].returncode == 0 and _run_json(out, "reports")["run_id"] == run_id, killed["sync"].stderr
    params = yaml.safe_load(killed["params"].read_text())
    params["train"]["tracking"] = {**params["train"].get("tracking", {}), "offline_ok": True}
    (tmp_path / "offline_ok.yaml").write_text(yaml.safe_dump(params))
    env = {"MLFLOW_TRACKING_URI": server.uri, "MLFLOW_EXPERIMENT_NAME": "killed", **FAST_FAIL}
    # The server is down for evaluate: its URI answers nothing. (Killing the server and starting
    # it again is the killed test's; here the server sync needs stays up.)
    down = {**env, "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}"}
    where = ["--models", str(out / "models"), "--train-reports", str(out / "reports"), "--out", str(out / "evaluate")]
    failed = run_cli("evaluate", "--params", str(killed["params"]), *where, cwd=root, env=down)
    kept = run_cli("evaluate", "--params", str(tmp_path / "offline_ok.yaml"), *where, cwd=root, env=down)
    assert failed.returncode == 1, failed.stderr
    assert failed.stderr.strip().splitlines() == [failed.stderr.strip()]  # one line, no traceback
    assert (
        failed.stderr.startswith(f"error: MLflow at {down['MLFLOW_TRACKING_URI']}: unreachable")
        and "only its upload failed" in failed.stderr
    )
    assert kept.returncode == 0, kept.stderr
    assert "`losstrace sync` uploads them" in kept.stderr and "evaluate: test accuracy" in kept.stdout
    assert json.loads((out / "evaluate/pending_upload.json").read_text()) == {"run_id": run_id}
    c = _client(server.uri)
    assert "test_accuracy" not in c.get_run(run_id).data.metrics

    sync = [
        "sync",
        "--reports",
        str(out / "reports"),
        "--evaluate",
        str(out / "evaluate"),
        "--models",
        str(out / "models"),
    ]
    r = run_cli(*sync, cwd=root, env=env)
    assert r.returncode == 0 and "uploaded its" in r.stdout and "missing test metrics" in r.stdout, r.stdout + r.stderr
    metrics = json.loads((out / "evaluate/metrics.json").read_text())
    run = c.get_run(run_id)
    assert run.data.metrics["test_accuracy"] == pytest.approx(metrics["test"]["accuracy"])
    assert {Path(a.path).name for a in c.list_artifacts(run_id, "evaluate")} >= {"metrics.json", "confusion.png"}
    assert not (out / "evaluate/pending_upload.json").exists()
    again = run_cli(*sync, cwd=root, env=env)
    assert again.returncode == 0 and "nothing recorded offline" in again.stdout
