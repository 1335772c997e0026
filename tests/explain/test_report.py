"""Reports: aligned terminal tables, Markdown, and a self-contained HTML page with inline SVG."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import numpy as np

from losstrace.explain import report
from losstrace.explain.diagnose import diagnose_curves, merge_findings
from losstrace.explain.diff import diff_runs
from losstrace.findings import Finding


def batch_vs_lr(make_record):
    a = make_record("aaaa1111bbbb2222", batch_size=64, train_rows=4096, seed=1, name="lstm-bs64")
    b = make_record(
        "cccc3333dddd4444", batch_size=4, train_rows=4096, lr=0.0001, plateau=(0, 12), seed=2, name="lstm-bs4"
    )
    return a, b, diff_runs(a, b)


def test_terminal_table_is_aligned_and_wrapped(make_record):
    a, b, d = batch_vs_lr(make_record)
    text = report.render_table(d, a, b)
    assert "a = lstm-bs64 (aaaa1111)" in text and "b = lstm-bs4 (cccc3333)" in text
    assert text.index("Causes") < text.index("Params") < text.index("Behaviour")
    assert all(len(line) <= report.TABLE_WIDTH for line in text.splitlines())
    lines = text.splitlines()
    head = lines.index("Causes (most likely first)") + 1
    header, rule, row = lines[head], lines[head + 1], lines[head + 2]
    # Columns start where the header says they do.
    assert row.startswith("train.batch_size")
    assert row.index("noisy_loss") == header.index("symptom") == rule.index(" -") + 1
    assert "(no differences)" in text  # data and env sections are empty


def test_text_table_wraps_the_last_column_under_itself():
    out = report.text_table(("k", "why"), [["x", "word " * 60]], width=60)
    lines = out.splitlines()
    assert len(lines) > 3 and all(len(line) <= 60 for line in lines)
    assert all(line.startswith("   ") for line in lines[3:])  # continuation indented to the column


def test_markdown_has_the_top_cause_and_pipe_tables(make_record):
    a, b, d = batch_vs_lr(make_record)
    md = report.render_markdown(d, a, b)
    assert md.startswith("## losstrace diff")
    assert "**Most likely:** `train.batch_size`" in md
    assert "| change | symptom | confidence | why |" in md and "|---|---|---|---|" in md
    assert "_no differences_" in md
    d["causes"][0]["why"] = "a | b"
    assert "a \\| b" in report.render_markdown(d, a, b)
    # GitHub would take <pad> for an HTML tag and drop it
    d["causes"][0]["why"] = "token <pad> & <unk>"
    assert "token &lt;pad&gt; &amp; &lt;unk&gt;" in report.render_markdown(d, a, b)


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.refs: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.refs += [v for k, v in attrs if k in ("src", "href") and v]


def test_html_is_self_contained_with_both_curves_as_svg(make_record):
    a, b, d = batch_vs_lr(make_record)
    page = report.render_html(d, a, b)
    assert page.startswith("<!DOCTYPE html>")
    assert a.run_id in page and b.run_id in page
    parsed = _Collector()
    parsed.feed(page)
    assert parsed.tags.count("svg") == 2
    assert "script" not in parsed.tags and "link" not in parsed.tags and parsed.refs == []
    assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", page)  # only the SVG namespace
    # Both runs drawn in each chart: train+val per run, and batch+trend per run.
    assert page.count(report.RUN_COLORS[0]) >= 4 and page.count(report.RUN_COLORS[1]) >= 4
    assert "nan" not in " ".join(re.findall(r'points="([^"]*)"', page)).lower()
    assert "train.batch_size" in page and "Causes" in page


def test_html_breaks_lines_at_nan_and_handles_missing_batches(make_record):
    a = make_record("run-a", seed=1, with_batches=False)
    b = make_record("run-b", seed=2, nan_at=10)
    page = report.render_html(diff_runs(a, b), a, b)
    assert "<svg" in page and "run-a" in page and "run-b" in page
    points = re.findall(r'points="([^"]*)"', page)
    assert points and all("nan" not in p.lower() for p in points)


def test_svg_chart_clips_explosions_and_keeps_ticks_round():
    x = np.arange(50, dtype=float)
    y = np.concatenate([np.linspace(2, 0.5, 49), [1e6]])
    svg = report.svg_chart([report.Series("s", "#000", x, y)], "t", "epoch", "loss")
    ys = [float(p.split(",")[1]) for p in re.findall(r'points="([^"]*)"', svg)[0].split()]
    assert min(ys) >= 28 - 1e-6  # the explosion sits on the top edge, not off the chart
    assert report.nice_ticks(0, 2.2) == [0.0, 0.5, 1.0, 1.5, 2.0]


def test_downsample_keeps_spikes():
    x = np.arange(10000, dtype=float)
    y = np.ones(10000)
    y[4321] = 50.0
    xs, ys = report.downsample(x, y, max_points=400)
    assert xs.size <= 400 and ys.max() == 50.0 and 4321.0 in xs


def test_findings_table_for_a_diagnosis(make_run):
    data = [Finding("class_imbalance", "warning", {"ratio": 6.0}, "train.class_weight: none → balanced")]
    diagnosis = merge_findings(data, [], diagnose_curves(*make_run(nan_at=4)), run_id="r1")
    text = report.findings_table(diagnosis["findings"], width=100)
    lines = text.splitlines()
    assert lines[0].split()[:2] == ["error", "diverged"]
    assert any(line.split() == ["warning", "class_imbalance"] for line in lines)
    assert "fix: train.learning_rate: 0.001 → 0.0003" in text
    assert report.findings_table([]) == "no findings"


def test_findings_show_the_whole_message_and_why_wrapped_to_the_width():
    message = "batch size 4 leaves " + "many noisy optimizer steps per epoch " * 4 + "END-OF-MESSAGE"
    why = "the batch loss scatters " + "far around its rolling trend " * 5 + "END-OF-WHY"
    found = [
        Finding("noisy_loss", "warning", {"message": message, "why": why, "batch_size": 4}, "train.batch_size: 4 → 32")
    ]
    for width in (60, 100):
        text = report.findings_table(found, width=width)
        assert all(len(line) <= width for line in text.splitlines())
        flat = " ".join(line.strip() for line in text.splitlines())
        assert message in flat and f"why: {why}" in flat  # nothing cut, only wrapped
        assert "evidence: batch_size=4" in flat and "fix: train.batch_size: 4 → 32" in flat


def test_findings_follow_the_terminal_width(monkeypatch):
    monkeypatch.setenv("COLUMNS", "50")
    text = report.findings_table([Finding("plateau", "info", {"why": "flat " * 40}, "")])
    assert max(len(line) for line in text.splitlines()) <= 50
    assert " ".join(text.split()).count("flat") == 40  # the why is shown, wrapped, not dropped


def test_a_clean_run_gets_a_verdict_with_its_headline_numbers(make_run):
    history, _, _ = make_run(epochs=6)
    h = report.headline(history)
    best = int(history["val_loss"].idxmin())
    assert h["epochs"] == 6 and h["best_epoch"] == best + 1
    line = report.verdict([{"severity": "info", "code": "noisy_loss"}], h)
    assert "\n" not in line and line.startswith("clean:")
    assert f"best val loss {history['val_loss'].min():.4f} at epoch {best + 1}/6" in line
    assert f"final val accuracy {history['val_accuracy'].iloc[-1]:.4f}" in line and "1 note" in line


def test_html_and_diagnose_text_show_the_prescription(make_record):
    a, b, d = batch_vs_lr(make_record)
    rx = {
        "key": "train.batch_size",
        "from": 4,
        "to": 16,
        "why": "noisy_loss: sampling noise",
        "findings": ["noisy_loss"],
    }
    page = report.render_html({**d, "prescription": {"a": [], "b": [rx]}}, a, b)
    assert "Prescription" in page and "train.batch_size: 4 → 16" in page and "no params change" in page
    text = report.prescription_text([rx], ["train.learning_rate not changed: why"], width=100)
    assert "train.batch_size: 4 → 16   [noisy_loss]" in text and "left out: train.learning_rate" in text
