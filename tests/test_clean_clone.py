"""A fresh clone stays clean after `make repro`: the committed dvc.lock matches the code (else
DVC reruns stages and rewrites it), committed outputs hold no path of the machine that made
them, and folders DVC regenerates are ignored, not committed."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from losstrace import code_deps
from losstrace.record import portable

REPO = Path(__file__).resolve().parents[1]
LOCK = yaml.safe_load((REPO / "dvc.lock").read_text(encoding="utf-8"))["stages"]


@pytest.mark.parametrize("stage", sorted(code_deps.STAGE_MODULES))
def test_dvc_lock_holds_the_md5_of_every_source_file_the_stage_runs(stage):
    """DVC hashes a file dependency as the plain md5 of its bytes."""
    locked = {d["path"]: d["md5"] for d in LOCK[stage]["deps"] if d["path"].startswith("src/")}
    assert sorted(locked) == code_deps.stage_code(stage), "dvc.lock is older than dvc.yaml: run dvc repro"
    stale = [p for p, md5 in locked.items() if hashlib.md5((REPO / p).read_bytes()).hexdigest() != md5]
    assert stale == [], f"dvc.lock is older than {stale}: run dvc repro and commit dvc.lock"


def _committed_text(paths: list[str]) -> dict[str, str]:
    listed = subprocess.run(["git", "ls-files", *paths], cwd=REPO, capture_output=True, text=True, check=True)
    texts = [p for p in listed.stdout.split() if p.endswith((".json", ".lock", ".csv")) and (REPO / p).is_file()]
    return {p: (REPO / p).read_text(encoding="utf-8") for p in texts}


def test_committed_outputs_hold_no_absolute_path():
    absolute = re.compile(r'sqlite:////|"/(?:home|Users|tmp|work|root|opt|var)/|[A-Za-z]:\\\\')
    texts = _committed_text(["reports", "dvc.lock"])
    assert "reports/train/run.json" in texts
    found = {p: absolute.search(t).group(0) for p, t in texts.items() if absolute.search(t)}
    assert found == {}


def test_run_json_names_the_project_store_relative_to_the_project(tmp_path):
    store = tmp_path / "mlflow.db"
    assert portable.tracking_uri(f"sqlite:///{store}", tmp_path) == "sqlite:///mlflow.db"
    assert portable.tracking_uri(f"sqlite:///{store}", tmp_path / "elsewhere") == f"sqlite:///{store}"
    assert portable.tracking_uri("http://team:5000", tmp_path) == "http://team:5000"


def test_folders_dvc_regenerates_are_ignored_not_committed():
    assert subprocess.run(["git", "ls-files", "dvc_plots"], cwd=REPO, capture_output=True, text=True).stdout == ""
    ignored = subprocess.run(["git", "check-ignore", "-q", "dvc_plots/index.html"], cwd=REPO)
    assert ignored.returncode == 0
    assert json.loads((REPO / "reports/train/run.json").read_text())["tracking_uri"] == "sqlite:///mlflow.db"


def test_a_saved_model_has_the_same_bytes_whenever_it_is_saved(tmp_path):
    """Keras stamps the save time and Python object addresses (`shared_object_id`) into
    model.keras; dvc.lock hashes the file, so equal weights must give an equal file."""
    import time

    import keras
    import numpy as np

    def build():
        keras.backend.clear_session()  # the same layer names, as in two trainings
        keras.utils.set_random_seed(0)
        return keras.Sequential([keras.Input((4, 3)), keras.layers.LSTM(2), keras.layers.Dense(2)])

    models, saved = [build(), build()], []
    for i, model in enumerate(models):
        path = tmp_path / f"m{i}.keras"
        model.save(path)
        portable.keras_archive(path)
        saved.append(path)
        time.sleep(2.1 if i == 0 else 0)  # zip dates have 2 s resolution
    assert saved[0].read_bytes() == saved[1].read_bytes()
    again = keras.models.load_model(saved[1])
    x = np.ones((1, 4, 3), dtype="float32")
    assert np.array_equal(again.predict(x, verbose=0), models[1].predict(x, verbose=0))
