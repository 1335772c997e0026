"""Load user data files (CSV, TSV, Parquet, NPZ) into the prepared-data schema.

Why this module is strict about accounting: a reader that silently merges, drops or
reinterprets lines changes the training data without anyone noticing (the classic
case is a CSV quote parser eating the double quotes in the UCI amazon reviews and
merging lines). So every data line read ends up either as a row of the frame or as a
`Reject` naming its file and line, and `lines_read == len(frame) + len(rejects)`.

Rejected rows are not errors here: the ingest stage decides between failing and
skipping (`data.on_bad_rows`). Problems that make the whole source unusable (missing
file, unknown format, missing column, corrupt Parquet/NPZ, a single class, every line
rejected) raise `LosstraceError`.

Frame columns (docs/architecture.md): `x` (str | list[int] | list[list[float]]),
`label` (str), `length` (int64), `source_file` (str), `line` (int64, 1-based).
"""

from __future__ import annotations

import csv
import difflib
import glob
import re
import zipfile
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from losstrace.data import featurize
from losstrace.errors import LosstraceError, first_line
from losstrace.params import DataParams

__all__ = ["Reject", "Loaded", "load_files", "matched_paths", "detect_format", "FORMAT_BY_EXTENSION"]

FORMAT_BY_EXTENSION = {".csv": "csv", ".tsv": "tsv", ".txt": "tsv", ".parquet": "parquet", ".npz": "npz"}
FRAME_COLUMNS = ("x", "label", "length", "source_file", "line")

# A token-id cell: ASCII digits separated by whitespace ("12 5 5 9").
_TOKENS_RE = re.compile(r"\s*[0-9]+(?:\s+[0-9]+)*\s*")  # \s as in str.split()
_GLOB_CHARS = re.compile(r"[*?\[]")
_CHECK_FIX = "check data.format, data.header, data.text_column, data.label_column and data.input"
_PARQUET_FIX = "re-export the file, e.g. with DataFrame.to_parquet"


@dataclass(frozen=True)
class Reject:
    """One data line that did not become a row, and why."""

    file: str
    line: int
    reason: str


@dataclass
class Loaded:
    """The parsed rows, the rejected lines, and the input kind shared by all files."""

    frame: pd.DataFrame
    rejects: list[Reject]
    input_kind: str  # "text" | "tokens" | "numeric"
    lines_read: int  # data lines seen (headers excluded) == len(frame) + len(rejects)


@dataclass
class _Part:
    """Rows of one file after structural parsing, before `x` is interpreted.

    `kind` is None while `cells` still hold raw strings (text or token ids are decided
    across all files); a format that fixes the kind (a list column, NPZ) sets it.
    Labels are already normalised; rows with a bad label are already in `rejects`.
    """

    file: str
    column: str  # how reasons name the x column
    kind: str | None = None
    cells: list[Any] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    lines: array = field(default_factory=lambda: array("q"))
    rejects: list[Reject] = field(default_factory=list)
    lines_read: int = 0

    def add(self, line: int, cell: Any, label: str) -> None:
        self.cells.append(cell)
        self.labels.append(label)
        self.lines.append(line)

    def reject(self, line: int, reason: str) -> None:
        self.rejects.append(Reject(self.file, line, reason))


# --------------------------------------------------------------------------- entry


def load_files(data: DataParams, root: Path) -> Loaded:
    """Read every file matched by `data.source` (relative to `root`), in sorted order."""
    root = Path(root)
    files = _match_files(data.source, root)
    parts = [_read_file(path, shown, data) for path, shown in files]
    kind = _resolve_kind(parts, data)

    frames: list[dict[str, Any]] = []
    rejects: list[Reject] = []
    lines_read = 0
    for part in parts:
        columns = _convert(part, kind, data)
        part.rejects.sort(key=lambda r: r.line)
        if not columns["line"]:
            _raise_all_rejected(part)
        frames.append(columns)
        rejects.extend(part.rejects)
        lines_read += part.lines_read

    if kind == "numeric":
        _check_channels(frames)
    frame = _build_frame(frames)
    where = files[0][1] if len(files) == 1 else data.source
    _check_classes(frame["label"], len(rejects), data, where)
    return Loaded(frame=frame, rejects=rejects, input_kind=kind, lines_read=lines_read)


def detect_format(path: Path | str, data: DataParams) -> str:
    """`data.format`, or the format implied by the file extension when it is auto."""
    if data.format != "auto":
        return data.format
    suffix = Path(path).suffix.lower()
    if suffix not in FORMAT_BY_EXTENSION:
        raise LosstraceError(
            str(path),
            f"cannot tell the file format from the extension {suffix or '(none)'!r}",
            "set data.format to csv, tsv, parquet or npz",
        )
    return FORMAT_BY_EXTENSION[suffix]


# ------------------------------------------------------------------- file matching


def matched_paths(source: str, root: Path) -> list[Path]:
    """The files `source` (a path or glob) names, as load_files reads them."""
    return [path for path, _ in _match_files(source, root)]


def _match_files(source: str, root: Path) -> list[tuple[Path, str]]:
    """(path to open, path to show) for every file of the source, sorted by path.

    The shown path is the path as matched, relative to `root` when it lies below it,
    so rejects and rows name files the way the user wrote `data.source`.
    """
    if not _GLOB_CHARS.search(source):
        path = Path(source) if Path(source).is_absolute() else root / source
        if path.is_dir():
            glob_hint = f"{source.rstrip('/')}/*.tsv"
            raise LosstraceError(source, "is a directory", f"set data.source to a file or a glob such as {glob_hint}")
        if not path.is_file():
            raise LosstraceError(source, "file not found", f"check data.source; relative paths start at {root}")
        return [(path, _shown(source, root))]
    matched = sorted(glob.glob(source, root_dir=root, recursive=True))
    files = [(root / m if not Path(m).is_absolute() else Path(m), _shown(m, root)) for m in matched]
    files = [(p, s) for p, s in files if p.is_file()]
    if not files:
        raise LosstraceError(
            source, "no files match this pattern", f"check data.source; relative patterns start at {root}"
        )
    return files


def _shown(matched: str, root: Path) -> str:
    path = Path(matched)
    if path.is_absolute():
        try:
            return path.relative_to(root.resolve()).as_posix()
        except ValueError:
            return path.as_posix()
    return path.as_posix()


def _read_file(path: Path, shown: str, data: DataParams) -> _Part:
    fmt = detect_format(shown, data)
    if path.stat().st_size == 0:
        raise LosstraceError(shown, "file is empty", "point data.source at a file with data")
    if fmt == "parquet":
        return _read_parquet(path, shown, data)
    if fmt == "npz":
        return _read_npz(path, shown, data)
    if fmt == "tsv":
        with open(path, "rb") as fh:
            return _read_delimited(_tsv_records(fh), shown, data, "tab-separated")
    old_limit = csv.field_size_limit(2**31 - 1)  # a long text is data, not a CSV error
    try:
        with open(path, "rb") as fh:
            return _read_delimited(_csv_records(fh), shown, data, "comma-separated")
    finally:
        csv.field_size_limit(old_limit)


# ------------------------------------------------------------------------- labels


def _label_normalizer(data: DataParams) -> Callable[[Any], str | None]:
    """str(label).strip(), multi-label sets sorted and joined; None = empty label.

    Results are cached per raw value: labels repeat, so this both saves time and
    lets all rows share a handful of label string objects (less memory).
    """
    cache: dict[Any, str | None] = {}
    delim = data.label_delimiter

    def normalize(value: Any) -> str | None:
        try:
            return cache[value]
        except (KeyError, TypeError):
            pass
        out = _normalize_label(value, data.multilabel, delim)
        try:
            cache[value] = out
        except TypeError:  # unhashable value: just don't cache it
            pass
        return out

    return normalize


def _label_values(values: np.ndarray) -> list[Any]:
    """Labels of a numeric array (NPZ y, a Parquet number column) as Python values.

    Floats go through their own type's shortest repr: float32 0.1 is "0.1", where
    `tolist()` would widen it to 0.10000000149011612 and make a class of that.
    """
    if values.dtype.kind != "f":
        return values.tolist()
    return [float(str(v)) if np.isfinite(v) else float("nan") for v in values]


def _normalize_label(value: Any, multilabel: bool, delim: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, float):
        if value != value:  # NaN
            return None
        if value.is_integer():  # 1.0 from a float column with gaps means label "1"
            value = int(value)
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    text = str(value).strip()
    if multilabel:
        text = delim.join(sorted({p.strip() for p in text.split(delim)} - {""}))
    return text or None


# ---------------------------------------------------------------------- CSV / TSV


# A record is (first physical line, fields, None) or (line, None, reject reason).
Record = tuple[int, list[str] | None, str | None]


def _utf8_reason(err: UnicodeDecodeError) -> str:
    bad = err.object[err.start : err.start + 1].hex()
    return f"not valid UTF-8 (byte 0x{bad} at byte {err.start + 1} of the line)"


def _strip_newline(line: str) -> str:
    if line.endswith("\n"):
        line = line[:-1]
        if line.endswith("\r"):
            line = line[:-1]
    return line


def _tsv_records(fh: BinaryIO) -> Iterator[Record]:
    """One record per physical line, split on tabs, no quote processing at all."""
    for lineno, raw in enumerate(fh, 1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            yield lineno, None, _utf8_reason(err)
            continue
        if lineno == 1:
            line = line.removeprefix("\ufeff")
        yield lineno, _strip_newline(line).split("\t"), None


def _csv_records(fh: BinaryIO) -> Iterator[Record]:
    """CSV records (quoted fields may span lines), each tagged with its first line.

    Lines are decoded one by one so an invalid byte is reported on its own physical
    line; the csv module then sees a replacement character and the record is
    rejected. A malformed record (strict quoting) becomes a reject, and the reader
    carries on with the next line, so no line disappears unaccounted.
    """
    bad_lines: dict[int, str] = {}

    def decoded() -> Iterator[str]:
        for lineno, raw in enumerate(fh, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                bad_lines[lineno] = _utf8_reason(err)
                line = raw.decode("utf-8", "replace")
            yield line.removeprefix("\ufeff") if lineno == 1 else line

    reader = csv.reader(decoded(), strict=True)
    start = 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            yield start, None, f"malformed CSV record ({err}) spanning lines {start}-{reader.line_num}"
            start = reader.line_num + 1
            continue
        end = reader.line_num
        bad = next((n for n in range(start, end + 1) if n in bad_lines), None) if bad_lines else None
        yield (bad, None, bad_lines[bad]) if bad is not None else (start, row, None)
        start = end + 1


def _is_blank(fields: list[str]) -> bool:
    return not fields or (len(fields) == 1 and not fields[0].strip())


def _read_delimited(records: Iterable[Record], shown: str, data: DataParams, sep: str) -> _Part:
    """Header, field counts, blank lines and labels of a CSV/TSV file.

    With a header the columns are found by name and every record must have the
    header's field count. Without one, text is column 0 and the label the last
    column, and the expected field count is the file's most common one (at least 2),
    decided after the single pass so a bad first line cannot set it.
    """
    normalize = _label_normalizer(data)
    header: tuple[int, list[str]] | None = None
    text_i, label_i = 0, -1
    part = _Part(shown, column=repr(data.text_column) if data.header else "1 (text)")
    pending_blank: list[int] = []  # blank lines count only if data follows them
    counts = array("q")  # headerless: field count of each kept row, for the majority check

    for lineno, fields, reason in records:
        if fields is not None and _is_blank(fields):
            pending_blank.append(lineno)
            continue
        if data.header and header is None:
            if reason is not None:
                raise LosstraceError(
                    f"{shown}:{lineno}",
                    f"unreadable header line: {reason}",
                    "fix the header line, or set data.header: false",
                )
            header = (lineno, fields)
            text_i, label_i = _header_columns(fields, shown, lineno, data)
            pending_blank.clear()  # blank lines above the header are not data lines
            continue
        for blank in pending_blank:
            part.reject(blank, "empty line")
        part.lines_read += len(pending_blank) + 1
        pending_blank.clear()
        if reason is not None:
            part.reject(lineno, reason)
            continue
        if header is not None and len(fields) != len(header[1]):
            part.reject(lineno, _field_count_reason(len(fields), len(header[1]), sep))
            continue
        label = normalize(fields[label_i])
        if label is None:
            part.reject(lineno, "empty label")
            continue
        part.add(lineno, fields[text_i], label)
        if header is None:
            counts.append(len(fields))

    if part.lines_read == 0:
        raise _no_data_lines(shown, header)
    if header is None:
        _drop_wrong_field_counts(part, counts, sep)
    return part


def _no_data_lines(shown: str, header: tuple[int, list[str]] | None) -> LosstraceError:
    """The error for a file with no data lines: empty, or a header line only."""
    if header is None:
        return LosstraceError(shown, "file is empty (no data lines)", "point data.source at a file with data")
    return LosstraceError(
        f"{shown}:{header[0]}",
        "only a header line, no data lines",
        "add data rows, or set data.header: false if this line is data",
    )


def _header_columns(fields: list[str], shown: str, lineno: int, data: DataParams) -> tuple[int, int]:
    names = [f.strip() for f in fields]
    missing = [
        (k, c) for k, c in (("text_column", data.text_column), ("label_column", data.label_column)) if c not in names
    ]
    if missing:
        raise _missing_columns(f"{shown}:{lineno}", missing, names, header_hint=True)
    return names.index(data.text_column), names.index(data.label_column)


def _missing_columns(
    where: str, missing: list[tuple[str, str]], found: list[str], header_hint: bool = False
) -> LosstraceError:
    """Name the columns found and how to point data.text_column/label_column at them."""
    shown_found = ", ".join(repr(n[:40]) for n in found[:20]) + (", ..." if len(found) > 20 else "")
    what = "no column " + " or ".join(repr(c) for _, c in missing) + f" (columns found: {shown_found})"
    fix = "set " + " and ".join(f"data.{key}" for key, _ in missing) + " to one of the columns found"
    hints = []
    for _, col in missing:
        for close in difflib.get_close_matches(col, found, n=1):
            hints.append(repr(close) if len(missing) == 1 else f"{close!r} for {col!r}")
    if hints:
        fix += f" (did you mean {', '.join(hints)}?)"
    if header_hint:
        fix += ", or set data.header: false if the first line is data"
    return LosstraceError(where, what, fix)


def _field_count_reason(found: int, expected: int, sep: str) -> str:
    return f"{found} {sep} field{'s' if found != 1 else ''}, expected {expected}"


def _drop_wrong_field_counts(part: _Part, counts: array, sep: str) -> None:
    """Headerless files: reject rows whose field count differs from the majority's."""
    tally = Counter(counts)
    expected = max(2, tally.most_common(1)[0][0]) if tally else 2
    if len(tally) == 1 and expected in tally:
        return
    keep = [i for i, n in enumerate(counts) if n == expected]
    for i, n in enumerate(counts):
        if n != expected:
            part.reject(
                part.lines[i], _field_count_reason(n, expected, sep) + (" (text and label)" if expected == 2 else "")
            )
    _keep_rows(part, keep)


def _keep_rows(part: _Part, keep: list[int]) -> None:
    part.cells = [part.cells[i] for i in keep]
    part.labels = [part.labels[i] for i in keep]
    part.lines = array("q", (part.lines[i] for i in keep))


# ------------------------------------------------------------------------ Parquet


def _read_parquet(path: Path, shown: str, data: DataParams) -> _Part:
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowException, OSError, ValueError) as err:
        raise LosstraceError(shown, f"not a valid Parquet file ({first_line(err)})", _PARQUET_FIX) from None
    names = list(schema.names)
    missing = [
        (k, c) for k, c in (("text_column", data.text_column), ("label_column", data.label_column)) if c not in names
    ]
    if missing:
        raise _missing_columns(shown, missing, names)
    try:
        table = pq.read_table(path, columns=list(dict.fromkeys([data.text_column, data.label_column])))
    except (pa.ArrowException, OSError, ValueError) as err:
        raise LosstraceError(shown, f"corrupt Parquet file ({first_line(err)})", _PARQUET_FIX) from None

    column = table.column(data.text_column)
    part = _Part(shown, column=repr(data.text_column), kind=_parquet_kind(column.type, shown, data))
    cells = column.to_pylist()
    labels = _parquet_labels(table.column(data.label_column), shown, data)
    del table, column
    part.lines_read = len(cells)
    normalize = _label_normalizer(data)
    for i, (cell, raw_label) in enumerate(zip(cells, labels), 1):
        label = normalize(raw_label)
        if label is None:
            part.reject(i, "empty label")
        else:
            part.add(i, cell, label)
    if part.lines_read == 0:
        raise LosstraceError(shown, "file has no rows", "point data.source at a file with data")
    return part


def _parquet_labels(column: pa.ChunkedArray, shown: str, data: DataParams) -> list[Any]:
    """Raw label values of a Parquet column: a list column is a multi-label set per row."""
    tp = column.type
    if _is_list(tp):
        if not data.multilabel:
            raise LosstraceError(
                shown,
                f"label column {data.label_column!r} holds lists ({tp})",
                "set data.multilabel: true for multi-label data",
            )
        return [
            None if v is None else data.label_delimiter.join(str(x) for x in v if x is not None)
            for v in column.to_pylist()
        ]
    if pa.types.is_floating(tp):
        return _label_values(column.to_numpy(zero_copy_only=False))
    return column.to_pylist()


def _parquet_kind(tp: pa.DataType, shown: str, data: DataParams) -> str | None:
    """None (raw strings), "tokens" or "numeric" from the x column's Arrow type."""
    if pa.types.is_dictionary(tp):
        tp = tp.value_type
    if pa.types.is_string(tp) or pa.types.is_large_string(tp):
        return None
    if _is_list(tp):
        inner = tp.value_type
        if pa.types.is_integer(inner):
            return "numeric" if data.input == "numeric" else "tokens"
        if pa.types.is_floating(inner):
            return "numeric"
        if _is_list(inner) and (pa.types.is_floating(inner.value_type) or pa.types.is_integer(inner.value_type)):
            return "numeric"
    raise LosstraceError(
        shown,
        f"column {data.text_column!r} has type {tp}",
        "it must hold text, a list of integer token ids, or a list of lists of numbers (T x C)",
    )


def _is_list(tp: pa.DataType) -> bool:
    return pa.types.is_list(tp) or pa.types.is_large_list(tp) or pa.types.is_fixed_size_list(tp)


# ---------------------------------------------------------------------------- NPZ


def _read_npz(path: Path, shown: str, data: DataParams) -> _Part:
    """x (N, T, C) NaN-padded past each sequence's end, y (N,).

    A sequence ends at its first all-NaN time step. Non-NaN values after that step
    would be silently cut off, so such rows are rejected instead; partial NaN or inf
    before the end is rejected later by the numeric check.
    """
    x, y = _npz_arrays(path, shown)
    if x.ndim == 2:
        x = x[:, :, None]  # (N, T) is a univariate series
    if x.ndim != 3:
        raise LosstraceError(
            shown, f"x has shape {x.shape}", "store x as (N, T, C), NaN-padded past each sequence's end"
        )
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise LosstraceError(shown, f"y has shape {y.shape}", "store y as (N,) labels (one per row of x)")
    if len(x) != len(y):
        raise LosstraceError(
            shown, f"x has {len(x)} rows but y has {len(y)}", "save x and y with the same first dimension"
        )
    if len(x) == 0:
        raise LosstraceError(shown, "file has no rows", "point data.source at a file with data")

    x = x.astype(np.float64, copy=False)
    present = ~np.isnan(x).all(axis=2)  # (N, T): does this step hold any value?
    steps = x.shape[1]
    ends = np.where(present.all(axis=1), steps, present.argmin(axis=1))
    after_end = (present & (np.arange(steps)[None, :] >= ends[:, None])).any(axis=1)

    part = _Part(shown, column="x", kind="numeric", lines_read=len(x))
    normalize = _label_normalizer(data)
    for i, (raw_label, end, late) in enumerate(zip(_label_values(y), ends.tolist(), after_end.tolist())):
        label = normalize(raw_label)
        if label is None:
            part.reject(i + 1, "empty label")
        elif end == 0:
            part.reject(i + 1, "empty sequence (the first time step is all NaN)")
        elif late:
            part.reject(i + 1, f"values after the NaN padding that starts at step {end + 1}")
        else:
            part.add(i + 1, x[i, :end].tolist(), label)
    return part


def _npz_arrays(path: Path, shown: str) -> tuple[np.ndarray, np.ndarray]:
    fix = "save with numpy.savez(path, x=x, y=y)"
    try:
        archive = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        raise LosstraceError(shown, f"not a valid NPZ file ({first_line(err)})", fix) from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise LosstraceError(shown, "is a single .npy array, not an NPZ archive", fix)
    with archive:
        missing = [k for k in ("x", "y") if k not in archive.files]
        if missing:
            found = ", ".join(archive.files) or "none"
            raise LosstraceError(shown, f"no array {' or '.join(missing)} (arrays found: {found})", fix)
        arrays = {}
        for key in ("x", "y"):
            try:
                arrays[key] = archive[key]
            except ValueError as err:  # object arrays need pickle, which we never allow
                raise LosstraceError(shown, f"array {key} is not numeric ({first_line(err)})", fix) from None
            except (OSError, EOFError, zipfile.BadZipFile) as err:
                raise LosstraceError(shown, f"corrupt NPZ file ({first_line(err)})", fix) from None
    x, y = arrays["x"], arrays["y"]
    if x.dtype.kind not in "fiu":
        raise LosstraceError(shown, f"x has non-numeric dtype {x.dtype}", "store x as float (N, T, C)")
    if y.dtype.kind not in "biufUS":
        raise LosstraceError(shown, f"y has unsupported dtype {y.dtype}", "store y as int or str labels")
    return x, y


# --------------------------------------------------------------- input kind


def _resolve_kind(parts: list[_Part], data: DataParams) -> str:
    """One input kind for all files: fixed by the column type, or decided from text.

    Raw string cells are token ids when data.input says so, or (auto) when every
    non-empty cell of every file is a run of space-separated integers.
    """
    raw = [p for p in parts if p.kind is None]
    if raw:
        if data.input == "numeric":
            raise LosstraceError(
                raw[0].file,
                f"column {raw[0].column} holds text, not numeric sequences",
                "numeric input needs Parquet list columns or NPZ; set data.input to auto",
            )
        if data.input == "auto":
            as_tokens = all(_TOKENS_RE.fullmatch(c) for p in raw for c in p.cells if c and not c.isspace())
            raw_kind = "tokens" if as_tokens else "text"
        else:
            raw_kind = data.input
        for p in raw:
            p.kind = raw_kind
    kinds = {p.kind for p in parts}
    if len(kinds) > 1:
        listing = ", ".join(f"{p.file}: {p.kind}" for p in parts[:5])
        raise LosstraceError(
            parts[0].file, f"the files hold different input kinds ({listing})", "point data.source at files of one kind"
        )
    kind = kinds.pop()
    if data.input not in ("auto", kind):
        raise LosstraceError(
            parts[0].file,
            f"column {parts[0].column} holds {kind} input, but data.input is {data.input}",
            f"set data.input to {kind} or auto",
        )
    return kind


# ---------------------------------------------------------------- conversion


def _convert(part: _Part, kind: str, data: DataParams) -> dict[str, Any]:
    """Interpret each cell as `kind`; bad cells become rejects. Returns frame columns."""
    cell_fn = {"text": _text_cell_fn(data.text_level), "tokens": _token_cell_fn(), "numeric": _numeric_cell}[kind]
    xs: list[Any] = []
    labels: list[str] = []
    lines = array("q")
    lengths = array("q")
    channels = array("q")  # numeric only: C of each kept row, for the majority check
    for cell, label, line in zip(part.cells, part.labels, part.lines):
        out = cell_fn(cell, part.column)
        if isinstance(out, str):
            part.reject(line, out)
            continue
        x, length = out
        xs.append(x)
        labels.append(label)
        lines.append(line)
        lengths.append(length)
        if kind == "numeric":
            channels.append(len(x[0]))
    part.cells = part.labels = []  # free the raw cells early
    columns = {"x": xs, "label": labels, "length": lengths, "line": lines, "file": part.file}
    if kind == "numeric":
        columns["channels"] = _drop_wrong_channels(part, columns, channels)
    return columns


def _text_cell_fn(level: str) -> Callable[[Any, str], tuple[str, int] | str]:
    def text_cell(cell: Any, column: str) -> tuple[str, int] | str:
        if cell is None or not cell.strip():
            return f"empty text in column {column}"
        n = featurize.token_count(cell, level)
        if n == 0:  # the model would see an empty sequence
            return f"no tokens left in column {column} after lower-casing and stripping punctuation"
        return cell, n

    return text_cell


class _TokenIds(dict):
    """Token string -> int, validated once per distinct token.

    Token files repeat a small vocabulary, so caching makes parsing cheaper than
    int() per token and lets all rows share one int object per id (8 bytes a token
    instead of 36). Only plain ASCII digits count: int() would also take "-3", "+3",
    "1_0" or non-ASCII digits.
    """

    def __missing__(self, token: str) -> int:
        if not (token.isascii() and token.isdigit()):
            raise ValueError(token)
        value = self[token] = int(token)
        return value


def _token_cell_fn() -> Callable[[Any, str], tuple[list[int], int] | str]:
    ids_of = _TokenIds()

    def token_cell(cell: Any, column: str) -> tuple[list[int], int] | str:
        if cell is None:
            return f"missing token sequence in column {column}"
        if isinstance(cell, str):
            try:
                ids = list(map(ids_of.__getitem__, cell.split()))
            except ValueError as bad:
                return f"non-integer token {bad.args[0]!r} in column {column}"
        else:  # an Arrow list<int> cell
            if any(t is None for t in cell):
                return f"missing token id in column {column}"
            ids = cell
            if any(t < 0 for t in ids):
                return f"negative token id {next(t for t in ids if t < 0)} in column {column}"
        if not ids:
            return f"empty token sequence in column {column}"
        return ids, len(ids)

    return token_cell


def _numeric_cell(cell: Any, column: str) -> tuple[list[list[float]], int] | str:
    """A T x C (or T-long univariate) sequence of finite numbers."""
    if cell is None:
        return f"missing sequence in column {column}"
    try:
        arr = np.asarray(cell, dtype=np.float64)  # None inside becomes NaN, caught below
    except (ValueError, TypeError):
        return f"ragged or non-numeric sequence in column {column} (time steps must hold the same number of numbers)"
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        return f"empty or malformed sequence in column {column} (shape {arr.shape})"
    bad = ~np.isfinite(arr)
    if bad.any():
        t, c = np.argwhere(bad)[0]
        return f"missing or non-finite value ({arr[t, c]}) at step {t + 1}, channel {c + 1} in column {column}"
    return arr.tolist(), arr.shape[0]


def _drop_wrong_channels(part: _Part, columns: dict[str, Any], channels: array) -> int | None:
    """Every sequence of a file must have the same channel count C; the majority sets it
    (returned; None for a file with no kept row)."""
    tally = Counter(channels)
    if len(tally) <= 1:
        return next(iter(tally), None)
    expected = tally.most_common(1)[0][0]
    keep = [i for i, c in enumerate(channels) if c == expected]
    for i, c in enumerate(channels):
        if c != expected:
            part.reject(columns["line"][i], f"{c} channels per time step, expected {expected}")
    for key in ("x", "label"):
        columns[key] = [columns[key][i] for i in keep]
    for key in ("length", "line"):
        columns[key] = array("q", (columns[key][i] for i in keep))
    return expected


def _check_channels(frames: list[dict[str, Any]]) -> None:
    """Every file of a numeric source must have the files' common channel count: a file
    with another is a different sensor layout (or the wrong file), not a few bad rows."""
    per_file = {f["file"]: f["channels"] for f in frames if f.get("channels") is not None}
    tally = Counter(per_file.values())
    if len(tally) <= 1:
        return
    expected = tally.most_common(1)[0][0]
    odd = next(name for name, c in per_file.items() if c != expected)
    others = [name for name, c in per_file.items() if c == expected]
    raise LosstraceError(
        odd,
        f"{per_file[odd]} channels per time step, while {', '.join(others[:3])} "
        f"{'has' if len(others) == 1 else 'have'} {expected}",
        "every sequence needs the same channels: fix this file or leave it out of data.source",
    )


# ------------------------------------------------------------------- assembly


def _raise_all_rejected(part: _Part) -> None:
    first = part.rejects[0]
    raise LosstraceError(
        f"{first.file}:{first.line}",
        f"all {part.lines_read} data lines were rejected; the first: {first.reason}",
        _CHECK_FIX,
    )


def _build_frame(parts: list[dict[str, Any]]) -> pd.DataFrame:
    xs: list[Any] = []
    labels: list[str] = []
    files: list[str] = []
    for p in parts:
        xs.extend(p["x"])
        labels.extend(p["label"])
        files.extend([p["file"]] * len(p["label"]))
    lengths = np.concatenate([np.frombuffer(p["length"], dtype=np.int64) for p in parts])
    lines = np.concatenate([np.frombuffer(p["line"], dtype=np.int64) for p in parts])
    x_col = pd.Series(xs, dtype="str" if xs and isinstance(xs[0], str) else object)
    del xs
    return pd.DataFrame(
        {
            "x": x_col,
            "label": pd.Series(labels, dtype="str"),
            "length": lengths,
            "source_file": pd.Series(files, dtype="str"),
            "line": lines,
        },
        columns=list(FRAME_COLUMNS),
    )


def _check_classes(labels: pd.Series, n_rejects: int, data: DataParams, where: str) -> None:
    """A classifier needs two classes; one class usually means a wrong label column."""
    if data.multilabel:
        classes = {c for combo in labels.unique() for c in str(combo).split(data.label_delimiter)}
    else:
        classes = set(labels.unique())
    if len(classes) < 2:
        only = next(iter(classes))
        raise LosstraceError(
            where,
            f"only one class {only!r} after parsing {len(labels)} rows ({n_rejects} lines rejected)",
            f"a classifier needs at least two; check data.label_column ({data.label_column!r})"
            + (" and data.label_delimiter" if data.multilabel else ""),
        )
