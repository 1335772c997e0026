"""The HTML diff report renders in a real headless Chromium, offline.

.ci/run installs Debian's chromium and sets LOSSTRACE_REQUIRE_CHROMIUM=1, so in CI a
missing browser fails instead of skipping.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import numpy as np
import pytest

from losstrace.explain import report
from losstrace.explain.diff import diff_runs

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def chromium():
    if CHROMIUM is None:
        if os.environ.get("LOSSTRACE_REQUIRE_CHROMIUM"):
            pytest.fail("chromium is required here (install Debian's chromium)")
        pytest.skip("chromium not installed")
    return CHROMIUM


def test_diff_html_renders_curves_in_headless_chromium(chromium, make_record, tmp_path):
    a = make_record("aaaa1111bbbb2222", batch_size=64, train_rows=4096, seed=1, name="lstm-bs64")
    b = make_record("cccc3333dddd4444", batch_size=4, train_rows=4096, seed=2, name="lstm-bs4")
    page = tmp_path / "diff.html"
    page.write_text(report.render_html(diff_runs(a, b), a, b), encoding="utf-8")
    profile = tmp_path / "profile"
    dom = subprocess.run(
        [chromium, *FLAGS, f"--user-data-dir={profile}", "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert dom.stdout.count("<svg") >= 2  # epoch and per-batch charts
    assert "aaaa1111bbbb2222" in dom.stdout and "cccc3333dddd4444" in dom.stdout
    assert "train.batch_size" in dom.stdout
    shot = tmp_path / "shot.png"
    subprocess.run(
        [
            chromium,
            *FLAGS,
            f"--user-data-dir={profile}",
            "--window-size=1200,1600",
            f"--screenshot={shot}",
            page.as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )
    import matplotlib.image

    pixels = matplotlib.image.imread(shot)
    assert pixels.shape[0] >= 1000 and pixels.shape[1] >= 1000
    assert np.std(pixels[..., :3]) > 0.05  # something was drawn, not a blank page
    # Both run colours appear: the curves were painted.
    colours = {tuple(np.round(p[:3], 1)) for p in pixels.reshape(-1, pixels.shape[-1])[::97]}
    assert len(colours) > 5
