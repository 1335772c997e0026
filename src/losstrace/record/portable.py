"""Outputs written the same on every run and machine, so `make repro` leaves a clone clean.

reports/train/run.json is git-tracked: an absolute path of the machine that trained
would make every clone's `make repro` leave it modified. models/model.keras is hashed
into dvc.lock: a save time inside it would change the lock on every training.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

SQLITE = "sqlite:///"


def tracking_uri(uri: str, root: Path | None = None) -> str:
    """A local SQLite store inside the project as a path relative to it (`sqlite:///mlflow.db`,
    which MLflow reads from the project root, where DVC runs the stages); any other URI
    (a server, a store outside the project) as given."""
    if not uri.startswith(SQLITE):
        return uri
    base = Path(root if root is not None else os.environ.get("DVC_ROOT") or ".").resolve()
    try:
        relative = Path(uri[len(SQLITE) :]).resolve().relative_to(base)
    except ValueError:
        return uri
    return SQLITE + relative.as_posix()


# The zip format's earliest date: what a saved model says instead of when it was saved.
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def keras_archive(path: Path) -> None:
    """Rewrite a saved `.keras` file so equal weights give equal bytes.

    Keras stamps the save time into the archive (metadata.json's `date_saved` and the
    weights entry's zip date), so every training changed models/model.keras's md5 in
    dvc.lock even when the weights were identical. Both become ZIP_EPOCH, and the config's
    `shared_object_id`s (Python object addresses) become 0, 1, 2, ... in order of first
    appearance, which keeps what is shared with what; the entries,
    their order and compression stay as Keras wrote them, and Keras loads the file as before.
    """
    with zipfile.ZipFile(path) as src:
        entries = [(info, src.read(info)) for info in src.infolist()]
    tmp = path.with_name(path.name + ".tmp")
    with zipfile.ZipFile(tmp, "w") as dst:
        for info, data in entries:
            if info.filename == "metadata.json":
                meta = json.loads(data)
                if "date_saved" in meta:
                    meta["date_saved"] = "{:04d}-{:02d}-{:02d}@{:02d}:{:02d}:{:02d}".format(*ZIP_EPOCH)
                data = json.dumps(meta).encode("utf-8")
            elif info.filename == "config.json":
                data = json.dumps(_renumber_shared(json.loads(data))).encode("utf-8")
            fixed = zipfile.ZipInfo(info.filename, date_time=ZIP_EPOCH)
            fixed.compress_type, fixed.external_attr = info.compress_type, info.external_attr
            dst.writestr(fixed, data)
    os.replace(tmp, path)


def _renumber_shared(config: object, ids: dict | None = None) -> object:
    """The config with each distinct `shared_object_id` replaced by its first-appearance rank."""
    ids = {} if ids is None else ids
    if isinstance(config, list):
        return [_renumber_shared(v, ids) for v in config]
    if not isinstance(config, dict):
        return config
    out = {}
    for key, value in config.items():
        if key == "shared_object_id":
            out[key] = ids.setdefault(value, len(ids))
        else:
            out[key] = _renumber_shared(value, ids)
    return out
