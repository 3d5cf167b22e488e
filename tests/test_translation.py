"""Trust translated between store kinds (issue 13): a sync never widens trust and never loses
it silently. Each store is checked with the program that owns its format where there is one."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import subprocess
import sys

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from storesync.model import ANCHOR, DISTRUST, DISTRUSTED, TRUSTED
from storesync.stores import open_store
from storesync.stores.sst import END_MARKER, MAGIC

from conftest import NOW, VECTORS, Issued, need, pem_of, run, storesync, vectors

SERVER, EMAIL = "server-auth", "email"


# --- helpers -------------------------------------------------------------------------------


def trustout(issued, path, *args) -> bytes:
    """The certificate as OpenSSL writes a TRUSTED CERTIFICATE block with `args` (-addtrust …)."""
    plain = path.with_suffix(".plain.pem")
    issued.write(plain)
    run(need("openssl"), "x509", "-in", plain, *args, "-trustout", "-out", path)
    return path.read_bytes()


def listed(spec) -> dict[str, dict]:
    result = storesync("list", "--json", spec)
    assert result.returncode == 0, result.stderr
    return {e["sha256"]: e for e in json.loads(result.stdout)["entries"]}


def sha(issued) -> str:
    return hashlib.sha256(issued.der).hexdigest()


def openssl_aux(path) -> str:
    """What OpenSSL says of every TRUSTED CERTIFICATE block of a file (trusted/rejected uses)."""
    text = path.read_text()
    blocks = re.findall(r"-----BEGIN TRUSTED CERTIFICATE-----.*?-----END TRUSTED CERTIFICATE-----\n", text, re.S)
    return "\n".join(run("openssl", "x509", "-noout", "-text", input=b.encode()).stdout.decode() for b in blocks)


def openssl_subjects(path) -> list[str]:
    """The subjects of a bundle in file order, as OpenSSL reads them."""
    p7 = run("openssl", "crl2pkcs7", "-nocrl", "-certfile", path).stdout
    out = run("openssl", "pkcs7", "-print_certs", "-noout", input=p7).stdout.decode()
    return re.findall(r"^subject=.*CN ?= ?(.+)$", out, re.M)


def self_signed_without_basic_constraints(subject: str) -> Issued:
    """A v3 root like Microsoft Root Authority: self-signed, extensions (a key identifier and
    keyCertSign, which OpenSSL takes for a CA), no basicConstraints."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, subject)])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(NOW - dt.timedelta(days=1))
            .not_valid_after(NOW + dt.timedelta(days=365))
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .sign(key, hashes.SHA256()))
    return Issued(cert, key)


def el(prop_id: int, value: bytes) -> bytes:
    return prop_id.to_bytes(4, "little") + (1).to_bytes(4, "little") + len(value).to_bytes(4, "little") + value


@pytest.fixture(scope="module")
def roots(pki):
    return [pki.ca(f"Translation Root {n}") for n in range(4)]


# --- 1. per-purpose distrust into .reg -----------------------------------------------------


def test_partial_distrust_into_reg_is_distrusted_for_all(roots, tmp_path):
    bad, good = roots[:2]
    source = tmp_path / "src.pem"
    source.write_bytes(trustout(bad, tmp_path / "bad.pem", "-addreject", "serverAuth") + good.pem)
    result = storesync("sync", f"pem:{source}?format=trusted", f"sst:{tmp_path / 'r.sst'}", f"reg:{tmp_path / 'r.reg'}")
    assert result.returncode == 0, result.stdout + result.stderr
    reg_part = result.stdout[result.stdout.index("reg:"):]
    assert "! Translation Root 0: distrusted for some purposes: distrusted for all here" in reg_part
    assert "Traceback" not in result.stderr
    # Windows has no per-purpose distrust: the root is in Disallowed, the good one in ROOT
    text = (tmp_path / "r.reg").read_bytes().decode("utf-16")
    sha1 = hashlib.sha1(bad.der).hexdigest().upper()
    assert f"\\Disallowed\\Certificates\\{sha1}]" in text
    assert f"\\ROOT\\Certificates\\{hashlib.sha1(good.der).hexdigest().upper()}]" in text
    assert listed(f"reg:{tmp_path / 'r.reg'}")[sha(bad)]["trust"] == DISTRUST
    again = storesync("sync", f"pem:{source}?format=trusted", f"reg:{tmp_path / 'r.reg'}")
    assert again.returncode == 0 and "in sync" in again.stdout, again.stdout
    assert storesync("diff", f"pem:{source}?format=trusted", f"reg:{tmp_path / 'r.reg'}").returncode == 0


@pytest.mark.parametrize("windows", ["reg:{d}/r.reg", "sst:{d}/d.sst?role=disallowed"])
def test_a_merge_with_a_windows_store_keeps_per_purpose_distrust(roots, tmp_path, windows):
    bad, good = roots[:2]
    bundle = tmp_path / "t.pem"
    bundle.write_bytes(trustout(bad, tmp_path / "bad.pem", "-addreject", "serverAuth") + good.pem)
    config = tmp_path / "s.toml"
    config.write_text(f'[profile.m]\nmode = "merge"\nstores = ["pem:{bundle}?format=trusted", "{windows.format(d=tmp_path)}"]\n')
    env_state = ["--state-dir", tmp_path / "state"]
    first = storesync("sync", "--config", config, *env_state)
    assert first.returncode == 0, first.stdout + first.stderr
    for _ in range(2):  # the Windows store's "distrusted for all" is what it can say, not a change
        again = storesync("sync", "--config", config, *env_state)
        assert again.returncode == 0 and "~" not in again.stdout and "written" not in again.stdout, again.stdout
    aux = openssl_aux(bundle)
    assert "Rejected Uses:\n  TLS Web Server Authentication\n" in aux and "No Trusted Uses." in aux


@vectors
def test_certdata_with_diginotar_into_sst_and_reg(tmp_path):
    certdata = VECTORS / "nss" / "certdata-3.87.txt"
    if not certdata.exists():
        pytest.fail("certdata-3.87.txt is missing from ../shared/vectors (see its README)")
    result = storesync("sync", f"certdata:{certdata}", f"sst:{tmp_path / 'r.sst'}", f"reg:{tmp_path / 'r.reg'}")
    assert result.returncode == 0, result.stderr
    assert "DigiNotar Root CA: distrusted for some purposes: distrusted for all here" in result.stdout
    distrusted = [e for e in listed(f"reg:{tmp_path / 'r.reg'}").values() if e["trust"] == DISTRUST]
    assert [e["label"] for e in distrusted] == ["Explicitly Distrust DigiNotar Root CA"]
    assert (tmp_path / "r.sst").exists()


# --- 2 and 5. TRUSTED CERTIFICATE blocks read without ?format=trusted --------------------


def test_trusted_blocks_without_the_option_keep_distrust_and_purposes(roots, tmp_path):
    bad, mail, good = roots[:3]
    source = tmp_path / "src.pem"
    source.write_bytes(trustout(bad, tmp_path / "bad.pem", "-addreject", "serverAuth")
                       + trustout(mail, tmp_path / "mail.pem", "-addtrust", "emailProtection") + good.pem)
    target = tmp_path / "t.pem"
    result = storesync("sync", f"pem:{source}", f"pem:{target}?format=trusted")
    assert result.returncode == 0, result.stderr
    aux = openssl_aux(target)
    assert "Rejected Uses:\n  TLS Web Server Authentication" in aux
    assert "Trusted Uses:\n  E-mail Protection" in aux
    assert storesync("diff", f"pem:{source}", f"pem:{target}?format=trusted").returncode == 0
    again = storesync("sync", f"pem:{source}", f"pem:{target}?format=trusted")
    assert "in sync" in again.stdout


def test_a_hashed_directory_with_trusted_files_keeps_their_distrust(roots, tmp_path):
    bad, good = roots[:2]
    capath = tmp_path / "ca"
    capath.mkdir()
    trustout(bad, capath / "bad.pem", "-addreject", "serverAuth")
    good.write(capath / "good.pem")
    target = tmp_path / "t.pem"
    result = storesync("sync", f"dir:{capath}", f"pem:{target}?format=trusted")
    assert result.returncode == 0, result.stderr
    assert "Rejected Uses:\n  TLS Web Server Authentication" in openssl_aux(target)
    assert storesync("diff", f"dir:{capath}", f"pem:{target}?format=trusted").returncode == 0


def test_a_target_holding_trusted_blocks_keeps_them(roots, tmp_path):
    bad, good, new = roots[:3]
    target = tmp_path / "t.pem"
    target.write_bytes(trustout(bad, tmp_path / "bad.pem", "-addreject", "anyExtendedKeyUsage") + good.pem)
    source = tmp_path / "src.pem"
    source.write_bytes(good.pem + new.pem)
    result = storesync("sync", f"pem:{source}", f"pem:{target}")
    assert result.returncode == 0, result.stderr
    assert "Rejected Uses:\n  Any Extended Key Usage" in openssl_aux(target)
    assert listed(f"pem:{target}")[sha(bad)]["trust"] == DISTRUST
    assert sha(new) in listed(f"pem:{target}")


def _nss_distrusting(tmp_path, issued):
    from test_nss import certutil_add, new_db

    db = new_db(tmp_path / "db")
    issued.write(tmp_path / "x.pem")
    certutil_add(db, "bad", "p,p,p", tmp_path / "x.pem")
    return f"nss:{db}"


def _sst_disallowed(tmp_path, issued):
    path = tmp_path / "disallowed.sst"
    path.write_bytes(MAGIC + el(0x20, issued.der) + END_MARKER)
    return f"sst:{path}?role=disallowed"


def _reg_disallowed(tmp_path, issued):
    path = tmp_path / "d.reg"
    assert storesync("sync", _sst_disallowed(tmp_path, issued), f"reg:{path}").returncode == 0
    return f"reg:{path}"


def _trusted_bundle(tmp_path, issued):
    path = tmp_path / "rejects.pem"
    trustout(issued, path, "-addreject", "anyExtendedKeyUsage")
    return f"pem:{path}?format=trusted"


def _trusted_blocks_plain_read(tmp_path, issued):
    return _trusted_bundle(tmp_path, issued).removesuffix("?format=trusted")


@pytest.mark.parametrize("source_kind", [_nss_distrusting, _sst_disallowed, _reg_disallowed, _trusted_bundle,
                                         _trusted_blocks_plain_read])
@pytest.mark.parametrize("target_kind", ["pem?format=trusted", "nss", "pem", "jks"])
def test_add_mode_carries_distrust_from_every_source_kind(roots, tmp_path, source_kind, target_kind):
    bad, other = roots[:2]
    kind, _, option = target_kind.partition("?")
    target = f"{kind}:{tmp_path / ('t.' + kind)}" + (f"?{option}" if option else "")
    if kind == "nss":
        from test_nss import new_db

        new_db(tmp_path / "t.nss")
    assert storesync("sync", f"pem:{bad.write(tmp_path / 'a.pem')}", target).returncode == 0
    assert storesync("sync", "--mode", "add", f"pem:{other.write(tmp_path / 'b.pem')}", target).returncode == 0
    result = storesync("sync", "--mode", "add", source_kind(tmp_path, bad), target)
    assert result.returncode == 0, result.stdout + result.stderr
    after = listed(target)
    assert sha(other) in after  # add never removes what the source does not speak of
    if option == "format=trusted":
        assert after[sha(bad)]["trust"] == DISTRUST
        assert "Rejected Uses:\n  Any Extended Key Usage" in openssl_aux(tmp_path / "t.pem")
    elif kind == "nss":
        assert after[sha(bad)]["trust"] == DISTRUST
        listing = run("certutil", "-L", "-d", f"sql:{tmp_path / 't.nss'}").stdout.decode()
        assert re.search(r"^Translation Root 0\s+p,p,p$", listing, re.M), listing
    else:  # a kind that cannot say distrust: removed, and the plan says so
        assert sha(bad) not in after
        assert re.search(r"^  ! .+: distrusted: left out", result.stdout, re.M), result.stdout
    if kind == "jks":
        keytool = run(need("keytool"), "-list", "-keystore", tmp_path / "t.jks", "-storepass", "changeit").stdout.decode()
        assert "Your keystore contains 1 entry" in keytool


# --- 3 and 4. ca_only --------------------------------------------------------------------


def test_ca_only_keeps_a_self_signed_root_without_basic_constraints(pki, roots, tmp_path):
    root_der = self_signed_without_basic_constraints("Old Style Root").der
    root_pem = tmp_path / "old.pem"
    root_pem.write_bytes(pem_of(root_der))
    # OpenSSL accepts it as an anchor for itself
    assert run("openssl", "verify", "-CAfile", root_pem, root_pem, check=False).returncode == 0
    leaf = pki.leaf("pasted.test", roots[0])
    source = tmp_path / "src.pem"
    source.write_bytes(pem_of(root_der) + leaf.pem)
    result = storesync("sync", f"pem:{source}", f"sst:{tmp_path / 'copy.sst'}")
    assert result.returncode == 0, result.stderr
    after = listed(f"sst:{tmp_path / 'copy.sst'}")
    assert hashlib.sha256(root_der).hexdigest() in after
    assert sha(leaf) not in after  # a leaf issued by someone else is still refused
    assert "! pasted.test: not a CA certificate: refused (ca_only)" in result.stdout


@vectors
def test_every_root_of_windows_update_survives_a_copy(tmp_path):
    roots_sst = VECTORS / "windows" / "roots-2021.sst"
    copy = tmp_path / "copy.sst"
    result = storesync("sync", f"sst:{roots_sst}", f"sst:{copy}")
    assert result.returncode == 0, result.stderr
    assert "refused" not in result.stdout
    assert len(listed(f"sst:{copy}")) == len(listed(f"sst:{roots_sst}"))
    assert copy.read_bytes() == roots_sst.read_bytes()
    assert storesync("diff", f"sst:{roots_sst}", f"sst:{copy}").returncode == 0


def test_narrowing_the_trust_of_a_non_ca_is_never_refused(pki, roots, tmp_path):
    leaf = pki.leaf("narrowed.test", roots[0])
    target = tmp_path / "t.pem"
    other = trustout(roots[1], tmp_path / "other.pem", "-addtrust", "serverAuth")  # not every certificate narrows
    target.write_bytes(other + trustout(leaf, tmp_path / "wide.pem", "-addtrust", "serverAuth", "-addtrust", "emailProtection"))
    source = tmp_path / "src.pem"
    source.write_bytes(other + trustout(leaf, tmp_path / "narrow.pem", "-addtrust", "emailProtection"))
    result = storesync("sync", f"pem:{source}?format=trusted", f"pem:{target}?format=trusted")
    assert result.returncode == 0, result.stderr
    assert "refused" not in result.stdout and "~ narrowed.test" in result.stdout
    aux = openssl_aux(target)
    assert "Trusted Uses:\n  E-mail Protection\n" in aux
    assert storesync("diff", f"pem:{source}?format=trusted", f"pem:{target}?format=trusted").returncode == 0
    # raising it back is still refused
    (tmp_path / "wide2.pem").write_bytes(other + (tmp_path / "wide.pem").read_bytes())
    back = storesync("sync", f"pem:{tmp_path / 'wide2.pem'}?format=trusted", f"pem:{target}?format=trusted")
    assert "! narrowed.test: not a CA certificate: trust for server-auth refused (ca_only)" in back.stdout
    assert "Trusted Uses:\n  E-mail Protection\n" in openssl_aux(target)


def test_a_non_ca_moved_to_another_purpose_loses_the_old_one_and_never_gains_the_new(pki, roots, tmp_path):
    leaf = pki.leaf("moved.test", roots[0])
    other = trustout(roots[1], tmp_path / "other.pem", "-addtrust", "serverAuth")
    target = tmp_path / "t.pem"
    target.write_bytes(other + trustout(leaf, tmp_path / "server.pem", "-addtrust", "serverAuth"))
    source = tmp_path / "src.pem"
    source.write_bytes(other + trustout(leaf, tmp_path / "mail.pem", "-addtrust", "emailProtection"))
    result = storesync("sync", f"pem:{source}?format=trusted", f"pem:{target}?format=trusted")
    assert result.returncode == 0, result.stderr
    assert "! moved.test: not a CA certificate: trust for email refused (ca_only)" in result.stdout
    assert "- moved.test" in result.stdout  # trusted for nothing left: removed, never kept for server-auth
    assert sha(leaf) not in listed(f"pem:{target}")
    assert "moved.test" not in run("openssl", "crl2pkcs7", "-nocrl", "-certfile", target).stdout.decode(errors="replace")


# --- 6. --mode add appends -----------------------------------------------------------------


def test_add_mode_appends_after_the_targets_own(roots, tmp_path):
    a, b, c, d = roots
    target = tmp_path / "t.pem"
    target.write_bytes(a.pem + b.pem)
    source = tmp_path / "src.pem"
    source.write_bytes(d.pem + b.pem + c.pem)
    assert storesync("sync", "--mode", "add", f"pem:{source}", f"pem:{target}").returncode == 0
    assert openssl_subjects(target) == [f"Translation Root {n}" for n in (0, 1, 3, 2)]


# --- 7. FRIENDLY_NAME with a NUL -----------------------------------------------------------


def test_friendly_name_is_cut_at_the_first_nul(roots, tmp_path):
    root = roots[0]
    raw = "Corp Root".encode("utf-16-le") + b"\x00\x00" + b"\x00\xd8junk" + b"\x00\x00"  # a lone surrogate after it
    source = tmp_path / "src.sst"
    source.write_bytes(MAGIC + el(11, raw) + el(0x20, root.der) + END_MARKER)
    assert listed(f"sst:{source}")[sha(root)]["label"] == "Corp Root"
    assert storesync("sync", f"sst:{source}", f"pem:{tmp_path / 't.pem'}?comments=yes").returncode == 0
    assert (tmp_path / "t.pem").read_text().startswith("# Corp Root\n-----BEGIN")
    assert storesync("sync", f"sst:{source}", f"jks:{tmp_path / 't.jks'}").returncode == 0
    keytool = run(need("keytool"), "-list", "-keystore", tmp_path / "t.jks", "-storepass", "changeit").stdout.decode()
    assert re.search(r"^corp root,", keytool, re.M), keytool
    # the property's bytes are kept as they were
    assert storesync("sync", f"sst:{source}", f"sst:{tmp_path / 'copy.sst'}").returncode == 0
    assert (tmp_path / "copy.sst").read_bytes() == source.read_bytes()


# --- 8. reg base=user ----------------------------------------------------------------------


def test_reg_base_user_means_the_current_user(roots, tmp_path):
    out = tmp_path / "u.reg"
    result = storesync("sync", f"pem:{roots[0].write(tmp_path / 'r.pem')}", f"reg:{out}?base=user")
    assert result.returncode == 0, result.stderr
    text = out.read_bytes().decode("utf-16")
    assert "[HKEY_CURRENT_USER\\Software\\Microsoft\\SystemCertificates\\ROOT\\Certificates\\" in text
    assert "HKEY_LOCAL_MACHINE" not in text
    assert "as the user" in result.stdout


@pytest.mark.parametrize("options", ["base=user&hive=HKLM", "base=machine&hive=HKCU"])
def test_reg_base_contradicting_hive_is_an_error(roots, tmp_path, options):
    out = tmp_path / "u.reg"
    result = storesync("sync", f"pem:{roots[0].write(tmp_path / 'r.pem')}", f"reg:{out}?{options}")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and str(out) in result.stderr and "hive" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()


# --- 9. a closed pipe ----------------------------------------------------------------------


@pytest.mark.parametrize("args", [["list", "--json"], ["sync", "--dry-run"], ["diff"], ["list"]])
def test_a_closed_pipe_ends_quietly(roots, tmp_path, args):
    bundle = tmp_path / "b.pem"
    bundle.write_bytes(b"".join(r.pem for r in roots))
    stores = [f"pem:{bundle}"] + ([f"pem:{tmp_path / 'new.pem'}"] if args[0] != "list" else [])
    if args[0] == "diff":
        (tmp_path / "new.pem").write_bytes(roots[0].pem)
    proc = subprocess.Popen([sys.executable, "-m", "storesync", *args, *stores],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before the first line, as with `| head -c0`
    stderr = proc.stderr.read().decode()
    proc.wait(timeout=60)
    assert stderr == ""
    assert proc.returncode == -13  # ended by SIGPIPE, as cat or grep would be


# --- 10. list reads a plain store as sync and diff do --------------------------------------


@pytest.mark.parametrize("kind", ["pem", "dir", "p7b", "jks"])
@pytest.mark.parametrize("purpose", [None, "client-auth", "any"])
def test_list_of_a_plain_store_shows_anchors_for_its_purpose(roots, tmp_path, kind, purpose):
    root = roots[0]
    spec = f"{kind}:{tmp_path / ('s.' + kind)}"
    assert storesync("sync", "--purpose", "any", f"pem:{root.write(tmp_path / 'r.pem')}", spec).returncode == 0
    query = f"?purpose={purpose}" if purpose else ""
    shown = listed(spec + query)[sha(root)]["trust"]
    if purpose == "any":
        assert shown == ANCHOR
    else:
        assert shown == {purpose or SERVER: TRUSTED}


def test_list_diff_and_sync_agree_on_a_plain_store(roots, tmp_path):
    from test_nss import new_db

    bundle = tmp_path / "b.pem"
    bundle.write_bytes(roots[0].pem + roots[1].pem)
    db = new_db(tmp_path / "db")
    assert storesync("sync", f"pem:{bundle}", f"nss:{db}").returncode == 0
    assert storesync("diff", f"pem:{bundle}", f"nss:{db}").returncode == 0
    nss, pem = listed(f"nss:{db}"), listed(f"pem:{bundle}")
    assert {k: e["trust"] for k, e in nss.items()} == {k: e["trust"] for k, e in pem.items()}
    assert "C,," in run("certutil", "-L", "-d", f"sql:{db}").stdout.decode()


# --- found by the contract suite: a reject list alone reads as trust for the rest ---------------


@pytest.mark.parametrize("kind", ["pem", "dir"])
def test_distrust_for_some_purposes_with_no_trust_is_written_as_distrust_for_all(pki, tmp_path, kind):
    """NSS `,p,` says e-mail distrusted and nothing of the rest. Written into TRUSTED CERTIFICATE
    blocks as a reject list alone, OpenSSL reads it as trusted for every other purpose (a widening):
    it must be written as rejected for all, with a `!` line, and OpenSSL must refuse it for TLS."""
    from test_nss import certutil_add, new_db

    root = pki.ca("Lone Reject Root")
    db = new_db(tmp_path / "nss")
    certutil_add(db, "lone", ",p,", root.write(tmp_path / "root.pem"))
    target = tmp_path / ("out.pem" if kind == "pem" else "ca")
    spec = f"{kind}:{target}?format=trusted"
    result = storesync("sync", f"nss:{db}", spec)
    assert result.returncode == 0, result.stderr
    assert "distrusted for all here" in result.stdout, result.stdout
    [entry] = open_store(spec).read().values()
    assert dict(entry.trust) == DISTRUST
    cafile = ["-CAfile", target] if kind == "pem" else ["-CApath", target]
    verdict = run("openssl", "verify", *cafile, "-purpose", "sslserver", tmp_path / "root.pem", check=False)
    assert verdict.returncode != 0, verdict.stdout  # before: "OK", trusted for TLS servers
    again = storesync("sync", f"nss:{db}", spec)
    assert again.returncode == 0 and "in sync" in again.stdout, again.stdout


def test_a_reject_list_alone_is_read_as_openssl_reads_it_trusted_for_the_rest(pki, tmp_path):
    """The reading side of the test above. OpenSSL trusts a self-signed root whose TRUSTED
    CERTIFICATE block rejects only serverAuth for every other purpose (its compatibility rule,
    even with a purpose set, as TLS stacks set one). A sync into NSS must give NSS the same
    verdicts: refused for TLS servers, accepted for TLS clients."""
    from test_nss import certutil_add, certutil_flags, new_db

    root = pki.ca("Reject Server Root")
    leaf = pki.leaf("reject-leaf.example", root)
    bundle = tmp_path / "src.pem"
    bundle.write_bytes(trustout(root, tmp_path / "root.pem", "-addreject", "serverAuth"))
    leaf_pem = leaf.write(tmp_path / "leaf.pem")

    def openssl(purpose: str) -> bool:
        return run("openssl", "verify", "-CAfile", bundle, "-purpose", purpose, leaf_pem, check=False).returncode == 0

    assert (openssl("sslserver"), openssl("sslclient")) == (False, True)  # the oracle's reading

    db = new_db(tmp_path / "nss")
    result = storesync("sync", f"pem:{bundle}", f"nss:{db}")
    assert result.returncode == 0, result.stderr
    certutil_add(db, "leaf", ",,", leaf_pem)

    def nss(usage: str) -> bool:
        out = run("certutil", "-V", "-d", f"sql:{db}", "-u", usage, "-n", "leaf", check=False)
        return b"certificate is valid" in out.stdout + out.stderr

    assert (nss("V"), nss("C")) == (False, True), certutil_flags(db)


# --- a purpose by its EKU OID: each kind holds it, or says it leaves it out ------------------------


@pytest.mark.parametrize("target, holds", [
    ("pem:{d}/t.pem?format=trusted", True), ("dir:{d}/t?format=trusted", True), ("sst:{d}/t.sst", True),
    ("reg:{d}/t.reg", True), ("nss:{d}/db", False),
])
def test_a_purpose_by_its_oid_is_held_or_left_out_per_kind(roots, tmp_path, target, holds):
    """Per-purpose kinds differ in what purposes they can hold: a TRUSTED block's lists and
    Windows' EKU property take any OID, NSS's trust object the four named purposes only. A
    root trusted for time stamping (1.3.6.1.5.5.7.3.8) is written where it can be, and read back
    so (for a TRUSTED block, `openssl verify -purpose timestampsign` accepts it); into NSS it is
    left out with a `!` line, never a failed write."""
    from test_nss import new_db

    root, stamp = roots[0], "1.3.6.1.5.5.7.3.8"
    spec = target.format(d=tmp_path)
    if spec.startswith("nss:"):
        new_db(tmp_path / "db")
    result = storesync("sync", f"pem:{root.write(tmp_path / 'r.pem')}?purpose={stamp}", spec)
    assert result.returncode == 0, result.stdout + result.stderr
    assert ("left out" in result.stdout) != holds, result.stdout
    assert listed(spec).get(sha(root), {}).get("trust") == ({stamp: TRUSTED} if holds else None)
    if spec.startswith("pem:"):
        for purpose, accepted in (("timestampsign", True), ("sslserver", False)):
            verify = run("openssl", "verify", "-CAfile", tmp_path / "t.pem", "-purpose", purpose, tmp_path / "r.pem",
                         check=False)
            assert (verify.returncode == 0) == accepted, verify.stdout + verify.stderr
    assert storesync("sync", f"pem:{tmp_path / 'r.pem'}?purpose={stamp}", spec).returncode == 0  # in sync


@pytest.mark.parametrize("mode", ["mirror", "add"])
def test_a_distrust_a_plain_source_cannot_lift_is_shown_as_kept(roots, tmp_path, mode):
    """A plain bundle cannot say distrust, so its trust never lifts a target's distrust (distrust
    wins). The plan said "in sync" and nothing else, while `diff` reported the difference: it now
    says, with a `!` line, which distrust it kept and for which purpose."""
    from test_nss import new_db

    bad, good = roots[:2]
    seed = tmp_path / "seed.pem"
    seed.write_bytes(trustout(bad, tmp_path / "bad.pem", "-addreject", "serverAuth") + good.pem)
    plain = tmp_path / "plain.pem"
    plain.write_bytes(bad.pem + good.pem)
    db = new_db(tmp_path / "db")
    targets = [f"nss:{db}", f"pem:{tmp_path / 't.pem'}?format=trusted"]
    assert storesync("sync", f"pem:{seed}", *targets).returncode == 0
    before = run("certutil", "-L", "-d", f"sql:{db}").stdout

    result = storesync("sync", "--mode", mode, f"pem:{plain}", *targets)
    assert result.returncode == 0, result.stderr
    kept = [line for line in result.stdout.splitlines() if line.startswith("  ! ")]
    assert len(kept) == 2 and all("server-auth" in line and "kept" in line for line in kept), result.stdout
    assert run("certutil", "-L", "-d", f"sql:{db}").stdout == before  # the distrust itself stays, as NSS reads it
    assert "Rejected Uses:\n  TLS Web Server Authentication" in openssl_aux(tmp_path / "t.pem")
    assert storesync("diff", f"pem:{plain}", targets[0]).returncode == 1  # what the `!` line says
