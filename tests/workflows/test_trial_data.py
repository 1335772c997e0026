"""Trial cache keys: what makes two trials share prepared data and validation results."""

from __future__ import annotations

import os
from pathlib import Path

from losstrace import params
from losstrace.workflows import trial_data


def _keys(p: params.Params, root: Path, seed: int | None = None) -> tuple[str, str]:
    data = trial_data.prepared_key(p.data, p.base.seed if seed is None else seed, root)
    return data, trial_data.validated_key(data, p)


def test_train_changes_share_both_keys_validate_changes_share_the_split_data_changes_share_nothing(tmp_path):
    a = params.Params()
    data_a, valid_a = _keys(a, tmp_path)
    assert _keys(params.override(a, {"train.batch_size": 4, "train.model.rnn.cell": "gru"}), tmp_path) == (
        data_a,
        valid_a,
    )
    data_v, valid_v = _keys(params.override(a, {"validate.max_class_ratio": 8.0}), tmp_path)
    assert data_v == data_a and valid_v != valid_a
    data_d, valid_d = _keys(params.override(a, {"data.shuffle": False}), tmp_path)
    assert data_d != data_a and valid_d != valid_a
    assert _keys(a, tmp_path, seed=7)[0] != data_a  # another split seed is another split


def test_a_user_file_changed_on_disk_is_another_input(tmp_path):
    csv = tmp_path / "reviews.csv"
    csv.write_text("text,label\ngood film,pos\nbad film,neg\n")
    p = params.override(params.Params(), {"data.source": "reviews.csv", "data.source_dep": "reviews.csv"})
    before = trial_data.prepared_key(p.data, 42, tmp_path)
    assert trial_data.prepared_key(p.data, 42, tmp_path) == before
    fingerprint = trial_data.input_fingerprint(p.data, tmp_path)
    assert fingerprint["files"][0][0] == str(csv.resolve())
    csv.write_text("text,label\ngood film,pos\nbad film,pos\n")  # same size: the content decides
    os.utime(csv, ns=(1, 1))
    assert trial_data.prepared_key(p.data, 42, tmp_path) != before


def test_a_source_that_cannot_be_read_keeps_its_error_in_the_key(tmp_path):
    p = params.override(params.Params(), {"data.source": "missing/*.csv"})
    fingerprint = trial_data.input_fingerprint(p.data, tmp_path)
    assert fingerprint == {
        "unreadable": "error: missing/*.csv: no files match this pattern "
        f"(check data.source; relative patterns start at {tmp_path})"
    }
