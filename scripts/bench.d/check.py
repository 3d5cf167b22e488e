"""Issue 8: `storesync check` against the system bundle vs `openssl verify` on the same inputs,
`check` over every store of the machine, `status` vs the peers' listing commands, and the
start-up of an unrelated command (check and status must not slow it down)."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _timing import BUNDLE, STORESYNC, median_time, side_by_side, table  # noqa: E402

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID  # noqa: E402

scratch = Path(tempfile.mkdtemp(prefix="storesync-bench-check-"))
now = dt.datetime.now(dt.timezone.utc)


def issue(name: str, issuer=None, ca: bool = True):
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    signer, signer_name = (issuer[1], issuer[0].subject) if issuer else (key, subject)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(signer_name).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
               .not_valid_after(now + dt.timedelta(days=365))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False))
    if issuer:
        builder = builder.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer[1].public_key()), critical=False)
    if ca:
        builder = builder.add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
    else:
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    return builder.sign(signer, hashes.SHA256()), key


def pem(cert) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


root = issue("Bench Root")
inter = issue("Bench Intermediate", root)
leaf = issue("bench.client", inter, ca=False)
store = scratch / "store.pem"  # the system bundle plus our root: 145 anchors to search
store.write_bytes(BUNDLE.read_bytes() + pem(root[0]))
(scratch / "inter.pem").write_bytes(pem(inter[0]))
(scratch / "leaf.pem").write_bytes(pem(leaf[0]))
inter_path, leaf_path = scratch / "inter.pem", scratch / "leaf.pem"

openssl_ok = ["openssl", "verify", "-CAfile", str(store), "-untrusted", str(inter_path), "-purpose", "sslclient",
              str(leaf_path)]
ours_ok = [*STORESYNC, "check", str(leaf_path), "--chain", str(inter_path), "--store", f"pem:{store}"]
openssl_missing = [*openssl_ok[:2], "-CAfile", str(BUNDLE), *openssl_ok[4:]]
ours_missing = [*ours_ok[:-1], f"pem:{BUNDLE}"]
# the same verdict (issue 18): both accept the first, both refuse the second
verdicts = [subprocess.run(argv, capture_output=True).returncode == 0
            for argv in (openssl_ok, ours_ok, openssl_missing, ours_missing)]
assert verdicts == [True, True, False, False], f"check and openssl verify disagree: {verdicts}"
# In turns (issue 18: check <= 3x openssl verify), so a slow spell weighs on both alike.
turns = side_by_side({name: (argv, None) for name, argv in (
    ("ok_openssl", openssl_ok), ("ok_ours", ours_ok),
    ("missing_openssl", lambda: subprocess.run(openssl_missing, capture_output=True)),  # exits 2: refused
    ("missing_ours", ours_missing),
    ("floor", [sys.executable, "-c", "import cryptography.x509"]),
    # cryptography's ECDSA class imports its OpenSSL backend when the verifier checks an EC
    # signature (this PKI's): part of what check cannot avoid, beside the x509 import
    ("floor_ec", [sys.executable, "-c", "import cryptography.x509, cryptography.hazmat.backends.openssl.backend"]))},
    rounds=21)
ok_openssl, ok_ours, missing_openssl, missing_ours, floor, floor_ec = (turns[n] for n in (
    "ok_openssl", "ok_ours", "missing_openssl", "missing_ours", "floor", "floor_ec"))
every_store = median_time([*STORESYNC, "check", str(leaf_path), "--chain", str(inter_path)], runs=5)
status = median_time([*STORESYNC, "status"], runs=5)
status_json = median_time([*STORESYNC, "status", "--json"], runs=5)
peers = []
if shutil.which("trust"):
    peers.append(("`trust list --filter=ca-anchors` (p11-kit)",
                  median_time(["trust", "list", "--filter=ca-anchors"], runs=5), "one view, no counts"))
if shutil.which("keytool"):
    peers.append(("`keytool -list` of Java cacerts", median_time(
        ["keytool", "-list", "-keystore", "/etc/ssl/certs/java/cacerts", "-storepass", "changeit"], runs=5), "one store"))
help_time = median_time([*STORESYNC, "diff", "--help"], runs=11)
bare = median_time([sys.executable, "-c", "import typer"], runs=11)
shutil.rmtree(scratch)

table("check: one client certificate against a 145-root bundle", [
    ("`openssl verify -purpose sslclient` (accepts)", ok_openssl, "verdict only"),
    ("`storesync check --store pem:...` (ok)", ok_ours, f"verdict + path; {ok_ours / ok_openssl:.1f}x openssl's time (goal <= 3x)"),
    ("`openssl verify` against the system bundle (refuses)", missing_openssl, "`unable to get issuer certificate`"),
    ("`storesync check --store pem:system bundle` (missing-root)", missing_ours,
     f"reason, issuer, key id, fix; {missing_ours / missing_openssl:.1f}x openssl's time"),
    ("`storesync check` (every store status finds)", every_store, "bundle, dir, local, Java, NSS"),
    ("`python -c 'import cryptography.x509'`", floor,
     f"what check cannot avoid (the verifier's import); {floor / ok_openssl:.1f}x openssl's time"),
    ("`python -c 'import cryptography.x509, ...openssl.backend'`", floor_ec,
     f"and the OpenSSL backend cryptography's ECDSA imports (EC chains); {floor_ec / ok_openssl:.1f}x openssl's time"),
])
table("status: this machine's stores at a glance", [
    ("`storesync status`", status, "all stores, counts, matrix"),
    ("`storesync status --json`", status_json, ""),
    *peers,
])
table("start-up of other commands (check/status import lazily)", [
    ("`storesync diff --help`", help_time, "includes registering check and status"),
    ("`python -c 'import typer'`", bare, "floor"),
])
