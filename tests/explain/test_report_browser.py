"""The HTML diff report renders in a real headless Chromium with no network."""

from __future__ import annotations

import numpy as np

from browser import OFFLINE, dump_dom, screenshot
from losstrace.explain import report
from losstrace.explain.diff import diff_runs


def test_diff_html_renders_curves_in_headless_chromium(make_record, tmp_path):
    a = make_record("aaaa1111bbbb2222", batch_size=64, train_rows=4096, seed=1, name="lstm-bs64")
    b = make_record("cccc3333dddd4444", batch_size=4, train_rows=4096, seed=2, name="lstm-bs4")
    page = tmp_path / "diff.html"
    page.write_text(report.render_html(diff_runs(a, b), a, b), encoding="utf-8")
    profile = tmp_path / "profile"
    dom = dump_dom(page.as_uri(), profile, *OFFLINE)
    assert dom.count("<svg") >= 2  # epoch and per-batch charts
    assert "aaaa1111bbbb2222" in dom and "cccc3333dddd4444" in dom
    assert "train.batch_size" in dom
    shot = screenshot(page.as_uri(), tmp_path / "shot.png", profile, *OFFLINE)
    import matplotlib.image

    pixels = matplotlib.image.imread(shot)
    assert pixels.shape[0] >= 1000 and pixels.shape[1] >= 1000
    assert np.std(pixels[..., :3]) > 0.05  # something was drawn, not a blank page
    # Both run colours appear: the curves were painted.
    colours = {tuple(np.round(p[:3], 1)) for p in pixels.reshape(-1, pixels.shape[-1])[::97]}
    assert len(colours) > 5
