"""The run contract: every name a recorded run carries, defined once.

A run is written by the pipeline's train stage, by `losstrace sync` (a training
recorded offline) and by `losstrace.keras` (a user's own script); it is read back by
`diagnose`, `diff`, bisect and the CI report. All of them take the artifact names, CSV
columns, metric keys and tag names from here, so a writer and a reader cannot drift.
"""

from __future__ import annotations

from typing import Any

# --- Artifacts: files logged under ARTIFACT_DIR in the run -------------------------
ARTIFACT_DIR = "losstrace"
HISTORY = "history.csv"  # one row per epoch: HISTORY_COLUMNS, then any other Keras metric
BATCHES = "batches.csv"  # the true per-batch loss: BATCH_COLUMNS
DYNAMICS = "dynamics.csv"  # per-layer gradient norms and update ratios per epoch: DYNAMICS_COLUMNS
LINT = "lint.json"  # {"findings": [...]} from the pre-flight checks
DIAGNOSIS = "diagnosis.json"  # {"run_id", "findings": [...]} at the end of training
CONTEXT = "context.json"  # what diagnosis needs besides the curves (n_classes, shares, ...)
CURVES = "curves.png"  # the loss and accuracy curves, for people
FINGERPRINT = "fingerprint.json"  # the data fingerprint (per split: rows, class counts, order, hashes)
VALIDATION = "results.json"  # the validate stage's results (pipeline runs only)
FEATURIZER = "featurizer.json"  # the fitted featurizer (pipeline runs only)
# A script's run kept on disk while the store was away (losstrace-runs/<name>/): what the
# store would have held besides the files, so `diagnose` / `diff` read the folder as a run.
OFFLINE_PARAMS = "params.json"  # {key: value as logged}
OFFLINE_TAGS = "tags.json"  # {key: value as set}
PRESCRIPTION = "prescription.json"  # [{"key", "from", "to", "why", "findings"}]: the reconciled changes
RUN_FILES = (HISTORY, BATCHES, DYNAMICS, LINT, DIAGNOSIS, CONTEXT, CURVES)  # every producer writes these

HISTORY_COLUMNS = ("epoch", "loss", "val_loss", "accuracy", "val_accuracy", "lr")
BATCH_COLUMNS = ("step", "epoch", "batch", "loss", "size")
DYNAMICS_COLUMNS = ("epoch", "layer", "grad_norm", "grad_norm_max", "update_ratio")
DYNAMICS_SERIES = ("grad_norm", "grad_norm_max", "update_ratio")  # logged per layer as "<series>/<layer>"
# The measured gradient noise scale (train.noise_scale_every > 0): history columns after the
# contract's, and MLflow metrics of the same names at step = epoch. Absent when not measured,
# empty in an epoch without a measurement.
NOISE_SCALE = "noise_scale"  # B_simple = tr(Σ) / |G|² in samples, from the epoch's means below
NOISE_TRACE = "noise_scale_tr_sigma"  # tr(Σ): per-example gradient variance, epoch mean of the estimates
NOISE_SIGNAL = "noise_scale_g2"  # |G|²: squared norm of the true gradient, epoch mean of the estimates
NOISE_SCALE_COLUMNS = (NOISE_SCALE, NOISE_TRACE, NOISE_SIGNAL)

# --- Metrics -------------------------------------------------------------------------
# Per-epoch curves use step = epoch and the history column names (loss, val_loss, ...).
BATCH_LOSS = "batch_loss"  # step = global batch step
DATA_METRIC_PREFIX = "data."  # featurization statistics at step 0 (e.g. data.train.truncated_share)
TEST_METRIC_PREFIX = "test_"  # evaluate's metrics at step 0 (test_accuracy, test_macro_f1, test_loss)

# --- Tags ----------------------------------------------------------------------------
KIND_TAG = "losstrace.kind"
KIND_TRAIN = "train"  # a pipeline training: what `latest` means
KIND_SCRIPT = "script"  # a user's own Keras script recorded by losstrace.keras
KIND_BISECT = "bisect"  # a bisect's parent run
KIND_BISECT_TRIAL = "bisect-trial"  # one trial, nested under its bisect
KIND_GALLERY = "gallery"  # a gallery case's training
KIND_FIX = "fix"  # a `losstrace fix` parent run
KIND_FIX_TRIAL = "fix-trial"  # one fix trial (a seed of the original, the prescription, one change), nested
SYNCED_TAG = "losstrace.synced"  # "true" on runs that reached the store through `losstrace sync`
RESUMED_TAG = "losstrace.resumed_from_epoch"  # epochs restored from a resume backup
PARENT_TAG = "mlflow.parentRunId"
RUN_NAME_TAG = "mlflow.runName"
PRESCRIPTION_TAG = "losstrace.prescription"  # "key=value; ...": the prescription, searchable in the UI
FINDING_TAG_PREFIX = "finding."  # finding.<code> = severity, for searching runs in the UI
ENV_TAG_PREFIX = "env."  # env.<package> = version, env.python, env.platform
ENV_TAGS = ("device", "determinism")  # environment facts tagged without the prefix


def dynamics_metric(series: str, layer: str) -> str:
    """The MLflow metric key of one layer's dynamics series, e.g. grad_norm/lstm."""
    return f"{series}/{layer}"


def finding_tags(findings: list[dict[str, Any]]) -> dict[str, str]:
    return {f"{FINDING_TAG_PREFIX}{f['code']}": f["severity"] for f in findings}


def prescription_tags(prescription: list[dict[str, Any]]) -> dict[str, str]:
    """The prescription as one searchable tag (`train.batch_size=16; ...`); none when empty."""
    if not prescription:
        return {}
    return {PRESCRIPTION_TAG: "; ".join(f"{c['key']}={c['to']}" for c in prescription)}


def environment_of(tags: dict[str, str]) -> dict[str, str]:
    """A run's environment from its tags: package versions without the prefix, device, determinism."""
    env = {k[len(ENV_TAG_PREFIX) :]: v for k, v in tags.items() if k.startswith(ENV_TAG_PREFIX)}
    env.update({k: tags[k] for k in ENV_TAGS if k in tags})
    return env
