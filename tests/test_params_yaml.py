"""params.yaml as DVC rewrites it: `dvc exp run -S` writes YAML 1.2, where 1e-05 is a float."""

from __future__ import annotations

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
