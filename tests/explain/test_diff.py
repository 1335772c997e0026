"""diff_runs: the four comparisons, and causes that rank the injected change first."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from losstrace.explain import report
from losstrace.explain.diff import diff_data, diff_env, diff_params, diff_runs
from losstrace.record.run_record import RunRecord

ENV = {
    "python": "3.11.7",
    "tensorflow": "2.21.0",
    "keras": "3.12.0",
    "numpy": "2.3.5",
    "device": "cpu",
    "determinism": "op-determinism",
}


def first(d: dict) -> dict:
    return d["causes"][0]


def check_contract(d: dict) -> None:
    assert set(d) >= {"params", "data", "env", "behaviour", "causes"}
    for p in d["params"]:
        assert set(p) == {"key", "a", "b"}
    for x in d["data"]:
        assert set(x) == {"aspect", "split", "a", "b", "detail"}
    for e in d["env"]:
        assert set(e) == {"key", "a", "b"} and e["key"].startswith("env.")
    for bh in d["behaviour"]:
        assert set(bh) == {"feature", "a", "b", "change"}
    confidences = [c["confidence"] for c in d["causes"]]
    assert all(0.0 <= c <= 1.0 for c in confidences)
    assert confidences == sorted(confidences, reverse=True)
    for c in d["causes"]:
        assert set(c) == {"change", "symptom", "confidence", "why"}
    json.dumps(d)


@pytest.mark.parametrize(
    "config", [{}, {"n_classes": 2, "epochs": 80, "tau": 15, "batch_size": 16}, {"epochs": 60, "overfit_at": 25}]
)
@pytest.mark.parametrize("seeds", [(1, 2), (3, 4), (5, 6)])
def test_same_config_other_seed_is_within_seed_variation(make_record, config, seeds):
    a = make_record("run-a", seed=seeds[0], **config)
    b = make_record("run-b", seed=seeds[1], **config)
    d = diff_runs(a, b)
    check_contract(d)
    assert d["behaviour"] == []
    assert len(d["causes"]) == 1
    cause = first(d)
    assert cause["change"] == "none"
    assert "within seed-to-seed variation" in cause["why"]
    assert d["params"] == [{"key": "base.seed", "a": str(seeds[0]), "b": str(seeds[1])}]


def test_identical_records_are_within_seed_variation(make_record):
    a = make_record("run-a", seed=7)
    d = diff_runs(a, a)
    assert d["params"] == d["data"] == d["env"] == d["behaviour"] == []
    assert [c["change"] for c in d["causes"]] == ["none"]
    assert "within seed-to-seed variation" in first(d)["why"]


def test_smaller_batch_ranks_batch_size_first_with_the_expected_noise_ratio(make_record):
    a = make_record("run-a", batch_size=64, train_rows=4096, seed=1)
    b = make_record(
        "run-b",
        batch_size=4,
        train_rows=4096,
        seed=2,
        env={**ENV, "numpy": "2.3.4"},
        params={"train.model.rnn.units": 96},
    )
    d = diff_runs(a, b)
    check_contract(d)
    cause = first(d)
    assert cause["change"] == "train.batch_size"
    assert cause["symptom"] == "noisy_loss"
    assert "~4.0x" in cause["why"] and "64 → 4" in cause["why"]
    noise = next(x for x in d["behaviour"] if x["feature"] == "batch_noise")
    assert 2.5 < noise["b"] / noise["a"] < 5.0
    others = {c["change"]: c["confidence"] for c in d["causes"][1:]}
    assert set(others) == {"env.numpy", "train.model.rnn.units"}
    assert max(others.values()) < cause["confidence"] / 2


def test_lower_learning_rate_with_plateau_ranks_learning_rate_first(make_record):
    a = make_record("run-a", lr=0.001, seed=1)
    b = make_record("run-b", lr=0.0001, plateau=(0, 15), seed=2, params={"train.epochs": 41})
    d = diff_runs(a, b)
    check_contract(d)
    cause = first(d)
    assert cause["change"] == "train.learning_rate"
    assert cause["symptom"] == "plateau"
    assert "15-epoch plateau" in cause["why"] or "14-epoch plateau" in cause["why"]
    assert any(x["feature"] == "finding.plateau" and x["change"] == "appeared" for x in d["behaviour"])


def test_label_grouped_rows_rank_data_order_first(make_record, make_fingerprint):
    a = make_record("run-a", seed=1, fp=make_fingerprint())
    b = make_record(
        "run-b", seed=2, val_stuck=True, fp=make_fingerprint(clustered=True), env={**ENV, "keras": "3.11.0"}
    )
    d = diff_runs(a, b)
    check_contract(d)
    order = [x for x in d["data"] if x["aspect"] == "data.order"]
    assert order and order[0]["split"] == "train" and "clustered" in order[0]["b"]
    assert not any(x["aspect"] == "data.content" for x in d["data"])  # same rows, new order
    cause = first(d)
    assert cause["change"] == "data.order" and cause["symptom"] == "not_learning"
    assert cause["confidence"] > 0.8
    assert d["causes"][1]["change"] == "env.keras" and d["causes"][1]["confidence"] < 0.2


def test_shuffle_param_and_order_both_listed_order_first(make_record, make_fingerprint):
    a = make_record("run-a", seed=1)
    b = make_record(
        "run-b", seed=2, val_stuck=True, fp=make_fingerprint(clustered=True), params={"data.shuffle": False}
    )
    d = diff_runs(a, b)
    assert [c["change"] for c in d["causes"][:2]] == ["data.order", "data.shuffle"]


def test_removed_dropout_explains_overfitting(make_record):
    a = make_record("run-a", epochs=60, seed=1, params={"train.model.dropout": 0.3})
    b = make_record("run-b", epochs=60, overfit_at=20, seed=2)
    d = diff_runs(a, b)
    cause = first(d)
    assert cause["change"] == "train.model.dropout" and cause["symptom"] == "overfitting"


def test_activation_change_explains_the_stuck_loss(make_record):
    a = make_record("run-a", n_classes=7, seed=1, params={"train.loss": "categorical_crossentropy"})
    b = make_record(
        "run-b",
        n_classes=7,
        seed=2,
        stuck=True,
        stuck_level=0.46,
        params={
            "train.loss": "categorical_crossentropy",
            "train.output_activation": "sigmoid",
            "train.model.rnn.units": 32,
        },
    )
    d = diff_runs(a, b)
    cause = first(d)
    assert cause["change"] == "train.output_activation" and cause["symptom"] == "not_learning"
    assert "sigmoid → softmax" in cause["why"]


def test_higher_learning_rate_explains_jitter(make_record):
    a = make_record("run-a", lr=0.001, seed=1)
    b = make_record("run-b", lr=0.01, epoch_jitter=0.25, seed=2, env={**ENV, "tensorflow": "2.20.0"})
    d = diff_runs(a, b)
    assert first(d)["change"] == "train.learning_rate"
    assert first(d)["symptom"] in ("noisy_loss", "epoch_jitter")


def test_recorded_nan_stop_counts_even_when_the_history_was_cut_short(make_record):
    a = make_record("run-a", lr=0.001, seed=1)
    b = make_record("run-b", lr=0.01, seed=2, epochs=12)  # TerminateOnNaN: history ends before the NaN
    b.findings = [{"code": "diverged", "severity": "error", "evidence": {"epoch": 12}, "suggestion": ""}]
    d = diff_runs(a, b)
    assert {"feature": "finding.diverged", "a": None, "b": "error", "change": "appeared"} in d["behaviour"]
    assert first(d)["change"] == "train.learning_rate" and first(d)["symptom"] == "diverged"


def test_env_only_change_with_a_different_curve_gets_low_confidence(make_record):
    a = make_record("run-a", seed=1)
    b = make_record("run-b", seed=2, plateau=(0, 12), env={**ENV, "tensorflow": "2.20.0"})
    d = diff_runs(a, b)
    assert first(d)["change"] == "env.tensorflow"
    assert first(d)["confidence"] < 0.1  # versions move numerics, not the curve's shape


def test_params_compare_numerically_and_leave_fingerprint_facts_to_data():
    a = {
        "train.learning_rate": "0.001",
        "train.batch_size": "32",
        "data.train.rows": "100",
        "data.label_map_hash": "x",
        "train.cell": "lstm",
    }
    b = {
        "train.learning_rate": "1e-3",
        "train.batch_size": "32.0",
        "data.train.rows": "120",
        "data.label_map_hash": "y",
        "train.cell": "gru",
        "train.new": "1",
    }
    assert diff_params(a, b) == [
        {"key": "train.cell", "a": "lstm", "b": "gru"},
        {"key": "train.new", "a": None, "b": "1"},
    ]


def test_env_prefix_is_normalised():
    assert diff_env({"env.numpy": "2.3.5", "python": "3.11"}, {"numpy": "2.3.4", "env.python": "3.11"}) == [
        {"key": "env.numpy", "a": "2.3.5", "b": "2.3.4"}
    ]


def test_data_aspects(make_fingerprint):
    base = make_fingerprint()
    same, _ = diff_data(base, make_fingerprint())
    assert same == []
    reshuffled, _ = diff_data(base, make_fingerprint(order_seed=1))
    assert {x["aspect"] for x in reshuffled} == {"data.order"}
    other, _ = diff_data(base, make_fingerprint(content="c1", rows=2100))
    assert {"data.content", "data.rows"} <= {x["aspect"] for x in other}
    skewed, _ = diff_data(base, make_fingerprint(shares=[0.6, 0.1, 0.1, 0.1, 0.1]))
    balance = [x for x in skewed if x["aspect"] == "data.class_balance"]
    assert balance and balance[0]["split"] == "train" and "c0 0.20 → 0.60" in balance[0]["detail"]
    relabelled, _ = diff_data(base, make_fingerprint(label_map="L1"))
    assert [x["aspect"] for x in relabelled] == ["data.labels"]
    more_labels, _ = diff_data(base, make_fingerprint(n_classes=6))
    assert any(x["aspect"] == "data.labels" and x["split"] == "train" for x in more_labels)


def test_missing_fingerprint_is_noted_and_params_fallback_is_used(make_record):
    a = make_record("run-a", seed=1)
    b = make_record("run-b", seed=1)
    b.fingerprint = None
    d = diff_runs(a, b)
    assert d["data"] == [] and "no data fingerprint for run b" in d["notes"][0]
    # The train stage also logs headline fingerprint facts as params: they are used when present.
    a.fingerprint = None
    a.params.update(
        {
            "data.train.rows": "100",
            "data.train.content_hash": "h",
            "data.train.ordered_hash": "o1",
            "data.train.clustered": "False",
        }
    )
    b.params.update(
        {
            "data.train.rows": "100",
            "data.train.content_hash": "h",
            "data.train.ordered_hash": "o2",
            "data.train.clustered": "True",
        }
    )
    d = diff_runs(a, b)
    assert [x["aspect"] for x in d["data"]] == ["data.order"]
    assert all(not p["key"].startswith("data.train.") for p in d["params"])


def test_records_without_batches_still_diff(make_record):
    a = make_record("run-a", seed=1, with_batches=False)
    b = make_record("run-b", lr=0.0001, plateau=(0, 15), seed=2, with_batches=False)
    assert first(diff_runs(a, b))["change"] == "train.learning_rate"


def test_diff_and_render_of_two_100_epoch_runs_take_well_under_a_second(make_record):
    # 100 epochs x 50 batches = 5000 batch rows per run, as in the brief's budget.
    a = make_record("run-a", epochs=100, batch_size=32, train_rows=1600, tau=15, seed=1)
    b = make_record("run-b", epochs=100, batch_size=8, train_rows=400, tau=15, seed=2)
    assert len(a.batches) == len(b.batches) == 5000
    start = time.perf_counter()
    d = diff_runs(a, b)
    report.render_table(d, a, b)
    report.render_markdown(d, a, b)
    report.render_html(d, a, b)
    elapsed = time.perf_counter() - start
    assert elapsed < 1.0, elapsed
    assert first(d)["change"] == "train.batch_size"


def test_record_defaults_are_usable():
    r = RunRecord(run_id="0123456789abcdef")
    d = diff_runs(r, r)
    assert first(d)["change"] == "none"
    assert r.label == "01234567"


def test_explain_imports_neither_tensorflow_nor_mlflow():
    code = (
        "import sys; import losstrace.explain.diff, losstrace.explain.report, losstrace.explain.diagnose; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'tensorflow', 'keras', 'mlflow'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_row_counts_recorded_as_floats_still_diff(make_fingerprint):
    a, b = make_fingerprint(), make_fingerprint(content="c1", rows=1024)
    a["train"]["rows"] = 2048.0  # some writers store counts as floats
    rows = [x for x in diff_data(a, b)[0] if x["aspect"] == "data.rows" and x["split"] == "train"]
    assert rows and rows[0]["detail"] == "-1024 rows (-50.0%)"


def test_grouped_rows_that_still_learn_explain_the_epoch_jitter(make_record, make_fingerprint):
    """Report 001: fed grouped rows in order, the model chases each label block in turn; it
    still learns, but its epoch loss bounces."""
    a = make_record("run-a", seed=1, epochs=20, fp=make_fingerprint())
    b = make_record("run-b", seed=2, epochs=20, epoch_jitter=0.25, fp=make_fingerprint(clustered=True))
    cause = first(diff_runs(a, b))
    assert cause["change"] == "data.order" and cause["symptom"] in ("noisy_loss", "epoch_jitter")
    assert "one label after another" in cause["why"]


def test_a_scripts_model_name_and_layer_summary_do_not_compete_with_its_settings(make_record):
    """Keras numbers every unnamed model (sequential, sequential_1, ...), and the layer
    summary restates the layer settings: neither is a cause beside a setting that changed."""
    script = {"model.name": "sequential", "model.layers": "LSTM(32) > Dense(7)", "model.params": "1000"}
    a = make_record("run-a", epochs=60, seed=1, params={**script, "train.model.dropout": 0.3})
    b = make_record(
        "run-b",
        epochs=60,
        overfit_at=20,
        seed=2,
        params={
            **script,
            "model.name": "sequential_1",
            "model.layers": "LSTM(32) > Dropout(0.3) > Dense(7)",
            "fit.callbacks.ModelCheckpoint.monitor": "val_loss",
        },
    )
    d = diff_runs(a, b)
    assert [c["change"] for c in d["causes"]] == ["train.model.dropout"]
    assert {"model.name", "model.layers", "fit.callbacks.ModelCheckpoint.monitor"} <= {p["key"] for p in d["params"]}
    # A layer added with no key of its own: the summary is then the change.
    c = make_record(
        "run-c", epochs=60, overfit_at=20, seed=2, params={**script, "model.layers": "LSTM(32) > Dense(64) > Dense(7)"}
    )
    assert [x["change"] for x in diff_runs(make_record("run-a2", epochs=60, seed=1, params=script), c)["causes"]] == [
        "model.layers"
    ]
