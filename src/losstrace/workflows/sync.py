"""`losstrace sync`: upload a training recorded offline as one complete MLflow run.

The train stage keeps going when the tracking store is unreachable at the start
(`train.tracking.offline_ok: true`) or stops answering mid-run: every record stays in
reports/ and reports/train/run.json says `"offline": true`. Sync uploads what the store
lacks (params, per-epoch metrics with step = epoch, the per-batch loss, test metrics,
artifacts, tags, the model), ends the run FINISHED and points run.json at it. It only
adds what is missing, so a sync that failed halfway is simply run again.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from losstrace.errors import LosstraceError
from losstrace.io import read_json, read_prepared, write_json
from losstrace.record import contract, store, writer
from losstrace.stages import evaluate, train


def main(
    root: Path, reports: Path, validate_dir: Path, evaluate_dir: Path, models: Path, prepared: Path
) -> dict[str, Any]:
    run_path = reports / "run.json"
    info = read_json(run_path)
    if not isinstance(info, dict):
        raise LosstraceError(
            str(run_path),
            f"holds a {type(info).__name__}, not the train stage's run record",
            "regenerate it with `dvc repro -f train`",
        )
    if not info.get("offline"):
        return {
            "run_id": info.get("run_id"),
            "uploaded": False,
            "evaluation": _missing_evaluation(root, info, evaluate_dir),
        }
    record = _offline_record(run_path, info, reports)
    stages = dvc_stages_using(root, run_path)
    # A rerun of a sync that stopped halfway finds run.json rewritten by that sync (the new
    # run id), which DVC reports as a change: the first attempt's verdict is kept for it.
    lock_was_current = info.get("sync_lock_was_current")
    if lock_was_current is None:
        lock_was_current = bool(stages) and _dvc(root, "status", *stages, "--json").stdout.strip() == "{}"
    # A run the store already has (it went away mid-run, or an earlier sync failed) is resumed.
    resume = info["run_id"] if store.run_exists(root, info["run_id"]) else None
    try:
        with writer.start_run(root, record["name"], record["tags"], resume_id=resume) as logger:
            if logger.run_id != info["run_id"]:  # a rerun resumes this run
                write_json(run_path, {**info, "run_id": logger.run_id, "sync_lock_was_current": lock_was_current})
            values = upload(logger, record, reports, validate_dir, evaluate_dir, models, prepared)
    except LosstraceError:
        raise
    except Exception as e:
        if not store.is_outage(e):
            raise
        raise store.unreachable(
            store.tracking_uri(root), e, "rerun `losstrace sync` when it answers; it resumes where it stopped"
        ) from None
    write_json(run_path, train.run_json(logger, record))
    lock = "not a DVC output"
    if stages:
        # run.json is a train output and an evaluate dep: record its new hash, or the next
        # `dvc repro` would retrain. Only when nothing else had changed since the run.
        lock = "updated" if lock_was_current and _dvc(root, "commit", "-f", "-q", *stages).returncode == 0 else "stale"
    return {"run_id": logger.run_id, "uploaded": True, "values": values, "lock": lock, "stages": stages}


def _offline_record(run_path: Path, info: dict[str, Any], reports: Path) -> dict[str, Any]:
    """The offline record, checked before any run is opened: a sync that cannot finish
    must not leave a half-made run in the store or a rewritten run.json behind."""
    record = info.get("record")
    missing = [k for k in ("name", "tags", "params", "metrics") if not isinstance(record, dict) or k not in record]
    if missing:
        raise LosstraceError(
            str(run_path),
            f"offline record lacks {', '.join(missing)}",
            "retrain (`dvc repro -f train`) to record it again",
        )
    for name in ("history.csv", "batches.csv"):
        if not (reports / name).is_file():
            raise LosstraceError(
                str(reports / name),
                "file not found: the offline training's curves are gone",
                "restore it (`dvc checkout train`) or retrain with `dvc repro -f train`",
            )
    return record


def upload(
    logger: writer.RunLogger,
    record: dict[str, Any],
    reports: Path,
    validate_dir: Path,
    evaluate_dir: Path,
    models: Path,
    prepared: Path,
) -> int:
    """Send whatever the run lacks; returns the number of new metric values."""
    logger.log_params(record["params"])
    logger.set_tags({**record["tags"], contract.SYNCED_TAG: "true"})
    history = pd.read_csv(reports / "history.csv")
    values = sum(logger.log_missing(key, history["epoch"], history[key]) for key in history.columns.drop("epoch"))
    batches = pd.read_csv(reports / "batches.csv")
    values += logger.log_missing(contract.BATCH_LOSS, batches["step"], batches["loss"])
    if (reports / "dynamics.csv").is_file():  # per-layer series, named as the online path names them
        dynamics = pd.read_csv(reports / "dynamics.csv")
        for layer, rows in dynamics.groupby("layer", sort=True):
            for series in contract.DYNAMICS_SERIES:
                if series in rows:
                    values += logger.log_missing(contract.dynamics_metric(series, layer), rows["epoch"], rows[series])
    step0 = dict(record["metrics"])
    if (evaluate_dir / "metrics.json").exists():
        step0.update(evaluate.mlflow_metrics(read_json(evaluate_dir / "metrics.json")))
    values += sum(logger.log_missing(key, [0], [value]) for key, value in step0.items())
    for path in train.artifact_files(train.output_paths(reports, models), validate_dir):
        logger.log_artifact(path, contract.ARTIFACT_DIR)
    for name in evaluate.ARTIFACTS:
        if (evaluate_dir / name).exists():
            logger.log_artifact(evaluate_dir / name, "evaluate")
    if record["tags"].get(contract.KIND_TAG, contract.KIND_TRAIN) == contract.KIND_TRAIN and not logger.has_model():
        logger.log_keras_model(*_model_and_example(models, prepared))
    return values


def _model_and_example(models: Path, prepared: Path) -> tuple[Any, Any]:
    """The saved model, and two validation rows featurized as in training for its signature."""
    import keras

    from losstrace.data import featurize

    fz = featurize.Featurizer.from_dict(read_json(models / "featurizer.json"))
    x, _ = fz.transform(read_prepared(prepared / "val.parquet")["x"].head(2))
    return keras.models.load_model(models / "model.keras"), x


def _missing_evaluation(root: Path, info: dict[str, Any], evaluate_dir: Path) -> int:
    """Evaluate outputs whose upload failed (the server was away, `train.tracking.offline_ok`):
    evaluate left `pending_upload.json` naming their run. Upload the test metrics and
    artifacts to that run if it is still the workspace's, then drop the marker. Returns how
    many metric values were sent (0: nothing pending)."""
    pending = evaluate_dir / evaluate.PENDING
    if not pending.exists() or not (evaluate_dir / "metrics.json").exists():
        return 0
    if read_json(pending).get("run_id") != info.get("run_id"):
        return 0  # outputs of an earlier training; the next evaluate replaces them
    metrics = read_json(evaluate_dir / "metrics.json")
    try:
        evaluate.record(root, info, metrics, evaluate_dir)
    except Exception as e:
        if not store.is_outage(e):
            raise
        raise store.unreachable(store.tracking_uri(root), e, "rerun `losstrace sync` when it answers") from None
    pending.unlink()
    return len(evaluate.mlflow_metrics(metrics))


def dvc_stages_using(root: Path, path: Path) -> list[str]:
    """Stages of root/dvc.yaml that write or read `path` (for run.json: train and evaluate)."""
    dvc_yaml = root / "dvc.yaml"
    if not dvc_yaml.exists():
        return []
    rel = Path(os.path.relpath(path, root)).as_posix()
    stages = (yaml.safe_load(dvc_yaml.read_text(encoding="utf-8")) or {}).get("stages", {})

    def paths(entries: list | None) -> set[str]:
        return {next(iter(e)) if isinstance(e, dict) else str(e) for e in entries or []}

    return [name for name, st in stages.items() if rel in paths(st.get("outs")) | paths(st.get("deps"))]


def _dvc(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, capture_output=True, text=True)
