"""Data Docs pages rewritten to read offline: Font Awesome status icons become glyphs."""

from __future__ import annotations

from losstrace.data.datadocs import ICONS, replace_icons


def test_pass_fail_and_warning_icons_become_coloured_glyphs():
    page = (
        '<td><i class="fas fa-check-circle text-success" aria-hidden="true"></i></td>'
        '<td><i class="fas fa-times text-danger" ></i></td>'
        '<td><i class="fas fa-exclamation-triangle text-warning"></i></td>'
    )
    out = replace_icons(page)
    assert "<i " not in out
    for name in ("fa-check-circle", "fa-times", "fa-exclamation-triangle"):
        glyph, colour, meaning = ICONS[name]
        assert f'aria-label="{meaning}"' in out and f"color:{colour}" in out and glyph in out


def test_unknown_icons_and_other_markup_are_kept():
    page = '<p>x</p><i class="fas fa-rocket"></i><i>italic</i>'
    assert replace_icons(page) == page


def test_icons_inside_single_quoted_script_strings_stay_valid_javascript():
    # GX's index page holds its table rows as single-quoted JavaScript strings.
    script = "var row = {'ok': '<i class=\"fas fa-check-circle text-success ge-success-icon\" ></i>'};"
    out = replace_icons(script)
    assert "fa-check-circle" in out and out.count("'") == script.count("'")
