"""`check` parses only the store entries that can matter (issue 18): the same verdict, problems,
path and verifier message as with every entry parsed, over stores made to trip a name prefilter.

cryptography's verifier finds an issuer among the anchors by its parsed Name, compared attribute
by attribute as (OID, tag, value bytes): byte equality of the DER name. check's diagnosis
(`_issued_by`) uses cryptography's Python Name equality, which ignores the string type. A
certificate that matches either way holds every attribute value of the issuer's name in its
bytes, in the encoding its string type implies; `store_view(..., wanted=...)` parses only those.
"""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import ExtendedKeyUsageOID as EKU
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import NOW, SYSTEM_BUNDLE, need, run, storesync
from storesync import check as doctor
from storesync import der
from storesync.model import (
    ANCHOR, CLIENT_AUTH, DISTRUSTED, EMAIL, SERVER_AUTH, TRUSTED, Certificate, Entry, TrustSet,
)
from storesync.stores import open_store

DAY = dt.timedelta(days=1)


def cn(text: str, kind: _ASN1Type = _ASN1Type.UTF8String, org: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, text, _type=kind)]
    if org is not None:
        attributes.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attributes)


class Made:
    def __init__(self, cert: x509.Certificate, key):
        self.cert, self.key = cert, key

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(Encoding.DER)


def make(subject: x509.Name, issuer: Made | x509.Name | None = None, signer=None, *, ca: bool | None = True,
         key=None, leaf: bool = False, not_before=None, not_after=None, aki: bool = True, sha1: bool = False) -> Made:
    """A certificate; `issuer` a Made (its subject and key sign) or a bare Name signed by `signer`.
    ca None: no basicConstraints."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    if isinstance(issuer, Made):
        issuer_name, signer = issuer.cert.subject, issuer.key
    else:
        issuer_name, signer = (issuer if issuer is not None else subject), (signer or key)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(not_before or NOW - 30 * DAY).not_valid_after(not_after or NOW + 900 * DAY)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False))
    if ca is not None:
        builder = builder.add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    if leaf:
        builder = builder.add_extension(x509.ExtendedKeyUsage([EKU.CLIENT_AUTH, EKU.SERVER_AUTH]), critical=False)
    elif ca:
        builder = builder.add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                                        critical=True)
    if aki and signer is not key:
        builder = builder.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()),
                                        critical=False)
    cert = builder.sign(signer, hashes.SHA256())
    return Made(_resign(cert, signer, sha1=True) if sha1 else cert, key)


def _resign(cert: x509.Certificate, key, sha1: bool = False, v1: bool = False) -> x509.Certificate:
    """The same certificate re-signed: with ECDSA-SHA1 (which cryptography's verifier refuses), or
    as a version 1 certificate (no version field, no extensions)."""
    tbs, alg, _sig = der.read(cert.public_bytes(Encoding.DER)).children()
    fields = [f.raw for f in tbs.children()]
    if sha1:
        alg_raw = der.encode(der.SEQUENCE, der.encode_oid("1.2.840.10045.4.1"))
        fields[2] = alg_raw  # the signature field inside the TBS (after version and serial)
    else:
        alg_raw = alg.raw
    if v1:
        fields = [f for f in fields if f[0] not in (0xA0, 0xA3)]
    new_tbs = der.encode(der.SEQUENCE, b"".join(fields))
    signature = key.sign(new_tbs, ec.ECDSA(hashes.SHA1() if sha1 else hashes.SHA256()))
    return x509.load_der_x509_certificate(der.encode(der.SEQUENCE, new_tbs + alg_raw + der.encode(0x03, b"\x00" + signature)))


def v1_root(subject: x509.Name) -> Made:
    made = make(subject, ca=None)
    return Made(_resign(made.cert, made.key, v1=True), made.key)


def unreadable(made: Made) -> bytes:
    """The certificate with its subject key identifier twice: cryptography refuses its extensions."""
    tbs, alg, sig = der.read(made.der).children()
    fields = list(tbs.children())
    exts = next(f for f in fields if f.tag == 0xA3)
    inner = next(exts.children())
    items = [c.raw for c in inner.children()]
    doubled = der.encode(0xA3, der.encode(der.SEQUENCE, b"".join(items + items[:1])))
    new_tbs = der.encode(der.SEQUENCE, b"".join(doubled if f is exts else f.raw for f in fields))
    return der.encode(der.SEQUENCE, new_tbs + alg.raw + sig.raw)


def entry(made: Made | bytes, **trust) -> Entry:
    raw = made if isinstance(made, bytes) else made.der
    return Entry(Certificate(raw), trust=({p.replace("_", "-"): v for p, v in trust.items()} or None))


def both(entries: list, kind: str, leaf: Made, chain: list, purpose: str = CLIENT_AUTH, at=NOW, monkeypatch=None):
    """check_store's JSON with the prefilter, and with every entry parsed (fresh entries each time)."""
    fast = doctor.check_store("s", kind, TrustSet(_fresh(entries)), leaf.cert, [c.cert for c in chain], purpose, at, [])
    original = doctor.store_view
    monkeypatch.setattr(doctor, "store_view", lambda ts, k, p, wanted=None: original(ts, k, p))
    full = doctor.check_store("s", kind, TrustSet(_fresh(entries)), leaf.cert, [c.cert for c in chain], purpose, at, [])
    monkeypatch.setattr(doctor, "store_view", original)
    return fast, full


def _fresh(entries: list) -> list:
    return [Entry(Certificate(e.cert.der), trust=dict(e.trust), distrust_after=dict(e.distrust_after)) for e in entries]


def same(fast, full) -> None:
    assert fast.to_json() == full.to_json()
    assert fast.verifier_error == full.verifier_error


@pytest.fixture(scope="module")
def crowd() -> list:
    """Unrelated roots, so that the prefilter has something to leave out."""
    return [entry(make(cn(f"Crowd Root {i}", org="Crowd"))) for i in range(12)]


# --- the awkward stores -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["pem", "nss"])
def test_two_roots_with_the_same_subject_and_different_keys(kind, crowd, monkeypatch):
    right, wrong = make(cn("Twin Root")), make(cn("Twin Root"))
    inter = make(cn("Twin Intermediate"), right)
    leaf = make(cn("twin.leaf"), inter, ca=False, leaf=True)
    cases = {
        "both": [*crowd, entry(wrong), entry(right)],
        "wrong only": [entry(wrong), *crowd],
        "wrong distrusted": [entry(wrong, client_auth=DISTRUSTED), entry(right), *crowd],
        "right distrusted": [entry(wrong), entry(right, client_auth=DISTRUSTED), *crowd],
        "right for email only": [entry(wrong), entry(right, email=TRUSTED), *crowd],
    }
    reasons = {}
    for label, entries in cases.items():
        fast, full = both(entries, kind, leaf, [inter], monkeypatch=monkeypatch)
        same(fast, full)
        reasons[label] = fast.reason
    assert reasons == {"both": "ok", "wrong only": "missing-root", "wrong distrusted": "ok",
                       "right distrusted": "distrusted", "right for email only": "purpose"}


@pytest.mark.parametrize("variant", ["printable", "bmp", "universal", "lower case", "other order"])
@pytest.mark.parametrize("sha1", [False, True])
def test_a_root_whose_subject_is_the_issuer_name_in_another_string_type_or_case(variant, sha1, crowd, monkeypatch):
    """Bytes differ from the issuer name the intermediate carries: the verifier never matches
    them. cryptography's Name equality matches other string types (never another case or
    order), so the diagnosis looks at such a root; `verify_directly_issued_by` then compares the
    names by bytes before the signature (even a SHA-1 one it cannot check): missing-root."""
    key = ec.generate_private_key(ec.SECP256R1())
    root_name = {
        "printable": cn("Typed Root", _ASN1Type.PrintableString, org="Typed"),
        "bmp": cn("Typed Root", _ASN1Type.BMPString, org="Typed"),
        "universal": cn("Typed Root", _ASN1Type.UniversalString, org="Typed"),
        "lower case": cn("typed root", org="Typed"),
        "other order": x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Typed Root"),
                                  x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Typed")]),
    }[variant]
    root = make(root_name, key=key)
    issuer_name = cn("Typed Root", org="Typed")  # UTF8String, organization first
    assert issuer_name.public_bytes() != root_name.public_bytes()
    inter = make(cn("Typed Intermediate"), issuer_name, signer=key, sha1=sha1)
    leaf = make(cn("typed.leaf"), inter, ca=False, leaf=True)
    fast, full = both([*crowd, entry(root)], "pem", leaf, [inter], monkeypatch=monkeypatch)
    same(fast, full)
    assert not fast.accepted
    loose = variant in ("printable", "bmp", "universal")
    assert (root.cert.subject == issuer_name) == loose  # what cryptography's Name equality says
    assert fast.reason == "missing-root"


def test_a_cross_signed_intermediate(crowd, monkeypatch):
    old, new = make(cn("Old Root")), make(cn("New Root"))
    key = ec.generate_private_key(ec.SECP256R1())
    inter = make(cn("Crossed Intermediate"), new, key=key)
    cross = make(cn("Crossed Intermediate"), old, key=key)
    leaf = make(cn("crossed.leaf"), inter, ca=False, leaf=True)
    cases = {
        "old only": ([entry(old), *crowd], "ok"),
        "new only": ([*crowd, entry(new)], "ok"),
        "new distrusted": ([entry(new, client_auth=DISTRUSTED), entry(old), *crowd], "ok"),
        "both distrusted": ([entry(new, client_auth=DISTRUSTED), entry(old, client_auth=DISTRUSTED), *crowd],
                            "distrusted"),
        "neither": (crowd, "missing-root"),
    }
    for label, (entries, reason) in cases.items():
        for chain in ([inter, cross], [cross, inter]):
            fast, full = both(entries, "pem", leaf, chain, monkeypatch=monkeypatch)
            same(fast, full)
            assert fast.reason == reason, label
    # The cross certificate in the store (a pem store's pool), its root expired.
    expired_old = make(cn("Old Root"), not_before=NOW - 900 * DAY, not_after=NOW - DAY, key=old.key)
    fast, full = both([entry(expired_old), entry(cross), *crowd], "pem", leaf, [inter], monkeypatch=monkeypatch)
    same(fast, full)
    assert fast.reason == "expired"


def test_a_distrusted_root_with_the_issuers_name(crowd, monkeypatch):
    root, impostor = make(cn("Named Root", org="Named")), make(cn("Named Root", org="Named"))
    leaf = make(cn("named.leaf"), root, ca=False, leaf=True)
    for entries, reason in (
        ([entry(impostor, client_auth=DISTRUSTED, server_auth=DISTRUSTED), entry(root), *crowd], "ok"),
        ([entry(root, client_auth=DISTRUSTED), *crowd], "distrusted"),
        ([entry(impostor, client_auth=DISTRUSTED), *crowd], "missing-root"),
    ):
        for kind in ("pem", "sst"):
            fast, full = both(entries, kind, leaf, [], monkeypatch=monkeypatch)
            same(fast, full)
            assert fast.reason == reason


def test_roots_without_basic_constraints_and_version_1_roots(crowd, monkeypatch):
    bare, old = make(cn("Bare Root"), ca=None), v1_root(cn("V1 Root"))
    assert old.cert.version == x509.Version.v1
    for root in (bare, old):
        inter = make(cn("Under " + root.cert.subject.rfc4514_string()), root)
        leaf = make(cn("v1.leaf"), inter, ca=False, leaf=True)
        for kind in ("pem", "nss"):
            fast, full = both([*crowd, entry(root)], kind, leaf, [inter], monkeypatch=monkeypatch)
            same(fast, full)
            assert not fast.accepted  # the verifier wants basicConstraints on every CA, the anchor too
        leaf_direct = make(cn("direct.leaf"), root, ca=False, leaf=True)
        fast, full = both([entry(root), *crowd], "pem", leaf_direct, [], monkeypatch=monkeypatch)
        same(fast, full)


def test_what_the_prefilter_leaves_out_never_mattered(crowd, monkeypatch):
    """No anchor for the purpose at all; no anchor readable; an intermediate trusted as an
    anchor (NSS, Windows) whose own issuer is in the store; the leaf itself in the store; an
    unrelated intermediate in a pem store (its root's dates weigh on the relaxed run)."""
    root = make(cn("Plain Root"))
    inter = make(cn("Plain Intermediate"), root)
    leaf = make(cn("plain.leaf"), inter, ca=False, leaf=True)
    self_signed = make(cn("self.leaf"), ca=False, leaf=True)
    stray_root = make(cn("Stray Root"), not_before=NOW - 900 * DAY, not_after=NOW - 100 * DAY)
    stray = make(cn("Stray Intermediate"), stray_root, not_before=NOW - 800 * DAY, not_after=NOW + 100 * DAY)
    cases = [
        ("pem", [entry(root, email=TRUSTED), *crowd], leaf, [inter], "purpose"),
        ("pem", [e for e in crowd], leaf, [inter], "missing-root"),
        ("pem", [entry(unreadable(root)), entry(unreadable(make(cn("Other"))))], leaf, [inter], "missing-root"),
        ("pem", [entry(unreadable(root)), entry(root), *crowd], leaf, [inter], "ok"),
        ("nss", [entry(inter), entry(root, client_auth=DISTRUSTED), *crowd], leaf, [], "ok"),  # the anchor ends the path
        ("nss", [*crowd, entry(inter)], leaf, [], "ok"),
        # a self-signed leaf in the store is its own anchor, as `openssl verify -CAfile` has it
        ("nss", [*crowd, entry(self_signed)], self_signed, [], "ok"),
        ("pem", [*crowd, entry(self_signed)], self_signed, [], "ok"),
        ("pem", [entry(stray_root), entry(stray), entry(root), *crowd], leaf, [inter], "ok"),
        ("pem", [entry(stray_root), entry(stray), *crowd], leaf, [inter], "missing-root"),
        ("pem", [entry(inter), entry(root), *crowd], leaf, [], "ok"),  # the intermediate from the pool
    ]
    for kind, entries, checked, chain, reason in cases:
        for at in (NOW, NOW + 2000 * DAY):
            fast, full = both(entries, kind, checked, chain, at=at, monkeypatch=monkeypatch)
            same(fast, full)
            if at == NOW:
                assert fast.reason == reason, (kind, reason)


def test_past_an_anchor_that_is_not_self_issued(crowd, monkeypatch):
    """In NSS and Windows stores an intermediate may be an anchor; where the verifier refuses
    even relaxed (a SHA-1 leaf), the diagnosis follows names and signatures past it to its
    root: the root of that anchor must be in the view too."""
    root = make(cn("Upper Root"))
    inter = make(cn("Upper Intermediate"), root)
    leaf = make(cn("upper.leaf"), inter, ca=False, leaf=True, sha1=True)
    fast, full = both([*crowd, entry(root), entry(inter)], "nss", leaf, [], monkeypatch=monkeypatch)
    same(fast, full)
    assert fast.reason == "unsupported"
    assert [c["subject"] for c in fast.to_json()["chain"]] == ["CN=upper.leaf", "CN=Upper Intermediate", "CN=Upper Root"]


def test_the_view_holds_every_entry_that_may_issue(crowd):
    """What store_view must parse, whatever the verifier's order of checks: every entry whose
    subject cryptography's Name equality matches an issuer (any string type), the issuers of
    the pool's intermediates (check_store asks which anchors issued any intermediate), the
    issuers of marked anchors; and not the crowd."""
    key = ec.generate_private_key(ec.SECP256R1())
    typed = {kind: make(cn("Loose Root", kind, org="Loose"), key=key)
             for kind in (_ASN1Type.PrintableString, _ASN1Type.BMPString, _ASN1Type.UniversalString)}
    inter = make(cn("Loose Intermediate"), cn("Loose Root", org="Loose"), signer=key)
    leaf = make(cn("loose.leaf"), inter, ca=False, leaf=True)
    stray_root = make(cn("Stray Root"))
    stray = make(cn("Stray Intermediate"), stray_root)
    entries = [*crowd, *(entry(t) for t in typed.values()), entry(stray_root), entry(stray)]
    view = doctor.store_view(TrustSet(_fresh(entries)), "pem", CLIENT_AUTH, wanted=[leaf.cert, inter.cert])
    subjects = {c.subject.rfc4514_string() for c in view.all_anchors}
    assert all(t.cert.subject == inter.cert.issuer for t in typed.values())
    assert subjects == {"CN=Loose Root,O=Loose", "CN=Stray Root"}
    assert len(view.all_anchors) == len(typed) + 1
    assert [c.subject for c in view.pool] == [stray.cert.subject]
    # NSS: every entry an anchor; the anchor found leads to its own issuer.
    upper_root = make(cn("Upper Root"))
    upper = make(cn("Upper Intermediate"), upper_root)
    leaf = make(cn("upper.leaf"), upper, ca=False, leaf=True)
    view = doctor.store_view(TrustSet(_fresh([*crowd, entry(upper_root), entry(upper)])), "nss", CLIENT_AUTH,
                             wanted=[leaf.cert])
    assert [c.subject for c in view.anchors] == [upper_root.cert.subject, upper.cert.subject]


def test_an_issuer_name_cryptography_cannot_read_is_no_traceback(crowd, monkeypatch):
    """An NSS anchor named like the issuer but issued under a name that is not UTF-8: the
    verifier and the explanation never read that name; the prefilter, which would, parses
    every entry instead."""
    root = make(cn("Named Twin"))
    inter = make(cn("Twin Child"), root)
    leaf = make(cn("twin.child.leaf"), inter, ca=False, leaf=True)
    other = make(cn("Named Twin"), make(cn("Bad Issuer")))
    raw = other.der.replace(b"Bad Issuer", b"Bad\xffIssuer")
    with pytest.raises(ValueError):
        x509.load_der_x509_certificate(raw).issuer
    for entries, reason in (([*crowd, entry(raw), entry(root)], "ok"), ([entry(raw), *crowd], "missing-root")):
        fast, full = both(entries, "nss", leaf, [inter], monkeypatch=monkeypatch)
        same(fast, full)
        assert fast.reason == reason


@pytest.mark.parametrize("where", ["leaf", "chain"])
def test_a_certificate_to_check_whose_names_cryptography_cannot_read_is_bad_input(where, tmp_path):
    """Exit 2 and one sentence naming the file (it was a traceback once the explanation read the name)."""
    root = make(cn("Bad Issuer"))
    inter = make(cn("Fine Intermediate"), root)
    leaf = make(cn("bad.leaf"), inter if where == "chain" else root, ca=False, leaf=True)
    bad = (inter if where == "chain" else leaf).der.replace(b"Bad Issuer", b"Bad\xffIssuer")
    (tmp_path / "bad.der").write_bytes(bad)
    (tmp_path / "leaf.pem").write_bytes(leaf.cert.public_bytes(Encoding.PEM))
    (tmp_path / "root.pem").write_bytes(root.cert.public_bytes(Encoding.PEM))
    args = ["leaf.pem", "--chain", "bad.der"] if where == "chain" else ["bad.der"]
    result = storesync("check", *(tmp_path / a if a.endswith((".pem", ".der")) else a for a in args),
                       "--store", f"pem:{tmp_path / 'root.pem'}")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and "bad.der" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_the_same_sync_fix_from_the_other_stores(monkeypatch):
    """A missing root's fix names the first anchor, in the other stores' order, that is the top
    certificate or issued it: the same with the prefilter."""
    root, twin = make(cn("Fix Root")), make(cn("Fix Root"))
    inter = make(cn("Fix Intermediate"), root)
    leaf = make(cn("fix.leaf"), inter, ca=False, leaf=True)
    sources = {"target": [entry(make(cn("Nobody")))], "a": [entry(twin), entry(make(cn("X")))],
               "b": [entry(make(cn("Y"))), entry(twin), entry(root)], "c": [entry(root)]}
    kinds = {"target": "pem", "a": "pem", "b": "nss", "c": "pem"}
    fixes = []
    for prefilter in (True, False):
        sets = {spec: TrustSet(_fresh(entries)) for spec, entries in sources.items()}
        original = doctor.store_view
        if not prefilter:
            monkeypatch.setattr(doctor, "store_view", lambda ts, k, p, wanted=None: original(ts, k, p))
        verdict = doctor.check_store("target", "pem", sets["target"], leaf.cert, [inter.cert], CLIENT_AUTH, NOW, [])
        doctor.sync_fix(verdict, "target", sets, kinds, CLIENT_AUTH)
        monkeypatch.setattr(doctor, "store_view", original)
        fixes.append(verdict.to_json())
    assert fixes[0] == fixes[1]
    assert fixes[0]["problems"][0]["source"] == "b"


def test_what_a_ca_issued_is_not_parsed_for_its_issuer_name(monkeypatch):
    """A store of many certificates from one CA (NSS, every one an anchor): their issuer field
    names the CA, their subject does not; only the subject is searched, once per issuer name."""
    key = ec.generate_private_key(ec.SECP256R1())
    root = make(cn("Busy Root", org="Busy"))
    members = [make(cn(f"member {i}", org="Busy"), root, ca=False, leaf=True, key=key) for i in range(300)]
    leaf = make(cn("busy.leaf", org="Busy"), root, ca=False, leaf=True, key=key)
    entries = [*(entry(m) for m in members), entry(root)]
    trust_set = TrustSet(_fresh(entries))
    verdict = doctor.check_store("s", "nss", trust_set, leaf.cert, [], CLIENT_AUTH, NOW, [])
    assert verdict.reason == "ok"
    assert [e.cert.default_label for e in trust_set.values() if "_parsed" in e.cert.__dict__] == ["Busy Root"]
    same(*both(entries, "nss", leaf, [], monkeypatch=monkeypatch))


# --- the system bundle: work counted, verdicts against openssl ----------------------------------


@pytest.fixture(scope="module")
def bundle_case(tmp_path_factory):
    if not SYSTEM_BUNDLE.exists():
        pytest.fail(f"{SYSTEM_BUNDLE} is missing: scripts/test installs ca-certificates")
    d = tmp_path_factory.mktemp("prefilter")
    root = make(cn("Bundle Root"))
    inter = make(cn("Bundle Intermediate"), root)
    leaf = make(cn("bundle.leaf"), inter, ca=False, leaf=True)
    store = d / "store.pem"
    store.write_bytes(SYSTEM_BUNDLE.read_bytes() + root.cert.public_bytes(Encoding.PEM))
    for name, made in (("inter", inter), ("leaf", leaf), ("root", root)):
        (d / f"{name}.pem").write_bytes(made.cert.public_bytes(Encoding.PEM))
    return {"dir": d, "store": store, "root": root, "inter": inter, "leaf": leaf}


@pytest.mark.parametrize("store_of", ["store", "bundle"])
def test_on_the_system_bundle_few_roots_are_parsed_and_the_verdict_is_the_same(bundle_case, store_of, monkeypatch):
    path = bundle_case["store"] if store_of == "store" else SYSTEM_BUNDLE
    store = open_store(f"pem:{path}")
    trust_set = store.read()
    assert len(trust_set) > 100
    leaf, inter = bundle_case["leaf"], bundle_case["inter"]
    verdict = doctor.check_store("s", "pem", trust_set, leaf.cert, [inter.cert], CLIENT_AUTH, NOW, [])
    parsed = [e for e in trust_set.values() if "_parsed" in e.cert.__dict__]
    # The root (or, missing, one anchor the verifier needs to run at all), not the 140 others.
    assert len(parsed) <= 2, [e.cert.subject for e in parsed]
    fast, full = both(list(trust_set.values()), "pem", leaf, [inter], monkeypatch=monkeypatch)
    same(fast, full)
    assert verdict.to_json() == fast.to_json()
    assert fast.reason == ("ok" if store_of == "store" else "missing-root")


@pytest.mark.parametrize("store_of", ["store", "bundle"])
def test_check_and_openssl_verify_agree_on_the_system_bundle(bundle_case, store_of):
    d = bundle_case["dir"]
    path = bundle_case["store"] if store_of == "store" else SYSTEM_BUNDLE
    openssl = run(need("openssl"), "verify", "-CAfile", path, "-untrusted", d / "inter.pem", "-purpose", "sslclient",
                  d / "leaf.pem", check=False)
    ours = storesync("check", d / "leaf.pem", "--chain", d / "inter.pem", "--store", f"pem:{path}")
    assert (openssl.returncode == 0) == (ours.returncode == 0) == (store_of == "store"), ours.stdout + ours.stderr
    assert ours.returncode in (0, 1)
    if store_of == "bundle":
        assert "REFUSED, missing-root" in ours.stdout and "CN=Bundle Root" in ours.stdout


# --- random stores from the awkward pieces ------------------------------------------------------


@pytest.fixture(scope="module")
def pieces(crowd) -> dict:
    """Roots, intermediates and leaves that trip a name prefilter, to draw stores from."""
    key_a, key_i = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    r1 = make(cn("Pool Root", org="Pool"), key=key_a)
    r2 = make(cn("Pool Root", org="Pool"))  # same name, other key
    r3 = make(cn("Pool Root", _ASN1Type.PrintableString, org="Pool"), key=key_a)  # same key, other string type
    r4 = make(cn("Pool Root", org="Pool"), key=key_a, not_before=NOW - 900 * DAY, not_after=NOW - DAY)  # expired twin
    v1, bare = v1_root(cn("Pool V1")), make(cn("Pool Bare"), ca=None)
    i1 = make(cn("Pool Intermediate"), r1, key=key_i)
    i1x = make(cn("Pool Intermediate"), r2, key=key_i)  # cross-signed by the other key
    i2 = make(cn("Pool V1 Intermediate"), v1)
    i3 = make(cn("Pool SHA1 Intermediate"), r1, sha1=True)
    i4 = make(cn("Pool Old Intermediate"), r1, not_before=NOW - 400 * DAY, not_after=NOW - 2 * DAY)
    leaves = [make(cn("pool.leaf"), i1, ca=False, leaf=True), make(cn("v1.pool.leaf"), i2, ca=False, leaf=True),
              make(cn("sha1.pool.leaf"), i3, ca=False, leaf=True), make(cn("root.pool.leaf"), r1, ca=False, leaf=True),
              make(cn("bare.pool.leaf"), bare, ca=False, leaf=True),
              make(cn("old.pool.leaf"), i4, ca=False, leaf=True, not_before=NOW - 300 * DAY),
              make(cn("future.pool.leaf"), i1, ca=False, leaf=True, not_before=NOW + 10 * DAY),
              make(cn("signed.sha1.pool.leaf"), i1, ca=False, leaf=True, sha1=True)]
    return {"store": [p.der for p in (r1, r2, r3, r4, v1, bare, i1, i1x, i2, i3, i4)] + [e.cert.der for e in crowd[:3]],
            "chain": [i1, i1x, i2, i3, i4], "leaves": leaves}


TRUSTS = [{}, {"client_auth": TRUSTED}, {"client_auth": DISTRUSTED}, {"email": TRUSTED},
          {"server_auth": DISTRUSTED, "client_auth": TRUSTED}]


def _random_stores(count: int):
    @settings(max_examples=count, deadline=None, derandomize=count < 1000,
              suppress_health_check=[HealthCheck.function_scoped_fixture])  # `both` puts store_view back itself
    @given(data=st.data())
    def campaign(pieces, monkeypatch, data):
        store = data.draw(st.lists(st.tuples(st.sampled_from(range(len(pieces["store"]))),
                                             st.sampled_from(range(len(TRUSTS)))),
                                   max_size=9, unique_by=lambda pair: pair[0]))
        entries = []
        for index, trust in store:
            entries.append(Entry(Certificate(pieces["store"][index]), trust=({p.replace("_", "-"): v for p, v in TRUSTS[trust].items()}
                                                          or None)))
        leaf = data.draw(st.sampled_from(pieces["leaves"]))
        chain = data.draw(st.lists(st.sampled_from(pieces["chain"]), max_size=3, unique_by=id))
        kind = data.draw(st.sampled_from(["pem", "nss"]))
        purpose = data.draw(st.sampled_from([CLIENT_AUTH, SERVER_AUTH]))
        at = NOW + data.draw(st.sampled_from([0, 2000, -100])) * DAY
        fast, full = both(entries, kind, leaf, chain, purpose=purpose, at=at, monkeypatch=monkeypatch)
        same(fast, full)

    return campaign


test_random_stores_from_the_awkward_pieces = _random_stores(150)
test_random_stores_campaign = pytest.mark.slow(_random_stores(1500))
