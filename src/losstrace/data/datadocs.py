"""Great Expectations Data Docs made readable without a network.

GX writes pages whose styles, scripts and status icons come from public CDNs. Offline
(CI, air-gapped machines) the index table stays empty and every pass/fail icon is blank:
the icons are Font Awesome glyphs (`<i class="fas fa-check-circle text-success">`) whose
font never arrives. Two rewrites keep the pages usable with no network at all:
- the index gets a plain-HTML list of the validation pages (GX fills its own table with
  JavaScript);
- each Font Awesome status icon becomes a Unicode glyph coloured inline, so a pass, a
  failure or a warning reads at a glance with any font and no stylesheet.

A third rewrite makes the pages a function of the data alone, so the same data gives
byte-identical Data Docs and `dvc.lock` keeps its hash after a re-run: GX stamps each page
with wall-clock times (the run time, the data's load time, a cache-busting query on its
logo) and random element ids. The run is stamped with a fixed time (RUN_TIME), the shown
times read "not recorded" (the MLflow run records when training happened), and the ids
are numbered in page order.
"""

from __future__ import annotations

import datetime as dt
import html
import re
from collections.abc import Mapping
from pathlib import Path

# Font Awesome icon name → (glyph, colour, what it means). These are the icons GX's page
# renderers use for expectation and validation status.
ICONS = {
    "fa-check-circle": ("\u2714", "#1e7e34", "passed"),
    "fa-times": ("\u2718", "#c82333", "failed"),
    "fa-exclamation-triangle": ("\u26a0", "#b8860b", "warning"),
    "fa-question-circle": ("?", "#6c757d", "help"),
    "fa-comment": ("\u2139", "#17a2b8", "note"),
}

# GX needs a run time; a fixed one keeps the validation pages' folder names reproducible.
RUN_TIME = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
NOT_RECORDED = "not recorded"

_CACHE_BUSTER = re.compile(r"\?d=\d{8}T\d{6}(?:\.\d+)?Z")
_SHOWN_STAMP = re.compile(r">(\s*)\d{8}T\d{6}(?:\.\d+)?Z(\s*)<")  # a compact time shown as text
# The run time as the pages show it: ISO in breadcrumbs and tables, "... UTC" in the index's data.
_SHOWN_RUN_TIME = re.compile(
    "|".join(re.escape(RUN_TIME.strftime(form)) for form in ("%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%d %H:%M:%S UTC"))
)
_RANDOM_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

# An <i> element carrying a Font Awesome class, with its (empty) body and closing tag.
_ICON = re.compile(r'<i\s+class="(?P<classes>[^"]*\bfa-[a-z-]+[^"]*)"[^>]*>\s*</i>')


def offline_icon(match: re.Match[str]) -> str:
    """The glyph span that replaces one Font Awesome `<i>` element (unknown icons are kept)."""
    classes = match.group("classes").split()
    for name, (glyph, colour, meaning) in ICONS.items():
        if name in classes:
            return (
                f'<span class="losstrace-icon {name}" role="img" aria-label="{meaning}" title="{meaning}" '
                f'style="color:{colour};font-weight:bold">{glyph}</span>'
            )
    return match.group(0)


def replace_icons(text: str) -> str:
    """`text` with every known Font Awesome status icon drawn as a Unicode glyph."""
    return _ICON.sub(offline_icon, text)


def drop_run_stamps(text: str) -> str:
    """`text` without GX's wall-clock times and random ids (see the module doc)."""
    text = _CACHE_BUSTER.sub("", text)
    text = _SHOWN_STAMP.sub(rf">\g<1>{NOT_RECORDED}\g<2><", text)
    text = _SHOWN_RUN_TIME.sub(NOT_RECORDED, text)
    numbered: dict[str, str] = {}
    return _RANDOM_ID.sub(lambda m: numbered.setdefault(m.group(0), f"losstrace-{len(numbered) + 1}"), text)


def make_offline(datadocs_dir: Path, outcomes: Mapping[str, bool]) -> None:
    """Rewrite the built Data Docs in place so they read well offline and reproduce (module doc)."""
    datadocs_dir = Path(datadocs_dir)
    for page in sorted(datadocs_dir.rglob("*.html")):
        text = page.read_text(encoding="utf-8")
        rewritten = drop_run_stamps(replace_icons(text))
        if rewritten != text:
            page.write_text(rewritten, encoding="utf-8")
    add_offline_index(datadocs_dir, outcomes)


def add_offline_index(datadocs_dir: Path, outcomes: Mapping[str, bool]) -> None:
    """Put a plain-HTML list of the validation pages at the top of the Data Docs index.

    GX fills its index table with JavaScript loaded from public CDNs; offline that table
    stays empty. The validation and suite pages themselves render without scripts, so a
    static list of links is all the index needs to stay usable.
    """
    index = datadocs_dir / "index.html"
    rows = []
    for name, success in sorted(outcomes.items()):
        pages = sorted((datadocs_dir / "validations" / name).rglob("*.html"))
        if not pages:
            continue
        result = pages[-1].relative_to(datadocs_dir).as_posix()
        glyph, colour, _ = ICONS["fa-check-circle" if success else "fa-times"]
        status = f'<span style="color:{colour};font-weight:bold">{glyph} {"passed" if success else "FAILED"}</span>'
        rows.append(
            f'<tr><td><a href="{html.escape(result)}">{html.escape(name)}</a></td><td>{status}</td>'
            f'<td><a href="expectations/{html.escape(name)}.html">suite</a></td></tr>'
        )
    section = (
        '<section id="losstrace-offline-index" style="margin:70px 2em 0">'
        "<h3>Validation results</h3><p>Plain links that work offline; the table below needs "
        'the network for its scripts.</p><table class="table table-sm"><thead><tr><th>Suite (split)</th>'
        f"<th>Result</th><th>Expectations</th></tr></thead><tbody>{''.join(rows)}</tbody></table></section>"
    )
    text = index.read_text(encoding="utf-8")
    head, sep, rest = text.partition("<body>")
    if sep:
        index.write_text(head + sep + section + rest, encoding="utf-8")
