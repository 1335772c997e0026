"""Findings: the unit every check (data, lint, curve) reports in.

Codes are a public contract (scripts and saved diagnoses match on them): add new ones,
never rename.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

SEVERITIES = ("error", "warning", "info")


@dataclass(frozen=True)
class Finding:
    code: str
    severity: str
    evidence: dict[str, Any] = field(default_factory=dict)
    suggestion: str = ""
    # Where it applies (a split, a layer, a params key); part of the evidence in JSON.
    where: str = ""

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}, got {self.severity!r}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if not d["where"]:
            d.pop("where")
        return d
