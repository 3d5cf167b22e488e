"""Mozilla certdata.txt: the real files of NSS 3.87 and 3.53, and files generated here."""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import VECTORS, vectors
from storesync.engine.plan import make_plan
from storesync.model import Certificate, StoreError, TrustSet
from storesync.stores import open_store, parse_spec
from storesync.stores.certdata import CertdataStore

UTC = dt.timezone.utc


def octal(data: bytes) -> str:
    lines = ["".join(f"\\{b:03o}" for b in data[i : i + 16]) for i in range(0, len(data), 16)]
    return "\n".join(lines) + "\nEND"


def cert_object(der: bytes, label: str, *, server_after=None, email_after=None, comment=False) -> str:
    fields = Certificate(der).fields
    lines = [
        f'# Certificate "{label}"',
        "CKA_CLASS CK_OBJECT_CLASS CKO_CERTIFICATE",
        "CKA_TOKEN CK_BBOOL CK_TRUE",
        "CKA_PRIVATE CK_BBOOL CK_FALSE",
        "CKA_MODIFIABLE CK_BBOOL CK_FALSE",
        f'CKA_LABEL UTF8 "{label}"',
        "CKA_CERTIFICATE_TYPE CK_CERTIFICATE_TYPE CKC_X_509",
        f"CKA_SUBJECT MULTILINE_OCTAL\n{octal(fields.subject)}",
        'CKA_ID UTF8 "0"',
    ]
    if comment:
        lines.append("# a comment inside the object")
    lines += [
        f"CKA_ISSUER MULTILINE_OCTAL\n{octal(fields.issuer)}",
        f"CKA_SERIAL_NUMBER MULTILINE_OCTAL\n{octal(fields.serial)}",
        f"CKA_VALUE MULTILINE_OCTAL\n{octal(der)}",
        "CKA_NSS_MOZILLA_CA_POLICY CK_BBOOL CK_TRUE",
    ]
    for name, when in (("SERVER", server_after), ("EMAIL", email_after)):
        if when is None:
            lines.append(f"CKA_NSS_{name}_DISTRUST_AFTER CK_BBOOL CK_FALSE")
        else:
            lines.append(f"CKA_NSS_{name}_DISTRUST_AFTER MULTILINE_OCTAL\n{octal(when.encode())}")
    return "\n".join(lines) + "\n"


def trust_object(issuer: bytes, serial: bytes, label: str, server: str, email: str, code: str, *,
                 der: bytes | None = None, server_after: str | None = None, pkcs11: bool = False) -> str:
    cls, prefix = ("CKO_TRUST", "CKT_") if pkcs11 else ("CKO_NSS_TRUST", "CKT_NSS_")
    lines = [
        f'# Trust for "{label}"',
        f"CKA_CLASS CK_OBJECT_CLASS {cls}",
        "CKA_TOKEN CK_BBOOL CK_TRUE",
        "# comment between attributes",
        f'CKA_LABEL UTF8 "{label}"',
    ]
    if der is not None:
        lines.append(f"CKA_CERT_SHA1_HASH MULTILINE_OCTAL\n{octal(hashlib.sha1(der).digest())}")
    lines += [
        f"CKA_ISSUER MULTILINE_OCTAL\n{octal(issuer)}",
        f"CKA_SERIAL_NUMBER MULTILINE_OCTAL\n{octal(serial)}",
        f"CKA_TRUST_SERVER_AUTH CK_TRUST {prefix}{server}",
        f"CKA_TRUST_EMAIL_PROTECTION CK_TRUST {prefix}{email}",
        f"CKA_TRUST_CODE_SIGNING CK_TRUST {prefix}{code}",
        "CKA_TRUST_STEP_UP_APPROVED CK_BBOOL CK_FALSE",
    ]
    if server_after:
        lines.append(f"CKA_NSS_SERVER_DISTRUST_AFTER MULTILINE_OCTAL\n{octal(server_after.encode())}")
    return "\n".join(lines) + "\n"


HEADER = "#\n# generated certdata.txt\n#\nCVS_ID \"@(#) $RCSfile$\"\n\nBEGINDATA\n" \
         "CKA_CLASS CK_OBJECT_CLASS CKO_NSS_BUILTIN_ROOT_LIST\nCKA_TOKEN CK_BBOOL CK_TRUE\n" \
         'CKA_LABEL UTF8 "Mozilla Builtin Roots"\n\n'


@pytest.fixture
def generated(tmp_path, pki):
    a, b, c, d, e = (pki.ca(f"Certdata CA {n}") for n in "abcde")
    gone = pki.ca("Certdata Gone CA")  # only its distrust record is in the file
    fa, fb, fc, fd, fe, fg = (Certificate(x.der).fields for x in (a, b, c, d, e, gone))
    objects = [
        cert_object(a.der, "Same Label", comment=True),
        trust_object(fa.issuer, fa.serial, "Same Label", "TRUSTED_DELEGATOR", "TRUSTED_DELEGATOR", "MUST_VERIFY_TRUST",
                     der=a.der),
        # the trust object before its certificate, and a distrust-after date on the trust object
        trust_object(fb.issuer, fb.serial, "Same Label", "TRUSTED_DELEGATOR", "MUST_VERIFY_TRUST", "MUST_VERIFY_TRUST",
                     der=b.der, server_after="241130235959Z"),
        cert_object(b.der, "Same Label"),
        cert_object(c.der, "Distrusted C", email_after="200101000000Z", server_after="191231235959Z"),
        trust_object(fc.issuer, fc.serial, "Distrusted C", "NOT_TRUSTED", "NOT_TRUSTED", "NOT_TRUSTED", der=c.der),
        cert_object(d.der, "PKCS11 D"),
        trust_object(fd.issuer, fd.serial, "PKCS11 D", "TRUST_ANCHOR", "TRUSTED", "TRUST_MUST_VERIFY_TRUST",
                     der=d.der, pkcs11=True),
        cert_object(e.der, "No Trust E"),
        trust_object(fg.issuer, fg.serial, "Distrust: Gone", "NOT_TRUSTED", "NOT_TRUSTED", "NOT_TRUSTED"),
    ]
    path = tmp_path / "certdata.txt"
    path.write_text(HEADER + "\n".join(objects))
    return path, dict(a=a, b=b, c=c, d=d, e=e, gone=gone)


def sha(issued) -> str:
    return Certificate(issued.der).sha256


def test_generated_file_every_field(generated):
    path, cas = generated
    store = open_store(str(path))  # detected by content
    assert isinstance(store, CertdataStore)
    ts = store.read()
    assert len(ts) == 5
    a, b, c, d, e = (ts[sha(cas[k])] for k in "abcde")
    assert dict(a.trust) == {"server-auth": "trusted", "email": "trusted"}
    assert a.label == b.label == "Same Label"  # duplicate labels, paired by issuer+serial
    assert dict(b.trust) == {"server-auth": "trusted"}
    assert dict(b.distrust_after) == {"server-auth": dt.datetime(2024, 11, 30, 23, 59, 59, tzinfo=UTC)}
    assert dict(c.trust) == {"server-auth": "distrusted", "email": "distrusted", "code-signing": "distrusted"}
    assert dict(c.distrust_after) == {
        "server-auth": dt.datetime(2019, 12, 31, 23, 59, 59, tzinfo=UTC),
        "email": dt.datetime(2020, 1, 1, tzinfo=UTC),
    }
    assert dict(d.trust) == {"server-auth": "trusted"}  # CKO_TRUST spelling; CKT_TRUSTED on a CA: a peer, no anchor
    assert d.extras["nss"]["letters"] == {"server-auth": "C", "email": "P"}
    assert dict(e.trust) == {}
    assert any("No Trust E" in w and "no trust object" in w for w in store.warnings)
    assert a.extras["certdata"]["mozilla_ca_policy"] == "CK_TRUE"
    [record] = store.distrust_records
    fields = Certificate(cas["gone"].der).fields
    assert (record.issuer, record.serial, record.label) == (fields.issuer, fields.serial, "Distrust: Gone")
    assert record.trust == {"server-auth": "distrusted", "email": "distrusted", "code-signing": "distrusted"}
    assert sha(cas["gone"]) not in ts
    assert any("Distrust: Gone" in w and "no certificate" in w for w in store.warnings)


def test_read_only(generated):
    path, _ = generated
    store = open_store(f"certdata:{path}")
    assert not store.capabilities.writable
    before = path.read_bytes()
    with pytest.raises(StoreError, match="read-only"):
        store.write(make_plan(TrustSet(), store.read(), store.capabilities, store="x"))
    assert path.read_bytes() == before


def test_certdata_into_nss_keeps_letters(generated, tmp_path):
    """certdata -> nss: anchors, distrust and the trusted-peer letter arrive; distrust-after dates do
    not (NSS would not apply them to a database's root), so a root whose one trusted purpose is past
    its date is not trusted there."""
    from test_nss import certutil_flags, new_db, read, sync

    path, cas = generated
    source = open_store(f"certdata:{path}").read()
    db = new_db(tmp_path / "db")
    sync(source.values(), db)
    flags = certutil_flags(db)
    assert flags["Same Label"] == "C,C," and "Same Label #2" not in flags  # B: server-auth only, past its date
    assert flags["Distrusted C"] == "p,p,p"
    assert flags["PKCS11 D"] == "C,,"  # CKT_TRUSTED (P) on a CA: a peer, not an anchor: not synced
    assert "No Trust E" not in flags
    back, _ = read(db)
    assert back[sha(cas["c"])].distrusted and not back[sha(cas["c"])].distrust_after


@pytest.mark.parametrize(
    "text, message",
    [
        ("no data here\n", "BEGINDATA"),
        ("BEGINDATA\nCKA_LABEL UTF8 \"x\"\n", "outside an object"),
        ("BEGINDATA\nCKA_CLASS CK_OBJECT_CLASS CKO_CERTIFICATE\nCKA_VALUE MULTILINE_OCTAL\n\\060\\003\n", "no END"),
        ("BEGINDATA\nCKA_CLASS CK_OBJECT_CLASS CKO_CERTIFICATE\nCKA_VALUE MULTILINE_OCTAL\nhello\nEND\n", "octal"),
        ("BEGINDATA\nCKA_CLASS CK_OBJECT_CLASS CKO_CERTIFICATE\nCKA_VALUE MULTILINE_OCTAL\n\\060\\003\nEND\n",
         "not a certificate"),
        ("BEGINDATA\nCKA_CLASS CK_OBJECT_CLASS CKO_NSS_TRUST\nCKA_LABEL UTF8 \"x\"\n", "CKA_ISSUER"),
        ("BEGINDATA\nCKA_CLASS CK_OBJECT_CLASS CKO_CERTIFICATE\nCKA_LABEL UTF8 unquoted\n", "quoted"),
        ("BEGINDATA\nCKA_CLASS\n", "ATTRIBUTE TYPE"),
    ],
)
def test_hostile_input_clear_errors(tmp_path, text, message):
    path = tmp_path / "certdata.txt"
    path.write_text(text)
    with pytest.raises(StoreError, match=message):
        CertdataStore(parse_spec(f"certdata:{path}")).read()


def test_missing_and_binary(tmp_path):
    with pytest.raises(StoreError, match="does not exist"):
        CertdataStore(parse_spec(f"certdata:{tmp_path / 'nope.txt'}")).read()
    (tmp_path / "bin.txt").write_bytes(b"BEGINDATA\n\xff\xfe")
    with pytest.raises(StoreError, match="UTF-8"):
        CertdataStore(parse_spec(f"certdata:{tmp_path / 'bin.txt'}")).read()


@settings(max_examples=60, deadline=None)
@given(cut=st.floats(min_value=0.0, max_value=1.0))
def test_truncated_anywhere_is_an_error_or_a_subset(tmp_path_factory, cut, pki):
    tmp = tmp_path_factory.mktemp("cut")
    a = pki.ca("Cut CA")
    f = Certificate(a.der).fields
    text = HEADER + cert_object(a.der, "Cut") + "\n" + trust_object(f.issuer, f.serial, "Cut", "TRUSTED_DELEGATOR",
                                                                     "MUST_VERIFY_TRUST", "MUST_VERIFY_TRUST")
    path = tmp / "certdata.txt"
    path.write_text(text[: int(len(text) * cut)])
    try:
        ts = CertdataStore(parse_spec(f"certdata:{path}")).read()
    except StoreError:
        return
    assert len(ts) <= 1


@vectors
def test_nss_3_87():
    store = open_store(f"certdata:{VECTORS / 'nss' / 'certdata-3.87.txt'}")
    ts = store.read()
    assert len(ts) == 160 and store.distrust_records == []
    distrusted = [e for e in ts.values() if e.distrusted]
    assert [e.label for e in distrusted] == ["Explicitly Distrust DigiNotar Root CA"]
    assert sum(len(e.distrust_after) for e in ts.values()) == 11
    assert any("email" in e.distrust_after for e in ts.values())
    labels = [e.label for e in ts.values()]
    assert len(set(labels)) == len(labels) - 1  # one duplicated label, both certificates kept
    assert store.warnings == []


@vectors
def test_nss_3_53():
    store = open_store(f"certdata:{VECTORS / 'nss' / 'certdata-3.53.txt'}")
    ts = store.read()
    assert len(ts) == 152
    assert len(store.distrust_records) == 7
    for record in store.distrust_records:
        assert set(record.trust.values()) == {"distrusted"} and len(record.trust) == 3
    assert sum(len(e.distrust_after) for e in ts.values()) == 15
    assert all(set(e.distrust_after) <= {"server-auth"} for e in ts.values())
    assert len(store.warnings) == 7


def test_trust_object_is_tied_to_its_certificate_hash(tmp_path, pki):
    """A trust object is found by issuer and serial, which nobody signs; NSS (nssTrust_Create)
    gives it no trust unless its CKA_CERT_SHA1_HASH is the certificate's. It was paired by issuer
    and serial alone, with no warning."""
    alpha, beta = (pki.ca(f"Certdata Hash {n}") for n in ("Alpha", "Beta"))
    fa = Certificate(alpha.der).fields
    objects = [
        cert_object(alpha.der, "Alpha"),  # its trust object carries Beta's hash
        trust_object(fa.issuer, fa.serial, "Alpha", "TRUSTED_DELEGATOR", "NOT_TRUSTED", "MUST_VERIFY_TRUST",
                     der=beta.der),
    ]
    path = tmp_path / "certdata.txt"
    path.write_text(HEADER + "\n".join(objects))
    store = CertdataStore(parse_spec(f"certdata:{path}"))
    # no trust from a trust object for another certificate; its distrust still counts (never less safe)
    assert dict(store.read()[sha(alpha)].trust) == {"email": "distrusted"}
    assert any("'Alpha'" in w and "names another certificate" in w for w in store.warnings)


def test_an_attribute_given_twice_counts_by_its_first_line(tmp_path, pki):
    """An attribute given twice in one object counted by its last line, where NSS's builtins module
    (builtins_mdObject_GetAttribute) returns the first."""
    gamma = pki.ca("Certdata Twice Gamma")
    fg = Certificate(gamma.der).fields
    twice = trust_object(fg.issuer, fg.serial, "Gamma", "NOT_TRUSTED", "TRUSTED_DELEGATOR", "MUST_VERIFY_TRUST",
                         der=gamma.der)
    twice = twice.replace("CKA_TRUST_SERVER_AUTH CK_TRUST CKT_NSS_NOT_TRUSTED",
                          "CKA_TRUST_SERVER_AUTH CK_TRUST CKT_NSS_NOT_TRUSTED\n"
                          "CKA_TRUST_SERVER_AUTH CK_TRUST CKT_NSS_TRUSTED_DELEGATOR")
    path = tmp_path / "certdata.txt"
    path.write_text(HEADER + "\n".join([cert_object(gamma.der, "Gamma"), twice]))
    store = CertdataStore(parse_spec(f"certdata:{path}"))
    assert dict(store.read()[sha(gamma)].trust) == {"server-auth": "distrusted", "email": "trusted"}
    assert any("CKA_TRUST_SERVER_AUTH given again" in w for w in store.warnings)
