"""The `reg` store: registry exports read as the state after import, written as explicit changes."""

from __future__ import annotations

import hashlib
import re
import struct

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from storesync import der
from storesync.engine.plan import make_plan
from storesync.model import ANCHOR, DISTRUST, SERVER_AUTH, TRUSTED, Certificate, Entry, StoreError, TrustSet
from storesync.stores import open_store
from storesync.stores import reg
from storesync.stores import winprops as wp

from conftest import VECTORS, pem_of, vectors

HKLM = "HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\SystemCertificates"
HKCU = "HKEY_CURRENT_USER\\Software\\Microsoft\\SystemCertificates"
POLICIES = "HKEY_LOCAL_MACHINE\\SOFTWARE\\Policies\\Microsoft\\SystemCertificates"
ENTERPRISE = "HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\EnterpriseCertificates"
BOM = b"\xff\xfe"


def el(prop_id: int, value: bytes) -> bytes:
    return struct.pack("<III", prop_id, 1, len(value)) + value


def blob(cert: bytes, *props: tuple[int, bytes]) -> bytes:
    return b"".join(el(i, v) for i, v in props) + el(0x20, cert)


def thumb(cert: bytes) -> str:
    return hashlib.sha1(cert).hexdigest().upper()


def loose_hex(data: bytes, per_line: int = 17, indent: str = "      ") -> str:
    """Hex as a hand-edited file might have it: odd line lengths, other indents, upper case."""
    parts = [f"{b:02X}" for b in data]
    lines = [",".join(parts[i : i + per_line]) for i in range(0, len(parts), per_line)]
    return '"Blob"=hex:' + (",\\\n" + indent).join(lines) + "\n"


def write_via(spec: str, source: TrustSet, purpose: str = "any"):
    store = open_store(spec)
    plan = make_plan(source, store.read(), store.capabilities, store=spec, purpose=purpose)
    store.write(plan)
    return plan


def utf16(text: str) -> bytes:
    return text.encode("utf-16-le") + b"\x00\x00"


@pytest.fixture(scope="module")
def certs(pki):
    return [pki.ca(f"Reg Root {n}").der for n in range(10)]


# --- line wrapping ------------------------------------------------------------------------


def by_the_rule(data: bytes) -> str:
    """docs/formats.md §4.4: 22 bytes on the first line, 25 on each continuation, `,\\` CRLF + 2 spaces."""
    chunks = [data[:22]] + [data[i : i + 25] for i in range(22, len(data), 25)]
    return '"Blob"=hex:' + ",\\\r\n  ".join(",".join(f"{b:02x}" for b in chunk) for chunk in chunks if chunk) + "\r\n"


@pytest.mark.parametrize("size", [1, 2, 21, 22, 23, 46, 47, 48, 72, 73, 500, 1337])
def test_blob_wrapping_follows_the_rule_byte_for_byte(size):
    data = bytes((7 * i + 3) % 256 for i in range(size))
    text = reg.blob_lines(data)
    assert text == by_the_rule(data)
    lines = text.split("\r\n")[:-1]
    assert len(lines[0]) == (11 + 3 * size - 1 if size <= 22 else 11 + 3 * 22 + 1)  # `xx,` * 22 + `\`
    assert all(len(line) <= 80 for line in lines)
    assert all(line.startswith("  ") for line in lines[1:])


@vectors
@pytest.mark.parametrize("name", ["root-one-blob-a.reg", "root-one-blob-b.reg", "ca-store-one-blob.reg"])
def test_windows_exports_are_regenerated_byte_for_byte(name):
    data = (VECTORS / "windows" / name).read_bytes()
    parsed = reg.read_reg(data)
    (key,) = reg.state_after_import(parsed)
    props, cert = reg._read_group(key.blob)
    rebuilt = wp.group_bytes(wp.entry_from_group(cert, props[0], wp.ROLE_ANCHORS), wp.ROLE_ANCHORS)
    assert rebuilt == key.blob  # every property, recomputed hashes included, in Windows' order
    text = f"{reg.HEADER_V5}\r\n\r\n[{key.path}]\r\n{reg.blob_lines(rebuilt)}\r\n"
    assert BOM + text.encode("utf-16-le") == data


# --- Windows' files -----------------------------------------------------------------------


@vectors
@pytest.mark.parametrize(
    "name, key, count",
    [
        ("root-one-blob-a.reg", "B759697225BF14DA7F67596D9A687058C4EBAC60", 1),
        ("root-one-blob-b.reg", "50E8E66831E80168D79A7969ECA005A323740371", 1),
        ("ca-store-one-blob.reg", "2A68652C2C14CD0A7404E58C72085726602D36EE", 0),
    ],
)
def test_windows_exports(tmp_path, name, key, count):
    path = VECTORS / "windows" / name
    store = open_store(f"reg:{path}")
    entries = store.read()
    assert len(entries) == count and not store.warnings
    for entry in entries.values():
        assert entry.cert.sha1.upper() == key and entry.trust == ANCHOR
    copy = tmp_path / name
    copy.write_bytes(path.read_bytes())
    write_via(f"reg:{copy}", entries)
    assert copy.read_bytes() == path.read_bytes()


@vectors
def test_ca_store_stays_untouched_when_a_root_is_added(tmp_path, certs):
    original = (VECTORS / "windows" / "ca-store-one-blob.reg").read_bytes()
    copy = tmp_path / "ca.reg"
    copy.write_bytes(original)
    write_via(f"reg:{copy}", TrustSet([Entry(Certificate(certs[0]))]))
    written = copy.read_bytes()
    assert written.startswith(original)  # the CA key, its 115-character key line included, unchanged
    text = written.decode("utf-16")
    assert f"\r\n\r\n[{HKLM}\\ROOT\\Certificates\\{thumb(certs[0])}]\r\n" in text
    assert [len(l) for l in text.split("\r\n") if "CA\\Certificates" in l] == [115]
    assert list(open_store(f"reg:{copy}").read()) == [Certificate(certs[0]).sha256]


# --- reading ------------------------------------------------------------------------------


def several_stores(certs) -> str:
    a, b, c, d, e, f, g, h, i, j = certs
    eku = der.encode_oid_sequence(["1.3.6.1.5.5.7.3.1"])
    return (
        "Windows Registry Editor Version 5.00\n"
        "\n"
        "; exported by hand\n"
        f"[{HKLM}\\ROOT\\Certificates\\{thumb(a)}]\n"
        + loose_hex(blob(a, (11, utf16("Machine Röot")), (9, eku), (3, hashlib.sha1(a).digest())))
        + "\n\n"  # two blank lines between keys
        f"[{HKCU}\\AuthRoot\\Certificates\\{thumb(b).lower()}]\n"  # lower case: still the key
        + loose_hex(blob(b), per_line=25, indent="  ")
        + f"\n[{POLICIES}\\Root\\Certificates\\{thumb(c)}]\n"
        + loose_hex(blob(c), per_line=3, indent="\t")
        + f"\n[{ENTERPRISE}\\ROOT\\Certificates\\{thumb(d)}]\n"
        + loose_hex(blob(d))
        + f"\n[{HKLM}\\Disallowed\\Certificates\\{thumb(e)}]\n"
        + loose_hex(blob(e))
        + f"\n[{HKLM}\\CA\\Certificates\\{thumb(f)}]\n"
        + loose_hex(blob(f))
        + f"\n[{HKLM}\\ROOT\\Certificates\\{thumb(g)}]\n"
        + loose_hex(blob(g))
        + f"\n[-{HKLM}\\ROOT\\Certificates\\{thumb(g)}]\n"  # deleted again: not there after import
        + f"\n[{HKLM}\\ROOT\\Certificates\\{thumb(h)}]\n"
        + loose_hex(blob(h))
        + '"Blob"=-\n'  # the value deleted: no certificate
        + f"\n[{HKLM}\\ROOT\\Certificates\\{'0' * 40}]\n"  # not i's SHA-1: Windows ignores it
        + loose_hex(blob(i))
        + f"\n[-{HKCU}\\AuthRoot]\n"  # a whole store deleted (by someone else), then one key again
        + f"\n[{HKCU}\\AuthRoot\\Certificates\\{thumb(j)}]\n"
        + loose_hex(blob(j))
        + f"\n[{HKCU}\\My]\n"
        + '"Something"=dword:00000001\n'
        + '"Text"="a \\"quoted\\" value\\\\"\n'
    )


@pytest.mark.parametrize(
    "encoding",
    ["utf-16 BOM CRLF", "utf-8 LF", "utf-8 BOM CRLF", "REGEDIT4 ANSI LF", "utf-16 no BOM LF"],
)
def test_state_after_import_of_several_hives_and_stores(tmp_path, certs, encoding):
    text = several_stores(certs)
    if encoding.startswith("REGEDIT4"):
        text = text.replace("Windows Registry Editor Version 5.00", "REGEDIT4").replace("Röot", "R\xf6ot")
    if "CRLF" in encoding:
        text = text.replace("\n", "\r\n")
    data = {
        "utf-16 BOM CRLF": BOM + text.encode("utf-16-le"),
        "utf-8 LF": text.encode("utf-8"),
        "utf-8 BOM CRLF": b"\xef\xbb\xbf" + text.encode("utf-8"),
        "REGEDIT4 ANSI LF": text.encode("cp1252"),
        "utf-16 no BOM LF": text.encode("utf-16-le"),
    }[encoding]
    path = tmp_path / "mixed.reg"
    path.write_bytes(data)
    store = open_store(f"reg:{path}")
    found = store.read()
    a, b, c, d, e, f, g, h, i, j = (Certificate(x) for x in certs)
    assert list(found) == [x.sha256 for x in (a, c, d, e, j)]
    assert found[a.sha256].label == "Machine Röot" and dict(found[a.sha256].trust) == {SERVER_AUTH: TRUSTED}
    assert found[c.sha256].trust == ANCHOR and found[d.sha256].trust == ANCHOR and found[j.sha256].trust == ANCHOR
    assert found[e.sha256].trust == DISTRUST
    assert any("not the certificate's SHA-1" in w for w in store.warnings)
    assert any("without a Blob" in w for w in store.warnings)
    # unchanged: the same bytes, in the file's own encoding and line ends
    write_via(f"reg:{path}", found)
    assert path.read_bytes() == data


def test_lower_case_key_is_ignored_like_crypt32_does(tmp_path, certs):
    """crypt32 compares the key name with the uppercase hex SHA-1: a lowercase name is not loaded."""
    text = f"Windows Registry Editor Version 5.00\r\n\r\n[{HKLM}\\ROOT\\Certificates\\{thumb(certs[0]).lower()}]\r\n"
    text += reg.blob_lines(blob(certs[0])) + "\r\n"
    path = tmp_path / "lower.reg"
    path.write_bytes(BOM + text.encode("utf-16-le"))
    store = open_store(f"reg:{path}")
    assert list(store.read()) == []
    assert any("Windows ignores it" in w for w in store.warnings)


# --- writing ------------------------------------------------------------------------------


def test_new_file_is_what_regedit_writes(tmp_path, certs):
    a, e = Certificate(certs[0]), Certificate(certs[1])
    path = tmp_path / "new.reg"
    write_via(f"reg:{path}", TrustSet([Entry(a, label="Ä Root"), Entry(e, trust=dict(DISTRUST))]))
    blob_a = blob(a.der, (11, utf16("Ä Root")), (3, hashlib.sha1(a.der).digest()))
    blob_e = blob(e.der, (3, hashlib.sha1(e.der).digest()))
    expected = (
        "Windows Registry Editor Version 5.00\r\n\r\n"
        f"[{HKLM}\\ROOT\\Certificates\\{thumb(a.der)}]\r\n{by_the_rule(blob_a)}\r\n"
        f"[{HKLM}\\Disallowed\\Certificates\\{thumb(e.der)}]\r\n{by_the_rule(blob_e)}\r\n"
    )
    assert path.read_bytes() == BOM + expected.encode("utf-16-le")
    again = open_store(f"reg:{path}").read()
    assert again[a.sha256].label == "Ä Root" and again[e.sha256].trust == DISTRUST


@pytest.mark.parametrize("content", [b"", b"\r\n \r\n"])
def test_an_empty_file_is_written_as_a_new_one(tmp_path, certs, content):
    """An empty .reg (listed as 0 certificates) is a target like a missing one, as an empty .sst,
    .p7b or .pem is: the sync writes what regedit writes, header first (it wrote the blocks alone
    and then refused its own file, advising a rollback)."""
    from conftest import storesync

    source, empty, new = tmp_path / "src.pem", tmp_path / "empty.reg", tmp_path / "new.reg"
    source.write_bytes(b"".join(pem_of(c) for c in certs[:2]))
    empty.write_bytes(content)
    for target in (empty, new):
        result = storesync("sync", f"pem:{source}", f"reg:{target}")
        assert result.returncode == 0, result.stderr
    assert empty.read_bytes() == new.read_bytes()
    assert set(open_store(f"reg:{empty}").read()) == {Certificate(c).sha256 for c in certs[:2]}


def test_a_copy_writes_unchanged_blobs_from_their_bytes(tmp_path, certs, monkeypatch):
    """A root and a distrusted certificate read from one file and written into a new one: each
    Blob is its properties' bytes as read, none decoded and encoded again."""
    a, e = Certificate(certs[0]), Certificate(certs[1])
    first, copy = tmp_path / "first.reg", tmp_path / "copy.reg"
    write_via(f"reg:{first}", TrustSet([Entry(a, label="Ä Root"), Entry(e, trust=dict(DISTRUST), label="Gone")]))
    rendered = []
    real = wp.render_props
    monkeypatch.setattr(wp, "render_props", lambda entry, role: rendered.append(entry) or real(entry, role))
    write_via(f"reg:{copy}", open_store(f"reg:{first}").read())
    assert copy.read_bytes() == first.read_bytes() and rendered == []


def _deletions(path) -> list[str]:
    return re.findall(r"^\[-([^\]]*)\]", path.read_bytes().decode("utf-16"), re.M)


def test_removals_are_explicit_keys_never_a_whole_store(tmp_path, certs):
    a, b, e = (Certificate(x) for x in certs[:3])
    path = tmp_path / "root.reg"
    write_via(f"reg:{path}", TrustSet([Entry(a), Entry(b), Entry(e, trust=dict(DISTRUST))]))
    first = path.read_bytes()
    plan = write_via(f"reg:{path}", TrustSet([Entry(a)]))
    assert {x.sha256 for x in plan.removals} == {b.sha256, e.sha256}
    assert _deletions(path) == [f"{HKLM}\\ROOT\\Certificates\\{thumb(b.der)}", f"{HKLM}\\Disallowed\\Certificates\\{thumb(e.der)}"]
    text = path.read_bytes().decode("utf-16")
    a_block = f"[{HKLM}\\ROOT\\Certificates\\{thumb(a.der)}]"
    assert text[text.index(a_block) : text.index("[-")] in first.decode("utf-16")  # a's key untouched
    assert list(open_store(f"reg:{path}").read()) == [a.sha256]  # state after import
    after_removal = path.read_bytes()
    write_via(f"reg:{path}", TrustSet([Entry(a)]))
    assert path.read_bytes() == after_removal  # the removal keys stay; nothing to change
    # added again: after its deletion key, so it is there after import
    write_via(f"reg:{path}", TrustSet([Entry(a), Entry(b)]))
    assert list(open_store(f"reg:{path}").read()) == [a.sha256, b.sha256]
    # and removed again: back to one deletion key, not two
    write_via(f"reg:{path}", TrustSet([Entry(a)]))
    assert path.read_bytes() == after_removal


def test_a_trust_change_moves_a_certificate_between_root_and_disallowed(tmp_path, certs):
    a, b = Certificate(certs[0]), Certificate(certs[1])
    path = tmp_path / "root.reg"
    write_via(f"reg:{path}", TrustSet([Entry(a), Entry(b)]))
    write_via(f"reg:{path}", TrustSet([Entry(a), Entry(b, trust=dict(DISTRUST))]))
    assert _deletions(path) == [f"{HKLM}\\ROOT\\Certificates\\{thumb(b.der)}"]
    assert open_store(f"reg:{path}").read()[b.sha256].trust == DISTRUST
    # purposes and distrust-after change in place, other properties kept
    read = open_store(f"reg:{path}").read()
    store = open_store(f"reg:{path}")
    plan = make_plan(read, read, store.capabilities, store="t", purpose="any")
    plan.desired = TrustSet([read[a.sha256].replace(trust={SERVER_AUTH: TRUSTED}, label="Renamed"), read[b.sha256]])
    store.write(plan)
    again = open_store(f"reg:{path}").read()
    assert dict(again[a.sha256].trust) == {SERVER_AUTH: TRUSTED} and again[a.sha256].label == "Renamed"
    assert path.read_bytes().decode("utf-16").count(thumb(a.der)) == 1


def test_target_location_options(tmp_path, certs):
    a = Certificate(certs[0])
    path = tmp_path / "user.reg"
    write_via(f"reg:{path}?hive=HKCU&store=AuthRoot", TrustSet([Entry(a)]))
    assert f"[{HKCU}\\AuthRoot\\Certificates\\{thumb(a.der)}]\r\n" in path.read_bytes().decode("utf-16")
    path = tmp_path / "gpo.reg"
    write_via(f"reg:{path}?base=policies", TrustSet([Entry(a)]))
    key_line = f"[{POLICIES}\\ROOT\\Certificates\\{thumb(a.der)}]\r\n"
    assert key_line in path.read_bytes().decode("utf-16") and len(key_line) > 80  # key lines never wrap
    with pytest.raises(StoreError, match="store= cannot be 'CA'; use ROOT or AuthRoot"):
        open_store(f"reg:{path}?store=CA")
    with pytest.raises(StoreError, match="hive= cannot be 'HKXX'; use HKLM or HKCU"):
        open_store(f"reg:{path}?hive=HKXX")


def test_key_prov_info_in_a_blob_is_dropped(tmp_path, certs):
    a = certs[0]
    text = f"Windows Registry Editor Version 5.00\r\n\r\n[{HKLM}\\ROOT\\Certificates\\{thumb(a)}]\r\n"
    text += reg.blob_lines(blob(a, (2, utf16("{container}")), (3, hashlib.sha1(a).digest()))) + "\r\n"
    path = tmp_path / "k.reg"
    path.write_bytes(BOM + text.encode("utf-16-le"))
    store = open_store(f"reg:{path}")
    (entry,) = store.read().values()
    assert any("KEY_PROV_INFO" in w for w in store.warnings)
    out = tmp_path / "out.sst"
    write_via(f"sst:{out}", TrustSet([entry]))
    assert b"{\x00c\x00o\x00n\x00" not in out.read_bytes()


# --- hostile input ------------------------------------------------------------------------


def hostile(certs) -> dict[str, tuple[bytes, str]]:
    a = certs[0]
    head = f"Windows Registry Editor Version 5.00\r\n\r\n[{HKLM}\\ROOT\\Certificates\\{thumb(a)}]\r\n"
    good = head + reg.blob_lines(blob(a)) + "\r\n"
    bad_hex = good.replace(",", ",zz,", 1)
    cut_blob = head + reg.blob_lines(blob(a)[:-40]) + "\r\n"
    huge = head + reg.blob_lines(struct.pack("<III", 11, 1, 0xFFFFFFFF) + b"\x00" * 8) + "\r\n"
    return {
        "odd-length UTF-16": (BOM + good.encode("utf-16-le")[:-1], "offset"),
        "bad hex byte": (BOM + bad_hex.encode("utf-16-le"), "line 4"),
        "truncated blob": (BOM + cut_blob.encode("utf-16-le"), "line 4"),
        "4 GiB length in a blob": (BOM + huge.encode("utf-16-le"), "line 4"),
        "not a registry export": (BOM + "Hello\r\n".encode("utf-16-le"), "line 1"),
        "continuation past the end": (BOM + (head + '"Blob"=hex:01,02,\\\r\n').encode("utf-16-le"), "line 4"),
        "key line not closed": (BOM + head.replace("]\r\n", "\r\n").encode("utf-16-le"), "line 3"),
    }


@pytest.mark.parametrize("case", list(hostile([b"x"])))
def test_hostile_input_is_refused_and_nothing_is_written(tmp_path, certs, case):
    data, where = hostile(certs)[case]
    bad = tmp_path / "bad.reg"
    bad.write_bytes(data)
    target = tmp_path / "target.reg"
    with pytest.raises(StoreError) as caught:
        write_via(f"reg:{target}", open_store(f"reg:{bad}").read())
    assert str(bad) in str(caught.value) and where in str(caught.value)
    assert not target.exists()
    with pytest.raises(StoreError):  # nor is the broken file itself rewritten
        write_via(f"reg:{bad}", TrustSet([Entry(Certificate(certs[1]))]))
    assert bad.read_bytes() == data


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_fuzzed_exports_either_read_or_fail_cleanly(tmp_path, certs, data):
    text = several_stores(certs)
    lines = text.split("\n")
    for _ in range(data.draw(st.integers(1, 4))):
        index = data.draw(st.integers(0, len(lines) - 1))
        line = lines[index]
        cut = data.draw(st.integers(0, len(line)))
        lines[index] = line[:cut] + data.draw(st.sampled_from(["", "[", "]", "\\", ",", "zz", "-", "\"", "=", "hex:"])) + line[cut:]
    raw = "\n".join(lines).encode("utf-8")
    path = tmp_path / "fuzz.reg"
    path.write_bytes(raw)
    try:
        open_store(f"reg:{path}").read()
    except StoreError as exc:
        assert str(path) in str(exc)


def test_an_edited_lf_utf8_file_keeps_its_encoding_and_line_ends(tmp_path, certs, pki):
    text = several_stores(certs).rstrip("\n")  # and no newline at the very end
    path = tmp_path / "lf.reg"
    path.write_bytes(text.encode("utf-8"))
    found = open_store(f"reg:{path}").read()
    extra = Certificate(pki.ca("Reg Root extra").der)
    a = Certificate(certs[0])
    desired = TrustSet([e for e in found.values() if e.sha256 != a.sha256] + [Entry(extra, label="new")])
    write_via(f"reg:{path}", desired)
    written = path.read_bytes().decode("utf-8")
    assert "\r" not in written and written.startswith(text.split(f"[{HKLM}\\ROOT")[0])
    assert f"\n[-{HKLM}\\ROOT\\Certificates\\{thumb(a.der)}]\n" in written
    assert f"[{HKCU}\\My]\n\"Something\"=dword:00000001\n" in written  # out of scope: untouched
    assert set(open_store(f"reg:{path}").read()) == set(desired)
    assert f"\n\n[{HKLM}\\ROOT\\Certificates\\{thumb(extra.der)}]\n" in written
