"""Plans: what it takes to bring one store to a desired trust set, and what is lost on the way.

The engine works on trust sets only; it never sees bytes.
"""

from __future__ import annotations

from collections.abc import Mapping

from storesync.model import (
    ANCHOR, DISTRUST, DISTRUSTED, PURPOSES, SERVER_AUTH, TRUSTED, Capabilities, Entry, Record, TrustSet,
)

MIRROR, ADD, REMOVE = "mirror", "add", "remove"
NAMED = frozenset(PURPOSES)


class Loss(Record):
    """Something the target store cannot express, and what was done about it."""

    __slots__ = ("entry", "what")
    __hash__ = None  # type: ignore[assignment]

    def __init__(self, entry: Entry, what: str):
        self.entry, self.what = entry, what

    def to_json(self) -> dict[str, object]:
        return {"sha256": self.entry.sha256, "label": self.entry.display_label, "what": self.what}


class Plan:
    """What it takes to bring one store (`current`) to `desired`; a guard may hold it back."""

    def __init__(self, store: str, current: TrustSet, desired: TrustSet, adds: list[Entry] | None = None,
                 removals: list[Entry] | None = None, changes: list[tuple[Entry, Entry]] | None = None,
                 losses: list[Loss] | None = None, held_back: str | None = None):
        self.store, self.current, self.desired = store, current, desired
        self.adds = adds or []
        self.removals = removals or []
        self.changes = changes or []  # (before, after)
        self.losses = losses or []
        self.held_back = held_back  # why a guard stopped this plan, if one did
        # certificates it removes or narrows because the source distrusts them: the source's
        # word, which the removal guard (meant for a truncated source) does not count
        self.by_distrust: set[str] = set()
        self.rewrites: dict[str, str] = {}  # changes that only write an entry again: sha256 -> why
        self.create = False  # the store does not exist yet: the write creates it, empty if need be

    def __repr__(self) -> str:
        return f"Plan({self.store}: {self.summary()})"

    @property
    def empty(self) -> bool:
        return not (self.adds or self.removals or self.changes or self.create)

    def summary(self) -> str:
        if self.empty:
            return "in sync"
        if not (self.adds or self.removals or self.changes):
            return "to create, empty"
        parts = [f"{len(self.adds)} to add", f"{len(self.removals)} to remove"]
        if self.changes:
            parts.append(f"{len(self.changes)} trust changes")
        return ", ".join(parts)

    def rebased(self, now: TrustSet) -> "Plan":
        """`rebase(self, now)`: a store that finds itself changed since it was read calls this,
        so the stores layer needs nothing from the engine."""
        return rebase(self, now)

    def to_json(self) -> dict[str, object]:
        def brief(entry: Entry) -> dict[str, object]:
            return {"sha256": entry.sha256, "label": entry.display_label, "trust": dict(entry.trust)}

        return {
            "store": self.store,
            "adds": [brief(e) for e in self.adds],
            "removals": [brief(e) for e in self.removals],
            "changes": [
                {"sha256": a.sha256, "label": b.display_label, "before": dict(a.trust), "after": dict(b.trust),
                 **({"why": self.rewrites[a.sha256]} if a.sha256 in self.rewrites else {})}
                for a, b in self.changes
            ],
            "losses": [loss.to_json() for loss in self.losses],
            "held_back": self.held_back,
        }


def project(entry: Entry, caps: Capabilities, purpose: str = SERVER_AUTH) -> tuple[Entry | None, str | None]:
    """The entry as a store with `caps` can hold it (None: it cannot hold it safely).

    `purpose` is what a store without per-purpose trust is *for* ("any" for every purpose):
    only certificates trusted for it go in, as Debian and p11-kit build their bundles.
    """
    entry, loss = _dated(entry, caps) if entry.distrust_after else (entry, None)  # most entries have no dates
    if not caps.oids and not entry.trust.named:  # NSS: only the named purposes have a trust attribute
        other = [p for p in entry.trust if p not in NAMED]
        entry = entry.replace(trust={p: s for p, s in entry.trust.items() if p in NAMED})
        loss = _and(loss, f"{', '.join(other)}: left out, this store holds trust for {', '.join(PURPOSES)} only")
        if not entry.trust:
            return None, loss
    if not entry.trust:  # trusted for nothing: only a store that can say "disabled" keeps it
        return (entry, loss) if caps.disabled else (None, loss and _and(loss, "trusted for nothing: left out"))
    if entry.distrusted:
        if not caps.distrust:
            return None, _and(loss, "distrusted: left out, since this store cannot say distrusted")
        if caps.whole_distrust(entry) and dict(entry.trust) != DISTRUST:
            return entry.replace(trust=dict(DISTRUST)), _and(loss, "distrusted for some purposes: distrusted for all here")
        return entry, loss
    if not caps.anchors:
        return None, None  # a distrust list holds no anchors: nothing is lost by leaving one out
    if caps.purposes:
        return entry, loss
    trusted = entry.trust.trusted
    if purpose != "any" and purpose not in trusted:
        return None, _and(loss, f"trusted only for {', '.join(trusted)}: left out of this {purpose} store")
    if purpose == "any" and set(trusted) != set(ANCHOR):
        loss = _and(loss, f"trusted only for {', '.join(trusted)}: trusted for every purpose here")
    return _as_anchor(entry), loss


def _dated(entry: Entry, *caps: Capabilities) -> tuple[Entry, str | None]:
    """The entry with only the distrust-after dates stores with `caps` can all hold, and what
    that loses. A purpose whose dropped date has passed is no longer trusted: trusted without
    it, certificates issued since would be trusted where the source distrusts them. A store with
    one date for all its dated purposes (Windows) gets the earliest: distrusted sooner, never later."""
    dates = entry.distrust_after
    if not dates:
        return entry, None
    note = None
    if len(dates) > 1 and len(set(dates.values())) > 1 and any(c.one_date for c in caps):
        first = min(dates.values())
        entry = entry.replace(distrust_after=dict.fromkeys(dates, first))
        note = f"distrust-after dates differ by purpose: the earliest, {first:%Y-%m-%d}, for all of them here"
    dropped = {p: d for p, d in entry.distrust_after.items() if not all(c.dates(p) for c in caps)}
    if not dropped:
        return entry, note
    from datetime import datetime, timezone  # only here: dates are rare

    now = datetime.now(timezone.utc)
    passed = [p for p, d in sorted(dropped.items())
              if entry.trust.get(p) == TRUSTED and (d if d.tzinfo else d.replace(tzinfo=timezone.utc)) <= now]
    listed = ", ".join(f"{p} after {d:%Y-%m-%d}" for p, d in sorted(dropped.items()))
    loss = f"distrust-after dates dropped ({listed})"
    if passed:
        loss += f"; not trusted for {', '.join(passed)} here, since that date has passed"
    kept = {p: d for p, d in entry.distrust_after.items() if p not in dropped}
    return entry.replace(trust={p: s for p, s in entry.trust.items() if p not in passed}, distrust_after=kept), \
        _and(note, loss) if note else loss


def _and(loss: str | None, more: str) -> str:
    return f"{loss}; {more}" if loss else more


def _as_anchor(entry: Entry) -> Entry:
    """The entry trusted for every purpose: what a store without purposes holds. Kept on the
    entry, since a merge asks this of the same entry for every such store."""
    if entry.trust == ANCHOR:
        return entry
    if entry.as_anchor is None:
        entry.as_anchor = entry.replace(trust=dict(ANCHOR))
    return entry.as_anchor


class Scope(Record):
    """What a source speaks for. A TLS bundle says which roots are trusted for server-auth; it
    says nothing of e-mail trust, nor of distrust, so a target's e-mail trust and its distrust
    records are out of its scope and stay as they are."""

    __slots__ = ("purposes", "distrust", "dated")

    def __init__(self, purposes: frozenset[str] | None = None, distrust: bool = True,
                 dated: "bool | tuple[str, ...]" = True):
        self.purposes = purposes  # trusted purposes it speaks for (None: all)
        self.distrust = distrust  # whether it can say "distrusted"
        self.dated = dated  # the purposes whose distrust-after dates it can say (Capabilities.distrust_after)

    @classmethod
    def of(cls, caps: Capabilities, purpose: str, only: tuple[str, ...] = ()) -> "Scope":
        purposes = None if caps.purposes or purpose == "any" else frozenset(purpose.split(","))
        if only:
            purposes = frozenset(only) if purposes is None else purposes & frozenset(only)
        return cls(purposes, caps.distrust, caps.distrust_after)

    def keep_dates(self, have: Entry | None, wanted: Entry) -> Entry:
        return keep_dates(have, wanted, lambda p: self.dated is True or p in (self.dated or ()))

    def covers(self, purpose: str, state: str) -> bool:
        if state == DISTRUSTED:
            return self.distrust
        return self.purposes is None or purpose in self.purposes

    def combine(self, have: Entry | None, wanted: Entry | None) -> Entry | None:
        """The target's trust outside the scope, the source's inside it; a distrust the source
        cannot speak for is never overridden."""
        trust = {} if have is None else {p: s for p, s in have.trust.items() if not self.covers(p, s)}
        for p, state in ({} if wanted is None else wanted.trust).items():
            if self.covers(p, state) and not (trust.get(p) == DISTRUSTED and not self.distrust):
                trust[p] = state
        if not trust:  # nothing left to say, unless the source holds it "disabled" (trusted for nothing)
            return wanted if wanted is not None and not wanted.trust else None
        base = wanted or have
        return base if trust == base.trust else base.replace(trust=trust)


EVERYTHING = Scope()


def _kept_distrust(plan: Plan, entry: Entry, have: Entry) -> None:
    """Say where the target's distrust stands against the source's trust: a source that cannot
    say distrust lifts none, and `diff` shows the difference."""
    kept = sorted(p for p, state in entry.trust.items() if state == TRUSTED and have.trust.get(p) == DISTRUSTED)
    if kept:
        plan.losses.append(Loss(entry, f"distrusted here for {', '.join(kept)}: kept, since a source that cannot "
                                       "say distrust lifts none (diff shows the difference)"))


def keep_dates(have: Entry | None, wanted: Entry, dates) -> Entry:
    """`wanted` with `have`'s distrust-after dates for the purposes it still trusts and whose
    dates its source cannot say (`dates(purpose)` false): a bundle saying nothing of dates takes
    none away."""
    kept = {p: d for p, d in (have.distrust_after.items() if have is not None else ())
            if not dates(p) and wanted.trust.get(p) == TRUSTED and p not in wanted.distrust_after}
    return wanted.replace(distrust_after={**kept, **wanted.distrust_after}) if kept else wanted


def make_plan(
    source: TrustSet,
    current: TrustSet,
    caps: Capabilities,
    *,
    store: str,
    mode: str = MIRROR,
    purpose: str = SERVER_AUTH,
    scope: Scope = EVERYTHING,
    builtins: set[str] | frozenset[str] = frozenset(),
    rewrite: Mapping[str, str] | None = None,
) -> Plan:
    """Diff `source` (projected onto `caps`) against what the store holds now, within `scope`.

    An entry whose trust is unchanged is kept exactly as the store has it (label, extras),
    so a sync never rewrites what it does not need to; unless the store asks for it to be
    written again (`rewrite`, sha256 -> why: the store holds it in a form its readers may
    take differently), which is a change of its own, saying why.
    """
    plan = Plan(store=store, current=current, desired=TrustSet())
    if mode == REMOVE:
        return _remove(plan, source, current, caps, builtins)
    seen = lift(current, caps, purpose) if scope is not EVERYTHING else current
    desired: dict[str, Entry] = {}

    def settle(have: Entry | None, combined: Entry, origin: Entry) -> None:
        wanted, loss = project(combined, caps, purpose)
        if loss:
            plan.losses.append(Loss(origin, loss))
        if wanted is None:
            if have is not None:
                plan.removals.append(have)
                if combined.distrusted:  # a distrust this store cannot say: left out
                    plan.by_distrust.add(have.sha256)
        elif have is None:
            plan.adds.append(wanted)
            desired[wanted.sha256] = wanted
        elif have.trust_key() == wanted.trust_key():
            desired[have.sha256] = have
        else:
            after = wanted.replace(label=have.label or wanted.label, extras={**have.extras, **wanted.extras})
            plan.changes.append((have, after))
            desired[after.sha256] = after
            lost = set(have.trusted_purposes) - set(after.trusted_purposes)
            if lost and all(after.trust.get(p) == DISTRUSTED for p in lost):
                plan.by_distrust.add(after.sha256)

    everything = scope is EVERYTHING
    # What `project` makes of an undated entry depends on its trust map alone, and a store holds
    # a handful of distinct ones (shared): asked once per map, an entry the store already holds
    # as wanted is kept without building or projecting anything.
    outcome: dict[int, tuple[tuple | None, str | None]] = {}
    for entry in source.values():
        have = seen.get(entry.sha256)
        if everything and have is not None and not entry.distrust_after and (mode == MIRROR or entry.trust.trusted):
            found = outcome.get(id(entry.trust))
            if found is None:
                wanted, loss = project(entry, caps, purpose)
                found = outcome[id(entry.trust)] = (wanted and wanted._key, loss)
            if found[0] == have._key:
                if found[1]:
                    plan.losses.append(Loss(entry, found[1]))
                desired[have.sha256] = have
                continue
        if mode == ADD and have is not None and entry.trust and not entry.trusted_purposes:
            # add takes no trust away: an entry that only distrusts (all a filter leaves of a
            # certificate it did not select) is laid over the target's own
            combined = have.replace(trust={**have.trust, **entry.trust})
        else:
            combined = entry if everything else scope.combine(have, entry)
        if have is not None and not scope.distrust and have.distrusted:
            _kept_distrust(plan, entry, have)
        if combined is not None:
            held = current.get(entry.sha256)
            if held is not None and held.distrust_after and scope.dated is not True:  # rare: no call for the rest
                combined = scope.keep_dates(held, combined)
            settle(held, combined, entry)
    gone = {e.sha256 for e in plan.removals}
    for sha, have in current.items():
        if sha in desired or sha in gone:
            continue
        if mode == MIRROR:  # not in the source: only what the source does not speak for stays
            combined = scope.combine(seen[sha], None)
            if combined is None:
                plan.removals.append(have)
            else:
                settle(have, combined, have)
        else:
            desired[sha] = have
    if builtins and caps.distrust:
        _distrust_builtins(plan, desired, builtins)
    if rewrite:
        changed = {after.sha256 for _, after in plan.changes}
        for sha, why in rewrite.items():
            if sha in desired and sha in current and sha not in changed:
                plan.changes.append((current[sha], desired[sha]))
                plan.rewrites[sha] = why
    if mode == ADD:  # appends: the store's own certificates first, in their order, then the new ones
        ordered = [desired[sha] for sha in current if sha in desired]
        desired = {**{e.sha256: e for e in ordered}, **desired}
    plan.desired = TrustSet.adopt(desired)
    return plan


def _remove(plan: Plan, source: TrustSet, current: TrustSet, caps: Capabilities, builtins) -> Plan:
    """`--mode remove`: the source's certificates leave the store, whatever its trust in them;
    every other entry stays as it is. A root the store's users trust through a built-in list is
    distrusted instead (added as distrusted if the store does not hold it); a distrust the store
    holds already stays: it is what keeps such a root out."""
    desired = dict(current.items())
    for sha, entry in source.items():
        have = current.get(sha)
        builtin = sha in builtins and caps.distrust
        if have is not None and dict(have.trust) == DISTRUST:
            continue
        if builtin:
            after = (have or entry).replace(trust=dict(DISTRUST), distrust_after={})
            if have is None:
                plan.adds.append(after)
            else:
                plan.changes.append((have, after))
            plan.losses.append(Loss(entry, "a built-in root: distrusted instead of removed (the browser trusts it anyway)"))
            desired[sha] = after
        elif have is not None:
            plan.removals.append(have)
            del desired[sha]
    plan.desired = TrustSet(desired.values())
    # The source names what is to go: its word, as a distrust is; the removal guard (meant for a
    # source truncated by accident, which here could only remove less) does not count it.
    plan.by_distrust.update(e.sha256 for e in plan.removals)
    return plan


def touched(plan: Plan) -> set[str]:
    """The certificates a plan adds, removes or changes: all a write may touch, and all the
    read-back check and an undo look at (what others change meanwhile is theirs)."""
    return {e.sha256 for e in (*plan.adds, *plan.removals, *(after for _, after in plan.changes))}


def retarget(plan: Plan, now: TrustSet, wanted: dict[str, Entry | None]) -> Plan:
    """A plan for the store as it is `now`: each certificate of `wanted` brought to that entry
    (None: absent), every other one left exactly as it is now, whoever put it there."""
    new = Plan(plan.store, now, TrustSet(), losses=plan.losses, held_back=plan.held_back)
    desired = dict(now.items())
    for sha, want in wanted.items():
        have = now.get(sha)
        if want is None:
            if have is not None:
                new.removals.append(have)
                del desired[sha]
        elif have is None:
            new.adds.append(want)
            desired[sha] = want
        elif have.trust_key() != want.trust_key():
            new.changes.append((have, want))
            desired[sha] = want
    new.desired = TrustSet(desired.values())
    return new


def rebase(plan: Plan, now: TrustSet) -> Plan:
    """The plan's changes, applied to the store as it is now (another program wrote it since)."""
    return retarget(plan, now, {sha: plan.desired.get(sha) for sha in touched(plan)})


def undo(plan: Plan, now: TrustSet) -> Plan:
    """What puts back the certificates the plan touched as they were before it, leaving all
    others as they are now: a rollback never removes what another program added since."""
    return retarget(plan, now, {sha: plan.current.get(sha) for sha in touched(plan)})


def _distrust_builtins(plan: Plan, desired: dict[str, Entry], builtins: set[str] | frozenset[str]) -> None:
    """A root the store's users trust through a built-in module is not removed by deleting the
    store's copy: the removal is written as a distrust record instead."""
    for entry in [e for e in plan.removals if e.sha256 in builtins]:
        plan.removals.remove(entry)
        if dict(entry.trust) == DISTRUST:
            desired[entry.sha256] = entry  # this record is what keeps the built-in out: it stays
            continue
        after = entry.replace(trust=dict(DISTRUST))
        plan.changes.append((entry, after))
        plan.losses.append(Loss(entry, "a built-in root: distrusted instead of removed (the browser trusts it anyway)"))
        desired[entry.sha256] = after


def lift(trust_set: TrustSet, caps: Capabilities, purpose: str = SERVER_AUTH) -> TrustSet:
    """What a store says, in the model's terms: a store without per-purpose trust holds
    anchors *for its purpose* (a TLS bundle says nothing about e-mail), so its anchors are
    trusted for that purpose only; with purpose "any", for every purpose."""
    trust = _anchor_trust(caps, purpose)
    if trust is None:
        return trust_set
    return TrustSet(_lifted(e, trust) for e in trust_set.values())


def _anchor_trust(caps: Capabilities, purpose: str) -> dict[str, str] | None:
    """The trust `lift` gives a store's anchors (None: they keep their own)."""
    return None if caps.purposes or purpose == "any" else {p: TRUSTED for p in purpose.split(",")}


def _seen(caps: Capabilities, purpose: str, other: Capabilities):
    """An entry of a store with `caps` and `purpose` as `compare` sees it beside a store with
    `other`: lifted, with only the distrust-after dates both can hold."""
    trust = _anchor_trust(caps, purpose)
    dated = not (caps.distrust_after is True and other.distrust_after is True)

    def seen(entry: Entry) -> Entry:
        if trust is not None:
            entry = _lifted(entry, trust)
        return _dated(entry, caps, other)[0] if dated else entry

    return seen


def _lifted(entry: Entry, trust: dict[str, str]) -> Entry:
    if entry.distrusted or entry.trust == trust:
        return entry
    lifted = entry.replace(trust=trust)
    if entry.trust == ANCHOR:  # what `_as_anchor` would make of it again: the entry as read
        lifted.as_anchor = entry
    return lifted


def _status(entry: Entry, purposes: set[str] | None, whole_distrust: bool = False) -> tuple | None:
    """An entry reduced to what two stores of different capabilities can both say."""
    if entry.distrusted and (purposes is not None or whole_distrust):
        return ("distrusted",)
    if purposes is None:
        return entry.trust_key()
    return ("trusted",) if purposes & set(entry.trusted_purposes) or "any" in purposes else None


def compare(a: TrustSet, b: TrustSet, caps_a: Capabilities | None = None, caps_b: Capabilities | None = None,
            purpose_a: str = SERVER_AUTH, purpose_b: str = SERVER_AUTH) -> dict[str, list]:
    """Certificates only in a, only in b, and those whose trust differs, within what both
    stores can express (a TLS bundle and an NSS database agree on an anchor that NSS also
    trusts for e-mail: the bundle cannot say e-mail)."""
    caps_a, caps_b = caps_a or Capabilities(purposes=True, distrust=True), caps_b or Capabilities(purposes=True, distrust=True)
    # Each entry is lifted and dated as it is compared, not each set copied whole first: a
    # write's read-back compares every certificate it wrote, beside both sets.
    seen_a, seen_b = _seen(caps_a, purpose_a, caps_b), _seen(caps_b, purpose_b, caps_a)
    if caps_a.purposes and caps_b.purposes:
        common = None
    else:
        common = {p for caps, purpose in ((caps_a, purpose_a), (caps_b, purpose_b)) if not caps.purposes
                  for p in purpose.split(",")}
    only_a, differs = [], []
    for k, e in a.items():
        e, other = seen_a(e), b.get(k)
        if other is None:
            if project(e, caps_b, purpose_b)[0] is not None:
                only_a.append(e)
            continue
        other = seen_b(other)  # where either store can say this distrust only for every purpose, that is what counts
        whole = any(caps.whole_distrust(x) for caps in (caps_a, caps_b) for x in (e, other))
        if _status(e, common, whole) != _status(other, common, whole):
            differs.append((e, other))
    only_b = [e for e in (seen_b(e) for k, e in b.items() if k not in a) if project(e, caps_a, purpose_a)[0] is not None]
    return {"only_a": only_a, "only_b": only_b, "trust_differs": differs}
