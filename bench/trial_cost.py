"""What one bisect trial costs beside its own `model.fit`, in the long-lived trial worker.

A bisect replays A with other training seeds and with each single change of B. Here the
default params at `epochs` epochs (a `losstrace bisect --epochs 5` of the shipped pipeline):
the first trial starts the worker (its imports), ingests and validates, and is timed apart;
then `reps` trials as bisect's seed re-runs are (another training seed on A's split), each
in the same worker, reusing the prepared and validated split. A trial's seconds are
`Workspace.train`'s wall time (the train stage in the worker, its files read back for the
curve features); its fit is `fit_seconds` from the trial's reports/train/run.json. One trial
with the train stage in a process of its own (the fallback when the worker dies, the split
still reused) shows what the worker saves.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any

from .common import REPO, median

FIT_FACTOR, EXTRA_SECONDS = 2.0, 3.0  # target: a trial ≤ 2 × its fit + 3 s


def measure(work: Path, reps: int, epochs: int, session=None) -> dict[str, Any]:
    """session: a new trial-worker session to run in and leave open (run.py hands it on to
    false_alarms); without one, a session of its own."""
    from losstrace import params
    from losstrace.workflows.replay import PROCESS, WORKER, Session, Workspace

    work.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{work / 'mlflow.db'}"
    a = params.override(params.Params(), {"train.epochs": epochs})

    def seed(i: int) -> params.Params:
        return dataclasses.replace(a, base=dataclasses.replace(a.base, seed=a.base.seed + i))

    own = session is None
    session = session or Session(WORKER)
    fallback = Session(PROCESS)
    try:
        ws = Workspace(uri, "bisect-trial", session=session)
        first = ws.train(a, source_root=REPO)
        trials = [ws.train(seed(i), source_root=REPO, data_seed=a.base.seed) for i in range(1, reps + 1)]
        ws.close()
        # The fallback (a process per stage, as when the worker dies) on the same split and
        # validation, handed over as Session.run keeps them when it falls back.
        _hand_over(session, fallback, a)
        ws = Workspace(uri, "bisect-trial", session=fallback)
        in_process = ws.train(seed(1), source_root=REPO, data_seed=a.base.seed)
        ws.close()
    finally:
        fallback.close()
        if own:
            session.close()
    for out in (first, *trials, in_process):
        if out.error:
            raise RuntimeError(f"bisect trial failed: {out.error}")
    runners = [(t.runner, t.reused) for t in (first, *trials, in_process)]
    expected = [(WORKER, [])] + [(WORKER, ["ingest", "validate"])] * reps + [(PROCESS, ["ingest", "validate"])]
    if runners != expected:
        raise RuntimeError(f"a trial ran elsewhere, or made or reused data it should not have: {runners}")
    seconds = median([t.seconds for t in trials])
    fit = median([t.fit_seconds for t in trials])
    return {
        "bisect_trial_seconds": seconds,
        "bisect_trial_fit_seconds": fit,
        "bisect_trial": {
            "epochs": epochs,
            "reps": reps,
            "first_trial_seconds": first.seconds,
            "first_trial_fit_seconds": first.fit_seconds,
            "trials": [{"seconds": t.seconds, "fit_seconds": t.fit_seconds} for t in trials],
            # Each trial against its own target: the load moves both numbers together.
            "over_target_seconds": median([t.seconds - (FIT_FACTOR * t.fit_seconds + EXTRA_SECONDS) for t in trials]),
            "target": {"fit_factor": FIT_FACTOR, "extra_seconds": EXTRA_SECONDS},
            "process_trial_seconds": in_process.seconds,
            "process_trial_fit_seconds": in_process.fit_seconds,
        },
    }


def _hand_over(source, target, p) -> None:
    """Copy the prepared splits and validation results of `p` from one session to another."""
    from losstrace.workflows import trial_data

    data = trial_data.prepared_key(p.data, p.base.seed, REPO)
    checked = trial_data.validated_key(data, p)
    shutil.copytree(source.prepared_dir(data), target.prepared_dir(data))
    shutil.copytree(source.validated_dir(checked), target.validated_dir(checked))
