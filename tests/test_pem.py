"""The `pem` store against p11-kit and OpenSSL, and against hostile input."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from storesync.engine.plan import make_plan
from pathlib import Path

from storesync.model import DISTRUSTED, TRUSTED, Certificate, StoreError, TrustSet
from storesync.stores import StoreSpec, open_store
from storesync.stores.pem import PemStore

from conftest import SYSTEM_BUNDLE, need, pem_of, run, storesync


def write_via(spec: str, source: TrustSet) -> None:
    store = open_store(spec)
    store.write(make_plan(source, store.read(), store.capabilities, store=spec, purpose="any"))


def test_plain_bundle_is_byte_for_byte_what_p11kit_extracts(system_bundle, tmp_path):
    extracted = tmp_path / "p11kit.pem"
    run(need("trust"), "extract", "--format=pem-bundle", "--filter=ca-anchors", "--purpose=server-auth", extracted)
    ours = tmp_path / "ours.pem"
    write_via(f"pem:{ours}", open_store(f"pem:{system_bundle}").read())
    assert ours.read_bytes() == extracted.read_bytes()


def test_trusted_certificate_round_trip_keeps_purposes_distrust_and_alias(root, tmp_path):
    made = tmp_path / "openssl-trusted.pem"
    root.write(tmp_path / "root.pem")
    run(need("openssl"), "x509", "-in", tmp_path / "root.pem", "-addtrust", "serverAuth", "-addtrust", "clientAuth",
        "-addreject", "emailProtection", "-setalias", "Ünïcode Root", "-trustout", "-out", made)
    (entry,) = open_store(f"pem:{made}").read().values()
    assert dict(entry.trust) == {"server-auth": TRUSTED, "client-auth": TRUSTED, "email": DISTRUSTED}
    assert entry.label == "Ünïcode Root"

    ours = tmp_path / "ours.pem"
    write_via(f"pem:{ours}?format=trusted", TrustSet([entry]))
    text = run("openssl", "x509", "-in", ours, "-noout", "-text").stdout.decode()
    assert "Trusted Uses:\n  TLS Web Server Authentication, TLS Web Client Authentication" in text
    assert "Rejected Uses:\n  E-mail Protection" in text
    assert "Alias: Ünïcode Root" in text
    (again,) = open_store(f"pem:{ours}?format=trusted").read().values()
    assert again.trust_key() == entry.trust_key() and again.label == entry.label
    assert ours.read_bytes() == made.read_bytes()  # same aux encoding as OpenSSL's own


def test_reject_only_and_any_purpose(root, tmp_path):
    root.write(tmp_path / "root.pem")
    made = tmp_path / "t.pem"
    run("openssl", "x509", "-in", tmp_path / "root.pem", "-addreject", "anyExtendedKeyUsage", "-trustout", "-out", made)
    (entry,) = open_store(f"pem:{made}").read().values()
    assert set(entry.trust.values()) == {DISTRUSTED} and len(entry.trust) == 4
    # a plain bundle cannot say distrusted: the certificate is left out, and the plan says so
    target = open_store(f"pem:{tmp_path / 'plain.pem'}")
    plan = make_plan(TrustSet([entry]), target.read(), target.capabilities, store="t")
    assert not plan.adds and "distrusted" in plan.losses[0].what


def test_reads_comments_x509_header_and_der(root, intermediate, tmp_path):
    bundle = tmp_path / "b.pem"
    bundle.write_bytes(b"# Root\n" + root.pem + b"\nsome text\n" + pem_of(intermediate.der, "X509 CERTIFICATE"))
    assert list(open_store(str(bundle)).read()) == [Certificate(root.der).sha256, Certificate(intermediate.der).sha256]
    single = tmp_path / "root.der"
    single.write_bytes(root.der)
    assert len(open_store(str(single)).read()) == 1


def test_comments_option_writes_labels(root, tmp_path):
    out = tmp_path / "c.pem"
    write_via(f"pem:{out}?comments=yes", open_store(f"pem:{root.write(tmp_path / 'r.pem')}").read())
    assert out.read_bytes().startswith(b"# storesync Test Root\n-----BEGIN CERTIFICATE-----\n")


@pytest.mark.parametrize("content, message", [
    (b"-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n", "private key (line 1)"),
    (b"-----BEGIN CERTIFICATE-----\nMIIB", "line 1 has no matching END line"),
    (b"-----BEGIN CERTIFICATE-----\n!!!notbase64!!!\n-----END CERTIFICATE-----\n", "not valid base64"),
    (b"-----BEGIN CERTIFICATE-----\naGVsbG8=\n-----END CERTIFICATE-----\n", "not a certificate"),
    (b"\x89PNG\r\n\x1a\n\x00\x00binary", "holds no PEM certificate"),
    (b"\x30\x82\xff\xff\x01\x02", "neither PEM nor a DER certificate"),
])
def test_bad_input_is_one_clear_sentence(tmp_path, content, message):
    bad = tmp_path / "bad.pem"
    bad.write_bytes(content)
    with pytest.raises(StoreError) as caught:
        open_store(f"pem:{bad}").read()
    assert message in str(caught.value) and str(bad) in str(caught.value)


def test_private_key_after_certificates_refuses_whole_file(root, tmp_path):
    bad = tmp_path / "mixed.pem"
    bad.write_bytes(root.pem * 2 + root.key_pem())
    with pytest.raises(StoreError, match="private key"):
        open_store(f"pem:{bad}").read()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_arbitrary_bytes_parse_or_fail_cleanly(data):
    store = PemStore(StoreSpec("pem", Path("/fuzz.pem")))
    try:
        store.parse(data)
    except StoreError:
        pass


@settings(max_examples=200, deadline=None)
@given(cut=st.integers(min_value=1, max_value=10_000), flip=st.integers(min_value=0, max_value=10_000))
def test_truncated_and_corrupted_bundles_fail_cleanly(cut, flip):
    system_bundle = SYSTEM_BUNDLE
    data = bytearray(system_bundle.read_bytes()[:20_000])
    data = data[: len(data) - cut]
    data[flip % len(data)] ^= 0x55
    store = PemStore(StoreSpec("pem", system_bundle))
    try:
        store.parse(bytes(data))
    except StoreError:
        pass


def test_trusted_output_does_not_depend_on_dict_order(root):
    from storesync.stores.pem import _aux_bytes
    from storesync.model import Entry

    cert = Certificate(root.der)
    a = Entry(cert, trust={"server-auth": TRUSTED, "email": TRUSTED, "client-auth": DISTRUSTED})
    b = Entry(cert, trust={"client-auth": DISTRUSTED, "email": TRUSTED, "server-auth": TRUSTED})
    assert _aux_bytes(a) == _aux_bytes(b)


def _read_in_pieces_and_whole(path: Path, monkeypatch) -> tuple:
    """(entries, warnings, error) of a large bundle read in 2 KiB pieces, and of it read whole."""
    from storesync import state
    from storesync.stores import pem

    said = []
    for piece in (1 << 11, None):
        monkeypatch.setattr(pem, "CACHE_FROM", 0 if piece else 1 << 40)
        monkeypatch.setattr(pem, "PIECE", piece or pem.PIECE)
        state.set_state_dir(path.parent / f"state-{piece}")  # no stat cache of the other way
        store = open_store(f"pem:{path}")
        try:
            found = store.read()
            said.append(([(e.sha256, dict(e.trust)) for e in found.values()], store.warnings, None, store.others))
        except StoreError as exc:
            said.append((None, store.warnings, str(exc), None))
        finally:
            state.set_state_dir(None)
    return said


def test_a_large_bundle_read_in_pieces_says_what_it_says_whole(pki, root, tmp_path, monkeypatch):
    """A bundle from the stat cache's size on is read in pieces cut after END lines: every entry,
    warning (with the file's line numbers), kept CRL and error is the whole file's, whatever piece
    a block falls in; blocks a piece cannot settle alone are read again whole."""
    import subprocess

    cas = [pki.ca(f"Piece Root {n}") for n in range(12)]
    crl = subprocess.run([need("openssl"), "crl2pkcs7", "-nocrl", "-certfile", "/dev/stdin"], input=cas[0].pem,
                         capture_output=True, check=True).stdout.replace(b"PKCS7", b"X509 CRL")
    trusted = subprocess.run([need("openssl"), "x509", "-addtrust", "serverAuth", "-addreject", "emailProtection",
                              "-trustout"], input=cas[1].pem, capture_output=True, check=True).stdout
    body = b"".join(ca.pem for ca in cas[2:])
    bad = cas[3].pem[:80] + b"*" + cas[3].pem[81:]  # not base64, in a later piece
    cases = {
        "plain with a CRL and a TRUSTED block in later pieces": body + crl + trusted + cas[0].pem,
        "CRLF": (body + trusted).replace(b"\n", b"\r\n"),
        "bad base64 late": body + bad,
        "no END line late": body + cas[0].pem[:-30],
        "a private key late": body + b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n" + cas[0].pem,
        "a block whose END is of another kind": body + b"-----BEGIN CERTIFICATE-----\n-----END X509 CRL-----\n"
                                                + cas[0].pem,
        "DER": cas[0].der + bytes(5000),
    }
    for name, content in cases.items():
        path = tmp_path / f"{len(content)}.pem"
        path.write_bytes(content)
        pieces, whole = _read_in_pieces_and_whole(path, monkeypatch)
        assert pieces == whole, name
        if name.startswith("plain"):
            assert len(pieces[0]) == 12 and pieces[3] and "line" in pieces[1][0]


def test_a_large_bundle_damaged_twice_says_what_its_whole_read_says(pki, tmp_path, monkeypatch):
    """Two faults in pieces far apart (a key, a bad block or a CRL early; a block with no END line
    late): the whole file's read names the block with no END line first, and so must the read
    in pieces, with the warnings it gives, not the fault of the first piece it met."""
    cas = [pki.ca(f"Twice Root {n}") for n in range(8)]
    body = b"".join(ca.pem for ca in cas[1:])
    early = {
        "a private key": b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        "bad base64": cas[0].pem[:80] + b"*" + cas[0].pem[81:],
        "a CRL then bad base64": b"-----BEGIN X509 CRL-----\nMIIB\n-----END X509 CRL-----\n" + cas[0].pem[:80] + b"*"
                                 + cas[0].pem[81:],
    }
    for name, first in early.items():
        path = tmp_path / f"{name}.pem"
        path.write_bytes(first + body + cas[0].pem[:-30])
        pieces, whole = _read_in_pieces_and_whole(path, monkeypatch)
        assert "no matching END line" in whole[2], name
        assert pieces == whole, name


def test_a_trust_list_naming_one_use_is_trusted_for_no_other_anywhere(pki, tmp_path):
    """A TRUSTED block whose trust list names serverAuth only: OpenSSL rejects the root for every
    other use (obj_trust: "Reject when explicit trust EKU are set and none match"), p11-kit reads
    those uses as unknown (it writes its trust list from the purposes it trusts and its reject list
    from those it distrusts). storesync reads them as no opinion, not distrust (which would take
    every root of a p11-kit openssl-bundle out of a plain bundle), and no store it writes from the
    block trusts the root for e-mail. anyExtendedKeyUsage in the list trusts it for the four named
    purposes: a store for another EKU OID (time stamping) leaves it out, where OpenSSL trusts it for
    that use too (less trust, never more: what the README says)."""
    from cryptography.x509.oid import ExtendedKeyUsageOID as Eku

    from test_nss import certutil_add, new_db

    root, other = pki.ca("One Use Root"), pki.ca("Other Email Root")
    leaf = pki.leaf("one-use.test", root, eku=[Eku.SERVER_AUTH, Eku.CLIENT_AUTH, Eku.EMAIL_PROTECTION]).write(tmp_path / "leaf.pem")
    plain = root.write(tmp_path / "root.pem")
    source = tmp_path / "source.pem"
    run(need("openssl"), "x509", "-in", plain, "-addtrust", "serverAuth", "-trustout", "-out", source)

    def openssl_accepts(purpose: str, *store: str) -> bool:
        return run("openssl", "verify", *(store or ("-CAfile", source)), "-purpose", purpose, leaf,
                   check=False).returncode == 0

    def nss_accepts(db, usage: str) -> bool:  # V: SSL server, S: e-mail signer
        certutil_add(db, "leaf", ",,", leaf)  # -V names what it verifies
        out = run("certutil", "-V", "-d", f"sql:{db}", "-u", usage, "-n", "leaf", check=False)
        return b"certificate is valid" in out.stdout + out.stderr

    assert openssl_accepts("sslserver") and not openssl_accepts("smimesign") and not openssl_accepts("sslclient")
    (entry,) = open_store(f"pem:{source}").read().values()
    assert dict(entry.trust) == {"server-auth": TRUSTED}

    db, trusted, mail, maildir = new_db(tmp_path / "db"), tmp_path / "t.pem", tmp_path / "mail.pem", tmp_path / "mail"
    result = storesync("sync", f"pem:{source}", f"nss:{db}", f"pem:{trusted}?format=trusted",
                       f"pem:{mail}?purpose=email", f"dir:{maildir}?purpose=email")
    assert result.returncode == 0, result.stdout + result.stderr
    assert nss_accepts(db, "V") and not nss_accepts(db, "S")
    assert openssl_accepts("sslserver", "-CAfile", trusted) and not openssl_accepts("smimesign", "-CAfile", trusted)
    assert b"BEGIN" not in mail.read_bytes() and not openssl_accepts("smimesign", "-CApath", maildir)

    # A merge with a bundle trusted for e-mail that holds the root: the block says purposes, the
    # bundle does not, so the block wins and the bundle loses the root rather than OpenSSL gaining e-mail.
    mail.write_bytes(root.pem + other.pem)
    config = tmp_path / "c.toml"
    config.write_text(f'[profile.m]\nmode = "merge"\nstores = ["pem:{source}", "pem:{mail}?purpose=email"]\n')
    assert storesync("sync", "--config", config, "--force").returncode == 0
    assert not openssl_accepts("smimesign") and not openssl_accepts("smimesign", "-CAfile", mail)
    # ... but a store that says purposes and trusts it for e-mail adds e-mail: no opinion is no veto
    email_db = new_db(tmp_path / "email-db")
    certutil_add(email_db, "One Use Root", ",C,", plain)
    config.write_text(f'[profile.n]\nmode = "merge"\nstores = ["pem:{source}", "nss:{email_db}"]\n')
    assert storesync("sync", "--config", config).returncode == 0
    assert openssl_accepts("smimesign") and nss_accepts(email_db, "S") and nss_accepts(email_db, "V")

    anyeku = tmp_path / "any.pem"
    run("openssl", "x509", "-in", plain, "-addtrust", "anyExtendedKeyUsage", "-trustout", "-out", anyeku)
    assert all(openssl_accepts(p, "-CAfile", anyeku) for p in ("sslserver", "sslclient", "smimesign", "any"))
    (entry,) = open_store(f"pem:{anyeku}").read().values()
    assert dict(entry.trust) == {p: TRUSTED for p in ("server-auth", "client-auth", "email", "code-signing")}
    for trusted_for, accepted in ((anyeku, True), (source, False)):  # the root itself, which has no EKU
        verify = run("openssl", "verify", "-CAfile", trusted_for, "-purpose", "timestampsign", plain, check=False)
        assert (verify.returncode == 0) == accepted, verify.stdout + verify.stderr
    stamp = tmp_path / "stamp.pem"
    result = storesync("sync", f"pem:{anyeku}", f"pem:{stamp}?purpose=1.3.6.1.5.5.7.3.8")
    assert result.returncode == 0 and "left out of this 1.3.6.1.5.5.7.3.8 store" in result.stdout, result.stdout
    assert b"BEGIN" not in stamp.read_bytes()


@pytest.mark.parametrize("trusted", [False, True], ids=["plain", "trusted"])
def test_text_around_the_blocks_stays_through_a_rewrite(pki, tmp_path, trusted):
    """A bundle's header, a note above a root and the text after the last block were deleted by
    any rewrite, `--mode add` included, with no `!` line. They stay now: the header at the top,
    a note with its root (it goes when the root goes), the tail at the end; OpenSSL reads the
    file as before."""
    import re

    kept, gone, added = (pki.ca(f"Text Around {n}") for n in ("Kept", "Gone", "Added"))
    bundle = tmp_path / "notes.pem"
    spec = f"pem:{bundle}" + ("?format=trusted" if trusted else "")
    bundle.write_bytes(b"# Corp bundle - managed by ops, OPS-1234\n# no roots without approval\n\n"
                       + b"# Gone: leaving in March\n" + gone.pem + b"\n# Kept: audited\n" + kept.pem
                       + b"Kept's note, a line of its own\n" + b"\n# end of the managed roots\n")
    source = tmp_path / "source.pem"
    source.write_bytes(kept.pem + added.pem)
    result = storesync("sync", f"pem:{source}", spec)
    assert result.returncode == 0, result.stderr
    text = bundle.read_text()
    assert text.startswith("# Corp bundle - managed by ops, OPS-1234\n# no roots without approval\n\n")
    assert "# Kept: audited\n-----BEGIN" in text
    # with its root: gone from a plain bundle, kept in a trusted one (its other purposes, which a
    # plain source does not speak for, keep it there)
    assert ("# Gone: leaving in March\n-----BEGIN" in text) == trusted
    assert text.endswith("-----\nKept's note, a line of its own\n\n# end of the managed roots\n")
    subjects = run("openssl", "storeutl", "-noout", "-text", "-certs", bundle).stdout.decode()
    assert {"Text Around Kept", "Text Around Added", *["Text Around Gone"] * trusted} == set(
        re.findall(r"Subject: CN ?= ?(Text Around \w+)", subjects))
    assert "in sync" in storesync("sync", f"pem:{source}", spec).stdout
    source.write_bytes(added.pem)
    assert storesync("sync", "--force", f"pem:{source}", spec).returncode == 0
    assert ("Kept: audited" in bundle.read_text()) == trusted and bundle.read_text().startswith("# Corp bundle")


def test_labels_a_sync_writes_are_not_kept_as_text_twice(pki, tmp_path):
    """With `comments=yes` the line above each block is storesync's `# label`: made again, never
    kept as a note above its own new one."""
    roots = [pki.ca(f"Labelled Root {n}") for n in range(3)]
    source, bundle = tmp_path / "source.pem", tmp_path / "labelled.pem"
    bundle.write_bytes(b"# managed by ops\n")
    for count in (2, 3, 1):
        source.write_bytes(b"".join(r.pem for r in roots[:count]))
        assert storesync("sync", "--force", f"pem:{source}", f"pem:{bundle}?comments=yes").returncode == 0
        lines = bundle.read_text().splitlines()
        assert lines[0] == "# managed by ops" and lines.count("# Labelled Root 0") == 1
        assert sum(line.startswith("# Labelled Root") for line in lines) == count


def test_trusted_aux_that_openssl_refuses_is_damage_not_trust(pki, root, intermediate, server_leaf, tmp_path):
    """A TRUSTED CERTIFICATE block whose X509_CERT_AUX OpenSSL cannot decode (a field given twice,
    fields out of order, a padded OID) was read field by field: with two reject lists only the last
    counted, so server-auth trust was read and spread while OpenSSL loads nothing. It is refused
    (exit 2, naming the file), as OpenSSL refuses it."""
    from storesync import der

    server, client = "1.3.6.1.5.5.7.3.1", "1.3.6.1.5.5.7.3.2"
    reject = lambda *oids: der.encode(0xA0, b"".join(der.encode_oid(o) for o in oids))  # noqa: E731
    padded = der.encode(der.OID, bytes.fromhex("2b0601050507038001"))  # serverAuth, its last arc as 80 01
    cases = {
        "two-rejects": reject(server) + reject(client),
        "two-trusts": der.encode_oid_sequence([client]) + der.encode_oid_sequence([server]),
        "alias-first": der.encode(der.UTF8_STRING, b"x") + reject(server),
        "reject-then-trust": reject(server) + der.encode_oid_sequence([server]),
        "padded-oid": der.encode(der.SEQUENCE, padded),
    }
    chain = tmp_path / "chain.pem"
    chain.write_bytes(intermediate.pem)
    leaf = server_leaf.write(tmp_path / "leaf.pem")
    for name, aux in cases.items():
        path = tmp_path / f"{name}.pem"
        path.write_bytes(pem_of(root.der + der.encode(der.SEQUENCE, aux), "TRUSTED CERTIFICATE"))
        verify = run(need("openssl"), "verify", "-purpose", "sslserver", "-CAfile", path, "-untrusted", chain, leaf,
                     check=False)
        assert verify.returncode != 0 and b"asn1" in verify.stderr.lower(), name  # OpenSSL refuses to load it
        result = storesync("list", f"pem:{path}")
        assert result.returncode == 2 and str(path) in result.stderr and "OpenSSL refuses" in result.stderr, name
        assert len(result.stderr.strip().splitlines()) == 1, name
    # the same fields once each, in order, still read (and OpenSSL loads them)
    good = tmp_path / "good.pem"
    good.write_bytes(pem_of(root.der + der.encode(der.SEQUENCE, der.encode_oid_sequence([server]) + reject(client)
                                                  + der.encode(der.UTF8_STRING, b"x")), "TRUSTED CERTIFICATE"))
    assert run(need("openssl"), "verify", "-purpose", "sslserver", "-CAfile", good, "-untrusted", chain, leaf).returncode == 0
    (entry,) = open_store(f"pem:{good}").read().values()
    assert dict(entry.trust) == {"server-auth": TRUSTED, "client-auth": DISTRUSTED} and entry.label == "x"


@pytest.mark.parametrize("spec", ["comments=yes", "format=trusted&comments=yes"])
def test_a_note_right_above_a_block_is_not_taken_for_a_label(pki, tmp_path, spec):
    """With `comments=yes` only a line that is exactly storesync's `# label` for that block is
    made again; a person's `# ...` line right above a block stayed out of every rewrite (a review
    found it), and in a trusted bundle, which gets no label lines, every such line did."""
    root, other = pki.ca("Noted Root"), pki.ca("Another Root")
    bundle, source = tmp_path / "noted.pem", tmp_path / "source.pem"
    spec = f"pem:{bundle}?{spec}"
    bundle.write_bytes(b"# ticket 42: keep this root\n" + root.pem)  # written by a person
    source.write_bytes(root.pem + other.pem)
    assert storesync("sync", "--mode", "add", f"pem:{source}", spec).returncode == 0
    text = bundle.read_text()
    assert text.count("# ticket 42: keep this root\n") == 1
    assert text.count("# Noted Root\n") == ("trusted" not in spec)
