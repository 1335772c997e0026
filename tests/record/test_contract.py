"""The run contract: a run written through it reads back whole, in a real SQLite MLflow store."""

from __future__ import annotations

import numpy as np
import pandas as pd

from losstrace.record import contract, reader, run_files, writer
from losstrace.record.contract import KIND_TAG


def _files(title: str) -> run_files.RunFiles:
    epochs = [
        {
            "epoch": e,
            "loss": 1.0 / (e + 1),
            "val_loss": 1.2 / (e + 1),
            "accuracy": 0.5,
            "val_accuracy": 0.4,
            "lr": 1e-3,
            "auc": 0.6,
        }
        for e in range(3)
    ]
    batches = [{"step": s, "epoch": s // 4, "batch": s % 4, "loss": 1.0 - s / 20, "size": 8} for s in range(12)]
    dynamics = [
        {"epoch": e, "layer": "lstm", "grad_norm": 0.1, "grad_norm_max": 0.2, "update_ratio": 0.01} for e in range(3)
    ]
    findings = [{"code": "noisy_loss", "severity": "warning", "evidence": {"message": "m"}, "suggestion": "s"}]
    return run_files.RunFiles(
        history=run_files.history_frame(epochs),
        batches=run_files.batches_frame(batches),
        dynamics=run_files.dynamics_frame(dynamics),
        lint=[],
        diagnosis={"run_id": "x", "findings": findings},
        context={"n_classes": 2, "batch_size": 8},
        title=title,
    )


def test_a_run_written_through_the_contract_reads_back_whole(tmp_path):
    files = _files("contract")
    folder = tmp_path / "files"
    folder.mkdir()
    tags = {KIND_TAG: contract.KIND_TRAIN, "env.tensorflow": "2.21.0", "device": "CPU"}
    with writer.start_run(tmp_path, "contract", tags) as logger:
        logger.log_params({"train.batch_size": 8})
        for path in files.write_into(folder):
            logger.log_artifact(path, contract.ARTIFACT_DIR)
    rec = reader.load_record(logger.run_id, tmp_path)
    assert rec.run_id == logger.run_id and rec.name == "contract"
    assert rec.params == {"train.batch_size": "8"}
    assert rec.env == {"tensorflow": "2.21.0", "device": "CPU"}
    assert list(rec.history.columns[:6]) == list(contract.HISTORY_COLUMNS) and "auc" in rec.history
    np.testing.assert_allclose(rec.history["loss"], files.history["loss"])
    pd.testing.assert_frame_equal(rec.batches, files.batches, check_dtype=False)
    assert list(rec.context["grad_norms"]["layer"]) == ["lstm"] * 3
    assert [f["code"] for f in rec.findings] == ["noisy_loss"]
    assert sorted(p.name for p in folder.iterdir()) == sorted(contract.RUN_FILES)


def test_history_frame_puts_contract_columns_first_and_fills_missing_ones():
    frame = run_files.history_frame([{"epoch": 0, "loss": 1.0, "f1": 0.3}])
    assert list(frame.columns) == [*contract.HISTORY_COLUMNS, "f1"]
    assert np.isnan(frame["val_loss"][0])


def test_environment_and_finding_tags_round_trip():
    tags = {"env.keras": "3.10", "device": "GPU:x", "determinism": "op", "other": "1"}
    assert contract.environment_of(tags) == {"keras": "3.10", "device": "GPU:x", "determinism": "op"}
    assert contract.finding_tags([{"code": "plateau", "severity": "warning"}]) == {"finding.plateau": "warning"}


def _png_width(path) -> int:
    return int.from_bytes(path.read_bytes()[16:20], "big")  # the IHDR chunk's width


def test_curves_gain_a_noise_scale_panel_only_when_it_was_measured(tmp_path):
    files = _files("t")
    plain, measured = tmp_path / "plain.png", tmp_path / "measured.png"
    run_files.plot_curves(files.history, files.batches, plain, "t")
    noise = {contract.NOISE_SCALE: [20.0, np.nan, 60.0], contract.NOISE_TRACE: [2.0, 1.9, 1.8]}
    run_files.plot_curves(files.history.assign(**noise, **{contract.NOISE_SIGNAL: 0.1}), files.batches, measured, "t")
    assert _png_width(plain) == 1100  # loss and accuracy, as before
    assert _png_width(measured) == 1600  # a third panel: B_simple per epoch beside the batch size
