"""Why a motion or "then" prompt fails: the verifier's observed motions against the asked ones (issue #4).

The order atom needs both segments of a two-motion clip right and in sequence, so its failures split into clips whose
object cannot be tracked, clips with neither motion, with one of the two, with both in the wrong sequence (what a
caption encoder blind to word order would give) and the exact sequence.
"""

from __future__ import annotations

from collections import Counter

ORDER_OUTCOMES = ("exact", "reversed", "first only", "second only", "neither", "untracked")


def order_outcome(asked: tuple[str, ...], got: tuple[str, ...] | None) -> str:
    """Outcome of a two-motion prompt: ``asked`` = (m₁, m₂); ``got`` = the verifier's per-segment motions, None when
    an object is missing in some frame. "reversed" means got = (m₂, m₁) with m₁ ≠ m₂."""
    if len(asked) != 2:
        raise ValueError(f"order_outcome needs a two-motion prompt, got {asked!r}")
    if got is None:
        return "untracked"
    got = tuple(got)
    if got == tuple(asked):
        return "exact"
    if got == tuple(reversed(asked)):
        return "reversed"
    if got[0] == asked[0]:
        return "first only"
    if got[1] == asked[1]:
        return "second only"
    return "neither"


def motion_confusion(asked: list[str], got: list[str | None]) -> dict[str, dict[str, int]]:
    """{asked motion: {observed motion or "untracked": count}} over one-motion prompts."""
    table: dict[str, Counter] = {}
    for a, g in zip(asked, got, strict=True):
        table.setdefault(a, Counter())["untracked" if g is None else g] += 1
    return {a: dict(c.most_common()) for a, c in sorted(table.items())}
