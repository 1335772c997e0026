"""Findings: the unit every check (data, lint, curve) reports in.

Codes are a public contract (scripts and saved diagnoses match on them): add new ones,
never rename.

A finding's suggestion is a sentence for people (`train.batch_size: 4 → 32 (noise ∝
1/sqrt(batch) ...)`); its `changes` are the same params changes as data
(`{"key", "from", "to"}`), which the prescription reconciles and `losstrace fix` applies.
A rule may pass them; otherwise they are read from the suggestion, whose `key: old → new`
phrasing every rule shares.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

SEVERITIES = ("error", "warning", "info")

# `key: old → new`, at the start of a suggestion clause; the value ends at a space, comma,
# semicolon or bracket (no suggested value contains one).
_CHANGE = re.compile(r"^(?P<key>[a-z_][\w.\[\]]*): (?P<old>.*?) → (?P<new>[^\s;,()]+)")
# `(key: value)` or `(with key: value)`: a companion change the main one needs.
_COMPANION = re.compile(r"\((?:with )?(?P<key>[a-z_][\w.]*): (?P<new>[^\s;,()]+)\)")


@dataclass(frozen=True)
class Finding:
    code: str
    severity: str
    evidence: dict[str, Any] = field(default_factory=dict)
    suggestion: str = ""
    # Where it applies (a split, a layer, a params key); part of the evidence in JSON.
    where: str = ""
    # The suggestion's params changes as data; read from the suggestion when not given.
    changes: tuple[dict[str, Any], ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}, got {self.severity!r}")
        given = tuple(dict(c) for c in self.changes) or tuple(parse_changes(self.suggestion))
        object.__setattr__(self, "changes", given)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if not d["where"]:
            d.pop("where")
        if d["changes"]:
            d["changes"] = [dict(c) for c in d["changes"]]
        else:
            d.pop("changes")
        return d


def parse_value(text: str) -> Any:
    """A value as a suggestion shows it (diagnose.show) back to a params value."""
    s = text.strip()
    if s in ('""', "''"):
        return ""
    if s in ("true", "false"):
        return s == "true"
    for cast in (int, float):
        try:
            return cast(s)
        except ValueError:
            continue
    return s.strip("'\"")


def parse_changes(suggestion: str) -> list[dict[str, Any]]:
    """The params changes a suggestion names, in its order.

    Clauses are split on `;`. A clause starting with `or` is an alternative to the one
    before (`"alternative": true`): a prescription takes the first. A `(key: value)`
    after a change is a companion it needs (`"with": <main key>`, `from` unknown here).
    Clauses without `key: old → new` (advice such as "pretrained embeddings") give none.
    """
    out: list[dict[str, Any]] = []
    for clause in (c.strip() for c in (suggestion or "").split(";")):
        alternative = clause.startswith("or ")
        body = clause[3:].strip() if alternative else clause
        m = _CHANGE.match(body)
        if not m:
            continue
        main = {"key": m["key"], "from": parse_value(m["old"]), "to": parse_value(m["new"])}
        out.append({**main, **({"alternative": True} if alternative else {})})
        for c in _COMPANION.finditer(body[m.end() :]):
            if c["key"] != m["key"] and "." in c["key"]:
                out.append({"key": c["key"], "from": None, "to": parse_value(c["new"]), "with": m["key"]})
    return out
