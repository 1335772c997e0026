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
ORDER = (
    "stage_cost",
    "trials",
    "tracking",
    "keras",
    "gns",
    "bucketing",
    "ingest",
    "repro",
    "cli",
    "false_alarms",
    "gpu",
)

METHOD = """\
How each figure is measured (the docstrings in bench/*.py say why):
- **Stage cost**: a fresh copy of the shipped pipeline, default params, `dvc repro` once (not counted), then
  `dvc repro -f` 5 times; medians. A stage runs from DVC's "Running stage" line to its lock-file update;
  its own work is what the stage reports: `model.fit` wall time (`fit_seconds` in reports/train/run.json),
  evaluate's predictions and validate's checks and suite (their summary lines). The ratio is each run's
  total over its own fit, median over the runs. It moves with the machine's load: the fit (two threads)
  slows more than the single-threaded start-up, so a loaded run reads lower; interleaved with the code
  before the start-up trims at a load near 1, the same pipeline read 5.5× before and 5.0× after.
- **Bisect trial**: the default params at 5 epochs, as `losstrace bisect --epochs 5` replays them: one trial
  starts the trial worker, ingests and validates (timed apart), then 5 trials with other training seeds on
  the same split run in that worker; medians of each trial's wall time and of its `model.fit`
  (`fit_seconds`), and of each trial's excess over its own 2 × fit + 3 s. One more trial runs the train stage
  in a process of its own (the fallback when the worker dies) for comparison.
- **Tracking**: the default params (LSTM 64 on Japanese Vowels, 30 epochs) trained from the same seed in arms
  that each add one layer of the stage, interleaved and rotated each repetition: `model.fit` without
  callbacks; `model.fit` with the training controls params configure (the untracked baseline of the
  headline); `train.run(logger=None)` with `train.dynamics: false`; with dynamics; with a real `RunLogger`
  on a temp SQLite store (the headline arm); with the per-epoch resume backup too (the stage's fit as
  `dvc repro` runs it). Ratios are medians of per-repetition ratios; on this shared machine a layer's ratio moves by about ±5 % between
  runs, so a layer below that (even one under 1×) is noise. `train.main` (the whole stage) is timed once,
  separately: saving and logging the model and uploading artifacts come after training, so they add wall
  time to the stage, not to training.
- **Noise scale**: the default training (`train.run` without a logger, as the tracking arms) with
  `train.noise_scale_every` 50 (4 measurements in 210 steps) and once per epoch (every 7) against the same
  training with it off, interleaved and paired per repetition; a measurement changes no update, so the arms
  train the same steps. ms per measurement = the paired difference over the measurements.
- **Bucketing**: GRU(32) on the 3000 UCI sentences, `train.batching: pad_to_max` vs `bucket`; repetition k
  uses seed 42+k in both arms; samples/s over the epochs after the first (the first also traces the graphs),
  paired per repetition; accuracies are last-epoch means over 20 seeds, and the verdict is the paired
  bucket − pad difference with its standard error (one seed alone moves it by about two points).
- **Ingest + validate**: generated TSVs (3–25 words from the NRC lexicon, three labels) through
  `losstrace ingest` and `losstrace validate` as subprocesses; peak memory is the kernel's `ru_maxrss`
  of each process (the larger of the two stages); about 10 s of each size is start-up (imports).
- **No-op repro**: on an up-to-date temp copy of the project, `dvc repro` and `dvc status` interleaved;
  ratio of median wall times. The bench fails if `dvc repro` runs any stage, so no losstrace code runs:
  any difference from `dvc status` is DVC's own work.
- **CLI**: median of 5 wall times after one warm-up; `diff` compares two runs recorded by `dvc repro`
  (the second with half the batch size).
- **False alarms**: docs/diagnosis.md's table re-measured. A clean run's false alarm is a warning or error
  finding, or a non-empty prescription. Simulated: the test suite's 8 clean configurations × seeds 0–2
  and 4 of them × seeds 3–52, through `diagnose_curves` and `prescribe`. Real: each run through ingest,
  validate and train in the trial worker (its own split per seed, as `dvc exp run -S base.seed=N`), the
  train stage's diagnosis.json read (data, lint and curve findings, the prescription) and checked against
  `losstrace diagnose RUN --json`'s from the MLflow record; then every real run again with the noise scale
  measured once per epoch (`train.noise_scale_every`). The shipped-defaults and BasicMotions batch 8 rows
  are not clean baselines (docs/diagnosis.md says why); they show the rules still fire."""


def notes(results: dict[str, Any]) -> list[str]:
    """Verdicts that need more than a table cell: a missed target gets its measured cause."""
    return [n for n in (_tracking_note(results), _bucketing_note(results)) if n]


def _tracking_note(results: dict[str, Any]) -> str:
    ms = results.get("tracking_overhead_per_epoch_ms")
    if not ms:
        return ""
    t = results["tracking_overhead"]
    ratio = results["tracking_overhead_ratio"]
    costs = ", ".join(
        f"{report.LAYER_LABELS.get(layer['arm'], layer['arm']).lstrip('+ ')} {layer['ms_per_epoch']:+.0f} ms"
        for layer in t["layers"]
    )
    batches = -(-t["train_rows"] // t["batch_size"])
    head = (
        f"**Tracking** is measured on the default training, {t['epochs']} epochs of {ms['fit_epoch']:.0f} ms "
        f"({t['train_rows']} rows in {batches} batches), about the worst case for a fixed per-epoch cost. "
    )
    if ratio <= 1.05:
        return head + (
            f"Recording costs {ratio:.3f}× the same training untracked, within the scatter of this shared "
            f"machine: per epoch, layer by layer, {costs} (these move by ±5 ms between runs, so they can read "
            "negative). What made it cheap: gradient norms are summed inside Keras' compiled train step instead of "
            "a probe-batch pass with its own traced graph (that pass alone was +18 ms per epoch), and MLflow gets "
            "one write per second of tiny epochs instead of one per epoch. The per-epoch resume backup is a "
            "training control, not recording; with it the stage's training is the 'resume backup included' row."
        )
    return head + (
        f"**It misses its 5 % target**: {ratio:.3f}×. Per epoch, layer by layer: {costs}. These costs are per "
        "epoch and per run, not per row, so the share falls as epochs and trainings grow."
    )


def _bucketing_note(results: dict[str, Any]) -> str:
    speed = results.get("bucketing_speedup")
    if isinstance(speed, dict):
        return (
            "**Bucketing** was not measured: `train.batching` is not in this checkout's params yet; "
            "`python bench/run.py --only bucketing --readme` measures it once it is."
        )
    if speed is None:
        return ""
    b = results["bucketing"]
    pad, bucket = b["arms"]["pad_to_max"], b["arms"]["bucket"]
    text = (
        f"**Bucketing** trains {speed:.2f}× as many samples per second after the first epoch and "
        f"{b['end_to_end_speedup']:.2f}× end to end over {b['epochs']} epochs: the first epoch, which traces "
        f"the graphs, costs both arms alike ({bucket['first_epoch_train_seconds']:.1f} s bucketed, "
        f"{pad['first_epoch_train_seconds']:.1f} s padded) and weighs less in longer trainings. "
    )
    diff = results["bucketing_accuracy"].get("difference")
    if not diff:
        return text
    mean_, se, n = diff["test_mean_points"], diff["test_se_points"], diff["seeds"]
    spread = f" ± {se:.2f} (standard error)" if se is not None else ""
    verdict = "equal within the ±1 point target" if abs(mean_) <= 1 else "outside the ±1 point target"
    return text + (
        f"Test accuracy, bucket − pad-to-max paired by seed over {n} seeds (last epoch): "
        f"{mean_:+.2f}{spread} points, {verdict}. One seed's accuracy moves by more than a point between "
        "the arms by chance alone (which rows share a batch changes the path through training; trimming each "
        "batch to its longest row changes no prediction): an earlier 3-seed run read −3.4 points, and a "
        "27-seed study −0.35 ± 0.41."
    )


def section(results: dict[str, Any]) -> str:
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
    for note in notes(results):
        parts += ["", note]
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


def update(readme: Path, results: dict[str, Any]) -> None:
    readme.write_text(replace_section(readme.read_text(encoding="utf-8"), section(results)), encoding="utf-8")
