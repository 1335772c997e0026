"""The one error type users see: `error: <where>: <what> (<how to fix>)`."""

from __future__ import annotations


class LosstraceError(Exception):
    """A user-facing failure: bad input, bad params, a failed check.

    The CLI prints it as a single line and exits non-zero, never with a traceback.
    `exit_code` 2 means bad input (the convention of argparse and of issue 3).
    """

    def __init__(self, where: str, what: str, fix: str, exit_code: int = 2):
        self.where, self.what, self.fix, self.exit_code = where, what, fix, exit_code
        super().__init__(self.line())

    def line(self) -> str:
        return f"error: {self.where}: {self.what} ({self.fix})"
