"""What the ninth session's adversarial review found in trust semantics, each verdict given by
the program that owns it: `openssl verify`, NSS's `certutil -V`, `keytool`."""

from __future__ import annotations

import base64
import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding

from conftest import NOW, Issued, need, run, storesync
from storesync.model import Certificate
from test_nss import certutil_add, certutil_flags, new_db
from test_translation import self_signed_without_basic_constraints


def openssl_accepts(cafile, leaf, *untrusted, purpose: str = "sslserver") -> bool:
    chain = [arg for path in untrusted for arg in ("-untrusted", path)]
    return run("openssl", "verify", "-purpose", purpose, "-CAfile", cafile, *chain, leaf, check=False).returncode == 0


def nss_accepts(db, nick: str, usage: str = "V") -> bool:
    out = run("certutil", "-V", "-d", f"sql:{db}", "-u", usage, "-n", nick, check=False)
    return b"certificate is valid" in out.stdout + out.stderr


def test_an_nss_trusted_peer_that_may_issue_is_no_anchor_in_bundles_or_keystores(pki, tmp_path):
    """NSS's P trusts a certificate as itself: certutil -V refuses what a P CA issued. Read as an
    anchor, it made OpenSSL and Java accept every certificate that CA issues. A P on a
    certificate that cannot issue (a self-signed server's) is still synced: trusted as itself."""
    peer_ca, good = pki.ca("Peer Only CA"), pki.ca("Anchor CA")
    leaf = pki.leaf("peer-ca-leaf.test", peer_ca)
    selfsigned = pki.leaf("self.test", None)
    src = new_db(tmp_path / "src")
    certutil_add(src, "peer ca", "P,,", peer_ca.write(tmp_path / "peer.pem"))
    certutil_add(src, "good", "C,,", good.write(tmp_path / "good.pem"))
    certutil_add(src, "self", "P,,", selfsigned.write(tmp_path / "self.pem"))
    certutil_add(src, "leaf", ",,", leaf.write(tmp_path / "leaf.pem"))
    assert not nss_accepts(src, "leaf")  # the owner's verdict: P is no issuer

    bundle, keystore = tmp_path / "out.pem", tmp_path / "out.jks"
    result = storesync("sync", f"nss:{src}", f"pem:{bundle}", f"jks:{keystore}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "peer ca: trusted as a peer (P) for server-auth, client-auth while it may issue" in result.stderr
    assert not openssl_accepts(bundle, tmp_path / "leaf.pem")  # before: OK
    assert openssl_accepts(bundle, tmp_path / "self.pem")  # the self-signed server, as itself
    aliases = run(need("keytool"), "-list", "-keystore", keystore, "-storepass", "changeit").stdout.decode().lower()
    assert "good," in aliases and "peer ca" not in aliases  # aliases are the NSS nicknames

    copy = new_db(tmp_path / "copy")  # into NSS again: the peer stays a peer
    assert storesync("sync", f"nss:{src}", f"nss:{copy}").returncode == 0
    assert certutil_flags(copy) == {"good": "C,,", "self": "P,,"}


def test_a_root_without_basic_constraints_is_an_nss_anchor(pki, tmp_path):
    """OpenSSL accepts what such a root issued; written to NSS as a trusted peer (P,,), certutil
    refused it ("issuer is not recognized"). It is written as an anchor (C,,)."""
    root = self_signed_without_basic_constraints("No BC Root")
    leaf = pki.leaf("nobc-leaf.test", root)
    bundle = root.write(tmp_path / "root.pem")
    assert openssl_accepts(bundle, leaf.write(tmp_path / "leaf.pem"))
    db = new_db(tmp_path / "db")
    assert storesync("sync", f"pem:{bundle}", f"nss:{db}").returncode == 0
    certutil_add(db, "leaf", ",,", tmp_path / "leaf.pem")
    assert certutil_flags(db)["No BC Root"] == "C,,"
    assert nss_accepts(db, "leaf")


def trusted_block(issued: Issued, aux: bytes) -> bytes:
    text = base64.encodebytes(issued.der + aux).replace(b"\n", b"")
    lines = b"\n".join(text[i : i + 64] for i in range(0, len(text), 64))
    return b"-----BEGIN TRUSTED CERTIFICATE-----\n" + lines + b"\n-----END TRUSTED CERTIFICATE-----\n"


def test_a_reject_list_on_an_intermediate_is_no_trust_for_the_rest(pki, tmp_path):
    """OpenSSL trusts a reject-only block for the rest only when it is self-signed; an
    intermediate stays untrusted. Read as trusted for the rest, a pem to pem sync wrote an
    explicit trust list, and OpenSSL then accepted it as an anchor."""
    root = pki.ca("Reject Int Root")
    intermediate = pki.ca("Reject Int CA", root)
    leaf = pki.leaf("reject-int.test", intermediate)
    plain = intermediate.write(tmp_path / "int.plain.pem")
    source = tmp_path / "src.pem"
    run("openssl", "x509", "-in", plain, "-addreject", "emailProtection", "-trustout", "-out", source)
    leaf_pem = leaf.write(tmp_path / "leaf.pem")
    assert not openssl_accepts(source, leaf_pem)
    target = tmp_path / "dst.pem"
    result = storesync("sync", f"pem:{source}", f"pem:{target}?format=trusted")
    assert result.returncode == 0, result.stdout + result.stderr
    assert not openssl_accepts(target, leaf_pem)  # before: OK
    db = new_db(tmp_path / "db")
    assert storesync("sync", f"pem:{source}", f"nss:{db}").returncode == 0
    certutil_add(db, "leaf", ",,", leaf_pem)
    assert not nss_accepts(db, "leaf")  # before: CT,p,C and valid


def test_an_empty_trust_list_is_rejected_for_everything_as_openssl_reads_it(pki, tmp_path):
    """A TRUSTED CERTIFICATE block whose trust list is there but empty: OpenSSL rejects the
    certificate for every purpose. It was read as a full anchor and spread to plain bundles."""
    root = pki.ca("Empty Trust Root")
    leaf_pem = pki.leaf("empty-trust.test", root).write(tmp_path / "leaf.pem")
    source = tmp_path / "src.pem"
    source.write_bytes(trusted_block(root, b"\x30\x02\x30\x00"))
    for purpose in ("sslserver", "sslclient"):
        assert not openssl_accepts(source, leaf_pem, purpose=purpose)
    plain, trusted = tmp_path / "plain.pem", tmp_path / "trusted.pem"
    result = storesync("sync", f"pem:{source}", f"pem:{plain}", f"pem:{trusted}?format=trusted")
    assert result.returncode == 0, result.stdout + result.stderr
    assert b"BEGIN" not in plain.read_bytes()  # distrusted: a plain bundle cannot say so, it leaves it out
    for purpose in ("sslserver", "sslclient"):
        assert not openssl_accepts(trusted, leaf_pem, purpose=purpose)
    assert storesync("diff", f"pem:{source}", f"pem:{trusted}?format=trusted").returncode == 0


def test_a_label_cannot_add_a_block_to_a_commented_bundle(pki, tmp_path):
    """`?comments=yes` writes each label on a `#` line: a label holding a line break and a PEM
    block wrote that block into the bundle, and OpenSSL trusted a root no store held."""
    corp, evil = pki.ca("Corp Root"), pki.ca("Evil Root")
    src = new_db(tmp_path / "src")
    certutil_add(src, "Corp Root\n" + evil.pem.decode(), "C,,", corp.write(tmp_path / "corp.pem"))
    bundle = tmp_path / "out.pem"
    assert storesync("sync", f"nss:{src}", f"pem:{bundle}?comments=yes").returncode == 0
    assert bundle.read_bytes().count(b"-----BEGIN CERTIFICATE-----") == 1
    assert not openssl_accepts(bundle, pki.leaf("evil.test", evil).write(tmp_path / "evil-leaf.pem"))
    assert openssl_accepts(bundle, pki.leaf("corp.test", corp).write(tmp_path / "corp-leaf.pem"))


def test_a_rewritten_bundle_keeps_the_crls_another_program_put_in_it(pki, tmp_path):
    """A bundle holding a root and its CRL: a sync adding a root dropped the CRL, and
    `openssl verify -crl_check` went from "certificate revoked" to "unable to get certificate CRL"."""
    root, other = pki.ca("CRL Root"), pki.ca("CRL Other Root")
    leaf = pki.leaf("revoked.test", root)
    crl = (x509.CertificateRevocationListBuilder().issuer_name(root.cert.subject)
           .last_update(NOW - dt.timedelta(days=1)).next_update(NOW + dt.timedelta(days=30))
           .add_revoked_certificate(x509.RevokedCertificateBuilder().serial_number(leaf.cert.serial_number)
                                    .revocation_date(NOW - dt.timedelta(days=1)).build())
           .sign(root.key, hashes.SHA256()))
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(root.pem + crl.public_bytes(Encoding.PEM))
    leaf_pem = leaf.write(tmp_path / "leaf.pem")

    def verdict() -> str:
        out = run("openssl", "verify", "-crl_check", "-CAfile", bundle, leaf_pem, check=False)
        return (out.stdout + out.stderr).decode()

    assert "certificate revoked" in verdict()
    result = storesync("sync", "--mode", "add", other.write(tmp_path / "other.pem"), f"pem:{bundle}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert bundle.read_bytes().count(b"-----BEGIN CERTIFICATE-----") == 2
    assert "certificate revoked" in verdict()  # before: unable to get certificate CRL


def test_remove_takes_out_a_trusted_peer_that_is_not_synced(pki, tmp_path):
    """Second review: a P on a certificate that may issue is left out of syncs, and so `--mode
    remove` of that certificate said "in sync" and left NSS accepting it as a server's."""
    peer_ca = pki.ca("Removed Peer CA")
    db = new_db(tmp_path / "db")
    certutil_add(db, "ca", "P,,", peer_ca.write(tmp_path / "ca.pem"))
    result = storesync("sync", "--mode", "remove", tmp_path / "ca.pem", f"nss:{db}")
    assert result.returncode == 0 and "1 to remove" in result.stdout, result.stdout + result.stderr
    assert "P" not in certutil_flags(db).get("ca", "")


def test_a_profile_purpose_given_as_its_oid_selects_as_its_name(pki, tmp_path):
    """Second review: `purposes = ["1.3.6.1.5.5.7.3.1"]` was accepted and selected nothing
    (compared with "server-auth" as text): a sync said "in sync" and added no root."""
    root = pki.ca("Purpose OID Root")
    db = new_db(tmp_path / "db")
    config = tmp_path / "c.toml"
    config.write_text(f'[profile.p]\nmode = "add"\nsource = "{root.write(tmp_path / "r.pem")}"\n'
                      f'targets = ["nss:{db}"]\npurposes = ["1.3.6.1.5.5.7.3.1"]\n')
    result = storesync("sync", "--config", config, "--state-dir", tmp_path / "state")
    assert result.returncode == 0 and "1 to add" in result.stdout, result.stdout + result.stderr
    assert certutil_flags(db) == {"Purpose OID Root": "C,,"}


def test_a_bundle_takes_no_distrust_after_date_from_nss(pki, tmp_path):
    """Second review: a plain bundle cannot hold a date, so it says nothing of one; a sync from it
    into NSS wrote the root again without NSS's server-auth distrust-after date, while `diff` said
    "same". Since session 15 a database holds no date at all (NSS applies none to its roots: see
    test_nss, vfychain): certdata's coming date is dropped with a `!` line, and a bundle's sync
    finds nothing to do."""
    root = pki.ca("Dated Root")
    certdata = dated_certdata(tmp_path, root, server_after="300101000000Z")
    db = new_db(tmp_path / "db")
    result = storesync("sync", f"certdata:{certdata}", f"nss:{db}")
    assert result.returncode == 0 and "distrust-after" in result.stdout, result.stdout + result.stderr
    bundle = root.write(tmp_path / "root.pem")
    for mode in ("add", "mirror"):
        result = storesync("sync", "--mode", mode, f"pem:{bundle}", f"nss:{db}")
        assert result.returncode == 0 and "in sync" in result.stdout, result.stdout + result.stderr
    assert server_after(db) is None


def dated_certdata(tmp_path, root: Issued, **after):
    """A certdata.txt trusting `root` for server-auth and e-mail, with distrust-after dates."""
    from test_certdata import HEADER, cert_object, trust_object

    fields = Certificate(root.der).fields
    label = root.cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
    path = tmp_path / "certdata.txt"
    path.write_text(HEADER + cert_object(root.der, label, **after) + "\n" + trust_object(
        fields.issuer, fields.serial, label, "TRUSTED_DELEGATOR", "TRUSTED_DELEGATOR", "MUST_VERIFY_TRUST", der=root.der))
    return path


def server_after(db) -> bytes:
    """CKA_NSS_SERVER_DISTRUST_AFTER of the database's one certificate, as NSS keeps it (None: none)."""
    import sqlite3

    with sqlite3.connect(db / "cert9.db") as conn:
        if "ace534373" not in {row[1] for row in conn.execute("PRAGMA table_info(nssPublic)")}:
            return None
        (value,) = conn.execute("SELECT ace534373 FROM nssPublic WHERE a0 = X'00000001'").fetchone()
    return None if value is None else bytes(value)



def test_per_purpose_dates_go_into_windows_stores_as_the_earliest(pki, tmp_path):
    """Second review: Windows holds one distrust-after date (DISALLOWED_FILETIME) for all its
    dated purposes; a server-auth date of 2020 and an e-mail one of 2035 were written as 2020 for
    both, the read-back found e-mail's changed, and every run failed and rolled back. The
    earliest is written for both (distrusted sooner, never later), with a `!` line."""
    root = pki.ca("Two Dates Root")
    certdata = dated_certdata(tmp_path, root, server_after="200101000000Z", email_after="350101000000Z")
    targets = [f"sst:{tmp_path / 'o.sst'}", f"reg:{tmp_path / 'o.reg'}"]
    result = storesync("sync", f"certdata:{certdata}", *targets)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "the earliest, 2020-01-01, for all of them here" in result.stdout
    again = storesync("sync", f"certdata:{certdata}", *targets)
    assert again.returncode == 0 and again.stdout.count("in sync") == 2, again.stdout
    for target in targets:
        assert storesync("diff", f"certdata:{certdata}", target).returncode == 0


def test_a_merge_of_nss_and_a_bundle_changing_a_purpose_of_a_dated_root(pki, tmp_path):
    """Second review: in a merge of NSS and a TRUSTED bundle, adding client-auth in the bundle
    took the root's entry from the bundle, which holds no dates: NSS's server-auth date was
    erased with no `!` line. Since session 15 NSS holds none (NSS applies none to a database's
    root): the date is dropped, with a `!` line, when certdata's root is written, and the merge
    adds client-auth."""
    root = pki.ca("Merge Dated Root")
    db = new_db(tmp_path / "db")
    assert storesync("sync", f"certdata:{dated_certdata(tmp_path, root, server_after='300101000000Z')}",
                     f"nss:{db}").returncode == 0
    bundle = tmp_path / "t.pem"
    config = tmp_path / "c.toml"
    config.write_text(f'[profile.m]\nmode = "merge"\nstores = ["nss:{db}", "pem:{bundle}?format=trusted"]\n')
    state = ["--state-dir", tmp_path / "state"]
    assert storesync("sync", "--config", config, *state).returncode == 0
    plain = root.write(tmp_path / "root.pem")
    run("openssl", "x509", "-in", plain, "-addtrust", "serverAuth", "-addtrust", "emailProtection",
        "-addtrust", "clientAuth", "-trustout", "-out", bundle)
    result = storesync("sync", "--config", config, *state)
    assert result.returncode == 0 and "+client-auth" in result.stdout, result.stdout + result.stderr
    assert certutil_flags(db)["Merge Dated Root"] == "CT,C,"
    assert server_after(db) is None


def test_a_reject_list_on_a_self_issued_root_naming_another_key_trusts_nothing(pki, tmp_path):
    """Second review: OpenSSL's trust for what a block does not reject needs a self-signed
    certificate (EXFLAG_SS: its authority key identifier names its own key); one whose name is
    its issuer's but whose AKID names another key was read as trusted for the rest."""
    from cryptography.hazmat.primitives.asymmetric import ec

    own, other = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "Rollover Root")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(own.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(NOW - dt.timedelta(days=1))
            .not_valid_after(NOW + dt.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(own.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(other.public_key()), critical=False)
            .sign(other, hashes.SHA256()))
    root = Issued(cert, own)
    leaf_pem = pki.leaf("rollover.test", root).write(tmp_path / "leaf.pem")
    source = tmp_path / "src.pem"
    run("openssl", "x509", "-in", root.write(tmp_path / "root.pem"), "-addreject", "emailProtection", "-trustout",
        "-out", source)
    assert not openssl_accepts(source, leaf_pem)
    db = new_db(tmp_path / "db")
    assert storesync("sync", f"pem:{source}", f"nss:{db}").returncode == 0
    certutil_add(db, "leaf", ",,", leaf_pem)
    assert not nss_accepts(db, "leaf")  # before: CT,p,C and valid


def test_a_constraint_the_verifier_cannot_judge_is_unsupported_not_invalid(pki, tmp_path):
    """Third review: an intermediate with a directoryName name constraint, which OpenSSL and nginx
    accept, was REFUSED as `invalid` with "see the verifier's message": the certificate's fault.
    cryptography's verifier cannot judge such a constraint: `unsupported`, with the openssl line."""
    run("openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", tmp_path / "k")
    ext = tmp_path / "ext.cnf"
    ext.write_text("[ncdir]\nbasicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n"
                   "nameConstraints=critical,permitted;dirName:dn\n[dn]\nCN=allowed\n[cli]\nbasicConstraints=CA:FALSE\n"
                   "keyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n")
    root = pki.ca("NC Root")
    root_pem, root_key = root.write(tmp_path / "root.pem"), tmp_path / "root.key"
    from cryptography.hazmat.primitives import serialization

    root_key.write_bytes(root.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                serialization.NoEncryption()))

    def issue(subject: str, ca: tuple, section: str, out: str):
        csr = run("openssl", "req", "-new", "-key", tmp_path / "k", "-subj", subject).stdout
        run("openssl", "x509", "-req", "-CA", ca[0], "-CAkey", ca[1], "-CAcreateserial", "-days", "30",
            "-extfile", ext, "-extensions", section, "-out", tmp_path / out, input=csr)
        return tmp_path / out

    inter = issue("/CN=NC Int", (root_pem, root_key), "ncdir", "int.pem")
    leaf = issue("/CN=allowed", (inter, tmp_path / "k"), "cli", "leaf.pem")
    ok = run("openssl", "verify", "-purpose", "sslclient", "-CAfile", root_pem, "-untrusted", inter, leaf, check=False)
    assert ok.returncode == 0, ok.stdout
    result = storesync("check", leaf, "--chain", inter, "--store", f"pem:{root_pem}")
    assert result.returncode == 1 and "REFUSED, unsupported" in result.stdout, result.stdout + result.stderr
    assert "openssl verify -CAfile ROOT.pem" in result.stdout


def test_diff_says_how_many_each_holds_when_one_cannot_say_the_others(pki, tmp_path):
    """Last review: a distrust list against an empty .p7b (which cannot say distrust) was "same:
    71 certificates in both" while the .p7b held none."""
    bad = pki.ca("Distrusted Root")
    source = tmp_path / "src.pem"
    run("openssl", "x509", "-in", bad.write(tmp_path / "bad.pem"), "-addreject", "anyExtendedKeyUsage", "-trustout",
        "-out", source)
    target = f"p7b:{tmp_path / 'out.p7b'}"
    assert storesync("sync", f"pem:{source}", target).returncode == 0
    result = storesync("diff", f"pem:{source}", target)
    assert result.returncode == 0 and result.stdout == "same, as far as both can say: 1 certificates in A, 0 in B\n"


def test_diff_agrees_with_sync_on_a_root_sync_refuses(pki, tmp_path):
    """Last review: a root whose own signature fails (Windows Update ships one) is left out of a
    .p7b by sync, which then says "in sync"; `diff` still counted it and exited 1."""
    from test_damaged import broken_signature, sst_file

    good, forged = pki.ca("Diff Good"), broken_signature(pki.ca("Diff Forged").der)
    source = tmp_path / "roots.sst"
    source.write_bytes(sst_file(good.der, forged))
    target = f"p7b:{tmp_path / 'out.p7b'}"
    synced = storesync("sync", f"sst:{source}", target, "--purpose", "any")
    assert synced.returncode == 0 and "signature does not verify" in synced.stdout, synced.stdout + synced.stderr
    assert "in sync" in storesync("sync", f"sst:{source}", target, "--purpose", "any").stdout
    result = storesync("diff", f"sst:{source}", target)
    assert result.returncode == 0, result.stdout
