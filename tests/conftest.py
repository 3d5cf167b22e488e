"""Shared fixtures: a small PKI built with `cryptography`, and helpers to run the real tools."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from storesync import der

SYSTEM_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
VECTORS = Path(__file__).resolve().parents[2] / "shared" / "vectors"
NOW = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def need(tool: str) -> str:
    """Path of a real tool the test uses as an oracle. scripts/test installs them all,
    so a missing one is a broken set-up: fail loudly rather than skip."""
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} is not installed; run scripts/test, which installs the test tools")
    return path


def run(*args: str | os.PathLike, check: bool = True, input: bytes | None = None, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], capture_output=True, check=check, input=input, env=env)


def storesync(*args: str | os.PathLike, check: bool = False, env=None, cwd=None) -> subprocess.CompletedProcess:
    """Run the real CLI in a subprocess, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "storesync", *map(str, args)], capture_output=True, text=True, check=check, env=env, cwd=cwd
    )


@dataclass
class Issued:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    def write(self, path: Path) -> Path:
        path.write_bytes(self.pem)
        return path


def name(text: str | x509.Name) -> x509.Name:
    if isinstance(text, x509.Name):
        return text
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])


class PKI:
    """Makes CAs and leaves. Keys are P-256: fast to generate."""

    def __init__(self):
        self._serial = 1000

    def _next_serial(self) -> int:
        self._serial += 1
        return self._serial

    def ca(
        self,
        subject: str | x509.Name = "Test Root CA",
        issuer: Issued | None = None,
        *,
        not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
        serial: int | None = None,
        path_length: int | None = None,
    ) -> Issued:
        return self._issue(subject, issuer, True, not_before, not_after, serial, None, path_length)

    def leaf(
        self,
        subject: str | x509.Name,
        issuer: Issued,
        *,
        eku: list | None = None,
        not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
        serial: int | None = None,
    ) -> Issued:
        eku = eku if eku is not None else [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
        return self._issue(subject, issuer, False, not_before, not_after, serial, eku, None)

    def _issue(self, subject, issuer, is_ca, not_before, not_after, serial, eku, path_length) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = name(subject)
        signer_key = issuer.key if issuer else key
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer.cert.subject if issuer else subject)
            .public_key(key.public_key())
            .serial_number(serial or self._next_serial())
            .not_valid_before(not_before or NOW - dt.timedelta(days=1))
            .not_valid_after(not_after or NOW + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=is_ca, path_length=path_length), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        )
        if is_ca:
            builder = builder.add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )
        else:
            builder = builder.add_extension(
                x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True
            )
            builder = builder.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName("leaf.test")]), critical=False
            )
        if issuer:
            builder = builder.add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()), critical=False
            )
        return Issued(builder.sign(signer_key, hashes.SHA256()), key)


def with_serial(issued: Issued, signer: Issued, serial_content: bytes) -> bytes:
    """Re-sign `issued` with a serial `cryptography` refuses to build (0, negative): DER bytes."""
    cert = der.read(issued.der)
    tbs, sig_alg, _sig = list(cert.children())
    fields = list(tbs.children())
    index = 1 if fields[0].tag == 0xA0 else 0
    raws = [f.raw for f in fields]
    raws[index] = der.encode(der.INTEGER, serial_content)
    new_tbs = der.encode(der.SEQUENCE, b"".join(raws))
    signature = signer.key.sign(new_tbs, ec.ECDSA(hashes.SHA256()))
    return der.encode(der.SEQUENCE, new_tbs + sig_alg.raw + der.encode(0x03, b"\x00" + signature))


def pem_of(der_bytes: bytes, label: str = "CERTIFICATE") -> bytes:
    import base64
    import textwrap

    body = "\n".join(textwrap.wrap(base64.b64encode(der_bytes).decode(), 64))
    return f"-----BEGIN {label}-----\n{body}\n-----END {label}-----\n".encode()


@pytest.fixture(scope="session", autouse=True)
def scratch_state_dir(tmp_path_factory):
    """Backups, baselines and locks of the test runs stay out of the machine's own state dir."""
    previous = os.environ.get("STORESYNC_STATE_DIR")
    os.environ["STORESYNC_STATE_DIR"] = str(tmp_path_factory.mktemp("state"))
    yield
    if previous is None:
        os.environ.pop("STORESYNC_STATE_DIR", None)
    else:
        os.environ["STORESYNC_STATE_DIR"] = previous


@pytest.fixture(scope="session")
def pki() -> PKI:
    return PKI()


@pytest.fixture(scope="session")
def root(pki) -> Issued:
    return pki.ca("storesync Test Root")


@pytest.fixture(scope="session")
def intermediate(pki, root) -> Issued:
    return pki.ca("storesync Test Intermediate", root)


@pytest.fixture(scope="session")
def server_leaf(pki, intermediate) -> Issued:
    return pki.leaf("leaf.test", intermediate)


@pytest.fixture
def system_bundle() -> Path:
    if not SYSTEM_BUNDLE.exists():
        pytest.fail(f"{SYSTEM_BUNDLE} is missing: scripts/test installs ca-certificates")
    return SYSTEM_BUNDLE


vectors = pytest.mark.skipif(not VECTORS.is_dir(), reason="shared/vectors is not beside the project")


def cli_modules(argv: list[str], env: dict[str, str], watched: tuple[str, ...],
                installed: bool = False) -> tuple[object, list[str]]:
    """`storesync ARGV` run by `main()` in a fresh interpreter: (its exit code, which modules of
    `watched` it imported, each module counting with its submodules). Start-up is most of a
    one-shot run, so tests hold what it may import. `installed`: as a regular install starts,
    without `site` (an editable install's import hook imports pathlib itself), the sources and
    the installed packages on PYTHONPATH."""
    code = ("import sys; from storesync.cli import main\ncode = 0\n"
            f"sys.argv = ['storesync', *{[str(a) for a in argv]!r}]\n"
            "try:\n    main()\nexcept SystemExit as exc:\n    code = exc.code\n"
            f"print(code, [w for w in {tuple(watched)!r} if any(m == w or m.startswith(w + '.') for m in sys.modules)])")
    flags = []
    if installed:
        import sysconfig

        flags, places = ["-S"], [Path(__file__).resolve().parents[1], *{sysconfig.get_path(p) for p in ("purelib", "platlib")}]
        env = {**env, "PYTHONPATH": os.pathsep.join(map(str, places))}
    result = subprocess.run([sys.executable, *flags, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    exit_code, _, found = result.stdout.rstrip().rpartition("\n")[2].partition(" ")
    import ast

    return (None if exit_code == "None" else int(exit_code)), ast.literal_eval(found)
