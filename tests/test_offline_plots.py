"""`dvc plots show` draws its Vega charts without a network: .dvc/config points DVC at
.dvc/offline_plots.html, DVC's page with vega, vega-lite and vega-embed inlined (built by
tools/offline_plots_template.py from the pinned npm packages). Checked in a headless
Chromium whose every host lookup fails."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from browser import OFFLINE, dump_dom
from support import run_tool

REPO = Path(__file__).resolve().parents[1]
VEGA_PLOTS = 4  # the Vega plots dvc.yaml defines (loss, accuracy, batch loss, confusion)


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("plots")
    run_tool(sys.executable, "-m", "dvc", "plots", "show", "-o", str(out), cwd=REPO)
    return out / "index.html"


def test_the_plots_page_loads_no_script_from_the_network(page):
    html = page.read_text(encoding="utf-8")
    assert re.findall(r"<script[^>]*\ssrc=", html) == []  # DVC's page would load three from a CDN
    for name in ("vega@5.20.2", "vega-lite@5.2.0", "vega-embed@6.18.2"):
        assert f"<!-- {name} " in html
    assert html.count("vegaEmbed(") == VEGA_PLOTS


def test_the_plots_draw_in_chromium_without_a_network(page, tmp_path):
    dom = dump_dom(page.as_uri(), tmp_path / "profile", *OFFLINE, "--virtual-time-budget=10000")
    drawn = len(re.findall(r'<(?:canvas|svg)[^>]*class="marks"', dom))
    assert drawn == VEGA_PLOTS, f"{drawn} of {VEGA_PLOTS} Vega plots drawn offline"
