"""Run replayed stages in one long-lived worker process: TensorFlow, MLflow and Great
Expectations are imported once for all the trials of a bisect, fix or gallery.

A trial in a fresh `losstrace train` process spends most of its wall time importing; the
worker (`python -m losstrace.workflows.trial_worker`) pays that once. Each request runs one
stage as the stage's own process would: the same environment (the request's, plus the
CLI's TensorFlow defaults), the same working directory, the same one-line errors. Before a
training, `fresh_state` clears the Keras session; with the train stage's own seeding
(`keras.utils.set_random_seed`, op determinism) the same trial gives the same bytes after
any other trial as in a new process (tests/workflows/test_trial_worker.py).

The protocol is one JSON line per request on the worker's stdin and one per reply on a
private copy of its stdout; everything else the worker prints goes to a log file, whose
last line names the cause if the worker dies. A dead worker raises `WorkerDied` in the
parent, which falls back to a process per stage (replay.Session).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import traceback
from pathlib import Path
from typing import IO

from losstrace.errors import LosstraceError, first_line, from_os_error
from losstrace.startup import lean_keras, quiet_tf

STAGES = ("ingest", "validate", "train")


class WorkerDied(Exception):
    """The worker process is gone; the message is one line saying how."""


# ---------------------------------------------------------------- one stage, in this process


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
        raise ValueError(f"replay runs {', '.join(STAGES)}, not {stage}")


def _stage_args(rest: list[str]) -> dict[str, str]:
    """`--key value` pairs (replay builds these argvs itself, always in pairs)."""
    return {rest[i][2:]: rest[i + 1] for i in range(0, len(rest), 2)}


def fresh_state() -> None:
    """Keras and TensorFlow as a new process has them, before a training in a reused process.

    The train stage itself seeds Python, NumPy and TensorFlow and drops Keras' global seed
    generator (`keras.utils.set_random_seed`), and turns on op determinism, so every generator
    starts where a new process's does. `clear_session` adds what seeding does not reset: the
    layer-name counters (a user's builder with unnamed layers names dynamics.csv's rows from
    them) and the memory and traced functions of earlier models. Each model builds its own
    optimizer, so no optimizer state outlives a trial.
    """
    import keras

    keras.utils.clear_session(free_memory=True)


def run_captured(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[int, str]:
    """One stage in this process, under `env` and in `cwd`: (exit code, what it wrote to stderr).

    The exit code and the one-line error are the ones the `losstrace` command gives; stdout,
    the stage's summary line, is not needed by replay and is dropped.
    """
    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    err = io.StringIO()
    code = 0
    try:
        os.environ.clear()
        os.environ.update(env)
        quiet_tf()
        os.chdir(cwd)
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            if argv[0] == "train":
                fresh_state()
            run_stage(argv)
    except LosstraceError as e:
        err.write(e.line() + "\n")
        code = e.exit_code
    except SystemExit as e:  # a library that exits: the stage's exit code, as in its own process
        code = e.code if isinstance(e.code, int) else 1
    except Exception as e:  # noqa: BLE001 - a trial's failure is its result, never the end of the worker
        mapped = from_os_error(e) if isinstance(e, OSError) else None
        if os.environ.get("LOSSTRACE_DEBUG"):
            err.write(traceback.format_exc())
        err.write(
            (
                mapped.line()
                if mapped
                else f"error: internal: {type(e).__name__}: {first_line(e)} (rerun with "
                "LOSSTRACE_DEBUG=1 and report the traceback)"
            )
            + "\n"
        )
        code = mapped.exit_code if mapped else 1
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
    return code, err.getvalue()


def run_process(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[int, str]:
    """One stage in a new `losstrace` process (a clean process: the reference and the fallback)."""
    r = subprocess.run([sys.executable, "-m", "losstrace", *argv], cwd=cwd, env=env, capture_output=True, text=True)
    return r.returncode, r.stderr


# ---------------------------------------------------------------- the parent's side


class Worker:
    """A worker process and its pipes; `run` sends one stage and waits for its reply."""

    def __init__(self, env: dict[str, str], scratch: Path):
        scratch.mkdir(parents=True, exist_ok=True)
        self.log = scratch / f"worker-{os.getpid()}-{id(self):x}.log"
        env = dict(env)
        quiet_tf(env)  # read by TensorFlow at import: the worker imports it once, so set them now
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "losstrace.workflows.trial_worker"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                cwd=scratch,
                env=env,
                text=True,
                encoding="utf-8",
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def run(self, argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[int, str]:
        # The worker runs in its own scratch dir: a relative cwd (the CLI's project `.`) is the caller's.
        request = json.dumps({"argv": argv, "cwd": str(Path(cwd).resolve()), "env": dict(env)})
        stdin, stdout = self.proc.stdin, self.proc.stdout
        assert stdin is not None and stdout is not None
        try:
            stdin.write(request + "\n")
            stdin.flush()
            line = stdout.readline()
        except OSError:  # the pipe broke: the worker is gone
            line = ""
        if not line:
            raise WorkerDied(self._death(argv[0]))
        reply = json.loads(line)
        return int(reply["code"]), str(reply["stderr"])

    def _death(self, stage: str) -> str:
        try:
            code = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # closed its pipe but still running: end it
            self.proc.kill()
            code = self.proc.wait()
        if code < 0:  # killed (out of memory, by hand): its log says nothing about why
            return f"the trial worker died during {stage} (killed by {_signal_name(-code)})"
        last = _last_line(self.log)
        return f"the trial worker died during {stage} (exit {code}{f': {last}' if last else ''})"

    def close(self) -> None:
        """Ask the worker to finish (end of its input), then end it if it does not."""
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                assert self.proc.stdin is not None
                self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(OSError):
                if pipe is not None:
                    pipe.close()


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _last_line(path: Path) -> str:
    try:
        lines = [ln.strip() for ln in path.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1][:200] if lines else ""


# ---------------------------------------------------------------- the worker's side


def serve(requests: IO[str], replies: IO[str]) -> int:
    """Answer requests until the parent closes the input."""
    for line in requests:
        if not line.strip():
            continue
        request = json.loads(line)
        code, err = run_captured(request["argv"], Path(request["cwd"]), request["env"])
        replies.write(json.dumps({"code": code, "stderr": err}) + "\n")
        replies.flush()
    return 0


def main() -> int:
    quiet_tf()
    lean_keras()
    # Replies go to a private copy of stdout; fd 1 then points at the log, so whatever a
    # library prints (TensorFlow's C++ side included) cannot corrupt a reply line.
    replies = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    try:
        return serve(sys.stdin, replies)
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group; the parent reports it
        return 130


if __name__ == "__main__":
    sys.exit(main())
