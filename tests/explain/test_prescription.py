"""The prescription: one value per key, conflicts settled by mechanism.

The four contradictions below are what diagnose used to say about one run: each rule
right about its own symptom, the set of them impossible to apply.
"""

from __future__ import annotations

import dataclasses
import json

from losstrace import params
from losstrace.explain.diagnose import diagnose_curves
from losstrace.explain.prescription import as_json, candidates, prescribe, with_prescription
from losstrace.findings import Finding, parse_changes
from losstrace.io import read_json
from losstrace.model import lint


def _keys(p) -> list[str]:
    return [c["key"] for c in p.changes]


def _one(p, key: str) -> dict:
    (change,) = [c for c in p.changes if c["key"] == key]
    return change


def _params(**train) -> params.Params:
    base = params.Params()
    model = train.pop("model", base.train.model)
    return dataclasses.replace(base, train=dataclasses.replace(base.train, model=model, **train))


def test_suggestions_read_as_structured_changes_alternatives_and_companions():
    assert parse_changes("train.learning_rate: 0.003 → 0.001; or train.clipnorm: 0.0 → 1.0") == [
        {"key": "train.learning_rate", "from": 0.003, "to": 0.001},
        {"key": "train.clipnorm", "from": 0.0, "to": 1.0, "alternative": True},
    ]
    assert parse_changes(
        "train.loss: binary_crossentropy → sparse_categorical_crossentropy (train.output_activation: softmax)"
    )[1] == {
        "key": "train.output_activation",
        "from": None,
        "to": "softmax",
        "with": "train.loss",
    }
    assert parse_changes('train.callbacks.checkpoint_monitor: "" → val_loss')[0]["from"] == ""
    assert parse_changes("data.text_level: char; pretrained embeddings") == []
    f = Finding("small_batch", "warning", {}, "train.batch_size: 4 → 32")
    assert f.to_dict()["changes"] == [{"key": "train.batch_size", "from": 4, "to": 32}]
    assert Finding(**json.loads(json.dumps(f.to_dict()))).changes == f.changes  # survives diagnosis.json
    assert "changes" not in Finding("x", "info", {}, "nothing to change").to_dict()


def test_default_data_batch_4_gets_one_batch_size_not_lint_32_and_noisy_16(make_run, prepared):
    """Contradiction 1: lint's rule of thumb and noisy_loss's measurement named two sizes."""
    info, labels = read_json(prepared / "ingest.json"), read_json(prepared / "labels.json")
    rows = int(info["splits"]["train"])
    lint_findings = lint.run(_params(batch_size=4), info, labels)
    curve = diagnose_curves(*make_run(batch_size=4, train_rows=rows, n_classes=len(labels), epochs=20))
    asked = {c.new for c in candidates([*lint_findings, *curve], {}) if c.key == "train.batch_size"}
    assert len(asked) == 2, asked  # the two rules really disagree
    history, batches, context = make_run(batch_size=4, train_rows=rows, n_classes=len(labels), epochs=20)
    p = prescribe([*lint_findings, *curve], context)
    change = _one(p, "train.batch_size")
    assert change["from"] == 4 and change["to"] <= context["train_rows"] / 8
    assert set(change["findings"]) == {"small_batch", "noisy_loss"}
    assert "measured noise" in change["why"]


def test_plateau_at_start_and_jitter_later_become_a_decaying_schedule_not_two_lr_moves(make_run):
    """Contradiction 2: Adam 3e-3, batch 16, at chance ~7 epochs then learning, with jitter."""
    run = make_run(
        epochs=30, batch_size=16, train_rows=640, n_classes=2, lr=3e-3, plateau=(0, 7), epoch_jitter=0.12, tau=3
    )
    findings = diagnose_curves(*run)
    moves = {c.new for c in candidates(findings, {}) if c.key == "train.learning_rate"}
    assert min(moves) < 3e-3 < max(moves)  # plateau raises, noisy_loss lowers
    p = prescribe(findings, run[2])
    assert _one(p, "train.learning_rate")["to"] > 3e-3
    schedule = _one(p, "train.lr_schedule")
    assert (schedule["from"], schedule["to"]) == ("constant", "cosine")
    assert "schedule" in schedule["why"] and set(schedule["findings"]) == {"plateau", "noisy_loss"}
    assert len(_keys(p)) == len(set(_keys(p)))


def test_stuck_unmasked_rmsprop_raises_the_rate_and_masks_instead_of_lowering_it(make_run):
    """Contradiction 3: not_learning raised 1e-4 → 1e-3 while majority_collapse lowered it to 3e-5."""
    run = make_run(
        n_classes=2,
        epochs=20,
        train_rows=2000,
        lr=1e-4,
        optimizer="rmsprop",
        stuck=True,
        predictions={"pred_class_shares": {"c0": 0.99, "c1": 0.01}, "mean_max_prob": 0.55},
        params={"train.model.embedding.mask_zero": False},
    )
    unmasked = _params(optimizer="rmsprop", learning_rate=1e-4)
    unmasked = dataclasses.replace(
        unmasked,
        train=dataclasses.replace(
            unmasked.train,
            model=dataclasses.replace(
                unmasked.train.model,
                embedding=dataclasses.replace(unmasked.train.model.embedding, mask_zero=False),
            ),
        ),
    )
    lint_findings = lint.run(unmasked, {"input": "text", "splits": {"train": 2000}}, {"neg": 0, "pos": 1})
    curve = diagnose_curves(*run)
    assert {"not_learning", "majority_collapse"} <= {f.code for f in curve}
    p = prescribe([*lint_findings, *curve], run[2])
    lr = _one(p, "train.learning_rate")
    assert lr["to"] > 1e-4 and "stuck" in lr["why"]
    assert _one(p, "train.model.embedding.mask_zero")["to"] is True
    assert "unmasked_padding" in _one(p, "train.model.embedding.mask_zero")["findings"]


def test_small_sensor_split_keeps_its_batch_and_lowers_the_step(make_run):
    """Contradiction 4: 98 sequences at batch 4; lint raised the batch, noisy_loss the
    learning rate, because the train split leaves no room for a bigger batch."""
    run = make_run(epochs=20, batch_size=4, train_rows=58, n_classes=4, epoch_jitter=0.2)
    lint_findings = lint.run(
        _params(batch_size=4), {"input": "numeric", "splits": {"train": 58}}, {"a": 0, "b": 1, "c": 2, "d": 3}
    )
    assert "small_batch" in {f.code for f in lint_findings}
    p = prescribe([*lint_findings, *diagnose_curves(*run)], run[2])
    assert "train.batch_size" not in _keys(p)
    assert _one(p, "train.learning_rate")["to"] < 1e-3
    assert any("no room" in n for n in p.notes)


def test_info_findings_and_alternatives_prescribe_nothing():
    findings = [
        Finding("too_few_updates", "info", {}, "train.epochs: 5 → 20"),
        Finding("diverged", "error", {}, "train.learning_rate: 0.1 → 0.001; train.clipnorm: 0.0 → 1.0"),
        Finding("noisy_loss", "warning", {}, "train.learning_rate: 0.1 → 0.03; or train.clipnorm: 0.0 → 1.0"),
    ]
    p = prescribe(findings, {"params": {"train.learning_rate": 0.1}})
    assert _keys(p) == ["train.learning_rate", "train.clipnorm"]
    assert _one(p, "train.learning_rate")["to"] == 0.03  # the smaller of two moves the same way
    assert set(_one(p, "train.learning_rate")["findings"]) == {"diverged", "noisy_loss"}


def test_divergence_wins_over_a_plateau_and_removing_recurrent_dropout_keeps_regularisation():
    findings = [
        Finding("cudnn_ineligible", "warning", {"message": "m"}, "train.model.rnn.recurrent_dropout: 0.3 → 0"),
        Finding("diverged", "error", {}, "train.learning_rate: 0.01 → 0.001"),
        Finding("plateau", "warning", {"start_epoch": 0, "length": 6}, "train.learning_rate: 0.01 → 0.03"),
        Finding(
            "overfitting", "warning", {}, "train.model.dropout: 0.3 → 0.3; train.callbacks.early_stopping: false → true"
        ),
    ]
    p = prescribe(findings, {"params": {"train.learning_rate": 0.01, "train.model.rnn.dropout": 0.0}})
    assert _one(p, "train.learning_rate")["to"] == 0.001 and "undo" in _one(p, "train.learning_rate")["why"]
    assert _one(p, "train.model.rnn.dropout")["to"] == 0.3
    assert _one(p, "train.model.rnn.recurrent_dropout")["to"] == 0
    rows = as_json(p)
    assert all(set(r) == {"key", "from", "to", "why", "findings"} for r in rows)
    assert len({r["key"] for r in rows}) == len(rows)


def test_grouped_rows_prescribe_shuffling_the_source_unless_it_already_is():
    """label_order_clustered named its fix (data.shuffle) in a sentence only, so a run fed
    grouped rows got an empty prescription and `losstrace fix` had nothing to re-run (the
    gallery's grouped_rows case). One change for the three splits; none when the run already
    shuffles (a grouped val_source file stays grouped whatever data.shuffle says)."""
    import pandas as pd

    from losstrace.data import checks

    grouped = pd.DataFrame({"label": ["a"] * 40 + ["b"] * 40})
    found = checks.check_label_order({"train": grouped, "val": grouped, "test": grouped}, params.ValidateParams())
    assert [f.where for f in found] == ["train", "val", "test"]
    as_recorded = [json.loads(json.dumps(f.to_dict())) for f in found]  # as diagnosis.json holds them

    p = prescribe(as_recorded, {"params": {"data.shuffle": False}})
    assert [(c["key"], c["from"], c["to"], c["findings"]) for c in as_json(p)] == [
        ("data.shuffle", False, True, ["label_order_clustered"])
    ]
    assert prescribe(as_recorded, {"params": {"data.shuffle": True}}).changes == []


def test_a_plateau_raise_grows_no_more_than_the_batch_while_the_gradient_noise_is_warned_of():
    """The batch-4 LSTM on 98 rows: small_batch grows the batch to 8 and plateau asked for
    10x the step; learning rate / batch sets the update noise, so 10x would undo the batch."""
    findings = [
        Finding("small_batch", "warning", {}, "train.batch_size: 4 → 32"),
        Finding("plateau", "warning", {"start_epoch": 0, "length": 8}, "train.learning_rate: 0.001 → 0.01"),
    ]
    context = {"params": {"train.batch_size": 4, "train.learning_rate": 0.001}, "train_rows": 98}
    p = prescribe(findings, context)
    assert (_one(p, "train.batch_size")["to"], _one(p, "train.learning_rate")["to"]) == (8, 0.002)
    assert "as much as the batch grows" in _one(p, "train.learning_rate")["why"]
    no_room = prescribe(findings, {**context, "train_rows": 40})  # the batch cannot grow: the step stays
    assert "train.learning_rate" not in _keys(no_room) and any("not raised" in n for n in no_room.notes)

    # One answer: each finding names the prescription's values and keeps its own as evidence.
    told = {f["code"]: f for f in with_prescription({"findings": [f.to_dict() for f in findings]}, context)["findings"]}
    assert told["small_batch"]["suggestion"].startswith("train.batch_size: 4 → 8 (the prescription's value")
    assert told["small_batch"]["evidence"]["batch_size_asked"] == 32
    assert told["plateau"]["suggestion"].startswith("train.learning_rate: 0.001 → 0.002 (the prescription's value")
    assert told["plateau"]["evidence"]["learning_rate_asked"] == 0.01
    kept = {
        f["code"]: f
        for f in with_prescription({"findings": [f.to_dict() for f in findings]}, {**context, "train_rows": 40})[
            "findings"
        ]
    }
    assert "; the prescription keeps train.learning_rate: " in kept["plateau"]["suggestion"]
