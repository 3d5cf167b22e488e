"""The store contract: every kind, and every ordered pair of writable kinds, through the real CLI.

Per kind: a write reads back as the plan's desired set; a second identical sync writes nothing;
a broken store gives exit 2, one sentence, and stays as it was. Per ordered pair and trust
shape (contract.SHAPES, varied by hypothesis): after `sync A B`, `diff A B` exits 0 or the sync
said `!` for every difference; a second sync is in sync; no trust is widened; `--mode add`
neither removes nor widens. Known defects are strict xfails: they turn red when fixed.
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from conftest import pem_of, storesync
from contract import (
    REGISTRY, SHAPES, SOURCES, WRITABLE, ShapeCerts, check_hostile, check_pair, check_pairs, check_round_trip, default_variation,
    cli_json, entries_of, make_store, read_store, translation_table,
)
from storesync.engine.plan import lift
from storesync.model import PURPOSES
from storesync.model import StoreError
from storesync.stores import KINDS, open_store, options_of, values_of

#: (source kind, target kind, shape) -> why it fails today. Only sources that can hold per-purpose
#: distrust (pem-trusted, nss, certdata) can show what a target does with it; only sources that
#: trust less than a target's anchor (sst-disallowed, certdata) can show a mirror's narrowing.
KNOWN: dict[tuple[str, str, str], str] = {}  # none today
#: Per-kind round trips that fail today: (kind, shape) -> why.
KNOWN_ROUND_TRIP: dict[tuple[str, str], str] = {}


def known(a: str, b: str, shape: str) -> str | None:
    return KNOWN.get((a, b, shape))


@pytest.fixture(scope="session")
def certs(pki) -> ShapeCerts:
    return ShapeCerts(pki)


def test_every_kind_is_registered():
    """A new kind gets the suite by registering here; an unregistered one fails this test."""
    assert set(KINDS) <= {k.kind for k in REGISTRY.values()}
    assert set(KINDS) - {"certdata", "tuf"} <= {k.kind for k in WRITABLE}


def test_the_non_der_certificate_is_refused_by_cryptography(certs):
    from storesync.model import Certificate

    assert Certificate(certs.der["non-der"]).x509 is None
    assert Certificate(certs.der["v1-root"]).x509 is not None and Certificate(certs.der["root-no-bc"]).ca_flag is False
    assert not Certificate(certs.der["root-no-bc"]).says_leaf  # no basicConstraints: an anchor in NSS (C), not a peer


# --- per kind ------------------------------------------------------------------------------------


def _round_trip_cases() -> list:
    return list(_round_trip_params())


def _round_trip_params():
    for kind in WRITABLE:
        for shape in SHAPES:
            reason = KNOWN_ROUND_TRIP.get((kind.name, shape))
            marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
            yield pytest.param(kind, shape, marks=marks, id=f"{kind.name}-{shape}")


@pytest.mark.parametrize("kind,shape", _round_trip_cases())
def test_round_trip(kind, shape, certs, tmp_path):
    assert check_round_trip(kind, certs, {shape: default_variation(shape)}, tmp_path) == []


def _hostile_cases():
    for kind in WRITABLE:
        for what in kind.hostile:
            yield pytest.param(kind, what, id=f"{kind.name}-{what}")


@pytest.mark.parametrize("kind,what", list(_hostile_cases()))
def test_hostile_store(kind, what, certs, tmp_path):
    assert check_hostile(kind, what, certs, tmp_path) == []


@pytest.mark.parametrize("kind", WRITABLE, ids=str)
def test_sync_creates_its_target(kind, certs, tmp_path):
    """A sync that finds nothing to write (the source's one certificate is refused) still
    leaves a store that `diff` can read."""
    source = tmp_path / "leaf.pem"
    source.write_bytes(pem_of(certs.der["leaf"]))
    kind.create(kind.path_at(tmp_path))
    spec = kind.spec_at(tmp_path)
    assert storesync("sync", f"pem:{source}", spec).returncode == 0
    result = storesync("diff", f"pem:{source}", spec)
    assert result.returncode in (0, 1), result.stderr


def _with(spec: str, option: str, value: str) -> str:
    """The spec with `option=value`, in place of the spec's own value (an option given twice is an error)."""
    path, _, query = spec.partition("?")
    items = [item for item in query.split("&") if item and item.partition("=")[0] != option]
    return f"{path}?{'&'.join([*items, f'{option}={value}'])}"


@pytest.mark.parametrize("kind", list(REGISTRY.values()), ids=str)
def test_every_option_value_is_checked_as_the_spec_is_opened(kind, tmp_path):
    """Every option that takes only some values (a kind's own, declared beside its options, and
    purpose=, max-removal-share=, label-template= of every kind) refuses another as the store is
    opened, before anything is read: a wrong purpose= would write an empty bundle, and a mirror
    would remove every certificate. The values it names are taken. password-file= takes any
    file name, but not none (empty, it was no option: a new Java store took `changeit`)."""
    spec, values = kind.spec_at(tmp_path), values_of(kind.kind)
    assert set(values) <= set(options_of(kind.kind)) and {"purpose", "max-removal-share"} <= set(values)
    for option, accepted in values.items():
        bogus = "" if option == "password-file" else "{bogus}"
        with pytest.raises(StoreError) as refused:
            open_store(_with(spec, option, bogus))
        message = str(refused.value)
        assert str(kind.path_at(tmp_path)) in message, message
        assert f"{option}= cannot be {bogus!r}; use {accepted.what}" in message, message
        for word in accepted.words:
            open_store(_with(spec, option, word))


@pytest.mark.parametrize("kind", list(REGISTRY.values()), ids=str)
def test_a_read_only_kind_is_refused_as_a_target_before_any_plan(kind, certs, tmp_path):
    """A read-only kind (the suite's writable=False) named as a target: exit 2, one sentence,
    before anything is read, planned or backed up; a writable one opens as a target."""
    spec = kind.spec_at(tmp_path)
    if kind.writable:
        open_store(spec, written=True)
        return
    source = tmp_path / "root.pem"
    source.write_bytes(pem_of(certs.der["anchor-all"]))
    env = {**os.environ, "STORESYNC_STATE_DIR": str(tmp_path / "state")}
    for mode in ("add", "mirror"):
        result = storesync("sync", "--mode", mode, f"pem:{source}", spec, env=env)
        assert (result.returncode, result.stdout) == (2, ""), result.stdout + result.stderr
        assert result.stderr.startswith("storesync: ") and result.stderr.count("\n") == 1
        assert f"{kind.kind} stores are read-only" in result.stderr and "never a target" in result.stderr
    listed = storesync("rollback", "--list", spec, env=env)
    assert listed.returncode == 1 and ": no backups in " in listed.stdout, listed.stdout + listed.stderr


# --- per ordered pair ----------------------------------------------------------------------------


def variations(shape: str):
    """What hypothesis varies in a shape: purposes, dates, label text."""
    base = default_variation(shape)
    when = st.datetimes(dt.datetime(2000, 1, 1), dt.datetime(2045, 1, 1), timezones=st.just(dt.timezone.utc))
    label = st.just(base["label"])
    if shape == "label-non-ascii":
        label = st.text(st.characters(min_codepoint=0xA0, max_codepoint=0x30FF, exclude_categories=("Cs",)),
                        min_size=1, max_size=16).map(lambda s: f"Zert {s}")
    elif shape == "label-nul":
        label = st.tuples(st.text("abcxyz ", max_size=6), st.text("abcxyz ", max_size=6)).map(
            lambda t: f"n{t[0]}\x00{t[1]}")
    return st.fixed_dictionaries({
        "purpose": st.sampled_from(PURPOSES), "also": st.none() | st.sampled_from(PURPOSES),
        "after": when.map(lambda d: d.replace(microsecond=0)), "label": label,
    })


def groups(a):
    """The targets of source `a`, grouped by the shapes known to fail with them (left out of
    their case: a failed target rolls back the whole sync, and the known defects have tests of their own)."""
    by_known: dict[tuple, list] = {}
    for b in WRITABLE:  # b may be a's kind too: a second store of it
        by_known.setdefault(tuple(s for s in SHAPES if known(a.name, b.name, s)), []).append(b)
    return by_known.items()


def _pairs_check(a, certs, draw):
    problems = []
    for n, (left_out, targets) in enumerate(groups(a)):
        case = draw(st.fixed_dictionaries({s: variations(s) for s in SHAPES if s not in left_out}), n)
        with tempfile.TemporaryDirectory() as tmp:
            for b, broken in check_pairs(a, targets, certs, case, Path(tmp)).items():
                problems += [(a.name, b, *x) for x in broken]
    assert problems == []


def _pairs_test(max_examples: int):
    @settings(max_examples=max_examples, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(data=st.data())
    def test(a, certs, data):
        """Every ordered pair (a, b), and a into a second store of its own kind: one CLI run syncs
        `a` into all the b's at once."""
        _pairs_check(a, certs, lambda strategy, n: data.draw(strategy, label=f"case {n}"))

    return test


test_pairs = pytest.mark.parametrize("a", SOURCES, ids=str)(_pairs_test(1))
test_pairs_campaign = pytest.mark.slow(pytest.mark.parametrize("a", SOURCES, ids=str)(_pairs_test(20)))


def defect_case(a, shape: str) -> dict[str, dict]:
    """One shape's case; with a distrust beside it where the source holds no anchors (a Windows
    Disallowed store would otherwise be empty, and a sync refuses an empty source)."""
    case = {shape: default_variation(shape)}
    if not open_store(a.spec_at(Path("/nonexistent"))).capabilities.anchors:
        case["distrust-all"] = default_variation("distrust-all")
    return case


def _pair_check(a, b, certs, case):
    with tempfile.TemporaryDirectory() as tmp:
        broken = check_pair(a, b, certs, case, Path(tmp))
    assert broken == [], case


def _defect_cases(everywhere: bool):
    """Each known (pair, shape) defect on its own; in the default run only the first pair of each."""
    seen = set()
    for (a, b, shape), reason in KNOWN.items():
        if everywhere or (reason, shape) not in seen:
            seen.add((reason, shape))
            yield REGISTRY[a], REGISTRY[b], shape


def test_known_defects_still_fail(certs):
    """Each known (pair, shape) defect, first pair of each, still fails: a fixed one turns this
    red, so its entry leaves KNOWN (none are known today)."""
    for a, b, shape in _defect_cases(False):
        with pytest.raises(AssertionError):
            _pair_check(a, b, certs, defect_case(a, shape))


@pytest.mark.slow
def test_known_defects_still_fail_everywhere(certs):
    for a, b, shape in _defect_cases(True):
        with pytest.raises(AssertionError):
            _pair_check(a, b, certs, defect_case(a, shape))


def test_readme_translation_table_is_what_storesync_does(certs, tmp_path):
    """The README's table is observed, not written by hand: regenerate it with
    `python tests/contract.py` when a kind changes."""
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    start = readme.index("<!-- translation-table")
    start = readme.index("\n", start) + 1
    documented = readme[start:readme.index("<!-- /translation-table -->")]
    assert documented == translation_table(certs, tmp_path)


#: File kinds keep the file's order: a sync that adds appends (README, "Order").
ORDERED = ("pem", "pem-trusted", "sst", "reg", "p7b", "jks", "p12")


@pytest.mark.parametrize("kind", [pytest.param(REGISTRY[n], id=n) for n in ORDERED])
def test_add_appends(kind, certs, tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "t").mkdir()
    source = make_store(REGISTRY["nss"], tmp_path / "src", entries_of(certs, {"anchor-all": {}, "v1-root": {}}))
    own = entries_of(certs, {"serial-0": {}, "serial-negative": {}})
    target = make_store(kind, tmp_path / "t", own)
    result = storesync("sync", "--mode", "add", source, target)
    assert result.returncode == 0, result.stderr
    held = list(read_store(target)[0])
    assert len(held) == 4 and held[:2] == [e.sha256 for e in own]


@pytest.mark.parametrize("kind", WRITABLE, ids=str)
def test_list_json_says_what_the_store_means(kind, certs, tmp_path):
    """`list --json` shows trust as the engine understands the store: a TLS bundle's anchors
    are trusted for server-auth, not for e-mail."""
    spec = make_store(kind, tmp_path, entries_of(certs, {"anchor-all": {}, "anchor-one": default_variation("anchor-one"),
                                                       "distrust-all": {}}))
    code, listed, err = cli_json("list", spec)
    assert code == 0, err
    held, store = read_store(spec)
    meant = lift(held, store.capabilities, store.purpose)
    assert {e["sha256"]: e["trust"] for e in listed["entries"]} == {sha: dict(e.trust) for sha, e in meant.items()}
