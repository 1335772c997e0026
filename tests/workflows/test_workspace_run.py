"""`losstrace diagnose` without a run: the run behind the workspace's reports/train/run.json."""

from __future__ import annotations

import json

import pytest

from losstrace.errors import LosstraceError
from losstrace.record import contract, writer
from losstrace.workflows import runs


def _reports_naming(root, info: dict) -> None:
    folder = root / "reports" / "train"
    folder.mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps(info))


def test_reports_trained_in_another_store_are_named_as_such(tmp_path):
    with writer.start_run(tmp_path, "here", {contract.KIND_TAG: "train"}):
        pass  # this store holds a run, but not the one the checked-out reports name
    elsewhere = "0" * 32
    _reports_naming(tmp_path, {"run_id": elsewhere})
    with pytest.raises(LosstraceError) as e:
        runs.diagnose(None, tmp_path)
    assert e.value.where.endswith("run.json") and f"names run {elsewhere}" in e.value.what
    assert "dvc repro -f train" in e.value.fix and "latest" in e.value.fix


def test_an_offline_training_is_not_answered_with_another_run(tmp_path):
    with writer.start_run(tmp_path, "here", {contract.KIND_TAG: "train"}):
        pass
    _reports_naming(tmp_path, {"run_id": None, "offline": "unreachable at start"})
    with pytest.raises(LosstraceError, match="recorded offline.*losstrace sync"):
        runs.diagnose(None, tmp_path)
