"""The train stage's checks of a `train.model.builder` before it trains.

- DVC must see the builder's code: its module file lies under `train.model.builder_dep`,
  which dvc.yaml templates into the train stage's deps (tracked.py).
- Its model is built once and linted from its layers (model_lint.py); errors stop the
  stage as params-lint errors do, before an MLflow run exists.
- A resume backup is only continued under the same builder code (code_hash).
No TensorFlow at import.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from losstrace import params as params_mod
from losstrace import tracked
from losstrace.errors import LosstraceError
from losstrace.findings import Finding
from losstrace.model import builder
from losstrace.params import Params


def require_tracked(p: Params, root: Path, always: bool = False) -> Path | None:
    """The builder's module file (None for the zoo), after checking DVC reruns train when it
    changes (inside a DVC stage, or `always`)."""
    spec = p.train.model.builder
    if not spec:
        return None
    path = builder.module_file(spec, root)
    if path is None:
        module = spec.partition(":")[0]
        raise LosstraceError(
            spec,
            f"no module {module} in the project ({module.replace('.', '/')}.py not found)",
            "fix train.model.builder; the module path starts at the project root",
        )
    if not (always or tracked.under_dvc()):
        return path
    flat = params_mod.flatten(p)
    tracked.require([path], "train.model.builder_dep", p.train.model.builder_dep, "train", root, flat)
    return path


def lint_built(p: Params, ds, root: Path) -> list[Finding]:
    """Build the builder's model as training will, lint it, and leave Keras as it was found
    (a fresh session, the seed set again) so the model trained is built the same way.
    Nothing for the zoo: the params lint already covered its model."""
    if not p.train.model.builder:
        return []
    import keras

    from losstrace.model import model_lint

    max_len = None if p.train.batching == "bucket" else ds.featurizer.max_len
    spec = builder.input_spec(p.train, p.data.padding, ds.info, ds.featurizer, ds.labels, max_len)
    try:
        model = builder.build(p.train, spec, 1, root)
        return model_lint.run(model, spec, p)
    finally:
        keras.backend.clear_session()
        keras.utils.set_random_seed(p.base.seed)


def code_hash(p: Params, root: Path) -> str:
    """sha256 over the files under train.model.builder_dep; "" for the zoo (in the code deps)."""
    if not p.train.model.builder:
        return ""
    dep = Path(root) / p.train.model.builder_dep
    files = sorted(
        f for f in (dep.rglob("*") if dep.is_dir() else [dep]) if f.is_file() and "__pycache__" not in f.parts
    )
    h = hashlib.sha256()
    for f in files:
        h.update(f.relative_to(root).as_posix().encode() + f.read_bytes())
    return h.hexdigest()
