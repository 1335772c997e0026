"""Trials in the long-lived worker (real TensorFlow, MLflow, Great Expectations): a trial
run after another one gives the bytes the same trial gives in clean processes; prepared
data and validation are reused unless data or validate params change; a dead worker costs
one warning line, not the trials."""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
from pathlib import Path

import pytest

from losstrace import params
from losstrace.record import store
from losstrace.workflows import bisect
from losstrace.workflows.replay import PROCESS, WORKER, Session, Workspace
from support import REPO

pytestmark = pytest.mark.slow

CURVES = ("history.csv", "batches.csv", "dynamics.csv")


def _params(epochs: int, **overrides) -> params.Params:
    return params.override(params.Params(), {"train.epochs": epochs, **overrides})


def test_a_trial_after_another_in_the_worker_equals_the_same_trial_in_clean_processes(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    uri = store.tracking_uri(tmp_path)
    trial = _params(2)
    # Another cell, batch size, dropout and seed (another split): every global Keras and
    # RNG state it leaves behind differs from what `trial` starts from in a new process.
    other = params.override(
        trial, {"train.model.rnn.cell": "gru", "train.batch_size": 8, "train.model.dropout": 0.0, "base.seed": 7}
    )
    ws = Workspace(uri, "bisect-trial")
    try:
        before, after = ws.train(other, source_root=REPO), ws.train(trial, source_root=REPO)
        in_worker = {name: (after.reports / name).read_bytes() for name in CURVES}
    finally:
        ws.close()
    assert not before.error and not after.error, (before.error, after.error)
    assert before.runner == after.runner == WORKER

    session = Session(PROCESS)  # ingest, validate and train each in a new `losstrace` process
    try:
        clean_ws = Workspace(uri, "bisect-trial", session=session)
        clean = clean_ws.train(trial, source_root=REPO)
        in_process = {name: (clean.reports / name).read_bytes() for name in CURVES}
        clean_ws.close()
    finally:
        session.close()
    assert not clean.error and clean.runner == PROCESS
    assert in_worker["history.csv"].count(b"\n") == 3  # header + 2 epochs
    for name in CURVES:
        assert in_worker[name] == in_process[name], name
    assert after.run_id != clean.run_id


def test_only_data_params_re_ingest_and_only_validate_params_re_validate(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    a = _params(1)
    planned = [
        (bisect.Trial("A", None), a),
        (bisect.Trial("A + train.batch_size", "train.batch_size", 16), params.override(a, {"train.batch_size": 16})),
        (
            bisect.Trial("A + validate.max_class_ratio", "validate.max_class_ratio", 8.0),
            params.override(a, {"validate.max_class_ratio": 8.0}),
        ),
        (bisect.Trial("A + data.val_size", "data.val_size", 0.3), params.override(a, {"data.val_size": 0.3})),
    ]
    session = Session(WORKER)
    try:
        ws = Workspace(store.tracking_uri(tmp_path), "bisect-trial", session=session)
        bisect.run_trials(ws, planned, REPO, "trials")
        prepared = sorted(p.name for p in (session.dir / "prepared").iterdir())
        validated = sorted(p.name for p in (session.dir / "validate").iterdir())
    finally:
        session.close()
    trials = [t for t, _ in planned]
    assert [t.error for t in trials] == [None] * 4
    assert [t.reused for t in trials] == [[], ["ingest", "validate"], ["ingest"], []]
    assert [dataclasses.asdict(t)["reused"] for t in trials] == [t.reused for t in trials]  # in bisect's JSON
    # Two splits were made (A's, and the one with a larger val share), validated three times.
    assert len(prepared) == 2 and len(validated) == 3


def test_a_relative_project_dir_is_the_caller_s_not_the_worker_s(tmp_path, monkeypatch):
    """`losstrace gallery`, `bisect` and `fix` pass the project as `.`; the worker runs in its
    own scratch dir, so a user's relative data.source must still be read from the caller's."""
    import yaml

    project = tmp_path / "project"
    shutil.copytree(REPO / "data" / "external" / "uci-sentiment", project / "sentences")
    p = params.override(params.Params(), {"data.source": "sentences/*.txt", "data.header": False})
    (tmp_path / "ingest.yaml").write_text(yaml.safe_dump(params.to_nested(p)))
    monkeypatch.chdir(project)
    session = Session(WORKER)
    try:
        argv = ["ingest", "--params", str(tmp_path / "ingest.yaml"), "--out", str(tmp_path / "prepared")]
        code, err, runner = session.run(argv, Path("."), dict(os.environ))
    finally:
        session.close()
    assert (code, err, runner) == (0, "", WORKER)
    assert (tmp_path / "prepared" / "train.parquet").is_file()


def test_a_dead_worker_costs_one_warning_line_and_the_trials_go_on(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    a = _params(1)
    ws = Workspace(store.tracking_uri(tmp_path), "bisect-trial")
    try:
        first = ws.train(a, source_root=REPO)
        worker = ws.session.worker
        os.kill(worker.pid, signal.SIGKILL)
        worker.proc.wait()
        second = ws.train(params.override(a, {"train.batch_size": 16}), source_root=REPO)
        third = ws.train(params.override(a, {"train.batch_size": 64}), source_root=REPO)
    finally:
        ws.close()
    assert not first.error and first.runner == WORKER
    assert not second.error and not third.error, (second.error, third.error)
    assert second.runner == third.runner == PROCESS and second.reused == ["ingest", "validate"]
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert err == [
        "warning: the trial worker died during train (killed by SIGKILL); the trials go on with a new process per stage"
    ]


def test_fresh_state_names_layers_as_a_new_process_does():
    # The zoo names its layers and the train stage re-seeds every generator, so this is what
    # fresh_state adds for a user's builder: auto-named layers (dynamics.csv's rows) and freed memory.
    import keras

    from losstrace.workflows.trial_worker import fresh_state

    fresh_state()
    first = keras.layers.Dense(1).name
    assert keras.layers.Dense(1).name != first  # Keras counts names for the life of the process
    fresh_state()
    assert keras.layers.Dense(1).name == first
