"""Ingest + validate scaling on generated text: 10k, 100k and 1M rows.

The rows look like the sentences users bring: 3–25 words drawn from the NRC emotion
lexicon (shipped in nrclex, so no download), with three labels. Each size runs the
real console script twice (`losstrace ingest`, then `losstrace validate`) in its own
temp project, and the peak memory of each process comes from the kernel (wait4).
Target: linear time, and 1M rows within 2 GB.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from .common import BIN, measure

LABELS = np.array(["negative", "neutral", "positive"])
LABEL_SHARES = (0.4, 0.2, 0.4)
MIN_WORDS, MAX_WORDS = 3, 25
CHUNK = 100_000  # rows generated and written at a time, so generating 1M rows stays small


def lexicon_words() -> np.ndarray:
    """The lexicon's words (single tokens only: a TSV row must stay one line, no tabs)."""
    data = json.loads((resources.files("nrclex.data") / "nrc_en.json").read_text(encoding="utf-8"))
    return np.array(sorted(w for w in data if w.isalpha()))


def write_tsv(path: Path, rows: int, seed: int = 0) -> None:
    """A `text<TAB>label` file with a header, `rows` data lines of random sentences."""
    rng = np.random.default_rng(seed)
    words = lexicon_words()
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("text\tlabel\n")
        for start in range(0, rows, CHUNK):
            n = min(CHUNK, rows - start)
            lengths = rng.integers(MIN_WORDS, MAX_WORDS + 1, n)
            tokens = words[rng.integers(0, len(words), int(lengths.sum()))]
            labels = LABELS[rng.choice(len(LABELS), n, p=LABEL_SHARES)]
            bounds = np.concatenate([[0], np.cumsum(lengths)])
            fh.writelines(f"{' '.join(tokens[bounds[i] : bounds[i + 1]])}\t{labels[i]}\n" for i in range(n))


def _project(work: Path, rows: int) -> Path:
    work.mkdir(parents=True, exist_ok=True)
    write_tsv(work / "sentences.tsv", rows)
    (work / "params.yaml").write_text(yaml.safe_dump({"data": {"source": "sentences.tsv"}}), encoding="utf-8")
    return work


def run_size(work: Path, rows: int) -> dict[str, Any]:
    """Both stages on one generated file; seconds add up, peak memory is the larger one."""
    root = _project(work, rows)
    losstrace = str(BIN / "losstrace")
    stages = {
        "ingest": measure([losstrace, "ingest", "--params", "params.yaml", "--out", "data/prepared"], root),
        "validate": measure(
            [
                losstrace,
                "validate",
                "--params",
                "params.yaml",
                "--prepared",
                "data/prepared",
                "--out",
                "reports/validate",
            ],
            root,
        ),
    }
    for name, m in stages.items():
        if m.returncode != 0:
            raise RuntimeError(f"losstrace {name} on {rows} rows failed ({m.returncode}):\n{m.stdout}\n{m.stderr}")
    seconds = sum(m.seconds for m in stages.values())
    return {
        "seconds": seconds,
        "peak_mb": max(m.peak_mb for m in stages.values()),
        "file_mb": (root / "sentences.tsv").stat().st_size / 2**20,
        "us_per_row": seconds / rows * 1e6,
        **{f"{name}_seconds": m.seconds for name, m in stages.items()},
        **{f"{name}_peak_mb": m.peak_mb for name, m in stages.items()},
    }


def scaling_exponent(results: dict[str, dict[str, Any]]) -> float:
    """Slope of log(seconds) on log(rows) between the two largest sizes (1.0 = linear).

    The smallest size is dominated by start-up (imports), so it would flatter the slope."""
    sizes = sorted(int(k) for k in results)[-2:]
    t = [results[str(n)]["seconds"] for n in sizes]
    return float(np.log(t[1] / t[0]) / np.log(sizes[1] / sizes[0]))


def measure_all(work: Path, sizes: tuple[int, ...]) -> dict[str, Any]:
    results = {str(n): run_size(work / f"rows-{n}", n) for n in sizes}
    return {"ingest_validate": results, "ingest_validate_scaling_exponent": scaling_exponent(results)}
