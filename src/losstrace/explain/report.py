"""Render diffs and diagnoses: aligned terminal tables, Markdown for CI summaries, and a
self-contained HTML page whose curve plots are inline SVG drawn here (no JS, no CDN:
it must open offline, in a CI artifact viewer or headless Chromium).
"""

from __future__ import annotations

import html
import math
import shutil
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from losstrace.explain import legend
from losstrace.findings import Finding
from losstrace.record.run_record import RunRecord

TABLE_WIDTH = 118  # a wide terminal; the last column wraps to fit
_SECTIONS = (  # (diff key, title, columns)
    ("causes", "Causes (most likely first)", ("change", "symptom", "confidence", "why")),
    ("params", "Params", ("key", "a", "b")),
    ("data", "Data", ("aspect", "split", "a", "b", "detail")),
    ("env", "Environment", ("key", "a", "b")),
    ("behaviour", "Behaviour", ("feature", "a", "b", "change")),
)
# Shown after behaviour when the diff carries it (what each run reached, beside how it behaved).
_OUTCOMES = ("outcomes", "Outcomes (val: last epoch; test: evaluate)", ("metric", "a", "b", "change"))
RUN_COLORS = ("#1f5fbf", "#d9480f")  # run a blue, run b orange: distinguishable for most colour vision


# ---------------------------------------------------------------- text tables


def cell(value: Any) -> str:
    """One table cell: floats to 4 significant digits, None as '-', lists comma-joined."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(cell(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={cell(v)}" for k, v in value.items())
    return str(value)


def sections(diff: dict[str, Any]) -> list[tuple[str, str, tuple[str, ...]]]:
    """The tables to show: the contract's sections, plus outcomes when the diff holds them."""
    return [*_SECTIONS, _OUTCOMES] if "outcomes" in diff else list(_SECTIONS)


def legend_text(diff: dict[str, Any], width: int = TABLE_WIDTH) -> list[str]:
    """`Legend` lines: each term the diff shows, wrapped, and where the rules are documented."""
    out = ["Legend"]
    for term, meaning in legend.terms(diff):
        out += textwrap.wrap(f"{term}: {meaning}", width, initial_indent="  ", subsequent_indent="    ")
    out.append(f"  more: {legend.DOCS}")
    return out


def text_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], width: int = TABLE_WIDTH) -> str:
    """Columns aligned to their widest cell; the last column wraps to what `width` leaves it
    (at least 20 characters), so a very wide earlier cell can still make a line longer."""
    body = [[cell(v) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in body]) for i, h in enumerate(headers)]
    fixed = sum(widths[:-1]) + 2 * (len(headers) - 1)
    widths[-1] = max(20, min(widths[-1], width - fixed))
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip(), "  ".join("-" * w for w in widths)]
    for row in body:
        wrapped = textwrap.wrap(row[-1], widths[-1]) or [""]
        lead = "  ".join(v.ljust(w) for v, w in zip(row[:-1], widths[:-1]))
        lines.append(f"{lead}  {wrapped[0]}".rstrip() if lead else wrapped[0])
        pad = " " * (len(lead) + 2) if lead else ""
        lines += [f"{pad}{more}" for more in wrapped[1:]]
    return "\n".join(lines)


def _run_title(a: RunRecord | None, b: RunRecord | None) -> str:
    names = [f"{tag} = {r.label}" for tag, r in (("a", a), ("b", b)) if r is not None]
    return "losstrace diff" + (f"   {'   '.join(names)}" if names else "")


def render_table(diff: dict[str, Any], a: RunRecord | None = None, b: RunRecord | None = None) -> str:
    """The diff as plain aligned text for a terminal, causes first."""
    out = [_run_title(a, b)]
    for key, title, cols in sections(diff):
        entries = diff.get(key) or []
        out += ["", title]
        out.append(text_table(cols, [[e.get(c) for c in cols] for e in entries]) if entries else "  (no differences)")
    for note in diff.get("notes") or []:
        out += ["", f"note: {note}"]
    out += ["", *legend_text(diff, min(TABLE_WIDTH, terminal_width()))]
    return "\n".join(out) + "\n"


def terminal_width(fallback: int = TABLE_WIDTH) -> int:
    """Columns of the terminal (COLUMNS wins; a pipe gets `fallback`), never under 40."""
    return max(40, shutil.get_terminal_size((fallback, 24)).columns)


def findings_table(findings: Iterable[Finding | dict[str, Any]], width: int | None = None) -> str:
    """A diagnosis (or lint) as one block per finding, wrapped to `width` (default: the terminal's).

    A table cut the sentences that explain a finding; here the message and the why are
    shown whole, then the remaining evidence, then the fix:

        warning  noisy_loss
          why: the batch loss scatters 0.31 around its trend ...
          evidence: batch_size=4, ...
          fix: train.batch_size: 4 → 32
    """
    width = width or terminal_width()
    blocks = []
    for f in findings:
        d = f.to_dict() if isinstance(f, Finding) else f
        blocks.append(_finding_block(d, width))
    return "\n\n".join(blocks) if blocks else "no findings"


def _finding_block(d: dict[str, Any], width: int) -> str:
    ev = dict(d.get("evidence") or {})
    where = d.get("where") or ev.get("where")
    head = f"{d.get('severity', ''):<8} {d.get('code', '')}" + (f"  ({where})" if where else "")
    lines = [head]
    parts = [("", ev.get("message")), ("why: ", ev.get("why")), ("evidence: ", _evidence_text(ev))]
    parts.append(("fix: ", d.get("suggestion")))
    for label, text in parts:
        if text:
            lines += textwrap.wrap(
                f"{label}{text}",
                width,
                initial_indent="  ",
                subsequent_indent="  " + " " * len(label),
                break_on_hyphens=False,
            )
    return "\n".join(lines)


def prescription_text(prescription: list[dict[str, Any]], notes: Sequence[str] = (), width: int | None = None) -> str:
    """The reconciled changes, one block each: `key: from → to`, the findings it answers, why."""
    width = width or terminal_width()
    if not prescription:
        lines = ["prescription: no params change (no warning or error asks for one)"]
    else:
        lines = ["prescription (one change per key; `losstrace fix` re-runs it to verify)"]
    for c in prescription:
        lines.append(f"  {c['key']}: {cell(c['from'])} → {cell(c['to'])}   [{', '.join(c['findings'])}]")
        lines += textwrap.wrap(c["why"], width, initial_indent="      ", subsequent_indent="      ")
    for note in notes:
        lines += textwrap.wrap(f"left out: {note}", width, initial_indent="  ", subsequent_indent="    ")
    return "\n".join(lines)


def _evidence_text(ev: dict[str, Any]) -> str:
    skip = {"why", "message", "where", "threshold_key", "threshold_keys"}
    return ", ".join(f"{k}={cell(v)}" for k, v in ev.items() if k not in skip and v is not None)


def verdict(findings: list[dict[str, Any]], headline: dict[str, Any]) -> str:
    """One line for a run with no error or warning: what it reached, in numbers."""
    infos = sum(1 for f in findings if f.get("severity") == "info")
    note = f"; {infos} note{'s' if infos != 1 else ''} below" if infos else ""
    return f"clean: no problems found. {headline_text(headline)}{note}"


def headline_text(h: dict[str, Any]) -> str:
    """`best val loss 0.1234 at epoch 5/6, final val accuracy 0.9500` from `headline()`."""
    parts = []
    if h.get("best_val_loss") is not None:
        parts.append(f"best val loss {h['best_val_loss']:.4f} at epoch {h['best_epoch']}/{h['epochs']}")
    else:
        parts.append(f"{h.get('epochs', 0)} epochs")
    if h.get("final_val_accuracy") is not None:
        parts.append(f"final val accuracy {h['final_val_accuracy']:.4f}")
    return ", ".join(parts)


def headline(history: pd.DataFrame) -> dict[str, Any]:
    """The numbers a one-line summary gives: epochs run, best val loss and its (1-based)
    epoch, final val accuracy; None where the history lacks the column."""
    out: dict[str, Any] = {"epochs": int(len(history)), "best_val_loss": None, "best_epoch": None}
    out["final_val_accuracy"] = None
    if "val_loss" in history:
        val = pd.to_numeric(history["val_loss"], errors="coerce").reset_index(drop=True)
        if val.notna().any():
            i = int(val.idxmin())
            out.update(best_val_loss=float(val[i]), best_epoch=i + 1)
    if "val_accuracy" in history:
        acc = pd.to_numeric(history["val_accuracy"], errors="coerce").dropna()
        if not acc.empty:
            out["final_val_accuracy"] = float(acc.iloc[-1])
    return out


# ---------------------------------------------------------------- markdown


def _md(value: Any) -> str:
    """A table-safe cell: GitHub renders raw `<` as HTML (`<pad>` would vanish) and `|` splits cells."""
    text = cell(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(diff: dict[str, Any], a: RunRecord | None = None, b: RunRecord | None = None) -> str:
    """GitHub-flavoured Markdown (CI job summaries): a heading, the top cause, then each table."""
    out = [f"## {_run_title(a, b)}", ""]
    causes = diff.get("causes") or []
    if causes:
        top = causes[0]
        out += [
            f"**Most likely:** `{top['change']}` → {_md(top['symptom'])} "
            f"(confidence {cell(top['confidence'])}): {_md(top['why'])}",
            "",
        ]
    for key, title, cols in sections(diff):
        entries = diff.get(key) or []
        out += [f"### {title}", ""]
        if not entries:
            out += ["_no differences_", ""]
            continue
        out.append("| " + " | ".join(cols) + " |")
        out.append("|" + "|".join("---" for _ in cols) + "|")
        out += ["| " + " | ".join(_md(e.get(c)) for c in cols) + " |" for e in entries]
        out.append("")
    out += [f"> {n}" for n in diff.get("notes") or []]
    out += ["", "<details><summary>Legend</summary>", ""]
    out += [f"- `{term}`: {_md(meaning)}" for term, meaning in legend.terms(diff)]
    out += [f"- the rules and tolerances: `{legend.DOCS}`", "", "</details>"]
    return "\n".join(out).rstrip() + "\n"


# ---------------------------------------------------------------- SVG


@dataclass
class Series:
    label: str
    color: str
    x: np.ndarray
    y: np.ndarray
    dash: str = ""  # SVG stroke-dasharray, "" = solid
    width: float = 1.6
    opacity: float = 1.0


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About n round tick values covering [lo, hi] (steps of 1, 2 or 5 x 10^k)."""
    if not math.isfinite(lo) or not math.isfinite(hi) or hi <= lo:
        return [lo]
    raw = (hi - lo) / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    return [round(first + i * step, 12) for i in range(int((hi - first) / step + 1e-9) + 1)]


def downsample(x: np.ndarray, y: np.ndarray, max_points: int = 1200) -> tuple[np.ndarray, np.ndarray]:
    """Keep each bucket's min and max (in order), so noise amplitude and spikes survive."""
    if x.size <= max_points:
        return x, y
    buckets = np.array_split(np.arange(x.size), max_points // 2)
    keep: list[int] = []
    for idx in buckets:
        yy = y[idx]
        if not np.isfinite(yy).any():
            keep.append(int(idx[0]))
            continue
        pair = sorted({int(idx[np.nanargmin(yy)]), int(idx[np.nanargmax(yy)])})
        keep += pair
    k = np.array(keep)
    return x[k], y[k]


def svg_chart(
    series: Sequence[Series], title: str, xlabel: str, ylabel: str, width: int = 680, height: int = 300
) -> str:
    """A line chart as an inline <svg>: axes, round ticks, a legend, lines broken at NaN.

    The y range ends at the 99.5th percentile x 1.1 (explosions would flatten the rest);
    clipped points sit on the top edge.
    """
    ml, mr, mt, mb = 58, 12, 28, 40
    pw, ph = width - ml - mr, height - mt - mb
    xs = np.concatenate([s.x[np.isfinite(s.y)] for s in series] or [np.array([0.0])])
    ys = np.concatenate([s.y[np.isfinite(s.y)] for s in series] or [np.array([0.0])])
    if xs.size == 0:
        xs, ys = np.array([0.0, 1.0]), np.array([0.0, 1.0])
    x0, x1 = float(xs.min()), float(xs.max()) if xs.max() > xs.min() else float(xs.min()) + 1
    y0 = 0.0 if ys.min() >= 0 else float(ys.min())
    y1 = float(np.percentile(ys, 99.5)) * 1.1 if ys.size else 1.0
    y1 = y1 if y1 > y0 else y0 + 1.0

    def px(v: np.ndarray) -> np.ndarray:
        return ml + (v - x0) / (x1 - x0) * pw

    def py(v: np.ndarray) -> np.ndarray:
        return mt + ph - (np.clip(v, y0, y1) - y0) / (y1 - y0) * ph

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{html.escape(title)}">',
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#fff"/>',
        f'<text x="{ml}" y="18" font-size="13" font-weight="600">{html.escape(title)}</text>',
    ]
    for tv in nice_ticks(y0, y1):
        yy = py(np.array([tv]))[0]
        parts.append(
            f'<line x1="{ml}" x2="{ml + pw}" y1="{yy:.1f}" y2="{yy:.1f}" stroke="#e5e5e5"/>'
            f'<text x="{ml - 6}" y="{yy + 4:.1f}" font-size="11" text-anchor="end">{tv:g}</text>'
        )
    for tv in nice_ticks(x0, x1, 8):
        xx = px(np.array([tv]))[0]
        parts.append(
            f'<line x1="{xx:.1f}" x2="{xx:.1f}" y1="{mt + ph}" y2="{mt + ph + 4}" stroke="#555"/>'
            f'<text x="{xx:.1f}" y="{mt + ph + 16}" font-size="11" text-anchor="middle">{tv:g}</text>'
        )
    parts.append(f'<rect x="{ml}" y="{mt}" width="{pw}" height="{ph}" fill="none" stroke="#555"/>')
    parts.append(
        f'<text x="{ml + pw / 2:.0f}" y="{height - 6}" font-size="12" text-anchor="middle">{html.escape(xlabel)}</text>'
    )
    parts.append(
        f'<text x="14" y="{mt + ph / 2:.0f}" font-size="12" text-anchor="middle" '
        f'transform="rotate(-90 14 {mt + ph / 2:.0f})">{html.escape(ylabel)}</text>'
    )
    for s in series:
        parts += _polylines(s, px, py)
    parts += _legend(series, ml + pw - 8, mt + 8)
    parts.append("</svg>")
    return "\n".join(parts)


def _polylines(s: Series, px, py) -> list[str]:
    """One <polyline> per finite stretch: a NaN breaks the line instead of joining across it."""
    ok = np.isfinite(s.y) & np.isfinite(s.x)
    out = []
    dash = f' stroke-dasharray="{s.dash}"' if s.dash else ""
    start = None
    for i in range(ok.size + 1):
        inside = i < ok.size and ok[i]
        if inside and start is None:
            start = i
        elif not inside and start is not None:
            xs, ys = px(s.x[start:i]), py(s.y[start:i])
            pts = " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs, ys))
            out.append(
                f'<polyline points="{pts}" fill="none" stroke="{s.color}" stroke-width="{s.width}" '
                f'stroke-opacity="{s.opacity}"{dash}/>'
            )
            start = None
    return out


def _legend(series: Sequence[Series], right: float, top: float) -> list[str]:
    out = [
        f'<rect x="{right - 156}" y="{top - 4}" width="152" height="{14 * len(series) + 6}" fill="#fff" '
        'fill-opacity="0.85" stroke="#ddd"/>'
    ]
    for i, s in enumerate(series):
        y = top + 14 * i
        dash = f' stroke-dasharray="{s.dash}"' if s.dash else ""
        out.append(
            f'<line x1="{right - 150}" x2="{right - 126}" y1="{y + 4}" y2="{y + 4}" stroke="{s.color}" '
            f'stroke-width="2"{dash}/><text x="{right - 120}" y="{y + 8}" font-size="11">'
            f"{html.escape(s.label)}</text>"
        )
    return out


def _history_series(r: RunRecord, color: str, tag: str) -> list[Series]:
    h = r.history.sort_values("epoch") if not r.history.empty and "epoch" in r.history else r.history
    if h.empty:
        return []
    x = pd.to_numeric(h["epoch"], errors="coerce").to_numpy(float) + 1  # epochs shown 1-based
    out = [Series(f"{tag} train", color, x, pd.to_numeric(h["loss"], errors="coerce").to_numpy(float))]
    if "val_loss" in h:
        out.append(
            Series(f"{tag} val", color, x, pd.to_numeric(h["val_loss"], errors="coerce").to_numpy(float), dash="6 4")
        )
    return out


def _batch_series(r: RunRecord, color: str, tag: str) -> list[Series]:
    """Per-batch loss on a fractional-epoch axis, so runs with different batch sizes align."""
    b = r.batches
    if b is None or b.empty:
        return []
    b = b.sort_values("step")
    per_epoch = b.groupby("epoch")["batch"].transform("count").to_numpy(float)
    x = b["epoch"].to_numpy(float) + b["batch"].to_numpy(float) / np.maximum(per_epoch, 1)
    loss = pd.to_numeric(b["loss"], errors="coerce").to_numpy(float)
    xs, ys = downsample(x, loss)
    # The trend (rolling median over ~an epoch) is what the noise is measured around.
    window = int(min(max(np.nanmedian(per_epoch), 9), 101)) | 1
    trend = pd.Series(loss).rolling(window, center=True, min_periods=1).median().to_numpy()
    step = max(1, x.size // 600)
    return [
        Series(f"{tag} batch", color, xs, ys, width=0.7, opacity=0.45),
        Series(f"{tag} trend", color, x[::step], trend[::step], width=2.2),
    ]


# ---------------------------------------------------------------- HTML

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1100px;color:#222}
h1{font-size:20px} h2{font-size:16px;margin-top:28px;border-bottom:1px solid #ddd;padding-bottom:4px}
table{border-collapse:collapse;margin:8px 0;width:100%} th,td{border:1px solid #ddd;padding:4px 8px;
text-align:left;vertical-align:top} th{background:#f5f5f5} td.num{text-align:right;white-space:nowrap}
.runs span{display:inline-block;margin-right:24px} .a{color:#1f5fbf;font-weight:600} .b{color:#d9480f;font-weight:600}
.charts{display:flex;flex-wrap:wrap;gap:12px} .empty{color:#777;font-style:italic} .top{background:#fff8e6}
"""


def _num_class(value: Any) -> str:
    """Numbers right-aligned so magnitudes line up."""
    return ' class="num"' if isinstance(value, (int, float)) and not isinstance(value, bool) else ""


def _html_table(cols: Sequence[str], entries: list[dict[str, Any]], highlight_first: bool = False) -> str:
    if not entries:
        return '<p class="empty">no differences</p>'
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    rows = []
    for i, e in enumerate(entries):
        cls = ' class="top"' if highlight_first and i == 0 else ""
        tds = "".join(f"<td{_num_class(e.get(c))}>{html.escape(cell(e.get(c)))}</td>" for c in cols)
        rows.append(f"<tr{cls}>{tds}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def render_html(diff: dict[str, Any], a: RunRecord, b: RunRecord) -> str:
    """One self-contained page: both runs' curves overlaid (inline SVG), causes, then the tables."""
    epoch_chart = svg_chart(
        _history_series(a, RUN_COLORS[0], "a") + _history_series(b, RUN_COLORS[1], "b"),
        "Epoch loss (solid train, dashed val)",
        "epoch",
        "loss",
    )
    batch_series = _batch_series(a, RUN_COLORS[0], "a") + _batch_series(b, RUN_COLORS[1], "b")
    batch_chart = (
        svg_chart(batch_series, "Per-batch loss", "epoch", "loss")
        if batch_series
        else '<p class="empty">no per-batch loss recorded</p>'
    )
    parts = []
    for key, title, cols in sections(diff):
        parts.append(f"<h2>{html.escape(title)}</h2>{_html_table(cols, diff.get(key) or [], key == 'causes')}")
        if key == "causes":
            parts.append(f'<h2>Curves</h2><div class="charts">{epoch_chart}{batch_chart}</div>')
    parts.append(_html_prescription(diff.get("prescription") or {}))
    parts.append(_html_legend(diff))
    notes = "".join(f"<p class=empty>{html.escape(n)}</p>" for n in diff.get("notes") or [])
    title = f"losstrace diff {a.run_id[:8]} vs {b.run_id[:8]}"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{_CSS}</style></head><body>
<h1>{html.escape(title)}</h1>
<p class="runs"><span class="a">a: {html.escape(a.run_id)}{_name(a)}</span>
<span class="b">b: {html.escape(b.run_id)}{_name(b)}</span></p>
{"".join(parts)}
{notes}
</body></html>
"""


def _html_prescription(by_run: dict[str, list[dict[str, Any]]]) -> str:
    """What diagnose prescribes for each run (the diff says what moved; this, what to change next)."""
    if not by_run:
        return ""
    parts = ["<h2>Prescription (what diagnose would change next)</h2>"]
    for tag in ("a", "b"):
        rows = [
            {"change": f"{c['key']}: {cell(c['from'])} → {cell(c['to'])}", "findings": c["findings"], "why": c["why"]}
            for c in by_run.get(tag) or []
        ]
        table = _html_table(("change", "findings", "why"), rows) if rows else '<p class="empty">no params change</p>'
        parts.append(f'<h3 class="{tag}">run {tag}</h3>{table}')
    return "".join(parts)


def _html_legend(diff: dict[str, Any]) -> str:
    items = "".join(f"<dt><code>{html.escape(t)}</code></dt><dd>{html.escape(m)}</dd>" for t, m in legend.terms(diff))
    return (
        f"<h2>Legend</h2><dl>{items}</dl><p>The rules and tolerances: "
        f"<code>{html.escape(legend.DOCS)}</code> in the losstrace repository.</p>"
    )


def _name(r: RunRecord) -> str:
    return f" ({html.escape(r.name)})" if r.name and r.name != r.run_id else ""
