"""params.yaml as DVC rewrites it: `dvc exp run -S` writes YAML 1.2, where 1e-05 is a float."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from losstrace import params
from losstrace.errors import LosstraceError


def test_exponent_floats_written_by_dvc_are_numbers(tmp_path):
    (tmp_path / "params.yaml").write_text("train:\n  learning_rate: 1e-05\n  clipnorm: 1E+1\n")
    p = params.load(tmp_path / "params.yaml")
    assert p.train.learning_rate == pytest.approx(1e-5) and p.train.clipnorm == 10.0


def test_a_quoted_number_is_still_a_string(tmp_path):
    (tmp_path / "params.yaml").write_text("train:\n  learning_rate: '1e-05'\n")
    with pytest.raises(LosstraceError, match="must be a number"):
        params.load(tmp_path / "params.yaml")


REPO = Path(__file__).resolve().parents[1]
SHIPPED = [REPO / "params.yaml", *sorted((REPO / "examples").glob("*.yaml"))]


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_dvc_exp_run_set_param_changes_only_the_line_it_sets(path, tmp_path):
    """`dvc exp run -S` rewrites the whole file (ruamel round trip: quotes, flow lists); the
    shipped files are already in that form, so the experiment's diff is the one key set."""
    from dvc.utils.hydra import apply_overrides

    copy = tmp_path / "params.yaml"
    shutil.copy(path, copy)
    batch = params.load(path).train.batch_size
    apply_overrides(copy, [f"train.batch_size={batch + 1}"])
    before, after = path.read_text(encoding="utf-8").splitlines(), copy.read_text(encoding="utf-8").splitlines()
    changed = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
    assert [b.split("#")[0].strip() for _, b in changed] == [f"batch_size: {batch + 1}"]


def test_readme_gives_the_way_back_from_an_experiment():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "git restore params.yaml dvc.lock reports && dvc checkout" in readme
