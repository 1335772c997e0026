"""Run names: readable headline knobs plus a short params hash that tells runs apart."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys

from losstrace.params import Params
from losstrace.record.run_name import run_name


def _mask_zero_off(p: Params) -> Params:
    emb = dataclasses.replace(p.train.model.embedding, mask_zero=False)
    model = dataclasses.replace(p.train.model, embedding=emb)
    return dataclasses.replace(p, train=dataclasses.replace(p.train, model=model))


def test_one_key_apart_gives_another_name_with_the_same_readable_head():
    p = Params()
    a, b = run_name(p), run_name(_mask_zero_off(p))
    assert a != b
    assert re.fullmatch(r"lstm-bs32-lr0\.001-[0-9a-f]{6}", a) and b.startswith("lstm-bs32-lr0.001-")


def test_the_same_params_give_the_same_name_in_another_process():
    code = (
        "from losstrace.params import Params; from losstrace.record.run_name import run_name; print(run_name(Params()))"
    )
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert other == run_name(Params())
