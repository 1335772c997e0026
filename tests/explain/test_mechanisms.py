"""Every key diagnose or lint can suggest has a mechanism in the diff's catalogue: applying
the suggestion to a run and diffing names the key with a mechanism and a why.

The suggestion keys are read from the source of the rules (explain/diagnose.py,
model/lint.py, model/model_lint.py, model/heads.py), so a rule that starts suggesting a
new key fails here until the catalogue explains it and a case below shows it.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from losstrace.explain.diff import diff_runs
from losstrace.explain.mechanisms import mechanism_for

SRC = Path(__file__).resolve().parents[2] / "src" / "losstrace"
_K = r"(?:train|data)\.[a-z_]+(?:\.[a-z_]+)*(?:\[\{i\}\]\.[a-z_]+)?"
# Written as a suggestion: change("key", ...), a "key: old → new" text, or a cuDNN reason's key.
_SUGGESTED = [
    re.compile(rf'change\(\s*"({_K})"'),
    re.compile(rf'f?"({_K}): '),
    re.compile(rf'reasons\.append\(\s*\(\s*"({_K})"'),
]
# Keys the diff leaves out on purpose: they cannot change training (metrics are only reported).
_IMMATERIAL = {"train.metrics"}


def suggestion_keys() -> set[str]:
    """Every params key a rule suggests changing, as the diff names it (list items flattened: .0.)."""
    found: set[str] = set()
    for name in ("explain/diagnose.py", "model/lint.py", "model/model_lint.py"):
        text = (SRC / name).read_text(encoding="utf-8")
        for pattern in _SUGGESTED:
            found.update(pattern.findall(text))
    heads = (SRC / "model" / "heads.py").read_text(encoding="utf-8")
    found.update(re.findall(rf'"({_K})"', heads))
    return {k.replace("[{i}]", ".0") for k in found} - _IMMATERIAL


STUCK = {"stuck": True}
OVERFIT = {"overfit_at": 12}
# key → (run a: before the suggestion, run b: after it), as simulate() arguments; params
# hold both runs' values of the key, the curves what the mechanism predicts of the change.
CASES: dict[str, tuple[dict, dict]] = {
    "train.batch_size": ({"batch_size": 4}, {"batch_size": 32}),
    "train.learning_rate": ({"lr": 0.0001, "plateau": (2, 12)}, {"lr": 0.001}),
    "train.optimizer": (
        {"optimizer": "sgd", "plateau": (1, 15)},
        {"optimizer": "adam", "params": {"train.optimizer": "adam"}},
    ),
    "train.lr_schedule": (
        {"epoch_jitter": 0.2, "params": {"train.lr_schedule": "constant"}},
        {"epoch_jitter": 0.02, "params": {"train.lr_schedule": "cosine"}},
    ),
    "train.clipnorm": ({"explode_at": 10}, {"params": {"train.clipnorm": 1.0}}),
    "train.class_weight": (
        {"final_share": 0.5, "params": {"train.class_weight": "none"}},
        {"params": {"train.class_weight": "balanced"}},
    ),
    "train.model.dropout": ({**OVERFIT}, {"params": {"train.model.dropout": 0.3}}),
    "train.model.rnn.dropout": ({**OVERFIT}, {"params": {"train.model.rnn.dropout": 0.2}}),
    "train.model.rnn.recurrent_dropout": (
        {"params": {"train.model.rnn.recurrent_dropout": 0.3}},
        {**OVERFIT, "params": {"train.model.rnn.recurrent_dropout": 0.0}},
    ),
    "train.model.embedding.mask_zero": (
        {**STUCK, "params": {"train.model.embedding.mask_zero": False}},
        {"params": {"train.model.embedding.mask_zero": True}},
    ),
    "data.padding": ({**STUCK, "params": {"data.padding": "post"}}, {"params": {"data.padding": "pre"}}),
    "data.text_level": (
        {"val_stuck": True, "params": {"data.text_level": "word"}},
        {"params": {"data.text_level": "char"}},
    ),
    "train.output_activation": ({**STUCK, "params": {"train.output_activation": "sigmoid"}}, {}),
    "train.loss": ({**STUCK, "params": {"train.loss": "binary_crossentropy"}}, {}),
    "train.from_logits": (
        {**STUCK, "params": {"train.output_activation": "linear", "train.from_logits": False}},
        {"params": {"train.output_activation": "linear", "train.from_logits": True}},
    ),
    "train.output_units": ({**STUCK, "params": {"train.output_units": 1}}, {"params": {"train.output_units": 0}}),
    "train.callbacks.early_stopping": (
        {"epochs": 40, **OVERFIT, "params": {"train.callbacks.early_stopping": False}},
        {"epochs": 17, **OVERFIT, "params": {"train.callbacks.early_stopping": True}},
    ),
    "train.callbacks.monitor": (
        {
            "epochs": 40,
            **OVERFIT,
            "params": {"train.callbacks.early_stopping": True, "train.callbacks.monitor": "loss"},
        },
        {
            "epochs": 17,
            **OVERFIT,
            "params": {"train.callbacks.early_stopping": True, "train.callbacks.monitor": "val_loss"},
        },
    ),
    "train.callbacks.checkpoint_monitor": (
        {
            **OVERFIT,
            "predictions": {"max_prob_share_above_0_99": 0.6},
            "params": {"train.callbacks.checkpoint_monitor": ""},
        },
        {
            **OVERFIT,
            "predictions": {"max_prob_share_above_0_99": 0.1},
            "params": {"train.callbacks.checkpoint_monitor": "val_loss"},
        },
    ),
    "train.epochs": ({"epochs": 60, "overfit_at": 25}, {"epochs": 20}),
    "data.shuffle": ({"val_stuck": True, "params": {"data.shuffle": False}}, {"params": {"data.shuffle": True}}),
    "train.model.rnn.cell": (
        {"params": {"train.model.rnn.cell": "simple"}},
        {**OVERFIT, "params": {"train.model.rnn.cell": "gru"}},
    ),
    "train.model.dense.0.activation": (
        {"params": {"train.model.dense.0.activation": ""}},
        {**OVERFIT, "params": {"train.model.dense.0.activation": "relu"}},
    ),
    **{
        f"train.model.rnn.{name}": (
            {"params": {f"train.model.rnn.{name}": a}},
            {"final_share": 0.22, "params": {f"train.model.rnn.{name}": b}},
        )
        for name, a, b in (
            ("activation", "relu", "tanh"),
            ("recurrent_activation", "hard_sigmoid", "sigmoid"),
            ("unroll", True, False),
            ("use_bias", False, True),
            ("reset_after", False, True),
        )
    },
}


def test_every_suggestion_key_has_a_mechanism_and_a_case():
    keys = suggestion_keys()
    assert {"train.batch_size", "train.model.embedding.mask_zero", "train.callbacks.checkpoint_monitor"} <= keys
    assert sorted(k for k in keys if mechanism_for(k) is None) == []
    assert sorted(keys - set(CASES)) == []


@pytest.mark.parametrize("key", sorted(CASES))
def test_applying_a_suggestion_is_explained_by_its_mechanism(make_record, key):
    a_sim, b_sim = CASES[key]
    a = make_record("before", seed=1, **a_sim)
    b = make_record("after", seed=2, **b_sim)
    causes = {c["change"]: c for c in diff_runs(a, b)["causes"]}
    assert key in causes, causes
    why = causes[key]["why"]
    assert why.startswith(key) and "no known mechanism" not in why, why


def test_another_data_source_has_a_mechanism_and_ranks_first(make_record, make_fingerprint):
    a = make_record("run-a", seed=1, n_classes=5, params={"data.source": "japanese_vowels"})
    b = make_record(
        "run-b",
        seed=2,
        n_classes=3,
        tau=2.0,
        params={"data.source": "data/reviews.csv"},
        fp=make_fingerprint(content="c1", n_classes=3),
    )
    d = diff_runs(a, b)
    by_change = {c["change"]: c for c in d["causes"]}
    source = by_change["data.source"]
    assert "no known mechanism" not in source["why"]
    assert source["why"].startswith("data.source japanese_vowels → data/reviews.csv: another dataset is another task")
    assert "5 → 3 classes" in source["why"] and "data.content" in source["why"]
    assert d["causes"][0]["change"] == "data.source"  # the root of the content and label changes beside it
    assert source["confidence"] > by_change["data.content"]["confidence"]


def test_a_scripts_schedule_settings_restate_a_new_schedule_and_explain_a_changed_pace(make_record):
    """lr_schedule.* (a script's schedule settings) are no causes of their own beside a schedule
    added or swapped; under the same schedule, a changed setting is the cause."""
    steps = {"lr_schedule.decay_rate": 0.5}
    a = make_record("constant", seed=1, epoch_jitter=0.2, params={"train.lr_schedule": "constant"})
    b = make_record(
        "decay",
        seed=2,
        epoch_jitter=0.02,
        params={"train.lr_schedule": "exponential_decay", "lr_schedule.decay_steps": 100, **steps},
    )
    causes = diff_runs(a, b)["causes"]
    assert [c["change"] for c in causes] == ["train.lr_schedule"]
    assert "decays the learning rate exponentially" in causes[0]["why"]
    slow = make_record(
        "slow",
        seed=3,
        epoch_jitter=0.2,
        params={"train.lr_schedule": "exponential_decay", "lr_schedule.decay_steps": 1000, **steps},
    )
    causes = diff_runs(slow, b)["causes"]
    assert [c["change"] for c in causes] == ["lr_schedule.decay_steps"]
    assert "another pace" in causes[0]["why"] and "no known mechanism" not in causes[0]["why"]
