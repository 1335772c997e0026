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
