"""The mechanism behind a `data.source` change, for the diff's catalogue of mechanisms.

Another source is another dataset: other rows, classes and sequence lengths, so the
task itself changed and every curve feature may move with it. That is the explanation,
and it is the root of any `data.content` / `data.labels` / `data.rows` change listed
beside it, so it ranks just above them. Self-contained: it reads only the change and the
evidence the diff hands every mechanism.
"""

from __future__ import annotations

from typing import Any

Candidate = tuple[float, str, str]  # (confidence, symptom, why)


def _effect_scale(effect: float) -> float:
    """Effect size → [0.6, 1]: 0.6 at the seed tolerance, 1.0 at 4x it (as every mechanism)."""
    return min(1.0, 0.6 + 0.4 * (max(effect, 1.0) - 1.0) / 3.0)


def _short(x: Any) -> str:
    return f"{x:.3g}" if isinstance(x, float) else "-" if x is None else str(x)


def data_source(ch: Any, ev: Any, all_changes: list[Any]) -> Candidate | None:
    """A new data source changes the task: name what differs and the behaviour that moved."""
    top = ev.strongest()
    if top is None:
        return None
    symptom = top.feature.removeprefix("finding.")
    moved = f"{top.feature} {_short(top.a)} → {_short(top.b)} ({top.change})"
    facts = []
    ka, kb = ev.fa.get("n_classes"), ev.fb.get("n_classes")
    if ka and kb and ka != kb:
        facts.append(f"{ka} → {kb} classes, so the chance loss ln K moved too")
    aspects = sorted({c.key for c in all_changes if getattr(c, "kind", "") == "data"})
    if aspects:
        facts.append("the fingerprint confirms it: " + ", ".join(aspects))
    why = (
        f"data.source {ch.a} → {ch.b}: another dataset is another task (its rows, classes and "
        "lengths), so its curve is a new baseline rather than a shifted one"
        + (f"; {'; '.join(facts)}" if facts else "")
        + f"; {moved}"
    )
    prior = 0.7 if ka and kb and ka != kb else 0.55
    return prior * _effect_scale(top.effect), symptom, why
