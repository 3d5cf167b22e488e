"""Real TLS clients against a loopback `openssl s_server`, each trusting only one store.

Every client answers "accepted" or "refused" after checking that a refusal is a certificate
verdict (not a missing file, a crash or a wrong option): anything else fails the test, so a
test cannot pass because a client did not really run. Everything listens on 127.0.0.1 only
and every client runs under a timeout.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from conftest import NOW, PKI, Issued

HOST = "127.0.0.1"
# The root's name is awkward on purpose: runs of spaces and mixed case, which OpenSSL's subject
# hash folds, non-ASCII, and a slash, which cannot be in a file name: `dir` clients find it by hash.
ROOT_LABEL = "storesync TLS Test Root / Ünïcode"
ROOT_NAME = x509.Name([
    x509.NameAttribute(NameOID.COUNTRY_NAME, "DE"),
    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Storesync   Test  GmbH"),
    x509.NameAttribute(NameOID.COMMON_NAME, ROOT_LABEL),
])
TIMEOUT = 30  # seconds for one client run: a JVM start on a busy 2-core machine stays well below
ACCEPTED, REFUSED = "accepted", "refused"


def tool(name: str) -> str:
    """A client binary: scripts/test installs them all, so a missing one fails the test loudly."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed; run scripts/test, which installs the test tools")
    return path


# --- the private PKI -----------------------------------------------------------------------


def server_leaf(issuer: Issued) -> Issued:
    """A TLS server certificate for 127.0.0.1 and localhost (the conftest leaf names leaf.test)."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(issuer.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=90))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(HOST))]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()), critical=False)
        .sign(issuer.key, hashes.SHA256())
    )
    return Issued(cert, key)


class Pki:
    """root -> intermediate -> server leaf, an unrelated second root, and the root's predecessor:
    the same name (so the same subject hash and NSS nickname) and another key, as a renewed root
    leaves behind. Written as PEM files."""

    def __init__(self, directory: Path):
        pki = PKI()
        self.predecessor = pki.ca(ROOT_NAME)
        self.root = pki.ca(ROOT_NAME)
        self.intermediate = pki.ca("storesync TLS Test Intermediate", self.root)
        self.leaf = server_leaf(self.intermediate)
        self.other_root = pki.ca("storesync Unrelated Root")
        self.root_pem = self.root.write(directory / "root.pem")
        self.intermediate_pem = self.intermediate.write(directory / "intermediate.pem")
        self.leaf_pem = self.leaf.write(directory / "leaf.pem")
        self.other_root_pem = self.other_root.write(directory / "other-root.pem")
        self.key_pem = directory / "leaf.key"
        self.key_pem.write_bytes(self.leaf.key_pem())


# --- the server ----------------------------------------------------------------------------


class Server:
    """`openssl s_server` on 127.0.0.1 and a port the kernel picks, serving leaf + intermediate."""

    def __init__(self, pki: Pki, directory: Path):
        self.log = directory / "s_server.log"
        with open(self.log, "wb") as log:  # a file, not a pipe: a full pipe would stall the server
            self.proc = subprocess.Popen(
                [tool("openssl"), "s_server", "-accept", f"{HOST}:0", "-cert", str(pki.leaf_pem),
                 "-key", str(pki.key_pem), "-cert_chain", str(pki.intermediate_pem), "-www"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )
        self.port = self._wait_for_port()

    def _wait_for_port(self) -> int:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            for line in self.log.read_text(errors="replace").splitlines():
                if line.startswith(f"ACCEPT {HOST}:"):
                    return int(line.rsplit(":", 1)[1])
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        pytest.fail(f"openssl s_server did not start: {self.log.read_text(errors='replace')}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# --- the clients ---------------------------------------------------------------------------


def _run(args: list[str], **kwargs) -> tuple[int, str]:
    try:
        result = subprocess.run(args, capture_output=True, text=True, errors="replace", timeout=TIMEOUT,
                                stdin=subprocess.DEVNULL, **kwargs)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{args[0]} did not finish within {TIMEOUT}s: {' '.join(args)}")
    return result.returncode, result.stdout + result.stderr


def _verdict(args: list[str], refused: int, marker: str, **kwargs) -> tuple[str, str]:
    """accepted on exit 0; refused on exit `refused` with `marker` in the output; else fail."""
    code, out = _run(args, **kwargs)
    if code == 0:
        return ACCEPTED, out
    if code == refused and marker in out:
        return REFUSED, out
    pytest.fail(f"{args[0]} neither accepted nor refused the certificate (exit {code}):\n{' '.join(args)}\n{out}")


def curl(option: str, store: Path, port: int) -> tuple[str, str]:
    # exit 60: "SSL certificate problem"; a missing or unreadable CA file is 77 and fails the test
    return _verdict([tool("curl"), "-sS", "--max-time", "10", option, str(store), "-o", "/dev/null",
                     f"https://{HOST}:{port}/"], 60, "SSL certificate problem")


def gnutls_cli(store: Path, port: int) -> tuple[str, str]:
    return _verdict([tool("gnutls-cli"), "--x509cafile", str(store), "-p", str(port), HOST],
                    1, "The certificate is NOT trusted")


def s_client(option: str, store: Path, port: int) -> tuple[str, str]:
    # the default CA file, directory and store are switched off: only `store` counts
    return _verdict([tool("openssl"), "s_client", "-connect", f"{HOST}:{port}", option, str(store),
                     "-no-CAfile" if option == "-CApath" else "-no-CApath", "-no-CAstore",
                     "-verify_return_error", "-verify_ip", HOST], 1, "verify error:")


def python_ssl(option: str, store: Path, port: int) -> tuple[str, str]:
    """CPython's ssl module (OpenSSL underneath) with a cafile or capath and no default paths."""
    context = ssl.create_default_context(**{option: str(store)})
    try:
        with socket.create_connection((HOST, port), timeout=10) as raw:
            with context.wrap_socket(raw, server_hostname=HOST):
                return ACCEPTED, ""
    except ssl.SSLCertVerificationError as exc:
        return REFUSED, str(exc)


def vfychain(store: Path, pki: Pki) -> tuple[str, str]:
    """NSS's chain verifier, usage 1 = SSL server, leaf then intermediate."""
    return _verdict([tool("vfychain"), "-d", f"sql:{store}", "-u", "1", "-a", str(pki.leaf_pem),
                     "-a", str(pki.intermediate_pem)], 1, "Chain is bad!")


def tstclnt(store: Path, port: int) -> tuple[str, str]:
    # -Q: exit after the handshake. Never -o, which overrides a bad server certificate.
    return _verdict([tool("tstclnt"), "-h", HOST, "-p", str(port), "-d", f"sql:{store}", "-Q"],
                    254, "authentication of server cert failed")


JAVA_CLIENT = """\
import javax.net.ssl.*;

/** Handshake with 127.0.0.1:PORT trusting only javax.net.ssl.trustStore: exit 0 accepted, 1 refused. */
public class Client {
    public static void main(String[] args) throws Exception {
        try (SSLSocket socket = (SSLSocket) SSLSocketFactory.getDefault().createSocket()) {
            socket.connect(new java.net.InetSocketAddress("127.0.0.1", Integer.parseInt(args[0])), 10000);
            socket.setSoTimeout(10000);
            SSLParameters params = socket.getSSLParameters();
            params.setEndpointIdentificationAlgorithm("HTTPS");  // the name is checked too, as HTTPS clients do
            socket.setSSLParameters(params);
            try {
                socket.startHandshake();
            } catch (SSLHandshakeException e) {
                System.out.println("refused: " + e.getMessage());
                System.exit(1);
            }
            System.out.println("accepted");
        }
    }
}
"""


def compile_java_client(directory: Path) -> Path:
    """Compiled once per module: a JVM start per run is enough (the source launcher compiles every time)."""
    directory.mkdir(exist_ok=True)
    source = directory / "Client.java"
    source.write_text(JAVA_CLIENT)
    code, out = _run([tool("javac"), "-d", str(directory), str(source)])
    assert code == 0, out
    return directory


def java(classes: Path, store: Path, store_type: str, password: str | None, port: int) -> tuple[str, str]:
    """The JDK's default SSLContext, set up only by the javax.net.ssl.trustStore* properties."""
    props = [f"-Djavax.net.ssl.trustStore={store}", f"-Djavax.net.ssl.trustStoreType={store_type}"]
    if password is not None:
        props.append(f"-Djavax.net.ssl.trustStorePassword={password}")
    return _verdict([tool("java"), "-Xshare:auto", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", *props,
                     "-cp", str(classes), "Client", str(port)], 1, "refused: ")
