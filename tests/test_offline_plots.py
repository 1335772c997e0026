"""`dvc plots show` draws its Vega charts without a network: .dvc/config points DVC at
.dvc/offline_plots.html, DVC's page with vega, vega-lite and vega-embed inlined (built by
tools/offline_plots_template.py from the pinned npm packages). Checked in a headless
Chromium whose every host lookup fails."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from support import run_tool

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
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
    if CHROMIUM is None:
        if os.environ.get("LOSSTRACE_REQUIRE_CHROMIUM"):
            pytest.fail("chromium is required here (install Debian's chromium)")
        pytest.skip("chromium not installed")
    offline = ["--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=http://127.0.0.1:9"]
    dom = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            *offline,
            f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=10000",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    drawn = len(re.findall(r'<(?:canvas|svg)[^>]*class="marks"', dom.stdout))
    assert drawn == VEGA_PLOTS, f"{drawn} of {VEGA_PLOTS} Vega plots drawn offline"
