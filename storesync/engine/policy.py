"""Guards: changes the engine holds back unless the administrator forces them."""

from __future__ import annotations

from datetime import datetime, timezone

from storesync.engine.plan import Loss, Plan
from storesync.model import TRUSTED, TrustSet

DEFAULT_REMOVAL_SHARE = 0.10


def removal_guard(plan: Plan, share: float = DEFAULT_REMOVAL_SHARE) -> str | None:
    """Why `plan` removes too much to apply unasked (a truncated or emptied source), or None.

    Held back: removing every anchor of a non-empty store, or more than `share` of them
    (removing a single certificate is never held back on share alone).
    """
    narrowed = sum(1 for before, after in plan.changes if set(before.trusted_purposes) - set(after.trusted_purposes))
    have, gone = len(plan.current), len(plan.removals) + narrowed
    if not gone:
        return None
    if gone == have:
        return f"would remove or reduce the trust of all {have} certificates of the store"
    if gone > max(1, share * have):
        return f"would remove or reduce the trust of {gone} of {have} certificates (more than {share:.0%})"
    return None


def select(trust_set: TrustSet, purposes: tuple[str, ...] = (), drop_expired: bool = False,
           only: tuple[str, ...] = ()) -> TrustSet:
    """A profile's filters: only anchors for `purposes` (trust narrowed to them; distrust is
    always kept), without expired certificates if asked, and only the certificates `only`
    names (see `selected`; distrust is kept there too: a selection never widens trust)."""
    if not purposes and not drop_expired and not only:
        return trust_set
    now = datetime.now(timezone.utc)
    kept = []
    for entry in trust_set.values():
        if only and not entry.distrusted and not selected(entry, only):
            continue
        if drop_expired and not entry.distrusted and entry.cert.not_after and entry.cert.not_after < now:
            continue
        if purposes and not entry.distrusted:
            trust = {p: s for p, s in entry.trust.items() if p in purposes and s == TRUSTED}
            if not trust:
                continue
            entry = entry.replace(trust=trust)
        kept.append(entry)
    return TrustSet(kept)


def selected(entry, only: tuple[str, ...]) -> bool:
    """Does `--only` name this entry? Each selector is a fingerprint (SHA-256 or SHA-1 in hex,
    colons and case ignored; at least 16 digits of a SHA-256, as plans print it) or a glob on
    the label ("Corp Root*")."""
    from fnmatch import fnmatchcase

    for pattern in only:
        digits = pattern.replace(":", "").lower()
        if len(digits) >= 16 and all(c in "0123456789abcdef" for c in digits):
            if entry.sha256.startswith(digits) or (len(digits) == 40 and entry.cert.sha1 == digits):
                return True
        elif fnmatchcase(entry.display_label, pattern):
            return True
    return False


def refuse_non_ca(plan: Plan) -> None:
    """Never add trust in a certificate that is not a CA (a leaf or a server's own
    certificate pasted into a bundle): such adds and trust changes are dropped from the plan."""
    refused = {e.sha256 for e in plan.adds if not e.distrusted and not e.cert.is_ca}
    refused |= {after.sha256 for _, after in plan.changes if not after.distrusted and not after.cert.is_ca}
    if not refused:
        return
    for entry in [*plan.adds, *(after for _, after in plan.changes)]:
        if entry.sha256 in refused:
            plan.losses.append(Loss(entry, "not a CA certificate: refused (ca_only)"))
    plan.adds = [e for e in plan.adds if e.sha256 not in refused]
    kept_before = {before.sha256: before for before, after in plan.changes if after.sha256 in refused}
    plan.changes = [(b, a) for b, a in plan.changes if a.sha256 not in refused]
    plan.desired = TrustSet(
        kept_before.get(e.sha256, e) for e in plan.desired.values() if e.sha256 not in refused or e.sha256 in kept_before
    )


def label_new_entries(plan: Plan, template: str | None, store) -> None:
    """A store's `label-template` (e.g. "corp: {label}") names the certificates a sync adds;
    fields: {label}, {sha1}, {sha256}. Existing entries keep their names."""
    if not template or not plan.adds:
        return
    renamed = {}
    for entry in plan.adds:
        cert = entry.cert
        try:
            label = template.format(label=entry.display_label, sha1=cert.sha1, sha256=cert.sha256)
        except (KeyError, IndexError, ValueError) as exc:
            from storesync.model import StoreError

            raise StoreError(f"{store}: label-template {template!r} is not valid ({exc}); "
                             "its fields are {label}, {sha1} and {sha256}") from None
        renamed[entry.sha256] = entry.replace(label=label)
    plan.adds = [renamed[e.sha256] for e in plan.adds]
    plan.desired = TrustSet(renamed.get(sha, e) for sha, e in plan.desired.items())
