"""The one error type users see: `error: <where>: <what> (<how to fix>)`."""

from __future__ import annotations

import errno


class LosstraceError(Exception):
    """A user-facing failure: bad input, bad params, a failed check.

    The CLI prints it as a single line and exits non-zero, never with a traceback.
    `exit_code` 2 means bad input (argparse's convention for a bad command line).
    """

    def __init__(self, where: str, what: str, fix: str, exit_code: int = 2):
        self.where, self.what, self.fix, self.exit_code = where, what, fix, exit_code
        super().__init__(self.line())

    def line(self) -> str:
        return f"error: {self.where}: {self.what} ({self.fix})"


def first_line(e: BaseException, limit: int = 200) -> str:
    """An exception's message cut to its first line (one-line errors quote it), or its type."""
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:limit]


# Out-of-space write failures: a full disk, an exhausted quota, a file-size limit (ulimit -f).
_NO_SPACE = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large for the file-size limit",
}


# A path the user chose that cannot be used as one: (what, how to fix).
_BAD_PATH = {
    errno.EACCES: ("permission denied", "make it readable/writable for this user, or choose another path"),
    errno.EPERM: ("operation not permitted", "make it writable for this user, or choose another path"),
    errno.EROFS: ("read-only file system", "choose a path on a writable file system"),
    errno.EISDIR: ("is a directory", "give a file path, e.g. reports/diff.html"),
    errno.ENOTDIR: ("a parent of this path is a file, not a directory", "choose another path"),
    errno.EEXIST: ("exists and is not a directory", "remove it or choose another path"),
    errno.EBUSY: ("is busy (a mount point or the current directory)", "give a file path"),
}


def from_os_error(e: OSError, writing: bool = False) -> LosstraceError | None:
    """The one-line error for a file-system failure a user can fix, naming the path; None otherwise.

    Out of space while writing; or a path that cannot be used (no permission, read-only,
    a directory where a file is wanted, a file where a directory is wanted).
    """
    where = str(e.filename or "output")
    what = _NO_SPACE.get(e.errno or 0)
    if what is not None:
        return LosstraceError(
            where,
            f"{what} while writing",
            "free disk space (or raise the limit) and rerun; the previous outputs are untouched",
        )
    if e.errno in _BAD_PATH:
        what, fix = _BAD_PATH[e.errno]
        refused = e.errno in (errno.EACCES, errno.EPERM, errno.EROFS)
        return LosstraceError(where, what + (" while writing" if writing and refused else ""), fix)
    return None
