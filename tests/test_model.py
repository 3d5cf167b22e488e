"""The model's helpers against OpenSSL: subject hashes, lenient parsing, labels."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st
from cryptography import x509
from cryptography.x509.oid import NameOID

from storesync import der
from storesync.model import Certificate, Entry, TrustSet, DISTRUST, subject_hash, subject_hash_old, subject_hash_python
from storesync.libcrypto import name_hash
from storesync.stores import open_store

from conftest import need, run, with_serial


def openssl_hashes(der_bytes: bytes) -> tuple[str, str]:
    out = run(need("openssl"), "x509", "-inform", "DER", "-noout", "-subject_hash", "-subject_hash_old",
              input=der_bytes).stdout.decode().split()
    return out[0], out[1]


def test_hashes_of_every_system_root_match_openssl(system_bundle):
    trust_set = open_store(f"pem:{system_bundle}").read()
    assert len(trust_set) > 100
    # one openssl call for all: `openssl crl2pkcs7 | pkcs7 -print_certs` cannot print hashes, so loop
    mismatches = [
        e.display_label for e in trust_set.values()
        if openssl_hashes(e.cert.der) != (e.cert.subject_hash(), e.cert.subject_hash_old())
    ]
    assert mismatches == []


def attr(oid, value, tag=None):
    return x509.NameAttribute(oid, value, _type=tag) if tag else x509.NameAttribute(oid, value)


AWKWARD_NAMES = {
    "non-ascii": x509.Name([attr(NameOID.COMMON_NAME, "ÄÖÜ Großes CA")]),
    "mixed-case-and-spaces": x509.Name([
        attr(NameOID.COUNTRY_NAME, "DE"),
        attr(NameOID.ORGANIZATION_NAME, "  Mixed   CASE\tOrg  "),
        attr(NameOID.COMMON_NAME, "ExAmPlE  Root   CA "),
    ]),
    "bmp-string": x509.Name([attr(NameOID.COMMON_NAME, "Ünïcödé BMP CA", x509.name._ASN1Type.BMPString)]),
    "teletex-latin1": x509.Name([attr(NameOID.COMMON_NAME, "Telétex CA", x509.name._ASN1Type.T61String)]),
    "ia5-and-printable": x509.Name([
        attr(NameOID.DOMAIN_COMPONENT, "Example", x509.name._ASN1Type.IA5String),
        attr(NameOID.COMMON_NAME, "Printable CA", x509.name._ASN1Type.PrintableString),
    ]),
    "multi-valued-rdn": x509.Name([
        x509.RelativeDistinguishedName([attr(NameOID.COMMON_NAME, "Zeta"), attr(NameOID.ORGANIZATION_NAME, "Alpha")]),
    ]),
    "cyrillic-not-lowercased": x509.Name([attr(NameOID.COMMON_NAME, "КОРНЕВОЙ ЦС")]),
    "empty-value": x509.Name([attr(NameOID.ORGANIZATIONAL_UNIT_NAME, " ", x509.name._ASN1Type.UTF8String),
                              attr(NameOID.COMMON_NAME, "After Empty")]),
}


@pytest.mark.parametrize("case", sorted(AWKWARD_NAMES))
def test_awkward_name_hashes_match_openssl(pki, case):
    ca = pki.ca(AWKWARD_NAMES[case])
    cert = Certificate(ca.der)
    assert (cert.subject_hash(), cert.subject_hash_old()) == openssl_hashes(ca.der)


@pytest.mark.parametrize("case", sorted(AWKWARD_NAMES))
def test_the_python_subject_hash_matches_openssl_too(pki, case):
    """Where there is no libcrypto to ask, the hash is computed in Python: the same answer."""
    ca = pki.ca(AWKWARD_NAMES[case])
    subject = Certificate(ca.der).fields.subject
    assert name_hash(subject) is not None  # the usual path: libcrypto's own
    assert subject_hash_python(subject) == name_hash(subject) == openssl_hashes(ca.der)[0]


def test_the_python_subject_hash_of_every_system_root_is_libcryptos(system_bundle):
    for entry in open_store(f"pem:{system_bundle}").read().values():
        subject = entry.cert.fields.subject
        assert subject_hash_python(subject) == name_hash(subject), entry.display_label


def test_names_differing_only_in_case_and_spacing_share_a_hash(pki):
    a = Certificate(pki.ca(AWKWARD_NAMES["mixed-case-and-spaces"]).der)
    b = Certificate(pki.ca(x509.Name([
        attr(NameOID.COUNTRY_NAME, "de"),
        attr(NameOID.ORGANIZATION_NAME, "mixed case org"),
        attr(NameOID.COMMON_NAME, "example root ca"),
    ])).der)
    assert a.subject_hash() == b.subject_hash()
    assert a.subject_hash_old() != b.subject_hash_old()  # the old hash is of the exact bytes


@pytest.mark.parametrize("serial", [b"\x00", b"\xff\x01"], ids=["serial-0", "negative"])
def test_certificates_cryptography_warns_about_are_carried_as_bytes(pki, root, serial):
    raw = with_serial(pki.ca("Odd Serial CA", root), root, serial)
    cert = Certificate(raw)
    assert cert.der == raw  # never re-encoded
    assert (cert.subject_hash(), cert.subject_hash_old()) == openssl_hashes(raw)
    assert cert.default_label == "Odd Serial CA"
    # cryptography warns today and will refuse later: either way it is reported, never fatal
    assert cert.parse_warning


def test_unparseable_certificate_keeps_bytes_and_warns():
    # A structurally plausible certificate whose contents cryptography refuses (bad version)
    tbs = der.encode(der.SEQUENCE, der.encode(0xA0, der.encode(der.INTEGER, b"\x09")) + der.encode(der.INTEGER, b"\x01")
                     + der.encode(der.SEQUENCE, der.encode_oid("1.2.840.10045.4.3.2"))
                     + der.encode(der.SEQUENCE, b"") + der.encode(der.SEQUENCE, b"")
                     + der.encode(der.SEQUENCE, der.encode(der.SET, der.encode(der.SEQUENCE, der.encode_oid("2.5.4.3") + der.encode(0x0C, b"Broken"))))
                     + der.encode(der.SEQUENCE, b""))
    raw = der.encode(der.SEQUENCE, tbs + der.encode(der.SEQUENCE, der.encode_oid("1.2.840.10045.4.3.2")) + der.encode(0x03, b"\x00"))
    cert = Certificate(raw)
    assert cert.x509 is None
    assert "kept as bytes" in cert.parse_warning
    assert cert.default_label == "Broken"
    assert cert.subject == "CN=Broken"


def test_trust_set_keeps_first_place_and_distrust_wins(root, intermediate):
    a, b = Certificate(root.der), Certificate(intermediate.der)
    trust_set = TrustSet([Entry(a), Entry(b), Entry(a, trust=dict(DISTRUST))])
    assert list(trust_set) == [a.sha256, b.sha256]
    assert trust_set[a.sha256].distrusted


def test_subject_hash_of_empty_name():
    empty = der.encode(der.SEQUENCE, b"")
    assert subject_hash(empty) == "da39a3ee"[6:8] + "da39a3ee"[4:6] + "da39a3ee"[2:4] + "da39a3ee"[0:2]
    assert len(subject_hash_old(empty)) == 8


# Every string type a name may use, with spaces and upper case where the type allows them: OpenSSL
# folds case and spacing of some (ASN1_MASK_CANON in x_name.c) and hashes the others as they are.
T = x509.name._ASN1Type
STRING_TYPES = {
    "NumericString": (T.NumericString, "  0123  456 "),  # not canonicalised: hashed as it is
    "VisibleString": (T.VisibleString, "  Visible   CASE CA "),
    "PrintableString": (T.PrintableString, "  Printable   CASE CA "),
    "UTF8String": (T.UTF8String, "  Utf8   CASE Ä CA "),
    "BMPString": (T.BMPString, "  Bmp   CASE Ü CA "),
    "IA5String": (T.IA5String, "  Ia5   CASE CA "),
    "T61String": (T.T61String, "  T61   CASE é CA "),
    "UniversalString": (T.UniversalString, "  Universal   CASE Ω CA "),
}


def cn_tag(der_bytes: bytes) -> int:
    from storesync.model import _name_rdns

    return next(tag for rdn in _name_rdns(Certificate(der_bytes).fields.subject) for oid, tag, _ in rdn if oid == "2.5.4.3")


def openssl_loads(der_bytes: bytes) -> bool:
    return run(need("openssl"), "x509", "-inform", "DER", "-noout", input=der_bytes, check=False).returncode == 0


@pytest.mark.parametrize("kind", sorted(set(STRING_TYPES) - {"VisibleString"}))  # openssl loads none: below
def test_subject_hash_of_each_string_type_matches_openssl(pki, kind):
    """-subject_hash and -subject_hash_old as openssl computes them, for a CN of each string type
    (alone, and beside an O, so the canonical SET encoding of several RDNs is covered too)."""
    tag, value = STRING_TYPES[kind]
    for subject in (x509.Name([attr(NameOID.COMMON_NAME, value, tag)]),
                    x509.Name([attr(NameOID.ORGANIZATION_NAME, "Some  ORG"), attr(NameOID.COMMON_NAME, value, tag)])):
        ca = pki.ca(subject)
        assert cn_tag(ca.der) == tag.value
        assert openssl_loads(ca.der), f"openssl refuses a name with a {kind}"
        cert = Certificate(ca.der)
        assert (cert.subject_hash(), cert.subject_hash_old()) == openssl_hashes(ca.der), kind
        assert subject_hash_python(cert.fields.subject) == cert.subject_hash(), kind  # without libcrypto too


def test_a_visiblestring_name_hashes_as_its_printablestring_twin(pki):
    """openssl cannot be asked: OpenSSL 3 loads no certificate whose name holds a VisibleString (a
    name's values are ASN1_PRINTABLE, which leaves it out). But x_name.c's ASN1_MASK_CANON lists
    VisibleString: its value is canonicalised to UTF-8 like a PrintableString's, so the two names
    share a -subject_hash (and not an old hash, which is of the bytes)."""
    value = STRING_TYPES["VisibleString"][1]
    visible = Certificate(pki.ca(x509.Name([attr(NameOID.COMMON_NAME, value, T.VisibleString)])).der)
    assert not openssl_loads(visible.der)  # else the parametrized test above should cover it
    printable = Certificate(pki.ca(x509.Name([attr(NameOID.COMMON_NAME, value, T.PrintableString)])).der)
    assert openssl_hashes(printable.der)[0] == printable.subject_hash()
    assert visible.subject_hash() == printable.subject_hash()
    assert visible.subject_hash_old() != printable.subject_hash_old()


_STATES = st.sampled_from(["trusted", "distrusted"])
_PURPOSE_NAMES = st.sampled_from(["server-auth", "client-auth", "email", "code-signing", "1.3.6.1.5.5.7.3.9", "2.999.1"])


@settings(max_examples=300)
@given(st.dictionaries(_PURPOSE_NAMES, _STATES))
def test_what_a_plan_asks_of_an_entrys_trust_is_worked_out_once_and_right(root, trust):
    """A plan asks every entry of every store which purposes it is trusted for, and whether it
    names only the four purposes NSS can hold: worked out once per distinct trust map."""
    from storesync.model import PURPOSES

    entry = Entry(Certificate(root.der), trust=trust or None)
    said = dict(entry.trust)
    assert entry.trusted_purposes == [p for p, s in said.items() if s == "trusted"]
    assert entry.trust.named == (set(said) <= set(PURPOSES))
    assert entry.trust is Entry(Certificate(root.der), trust=dict(said) or None).trust  # one map, shared


def test_one_certificate_object_per_certificate_alive_and_none_kept_once_dead(pki):
    """Certificates are interned by SHA-256, weakly (model._CERTIFICATES, without importing
    weakref: 1 % of a one-shot run): the same bytes give the same object while one is alive, and
    the entry goes with the last reference."""
    import gc
    import subprocess
    import sys

    from storesync import model

    raw = pki.ca("Interned Root").der
    first = Certificate(raw)
    assert Certificate(bytes(raw)) is first and model._CERTIFICATES.get(first.sha256) is first
    sha = first.sha256
    del first
    gc.collect()
    assert model._CERTIFICATES.get(sha) is None and sha not in model._CERTIFICATES.refs
    again = Certificate(raw)
    assert again.sha256 == sha and model._CERTIFICATES.get(sha) is again
    code = "import sys, storesync.model, storesync.stores.nss; print('weakref' in sys.modules)"
    assert subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True,
                          env={"PYTHONPATH": ":".join(sys.path)}).stdout.strip() == "False"
