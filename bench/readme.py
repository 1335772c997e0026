"""Rewrite the README's "## Benchmarks" section from results.json, leaving the rest alone.

Other sections belong to other people, so only the lines from the "## Benchmarks"
heading up to the next "## " heading (outside code fences) are replaced; without
such a section it is appended at the end.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import report

HEADING = "## Benchmarks"
ORDER = ("tracking", "bucketing", "ingest", "repro", "cli", "gpu")

METHOD = """\
How each figure is measured (bench/*.py say why in their docstrings):
- **Tracking**: the default params (LSTM 64 on Japanese Vowels, 30 epochs) trained three ways from the same
  seed, interleaved and rotated each repetition: plain `model.fit`; `train.run(logger=None)` (our callback);
  `train.run` with a real `RunLogger` on a temp SQLite store. The ratio is the median of per-repetition ratios.
  `train.main` (the whole stage) is timed separately: saving and logging the model and uploading artifacts
  happen after training, so they add wall time to the stage but do not slow training down.
- **Bucketing**: GRU(32) on the 3000 UCI sentences, `train.batching: pad_to_max` vs `bucket`, same seed;
  samples/s over the epochs after the first (the first also traces the graphs), paired per repetition.
- **Ingest + validate**: generated TSVs (3–25 words from the NRC lexicon, three labels) through
  `losstrace ingest` and `losstrace validate` as subprocesses; peak memory is the kernel's `ru_maxrss`
  of each process (the larger of the two stages); about 10 s of each size is start-up (imports).
- **No-op repro**: on an up-to-date temp copy of the project, `dvc repro` and `dvc status` interleaved;
  ratio of median wall times.
- **CLI**: median of 5 wall times after one warm-up; `diff` compares two runs recorded by `dvc repro`
  (the second with half the batch size)."""


def section(results: dict[str, Any], notes: str = "") -> str:
    """The whole section: where and when, the table, how it was measured, notes."""
    m = results["machine"]
    rows = [row for name in ORDER for row in report.rows(name, results)]
    minutes = results.get("seconds_total", 0) / 60
    parts = [
        HEADING,
        "",
        "`make bench` runs `python bench/run.py`: every benchmark below, a table printed as it goes, the figures "
        f"in `bench/results.json`, and this section rewritten (the last full run took {minutes:.1f} minutes). "
        "`--quick` is a smoke test with small sizes, `--only NAME` runs one of "
        f"{', '.join(ORDER)} (and merges into results.json). The machine is shared, so figures are ratios "
        "measured within one run; timings are printed, never asserted in tests.",
        "",
        f"Measured {m['date']} on {m['cpu']} ({m['cores']} cores, {m['ram_gb']} GB RAM, shared with other jobs; "
        f"1-minute load {m['load_1min_at_start']} at start), Python {m['python']}, TensorFlow {m['tensorflow']} "
        "(CPU build).",
        "",
        report.markdown(rows),
        "",
        METHOD,
        "",
        "**GPU.** On a CUDA machine install the GPU build (see [GPU](#gpu)) and run "
        "`python bench/run.py --only gpu`: it times the default LSTM's samples/s on the cuDNN kernel against "
        "the same model forced off it (`recurrent_dropout: 0.1`) and records the device.",
    ]
    if notes:
        parts += ["", notes]
    return "\n".join(parts) + "\n"


def replace_section(text: str, new: str) -> str:
    """`text` with its Benchmarks section (heading to next level-2 heading) replaced by `new`."""
    lines = text.splitlines(keepends=True)
    start = end = None
    fenced = False
    for i, line in enumerate(lines):
        if line.lstrip().startswith("```"):
            fenced = not fenced
        if fenced:
            continue
        if start is None and line.rstrip() == HEADING:
            start = i
        elif start is not None and line.startswith("## "):
            end = i
            break
    if start is None:
        return text.rstrip("\n") + "\n\n" + new
    tail = lines[end:] if end is not None else []
    return "".join(lines[:start]) + new + ("\n" if tail else "") + "".join(tail)


def update(readme: Path, results: dict[str, Any], notes: str = "") -> None:
    readme.write_text(replace_section(readme.read_text(encoding="utf-8"), section(results, notes)), encoding="utf-8")
