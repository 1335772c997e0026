"""Great Expectations Data Docs made readable without a network.

GX writes pages whose styles, scripts and status icons come from public CDNs. Offline
(CI, air-gapped machines) the index table stays empty and every pass/fail icon is blank:
the icons are Font Awesome glyphs (`<i class="fas fa-check-circle text-success">`) whose
font never arrives. Two rewrites keep the pages usable with no network at all:
- the index gets a plain-HTML list of the validation pages (GX fills its own table with
  JavaScript);
- each Font Awesome status icon becomes a Unicode glyph coloured inline, so a pass, a
  failure or a warning reads at a glance with any font and no stylesheet.
"""

from __future__ import annotations

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


def make_offline(datadocs_dir: Path, outcomes: Mapping[str, bool]) -> None:
    """Rewrite the built Data Docs in place so they read well offline (see the module doc)."""
    datadocs_dir = Path(datadocs_dir)
    for page in sorted(datadocs_dir.rglob("*.html")):
        text = page.read_text(encoding="utf-8")
        offline = replace_icons(text)
        if offline != text:
            page.write_text(offline, encoding="utf-8")
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
