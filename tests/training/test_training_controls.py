"""Training controls on real TensorFlow and a real MLflow store: per-layer
dynamics, mixed precision, resume after a crash or SIGKILL, and tf.distribute
(mirrored on two logical CPUs, multi_worker as two processes on 127.0.0.1)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from losstrace import params
from losstrace.errors import LosstraceError
from losstrace.record import contract, run_files, store
from losstrace.stages import train
from losstrace.training import callbacks, distribute
from support import BIN, shrunk

STAGE_ARGS = ["--prepared", "prepared", "--validate", "validate", "--models", "models", "--reports", "reports"]


@pytest.fixture(scope="module")
def vowels(prepared) -> Path:
    return prepared


def fit(p: params.Params, prepared: Path):
    train.seed_everything(p.base.seed)
    ds = train.load_dataset(p, prepared)
    model, rec = train.run(p, ds)
    return model, rec, ds


def project(root: Path, prepared: Path, **train_kw) -> Path:
    """A stage workspace: params.yaml with these train keys, and the prepared data."""
    root.mkdir(parents=True, exist_ok=True)
    if not (root / "prepared").exists():
        (root / "prepared").symlink_to(prepared)
    (root / "params.yaml").write_text(yaml.safe_dump({"train": train_kw}))
    return root


def stage(root: Path) -> dict:
    return train.main(
        root / "params.yaml", root / "prepared", root / "validate", root / "models", root / "reports", root
    )


def mlflow_client(root: Path):
    return store.client(store.tracking_uri(root))


def steps(root: Path, run_id: str, key: str) -> list[int]:
    return [m.step for m in mlflow_client(root).get_metric_history(run_id, key)]


def env() -> dict[str, str]:
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}


# ------------------------------------------------------------------------- dynamics


def test_dynamics_are_per_layer_and_leave_the_curve_alone(vowels):
    model, rec, ds = fit(shrunk(), vowels)
    _, bare, _ = fit(shrunk(dynamics=False), vowels)
    assert (
        run_files.history_frame(rec.epochs).to_csv() == run_files.history_frame(bare.epochs).to_csv()
    )  # recording draws no randomness
    assert pd.DataFrame(rec.batches).equals(pd.DataFrame(bare.batches)) and bare.dynamics == []

    dyn = pd.DataFrame(rec.dynamics)
    assert list(dyn.columns) == list(contract.DYNAMICS_COLUMNS)
    assert dyn["epoch"].tolist() == [0, 0, 1, 1] and set(dyn["layer"]) == {"lstm_0", "output"}
    assert (dyn["grad_norm"] > 0).all() and (dyn["grad_norm_max"] >= dyn["grad_norm"] * (1 - 1e-9)).all()
    assert ((dyn["update_ratio"] > 0) & (dyn["update_ratio"] < 1)).all()
    assert "apply" not in vars(model.optimizer)  # the recording wrapper is gone: a plain optimizer is saved


def test_a_model_fitted_twice_records_the_second_fit_and_a_bare_fit_after_runs_no_recording():
    """Keras keeps a model's traced train step across fits; recording lives inside it."""
    import keras

    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).random((64, 5, 3), dtype=np.float32)
    y = np.arange(64) % 2
    # Named: Keras numbers default names per process (lstm_2 after other tests' models).
    model = keras.Sequential(
        [
            keras.Input((5, 3)),
            keras.layers.LSTM(4, name="lstm"),
            keras.layers.Dense(2, activation="softmax", name="dense"),
        ]
    )
    model.compile("adam", "sparse_categorical_crossentropy")
    recorders, norms = [], []

    class KeepNorms(keras.callbacks.Callback):  # the recorder's step counters, kept past its detach
        def __init__(self, recording):
            super().__init__()
            self.recording = recording

        def on_epoch_end(self, epoch, logs=None):
            norms.append(self.recording._layers.norms)

    for _ in range(2):
        rec = callbacks.Recorder()
        cb = callbacks.RecordingCallback(rec, 64, 16, dynamics=True)
        model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[cb, KeepNorms(cb)])
        recorders.append(rec)
    for rec in recorders:
        assert [d["layer"] for d in rec.dynamics] == ["lstm", "dense"]
        assert all(np.isfinite(d["grad_norm"]) and d["grad_norm"] > 0 for d in rec.dynamics), rec.dynamics
    counted = norms[-1]._acc.numpy().copy()
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert np.array_equal(norms[-1]._acc.numpy(), counted)  # the bare fit's steps touched no recording variable


def test_batch_losses_taken_inside_the_step_equal_the_per_step_host_reads():
    import keras

    class HostReads(callbacks.RecordingCallback):
        """Keras does not say how many steps an epoch has: the per-step host reads run."""

        def on_train_begin(self, logs=None):
            self.params = {**self.params, "steps": None}
            super().on_train_begin(logs)

    x = np.random.default_rng(1).random((70, 5, 3), dtype=np.float32)
    y = np.arange(70) % 2
    batches = {}
    for kind in (callbacks.RecordingCallback, HostReads):
        keras.utils.set_random_seed(0)
        model = keras.Sequential(
            [keras.Input((5, 3)), keras.layers.LSTM(4), keras.layers.Dense(2, activation="softmax")]
        )
        model.compile("adam", "sparse_categorical_crossentropy")
        rec = callbacks.Recorder()
        cb = kind(rec, 70, 16, dynamics=False)
        model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[cb])
        batches[kind] = rec.batches
        assert cb._losses.in_step is (kind is callbacks.RecordingCallback)
    in_step, host = batches.values()
    assert [r["size"] for r in in_step] == [16, 16, 16, 16, 6] * 2  # the last batch's own size
    assert in_step == host  # the same float32 figures either way: identical rows
    assert "apply" not in vars(model.optimizer)


def test_step_hooks_detach_in_any_order_and_leave_a_plain_optimizer():
    import keras

    from losstrace.training import step_hook

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    calls = []
    first = step_hook.on_apply(model, lambda g, v: calls.append("first"))
    second = step_hook.on_apply(model, lambda g, v: calls.append("second"))
    first()  # the inner one goes first: the outer one stays live
    model.fit(np.ones((4, 3)), np.ones(4), verbose=0, epochs=1)
    assert calls == ["second"]  # recorded once, when the step was traced
    second()
    assert "apply" not in vars(model.optimizer)


def _gradient_norms_by_hand(model, weights, x, y, layer: str) -> float:
    import tensorflow as tf

    model.set_weights(weights)
    with tf.GradientTape() as tape:
        loss = model.loss(y, model(x, training=True))
    grads = tape.gradient(loss, model.get_layer(layer).trainable_weights)
    return float(np.sqrt(sum(float(tf.reduce_sum(tf.cast(g, tf.float64) ** 2)) for g in grads)))


def test_gradient_norms_are_those_of_the_training_steps(vowels):
    """Two epochs of one full batch each (no dropout, no shuffle effect): each epoch's
    norm is the gradient of the whole training set at that epoch's starting weights."""
    import keras

    class Snapshots(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.weights = []

        def on_epoch_begin(self, epoch, logs=None):
            self.weights.append(self.model.get_weights())

    snaps = Snapshots()
    p = shrunk(batch_size=512)  # the default model has no dropout
    train.seed_everything(p.base.seed)
    ds = train.load_dataset(p, vowels)
    model, rec = train.run(p, ds, callbacks_extra=[snaps])
    assert len(rec.batches) == 2  # one step per epoch
    dyn = pd.DataFrame(rec.dynamics).set_index(["epoch", "layer"])
    for epoch in (0, 1):
        for layer in ("lstm_0", "output"):
            direct = _gradient_norms_by_hand(model, snaps.weights[epoch], ds.x["train"], ds.y["train"], layer)
            assert dyn.loc[(epoch, layer), "grad_norm"] == pytest.approx(direct, rel=1e-4), (epoch, layer)
            assert dyn.loc[(epoch, layer), "grad_norm_max"] == pytest.approx(direct, rel=1e-4), (epoch, layer)


def test_train_stage_writes_and_logs_dynamics_once_per_epoch(vowels, tmp_path):
    root = project(tmp_path, vowels, epochs=2)
    result = stage(root)
    dyn = pd.read_csv(root / "reports/dynamics.csv")
    assert list(dyn.columns) == ["epoch", "layer", "grad_norm", "grad_norm_max", "update_ratio"] and len(dyn) == 4
    run = mlflow_client(root).get_run(result["run_id"])
    for key in (
        "grad_norm/lstm_0",
        "grad_norm/output",
        "grad_norm_max/lstm_0",
        "update_ratio/lstm_0",
        "update_ratio/output",
    ):
        assert steps(root, result["run_id"], key) == [0, 1], key
    assert run.data.tags["distribute"] == "none" and run.data.tags["replicas"] == "1"
    assert not (root / ".losstrace").exists()  # the resume backup is gone after a clean finish


def test_mixed_precision_computes_in_float16_and_restores_the_policy(vowels):
    import keras

    model, rec, _ = fit(shrunk(epochs=1, mixed_precision=True), vowels)
    assert model.get_layer("lstm_0").dtype_policy.name == "mixed_float16"
    assert model.get_layer("output").dtype_policy.name == "float32"
    assert np.isfinite(rec.epochs[0]["loss"]) and np.isfinite(rec.dynamics[0]["grad_norm"])
    assert keras.mixed_precision.global_policy().name == "float32"


# ---------------------------------------------------------------------------- resume


def crash_at(monkeypatch, root: Path, epoch: int) -> None:
    """Run the stage and make training die at the start of `epoch`, as a crash would."""
    original = callbacks.RecordingCallback.on_epoch_begin

    def dying(self, e, logs=None):
        if e == epoch:
            raise RuntimeError("simulated crash")
        return original(self, e, logs)

    with monkeypatch.context() as m, pytest.raises(RuntimeError, match="simulated crash"):
        m.setattr(callbacks.RecordingCallback, "on_epoch_begin", dying)
        stage(root)


def test_a_crashed_training_resumes_in_the_same_run_with_its_best_epoch(vowels, tmp_path, monkeypatch):
    # lr 0.05 makes val_loss bounce, so the best epoch is a real choice across both parts.
    root = project(tmp_path, vowels, epochs=5, learning_rate=0.05, callbacks={"checkpoint_monitor": "val_loss"})
    crash_at(monkeypatch, root, 3)
    state = json.loads((root / ".losstrace/train-backup/state.json").read_text())
    run_id = state["run_id"]
    assert state["epoch"] == 3 and mlflow_client(root).get_run(run_id).info.status == "FAILED"
    assert steps(root, run_id, "val_loss") == [0, 1, 2]

    result = stage(root)
    run = mlflow_client(root).get_run(run_id)
    assert result["run_id"] == run_id and run.info.status == "FINISHED"
    assert run.data.tags["losstrace.resumed_from_epoch"] == "3"
    assert steps(root, run_id, "val_loss") == [0, 1, 2, 3, 4]
    assert sorted(steps(root, run_id, "batch_loss")) == list(range(35))  # 7 batches x 5 epochs, once each
    assert steps(root, run_id, "grad_norm/lstm_0") == [0, 1, 2, 3, 4]
    history = pd.read_csv(root / "reports/history.csv")
    assert history["epoch"].tolist() == [0, 1, 2, 3, 4]
    assert pd.read_csv(root / "reports/batches.csv")["step"].tolist() == list(range(35))
    # The kept weights are the best epoch's over the whole training, not just the resumed part.
    import keras

    p = params.load(root / "params.yaml")
    ds = train.load_dataset(p, vowels)
    model = keras.models.load_model(root / "models/model.keras")
    val = model.evaluate(ds.x["val"], ds.y["val"], batch_size=32, verbose=0, return_dict=True)["loss"]
    assert val == pytest.approx(history["val_loss"].min(), rel=1e-5)
    assert not (root / ".losstrace").exists()


def test_a_bucketed_training_resumes_exactly_where_it_would_have_been(vowels, tmp_path, monkeypatch):
    """With bucketing the batches are a function of (seed, epoch), and the backup holds the
    dropout seed state and the optimizer moments: resuming changes nothing at all."""
    from losstrace.training import resume

    p = shrunk(epochs=4, batching="bucket")
    _, uninterrupted, _ = fit(p, vowels)
    backup = resume.Backup(tmp_path / "backup", "fingerprint")
    backup.begin("run")
    train.seed_everything(p.base.seed)
    ds = train.load_dataset(p, vowels)
    original = callbacks.RecordingCallback.on_epoch_begin

    def dying(self, e, logs=None):
        if e == 2:
            raise RuntimeError("simulated crash")
        return original(self, e, logs)

    with monkeypatch.context() as m, pytest.raises(RuntimeError):
        m.setattr(callbacks.RecordingCallback, "on_epoch_begin", dying)
        train.run(p, ds, backup=backup)
    train.seed_everything(p.base.seed)
    _, resumed = train.run(p, train.load_dataset(p, vowels), backup=backup)
    assert resumed.resumed_from == 2
    assert run_files.history_frame(resumed.epochs).to_csv() == run_files.history_frame(uninterrupted.epochs).to_csv()
    assert pd.DataFrame(resumed.batches).to_csv() == pd.DataFrame(uninterrupted.batches).to_csv()
    assert pd.DataFrame(resumed.dynamics).to_csv() == pd.DataFrame(uninterrupted.dynamics).to_csv()


def test_a_backup_from_other_params_is_discarded_and_its_run_failed(vowels, tmp_path, monkeypatch):
    root = project(tmp_path, vowels, epochs=3)
    crash_at(monkeypatch, root, 2)
    old = json.loads((root / ".losstrace/train-backup/state.json").read_text())["run_id"]
    mlflow_client(root).update_run(old, status="RUNNING")  # as a SIGKILLed process leaves it
    project(root, vowels, epochs=3, learning_rate=0.002)
    result = stage(root)
    assert result["run_id"] != old and mlflow_client(root).get_run(old).info.status == "FAILED"
    assert steps(root, result["run_id"], "val_loss") == [0, 1, 2]
    assert "losstrace.resumed_from_epoch" not in mlflow_client(root).get_run(result["run_id"]).data.tags


def go_offline(monkeypatch) -> None:
    """Point tracking at a port nothing listens on, failing fast."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")


def trained_epochs(monkeypatch) -> list[int]:
    """The epochs the next training actually runs (a resumed one skips the committed ones)."""
    seen: list[int] = []
    original = callbacks.RecordingCallback.on_epoch_begin

    def counting(self, e, logs=None):
        seen.append(e)
        return original(self, e, logs)

    monkeypatch.setattr(callbacks.RecordingCallback, "on_epoch_begin", counting)
    return seen


def test_a_run_whose_store_is_away_at_restart_resumes_offline_and_sync_completes_it(vowels, tmp_path, monkeypatch):
    from losstrace.workflows import sync

    root = project(tmp_path, vowels, epochs=4, tracking={"offline_ok": True})
    crash_at(monkeypatch, root, 2)
    run_id = json.loads((root / ".losstrace/train-backup/state.json").read_text())["run_id"]
    with monkeypatch.context() as m:
        go_offline(m)
        trained = trained_epochs(m)
        result = stage(root)
    assert trained == [2, 3]  # continued from the backup, not restarted
    assert result["offline"] and result["run_id"] == run_id
    info = json.loads((root / "reports/run.json").read_text())
    assert info["run_id"] == run_id and info["offline"] is True
    sync.main(root, root / "reports", root / "validate", root / "evaluate", root / "models", root / "prepared")
    assert mlflow_client(root).get_run(run_id).info.status == "FINISHED"
    assert steps(root, run_id, "val_loss") == [0, 1, 2, 3]
    assert sorted(steps(root, run_id, "batch_loss")) == list(range(28))  # 7 batches x 4 epochs, once each


def test_an_offline_training_resumes_from_its_backup_and_in_a_new_run_once_the_store_is_back(
    vowels, tmp_path, monkeypatch
):
    root = project(tmp_path, vowels, epochs=4, tracking={"offline_ok": True})
    with monkeypatch.context() as m:
        go_offline(m)
        crash_at(m, root, 2)
    state = json.loads((root / ".losstrace/train-backup/state.json").read_text())
    assert state["run_id"] is None and state["epoch"] == 2  # offline: no run to name
    trained = trained_epochs(monkeypatch)
    result = stage(root)  # the store answers again
    assert trained == [2, 3]
    assert not result["offline"]
    assert steps(root, result["run_id"], "val_loss") == [0, 1, 2, 3]  # the restored epochs are logged too
    assert sorted(steps(root, result["run_id"], "batch_loss")) == list(range(28))
    assert not (root / ".losstrace").exists()


@pytest.mark.slow
def test_sigkill_mid_training_then_rerun_resumes_and_records_each_epoch_once(vowels, tmp_path):
    epochs = 15
    root = project(tmp_path, vowels, epochs=epochs)
    cmd = [str(BIN / "losstrace"), "train", "--params", "params.yaml", *STAGE_ARGS]
    proc = subprocess.Popen(cmd, cwd=root, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    state, run_id, deadline = root / ".losstrace/train-backup/state.json", None, time.time() + 300
    while time.time() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        if state.exists():
            run_id = json.loads(state.read_text())["run_id"]
            if len(steps(root, run_id, "val_loss")) >= 2:
                break
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(steps(root, run_id, "val_loss"))
    assert 2 <= done < epochs, "killed too late to test anything: raise epochs"
    assert mlflow_client(root).get_run(run_id).info.status == "RUNNING"  # SIGKILL leaves no chance to say so

    r = subprocess.run(cmd, cwd=root, env=env(), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    run = mlflow_client(root).get_run(run_id)
    assert run.info.status == "FINISHED" and json.loads((root / "reports/run.json").read_text())["run_id"] == run_id
    assert steps(root, run_id, "val_loss") == list(range(epochs))
    batch_steps = steps(root, run_id, "batch_loss")
    assert sorted(batch_steps) == list(range(7 * epochs))  # the killed epoch's batches are not there twice
    assert pd.read_csv(root / "reports/history.csv")["epoch"].tolist() == list(range(epochs))
    assert pd.read_csv(root / "reports/batches.csv")["step"].tolist() == list(range(7 * epochs))
    assert int(run.data.tags["losstrace.resumed_from_epoch"]) >= done - 1


# ---------------------------------------------------------------------- tf.distribute

MIRRORED = """
import json, sys
from pathlib import Path
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]  # two replicas before TensorFlow starts its devices
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from losstrace.stages import train

root = Path(sys.argv[1])
out = train.main(root / "params.yaml", root / "prepared", root / "validate", root / "models", root / "reports", root)
print(json.dumps({"run_id": out["run_id"]}))
"""


@pytest.fixture(scope="module")
def undistributed_losses(vowels) -> np.ndarray:
    """True batch losses of the same 2-epoch fit without distribution, the reference."""
    _, rec, _ = fit(shrunk(), vowels)
    return pd.DataFrame(rec.batches)["loss"].to_numpy()


@pytest.mark.slow
def test_mirrored_on_two_logical_cpus_is_a_tracked_run_with_the_same_curve(vowels, undistributed_losses, tmp_path):
    root = project(tmp_path, vowels, epochs=2, distribute="mirrored")
    r = subprocess.run([sys.executable, "-c", MIRRORED, str(root)], env=env(), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    run_id = json.loads(r.stdout.strip().splitlines()[-1])["run_id"]
    run = mlflow_client(root).get_run(run_id)
    assert run.info.status == "FINISHED"
    assert (run.data.tags["distribute"], run.data.tags["replicas"]) == ("mirrored", "2")
    batches = pd.read_csv(root / "reports/batches.csv")
    assert batches["size"].tolist() == [32] * 6 + [24] + [32] * 6 + [24]  # the global batch is batch_size
    # Same seed, same global batches: the true batch losses match an undistributed fit (up
    # to float summation order), the uneven last batch included.
    assert np.allclose(batches["loss"].to_numpy(), undistributed_losses, rtol=1e-4)
    history = pd.read_csv(root / "reports/history.csv")
    weighted = batches.groupby("epoch").apply(lambda d: np.average(d["loss"], weights=d["size"]))
    assert np.allclose(weighted.to_numpy(), history["loss"].to_numpy(), rtol=1e-5)
    # Gradient norms come from the replicas' own steps (their share of each batch).
    dyn = pd.read_csv(root / "reports/dynamics.csv")
    assert len(dyn) == 4 and (dyn["grad_norm"] > 0).all() and np.isfinite(dyn["grad_norm_max"]).all()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_multi_worker_two_processes_train_one_tracked_run(vowels, undistributed_losses, tmp_path):
    root = project(tmp_path, vowels, epochs=2, distribute="multi_worker")
    cluster = {"worker": [f"127.0.0.1:{free_port()}" for _ in range(2)]}
    procs = []
    for i in range(2):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})
        suffix = "" if i == 0 else "_w1"
        args = [
            "--prepared",
            "prepared",
            "--validate",
            "validate",
            "--models",
            f"models{suffix}",
            "--reports",
            f"reports{suffix}",
        ]
        procs.append(
            subprocess.Popen(
                [str(BIN / "losstrace"), "train", "--params", "params.yaml", *args],
                cwd=root,
                env={**env(), "TF_CONFIG": tf_config},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    results = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, results):
        assert p.returncode == 0, err[-3000:]

    run_id = json.loads((root / "reports/run.json").read_text())["run_id"]
    c = mlflow_client(root)
    runs = c.search_runs([c.get_experiment_by_name(store.experiment_name()).experiment_id])
    assert [r.info.run_id for r in runs] == [run_id]  # only the chief records
    run = runs[0]
    assert run.info.status == "FINISHED" and run.data.tags["replicas"] == "2"
    assert steps(root, run_id, "val_loss") == [0, 1]
    assert not any(root.glob("reports_w1/*")) and not any(root.glob("models_w1/*"))  # worker 1 wrote to a temp dir
    batches = pd.read_csv(root / "reports/batches.csv")
    assert np.allclose(batches["loss"].to_numpy(), undistributed_losses, rtol=1e-4)
    assert not (root / ".losstrace").exists()


def test_multi_worker_without_tf_config_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(LosstraceError, match="TF_CONFIG is not set"):
        distribute.make_strategy("multi_worker")
    assert distribute.is_chief() and distribute.worker_id() == 0
