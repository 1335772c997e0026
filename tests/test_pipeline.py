"""End to end: real `dvc repro` / `dvc exp run` in a temp git repo, real MLflow store.

The module's project is the shipped pipeline as a clean baseline (the best epoch kept);
other tests shrink epochs with `-S`.
"""

from __future__ import annotations

import json

import pytest

from support import make_project, run_cli, run_tool

pytestmark = pytest.mark.slow
EPOCHS = 30  # the shipped params.yaml's
# A clean baseline is a well-configured run: the best epoch kept (val_loss), a batch that
# gives a calm loss. It must get no warning or error finding: data, lint or curve.
CLEAN = ["train.callbacks.checkpoint_monitor=val_loss"]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """Japanese Vowels through the shipped pipeline, unshrunk, with the best epoch kept."""
    root = make_project(tmp_path_factory.mktemp("pipeline"))
    run_tool("dvc", "exp", "run", *(a for s in CLEAN for a in ("-S", s)), cwd=root)
    return root


def test_the_shipped_pipeline_is_a_clean_baseline(project):
    assert "epochs: 30" in (project / "params.yaml").read_text()
    metrics = json.loads((project / "reports/evaluate/metrics.json").read_text())["test"]
    assert metrics["accuracy"] >= 0.9
    # diagnosis.json merges validate's data findings, lint's and the curve's
    findings = json.loads((project / "reports/train/diagnosis.json").read_text())["findings"]
    loud = [(f["code"], f["severity"]) for f in findings if f["severity"] in ("warning", "error")]
    assert loud == [], loud


def test_repro_writes_every_output(project):
    for path in (
        "data/prepared/train.parquet",
        "data/prepared/labels.json",
        "data/prepared/ingest.json",
        "reports/validate/results.json",
        "reports/validate/fingerprint.json",
        "reports/validate/datadocs/index.html",
        "models/model.keras",
        "models/featurizer.json",
        "reports/train/history.csv",
        "reports/train/batches.csv",
        "reports/train/lint.json",
        "reports/train/diagnosis.json",
        "reports/train/run.json",
        "reports/train/curves.png",
        "reports/evaluate/metrics.json",
        "reports/evaluate/per_class.json",
        "reports/evaluate/confusion.csv",
        "reports/evaluate/confusion.png",
    ):
        assert (project / path).exists(), path
    history = (project / "reports/train/history.csv").read_text().splitlines()
    assert history[0].startswith("epoch,loss,val_loss,accuracy,val_accuracy,lr")
    assert len(history) == EPOCHS + 1
    metrics = json.loads((project / "reports/evaluate/metrics.json").read_text())
    assert metrics["test"]["rows"] == 370 and 0 < metrics["test"]["accuracy"] <= 1
    assert "run_id" not in (project / "reports/evaluate/metrics.json").read_text()


def test_run_json_holds_the_fit_wall_time(project):
    # Read by bench/stage_cost.py; outside history.csv and metrics.json, which stay byte-identical.
    fit = json.loads((project / "reports/train/run.json").read_text())["fit_seconds"]
    assert isinstance(fit, float) and fit > 0


def test_mlflow_run_records_params_curves_model_and_evaluation(project):
    from losstrace.record import store

    run_id = json.loads((project / "reports/train/run.json").read_text())["run_id"]
    c = store.client(store.tracking_uri(project))
    run = c.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["train.epochs"] == str(EPOCHS)
    assert run.data.params["train.model.rnn.cell"] == "lstm"
    assert "data.train.content_hash" in run.data.params
    assert [m.step for m in c.get_metric_history(run_id, "val_loss")] == list(range(EPOCHS))
    assert len(c.get_metric_history(run_id, "batch_loss")) == EPOCHS * 7  # 216 rows / batch 32
    assert "test_accuracy" in run.data.metrics  # evaluate logged into the same run
    assert run.data.tags["env.tensorflow-cpu"].startswith("2.21")
    assert run.data.tags["git.dirty"] in ("true", "false") and len(run.data.tags["git.commit"]) == 40
    assert any(k.startswith("dvc.dep.") for k in run.data.tags)
    artifacts = {a.path for a in c.list_artifacts(run_id)}
    assert {"losstrace", "evaluate"} <= artifacts
    # MLflow 3 stores models as LoggedModels linked to the run, with the Keras flavour.
    models = c.search_logged_models([run.info.experiment_id], filter_string=f"source_run_id = '{run_id}'")
    assert len(models) == 1
    files = {a.path for a in c.list_logged_model_artifacts(models[0].model_id)}
    assert "MLmodel" in files
    import mlflow.keras

    with store.scoped_tracking_uri(store.tracking_uri(project)):
        model = mlflow.keras.load_model(models[0].model_uri)
    assert model.output_shape == (None, 9)


def test_second_repro_runs_no_stage(project):
    r = run_tool("dvc", "repro", cwd=project)
    assert "Running stage" not in r.stdout, r.stdout
    status = run_tool("dvc", "status", cwd=project)
    assert "up to date" in status.stdout


def test_dvc_metrics_and_plots_render(project):
    metrics = run_tool("dvc", "metrics", "show", "--json", cwd=project)
    assert "accuracy" in metrics.stdout
    plots = run_tool("dvc", "plots", "show", "--json", cwd=project)
    shown = json.loads(plots.stdout)["data"]
    assert {"Loss per epoch", "True per-batch loss", "Test confusion matrix", "reports/train/curves.png"} <= set(shown)
    loss_plot = shown["Loss per epoch"][0]
    assert loss_plot["type"] == "vega"
    assert len(loss_plot["content"]["data"]["values"]) == 2 * EPOCHS  # loss and val_loss per epoch


def test_diagnose_and_lint_commands_on_the_recorded_run(project):
    r = run_cli("diagnose", "--json", cwd=project, check=True)
    diagnosis = json.loads(r.stdout)
    assert diagnosis["run_id"] == json.loads((project / "reports/train/run.json").read_text())["run_id"]
    assert all(set(f) >= {"code", "severity", "evidence", "suggestion"} for f in diagnosis["findings"])
    lint = run_cli("lint", "--json", cwd=project, check=True)
    assert "findings" in json.loads(lint.stdout)


def test_forced_reruns_are_byte_identical(project):
    # The workspace holds the outputs of a training with exactly these params and data
    # (dvc says so): retraining from scratch must give the same bytes.
    assert "up to date" in run_tool("dvc", "status", cwd=project).stdout
    outputs = ("reports/train/history.csv", "reports/evaluate/metrics.json", "reports/evaluate/per_class.json")
    first = {p: (project / p).read_bytes() for p in outputs}
    run_tool("dvc", "repro", "-f", "-s", "train", cwd=project)
    run_tool("dvc", "repro", "-s", "evaluate", cwd=project)
    for path, content in first.items():
        assert (project / path).read_bytes() == content, path


def test_a_params_typo_fails_in_one_line_and_leaves_every_output_as_it_was(project):
    """DVC deletes a stage's outputs before its command runs unless they persist: a typo the
    stage catches must not cost the trained model and the reports."""
    import yaml

    stages = yaml.safe_load((project / "dvc.yaml").read_text())["stages"]
    outputs = [
        next(iter(out)) if isinstance(out, dict) else out
        for name in ("validate", "train", "evaluate")
        for key in ("outs", "metrics")
        for out in stages[name].get(key, [])
    ]
    files = [
        p for out in outputs for p in ([project / out] if (project / out).is_file() else (project / out).rglob("*"))
    ]
    before = {p: p.read_bytes() for p in files if p.is_file()}
    assert len(before) >= len(outputs)
    params = project / "params.yaml"
    text = params.read_text()
    params.write_text(text.replace("  batch_size: 32", "  batch_szie: 32", 1))
    try:
        r = run_tool("dvc", "repro", cwd=project, check=False)
        assert r.returncode != 0 and "Traceback" not in r.stderr
        errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error: ")]
        assert errors and "train.batch_szie" in errors[0] and "train.batch_size" in errors[0], r.stderr
        assert {p: p.read_bytes() for p in before if p.is_file()} == before
    finally:
        params.write_text(text)
    assert "up to date" in run_tool("dvc", "status", cwd=project).stdout  # nothing to redo once fixed


def test_grouped_rows_are_reported_by_validate(tmp_path):
    root = make_project(tmp_path / "grouped", {"data.shuffle": False})
    run_tool("dvc", "repro", "validate", cwd=root)
    results = json.loads((root / "reports/validate/results.json").read_text())
    clustered = [f for f in results["findings"] if f["code"] == "label_order_clustered"]
    assert "train" in {f.get("where") for f in clustered}


def test_validate_error_fails_the_pipeline_with_one_line(tmp_path):
    root = make_project(tmp_path / "bad")
    (root / "data").mkdir(exist_ok=True)
    # A committed label map that disagrees with the data: the encoding changed.
    (root / "data" / "labels.reference.json").write_text(json.dumps({str(k): k for k in range(1, 10)}))
    r = run_tool("dvc", "repro", "validate", cwd=root, check=False)
    assert r.returncode != 0
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error: ")]
    assert lines and "label_encoding_changed" in lines[0], r.stderr
    assert "Traceback" not in r.stderr
    assert not (root / "models/model.keras").exists()


def test_user_files_run_through_dvc_with_every_line_accounted_for(tmp_path):
    """The three UCI sentiment files (headerless TSV with quotes in the text) through real `dvc exp run`.

    The files repeat a few sentences across sources; ingest keeps identical inputs in one split,
    so validate passes at its default of no leakage at all.
    """
    import shutil

    from support import REPO

    root = make_project(tmp_path / "uci")
    shutil.copytree(REPO / "data" / "external" / "uci-sentiment", root / "uci")
    run_tool(
        "dvc",
        "exp",
        "run",
        "-S",
        "data.source=uci/*.txt",
        "-S",
        "data.source_dep=uci",
        "-S",
        "data.header=false",
        "-S",
        "train.epochs=1",
        "-S",
        "train.loss=binary_crossentropy",
        "-S",
        "train.output_activation=sigmoid",
        cwd=root,
    )
    ingest = json.loads((root / "data/prepared/ingest.json").read_text())
    assert ingest["rows_read"] == 3000 and ingest["rows_rejected"] == 0
    assert sum(ingest["splits"].values()) == 3000 and ingest["input"] == "text"
    metrics = json.loads((root / "reports/evaluate/metrics.json").read_text())
    assert metrics["test"]["rows"] == ingest["splits"]["test"]


@pytest.mark.parametrize(
    "source, sets, classes, clean",
    [
        # (Japanese Vowels, the default source, is the module's project above.)
        # 6 sensor channels x 100 steps, 32 training rows: batch 16 (2 steps an epoch) and 40
        # epochs; averaged over time (the last step of 100 forgets the start). At batch 8 Adam
        # overshoots once the loss is low (train and val loss jump 0.3 -> 0.9): noisy_loss, rightly.
        ("basic_motions", [*CLEAN, "train.epochs=40", "train.batch_size=16", "train.model.pooling=avg"], 4, True),
        # words -> one of eight emotions. No clean baseline exists: spelling barely predicts a
        # word's emotion, so not_learning (val) is the true verdict (docs/diagnosis.md).
        ("nrc_emotion", ["train.epochs=1", "data.text_level=char"], 8, False),
    ],
)
def test_bundled_source_runs_through_dvc(tmp_path, source, sets, classes, clean):
    """Each bundled dataset other than the default through real `dvc exp run`: every stage
    runs, every row is a sample, the model is a sensible one for it, and a clean baseline
    gets no warning or error."""
    root = make_project(tmp_path / source)
    args = [a for s in (f"data.source={source}", *sets) for a in ("-S", s)]
    run_tool("dvc", "exp", "run", *args, cwd=root)
    ingest = json.loads((root / "data/prepared/ingest.json").read_text())
    assert ingest["rows_rejected"] == 0 and sum(ingest["splits"].values()) == ingest["rows_read"] > 0
    assert len(json.loads((root / "data/prepared/labels.json").read_text())) == classes
    metrics = json.loads((root / "reports/evaluate/metrics.json").read_text())["test"]
    per_class = json.loads((root / "reports/evaluate/per_class.json").read_text())["test"]["per_class"]
    assert metrics["rows"] == ingest["splits"]["test"] and len(per_class) == classes
    assert sum(c["support"] for c in per_class.values()) == metrics["rows"]
    assert "up to date" in run_tool("dvc", "status", cwd=root).stdout
    if clean:
        assert metrics["accuracy"] >= 0.75
        # diagnosis.json merges validate's data findings, lint's and the curve's
        findings = json.loads((root / "reports/train/diagnosis.json").read_text())["findings"]
        loud = [(f["code"], f["severity"]) for f in findings if f["severity"] in ("warning", "error")]
        assert loud == [], loud
