"""The loss-behaviour gallery: each classic problem of the user reports, reproduced on
bundled data with one command, with the diagnosis and the diff it gets.

`losstrace gallery [CASE ...]` trains a healthy run A and a run B with the one injected
change, in a throwaway workspace, records both in the project's MLflow store (kind
`gallery`, so they never shadow `latest`), then writes `docs/gallery/<case>.png` and
`docs/gallery.md`. With `--bisect` it also runs `losstrace bisect A B` on each case, so
the page shows the re-run proof next to diff's ranking. Every case shows B's prescription
(diagnose's changes, reconciled); with `--fix` it also runs `losstrace fix B`, so the page
says whether that prescription, re-run, made the symptom go away without making val loss or
accuracy worse. All trainings of one command share one trial worker and data cache.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from losstrace import params as params_mod
from losstrace.errors import LosstraceError
from losstrace.params import Params
from losstrace.record import store
from losstrace.workflows.replay import INPROCESS, WORKER, Outcome, Session, Workspace


@dataclass(frozen=True)
class Case:
    name: str
    title: str
    report: str  # number of the user report it reproduces (the reports of examples/README.md)
    base: dict[str, Any]  # overrides for both runs
    change: dict[str, Any]  # the one injected change: B = base + change
    finding: str  # the code B must get
    cause: str  # the change `diff` must rank first
    note: str = ""
    a_extra: dict[str, Any] = field(default_factory=dict)  # A-only overrides (e.g. the healthy setting)
    fix_note: str = ""  # what `fix`'s verdict on B's prescription means for this case, as measured


CASES: tuple[Case, ...] = (
    Case(
        "noisy_batch",
        "Batch size 16 vs 128 on word → emotion: the loss shakes",
        "000",
        {
            "data.source": "nrc_emotion",
            "train.epochs": 15,
            "train.model.rnn.bidirectional": True,
            "train.model.rnn.units": 32,
            "train.optimizer": "rmsprop",
            "train.model.dropout": 0.0,
        },
        {"train.batch_size": 16},
        "noisy_loss",
        "train.batch_size",
        a_extra={"train.batch_size": 128},
        note="Each word is its own input, so the model can only memorise the training words: validation "
        "stays near chance (`not_learning` on val), while the batch noise of B is the point here.",
        fix_note="Not verified, and rightly so. B learns nothing that transfers to unseen words (`not_learning` "
        "on val), so its batch noise is `info`, secondary to `not_learning`, and the prescription leaves the "
        "batch alone: the shaking is not this run's first problem. What it prescribes is balanced class "
        "weights for the collapse onto the most frequent emotion; re-run, the model still predicts one class "
        "and its best val loss rises from the class-prior level (1.94) to 2.08, because weights spread the "
        'guesses without giving the inputs any signal (docs/diagnosis.md, "False alarms", measured 2.026 '
        "against 1.939 the same way). No params change makes these words predictive.",
    ),
    Case(
        "sensor_tiny_batch",
        "Batch size 32 vs 2 on sensor sequences",
        "002",
        {"data.source": "basic_motions", "train.epochs": 30, "train.optimizer": "rmsprop", "train.model.dropout": 0.0},
        {"train.batch_size": 2},
        "noisy_loss",
        "train.batch_size",
        fix_note="Not verified: the prescription cannot reach a calm batch. BasicMotions leaves 32 training rows, "
        "and `noisy_loss` and the prescription both cap the batch so an epoch keeps at least 8 updates: 4. "
        "At batch 4 the batch noise falls (0.60 → 0.49, mean of the two seeds) but stays over 0.15, the epoch "
        "jitter doubles (0.13 → 0.31) and lint's `small_batch` (below 8) fires by its definition, so both "
        "targeted symptoms remain. That run's own prescription is the next step, a smaller learning rate "
        "(0.001 → 0.0003), since its batch has no room left. A, at batch 32 (one update an epoch), is calm: "
        "on a training set this small the 8-updates cap, not the measured noise, sets the batch, a known "
        'limit of the rule (docs/diagnosis.md, "False alarms").',
    ),
    Case(
        "grouped_rows",
        "Rows grouped by label, fed in file order",
        "001",
        {"train.shuffle": False, "train.epochs": 20},
        {"data.shuffle": False},
        "label_order_clustered",
        "data.order",
        note="Keras reshuffles each epoch by default (train.shuffle: true), which hides "
        "grouped rows; a bare tf.data pipeline does not.",
    ),
    Case(
        "lr_jitter_tokens",
        "Learning rate 0.0001 vs 0.01 on token traces",
        "001",
        {"data.source": "japanese_vowels_tokens", "train.epochs": 30, "train.model.dropout": 0.0},
        {"train.learning_rate": 0.0001},
        "plateau",
        "train.learning_rate",
        a_extra={"train.learning_rate": 0.01},
    ),
    Case(
        "sigmoid_categorical",
        "Sigmoid output with categorical cross-entropy on token traces",
        "001",
        {
            "data.source": "japanese_vowels_tokens",
            "train.epochs": 20,
            "train.loss": "categorical_crossentropy",
            "train.on_lint_error": "continue",
        },
        {"train.output_activation": "sigmoid"},
        "activation_loss_mismatch",
        "train.output_activation",
    ),
    Case(
        "sigmoid_sparse_many",
        "Sigmoid output with sparse categorical cross-entropy, 9 classes",
        "003",
        {"train.epochs": 30, "train.on_lint_error": "continue"},
        {"train.output_activation": "sigmoid"},
        "activation_loss_mismatch",
        "train.output_activation",
    ),
    Case(
        "gru_plateau",
        "GRU with RMSprop at 3e-4 vs 3e-3 on UCI sentences: plateau, then learning",
        "004",
        {
            "data.source": "data/external/uci-sentiment/*.txt",
            "data.header": False,
            "train.model.rnn.cell": "gru",
            "train.model.rnn.units": 32,
            "train.model.embedding.dim": 32,
            "train.optimizer": "rmsprop",
            "train.loss": "binary_crossentropy",
            "train.output_activation": "sigmoid",
            "train.batch_size": 128,
            "train.epochs": 40,
            "train.model.dropout": 0.0,
        },
        {"train.learning_rate": 0.0003},
        "plateau",
        "train.learning_rate",
        a_extra={"train.learning_rate": 0.003},
        note="The report's plateau came at RMSprop's 0.001 with unmasked, pre-padded input; losstrace masks "
        "padding by default, which shortens it, so the low learning rate shows it here.",
    ),
    Case(
        "overfit_no_dropout",
        "No dropout: val loss turns up while train loss falls",
        "001",
        {"train.epochs": 40, "train.learning_rate": 0.003},
        {"train.model.dropout": 0.0},
        "overfitting",
        "train.model.dropout",
        a_extra={"train.model.dropout": 0.3},
    ),
)


def configure(case: Case, epochs: int = 0) -> tuple[Params, Params]:
    a = _apply({**case.base, **case.a_extra}, epochs)
    b = _apply({**case.base, **case.change}, epochs)
    return a, b


def _apply(overrides: dict[str, Any], epochs: int) -> Params:
    """The defaults with a case's overrides (and --epochs when given)."""
    return params_mod.override(Params(), {**overrides, "train.epochs": epochs} if epochs else overrides)


@dataclass
class Result:
    case: Case
    a: Outcome
    b: Outcome
    diff: dict[str, Any] | None = None
    findings: list[dict[str, Any]] = field(default_factory=list)
    records: tuple = ()  # (RunRecord A, RunRecord B) as read back from MLflow
    bisect: dict[str, Any] | None = None  # `bisect.main`'s result, when asked for
    prescription: list[dict[str, Any]] = field(default_factory=list)  # B's, as `diagnose --json` has it
    prescription_notes: list[str] = field(default_factory=list)  # what the prescription left out, why
    fix: dict[str, Any] | None = None  # `fix.main`'s result for B, when asked for

    @property
    def bisect_ok(self) -> bool | None:
        """Whether bisect's first culprit is the injected change (None: bisect not run)."""
        if self.bisect is None:
            return None
        culprits = self.bisect.get("culprits") or []
        return bool(culprits) and culprits[0] in self.case.change

    @property
    def fix_verified(self) -> bool | None:
        """Whether `fix` verified B's whole prescription (None: fix not run)."""
        return None if self.fix is None else bool(self.fix.get("verified"))

    @property
    def ok(self) -> bool:
        top = self.diff["causes"][0]["change"] if self.diff and self.diff["causes"] else None
        return (
            self.case.finding in {f["code"] for f in self.findings}
            and top == self.case.cause
            and self.bisect_ok is not False
        )


def run_case(
    case: Case, root: Path, epochs: int = 0, inprocess: bool = False, session: Session | None = None
) -> Result:
    from losstrace.workflows import runs

    pa, pb = configure(case, epochs)
    ws = Workspace(store.tracking_uri(root), "gallery", inprocess=inprocess, session=session)
    try:
        a, b = ws.train(pa, source_root=root), ws.train(pb, source_root=root)
    finally:
        ws.close()
    for name, out in (("A", a), ("B", b)):
        if out.error:
            raise LosstraceError(f"gallery {case.name} run {name}", out.error, "see the stage's message above")
    result = Result(case, a, b)
    d = runs.diff(a.run_id, b.run_id, root)
    result.diff = d["diff"]
    result.findings = d["b"].findings
    result.records = (d["a"], d["b"])
    # The prescription `losstrace diagnose B` prints and `losstrace fix B` re-runs.
    diagnosis = runs.diagnose(b.run_id, root)
    result.prescription = diagnosis.get("prescription") or []
    result.prescription_notes = diagnosis.get("prescription_notes") or []
    return result


def plot(result: Result, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ra, rb = result.records
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.8))
    for rec, colour, tag in ((ra, "tab:blue", "A"), (rb, "tab:red", "B")):
        h, bt = rec.history, rec.batches
        if not bt.empty:
            steps = bt.groupby("epoch")["batch"].transform("max") + 1
            ax1.plot(bt["epoch"] + (bt["batch"] + 1) / steps, bt["loss"], color=colour, alpha=0.25, lw=0.6)
        ax1.plot(h["epoch"] + 1, h["loss"], color=colour, lw=1.8, label=f"{tag} train")
        ax2.plot(h["epoch"] + 1, h["val_loss"], color=colour, lw=1.8, label=f"{tag} val")
    ax1.set_title("train loss (thin: true per-batch loss)")
    ax2.set_title("validation loss")
    for ax in (ax1, ax2):
        ax.set_xlabel("epoch")
        ax.legend()
    fig.suptitle(result.case.title)
    fig.tight_layout()
    fig.savefig(path, dpi=90, metadata={"Software": None})
    plt.close(fig)


def markdown(results: list[Result]) -> str:
    flags = "".join(
        flag
        for flag, ran in (
            (" --bisect", any(r.bisect is not None for r in results)),
            (" --fix", any(r.fix is not None for r in results)),
        )
        if ran
    )
    lines = [
        "# The loss-behaviour gallery",
        "",
        "Each classic problem from the user reports, reproduced on bundled data with one command",
        "(`losstrace gallery CASE`). A is the healthy run, B carries the one injected change. Each case",
        "shows B's diagnosis, what `losstrace diff A B` ranks first and B's prescription (diagnose's",
        "changes, one per key); `--bisect` adds the cause proven by re-running A with each change of B,",
        "`--fix` whether B's prescription, re-run, made its symptoms go away without making val loss or",
        f"accuracy worse. Generated by `losstrace gallery{flags}`; the figures below come from the last",
        "generation on this machine.",
        "",
    ]
    for r in results:
        c = r.case
        change = ", ".join(f"`{k}: {v}`" for k, v in c.change.items())
        lines += [f"## {c.title}", "", f"`losstrace gallery {c.name}` — user report {c.report}; B = A + {change}.", ""]
        if c.note:
            lines += [c.note, ""]
        lines += [
            f"![{c.name}](gallery/{c.name}.png)",
            "",
            "**Diagnosis of B** (warnings, errors and the expected finding):",
            "",
        ]
        shown = [f for f in r.findings if f["severity"] in ("error", "warning") or f["code"] == c.finding]
        lines += [_finding_line(f) for f in shown] or ["- none"]
        lines += ["", "**`losstrace diff A B` — causes:**", ""]
        for cause in (r.diff or {}).get("causes", [])[:3]:
            lines.append(
                f"- `{cause['change']}` → {cause['symptom']} (confidence {cause['confidence']}): {cause['why']}"
            )
        if r.bisect is not None:
            lines += [
                "",
                "**`losstrace bisect A B`** (A re-run with another training seed on its split for the "
                "spread, then A + each single change of B):",
                "",
                _bisect_line(r),
            ]
        lines += ["", "**Prescription for B** (`losstrace diagnose B`: the findings' changes, one per key):", ""]
        lines += _prescription_lines(r)
        if r.fix is not None:
            lines += ["", *_fix_lines(r)]
            if c.fix_note:
                lines += ["", c.fix_note]
        verdict = "reproduced" if r.ok else f"NOT reproduced (expected `{c.finding}` and top cause `{c.cause}`)"
        lines += ["", f"Expected `{c.finding}` in B and `{c.cause}` ranked first: **{verdict}**.", ""]
    return "\n".join(lines)


def _value(v: Any) -> str:
    """A params value as a suggestion shows it (an empty string as `""`)."""
    if v == "" or v is None:
        return '""'
    return str(v).lower() if isinstance(v, bool) else f"{v:g}" if isinstance(v, float) else str(v)


def _prescription_lines(r: Result) -> list[str]:
    prescription = r.fix["prescription"] if r.fix is not None else r.prescription
    notes = (r.fix.get("notes") or []) if r.fix is not None else r.prescription_notes
    lines = [
        f"- `{c['key']}: {_value(c['from'])} → {_value(c['to'])}` (for {', '.join(f'`{f}`' for f in c['findings'])}): "
        f"{c['why']}"
        for c in prescription
    ]
    lines += [f"- left out: {n}" for n in notes]
    return lines or ["- none: no warning or error asks for a params change"]


def _fix_lines(r: Result) -> list[str]:
    """fix's verdict on B's prescription: overall, then per trial (the whole set, each change alone)."""
    f = r.fix or {}
    head = (
        "**`losstrace fix B`** (B re-run with another training seed for the spread, then with the whole "
        "prescription and, when it has several changes, with each change alone): "
    )
    if not f.get("changes"):
        return [head + "**nothing to verify**", "", f"- {f.get('note') or 'no trial was run'}"]
    lines = [head + f"**{'verified' if f.get('verified') else 'NOT verified'}**", ""]
    spread = f.get("seed_spread") or {}
    for v in f["changes"]:
        what = "the whole prescription" if v["trial"] == "prescription" else f"`{'`, `'.join(v['keys'])}` alone"
        mark = "verified" if v["verified"] else "NOT verified"
        parts = [f"- {what}: **{mark}**: {v.get('error') or v.get('reason', '')}"]
        symptoms = ", ".join(f"`{code}` {status}" for code, status in (v.get("symptoms") or {}).items())
        if symptoms:
            parts.append(f"targeted: {symptoms}")
        worse = [
            f"{feature.replace('_', ' ')} {w['original']:.4g} → {w['trial']:.4g} (seed spread {spread.get(feature, 0):.2g})"
            for feature, w in (v.get("worse") or {}).items()
        ]
        parts.append(f"worse beyond the seed spread: {'; '.join(worse)}" if worse else "val loss and accuracy no worse")
        lines.append("; ".join(parts) + ".")
    return lines


def _bisect_line(r: Result) -> str:
    b = r.bisect or {}
    culprits = ", ".join(f"`{c}`" for c in b.get("culprits") or []) or "none"
    trials = [t for t in b.get("trials", []) if t.get("change")]
    new = set(b.get("new_findings_in_b") or [])

    def reproduced(t: dict[str, Any]) -> str:
        codes = sorted(new & set(t.get("codes") or []))
        return f" and B's new {', '.join(f'`{c}`' for c in codes)}" if codes else ""

    shares = "; ".join(
        f"`{t['change']}` reproduces {t.get('share') or 0:.0%} of A→B's moved features{reproduced(t)}" for t in trials
    )
    moved = ", ".join(sorted(b.get("moved_features") or {})) or "none"
    verdict = "names the injected change" if r.bisect_ok else "does NOT name the injected change"
    return f"- culprits: {culprits} ({verdict}); {shares}. Features moved beyond the seed spread: {moved}."


def _finding_line(f: dict[str, Any]) -> str:
    where = f" on {f['where']}" if f.get("where") else ""
    secondary = f", secondary to `{f['evidence']['secondary_to']}`" if f.get("evidence", {}).get("secondary_to") else ""
    return f"- `{f['code']}` ({f['severity']}{where}{secondary}): {f.get('suggestion', '')}"


def listing() -> str:
    """The cases, then how to run one: a list a newcomer can act on without the docs."""
    rows = [f"{c.name:<22} {c.title}" for c in CASES]
    first = CASES[0].name
    return "\n".join(
        [
            *rows,
            "",
            f"run one:   losstrace gallery {first}   (trains A and B, prints B's findings and diff's top cause,",
            f"           draws docs/gallery/{first}.png; --epochs 3 for a quick look, --bisect to prove the cause,",
            "           --fix to re-run B's prescription and verify it)",
            "run all:   losstrace gallery   (also rewrites docs/gallery.md; --bisect --fix for the full page)",
        ]
    )


def main(
    names: list[str],
    root: Path,
    out: Path,
    epochs: int = 0,
    bisect: bool = False,
    inprocess: bool = False,
    fix: bool = False,
) -> list[Result]:
    from losstrace.workflows import progress

    by_name = {c.name: c for c in CASES}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise LosstraceError("gallery", f"unknown case {unknown[0]!r}", f"pick from {', '.join(by_name)}")
    chosen = [by_name[n] for n in names] if names else list(CASES)
    results = []
    (out / "gallery").mkdir(parents=True, exist_ok=True)
    # One worker and one data cache for every case, its bisect and its fix: A and B are
    # replayed on the splits their case already made.
    session = Session(INPROCESS if inprocess else WORKER)
    try:
        for case in progress.each(chosen, "gallery", "case", name=lambda c: c.name):
            r = run_case(case, root, epochs, session=session)
            if bisect:
                from losstrace.workflows import bisect as bisect_mod

                r.bisect = bisect_mod.main(r.a.run_id, r.b.run_id, root, seeds=2, epochs=epochs, session=session)
            if fix:
                from losstrace.workflows import fix as fix_mod

                r.fix = fix_mod.main(r.b.run_id, root, seeds=2, epochs=epochs, session=session)
            plot(r, out / "gallery" / f"{case.name}.png")
            results.append(r)
    finally:
        session.close()
    if not names:
        (out / "gallery.md").write_text(markdown(results) + "\n", encoding="utf-8")
    return results
