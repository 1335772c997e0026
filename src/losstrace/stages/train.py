"""Train stage: lint → seed → featurize → build → fit (tracked) → outputs.

`run()` is the pure core (arrays and params in, model and records out) so tests
can assert on it; `main()` reads the prepared data and publishes every output at
once (models/, reports/train/) after training succeeded.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from losstrace import params as params_mod
from losstrace.data import featurize
from losstrace.errors import LosstraceError
from losstrace.findings import Finding
from losstrace.io import Staging, read_json, read_prepared, to_json, write_json
from losstrace.model import builder_check, heads
from losstrace.params import Params
from losstrace.record import contract, environment, portable, run_files, store, writer
from losstrace.record import run_name as naming
from losstrace.training import distribute

if TYPE_CHECKING:  # resume imports Keras: only inside the functions that train
    from losstrace.training import resume

# The validate stage's outputs a training run carries as artifacts, beside its own.
VALIDATE_ARTIFACTS = (contract.FINGERPRINT, contract.VALIDATION)


def seed_everything(seed: int) -> None:
    """One seed, set once at stage start; op determinism makes CPU runs byte-identical.

    PYTHONHASHSEED cannot change this interpreter's string hashing (it is read at start-up);
    it only reaches processes started after this point. Nothing here iterates a set in
    hash order, so this process does not depend on it."""
    os.environ["PYTHONHASHSEED"] = str(seed)
    os.environ.setdefault("TF_DETERMINISTIC_OPS", "1")
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def select_device(device: str) -> str:
    """Resolve `train.device`; returns a human-readable device description for the run."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if device == "gpu" and not gpus:
        raise LosstraceError(
            "params.yaml",
            "train.device=gpu but TensorFlow sees no GPU",
            "set train.device: auto or cpu, or install tensorflow[and-cuda]",
        )
    if device == "cpu" and gpus:
        tf.config.set_visible_devices([], "GPU")
        gpus = []
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        return f"GPU:{details.get('device_name', gpus[0].name)}"
    return "CPU"


@dataclass
class Dataset:
    """Featurized splits plus what the model and the record need to know about them."""

    x: dict[str, np.ndarray]
    y: dict[str, np.ndarray]
    featurizer: featurize.Featurizer
    labels: dict[str, int]
    info: dict[str, Any]
    stats: dict[str, float]


def load_dataset(p: Params, prepared: Path) -> Dataset:
    info = read_json(prepared / "ingest.json")
    labels = read_json(prepared / "labels.json")
    frames = {s: read_prepared(prepared / f"{s}.parquet") for s in ("train", "val")}
    d = p.data
    fz = featurize.fit(
        frames["train"],
        info["input"],
        d.max_len,
        d.max_tokens,
        d.text_level,
        padding=d.padding,
        standardize=d.standardize,
    )
    x, y, stats = {}, {}, {}
    for split, frame in frames.items():
        x[split], s = fz.transform(frame["x"])
        y[split] = featurize.encode_labels(
            frame["label"], labels, info["multilabel"], info["label_delimiter"], p.train.loss
        )
        stats.update({f"{split}.{k}": v for k, v in s.items()})
    return Dataset(x, y, fz, labels, info, stats)


def class_weights(y: np.ndarray, n_classes: int) -> dict[int, float] | None:
    ids = heads.class_ids(y)
    counts = np.bincount(ids.astype(int), minlength=n_classes)
    return {i: float(len(ids) / (n_classes * c)) for i, c in enumerate(counts) if c > 0}


def run(p: Params, ds: Dataset, logger=None, callbacks_extra: list | None = None, *, strategy=None, backup=None):
    """Build and fit the model. Returns (model, Recorder).

    strategy: a `tf.distribute` strategy; None makes one from `train.distribute`.
    backup: a `resume.Backup` to commit every epoch to and to resume from (`train.resume`);
    MLflow then hears of an epoch only once it is committed (see resume.py).
    """
    from losstrace.model import builder
    from losstrace.training import distribute, progress, resume
    from losstrace.training.callbacks import RecordingCallback
    from losstrace.training.recorder import Recorder, log_epoch

    t = p.train
    n_train = len(ds.x["train"])
    if strategy is None and t.distribute != "none":
        strategy = distribute.make_strategy(t.distribute)
    plans = _bucket_plans(p, ds)
    steps = len(plans[0]) if plans else int(np.ceil(n_train / t.batch_size))
    # Bucketed batches are shorter than data.max_len: the model takes any length.
    max_len = None if plans else ds.featurizer.max_len
    spec = builder.input_spec(t, p.data.padding, ds.info, ds.featurizer, ds.labels, max_len)
    with _precision(t.mixed_precision), distribute.scope(strategy):
        model = builder.build(t, spec, steps)
    rec = Recorder()
    recording = RecordingCallback(
        rec,
        n_train,
        t.batch_size,
        logger,
        dynamics=t.dynamics,
        defer_logging=backup is not None,
        exact_epoch_loss=distribute.replicas(strategy) > 1,
        noise_scale_every=t.noise_scale_every,
    )
    stateful, keeper = training_controls(t)
    callbacks = [recording, *stateful, *(callbacks_extra or []), progress.Progress(t.epochs)]
    resumer = None
    if backup is not None:

        def committed(epoch: int) -> None:
            if logger is not None:
                log_epoch(logger, rec, epoch)

        resumer = resume.ResumeCallback(
            backup, rec, stateful, on_commit=committed, on_restore=lambda r: resume.reconcile(logger, r)
        )
        callbacks.append(resumer)  # last: commits the epoch as every other callback left it
    weights = (
        class_weights(ds.y["train"], len(ds.labels))
        if t.class_weight == "balanced" and not ds.info["multilabel"]
        else None
    )
    fit_start = time.perf_counter()
    with distribute.fit_guard(model, strategy, ds.x["train"][:2], ds.y["train"][:2]):
        if plans:
            from losstrace.training import batching

            train_plan, val_plan = plans
            first = (lambda: resumer.start_epoch) if resumer is not None else (lambda: 0)
            model.fit(
                batching.dataset(ds.x["train"], ds.y["train"], train_plan, t.epochs, first),
                validation_data=batching.eval_dataset(ds.x["val"], ds.y["val"], val_plan),
                steps_per_epoch=steps,
                epochs=t.epochs,
                shuffle=False,  # the plan shuffles
                verbose=0,
                callbacks=callbacks,
                class_weight=weights,
            )
        else:
            model.fit(
                ds.x["train"],
                ds.y["train"],
                validation_data=(ds.x["val"], ds.y["val"]),
                batch_size=t.batch_size,
                epochs=t.epochs,
                shuffle=t.shuffle,
                verbose=0,
                callbacks=callbacks,
                class_weight=weights,
            )
    rec.fit_seconds = time.perf_counter() - fit_start
    if t.noise_scale_every and not recording.noise_scale_measurements and rec.epochs:
        print(
            f"train: train.noise_scale_every={t.noise_scale_every} measured nothing: it needs more steps than that, "
            "one device (train.distribute: none) and dense batches",
            file=sys.stderr,
        )
    # The epoch whose weights the returned model holds; history (rec.epochs) keeps every epoch.
    last = rec.epochs[-1]["epoch"] if rec.epochs else None
    rec.kept_epoch = keeper.best_epoch if keeper is not None and keeper.best is not None else last
    return model, rec


def training_controls(t) -> tuple[list, Any]:
    """The Keras callbacks that shape the training itself (learning-rate schedule, early
    stopping, best-epoch keeper), as opposed to recording it. Their state is what a resumed
    training must restore. Returns (callbacks, the keeper or None)."""
    import keras

    cb = t.callbacks
    stateful: list = []
    if t.lr_schedule == "plateau":
        stateful.append(
            keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=max(cb.patience // 2, 1))
        )
    if cb.early_stopping:
        # Only stops training. Which weights are kept is checkpoint_monitor's job, so an
        # early-stopping monitor and a checkpoint monitor never fight over the final model.
        stateful.append(keras.callbacks.EarlyStopping(monitor=cb.monitor, patience=cb.patience))
    keeper = None
    if cb.checkpoint_monitor:
        # The best-checkpoint: Keras' own best-weights tracking, kept in memory (no temp
        # file to clean up), made to never stop (patience > epochs) and restoring at train
        # end whether early stopping fired or not. With train.resume its best weights are
        # committed with each epoch, so a resumed run keeps the best epoch of both parts.
        keeper = keras.callbacks.EarlyStopping(
            monitor=cb.checkpoint_monitor, patience=t.epochs + 1, restore_best_weights=True
        )
        stateful.append(keeper)
    return stateful, keeper


def _bucket_plans(p: Params, ds: Dataset):
    """(train, val) batch plans for `train.batching: bucket`, None for pad_to_max."""
    if p.train.batching != "bucket":
        return None
    from losstrace.training import batching

    return batching.plans(ds.x["train"], ds.x["val"], p.train.batch_size, p.train.buckets, p.base.seed, p.train.shuffle)


@contextmanager
def _precision(mixed: bool) -> Iterator[None]:
    """mixed_float16 while the model is built (layers keep the policy they were built
    with; the zoo's output layer is float32), the previous global policy afterwards."""
    if not mixed:
        yield
        return
    import keras

    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def output_paths(reports: Path, model_dir: Path) -> dict[str, Path]:
    """Every train output by name: the run contract's files, run.json, the model and featurizer."""
    return {
        **{name: reports / name for name in contract.RUN_FILES},
        "run": reports / "run.json",
        "model": model_dir / "model.keras",
        contract.FEATURIZER: model_dir / contract.FEATURIZER,
    }


def artifact_files(outputs: dict[str, Path], validate_dir: Path) -> list[Path]:
    """What the run carries under the contract's artifact folder."""
    own = [outputs[name] for name in (*contract.RUN_FILES, contract.FEATURIZER)]
    return own + [validate_dir / n for n in VALIDATE_ARTIFACTS if (validate_dir / n).exists()]


def run_json(logger: writer.RunLogger, record: dict[str, Any], fit_seconds: float | None = None) -> dict[str, Any]:
    """reports/train/run.json: the MLflow run holding this training.

    Offline (the store unreachable or gone mid-run) it also keeps what only the tracking
    calls carried, the run's name, params, tags and step-0 metrics, so `losstrace sync`
    can upload the whole run later from reports/ alone. `fit_seconds` (model.fit's wall
    time) sets the stage's cost beside its work; it varies run to run, so it stays here,
    out of the files compared byte for byte and out of the MLflow record.
    """
    out: dict[str, Any] = {
        "run_id": logger.run_id,
        "tracking_uri": portable.tracking_uri(logger.uri),
        "experiment": store.experiment_name(),
    }
    if fit_seconds is not None:
        out["fit_seconds"] = round(fit_seconds, 3)
    if logger.offline:
        out.update(offline=True, offline_reason=logger.offline, record=record)
    return out


@dataclass
class RunIdentity:
    """What the MLflow run is called and carries before training starts."""

    name: str
    tags: dict[str, Any]
    params: dict[str, Any]
    data_metrics: dict[str, float]
    kind: str
    parent_run_id: str | None


def main(
    params_path: Path,
    prepared: Path,
    validate_dir: Path,
    model_dir: Path,
    reports: Path,
    root: Path = Path("."),
    kind: str = contract.KIND_TRAIN,
    parent_run_id: str | None = None,
) -> dict[str, Any]:
    """The train stage. kind / parent_run_id: how the run is tagged and nested (bisect trials
    and gallery cases run this stage as children of their own parent run)."""
    p = params_mod.load(params_path)
    lint_findings = preflight(p, prepared, root)
    reports.mkdir(parents=True, exist_ok=True)
    seed_everything(p.base.seed)
    device = select_device(p.train.device)
    strategy = distribute.make_strategy(p.train.distribute)  # multi_worker: before TensorFlow runs any op
    ds = load_dataset(p, prepared)
    if p.train.distribute == "multi_worker" and not distribute.is_chief():
        return _train_worker(p, ds, strategy, prepared, root)
    # A builder's model exists only now: lint it before any run is recorded.
    lint_findings += builder_check.lint_built(p, ds, root)
    stop_on_lint_errors(lint_findings, p)
    data_findings = _weighted_imbalance(_data_findings(validate_dir), p, ds.info["multilabel"])
    backup, resume_id, restore = _backup(p, prepared, root)
    identity = run_identity(p, ds, validate_dir, device, strategy, root, kind, parent_run_id)
    outputs = output_paths(reports, model_dir)
    # A server gone mid-run never costs the training (resilient); one unreachable at the
    # start fails here, before training, unless train.tracking.offline_ok.
    with writer.start_run(
        root,
        identity.name,
        identity.tags,
        resume_id=resume_id,
        parent_id=parent_run_id,
        resilient=True,
        offline_ok=p.train.tracking.offline_ok,
    ) as logger:
        _log_start(logger, identity, resume_id, backup, restore)
        model, rec = run(p, ds, logger, strategy=strategy, backup=backup)
        if rec.resumed_from is not None:
            logger.set_tags({contract.RESUMED_TAG: rec.resumed_from})
        if distribute.is_multi_worker(strategy):
            model = distribute.undistributed(model)
        files = summarise(p, ds, model, rec, data_findings, lint_findings, logger.run_id, identity.name)
        record = offline_record(identity, files)
        publish(root, outputs, files, model, ds, logger, record, fit_seconds=rec.fit_seconds)
        upload(logger, outputs, validate_dir, files, model, ds, identity, record, fit_seconds=rec.fit_seconds)
        if backup is not None:
            backup.clear()  # outputs published and recorded: nothing left to resume
    distribute.barrier(strategy)  # multi_worker: release the workers waiting for the chief to finish
    diagnosis = files.diagnosis
    return {
        "run_id": logger.run_id,
        "offline": logger.offline,
        "epochs": len(files.history),
        "diagnosis": diagnosis,
        "fit_seconds": rec.fit_seconds,
    }


def preflight(p: Params, prepared: Path, root: Path = Path(".")) -> list[Finding]:
    """Lint the params against the prepared data; stop on an error unless told to train anyway.
    A builder's file must be tracked; its model is linted once built (builder_check.lint_built)."""
    from losstrace.model import model_lint

    builder_check.require_tracked(p, root)
    info, labels = read_json(prepared / "ingest.json"), read_json(prepared / "labels.json")
    lint_findings = model_lint.params_lint(p, info, labels)
    stop_on_lint_errors(lint_findings, p)
    return lint_findings


def stop_on_lint_errors(findings: list[Finding], p: Params) -> None:
    errors = [f for f in findings if f.severity == "error"]
    if errors and p.train.on_lint_error == "stop":
        first = errors[0]
        raise LosstraceError(
            "lint",
            f"{first.code}: {first.evidence.get('message', first.evidence)}",
            first.suggestion or "fix params.yaml",
            exit_code=1,
        )


def _backup(p: Params, prepared: Path, root: Path) -> tuple[resume.Backup | None, str | None, bool]:
    """(the resume backup or None, the run to continue, whether to restore from the backup)."""
    if not p.train.resume:
        return None, None, False
    from losstrace.training import resume

    fp = resume.fingerprint(p, prepared) + builder_check.code_hash(p, root)
    backup = resume.Backup(resume.backup_dir(root), fp)
    resume_id, restore = _resume_target(root, backup)
    return backup, resume_id, restore


def run_identity(
    p: Params, ds: Dataset, validate_dir: Path, device: str, strategy, root: Path, kind: str, parent: str | None
) -> RunIdentity:
    tags = {
        contract.KIND_TAG: kind,
        "device": device,
        "determinism": "op-determinism",
        "distribute": p.train.distribute,
        "replicas": distribute.replicas(strategy),
        **environment.env_tags(),
        **environment.git_tags(root),
        **environment.dvc_dep_tags(root, "train"),
    }
    params = params_mod.flatten(p)
    fp = validate_dir / contract.FINGERPRINT
    if fp.exists():
        params.update(run_files.fingerprint_params(read_json(fp)))
    data_metrics = {f"{contract.DATA_METRIC_PREFIX}{k}": v for k, v in ds.stats.items()}
    name = naming.run_name(p)
    return RunIdentity(name, tags, params, data_metrics, kind, parent)


def _log_start(logger: writer.RunLogger, identity: RunIdentity, resume_id, backup, restore: bool) -> None:
    logger.log_params(identity.params)  # the same values again when resuming: MLflow accepts that
    if resume_id:
        for key, value in identity.data_metrics.items():
            logger.log_missing(key, [0], [value])
    else:
        logger.log_metrics(identity.data_metrics, step=0)
    if backup is not None and not restore:
        backup.begin(logger.run_id)
    elif backup is not None:
        backup.adopt(logger.run_id)


def summarise(p: Params, ds: Dataset, model, rec, data_findings, lint_findings, run_id, title) -> run_files.RunFiles:
    """The run's files: curves, dynamics, the context diagnosis reads, and the diagnosis."""
    from losstrace.explain.diagnose import diagnose_training, merge_findings
    from losstrace.explain.prescription import with_prescription
    from losstrace.explain.symptoms import noise_scale_context
    from losstrace.model.heads import as_probabilities

    history = run_files.history_frame(rec.epochs)
    batches = run_files.batches_frame(rec.batches)
    dynamics = run_files.dynamics_frame(rec.dynamics)
    outputs = model.predict(ds.x["val"], batch_size=256, verbose=0)
    probs = as_probabilities(outputs, p.train.from_logits, ds.info["multilabel"])
    context = _context(p, ds, run_files.prediction_stats(probs, sorted(ds.labels, key=ds.labels.get)))
    context.update(noise_scale_context(history, batches, p.diagnose.level_floor_share))
    curve = diagnose_training(history, batches, dynamics, context, p.diagnose, rec.divergence, p.train.learning_rate)
    diagnosis = with_prescription({**merge_findings(data_findings, lint_findings, curve), "run_id": run_id}, context)
    lint = [f.to_dict() for f in lint_findings]
    return run_files.RunFiles(history, batches, dynamics, lint, diagnosis, context, title)


def offline_record(identity: RunIdentity, files: run_files.RunFiles) -> dict[str, Any]:
    """What only the tracking calls carry, kept in run.json for `losstrace sync`."""
    parent = {contract.PARENT_TAG: identity.parent_run_id} if identity.parent_run_id else {}
    tags = {**identity.tags, **contract.finding_tags(files.diagnosis["findings"]), **parent}
    return {"name": identity.name, "params": identity.params, "metrics": identity.data_metrics, "tags": tags}


def publish(root: Path, outputs: dict[str, Path], files, model, ds: Dataset, logger, record, fit_seconds=None) -> None:
    """Stage every output, then publish them together: a failure leaves the old ones."""
    with Staging(root) as stage:
        staged = {key: stage.path(path) for key, path in outputs.items()}
        files.write(staged)
        model.save(staged["model"])
        portable.keras_archive(staged["model"])
        staged[contract.FEATURIZER].write_text(to_json(ds.featurizer.to_dict()), encoding="utf-8")
        staged["run"].write_text(to_json(run_json(logger, record, fit_seconds)), encoding="utf-8")


def upload(
    logger, outputs: dict[str, Path], validate_dir: Path, files, model, ds: Dataset, identity, record, fit_seconds=None
) -> None:
    """The published files as artifacts, the finding tags and the model (pipeline trainings only)."""
    offline_before_uploads = logger.offline
    for path in artifact_files(outputs, validate_dir):
        logger.log_artifact(path, contract.ARTIFACT_DIR)
    logger.set_tags(contract.finding_tags(files.diagnosis["findings"]))
    run_files.log_prescription(logger, files.diagnosis.get("prescription") or [])
    if identity.kind == contract.KIND_TRAIN:  # trials are compared by their curves; their models are not kept
        # One batch shaped as summarise's predictions were: Keras reuses that traced predict
        # function, where a 2-row batch would retrace it (about a second of start-up work).
        outputs_example = model.predict(ds.x["val"][:256], batch_size=256, verbose=0)[:2]
        logger.log_keras_model(model, ds.x["val"][:2], outputs_example)
    if logger.offline and not offline_before_uploads:  # gone during the uploads: let sync finish the run
        write_json(outputs["run"], run_json(logger, record, fit_seconds))


def _resume_target(root: Path, backup: resume.Backup) -> tuple[str | None, bool]:
    """(the MLflow run to continue, whether to continue training from the backup).

    A backup made under these exact params, data and code is continued: in its run when
    the store has it; offline when the store is away (start_run then fails, or goes
    offline under train.tracking.offline_ok, keeping the run id for `losstrace sync`);
    in a new run when it was an offline training (no run id). Any other backup is
    discarded; its run, killed without a chance to say so, still reads RUNNING and is
    marked FAILED.
    """
    state = backup.state()
    run_id = (state or {}).get("run_id")
    matches = backup.matches(state)
    try:
        exists = store.run_exists(root, run_id)
    except LosstraceError:  # store away: keep the backup for when it is back
        return (run_id, True) if matches else (None, False)
    if matches and (exists or run_id is None):
        return (run_id if exists else None), True
    if exists:
        c = store.client(store.tracking_uri(root))
        if c.get_run(run_id).info.status == "RUNNING":
            c.set_terminated(run_id, "FAILED")
    backup.clear()
    return None, False


def _train_worker(p: Params, ds: Dataset, strategy, prepared: Path, root: Path) -> dict[str, Any]:
    """A non-chief multi_worker process: trains in lockstep with the chief, records nothing
    and writes its model copy to a temp dir (only the chief's outputs are published)."""
    import tempfile

    from losstrace.training import resume

    backup = None
    if p.train.resume:
        backup = resume.Backup(
            resume.backup_dir(root, distribute.worker_id()),
            resume.fingerprint(p, prepared) + builder_check.code_hash(p, root),
        )
        if not backup.matches(backup.state()):
            backup.begin(None)
    model, rec = run(p, ds, None, strategy=strategy, backup=backup)
    with tempfile.TemporaryDirectory(prefix="losstrace-worker-") as tmp:
        model.save(Path(tmp) / "model.keras")
    if backup is not None:
        backup.clear()
    distribute.barrier(strategy)  # stay in the cluster until the chief has recorded everything
    return {"run_id": None, "offline": None, "epochs": len(rec.epochs), "diagnosis": {"findings": []}}


def _context(p: Params, ds: Dataset, preds: dict[str, Any]) -> dict[str, Any]:
    y = ds.y["train"]
    names = sorted(ds.labels, key=ds.labels.get)
    multilabel = bool(ds.info["multilabel"])
    shares = run_files.class_shares(y, len(names), multilabel)
    val_shares = run_files.class_shares(ds.y["val"], len(names), multilabel) if len(ds.y["val"]) else None
    return {
        "n_classes": len(ds.labels),
        "class_shares": {names[i]: round(float(s), 6) for i, s in enumerate(shares)},
        **(
            {"val_class_shares": {names[i]: round(float(s), 6) for i, s in enumerate(val_shares)}}
            if val_shares is not None
            else {}
        ),
        "batch_size": p.train.batch_size,
        "train_rows": int(len(y)),
        "multilabel": bool(ds.info["multilabel"]),
        "input": ds.info["input"],
        "params": {k: v for k, v in params_mod.flatten(p).items()},
        "predictions": preds,
    }


def _data_findings(validate_dir: Path) -> list[Finding]:
    path = validate_dir / "results.json"
    if not path.exists():
        return []
    return [Finding(**f) for f in read_json(path).get("findings", [])]


def _weighted_imbalance(findings: list[Finding], p: Params, multilabel: bool) -> list[Finding]:
    """Train's `class_imbalance` is `info` once `train.class_weight: balanced` weighs the
    classes back to equal shares (single-label; Keras applies no class weights to
    multi-label data). A class with no training rows stays an error: no weight helps."""
    if p.train.class_weight != "balanced" or multilabel:
        return findings
    out = []
    for f in findings:
        if f.code == "class_imbalance" and f.where == "train" and f.evidence.get("min_count"):
            f = Finding(
                f.code,
                "info",
                {**f.evidence, "handled_by": "train.class_weight: balanced"},
                "nothing to change: train.class_weight: balanced weighs the classes equally",
                f.where,
            )
        out.append(f)
    return out
