"""Two workspaces recording into one real SQLite MLflow store (a team's shared store, in
small): diagnose's default run, diff's ids, names and outcomes, and the console output
of a training. Real train and evaluate stages on Japanese Vowels, 2 epochs each."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml

from losstrace.record import reader, store
from support import run_cli


def _workspace(root: Path, prepared: Path, train: dict) -> Path:
    root.mkdir(parents=True)
    (root / "data").mkdir()
    (root / "data" / "prepared").symlink_to(prepared)
    (root / "params.yaml").write_text(yaml.safe_dump({"train": {"epochs": 2, **train}}))
    return root


def _train_and_evaluate(root: Path) -> dict:
    from losstrace.stages import evaluate, train

    prepared, reports = root / "data" / "prepared", root / "reports"
    out = train.main(root / "params.yaml", prepared, reports / "validate", root / "models", reports / "train", root)
    evaluate.main(root / "params.yaml", prepared, root / "models", reports / "train", reports / "evaluate", root)
    return out


@pytest.fixture(scope="module")
def shared(prepared, tmp_path_factory) -> dict:
    """Workspace a trains first, then workspace b (another key) into the same store: b is `latest`."""
    base = tmp_path_factory.mktemp("shared")
    uri = f"sqlite:///{base / 'store' / 'mlflow.db'}"
    (base / "store").mkdir()
    a = _workspace(base / "a", prepared, {})
    b = _workspace(base / "b", prepared, {"model": {"embedding": {"mask_zero": False}}})
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        runs = {"a": _train_and_evaluate(a)["run_id"]}
    # b through the console script, as a user runs it (stderr is a pipe here, not a terminal).
    env = {"MLFLOW_TRACKING_URI": uri}
    trained = run_cli("train", cwd=b, env=env, check=True)
    run_cli("evaluate", cwd=b, env=env, check=True)
    runs["b"] = json.loads((b / "reports" / "train" / "run.json").read_text())["run_id"]
    return {"a": a, "b": b, "env": env, "runs": runs, "uri": uri, "trained": trained}


def test_diagnose_without_an_argument_describes_the_workspace_run_not_the_latest(shared):
    for ws in ("a", "b"):
        r = run_cli("diagnose", "--json", cwd=shared[ws], env=shared["env"], check=True)
        assert json.loads(r.stdout)["run_id"] == shared["runs"][ws]
    latest = run_cli("diagnose", "latest", "--json", cwd=shared["a"], env=shared["env"], check=True)
    assert json.loads(latest.stdout)["run_id"] == shared["runs"]["b"]  # `latest` still means the store's latest


def test_runs_differing_in_one_key_get_different_names(shared):
    c = store.client(shared["uri"])
    name_a, name_b = (c.get_run(shared["runs"][k]).info.run_name for k in ("a", "b"))
    assert name_a != name_b
    assert name_a.startswith("lstm-bs32-lr0.001-") and name_b.startswith("lstm-bs32-lr0.001-")


def test_diff_json_names_both_runs_and_their_outcomes(shared):
    a, b = shared["runs"]["a"], shared["runs"]["b"]
    r = run_cli("diff", a, b, "--json", cwd=shared["a"], env=shared["env"], check=True)
    d = json.loads(r.stdout)
    assert {"params", "data", "env", "behaviour", "causes"} <= set(d)  # the contract's keys stay
    assert d["a"]["run_id"] == a and d["b"]["run_id"] == b
    assert d["a"]["name"] != d["b"]["name"] and d["a"]["name"].startswith("lstm-")
    metrics = json.loads((shared["a"] / "reports" / "evaluate" / "metrics.json").read_text())["test"]
    rows = {o["metric"]: o for o in d["outcomes"]}
    assert {"val_accuracy", "val_loss", "test_accuracy", "test_loss"} <= set(rows)
    assert rows["test_accuracy"]["a"] == pytest.approx(metrics["accuracy"])
    assert rows["test_loss"]["a"] == pytest.approx(metrics["loss"])
    assert any(p["key"] == "train.model.embedding.mask_zero" for p in d["params"])


def test_diff_table_shows_outcomes_and_a_legend(shared):
    a, b = shared["runs"]["a"], shared["runs"]["b"]
    text = run_cli("diff", a, b, cwd=shared["a"], env=shared["env"], check=True).stdout
    assert "Outcomes" in text and "test_accuracy" in text
    assert "Legend" in text and "confidence:" in text and "docs/diagnosis.md" in text
    md = run_cli("diff", a, b, "--md", cwd=shared["a"], env=shared["env"], check=True).stdout
    assert "### Outcomes" in md and "| test_accuracy |" in md and "`confidence`" in md


def test_diff_html_says_where_it_wrote(shared, tmp_path):
    a, b = shared["runs"]["a"], shared["runs"]["b"]
    out = tmp_path / "diff.html"
    r = run_cli("diff", a, b, "--html", str(out), cwd=shared["a"], env=shared["env"], check=True)
    assert r.stdout.strip() == f"diff: wrote {out} (open it in a browser)"
    page = out.read_text()
    assert "Outcomes" in page and "test_accuracy" in page and "Legend" in page
    both = run_cli("diff", a, b, "--json", "--html", str(out), cwd=shared["a"], env=shared["env"], check=True)
    assert json.loads(both.stdout)["a"]["run_id"] == a  # stdout stays JSON
    assert f"diff: wrote {out}" in both.stderr


def test_the_fast_sqlite_read_and_the_client_read_give_the_same_outcomes(shared):
    run_id = shared["runs"]["a"]
    db = Path(shared["uri"][len("sqlite:///") :])
    fast = reader._read_run_sqlite(db, run_id, "losstrace")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", shared["uri"])
        slow = reader._read_run_client(shared["a"], run_id, "losstrace")
    assert fast.metrics["test_accuracy"] == slow.metrics["test_accuracy"]
    assert fast.metrics == slow.metrics


def test_training_reports_progress_on_stderr_and_closes_with_a_summary(shared):
    r = shared["trained"]
    history = pd.read_csv(shared["b"] / "reports" / "train" / "history.csv")
    best = int(history["val_loss"].idxmin())
    # stdout: one closing line with the run and its numbers, no longer a bare epoch count.
    (line,) = r.stdout.splitlines()
    assert re.fullmatch(
        re.escape(
            f"train: done, run {shared['runs']['b']}: best val loss {history['val_loss'].min():.4f} at epoch "
            f"{best + 1}/2, final val accuracy {history['val_accuracy'].iloc[-1]:.4f}"
        )
        + r" \(fit \d+\.\d s\)",
        line,
    )
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("train: ")]
    assert lines[0].startswith(f"train: epoch 1/2: loss {history['loss'][0]:.4f}, val loss ")
    assert lines[1].startswith("train: epoch 2/2: ") and "elapsed, ~0s left" in lines[1]
    assert lines[2].startswith("train: 2/2 epochs in ") and "best val loss" in lines[2]
