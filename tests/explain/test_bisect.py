"""bisect on real recorded runs: the one param that moved the curve is named, the
inert ones are not, and every trial is a nested MLflow run."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from losstrace import params, tracking
from losstrace.explain import bisect
from losstrace.explain.replay import Workspace

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def test_plan_and_changed_keys_skip_inert_sections():
    a = params.Params()
    b = dataclasses.replace(a, train=dataclasses.replace(a.train, batch_size=4),
                            evaluate=dataclasses.replace(a.evaluate, batch_size=64))
    assert [k for k, _, _ in bisect.changed_keys(a, b)] == ["train.batch_size"]
    names = [t.name for t, _ in bisect.plan(a, b, seeds=2, epochs=3)]
    assert names == ["A", "A seed 43", "B", "A + train.batch_size"]
    assert all(p.train.epochs == 3 for _, p in bisect.plan(a, b, seeds=2, epochs=3))


def test_a_new_error_finding_names_its_change_even_when_curves_stay_within_seed_spread():
    # sigmoid + categorical cross-entropy: Keras renormalises the outputs, so the curve may
    # barely move, yet B is misconfigured and only the activation change reproduces that.
    same = {f: 0.5 for f in bisect.FEATURES}

    def trials(seed_codes: list[str]) -> list[bisect.Trial]:
        return [bisect.Trial("A", None, features=same), bisect.Trial("A seed 43", None, features=same, codes=seed_codes),
                bisect.Trial("B", None, features=same, codes=["activation_loss_mismatch"]),
                bisect.Trial("A + train.output_activation", "train.output_activation", "sigmoid", features=same,
                             codes=["activation_loss_mismatch"]),
                bisect.Trial("A + train.batch_size", "train.batch_size", 16, features=same)]

    culprits, summary = bisect.judge(trials([]))
    assert culprits == ["train.output_activation"] and summary["moved_features"] == {}
    assert summary["new_findings_in_b"] == ["activation_loss_mismatch"]
    # A finding one of A's own seeds already shows is seed noise, not the change's doing.
    assert bisect.judge(trials(["activation_loss_mismatch"]))[0] == []


def test_bisect_names_the_batch_size_not_the_inert_change(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    base = params.Params()
    a = dataclasses.replace(base, train=dataclasses.replace(base.train, epochs=6))
    # B: a tiny batch (moves the curve) and a different eval batch (cannot).
    b = dataclasses.replace(a, train=dataclasses.replace(a.train, batch_size=4),
                            evaluate=dataclasses.replace(a.evaluate, batch_size=64))
    ws = Workspace(tracking.tracking_uri(tmp_path), "train", inprocess=True)
    try:
        run_a, run_b = ws.train(a, source_root=REPO), ws.train(b, source_root=REPO)
    finally:
        ws.close()
    assert not run_a.error and not run_b.error
    result = bisect.main(run_a.run_id, run_b.run_id, tmp_path, seeds=2, inprocess=True)
    assert result["culprits"] == ["train.batch_size"]
    assert "batch_noise" in result["moved_features"]
    trial = next(t for t in result["trials"] if t["change"] == "train.batch_size")
    assert trial["share"] >= bisect.CULPRIT_SHARE
    c = tracking.client(tracking.tracking_uri(tmp_path))
    children = c.search_runs([c.get_experiment_by_name("losstrace").experiment_id],
                             filter_string=f"tags.mlflow.parentRunId = '{result['parent_run_id']}'")
    assert len(children) == len(result["trials"]) == 4
    assert tracking.resolve_run("latest", tmp_path) == run_b.run_id  # trials never shadow `latest`
