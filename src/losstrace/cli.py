"""`losstrace` entry point: the pipeline stages plus lint / diagnose / diff / bisect / fix.

Imports are lazy: `--help`, `lint`, `diagnose` and `diff` never import TensorFlow.
Every failure a user can cause prints one line `error: <where>: <what> (<fix>)`
and exits non-zero; set LOSSTRACE_DEBUG=1 to see tracebacks of internal errors.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import typing
from pathlib import Path

from losstrace.errors import LosstraceError, first_line, from_os_error
from losstrace.startup import lean_keras as _lean_keras
from losstrace.startup import quiet_tf as _quiet_tf


def cmd_ingest(a: argparse.Namespace) -> int:
    from losstrace.stages import ingest

    summary = ingest.main(a.params, a.out, Path("."))
    print(
        f"ingest: {summary['source']}: "
        + ", ".join(f"{k} {v}" for k, v in summary["splits"].items())
        + (f", {summary['rows_rejected']} rejected" if summary["rows_rejected"] else "")
    )
    return 0


def cmd_validate(a: argparse.Namespace) -> int:
    from losstrace.stages import validate

    return validate.main(a.prepared, a.out, a.params, a.reference)


def cmd_train(a: argparse.Namespace) -> int:
    _lean_keras()
    from losstrace.stages import train

    result = train.main(
        a.params, a.prepared, a.validate, a.models, a.reports, Path("."), kind=a.run_kind, parent_run_id=a.parent_run
    )
    fit = f" (fit {result['fit_seconds']:.1f} s)" if result.get("fit_seconds") else ""
    if result["offline"]:
        print(
            f"train: {result['epochs']} epochs recorded offline in {a.reports} ({result['offline']}){fit}; "
            "upload them with `losstrace sync`"
        )
    else:
        print(f"train: done, run {result['run_id']}: {_train_headline(a.reports, result['epochs'])}{fit}")
    for f in result["diagnosis"]["findings"]:
        if f["severity"] != "info":
            print(f"  {f['severity']}: {f['code']}: {f.get('suggestion', '')}", file=sys.stderr)
    return 0


def _train_headline(reports: Path, epochs: int) -> str:
    """The finished training in numbers, from the history.csv the stage just published."""
    import pandas as pd

    from losstrace.explain.report import headline, headline_text

    path = reports / "history.csv"
    return headline_text(headline(pd.read_csv(path))) if path.exists() else f"{epochs} epochs"


def cmd_evaluate(a: argparse.Namespace) -> int:
    _lean_keras()
    from losstrace.stages import evaluate

    metrics = evaluate.main(a.params, a.prepared, a.models, a.train_reports, a.out, Path("."))
    t = metrics["test"]
    print(
        f"evaluate: test accuracy {t['accuracy']:.4f}, macro-F1 {t['macro_f1']:.4f}, loss {t['loss']:.4f} "
        f"({t['rows']} rows predicted in {metrics['predict_seconds']:.1f} s)"
    )
    return 0


def cmd_lint(a: argparse.Namespace) -> int:
    from losstrace import params as params_mod
    from losstrace.io import read_json
    from losstrace.model import model_lint

    p = params_mod.load(a.params)
    _require_tracked(p)
    info = read_json(a.prepared / "ingest.json")
    labels = read_json(a.prepared / "labels.json")
    findings = model_lint.params_lint(p, info, labels)
    if a.json:
        print(json.dumps({"findings": [f.to_dict() for f in findings]}, indent=2, sort_keys=True))
    else:
        from losstrace.explain.report import findings_table

        print(findings_table([f.to_dict() for f in findings]) if findings else "lint: no findings")
    return 1 if any(f.severity == "error" for f in findings) else 0


def _require_tracked(p) -> None:
    """In a DVC project, the user's data and builder files must be stage deps (tracked.py).
    A builder's model itself is linted when train builds it (TensorFlow)."""
    from losstrace.model import builder_check

    root = Path(".")
    if not (root / "dvc.yaml").is_file():
        return
    builder_check.require_tracked(p, root, always=True)
    from losstrace.data.bundled import BUNDLED

    if p.data.source not in BUNDLED:
        from losstrace.data.files import matched_paths
        from losstrace.stages import ingest

        sources = [p.data.source, *([p.data.val_source] if p.data.val_source else [])]
        ingest.require_tracked(p, [f for s in sources for f in matched_paths(s, root)], root)


def cmd_diagnose(a: argparse.Namespace) -> int:
    from losstrace.record import store
    from losstrace.workflows import runs

    store.fail_fast_reads()
    diagnosis = runs.diagnose(a.run, Path("."))
    if a.json:
        print(json.dumps(diagnosis, indent=2, sort_keys=True))
    else:
        from losstrace.explain.report import findings_table, prescription_text, verdict

        print(f"run {diagnosis['run_id']}")
        findings = diagnosis["findings"]
        if not any(f["severity"] in ("error", "warning") for f in findings):
            print(verdict(findings, diagnosis["headline"]))
        if findings:
            print(findings_table(findings))
        if diagnosis.get("prescription") or diagnosis.get("prescription_notes"):
            print("\n" + prescription_text(diagnosis["prescription"], diagnosis.get("prescription_notes") or ()))
    return 0


def cmd_diff(a: argparse.Namespace) -> int:
    from losstrace.explain import report
    from losstrace.record import store
    from losstrace.workflows import runs

    store.fail_fast_reads()
    result = runs.diff(a.run_a, a.run_b, Path("."))
    if a.html:
        from losstrace.io import write_text

        write_text(a.html, report.render_html(result["diff"], result["a"], result["b"]))
        # Alone, the message is the output; beside --json/--md it must not spoil stdout.
        print(f"diff: wrote {a.html} (open it in a browser)", file=sys.stderr if a.json or a.md else sys.stdout)
    if a.json:
        print(json.dumps(result["diff"], indent=2, sort_keys=True, default=str))
    elif a.md:
        print(report.render_markdown(result["diff"], result["a"], result["b"]))
    elif not a.html:
        print(report.render_table(result["diff"], result["a"], result["b"]))
    return 0


def cmd_bisect(a: argparse.Namespace) -> int:
    from losstrace.workflows import bisect

    result = bisect.main(a.run_a, a.run_b, Path("."), seeds=a.seeds, epochs=a.epochs)
    if a.json:
        print(json.dumps(result, indent=2, sort_keys=True, default=str))
    else:
        print(bisect.render(result))
    return 0


def cmd_fix(a: argparse.Namespace) -> int:
    from losstrace.record import store
    from losstrace.workflows import fix

    store.fail_fast_reads()
    result = fix.main(a.run, Path("."), seeds=a.seeds, epochs=a.epochs, apply_to=a.params if a.apply else None)
    if a.json:
        print(json.dumps(result, indent=2, sort_keys=True, default=str))
    else:
        print(fix.render(result))
    return 0


def cmd_gallery(a: argparse.Namespace) -> int:
    from losstrace.workflows import gallery

    if a.list:
        print(gallery.listing())
        return 0
    results = gallery.main(a.cases, Path("."), a.out, a.epochs, a.bisect, fix=a.fix)
    for r in results:
        top = r.diff["causes"][0]["change"] if r.diff and r.diff["causes"] else "-"
        codes = ", ".join(sorted({f["code"] for f in r.findings if f["severity"] != "info"})) or "none"
        proof = "" if r.bisect is None else f"; bisect culprits: {', '.join(r.bisect.get('culprits') or []) or 'none'}"
        fixed = "" if r.fix is None else f"; fix {'verified' if r.fix_verified else 'NOT verified'}"
        print(f"{r.case.name:<22} {'ok ' if r.ok else 'MISS'} B: {codes}; top cause: {top}{proof}{fixed}")
    return 0 if all(r.ok for r in results) else 1


def cmd_sync(a: argparse.Namespace) -> int:
    from losstrace.workflows import sync

    result = sync.main(Path("."), a.reports, a.validate, a.evaluate, a.models, a.prepared)
    if not result["uploaded"]:
        added = result.get("evaluation", 0)
        done = f"uploaded its {added} missing test metrics" if added else "nothing recorded offline"
        print(f"sync: {done}; {a.reports / 'run.json'} points at run {result['run_id']}")
        return 0
    print(
        f"sync: run {result['run_id']} complete ({result['values']} new metric values); "
        f"{a.reports / 'run.json'} points at it"
    )
    if result["lock"] == "stale":
        print(
            f"warning: dvc.lock not updated because the pipeline has other changes; once they are intended: "
            f"dvc commit {' '.join(result['stages'])}",
            file=sys.stderr,
        )
    return 0


def cmd_ci_report(a: argparse.Namespace) -> int:
    from losstrace.record import store
    from losstrace.workflows import ci_report

    store.fail_fast_reads()
    result = ci_report.main(Path("."), a.params, a.rev, a.run, a.baseline, a.out, a.html)
    if a.out is None:
        print(result["markdown"])
    if a.html and not result["diffed"]:
        print(f"warning: no run diff to draw, so {a.html} was not written (the report says why)", file=sys.stderr)
    verdict = f"regression in {', '.join(result['failed'])}" if result["failed"] else "ok"
    print(f"ci-report: {verdict} (vs {a.rev}){f'; report in {a.out}' if a.out else ''}", file=sys.stderr)
    return 1 if result["failed"] else 0


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage mistake in the one-line error form, like every other failure."""

    def error(self, message: str) -> typing.NoReturn:
        fix = f"see `{self.prog} --help`"
        wrong = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if wrong:  # a misspelt command: name the one meant, as a misspelt params key does
            import difflib

            close = difflib.get_close_matches(wrong.group(1), re.findall(r"'([^']*)'", wrong.group(2)), n=1)
            fix = f"did you mean {close[0]}?" if close else fix
        self.exit(2, f"error: {self.prog}: {message} ({fix})\n")


def _count(text: str) -> int:
    """argparse type: a whole number >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative; use 0 or more")
    return value


def _path(text: str) -> Path:
    """argparse type: a non-empty path."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path")
    return Path(text)


def build_parser() -> argparse.ArgumentParser:
    from losstrace import __version__

    parser = _Parser(prog="losstrace", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"losstrace {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(func=func)
        p.add_argument("--params", type=_path, default=Path("params.yaml"), help="params file (default: params.yaml)")
        return p

    p = add("ingest", cmd_ingest, "Load data.source, split it and write the prepared parquet files.")
    p.add_argument("--out", type=_path, default=Path("data/prepared"), help="output directory")

    p = add("validate", cmd_validate, "Run the Great Expectations suite and write results, fingerprint and Data Docs.")
    p.add_argument("--prepared", type=_path, default=Path("data/prepared"), help="the ingest stage's splits")
    p.add_argument("--out", type=_path, default=Path("reports/validate"), help="output directory")
    p.add_argument(
        "--reference",
        type=_path,
        default=Path("data/labels.reference.json"),
        help="committed label map to check the encoding against (skipped if absent)",
    )

    p = add("train", cmd_train, "Lint, then train the model from params.yaml and record the run in MLflow.")
    p.add_argument("--prepared", type=_path, default=Path("data/prepared"), help="the ingest stage's splits")
    p.add_argument("--validate", type=_path, default=Path("reports/validate"), help="the validate stage's reports")
    p.add_argument("--models", type=_path, default=Path("models"), help="where the model and featurizer go")
    p.add_argument("--reports", type=_path, default=Path("reports/train"), help="where the run's reports go")
    p.add_argument(
        "--run-kind",
        default="train",
        choices=("train", "gallery", "bisect-trial", "fix-trial"),
        help="how the MLflow run is tagged: train (default), or a gallery case / bisect or fix trial "
        "(set by those commands)",
    )
    p.add_argument("--parent-run", metavar="RUN_ID", help="nest the MLflow run under this run (bisect sets it)")

    p = add("evaluate", cmd_evaluate, "Score the model on the test split and log it into the training run.")
    p.add_argument("--prepared", type=_path, default=Path("data/prepared"), help="the ingest stage's splits")
    p.add_argument("--models", type=_path, default=Path("models"), help="where the model and featurizer go")
    p.add_argument("--train-reports", type=_path, default=Path("reports/train"), help="the train stage's reports")
    p.add_argument("--out", type=_path, default=Path("reports/evaluate"), help="output directory")

    p = add("lint", cmd_lint, "Pre-flight checks of params.yaml against the prepared data (exit 1 on errors).")
    p.add_argument("--prepared", type=_path, default=Path("data/prepared"), help="the ingest stage's splits")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = add(
        "diagnose", cmd_diagnose, "Findings for one recorded run (default: the one behind reports/, else the latest)."
    )
    p.add_argument(
        "run",
        nargs="?",
        default=None,
        help="run id (or its first 8 characters), latest, latest~N or a losstrace-runs/<name> folder (default: the run behind reports/train/run.json)",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = add("diff", cmd_diff, "What changed between two runs and which change moved the loss curve.")
    p.add_argument("run_a", help="baseline run: id (or its first 8 characters), latest or latest~N")
    p.add_argument("run_b", help="changed run: id (or its first 8 characters), latest or latest~N")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="machine-readable output")
    fmt.add_argument("--md", action="store_true", help="Markdown (CI summaries, PR comments)")
    p.add_argument("--html", type=_path, metavar="PATH", help="write a self-contained HTML report with the curves")

    p = add("bisect", cmd_bisect, "Re-run A with each single change from B to prove which one moved the curve.")
    p.add_argument("run_a", help="baseline run: id (or its first 8 characters), latest or latest~N")
    p.add_argument("run_b", help="changed run: id (or its first 8 characters), latest or latest~N")
    p.add_argument(
        "--seeds",
        type=_count,
        default=2,
        help="runs of A for the seed spread: A plus N-1 re-runs with other seeds (default 2)",
    )
    p.add_argument(
        "--epochs",
        type=_count,
        default=0,
        help="train every trial this many epochs, usually fewer than recorded (0 = as recorded)",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = add(
        "fix",
        cmd_fix,
        "Re-run a run with its prescription (and each change alone) against its seed spread: "
        "did each targeted symptom go away, did nothing get worse.",
    )
    p.add_argument("run", help="run id (or its first 8 characters), latest or latest~N")
    p.add_argument("--seeds", type=_count, default=2, help="re-runs of the original for the seed spread (default 2)")
    p.add_argument(
        "--epochs",
        type=_count,
        default=0,
        help="train every trial this many epochs, usually fewer than recorded (0 = as recorded)",
    )
    p.add_argument(
        "--apply",
        action="store_true",
        help="write the verified changes into --params (as `dvc exp run -S` would); otherwise print that line",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = add("gallery", cmd_gallery, "Reproduce the classic loss problems on bundled data (docs/gallery.md).")
    p.add_argument("cases", nargs="*", help="case names (default: all, and regenerate docs/gallery.md)")
    p.add_argument("--list", action="store_true", help="list the cases")
    p.add_argument("--out", type=_path, default=Path("docs"), help="where gallery.md and gallery/*.png go")
    p.add_argument("--epochs", type=_count, default=0, help="shrink every run to this many epochs (0 = the case's own)")
    p.add_argument(
        "--bisect",
        action="store_true",
        help="also prove each case with `losstrace bisect A B` (four more trainings per case)",
    )
    p.add_argument(
        "--fix",
        action="store_true",
        help="also re-run B's prescription with `losstrace fix B` (three or more trainings per case) "
        "and show whether it was verified",
    )

    p = add("sync", cmd_sync, "Upload a training recorded offline (reports/train/run.json) as one complete MLflow run.")
    p.add_argument("--reports", type=_path, default=Path("reports/train"), help="the train stage's reports")
    p.add_argument("--validate", type=_path, default=Path("reports/validate"), help="the validate stage's reports")
    p.add_argument("--evaluate", type=_path, default=Path("reports/evaluate"), help="the evaluate stage's reports")
    p.add_argument("--models", type=_path, default=Path("models"), help="the trained model and featurizer")
    p.add_argument("--prepared", type=_path, default=Path("data/prepared"), help="the ingest stage's splits")

    p = add(
        "ci-report",
        cmd_ci_report,
        "Compare the workspace run with a git rev's: Markdown report, "
        "exit 1 when a test metric fell past params.yaml's ci thresholds.",
    )
    p.add_argument("--rev", default="main", help="git rev holding the baseline metrics and run.json (default: main)")
    p.add_argument("--run", help="current run (default: the one in reports/train/run.json)")
    p.add_argument("--baseline", help="baseline run (default: the one committed at --rev)")
    p.add_argument("--out", type=_path, metavar="PATH", help="write the Markdown here (default: stdout)")
    p.add_argument("--html", type=_path, metavar="PATH", help="also write the run diff as HTML with both curves")
    return parser


def main(argv: list[str] | None = None) -> int:
    _quiet_tf()
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except LosstraceError as e:
        if e.where == "params.yaml" and getattr(args, "params", None) is not None:
            e.where = str(args.params)  # checks deep in a stage name the file generically: name the one passed
        print(e.line(), file=sys.stderr)
        return e.exit_code
    except BrokenPipeError:  # `losstrace diff ... | head`: the reader left, nothing to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("error: interrupted (rerun the command)", file=sys.stderr)
        return 130
    except Exception as e:
        # Out of space mid-write, or a path that cannot be used: staged outputs are
        # discarded, the old ones stay.
        mapped = from_os_error(e) if isinstance(e, OSError) else None
        if mapped is not None:
            print(mapped.line(), file=sys.stderr)
            return mapped.exit_code
        if os.environ.get("LOSSTRACE_DEBUG"):  # a bug, not bad input: still one line unless debugging
            raise
        print(
            f"error: internal: {type(e).__name__}: {first_line(e) if str(e).strip() else ''} "
            "(rerun with LOSSTRACE_DEBUG=1 and report the traceback)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
