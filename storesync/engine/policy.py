"""Guards: changes the engine holds back unless the administrator forces them."""

from __future__ import annotations

from storesync.engine.plan import Plan

DEFAULT_REMOVAL_SHARE = 0.10


def removal_guard(plan: Plan, share: float = DEFAULT_REMOVAL_SHARE) -> str | None:
    """Why `plan` removes too much to apply unasked (a truncated or emptied source), or None.

    Held back: removing every anchor of a non-empty store, or more than `share` of them
    (removing a single certificate is never held back on share alone).
    """
    have, gone = len(plan.current), len(plan.removals)
    if not gone:
        return None
    if gone == have:
        return f"would remove all {have} certificates of the store"
    if gone > max(1, share * have):
        return f"would remove {gone} of {have} certificates (more than {share:.0%})"
    return None
