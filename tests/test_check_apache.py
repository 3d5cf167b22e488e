"""`check --apache-conf` against a real Apache httpd (mod_ssl) on loopback: SSLVerifyDepth and
SSLCARevocationCheck chain, curl and check agreeing, the fix making curl succeed. Skips where
apache2 or its modules are absent."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import storesync
from test_check_nginx import Case, curl_status, free_port, stop_by_pid_file
from test_check_server import cat

APACHE = shutil.which("apache2") or shutil.which("httpd") or (
    "/usr/sbin/apache2" if Path("/usr/sbin/apache2").exists() else None)
MODULES = Path("/usr/lib/apache2/modules")
pytestmark = pytest.mark.skipif(APACHE is None or not (MODULES / "mod_ssl.so").exists() or shutil.which("curl") is None,
                                reason="needs apache2 with mod_ssl, and curl")


class Apache:
    def __init__(self, d: Path, case: Case):
        self.dir, self.port = d, free_port()
        (d / "server.pem").write_bytes(case.server.pem)
        (d / "server.key").write_bytes(case.server.key_pem())
        (d / "htdocs").mkdir()
        (d / "htdocs" / "index.html").write_text("ok\n")
        self.conf = d / "httpd.conf"
        self.running = False

    def write(self, vhost_lines: str, ca_line: str = "SSLCACertificateFile client-ca.pem") -> Path:
        d = self.dir
        modules = "\n".join(f"LoadModule {m}_module {MODULES}/mod_{m}.so"
                            for m in ("mpm_event", "authz_core", "ssl", "socache_shmcb"))
        self.conf.write_text(f"""ServerRoot "{d}"
PidFile {d}/httpd.pid
ErrorLog {d}/error.log
LogLevel info
DefaultRuntimeDir {d}
Listen 127.0.0.1:{self.port}
{modules}
User nobody
Group nogroup
ServerName localhost
DocumentRoot {d}/htdocs
<VirtualHost 127.0.0.1:{self.port}>
    SSLEngine on
    SSLCertificateFile server.pem
    SSLCertificateKeyFile server.key
    SSLVerifyClient require
    {ca_line}
{vhost_lines}
</VirtualHost>
""")
        return self.conf

    def apache(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([APACHE, "-f", str(self.conf), *args], capture_output=True, text=True)

    def start(self) -> None:
        result = self.apache("-k", "start")
        assert result.returncode == 0, result.stderr
        self.running = True
        self._wait_listening()

    def reload(self) -> None:
        result = self.apache("-k", "graceful")
        assert result.returncode == 0, result.stderr
        time.sleep(0.5)

    def _wait_listening(self) -> None:
        import socket

        for _ in range(50):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.1)

    def stop(self) -> None:
        stop_by_pid_file(self.dir / "httpd.pid")

    def accepts(self, bundle: Path, key: Path) -> bool:
        """mod_ssl refuses in the handshake: no HTTP status at all."""
        return curl_status(self.port, bundle, key) != "000"

    def accepts_soon(self, bundle: Path, key: Path) -> bool:
        for _ in range(30):
            if self.accepts(bundle, key):
                return True
            time.sleep(0.1)
        return False


@pytest.fixture(scope="module")
def case(pki, tmp_path_factory) -> Case:
    return Case(pki, tmp_path_factory.mktemp("apache-pki"))


@pytest.fixture
def apache(case, tmp_path):
    server = Apache(tmp_path, case)
    yield server
    server.stop()


def check(conf: Path, leaf: Path) -> tuple[int, dict]:
    result = storesync("check", leaf, "--apache-conf", conf, "--json")
    assert result.returncode in (0, 1), result.stderr
    data = json.loads(result.stdout)
    assert len(data["stores"]) == 1 and data["stores"][0]["server"] == "apache"
    return result.returncode, data["stores"][0]


def test_ssl_verify_depth_counts_the_root(case, apache):
    """Measured: at the default SSLVerifyDepth 1 mod_ssl refuses even one intermediate ("chain
    has 2 certificates, but maximum allowed are only 1"); 2 takes one, 3 takes two."""
    cat(apache.dir / "client-ca.pem", case.f["root"])
    conf = apache.write("")
    apache.start()
    assert not apache.accepts(case.f["client1"], case.key("client1"))
    code, verdict = check(conf, case.f["client1"])
    assert code == 1 and verdict["reason"] == "depth" and verdict["fix"].startswith("set SSLVerifyDepth 2")
    apache.write("    SSLVerifyDepth 2")
    apache.reload()
    assert apache.accepts_soon(case.f["client1"], case.key("client1"))
    assert check(conf, case.f["client1"])[0] == 0
    assert not apache.accepts(case.f["client2"], case.key("client2"))
    code, verdict = check(conf, case.f["client2"])
    assert code == 1 and verdict["reason"] == "depth" and "SSLVerifyDepth 3" in verdict["fix"]
    assert verdict["settings"]["depth"]["line"] == conf.read_text().splitlines().index("    SSLVerifyDepth 2") + 1


@pytest.mark.parametrize("check_mode, crls, expected", [
    ("chain", ["crl-policy"], "crl-missing"),
    ("leaf", ["crl-policy"], "ok"),
    ("none", ["crl-stale"], "ok"),
    ("chain", ["crl-policy", "crl-root"], "ok"),
    ("chain", ["crl-stale", "crl-root"], "crl-expired"),
])
def test_revocation_check(case, apache, check_mode, crls, expected):
    cat(apache.dir / "client-ca.pem", case.f["root"])
    cat(apache.dir / "crl.pem", *(case.f[c] for c in crls))
    conf = apache.write(f"    SSLVerifyDepth 2\n    SSLCARevocationCheck {check_mode}\n    SSLCARevocationFile crl.pem")
    apache.start()
    accepted = apache.accepts(case.f["client1"], case.key("client1"))
    code, verdict = check(conf, case.f["client1"])
    assert verdict["reason"] == expected
    assert accepted == (code == 0) == (expected == "ok")
    if expected == "crl-missing":
        assert "Ngx Root" in verdict["fix"] and "SSLCARevocationFile" in verdict["message"]
        cat(apache.dir / "crl.pem", case.f["crl-policy"], case.f["crl-root"])  # the fix
        apache.reload()
        assert apache.accepts_soon(case.f["client1"], case.key("client1"))
        assert check(conf, case.f["client1"])[0] == 0


def test_revoked_and_include_and_virtual_host(case, apache):
    cat(apache.dir / "client-ca.pem", case.f["root"])
    cat(apache.dir / "crl.pem", case.f["crl-policy"], case.f["crl-root"])
    (apache.dir / "revocation.conf").write_text(
        "# included\nSSLCARevocationCheck chain\nSSLCARevocationFile \\\n    crl.pem\n")
    conf = apache.write("    SSLVerifyDepth 2\n    Include revocation.conf")
    apache.start()
    assert not apache.accepts(case.f["revoked"], case.key("revoked"))
    code, verdict = check(conf, case.f["revoked"])
    assert code == 1 and verdict["reason"] == "revoked"
    assert verdict["settings"]["crl"] == {"directive": "SSLCARevocationFile", "value": "crl.pem",
                                          "file": str(apache.dir / "revocation.conf"), "line": 3}
    assert verdict["server_block"].startswith(f"<VirtualHost 127.0.0.1:{apache.port}>")


def test_apache_config_errors_exit_2(case, tmp_path):
    bad = tmp_path / "httpd.conf"
    bad.write_text("<VirtualHost *:443>\n  SSLEngine on\n  Include missing.conf\n</VirtualHost>\n")
    result = storesync("check", case.f["client1"], "--apache-conf", bad)
    assert result.returncode == 2 and f"{bad}:3" in result.stderr and "Traceback" not in result.stderr
    bad.write_text("<VirtualHost *:443\n")
    result = storesync("check", case.f["client1"], "--apache-conf", bad)
    assert result.returncode == 2 and f"{bad}:1" in result.stderr


@pytest.fixture
def world_readable_dir():
    """mod_ssl reads an SSLCACertificatePath lazily, in the worker (User nobody): measured, a
    folder under pytest's 0700 tmp dir refuses every client ("unable to get local issuer")."""
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="storesync-apache-ca-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_ca_certificate_path_is_a_hashed_directory(case, apache, world_readable_dir):
    source = cat(apache.dir / "roots.pem", case.f["other"], case.f["root"])
    ca = world_readable_dir / "ca"
    result = storesync("sync", "--purpose", "client-auth", f"pem:{source}", f"dir:{ca}")
    assert result.returncode == 0, result.stderr
    conf = apache.write("    SSLVerifyDepth 2", ca_line=f"SSLCACertificatePath {ca}")
    apache.start()
    assert apache.accepts(case.f["client1"], case.key("client1"))
    code, verdict = check(conf, case.f["client1"])
    assert code == 0 and verdict["store"] == f"dir:{ca}"
    assert not apache.accepts(case.f["expired"], case.key("expired"))
    assert check(conf, case.f["expired"])[1]["reason"] == "expired"
