"""Three-way merge of N stores against the last agreed baseline.

Each store's delta against the baseline (as that store can express it) is computed; the
union of the deltas is applied to the baseline. Conflicts are settled deterministically:
distrust beats trust, a removal beats a store that did not change, and a removal in one
store against a trust change in another is reported and left as it was. The first run (no
baseline) takes the union and never deletes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable
from datetime import datetime

from storesync.engine.plan import keep_dates, lift, project
from storesync.model import DISTRUSTED, TRUSTED, Capabilities, Entry, TrustSet


@dataclass(frozen=True)
class View:
    """One store as the merge sees it: what it holds (lifted), what it can say, and
    whether its additions may reach the other stores (the trust-escalation guard)."""

    name: str
    current: TrustSet
    caps: Capabilities
    purpose: str = "server-auth"
    may_escalate: bool = True


@dataclass
class MergeResult:
    merged: TrustSet
    conflicts: list[str] = field(default_factory=list)
    held: dict[str, list[Entry]] = field(default_factory=dict)  # store -> its own entries kept home

    def desired_for(self, view: View) -> TrustSet:
        """The merged set, with the store's own entries that a guard kept at home: an addition,
        or a trust raise, that did not spread stays in the store that made it (unless the merge
        distrusts that certificate: distrust wins)."""
        home = {e.sha256: e for e in self.held.get(view.name, [])}
        merged = {sha: home.pop(sha) if sha in home and not entry.distrusted else entry
                  for sha, entry in self.merged.items()} if home else self.merged
        # in the store's own order (what it keeps at home included), what the others add after
        # it: a merge does not reorder a file
        own = [merged[sha] if sha in merged else home[sha] for sha in view.current if sha in merged or sha in home]
        return TrustSet([*own, *(e for sha, e in merged.items() if sha not in view.current)])


def combine(opinions: list[tuple[Entry, Capabilities]]) -> Entry:
    """One entry from several stores' opinions of one certificate. Distrust wins per purpose;
    trust comes from the stores that can say purposes when any holds the certificate;
    the earliest distrust-after date wins."""
    precise = [e for e, caps in opinions if caps.purposes] or [e for e, _ in opinions]
    trust: dict[str, str] = {}
    for entry in precise:
        for purpose, state in entry.trust.items():
            if state == TRUSTED:
                trust.setdefault(purpose, TRUSTED)
    for entry, _ in opinions:
        for purpose, state in entry.trust.items():
            if state == DISTRUSTED:
                trust[purpose] = DISTRUSTED
    after: dict[str, datetime] = {}
    for entry, _ in opinions:
        for purpose, date in entry.distrust_after.items():
            after[purpose] = min(date, after.get(purpose, date))
    first = opinions[0][0]
    label = next((e.label for e, _ in opinions if e.label), None)
    extras: dict = {}
    for entry, _ in opinions:
        extras = {**entry.extras, **extras}
    return first.replace(trust=trust, distrust_after=after, label=label, extras=extras)


def merge(baseline: TrustSet | None, views: list[View], admit: Callable[[Entry], bool] = lambda e: True) -> MergeResult:
    """`admit` says which new anchors may spread (the profile's ca_only); others stay at home."""
    baseline = baseline if baseline is not None else TrustSet()  # first run: all is added
    result = MergeResult(merged=TrustSet())
    added: dict[str, list[tuple[Entry, Capabilities]]] = {}
    changed: dict[str, list[tuple[Entry, Capabilities]]] = {}
    removed: dict[str, list[str]] = {}
    distrusts: list[tuple[Entry, Capabilities]] = []
    for view in views:
        lifted = _lifted_key(view)
        expected = _expected_keys(baseline, view, lifted)
        kept: list[tuple[Entry, Capabilities]] = []  # its unchanged distrust records: they still win
        for sha, entry in view.current.items():
            key = lifted if lifted and not entry.distrusted else entry.trust_key()
            if expected.get(sha) == key:  # unchanged since the baseline (the common case: no entry is built)
                if entry.distrusted:
                    if view.caps.whole_distrust(baseline[sha]):
                        # "distrusted for all" is all this store can say of the baseline's distrust
                        # for some purposes (Windows' Disallowed): it says nothing more
                        entry = baseline[sha]
                    kept.append((entry, view.caps))
                continue
            entry = lift(TrustSet([entry]), view.caps, view.purpose)[sha]
            if entry.distrusted:
                distrusts.append((entry, view.caps))
            if sha not in baseline and not entry.distrusted and not admit(entry):
                result.held.setdefault(view.name, []).append(view.current[sha])
                result.conflicts.append(f"{entry.display_label}: not a CA certificate; it stays in {view.name} only")
                continue
            if not view.may_escalate and (sha not in baseline or _raises_trust(baseline[sha], entry, view.caps)):
                result.held.setdefault(view.name, []).append(view.current[sha])
                result.conflicts.append(
                    f"{entry.display_label}: trust added in {view.name} held back (that store may not "
                    "add trust to the others; allow_escalation = true in the profile permits it)"
                )
                continue
            (changed if sha in baseline else added).setdefault(sha, []).append((entry, view.caps))
        distrusts += kept
        for sha in expected.keys() - view.current.keys():
            removed.setdefault(sha, []).append(view.name)

    merged: dict[str, Entry] = {}
    for sha, entry in baseline.items():
        if sha in changed:
            # stores that cannot hold a date say nothing of the baseline's
            change = keep_dates(entry, combine(changed[sha]), lambda p: any(c.dates(p) for _, c in changed[sha]))
            if sha in removed and not change.distrusted:
                result.conflicts.append(
                    f"{entry.display_label}: removed in {', '.join(removed[sha])} but its trust changed "
                    "elsewhere; left as it was"
                )
                change = entry
            merged[sha] = change
        elif sha not in removed:
            merged[sha] = entry
    for sha in sorted(added):
        merged[sha] = combine(added[sha])
    # Distrust wins: whatever any store distrusts now is distrusted in the result, even where
    # another store removed or re-trusted it (removing a distrust record would let a built-in
    # root back in).
    for entry, caps in distrusts:
        have = merged.get(entry.sha256)
        merged[entry.sha256] = combine([(entry, caps), *([(have, Capabilities(purposes=True))] if have else [])])
    result.merged = TrustSet.adopt(merged)
    return result


def _lifted_key(view: View) -> tuple | None:
    """The trust key every anchor of a store without purposes has once lifted (None: it has purposes)."""
    if view.caps.purposes or view.purpose == "any" or not view.caps.anchors:  # a distrust list holds none
        return None
    return (tuple(sorted((p, TRUSTED) for p in view.purpose.split(","))), ())


def _expected_keys(baseline: TrustSet, view: View, lifted: tuple | None) -> dict[str, tuple]:
    """The trust key of each baseline entry as this store would hold it, in the model's terms."""
    expected = {}
    by_trust: dict[int, tuple | None] = {}  # an undated entry's key depends on its (shared) trust map alone
    for sha, entry in baseline.items():
        memo = not entry.distrust_after
        key = by_trust.get(id(entry.trust), False) if memo else False
        if key is False:
            shown = project(entry, view.caps, view.purpose)[0]
            key = None if shown is None else lifted if lifted and not shown.distrusted else shown.trust_key()
            if memo:
                by_trust[id(entry.trust)] = key
        if key is not None:
            expected[sha] = key
    return expected


def _raises_trust(before: Entry, after: Entry, caps: Capabilities) -> bool:
    """Does `after` trust something `before` did not (or un-distrust something, or drop or defer a
    distrust-after date where its store could hold one: certificates issued since are trusted)?"""
    return any(after.trust.get(p) == TRUSTED and before.trust.get(p) != TRUSTED for p in after.trust) or any(
        before.trust.get(p) == DISTRUSTED and after.trust.get(p) != DISTRUSTED for p in before.trust
    ) or any(after.trust.get(p) == TRUSTED and caps.dates(p) and (p not in after.distrust_after or after.distrust_after[p] > when)
             for p, when in before.distrust_after.items())
