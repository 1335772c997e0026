"""`losstrace fix`: the prescription re-run against the original's seed spread, judged
per change, applied to params.yaml in DVC's own form; script runs get code advice."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from losstrace import params
from losstrace.explain import code_advice
from losstrace.record import contract, reader, store
from losstrace.workflows import bisect, fix
from losstrace.workflows.replay import Workspace

REPO = Path(__file__).resolve().parents[2]
LR = {"key": "train.learning_rate", "from": 0.003, "to": 0.009, "why": "w", "findings": ["plateau", "noisy_loss"]}
SCHED = {"key": "train.lr_schedule", "from": "constant", "to": "cosine", "why": "w", "findings": ["plateau"]}


def test_plan_replays_the_original_seeds_the_whole_prescription_and_each_change_alone():
    p = params.Params()
    planned = fix.plan(p, [LR, SCHED], seeds=2, epochs=3)
    names = [t.name for t, _ in planned]
    assert names == [
        "original",
        "original seed 43",
        "prescription",
        "original + train.learning_rate",
        "original + train.lr_schedule",
    ]
    whole = planned[2][1]
    assert (whole.train.learning_rate, whole.train.lr_schedule, whole.train.epochs) == (0.009, "cosine", 3)
    assert all(t.data_seed == 42 for t, _ in planned[1:])  # one split: only training randomness varies
    assert [t.name for t, _ in fix.plan(p, [LR], seeds=1, epochs=0)] == ["original", "prescription"]
    invalid = fix.plan(p, [{**LR, "key": "train.optimizer", "to": "lion"}], seeds=1, epochs=0)[-1]
    assert invalid[1] is None and invalid[0].error.startswith("invalid")


def _trial(name, change=None, codes=(), best=0.5, acc=0.8):
    return bisect.Trial(name, change, features={"best_val_loss": best, "final_val_accuracy": acc}, codes=list(codes))


def test_a_change_is_verified_when_its_symptom_goes_and_nothing_gets_worse_beyond_the_spread():
    seeds = [
        _trial("original", codes=["plateau", "noisy_loss"]),
        _trial("original seed 43", best=0.52, codes=["plateau"]),
    ]
    judged = fix.judge(
        [
            *seeds,
            _trial("prescription", "train.learning_rate,train.lr_schedule", best=0.45),
            _trial("original + train.learning_rate", "train.learning_rate", codes=["noisy_loss"], best=0.47),
            _trial("original + train.lr_schedule", "train.lr_schedule", best=0.9, acc=0.5),
        ],
        [LR, SCHED],
    )
    by = {v["trial"]: v for v in judged["changes"]}
    assert judged["verified"] is True and by["prescription"]["symptoms"] == {"plateau": "gone", "noisy_loss": "gone"}
    assert by["original + train.learning_rate"]["symptoms"]["noisy_loss"] == "remains"
    assert not by["original + train.learning_rate"]["verified"]
    assert set(by["original + train.lr_schedule"]["worse"]) == {"best_val_loss", "final_val_accuracy"}
    assert fix.verified_changes([LR, SCHED], judged) == [LR, SCHED]
    # Within the seed spread is not worse: the seeds' own 0.02 of best val loss.
    assert (
        fix.judge([*seeds, _trial("prescription", "train.learning_rate", best=0.53)], [LR])["changes"][0]["worse"] == {}
    )


def test_apply_writes_params_yaml_in_dvc_form_and_the_exp_run_line_quotes_values(tmp_path):
    path = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", path)
    before = path.read_text().splitlines()
    fix.apply(path, [{"key": "train.lr_schedule", "to": "cosine"}, {"key": "train.batch_size", "to": 16}])
    after = path.read_text().splitlines()
    changed = [b.split("#")[0].strip() for a, b in zip(before, after, strict=True) if a != b]
    assert sorted(changed) == ["batch_size: 16", "lr_schedule: cosine"]
    assert params.load(path).train.lr_schedule == "cosine"
    line = fix.exp_run_line([{"key": "train.model.embedding.mask_zero", "to": True}, {"key": "x.y", "to": ""}])
    assert line == "dvc exp run -S 'train.model.embedding.mask_zero=true' -S 'x.y='''"


def test_script_runs_get_the_keras_argument_to_change():
    advice = code_advice.code_advice(
        [
            {"key": "train.batch_size", "from": 4, "to": 32},
            {"key": "train.learning_rate", "from": 0.003, "to": 0.009},
            {"key": "train.lr_schedule", "from": "constant", "to": "cosine"},
            {"key": "train.output_activation", "from": "sigmoid", "to": "softmax"},
            {"key": "train.model.rnn.recurrent_dropout", "from": 0.2, "to": 0},
            {"key": "train.model.embedding.mask_zero", "from": False, "to": True},
            {"key": "train.class_weight", "from": "none", "to": "balanced"},
        ],
        {"train.optimizer": "rmsprop"},
    )
    code = [a["code"] for a in advice]
    assert code[0] == "model.fit(..., batch_size=32)"
    assert code[1] == "model.compile(optimizer=keras.optimizers.RMSprop(learning_rate=0.009), ...)"
    assert "CosineDecay(0.009" in code[2]
    assert code[3] == 'the output layer: Dense(n_outputs, activation="softmax")'
    assert code[4] == "LSTM/GRU(..., recurrent_dropout=0)"
    assert code[5] == "Embedding(..., mask_zero=True)"
    assert code[6].startswith("model.fit(..., class_weight={c:")


@pytest.mark.slow
def test_apply_with_nothing_verified_leaves_params_and_says_so(tmp_path):
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    before = (tmp_path / "params.yaml").read_bytes()
    result = {"run_id": "c558420d" + "0" * 24, "verified": False, "changes": []}
    result.update(fix.apply_verified(tmp_path / "params.yaml", [], result["run_id"]))
    assert (tmp_path / "params.yaml").read_bytes() == before and "applied_to" not in result
    shown = fix.render(result).splitlines()
    assert shown[-1].startswith(f"not applied: no change was verified, so {tmp_path / 'params.yaml'} is unchanged")
    assert "losstrace diagnose c558420d" in shown[-1]
    applied = fix.apply_verified(tmp_path / "params.yaml", [{"key": "train.batch_size", "to": 64}], result["run_id"])
    assert applied == {"applied_to": str(tmp_path / "params.yaml")}
    assert params.load(tmp_path / "params.yaml").train.batch_size == 64


def test_fix_verifies_a_wrong_head_on_a_real_shrunk_run_and_applies_it(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    base = params.Params()
    # Sigmoid outputs under a categorical loss on 9 classes: lint's error, trained anyway.
    wrong = dataclasses.replace(
        base, train=dataclasses.replace(base.train, epochs=3, output_activation="sigmoid", on_lint_error="continue")
    )
    ws = Workspace(store.tracking_uri(tmp_path), "train", inprocess=True)
    try:
        run = ws.train(wrong, source_root=REPO)
    finally:
        ws.close()
    assert not run.error, run.error
    recorded = reader.read_run(tmp_path, run.run_id, contract.ARTIFACT_DIR)
    logged = json.loads(recorded.files[contract.PRESCRIPTION])
    assert logged == json.loads(recorded.files[contract.DIAGNOSIS])["prescription"]
    assert "train.output_activation=softmax" in recorded.tags[contract.PRESCRIPTION_TAG]
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    fix.apply(tmp_path / "params.yaml", [{"key": "train.output_activation", "to": "sigmoid"}])

    result = fix.main(run.run_id, tmp_path, seeds=2, apply_to=tmp_path / "params.yaml", inprocess=True)

    head = next(c for c in result["prescription"] if c["key"] == "train.output_activation")
    assert head["to"] == "softmax" and "activation_loss_mismatch" in head["findings"]
    whole = next(v for v in result["changes"] if v["trial"] == "prescription")
    assert whole["symptoms"]["activation_loss_mismatch"] == "gone"
    assert result["verified"] is whole["verified"] is True, whole
    assert params.load(tmp_path / "params.yaml").train.output_activation == "softmax"
    c = store.client(store.tracking_uri(tmp_path))
    exp = c.get_experiment_by_name("losstrace").experiment_id
    children = c.search_runs([exp], filter_string=f"tags.mlflow.parentRunId = '{result['parent_run_id']}'")
    assert len(children) == len(result["trials"])
    assert {r.data.tags[contract.KIND_TAG] for r in children} == {contract.KIND_FIX_TRIAL}
    assert c.get_run(result["parent_run_id"]).data.tags[contract.KIND_TAG] == contract.KIND_FIX
    assert reader.resolve_run("latest", tmp_path) == run.run_id  # trials never shadow `latest`
    assert "verified: true" in fix.render(result)


def test_fix_of_a_script_run_prints_keras_arguments_and_re_runs_nothing(tmp_path, monkeypatch):
    """A run recorded from a user's script (real MLflow store, files as the recorder writes them)."""
    import numpy as np

    from losstrace.record import run_files, writer

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    loss = 1.6 * np.exp(-np.arange(8) / 3) + 0.2
    history = run_files.history_frame(
        [
            {"epoch": e, "loss": v, "val_loss": v * 1.1, "accuracy": 0.5, "val_accuracy": 0.5, "lr": 1e-3}
            for e, v in enumerate(loss)
        ]
    )
    batches = run_files.batches_frame([])
    context = {
        "n_classes": 5,
        "batch_size": 4,
        "train_rows": 1024,
        "params": {"train.batch_size": 4, "train.optimizer": "adam"},
    }
    lint = [
        {
            "code": "small_batch",
            "severity": "warning",
            "evidence": {"message": "m"},
            "suggestion": "train.batch_size: 4 → 32",
        }
    ]
    diagnosis = {"run_id": "", "findings": lint}
    files = run_files.RunFiles(history, batches, run_files.dynamics_frame([]), lint, diagnosis, context, "script")
    with writer.start_run(tmp_path, "my-script", {contract.KIND_TAG: contract.KIND_SCRIPT}) as logger:
        for path in files.write_into(tmp_path):
            logger.log_artifact(path, contract.ARTIFACT_DIR)
        run_id = logger.run_id
    result = fix.main(run_id, tmp_path)
    assert result["kind"] == contract.KIND_SCRIPT and result["trials"] == [] and result["verified"] is False
    advice = {a["key"]: a["code"] for a in result["advice"]}
    assert advice["train.batch_size"].startswith("model.fit(..., batch_size=")
    assert "model.fit(..., batch_size=" in fix.render(result)
