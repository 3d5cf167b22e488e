"""The `p12` store against the JDK's keytool and TrustManager, OpenSSL and `cryptography`."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import BestAvailableEncryption, Encoding, NoEncryption, PrivateFormat, pkcs12
from hypothesis import HealthCheck, given, settings, strategies as st

from storesync import der
from storesync.engine.plan import make_plan
from storesync.model import DISTRUST, Certificate, Entry, StoreError, TrustSet
from storesync.stores import open_store, parse_spec
from storesync.stores import p12
from storesync.stores.p12 import P12Store, java_trusted_cert_bag, load_pfx

from conftest import SYSTEM_BUNDLE, need, run, storesync
from test_jks import java_anchors, java_trusts, keytool, keytool_list, sync, trust_set

NO_PASSWORD = ("-J-Dkeystore.pkcs12.certProtectionAlgorithm=NONE", "-J-Dkeystore.pkcs12.macAlgorithm=NONE")


@pytest.fixture(scope="module")
def cas(pki):
    return [pki.ca(f"storesync P12 CA {n}") for n in range(3)]


def sha(issued) -> str:
    return Certificate(issued.der).sha256


def keytool_store(tmp_path: Path, name: str, *issued, password="changeit", extra=()) -> Path:
    path = tmp_path / name
    for n, item in enumerate(issued):
        item.write(tmp_path / f"import{n}.pem")
        keytool(*extra, "-importcert", "-noprompt", "-alias", f"Imported {n}", "-file", tmp_path / f"import{n}.pem",
                "-keystore", path, "-storetype", "PKCS12", "-storepass", password)
    return path


def anchors_of(path: Path, password="changeit") -> set[str]:
    return {b.sha256 for b in load_pfx(path.read_bytes(), password, False).bags if b.java_trusted}


# --- writing -------------------------------------------------------------------------------


def test_keytool_lists_exactly_our_entries(cas, tmp_path):
    target = tmp_path / "new.p12"
    sync(str(target), trust_set(*cas))
    listed = keytool_list(target, storetype="PKCS12")
    assert sorted(listed.values()) == sorted(("trustedCertEntry", sha(c)) for c in cas)
    assert set(listed) == {f"storesync p12 ca {n}" for n in range(3)}  # Java lower-cases aliases as it loads
    # protected as JDK 17 writes it: a MAC and an encrypted certificate safe
    text = run(need("openssl"), "pkcs12", "-in", target, "-passin", "pass:changeit", "-info", "-nokeys").stderr.decode()
    assert "MAC: sha256, Iteration 10000" in text and "PBES2, PBKDF2, AES-256-CBC, Iteration 10000" in text
    again = open_store(str(target)).read()
    assert set(again) == {sha(c) for c in cas}
    assert {e.label for e in again.values()} == {f"storesync P12 CA {n}" for n in range(3)}


def test_java_trust_manager_accepts_a_leaf_under_our_anchor(root, intermediate, server_leaf, cas, tmp_path):
    ours = tmp_path / "ours.p12"
    sync(f"p12:{ours}", trust_set(root, cas[0]))
    assert java_trusts(tmp_path, ours, "PKCS12", "changeit", server_leaf, intermediate) == "TRUSTED"
    without = tmp_path / "without.p12"
    sync(f"p12:{without}", trust_set(cas[0]))
    assert java_trusts(tmp_path, without, "PKCS12", "changeit", server_leaf, intermediate).startswith("REFUSED")


def test_our_bag_is_keytools_bag(cas, tmp_path):
    made = keytool_store(tmp_path, "k.p12", cas[0])
    (bag,) = [b for b in load_pfx(made.read_bytes(), "changeit", False).bags if b.java_trusted]
    assert java_trusted_cert_bag(bag.cert, "Imported 0") == bag.raw


def test_same_set_gives_same_bytes_whatever_the_order(cas, tmp_path):
    a, b = tmp_path / "a.p12", tmp_path / "b.p12"
    sync(str(a), trust_set(*cas))
    sync(str(b), trust_set(*reversed(cas)))
    assert a.read_bytes() == b.read_bytes()
    stat = a.stat()
    sync(str(a), trust_set(cas[2], cas[0], cas[1]))
    assert a.stat().st_mtime_ns == stat.st_mtime_ns


def test_distrusted_certificate_is_left_out_and_reported(cas, tmp_path):
    target = tmp_path / "t.p12"
    sync(str(target), trust_set(*cas))
    source = TrustSet([Entry(Certificate(cas[0].der), trust=dict(DISTRUST)), *trust_set(cas[1]).values()])
    plan = sync(str(target), source)
    assert any("distrusted" in loss.what for loss in plan.losses)
    assert anchors_of(target) == {sha(cas[1])}


# --- reading what others wrote -------------------------------------------------------------


def test_keytool_store_round_trips_without_loss(cas, tmp_path):
    made = keytool_store(tmp_path, "keytool.p12", cas[0], cas[1])
    before = made.read_bytes()
    read = open_store(str(made)).read()
    assert set(read) == {sha(cas[0]), sha(cas[1])}
    assert {e.label for e in read.values()} == {"Imported 0", "Imported 1"}
    sync(str(made), read)
    assert made.read_bytes() == before
    copy = tmp_path / "copy.p12"
    sync(str(copy), read)
    assert keytool_list(copy) == keytool_list(made)
    sync(str(made), trust_set(*cas))  # an addition: existing aliases stay, the new one follows the label scheme
    assert set(keytool_list(made)) == {"imported 0", "imported 1", "storesync p12 ca 2"}


def test_cryptography_java_truststore_round_trips(cas, tmp_path):
    certs = [pkcs12.PKCS12Certificate(c.cert, f"crypto {n}".encode()) for n, c in enumerate(cas[:2])]
    made = tmp_path / "crypto.p12"
    made.write_bytes(pkcs12.serialize_java_truststore(certs, BestAvailableEncryption(b"changeit")))
    read = open_store(str(made)).read()
    assert set(read) == {sha(cas[0]), sha(cas[1])} and {e.label for e in read.values()} == {"crypto 0", "crypto 1"}
    sync(str(made), trust_set(*cas))
    assert keytool_list(made) == {
        "crypto 0": ("trustedCertEntry", sha(cas[0])),
        "crypto 1": ("trustedCertEntry", sha(cas[1])),
        "storesync p12 ca 2": ("trustedCertEntry", sha(cas[2])),
    }
    # what cryptography itself reads back
    loaded = pkcs12.load_pkcs12(made.read_bytes(), b"changeit")
    assert {Certificate(c.certificate.public_bytes(_der())).sha256 for c in loaded.additional_certs} == {sha(c) for c in cas}


def _der():
    from cryptography.hazmat.primitives.serialization import Encoding

    return Encoding.DER


def test_cryptography_no_encryption_store_keeps_its_empty_password(cas, tmp_path):
    made = tmp_path / "nopass.p12"
    made.write_bytes(pkcs12.serialize_java_truststore([pkcs12.PKCS12Certificate(cas[0].cert, b"a")], NoEncryption()))
    assert set(open_store(str(made)).read()) == {sha(cas[0])}
    sync(str(made), trust_set(cas[0], cas[1]))
    loaded = pkcs12.load_pkcs12(made.read_bytes(), None)
    assert len(loaded.additional_certs) == 2
    assert anchors_of(made, "") == {sha(cas[0]), sha(cas[1])}


def test_password_less_store_stays_password_less(cas, tmp_path):
    made = keytool_store(tmp_path, "jdk18.p12", cas[0], extra=NO_PASSWORD)
    sync(str(made), trust_set(cas[0], cas[1]))
    pfx = load_pfx(made.read_bytes(), "", False)
    assert pfx.mac is None and not any(s.encrypted for s in pfx.safes)
    assert len(keytool_list(made, password=None, storetype="PKCS12")) == 2
    fresh = tmp_path / "fresh.p12"
    sync(f"{fresh}?protect=no&aliases=jdk", trust_set(*cas))
    assert load_pfx(fresh.read_bytes(), "", False).mac is None
    assert set(keytool_list(fresh, password=None)) == {f"storesyncp12ca{n} [jdk]" for n in range(3)}


def test_a_store_without_mac_read_with_a_password_says_nothing_proves_it_unchanged(cas, tmp_path):
    """A password given says the store is protected; one without a MAC (anyone who can write it
    can strip it and put plain safes of their own) is read as Java reads it, with a warning."""
    made = keytool_store(tmp_path, "jdk18.p12", cas[0], extra=NO_PASSWORD)
    secret = tmp_path / "pw"
    secret.write_text("changeit\n")
    for spec, warned in ((str(made), False), (f"{made}?password-file={secret}", True)):
        result = storesync("list", spec)
        assert result.returncode == 0, result.stderr
        assert ("has no MAC, so nothing proves it unchanged" in result.stderr) is warned, result.stderr
    protected = keytool_store(tmp_path, "jdk17.p12", cas[0])
    assert "no MAC" not in storesync("list", f"{protected}?password-file={secret}").stderr


def test_private_key_entry_is_kept_byte_for_byte(cas, tmp_path):
    store = keytool_store(tmp_path, "withkey.p12", cas[0])
    keytool("-genkeypair", "-alias", "server", "-keyalg", "EC", "-dname", "CN=server.test", "-keystore", store,
            "-storepass", "changeit")
    before = load_pfx(store.read_bytes(), "changeit", False)
    kept_before = sorted(b.raw for b in before.bags if not b.java_trusted)
    reader = open_store(str(store))
    assert set(reader.read()) == {sha(cas[0])}
    assert any("private-key entry 'server'" in w for w in reader.warnings)

    sync(str(store), trust_set(cas[1], cas[2]))
    after = load_pfx(store.read_bytes(), "changeit", False)
    assert sorted(b.raw for b in after.bags if not b.java_trusted) == kept_before
    listed = keytool_list(store)
    assert listed["server"][0] == "PrivateKeyEntry"
    assert sorted(v for k, v in listed.items() if k != "server") == sorted(("trustedCertEntry", sha(c)) for c in cas[1:])
    keytool("-certreq", "-alias", "server", "-keystore", store, "-storepass", "changeit", "-file", tmp_path / "req")


def _tlv(tag: int, *parts: bytes) -> bytes:
    """DER by hand, so that a test file can hold what no writer makes (an empty localKeyId)."""
    content = b"".join(parts)
    size = len(content).to_bytes((len(content).bit_length() + 7) // 8 or 1, "big")
    return bytes([tag]) + (size if len(content) < 128 else bytes([0x80 | len(size)]) + size) + content


def _oid(dotted: str) -> bytes:
    first, second, *rest = map(int, dotted.split("."))
    body = bytes([40 * first + second])
    for value in rest:
        chunk = [value & 0x7F]
        while value > 0x7F:
            value >>= 7
            chunk.append(0x80 | value & 0x7F)
        body += bytes(reversed(chunk))
    return _tlv(0x06, body)


def _bag(kind: str, value: bytes, name: str | None, key_id: bytes | None) -> bytes:
    attributes = b""
    if name is not None:
        attributes += _tlv(0x30, _oid("1.2.840.113549.1.9.20"), _tlv(0x31, _tlv(0x1E, name.encode("utf-16-be"))))
    if key_id is not None:
        attributes += _tlv(0x30, _oid("1.2.840.113549.1.9.21"), _tlv(0x31, _tlv(0x04, key_id)))
    if kind == "key":
        return _tlv(0x30, _oid(p12.BAG_SHROUDED_KEY), _tlv(0xA0, value), *([_tlv(0x31, attributes)] if attributes else []))
    cert = _tlv(0x30, _oid("1.2.840.113549.1.9.22.1"), _tlv(0xA0, _tlv(0x04, value)))
    return _tlv(0x30, _oid(p12.BAG_CERT), _tlv(0xA0, cert), *([_tlv(0x31, attributes)] if attributes else []))


# Each layout: its safes, each a list of bags (what, friendlyName, localKeyId); "key" is the private key,
# "own" its certificate, "other" an unrelated one. Java's rules (PKCS12KeyStore): a key without a
# localKeyId gets "01" (the file's first key only), and so does a certificate without one that is
# the first bag of its safe while one key has been read; a localKeyId match wins (first with the
# key's name too, else the last), else the last certificate of the key's name.
KEY_LAYOUTS = {
    "local key id": [[("own", "mykey", b"1"), ("other", "other", None)], [("key", "mykey", b"1")]],
    "friendly name": [[("other", "other", None), ("own", "MyKey", None)], [("key", "mykey", None)]],
    "no certificate": [[("other", "other", None)], [("key", "mykey", b"1")]],
    "no names": [[("other", None, None), ("own", None, None)], [("key", None, None)]],
    "local key id beats the name": [[("own", None, b"7"), ("other", "mykey", None)], [("key", "mykey", b"7")]],
    "empty local key id is one": [[("own", None, b""), ("other", None, b"01")], [("key", "mykey", b"")]],
    "a key's 01": [[("key", "mykey", None)], [("own", None, None), ("other", None, None)]],
    "01 for the first bag of a safe only": [[("key", "mykey", None)], [("other", None, None), ("own", None, None)]],
}


@pytest.mark.parametrize("layout", KEY_LAYOUTS)
def test_a_private_keys_certificate_is_the_one_keytool_finds(pki, tmp_path, layout):
    """Which certificate bag is a private key's (and so trusted by Java, `fixed_anchors`) is
    Java's PKCS12KeyStore's rule: keytool -list -v, reading the same file, is the oracle."""
    own, other = pki.ca("storesync P12 key's own"), pki.ca("storesync P12 other")
    values = {"own": own.der, "other": other.der, "key": own.key.private_bytes(
        Encoding.DER, PrivateFormat.PKCS8, BestAvailableEncryption(b"changeit"))}
    safes = [_tlv(0x30, _oid("1.2.840.113549.1.7.1"), _tlv(0xA0, _tlv(0x04, _tlv(0x30, *(
        _bag("key" if what == "key" else "cert", values[what], name, key_id) for what, name, key_id in bags)))))
        for bags in KEY_LAYOUTS[layout]]
    store = tmp_path / "key.p12"  # no MAC: Java reads it so, and so does storesync
    store.write_bytes(_tlv(0x30, _tlv(0x02, b"\x03"), _tlv(0x30, _oid("1.2.840.113549.1.7.1"),
                                                         _tlv(0xA0, _tlv(0x04, _tlv(0x30, *safes))))))
    listed = keytool("-list", "-v", "-keystore", store, "-storepass", "changeit").stdout.decode()
    (block,) = [b for b in listed.split("Alias name: ")[1:] if "PrivateKeyEntry" in b]
    found = re.search(r"Certificate\[1\]:.*?SHA256: ([0-9A-F:]+)", block, re.S)
    reader = open_store(f"p12:{store}")
    assert reader.read() == TrustSet()
    assert list(reader.fixed_anchors) == ([found.group(1).replace(":", "").lower()] if found else [])
    expected = {"no certificate": None, "no names": None, "01 for the first bag of a safe only": other}.get(layout, own)
    assert list(reader.fixed_anchors) == ([sha(expected)] if expected else [])  # the layouts do differ
    if expected is None:
        assert any("has no certificate in the file" in w for w in reader.warnings)


@pytest.mark.parametrize(
    "options, expect",
    [
        (("-J-Dkeystore.pkcs12.certProtectionAlgorithm=PBEWithSHA1AndRC2_40",
          "-J-Dkeystore.pkcs12.macAlgorithm=HmacPBESHA1"), "pbeWithSHA1And40BitRC2-CBC"),  # as JDK 8 wrote
        (("-J-Dkeystore.pkcs12.certProtectionAlgorithm=PBEWithSHA1AndDESede",), "pbeWithSHA1And3-KeyTripleDES-CBC"),
        (("-J-Dkeystore.pkcs12.certProtectionAlgorithm=PBEWithHmacSHA512AndAES_128",
          "-J-Dkeystore.pkcs12.macAlgorithm=HmacPBESHA512"), "AES-128-CBC"),
    ],
)
def test_older_and_other_protection_algorithms_are_read(cas, tmp_path, options, expect):
    made = keytool_store(tmp_path, "old.p12", cas[0], cas[1], extra=options)
    info = run(need("openssl"), "pkcs12", "-in", made, "-passin", "pass:changeit", "-info", "-nokeys", "-legacy")
    assert expect in info.stderr.decode()
    assert set(open_store(str(made)).read()) == {sha(cas[0]), sha(cas[1])}
    sync(str(made), trust_set(cas[1], cas[2]))  # rewritten with AES-256, the file's MAC digest kept
    assert sorted(keytool_list(made).values()) == sorted(("trustedCertEntry", sha(c)) for c in cas[1:])


def test_certificates_without_java_trust_are_reported_not_counted(cas, tmp_path):
    pem = tmp_path / "c.pem"
    pem.write_bytes(cas[0].pem + cas[1].pem)
    made = tmp_path / "openssl.p12"
    run(need("openssl"), "pkcs12", "-export", "-legacy", "-nokeys", "-in", pem, "-out", made, "-passout", "pass:changeit")
    store = open_store(str(made))
    assert len(store.read()) == 0
    assert sum("no Java trust attribute" in w for w in store.warnings) == 2
    assert keytool_list(made) == {}  # Java agrees: no entry at all
    # a sync adds Java anchors beside them and keeps the untrusted bags
    sync(str(made), trust_set(cas[2]))
    assert anchors_of(made) == {sha(cas[2])}
    assert len([b for b in load_pfx(made.read_bytes(), "changeit", False).bags if not b.java_trusted]) == 2


def test_other_password_from_password_file(cas, tmp_path):
    store = keytool_store(tmp_path, "secret.p12", cas[0], password="s3cret pass")
    with pytest.raises(StoreError, match="password is wrong.*password-file"):
        open_store(str(store)).read()
    secret = tmp_path / "pw"
    secret.write_text("s3cret pass\n")
    spec = f"{store}?password-file={secret}"
    assert set(open_store(spec).read()) == {sha(cas[0])}
    sync(spec, trust_set(cas[0], cas[1]))
    assert len(keytool_list(store, password="s3cret pass")) == 2


# --- reading and writing as a stream --------------------------------------------------------


def _ber_authsafe(data: bytes, piece: int = 100) -> bytes:
    """The PFX with its authSafe's octets in BER chunks (a constructed OCTET STRING, as some old
    tools wrote): the MAC, over the octets themselves, still holds."""
    version, auth_safe, *rest = der.read_all(data).children()
    oid, explicit = auth_safe.children()
    value = next(explicit.children()).value
    chunks = b"".join(der.octets(value[n : n + piece]) for n in range(0, len(value), piece))
    return der.seq(version.raw, der.seq(oid.raw, der.explicit0(der.encode(0x24, chunks))), *(r.raw for r in rest))


def _ber_safe(data: bytes, piece: int = 100) -> bytes:
    """A password-less PFX with its first safe's content in BER chunks (no MAC to keep)."""
    version, auth_safe = der.read_all(data).children()
    oid, explicit = auth_safe.children()
    first, *others = der.read_all(next(explicit.children()).value).children()
    kind, content = first.children()
    value = next(content.children()).value
    chunks = b"".join(der.octets(value[n : n + piece]) for n in range(0, len(value), piece))
    safes = der.seq(der.seq(kind.raw, der.explicit0(der.encode(0x24, chunks))), *(o.raw for o in others))
    return der.seq(version.raw, der.seq(oid.raw, der.explicit0(der.octets(safes))))


@pytest.fixture(scope="module")
def shapes(cas, tmp_path_factory) -> dict[str, tuple[bytes, str]]:
    """name -> (a PKCS#12 file's bytes, what its spec ends with)."""
    tmp = tmp_path_factory.mktemp("shapes")
    with_key = keytool_store(tmp, "key.p12", cas[0], cas[1])
    keytool("-genkeypair", "-alias", "server", "-keyalg", "EC", "-dname", "CN=server.test", "-keystore", with_key,
            "-storepass", "changeit")
    rc2 = keytool_store(tmp, "rc2.p12", cas[0], extra=("-J-Dkeystore.pkcs12.certProtectionAlgorithm=PBEWithSHA1AndRC2_40",
                                                        "-J-Dkeystore.pkcs12.macAlgorithm=HmacPBESHA1"))
    plain = keytool_store(tmp, "plain.p12", cas[0], cas[1], extra=NO_PASSWORD).read_bytes()
    cas[2].write(tmp / "ca.pem")
    made = tmp / "openssl.p12"
    run(need("openssl"), "pkcs12", "-export", "-nokeys", "-in", tmp / "ca.pem", "-out", made, "-passout", "pass:changeit")
    keyed = with_key.read_bytes()
    salt = list(list(der.read_all(keyed).children())[2].children())[1]
    tampered = bytearray(keyed)
    tampered[salt.content] ^= 1
    (tmp / "wrong").write_text("wrong\n")
    cert_bag = der.encode_oid(p12.BAG_CERT)
    return {
        "keytool": (keyed, ""), "keytool-rc2": (rc2.read_bytes(), ""), "password-less": (plain, ""),
        "openssl": (made.read_bytes(), ""),
        "cryptography": (pkcs12.serialize_java_truststore([pkcs12.PKCS12Certificate(cas[1].cert, b"one")],
                                                          BestAvailableEncryption(b"changeit")), ""),
        "ber-authsafe": (_ber_authsafe(keyed), ""), "ber-safe": (_ber_safe(plain), ""),
        "wrong password": (keyed, f"?password-file={tmp / 'wrong'}"), "tampered": (bytes(tampered), ""),
        "truncated": (keyed[:-7], ""), "indefinite": (b"\x30\x80" + keyed[2 + (keyed[1] & 0x7F):] + b"\0\0", ""),
        "damaged bag": (plain.replace(cert_bag, b"\x07" + cert_bag[1:], 1), ""),
    }


STREAMED = {"keytool", "keytool-rc2", "password-less", "openssl", "cryptography", "ber-safe"}


def _outcome(spec: str):
    store = open_store(spec)
    try:
        found = store.read()
    except StoreError as exc:
        return str(exc)
    return sorted((sha, entry.label) for sha, entry in found.items()), store.warnings


@pytest.mark.parametrize("shape", ["keytool", "keytool-rc2", "password-less", "openssl", "cryptography", "ber-authsafe",
                                   "ber-safe", "wrong password", "tampered", "truncated", "indefinite", "damaged bag"])
def test_a_streamed_read_says_what_the_whole_read_says(shapes, shape, tmp_path, monkeypatch):
    """The common shape is read as a stream (a safe of another shape, such as RC2 or BER chunks,
    whole on its own); another shape (BER chunks around all the safes, indefinite lengths), or
    any fault, is read whole, as before: the same entries, warnings and errors either way."""
    data, suffix = shapes[shape]
    path = tmp_path / "store.p12"
    path.write_bytes(data)
    whole_reads = []
    load = P12Store._load
    monkeypatch.setattr(P12Store, "_load", lambda self, *args: whole_reads.append(1) or load(self, *args))
    streamed = _outcome(f"p12:{path}{suffix}")
    assert bool(whole_reads) == (shape not in STREAMED)

    def unstreamed(*args, **kwargs):
        raise p12._Unstreamed("read whole for the comparison")

    monkeypatch.setattr(p12, "_Source", unstreamed)
    assert streamed == _outcome(f"p12:{path}{suffix}")
    assert isinstance(streamed, tuple) == (shape in STREAMED or shape == "ber-authsafe"), streamed
    if shape in STREAMED or shape == "ber-authsafe":
        assert streamed[0] or streamed[1]  # anchors, or warnings about what is not one


def test_a_store_rewritten_between_its_mac_check_and_its_read_is_not_believed(cas, tmp_path, monkeypatch):
    """The file is read twice: once for the MAC, then for the bags, the MAC computed again on the
    way. Rewritten in place in between (by someone without the password: here the old MAC
    kept, around safes that trust one more certificate), nothing read is believed, and no
    write makes a file whose MAC would vouch for the forged certificate."""
    path, other = tmp_path / "s.p12", tmp_path / "other.p12"
    sync(str(path), trust_set(cas[0]))
    sync(f"p12:{other}?protect=no", trust_set(cas[0], cas[2]))
    genuine = path.read_bytes()
    version, _, mac_data = der.read_all(genuine).children()
    forged = der.seq(version.raw, list(der.read_all(other.read_bytes()).children())[1].raw, mac_data.raw)
    checked = p12._mac_checked

    def then_rewritten(*args):
        result = checked(*args)
        with open(path, "r+b") as file:  # in place: the file storesync has open reads the new bytes
            file.write(forged)
            file.truncate()
        return result

    monkeypatch.setattr(p12, "_mac_checked", then_rewritten)
    with pytest.raises(StoreError, match="changed while it was read"):
        open_store(f"p12:{path}").read()

    path.write_bytes(genuine)
    monkeypatch.setattr(p12, "STREAM_FROM", 0)  # a write's passes read it again too
    store = open_store(f"p12:{path}")
    plan = make_plan(trust_set(cas[0], cas[1]), trust_set(cas[0]), store.capabilities, store="t", purpose="any")
    with pytest.raises(StoreError):
        store.write(plan)
    with pytest.raises(StoreError, match="MAC check failed"):  # nothing vouches for the forged bytes
        monkeypatch.setattr(p12, "_mac_checked", checked)
        open_store(f"p12:{path}").read()


def test_a_streamed_write_makes_the_bytes_of_one_held_whole(cas, tmp_path, monkeypatch):
    """A large store's write reads the file at each pass and makes each new bag at each; a small
    one holds them: the same bytes either way (here in pieces of 64 bytes, across every
    boundary), which keytool and OpenSSL read, the private key kept as it was."""
    held = keytool_store(tmp_path, "held.p12", cas[0], cas[1])
    keytool("-genkeypair", "-alias", "server", "-keyalg", "EC", "-dname", "CN=server.test", "-keystore", held,
            "-storepass", "changeit")
    streamed = tmp_path / "streamed.p12"
    streamed.write_bytes(held.read_bytes())
    sync(str(held), trust_set(cas[1], cas[2]))
    sync(str(tmp_path / "new-held.p12"), trust_set(*cas))
    monkeypatch.setattr(p12, "STREAM_FROM", 0)
    monkeypatch.setattr(p12, "CHUNK", 64)
    sync(str(streamed), trust_set(cas[1], cas[2]))
    sync(str(tmp_path / "new-streamed.p12"), trust_set(*cas))
    assert streamed.read_bytes() == held.read_bytes()
    assert (tmp_path / "new-streamed.p12").read_bytes() == (tmp_path / "new-held.p12").read_bytes()
    listed = keytool_list(streamed)
    assert listed.pop("server")[0] == "PrivateKeyEntry"
    assert sorted(listed.values()) == sorted(("trustedCertEntry", sha(c)) for c in cas[1:])
    info = run(need("openssl"), "pkcs12", "-in", tmp_path / "new-streamed.p12", "-passin", "pass:changeit", "-info",
               "-nokeys")
    assert info.stdout.count(b"BEGIN CERTIFICATE") == 3 and b"MAC: sha256" in info.stderr


def test_a_store_given_as_a_pipe_is_read_once_whole(cas, tmp_path):
    """A pipe (`p12:<(cat store.p12)`: /dev/fd/N) cannot be read twice, as a stream is: it is read once."""
    import os
    import threading

    path = keytool_store(tmp_path, "s.p12", cas[0], cas[1])
    read, write = os.pipe()
    writer = threading.Thread(target=lambda: (os.write(write, path.read_bytes()), os.close(write)))
    writer.start()
    try:
        assert set(open_store(f"p12:/dev/fd/{read}").read()) == {sha(cas[0]), sha(cas[1])}
    finally:
        writer.join(5)
        os.close(read)


# --- hostile input -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_p12(cas, tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("p12") / "small.p12"
    sync(str(path), trust_set(cas[0]))
    return path.read_bytes()


def _read(tmp_path: Path, data: bytes, spec_suffix: str = ""):
    path = tmp_path / "hostile.p12"
    path.write_bytes(data)
    return open_store(f"p12:{path}{spec_suffix}").read()


def test_tampered_store_is_reported_and_never_written(cas, small_p12, tmp_path):
    pfx = der.read_all(small_p12)
    mac_salt = list(list(pfx.children())[2].children())[1]
    tampered = bytearray(small_p12)
    tampered[mac_salt.content] ^= 1  # the password still opens the certificates
    path = tmp_path / "tampered.p12"
    path.write_bytes(bytes(tampered))
    store = open_store(str(path))
    with pytest.raises(StoreError, match="although the password opens the certificates: the file was tampered"):
        store.read()
    with pytest.raises(StoreError, match="tampered"):
        store.write(make_plan(trust_set(cas[2]), TrustSet(), store.capabilities, store="t"))
    assert path.read_bytes() == bytes(tampered)


def test_wrong_password_is_one_clear_sentence(small_p12, tmp_path):
    (tmp_path / "pw").write_text("nope\n")
    with pytest.raises(StoreError, match="store password is wrong"):
        _read(tmp_path, small_p12, f"?password-file={tmp_path / 'pw'}")


@pytest.mark.parametrize(
    "data, message",
    [
        (b"\x30\x05\x02\x01\x02\x30\x00", "version 2"),
        (b"\x30\x03\x02\x01\x03", "too few parts"),
        (b"\x30\x84\xff\xff\xff\xff\x02\x01\x03", "runs past the end"),
        (b"\x30\x06\x02\x01\x03\x30\x01\x00", "well-formed"),
        (b"\x30\x0f\x02\x01\x03\x30\x0a\x06\x08" + b"\x2a\x86\x48\x86\xf7\x0d\x07\x02", "well-formed|type"),
    ],
)
def test_malformed_files_are_one_clear_sentence(tmp_path, data, message):
    with pytest.raises(StoreError, match=message):
        _read(tmp_path, data)


def test_huge_iteration_counts_are_refused(small_p12, tmp_path):
    version, auth_safe, mac_data = der.read_all(small_p12).children()
    digest_info, salt, _iterations = mac_data.children()
    huge = der.encode(der.SEQUENCE, digest_info.raw + salt.raw + der.encode(der.INTEGER, b"\x7f\xff\xff\xff"))
    with pytest.raises(StoreError, match="iteration count 2147483647 is out of range"):
        _read(tmp_path, der.encode(der.SEQUENCE, version.raw + auth_safe.raw + huge))


def test_a_jks_file_is_not_read_as_pkcs12(tmp_path):
    jks = tmp_path / "a.jks"
    sync(str(jks), TrustSet())
    with pytest.raises(StoreError, match="not a well-formed PKCS#12 file"):
        _read(tmp_path, jks.read_bytes())


def test_every_truncation_fails_cleanly(small_p12, tmp_path):
    for cut in range(0, len(small_p12), 11):
        with pytest.raises(StoreError):
            _read(tmp_path, small_p12[:cut])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(position=st.integers(min_value=0), value=st.integers(min_value=0, max_value=255))
def test_corrupted_bytes_fail_cleanly(small_p12, tmp_path, position, value):
    data = bytearray(small_p12)
    data[position % len(data)] = value
    try:
        _read(tmp_path, bytes(data))
    except StoreError:
        pass


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=200))
def test_arbitrary_bytes_fail_cleanly(tmp_path, data):
    try:
        _read(tmp_path, b"\x30" + data)
    except StoreError:
        pass


def test_spec_detection(small_p12, tmp_path):
    path = tmp_path / "store.bin"
    path.write_bytes(small_p12)
    assert parse_spec(str(path)).kind == "p12"
    assert parse_spec(str(tmp_path / "new.pfx")).kind == "p12"
    big = tmp_path / "big.bin"  # over 64 KiB: the outer length takes three bytes
    sync(f"p12:{big}", open_store(f"pem:{SYSTEM_BUNDLE}").read())
    assert big.stat().st_size > 65535 and parse_spec(str(big)).kind == "p12"
    assert parse_spec(str(tmp_path / "new.p12")).kind == "p12"


def test_a_streamed_read_charges_the_mac_and_the_safes_to_one_budget(small_p12, tmp_path, monkeypatch):
    """The MAC's key derivation and the safes' are one file's work, read as a stream as read
    whole: a budget above each (10 000 iterations) but below both is refused either way."""
    from storesync import pbe

    path = tmp_path / "s.p12"
    path.write_bytes(small_p12)
    monkeypatch.setattr(pbe, "FILE_KDF_BUDGET", 15_000)
    monkeypatch.setattr(p12, "FILE_KDF_BUDGET", 15_000, raising=False)
    def whole(*args, **kwargs):
        raise p12._Unstreamed("read whole")

    for streamed in (True, False):
        if not streamed:
            monkeypatch.setattr(p12, "_Source", whole)
        with pytest.raises(StoreError, match="more key-derivation work"):
            open_store(f"p12:{path}").read()


def test_key_derivation_work_is_bounded_per_file(small_p12, tmp_path, monkeypatch):
    """Many safes of many iterations each, every one within the per-call cap, are still refused:
    the whole file has a budget (here shrunk below what this small file needs)."""
    from storesync import pbe

    path = tmp_path / "s.p12"
    path.write_bytes(small_p12)
    assert len(open_store(f"p12:{path}").read()) >= 1
    monkeypatch.setattr(pbe, "FILE_KDF_BUDGET", 10)
    with pytest.raises(StoreError, match="more key-derivation work"):
        open_store(f"p12:{path}").read()


def test_a_new_file_is_read_back_once_from_disk_and_a_wrong_one_rolled_back(cas, tmp_path, monkeypatch):
    """Issue 18: a new p12 has nothing of another program's to keep, so the write does not read its
    bytes back as it makes them; the engine's read-back from disk still catches a wrong file (one
    that holds another certificate, its MAC right) and removes it. A rewrite still reads back as
    it writes, before it may replace the file."""
    from storesync.config import Profile, StoreRef
    from storesync.engine import run as engine

    monkeypatch.setenv("STORESYNC_STATE_DIR", str(tmp_path / "state"))
    source, target = tmp_path / "roots.pem", tmp_path / "new.p12"
    source.write_bytes(b"".join(c.pem for c in cas[:2]))
    decrypted = []
    real_decrypting = p12.decrypting
    monkeypatch.setattr(p12, "decrypting", lambda *a, **k: decrypted.append(1) or real_decrypting(*a, **k))
    profile = lambda: Profile("cli", "mirror", [StoreRef(f"pem:{source}"), StoreRef(f"p12:{target}")])  # noqa: E731
    result = engine.run(profile())
    assert not result.error and anchors_of(target) == {sha(c) for c in cas[:2]}
    assert len(decrypted) == 1  # the engine's read-back; before, the write's own as well

    source.write_bytes(b"".join(c.pem for c in cas))
    decrypted.clear()
    assert not engine.run(profile()).error
    assert len(decrypted) >= 2  # a rewrite: the old file's safe read, what replaces it read back, then from disk

    target.unlink()
    monkeypatch.setattr(p12, "java_trusted_cert_bag", lambda der_bytes, alias: java_trusted_cert_bag(cas[0].der, alias))
    result = engine.run(profile())
    assert "reading it back does not give the planned set" in (result.error or "")
    assert not target.exists()  # put back as it was: absent


def _as_read(bag):
    return (bag.raw, bag.bag_id, bag.cert,
            {oid: [(v.tag, bytes(v.value)) for v in values] for oid, values in bag.attributes.items()})


def test_a_trusted_bag_read_by_offsets_is_the_bag_read_element_by_element(cas):
    """`_trusted_cert_bag` reads keytool's and storesync's layout of a trusted certificate by
    offsets: for our bags, and for every one-byte change or cut of one, it reads nothing (the
    whole walk reads it) or exactly what the whole walk reads."""
    from storesync.stores import p12

    def generic(data):
        real = p12._trusted_cert_bag
        p12._trusted_cert_bag = lambda tlv: None
        try:
            return _as_read(p12._bag(der.read_all(data)))
        except (p12.P12Error, der.DERError, ValueError, IndexError):
            return "refused"
        finally:
            p12._trusted_cert_bag = real

    bags = [java_trusted_cert_bag(cas[0].der, alias) for alias in ("imported 0", "Főtanúsítvány", "", "x" * 200)]
    for bag in bags:
        assert _as_read(p12._trusted_cert_bag(der.read_all(bag))) == generic(bag)
    bag = bags[1]
    tried = fast = 0
    for at in range(len(bag)):
        for changed in (bag[:at] + bytes([bag[at] ^ 0x01]) + bag[at + 1:], bag[:at] + bytes([bag[at] ^ 0x80]) + bag[at + 1:],
                        bag[:at]):
            try:
                tlv = der.read_all(changed)
            except der.DERError:
                continue
            tried += 1
            read = p12._trusted_cert_bag(tlv)
            if read is not None:
                fast += 1
                assert _as_read(read) == generic(changed), at
    assert tried > 900 and fast > 300, (tried, fast)  # the certificate's own bytes change freely


def test_a_java_trust_store_bag_is_read_in_nine_element_reads(cas, monkeypatch):
    """The bags of a Java trust store are all laid out as keytool writes them: read by offsets,
    9 element reads each, where the walk element by element took 21 and a list at each level."""
    from storesync.stores import p12

    bag = der.read_all(java_trusted_cert_bag(cas[0].der, "counted"))
    reads = []
    real = der.read
    monkeypatch.setattr(der, "read", lambda *args: (reads.append(args), real(*args))[1])
    read = p12._bag(bag)
    assert read.java_trusted and read.cert == cas[0].der and read.alias == "counted"
    assert len(reads) == 9


@pytest.mark.parametrize("names", [(b"corp", b"corp"), (b"corp", b"CORP"), (None, b"1"), (b"1", None), (b"Corp Root",)])
def test_colliding_aliases_are_read_as_java_reads_them(cas, tmp_path, names):
    """Java files each trusted bag under its friendlyName lower-cased ("1", "2", ... without one)
    and keeps the last bag of an alias: a bag it hides is not an anchor. A rewrite leaves Java
    trusting what was planned (a hidden bag is not uncovered by removing the last)."""
    path = tmp_path / "collide.p12"
    certs = [pkcs12.PKCS12Certificate(cas[n].cert, name) for n, name in enumerate(names)]
    path.write_bytes(pkcs12.serialize_java_truststore(certs, BestAvailableEncryption(b"changeit")))
    store = open_store(f"p12:{path}")
    read = store.read()
    assert {e.sha256 for e in read.values()} == java_anchors(tmp_path, path, "PKCS12")
    assert len(read) == 1
    if len(names) == 2:
        assert any(repr((names[0] or b"1").decode()) in w for w in store.warnings)
    added = Entry(Certificate(cas[2].der))
    sync(f"p12:{path}", TrustSet([added]))
    assert java_anchors(tmp_path, path, "PKCS12") == {added.sha256}
    assert {e.sha256 for e in open_store(f"p12:{path}").read().values()} == {added.sha256}
