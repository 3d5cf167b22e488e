"""Memory (issue 18, item 4): what a read keeps per certificate. The goal itself, peak RSS under
3x the store's size on disk, lives in `scripts/bench scale`; these tests count objects and bytes
that a change could silently bring back (a dict per entry, a second copy of the file)."""

from __future__ import annotations

import importlib.util
import json
import os
import tracemalloc
from pathlib import Path

import pytest

from storesync import state
from storesync.model import ANCHOR, DISTRUST, NOTHING, Certificate, Entry
from storesync.stores import open_store, pem, read_store

_spec = importlib.util.spec_from_file_location("scale_bench", Path(__file__).parents[1] / "scripts/bench.d/scale.py")
scale_bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(scale_bench)  # its certificate generator, cached in /tmp by count

COUNT = 300


@pytest.fixture(scope="module")
def ders() -> list[bytes]:
    return scale_bench.certificates(COUNT)


@pytest.fixture
def bundle(tmp_path, ders) -> Path:
    state.set_state_dir(tmp_path / "state")
    path = tmp_path / "bundle.pem"
    path.write_bytes(scale_bench.pem_bundle(ders))
    yield path
    state.set_state_dir(None)


def transient_per_certificate(spec: str, ders: list[bytes]) -> float:
    """Bytes per certificate a read of `spec` holds at its peak beyond what it returns, while
    the certificates are held already (a sync's source holds them: not counted)."""
    kept_certs = [Certificate(d) for d in ders]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = read_store(open_store(spec))
        held, peak = (n - before for n in tracemalloc.get_traced_memory())
    finally:
        tracemalloc.stop()
    assert len(kept) == len(ders) and kept_certs
    return (peak - held) / len(ders)


def test_entries_of_one_trust_share_one_map(bundle):
    entries = read_store(open_store(f"pem:{bundle}")).entries()
    assert len(entries) == COUNT
    assert len({id(e.trust) for e in entries}) == 1
    assert all(e.distrust_after is NOTHING and e.extras is NOTHING for e in entries)
    assert Entry(entries[0].cert, dict(DISTRUST)).trust is Entry(entries[1].cert, dict(DISTRUST)).trust


def test_a_shared_trust_map_refuses_a_change(ders):
    a, b = Entry(Certificate(ders[0])), Entry(Certificate(ders[1]))
    with pytest.raises(TypeError):
        a.trust["email"] = "distrusted"  # would change b's trust too
    with pytest.raises(TypeError):
        a.trust.update(DISTRUST)
    assert b.trust == ANCHOR and a.trust == ANCHOR
    copy = dict(a.trust)
    copy["email"] = "distrusted"  # a copy is the caller's own
    assert Entry(a.cert, copy).trust == copy and a.trust == ANCHOR


def test_a_file_store_keeps_no_copy_of_the_file(bundle):
    store = open_store(f"pem:{bundle}")
    read_store(store)
    size = bundle.stat().st_size
    kept = [name for name, value in vars(store).items() if isinstance(value, (bytes, bytearray)) and len(value) >= size]
    assert kept == []


def test_a_read_keeps_about_the_der_and_little_more(bundle, ders):
    """What 300 read entries hold, in bytes per certificate, beyond the DER itself: the DER
    (~370 bytes here), its SHA-256 hex, a Certificate (and its place among the live ones), an
    Entry and a slot in the TrustSet's dict. Before the entries shared their trust maps and
    dropped the parsed fields, this was ~1 400."""
    read_store(open_store(f"pem:{bundle}"))  # imports and first-use caches out of the count
    pem._READ.clear()  # parsed afresh: the DER is new
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = read_store(open_store(f"pem:{bundle}"))
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(kept) == COUNT
    overhead = (held - sum(len(d) + 33 for d in ders)) / COUNT
    print(f"{overhead:.0f} bytes per certificate beyond its DER")
    assert overhead < 550, f"{overhead:.0f} bytes per certificate beyond its DER"


def test_parsed_fields_are_offsets_into_the_der(ders):
    """A certificate's fields (asked for every certificate a sync adds: CA or not, self-signed or
    not, its subject hash) keep no copies of names and keys: ~600 bytes each before."""
    from cryptography import x509

    certs = [Certificate(d) for d in ders]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        fields = [c.fields for c in certs]
        held = (tracemalloc.get_traced_memory()[0] - before) / len(certs)
    finally:
        tracemalloc.stop()
    assert held < 250, f"{held:.0f} bytes per certificate's fields"
    parsed = x509.load_der_x509_certificate(ders[7])
    assert fields[7].subject == parsed.subject.public_bytes() and fields[7].issuer == parsed.issuer.public_bytes()
    assert fields[7].serial[2:] == parsed.serial_number.to_bytes(len(fields[7].serial) - 2, "big")
    assert fields[7].extensions.raw.startswith(b"\xa3") and fields[7].extensions.raw in ders[7]


def test_a_certificate_read_twice_is_held_once(bundle, tmp_path):
    """The source, the target and the read-back of a sync hold the same certificates: one
    Certificate (and one DER bytes object) each, not one per store."""
    copy = tmp_path / "copy.pem"
    copy.write_bytes(bundle.read_bytes() + b"\n")  # other bytes: not the same parse
    a, b = read_store(open_store(f"pem:{bundle}")), read_store(open_store(f"pem:{copy}"))
    assert a.keys() == b.keys()
    assert all(a[sha].cert is b[sha].cert for sha in a)
    assert Certificate(bytes(bytearray(a.entries()[0].cert.der))) is a.entries()[0].cert


def test_a_hashed_directory_read_holds_little_beyond_its_entries(tmp_path, ders, monkeypatch):
    """Reading a hashed directory from the stat cache: beyond what the entries keep, the read's
    peak holds the cache's records (~1.3 KB per file, its DER copy included) and little more
    (before: also each file's stat result and listing entry to the end of the read, ~2.1 KB)."""
    import time

    from storesync import statcache

    monkeypatch.setattr(statcache, "RACY_NS", 50_000_000)
    state.set_state_dir(tmp_path / "state")
    try:
        source = tmp_path / "bundle.pem"
        source.write_bytes(scale_bench.pem_bundle(ders))
        from conftest import storesync

        assert storesync("sync", f"pem:{source}", f"dir:{tmp_path / 'ca'}", env=None).returncode == 0
        time.sleep(0.1)
        read_store(open_store(f"dir:{tmp_path / 'ca'}"))  # the cache is filled
        transient = transient_per_certificate(f"dir:{tmp_path / 'ca'}", ders)
        print(f"{transient:.0f} bytes per file beyond the entries at the read's peak")
        assert transient < 1600, f"{transient:.0f} bytes per file beyond the entries at the read's peak"
    finally:
        state.set_state_dir(None)


def test_an_sst_read_drops_each_certificate_copy_as_it_goes(sst_store, ders):
    """A serialized store read while its certificates are held already (a sync's source): each
    certificate's bytes read from the file go as soon as the held copy stands for them, and each
    group becomes its entry as it is read (no list of every group, with its certificate's
    bytes, to the end of the file: ~630 bytes a certificate at the peak before, ~460 after,
    of which the file is ~420); and the file is read element by element, never held whole
    (~95 bytes a certificate at the peak beyond the entries)."""
    transient = transient_per_certificate(sst_store, ders)
    print(f"{transient:.0f} bytes per certificate beyond the entries at the read's peak")
    assert transient < 250, f"{transient:.0f} bytes per certificate beyond the entries at the read's peak"


@pytest.fixture
def sst_store(tmp_path, ders) -> str:
    """The spec of an sst store of `ders` synced from a bundle, read once (imports out of the count)."""
    from conftest import storesync

    state.set_state_dir(tmp_path / "state")
    source, spec = tmp_path / "bundle.pem", f"sst:{tmp_path / 'roots.sst'}"
    source.write_bytes(scale_bench.pem_bundle(ders))
    assert storesync("sync", f"pem:{source}", spec).returncode == 0
    read_store(open_store(spec))
    yield spec
    state.set_state_dir(None)


def test_the_ownership_record_of_a_large_write_is_encoded_in_one_piece(tmp_path, ders):
    """The record of what a sync wrote names every certificate; json's indenting encoder
    (pure Python) held a string per token: ~1.8 KB per certificate at its peak, ~1.45 KB with
    the C one (the entries' own dict, the JSON text and its bytes), which also takes a fifth
    of the time; ~500 bytes encoded entry by entry, with no dict per entry; ~350 written into one
    buffer whose bytes are the record (not a list of the entries' texts, joined, then encoded)."""
    from storesync.model import TrustSet

    state.set_state_dir(tmp_path / "state")
    try:
        entries = TrustSet(Entry(Certificate(d), label=f"root {n}") for n, d in enumerate(ders))
        state.owned_file("pem:/x.pem", dict(entries.items()), entries)  # imports out of the count
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            (record,) = state.owned_file("pem:/x.pem", dict(entries.items()), entries).values()
            peak = (tracemalloc.get_traced_memory()[1] - before) / COUNT
        finally:
            tracemalloc.stop()
        assert len(json.loads(record)["entries"]) == COUNT
        print(f"{peak:.0f} bytes per certificate at the peak")
        assert peak < 420, f"{peak:.0f} bytes per certificate at the peak"
    finally:
        state.set_state_dir(None)


def test_a_bundle_to_bundle_plan_adds_the_entries_as_read(ders):
    """A TLS bundle's anchors are lifted to server-auth trust and projected back onto a bundle
    as anchors: the plan adds the source's own entries, not a copy of each made on the way."""
    from storesync.engine.plan import lift, make_plan
    from storesync.model import Capabilities, TrustSet

    caps = Capabilities()
    source = TrustSet(Entry(Certificate(d)) for d in ders)
    plan = make_plan(lift(source, caps), TrustSet(), caps, store="pem:/x.pem")
    assert len(plan.adds) == COUNT
    assert all(added is source[added.sha256] for added in plan.adds)


def test_a_java_verdict_keeps_no_parsed_certificate(ders):
    """Judging certificates for a Java or NSS store parses each with `cryptography`; the verdict
    is kept on the certificate, the parsed objects are not (~2.9 KB a certificate were held to
    the end of a write that judged 10 000, as much as the keystore itself)."""
    from storesync import loadable

    certs = [Certificate(d) for d in ders]
    for cert in certs:  # not judged yet
        cert.__dict__.clear()
    loadable.refusal(Certificate(scale_bench.certificates(COUNT + 1)[-1]), loadable.JAVA)  # imports out of the count
    saved = loadable._passed, loadable._file
    loadable._passed, loadable._file = {name: set() for name in loadable._CHECKS}, b""  # judged afresh, as without remembered checks
    try:
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            verdicts = [loadable.refusal(cert, loadable.JAVA) for cert in certs]
            held = (tracemalloc.get_traced_memory()[0] - before) / COUNT
        finally:
            tracemalloc.stop()
        remembered = loadable.passed(f"{certs[0].sha256} x509")  # what the parse said is kept
    finally:
        loadable._passed, loadable._file = saved
    assert verdicts == [None] * COUNT
    assert all("_parsed" not in cert.__dict__ for cert in certs)
    assert remembered
    print(f"{held:.0f} bytes per certificate held after the verdicts")
    assert held < 800, f"{held:.0f} bytes per certificate held after the verdicts"


@pytest.mark.parametrize("kind", ["jks", "p12"])
def test_a_java_keystore_read_holds_the_file_and_the_entries_only(tmp_path, ders, kind):
    """A keystore read while its certificates are held already (a sync's source): its entries
    are their slots and their labels (the alias is the label: no dict of two levels each in
    `extras`, ~380 bytes), and the read's peak beyond them is about the file (no list of every
    record with its bytes, its certificate's bytes and its alias: ~1.9 KB a certificate for
    jks, ~3.2 KB for p12, with a second copy of the file for the integrity check)."""
    state.set_state_dir(tmp_path / "state")
    try:
        from conftest import storesync

        source, store = tmp_path / "bundle.pem", tmp_path / f"roots.{kind}"
        source.write_bytes(scale_bench.pem_bundle(ders))
        assert storesync("sync", f"pem:{source}", f"{kind}:{store}").returncode == 0
        entries = read_store(open_store(f"{kind}:{store}"))  # imports out of the count
        assert all(e.extras is NOTHING and e.label for e in entries.values())
        transient = transient_per_certificate(f"{kind}:{store}", ders)
        file_share = store.stat().st_size / len(ders)
        print(f"{transient:.0f} bytes per certificate beyond the entries at the read's peak ({file_share:.0f} of file)")
        # jks: read piece by piece, never the whole file (~430 bytes a certificate before, the
        # file and a little; ~265 after, mostly the 64 KiB piece its digest is read in). p12: the
        # file and the encrypted safe's plaintext (3.6x the file before: also the ciphertext,
        # libcrypto's buffer beside the plaintext, and a copy of the encrypted safe kept on its
        # Safe; 2.0x after).
        bound = 350 if kind == "jks" else file_share * 2.4 + 100
        assert transient < bound, f"{transient:.0f} bytes per certificate beyond the entries at the read's peak"
    finally:
        state.set_state_dir(None)


@pytest.fixture
def streamed_p12(monkeypatch):
    """p12 reads and writes as of a large store: streamed whatever the size, in pieces of 4 KiB
    (its 64 KiB pieces would be most of the peak of these few certificates)."""
    from storesync.stores import p12

    monkeypatch.setattr(p12, "CHUNK", 1 << 12, raising=False)  # not there before: the tests fail, not err
    monkeypatch.setattr(p12, "STREAM_FROM", 0, raising=False)


def test_a_p12_read_is_streamed(tmp_path, ders, streamed_p12):
    """A p12 read while its certificates are held already (a sync's source): the file is read
    twice from where it lies (the MAC, then the bags, the MAC again on the way), each safe
    decrypted and parsed piece by piece and each bag dropped as it is read, so the peak beyond
    the entries is the pieces, not the file. Before, the file, its decrypted safe and the
    entries were held at once: ~1 000 bytes a certificate here, 2.0x the file; ~250 after."""
    state.set_state_dir(tmp_path / "state")
    try:
        from conftest import storesync

        source, store = tmp_path / "bundle.pem", tmp_path / "roots.p12"
        source.write_bytes(scale_bench.pem_bundle(ders))
        assert storesync("sync", f"pem:{source}", f"p12:{store}").returncode == 0
        read_store(open_store(f"p12:{store}"))  # imports out of the count
        transient = transient_per_certificate(f"p12:{store}", ders)
        share = store.stat().st_size / len(ders)
        print(f"{transient:.0f} bytes per certificate beyond the entries at the read's peak ({share:.0f} of file)")
        # most of it the 64 KiB piece the file's digest is read in, as for jks
        assert transient < 350, f"{transient:.0f} bytes per certificate beyond the entries at the read's peak"
    finally:
        state.set_state_dir(None)


def test_a_p12_is_rendered_piece_by_piece(tmp_path, ders, streamed_p12):
    """A new p12 is written as it is made: its lengths known first (AES-CBC's output is the
    plaintext rounded up to the next block), salt and IV hashed over the bags in a first pass,
    the MAC's salt over the authenticated safe in a second, then each piece written as it is
    made and read back (MAC, decryption, every bag) as it goes. Whole, the new file, its
    plaintext and its ciphertext made the render's peak 2.5x the file; piece by piece, 0.65x
    here (the sorted aliases, the anchors met on the read-back, pieces of a few KiB: a smaller
    share of a large store)."""
    peak, size = render_peak_per_certificate(f"p12:{tmp_path / 'new.p12'}", ders)
    print(f"{peak:.0f} bytes per certificate at the render's peak ({size / COUNT:.0f} of file)")
    assert peak < 0.8 * size / COUNT, f"{peak:.0f} bytes per certificate at the render's peak"


def test_a_p12_rewrite_reads_the_file_at_each_pass(tmp_path, ders, streamed_p12):
    """A p12 that gains a certificate is rewritten from the file, read again (and its MAC checked
    again) at each pass, never held: the bags it keeps are copied as they are read. Whole, its
    bags (with their attributes and copies) and the new file made the peak 9.2x the file; read
    at each pass, 1.4x (its anchors' fingerprints and aliases, the aliases taken, the anchors
    and the hashed aliases met on the read-back: a larger share of these small certificates
    than of real roots)."""
    from storesync.engine.plan import make_plan
    from storesync.model import TrustSet

    state.set_state_dir(tmp_path / "state")
    try:
        from conftest import storesync

        source, path = tmp_path / "bundle.pem", tmp_path / "roots.p12"
        source.write_bytes(scale_bench.pem_bundle(ders[:-1]))
        assert storesync("sync", f"pem:{source}", f"p12:{path}").returncode == 0
        store = open_store(f"p12:{path}")
        every = TrustSet(Entry(Certificate(d), label=f"root {n}") for n, d in enumerate(ders))
        plan = make_plan(every, read_store(store), store.capabilities, store=str(store.spec))
        assert len(plan.adds) == 1
        peak, size = render_peak(store, plan)
        print(f"{peak / COUNT:.0f} bytes per certificate at the render's peak ({size / COUNT:.0f} of file)")
        assert peak < 1.5 * size, f"{peak / COUNT:.0f} bytes per certificate at the render's peak"
    finally:
        state.set_state_dir(None)


def rendered_size(out) -> int:
    """The size of what a render made: bytes, or pieces written as they come."""
    return len(out) if isinstance(out, (bytes, bytearray)) else sum(len(piece) for piece in out)


def render_peak_per_certificate(spec: str, ders: list[bytes]) -> tuple[float, int]:
    """(peak bytes per certificate of rendering `ders` into the new store `spec`, the file's
    size), the entries held already (a sync's source)."""
    from storesync.engine.plan import make_plan
    from storesync.model import TrustSet

    store = open_store(spec)
    source = TrustSet(Entry(Certificate(d), label=f"root {n}") for n, d in enumerate(ders))
    peak, size = render_peak(store, make_plan(source, read_store(store), store.capabilities, store=spec))
    return peak / len(ders), size


def render_peak(store, plan) -> tuple[int, int]:
    """(peak bytes of rendering `plan` into `store`, the size rendered)."""
    rendered_size(store.render(plan))  # imports and first-use caches out of the count
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        size = rendered_size(store.render(plan))
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    return peak, size


def test_a_p12_write_checks_its_bytes_without_keeping_the_bags(tmp_path, ders):
    """A p12 write reads its new bytes back (MAC, decryption, every bag) before they replace the
    file; the bags read back are looked at one by one, not kept with their attributes (~3 KB a
    certificate, beside the new file and the encryption's copies of it); and the DER around the
    encrypted safe is joined once per level, the key's salt and IV hashed without a copy of
    the certificates (9.7x the file before, 6.3x after). Then every level's DER header made
    first and the file joined once, the bags let go once joined, libcrypto padding what it
    encrypts into a buffer it is not copied out of, the MAC taken piece by piece, and the
    read-back decrypting where the ciphertext lies, keeping no copy of the safe: 2.5x. A store
    this small keeps its new bags made once for the passes of a streamed write (2.7x); a large
    one is made piece by piece (test_a_p12_is_rendered_piece_by_piece)."""
    peak, size = render_peak_per_certificate(f"p12:{tmp_path / 'new.p12'}", ders)
    print(f"{peak:.0f} bytes per certificate at the render's peak ({size / COUNT:.0f} of file)")
    assert peak < 3 * size / COUNT, f"{peak:.0f} bytes per certificate at the render's peak"


def test_list_drops_each_parse_once_the_certificate_is_shown(pki, monkeypatch, tmp_path):
    """`list --json` of certificates no sync has judged parses each with `cryptography` for its
    dates; each parse is remembered and dropped once its line is written, never all held, and so
    is all that was computed from its bytes to show it (~1 970 bytes a certificate at the peak
    before, ~1 590 after).
    Certificates of this test's own (no other test's object of the same bytes has its fields)."""
    import contextlib
    import os

    from storesync import loadable
    from storesync.cli import list as list_command

    state.set_state_dir(tmp_path / "state")
    for name, value in (("_passed", {name: set() for name in loadable._CHECKS}), ("_notes", {}), ("_labels", {}), ("_outlines", {}),
                        ("_added", []), ("_cache_dir", None), ("_file", b""), ("_lookups", 0)):
        monkeypatch.setattr(loadable, name, value)  # as a new process: what earlier tests left would grow here
    issued = [pki.ca(f"Listed Once {n}") for n in range(COUNT + 1)]
    one, bundle = tmp_path / "one.pem", tmp_path / "bundle.pem"
    one.write_bytes(issued[0].pem)
    bundle.write_bytes(b"".join(i.pem for i in issued[1:]))
    try:
        with open(os.devnull, "w") as out, contextlib.redirect_stdout(out):
            list_command.run(f"pem:{one}", as_json=True, state_dir=tmp_path / "state")  # imports out of the count
            tracemalloc.start()
            try:
                before = tracemalloc.get_traced_memory()[0]
                list_command.run(f"pem:{bundle}", as_json=True, state_dir=tmp_path / "state")
                peak = (tracemalloc.get_traced_memory()[1] - before) / COUNT
            finally:
                tracemalloc.stop()
    finally:
        state.set_state_dir(None)
    assert all(loadable.passed(f"{Certificate(i.der).sha256} x509") for i in issued)  # what each parse said
    print(f"{peak:.0f} bytes per certificate at the peak of list --json")
    assert peak < 1800, f"{peak:.0f} bytes per certificate at the peak of list --json"


def test_a_bundle_is_rendered_block_by_block(tmp_path, ders):
    """A bundle's render yields its blocks as they are made, each written as it comes: a list
    of every PEM block and then their join held the new file twice (2.2x the file at the
    render's peak); one buffer grown in place, 1.1x; block by block, ~0.02x."""
    peak, size = render_peak_per_certificate(f"pem:{tmp_path / 'new.pem'}", ders)
    print(f"{peak:.0f} bytes per certificate at the render's peak ({size / COUNT:.0f} of file)")
    assert peak < 0.2 * size / COUNT, f"{peak:.0f} bytes per certificate at the render's peak"


def test_a_large_bundle_read_keeps_its_cache_without_the_file(tmp_path, ders, monkeypatch):
    """A bundle large enough for the stat cache (here: any) is parsed, and its parse kept in the
    cache, with the file's bytes let go first: the read's peak held the file and the cache's
    encoding of every certificate at once (2.1x the file beyond the entries before, 1.4x after).
    Then the file read in pieces (here: of 16 KiB), never whole, and the cache written as it is
    encoded: 0.56x (most of it the 64 KiB piece its digest is read in)."""
    monkeypatch.setattr(pem, "CACHE_FROM", 0)
    monkeypatch.setattr(pem, "PIECE", 1 << 14)
    state.set_state_dir(tmp_path / "state")
    try:
        path = tmp_path / "bundle.pem"
        path.write_bytes(scale_bench.pem_bundle(ders))
        read_store(open_store(f"pem:{tmp_path / 'one.pem'}"))  # imports out of the count
        transient = transient_per_certificate(f"pem:{path}", ders)
        share = path.stat().st_size / COUNT
        print(f"{transient:.0f} bytes per certificate beyond the entries at the read's peak ({share:.0f} of file)")
        assert transient < 0.7 * share, f"{transient:.0f} bytes per certificate beyond the entries at the read's peak"
        assert len(read_store(open_store(f"pem:{path}"))) == COUNT  # from the cache, as it was kept
    finally:
        state.set_state_dir(None)


def test_a_plan_that_adds_looks_its_adds_up_in_the_record_without_parsing_it(tmp_path, ders, monkeypatch):
    """Whether an add is one storesync wrote before (the plan's "re-added" note) is looked up in
    the record's text: its parse, a dict per certificate, held 4.4x the record at its peak
    (~110 MB for 100 000 certificates) beside both stores' entries; now about the record once."""
    import contextlib
    import os

    from storesync.model import TrustSet

    state.set_state_dir(tmp_path / "state")
    try:
        entries = TrustSet(Entry(Certificate(d), label=f"root {n}") for n, d in enumerate(ders))
        state.save_records("pem:/x.pem", state.owned_file("pem:/x.pem", dict(entries.items()), entries))
        size = os.stat(state.owned_path("pem:/x.pem")).st_size
        one = next(iter(entries))
        assert state.owned_among("pem:/x.pem", [one]) == {one}  # imports out of the count
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            state.owned_among("pem:/x.pem", [one])
            peak = tracemalloc.get_traced_memory()[1] - before
        finally:
            tracemalloc.stop()
        print(f"{peak / COUNT:.0f} bytes per certificate at the peak ({size / COUNT:.0f} of record)")
        assert peak < 1.3 * size, f"{peak / COUNT:.0f} bytes per certificate at the peak"
    finally:
        state.set_state_dir(None)

    # and a whole plan that adds loads no parse of the record
    from storesync.cli import main

    monkeypatch.setenv("STORESYNC_STATE_DIR", str(tmp_path / "cli-state"))
    source, target = tmp_path / "src.pem", tmp_path / "t.pem"
    source.write_bytes(scale_bench.pem_bundle(ders[:-1]))
    for argv in (["sync", f"pem:{source}", f"pem:{target}"], ["sync", "--dry-run", f"pem:{tmp_path / 'plus.pem'}", f"pem:{target}"]):
        (tmp_path / "plus.pem").write_bytes(scale_bench.pem_bundle(ders))
        monkeypatch.setattr("sys.argv", ["storesync", *argv])
        with open(os.devnull, "w") as out, contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit:
            main()
        assert exit.value.code in (0, 1, None)
        monkeypatch.setattr(state, "load_owned", lambda spec: pytest.fail("the record was parsed"))
    assert exit.value.code == 1  # the plan has its add


def test_a_keystore_is_rendered_record_by_record(tmp_path, ders):
    """A jks write yields each new record as it is made, each written as it comes: a record
    object with its bytes for every certificate, then their join, held the file 3.0x at the
    render's peak; one buffer grown in place, 1.4x; record by record, ~0.4x (the sorted
    aliases)."""
    peak, size = render_peak_per_certificate(f"jks:{tmp_path / 'new.jks'}", ders)
    print(f"{peak:.0f} bytes per certificate at the render's peak ({size / COUNT:.0f} of file)")
    assert peak < 0.6 * size / COUNT, f"{peak:.0f} bytes per certificate at the render's peak"


def test_a_serialized_store_is_rendered_group_by_group(tmp_path, ders):
    """An sst write yields each certificate group as it is made, each written as it comes: every
    group's bytes and then their join held the file 2.3x at the render's peak; one buffer grown
    in place, 1.1x; group by group, ~0.05x."""
    peak, size = render_peak_per_certificate(f"sst:{tmp_path / 'new.sst'}", ders)
    print(f"{peak:.0f} bytes per certificate at the render's peak ({size / COUNT:.0f} of file)")
    assert peak < 0.2 * size / COUNT, f"{peak:.0f} bytes per certificate at the render's peak"


def test_the_remembered_checks_are_read_line_by_line(tmp_path, ders, monkeypatch):
    """The passed-checks file of a large store's checks is believed line by line: the file's
    bytes and a list of its lines held at once were ~2.6x the file at the peak beyond the sets
    it fills; ~0.01x after (a line at a time)."""
    import hashlib
    import os

    from storesync import loadable

    folder = tmp_path / "state"
    folder.mkdir(mode=0o700)
    lines = [f"{hashlib.sha256(d).hexdigest()} {name}\n" for d in ders * 10 for name in ("openssl", "java", "nss")]
    (folder / "passed-checks").write_text(loadable._RULES + "\n" + "".join(lines))
    os.chmod(folder / "passed-checks", 0o600)
    monkeypatch.setattr(loadable, "_passed", {name: set() for name in loadable._CHECKS})
    monkeypatch.setattr(loadable, "_cache_dir", None)
    monkeypatch.setattr(loadable, "_file", b"")
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        loadable.remember_in(folder)
        held, peak = (n - before for n in tracemalloc.get_traced_memory())
    finally:
        tracemalloc.stop()
    assert loadable.passed(f"{hashlib.sha256(ders[0]).hexdigest()} java")
    size = (folder / "passed-checks").stat().st_size
    print(f"{(peak - held) / size:.2f}x the file at the peak beyond what it keeps")
    assert peak - held < 0.5 * size, f"{(peak - held) / size:.2f}x the file at the peak beyond what it keeps"


def test_a_hashed_directory_is_written_file_by_file(tmp_path, ders):
    """A new hashed directory's files are made as each is written: every file's bytes held at
    once, until all were written and flushed, made the write's peak 2.7x the store's size on
    disk; 2.0x after, the rest being each file's name, temp name and links (about a kilobyte a
    file, more than these small certificates; at 10 000 roots-sized ones the whole sync's peak
    RSS went from 92 to 59 MB); 1.5x once the files are written, their names and the finished
    pieces not held through the links."""
    from storesync.engine.plan import make_plan
    from storesync.model import TrustSet

    state.set_state_dir(tmp_path / "state")
    try:
        source = TrustSet(Entry(Certificate(d), label=f"root {n}") for n, d in enumerate(ders))
        for name in ("warm", "new"):  # the first: imports out of the count
            store = open_store(f"dir:{tmp_path / name}")
            plan = make_plan(source, read_store(store), store.capabilities, store=str(store.spec))
            if name == "warm":
                store.write(plan)
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            store.write(plan)
            peak = tracemalloc.get_traced_memory()[1] - before
        finally:
            tracemalloc.stop()
        size = sum(p.stat().st_size for p in (tmp_path / "new").iterdir() if not p.is_symlink())
        print(f"{peak / size:.2f}x the store on disk at the write's peak")
        assert peak < 1.8 * size, f"{peak / size:.2f}x the store on disk at the write's peak"
    finally:
        state.set_state_dir(None)


def test_an_sst_entry_keeps_its_properties_as_one_piece(sst_store, ders):
    """An sst entry keeps every property of its group, for a rewrite to give them back: as a
    tuple of (id, encoding, bytes) tuples in a dict each, ~360 bytes an entry beyond the
    certificate held already; as the elements' bytes in a one-item mapping, ~305, and ~320 with
    the label and trust key they were read as (one property a group here; a real store's hold two
    to six: 565 -> 302 bytes for 10 000 roots, before the label and trust key)."""
    kept_certs = [Certificate(d) for d in ders]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = read_store(open_store(sst_store))
        held = (tracemalloc.get_traced_memory()[0] - before) / len(ders)
    finally:
        tracemalloc.stop()
    assert len(kept) == len(kept_certs) and all(e.extras["winprops"] for e in kept.values())
    print(f"{held:.0f} bytes per entry")
    assert held < 335, f"{held:.0f} bytes per entry"


def test_comparing_two_sets_copies_neither(ders):
    """`compare` (a write's read-back, `diff`) lifts each entry to its store's purpose as it
    compares it: lifting both sets whole first held a copy of each, ~400 bytes a certificate
    at the peak of a read-back, beside the sets themselves."""
    from storesync.engine.plan import compare
    from storesync.model import Capabilities, TrustSet

    caps = Capabilities()  # a bundle's: its anchors are lifted to server-auth
    a = TrustSet(Entry(Certificate(d)) for d in ders)
    b = TrustSet(Entry(e.cert) for e in a.values())
    compare(a, b, caps, caps)  # imports out of the count
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        diff = compare(a, b, caps, caps)
        peak = (tracemalloc.get_traced_memory()[1] - before) / COUNT
    finally:
        tracemalloc.stop()
    assert not any(diff.values())
    print(f"{peak:.0f} bytes per certificate at the peak")
    assert peak < 50, f"{peak:.0f} bytes per certificate at the peak"


@pytest.mark.parametrize("kind", ["jks", "dir", "nss"])
def test_a_read_back_runs_without_what_only_planning_needed(tmp_path, ders, kind, monkeypatch):
    """What a sync's read-back holds beside the entries it compares: not the remembered checks
    (saved before the writes, read again by a later run in the process: ~1.35x their file; an
    NSS database's password check is kept, so that its write and read-back do not read the
    file again), not
    what planning worked out on each certificate but its label (~0.4 KB a certificate), not
    the store object the read-back read (a hashed directory's file names and links, ~0.35 KB a
    file); at 10 000 roots these were ~10 MB of a jks write's 48 MB."""
    import gc
    import weakref

    from storesync import loadable
    from storesync.config import Profile, StoreRef
    from storesync.engine import run as engine

    for name, value in (("_passed", {name: set() for name in loadable._CHECKS}), ("_notes", {}), ("_added", []),
                        ("_cache_dir", None), ("_file", b""), ("_lookups", 0)):
        monkeypatch.setattr(loadable, name, value)
    source = tmp_path / "bundle.pem"
    source.write_bytes(scale_bench.pem_bundle(ders))
    opened, seen = [], {}

    def open_store_kept(*args, **kwargs):
        store = real_open(*args, **kwargs)
        opened.append(weakref.ref(store))
        return store

    def compare_seen(wanted, found, *args):
        gc.collect()
        seen["read store"] = opened[-1]() is not None  # the last opened: the read-back's
        seen["remembered"] = len(loadable._file) + sum(
            len(checks) for name, checks in loadable._passed.items() if name != "nss-empty-password")
        seen["derived"] = {key for e in wanted.values() for key in e.cert.__dict__}
        return real_compare(wanted, found, *args)

    real_open, real_compare = engine.open_store, engine.compare
    monkeypatch.setattr(engine, "open_store", open_store_kept)
    monkeypatch.setattr(engine, "compare", compare_seen)
    state.set_state_dir(tmp_path / "state")
    try:
        target = tmp_path / ("roots.jks" if kind == "jks" else "ca")
        if kind == "nss":
            from conftest import need, run

            need("certutil")
            target.mkdir()
            run("certutil", "-N", "-d", f"sql:{target}", "--empty-password")
        result = engine.run(Profile("memory", "mirror", [StoreRef(f"pem:{source}"), StoreRef(f"{kind}:{target}")]))
        assert result.error is None and len(result.outcomes[1].plan.adds) == COUNT
        assert len(read_store(open_store(f"{kind}:{target}"))) == COUNT
        loadable.remember_in(state.state_dir())  # as a later run in this process does: saved, read again
        assert loadable.passed(f"{Certificate(ders[0]).sha256} {dict(dir='openssl', jks='java', nss='nss')[kind]}")
    finally:
        state.set_state_dir(None)
    # every kind's read-back takes the plan's certificate for bytes written as they were: no fields again
    assert seen == {"read store": False, "remembered": 0, "derived": {"default_label"}}
    assert all(e.display_label.startswith("Scale Root") for e in result.outcomes[1].plan.adds)
