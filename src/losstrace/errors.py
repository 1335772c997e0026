"""The one error type users see: `error: <where>: <what> (<how to fix>)`."""

from __future__ import annotations

import errno


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


# Out-of-space write failures: a full disk, an exhausted quota, a file-size limit (ulimit -f).
_NO_SPACE = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
             errno.EFBIG: "file too large for the file-size limit"}


def from_os_error(e: OSError) -> LosstraceError | None:
    """The one-line error for a write that ran out of space, naming the file; None otherwise."""
    what = _NO_SPACE.get(e.errno or 0)
    if what is None:
        return None
    where = e.filename or "output"
    return LosstraceError(str(where), f"{what} while writing",
                          "free disk space (or raise the limit) and rerun; the previous outputs are untouched")
