"""Real TLS clients decide with only the stores storesync wrote (issue 13, second oracle family).

One `openssl s_server` on 127.0.0.1 serves leaf + intermediate of a private PKI for the whole
module. storesync syncs a source bundle (the private root, its predecessor of the same name,
an unrelated root and some system roots) into every store kind a client reads; then each
client must accept, also once the predecessor is removed or after a rollback. In the other
phases a mirror sync takes the root away, a sync distrusts it (an OpenSSL TRUSTED block made by
`openssl x509 -addreject`, or an NSS `p,p,p` record made by certutil, as a source or inside one
store of a merge profile), or the root is trusted for client-auth only: each client must
refuse. Every phase works on stores of its own (a copy of the synced ones), once.

Beside the phases: what readers make of a plain `?purpose=client-auth` bundle, of TRUSTED blocks
(GnuTLS) and of an intermediate alone in a bundle; keytool stores with their own password and
Debian's Java cacerts; and a distrust of 3 of 23 roots at once, which the removal guard lets
through (a distrust is the source's word, not a truncated source).

Which client reads which store:
  pem            curl --cacert, gnutls-cli --x509cafile, Python ssl cafile, openssl s_client -CAfile
  pem (trusted)  the same without GnuTLS, which does not read TRUSTED CERTIFICATE blocks
  dir, dir (trusted)  curl --capath, Python ssl capath, openssl s_client -CApath
  jks, p12       the JDK's default SSLContext (javax.net.ssl.trustStore*), password `changeit`
  p12?protect=no the same with no password
  nss            NSS vfychain -u 1 (SSL server) and tstclnt (a handshake, never -o)
The distrusting sources: TRUSTED blocks from `openssl x509 -addreject`, an NSS `p,p,p` record
from certutil, a Windows Disallowed `.sst` and `.reg`, and certutil inside a merge profile.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import struct
import sys
from pathlib import Path

import pytest

from conftest import SYSTEM_BUNDLE, run, storesync
from tlsclients import (
    ACCEPTED, REFUSED, ROOT_LABEL as ROOT, Pki, Server, compile_java_client, curl, gnutls_cli, java, python_ssl,
    s_client, tool, tstclnt, vfychain,
)

SYSTEM_ROOTS = 20  # for realism: with the three private roots, a store holds 23 certificates

# store name -> spec, {d} being the phase's directory
STORES = {
    "pem": "pem:{d}/bundle.pem",
    "pem-trusted": "pem:{d}/trusted.pem?format=trusted",
    "dir": "dir:{d}/certs",
    "dir-trusted": "dir:{d}/trusted-certs?format=trusted",
    "jks": "jks:{d}/trust.jks",
    "p12": "p12:{d}/trust.p12",
    "p12-open": "p12:{d}/open.p12?protect=no",
    "nss": "nss:{d}/nssdb",
}
PLAIN = {"pem", "dir", "jks", "p12", "p12-open"}  # cannot say distrust or purposes

# client id -> (store name, how to ask it)
CLIENTS = {
    "curl --cacert, pem": ("pem", lambda w, s: curl("--cacert", s, w.port)),
    "gnutls-cli, pem": ("pem", lambda w, s: gnutls_cli(s, w.port)),
    "python cafile, pem": ("pem", lambda w, s: python_ssl("cafile", s, w.port)),
    "s_client -CAfile, pem": ("pem", lambda w, s: s_client("-CAfile", s, w.port)),
    "curl --cacert, pem trusted": ("pem-trusted", lambda w, s: curl("--cacert", s, w.port)),
    "python cafile, pem trusted": ("pem-trusted", lambda w, s: python_ssl("cafile", s, w.port)),
    "s_client -CAfile, pem trusted": ("pem-trusted", lambda w, s: s_client("-CAfile", s, w.port)),
    "curl --capath, dir": ("dir", lambda w, s: curl("--capath", s, w.port)),
    "python capath, dir": ("dir", lambda w, s: python_ssl("capath", s, w.port)),
    "s_client -CApath, dir": ("dir", lambda w, s: s_client("-CApath", s, w.port)),
    "curl --capath, dir trusted": ("dir-trusted", lambda w, s: curl("--capath", s, w.port)),
    "python capath, dir trusted": ("dir-trusted", lambda w, s: python_ssl("capath", s, w.port)),
    "s_client -CApath, dir trusted": ("dir-trusted", lambda w, s: s_client("-CApath", s, w.port)),
    "java, jks": ("jks", lambda w, s: java(w.java_classes, s, "JKS", "changeit", w.port)),
    "java, p12": ("p12", lambda w, s: java(w.java_classes, s, "PKCS12", "changeit", w.port)),
    "java, p12 protect=no": ("p12-open", lambda w, s: java(w.java_classes, s, "PKCS12", None, w.port)),
    "vfychain, nss": ("nss", lambda w, s: vfychain(s, w.pki)),
    "tstclnt, nss": ("nss", lambda w, s: tstclnt(s, w.port)),
}


def store_path(spec: str) -> Path:
    return Path(spec.split(":", 1)[1].split("?", 1)[0])


def plan_sections(stdout: str) -> dict[str, list[str]]:
    """The plan printed by `sync`, per target spec: its indented lines."""
    sections: dict[str, list[str]] = {}
    current = None
    for line in stdout.splitlines():
        if line and not line.startswith(" "):
            current = sections.setdefault(line.split(": ", 1)[0], [])
        elif current is not None:
            current.append(line.strip())
    return sections


class World:
    """The module's PKI, server, source files, and the stores of each phase (made on first use)."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.pki = Pki(directory)
        self.server = Server(self.pki, directory)
        self.port = self.server.port
        self._java_classes = None
        self.phases: dict[str, tuple[dict[str, str], dict[str, list[str]]]] = {}
        system = SYSTEM_BUNDLE.read_bytes() if SYSTEM_BUNDLE.exists() else b""  # only for realism
        blocks = re.findall(rb"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----\n", system,
                            re.DOTALL)[:SYSTEM_ROOTS]
        base = b"".join(blocks) + self.pki.other_root.pem
        self.without_root = self._write("without-root.pem", base + self.pki.predecessor.pem)
        self.with_root = self._write("with-root.pem", base + self.pki.predecessor.pem + self.pki.root.pem)
        self.without_predecessor = self._write("without-predecessor.pem", base + self.pki.root.pem)

    def _write(self, name: str, data: bytes) -> Path:
        path = self.directory / name
        path.write_bytes(data)
        return path

    @property
    def java_classes(self) -> Path:
        if self._java_classes is None:
            tool("java")
            self._java_classes = compile_java_client(self.directory / "java")
        return self._java_classes

    def openssl_trusted(self, name: str, *trust: str) -> str:
        """The root as a TRUSTED CERTIFICATE block written by `openssl x509 -trustout`."""
        out = self.directory / name
        run(tool("openssl"), "x509", "-in", self.pki.root_pem, *trust, "-trustout", "-out", out)
        return f"pem:{out}?format=trusted"

    def nss_distrust(self, db: Path) -> None:
        """certutil marks the root `p,p,p` (-A on a certificate already there sets that one's
        trust: -M by nickname would not know the root from its predecessor)."""
        run(tool("certutil"), "-A", "-d", f"sql:{db}", "-n", ROOT, "-t", "p,p,p", "-i", self.pki.root_pem)

    def nss_distrusting(self) -> str:
        """An NSS database, made by certutil, that distrusts the root."""
        db = self.directory / "distrust-nssdb"
        self.new_nss(db)
        self.nss_distrust(db)
        return f"nss:{db}"

    def windows_disallowed(self, kind: str) -> str:
        """The root in a Windows Disallowed store, written by hand after docs/formats.md §4.1: an element
        group holding only the certificate element (0x20), in an `.sst` distrust list or a `.reg`
        export's `Disallowed` key."""
        cert = self.pki.root.der
        group = struct.pack("<III", 0x20, 1, len(cert)) + cert
        if kind == "sst":
            path = self._write("disallowed.sst", b"\x00\x00\x00\x00CERT" + group + bytes(12))
            return f"sst:{path}?role=disallowed"
        key = ("HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\SystemCertificates\\Disallowed\\Certificates\\"
               + hashlib.sha1(cert).hexdigest().upper())
        blob = ",".join(f"{b:02x}" for b in group)
        text = f'Windows Registry Editor Version 5.00\r\n\r\n[{key}]\r\n"Blob"=hex:{blob}\r\n\r\n'
        path = self._write("disallowed.reg", b"\xff\xfe" + text.encode("utf-16-le"))
        return f"reg:{path}"

    def merge(self, d: Path, specs: list[str]) -> dict[str, list[str]]:
        """Run a merge profile of `specs` (its config file written in `d`)."""
        config = d / "storesync.toml"
        if not config.exists():
            config.write_text('[profile.tls]\nmode = "merge"\nstores = [%s]\n' % ", ".join(f'"{s}"' for s in specs))
        return self.sync("--config", str(config), "--profile", "tls")

    @staticmethod
    def new_nss(db: Path) -> None:
        db.mkdir()
        run(tool("certutil"), "-N", "-d", f"sql:{db}", "--empty-password")

    def sync(self, *args: str) -> dict[str, list[str]]:
        result = storesync("sync", *args)
        assert result.returncode == 0, result.stdout + result.stderr
        return plan_sections(result.stdout)

    def copy_of_synced(self, name: str) -> tuple[dict[str, str], Path]:
        """The synced stores copied byte for byte into a directory of their own: a sync fewer."""
        self.phase("synced")
        d = self.directory / name
        shutil.copytree(self.directory / "synced", d, symlinks=True)
        return self.specs(d), d

    @staticmethod
    def specs(d: Path) -> dict[str, str]:
        specs = {store: spec.format(d=d) for store, spec in STORES.items()}
        if not shutil.which("certutil"):  # the other kinds are still checked; the NSS clients skip
            del specs["nss"]
        return specs

    def _change(self, name: str, d: Path, specs: dict[str, str], targets: list[str]) -> dict[str, list[str]] | None:
        """What phase `name` does to the synced stores; its plan."""
        if name == "synced":
            return None
        if name == "client-auth-only":
            source = self.openssl_trusted("client-auth.pem", "-addtrust", "clientAuth")
            return self.sync("--mode", "add", source, *targets)
        if name == "removed":
            return self.sync(f"pem:{self.without_root}", *targets)
        if name == "predecessor-removed":
            return self.sync(f"pem:{self.without_predecessor}", *targets)
        if name == "rolled-back":
            self.sync("--mode", "add", self.openssl_trusted("reject-any.pem", "-addreject", "anyExtendedKeyUsage"),
                      *targets)
            for spec in targets:
                result = storesync("rollback", spec)
                assert result.returncode == 0, result.stdout + result.stderr
            return {}
        if name == "merge-distrusted":
            self.merge(d, targets)  # the first run agrees on the union: nothing to do
            self.nss_distrust(store_path(specs["nss"]))
            return self.merge(d, targets)
        if name == "distrusted-any":
            source = self.openssl_trusted("reject-any.pem", "-addreject", "anyExtendedKeyUsage")
            return self.sync("--mode", "add", source, *targets)
        if name == "distrusted-server-auth":
            source = self.openssl_trusted("reject-server-auth.pem", "-addreject", "serverAuth")
            return self.sync("--mode", "add", source, *targets)
        if name == "distrusted-nss":
            return self.sync("--mode", "add", self.nss_distrusting(), *targets)
        assert name in ("distrusted-sst", "distrusted-reg"), name
        return self.sync("--mode", "add", self.windows_disallowed(name.rsplit("-", 1)[1]), *targets)

    def phase(self, name: str) -> tuple[dict[str, str], dict[str, list[str]]]:
        """The stores of phase `name` (spec per store name) and the plan of its last sync."""
        if name not in self.phases:
            if name in ("distrusted-nss", "merge-distrusted"):
                tool("certutil")  # these distrust with certutil
            d = self.directory / name
            if d.exists():
                pytest.fail(f"phase {name} failed in an earlier test: see the first failure")
            plan = {}
            if name in ("synced", "client-auth-only"):
                specs = self.specs(d)
                d.mkdir()
                if "nss" in specs:
                    self.new_nss(store_path(specs["nss"]))
                plan = self.sync(f"pem:{self.with_root if name == 'synced' else self.without_root}", *specs.values())
            else:
                specs, d = self.copy_of_synced(name)
            targets = list(specs.values())
            changed = self._change(name, d, specs, targets)
            self.phases[name] = specs, plan if changed is None else changed
        return self.phases[name]

    def ask(self, client: str, phase: str) -> tuple[str, str]:
        store, how = CLIENTS[client]
        specs, _plan = self.phase(phase)
        if store not in specs:
            pytest.fail("certutil is not installed; run scripts/test, which installs the test tools")
        verdict = how(self, store_path(specs[store]))
        if self.server.proc.poll() is not None:
            pytest.fail(f"openssl s_server has died: {self.server.log.read_text(errors='replace')[-2000:]}")
        return verdict


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tool("openssl")
    world = World(tmp_path_factory.mktemp("tls"))
    yield world
    world.server.stop()


ACCEPTING_PHASES = ["synced", "predecessor-removed", "rolled-back"]
REFUSING_PHASES = ["removed", "distrusted-any", "distrusted-server-auth", "distrusted-nss", "distrusted-sst",
                   "distrusted-reg", "merge-distrusted", "client-auth-only"]
CORE_PHASES = {"synced", "removed", "distrusted-any", "client-auth-only"}


def cases(phases: list[str]) -> list:
    """Every client in every phase; a JVM start costs half a second or more, so outside the core
    phases the Java clients run with `-m slow` only."""
    return [pytest.param(client, phase, id=f"{client}-{phase}",
                         marks=[pytest.mark.slow] if client.startswith("java") and phase not in CORE_PHASES else [])
            for phase in phases for client in CLIENTS]


@pytest.mark.parametrize("client, phase", cases(ACCEPTING_PHASES))
def test_client_accepts_with_the_synced_store(world, client, phase):
    verdict, out = world.ask(client, phase)
    assert verdict == ACCEPTED, f"{client} refuses after {phase}:\n{out}"


@pytest.mark.parametrize("client, phase", cases(REFUSING_PHASES))
def test_client_refuses_once_the_root_is_gone_or_distrusted(world, client, phase):
    verdict, out = world.ask(client, phase)
    assert verdict == REFUSED, f"{client} still accepts after {phase}:\n{out}"


@pytest.mark.parametrize("phase", REFUSING_PHASES + ["predecessor-removed"])
def test_the_plan_says_what_happened_to_the_root(world, phase):
    """Each target's plan names the root: removed, distrusted, or left out with a `!` line."""
    specs, plan = world.phase(phase)
    for store, spec in specs.items():
        lines = [line for line in plan[spec] if ROOT.lower() in line.lower()]
        if phase == "merge-distrusted" and store == "nss":  # certutil distrusted it in the legacy class only
            assert [line[:2] for line in lines] == ["~ "] and "classes disagree" in lines[0], plan[spec]
        elif phase in ("removed", "predecessor-removed"):
            assert [line[:2] for line in lines] == ["- "], (spec, plan[spec])
        elif store in PLAIN:
            assert any(line.startswith("! ") and "left out" in line for line in lines), (spec, plan[spec])
        elif phase == "client-auth-only":
            assert any(line.startswith("+ ") for line in lines), (spec, plan[spec])
        else:
            assert any(line.startswith("~ ") and ("-server-auth" in line or "distrusted" in line) for line in lines), \
                (spec, plan[spec])


def test_nss_records_what_certutil_shows(world):
    """The NSS flags behind the verdicts: distrust is `p`, client-auth only is `T` (no `C`); the
    predecessor (same nickname) keeps its `C,,` throughout."""
    def flags(phase: str) -> list[str]:
        listing = run(tool("certutil"), "-L", "-d", f"sql:{store_path(world.phase(phase)[0]['nss'])}").stdout.decode()
        return sorted(line.split()[-1] for line in listing.splitlines() if line.startswith(ROOT))

    distrusted = ["C,,", "p,p,p"]
    expected = {"synced": ["C,,", "C,,"], "predecessor-removed": ["C,,"], "rolled-back": ["C,,", "C,,"],
                "removed": ["C,,"], "distrusted-any": distrusted, "distrusted-nss": distrusted,
                "distrusted-sst": distrusted, "distrusted-reg": distrusted,
                "merge-distrusted": distrusted, "client-auth-only": ["C,,", "T,,"]}
    assert {phase: flags(phase) for phase in expected} == expected
    predecessor, root = flags("distrusted-server-auth")
    assert predecessor == "C,," and "p" in root.split(",")[0] and "C" not in root.split(",")[0], root


@pytest.fixture(scope="module")
def client_auth_bundle(world) -> Path:
    """A plain bundle for client-auth (nginx's ssl_client_certificate, say), synced from the root
    trusted for client-auth only."""
    bundle = world.directory / "client-ca.pem"
    spec = f"pem:{bundle}?purpose=client-auth"
    plan = world.sync(world.openssl_trusted("client-auth.pem", "-addtrust", "clientAuth"), spec)
    assert any(line.startswith("+ ") and ROOT.lower() in line.lower() for line in plan[spec]), plan[spec]
    return bundle


@pytest.mark.parametrize("client", ["curl --cacert", "gnutls-cli", "python cafile", "s_client -CAfile"])
def test_a_plain_client_auth_bundle_carries_no_purpose(world, client_auth_bundle, client):
    """A plain bundle cannot say purposes: its readers trust what is in it for every use, so a
    `?purpose=client-auth` bundle makes a server-auth client accept. This is why storesync puts
    only anchors for the store's own purpose into a plain store."""
    bundle = client_auth_bundle
    ask = {
        "curl --cacert": lambda: curl("--cacert", bundle, world.port),
        "gnutls-cli": lambda: gnutls_cli(bundle, world.port),
        "python cafile": lambda: python_ssl("cafile", bundle, world.port),
        "s_client -CAfile": lambda: s_client("-CAfile", bundle, world.port),
    }[client]
    verdict, out = ask()
    assert verdict == ACCEPTED, out


def test_gnutls_does_not_read_trusted_blocks(world):
    """GnuTLS reads no TRUSTED CERTIFICATE block: a `?format=trusted` bundle is empty to it (an
    error, so nothing is trusted); GnuTLS clients need a plain `pem:` bundle."""
    specs, _plan = world.phase("synced")
    result = run(tool("gnutls-cli"), "--x509cafile", store_path(specs["pem-trusted"]), "-p", str(world.port),
                 "127.0.0.1", check=False, input=b"")
    assert result.returncode == 1
    assert b"No certificate was found" in result.stdout + result.stderr


@pytest.mark.parametrize("store_type", ["JKS", "PKCS12"])
def test_java_reads_a_keytool_store_with_its_own_password(world, store_type):
    """keytool makes the store with a password of its own; storesync adds the root through
    `password-file=` and keeps that password: the JDK, given it, accepts."""
    d = world.directory / f"keytool-{store_type}"
    d.mkdir()
    store, password = d / "trust.store", "not changeit"
    run(tool("keytool"), "-importcert", "-noprompt", "-keystore", store, "-storetype", store_type,
        "-storepass", password, "-alias", "unrelated", "-file", world.pki.other_root_pem)
    (d / "password").write_text(password + "\n")
    kind = "jks" if store_type == "JKS" else "p12"
    world.sync("--mode", "add", f"pem:{world.pki.root_pem}", f"{kind}:{store}?password-file={d / 'password'}")
    verdict, out = java(world.java_classes, store, store_type, password, world.port)
    assert verdict == ACCEPTED, out


@pytest.mark.parametrize("kind, made_by", [("jks", "keytool"), ("p12", "keytool"), ("p12", "openssl")])
def test_a_private_key_entry_is_an_anchor_for_java_and_for_storesync(world, kind, made_by):
    """Java's TrustManagerFactory trusts the first certificate of every private-key entry of a
    trust store, as it trusts its trusted-certificate entries: here the intermediate's, whose key
    the store holds. storesync's `check` and `list` count it as Java does; a sync that would have
    it gone says it stays (a `!` line, and how to take it out), and never spreads it."""
    d = world.directory / f"key-entry-{kind}-{made_by}"
    d.mkdir()
    key = d / "ca.key"
    key.write_bytes(world.pki.intermediate.key_pem())
    exported = d / "exported.p12"
    run(tool("openssl"), "pkcs12", "-export", "-inkey", key, "-in", world.pki.intermediate_pem, "-name", "ca-key",
        "-out", exported, "-passout", "pass:changeit")
    store_type = "JKS" if kind == "jks" else "PKCS12"
    store = d / f"trust.{kind}"
    if made_by == "keytool":
        run(tool("keytool"), "-importkeystore", "-noprompt", "-srckeystore", exported, "-srcstoretype", "PKCS12",
            "-srcstorepass", "changeit", "-destkeystore", store, "-deststoretype", store_type,
            "-deststorepass", "changeit", "-destkeypass", "changeit")
    else:
        shutil.copy(exported, store)
    run(tool("keytool"), "-importcert", "-noprompt", "-keystore", store, "-storetype", store_type,
        "-storepass", "changeit", "-alias", "unrelated", "-file", world.pki.other_root_pem)
    spec, intermediate = f"{kind}:{store}", hashlib.sha256(world.pki.intermediate.der).hexdigest()
    assert java(world.java_classes, store, store_type, "changeit", world.port)[0] == ACCEPTED  # the oracle

    checked = storesync("check", world.pki.leaf_pem, "--store", spec, "--purpose", "server-auth")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # a store missing the anchor is not told to sync it from this one: a sync would not carry it
    fixes = storesync("check", world.pki.leaf_pem, "--store", f"pem:{world.pki.other_root_pem}", "--store", spec,
                      "--purpose", "server-auth", "--json")
    pem_verdict, jks_verdict = json.loads(fixes.stdout)["stores"]
    assert pem_verdict["fix"].startswith("get the root certificate of ") and jks_verdict["accepted"]
    listed = json.loads(storesync("list", spec, "--json", check=True).stdout)["entries"]
    through = f"private-key entry 'ca-key' (`keytool -delete -keystore {store} -alias ca-key` takes it out, with the key)"
    assert [e["fixed"] for e in listed if e["sha256"] == intermediate] == [through]

    out = d / "out.pem"  # never spread: only the trusted-certificate entry reaches another store
    storesync("sync", spec, f"pem:{out}", check=True)
    assert out.read_bytes().count(b"BEGIN CERTIFICATE") == 1 and world.pki.other_root.pem in out.read_bytes()

    removed = storesync("sync", "--mode", "remove", f"pem:{world.pki.intermediate_pem}", spec, check=True)
    assert f"! ca-key: --mode remove names it, but this store still trusts it through its {through}" in removed.stdout
    assert java(world.java_classes, store, store_type, "changeit", world.port)[0] == ACCEPTED  # the line is true
    fix = through[through.index("`") + 1:through.rindex("`")]
    run("bash", "-c", fix, input=b"changeit\n")  # as printed, keytool asking for the store password
    assert java(world.java_classes, store, store_type, "changeit", world.port)[0] == REFUSED  # and so is its fix
    assert storesync("check", world.pki.leaf_pem, "--store", spec, "--purpose", "server-auth").returncode == 1


def test_java_reads_debian_cacerts_with_the_root_added(world):
    """Debian's Java cacerts (the system roots) with the private root added: the JDK accepts."""
    cacerts = Path("/etc/ssl/certs/java/cacerts")
    if not cacerts.exists():
        pytest.fail("no /etc/ssl/certs/java/cacerts; run scripts/test, which installs ca-certificates-java")
    store = world.directory / "cacerts"
    store.write_bytes(cacerts.read_bytes())
    plan = world.sync("--mode", "add", f"pem:{world.pki.root_pem}", f"jks:{store}")
    assert [line[:2] for line in plan[f"jks:{store}"] if ROOT.lower() in line.lower()] == ["+ "]
    verdict, out = java(world.java_classes, store, "JKS", "changeit", world.port)
    assert verdict == ACCEPTED, out


def test_an_intermediate_alone_in_a_bundle(world):
    """Readers differ on a bundle holding the intermediate and not its root: curl (which turns on
    OpenSSL's partial-chain flag) and GnuTLS take any certificate in the file as an anchor and
    accept; openssl s_client and Python's ssl (before 3.13, which sets the flag too) want a
    self-signed root and refuse, and so does `storesync check`, which reads bundles as OpenSSL
    does (README, check)."""
    d = world.directory / "intermediate-only"
    d.mkdir()
    bundle = d / "bundle.pem"
    world.sync(f"pem:{world.pki.intermediate_pem}", f"pem:{bundle}")
    assert curl("--cacert", bundle, world.port)[0] == ACCEPTED
    assert gnutls_cli(bundle, world.port)[0] == ACCEPTED
    assert s_client("-CAfile", bundle, world.port)[0] == REFUSED
    assert python_ssl("cafile", bundle, world.port)[0] == (ACCEPTED if sys.version_info >= (3, 13) else REFUSED)
    check = storesync("check", world.pki.leaf_pem, "--chain", world.pki.intermediate_pem,
                      "--purpose", "server-auth", "--store", f"pem:{bundle}")
    assert check.returncode == 1 and "missing-root" in check.stdout, check.stdout + check.stderr


THREE = ("root", "predecessor", "other_root")  # distrusted below: 3 of the 23 certificates of a store


def test_a_distrust_list_is_not_held_back_by_the_removal_guard(world):
    """`--mode add` of a TRUSTED bundle that distrusts three roots: every target takes the distrust."""
    specs, d = world.copy_of_synced("three-distrusted-add")
    blocks = b""
    for name in THREE:
        pem = getattr(world.pki, name).write(d / "one.pem")
        blocks += run(tool("openssl"), "x509", "-in", pem, "-addreject", "anyExtendedKeyUsage", "-trustout").stdout
    (d / "distrust.pem").write_bytes(blocks)
    result = storesync("sync", "--mode", "add", f"pem:{d / 'distrust.pem'}?format=trusted", *specs.values())
    assert curl("--cacert", store_path(specs["pem"]), world.port)[0] == REFUSED, result.stdout
    assert s_client("-CApath", store_path(specs["dir"]), world.port)[0] == REFUSED, result.stdout
    if "nss" in specs:
        assert tstclnt(store_path(specs["nss"]), world.port)[0] == REFUSED, result.stdout
    assert result.returncode == 0, result.stdout


def test_a_distrust_in_one_store_of_a_merge_reaches_the_others_despite_the_removal_guard(world):
    """certutil distrusts three roots in the NSS database of a merge profile: the bundle, the
    hashed directory and the Java store must drop them, so their clients refuse."""
    tool("certutil")
    specs, d = world.copy_of_synced("three-distrusted-merge")
    world.merge(d, list(specs.values()))
    db = store_path(specs["nss"])
    for name in THREE:
        pem = getattr(world.pki, name).write(d / "one.pem")
        run(tool("certutil"), "-A", "-d", f"sql:{db}", "-n", ROOT, "-t", "p,p,p", "-i", pem)
    result = storesync("sync", "--config", d / "storesync.toml", "--profile", "tls")
    assert curl("--cacert", store_path(specs["pem"]), world.port)[0] == REFUSED, result.stdout
    assert s_client("-CApath", store_path(specs["dir"]), world.port)[0] == REFUSED, result.stdout
    assert result.returncode == 0, result.stdout


def test_after_the_merge_the_nss_trust_classes_agree(world):
    """No NSS >= 3.114 here to ask: storesync's own reader says whether the two classes agree."""
    specs, _plan = world.phase("merge-distrusted")
    listing = storesync("list", specs["nss"])
    assert listing.returncode == 0, listing.stderr
    assert "disagree" not in listing.stderr, listing.stderr
