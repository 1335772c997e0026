"""Evaluate stage: test-split metrics, confusion matrix, logged into the train run.

`metrics.json` holds only deterministic numbers (no run ids, no timestamps) so two
`dvc repro -f` give byte-identical files; the run id lives in reports/train/run.json.
It holds the headline numbers only, the ones `dvc metrics show` and `dvc metrics diff`
print as one row each; each class's precision, recall and support (3 columns per class)
go to `per_class.json`, a plain output.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from losstrace import params as params_mod
from losstrace.data import featurize
from losstrace.io import Staging, read_json, read_prepared, to_json, write_json
from losstrace.model.heads import as_probabilities, class_ids, predicted_ids
from losstrace.record import store, writer

# In the evaluate outputs while their upload to the run is pending (server away, offline_ok).
PENDING = "pending_upload.json"


ARTIFACTS = ("metrics.json", "per_class.json", "confusion.png")  # logged under evaluate/ in the train run


def mlflow_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The headline test metrics as the train run records them (also what `losstrace sync` uploads)."""
    return {f"test_{k}": metrics["test"][k] for k in ("accuracy", "macro_f1", "loss")}


def scores(y_true: np.ndarray, y_pred: np.ndarray, names: list[str]) -> dict[str, Any]:
    """Accuracy, macro-F1 and per-class precision/recall from integer class ids."""
    k = len(names)
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    tp = np.diag(cm).astype(float)
    precision = np.divide(tp, cm.sum(axis=0), out=np.zeros(k), where=cm.sum(axis=0) > 0)
    recall = np.divide(tp, cm.sum(axis=1), out=np.zeros(k), where=cm.sum(axis=1) > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(k), where=(precision + recall) > 0)
    present = cm.sum(axis=1) > 0
    return {
        "accuracy": float(tp.sum() / max(cm.sum(), 1)),
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "per_class": {
            names[i]: {
                "precision": round(float(precision[i]), 6),
                "recall": round(float(recall[i]), 6),
                "support": int(cm[i].sum()),
            }
            for i in range(k)
        },
        "confusion": cm,
    }


def label_scores(y_true: np.ndarray, hits: np.ndarray, names: list[str]) -> dict[str, Any]:
    """Multi-label: each label's precision/recall/F1 from its own yes/no decisions;
    macro-F1 over the labels present in y_true."""
    y_true = y_true.astype(bool)
    tp = (hits & y_true).sum(axis=0).astype(float)
    predicted, support = hits.sum(axis=0), y_true.sum(axis=0)
    precision = np.divide(tp, predicted, out=np.zeros(len(names)), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros(len(names)), where=support > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(len(names)), where=(precision + recall) > 0)
    present = support > 0
    return {
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "per_class": {
            names[i]: {
                "precision": round(float(precision[i]), 6),
                "recall": round(float(recall[i]), 6),
                "support": int(support[i]),
            }
            for i in range(len(names))
        },
    }


def run(
    model,
    x: np.ndarray,
    y: np.ndarray,
    labels: dict[str, int],
    multilabel: bool,
    batch_size: int,
    from_logits: bool = False,
) -> dict[str, Any]:
    names = sorted(labels, key=labels.get)
    results = model.evaluate(x, y, batch_size=batch_size, verbose=0, return_dict=True)
    probs = as_probabilities(model.predict(x, batch_size=batch_size, verbose=0), from_logits, multilabel)
    if multilabel:
        # Exact-set accuracy and per-label F1 at 0.5; confusion on each row's top label.
        hits = probs >= 0.5
        y_bin = y.astype(bool)
        per = scores(y.argmax(axis=1), probs.argmax(axis=1), names)
        per.update(label_scores(y_bin, hits, names))
        per["accuracy"] = float(np.mean((hits == y_bin).all(axis=1)))
    else:
        per = scores(class_ids(y).astype(int), predicted_ids(probs), names)
    per["loss"] = float(results["loss"])
    per["names"] = names
    return per


def plot_confusion(cm: np.ndarray, names: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    size = max(4.0, 0.45 * len(names) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(names)), names, rotation=90)
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    if len(names) <= 20:
        for i in range(len(names)):
            for j in range(len(names)):
                ax.text(
                    j,
                    i,
                    int(cm[i, j]),
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if cm[i, j] > cm.max() / 2 else "black",
                )
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)


def main(
    params_path: Path, prepared: Path, model_dir: Path, train_reports: Path, out_dir: Path, root: Path = Path(".")
) -> dict[str, Any]:
    import keras

    p = params_mod.load(params_path)
    info = read_json(prepared / "ingest.json")
    labels = read_json(prepared / "labels.json")
    fz = featurize.Featurizer.from_dict(read_json(model_dir / "featurizer.json"))
    test = read_prepared(prepared / "test.parquet")
    x, _ = fz.transform(test["x"])
    y = featurize.encode_labels(test["label"], labels, info["multilabel"], info["label_delimiter"], p.train.loss)
    model = keras.models.load_model(model_dir / "model.keras")
    predict_start = time.perf_counter()
    res = run(model, x, y, labels, info["multilabel"], p.evaluate.batch_size, p.train.from_logits)
    predict_seconds = time.perf_counter() - predict_start
    names = res["names"]
    metrics = {
        "test": {
            "accuracy": round(res["accuracy"], 6),
            "macro_f1": round(res["macro_f1"], 6),
            "loss": round(res["loss"], 6),
            "rows": int(len(test)),
        }
    }
    per_class = {"test": {"per_class": res["per_class"]}}
    # DVC's confusion template wants one row per sample: actual, predicted.
    cm = res["confusion"]
    rows = [(names[i], names[j]) for i in range(len(names)) for j in range(len(names)) for _ in range(cm[i, j])]
    with Staging(root) as stage:
        (stage.path(out_dir / "metrics.json")).write_text(to_json(metrics), encoding="utf-8")
        (stage.path(out_dir / "per_class.json")).write_text(to_json(per_class), encoding="utf-8")
        pd.DataFrame(rows, columns=["actual", "predicted"]).to_csv(stage.path(out_dir / "confusion.csv"), index=False)
        plot_confusion(cm, names, stage.path(out_dir / "confusion.png"))

    run_info = read_json(train_reports / "run.json")
    pending = out_dir / PENDING
    try:
        record(root, run_info, metrics, out_dir)
        pending.unlink(missing_ok=True)
    except Exception as e:
        if not store.is_outage(e):
            raise
        uri = store.tracking_uri(root)
        if not p.train.tracking.offline_ok:
            raise store.unreachable(
                uri, e, f"start it and rerun `dvc repro`; {out_dir} is written, only its upload failed"
            ) from None
        # Which run these outputs belong to: sync uploads them only to that run.
        write_json(pending, {"run_id": run_info["run_id"]})
        print(
            f"warning: MLflow at {store.redact(uri)} is unreachable: the test metrics stay in {out_dir}; "
            "`losstrace sync` uploads them to the run",
            file=sys.stderr,
        )
    # The stage's own work beside its cost; outside metrics.json, which stays byte-identical.
    return {**metrics, "predict_seconds": predict_seconds}


def record(root: Path, run_info: dict[str, Any], metrics: dict[str, Any], out_dir: Path) -> None:
    """Add the test metrics and evaluate's artifacts to the train run (nothing for an offline run:
    `losstrace sync` uploads them with the rest)."""
    with writer.reopen_run(root, run_info["run_id"], offline=run_info.get("offline", False)) as logger:
        logger.log_metrics(mlflow_metrics(metrics), step=0)
        for name in ARTIFACTS:
            logger.log_artifact(out_dir / name, "evaluate")
