"""Validate stage: prepared splits → results.json, fingerprint.json and GX Data Docs.

Two layers, one verdict:
- `checks` (pure pandas) measures everything and decides severities;
- a Great Expectations suite per split states the label, balance, order and length
  rules as expectations, so reviewers can browse them in Data Docs
  (`<out>/datadocs/index.html`). A failed expectation that no check mirrors
  (nulls, empty sequences) becomes an `expectation_failed` error finding.

Outputs are staged and published together, even when a check fails with an error,
so the user can read why; then the stage exits 1 with one line naming the check,
the split and the observed value. A crash publishes nothing: the previous outputs stay.
"""

from __future__ import annotations

import logging
import os
import re
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from losstrace import params as params_mod
from losstrace.data import checks
from losstrace.data.datadocs import RUN_TIME, make_offline
from losstrace.data.fingerprint import fingerprint
from losstrace.errors import LosstraceError
from losstrace.findings import Finding
from losstrace.io import Staging, read_json, read_prepared, write_json
from losstrace.params import ValidateParams

REQUIRED_COLUMNS = ("x", "label", "length")
SITE = "losstrace"
_TEXT_LIMIT = 120  # characters of an unexpected value kept in results.json


@dataclass(frozen=True)
class Spec:
    """One expectation, described as data before GX builds it.

    `mirrored_by` names the `checks` finding code that already judges the same rule
    (with a severity); a failure of an unmirrored expectation is an error by itself.
    """

    name: str
    frame: str  # "rows" (one row per example) or "classes" (one row per label)
    gx_class: str
    kwargs: dict[str, Any]
    description: str
    mirrored_by: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------- the stage core


def run(
    splits: Mapping[str, pd.DataFrame],
    labels: Mapping[str, int],
    reference_labels: Mapping[str, int] | None,
    ingest_info: Mapping[str, Any],
    vp: ValidateParams,
    datadocs_dir: Path,
    *,
    max_len: int = 0,
    text_level: str = "word",
) -> dict[str, Any]:
    """Checks + GX + fingerprint → {"results": results.json body, "fingerprint": fingerprint.json body}.

    `max_len` / `text_level` are data.max_len / data.text_level (truncation and OOV checks).
    Data Docs are built into `datadocs_dir`.
    """
    check_schema(splits)
    delimiter = checks.label_delimiter(ingest_info)
    ordered = checks.ordered_splits(splits)
    specs = {name: expectation_specs(name, splits, labels, vp, delimiter) for name, _ in ordered}
    frames = {name: gx_frames(frame, labels, delimiter) for name, frame in ordered}
    # GX first: hashing each batch is its memory peak, best paid before the input keys exist.
    expectations = run_expectations(frames, specs, Path(datadocs_dir))
    del frames
    keys = checks.split_keys(splits)
    findings = checks.run_checks(
        splits, labels, reference_labels, ingest_info, vp, max_len=max_len, text_level=text_level, keys=keys
    )
    findings += expectation_findings(expectations)
    results = {
        "success": not any(f.severity == "error" for f in findings),
        "findings": [f.to_dict() for f in findings],
        "expectations": [{k: v for k, v in e.items() if k != "spec"} for e in expectations],
    }
    fp = fingerprint(splits, labels, delimiter=delimiter, order_z_threshold=vp.order_z_threshold, keys=keys)
    return {"results": results, "fingerprint": fp}


def check_schema(splits: Mapping[str, pd.DataFrame]) -> None:
    """The prepared-data schema (docs/architecture.md) with a train split; anything else is bad input."""
    if "train" not in splits:
        raise LosstraceError("validate", "no train split", "run `losstrace ingest` to write data/prepared")
    for name, frame in splits.items():
        missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
        if missing:
            raise LosstraceError(
                f"{name} split", f"missing column(s) {', '.join(missing)}", "re-run ingest; see docs/architecture.md"
            )


# ---------------------------------------------------------------- expectations as data


def gx_frames(frame: pd.DataFrame, labels: Mapping[str, int], delimiter: str | None) -> dict[str, pd.DataFrame]:
    """The frames GX validates: the rows plus `same_as_prev`, and one row per class with its count."""
    rows = frame[list(REQUIRED_COLUMNS)].assign(same_as_prev=checks.same_as_prev(frame["label"]))
    counts = checks.class_counts(frame["label"], labels, delimiter)
    classes = pd.DataFrame({"label": list(counts), "count": list(counts.values())})
    return {"rows": rows, "classes": classes}


def expectation_specs(
    split: str,
    splits: Mapping[str, pd.DataFrame],
    labels: Mapping[str, int],
    vp: ValidateParams,
    delimiter: str | None,
) -> list[Spec]:
    """The suite of one split; thresholds come from params and the split's own counts."""
    frame = splits[split]
    specs = [
        Spec(
            "label_not_null",
            "rows",
            "ExpectColumnValuesToNotBeNull",
            {"column": "label"},
            "label_not_null: expect_column_values_to_not_be_null(label): every row has a label",
        ),
        Spec(
            "x_not_null",
            "rows",
            "ExpectColumnValuesToNotBeNull",
            {"column": "x"},
            "x_not_null: expect_column_values_to_not_be_null(x): every row has an input",
        ),
        _label_set_spec("label_in_label_map", sorted(labels), delimiter, "labels.json"),
    ]
    if split != "train":
        train_labels = sorted(set(checks.label_parts(splits["train"]["label"], delimiter)))
        specs.append(_label_set_spec("label_in_train_labels", train_labels, delimiter, "the train split"))
    specs.append(
        Spec(
            "length_at_least_1",
            "rows",
            "ExpectColumnValuesToBeBetween",
            {"column": "length", "min_value": 1},
            "length_at_least_1: expect_column_values_to_be_between(length, min 1): no empty sequences",
        )
    )
    specs.append(_order_spec(frame["label"], vp))
    specs.append(_balance_spec(checks.class_counts(frame["label"], labels, delimiter), vp))
    return specs


def _label_set_spec(name: str, allowed: list[str], delimiter: str | None, source: str) -> Spec:
    """Single-label: values in the set. Multi-label rows hold joined labels: every part must be in the set."""
    shown = ", ".join(allowed[:20]) + (", ..." if len(allowed) > 20 else "")
    if delimiter:
        part = "(?:" + "|".join(re.escape(a) for a in allowed) + ")"
        regex = f"^{part}(?:{re.escape(delimiter)}{part})*$"
        return Spec(
            name,
            "rows",
            "ExpectColumnValuesToMatchRegex",
            {"column": "label", "regex": regex},
            f"{name}: expect_column_values_to_match_regex(label): every part of each "
            f"'{delimiter}'-joined label is one of {source}'s labels ({shown})",
            "label_set_mismatch",
        )
    return Spec(
        name,
        "rows",
        "ExpectColumnValuesToBeInSet",
        {"column": "label", "value_set": allowed},
        f"{name}: expect_column_values_to_be_in_set(label): labels are in {source} ({shown})",
        "label_set_mismatch",
    )


def _order_spec(labels: pd.Series, vp: ValidateParams) -> Spec:
    """The runs test in GX terms: z >= threshold  ⇔  mean(same_as_prev) <= a bound fixed by the class counts."""
    rt = checks.runs_test(labels)
    limit = round(rt.same_rate_limit(vp.order_z_threshold), 6)
    return Spec(
        "label_order_random",
        "rows",
        "ExpectColumnMeanToBeBetween",
        {"column": "same_as_prev", "max_value": limit},
        f"label_order_random: expect_column_mean_to_be_between(same_as_prev, max {limit}): "
        f"share of rows with the previous row's label at most {limit}, "
        f"i.e. runs-test z at least {vp.order_z_threshold} "
        f"(rows not grouped by label; random order gives about {round(rt.expected_same_rate, 3)})",
        "label_order_clustered",
        {"runs": rt.runs, "expected_runs": round(rt.expected, 6), "runs_z": round(rt.z, 6)},
    )


def _balance_spec(counts: Mapping[str, int], vp: ValidateParams) -> Spec:
    """min class count >= max class count / validate.max_class_ratio."""
    largest = max(counts.values(), default=0)
    bound = round(largest / vp.max_class_ratio, 6)
    return Spec(
        "class_balance",
        "classes",
        "ExpectColumnMinToBeBetween",
        {"column": "count", "min_value": bound},
        f"class_balance: expect_column_min_to_be_between(count, min {bound}): the rarest class has at least "
        f"1/{vp.max_class_ratio} of the largest class's {largest} rows",
        "class_imbalance",
    )


def expectation_findings(expectations: list[dict[str, Any]]) -> list[Finding]:
    """Errors for failed expectations that no check judges (the others already produced findings)."""
    out = []
    for e in expectations:
        spec: Spec = e["spec"]
        if e["success"] or spec.mirrored_by:
            continue
        out.append(
            Finding(
                "expectation_failed",
                "error",
                {
                    "observed": e["observed"],
                    "expectation": e["expectation"],
                    "name": spec.name,
                    "column": spec.kwargs.get("column"),
                },
                f"fix the offending rows in the source (see Data Docs: {spec.name})",
                e["split"],
            )
        )
    return out


# ---------------------------------------------------------------- Great Expectations


def run_expectations(
    frames: Mapping[str, Mapping[str, pd.DataFrame]], specs: Mapping[str, list[Spec]], datadocs_dir: Path
) -> list[dict[str, Any]]:
    """Validate each split's frames with a checkpoint that also builds Data Docs into `datadocs_dir`.

    A checkpoint hands the same dataframe to all its validation definitions, so each
    (split, frame) pair gets its own suite and checkpoint; all share one run id.
    """
    gx = _import_gx()
    from great_expectations.core.run_identifier import RunIdentifier

    context = _context(gx, datadocs_dir)
    source = context.data_sources.add_pandas("prepared")
    run_id = RunIdentifier(run_name="losstrace-validate", run_time=RUN_TIME)
    records: list[dict[str, Any]] = []
    outcomes: dict[str, bool] = {}  # suite name → passed
    with _quiet():
        for split, split_frames in frames.items():
            for kind, df in split_frames.items():
                chosen = [s for s in specs[split] if s.frame == kind]
                name = split if kind == "rows" else f"{split}_{kind}"
                result = _checkpoint(gx, context, source, name, chosen).run(
                    batch_parameters={"dataframe": df}, run_id=run_id
                )
                records += _records(split, chosen, result)
                outcomes[name] = bool(result.success)
    make_offline(Path(datadocs_dir), outcomes)
    return records


def _import_gx() -> Any:
    """Import GX lazily (it is slow) with analytics off: this pipeline must run offline."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx

    return gx


def _context(gx: Any, datadocs_dir: Path) -> Any:
    """An in-memory context, analytics and progress bars off, whose only Data Docs site is a folder we own."""
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    site = {
        "class_name": "SiteBuilder",
        "show_how_to_buttons": False,
        "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(datadocs_dir.resolve())},
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder", "show_cta_footer": False},
    }
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        data_docs_sites={SITE: site},
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
    )
    return gx.get_context(mode="ephemeral", project_config=config)


def _checkpoint(gx: Any, context: Any, source: Any, name: str, specs: list[Spec]) -> Any:
    """Asset → batch → suite → validation definition → checkpoint with the Data Docs action.

    Each expectation's `description` is what Data Docs shows, so it names both our
    check and the GX expectation with its bounds; `meta.losstrace` maps results back.
    """
    asset = source.add_dataframe_asset(name)
    batch = asset.add_batch_definition_whole_dataframe(name)
    suite = context.suites.add(gx.ExpectationSuite(name=name))
    for spec in specs:
        suite.add_expectation(
            getattr(gx.expectations, spec.gx_class)(
                **spec.kwargs, description=spec.description, meta={"losstrace": spec.name, **spec.meta}
            )
        )
    vd = context.validation_definitions.add(gx.ValidationDefinition(name=name, data=batch, suite=suite))
    action = gx.checkpoint.UpdateDataDocsAction(name="datadocs", site_names=[SITE])
    return context.checkpoints.add(
        gx.Checkpoint(name=name, validation_definitions=[vd], actions=[action], result_format="SUMMARY")
    )


def _records(split: str, specs: list[Spec], checkpoint_result: Any) -> list[dict[str, Any]]:
    """GX results → results.json "expectations" rows, in suite order."""
    by_name: dict[str, Any] = {}
    for validation in checkpoint_result.run_results.values():
        for r in validation.results:
            by_name[(r.expectation_config.meta or {}).get("losstrace")] = r
    out = []
    for spec in specs:
        r = by_name[spec.name]
        out.append(
            {
                "split": split,
                "name": spec.name,
                "expectation": r.expectation_config.type,
                "column": spec.kwargs.get("column"),
                "success": bool(r.success),
                "observed": _observed(r),
                "spec": spec,
            }
        )
    return out


def _observed(r: Any) -> Any:
    """The observed value, or for row-wise expectations the unexpected count and a few examples."""
    info = r.exception_info or {}
    if info.get("raised_exception"):
        return {"exception": str(info.get("exception_message"))[:_TEXT_LIMIT]}
    res = r.result or {}
    if "observed_value" in res:
        return _jsonable(res["observed_value"])
    return {
        "unexpected_count": _jsonable(res.get("unexpected_count", 0)),
        "unexpected_percent": _jsonable(res.get("unexpected_percent", 0.0)),
        "examples": [_jsonable(v) for v in (res.get("partial_unexpected_list") or [])[:5]],
    }


def _jsonable(v: Any) -> Any:
    """numpy/NaN/long values → short, JSON-safe, 6-decimal values."""
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, np.ndarray)):
        return [_jsonable(x) for x in list(v)[:20]]
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float):
        return None if np.isnan(v) else round(v, 6) if np.isfinite(v) else str(v)
    if v is None or isinstance(v, (bool, int)):
        return v
    return str(v)[:_TEXT_LIMIT]


class _quiet:
    """Silence GX's loggers and library warnings while validating (stage logs stay readable)."""

    def __enter__(self) -> None:
        self._logger = logging.getLogger("great_expectations")
        self._level = self._logger.level
        self._logger.setLevel(logging.ERROR)
        self._warnings = warnings.catch_warnings()
        self._warnings.__enter__()
        warnings.simplefilter("ignore")

    def __exit__(self, *exc: object) -> None:
        self._warnings.__exit__(*exc)
        self._logger.setLevel(self._level)


# ---------------------------------------------------------------- I/O shell


def main(prepared_dir: Path, out_dir: Path, params_path: Path, reference_labels_path: Path | None = None) -> int:
    """Read prepared data, validate, publish outputs; exit 1 (via LosstraceError) on an error finding."""
    p = params_mod.load(params_path)
    splits, labels, ingest_info = load_prepared(Path(prepared_dir))
    reference = load_reference(reference_labels_path)
    out_dir = Path(out_dir)
    _import_gx()  # its start-up first, so the stage reports the suite's own time
    with Staging(out_dir.parent) as stage:
        suite_start = time.perf_counter()
        result = run(
            splits,
            labels,
            reference,
            ingest_info,
            p.validate,
            stage.path(out_dir / "datadocs"),
            max_len=p.data.max_len,
            text_level=p.data.text_level,
        )
        suite_seconds = time.perf_counter() - suite_start
        write_json(stage.path(out_dir / "results.json"), result["results"])
        write_json(stage.path(out_dir / "fingerprint.json"), result["fingerprint"])
    findings = [Finding(**f) for f in result["results"]["findings"]]
    print(f"{summary_line(findings, out_dir)} (checks and suite {suite_seconds:.1f} s)")
    raise_on_errors(findings, out_dir)
    return 0


def load_prepared(prepared_dir: Path) -> tuple[dict[str, pd.DataFrame], dict[str, int], dict[str, Any]]:
    """The ingest outputs: {split: frame}, labels.json, ingest.json."""
    splits = {}
    for name in checks.SPLITS:
        splits[name] = read_prepared(prepared_dir / f"{name}.parquet")
    return splits, dict(read_json(prepared_dir / "labels.json")), dict(read_json(prepared_dir / "ingest.json"))


def load_reference(path: Path | None) -> dict[str, int] | None:
    """The committed label map, or None when there is none yet (first run: nothing to compare)."""
    if path is None or not Path(path).exists():
        return None
    ref = read_json(path)
    if not isinstance(ref, dict) or not all(isinstance(v, int) for v in ref.values()):
        raise LosstraceError(str(path), "not a {label: index} map", "copy data/prepared/labels.json there")
    return ref


def summary_line(findings: list[Finding], out_dir: Path) -> str:
    by = {s: [f for f in findings if f.severity == s] for s in ("error", "warning")}
    codes = sorted({f"{f.code}@{f.where}" for f in by["warning"]})
    return (
        f"validate: {len(by['error'])} error(s), {len(by['warning'])} warning(s)"
        + (f" [{', '.join(codes)}]" if codes else "")
        + f"; see {out_dir / 'results.json'}"
    )


def raise_on_errors(findings: list[Finding], out_dir: Path) -> None:
    """One line naming the first error's check, split and observed value (the rest are in results.json)."""
    errors = [f for f in findings if f.severity == "error"]
    if not errors:
        return
    first = errors[0]
    more = f" (+{len(errors) - 1} more error(s))" if len(errors) > 1 else ""
    what = f"{first.code} on {first.where}: {checks.describe(first)}{more}"
    raise LosstraceError(
        "validate",
        " ".join(what.split()),  # one line, whatever the labels contain
        f"{first.suggestion}; details in {out_dir / 'results.json'}",
        exit_code=1,
    )
