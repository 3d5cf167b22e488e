"""`storesync check`: every reason code against real stores, and agreement with `openssl verify`."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID as EKU
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import NOW, Issued, need, run, storesync
from storesync import check as doctor
from storesync.engine.plan import make_plan
from storesync.model import CLIENT_AUTH, DISTRUSTED, Certificate, Entry, TrustSet
from storesync.stores import open_store

DAY = dt.timedelta(days=1)


class Chain:
    """One small PKI for the whole module: a root, an intermediate, leaves of every kind."""

    def __init__(self, pki):
        # Root and intermediate older than every leaf, as in real life.
        self.root = pki.ca("Check Root", not_before=NOW - 1000 * DAY)
        self.inter = pki.ca("Check Intermediate", self.root, not_before=NOW - 1000 * DAY)
        self.client = pki.leaf("client.check", self.inter, eku=[EKU.CLIENT_AUTH])
        self.server = pki.leaf("server.check", self.inter, eku=[EKU.SERVER_AUTH])
        self.mail = pki.leaf("mail.check", self.inter, eku=[EKU.EMAIL_PROTECTION])
        self.expired = pki.leaf("expired.check", self.inter, eku=[EKU.CLIENT_AUTH],
                                not_before=NOW - 400 * DAY, not_after=NOW - 30 * DAY)
        self.future = pki.leaf("future.check", self.inter, eku=[EKU.CLIENT_AUTH],
                               not_before=NOW + 30 * DAY, not_after=NOW + 400 * DAY)
        self.other = pki.ca("Unrelated Root")
        # An intermediate that expired, with a leaf still inside its own dates.
        self.old_inter = pki.ca("Old Intermediate", self.root, not_before=NOW - 400 * DAY, not_after=NOW - DAY)
        self.under_old = pki.leaf("under-old.check", self.old_inter, eku=[EKU.CLIENT_AUTH],
                                  not_before=NOW - 300 * DAY, not_after=NOW + 300 * DAY)
        self.server_ca = ca_with_eku(self.root, "Server-only Intermediate", [EKU.SERVER_AUTH])
        self.under_server_ca = pki.leaf("under-server-ca.check", self.server_ca)


def ca_with_eku(root: Issued, subject: str, eku) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name.from_rfc4514_string(f"CN={subject}"))
        .issuer_name(root.cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(NOW - DAY).not_valid_after(NOW + 900 * DAY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(root.key.public_key()), critical=False)
        .add_extension(x509.ExtendedKeyUsage(eku), critical=False)
        .sign(root.key, hashes.SHA256())
    )
    return Issued(cert, key)


@pytest.fixture(scope="module")
def ca(pki) -> Chain:
    return Chain(pki)


@pytest.fixture(scope="module")
def files(ca, tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("check")
    out = {}
    for name in ("root", "inter", "client", "server", "mail", "expired", "future", "other", "old_inter",
                 "under_old", "server_ca", "under_server_ca"):
        out[name] = getattr(ca, name).write(d / f"{name}.pem")
    out["root-store"] = ca.root.write(d / "root-store.pem")
    out["other-store"] = ca.other.write(d / "other-store.pem")
    out["inter-store"] = ca.inter.write(d / "inter-store.pem")  # the intermediate, no root
    # OpenSSL's own TRUSTED CERTIFICATE files: the root rejected for clientAuth; trusted only for e-mail.
    out["reject-store"] = d / "reject-store.pem"
    run("openssl", "x509", "-in", out["root"], "-addreject", "clientAuth", "-trustout", "-out", out["reject-store"])
    out["email-store"] = d / "email-store.pem"
    run("openssl", "x509", "-in", out["root"], "-addtrust", "emailProtection", "-trustout", "-out", out["email-store"])
    out["crl"] = write_crl(d / "revoke.crl.pem", ca.inter, ca.inter.key, [ca.client.cert.serial_number])
    forged_key = ec.generate_private_key(ec.SECP256R1())  # issuer name right, signature wrong
    out["bad-crl"] = write_crl(d / "forged.crl.pem", ca.inter, forged_key, [ca.client.cert.serial_number])
    out["empty-crl"] = write_crl(d / "empty.crl.pem", ca.inter, ca.inter.key, [])
    return out


def write_crl(path: Path, issuer: Issued, key, serials: list[int]) -> Path:
    from cryptography.hazmat.primitives.serialization import Encoding

    builder = (x509.CertificateRevocationListBuilder().issuer_name(issuer.cert.subject)
               .last_update(NOW - DAY).next_update(NOW + 30 * DAY))
    for serial in serials:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(NOW - DAY).build())
    path.write_bytes(builder.sign(key, hashes.SHA256()).public_bytes(Encoding.PEM))
    return path


def check_json(*args) -> tuple[int, dict]:
    result = storesync("check", *args, "--json")
    assert result.returncode in (0, 1), result.stderr
    return result.returncode, json.loads(result.stdout)


def only_store(data: dict) -> dict:
    assert len(data["stores"]) == 1
    return data["stores"][0]


# --- each reason code ------------------------------------------------------------------------


def test_happy_path(files):
    code, data = check_json(files["client"], "--chain", files["inter"], "--store", files["root-store"])
    store = only_store(data)
    assert code == 0 and data["accepted"] and store["reason"] == "ok"
    assert [c["subject"] for c in store["chain"]] == ["CN=client.check", "CN=Check Intermediate", "CN=Check Root"]


def test_bundle_leaf_first_then_intermediates(files, tmp_path):
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(files["client"].read_bytes() + files["inter"].read_bytes())
    result = storesync("check", bundle, "--store", files["root-store"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok (client.check <- Check Intermediate <- Check Root)" in result.stdout


def test_missing_root_names_issuer_and_key_id_and_the_sync_that_fixes_it(ca, files):
    code, data = check_json(files["client"], "--chain", files["inter"],
                            "--store", files["other-store"], "--store", files["root-store"])
    assert code == 1 and not data["accepted"]
    refused, accepted = data["stores"]
    assert (refused["reason"], accepted["reason"]) == ("missing-root", "ok")
    key_id = ca.inter.cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
    problem = refused["problems"][0]
    assert problem["issuer"] == "CN=Check Root" and problem["key_id"] == key_id.hex(":")
    sha = ca.root.cert.fingerprint(hashes.SHA256()).hex()
    assert refused["fix"] == (f"storesync sync --mode add --only {sha} --purpose client-auth "
                              f"pem:{files['root-store']} pem:{files['other-store']}")
    assert "the root Check Root" in problem["fix_note"]


def test_missing_root_without_a_source_says_what_to_get(files):
    code, data = check_json(files["client"], "--chain", files["inter"], "--store", files["other-store"])
    store = only_store(data)
    assert code == 1 and store["reason"] == "missing-root"
    assert "CN=Check Root" in store["fix"] and "storesync sync --mode add --purpose client-auth pem:ROOT.pem" in store["fix"]


@pytest.mark.parametrize("source", [True, False])
@pytest.mark.parametrize("kind", ["pem", "dir"])
def test_the_fix_for_a_store_declared_for_another_purpose_works(source, kind, ca, files, tmp_path):
    """A bundle whose spec says `?purpose=server-auth` takes no root trusted for client-auth only:
    the printed fix (`--purpose client-auth` into that spec) said "in sync", left the root out, and
    the next check printed it again. The fix names the store for the purpose checked, and says
    that its readers must then be ones that check client certificates. Run as printed, then
    checked again as first named: accepted, as `openssl verify` accepts with that store."""
    import shlex

    target = f"{kind}:{tmp_path / ('t.pem' if kind == 'pem' else 't')}?purpose=server-auth"
    if kind == "pem":
        (tmp_path / "t.pem").write_bytes(b"")
    else:
        (tmp_path / "t").mkdir()
    given = ["--store", files["root-store"]] if source else []
    code, data = check_json(files["client"], "--chain", files["inter"], *given, "--store", target)
    refused = data["stores"][-1]
    assert code == 1 and refused["reason"] == "missing-root"
    fix, note = refused["fix"], refused["problems"][0]["fix_note"]
    assert target not in fix and target.replace("server-auth", "client-auth") in fix, fix
    assert "declared for server-auth" in note and "check client certificates" in note, note
    words = shlex.split(fix[fix.index("storesync sync"):].split(";")[0].replace("pem:ROOT.pem", f"pem:{files['root']}"))
    result = storesync(*words[1:])
    assert result.returncode == 0 and "left out" not in result.stdout, result.stdout + result.stderr
    code, data = check_json(files["client"], "--chain", files["inter"], "--store", target)
    assert code == 0 and only_store(data)["reason"] == "ok"
    where = ["-CAfile", tmp_path / "t.pem"] if kind == "pem" else ["-CApath", tmp_path / "t"]
    assert run("openssl", "verify", *where, "-untrusted", files["inter"], "-purpose", "sslclient",
               files["client"], check=False).returncode == 0


def test_missing_intermediate_points_at_chain(files):
    code, data = check_json(files["client"], "--store", files["root-store"])
    store = only_store(data)
    assert code == 1 and store["reason"] == "missing-root"
    assert store["problems"][0]["issuer"] == "CN=Check Intermediate" and "--chain" in store["fix"]


def test_intermediate_alone_is_no_anchor_in_a_pem_store(files):
    """OpenSSL's -CAfile needs the self-signed root; so does check for pem and dir stores."""
    code, data = check_json(files["client"], "--chain", files["inter"], "--store", files["inter-store"])
    assert code == 1 and only_store(data)["reason"] == "missing-root"


def test_distrusted_by_openssl_reject(files):
    text = run("openssl", "x509", "-in", files["reject-store"], "-noout", "-text").stdout.decode()
    assert "Rejected Uses:\n  TLS Web Client Authentication" in text  # the oracle made what we think
    code, data = check_json(files["client"], "--chain", files["inter"], "--store", files["reject-store"])
    store = only_store(data)
    assert code == 1 and store["reason"] == "distrusted"
    assert store["problems"][0]["certificate"]["subject"] == "CN=Check Root"
    # The same root rejected for clientAuth still serves a server certificate.
    code, data = check_json(files["server"], "--chain", files["inter"], "--store", files["reject-store"],
                            "--purpose", "server-auth")
    assert code == 0 and only_store(data)["reason"] == "ok"


def test_root_trusted_for_other_purposes(files):
    code, data = check_json(files["client"], "--chain", files["inter"], "--store", files["email-store"])
    store = only_store(data)
    assert code == 1 and store["reason"] == "purpose"
    assert "trusted only for email" in store["message"]


def test_leaf_without_client_auth_eku(files):
    code, data = check_json(files["server"], "--chain", files["inter"], "--store", files["root-store"])
    store = only_store(data)
    assert code == 1 and store["reason"] == "purpose"
    assert "server.check is not for client-auth" in store["message"] and "serverAuth" in store["message"]


def test_intermediate_restricted_to_server_auth(files):
    code, data = check_json(files["under_server_ca"], "--chain", files["server_ca"], "--store", files["root-store"])
    store = only_store(data)
    assert code == 1 and store["reason"] == "purpose"
    assert store["problems"][0]["certificate"]["subject"] == "CN=Server-only Intermediate"


def test_expired_leaf(ca, files):
    code, data = check_json(files["expired"], "--chain", files["inter"], "--store", files["root-store"])
    store = only_store(data)
    assert code == 1 and store["reason"] == "expired"
    problem = store["problems"][0]
    assert problem["certificate"]["subject"] == "CN=expired.check" and problem["checked_at"] == data["at"]
    assert ca.expired.cert.not_valid_after_utc.isoformat().replace("+00:00", "Z") in problem["message"]
    assert problem["fix"] == "renew expired.check"


def test_expired_intermediate_is_named(files):
    code, data = check_json(files["under_old"], "--chain", files["old_inter"], "--store", files["root-store"])
    store = only_store(data)
    assert code == 1 and store["reason"] == "expired"
    assert [p["certificate"]["subject"] for p in store["problems"]] == ["CN=Old Intermediate"]


def test_not_yet_valid_leaf_and_clock_skew(files):
    code, data = check_json(files["future"], "--chain", files["inter"], "--store", files["root-store"])
    store = only_store(data)
    assert code == 1 and store["reason"] == "not-yet-valid" and "clock" in store["message"]
    later = (NOW + 60 * DAY).isoformat()
    code, data = check_json(files["future"], "--chain", files["inter"], "--store", files["root-store"], "--at", later)
    assert code == 0


def test_at_moves_the_clock(files):
    code, data = check_json(files["client"], "--chain", files["inter"], "--store", files["root-store"],
                            "--at", "2099-01-01T00:00:00Z")
    store = only_store(data)
    assert code == 1 and data["at"] == "2099-01-01T00:00:00Z"
    assert {p["reason"] for p in store["problems"]} == {"expired"}
    assert {p["certificate"]["subject"] for p in store["problems"]} == {"CN=client.check", "CN=Check Intermediate", "CN=Check Root"}


def test_revoked_by_crl(ca, files):
    code, data = check_json(files["client"], "--chain", files["inter"], "--store", files["root-store"],
                            "--crl", files["crl"])
    store = only_store(data)
    assert code == 1 and store["reason"] == "revoked"
    problem = store["problems"][0]
    # in the hex digits `openssl crl -text` prints, marked 0x: its bare "1092" reads as decimal 1092
    listed = run(need("openssl"), "crl", "-noout", "-text", "-in", files["crl"]).stdout.decode()
    digits = listed.split("Serial Number: ")[1].split()[0]
    assert int(digits, 16) == ca.client.cert.serial_number and f"(serial 0x{digits})" in problem["message"]
    assert problem["revoked_at"] == (NOW - DAY).isoformat().replace("+00:00", "Z")
    # The same CRL does not touch another certificate of that issuer.
    code, _ = check_json(files["mail"], "--chain", files["inter"], "--store", files["root-store"],
                         "--crl", files["crl"], "--purpose", "email")
    assert code == 0


def test_crl_with_bad_signature_does_not_count(files):
    code, data = check_json(files["client"], "--chain", files["inter"], "--store", files["root-store"],
                            "--crl", files["bad-crl"])
    store = only_store(data)
    assert code == 0 and store["reason"] == "ok"
    assert any("signature does not verify" in w for w in store["warnings"])


def test_der_crl_and_der_certificate(ca, files, tmp_path):
    from cryptography.hazmat.primitives.serialization import Encoding

    der_crl = tmp_path / "revoke.crl"
    der_crl.write_bytes(x509.load_pem_x509_crl(files["crl"].read_bytes()).public_bytes(Encoding.DER))
    der_leaf = tmp_path / "client.der"
    der_leaf.write_bytes(ca.client.der)
    code, data = check_json(der_leaf, "--chain", files["inter"], "--store", files["root-store"], "--crl", der_crl)
    assert code == 1 and only_store(data)["reason"] == "revoked"


def test_distrust_after_from_an_sst_store(ca, files, tmp_path):
    """A Windows root with DISALLOWED_FILETIME before the leaf was issued."""
    target = tmp_path / "roots.sst"
    store = open_store(f"sst:{target}")
    cutoff = NOW - 10 * DAY
    source = TrustSet([Entry(Certificate(ca.root.der), distrust_after={CLIENT_AUTH: cutoff})])
    store.write(make_plan(source, TrustSet(), store.capabilities, store=str(store.spec)))
    assert open_store(f"sst:{target}").read()[Certificate(ca.root.der).sha256].distrust_after  # written as meant
    code, data = check_json(files["client"], "--chain", files["inter"], "--store", f"sst:{target}")
    result = only_store(data)
    assert code == 1 and result["reason"] == "distrust-after"
    assert result["problems"][0]["distrust_after"] == cutoff.isoformat().replace("+00:00", "Z")
    # A leaf issued before the date is still accepted (the leaf with notBefore 400 days ago is expired,
    # so use the python API with a time inside its validity).
    verdict = doctor.check_store("t", "sst", open_store(f"sst:{target}").read(), ca.expired.cert, [ca.inter.cert],
                                 CLIENT_AUTH, NOW - 100 * DAY, [])
    assert verdict.reason == "ok"


def test_windows_disallowed_store(ca, files, tmp_path):
    target = tmp_path / "disallowed.sst"
    store = open_store(f"sst:{target}?role=disallowed")
    source = TrustSet([Entry(Certificate(ca.root.der), trust={p: DISTRUSTED for p in ("server-auth", "client-auth", "email", "code-signing")})])
    store.write(make_plan(source, TrustSet(), store.capabilities, store=str(store.spec)))
    code, data = check_json(files["client"], "--chain", files["inter"], "--store", f"sst:{target}?role=disallowed")
    assert code == 1 and only_store(data)["reason"] == "distrusted"


@pytest.fixture
def nssdb(tmp_path, files):
    need("certutil")

    def make(flags: str) -> str:
        db = tmp_path / f"nss-{flags.replace(',', '_') or 'none'}"
        db.mkdir()
        run("certutil", "-N", "-d", f"sql:{db}", "--empty-password")
        run("certutil", "-A", "-d", f"sql:{db}", "-n", "Check Root", "-t", flags, "-i", files["root"])
        listed = run("certutil", "-L", "-d", f"sql:{db}").stdout.decode()
        assert "Check Root" in listed
        return f"nss:{db}"

    return make


@pytest.mark.parametrize("flags, reason", [("CT,C,C", "ok"), ("p,p,p", "distrusted"), ("C,,", "purpose"), (",C,", "purpose")])
def test_nss_trust_flags(nssdb, files, flags, reason):
    code, data = check_json(files["client"], "--chain", files["inter"], "--store", nssdb(flags))
    assert only_store(data)["reason"] == reason
    assert code == (0 if reason == "ok" else 1)


def test_distrusted_intermediate_in_the_store(ca, files):
    """The root is an anchor, the intermediate explicitly distrusted: refused."""
    trust_set = TrustSet([Entry(Certificate(ca.root.der)),
                          Entry(Certificate(ca.inter.der), trust={CLIENT_AUTH: DISTRUSTED})])
    verdict = doctor.check_store("t", "nss", trust_set, ca.client.cert, [ca.inter.cert], CLIENT_AUTH, NOW, [])
    assert verdict.reason == "distrusted" and doctor.short_name(verdict.problems[0].cert) == "Check Intermediate"


# --- other purposes ---------------------------------------------------------------------------


def test_email_and_code_signing(files):
    code, data = check_json(files["mail"], "--chain", files["inter"], "--store", files["root-store"], "--purpose", "email")
    assert code == 0
    code, data = check_json(files["mail"], "--chain", files["inter"], "--store", files["root-store"], "--purpose", "code-signing")
    assert code == 1 and only_store(data)["reason"] == "purpose"


def test_server_auth_with_and_without_host_name(files):
    base = [files["server"], "--chain", files["inter"], "--store", files["root-store"], "--purpose", "server-auth"]
    assert check_json(*base)[0] == 0
    assert check_json(*base, "--name", "leaf.test")[0] == 0
    code, data = check_json(*base, "--name", "elsewhere.test")
    store = only_store(data)
    assert code == 1 and store["reason"] == "name-mismatch" and "leaf.test" in store["message"]
    assert "subjectAltName holds elsewhere.test" in store["fix"]


# --- OpenSSL agrees ---------------------------------------------------------------------------

ORACLE_CASES = [
    # (leaf, chain, store, crl, openssl purpose)
    ("client", "inter", "root-store", None, "sslclient"),
    ("server", "inter", "root-store", None, "sslclient"),
    ("server", "inter", "root-store", None, "sslserver"),
    ("mail", "inter", "root-store", None, "sslserver"),
    ("client", "inter", "other-store", None, "sslclient"),
    ("client", "inter", "inter-store", None, "sslclient"),
    ("client", "inter", "reject-store", None, "sslclient"),
    ("server", "inter", "reject-store", None, "sslserver"),
    ("client", "inter", "email-store", None, "sslclient"),
    ("expired", "inter", "root-store", None, "sslclient"),
    ("future", "inter", "root-store", None, "sslclient"),
    ("under_old", "old_inter", "root-store", None, "sslclient"),
    ("under_server_ca", "server_ca", "root-store", None, "sslclient"),
    ("under_server_ca", "server_ca", "root-store", None, "sslserver"),
    ("client", "inter", "root-store", "crl", "sslclient"),
    ("client", "inter", "root-store", "empty-crl", "sslclient"),
    ("server", "inter", "root-store", "crl", "sslserver"),
]


@pytest.mark.parametrize("leaf, chain, store, crl, purpose", ORACLE_CASES)
def test_openssl_verify_agrees(files, leaf, chain, store, crl, purpose):
    need("openssl")
    args = ["openssl", "verify", "-CAfile", files[store], "-untrusted", files[chain], "-purpose", purpose]
    if crl:
        args += ["-crl_check", "-CRLfile", files[crl]]
    openssl_ok = run(*args, files[leaf], check=False).returncode == 0
    ours = ["--purpose", {"sslclient": "client-auth", "sslserver": "server-auth"}[purpose]]
    if crl:
        ours += ["--crl", files[crl]]
    code, data = check_json(files[leaf], "--chain", files[chain], "--store", files[store], *ours)
    assert (code == 0) == openssl_ok, (openssl_ok, only_store(data))


def test_openssl_agrees_on_time(files):
    """`-attime` and `--at`: the leaf valid now is expired in 2099, valid later for the future leaf."""
    for leaf, when in (("client", NOW + 5000 * DAY), ("future", NOW + 60 * DAY), ("future", NOW)):
        epoch = str(int(when.timestamp()))
        openssl_ok = run("openssl", "verify", "-CAfile", files["root-store"], "-untrusted", files["inter"],
                         "-purpose", "sslclient", "-attime", epoch, files[leaf], check=False).returncode == 0
        code, _ = check_json(files[leaf], "--chain", files["inter"], "--store", files["root-store"], "--at", when.isoformat())
        assert (code == 0) == openssl_ok, (leaf, when)


def test_bad_signature_crl_is_what_openssl_calls_a_failure_we_ignore(files):
    """OpenSSL fails the whole check on a forged CRL; check ignores the CRL (it cannot revoke
    anything) and says so. Without the CRL both accept."""
    forged = run("openssl", "verify", "-CAfile", files["root-store"], "-untrusted", files["inter"], "-crl_check",
                 "-CRLfile", files["bad-crl"], files["client"], check=False)
    assert forged.returncode != 0 and b"CRL signature failure" in forged.stdout + forged.stderr
    assert run("openssl", "verify", "-CAfile", files["root-store"], "-untrusted", files["inter"], files["client"]).returncode == 0
    assert check_json(files["client"], "--chain", files["inter"], "--store", files["root-store"], "--crl", files["bad-crl"])[0] == 0


# --- no --store: the machine's stores ---------------------------------------------------------


def test_default_stores_are_what_status_finds(files, tmp_path):
    import os

    env = {**os.environ, "STORESYNC_STATE_DIR": str(tmp_path)}
    result = storesync("check", files["client"], "--chain", files["inter"], "--json", env=env)
    data = json.loads(result.stdout)
    status = json.loads(storesync("status", "--json", env=env).stdout)
    assert [s["store"] for s in data["stores"]] == [s["store"] for s in status["stores"] if s["error"] is None]
    assert "pem:/etc/ssl/certs/ca-certificates.crt" in [s["store"] for s in data["stores"]]
    assert result.returncode == 1 and {s["reason"] for s in data["stores"]} == {"missing-root"}


def test_leaf_older_than_its_reissued_intermediate(pki):
    """No single time fits the whole path, so even the relaxed verifier finds none; the path by
    names and signatures still says which certificate's dates are wrong."""
    root = pki.ca("Reissue Root", not_before=NOW - 1000 * DAY)
    inter = pki.ca("Reissued Intermediate", root)  # valid from yesterday only
    leaf = pki.leaf("old.check", inter, eku=[EKU.CLIENT_AUTH], not_before=NOW - 400 * DAY, not_after=NOW - 30 * DAY)
    trust_set = TrustSet([Entry(Certificate(root.der))])
    verdict = doctor.check_store("t", "pem", trust_set, leaf.cert, [inter.cert], CLIENT_AUTH, NOW, [])
    assert verdict.reason == "expired" and doctor.short_name(verdict.problems[0].cert) == "old.check"
    verdict = doctor.check_store("t", "pem", TrustSet([Entry(Certificate(pki.ca("elsewhere").der))]),
                                 leaf.cert, [inter.cert], CLIENT_AUTH, NOW, [])
    assert verdict.reason == "missing-root"


# --- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize("args, words", [
    (["--purpose", "ipsec"], "--purpose must be one of"),
    (["--at", "yesterday"], "is not an ISO time"),
    (["--store", "/nonexistent/store.pem"], "does not exist"),
    (["--crl", "/nonexistent.crl"], "cannot read it"),
    (["--purpose", "client-auth", "--name", "x.test"], "only --purpose server-auth"),
])
def test_errors_exit_2_with_a_sentence(files, args, words):
    base = [] if "--store" in args else ["--store", files["root-store"]]
    result = storesync("check", files["client"], "--chain", files["inter"], *base, *args)
    assert result.returncode == 2 and words in result.stderr and "Traceback" not in result.stderr


def test_garbage_inputs_exit_2(files, tmp_path):
    junk = tmp_path / "junk.pem"
    junk.write_bytes(b"-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n")
    truncated = tmp_path / "truncated.pem"
    truncated.write_bytes(files["client"].read_bytes()[:200])
    bad_crl = tmp_path / "bad.crl"
    bad_crl.write_bytes(b"\x30\x82\x01")
    for args in ([junk], [truncated], [files["client"], "--crl", bad_crl], [files["client"], "--chain", junk]):
        result = storesync("check", *args, "--store", files["root-store"])
        assert result.returncode == 2 and "storesync: " in result.stderr and "Traceback" not in result.stderr, args


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.one_of(st.binary(max_size=600), st.binary(max_size=64).map(lambda b: b"-----BEGIN CERTIFICATE-----\n" + b)))
def test_hostile_certificate_files_raise_check_error(tmp_path, data):
    path = tmp_path / "hostile"
    path.write_bytes(data)
    try:
        certs = doctor.load_certificates(path)
    except doctor.CheckError as exc:
        assert str(path) in str(exc)
    else:
        assert certs  # only if it really held a certificate


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(min_value=0, max_value=2000))
def test_truncated_crls_raise_check_error(files, tmp_path, cut):
    data = files["crl"].read_bytes()
    path = tmp_path / "cut.crl"
    path.write_bytes(data[:cut])
    if data[:cut].rstrip() == data.rstrip():  # only the final newline gone: still the whole CRL
        assert doctor.load_crls([path])
        return
    with pytest.raises(doctor.CheckError):
        doctor.load_crls([path])


# --- list filters -----------------------------------------------------------------------------


def test_expiry_filter(pki):
    root = pki.ca("x")
    expired = pki.ca("expired", not_before=NOW - 100 * DAY, not_after=NOW - DAY)
    soon = pki.ca("soon", not_after=NOW + 10 * DAY)
    later = pki.ca("later", not_after=NOW + 100 * DAY)
    trust_set = TrustSet([Entry(Certificate(c.der)) for c in (root, expired, soon, later)])
    names = lambda s: [e.display_label for e in s.values()]  # noqa: E731
    assert doctor.expiry_filter(trust_set) is trust_set
    assert names(doctor.expiry_filter(trust_set, expired=True, at=NOW)) == ["expired"]
    assert names(doctor.expiry_filter(trust_set, expiring_days=30, at=NOW)) == ["soon"]
    assert names(doctor.expiry_filter(trust_set, expiring_days=365, at=NOW)) == ["soon", "later"]
    assert names(doctor.expiry_filter(trust_set, expiring_days=30, expired=True, at=NOW)) == ["expired", "soon"]
    unparseable = TrustSet([Entry(Certificate(b"\x30\x03\x02\x01\x00"))])
    assert len(doctor.expiry_filter(unparseable, expired=True, at=NOW)) == 0


def test_an_intermediate_without_key_usage_and_with_non_critical_constraints_is_accepted_like_openssl(pki, root, tmp_path):
    """OpenSSL (Apache, nginx) accepts such a CA; the web PKI rules alone would refuse it."""
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    inter = (x509.CertificateBuilder()
             .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Lax Intermediate")]))
             .issuer_name(root.cert.subject).public_key(key.public_key()).serial_number(4242)
             .not_valid_before(NOW - dt.timedelta(days=1)).not_valid_after(NOW + dt.timedelta(days=30))
             .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=False)
             .sign(root.key, hashes.SHA256()))
    lax = Issued(inter, key)
    leaf = pki.leaf("lax.test", lax, eku=[EKU.CLIENT_AUTH])
    files = {n: i.write(tmp_path / f"{n}.pem") for n, i in (("root", root), ("int", lax), ("leaf", leaf))}
    assert run(need("openssl"), "verify", "-CAfile", files["root"], "-untrusted", files["int"],
               "-purpose", "sslclient", files["leaf"], check=False).returncode == 0
    result = storesync("check", files["leaf"], "--chain", files["int"], "--store", f"pem:{files['root']}")
    assert result.returncode == 0, result.stdout


# --- algorithms OpenSSL accepts and cryptography's web-PKI verifier does not ------------------


def _legacy_cert(subject: str, key, issuer: x509.Certificate | None = None, issuer_key=None, *, ca: bool = True,
                 sha1: bool = False, with_aki: bool = True) -> x509.Certificate:
    """A certificate as older PKIs make them: any key type, optionally signed with SHA-1."""
    from cryptography.hazmat.primitives.asymmetric import ed448, ed25519

    name = x509.Name.from_rfc4514_string(f"CN={subject}")
    signer = issuer_key or key
    builder = (
        x509.CertificateBuilder().subject_name(name).issuer_name(issuer.subject if issuer else name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(NOW - 10 * DAY).not_valid_after(NOW + 900 * DAY)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if ca:
        builder = builder.add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                                        critical=True)
    else:
        builder = builder.add_extension(x509.ExtendedKeyUsage([EKU.CLIENT_AUTH]), critical=False)
    if with_aki:
        builder = builder.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()),
                                        critical=False)
    digest = None if isinstance(signer, (ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)) else hashes.SHA256()
    cert = builder.sign(signer, digest)
    return _resign_sha1(cert, signer) if sha1 else cert


def _resign_sha1(cert: x509.Certificate, key) -> x509.Certificate:
    """The same certificate signed with SHA-1 (cryptography's builder no longer does it; its keys still do)."""
    from cryptography.hazmat.primitives.asymmetric import padding, rsa
    from cryptography.hazmat.primitives.serialization import Encoding

    from storesync import der

    tbs, _alg, _sig = der.read(cert.public_bytes(Encoding.DER)).children()
    if isinstance(key, rsa.RSAPrivateKey):  # sha1WithRSAEncryption, NULL parameters
        alg = der.encode(der.SEQUENCE, der.encode_oid("1.2.840.113549.1.1.5") + b"\x05\x00")
    else:  # ecdsa-with-SHA1
        alg = der.encode(der.SEQUENCE, der.encode_oid("1.2.840.10045.4.1"))
    fields = list(tbs.children())
    raws = [f.raw for f in fields]
    raws[2 if fields[0].tag == 0xA0 else 1] = alg  # the signature field inside the TBS
    new_tbs = der.encode(der.SEQUENCE, b"".join(raws))
    if isinstance(key, rsa.RSAPrivateKey):
        signature = key.sign(new_tbs, padding.PKCS1v15(), hashes.SHA1())
    else:
        signature = key.sign(new_tbs, ec.ECDSA(hashes.SHA1()))
    resigned = x509.load_der_x509_certificate(der.encode(der.SEQUENCE, new_tbs + alg + der.encode(0x03, b"\x00" + signature)))
    assert resigned.signature_hash_algorithm.name == "sha1"
    return resigned


def _pem(*certs) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding

    return b"".join(c.public_bytes(Encoding.PEM) for c in certs)


@pytest.fixture(scope="module")
def legacy(tmp_path_factory) -> dict:
    """Two chains OpenSSL accepts: an RSA-2048 PKI that still signs with SHA-1, and a modern
    SHA-256 PKI under an RSA-1024 root."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    d = tmp_path_factory.mktemp("legacy")
    out: dict = {}
    root_key = rsa.generate_private_key(65537, 2048)
    inter_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    root = _legacy_cert("SHA1 Root", root_key, sha1=True)
    inter = _legacy_cert("SHA1 Intermediate", inter_key, root, root_key, sha1=True)
    leaf = _legacy_cert("sha1.check", leaf_key, inter, inter_key, ca=False, sha1=True)
    out["sha1"] = {"root": root, "inter": inter, "leaf": leaf, "root_key": root_key}
    weak_key = rsa.generate_private_key(65537, 1024)
    weak_inter_key, weak_leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    weak_root = _legacy_cert("RSA1024 Root", weak_key)
    weak_inter = _legacy_cert("RSA1024 Intermediate", weak_inter_key, weak_root, weak_key)
    weak_leaf = _legacy_cert("rsa1024.check", weak_leaf_key, weak_inter, weak_inter_key, ca=False)
    out["rsa1024"] = {"root": weak_root, "inter": weak_inter, "leaf": weak_leaf}
    for kind, chain in list(out.items()):
        for part in ("root", "inter", "leaf"):
            path = d / f"{kind}-{part}.pem"
            path.write_bytes(_pem(chain[part]))
            chain[f"{part}.pem"] = path
    return out


def openssl_accepts(root: Path, inter: Path, leaf: Path, purpose: str = "sslclient") -> bool:
    result = run(need("openssl"), "verify", "-CAfile", root, "-untrusted", inter, "-purpose", purpose, leaf, check=False)
    return result.returncode == 0


@pytest.mark.parametrize("kind, named, algorithm", [
    ("sha1", "CN=sha1.check", "SHA-1"),  # the first certificate signed with SHA-1 is the leaf
    ("rsa1024", "CN=RSA1024 Root", "1024-bit RSA"),
])
def test_openssl_accepts_what_check_reports_as_unsupported(legacy, kind, named, algorithm):
    chain = legacy[kind]
    assert openssl_accepts(chain["root.pem"], chain["inter.pem"], chain["leaf.pem"])  # the oracle
    code, data = check_json(chain["leaf.pem"], "--chain", chain["inter.pem"], "--store", f"pem:{chain['root.pem']}")
    store = only_store(data)
    assert code == 1 and not store["accepted"] and store["reason"] == "unsupported", store
    assert "missing-root" not in {p["reason"] for p in store["problems"]}
    assert {p["reason"] for p in store["problems"]} == {"unsupported"}
    first = store["problems"][0]
    assert first["certificate"]["subject"] == named and algorithm in first["algorithm"]
    assert algorithm in store["message"] and named.removeprefix("CN=") in store["message"]
    assert "OpenSSL may accept this chain" in store["message"] and "cryptography's web-PKI rules" in store["message"]
    # The path was found by names and key identifiers, up to the root the store holds.
    assert [c["subject"] for c in store["chain"]] == [
        chain[p].subject.rfc4514_string() for p in ("leaf", "inter", "root")]
    result = storesync("check", chain["leaf.pem"], "--chain", chain["inter.pem"], "--store", f"pem:{chain['root.pem']}")
    assert result.returncode == 1 and "REFUSED, unsupported" in result.stdout


def test_sha1_chain_names_every_sha1_signature_but_not_the_roots_own(legacy):
    chain = legacy["sha1"]
    _, data = check_json(chain["leaf.pem"], "--chain", chain["inter.pem"], "--store", f"pem:{chain['root.pem']}")
    problems = only_store(data)["problems"]
    assert [(p["certificate"]["subject"], p["refused"]) for p in problems] == [
        ("CN=sha1.check", "signature"), ("CN=SHA1 Intermediate", "signature")]
    assert all("sha1WithRSAEncryption" in p["algorithm"] or "ecdsa-with-SHA1" in p["algorithm"] for p in problems)


def test_sha1_chain_without_its_root_is_still_missing_root(legacy, files):
    """The fallback finds paths; it does not invent a root: a store without it says missing-root."""
    chain = legacy["sha1"]
    code, data = check_json(chain["leaf.pem"], "--chain", chain["inter.pem"], "--store", files["other-store"])
    store = only_store(data)
    assert code == 1 and store["reason"] == "missing-root"
    assert store["problems"][0]["issuer"] == "CN=SHA1 Root" and "CN=SHA1 Root" in store["fix"]
    assert [p["reason"] for p in store["problems"][1:]] == ["unsupported", "unsupported"]


def test_sha1_chain_checked_later_is_expired_first(legacy):
    """A reason OpenSSL refuses for too comes before `unsupported`."""
    chain = legacy["sha1"]
    trust_set = TrustSet([Entry(Certificate(_der(chain["root"])))])
    verdict = doctor.check_store("t", "pem", trust_set, chain["leaf"], [chain["inter"]], CLIENT_AUTH, NOW + 2000 * DAY, [])
    assert verdict.reason == "expired" and not verdict.accepted
    assert verdict.problems[-1].reason == "unsupported"


def _der(cert) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding

    return cert.public_bytes(Encoding.DER)


def test_issued_by_falls_back_to_key_ids_only_when_the_signature_cannot_be_checked(legacy):
    from cryptography.hazmat.primitives.asymmetric import rsa

    chain = legacy["sha1"]
    with pytest.raises(ValueError, match="nsupported"):
        chain["inter"].verify_directly_issued_by(chain["root"])  # why the fallback exists
    assert doctor._issued_by(chain["inter"], chain["root"]) and doctor._issued_by(chain["leaf"], chain["inter"])
    assert doctor._links(chain["leaf"], [chain["root"], chain["inter"]]) == [chain["leaf"], chain["inter"], chain["root"]]
    # Same name, another key: the authority key identifier tells them apart.
    impostor = _legacy_cert("SHA1 Root", rsa.generate_private_key(65537, 2048), sha1=True)
    assert not doctor._issued_by(chain["inter"], impostor)
    assert doctor._links(chain["leaf"], [impostor, chain["inter"]]) == [chain["leaf"], chain["inter"]]
    # A supported signature by the wrong key is still no issuer, whatever the key ids say.
    modern = legacy["rsa1024"]
    assert doctor._issued_by(modern["inter"], modern["root"])
    assert not doctor._issued_by(modern["inter"], _legacy_cert("RSA1024 Root", rsa.generate_private_key(65537, 1024)))


def test_what_the_verifier_does_not_check_is_not_blamed(legacy):
    """A SHA-1 self-signature on a root and a weak leaf key: the verifier accepts both, and so
    does check (no `unsupported` where nothing was refused)."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    sha1 = legacy["sha1"]
    inter_key = ec.generate_private_key(ec.SECP256R1())
    inter = _legacy_cert("Modern Intermediate", inter_key, sha1["root"], sha1["root_key"])
    weak_leaf = _legacy_cert("weak-leaf.check", rsa.generate_private_key(65537, 1024), inter, inter_key, ca=False)
    trust_set = TrustSet([Entry(Certificate(_der(sha1["root"])))])
    verdict = doctor.check_store("t", "pem", trust_set, weak_leaf, [inter], CLIENT_AUTH, NOW, [])
    assert verdict.reason == "ok", [p.message for p in verdict.problems]


@pytest.mark.parametrize("key_type", ["ed25519", "ed448", "dsa"])
def test_other_key_types_openssl_accepts_are_unsupported(key_type, tmp_path):
    from cryptography.hazmat.primitives.asymmetric import dsa, ed448, ed25519

    make = {"ed25519": ed25519.Ed25519PrivateKey.generate, "ed448": ed448.Ed448PrivateKey.generate,
            "dsa": lambda: dsa.generate_private_key(2048)}[key_type]
    root_key, inter_key = make(), make()
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    root = _legacy_cert(f"{key_type} Root", root_key)
    inter = _legacy_cert(f"{key_type} Intermediate", inter_key, root, root_key)
    leaf = _legacy_cert(f"{key_type}.check", leaf_key, inter, inter_key, ca=False)
    paths = {}
    for part, cert in (("root", root), ("inter", inter), ("leaf", leaf)):
        paths[part] = tmp_path / f"{part}.pem"
        paths[part].write_bytes(_pem(cert))
    assert openssl_accepts(paths["root"], paths["inter"], paths["leaf"])
    code, data = check_json(paths["leaf"], "--chain", paths["inter"], "--store", f"pem:{paths['root']}")
    store = only_store(data)
    assert code == 1 and store["reason"] == "unsupported"
    label = {"ed25519": "Ed25519", "ed448": "Ed448", "dsa": "DSA"}[key_type]
    assert store["problems"][0]["certificate"]["subject"] == f"CN={key_type}.check"  # signed by the intermediate
    assert label in store["message"] and "OpenSSL may accept this chain" in store["message"]
    assert [(p["certificate"]["subject"], p["refused"]) for p in store["problems"]] == [
        (f"CN={key_type}.check", "signature"), (f"CN={key_type} Intermediate", "signature"),
        (f"CN={key_type} Intermediate", "key"), (f"CN={key_type} Root", "key")]
    assert all(label in p["algorithm"] for p in store["problems"])
