"""The files every recorded run carries, built from a training's records and written in one go.

The train stage writes them into reports/train/ (and logs them), `losstrace.keras`
writes them into a temp folder and logs them: the same frames, the same columns, the
same JSON, so `diagnose` and `diff` read a user's own run like a pipeline run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from losstrace.io import to_json
from losstrace.model import heads
from losstrace.record import contract


@dataclass
class RunFiles:
    """One training's records, as the run contract names them."""

    history: pd.DataFrame
    batches: pd.DataFrame
    dynamics: pd.DataFrame
    lint: list[dict[str, Any]]
    diagnosis: dict[str, Any]
    context: dict[str, Any]
    title: str

    def write(self, paths: dict[str, Path]) -> None:
        """Write each file to `paths[<contract name>]` (staged paths, for the pipeline)."""
        self.history.to_csv(paths[contract.HISTORY], index=False)
        self.batches.to_csv(paths[contract.BATCHES], index=False)
        self.dynamics.to_csv(paths[contract.DYNAMICS], index=False)
        paths[contract.LINT].write_text(to_json({"findings": self.lint}), encoding="utf-8")
        paths[contract.DIAGNOSIS].write_text(to_json(self.diagnosis), encoding="utf-8")
        paths[contract.CONTEXT].write_text(to_json(self.context), encoding="utf-8")
        plot_curves(self.history, self.batches, paths[contract.CURVES], self.title)

    def write_into(self, folder: Path) -> list[Path]:
        """Write every file into `folder` under its contract name; returns the paths."""
        paths = {name: folder / name for name in contract.RUN_FILES}
        self.write(paths)
        return list(paths.values())


def log_prescription(logger, prescription: list[dict[str, Any]]) -> None:
    """The run's reconciled changes as losstrace/prescription.json and a searchable tag."""
    import tempfile

    logger.set_tags(contract.prescription_tags(prescription))
    with tempfile.TemporaryDirectory(prefix="losstrace-rx-") as tmp:
        path = Path(tmp) / contract.PRESCRIPTION
        path.write_text(to_json(prescription), encoding="utf-8")
        logger.log_artifact(path, contract.ARTIFACT_DIR)


def history_frame(epochs: list[dict]) -> pd.DataFrame:
    """Per-epoch rows → the history frame: the contract's columns first, any other metric after."""
    frame = pd.DataFrame(epochs)
    columns = list(contract.HISTORY_COLUMNS)
    for col in columns:
        if col not in frame:
            frame[col] = np.nan
    return frame[columns + [c for c in frame.columns if c not in columns]]


def batches_frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=list(contract.BATCH_COLUMNS))


def dynamics_frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=list(contract.DYNAMICS_COLUMNS))


def class_shares(y: np.ndarray, n_classes: int, multilabel: bool) -> np.ndarray:
    """Each class's share of the rows (multi-label: each label's share of rows carrying it)."""
    if multilabel:
        return y.mean(axis=0)
    ids = heads.class_ids(y)
    return np.bincount(ids.astype(int), minlength=n_classes) / max(len(ids), 1)


def prediction_stats(probs: np.ndarray, names: list[str]) -> dict[str, Any]:
    """How confident and how varied the validation predictions are (saturation, collapse).

    probs: (rows, outputs) probabilities; a single sigmoid column is a two-class head."""
    top = np.concatenate([1 - probs, probs], axis=1) if probs.shape[1] == 1 else probs
    pred = top.argmax(axis=1)
    shares = np.bincount(pred, minlength=top.shape[1]) / max(len(pred), 1)
    max_prob = top.max(axis=1)
    pinned = np.mean((probs > 0.99) | (probs < 0.01))
    out = {
        "mean_max_prob": float(max_prob.mean()),
        "max_prob_share_above_0_99": float(np.mean(max_prob > 0.99)),
        "pinned_output_share": float(pinned),
        "pred_class_shares": {names[i] if i < len(names) else str(i): round(float(s), 6) for i, s in enumerate(shares)},
    }
    if probs.shape[1] > 1:  # what a row's outputs add up to: 1 for a distribution over the classes
        out["mean_output_sum"] = float(probs.sum(axis=1).mean())
    return out


def fingerprint_params(fp: dict[str, Any]) -> dict[str, Any]:
    """Headline data facts as params, so the MLflow UI's compare view shows data changes."""
    out = {"data.label_map_hash": fp.get("label_map_hash", "")}
    for split, d in fp.items():
        if isinstance(d, dict) and "rows" in d:
            out[f"data.{split}.rows"] = d["rows"]
            out[f"data.{split}.content_hash"] = d.get("content_hash", "")
            out[f"data.{split}.ordered_hash"] = d.get("ordered_hash", "")
            out[f"data.{split}.clustered"] = d.get("order", {}).get("clustered", "")
    return out


def plot_curves(history: pd.DataFrame, batches: pd.DataFrame, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # A third panel only when the noise scale was measured: unmeasured runs draw as before.
    measured = contract.NOISE_SCALE in history and bool(np.isfinite(history[contract.NOISE_SCALE]).any())
    fig, axes = plt.subplots(1, 3 if measured else 2, figsize=(16 if measured else 11, 4))
    ax1, ax2 = axes[0], axes[1]
    if not batches.empty:
        per_epoch = batches["step"] / max(batches.groupby("epoch")["batch"].max().max() + 1, 1)
        ax1.plot(per_epoch + 1, batches["loss"], color="0.75", lw=0.7, label="batch loss")
    ax1.plot(history["epoch"] + 1, history["loss"], label="train loss")
    ax1.plot(history["epoch"] + 1, history["val_loss"], label="val loss")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("loss")
    ax1.legend()
    ax2.plot(history["epoch"] + 1, history["accuracy"], label="train accuracy")
    ax2.plot(history["epoch"] + 1, history["val_accuracy"], label="val accuracy")
    ax2.set_xlabel("epoch")
    ax2.legend()
    if measured:
        _plot_noise_scale(axes[2], history, batches)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)


def _plot_noise_scale(ax, history: pd.DataFrame, batches: pd.DataFrame) -> None:
    """B_simple per measured epoch beside the batch size: far below it, a larger batch pays."""
    scale = pd.to_numeric(history[contract.NOISE_SCALE], errors="coerce")
    shown = np.isfinite(scale) & (scale > 0)
    ax.plot(history["epoch"][shown] + 1, scale[shown], marker="o", ms=3, label="noise scale B_simple")
    if not batches.empty:
        ax.axhline(float(batches["size"].max()), color="0.4", ls="--", lw=1, label="batch size")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("samples")
    ax.legend()
