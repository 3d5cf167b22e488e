"""The three-way merge, as properties over random edit sequences (hypothesis)."""

from __future__ import annotations

import datetime as dt

from hypothesis import given, settings, strategies as st

from storesync.engine.merge import View, merge
from storesync.engine.plan import compare, make_plan, project
from storesync.model import ANCHOR, DISTRUST, DISTRUSTED, TRUSTED, Certificate, Entry, TrustSet
from storesync.stores import Capabilities

from conftest import PKI

POOL = [Certificate(c.der) for c in (lambda p: [p.ca(f"Merge Pool Root {i}") for i in range(6)])(PKI())]
PLAIN = Capabilities()  # a PEM bundle or hashed directory
PRECISE = Capabilities(purposes=True, distrust=True, labels=True)  # NSS, TRUSTED CERTIFICATE
STORES = [("bundle", PLAIN), ("nssdb", PRECISE), ("trusted-pem", PRECISE), ("dir", PLAIN)]

TRUSTS = st.sampled_from([
    dict(ANCHOR), {"server-auth": TRUSTED}, {"server-auth": TRUSTED, "email": TRUSTED},
    dict(DISTRUST), {"email": DISTRUSTED, "server-auth": TRUSTED},
])
EDIT = st.tuples(
    st.sampled_from(["add", "remove", "retrust"]),
    st.integers(0, len(STORES) - 1),
    st.integers(0, len(POOL) - 1),
    TRUSTS,
)


def write(store_set: TrustSet, desired: TrustSet, caps: Capabilities) -> TrustSet:
    """What a store holds after the engine writes `desired` into it."""
    return make_plan(desired, store_set, caps, store="x").desired


def edit(sets: list[TrustSet], action: str, index: int, cert: int, trust: dict) -> None:
    caps = STORES[index][1]
    current = dict(sets[index])
    sha = POOL[cert].sha256
    if action == "remove":
        current.pop(sha, None)
    elif action == "add" or sha in current:
        wanted, _ = project(Entry(POOL[cert], trust=trust), caps, "server-auth")
        if wanted is None:
            return  # this store cannot say that (a distrust in a PEM bundle): the edit is impossible
        current[sha] = wanted
    sets[index] = TrustSet(current.values())


@settings(max_examples=150, deadline=None)
@given(rounds=st.lists(st.lists(EDIT, max_size=6), min_size=1, max_size=4))
def test_random_edits_then_merge_agree_and_keep_distrust_and_lose_nothing(rounds):
    sets = [TrustSet() for _ in STORES]
    baseline = None
    for edits in rounds:
        for action, index, cert, trust in edits:
            edit(sets, action, index, cert, trust)
        views = [View(name, s, caps) for (name, caps), s in zip(STORES, sets)]
        expected = baseline or TrustSet()
        removed = {
            sha for view in views for sha, e in expected.items()
            if project(e, view.caps, "server-auth")[0] is not None and sha not in view.current
        }
        distrusted = {(e.sha256, p) for s in sets for e in s.values() for p, v in e.trust.items() if v == DISTRUSTED}
        present = {sha for s in sets for sha in s}

        result = merge(baseline, views)
        sets = [write(s, result.desired_for(v), v.caps) for s, v in zip(sets, views)]
        baseline = result.merged

        # 1. every pair of stores agrees, within what both can say
        for i, (_, caps_i) in enumerate(STORES):
            for j, (_, caps_j) in enumerate(STORES):
                assert not any(compare(sets[i], sets[j], caps_i, caps_j).values()), (i, j)
        # 2. distrust wins: nothing distrusted anywhere before is trusted for that purpose anywhere now
        for s in sets:
            for e in s.values():
                for p, v in e.trust.items():
                    assert not (v == TRUSTED and (e.sha256, p) in distrusted), e
        # 3. a certificate that no store removed is not lost
        for sha in present - removed:
            assert sha in result.merged
        # and a certificate that anything distrusts stays known as distrusted (a built-in cannot come back)
        for sha, _ in distrusted:
            assert sha in result.merged and result.merged[sha].distrusted


def test_first_merge_takes_the_union_and_never_deletes():
    a = TrustSet([Entry(POOL[0]), Entry(POOL[1])])
    b = TrustSet([Entry(POOL[1], trust={"server-auth": TRUSTED}), Entry(POOL[2], trust={"email": TRUSTED})])
    result = merge(None, [View("a", a, PLAIN), View("b", b, PRECISE)])
    assert set(result.merged) == {POOL[0].sha256, POOL[1].sha256, POOL[2].sha256}
    # the precise store's restriction wins over the bundle's "anchor for its purpose"
    assert dict(result.merged[POOL[1].sha256].trust) == {"server-auth": TRUSTED}
    # the bundle is a server-auth bundle: its own certificates are server-auth anchors
    assert dict(result.merged[POOL[0].sha256].trust) == {"server-auth": TRUSTED}


def test_removal_against_a_trust_change_is_a_reported_conflict():
    base = TrustSet([Entry(POOL[0], trust={"server-auth": TRUSTED})])
    removed = TrustSet()
    changed = TrustSet([Entry(POOL[0], trust={"server-auth": TRUSTED, "email": TRUSTED})])
    result = merge(base, [View("a", removed, PRECISE), View("b", changed, PRECISE)])
    assert dict(result.merged[POOL[0].sha256].trust) == {"server-auth": TRUSTED}
    assert "left as it was" in result.conflicts[0]


def test_removal_beats_an_unchanged_store_and_distrust_beats_removal():
    base = TrustSet([Entry(POOL[0], trust={"server-auth": TRUSTED}), Entry(POOL[1], trust={"server-auth": TRUSTED})])
    a = TrustSet([Entry(POOL[1], trust=dict(DISTRUST))])  # removed POOL[0], distrusted POOL[1]
    b = TrustSet(base.values())  # unchanged
    c = TrustSet([Entry(POOL[0], trust={"server-auth": TRUSTED})])  # removed POOL[1]
    result = merge(base, [View("a", a, PRECISE), View("b", b, PRECISE), View("c", c, PRECISE)])
    assert POOL[0].sha256 not in result.merged
    assert result.merged[POOL[1].sha256].distrusted


def test_a_store_that_may_not_escalate_keeps_its_addition_at_home():
    base = TrustSet([Entry(POOL[0])])
    user = TrustSet([Entry(POOL[0]), Entry(POOL[1])])
    system = TrustSet([Entry(POOL[0])])
    views = [View("user", user, PLAIN, may_escalate=False), View("system", system, PLAIN)]
    result = merge(base, views)
    assert POOL[1].sha256 not in result.merged
    assert POOL[1].sha256 in result.desired_for(views[0])
    assert POOL[1].sha256 not in result.desired_for(views[1])
    assert "held back" in result.conflicts[0]
    # a trust raise on a certificate the others know stays in that store too, and only there
    raised = TrustSet([Entry(POOL[0], trust={"server-auth": TRUSTED, "email": TRUSTED})])
    result = merge(TrustSet([Entry(POOL[0], trust={"server-auth": TRUSTED})]),
                   [View("user", raised, PRECISE, may_escalate=False), View("system", TrustSet([Entry(POOL[0], trust={"server-auth": TRUSTED})]), PRECISE)])
    assert dict(result.merged[POOL[0].sha256].trust) == {"server-auth": TRUSTED}
    assert dict(result.desired_for(View("user", raised, PRECISE))[POOL[0].sha256].trust) == {"server-auth": TRUSTED, "email": TRUSTED}
    # its removals and distrusts still count: they lower trust
    distrusting = TrustSet([Entry(POOL[0], trust=dict(DISTRUST))])
    result = merge(base, [View("user", distrusting, PRECISE, may_escalate=False), View("system", system, PLAIN)])
    assert result.merged[POOL[0].sha256].distrusted


def test_earliest_distrust_after_wins():
    early, late = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc), dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)
    caps = Capabilities(purposes=True, distrust=True, distrust_after=True)
    a = TrustSet([Entry(POOL[0], trust={"server-auth": TRUSTED}, distrust_after={"server-auth": late})])
    b = TrustSet([Entry(POOL[0], trust={"server-auth": TRUSTED}, distrust_after={"server-auth": early})])
    result = merge(None, [View("a", a, caps), View("b", b, caps)])
    assert result.merged[POOL[0].sha256].distrust_after == {"server-auth": early}


def test_stores_that_agree_with_the_baseline_are_merged_and_planned_without_projecting_each_entry(monkeypatch):
    """What the engine makes of an undated entry for a store depends on its trust alone, and a
    store of any size holds a few distinct trusts: a merge and plans over stores that agree ask
    `project` a few times per store, not once per certificate (10 000 of them made it 11 % of the
    time the four stores took to read)."""
    import storesync.engine.merge as merge_module
    import storesync.engine.plan as plan_module

    certs = [Certificate(b"not parsed: the engine needs only the identity %d" % n) for n in range(400)]
    anchors = TrustSet(Entry(c) for c in certs)  # a bundle's (ANCHOR)
    precise = TrustSet(Entry(c, trust={"server-auth": TRUSTED}) for c in certs)
    views = [View(name, precise if caps.purposes else anchors, caps) for name, caps in STORES]
    baseline = merge(None, views).merged
    calls = []
    real = plan_module.project

    def counted(*args, **kwargs):
        calls.append(args[0].sha256)
        return real(*args, **kwargs)

    monkeypatch.setattr(plan_module, "project", counted)
    monkeypatch.setattr(merge_module, "project", counted)
    result = merge(baseline, views)
    plans = [make_plan(result.desired_for(v), v.current, v.caps, store=v.name) for v in views]
    assert all(p.empty for p in plans)
    assert len(calls) <= 4 * len(STORES), f"{len(calls)} projections for {len(certs)} certificates in {len(STORES)} stores"


def test_a_store_that_may_not_escalate_cannot_lift_a_distrust_after_date():
    """Removing a root's distrust-after date, or moving it later, trusts certificates issued since:
    a raise of trust like any other. A world-writable store's removed date reached the root-owned
    ones (`_raises_trust` compared trust alone)."""
    date, later = dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc), dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)
    dated = Capabilities(purposes=True, distrust=True, distrust_after=True)
    held = Entry(POOL[0], trust={"server-auth": TRUSTED}, distrust_after={"server-auth": date})
    for edited in (Entry(POOL[0], trust={"server-auth": TRUSTED}),
                   Entry(POOL[0], trust={"server-auth": TRUSTED}, distrust_after={"server-auth": later})):
        views = [View("user", TrustSet([edited]), dated, may_escalate=False), View("system", TrustSet([held]), dated)]
        result = merge(TrustSet([held]), views)
        assert result.merged[POOL[0].sha256].distrust_after == {"server-auth": date}, edited.distrust_after
        assert any("held back" in c for c in result.conflicts)
    # a store that cannot hold dates says nothing of them: no raise
    views = [View("user", TrustSet([Entry(POOL[0], trust={"server-auth": TRUSTED})]), PRECISE, may_escalate=False),
             View("system", TrustSet([held]), dated)]
    result = merge(TrustSet([held]), views)
    assert result.merged[POOL[0].sha256].distrust_after == {"server-auth": date} and not result.conflicts


def test_each_store_keeps_its_own_order_and_gets_the_others_additions_after_it():
    """A merge of two bundles rewrote the first in another order (the merged set's): each store
    now keeps its certificates in its own order, what the others add coming after them."""
    a = TrustSet([Entry(POOL[n]) for n in (3, 0, 2)])
    b = TrustSet([Entry(POOL[n]) for n in (1, 2, 0)])
    views = [View("a", a, PLAIN), View("b", b, PLAIN)]
    result = merge(None, views)  # the first merge: the union
    assert [e.cert for e in result.desired_for(views[0]).values()] == [POOL[n] for n in (3, 0, 2, 1)]
    assert [e.cert for e in result.desired_for(views[1]).values()] == [POOL[n] for n in (1, 2, 0, 3)]


def test_an_addition_kept_at_home_keeps_its_place_in_its_store():
    """What a store that may not escalate adds stays in that store only, and where it was: it
    went to the end of the file."""
    a = TrustSet([Entry(POOL[n]) for n in (3, 4, 0)])
    views = [View("user", a, PLAIN, may_escalate=False), View("system", TrustSet([Entry(POOL[0]), Entry(POOL[3])]), PLAIN)]
    result = merge(TrustSet([Entry(POOL[0]), Entry(POOL[3])]), views)
    assert POOL[4].sha256 not in result.merged
    assert [e.cert for e in result.desired_for(views[0]).values()] == [POOL[n] for n in (3, 4, 0)]
