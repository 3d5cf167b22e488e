"""`check` judges as the server judges (issue 14): the fix adds one root, every problem is
listed, CRLs for the whole chain, stale CRLs, host names, verify depth. Oracles: `openssl
verify` with the flags nginx and Apache set (-crl_check_all, -verify_depth); the real servers
are in test_check_nginx.py."""

from __future__ import annotations

import datetime as dt
import json
import shlex
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID as EKU

from conftest import NOW, Issued, need, run, storesync

DAY = dt.timedelta(days=1)


def write_crl(path: Path, issuer: Issued, serials=(), next_update: dt.datetime | None = None) -> Path:
    builder = (x509.CertificateRevocationListBuilder().issuer_name(issuer.cert.subject)
               .last_update(NOW - 2 * DAY).next_update(next_update or NOW + 30 * DAY))
    for serial in serials:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(NOW - DAY).build())
    path.write_bytes(builder.sign(issuer.key, hashes.SHA256()).public_bytes(Encoding.PEM))
    return path


def cat(path: Path, *parts: bytes | Path) -> Path:
    path.write_bytes(b"".join(p.read_bytes() if isinstance(p, Path) else p for p in parts))
    return path


def check_json(*args) -> tuple[int, dict]:
    result = storesync("check", *args, "--json")
    assert result.returncode in (0, 1), result.stderr
    return result.returncode, json.loads(result.stdout)


def sha256(issued: Issued) -> str:
    return issued.cert.fingerprint(hashes.SHA256()).hex()


class Server:
    """Root <- Policy CA <- Issuing CA <- client (two intermediates); Root <- Policy CA <- client1."""

    def __init__(self, pki, d: Path):
        self.root = pki.ca("Srv Root", not_before=NOW - 900 * DAY)
        self.policy = pki.ca("Srv Policy CA", self.root, not_before=NOW - 900 * DAY)
        self.issuing = pki.ca("Srv Issuing CA", self.policy, not_before=NOW - 900 * DAY)
        self.client = pki.leaf("client2.srv", self.issuing, eku=[EKU.CLIENT_AUTH])
        self.client1 = pki.leaf("client1.srv", self.policy, eku=[EKU.CLIENT_AUTH])
        self.expired = pki.leaf("expired.srv", self.policy, eku=[EKU.CLIENT_AUTH],
                                not_before=NOW - 90 * DAY, not_after=NOW - DAY)
        self.other = pki.ca("Srv Other Root")
        self.f = {n: getattr(self, n).write(d / f"{n}.pem") for n in
                  ("root", "policy", "issuing", "client", "client1", "expired", "other")}
        self.f["chain2"] = cat(d / "chain2.pem", self.f["issuing"], self.f["policy"])
        self.f["crl-policy"] = write_crl(d / "crl-policy.pem", self.policy)
        self.f["crl-root"] = write_crl(d / "crl-root.pem", self.root)
        self.f["crl-both"] = cat(d / "crl-both.pem", self.f["crl-policy"], self.f["crl-root"])
        self.f["crl-revoking"] = write_crl(d / "crl-revoking.pem", self.policy,
                                           [self.client1.cert.serial_number, self.expired.cert.serial_number])
        self.f["crl-stale"] = write_crl(d / "crl-stale.pem", self.policy, next_update=NOW - DAY)


@pytest.fixture(scope="module")
def srv(pki, tmp_path_factory) -> Server:
    return Server(pki, tmp_path_factory.mktemp("server"))


def openssl_ok(*args) -> bool:
    need("openssl")
    return run("openssl", "verify", *map(str, args), check=False).returncode == 0


# --- defect 1: the fix adds exactly the anchor of the accepted chain ----------------------------


def test_fix_from_a_large_store_adds_only_the_root_that_completes_the_chain(srv, system_bundle, tmp_path):
    big = cat(tmp_path / "system-plus-private.pem", system_bundle, srv.f["root"])
    client_ca = cat(tmp_path / "client-ca.pem", srv.f["other"])
    code, data = check_json(srv.f["client1"], "--chain", srv.f["policy"], "--store", f"pem:{big}",
                            "--store", f"pem:{client_ca}")
    accepted, refused = data["stores"]
    assert code == 1 and (refused["reason"], accepted["reason"]) == ("missing-root", "ok")
    fix = refused["fix"]
    assert fix == (f"storesync sync --mode add --only {sha256(srv.root)} --purpose client-auth "
                   f"pem:{big} pem:{client_ca}")
    assert "the root Srv Root" in refused["problems"][0]["fix_note"]
    # Applied as printed: the client-CA file gains that root and nothing else.
    words = shlex.split(fix)
    assert words[0] == "storesync"
    result = storesync(*words[1:])
    assert result.returncode == 0, result.stdout + result.stderr
    held = x509.load_pem_x509_certificates(client_ca.read_bytes())
    assert sorted(c.subject.rfc4514_string() for c in held) == ["CN=Srv Other Root", "CN=Srv Root"]
    assert openssl_ok("-CAfile", client_ca, "-untrusted", srv.f["policy"], "-purpose", "sslclient", srv.f["client1"])
    assert check_json(srv.f["client1"], "--chain", srv.f["policy"], "--store", f"pem:{client_ca}")[0] == 0


def test_sync_only_selects_by_fingerprint_or_label_glob(srv, tmp_path):
    source = cat(tmp_path / "source.pem", srv.f["root"], srv.f["other"])
    target = cat(tmp_path / "target.pem", b"")
    result = storesync("sync", "--mode", "add", "--only", "Srv Oth*", f"pem:{source}", f"pem:{target}")
    assert result.returncode == 0, result.stderr
    assert [c.subject.rfc4514_string() for c in x509.load_pem_x509_certificates(target.read_bytes())] == ["CN=Srv Other Root"]
    colons = ":".join(sha256(srv.root)[i:i + 2] for i in range(0, 64, 2)).upper()
    assert storesync("sync", "--mode", "add", "--only", colons, f"pem:{source}", f"pem:{target}").returncode == 0
    assert len(x509.load_pem_x509_certificates(target.read_bytes())) == 2
    result = storesync("sync", "--mode", "add", "--only=", f"pem:{source}", f"pem:{target}")
    assert result.returncode == 2 and "--only needs" in result.stderr
    # Naming nothing the source holds is a mistake said at once, and nothing is written.
    empty = cat(tmp_path / "empty.pem", srv.f["other"])
    nothing = storesync("sync", "--mode", "add", "--only", "ab" * 32, f"pem:{source}", f"pem:{empty}")
    assert nothing.returncode == 2 and "no certificate of the source matches" in nothing.stderr
    assert len(x509.load_pem_x509_certificates(empty.read_bytes())) == 1


# --- defect 2: every problem the strict run would hit ------------------------------------------


def test_expired_and_root_missing_lists_both(srv):
    code, data = check_json(srv.f["expired"], "--chain", srv.f["policy"], "--store", srv.f["other"])
    store = data["stores"][0]
    assert code == 1 and [p["reason"] for p in store["problems"]] == ["missing-root", "expired"]


def test_revoked_and_root_missing_lists_both(srv):
    code, data = check_json(srv.f["client1"], "--chain", srv.f["policy"], "--store", srv.f["other"],
                            "--crl", srv.f["crl-revoking"])
    assert code == 1 and [p["reason"] for p in data["stores"][0]["problems"]] == ["missing-root", "revoked"]


# --- defect 3: nginx and Apache need a CRL for every CA of the chain ----------------------------


@pytest.mark.parametrize("crl, expected", [("crl-policy", "crl-missing"), ("crl-both", "ok")])
def test_nginx_needs_a_crl_for_every_ca(srv, crl, expected):
    args = ["-CAfile", srv.f["root"], "-untrusted", srv.f["policy"], "-purpose", "sslclient",
            "-crl_check_all", "-CRLfile", srv.f[crl], srv.f["client1"]]
    code, data = check_json(srv.f["client1"], "--chain", srv.f["policy"], "--store", srv.f["root"],
                            "--crl", srv.f[crl], "--server", "nginx")
    store = data["stores"][0]
    assert store["reason"] == expected and (code == 0) == openssl_ok(*args)
    if expected != "ok":
        assert "Srv Root" in store["message"] and "ssl_crl" in store["message"]
    # openssl verify's own rule (-crl_check: the leaf only) is still the default.
    assert check_json(srv.f["client1"], "--chain", srv.f["policy"], "--store", srv.f["root"],
                      "--crl", srv.f[crl])[0] == 0


# --- defect 4: a CRL past its nextUpdate refuses --------------------------------------------------


@pytest.mark.parametrize("server", ["openssl", "nginx"])
def test_stale_crl_refuses(srv, server, tmp_path):
    crls = cat(tmp_path / "crls.pem", srv.f["crl-stale"], srv.f["crl-root"])
    assert not openssl_ok("-CAfile", srv.f["root"], "-untrusted", srv.f["policy"], "-crl_check_all",
                          "-CRLfile", crls, srv.f["client1"])
    code, data = check_json(srv.f["client1"], "--chain", srv.f["policy"], "--store", srv.f["root"],
                            "--crl", crls, *(["--server", server] if server != "openssl" else []))
    store = data["stores"][0]
    assert code == 1 and store["reason"] == "crl-expired" and "Srv Policy CA" in store["message"]
    assert str(srv.f["crl-stale"].name) in store["fix"] or str(crls) in store["fix"]


# --- nginx's ssl_verify_depth ----------------------------------------------------------------------


@pytest.mark.parametrize("leaf, chain, expected", [("client1", "policy", "ok"), ("client", "chain2", "depth")])
def test_nginx_default_depth_is_one_intermediate(srv, leaf, chain, expected):
    assert openssl_ok("-verify_depth", "1", "-CAfile", srv.f["root"], "-untrusted", srv.f[chain], srv.f[leaf]) \
        == (expected == "ok")
    code, data = check_json(srv.f[leaf], "--chain", srv.f[chain], "--store", srv.f["root"], "--server", "nginx")
    store = data["stores"][0]
    assert store["reason"] == expected
    if expected == "depth":
        assert "ssl_verify_depth 2" in store["fix"]
    # openssl verify has no such default limit.
    assert check_json(srv.f[leaf], "--chain", srv.f[chain], "--store", srv.f["root"])[0] == 0


def test_unknown_server_is_an_error(srv):
    result = storesync("check", srv.f["client1"], "--store", srv.f["root"], "--server", "caddy")
    assert result.returncode == 2 and "--server must be one of" in result.stderr and "Traceback" not in result.stderr


def test_root_missing_and_its_crl_missing_lists_both(srv):
    code, data = check_json(srv.f["client1"], "--chain", srv.f["policy"], "--store", srv.f["other"],
                            "--crl", srv.f["crl-policy"], "--server", "nginx")
    problems = data["stores"][0]["problems"]
    assert code == 1 and [p["reason"] for p in problems] == ["missing-root", "crl-missing"]
    assert "CN=Srv Root" in problems[1]["fix"]


def test_profile_only_key(srv, tmp_path):
    source = cat(tmp_path / "source.pem", srv.f["root"], srv.f["other"])
    target = tmp_path / "target.pem"
    config = tmp_path / "storesync.toml"
    config.write_text(f'[profile.clients]\nmode = "add"\nsource = "pem:{source}"\ntargets = ["pem:{target}"]\n'
                      f'only = ["{sha256(srv.root)[:16]}"]\n')
    result = storesync("sync", "--config", config)
    assert result.returncode == 0, result.stdout + result.stderr
    assert [c.subject.rfc4514_string() for c in x509.load_pem_x509_certificates(target.read_bytes())] == ["CN=Srv Root"]
    config.write_text(config.read_text().replace(f'only = ["{sha256(srv.root)[:16]}"]', "only = 3"))
    result = storesync("sync", "--config", config)
    assert result.returncode == 2 and "only must be a list" in result.stderr and "Traceback" not in result.stderr
    result = storesync("sync", "--config", config, "--only", "x*")
    assert result.returncode == 2 and "--only" in result.stderr
