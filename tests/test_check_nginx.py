"""`check --nginx-conf` against a real nginx on loopback: for each case curl and check give the
same verdict, and doing what the printed fix says (then `nginx -s reload`) makes curl succeed
without adding any other anchor. Skips where nginx or curl is absent."""

from __future__ import annotations

import datetime as dt
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID as EKU

from conftest import NOW, Issued, storesync
from test_check_server import cat, sha256, write_crl

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
pytestmark = pytest.mark.skipif(NGINX is None or shutil.which("curl") is None, reason="needs nginx and curl")
DAY = dt.timedelta(days=1)
REPO = Path(__file__).resolve().parents[1]



def stop_by_pid_file(pid_file: Path) -> None:
    """SIGTERM the server whose pid the file holds, and wait (5 s at most) for it to go."""
    if pid_file.exists():
        try:
            os.kill(int(pid_file.read_text()), signal.SIGTERM)
        except (ProcessLookupError, ValueError):
            pass
        for _ in range(100):
            if not pid_file.exists():
                break
            time.sleep(0.05)


def curl_status(port: int, bundle: Path, key: Path) -> str:
    """The HTTP status a server on 127.0.0.1:`port` answers a client presenting `bundle`; 000: none."""
    result = subprocess.run(["curl", "-sk", "--max-time", "5", "--cert", str(bundle), "--key", str(key),
                             f"https://127.0.0.1:{port}/", "-o", "/dev/null", "-w", "%{http_code}"],
                            capture_output=True, text=True)
    return result.stdout.strip() or "000"

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Nginx:
    """nginx with a prefix of its own (`-p DIR -c nginx.conf`), on a free 127.0.0.1 port."""

    def __init__(self, d: Path, server_cert: Issued):
        self.dir, self.port = d, free_port()
        (d / "server.pem").write_bytes(server_cert.pem)
        (d / "server.key").write_bytes(server_cert.key_pem())
        self.conf = d / "nginx.conf"
        self.running = False

    def write(self, server_lines: str, http_lines: str = "") -> Path:
        self.conf.write_text(f"""daemon on;
pid nginx.pid;
error_log error.log info;
events {{ worker_connections 32; }}
http {{
    access_log off;
{http_lines}
    server {{
        listen 127.0.0.1:{self.port} ssl;
        server_name clients.test;
        ssl_certificate server.pem;
        ssl_certificate_key server.key;
        ssl_verify_client on;
{server_lines}
        location / {{ return 200 "ok\\n"; }}
    }}
}}
""")
        return self.conf

    def nginx(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([NGINX, "-p", f"{self.dir}/", "-c", str(self.conf), "-e", str(self.dir / "error.log"),
                               *args], capture_output=True, text=True)

    def start(self) -> bool:
        self.running = self.nginx().returncode == 0
        return self.running

    def reload(self) -> None:
        if not self.running:
            assert self.start(), (self.dir / "error.log").read_text()[-2000:]
            return
        result = self.nginx("-s", "reload")
        assert result.returncode == 0, result.stderr

    def stop(self) -> None:
        stop_by_pid_file(self.dir / "nginx.pid")

    def curl(self, bundle: Path, key: Path) -> str:
        """The HTTP status nginx answers a client presenting `bundle`; 000: no answer."""
        return curl_status(self.port, bundle, key)

    def curl_until(self, bundle: Path, key: Path, status: str = "200") -> str:
        """After a reload the old workers answer for a moment: ask again until `status` (5 s)."""
        for _ in range(50):
            got = self.curl(bundle, key)
            if got == status:
                return got
            time.sleep(0.1)
        return got


class Case:
    """Root <- Policy CA <- Issuing CA <- client2; Root <- Policy CA <- client1 (and the bad ones)."""

    def __init__(self, pki, d: Path):
        self.d = d
        self.root = pki.ca("Ngx Root", not_before=NOW - 900 * DAY)
        self.policy = pki.ca("Ngx Policy CA", self.root, not_before=NOW - 900 * DAY)
        self.issuing = pki.ca("Ngx Issuing CA", self.policy, not_before=NOW - 900 * DAY)
        self.other = pki.ca("Ngx Other Root")
        self.server = pki.leaf("clients.test", pki.ca("Ngx Server Root"))
        leaves = {
            "client1": pki.leaf("client1.ngx", self.policy, eku=[EKU.CLIENT_AUTH]),
            "client2": pki.leaf("client2.ngx", self.issuing, eku=[EKU.CLIENT_AUTH]),
            "expired": pki.leaf("expired.ngx", self.policy, eku=[EKU.CLIENT_AUTH],
                                not_before=NOW - 90 * DAY, not_after=NOW - DAY),
            "future": pki.leaf("future.ngx", self.policy, eku=[EKU.CLIENT_AUTH],
                               not_before=NOW + 30 * DAY, not_after=NOW + 90 * DAY),
            "revoked": pki.leaf("revoked.ngx", self.policy, eku=[EKU.CLIENT_AUTH]),
            "server-only": pki.leaf("server-only.ngx", self.policy, eku=[EKU.SERVER_AUTH]),
        }
        self.leaves = leaves
        self.f: dict[str, Path] = {}
        for name, leaf in leaves.items():
            chain = [self.issuing, self.policy] if name == "client2" else [self.policy]
            self.f[name] = cat(d / f"{name}.pem", leaf.pem, *(c.pem for c in chain))  # what curl sends
            (d / f"{name}.key").write_bytes(leaf.key_pem())
        self.f["root"] = self.root.write(d / "root.pem")
        self.f["other"] = self.other.write(d / "other.pem")
        self.f["source"] = cat(d / "private-roots.pem", self.other.pem, self.root.pem)  # where the fix takes a root from
        self.f["crl-policy"] = write_crl(d / "crl-policy.pem", self.policy, [leaves["revoked"].cert.serial_number])
        self.f["crl-root"] = write_crl(d / "crl-root.pem", self.root)
        self.f["crl-stale"] = write_crl(d / "crl-stale.pem", self.policy, next_update=NOW - DAY)

    def key(self, name: str) -> Path:
        return self.d / f"{name}.key"


@pytest.fixture(scope="module")
def case(pki, tmp_path_factory) -> Case:
    return Case(pki, tmp_path_factory.mktemp("nginx-pki"))


@pytest.fixture
def nginx(case, tmp_path):
    server = Nginx(tmp_path, case.server)
    yield server
    server.stop()


def check(conf: Path, leaf: Path, *extra) -> tuple[int, dict]:
    result = storesync("check", leaf, "--nginx-conf", conf, *extra, "--json")
    assert result.returncode in (0, 1), result.stderr
    return result.returncode, json.loads(result.stdout)


def verdict_of(data: dict) -> dict:
    found = [s for s in data["stores"] if s.get("server") == "nginx"]
    assert len(found) == 1, data["stores"]
    return found[0]


def run_fix(fix: str, cwd: Path) -> None:
    """Run a printed fix as a shell line, `storesync` being this checkout's CLI."""
    line = fix.replace("storesync sync", f"{shlex.quote(sys.executable)} -m storesync sync")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(line, shell=True, cwd=cwd, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stdout + result.stderr


# Cases where the fix is a new certificate (no setting to change): curl and check agree.
@pytest.mark.parametrize("leaf, reason", [
    ("expired", "expired"), ("future", "not-yet-valid"), ("server-only", "purpose"), ("client1", "ok"),
])
def test_curl_and_check_agree(case, nginx, leaf, reason):
    cat(nginx.dir / "client-ca.pem", case.f["root"])
    conf = nginx.write("        ssl_client_certificate client-ca.pem;")
    assert nginx.start()
    status = nginx.curl(case.f[leaf], case.key(leaf))
    code, data = check(conf, case.f[leaf])
    assert verdict_of(data)["reason"] == reason
    assert (status == "200") == (code == 0) == (reason == "ok"), status


def test_revoked(case, nginx):
    cat(nginx.dir / "client-ca.pem", case.f["root"])
    cat(nginx.dir / "crl.pem", case.f["crl-policy"], case.f["crl-root"])
    conf = nginx.write("        ssl_client_certificate client-ca.pem;\n        ssl_crl crl.pem;")
    assert nginx.start()
    assert nginx.curl(case.f["revoked"], case.key("revoked")) == "400"
    code, data = check(conf, case.f["revoked"])
    assert code == 1 and verdict_of(data)["reason"] == "revoked"
    assert nginx.curl(case.f["client1"], case.key("client1")) == "200" and check(conf, case.f["client1"])[0] == 0


def test_missing_root_fix_adds_that_root_only(case, nginx):
    client_ca = cat(nginx.dir / "client-ca.pem", case.f["other"])
    conf = nginx.write("        ssl_client_certificate client-ca.pem;")
    assert nginx.start()
    assert nginx.curl(case.f["client1"], case.key("client1")) == "400"
    code, data = check(conf, case.f["client1"], "--store", case.f["source"])
    verdict = verdict_of(data)
    assert code == 1 and verdict["reason"] == "missing-root"
    assert f"--only {sha256(case.root)}" in verdict["fix"]
    run_fix(verdict["fix"], nginx.dir)
    held = sorted(c.subject.rfc4514_string() for c in x509.load_pem_x509_certificates(client_ca.read_bytes()))
    assert held == ["CN=Ngx Other Root", "CN=Ngx Root"]
    nginx.reload()
    assert nginx.curl_until(case.f["client1"], case.key("client1")) == "200"
    assert check(conf, case.f["client1"])[0] == 0


def test_crl_of_a_ca_missing(case, nginx):
    cat(nginx.dir / "client-ca.pem", case.f["root"])
    crl = cat(nginx.dir / "crl.pem", case.f["crl-policy"])  # the policy CA's CRL, not the root's
    conf = nginx.write("        ssl_client_certificate client-ca.pem;\n        ssl_crl crl.pem;")
    assert nginx.start()
    assert nginx.curl(case.f["client1"], case.key("client1")) == "400"
    assert "unable to get certificate CRL" in (nginx.dir / "error.log").read_text()
    code, data = check(conf, case.f["client1"])
    verdict = verdict_of(data)
    assert code == 1 and verdict["reason"] == "crl-missing" and "Ngx Root" in verdict["fix"]
    assert verdict["settings"]["crl"]["line"] == conf.read_text().splitlines().index("        ssl_crl crl.pem;") + 1
    cat(crl, case.f["crl-policy"], case.f["crl-root"])  # the fix: add the root's CRL
    nginx.reload()
    assert nginx.curl_until(case.f["client1"], case.key("client1")) == "200"
    assert check(conf, case.f["client1"])[0] == 0


def test_stale_crl(case, nginx):
    cat(nginx.dir / "client-ca.pem", case.f["root"])
    crl = cat(nginx.dir / "crl.pem", case.f["crl-stale"], case.f["crl-root"])
    conf = nginx.write("        ssl_client_certificate client-ca.pem;\n        ssl_crl crl.pem;")
    assert nginx.start()
    assert nginx.curl(case.f["client1"], case.key("client1")) == "400"
    assert "CRL has expired" in (nginx.dir / "error.log").read_text()
    code, data = check(conf, case.f["client1"])
    verdict = verdict_of(data)
    assert code == 1 and verdict["reason"] == "crl-expired" and "fresh CRL from Ngx Policy CA" in verdict["fix"]
    cat(crl, case.f["crl-policy"], case.f["crl-root"])  # the fix: a fresh CRL in its place
    nginx.reload()
    assert nginx.curl_until(case.f["client1"], case.key("client1")) == "200"
    assert check(conf, case.f["client1"])[0] == 0


def test_two_intermediates_need_depth_two_and_one_passes(case, nginx):
    cat(nginx.dir / "client-ca.pem", case.f["root"])
    conf = nginx.write("        ssl_client_certificate client-ca.pem;")
    assert nginx.start()
    assert nginx.curl(case.f["client1"], case.key("client1")) == "200"
    assert check(conf, case.f["client1"])[0] == 0
    assert nginx.curl(case.f["client2"], case.key("client2")) == "400"
    code, data = check(conf, case.f["client2"])
    verdict = verdict_of(data)
    assert code == 1 and verdict["reason"] == "depth" and verdict["fix"].startswith("set ssl_verify_depth 2")
    assert "ssl_verify_depth is not set (default 1)" in verdict["message"]
    assert verdict["settings"]["depth"] == {"directive": "ssl_verify_depth", "value": "1", "file": None,
                                            "line": None, "default": True}
    nginx.write("        ssl_client_certificate client-ca.pem;\n        ssl_verify_depth 2;")
    nginx.reload()
    assert nginx.curl_until(case.f["client2"], case.key("client2")) == "200"
    code, data = check(conf, case.f["client2"])
    assert code == 0 and verdict_of(data)["settings"]["depth"]["value"] == "2"


def test_trusted_certificate_client_ca_file(case, nginx):
    client_ca = nginx.dir / "client-ca.pem"
    subprocess.run(["openssl", "x509", "-in", case.f["root"], "-addtrust", "clientAuth", "-trustout", "-out",
                    client_ca], check=True)
    conf = nginx.write("        ssl_client_certificate client-ca.pem;")
    assert not nginx.start()  # nginx cannot read it: it does not start
    assert "SSL_load_client_CA_file" in (nginx.dir / "error.log").read_text()
    assert nginx.curl(case.f["client1"], case.key("client1")) == "000"
    code, data = check(conf, case.f["client1"])
    verdict = verdict_of(data)
    assert code == 1 and verdict["reason"] == "unreadable"
    run_fix(verdict["fix"], nginx.dir)
    assert b"TRUSTED" not in client_ca.read_bytes()
    assert [c.subject.rfc4514_string() for c in x509.load_pem_x509_certificates(client_ca.read_bytes())] == ["CN=Ngx Root"]
    nginx.reload()
    assert nginx.curl_until(case.f["client1"], case.key("client1")) == "200"
    assert check(conf, case.f["client1"])[0] == 0


def test_settings_come_from_http_and_includes_with_file_and_line(case, nginx):
    cat(nginx.dir / "client-ca.pem", case.f["root"])
    (nginx.dir / "depth.conf").write_text("ssl_verify_depth 2;\n")
    conf = nginx.write("        include depth.conf;", http_lines="    ssl_client_certificate client-ca.pem;")
    assert nginx.start()
    assert nginx.curl(case.f["client2"], case.key("client2")) == "200"
    code, data = check(conf, case.f["client2"])
    verdict = verdict_of(data)
    assert code == 0
    assert verdict["settings"]["depth"] == {"directive": "ssl_verify_depth", "value": "2",
                                            "file": str(nginx.dir / "depth.conf"), "line": 1}
    assert verdict["settings"]["ca"]["file"] == str(conf) and verdict["server_block"].startswith("server clients.test")


def test_config_errors_exit_2_naming_file_and_line(case, tmp_path):
    bad = tmp_path / "nginx.conf"
    bad.write_text("events {}\nhttp {\n  server {\n    listen 443 ssl\n  }\n")
    result = storesync("check", case.f["client1"], "--nginx-conf", bad)
    assert result.returncode == 2 and f"{bad}:4" in result.stderr and "Traceback" not in result.stderr
    none = tmp_path / "plain.conf"
    none.write_text("events {}\nhttp { server { listen 80; } }\n")
    result = storesync("check", case.f["client1"], "--nginx-conf", none)
    assert result.returncode == 2 and "verifies client certificates" in result.stderr
    result = storesync("check", case.f["client1"], "--nginx-conf", tmp_path / "absent.conf")
    assert result.returncode == 2 and "absent.conf" in result.stderr and "Traceback" not in result.stderr
    gone = tmp_path / "gone.conf"
    gone.write_text("events {}\nhttp { server { listen 443 ssl; ssl_verify_client on;\n"
                    "ssl_client_certificate nowhere.pem; ssl_crl nocrl.pem; } }\n")
    result = storesync("check", case.f["client1"], "--nginx-conf", gone)
    assert result.returncode == 2 and "nocrl.pem" in result.stderr and "Traceback" not in result.stderr
    gone.write_text(gone.read_text().replace(" ssl_crl nocrl.pem;", ""))
    result = storesync("check", case.f["client1"], "--nginx-conf", gone)
    assert result.returncode == 2 and "nowhere.pem" in result.stderr and "Traceback" not in result.stderr
    # which server block names the file, and where (nginx -t fails on it: the whole config does)
    assert result.stderr.startswith(f"storesync: server _ (listen 443) at {gone}:2: ssl_client_certificate nowhere.pem ({gone}:3): ")
    assert len(result.stderr.strip().splitlines()) == 1


def test_root_in_ssl_trusted_certificate_verifies_but_is_not_named_to_clients(case, nginx):
    cat(nginx.dir / "client-ca.pem", case.f["other"])
    cat(nginx.dir / "trusted.pem", case.f["root"])
    conf = nginx.write("        ssl_client_certificate client-ca.pem;\n        ssl_trusted_certificate trusted.pem;")
    assert nginx.start()
    assert nginx.curl(case.f["client1"], case.key("client1")) == "200"
    code, data = check(conf, case.f["client1"])
    verdict = verdict_of(data)
    assert code == 0 and any("ssl_trusted_certificate only" in w for w in verdict["warnings"])
