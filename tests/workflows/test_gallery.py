"""Each gallery case reproduces its classic problem: the expected finding in B and the
injected change ranked first by `diff` (docs/gallery.md shows the pictures).

Real ingest → validate → train (TensorFlow) → MLflow → diff, in-process to share one
TensorFlow import.
"""

from __future__ import annotations

import pytest

from losstrace.workflows import gallery
from support import REPO

pytestmark = pytest.mark.slow

FAST = ["grouped_rows", "overfit_no_dropout", "sensor_tiny_batch", "sigmoid_categorical"]


@pytest.mark.parametrize("name", FAST)
def test_gallery_case_reproduces_finding_and_top_cause(name, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    case = {c.name: c for c in gallery.CASES}[name]
    result = gallery.run_case(case, REPO, inprocess=True)
    codes = {f["code"] for f in result.findings}
    assert case.finding in codes, (codes, result.diff["causes"])
    assert result.diff["causes"][0]["change"] == case.cause, result.diff["causes"]
    assert result.a.run_id != result.b.run_id


def test_every_case_is_documented_in_the_gallery():
    text = (REPO / "docs" / "gallery.md").read_text()
    for case in gallery.CASES:
        assert f"losstrace gallery {case.name}" in text
        assert (REPO / "docs" / "gallery" / f"{case.name}.png").exists()


def test_bisect_verdict_needs_the_injected_change_as_first_culprit():
    case = {c.name: c for c in gallery.CASES}["sensor_tiny_batch"]
    findings = [{"code": case.finding, "severity": "warning"}]
    diff = {"causes": [{"change": case.cause}]}

    def result(culprits):
        trial = {"name": "A + train.batch_size", "change": "train.batch_size", "share": 0.9, "codes": ["noisy_loss"]}
        bisect = {
            "culprits": culprits,
            "trials": [{"name": "A", "change": None}, trial],
            "moved_features": {"batch_noise": {}},
            "new_findings_in_b": ["noisy_loss"],
        }
        return gallery.Result(case, None, None, diff=diff, findings=findings, bisect=bisect)

    proven, wrong, none = result(["train.batch_size"]), result(["train.learning_rate"]), result([])
    assert proven.ok and proven.bisect_ok
    assert not wrong.ok and wrong.bisect_ok is False and not none.ok
    assert gallery.Result(case, None, None, diff=diff, findings=findings).ok  # bisect not run: diff decides
    line = gallery._bisect_line(proven)
    assert "`train.batch_size` (names the injected change)" in line and "90%" in line and "batch_noise" in line
    assert "and B's new `noisy_loss`" in line


def _fixed_result(fix):
    case = {c.name: c for c in gallery.CASES}["sensor_tiny_batch"]
    prescription = [
        {
            "key": "train.batch_size",
            "from": 2,
            "to": 16,
            "why": "noisy_loss: the loss scatters beyond its trend",
            "findings": ["small_batch", "noisy_loss"],
        },
        {
            "key": "train.callbacks.checkpoint_monitor",
            "from": "",
            "to": "val_loss",
            "why": "overfitting: keep the best epoch",
            "findings": ["overfitting"],
        },
    ]
    fix = {**fix, "prescription": prescription, "notes": ["train.learning_rate not changed: the batch is the knob"]}
    diff = {"causes": [{"change": case.cause, "symptom": "noisy_loss", "confidence": 0.6, "why": "w"}]}
    findings = [{"code": case.finding, "severity": "warning", "suggestion": "s"}]
    return gallery.Result(case, None, None, diff=diff, findings=findings, prescription=prescription, fix=fix)


def test_markdown_shows_b_s_prescription_and_fix_s_verdict_per_change():
    verified = {
        "verified": True,
        "seed_spread": {"best_val_loss": 0.02, "final_val_accuracy": 0.03},
        "changes": [
            {
                "trial": "prescription",
                "keys": ["train.batch_size", "train.callbacks.checkpoint_monitor"],
                "verified": True,
                "reason": "every targeted symptom the original shows is gone, nothing got worse",
                "symptoms": {"small_batch": "gone", "noisy_loss": "gone", "overfitting": "not reproduced"},
                "worse": {},
            },
            {
                "trial": "original + train.batch_size",
                "keys": ["train.batch_size"],
                "verified": False,
                "reason": "got worse beyond the seed spread",
                "symptoms": {"small_batch": "gone", "noisy_loss": "gone"},
                "worse": {"best_val_loss": {"original": 0.31, "trial": 0.52}},
            },
        ],
    }
    text = gallery.markdown([_fixed_result(verified)])
    assert "**Prescription for B**" in text
    assert "- `train.batch_size: 2 → 16` (for `small_batch`, `noisy_loss`): noisy_loss: the loss scatters" in text
    assert '- `train.callbacks.checkpoint_monitor: "" → val_loss` (for `overfitting`)' in text
    assert "- left out: train.learning_rate not changed" in text
    assert "**`losstrace fix B`**" in text and "**verified**" in text.split("**`losstrace fix B`**")[1].splitlines()[0]
    whole = next(ln for ln in text.splitlines() if ln.startswith("- the whole prescription"))
    assert "**verified**" in whole and "`noisy_loss` gone" in whole and "`overfitting` not reproduced" in whole
    assert "val loss and accuracy no worse" in whole
    alone = next(ln for ln in text.splitlines() if ln.startswith("- `train.batch_size` alone"))
    assert "**NOT verified**: got worse beyond the seed spread" in alone
    assert "best val loss 0.31 → 0.52 (seed spread 0.02)" in alone

    unverified = {
        **verified,
        "verified": False,
        "changes": [{**verified["changes"][0], "verified": False, "reason": "the symptom remains"}],
    }
    text = gallery.markdown([_fixed_result(unverified)])
    assert "**NOT verified**" in text.split("**`losstrace fix B`**")[1].splitlines()[0]
    assert "**NOT verified**: the symptom remains" in text
    nothing = gallery.markdown([_fixed_result({"verified": False, "changes": [], "note": "nothing to fix"})])
    assert "**nothing to verify**" in nothing and "- nothing to fix" in nothing
    # Without --fix the prescription is still shown, and no verdict is claimed.
    plain = gallery.Result(_fixed_result(verified).case, None, None, diff={"causes": []}, findings=[])
    assert "- none: no warning or error asks for a params change" in gallery.markdown([plain])
    assert "losstrace fix B" not in gallery.markdown([plain])
    # The case's own reading of the verdict comes with the verdict only.
    assert plain.case.fix_note in text and plain.case.fix_note not in gallery.markdown([plain])


def test_gallery_fix_verifies_b_s_prescription_in_the_shared_session(tmp_path, monkeypatch):
    """One cheap case, shrunk to 3 epochs: B's wrong head is prescribed away, fix re-runs it in
    the gallery's session (B's prepared data and validation reused) and the page says so."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    [result] = gallery.main(["sigmoid_categorical"], REPO, tmp_path, epochs=3, inprocess=True, fix=True)

    head = next(c for c in result.prescription if c["key"] == "train.output_activation")
    assert (head["from"], head["to"]) == ("sigmoid", "softmax") and "activation_loss_mismatch" in head["findings"]
    assert result.fix["prescription"] == result.prescription
    assert result.fix_verified is True, result.fix["changes"]
    whole = next(v for v in result.fix["changes"] if v["trial"] == "prescription")
    assert whole["symptoms"]["activation_loss_mismatch"] == "gone"
    assert all({"ingest", "validate"} <= set(t["reused"]) for t in result.fix["trials"] if t["run_id"])
    text = gallery.markdown([result])
    assert "- `train.output_activation: sigmoid → softmax` (for `activation_loss_mismatch`" in text
    assert "`activation_loss_mismatch` gone" in text
    assert "**`losstrace fix B`**" in text and "**verified**" in text
    assert (tmp_path / "gallery" / "sigmoid_categorical.png").exists()
