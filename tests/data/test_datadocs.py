"""Data Docs pages rewritten to read offline (icons become glyphs) and to reproduce (no run stamps)."""

from __future__ import annotations

from losstrace.data.datadocs import ICONS, NOT_RECORDED, drop_run_stamps, replace_icons


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


def test_wall_clock_times_and_random_ids_are_dropped_and_links_kept():
    page = (
        "<img src='logo.png?d=20261204T170657.361148Z'>"
        "<li>Validations / val / losstrace-validate / 1970-01-01T00:00:00Z</li>"
        "<span >20261204T170656.792380Z</span>"
        "{'run_time': '1970-01-01 00:00:00 UTC'}"
        '<a href="validations/val/losstrace-validate/19700101T000000.000000Z/prepared-val.html">val</a>'
        '<a href="#body-03a12268-bdb6-430a-98f0-60ce3db1848f"></a><div id=body-03a12268-bdb6-430a-98f0-60ce3db1848f>'
        "<div id=body-67425d3b-c93b-4df1-a690-364c1c79098e>"
    )
    out = drop_run_stamps(page)
    assert "2026" not in out and "1970-01-01" not in out and "?d=" not in out
    assert out.count(NOT_RECORDED) == 3
    # The page's own link to the run folder must keep working.
    assert 'href="validations/val/losstrace-validate/19700101T000000.000000Z/prepared-val.html"' in out
    # The same random id (a collapse toggle and its target) keeps one number; another gets the next.
    assert '"#body-losstrace-1"' in out and "id=body-losstrace-1>" in out and "id=body-losstrace-2>" in out
