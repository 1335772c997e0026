"""Recording a user's own `model.fit` as a losstrace run: the work behind `losstrace.keras`.

At fit start: describe the data given to fit (fingerprint, label order, balance), read
the compiled model as params and lint it, open the MLflow run. During fit: the same
`RecordingCallback` as the pipeline (true batch losses, gradient norms in the train
step, per-epoch logging). At fit end: the same run files, the diagnosis, artifacts and
tags, and a short summary on stderr. Every step that fails costs one warning line and
the recording, never the user's training (`ScriptRun.guard`).
"""

from __future__ import annotations

import contextlib
import math
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from losstrace.findings import Finding
from losstrace.params import Params
from losstrace.record import contract, environment, run_files, store, writer
from losstrace.script import fit_data, model_facts, outputs
from losstrace.training import step_hook
from losstrace.training.recorder import log_epoch

MAX_PREDICTION_ROWS = 4096  # validation rows predicted for the saturation/collapse statistics
OFFLINE_DIR = Path("losstrace-runs")  # where a run's files stay when the store is away


_PUBLISHING: list[threading.Thread] = []  # runs whose files are still being written and uploaded


def flush() -> None:
    """Wait until every finished fit's run is written, uploaded and ended."""
    while _PUBLISHING:
        _PUBLISHING.pop(0).join()


def warn(message: str) -> None:
    print(f"losstrace: warning: {message}", file=sys.stderr)


class ScriptRun:
    """One recorded fit of a user's model."""

    def __init__(
        self,
        model,
        fit: model_facts.FitArgs,
        data: fit_data.FitData,
        run_name: str | None,
        dynamics: bool,
        log_model: bool,
        summary: bool,
    ) -> None:
        self.model, self.fit, self.data = model, fit, data
        self.run_name, self.dynamics, self.log_model, self.summary = run_name, dynamics, log_model, summary
        self.broken: str | None = None
        self.logger: writer.RunLogger | None = None
        self.val_predictions = None  # a training.val_predictions hook, when fit validates
        self.gaps: list[tuple[str, str, str]] = []  # (what, why, how to get it): not recorded for this fit
        self._stack = contextlib.ExitStack()
        self._started = time.perf_counter()
        self._opening: _Background | None = None  # the run being opened beside the training
        self._logged = 0  # epochs logged into the run
        self.name, self.params = run_name or "", {}
        self.fingerprint, self.data_findings = None, []
        self._users_run = False  # fit ran inside the user's own MLflow run (its name is theirs)
        self._renamed = False  # the name was made again once the batch size was known

    @contextlib.contextmanager
    def guard(self, step: str):
        """Run one recording step; a failure ends the recording with one warning line."""
        if self.broken:
            yield False
            return
        try:
            yield True
        except Exception as e:  # the user's training must go on, whatever went wrong here
            self.broken = f"{step}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            warn(f"recording stopped ({self.broken}); training goes on unrecorded")
            with contextlib.suppress(Exception):  # ending the run is best effort here
                self._close(ok=False)

    # ------------------------------------------------------------------ start

    def start(self, inputs: Any = None) -> None:
        """Describe the fit, lint the model, open the run and log what is known before training.

        inputs: symbolic tensors shaped like fit's inputs, to trace a subclassed model's call."""
        with outputs.read(self.model, inputs) as out:
            self.n_outputs = out.units
            if out.note:
                self.gaps.append(
                    (
                        "output_layer",
                        f"{self.model.name}'s output layer ({out.note}): no activation/loss check, "
                        "train.output_activation unknown",
                        "build the call from Keras layers and keras.ops (or start the model with keras.Input)",
                    )
                )
            loss = _loss_name(self.model)
            self.data.regression = fit_data.is_regression(loss or model_facts.loss_label(self.model), self.data)
            self.n_classes = 0 if self.data.regression else fit_data.n_classes(self.data, self.n_outputs or 0)
            self.multilabel = self._multilabel()
            self.flat = model_facts.model_params(self.model, self.fit, loss, out.activation)
            self.p = model_facts.as_params(self.flat, self.n_classes, self.multilabel)
            self.lint = self._lint((out.layer, out.units) if out.layer is not None else None)
        self.tags = {
            contract.KIND_TAG: contract.KIND_SCRIPT,
            "losstrace.script": Path(sys.argv[0] or "python").name,
            "device": _device(),
            **environment.env_tags(),
        }
        if not step_hook.keras_train_step(self.model):
            warn(
                f"{self.model.name} has its own train_step: the per-batch loss is read from its 'loss' metric and "
                "the gradient norms from model.optimizer, where it uses them (the run's not_recorded finding "
                "names what it did not give)"
            )
        # Two git subprocesses (status can take a while in a large repository): they run
        # beside the training, and their tags are set with the run's files after fit.
        self._git = _Background(environment.git_tags, Path.cwd(), name="losstrace-git", fallback={})
        # The fingerprint and the run's opening (MLflow's import and store on a process's first
        # fit: seconds; a run and its params after: tens of ms) run beside the training too,
        # on what the model and fit settings were at its start. Epochs that end before the run
        # is open are logged when it is (`log_epochs`); none is lost.
        where = self._where()
        store.quiet_env()
        self._opening = _Background(self._open, Path.cwd(), *where, name="losstrace-open")
        if self.data.val is not None and self.n_outputs and not self.data.regression and _one_replica(self.model):
            from losstrace.training.val_predictions import ValidationPredictions

            from_logits = bool(getattr(getattr(self.model, "loss", None), "from_logits", False))
            self.val_predictions = ValidationPredictions(self.model, self.n_outputs, from_logits, self.multilabel)

    def detach(self) -> None:
        """Remove what start() hooked into the model (fit has ended)."""
        if self.val_predictions is not None:
            self.val_predictions.detach()

    def _multilabel(self) -> bool:
        if self.data.train is None or self.data.regression:
            return False
        return fit_data.label_ids(self.data.train.y)[1]

    def _lint(self, output) -> list[Finding]:
        from losstrace.model import builder, lint, model_lint

        x = self.data.train.x if self.data.train is not None else None
        kind, padding, length, channels = "numeric", "none", None, 1  # unknown input: no padding claim
        if x is not None:
            kind = fit_data.input_kind(x)
            _, padding = fit_data.lengths_and_padding(x)
            length = int(x.shape[1]) if x.ndim > 1 else None
            channels = int(x.shape[2]) if x.ndim > 2 else 1
        embedding = next((lyr for lyr in model_lint.leaf_layers(self.model) if type(lyr).__name__ == "Embedding"), None)
        spec = builder.InputSpec(
            input_kind=kind,
            vocab_size=int(getattr(embedding, "input_dim", 0) or 0),
            sequence_length=length,
            channels=channels,
            n_classes=self.n_classes,
            multilabel=self.multilabel,
            output_units=self.n_outputs or 0,
            padding=padding,
            train=self.p.train,
        )
        found = model_lint.run(self.model, spec, self.p, output)
        if self.fit.batch_size is not None and self.data.train_rows:
            found += lint.schedule_checks(self.p, self.data.train_rows)
        if self.fit.validation != "none":  # without validation a training metric is all there is to watch
            found += lint.callback_checks(model_facts.callback_settings(self.flat))
        return found + _pre_padding_notes(self.model, x, padding)

    def _where(self) -> tuple[str, str | None]:
        """(the store, the user's active MLflow run id or None), read where the user's MLflow state is."""
        active = _active_mlflow_run()
        if active is not None:
            return _mlflow_uri(), active.info.run_id
        return _mlflow_uri(default=store.tracking_uri(Path.cwd())), None

    def _open(self, cwd: Path, uri: str, active_id: str | None) -> writer.RunLogger:
        """Fingerprint the data, name the run, and log into the active MLflow run if there is
        one, else into a run of our own. Runs on a thread beside the training."""
        self.fingerprint, self.data_findings = fit_data.describe(self.data, Params().validate, self.fit.shuffle is True)
        params = {**self.flat, **model_facts.diagnose_params_flat()}
        if self.fit.batch_size is None:  # a dataset or generator: logged once its first batch shows it
            params.pop("train.batch_size", None)
        if self.fingerprint is not None:
            params.update(run_files.fingerprint_params(self.fingerprint))
        self.name, self.params = self.run_name or _run_name(self.model, self.flat, params), params
        self._users_run = active_id is not None
        if active_id is not None:
            logger = writer.RunLogger(store.client(uri), active_id, uri, resilient=True)
        else:
            run = writer.start_run(
                cwd,
                self.name,
                self.tags,
                resilient=True,
                offline_ok=True,
                uri=uri,
                offline_note=f"the run's files go to {OFFLINE_DIR / self.name}/ when fit ends",
            )
            logger = self._stack.enter_context(run)
        logger.log_params(params)
        return logger

    def opened(self, wait: bool) -> writer.RunLogger | None:
        """The run's logger once it is open: None while it opens, unless `wait`. Raises what
        opening it raised (the caller's guard then stops the recording)."""
        if self.logger is None and self._opening is not None and (wait or self._opening.done()):
            self.logger = self._opening.result()
        return self.logger

    def log_epochs(self, rec, wait: bool = False) -> None:
        """Log the epochs that ended since the last call, once the run is open."""
        logger = self.opened(wait)
        if logger is None:
            return
        for row in rec.epochs[self._logged :]:
            log_epoch(logger, rec, row["epoch"])
        self._logged = len(rec.epochs)

    # ------------------------------------------------------------------ end

    def finish(self, rec, batch_losses_untracked: bool = False, batch_sizes_counted: bool = True) -> None:
        """Diagnose, write and log the run's files, tag the findings, end the run, print a summary.

        batch_losses_untracked: the model's own train step left Keras' loss tracker still.
        batch_sizes_counted: the batches' row counts were counted, not assumed."""
        self.log_epochs(rec, wait=True)
        if batch_sizes_counted:
            self._learn_batch_size(rec)
        self._own_step_gaps(rec, batch_losses_untracked)
        from losstrace.explain.diagnose import diagnose_training, merge_findings
        from losstrace.explain.prescription import with_prescription
        from losstrace.explain.symptoms import noise_scale_context

        history = _canonical_metrics(run_files.history_frame(rec.epochs))
        batches = run_files.batches_frame(rec.batches)
        dynamics = run_files.dynamics_frame(rec.dynamics)
        context = self._context()
        context.update(noise_scale_context(history, batches, self.p.diagnose.level_floor_share))
        lr = model_facts.learning_rate(self.model) or 1e-3
        curve = diagnose_training(history, batches, dynamics, context, self.p.diagnose, rec.divergence, lr)
        diagnosis = with_prescription(
            {**merge_findings(self.data_findings, self.lint + self._gap_notes(), curve), "run_id": self.logger.run_id},
            context,
        )
        files = run_files.RunFiles(
            history, batches, dynamics, [f.to_dict() for f in self.lint], diagnosis, context, self.name
        )
        if self.log_model:  # MLflow's fluent API: on the user's thread, not beside it
            self.logger.log_keras_model(self.model, self._example())
        if self.summary:
            print(summary_text(self.name, self.logger, diagnosis, self.flat), file=sys.stderr)
        # Plotting and uploading need nothing more from the model: they run after fit has
        # returned, on a thread Python waits for at exit (`flush()` waits for it at once).
        thread = threading.Thread(target=self._publish, args=(files, diagnosis), name="losstrace-publish")
        _PUBLISHING.append(thread)
        thread.start()

    def _learn_batch_size(self, rec) -> None:
        """A dataset, PyDataset or generator does not say its batch size before fit; its first
        batch's rows do. The batch advice and the run's params and name then carry it."""
        if self.fit.batch_size is not None or not rec.batches or rec.batches[0]["size"] < 1:
            return
        # With steps_per_execution k, Keras reports once per k steps: the first row holds k batches.
        per_call = int(getattr(self.model, "steps_per_execution", 1) or 1)
        if rec.batches[0]["size"] % per_call:
            return
        size = int(rec.batches[0]["size"]) // per_call
        self.fit.batch_size = self.flat["train.batch_size"] = self.params["train.batch_size"] = size
        self.p = model_facts.as_params(self.flat, self.n_classes, self.multilabel)
        self.logger.log_params({"train.batch_size": size})
        if not self.run_name and not self._users_run:
            self.name = _run_name(self.model, self.flat, self.params)
            self._renamed = True

    def _publish(self, files: run_files.RunFiles, diagnosis: dict[str, Any]) -> None:
        try:
            self._log_files(files)
            renamed = {"mlflow.runName": self.name} if self._renamed else {}
            self.logger.set_tags({**self._git.result(), **contract.finding_tags(diagnosis["findings"]), **renamed})
            run_files.log_prescription(self.logger, diagnosis["prescription"])
            self._close(ok=True)
        except Exception as e:  # after fit: a warning, never an exception in the user's process
            warn(f"could not finish run {self.logger.run_id} ({type(e).__name__}: {e})")
            with contextlib.suppress(Exception):
                self._close(ok=False)

    def _own_step_gaps(self, rec, batch_losses_untracked: bool) -> None:
        """What a model's own train_step did not expose: the per-batch loss (no "loss" tracker
        updated), the gradient norms (no gradient through model.optimizer)."""
        if batch_losses_untracked:
            self.gaps.append(
                (
                    "batch_loss",
                    "its train_step updates no 'loss' metric, so its logged loss cannot be told from a running "
                    "mean: no true per-batch loss (batch noise is judged from epochs only)",
                    "update a keras.metrics.Mean(name='loss') with each batch's loss in train_step "
                    "and report its result as 'loss'",
                )
            )
        if self.dynamics and rec.dynamics and not any(math.isfinite(d["grad_norm"]) for d in rec.dynamics):
            self.gaps.append(
                (
                    "gradient_norms",
                    "no gradient reached model.optimizer.apply (or apply_gradients): no per-layer gradient norms",
                    "apply the gradients with self.optimizer.apply_gradients(...) in train_step",
                )
            )

    def _gap_notes(self) -> list[Finding]:
        """One info finding naming what this fit could not have recorded, and how to get it."""
        if not self.gaps:
            return []
        return [
            Finding(
                "not_recorded",
                "info",
                {"message": "; ".join(why for _, why, _ in self.gaps), "missing": [what for what, _, _ in self.gaps]},
                "; ".join(dict.fromkeys(how for _, _, how in self.gaps)),
            )
        ]

    def _context(self) -> dict[str, Any]:
        names = [str(i) for i in range(self.n_classes)]
        context: dict[str, Any] = {
            "n_classes": self.n_classes,
            "batch_size": self.fit.batch_size,
            "multilabel": self.multilabel,
            "params": dict(self.flat),
        }
        if self.data.regression:  # no classes: no class shares, chance levels or probability statistics
            context["task"] = "regression"
        if self.data.train is not None:
            context["train_rows"] = self.data.train_rows
            context["input"] = fit_data.input_kind(self.data.train.x)
        if self.data.train is not None and not self.data.regression:
            context["class_shares"] = fit_data.shares(self.data.train.y, names)
        if self.data.val is not None and len(self.data.val.x) and not self.data.regression:
            context["val_class_shares"] = fit_data.shares(self.data.val.y, names)
            context["predictions"] = self._prediction_stats(names)
        return context

    def _prediction_stats(self, names: list[str]) -> dict[str, Any]:
        import keras

        from losstrace.model.heads import as_probabilities

        if self.val_predictions is not None:  # Keras' own validation pass saw them
            seen = self.val_predictions.stats(names)
            if seen is not None:
                return seen
        x = self.data.val.x[:MAX_PREDICTION_ROWS]
        # Direct calls, not model.predict: predict traces a function of its own (~0.3 s),
        # more than these few hundred rows cost to run eagerly.
        chunks = [keras.ops.convert_to_numpy(self.model(x[i : i + 512], training=False)) for i in range(0, len(x), 512)]
        outputs = np.concatenate(chunks) if chunks else np.zeros((0, self.n_outputs or 1))
        from_logits = bool(getattr(getattr(self.model, "loss", None), "from_logits", False))
        return run_files.prediction_stats(as_probabilities(outputs, from_logits, self.multilabel), names)

    def _example(self):
        split = self.data.val or self.data.train
        return None if split is None else split.x[:2]

    def _log_files(self, files: run_files.RunFiles) -> None:
        """Upload the run's files through a temporary folder; with the store away they stay
        in ./losstrace-runs/<run name>/ instead, for the user to keep or sync."""
        if not self.logger.offline:
            with tempfile.TemporaryDirectory(prefix="losstrace-run-") as tmp:
                for path in self._write_files(files, Path(tmp)):
                    self.logger.log_artifact(path, contract.ARTIFACT_DIR)
        if self.logger.offline:  # away from the start, or gone during the upload: keep it all on disk
            kept = OFFLINE_DIR / self.name
            self._keep(files, kept)
            warn(f"MLflow was unreachable: this run's files are in {kept}/ (`losstrace diagnose {kept}` reads them)")

    def _keep(self, files: run_files.RunFiles, folder: Path) -> None:
        """The run's files and, as the store would hold them, its params and tags."""
        from losstrace.io import to_json

        self._write_files(files, folder)
        (folder / contract.OFFLINE_PARAMS).write_text(
            to_json({k: str(v) for k, v in self.params.items()}), encoding="utf-8"
        )
        tags = {**self.tags, **self._git.result(), contract.RUN_NAME_TAG: self.name}
        (folder / contract.OFFLINE_TAGS).write_text(to_json({k: str(v) for k, v in tags.items()}), encoding="utf-8")

    def _write_files(self, files: run_files.RunFiles, folder: Path) -> list[Path]:
        folder.mkdir(parents=True, exist_ok=True)
        paths = files.write_into(folder)
        if self.fingerprint is not None:
            from losstrace.io import to_json

            (folder / contract.FINGERPRINT).write_text(to_json(self.fingerprint), encoding="utf-8")
            paths.append(folder / contract.FINGERPRINT)
        return paths

    def close_failed(self) -> None:
        self.broken = "fit raised"
        with contextlib.suppress(Exception):  # a run that could not open has nothing to end
            self.opened(wait=True)
        with contextlib.suppress(Exception):
            self.logger.flush()
        self._stack.__exit__(RuntimeError, RuntimeError("fit raised"), None)

    def _close(self, ok: bool) -> None:
        """End the run this recording opened (a run the user opened stays theirs, open)."""
        with contextlib.suppress(Exception):  # a run that could not open has nothing to end
            self.opened(wait=True)
        try:
            if self.logger is not None:
                self.logger.flush()
        finally:
            if ok:
                self._stack.close()
            else:  # start_run's context ends the run FAILED when it sees an exception
                self._stack.__exit__(RuntimeError, RuntimeError("recording failed"), None)


def summary_text(name: str, logger, diagnosis: dict[str, Any], params: dict[str, Any]) -> str:
    """A few lines: the run, each warning/error, the reconciled changes as code, and the command for the rest."""
    from losstrace.explain.code_advice import code_advice

    serious = [f for f in diagnosis["findings"] if f["severity"] in ("error", "warning")]
    where = f"offline ({logger.offline})" if logger.offline else f"run {logger.run_id}"
    lines = [f"losstrace: {name}: {where}: " + (f"{len(serious)} problem(s)" if serious else "no problems found")]
    lines += [f"  {f['severity']}: {f['code']}" for f in serious[:6]]
    advice = code_advice(diagnosis.get("prescription") or [], params)
    lines += [f"  try: {a['code']}" for a in advice]
    if logger.run_id:
        lines.append(f"  why and evidence: losstrace diagnose {logger.run_id}")
    return "\n".join(lines)


def _pre_padding_notes(model, x, padding: str) -> list[Finding]:
    """Pre-padded input without a mask: the final state reads the real steps last, but the
    recurrent layer first runs through every padding step, which slows early learning."""
    from losstrace.model import model_lint

    if x is None or padding != "pre" or x.ndim < 2:
        return []
    lengths, _ = fit_data.lengths_and_padding(x)
    share = float(1.0 - lengths.mean() / x.shape[1])
    out = []
    for layer, wrapper in model_lint.recurrent_layers(model):
        outer = wrapper or layer
        if model_lint._masked(outer) or share < 0.25:
            continue
        out.append(
            Finding(
                "unmasked_padding",
                "info",
                {
                    "message": f"{outer.name} reads pre-padded input with no mask: {share:.0%} of its steps are padding, "
                    "run before the real ones (harmless to the final state, but slower and a longer start)",
                    "padding_share": round(share, 4),
                    "layer": outer.name,
                    "keys": [f"layer {outer.name}"],
                },
                "Embedding(mask_zero=True) (or a Masking layer) so padding steps are skipped",
            )
        )
    return out


def _canonical_metrics(history):
    """`accuracy` / `val_accuracy` filled from the name the script's metric has in Keras' logs
    (`acc`, `categorical_accuracy`, ...), which the rules read; the original columns stay."""
    from losstrace.record.foreign import METRIC_NAMES

    for canonical in ("accuracy", "val_accuracy"):
        if history[canonical].notna().any():
            continue
        alias = next((c for c in history.columns if c != canonical and METRIC_NAMES.get(c) == canonical), None)
        if alias is not None:
            history[canonical] = history[alias]
    return history


def _loss_name(model) -> str | None:
    from losstrace.model import builder

    return builder.compiled_loss_name(model)


def _run_name(model, flat: dict[str, Any], params: dict[str, Any]) -> str:
    import hashlib
    import json

    digest = hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:6]
    lr = flat.get("train.learning_rate")
    lr_part = f"-lr{lr:g}" if isinstance(lr, float) and math.isfinite(lr) else ""
    bs = flat.get("train.batch_size")
    return f"{model.name}-bs{bs if bs != '' else 'auto'}{lr_part}-{digest}"


_NOTHING = object()


class _Background:
    """`fn(*args)` on a daemon thread; `result()` waits for its value, and raises what it
    raised (or gives `fallback` instead, when one is given)."""

    def __init__(self, fn, *args, name: str, fallback: Any = _NOTHING) -> None:
        self._value: Any = fallback
        self._error: BaseException | None = None

        def run() -> None:
            try:
                self._value = fn(*args)
            except Exception as e:  # handed to whoever waits for the result
                if fallback is _NOTHING:
                    self._error = e

        self._thread = threading.Thread(target=run, name=name, daemon=True)
        self._thread.start()

    def done(self) -> bool:
        return not self._thread.is_alive()

    def result(self) -> Any:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value


def _one_replica(model) -> bool:
    """No tf.distribute: its replicas would each sum their own share of the predictions."""
    import tensorflow as tf

    strategy = model.distribute_strategy
    return type(strategy) is type(tf.distribute.get_strategy()) and strategy.num_replicas_in_sync == 1


def _device() -> str:
    import tensorflow as tf

    return "GPU" if tf.config.list_logical_devices("GPU") else "CPU"


def _active_mlflow_run():
    mlflow = sys.modules.get("mlflow")
    return mlflow.active_run() if mlflow is not None else None


def _mlflow_uri(default: str | None = None) -> str:
    """The URI the user's own MLflow calls use when they set one; else `default`."""
    mlflow = sys.modules.get("mlflow")
    if mlflow is not None:
        from mlflow.tracking._tracking_service import utils

        if utils._tracking_uri is not None or default is None:
            return mlflow.get_tracking_uri()
    return default
