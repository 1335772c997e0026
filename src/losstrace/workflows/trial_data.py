"""When two trials may share prepared data and validation results: their cache keys.

A trial's prepared splits depend on the split seed, every `data.*` param and the input the
source points at; its validation results on those splits and the `validate.*` params. A key
hashes exactly these, so a trial that changes only `train.*` reuses both, one that changes
`validate.*` re-validates the same splits, and one that changes `data.*` (or whose input
files changed on disk) ingests again.
"""

from __future__ import annotations

import hashlib
import json
from importlib import metadata
from pathlib import Path
from typing import Any

from losstrace import params as params_mod
from losstrace.errors import LosstraceError
from losstrace.params import DataParams, Params

# The packages a bundled dataset ships in: a new version may ship other rows.
BUNDLED_PACKAGES = ("aeon", "nrclex")
_CHUNK = 1 << 20


def prepared_key(data: DataParams, seed: int, root: Path) -> str:
    """Key of the prepared splits ingest makes from `data` with split seed `seed`."""
    return _digest({"seed": seed, "data": params_mod.to_nested(data), "input": input_fingerprint(data, root)})


def validated_key(prepared: str, p: Params) -> str:
    """Key of validate's results on the splits `prepared` names (data.* is already in that key)."""
    return _digest({"prepared": prepared, "validate": params_mod.to_nested(p.validate)})


def input_fingerprint(data: DataParams, root: Path) -> dict[str, Any]:
    """What ingest reads besides params: the bundled dataset's package version, or each user
    file's path and content hash. A source that cannot be read keeps its error in the key, so
    ingest runs and reports it the usual way."""
    from losstrace.data.bundled import BUNDLED

    if data.source in BUNDLED and not data.val_source:
        return {"bundled": data.source, "packages": {name: _version(name) for name in BUNDLED_PACKAGES}}
    from losstrace.data.files import matched_paths

    sources = [s for s in (data.source, data.val_source) if s and s not in BUNDLED]
    try:
        files = [path for s in sources for path in matched_paths(s, root)]
    except LosstraceError as e:
        return {"unreadable": e.line()}
    return {
        "packages": {name: _version(name) for name in BUNDLED_PACKAGES} if data.source in BUNDLED else {},
        "files": [[str(path.resolve()), file_digest(path)] for path in files],
    }


_digests: dict[tuple[str, int, int], str] = {}


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes; remembered while its size and modification time stay."""
    st = path.stat()
    memo = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if memo not in _digests:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(_CHUNK), b""):
                h.update(chunk)
        _digests[memo] = h.hexdigest()
    return _digests[memo]


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return ""


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()
