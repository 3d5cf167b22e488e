"""Damaged input never spreads and never crashes; an empty source is never a policy (issue 12,
defects 3, 4 and 9). Every target is judged by the program that owns its format."""

from __future__ import annotations

import functools
import hashlib
import json
import ssl
import struct
import tempfile
from pathlib import Path

import pytest

from conftest import VECTORS, need, pem_of, run, storesync, vectors

JAVA_VIEW = {"jks": "JKS", "p12": "PKCS12"}


# --- helpers (test_fuzz_damaged uses them too) -----------------------------------------------


def retagged_validity(der_bytes: bytes) -> bytes:
    """The certificate with its notBefore UTCTime (tag 0x17) retagged as a PrintableString: every
    length intact, so it still looks like a certificate, but OpenSSL refuses it."""
    at = der_bytes.index(b"\x17\x0d")
    return der_bytes[:at] + b"\x13" + der_bytes[at + 1 :]


def broken_signature(der_bytes: bytes) -> bytes:
    """The last byte of the (ECDSA) signature changed: well-formed, but it does not verify."""
    return der_bytes[:-1] + bytes([der_bytes[-1] ^ 0x01])


def sst_file(*certs: bytes) -> bytes:
    """A serialized store: one CERT element (id 0x20) per value, then the end marker."""
    body = b"".join(struct.pack("<III", 0x20, 1, len(c)) + c for c in certs)
    return b"\x00\x00\x00\x00CERT" + body + bytes(12)


def openssl_loads_bundle(path: Path) -> bool:
    """Python's ssl (OpenSSL's -CAfile loader): one bad block refuses the whole file."""
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=str(path))
    except ssl.SSLError:
        return False
    return True


def loaded_by_owner(kind: str, path: Path) -> int | None:
    """How many certificates the program that owns the format loads from the store (None: it
    refuses the store)."""
    if kind == "pem":
        if not path.exists() or not path.read_bytes().strip():
            return 0
        if not openssl_loads_bundle(path):
            return None
        out = run("openssl", "storeutl", "-certs", path, check=False)
        return out.stdout.count(b"BEGIN CERTIFICATE") if out.returncode == 0 else None
    if kind == "dir":
        count = 0
        for file in sorted(path.iterdir()) if path.exists() else ():
            if file.is_file() and not file.is_symlink():
                if run("openssl", "x509", "-noout", "-in", file, check=False).returncode:
                    return None
                count += 1
        return count
    if kind == "p7b":
        if not path.exists():
            return 0
        out = run("openssl", "pkcs7", "-inform", "DER", "-print_certs", "-in", path, check=False)
        return out.stdout.count(b"BEGIN CERTIFICATE") if out.returncode == 0 else None
    if kind in JAVA_VIEW:
        if not path.exists():
            return 0
        out = run(need("keytool"), "-list", "-keystore", path, "-storetype", JAVA_VIEW[kind], "-storepass",
                  "changeit", check=False)
        return out.stdout.count(b"trustedCertEntry") if out.returncode == 0 else None
    if kind == "nss":
        out = run(need("certutil"), "-L", "-d", f"sql:{path}", check=False)
        if out.returncode:
            return None
        nicks = [line.rstrip().rpartition(" ")[0].strip() for line in out.stdout.decode().splitlines()[4:] if line.strip()]
        for nick in nicks:  # each certificate must decode, not only its row be listed
            if run("certutil", "-L", "-d", f"sql:{path}", "-n", nick, "-a", check=False).returncode:
                return None
        return len(nicks)
    raise AssertionError(kind)


def new_nss(path: Path) -> Path:
    path.mkdir()
    run(need("certutil"), "-N", "-d", f"sql:{path}", "--empty-password")
    return path


TARGET_KINDS = ("pem", "dir", "p7b", "jks", "p12", "nss")


def targets_in(tmp_path: Path, kinds=TARGET_KINDS) -> dict[str, Path]:
    paths = {}
    for kind in kinds:
        path = tmp_path / f"target-{kind}"
        paths[kind] = new_nss(path) if kind == "nss" else path
    return paths


def spec(kind: str, path: Path) -> str:
    return f"{kind}:{path}" + ("?protect=no" if kind == "p12" else "")


# --- defect 3: a damaged certificate spreads -------------------------------------------------


def test_a_damaged_certificate_in_a_bundle_is_refused_and_the_rest_is_written(tmp_path, pki):
    good = [pki.ca(f"Damage Good {n}") for n in range(2)]
    damaged = retagged_validity(pki.ca("Damage Victim").der)
    (tmp_path / "victim.der").write_bytes(damaged)
    assert run("openssl", "x509", "-inform", "DER", "-noout", "-in", tmp_path / "victim.der", check=False).returncode
    source = tmp_path / "source.pem"
    source.write_bytes(good[0].pem + pem_of(damaged) + good[1].pem)
    targets = targets_in(tmp_path)

    result = storesync("sync", f"pem:{source}", *(spec(k, p) for k, p in targets.items()))

    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout.count("! Damage Victim: damaged") == len(targets), result.stdout
    for kind, path in targets.items():
        assert loaded_by_owner(kind, path) == 2, kind


def test_a_non_certificate_in_an_sst_source_reaches_no_target(tmp_path, pki):
    good = pki.ca("Sst Good")
    source = tmp_path / "source.sst"
    source.write_bytes(sst_file(good.der, b"\x30\x06\x02\x01\x05\x02\x01\x07", good.der[:-40]))
    sst, reg, directory = tmp_path / "t.sst", tmp_path / "t.reg", tmp_path / "dir"

    result = storesync("sync", f"sst:{source}", f"sst:{sst}", f"reg:{reg}", f"dir:{directory}", "--purpose", "any")

    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("not a certificate") == 2 * 3, result.stdout
    assert loaded_by_owner("dir", directory) == 1
    listed = json.loads(storesync("list", "--json", f"sst:{sst}").stdout)["entries"]
    assert [e["sha256"] for e in listed] == [hashlib.sha256(good.der).hexdigest()]
    assert reg.read_bytes().decode("utf-16").count('"Blob"=hex:') == 1
    again = storesync("list", "--json", f"dir:{directory}")
    assert again.returncode == 0, again.stderr


@functools.cache
def sha1_root() -> bytes:
    """A root signed with SHA-1 (cryptography can neither make nor verify those; OpenSSL does
    both), as the system bundles of a few years ago held."""
    with tempfile.TemporaryDirectory() as work:
        out = Path(work) / "root.der"
        run("openssl", "req", "-x509", "-sha1", "-newkey", "rsa:2048", "-nodes", "-keyout", Path(work) / "key.pem",
            "-subj", "/O=storesync tests/CN=SHA-1 Root", "-days", "3650", "-outform", "DER", "-out", out,
            "-addext", "basicConstraints=critical,CA:TRUE")
        return out.read_bytes()


def test_a_self_signed_root_whose_signature_fails_is_refused(tmp_path, pki):
    good, forged = pki.ca("Signed Good"), broken_signature(pki.ca("Signed Forged").der)
    forged_sha1 = broken_signature(sha1_root())
    for n, der_bytes in enumerate((forged, forged_sha1)):
        (tmp_path / f"forged{n}.pem").write_bytes(pem_of(der_bytes))
        check = run("openssl", "verify", "-check_ss_sig", "-CAfile", tmp_path / f"forged{n}.pem",
                    tmp_path / f"forged{n}.pem", check=False)
        assert check.returncode and b"signature" in check.stdout + check.stderr  # loads, but does not verify
    source = tmp_path / "source.pem"
    source.write_bytes(good.pem + pem_of(forged) + pem_of(forged_sha1))
    targets = targets_in(tmp_path, ("pem", "jks", "nss"))

    result = storesync("sync", f"pem:{source}", *(spec(k, p) for k, p in targets.items()))

    assert result.returncode == 0, result.stderr
    assert result.stdout.count("! Signed Forged: a self-signed root whose signature does not verify") == 3, result.stdout
    assert result.stdout.count("a self-signed root whose signature does not verify") == 6, result.stdout
    for kind, path in targets.items():
        assert loaded_by_owner(kind, path) == 1, kind


def test_without_a_libcrypto_cryptography_judges(monkeypatch, pki):
    """A Python linked statically with OpenSSL has no libcrypto to ask: cryptography stands in,
    refusing what it cannot parse and judging the signatures it supports."""
    from storesync import loadable
    from storesync.model import Certificate

    monkeypatch.setattr(loadable, "_libcrypto", False)
    good = Certificate(pki.ca("Fallback Good").der)
    assert loadable.refusal(good, "openssl") is None and not loadable.bad_self_signature(good)
    assert loadable.openssl_loads(good) and not loadable.openssl_loads(Certificate(retagged_validity(good.der)))
    assert loadable.bad_self_signature(Certificate(broken_signature(pki.ca("Fallback Forged").der)))
    assert not loadable.bad_self_signature(Certificate(broken_signature(sha1_root())))  # unsupported


@vectors
def test_real_roots_with_der_quirks_and_old_signatures_still_pass(tmp_path):
    """Windows Update's roots hold md2/md5/sha1 signatures and four certificates cryptography
    refuses; OpenSSL and keytool load them all, so all of them are written, except the one whose
    self-signature fails."""
    roots = VECTORS / "windows" / "roots-2021.sst"
    targets = targets_in(tmp_path, ("pem", "jks"))
    result = storesync("sync", f"sst:{roots}", *(spec(k, p) for k, p in targets.items()), "--purpose", "any")
    assert result.returncode == 0, result.stderr
    assert "would not load" not in result.stdout
    # One root's own signature fails (`openssl verify -check_ss_sig` agrees): it alone is refused.
    refused = {line.split(":")[0] for line in result.stdout.splitlines() if "does not verify" in line}
    assert refused == {"  ! CCA India 2015"}, refused
    pem_part = result.stdout.split("jks:")[0]
    added = pem_part.count("\n  + ")
    # all but those Windows keeps disabled (trusted for nothing), and those it distrusts after a
    # date now passed for every purpose they had: left out, each with its ! line
    dated = pem_part.count("since that date has passed; trusted for nothing: left out")
    assert dated >= 20 and added + dated >= 430
    assert loaded_by_owner("pem", targets["pem"]) == added
    assert loaded_by_owner("jks", targets["jks"]) == added


@vectors
def test_the_disallowed_list_keeps_its_non_der_certificate(tmp_path):
    listed = VECTORS / "windows" / "disallowedcert-2018.sst"
    copy, db = tmp_path / "copy.sst", new_nss(tmp_path / "db")
    result = storesync("sync", f"sst:{listed}?role=disallowed", f"sst:{copy}?role=disallowed", f"nss:{db}")
    assert result.returncode == 0, result.stderr
    assert "would not load" not in result.stdout, result.stdout
    assert copy.read_bytes() == listed.read_bytes()
    assert loaded_by_owner("nss", db) == 71


# --- defect 4: list --json crashes on a damaged file ------------------------------------------


def test_list_json_of_a_store_holding_a_non_certificate_does_not_crash(tmp_path, pki):
    store = tmp_path / "odd.sst"
    store.write_bytes(sst_file(pki.ca("List Good").der, b"\x30\x03\x02\x01\x05"))
    result = storesync("list", "--json", f"sst:{store}")
    assert "Traceback" not in result.stderr
    assert result.returncode in (0, 2), result.stderr
    if result.returncode == 0:
        assert len(json.loads(result.stdout)["entries"]) == 2
    else:
        assert result.stderr.startswith("storesync: ") and result.stderr.count("\n") == 1


# --- defect 9: an empty source is never a policy ----------------------------------------------


@pytest.mark.parametrize("flags", [(), ("--force",)])
def test_an_empty_source_is_refused_even_with_force(tmp_path, pki, flags):
    source, target = tmp_path / "empty.pem", tmp_path / "target.pem"
    source.write_bytes(b"")
    target.write_bytes(pki.ca("Kept A").pem + pki.ca("Kept B").pem)
    before = target.read_bytes()
    result = storesync("sync", f"pem:{source}", f"pem:{target}", *flags)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "is empty" in result.stderr and "--allow-empty" in result.stderr and str(source) in result.stderr
    assert "Traceback" not in result.stderr
    assert target.read_bytes() == before


def test_allow_empty_says_so_in_so_many_words(tmp_path, pki):
    source, target = tmp_path / "empty.pem", tmp_path / "target.pem"
    source.write_bytes(b"")
    target.write_bytes(pki.ca("Gone A").pem)
    held = storesync("sync", f"pem:{source}", f"pem:{target}", "--allow-empty")
    assert held.returncode == 3, held.stdout + held.stderr  # the removal guard still speaks
    done = storesync("sync", f"pem:{source}", f"pem:{target}", "--allow-empty", "--force")
    assert done.returncode == 0, done.stdout + done.stderr
    assert target.read_bytes() == b""


def test_a_profile_with_an_empty_source_or_store_is_refused(tmp_path, pki):
    source, target = tmp_path / "empty.pem", tmp_path / "target.pem"
    a, b = tmp_path / "a.pem", tmp_path / "b.pem"
    source.write_bytes(b"")
    target.write_bytes(pki.ca("Profile Kept").pem)
    a.write_bytes(pki.ca("Merge Kept").pem)
    config = tmp_path / "storesync.toml"
    config.write_text(f'[profile.mirror]\nsource = "pem:{source}"\ntargets = ["pem:{target}"]\n\n'
                      f'[profile.merge]\nmode = "merge"\nstores = ["pem:{a}", "pem:{b}"]\n')
    first = storesync("sync", "--config", config, "--profile", "merge")  # first merge: the union
    assert first.returncode == 0, first.stdout + first.stderr
    a.write_bytes(b"")  # one store of the merge emptied: not "remove everything everywhere"
    kept_b, kept_target = b.read_bytes(), target.read_bytes()

    result = storesync("sync", "--config", config, "--force")

    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.count("is empty") == 2, result.stderr
    assert b.read_bytes() == kept_b and target.read_bytes() == kept_target
    config.write_text(config.read_text().replace('targets = [', 'allow_empty = true\ntargets = ['))
    allowed = storesync("sync", "--config", config, "--force", "--profile", "mirror")
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    assert target.read_bytes() == b""


def test_control_characters_of_a_name_never_reach_a_label(tmp_path, pki):
    """Found by the sync campaign: a NUL in a damaged CN became an NSS nickname no certutil -n
    can name (and an escape sequence would reach the terminal through the plan)."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    odd = pki.ca(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Ctl\x00Root\x1b[31m")]))
    source, db, bundle = tmp_path / "source.pem", new_nss(tmp_path / "db"), tmp_path / "out.pem"
    source.write_bytes(odd.pem)
    result = storesync("sync", f"pem:{source}", f"nss:{db}", f"pem:{bundle}?comments=yes")
    assert result.returncode == 0, result.stderr
    assert "\x00" not in result.stdout and "\x1b" not in result.stdout
    assert run("certutil", "-L", "-d", f"sql:{db}", "-n", "Ctl?Root?[31m", "-a", check=False).returncode == 0
    assert bundle.read_bytes().startswith(b"# Ctl?Root?[31m\n-----BEGIN CERTIFICATE-----")
