"""`check --server iis`: Schannel's acceptable-CA list (its size measured against what an
OpenSSL server actually sends in its CertificateRequest) and Trusted Roots that are not
self-signed."""

from __future__ import annotations

import json
import re
import subprocess
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

from conftest import NOW, VECTORS, need, storesync, vectors
from test_check_nginx import Case, free_port
from test_check_server import cat

LIMIT = 16384


@pytest.fixture(scope="module")
def case(pki, tmp_path_factory) -> Case:
    return Case(pki, tmp_path_factory.mktemp("iis-pki"))


def long_named_roots(case: Case, count: int) -> bytes:
    """`count` self-signed roots with ~200-byte names (one key: only the names matter here)."""
    key = case.root.key
    out = []
    for n in range(count):
        subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, f"Org {n:04d} " + "o" * 50),
                             x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Unit " + "u" * 55),
                             x509.NameAttribute(NameOID.COMMON_NAME, f"Long Root {n:04d} " + "c" * 45)])
        cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
                .serial_number(n + 1).not_valid_before(NOW).not_valid_after(NOW.replace(year=NOW.year + 5))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .sign(key, hashes.SHA256()))
        out.append(cert.public_bytes(__import__("cryptography.hazmat.primitives.serialization",
                                                fromlist=["Encoding"]).Encoding.PEM))
    return b"".join(out)


def sent_ca_names_bytes(case: Case, store, tmp_path) -> int:
    """What `openssl s_server -CAfile STORE` sends as its acceptable-CA list (TLS 1.2
    CertificateRequest, read from `s_client -msg`): the oracle for check's count."""
    need("openssl")
    port = free_port()
    (tmp_path / "srv.pem").write_bytes(case.server.pem)
    (tmp_path / "srv.key").write_bytes(case.server.key_pem())
    server = subprocess.Popen(["openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-cert", tmp_path / "srv.pem",
                               "-key", tmp_path / "srv.key", "-verify", "1", "-CAfile", store, "-tls1_2",
                               "-naccept", "1", "-quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(50):
            client = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-tls1_2", "-msg"],
                                    input=b"", capture_output=True, timeout=10)
            if b"CertificateRequest" in client.stdout:
                break
            time.sleep(0.1)
    finally:
        server.kill()
        server.wait()
    text = client.stdout.decode()
    block = text.split("CertificateRequest", 1)[1].split("<<<", 1)[0].split(">>>", 1)[0]
    body = bytes.fromhex(" ".join(re.findall(r"^\s+((?:[0-9a-f]{2} ?)+)", block, re.M)))
    assert body[0] == 0x0D  # handshake type certificate_request
    at = 4 + 1 + body[4]  # header, certificate_types
    at += 2 + int.from_bytes(body[at:at + 2], "big")  # signature_algorithms
    return int.from_bytes(body[at:at + 2], "big")  # certificate_authorities


def check_iis(leaf, *args) -> tuple[int, dict]:
    result = storesync("check", leaf, *args, "--server", "iis", "--json")
    assert result.returncode in (0, 1), result.stderr
    return result.returncode, json.loads(result.stdout)["stores"][0]


def test_ca_name_list_size_is_what_a_server_sends_and_over_16k_refuses(case, tmp_path):
    small = cat(tmp_path / "small.pem", case.f["root"], case.f["other"])
    code, store = check_iis(case.f["client1"], "--store", f"pem:{small}")
    assert code == 0 and store["ca_names"]["bytes"] == sent_ca_names_bytes(case, small, tmp_path)
    big = cat(tmp_path / "big.pem", long_named_roots(case, 100), case.f["root"])
    code, store = check_iis(case.f["client1"], "--store", f"pem:{big}")
    sent = sent_ca_names_bytes(case, big, tmp_path)
    assert store["ca_names"]["bytes"] == sent > LIMIT
    assert code == 1 and store["reason"] == "ca-list-too-long"
    problem = store["problems"][0]
    # Dropping that many of the longest names (not the client's root) is enough, one fewer is not.
    sizes = sorted((2 + len(c.subject.public_bytes()) for c in x509.load_pem_x509_certificates(big.read_bytes())
                    if c.subject != case.root.cert.subject), reverse=True)
    assert sent - sum(sizes[:problem["drop"]]) <= LIMIT < sent - sum(sizes[:problem["drop"] - 1])
    assert f"drop at least {problem['drop']} roots" in problem["fix"] and "Ngx Root" in problem["fix"]


def test_trusted_root_not_self_signed(case, tmp_path):
    sst = tmp_path / "root.sst"
    source = cat(tmp_path / "roots.pem", case.f["root"], case.policy.pem)
    result = storesync("sync", f"pem:{source}", f"sst:{sst}", "--purpose", "client-auth")
    assert result.returncode == 0, result.stderr
    code, store = check_iis(case.f["client1"], "--store", f"sst:{sst}")
    assert code == 1 and store["reason"] == "root-not-self-signed"
    assert "Ngx Policy CA" in store["message"] and "certutil -delstore Root" in store["fix"]
    # Under openssl's rules the same store accepts.
    assert storesync("check", case.f["client1"], "--store", f"sst:{sst}").returncode == 0


@vectors
def test_windows_update_roots_are_over_the_limit(case):
    code, store = check_iis(case.f["client1"], "--store", f"sst:{VECTORS / 'windows' / 'roots-2021.sst'}")
    assert code == 1 and store["ca_names"]["bytes"] > LIMIT
    assert any(p["reason"] == "ca-list-too-long" and p["drop"] > 0 for p in store["problems"])
