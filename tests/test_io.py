"""All-or-nothing outputs: a stage publishes every output or leaves the old ones."""

from __future__ import annotations

import pytest

from losstrace.errors import LosstraceError
from losstrace.io import Staging, write_text


def test_a_stage_writing_two_folders_publishes_neither_when_one_cannot_take_it(tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "model.keras").write_text("old model")
    (tmp_path / "reports").write_text("a file where the stage wants a folder")
    with pytest.raises(LosstraceError) as e:
        with Staging(tmp_path) as stage:
            stage.path(tmp_path / "models" / "model.keras").write_text("new model")
            stage.path(tmp_path / "reports" / "train" / "history.csv").write_text("epoch,loss\n")
    assert e.value.line().startswith(f"error: {tmp_path / 'reports'}")
    assert (tmp_path / "models" / "model.keras").read_text() == "old model"  # not half-published
    assert sorted(p.name for p in tmp_path.iterdir()) == ["models", "reports"]  # no staging or probe leftovers
    assert [p.name for p in (tmp_path / "models").iterdir()] == ["model.keras"]


def test_every_output_is_replaced_when_all_folders_take_it(tmp_path):
    with Staging(tmp_path) as stage:
        stage.path(tmp_path / "models" / "model.keras").write_text("new model")
        stage.path(tmp_path / "reports" / "train" / "history.csv").write_text("epoch,loss\n")
    assert (tmp_path / "models" / "model.keras").read_text() == "new model"
    assert (tmp_path / "reports" / "train" / "history.csv").read_text() == "epoch,loss\n"
    assert not list(tmp_path.glob(".losstrace-*"))


def test_writing_a_file_over_a_folder_is_one_line_before_any_work(tmp_path):
    (tmp_path / "out").mkdir()
    with pytest.raises(LosstraceError, match="is a directory"):
        write_text(tmp_path / "out", "report")
    assert list((tmp_path / "out").iterdir()) == []
