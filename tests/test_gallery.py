"""Each gallery case reproduces its classic problem: the expected finding in B and the
injected change ranked first by `diff` (docs/gallery.md shows the pictures).

Real ingest → validate → train (TensorFlow) → MLflow → diff, in-process to share one
TensorFlow import.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from losstrace.explain import gallery

REPO = Path(__file__).resolve().parents[1]

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
