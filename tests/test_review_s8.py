"""What the eighth session's new-user review found, each checked against the program that owns
the format or the verdict (certutil, keytool, openssl)."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from conftest import need, pem_of, run, storesync
from storesync.der import encode, encode_oid

PROJECT = Path(__file__).resolve().parents[1]
KEY = ec.derive_private_key(8, ec.SECP256R1())
SPKI = KEY.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
ECDSA_SHA256 = encode(0x30, encode_oid("1.2.840.10045.4.3.2"))
VALIDITY = encode(0x30, encode(0x17, b"250101000000Z") + encode(0x17, b"451230000000Z"))
BC_CA = encode(0x30, encode(0x01, b"\xff"))


def rdn(*attributes: bytes) -> bytes:
    return encode(0x31, b"".join(attributes))


def cn(text: str) -> bytes:
    return encode(0x30, encode_oid("2.5.4.3") + encode(0x0C, text.encode()))


def name(*rdns: bytes) -> bytes:
    return encode(0x30, b"".join(rdns))


def extension(oid: str, value: bytes, critical: bool = False) -> bytes:
    return encode(0x30, encode_oid(oid) + (encode(0x01, b"\xff") if critical else b"") + encode(0x04, value))


def crafted(subject: bytes, issuer: bytes | None = None, extensions: bytes | None = None) -> bytes:
    """A v3 certificate built by hand (what `cryptography`'s builder will not make), signed."""
    tbs = (encode(0xA0, encode(0x02, b"\x02")) + encode(0x02, b"\x11\x22") + ECDSA_SHA256 + (issuer or subject)
           + VALIDITY + subject + SPKI + (extensions if extensions is not None else b""))
    tbs = encode(0x30, tbs)
    signature = KEY.sign(tbs, ec.ECDSA(hashes.SHA256()))
    return encode(0x30, tbs + ECDSA_SHA256 + encode(0x03, b"\x00" + signature))


def listed(spec: str) -> dict[str, dict]:
    import json

    result = storesync("list", "--json", spec)
    assert result.returncode == 0, result.stderr
    return {e["label"]: e for e in json.loads(result.stdout)["entries"]}


# --- a selection keeps only the distrust of what it leaves out ----------------------------------


def test_only_keeps_the_distrust_of_a_root_it_leaves_out_and_none_of_its_trust(tmp_path, pki):
    """Root A: OpenSSL's reject for serverAuth and nothing else (read as trusted for the other
    purposes); `--only 'Root C'` left Root A in with that trust, and NSS then trusted it for
    client auth, e-mail and code signing (`pT,C,C`)."""
    need("certutil")
    a, c = pki.ca("Review Root A").write(tmp_path / "a.pem"), pki.ca("Review Root C").write(tmp_path / "c.pem")
    source = tmp_path / "source.pem"
    source.write_bytes(
        run("openssl", "x509", "-in", a, "-addreject", "serverAuth", "-trustout", "-setalias", "Root A").stdout
        + run("openssl", "x509", "-in", c, "-addtrust", "serverAuth", "-trustout", "-setalias", "Root C").stdout)
    db = tmp_path / "db"
    db.mkdir()
    run("certutil", "-N", "-d", f"sql:{db}", "--empty-password")
    trusted = tmp_path / "out.pem"

    result = storesync("sync", "--mode", "add", "--only", "Root C", f"pem:{source}", f"nss:{db}",
                       f"pem:{trusted}?format=trusted")

    assert result.returncode == 0, result.stderr
    flags = {line[:60].strip(): line[60:].strip()
             for line in run("certutil", "-L", "-d", f"sql:{db}").stdout.decode().splitlines()[4:] if line.strip()}
    assert flags["Root C"].startswith("C")
    assert "C" not in flags.get("Root A", "") and "T" not in flags.get("Root A", ""), flags
    entries = listed(f"pem:{trusted}?format=trusted")
    assert set(entries["Root A"]["trust"].values()) == {"distrusted"}, entries["Root A"]


def test_only_that_selects_nothing_is_an_error_and_removes_nothing(tmp_path, pki):
    a, b = pki.ca("Review Keep A"), pki.ca("Review Keep B")
    source, target = tmp_path / "source.pem", tmp_path / "target.pem"
    source.write_bytes(a.pem + b.pem)
    target.write_bytes(a.pem + b.pem)
    before = target.read_bytes()
    for selector in ("Nothing*", "15a5f02ec357c94"):  # 15 hex digits: a glob, which names no label
        result = storesync("sync", "--only", selector, f"pem:{source}", f"pem:{target}")
        assert result.returncode == 2 and "--only" in result.stderr and "no certificate" in result.stderr, result
        assert "Traceback" not in result.stderr and target.read_bytes() == before


# --- Java's own name rules ------------------------------------------------------------------


def java_root(subject: x509.Name, san_critical: bool | None = None) -> bytes:
    import datetime as dt

    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
               .not_valid_after(now + dt.timedelta(days=365))
               .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True))
    if san_critical is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName("named.example")]),
                                        critical=san_critical)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


@pytest.mark.parametrize("kind", ["jks", "p12"])
def test_keytool_reads_every_keystore_storesync_writes_also_with_empty_names(tmp_path, pki, kind):
    """An empty issuer, or an empty subject with no critical subjectAltName, makes Java refuse
    the whole keystore ("Empty issuer DN not allowed in X509Certificates"); storesync wrote them."""
    need("keytool")
    empty = x509.Name([])
    source = tmp_path / "source.pem"
    source.write_bytes(pki.ca("Review Java Fine").pem + pem_of(java_root(empty)) + pem_of(java_root(empty, False))
                       + pem_of(crafted(name(rdn(cn("Empty Issuer Root"))), issuer=name(),
                                        extensions=encode(0xA3, encode(0x30, extension("2.5.29.19", BC_CA, True))))))
    store = tmp_path / f"out.{kind}"

    result = storesync("sync", f"pem:{source}", f"{kind}:{store}")

    assert result.returncode == 0, result.stderr
    assert result.stdout.count("Java's keytool would not load it") == 3, result.stdout
    listing = subprocess.run(["keytool", "-list", "-keystore", str(store), "-storepass", "changeit"],
                             capture_output=True, text=True)
    assert listing.returncode == 0, listing.stdout + listing.stderr
    assert "1 entr" in listing.stdout, listing.stdout


# --- ca_only: no benefit of the doubt for a leaf ------------------------------------------------


def test_a_leaf_whose_constraints_cannot_be_read_is_no_anchor_a_root_still_is(tmp_path):
    """basicConstraints `30 00 05 00` (an empty SEQUENCE, then stray bytes) reads as cA FALSE in
    OpenSSL; an empty [3] cannot be read at all. A leaf issued by another CA with either was
    added as an anchor; a self-issued root with them is still one (Windows and OpenSSL take it)."""
    other, leaf_name = name(rdn(cn("Some Other CA"))), name(rdn(cn("leaf.review.example")))
    stray = encode(0xA3, encode(0x30, extension("2.5.29.19", encode(0x30, b"") + b"\x05\x00", True)))
    leaves = [crafted(leaf_name, issuer=other, extensions=stray),
              crafted(name(rdn(cn("leaf2.review.example"))), issuer=other, extensions=encode(0xA3, b""))]
    root = crafted(name(rdn(cn("Review Stray Root"))), extensions=stray)
    (tmp_path / "leaf.pem").write_bytes(pem_of(leaves[0]))
    purpose = run("openssl", "x509", "-in", tmp_path / "leaf.pem", "-noout", "-purpose").stdout.decode()
    assert "SSL client CA : No" in purpose  # OpenSSL's reading: not a CA
    source = tmp_path / "source.pem"
    source.write_bytes(b"".join(pem_of(d) for d in (*leaves, root)))

    result = storesync("sync", "--mode", "add", f"pem:{source}", f"sst:{tmp_path / 'out.sst'}", f"pem:{tmp_path / 'out.pem'}")

    assert result.returncode == 0, result.stderr
    for spec in (f"sst:{tmp_path / 'out.sst'}", f"pem:{tmp_path / 'out.pem'}"):
        assert set(listed(spec)) == {"Review Stray Root"}, (spec, result.stdout)
    assert result.stdout.count("leaf.review.example") == 2 and "not a CA" in result.stdout, result.stdout


# --- check judges as OpenSSL: no authorityKeyIdentifier needed ---------------------------------


def test_check_accepts_a_chain_without_key_identifiers_as_openssl_verify_does(tmp_path):
    import datetime as dt

    now = dt.datetime.now(dt.timezone.utc)

    def make(subject, issuer_name, key, signer, ca, extra=()):
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
                   .not_valid_after(now + dt.timedelta(days=100))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        for ext in extra:
            builder = builder.add_extension(ext, critical=False)
        return builder.sign(signer, hashes.SHA256())

    keys = [ec.generate_private_key(ec.SECP256R1()) for _ in range(3)]
    names = [x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, n)]) for n in ("Review NoAKI Root", "Review NoAKI CA", "noaki.review.example")]
    root = make(names[0], names[0], keys[0], keys[0], True, [x509.SubjectKeyIdentifier.from_public_key(keys[0].public_key())])
    inter = make(names[1], names[0], keys[1], keys[0], True)  # neither key identifier
    leaf = make(names[2], names[1], keys[2], keys[1], False, [
        x509.SubjectAlternativeName([x509.DNSName("noaki.review.example")]),
        x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH])])
    paths = {}
    for label, cert in (("root", root), ("inter", inter), ("leaf", leaf)):
        paths[label] = tmp_path / f"{label}.pem"
        paths[label].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    verified = run("openssl", "verify", "-CAfile", paths["root"], "-untrusted", paths["inter"],
                   "-purpose", "sslserver", paths["leaf"], check=False)
    assert verified.returncode == 0, verified.stdout + verified.stderr

    result = storesync("check", paths["leaf"], "--chain", paths["inter"], "--purpose", "server-auth",
                       "--store", f"pem:{paths['root']}")

    assert result.returncode == 0, result.stdout + result.stderr


# --- the hashed directory's link of a name with an empty RDN -------------------------------------


def test_a_name_with_an_empty_rdn_gets_openssls_hash_link(tmp_path):
    der_bytes = crafted(name(rdn(), rdn(cn("Review EmptyRDN Root"))),
                        extensions=encode(0xA3, encode(0x30, extension("2.5.29.19", BC_CA, True))))
    source = tmp_path / "root.pem"
    source.write_bytes(pem_of(der_bytes))
    expected = run("openssl", "x509", "-in", source, "-noout", "-subject_hash").stdout.decode().strip()

    result = storesync("sync", f"pem:{source}", f"dir:{tmp_path / 'certs'}")

    assert result.returncode == 0, result.stderr
    assert (tmp_path / "certs" / f"{expected}.0").exists(), sorted(p.name for p in (tmp_path / "certs").iterdir())
    verified = run("openssl", "verify", "-CApath", tmp_path / "certs", source, check=False)
    assert verified.returncode == 0, verified.stdout + verified.stderr


# --- the README and the error sentences ----------------------------------------------------------


def test_the_readmes_jq_example_runs(tmp_path, root):
    need("jq")
    line = next(l for l in (PROJECT / "README.md").read_text().splitlines() if "| jq " in l and "list --json" in l)
    jq_filter = shlex.split(line.split("| jq ", 1)[1])[0]
    bundle = root.write(tmp_path / "root.pem")
    listing = storesync("list", "--json", f"pem:{bundle}")
    shown = subprocess.run(["jq", "-c", jq_filter], input=listing.stdout, capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    assert re.search(r'"label":".+","trust":\{', shown.stdout), shown.stdout


def test_a_missing_source_and_a_pkcs12_named_jks_say_what_to_do(tmp_path, root):
    missing = storesync("sync", f"pem:{tmp_path / 'nosuch.pem'}", f"pem:{tmp_path / 'out.pem'}")
    assert missing.returncode == 2 and "check the path" in missing.stderr, missing.stderr
    p12 = tmp_path / "out.p12"
    assert storesync("sync", f"pem:{root.write(tmp_path / 'r.pem')}", f"p12:{p12}").returncode == 0
    renamed = tmp_path / "keytool-default.jks"
    renamed.write_bytes(p12.read_bytes())
    wrong = storesync("list", f"jks:{renamed}")
    assert wrong.returncode == 2 and "p12:" in wrong.stderr and "Traceback" not in wrong.stderr, wrong.stderr


def test_a_self_signed_leaf_in_the_store_is_its_own_anchor_as_in_openssl(tmp_path):
    """It was refused only for lacking an authorityKeyIdentifier (which a self-signed
    certificate need not have); `openssl verify -CAfile` accepts it."""
    import datetime as dt

    now = dt.datetime.now(dt.timezone.utc)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "self.review.example")])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(5).not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(key, hashes.SHA256()))
    path = tmp_path / "self.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    verified = run("openssl", "verify", "-CAfile", path, "-purpose", "sslclient", path, check=False)

    result = storesync("check", path, "--store", f"pem:{path}")

    assert verified.returncode == 0, verified.stdout
    assert result.returncode == 0, result.stdout
