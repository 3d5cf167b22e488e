"""The `sst` store: byte layouts of docs/formats.md §4, Windows' own files, hostile input."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import struct
import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from storesync import der
from storesync.engine.plan import make_plan
from storesync.model import ANCHOR, DISTRUST, EMAIL, SERVER_AUTH, TRUSTED, Certificate, Entry, StoreError, TrustSet
from storesync.stores import open_store
from storesync.stores import winprops as wp
from storesync.stores.sst import END_MARKER, MAGIC, read_sst

from conftest import VECTORS, vectors, with_serial

SERVER_OID, CLIENT_OID = "1.3.6.1.5.5.7.3.1", "1.3.6.1.5.5.7.3.2"
UTC = dt.timezone.utc


def el(prop_id: int, value: bytes, encoding: int = 1) -> bytes:
    return struct.pack("<III", prop_id, encoding, len(value)) + value


def sst(*groups: bytes, end: bool = True) -> bytes:
    return MAGIC + b"".join(groups) + (END_MARKER if end else b"")


def group(cert: bytes, *props: tuple[int, bytes]) -> bytes:
    return b"".join(el(i, v) for i, v in props) + el(0x20, cert)


def utf16(text: str) -> bytes:
    return text.encode("utf-16-le") + b"\x00\x00"


def filetime(when: dt.datetime) -> bytes:
    return ((int(when.timestamp()) + 11644473600) * 10_000_000).to_bytes(8, "little")


def unparseable(issued) -> bytes:
    """The certificate with a BasicConstraints that encodes its DEFAULT: `cryptography` refuses it."""
    cert = der.read(issued.der)
    tbs, alg, sig = list(cert.children())
    fields = [f.raw for f in tbs.children()]
    bc = der.encode(der.SEQUENCE, der.encode_oid("2.5.29.19") + der.encode(der.OCTET_STRING, bytes.fromhex("3003010100")))
    fields[-1] = der.encode(0xA3, der.encode(der.SEQUENCE, bc))
    return der.encode(der.SEQUENCE, der.encode(der.SEQUENCE, b"".join(fields)) + alg.raw + sig.raw)


def write_via(spec: str, source: TrustSet, purpose: str = "any"):
    store = open_store(spec)
    plan = make_plan(source, store.read(), store.capabilities, store=spec, purpose=purpose)
    store.write(plan)
    return store, plan


def sha1(data: bytes) -> bytes:
    return hashlib.sha1(data).digest()


@pytest.fixture(scope="module")
def certs(pki):
    return [pki.ca(f"SST Root {n}") for n in range(6)]


@pytest.fixture(scope="module")
def fixture_file(certs, root):
    """Six groups covering the layouts a reader meets, in Windows' unsorted property order."""
    a, b, c, d, e, f = (x.der for x in certs)
    bad = unparseable(root)
    eku = der.encode_oid_sequence([SERVER_OID, CLIENT_OID])
    when = dt.datetime(2023, 4, 1, tzinfo=UTC)
    data = sst(
        # unknown ids, non-ASCII (with a non-BMP character) name, EKU, hashes last
        group(a, (9, eku), (0x7777, b"\x01\x02opaque"), (11, utf16("Wurzel ÄÖÜ — 証明書 🔒")), (83, b"\x30\x00"),
              (29, hashlib.md5(der.cert_fields(a).subject).digest()), (3, sha1(a))),
        group(b, (11, utf16("Disabled")), (9, b"\x30\x00"), (3, sha1(b))),  # no purpose
        group(c, (104, b""), (126, b""), (3, sha1(c))),  # zero-length FILETIMEs: no dates
        group(d, (122, der.encode_oid_sequence([SERVER_OID])), (104, filetime(when)), (3, sha1(d))),
        group(e, (3, sha1(e)), (104, filetime(when))),  # all purposes; SHA1 before the date
        group(bad, (3, sha1(bad))),
    )
    return data, bad, when


def test_reads_every_layout(tmp_path, fixture_file, certs):
    data, bad, when = fixture_file
    path = tmp_path / "fixture.sst"
    path.write_bytes(data)
    store = open_store(f"sst:{path}")
    entries = list(store.read().values())
    assert len(entries) == 6 and not store.warnings
    a, b, c, d, e, f = entries
    assert a.label == "Wurzel ÄÖÜ — 証明書 🔒"
    assert dict(a.trust) == {SERVER_AUTH: TRUSTED, "client-auth": TRUSTED}
    assert [p[0] for p in a.extras["winprops"]] == [9, 0x7777, 11, 83, 29, 3]  # order kept, unknown kept
    assert b.trust == {} and b.label == "Disabled"  # 30 00: no purpose
    assert dict(c.trust) == ANCHOR and c.distrust_after == {}  # zero-length 104: no date
    assert d.distrust_after == {SERVER_AUTH: when}
    assert e.distrust_after == {p: when for p in ANCHOR}
    assert f.cert.der == bad and f.cert.x509 is None and dict(f.trust) == ANCHOR  # kept as bytes


def test_reserializing_a_parsed_file_gives_the_same_bytes(tmp_path, fixture_file):
    data, _bad, _when = fixture_file
    a = tmp_path / "a.sst"
    a.write_bytes(data)
    store = open_store(f"sst:{a}")
    current = store.read()
    plan = make_plan(current, current, store.capabilities, store="a", purpose="any")
    assert list(plan.desired) == list(current)  # the `30 00` entry included
    before = a.stat().st_mtime_ns
    store.write(plan)
    assert a.read_bytes() == data and a.stat().st_mtime_ns == before


def test_sync_sst_to_sst_keeps_every_property(tmp_path, fixture_file):
    data, _bad, _when = fixture_file
    a = tmp_path / "a.sst"
    a.write_bytes(data)
    source = open_store(f"sst:{a}").read()
    _store, plan = write_via(f"sst:{tmp_path / 'b.sst'}", source)
    # every group, the `30 00` one (trusted for nothing: disabled) included
    groups = read_sst(data).groups
    expected = MAGIC + b"".join(
        b"".join(el(i, v, e) for i, e, v in props) + el(0x20, cert) for _o, cert, props in groups
    ) + END_MARKER
    assert (tmp_path / "b.sst").read_bytes() == expected
    assert len(plan.adds) == 6


def test_a_copy_writes_unchanged_entries_from_their_bytes(tmp_path, fixture_file, monkeypatch):
    """An entry that says what its properties were read as is written back from their bytes:
    none of them is decoded and encoded again (issue 4: that was most of a copy's write). The
    one entry that changed is rendered, and only it."""
    data, _bad, _when = fixture_file
    a = tmp_path / "a.sst"
    a.write_bytes(data)
    rendered = []
    real = wp.render_props
    monkeypatch.setattr(wp, "render_props", lambda entry, role: rendered.append(entry) or real(entry, role))
    source = open_store(f"sst:{a}").read()
    write_via(f"sst:{tmp_path / 'b.sst'}", source)
    assert (tmp_path / "b.sst").read_bytes() == data and rendered == []
    first, *rest = source.values()
    write_via(f"sst:{tmp_path / 'c.sst'}", TrustSet([first.replace(label="Renamed"), *rest]))
    assert [e.label for e in rendered] == ["Renamed"]
    assert open_store(f"sst:{tmp_path / 'c.sst'}").read()[first.sha256].label == "Renamed"


def test_writer_layout_for_new_entries(tmp_path, certs):
    a, b, c = (Certificate(x.der) for x in certs[:3])
    when = dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    source = TrustSet([
        Entry(a, label="Ünïcode"),
        Entry(b, trust={SERVER_AUTH: TRUSTED, EMAIL: TRUSTED}),
        Entry(c, trust={SERVER_AUTH: TRUSTED}, distrust_after={SERVER_AUTH: when}),
    ])
    write_via(f"sst:{tmp_path / 'new.sst'}", source)
    expected = sst(
        el(11, utf16("Ünïcode")) + el(3, sha1(a.der)) + el(0x20, a.der),
        el(9, der.encode_oid_sequence([SERVER_OID, "1.3.6.1.5.5.7.3.4"])) + el(3, sha1(b.der)) + el(0x20, b.der),
        el(9, der.encode_oid_sequence([SERVER_OID])) + el(104, filetime(when)) + el(122, der.encode_oid_sequence([SERVER_OID]))
        + el(3, sha1(c.der)) + el(0x20, c.der),
    )
    assert (tmp_path / "new.sst").read_bytes() == expected
    again = open_store(f"sst:{tmp_path / 'new.sst'}").read()
    assert [e.trust_key() for e in again.values()] == [e.trust_key() for e in source.values()]
    assert [e.label for e in again.values()] == ["Ünïcode", None, None]


def test_changes_replace_one_property_in_place(tmp_path, fixture_file):
    data, _bad, _when = fixture_file
    path = tmp_path / "f.sst"
    path.write_bytes(data)
    store = open_store(f"sst:{path}")
    current = store.read()
    first = next(iter(current.values()))
    changed = first.replace(label="Renamed", trust={EMAIL: TRUSTED})
    plan = make_plan(current, current, store.capabilities, store="t", purpose="any")
    plan.desired = TrustSet([changed, *list(current.values())[1:]])  # (the engine keeps a store's own label)
    store.write(plan)
    (again, *_rest) = open_store(f"sst:{path}").read().values()
    assert again.label == "Renamed" and dict(again.trust) == {EMAIL: TRUSTED}
    props = again.extras["winprops"]
    assert [p[0] for p in props] == [9, 0x7777, 11, 83, 29, 3]
    assert dict((i, v) for i, _e, v in props)[0x7777] == b"\x01\x02opaque"


def test_hash_properties_are_recomputed_and_key_properties_dropped(tmp_path, certs):
    a = certs[0].der
    path = tmp_path / "lying.sst"
    key_prov = utf16("{container}") + bytes(40)
    path.write_bytes(sst(group(a, (2, key_prov), (4, b"\x00" * 16), (3, b"\xee" * 20), (98, b"\x11" * 32), (5, b"ctx"))))
    store = open_store(f"sst:{path}")
    (entry,) = store.read().values()
    assert entry.cert.der == a  # identity from the bytes, never from SHA1_HASH
    assert any("KEY_PROV_INFO" in w for w in store.warnings) and any("KEY_CONTEXT" in w for w in store.warnings)
    write_via(f"sst:{path}", open_store(f"sst:{path}").read())
    assert path.read_bytes() == sst(group(a, (4, hashlib.md5(a).digest()), (3, sha1(a)), (98, hashlib.sha256(a).digest())))


def test_a_read_takes_the_file_in_pieces_and_each_usage_list_once(certs, monkeypatch):
    """Issue 4: a read of 300 groups reads the file a piece at a time, not twice an element, and
    turns each distinct ENHKEY_USAGE into a trust once, not once a certificate."""
    a, b = certs[0].der, certs[1].der
    eku = der.encode_oid_sequence([SERVER_OID, CLIENT_OID])
    data = sst(*(group(c, (11, utf16(f"Root {n}")), (9, eku), (3, sha1(c))) for n in range(150) for c in (a, b)))
    reads = []
    decoded = []
    real = wp.purpose_from_oid
    monkeypatch.setattr(wp, "purpose_from_oid", lambda oid: decoded.append(oid) or real(oid))

    class Counted(io.BytesIO):
        def read(self, n=-1):
            reads.append(n)
            return super().read(n)

    entries = []
    read_sst(Counted(data), lambda _pos, cert, props: entries.append(wp.entry_from_group(cert, props, wp.ROLE_ANCHORS)))
    assert len(entries) == 300 and all(dict(e.trust) == {SERVER_AUTH: TRUSTED, "client-auth": TRUSTED} for e in entries)
    assert len(reads) <= len(data) // 8192 + 4, f"{len(reads)} reads of a {len(data)}-byte file"
    assert len(decoded) <= 2


def test_a_group_given_key_properties_is_never_written_with_them(certs):
    """The readers drop key properties; a group handed to `entry_from_group` with one still has
    it left out when written, though the entry says what the group was read as."""
    a = certs[0].der
    entry = wp.entry_from_group(a, ((wp.KEY_PROV_INFO, 1, b"{container}"), (3, 1, sha1(a))), wp.ROLE_ANCHORS)
    assert wp.group_bytes(entry, wp.ROLE_ANCHORS) == group(a, (3, sha1(a)))


def test_disallowed_role(tmp_path, certs):
    a, b = (Certificate(x.der) for x in certs[:2])
    path = tmp_path / "disallowed.sst"
    path.write_bytes(sst(group(a.der, (3, sha1(a.der)))))
    store = open_store(f"sst:{path}?role=disallowed")
    assert store.capabilities.distrust and not store.capabilities.purposes
    (entry,) = store.read().values()
    assert entry.trust == DISTRUST
    # as a roots file the same bytes are an anchor
    assert open_store(f"sst:{path}").read()[entry.sha256].trust == ANCHOR
    # a trusted certificate is never written into a distrust list
    write_via(f"sst:{path}?role=disallowed", TrustSet([entry, Entry(b)]))
    assert list(open_store(f"sst:{path}?role=disallowed").read()) == [entry.sha256]
    # and a roots file leaves a distrusted certificate out, saying so in the plan
    _store, plan = write_via(f"sst:{tmp_path / 'roots.sst'}", TrustSet([entry, Entry(b)]))
    assert list(open_store(f"sst:{tmp_path / 'roots.sst'}").read()) == [b.sha256]
    assert any("distrusted" in loss.what for loss in plan.losses)
    with pytest.raises(StoreError, match="role= cannot be 'ca'; use roots"):
        open_store(f"sst:{path}?role=ca")


def test_empty_file_missing_end_marker_and_crls(tmp_path, certs):
    a = certs[0].der
    empty = tmp_path / "empty.sst"
    empty.write_bytes(b"")
    assert len(open_store(f"sst:{empty}").read()) == 0
    cut = tmp_path / "nomarker.sst"
    cut.write_bytes(sst(group(a, (3, sha1(a))), end=False))
    store = open_store(f"sst:{cut}")
    assert len(store.read()) == 1 and any("no end marker" in w for w in store.warnings)
    # CRL groups after the certificates stay where they are
    crl = el(3, b"\x01" * 20) + el(0x21, b"\x30\x03\x02\x01\x00")
    with_crl = tmp_path / "crl.sst"
    with_crl.write_bytes(sst(group(a, (3, sha1(a))), crl))
    b = Certificate(certs[1].der)
    write_via(f"sst:{with_crl}?", TrustSet([*open_store(f"sst:{with_crl}").read().values(), Entry(b)]))
    assert with_crl.read_bytes() == sst(group(a, (3, sha1(a))), el(3, sha1(b.der)) + el(0x20, b.der), crl)


def test_serial_zero_and_negative_serials_are_kept(tmp_path, pki, root):
    leaf = pki.leaf("serial.test", root)
    zero, negative = with_serial(leaf, root, b"\x00"), with_serial(leaf, root, b"\xff\x01")
    write_via(f"sst:{tmp_path / 's.sst'}", TrustSet([Entry(Certificate(zero)), Entry(Certificate(negative))]))
    assert [e.cert.der for e in open_store(f"sst:{tmp_path / 's.sst'}").read().values()] == [zero, negative]


# --- hostile input ------------------------------------------------------------------------


def _hostile(certs) -> dict[str, tuple[bytes, str]]:
    a = certs[0].der
    good = sst(group(a, (11, utf16("x")), (3, sha1(a))))
    return {
        "wrong magic": (b"\x00\x00\x00\x00CRET" + good[8:], "offset 0"),
        "truncated element": (good[:40], "offset 24"),
        "truncated header": (good[:8] + good[8:14], "offset 8"),
        "length past EOF": (MAGIC + struct.pack("<III", 0x20, 1, 5000) + a, "offset 8"),
        "4 GiB length": (MAGIC + struct.pack("<III", 11, 1, 0xFFFFFFFF) + b"\x00" * 64, "offset 8"),
        "4 GiB length later": (good[:-12] + struct.pack("<III", 0x20, 1, 0xFFFFFFFF), f"offset {len(good) - 12}"),
    }


@pytest.mark.parametrize("case", ["wrong magic", "truncated element", "truncated header", "length past EOF", "4 GiB length", "4 GiB length later"])
def test_hostile_input_is_refused_and_nothing_is_written(tmp_path, certs, case):
    data, where = _hostile(certs)[case]
    bad = tmp_path / "bad.sst"
    bad.write_bytes(data)
    target = tmp_path / "target.sst"
    tracemalloc.start()
    try:
        with pytest.raises(StoreError) as caught:
            write_via(f"sst:{target}", open_store(f"sst:{bad}").read())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    message = str(caught.value)
    assert str(bad) in message and where in message
    assert not target.exists()
    assert peak < 1 << 20  # a 4 GiB length field allocates nothing


def test_a_broken_file_is_never_overwritten_by_a_failed_read(tmp_path, certs):
    data, _where = _hostile(certs)["length past EOF"]
    path = tmp_path / "x.sst"
    path.write_bytes(data)
    with pytest.raises(StoreError):
        open_store(f"sst:{path}").read()
    assert path.read_bytes() == data


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_fuzzed_files_either_read_or_fail_cleanly(certs, data):
    a = certs[0].der
    good = bytearray(sst(group(a, (9, der.encode_oid_sequence([SERVER_OID])), (11, utf16("é")), (104, b"\x00" * 8), (3, sha1(a)))))
    for _ in range(data.draw(st.integers(0, 4))):
        index = data.draw(st.integers(0, len(good) - 1))
        good[index] = data.draw(st.integers(0, 255))
    good = good[: data.draw(st.integers(0, len(good)))]
    try:
        parsed = read_sst(bytes(good))
    except wp.ElementError as exc:
        assert exc.offset <= len(good)
        return
    for _offset, cert, props in parsed.groups:
        entry = wp.entry_from_group(cert, props, wp.ROLE_ANCHORS)
        wp.group_bytes(entry, wp.ROLE_ANCHORS)  # whatever was read can be written


# --- Windows' own files -------------------------------------------------------------------


@vectors
def test_windows_update_roots_2021(tmp_path):
    path = VECTORS / "windows" / "roots-2021.sst"
    store = open_store(f"sst:{path}")
    roots = store.read()
    assert len(roots) == 434 and not store.warnings
    entries = list(roots.values())
    assert all(e.label for e in entries)
    assert sum(1 for e in entries if dict(e.trust) == ANCHOR and 9 not in [p[0] for p in e.extras["winprops"]]) >= 1
    assert sum(1 for e in entries if e.distrust_after) >= 100
    for entry in entries:  # SHA1_HASH last before the certificate, as the vector's README says
        assert entry.extras["winprops"][-1][0] == 3
    out = tmp_path / "copy.sst"
    write_via(f"sst:{out}", roots)
    assert out.read_bytes() == path.read_bytes()


@vectors
def test_microsoft_disallowed_list(tmp_path):
    path = VECTORS / "windows" / "disallowedcert-2018.sst"
    store = open_store(f"sst:{path}?role=disallowed")
    listed = store.read()
    assert len(listed) == 71 and all(e.trust == DISTRUST for e in listed.values())
    assert all([p[0] for p in e.extras["winprops"]] == [3] for e in listed.values())
    refused = [e for e in listed.values() if e.cert.x509 is None]
    assert refused, "the non-DER certificate must be kept as bytes"
    out = tmp_path / "copy.sst"
    write_via(f"sst:{out}?role=disallowed", listed)
    assert out.read_bytes() == path.read_bytes()


@vectors
def test_dotnet_serialized_store_key_prov_info_is_not_written(tmp_path):
    path = VECTORS / "windows" / "dotnet-serialized-store.sst"
    store = open_store(f"sst:{path}")
    read = store.read()
    assert len(read) == 2 and any("KEY_PROV_INFO" in w for w in store.warnings)
    first = next(iter(read.values()))
    assert der.cert_fields(first.cert.der).serial[2] & 0x80  # the negative serial, kept
    out = tmp_path / "copy.sst"
    write_via(f"sst:{out}", read)
    written = read_sst(out.read_bytes())
    assert [c for _o, c, _p in written.groups] == [e.cert.der for e in read.values()]
    assert all(p[0] not in wp.KEY_PROPERTIES for _o, _c, props in written.groups for p in props)
    original = path.read_bytes()
    key_prov_len = struct.unpack_from("<III", original, 8)[2]
    assert out.read_bytes() == original[:8] + original[8 + 12 + key_prov_len :]


def test_unreadable_disallowed_usage_distrusts_after_the_date_for_everything():
    from storesync.stores import winprops

    when = dt.datetime(2030, 1, 2, tzinfo=UTC)
    filetime = winprops.datetime_to_filetime(when)
    assert winprops.distrust_after_from(filetime, b"\x30\x05\x06\x03\x2b") == {p: when for p in ANCHOR}


@vectors
def test_a_file_cut_inside_its_end_marker_reads_like_one_without_it(tmp_path):
    data = (VECTORS / "windows" / "disallowedcert-2018.sst").read_bytes()
    cut = tmp_path / "cut.sst"
    cut.write_bytes(data[:-6])
    assert len(open_store(f"sst:{cut}?role=disallowed").read()) == 71
    cut.write_bytes(data[:-6] + b"\x01")  # not zeros: a broken element, refused
    with pytest.raises(StoreError, match="truncated element header"):
        open_store(f"sst:{cut}?role=disallowed").read()


def test_an_unreadable_usage_keeps_its_bytes_when_nothing_changed(certs):
    from storesync.stores import winprops

    cert = Certificate(certs[0].der)
    props = ((winprops.ENHKEY_USAGE, 1, b"\x30\x05\x06\x03\x2b"), (3, 1, sha1(cert.der)))
    entry = Entry(cert, trust={}, extras={winprops.EXTRAS_KEY: props})  # as the reader gives it
    assert winprops.render_props(entry, winprops.ROLE_ANCHORS)[0] == props[0]


def test_a_name_with_bytes_after_its_nul_keeps_them_through_a_sync(tmp_path, certs):
    """crypt32 shows FRIENDLY_NAME up to its first NUL; what follows is kept. The writer compares
    the label with what the reader made of those bytes, so an unchanged name is not re-encoded."""
    name = utf16("Kept") + "trailer".encode("utf-16-le")
    a, b = tmp_path / "a.sst", tmp_path / "b.sst"
    a.write_bytes(sst(group(certs[0].der, (0x0B, name), (3, sha1(certs[0].der)))))
    source = open_store(f"sst:{a}").read()
    assert [e.label for e in source.values()] == ["Kept"]
    write_via(f"sst:{b}", source)
    assert b.read_bytes() == a.read_bytes()
    from storesync.stores import winprops

    renamed = next(iter(source.values())).replace(label="Renamed")
    assert winprops.render_props(renamed, winprops.ROLE_ANCHORS)[0] == (0x0B, 1, utf16("Renamed"))


def test_a_file_cut_while_it_is_read_is_an_error_not_a_shorter_store(tmp_path, certs):
    """The file is read element by element after its size was taken: one another program cuts
    meanwhile (rewriting it in place) reads short. That is damage, as the whole file cut at
    once is, never a last certificate kept cut short as bytes and the rest taken as missing."""
    a, b, c = (x.der for x in certs[:3])
    data = sst(group(a, (3, sha1(a))), group(b, (3, sha1(b))), group(c, (3, sha1(c))))
    path = tmp_path / "cut.sst"
    for cut in (data.index(b) + 100, data.index(b) - 30, data.index(b) - 12 - 3):  # in a value, in a header
        path.write_bytes(data)
        with open(path, "rb", buffering=0) as file:  # unbuffered: a small file is not read ahead whole
            real_read = file.read

            class Cut:
                seek, tell = file.seek, file.tell
                reads = 0

                def read(self, n=-1):
                    Cut.reads += 1
                    if Cut.reads == 2:  # after the magic: another program rewrites it in place
                        with open(path, "r+b") as other:
                            other.truncate(cut)
                    return real_read(n)

            with pytest.raises(wp.ElementError, match="while it was read"):
                read_sst(Cut())


def test_the_digest_a_write_compares_is_of_the_bytes_read(tmp_path, certs, monkeypatch):
    """A streamed read digests the file and parses it through one opening: a file replaced by
    a rename in between (another program's write) is not parsed under the old file's digest,
    which would let a later write replace it without rebasing onto what it holds."""
    from storesync import stores
    from storesync.fsio import digest_of

    a, b = (x.der for x in certs[:2])
    path, other = tmp_path / "roots.sst", tmp_path / "other.sst"
    path.write_bytes(sst(group(a, (3, sha1(a)))))
    other.write_bytes(sst(group(a, (3, sha1(a))), group(b, (3, sha1(b)))))
    real = stores.file_digest

    def digest_then_replaced(file):
        found = real(file)
        other.replace(path)  # another program's write lands right after the digest
        return found

    monkeypatch.setattr(stores, "file_digest", digest_then_replaced)
    store = open_store(f"sst:{path}")
    read = store.read()
    parsed = sst(group(a, (3, sha1(a)))) if len(read) == 1 else path.read_bytes()
    assert store._read_digest == digest_of(parsed)


def test_a_property_given_twice_counts_by_its_last_value(tmp_path, certs):
    """crypt32 sets a group's elements in turn: the last of a repeated property is the one that
    counts, the distrust-after date too (Wine 8 refuses that id, so test_wine checks ENHKEY_USAGE
    only). A rewrite that changes it leaves it once, with the new value."""
    early, late = dt.datetime(2020, 1, 1, tzinfo=UTC), dt.datetime(2040, 1, 1, tzinfo=UTC)
    path = tmp_path / "twice.sst"
    path.write_bytes(sst(group(certs[0].der, (wp.ENHKEY_USAGE, der.encode_oid_sequence([SERVER_OID])),
                               (wp.ENHKEY_USAGE, wp.NO_PURPOSE),
                               (wp.DISALLOWED_FILETIME, wp.datetime_to_filetime(late)),
                               (wp.DISALLOWED_FILETIME, wp.datetime_to_filetime(early)))))
    store = open_store(f"sst:{path}")
    (entry,) = store.read().values()
    assert not entry.trusted_purposes and set(entry.distrust_after.values()) == {early}
    plan = make_plan(store.read(), store.read(), store.capabilities, store="t", purpose="any")
    plan.desired = TrustSet([entry.replace(trust={SERVER_AUTH: TRUSTED})])
    store.write(plan)
    (again,) = open_store(f"sst:{path}").read().values()
    assert list(again.trusted_purposes) == [SERVER_AUTH] and set(again.distrust_after.values()) == {early}
    assert [p for p, _e, _v in read_sst(path.read_bytes()).groups[0][2]].count(wp.ENHKEY_USAGE) == 1
