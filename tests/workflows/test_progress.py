"""Progress over bisect, fix and gallery trainings: a bar on a terminal, plain lines in a log."""

from __future__ import annotations

import io

from losstrace.workflows import progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_gets_one_line_per_item_and_no_redraws():
    log = io.StringIO()
    seen = list(progress.each(["original", "prescription"], "fix trials", "trial", stream=log))
    assert seen == ["original", "prescription"]
    assert log.getvalue() == "fix trials: trial 1/2: original\nfix trials: trial 2/2: prescription\n"


def test_a_terminal_gets_a_bar():
    screen = Terminal()
    assert list(progress.each([1, 2, 3], "gallery", "case", stream=screen)) == [1, 2, 3]
    assert "\r" in screen.getvalue() and "3/3" in screen.getvalue()
