"""Run names that tell runs apart at a glance and stay the same for the same params.

The headline knobs alone (`lstm-bs32-lr0.001`) give two runs that differ in any other key
(`train.model.embedding.mask_zero`, a data source, a dropout) the same name. A short hash
of every flattened param follows them: equal params give equal names on every machine,
any other change gives another suffix.
"""

from __future__ import annotations

import hashlib
import json

from losstrace import params as params_mod
from losstrace.params import Params

HASH_CHARS = 6  # 16.7 million values: two differing runs in one experiment practically never collide


def params_hash(p: Params) -> str:
    """Hex digest of the flattened params, stable across processes and machines."""
    flat = params_mod.flatten(p)
    text = json.dumps(flat, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:HASH_CHARS]


def run_name(p: Params) -> str:
    """`lstm-bs32-lr0.001-3fa9c2`: cell, batch size and learning rate to read, a hash to tell apart."""
    return f"{p.train.model.rnn.cell}-bs{p.train.batch_size}-lr{p.train.learning_rate:g}-{params_hash(p)}"
