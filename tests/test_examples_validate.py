"""Every example passes validate on the full data it names: real ingest, then real validate
(the stage functions `dvc repro` runs, without DVC's overhead). The UCI sentences repeat a
few short inputs ("Great phone!"): ingest must keep each in one split, or validate stops
on train_val_leakage. Examples whose data the user supplies are skipped without it."""

from __future__ import annotations

from pathlib import Path

import pytest

from losstrace import params
from losstrace.data.bundled import BUNDLED
from losstrace.stages import ingest, validate

REPO = Path(__file__).resolve().parents[1]


def _distinct_data_checks() -> list[Path]:
    """One example per distinct (seed, data, validate) settings: the others would ingest and
    validate the very same rows (the three frozen-vector files share word_emotion's data)."""
    seen, out = set(), []
    for path in sorted((REPO / "examples").glob("*.yaml")):
        p = params.load(path)
        key = (p.base, p.data, p.validate)
        if key not in seen:
            seen.add(key)
            out.append(path)
    return out


def _has_data(source: str) -> bool:
    return source in BUNDLED or any(REPO.glob(source))


@pytest.mark.slow
@pytest.mark.parametrize("example", _distinct_data_checks(), ids=lambda p: p.name)
def test_example_passes_validate_on_its_full_data(example, tmp_path):
    p = params.load(example)
    if not _has_data(p.data.source):
        pytest.skip(f"{p.data.source} is the user's file, not shipped")
    prepared = tmp_path / "prepared"
    summary = ingest.main(example, prepared, REPO)
    assert summary["rows_rejected"] == 0 and sum(summary["splits"].values()) == summary["rows_read"]
    assert validate.main(prepared, tmp_path / "validate", example) == 0  # an error finding raises
