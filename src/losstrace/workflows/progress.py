"""Progress over the trainings of bisect, fix and the gallery, on stderr.

On a terminal a tqdm bar; otherwise (CI logs, files, a pipe) one line per item as it
starts, so a log has no carriage-return redraws and shows how far a killed job got,
as the train stage's per-epoch lines do.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from typing import IO, TypeVar

T = TypeVar("T")


def each(
    items: Iterable[T],
    desc: str,
    unit: str,
    name: Callable[[T], str] = str,
    stream: IO[str] | None = None,
) -> Iterator[T]:
    """Yield `items`, showing progress on `stream` (default: stderr)."""
    stream = stream if stream is not None else sys.stderr
    items = list(items)
    if getattr(stream, "isatty", lambda: False)():
        from tqdm import tqdm

        yield from tqdm(items, desc=desc, unit=unit, file=stream, disable=False)
        return
    for i, item in enumerate(items, 1):
        print(f"{desc}: {unit} {i}/{len(items)}: {name(item)}", file=stream, flush=True)
        yield item
