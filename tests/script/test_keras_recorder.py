"""losstrace.keras on a user's own Keras script: real Keras training, a real SQLite MLflow store."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

import losstrace.keras
from losstrace.record import contract, reader, store
from losstrace.workflows import runs
from support import run_cli


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    """Each test records into ./mlflow.db of its own folder; autolog undone afterwards."""
    monkeypatch.chdir(tmp_path)
    keras.utils.set_random_seed(0)
    yield
    losstrace.keras.autolog(disable=True)


def sequences(rows: int = 240, steps: int = 12, grouped: bool = False, seed: int = 0):
    """Two-class sequences whose class is the sign of channel 0's mean; optionally grouped by class."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, steps, 2)).astype("float32")
    y = (x[:, :, 0].mean(axis=1) > 0).astype("int64")
    if grouped:
        order = np.argsort(y, kind="stable")
        x, y = x[order], y[order]
    return x, y


def gru(units: int = 8, activation: str = "softmax", outputs: int = 2, name: str = "sensor_gru"):
    model = keras.Sequential(
        [keras.Input((12, 2)), keras.layers.GRU(units), keras.layers.Dense(outputs, activation=activation)], name=name
    )
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def client():
    return store.client(store.tracking_uri())


def test_autolog_records_a_run_with_the_pipelines_contract(capsys):
    x, y = sequences()
    losstrace.keras.autolog()
    losstrace.keras.autolog()  # twice: still one recording per fit
    gru().fit(x, y, batch_size=16, epochs=3, validation_data=sequences(60, seed=1), verbose=0)
    losstrace.keras.flush()
    runs_found = client().search_runs([client().get_experiment_by_name("losstrace").experiment_id])
    assert len(runs_found) == 1
    run = runs_found[0]
    assert run.info.status == "FINISHED" and run.data.tags[contract.KIND_TAG] == contract.KIND_SCRIPT
    assert run.data.params["train.batch_size"] == "16" and run.data.params["train.optimizer"] == "adam"
    assert run.data.params["train.learning_rate"] == "0.003"  # as set, not its float32 (0.003000000026077032)
    assert run.data.params["train.model.rnn.cell"] == "gru" and run.data.params["train.epochs"] == "3"
    assert run.data.params["model.layers"] == "GRU(8) > Dense(2,softmax)"
    assert "data.train.content_hash" in run.data.params
    assert len(client().get_metric_history(run.info.run_id, contract.BATCH_LOSS)) == 3 * 15  # 240 rows / 16
    assert any(k.startswith("grad_norm/") for k in run.data.metrics)
    rec = reader.load_record("latest", store.project_root())
    assert rec.run_id == run.info.run_id and len(rec.history) == 3 and len(rec.batches) == 45
    # Every sequence runs all 12 steps: nothing is padded, so nothing to mask.
    assert "unmasked_padding" not in {f["code"] for f in rec.findings}
    assert rec.fingerprint["train"]["rows"] == 240 and rec.fingerprint["val"]["rows"] == 60
    err = capsys.readouterr().err
    assert f"run {run.info.run_id}" in err and f"losstrace diagnose {run.info.run_id}" in err


def test_the_recorded_batch_losses_average_back_to_the_epoch_loss():
    x, y = sequences()
    model = gru()
    history = model.fit(
        x,
        y,
        batch_size=16,
        epochs=2,
        verbose=0,
        callbacks=[losstrace.keras.LosstraceCallback(x=x, y=y, batch_size=16, summary=False)],
    )
    losstrace.keras.flush()
    rec = reader.load_record("latest", store.project_root())
    per_epoch = rec.batches.groupby("epoch").apply(lambda b: np.average(b["loss"], weights=b["size"]))
    np.testing.assert_allclose(per_epoch.to_numpy(), history.history["loss"], rtol=1e-5)


def test_autolog_measures_the_noise_scale_when_asked_and_leaves_the_training_alone():
    x, y = sequences()
    plain = gru().fit(x, y, batch_size=16, epochs=2, verbose=0).history
    keras.utils.set_random_seed(0)
    losstrace.keras.autolog(summary=False, noise_scale_every=2)
    measured = gru().fit(x, y, batch_size=16, epochs=2, verbose=0).history
    losstrace.keras.flush()
    np.testing.assert_array_equal(measured["loss"], plain["loss"])  # same updates with or without it
    rec = reader.load_record("latest", store.project_root())
    assert list(rec.history.columns[-3:]) == list(contract.NOISE_SCALE_COLUMNS)
    # tr(Σ) is always resolved; |G|² (and so B_simple) may need more than 7 measurements an epoch.
    assert (rec.history[contract.NOISE_TRACE] > 0).all()
    logged = client().get_metric_history(rec.run_id, contract.NOISE_TRACE)
    assert sorted(m.step for m in logged) == [0, 1]


def test_rows_grouped_by_class_with_validation_split_are_caught():
    x, y = sequences(grouped=True)
    losstrace.keras.autolog(summary=False)
    gru().fit(x, y, batch_size=16, epochs=2, validation_split=0.25, verbose=0)
    losstrace.keras.flush()
    diagnosis = runs.diagnose("latest", store.project_root())
    order = [f for f in diagnosis["findings"] if f["code"] == "label_order_clustered"]
    assert (
        order
        and order[0]["severity"] == "warning"
        and "validation_split takes the last rows" in order[0]["evidence"]["why"]
    )
    fingerprint = reader.load_record("latest", store.project_root()).fingerprint
    assert fingerprint["val"]["class_counts"] == {"0": 0, "1": 60}  # Keras validated on the last rows: one class


def test_lint_reads_the_compiled_model():
    x, y = sequences()
    y4 = np.random.default_rng(0).integers(0, 4, size=len(y))
    model = keras.Sequential(
        [keras.Input((12, 2)), keras.layers.LSTM(8, recurrent_dropout=0.2), keras.layers.Dense(4, activation="sigmoid")]
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    losstrace.keras.autolog(summary=False)
    model.fit(x, y4, batch_size=4, epochs=1, verbose=0)
    losstrace.keras.flush()
    codes = {f["code"]: f for f in runs.diagnose("latest", store.project_root())["findings"]}
    assert codes["activation_loss_mismatch"]["severity"] == "error"
    assert "cudnn_ineligible" in codes and "recurrent_dropout" in codes["cudnn_ineligible"]["evidence"]["message"]
    assert codes["small_batch"]["suggestion"].startswith("train.batch_size: 4 →")


def test_a_tf_data_input_is_recorded_and_named_as_not_fingerprinted():
    import tensorflow as tf

    x, y = sequences()
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    # No keras.Input: the model is built from the dataset's element spec, never iterated twice.
    model = keras.Sequential([keras.layers.GRU(8), keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    losstrace.keras.autolog(summary=False)
    model.fit(ds, epochs=2, verbose=0)
    losstrace.keras.flush()
    rec = reader.load_record("latest", store.project_root())
    assert len(rec.batches) == 30 and rec.fingerprint is None
    assert rec.params["model.layers"] == "GRU(8) > Dense(2,softmax)" and rec.params["train.batch_size"] == "16"
    assert client().get_run(rec.run_id).info.run_name == rec.name and "-bs16-" in rec.name
    assert rec.params["train.shuffle"] == "by the input"  # Keras ignores fit's shuffle for a tf.data input
    notes = [f for f in rec.findings if f["code"] == "not_fingerprinted"]
    assert notes and "Dataset" in notes[0]["evidence"]["message"]


# MLflow's own retries would hold the fit about four minutes before giving up on the server:
# the address is probed first, so the limit guards against that wait, not a speed target.
@pytest.mark.timeout(150)
def test_a_store_that_is_away_costs_one_warning_and_never_the_training(monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # nothing listens on the discard port
    for retry_setting in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT"):
        monkeypatch.delenv(retry_setting, raising=False)  # MLflow's defaults, as a user has them
    x, y = sequences()
    losstrace.keras.autolog()
    history = gru().fit(x, y, batch_size=16, epochs=2, verbose=0)
    losstrace.keras.flush()
    assert len(history.history["loss"]) == 2
    err = capsys.readouterr().err
    assert "unreachable" in err and "Traceback" not in err
    assert "in reports/" not in err and "files go to losstrace-runs/" in err  # not the pipeline's folder
    assert "losstrace diagnose losstrace-runs/" in err  # and what reads them
    saved = list((store.project_root() / "losstrace-runs").glob("*/history.csv"))
    assert len(saved) == 1 and len(saved[0].read_text().splitlines()) == 3
    # The kept folder reads as a run: diagnose and diff take it where they take a run id.
    kept = f"losstrace-runs/{saved[0].parent.name}"
    rec = reader.load_record(kept, store.project_root())
    assert rec.name == saved[0].parent.name and rec.params["train.batch_size"] == "16"
    assert len(rec.batches) == 30 and rec.fingerprint["train"]["rows"] == 240
    r = run_cli("diagnose", kept, "--json", cwd=store.project_root())
    assert r.returncode == 0 and json.loads(r.stdout)["run_id"] == kept, r.stderr
    r = run_cli("diff", kept, kept, "--json", cwd=store.project_root())
    assert r.returncode == 0, r.stderr


def test_an_unusual_model_still_trains_with_at_most_one_warning(capsys):
    inputs = {"a": keras.Input((12, 2), name="a"), "b": keras.Input((3,), name="b")}
    h = keras.layers.Concatenate()([keras.layers.GRU(4)(inputs["a"]), inputs["b"]])
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(h))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    x, y = sequences()
    losstrace.keras.autolog(summary=False)
    history = model.fit({"a": x, "b": x[:, :3, 0]}, y, batch_size=16, epochs=2, verbose=0)
    losstrace.keras.flush()
    assert len(history.history["loss"]) == 2
    assert capsys.readouterr().err.count("losstrace: warning") <= 1


def test_a_fit_inside_the_users_active_mlflow_run_records_into_it():
    import mlflow

    x, y = sequences()
    losstrace.keras.autolog(summary=False)
    with store.scoped_tracking_uri(store.tracking_uri()), mlflow.start_run(run_name="mine") as active:
        gru().fit(x, y, batch_size=16, epochs=1, verbose=0)
        losstrace.keras.flush()
        assert mlflow.active_run().info.run_id == active.info.run_id  # still the user's, still open
    run = client().get_run(active.info.run_id)
    assert run.data.params["train.batch_size"] == "16" and run.info.status == "FINISHED"


def test_a_datasets_batch_size_is_learnt_per_step_and_a_name_the_user_chose_is_kept():
    """The first batch's rows give a dataset's batch size (per step, also when Keras runs several
    steps per call); the run is renamed with it unless the user named the run or owns it."""
    import mlflow
    import tensorflow as tf

    x, y = sequences()
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    model = gru()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", steps_per_execution=3)
    losstrace.keras.autolog(summary=False)
    model.fit(ds, epochs=1, verbose=0)
    losstrace.keras.flush()
    rec = reader.load_record("latest", store.project_root())
    assert rec.params["train.batch_size"] == "16" and "-bs16-" in rec.name  # 48 rows a call, 3 steps

    losstrace.keras.autolog(summary=False, run_name="my-run")
    gru().fit(ds, epochs=1, verbose=0)
    losstrace.keras.flush()
    rec = reader.load_record("latest", store.project_root())
    assert rec.params["train.batch_size"] == "16" and client().get_run(rec.run_id).info.run_name == "my-run"

    losstrace.keras.autolog(summary=False)
    with store.scoped_tracking_uri(store.tracking_uri()), mlflow.start_run(run_name="mine") as active:
        gru().fit(ds, epochs=1, verbose=0)
        losstrace.keras.flush()
    run = client().get_run(active.info.run_id)
    assert run.data.params["train.batch_size"] == "16" and run.info.run_name == "mine"


def test_an_own_train_step_on_a_dataset_logs_no_batch_size_it_did_not_see():
    """The guide's step counts batches, not rows: with a dataset the rows of a batch are not
    known, and no batch size (least of all Keras' default 32) is made up for the run."""
    import tensorflow as tf

    x, y = sequences()
    inputs = keras.Input((12, 2))
    model = GuideStep(inputs, keras.layers.Dense(2, activation="softmax")(keras.layers.GRU(8)(inputs)))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    losstrace.keras.autolog(summary=False)
    model.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(16), epochs=1, verbose=0)
    losstrace.keras.flush()
    rec = reader.load_record("latest", store.project_root())
    assert len(rec.batches) == 15
    assert rec.params.get("train.batch_size", "") == "" and "-bs32-" not in rec.name


def test_diff_of_two_script_runs_names_the_changed_setting_first():
    x, y = sequences(rows=480)
    losstrace.keras.autolog(summary=False)
    for lr in (3e-3, 3e-5):
        model = gru(units=16)
        model.compile(optimizer=keras.optimizers.Adam(lr), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        model.fit(x, y, batch_size=16, epochs=6, validation_data=sequences(120, seed=1), verbose=0)
        losstrace.keras.flush()
    result = runs.diff("latest~1", "latest", store.project_root())
    assert result["a"].name != result["b"].name
    assert result["diff"]["causes"][0]["change"] == "train.learning_rate"
    json.dumps(result["diff"], default=str)


def test_a_fit_that_raises_ends_its_run_failed():
    class Boom(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raise KeyboardInterrupt

    x, y = sequences()
    losstrace.keras.autolog(summary=False)
    with pytest.raises(KeyboardInterrupt):
        gru().fit(x, y, batch_size=16, epochs=3, verbose=0, callbacks=[Boom()])
    found = client().search_runs([client().get_experiment_by_name("losstrace").experiment_id])
    assert [r.info.status for r in found] == ["FAILED"]


def test_epochs_that_end_before_the_run_is_open_are_logged_when_it_is(monkeypatch):
    """The run opens beside the training (the fingerprint first): a slow opening delays
    nothing, and every epoch ended meanwhile reaches the run."""
    import threading
    import time

    from losstrace.script import fit_data

    describe, opening = fit_data.describe, []

    def slow_describe(*args, **kwargs):
        opening.append(threading.current_thread().name)
        time.sleep(2.0)  # longer than the training below: its epochs all end before the run is open
        return describe(*args, **kwargs)

    monkeypatch.setattr(fit_data, "describe", slow_describe)
    x, y = sequences(64)
    losstrace.keras.autolog(summary=False)
    gru().fit(x, y, batch_size=16, epochs=3, verbose=0)
    losstrace.keras.flush()
    assert opening == ["losstrace-open"]
    rec = reader.load_record("latest", store.project_root())
    assert sorted(m.step for m in client().get_metric_history(rec.run_id, "loss")) == [0, 1, 2]
    assert len(client().get_metric_history(rec.run_id, contract.BATCH_LOSS)) == 12
    assert rec.fingerprint["train"]["rows"] == 64 and "data.train.content_hash" in rec.params


def test_the_summary_gives_the_prescription_as_code(capsys):
    x, y = sequences()
    model = gru()
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    losstrace.keras.autolog()
    model.fit(x, y, batch_size=2, epochs=1, verbose=0)
    losstrace.keras.flush()
    err = capsys.readouterr().err
    assert "warning: small_batch" in err and "try: model.fit(..., batch_size=" in err


@pytest.mark.parametrize("head", ["softmax", "logits"])
def test_validation_prediction_statistics_come_from_kerass_validation_pass(head, monkeypatch):
    """The figures summed inside Keras' validation steps equal those of predicting the
    validation set after fit (the last validation ran on the final weights)."""
    from losstrace.model.heads import as_probabilities
    from losstrace.record import run_files
    from losstrace.training.val_predictions import ValidationPredictions

    summed = []
    stats = ValidationPredictions.stats
    monkeypatch.setattr(
        ValidationPredictions, "stats", lambda self, names: summed.append(stats(self, names)) or summed[-1]
    )

    x, y = sequences()
    xv, yv = sequences(60, seed=1)
    model = gru(activation="softmax" if head == "softmax" else None)
    if head == "logits":
        model.compile(
            optimizer=keras.optimizers.Adam(3e-3),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
    model.evaluate(xv, yv, verbose=0)  # a test step traced before the fit: the hook must retrace it
    losstrace.keras.autolog(summary=False)
    model.fit(x, y, batch_size=16, epochs=2, validation_data=(xv, yv), verbose=0)
    losstrace.keras.flush()
    rec = reader.load_record("latest", store.project_root())
    seen = rec.context["predictions"]
    assert summed and summed[0] == seen  # from the validation pass, not a prediction after fit
    probs = as_probabilities(model.predict(xv, verbose=0), head == "logits", False)
    expected = run_files.prediction_stats(probs, ["0", "1"])
    assert seen["pred_class_shares"] == expected["pred_class_shares"]
    for key in ("mean_max_prob", "max_prob_share_above_0_99", "pinned_output_share", "mean_output_sum"):
        assert seen[key] == pytest.approx(expected[key], abs=1e-6), key
    assert "test_step" not in vars(model) and "compute_metrics" not in vars(model)  # the model is the user's again


def test_a_script_run_in_a_git_repository_carries_its_commit(tmp_path):
    import subprocess

    def git(*args):
        return subprocess.run(["git", *args], cwd=tmp_path, capture_output=True, text=True, check=True).stdout.strip()

    git("init", "-q")
    (tmp_path / "train.py").write_text("# the user's script\n")
    git("add", "train.py")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "script")
    x, y = sequences(64)
    losstrace.keras.autolog(summary=False)
    gru().fit(x, y, batch_size=16, epochs=1, verbose=0)
    losstrace.keras.flush()
    run = client().get_run(reader.load_record("latest", store.project_root()).run_id)
    assert run.data.tags["mlflow.source.git.commit"] == git("rev-parse", "HEAD")


def test_an_uploaded_run_leaves_no_temporary_files(tmp_path, monkeypatch):
    import tempfile

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    x, y = sequences(64)
    losstrace.keras.autolog(summary=False)
    gru().fit(x, y, batch_size=16, epochs=1, verbose=0)
    losstrace.keras.flush()
    rec = reader.load_record("latest", store.project_root())
    assert len(rec.history) == 1  # the files reached the store
    assert list(scratch.iterdir()) == []


def test_the_readmes_model_without_an_input_layer_is_recorded_with_its_callbacks():
    """`keras.Sequential([Embedding, GRU, Dense])` has no layers built until Keras traces its
    first step; `metrics=["acc"]` logs `val_acc`; early stopping restores its best epoch."""
    rng = np.random.default_rng(0)
    x = keras.utils.pad_sequences([rng.integers(1, 50, size=rng.integers(3, 10)) for _ in range(96)])
    y = (x.max(axis=1) > 40).astype("int64")
    model = keras.Sequential(
        [keras.layers.Embedding(50, 8), keras.layers.GRU(8), keras.layers.Dense(1, activation="sigmoid")]
    )
    model.compile(optimizer=keras.optimizers.RMSprop(1e-3), loss="binary_crossentropy", metrics=["acc"])
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=1, restore_best_weights=True)
    losstrace.keras.autolog(summary=False)
    model.fit(x, y, epochs=2, batch_size=32, validation_split=0.25, callbacks=[stop], verbose=0)
    losstrace.keras.flush()
    rec = reader.load_record("latest", store.project_root())
    assert rec.params["model.layers"] == "Embedding(50) > GRU(8) > Dense(1,sigmoid)"
    assert rec.history["val_accuracy"].notna().all() and "val_acc" in rec.history
    assert (
        rec.params["fit.callbacks"] == "EarlyStopping"
        and rec.params["fit.callbacks.EarlyStopping.monitor"] == "val_loss"
    )
    assert rec.params["train.callbacks.early_stopping"] == "True"
    assert rec.params["train.callbacks.checkpoint_monitor"] == "val_loss"  # it restores its best epoch
    lint = {f["code"] for f in rec.findings}
    assert "monitors_training_metric" not in lint and "unmasked_padding" in lint  # pre-padded: an info


class Subclassed(keras.Model):
    """A model as many scripts write it: layers in __init__, the forward pass in call."""

    def __init__(self, head_activation=None, outputs=2, tf_softmax=False):
        super().__init__(name="subclassed_gru")
        self.gru = keras.layers.GRU(8)
        self.drop = keras.layers.Dropout(0.2)
        self.head = keras.layers.Dense(outputs, activation=head_activation)
        self.tf_softmax = tf_softmax

    def call(self, x, training=False):
        logits = self.head(self.drop(self.gru(x), training=training))
        if self.tf_softmax:  # TensorFlow itself on the tensor: the call cannot run symbolically
            import tensorflow as tf

            return tf.nn.softmax(logits)
        return logits if self.head.activation.__name__ != "linear" else keras.ops.softmax(logits)


def _bare_history(make, fit_kwargs):
    """The same training from the same seed, without losstrace."""
    keras.utils.set_random_seed(0)
    losstrace.keras.autolog(disable=True)
    return make().fit(**fit_kwargs).history


def test_a_subclassed_model_is_recorded_like_a_functional_one(capsys):
    """Built from fit's shapes before the first step; its call traced for the output (a softmax
    applied in call after a linear Dense); the training is the one it would be unrecorded."""
    x, y = sequences()

    def make():
        model = Subclassed()
        model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
        return model

    fit = dict(x=x, y=y, batch_size=16, epochs=2, validation_data=sequences(60, seed=1), verbose=0)
    bare = _bare_history(make, fit)
    keras.utils.set_random_seed(0)
    losstrace.keras.autolog(summary=False)
    model = make()
    recorded = model.fit(**fit).history
    losstrace.keras.flush()
    np.testing.assert_allclose(recorded["loss"], bare["loss"], rtol=1e-6)
    assert "losstrace: warning" not in capsys.readouterr().err
    rec = reader.load_record("latest", store.project_root())
    run = client().get_run(rec.run_id)
    assert run.info.status == "FINISHED"
    assert rec.params["model.layers"] == "GRU(8) > Dropout(0.2) > Dense(2)"
    assert rec.params["train.output_activation"] == "softmax"  # keras.ops.softmax in call, not the Dense's
    assert rec.params["train.model.rnn.cell"] == "gru" and rec.params["train.model.dropout"] == "0.2"
    grad_norms = sorted(k.split("/")[1].split("_")[0] for k in run.data.metrics if k.startswith("grad_norm/"))
    assert len(rec.batches) == 30 and grad_norms == ["dense", "gru"]
    per_epoch = rec.batches.groupby("epoch").apply(lambda b: np.average(b["loss"], weights=b["size"]))
    np.testing.assert_allclose(per_epoch.to_numpy(), recorded["loss"], rtol=1e-5)
    assert rec.fingerprint["train"]["rows"] == 240 and rec.context["predictions"]["mean_output_sum"] == pytest.approx(1)
    assert "not_recorded" not in {f["code"] for f in rec.findings}
    # The trace left nothing on the user's layers: the model is theirs as it came.
    assert all(not layer._inbound_nodes and not layer._outbound_nodes for layer in model._flatten_layers())


class Tokens(keras.Model):
    """Token ids → Embedding → GRU → a sigmoid head of four (a mistake under sparse categorical cross-entropy)."""

    def __init__(self, mask_zero):
        super().__init__()
        self.embed = keras.layers.Embedding(50, 8, mask_zero=mask_zero)
        self.rnn = keras.layers.GRU(8)
        # A nested model: its layers are read, and its own output layer is the model's.
        self.out = keras.Sequential([keras.layers.Dense(4, activation="sigmoid")])

    def call(self, x):
        return self.out(self.rnn(self.embed(x)))


def _post_padded_tokens():
    rng = np.random.default_rng(0)
    tokens = keras.utils.pad_sequences(
        [rng.integers(1, 50, size=rng.integers(3, 10)) for _ in range(64)], padding="post"
    )
    return tokens, rng.integers(0, 4, size=64)


def test_a_subclassed_models_head_and_mask_are_linted():
    """The lint reads the output layer and the recurrent layer's mask off the traced call."""
    tokens, y4 = _post_padded_tokens()

    losstrace.keras.autolog(summary=False)
    for mask_zero in (False, True):
        model = Tokens(mask_zero)
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        model.fit(tokens, y4, batch_size=16, epochs=1, verbose=0)
        losstrace.keras.flush()
        rec = reader.load_record("latest", store.project_root())
        codes = {f["code"]: f for f in rec.findings}
        assert codes["activation_loss_mismatch"]["severity"] == "error"  # sigmoid with categorical cross-entropy
        assert ("unmasked_padding" in codes) is not mask_zero  # post-padded tokens, masked or not
        assert (
            rec.params["model.layers"]
            == "Embedding(50" + (",mask" if mask_zero else "") + ") > GRU(8) > Dense(4,sigmoid)"
        )


def test_a_subclassed_model_a_generator_builds_is_linted_from_the_shapes_it_was_built_on(capsys):
    """Keras builds it in the first step, from the generator's first batch: its call is then
    traced on inputs of the shape it was built on, so its head and mask are read as with arrays."""
    tokens, y4 = _post_padded_tokens()
    model = Tokens(mask_zero=False)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    losstrace.keras.autolog(summary=False)
    model.fit(_endless(tokens, y4, 16), steps_per_epoch=4, epochs=1, verbose=0)
    losstrace.keras.flush()
    assert "losstrace: warning" not in capsys.readouterr().err
    rec = reader.load_record("latest", store.project_root())
    codes = {f["code"]: f for f in rec.findings}
    assert codes["activation_loss_mismatch"]["severity"] == "error"  # needs the head, read off the traced call
    assert rec.params["train.output_activation"] == "sigmoid"
    assert not any("could not be traced" in str(f["evidence"]) for f in rec.findings)


def test_a_subclassed_call_that_cannot_be_traced_is_recorded_with_one_note(capsys):
    x, y = sequences()

    def make():
        model = Subclassed(tf_softmax=True)
        model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
        return model

    fit = dict(x=x, y=y, batch_size=16, epochs=2, verbose=0)
    bare = _bare_history(make, fit)
    keras.utils.set_random_seed(0)
    losstrace.keras.autolog(summary=False)
    recorded = make().fit(**fit).history
    losstrace.keras.flush()
    np.testing.assert_allclose(recorded["loss"], bare["loss"], rtol=1e-6)
    assert "losstrace: warning" not in capsys.readouterr().err
    rec = reader.load_record("latest", store.project_root())
    assert len(rec.batches) == 30 and rec.params["train.output_activation"] == "unknown"
    notes = [f for f in rec.findings if f["code"] == "not_recorded"]
    assert len(notes) == 1 and notes[0]["severity"] == "info" and notes[0]["evidence"]["missing"] == ["output_layer"]
    assert "symbolic" in notes[0]["evidence"]["message"]
    assert client().get_run(rec.run_id).data.tags["finding.not_recorded"]


class GuideStep(keras.Model):
    """The train_step of Keras' "customizing fit" guide: the optimizer before the metrics."""

    def train_step(self, data):
        import tensorflow as tf

        x, y = data
        with tf.GradientTape() as tape:
            y_pred = self(x, training=True)
            loss = self.compute_loss(y=y, y_pred=y_pred)
        self.optimizer.apply(tape.gradient(loss, self.trainable_variables), self.trainable_variables)
        for metric in self.metrics:
            metric.update_state(loss) if metric.name == "loss" else metric.update_state(y, y_pred)
        return {m.name: m.result() for m in self.metrics}


class RawLossStep(Subclassed):
    """A train_step that returns the batch's loss itself and updates no metric."""

    def train_step(self, data):
        import tensorflow as tf

        x, y = data
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, self(x, training=True)))
        self.optimizer.apply_gradients(zip(tape.gradient(loss, self.trainable_variables), self.trainable_variables))
        return {"loss": loss}


def test_an_own_train_step_is_recorded_as_far_as_it_goes(capsys):
    """The guide's step updates its loss tracker after the optimizer: the batch losses are read
    after the step (the in-step log would read the previous step's), so they average back to
    Keras' epoch loss; the gradient norms come through model.optimizer; one warning."""
    x, y = sequences()

    def make():
        inputs = keras.Input((12, 2))
        model = GuideStep(inputs, keras.layers.Dense(2, activation="softmax")(keras.layers.GRU(8)(inputs)))
        model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
        return model

    fit = dict(x=x, y=y, batch_size=16, epochs=2, verbose=0)
    bare = _bare_history(make, fit)
    keras.utils.set_random_seed(0)
    losstrace.keras.autolog(summary=False, noise_scale_every=2)
    recorded = make().fit(**fit).history
    losstrace.keras.flush()
    np.testing.assert_allclose(recorded["loss"], bare["loss"], rtol=1e-6)
    warnings = [line for line in capsys.readouterr().err.splitlines() if "losstrace: warning" in line]
    assert len(warnings) == 2 and "own train_step" in warnings[0] and "noise scale not measured" in warnings[1]
    rec = reader.load_record("latest", store.project_root())
    assert len(rec.batches) == 30 and (rec.batches["size"] == 16).all()
    per_epoch = rec.batches.groupby("epoch")["loss"].mean()  # the guide's tracker weighs batches alike
    np.testing.assert_allclose(per_epoch.to_numpy(), recorded["loss"], rtol=1e-5)
    assert any(k.startswith("grad_norm/") for k in client().get_run(rec.run_id).data.metrics)
    assert "not_recorded" not in {f["code"] for f in rec.findings}


def test_an_own_train_step_without_a_loss_metric_records_no_batch_losses():
    x, y = sequences()

    def make():
        model = RawLossStep()
        model.compile(optimizer=keras.optimizers.Adam(3e-3))
        return model

    fit = dict(x=x, y=y, batch_size=16, epochs=2, verbose=0)
    keras.utils.set_random_seed(0)
    bare = make()
    bare.fit(**fit)  # its epoch loss reads 0: Keras reports its own (unused) tracker by that name
    keras.utils.set_random_seed(0)
    losstrace.keras.autolog(summary=False)
    model = make()
    model.fit(**fit)
    losstrace.keras.flush()
    for trained, untracked in zip(model.get_weights(), bare.get_weights()):
        np.testing.assert_allclose(trained, untracked, rtol=1e-6)
    rec = reader.load_record("latest", store.project_root())
    assert rec.batches.empty and len(rec.history) == 2
    notes = [f for f in rec.findings if f["code"] == "not_recorded"]
    assert notes and notes[0]["evidence"]["missing"] == ["batch_loss"]
    assert any(k.startswith("grad_norm/") for k in client().get_run(rec.run_id).data.metrics)


def test_an_own_train_step_on_inputs_alone_is_recorded():
    """fit(x) with no labels (an autoencoder's step of its own, compiled with mse): built
    without the compiled loss (which would need labels), and no head rule judges mse."""
    import tensorflow as tf

    class Autoencoder(keras.Model):
        def __init__(self):
            super().__init__()
            self.encode, self.decode = keras.layers.GRU(4), keras.layers.Dense(24)

        def call(self, x):
            return keras.ops.reshape(self.decode(self.encode(x)), (-1, 12, 2))

        def train_step(self, x):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(tf.square(self(x) - x))
            self.optimizer.apply_gradients(zip(tape.gradient(loss, self.trainable_variables), self.trainable_variables))
            self._loss_tracker.update_state(loss, sample_weight=tf.shape(x)[0])
            return {"loss": self._loss_tracker.result()}

    x, _ = sequences()
    model = Autoencoder()
    model.compile(optimizer="adam", loss="mse")
    losstrace.keras.autolog(summary=False)
    history = model.fit(x, batch_size=16, epochs=2, verbose=0).history
    losstrace.keras.flush()
    rec = reader.load_record("latest", store.project_root())
    assert len(rec.batches) == 30 and (rec.batches["size"] == 16).all()
    per_epoch = rec.batches.groupby("epoch").apply(lambda b: np.average(b["loss"], weights=b["size"]))
    np.testing.assert_allclose(per_epoch.to_numpy(), history["loss"], rtol=1e-5)
    codes = {f["code"]: f for f in rec.findings}
    assert "activation_loss_mismatch" not in codes and "not_recorded" not in codes
    assert "no labels" in codes["not_fingerprinted"]["evidence"]["message"]


def _warmup(epoch):
    return 1e-3 * (epoch + 1)


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [
        ("none", "constant"),
        ("cosine", "cosine"),
        ("exponential", "exponential_decay"),
        ("plateau", "plateau"),
        ("scheduler", "scheduler"),
    ],
)
def test_a_learning_rate_schedule_is_recorded_under_the_pipelines_key(schedule, expected):
    """train.lr_schedule as the pipeline names it, the schedule's settings under lr_schedule.*,
    and each epoch's lr the one its steps ran with."""
    x, y = sequences(64)  # 4 steps an epoch
    lr = {
        "cosine": keras.optimizers.schedules.CosineDecay(4e-3, decay_steps=12, alpha=0.1),
        "exponential": keras.optimizers.schedules.ExponentialDecay(4e-3, decay_steps=4, decay_rate=0.5),
    }.get(schedule, 4e-3)
    callbacks = {
        # min_delta above any improvement: every epoch after the first is a plateau.
        "plateau": [keras.callbacks.ReduceLROnPlateau(monitor="loss", factor=0.5, patience=0, min_delta=10.0)],
        "scheduler": [keras.callbacks.LearningRateScheduler(_warmup)],
    }.get(schedule, [])
    model = gru()
    model.compile(optimizer=keras.optimizers.Adam(lr), loss="sparse_categorical_crossentropy")
    losstrace.keras.autolog(summary=False)
    model.fit(x, y, batch_size=16, epochs=3, callbacks=callbacks, verbose=0)
    losstrace.keras.flush()
    rec = reader.load_record("latest", store.project_root())
    assert rec.params["train.lr_schedule"] == expected
    logged = rec.history["lr"].to_numpy()
    steps = np.array([4, 8, 12])  # the optimizer's step count when each epoch ends
    want = {
        "none": [4e-3] * 3,
        "cosine": [float(lr(s)) for s in steps] if callable(lr) else None,  # as Keras reads it: at the step count
        "exponential": 4e-3 * 0.5 ** (steps / 4),
        # Halved after epoch 1 (epoch 0 sets the best): epoch 1 ran at 4e-3, whatever its end left.
        "plateau": [4e-3, 4e-3, 2e-3],
        "scheduler": [1e-3, 2e-3, 3e-3],
    }[schedule]
    np.testing.assert_allclose(logged, want, rtol=1e-6)
    settings = {k: v for k, v in rec.params.items() if k.startswith("lr_schedule.")}
    assert (
        settings
        == {
            "none": {},
            "cosine": {"lr_schedule.alpha": "0.1", "lr_schedule.decay_steps": "12", "lr_schedule.warmup_steps": "0"}
            | {k: v for k, v in settings.items() if k == "lr_schedule.warmup_target"},
            "exponential": {
                "lr_schedule.decay_rate": "0.5",
                "lr_schedule.decay_steps": "4",
                "lr_schedule.staircase": "False",
            },
            "plateau": {
                "lr_schedule.cooldown": "0",
                "lr_schedule.factor": "0.5",
                "lr_schedule.min_delta": "10.0",
                "lr_schedule.min_lr": "0.0",
                "lr_schedule.mode": "auto",
                "lr_schedule.monitor": "loss",
                "lr_schedule.patience": "0",
            },
            "scheduler": {"lr_schedule.schedule": "_warmup"},
        }[schedule]
    )
    assert float(rec.params["train.learning_rate"]) == pytest.approx(4e-3)  # a schedule's start


def test_diff_names_an_added_schedule_with_its_mechanism():
    x, y = sequences(rows=480)
    xv = sequences(120, seed=1)
    losstrace.keras.autolog(summary=False)
    for lr in (3e-2, keras.optimizers.schedules.CosineDecay(3e-2, decay_steps=8 * 30)):
        keras.utils.set_random_seed(0)
        model = gru(units=16)
        model.compile(optimizer=keras.optimizers.Adam(lr), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        model.fit(x, y, batch_size=16, epochs=8, validation_data=xv, verbose=0)
        losstrace.keras.flush()
    result = runs.diff("latest~1", "latest", store.project_root())
    top = result["diff"]["causes"][0]
    assert top["change"] == "train.lr_schedule", result["diff"]["causes"]
    assert "decays the learning rate along a cosine" in top["why"] and "no known mechanism" not in top["why"]
    assert not any(c["change"].startswith("lr_schedule.") for c in result["diff"]["causes"])


class Batches(keras.utils.PyDataset):
    """A PyDataset of (x, y) batches, as scripts write one for data that does not fit in memory."""

    def __init__(self, x, y, batch_size):
        super().__init__()
        self.x, self.y, self.batch_size = x, y, batch_size

    def __len__(self):
        return -(-len(self.x) // self.batch_size)

    def __getitem__(self, i):
        s = slice(i * self.batch_size, (i + 1) * self.batch_size)
        return self.x[s], self.y[s]


def _no_input_gru():
    model = keras.Sequential([keras.layers.GRU(8), keras.layers.Dense(2, activation="softmax")], name="late_gru")
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
    return model


def _endless(x, y, batch_size):
    while True:
        for i in range(0, len(x), batch_size):
            yield x[i : i + batch_size], y[i : i + batch_size]


@pytest.mark.parametrize("feed", ["py_dataset", "generator", "callback_without_arrays"])
def test_a_model_keras_builds_in_its_first_step_is_recorded_from_that_step_on(feed, capsys):
    """No keras.Input and no shapes before fit: Keras builds the model in its first train step,
    and the recording starts right after it. Every batch's true loss is there (the first read
    from the host), the gradient norms from the second step on, the training is the one it
    would be unrecorded, and one info note says what the first step could not give."""
    x, y = sequences()
    if feed == "py_dataset":
        fit = dict(x=Batches(x, y, 16), epochs=2, verbose=0)
    elif feed == "generator":
        fit = dict(x=_endless(x, y, 16), steps_per_epoch=15, epochs=2, verbose=0)
    else:
        fit = dict(x=x, y=y, batch_size=16, epochs=2, verbose=0)
    bare = _bare_history(_no_input_gru, {**fit, "x": _endless(x, y, 16)} if feed == "generator" else fit)
    keras.utils.set_random_seed(0)
    model = _no_input_gru()
    if feed == "callback_without_arrays":
        recorded = model.fit(**fit, callbacks=[losstrace.keras.LosstraceCallback(summary=False)]).history
    else:
        losstrace.keras.autolog(summary=False)
        recorded = model.fit(**fit).history
    losstrace.keras.flush()
    np.testing.assert_allclose(recorded["loss"], bare["loss"], rtol=1e-6)
    assert "losstrace: warning" not in capsys.readouterr().err
    rec = reader.load_record("latest", store.project_root())
    assert client().get_run(rec.run_id).info.status == "FINISHED"
    assert rec.params["model.layers"] == "GRU(8) > Dense(2,softmax)"
    assert rec.params["train.batch_size"] == "16" and "-bs16-" in rec.name  # from the first batch's rows
    assert "apply" not in vars(model.optimizer)  # the recording hooks are gone: the optimizer is as it came
    # Keras ignores fit's shuffle for a generator; a PyDataset's batch order and arrays it does shuffle.
    assert rec.params["train.shuffle"] == ("by the input" if feed == "generator" else "True")
    assert len(rec.batches) == 30 and rec.batches["step"].tolist() == list(range(30))
    per_epoch = rec.batches.groupby("epoch").apply(lambda b: np.average(b["loss"], weights=b["size"]))
    np.testing.assert_allclose(per_epoch.to_numpy(), recorded["loss"], rtol=1e-5)
    norms = [k for k in client().get_run(rec.run_id).data.metrics if k.startswith("grad_norm/")]
    assert norms and all(
        [m.step for m in client().get_metric_history(rec.run_id, k)] == [0, 1]
        and all(np.isfinite(m.value) for m in client().get_metric_history(rec.run_id, k))
        for k in norms
    )
    notes = [f for f in rec.findings if f["code"] == "not_recorded"]
    assert len(notes) == 1 and "first_step_gradients" in notes[0]["evidence"]["missing"]
    assert "keras.Input" in notes[0]["suggestion"]


def test_a_regression_model_is_recorded_with_its_targets_in_quartiles(capsys):
    """An LSTM regressor (mse, linear output) on rows sorted by target, validated on the last
    rows: recorded without a warning, its rows labelled by target quartile in the fingerprint,
    the sorted order caught, and no classifier rule (head, chance level) applied to it."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(320, 12, 2)).astype("float32")
    y = (x[:, :, 0].mean(axis=1, keepdims=True) * 3 + 10).astype("float32")
    order = np.argsort(y[:, 0])
    x, y = x[order], y[order]
    inputs = keras.Input((12, 2))
    model = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.GRU(8)(inputs)), name="sorted_regressor")
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="mse", metrics=["mae"])
    losstrace.keras.autolog(summary=False)
    model.fit(x, y, batch_size=32, epochs=2, validation_split=0.25, verbose=0)
    losstrace.keras.flush()
    assert "losstrace: warning" not in capsys.readouterr().err
    rec = reader.load_record("latest", store.project_root())
    assert rec.params["train.loss"] == "mse" and rec.context["task"] == "regression"
    assert "class_shares" not in rec.context and "predictions" not in rec.context
    # validation_split took the top quarter of the sorted targets: all of it lies in q4.
    assert rec.fingerprint["train"]["class_counts"] == {"q1": 60, "q2": 60, "q3": 60, "q4": 60}
    assert rec.fingerprint["val"]["class_counts"] == {"q1": 0, "q2": 0, "q3": 0, "q4": 80}
    order_findings = [f for f in rec.findings if f["code"] == "label_order_clustered" and f["where"] == "train"]
    assert order_findings and order_findings[0]["severity"] == "warning"
    assert order_findings[0]["evidence"]["labels"] == "quartiles of the target"
    assert "other target values" in order_findings[0]["evidence"]["why"]
    # Not "shuffle before the split": time-ordered windows would then train on the future.
    assert order_findings[0]["suggestion"].startswith("pass validation_data: a later period")
    codes = {f["code"] for f in rec.findings}
    assert not codes & {"class_imbalance", "activation_loss_mismatch", "saturated_predictions", "majority_collapse"}
    assert all("from_logits" not in f.get("suggestion", "") for f in rec.findings)


def test_a_sequence_autoencoder_fitted_on_its_inputs_is_recorded(capsys):
    """fit(x, x): targets of shape (rows, steps, channels) are values, not labels."""
    x, _ = sequences(160)
    inputs = keras.Input((12, 2))
    code = keras.layers.RepeatVector(12)(keras.layers.LSTM(4)(inputs))
    out = keras.layers.TimeDistributed(keras.layers.Dense(2))(keras.layers.LSTM(4, return_sequences=True)(code))
    model = keras.Model(inputs, out, name="sequence_autoencoder")
    model.compile(optimizer="adam", loss=keras.losses.MeanSquaredError())
    losstrace.keras.autolog(summary=False)
    model.fit(x, x, batch_size=32, epochs=2, validation_split=0.2, verbose=0)
    losstrace.keras.flush()
    assert "losstrace: warning" not in capsys.readouterr().err
    rec = reader.load_record("latest", store.project_root())
    assert rec.context["task"] == "regression" and rec.params["train.loss"] == "mean_squared_error"
    assert len(rec.batches) == 2 * 4 and sum(rec.fingerprint["train"]["class_counts"].values()) == 128
    assert all("from_logits" not in f.get("suggestion", "") for f in rec.findings)


def test_a_short_numeric_run_that_is_still_learning_is_not_called_stuck():
    """The user trial's Dense model on 12 numeric features: 6 epochs at Adam's default, then
    3 more on the trained model. Both loss curves still fall steadily when fit returns; a
    level that has not yet gone 5% under the class prior (or under the start, for the
    continued fit) is a short run, not `not_learning`."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(320, 12)).astype("float32")
    y = (x[:, 0] - x[:, 2] > 0).astype("int32")
    keras.utils.set_random_seed(4)  # val loss 0.82 → 0.67: under the val prior 0.696, not yet 5% under
    model = keras.Sequential(
        [keras.layers.Dense(16, activation="relu"), keras.layers.Dense(1, activation="sigmoid")], name="dense"
    )
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    losstrace.keras.autolog(summary=False)
    found = {}
    for epochs in (6, 3):
        model.fit(x, y, epochs=epochs, batch_size=16, validation_split=0.2, verbose=0)
        losstrace.keras.flush()
        found[epochs] = runs.diagnose("latest", store.project_root())["findings"]
    for findings in found.values():
        assert "not_learning" not in {f["code"] for f in findings}, findings


def test_a_batch_4_run_names_one_batch_size_and_no_step_that_adds_the_noise_back():
    """lint's rule of thumb (4 → 32), noisy_loss's noise-sized batch and the prescription's
    capped one (98 rows: 8, for >= 8 steps an epoch) used to be three answers for one run."""
    x, y = sequences(rows=98)
    losstrace.keras.autolog(summary=False)
    model = gru()
    model.compile(optimizer=keras.optimizers.RMSprop(1e-3), loss="sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=4, epochs=8, validation_data=sequences(40, seed=1), verbose=0)
    losstrace.keras.flush()
    diagnosis = runs.diagnose("latest", store.project_root())
    (batch,) = [c for c in diagnosis["prescription"] if c["key"] == "train.batch_size"]
    assert (batch["from"], batch["to"]) == (4, 8)
    asked = {
        f["code"]: c["to"]
        for f in diagnosis["findings"]
        for c in f.get("changes") or []
        if c["key"] == "train.batch_size" and not c.get("alternative")
    }
    assert "small_batch" in asked and set(asked.values()) == {8}, asked
    assert all("4 → 8" in f["suggestion"] for f in diagnosis["findings"] if f["code"] in asked)
    # A raised step may grow at most as the batch does: learning rate / batch sets the noise.
    for c in diagnosis["prescription"]:
        if c["key"] == "train.learning_rate" and "not_learning" not in c["findings"]:
            assert c["to"] <= c["from"] * 2 * 1.01, c
