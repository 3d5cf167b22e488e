"""The `p7b` store: PKCS#7 bundles as Windows writes them, checked with OpenSSL."""

from __future__ import annotations

import base64

import pytest

from storesync import der
from storesync.engine.plan import make_plan
from storesync.model import DISTRUST, EMAIL, SERVER_AUTH, TRUSTED, Certificate, Entry, StoreError, TrustSet
from storesync.stores import open_store
from storesync.stores.p7b import bundle, certificates_of

from conftest import VECTORS, need, run, vectors, with_serial


def write_via(spec: str, source: TrustSet, purpose: str = "any"):
    store = open_store(spec)
    plan = make_plan(source, store.read(), store.capabilities, store=spec, purpose=purpose)
    store.write(plan)
    return plan


def openssl_certs(path, inform: str = "DER") -> list[bytes]:
    out = run(need("openssl"), "pkcs7", "-print_certs", "-inform", inform, "-in", path).stdout
    blocks = out.split(b"-----BEGIN CERTIFICATE-----")[1:]
    return [base64.b64decode(b"".join(b.split(b"-----END CERTIFICATE-----")[0].split())) for b in blocks]


@vectors
def test_windows_bundle(tmp_path):
    path = VECTORS / "windows" / "three-certs.p7b"
    data = path.read_bytes()
    read = open_store(f"p7b:{path}").read()
    assert len(read) == 3
    assert [e.cert.der for e in read.values()] == openssl_certs(path)  # leaf, root, intermediate: file order
    assert bundle([e.cert.der for e in read.values()]) == data  # Windows' layout, no [1]
    copy = tmp_path / "copy.p7b"
    write_via(f"p7b:{copy}", read)
    assert copy.read_bytes() == data


def test_written_bundle_is_read_by_openssl(tmp_path, pki, root, intermediate, server_leaf):
    odd = with_serial(pki.leaf("zero.test", root), root, b"\x00")  # serial 0: kept as its bytes
    source = TrustSet([Entry(Certificate(x)) for x in (root.der, intermediate.der, odd)])
    path = tmp_path / "out.p7b"
    write_via(f"p7b:{path}", source)
    assert openssl_certs(path) == [root.der, intermediate.der, odd]
    signed = list(next(list(der.read_all(path.read_bytes()).children())[1].children()).children())
    assert [f.tag for f in signed] == [der.INTEGER, der.SET, der.SEQUENCE, 0xA0, der.SET]  # no [1] CRLs
    pem_path = tmp_path / "out-pem.p7b"
    write_via(f"p7b:{pem_path}?format=pem", source)
    assert pem_path.read_bytes().startswith(b"-----BEGIN PKCS7-----\n")
    assert openssl_certs(pem_path, "PEM") == [root.der, intermediate.der, odd]
    assert [e.cert.der for e in open_store(f"p7b:{pem_path}").read().values()] == [root.der, intermediate.der, odd]


def test_reads_what_openssl_writes(tmp_path, root, intermediate):
    (tmp_path / "certs.pem").write_bytes(root.pem + intermediate.pem)
    for form in ("DER", "PEM"):
        out = tmp_path / f"openssl-{form}.p7b"
        run(need("openssl"), "crl2pkcs7", "-nocrl", "-certfile", tmp_path / "certs.pem", "-outform", form, "-out", out)
        assert [e.cert.der for e in open_store(f"p7b:{out}").read().values()] == [root.der, intermediate.der]
        before = out.read_bytes()  # OpenSSL's own layout (with its empty [1]) is kept when nothing changes
        write_via(f"p7b:{out}", open_store(f"p7b:{out}").read())
        assert out.read_bytes() == before


def test_the_plan_says_what_a_bundle_cannot_keep(tmp_path, pki):
    a, b, c = (Certificate(pki.ca(f"P7B {n}").der) for n in range(3))
    source = TrustSet([
        Entry(a, label="Labelled"),
        Entry(b, trust={EMAIL: TRUSTED}),
        Entry(c, trust=dict(DISTRUST)),
    ])
    path = tmp_path / "x.p7b"
    plan = write_via(f"p7b:{path}", source, purpose=SERVER_AUTH)
    assert [e.cert for e in open_store(f"p7b:{path}").read().values()] == [a]
    lost = {loss.entry.sha256: loss.what for loss in plan.losses}
    assert "distrusted" in lost[c.sha256] and "email" in lost[b.sha256]


@pytest.mark.parametrize(
    "data, what",
    [
        (b"\x30\x03\x02\x01\x01", "not a PKCS#7"),
        (b"-----BEGIN PKCS7-----\n!!!!\n-----END PKCS7-----\n", "base64"),
        (b"-----BEGIN PKCS7-----\nMIIB\n", "no END"),
        (b"\x30\x84\xff\xff\xff\xff\x06\x09", "not a PKCS#7"),
        (b"garbage that is no bundle", "not a PKCS#7"),
    ],
)
def test_hostile_input(tmp_path, root, data, what):
    path = tmp_path / "bad.p7b"
    path.write_bytes(data)
    with pytest.raises(StoreError, match=what) as caught:
        open_store(f"p7b:{path}").read()
    assert str(path) in str(caught.value)


def test_truncated_bundle_is_refused_and_nothing_written(tmp_path, root, intermediate):
    good = bundle([root.der, intermediate.der])
    bad = tmp_path / "cut.p7b"
    bad.write_bytes(good[:-100])
    target = tmp_path / "target.p7b"
    with pytest.raises(StoreError):
        write_via(f"p7b:{target}", open_store(f"p7b:{bad}").read())
    assert not target.exists()
    assert certificates_of(good) == [root.der, intermediate.der]


def test_ber_bundle_with_indefinite_lengths(tmp_path, root, intermediate):
    """Some tools write BER; cryptography reads it, and DER certificates inside come out the same."""
    def indefinite(tag: int, content: bytes) -> bytes:
        return bytes([tag, 0x80]) + content + b"\x00\x00"

    signed = indefinite(0x30, der.encode(der.INTEGER, b"\x01") + der.encode(der.SET, b"")
                        + der.encode(der.SEQUENCE, der.encode_oid("1.2.840.113549.1.7.1"))
                        + indefinite(0xA0, root.der + intermediate.der) + der.encode(der.SET, b""))
    path = tmp_path / "ber.p7b"
    path.write_bytes(indefinite(0x30, der.encode_oid("1.2.840.113549.1.7.2") + indefinite(0xA0, signed)))
    store = open_store(f"p7b:{path}")
    assert [e.cert.der for e in store.read().values()] == [root.der, intermediate.der]
    assert any("not DER" in w for w in store.warnings)


def test_empty_signed_data_is_an_error_not_a_traceback(tmp_path):
    empty = tmp_path / "e.p7b"
    empty.write_bytes(b"\x30\x0d\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x07\x02\xa0\x00")
    with pytest.raises(StoreError, match="no SignedData"):
        open_store(f"p7b:{empty}").read()
