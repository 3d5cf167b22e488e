"""Guards: changes the engine holds back unless the administrator forces them."""

from __future__ import annotations

from storesync.engine.plan import MIRROR, REMOVE, Loss, Plan, Scope, lift, project
from storesync.model import TRUSTED, Entry, TrustSet

DEFAULT_REMOVAL_SHARE = 0.10


def removal_guard(plan: Plan, share: float = DEFAULT_REMOVAL_SHARE) -> str | None:
    """Why `plan` removes too much to apply unasked (a truncated or emptied source), or None.

    Held back: removing every anchor of a non-empty store, or more than `share` of them
    (removing a single certificate is never held back on share alone). What the source
    distrusts does not count: an explicit distrust is its word, and distrust always wins.
    """
    mine = plan.by_distrust
    narrowed = sum(1 for before, after in plan.changes
                   if after.sha256 not in mine and set(before.trusted_purposes) - set(after.trusted_purposes))
    have, gone = len(plan.current), sum(1 for e in plan.removals if e.sha256 not in mine) + narrowed
    if not gone:
        return None
    if gone == have:
        return f"would remove or reduce the trust of all {have} certificates of the store"
    if gone > max(1, share * have):
        return f"would remove or reduce the trust of {gone} of {have} certificates (more than {share:.0%})"
    return None


def select(trust_set: TrustSet, purposes: tuple[str, ...] = (), drop_expired: bool = False,
           only: tuple[str, ...] = ()) -> TrustSet:
    """A profile's filters: only anchors for `purposes` (trust narrowed to them), without expired
    certificates if asked, and only the certificates `only` names (see `selected`). Distrust is
    always kept, and only distrust: a certificate a filter leaves out keeps its distrusted
    purposes and none of its trusted ones (a selection never widens trust; in add mode that
    distrust is laid over the target's own entry, see make_plan)."""
    if not purposes and not drop_expired and not only:
        return trust_set
    from datetime import datetime, timezone  # only here: a plain sync never loads datetime

    now = datetime.now(timezone.utc)
    kept = []
    for entry in trust_set.values():
        trust = entry.trust
        if (only and not selected(entry, only)
                or drop_expired and entry.cert.not_after and entry.cert.not_after < now):
            trust = {p: s for p, s in trust.items() if s != TRUSTED}
        elif purposes:
            trust = {p: s for p, s in trust.items() if s != TRUSTED or p in purposes}
        if trust:
            kept.append(entry if trust == entry.trust else entry.replace(trust=trust))
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
    """Never add trust in a certificate that is neither a CA nor self-issued (a leaf of
    someone else's pasted from a `fullchain.pem`): such adds are dropped from the plan, and so
    is the trust a change would give it for a purpose more. Taking trust away is never refused:
    what is left of a change is applied, and a certificate left trusted for nothing is removed."""
    if not plan.adds and not plan.changes:
        return
    may_anchor = _remembered().may_anchor  # a pass is remembered (storesync.loadable)
    desired = dict(plan.desired.items())
    adds, changes, refused = [], [], False
    for entry in plan.adds:
        if entry.distrusted or may_anchor(entry.cert):
            adds.append(entry)
        else:
            plan.losses.append(Loss(entry, "not a CA certificate: refused (ca_only)"))
            del desired[entry.sha256]
            refused = True
    for before, after in plan.changes:
        raised = [p for p in after.trusted_purposes if before.trust.get(p) != TRUSTED]
        if not raised or may_anchor(after.cert):
            changes.append((before, after))
            continue
        refused = True
        plan.losses.append(Loss(after, f"not a CA certificate: trust for {', '.join(raised)} refused (ca_only)"))
        kept = {p: s for p, s in after.trust.items() if p not in raised}
        if not kept:
            plan.removals.append(before)
            del desired[before.sha256]
        elif kept == dict(before.trust):
            desired[before.sha256] = before
        else:
            narrowed = after.replace(trust=kept)
            changes.append((before, narrowed))
            desired[before.sha256] = narrowed
    if refused:
        plan.adds, plan.changes, plan.desired = adds, changes, TrustSet(desired.values())


def label_new_entries(plan: Plan, template: str | None, store) -> None:
    """A store's `label-template` (e.g. "corp: {label}") names the certificates a sync adds;
    fields: {label}, {sha1}, {sha256}. Existing entries keep their names. The default labels of
    what it adds (each printed, recorded, and a Java alias or an NSS nickname) are remembered in
    the state dir, or worked out now and remembered (`storesync.loadable.label`)."""
    if not plan.adds:
        return
    label = _remembered().label
    for entry in plan.adds:
        if not entry.label:
            label(entry.cert)
    if not template:
        return
    from storesync.stores import COMMON_VALUES, format_label

    renamed = {}
    for entry in plan.adds:
        label = format_label(template, entry.display_label, entry.cert.sha1, entry.cert.sha256)
        if label is None:  # the store's opening refused it already; a sentence all the same, never a traceback
            from storesync.model import StoreError

            raise StoreError(f"{store}: label-template= cannot be {template!r}; "
                             f"use {COMMON_VALUES['label-template'].what}")
        renamed[entry.sha256] = entry.replace(label=label)
    plan.adds = [renamed[e.sha256] for e in plan.adds]
    plan.desired = TrustSet(renamed.get(sha, e) for sha, e in plan.desired.items())


def refuse_unloadable(plan: Plan, reader: str) -> None:
    """A certificate is written into a store only if the programs reading that store load it
    (one damaged certificate makes OpenSSL or keytool refuse the whole file), and a self-signed
    root whose signature fails never becomes an anchor. Refusals are losses, never silent."""
    if not plan.adds and not plan.changes:
        return  # nothing is spread or raised: a no-op sync does not even import the judge
    _remembered()
    refused = {}
    # a certificate the store holds already is not spread by a change, so only an addition's
    # loading is judged; and only what raises trust is: taking trust away is never refused
    raising = [after for before, after in plan.changes if set(after.trusted_purposes) - set(before.trusted_purposes)]
    for entry, loads in [*((e, True) for e in plan.adds), *((e, False) for e in raising)]:
        why = _refusal(entry, reader, loads)
        if why is not None:
            refused[entry.sha256] = why
    for entry in [*plan.adds, *(after for before, after in plan.changes)]:
        if entry.sha256 in refused:
            plan.losses.append(Loss(entry, refused[entry.sha256]))
    if refused:
        _drop(plan, refused)


def refused(entry: Entry, reader: str) -> bool:
    """Whether a sync leaves `entry` out of a store that `reader` reads: `diff` does not count
    what a sync would never write as a difference."""
    return _refusal(entry, reader) is not None


def _refusal(entry: Entry, reader: str, loads: bool = True) -> str | None:
    """Why a sync leaves `entry` out of a store `reader` reads (None: it does not): the readers
    would not load it (judged when `loads`), or it is a root whose own signature fails. crypt32
    never checks a root's own signature, and Windows Update ships such a root (CCA India 2015
    SPL): a Windows store keeps what Windows itself distributes."""
    from storesync import loadable

    why = loadable.refusal(entry.cert, reader) if loads else None
    if why is not None:
        return f"{why}: left out, {loadable.NAMES[reader]} would not load it"
    if reader != loadable.CRYPT32 and entry.trusted_purposes and loadable.bad_self_signature(entry.cert):
        return "a self-signed root whose signature does not verify: refused as an anchor"
    return None


def _remembered():
    """storesync.loadable, believing what the state dir remembers of certificates."""
    from storesync import loadable, state

    loadable.remember_in(state.state_dir())
    return loadable


def save_passed_checks(forget: bool = False) -> None:
    """Before and after the writes: what the judge passed need not be judged again
    (storesync.loadable); `forget`: nor held in memory meanwhile."""
    import sys

    if "storesync.loadable" in sys.modules:
        loadable = sys.modules["storesync.loadable"]
        if forget:
            loadable.forget()
        else:
            loadable.save()


def _drop(plan: Plan, refused) -> None:
    """Take refused adds and trust changes out of a plan: an add is not made, a change leaves
    the store's entry as it is."""
    plan.adds = [e for e in plan.adds if e.sha256 not in refused]
    kept_before = {before.sha256: before for before, after in plan.changes if after.sha256 in refused}
    plan.changes = [(b, a) for b, a in plan.changes if a.sha256 not in refused]
    plan.desired = TrustSet(
        kept_before.get(e.sha256, e) for e in plan.desired.values() if e.sha256 not in refused or e.sha256 in kept_before
    )


def note_fixed(plan: Plan, wanted: TrustSet, held: set[str], store, mode: str, scope: Scope) -> None:
    """A certificate the store's readers trust through an entry storesync never changes (a Java
    private-key entry's, `Store.fixed_anchors`) stays trusted whatever the source says: when the
    source would have it gone, the plan says so, and how to take it out, instead of keeping quiet.
    `held`: those a source trusts the same way (its own key entry): not gone from it."""
    for sha, (entry, through) in store.fixed_anchors.items():
        source = wanted.get(sha)
        if mode == REMOVE:
            why = source is not None and "--mode remove names it"
        elif source is None and sha in held:
            why = None
        elif source is None:  # in mirror mode, gone unless the source does not speak for its trust
            seen = lift(TrustSet([entry]), store.capabilities, store.purpose)[sha]
            why = mode == MIRROR and scope.combine(seen, None) is None and "the source does not hold it"
        elif project(source, store.capabilities, store.purpose)[0] is None:
            why = "the source distrusts it" if source.distrusted else f"the source does not trust it for {store.purpose}"
        else:
            why = None
        if why:
            plan.losses.append(Loss(entry, f"{why}, but this store still trusts it through its {through}: "
                                           "storesync never changes such an entry"))
