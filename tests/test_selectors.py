"""Selectors (`@system @nss @java @certifi @all`) on a scratch machine (`--root`): two users'
homes with Firefox profiles and a Chromium nssdb, two JDKs with Debian's cacerts, a venv with
certifi and a Debian anchor folder with a stub rebuild command. What `--mode add @all` writes is
checked with certutil, keytool, Python's ssl and openssl; `--mode remove @all` must leave every
other entry as it was, byte for byte where the format allows saying so."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import ssl
import threading
from pathlib import Path

import pytest

from conftest import NOW, need, run, storesync
from storesync import discover
from storesync.model import Certificate

JAVA_CACERTS = Path("/etc/ssl/certs/java/cacerts")
SYSTEM_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
FOREIGN_UID = 4242  # a user with no name on this machine: status shows the uid


class Machine:
    def __init__(self, root: Path):
        self.root = root
        self.anchors = root / "usr/local/share/ca-certificates"
        self.stub = root / "usr/sbin/update-ca-certificates"
        self.firefox = [root / "home/alice/.mozilla/firefox/a1b2.default", root / "home/bob/.mozilla/firefox/c3d4.default-release"]
        self.chromium = root / "home/bob/.pki/nssdb"
        self.jdks = [root / f"usr/lib/jvm/{name}/lib/security/cacerts" for name in ("jdk-17", "jdk-21")]
        self.venv = root / "opt/app/venv"
        self.certifi = self.venv / "lib/python3.11/site-packages/certifi/cacert.pem"

    @property
    def nss(self) -> list[Path]:
        return [*self.firefox, self.chromium]

    def cli(self, *args, env=None):
        return storesync(*args, "--root", self.root, "--python", self.venv, env=env)


def nss_db(path: Path) -> None:
    path.mkdir(parents=True)
    run(need("certutil"), "-N", "-d", f"sql:{path}", "--empty-password")


def profiles_ini(folder: Path, name: str, profile: Path) -> None:
    (folder / "profiles.ini").write_text(f"[General]\nStartWithLastProfile=1\n\n[Profile0]\nName={name}\n"
                                         f"IsRelative=1\nPath={profile.name}\nDefault=1\n")


@pytest.fixture
def machine(tmp_path, pki) -> Machine:
    if not JAVA_CACERTS.exists() or not SYSTEM_BUNDLE.exists():
        pytest.fail("Debian's ca-certificates-java and ca-certificates are missing: scripts/test installs them")
    m = Machine(tmp_path / "machine")
    (m.root / "etc").mkdir(parents=True)
    (m.root / "etc/os-release").write_text('PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\n')
    m.anchors.mkdir(parents=True)
    pki.ca("Local Existing Root").write(m.anchors / "local-existing.crt")
    (m.anchors / "README").write_text("certificates of this site\n")
    m.stub.parent.mkdir(parents=True)
    m.stub.write_text('#!/bin/sh\necho rebuilt >> "$(dirname "$0")/rebuilt.log"\n')
    m.stub.chmod(0o755)
    for db in m.nss:
        nss_db(db)
    for db in m.firefox:
        profiles_ini(db.parent, db.name.split(".", 1)[1], db)
    own = tmp_path / "alice-own.pem"
    pki.ca("Alice Own CA").write(own)
    run("certutil", "-A", "-d", f"sql:{m.firefox[0]}", "-n", "Alice Own CA", "-t", "C,C,", "-i", own)
    for jdk in m.jdks:
        jdk.parent.mkdir(parents=True)
        shutil.copyfile(JAVA_CACERTS, jdk)
    m.certifi.parent.mkdir(parents=True)
    shutil.copyfile(SYSTEM_BUNDLE, m.certifi)
    if os.geteuid() == 0:
        os.chown(m.firefox[0], FOREIGN_UID, FOREIGN_UID)  # the database files stay root's: written as root
    return m


@pytest.fixture
def corp(pki, tmp_path):
    root = pki.ca("Corp Selector Root")
    leaf = pki.leaf("leaf.test", root)
    root.write(tmp_path / "corp.pem")
    return root, leaf, tmp_path / "corp.pem"


def certutil_list(db: Path) -> str:
    return run("certutil", "-L", "-d", f"sql:{db}").stdout.decode()


def keytool_list(keystore: Path) -> str:
    return run(need("keytool"), "-list", "-keystore", keystore, "-storepass", "changeit").stdout.decode()


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def colon_fingerprint(issued) -> str:
    sha = Certificate(issued.der).sha256.upper()
    return ":".join(sha[i:i + 2] for i in range(0, len(sha), 2))


def tls_handshake(cafile: Path, leaf, tmp_path: Path) -> None:
    """A real TLS handshake with Python's ssl: a server with `leaf`, a client trusting `cafile`."""
    cert, key = tmp_path / "leaf.pem", tmp_path / "leaf.key"
    leaf.write(cert)
    key.write_bytes(leaf.key_pem())
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(cafile))
    a, b = socket.socketpair()
    failure = []

    def serve():
        try:
            with server_ctx.wrap_socket(a, server_side=True) as s:
                s.do_handshake()
        except (ssl.SSLError, OSError) as exc:
            failure.append(exc)

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with client_ctx.wrap_socket(b, server_hostname="leaf.test") as s:
            s.do_handshake()
    finally:
        thread.join(10)


def test_dry_run_lists_what_each_selector_names_with_its_owner(machine, corp):
    _, _, pem = corp
    result = machine.cli("sync", "--dry-run", "--json", "--mode", "add", pem, "@system", "@nss", "@java", "@certifi")
    assert result.returncode == 1, result.stderr  # changes pending
    selectors = json.loads(result.stdout)["selectors"]
    assert {k: sorted(f["store"] for f in v) for k, v in selectors.items()} == {
        "@system": [f"anchors:{machine.anchors}"],
        "@nss": sorted(f"nss:{db}" for db in machine.nss),
        "@java": sorted(f"jks:{jdk}" for jdk in machine.jdks),
        "@certifi": [f"pem:{machine.certifi}"],
    }
    (system,) = selectors["@system"]
    assert system["on_change"] == [str(machine.stub)]  # the root's own rebuild command, not this machine's
    owners = {f["store"]: f["owner"] for v in selectors.values() for f in v}
    if os.geteuid() == 0:
        assert owners[f"nss:{machine.firefox[0]}"] == str(FOREIGN_UID)  # as status shows it
    status = json.loads(storesync("status", "--json", "--root", machine.root, "--python", machine.venv).stdout)
    shown = {s["store"]: s["owner"] for s in status["stores"]}
    assert all(shown[spec] == owner for spec, owner in owners.items())
    text = machine.cli("sync", "--dry-run", "--mode", "add", pem, "@nss").stdout
    assert "@nss: 3 stores" in text
    assert f"  nss:{machine.chromium}  (nss (chromium), owner " in text
    assert not (machine.anchors / "Corp_Selector_Root.crt").exists()  # a dry run writes nothing


def test_add_all_puts_the_root_in_every_store_and_remove_all_takes_it_out(machine, corp, tmp_path):
    root, leaf, pem = corp
    nss_before = {db: certutil_list(db) for db in machine.nss}
    java_before = {jdk: (keytool_list(jdk), jdk.read_bytes()) for jdk in machine.jdks}
    certifi_before = machine.certifi.read_bytes()
    anchors_before = folder_bytes(machine.anchors)
    with pytest.raises(ssl.SSLCertVerificationError):
        tls_handshake(machine.certifi, leaf, tmp_path)

    added = machine.cli("sync", "--mode", "add", pem, "@all")
    assert added.returncode == 0, added.stderr + added.stdout
    for db in machine.nss:
        line = next(line for line in certutil_list(db).splitlines() if line.startswith("Corp Selector Root"))
        assert line.split()[-1] == "C,,", line  # a TLS bundle speaks for server-auth (--purpose)
    fingerprint = colon_fingerprint(root)
    for jdk in machine.jdks:
        assert fingerprint in keytool_list(jdk)
    tls_handshake(machine.certifi, leaf, tmp_path)  # Python's ssl now trusts the leaf through the bundle
    leaf_pem = tmp_path / "leaf-only.pem"
    leaf.write(leaf_pem)
    run("openssl", "verify", "-CAfile", machine.certifi, leaf_pem)
    new = set(folder_bytes(machine.anchors)) - set(anchors_before)
    assert new == {"Corp_Selector_Root.crt"}
    assert (machine.anchors / "Corp_Selector_Root.crt").read_bytes() == root.pem
    assert not any(p.is_symlink() for p in machine.anchors.iterdir())  # no hash links in an anchor folder

    removed = machine.cli("sync", "--mode", "remove", pem, "@all")
    assert removed.returncode == 0, removed.stderr + removed.stdout
    removals = [line for line in removed.stdout.splitlines() if line.startswith("  - ")]
    assert len(removals) == 1 + 3 + 2 + 1 and all(Certificate(root.der).sha256[:16] in r for r in removals), removed.stdout
    assert {db: certutil_list(db) for db in machine.nss} == nss_before
    assert {jdk: (keytool_list(jdk), jdk.read_bytes()) for jdk in machine.jdks} == java_before
    assert machine.certifi.read_bytes() == certifi_before
    assert folder_bytes(machine.anchors) == anchors_before
    with pytest.raises(ssl.SSLCertVerificationError):
        tls_handshake(machine.certifi, leaf, tmp_path)
    again = machine.cli("sync", "--mode", "remove", pem, "@all")
    assert again.returncode == 0 and "to remove" not in again.stdout


def test_remove_distrusts_a_root_a_builtin_list_would_bring_back(machine, corp, tmp_path):
    root, _, pem = corp
    builtins = tmp_path / "builtins.pem"
    root.write(builtins)
    assert machine.cli("sync", "--mode", "add", pem, f"nss:{machine.firefox[0]}").returncode == 0
    alice_before = certutil_list(machine.firefox[0])

    result = machine.cli("sync", "--mode", "remove", pem, f"@nss?builtins=pem:{builtins}")
    assert result.returncode == 0, result.stderr + result.stdout
    assert "! Corp Selector Root: a built-in root: distrusted instead of removed" in result.stdout
    for db in machine.nss:  # held (alice) or not (the others): a distrust record keeps the built-in out
        line = next(line for line in certutil_list(db).splitlines() if line.startswith("Corp Selector Root"))
        assert line.split()[-1] == "p,p,p", (db, line)
    others = lambda text: [line for line in text.splitlines() if not line.startswith("Corp Selector Root")]
    assert others(certutil_list(machine.firefox[0])) == others(alice_before)
    again = machine.cli("sync", "--mode", "remove", pem, f"@nss?builtins=pem:{builtins}")
    assert again.returncode == 0 and again.stdout.count(": in sync") == 3, again.stdout


def test_remove_creates_no_target(tmp_path, corp):
    missing = tmp_path / "absent.pem"
    result = storesync("sync", "--mode", "remove", corp[2], f"pem:{missing}")
    assert result.returncode == 0 and "in sync" in result.stdout, result.stderr
    assert not missing.exists()


@pytest.mark.parametrize("selector, words", [
    ("@java", "no Java keystore"), ("@nss", "no NSS database"), ("@system", "no distribution anchor folder"),
    ("@certifi", "no certifi bundle"), ("@all", "no writable store"),
])
def test_a_selector_naming_nothing_is_an_error(tmp_path, corp, selector, words):
    empty = tmp_path / "empty-machine"
    empty.mkdir()
    result = storesync("sync", "--mode", "add", "--root", empty, corp[2], selector)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith(f"storesync: {selector}: {words}"), result.stderr


def test_a_selector_is_never_a_source_and_an_unknown_one_is_refused(machine, corp, tmp_path):
    for args in (("@nss", "@java"), (corp[2], "@firefox")):
        result = machine.cli("sync", "--mode", "add", *args)
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    config = tmp_path / "storesync.toml"
    for table, words in ((f'source = "@nss"\ntargets = ["@java"]', "a selector names targets, not a source"),
                         (f'source = "{corp[2]}"\ntargets = ["@jdk"]', "unknown selector '@jdk'"),
                         ('mode = "merge"\nstores = ["@nss", "@java"]', "not a merge store"),
                         (f'source = "{corp[2]}"\ntargets = ["@java"]\npython = "/opt/venv"', "python must be a list")):
        config.write_text(f"[profile.corp]\n{table}\n")
        result = storesync("sync", "--config", config, "--root", machine.root)
        assert result.returncode == 2 and words in result.stderr, result.stderr


def test_profile_selectors_are_resolved_afresh_at_every_run(machine, corp, tmp_path):
    """In a profile, with the machine root from $STORESYNC_ROOT and @certifi's environment from
    the profile's `python` key: a JDK unpacked between two runs is found by the second."""
    root, _, pem = corp
    config = tmp_path / "storesync.toml"
    config.write_text(f'[profile.corp]\nmode = "add"\nsource = "{pem}"\ntargets = ["@java", "@certifi"]\n'
                      f'python = ["{machine.venv}"]\n')
    env = {**os.environ, "STORESYNC_ROOT": str(machine.root)}
    first = storesync("sync", "--config", config, env=env)
    assert first.returncode == 0, first.stderr
    assert first.stdout.count("1 to add") == 3
    third = machine.root / "usr/lib/jvm/jdk-25/lib/security/cacerts"
    third.parent.mkdir(parents=True)
    shutil.copyfile(JAVA_CACERTS, third)
    second = storesync("sync", "--config", config, env=env)
    assert second.returncode == 0, second.stderr
    assert f"jks:{third}: 1 to add" in second.stdout and second.stdout.count(": in sync") == 3
    assert colon_fingerprint(root) in keytool_list(third)


def test_all_leaves_out_a_store_it_may_not_write_with_a_note(machine, monkeypatch):
    """Run as root every store is writable, so the permission is denied here in-process."""
    denied = str(machine.jdks[1].parent)
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: str(path) != denied and real_access(path, mode))
    discover.set_root(machine.root)
    try:
        notes: list[str] = []
        found = discover.resolve("@all", [str(machine.venv)], notes)
    finally:
        discover.set_root(None)
    specs = [f.spec for f in found]
    assert f"jks:{machine.jdks[0]}" in specs and f"jks:{machine.jdks[1]}" not in specs
    assert notes == [f"@all: jks:{machine.jdks[1]} is not writable by this user; left out"]
    assert len(specs) == 1 + 3 + 1 + 1  # @system, @nss, the writable JDK, @certifi


def test_system_is_the_distributions_anchor_folder_with_its_rebuild(tmp_path, monkeypatch):
    monkeypatch.delenv("STORESYNC_ROOT", raising=False)
    fedora = tmp_path / "fedora"
    (fedora / "etc").mkdir(parents=True)
    (fedora / "etc/os-release").write_text('NAME="Rocky Linux"\nID="rocky"\nID_LIKE="rhel centos fedora"\n')
    discover.set_root(fedora)
    try:
        assert discover.resolve("@system") == []  # neither the folder nor the command
        folder = fedora / "etc/pki/ca-trust/source/anchors"
        folder.mkdir(parents=True)
        (found,) = discover.resolve("@system")
        # the root has no rebuild program: no hook (never this machine's own update-ca-trust)
        assert (found.spec, found.on_change) == (f"anchors:{folder}", None)
        program = fedora / "usr/bin/update-ca-trust"
        program.parent.mkdir(parents=True)
        program.write_text("#!/bin/sh\n")
        program.chmod(0o755)
        (found,) = discover.resolve("@system")
        assert (found.spec, found.on_change) == (f"anchors:{folder}", [str(program), "extract"])
        (fedora / "etc/os-release").write_text("ID=arch\n")
        assert discover.resolve("@system") == []  # a distribution whose way is not known
    finally:
        discover.set_root(None)
    if "debian" in discover.os_ids() and shutil.which("update-ca-certificates", path="/usr/sbin:/usr/bin"):
        (found,) = discover.resolve("@system")  # this machine itself: read only
        assert (found.spec, found.on_change) == ("anchors:/usr/local/share/ca-certificates", ["update-ca-certificates"])


def test_status_under_a_root_sees_only_that_machine(machine):
    env = {k: v for k, v in os.environ.items() if k != "STORESYNC_CONFIG"}
    env["XDG_CONFIG_HOME"] = str(machine.root / "no-config")
    data = json.loads(storesync("status", "--json", "--root", machine.root, "--python", machine.venv, env=env).stdout)
    specs = {s["store"] for s in data["stores"]}
    assert all(str(machine.root) in spec for spec in specs), specs
    assert {f"nss:{db}" for db in machine.nss} | {f"anchors:{machine.anchors}", f"pem:{machine.certifi}"} <= specs
    assert {f"jks:{jdk}" for jdk in machine.jdks} <= specs


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to write as another user")
def test_root_writes_a_users_store_as_that_user(corp):
    """A home under the root owned by `nobody`: @nss names its database with that owner, and
    root writes it as that user (every file of the database stays the user's)."""
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="storesync-root-"))
    try:
        os.chmod(base, 0o755)  # the write as `nobody` must reach the database
        home = base / "home/nobody-user"
        db = home / ".pki/nssdb"
        nss_db(db)
        for path in [home, home / ".pki", db, *db.iterdir()]:
            os.chown(path, 65534, 65534)
        os.chmod(corp[2], 0o644)
        dry = json.loads(storesync("sync", "--dry-run", "--json", "--root", base, "--mode", "add", corp[2], "@nss").stdout)
        assert dry["selectors"]["@nss"] == [{"store": f"nss:{db}", "owner": "nobody", "found_as": "nss (chromium)"}]
        result = storesync("sync", "--root", base, "--mode", "add", corp[2], "@nss")
        assert result.returncode == 0, result.stderr
        assert "Corp Selector Root" in certutil_list(db)
        assert {p.stat().st_uid for p in [db, *db.iterdir()]} == {65534}
    finally:
        shutil.rmtree(base)


def test_the_daemon_takes_a_selector_naming_nothing_as_a_warning(machine, corp, tmp_path):
    """The same profile: `sync` refuses it (exit 2), `daemon --once` reconciles the rest (exit 0);
    once a JDK appears, the next reconcile writes it."""
    config = tmp_path / "storesync.toml"
    config.write_text(f'[profile.corp]\nmode = "add"\nsource = "{corp[2]}"\ntargets = ["@java", "@system"]\n')
    for jdk in machine.jdks:
        shutil.rmtree(jdk.parents[2])
    assert storesync("sync", "--config", config, "--root", machine.root).returncode == 2
    once = storesync("daemon", "--once", "--config", config, "--root", machine.root)
    assert once.returncode == 0, once.stderr
    assert "@java: no Java keystore" in once.stdout + once.stderr  # logged as a warning
    assert (machine.anchors / "Corp_Selector_Root.crt").exists()
    machine.jdks[0].parent.mkdir(parents=True)
    shutil.copyfile(JAVA_CACERTS, machine.jdks[0])
    assert storesync("daemon", "--once", "--config", config, "--root", machine.root).returncode == 0
    assert colon_fingerprint(corp[0]) in keytool_list(machine.jdks[0])


@pytest.mark.parametrize("command", [("status",), ("sync", "--mode", "add", "CORP", "@all"), ("status", "ENV")])
def test_a_root_that_does_not_exist_is_one_sentence_not_an_empty_machine(tmp_path, corp, command):
    """A mistyped `--root /hots` (or $STORESYNC_ROOT) showed an empty machine and exited 0."""
    missing = tmp_path / "no-such-root"
    args = [corp[2] if a == "CORP" else a for a in command if a != "ENV"]
    if "ENV" in command:
        result = storesync(*args, env={**os.environ, "STORESYNC_ROOT": str(missing)})
    else:
        result = storesync(*args, "--root", missing)
    assert result.returncode == 2, result.stdout
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert f"{missing}: no such directory" in result.stderr, result.stderr


def test_dry_run_names_the_hook_the_run_will_run(machine, corp, tmp_path):
    """A profile's own on-change on `@system` replaces the rebuild (README: a mounted host's
    chroot): the dry run must name that command, not the rebuild the run will not start."""
    log = tmp_path / "custom.log"
    config = tmp_path / "storesync.toml"
    config.write_text(f'[profile.s]\nmode = "add"\nsource = "pem:{corp[2]}"\n'
                      f'targets = [{{ spec = "@system", on-change = ["sh", "-c", "echo custom >> {log}"] }}]\n')
    planned = storesync("sync", "--config", config, "--root", machine.root, "--dry-run", "--json")
    assert planned.returncode == 1, planned.stderr
    (system,) = json.loads(planned.stdout)[0]["selectors"]["@system"]
    assert system["on_change"] == ["sh", "-c", f"echo custom >> {log}"], system
    text = storesync("sync", "--config", config, "--root", machine.root, "--dry-run").stdout
    assert f"then sh -c 'echo custom >> {log}'" in text and str(machine.stub) not in text, text
    done = storesync("sync", "--config", config, "--root", machine.root)
    assert done.returncode == 0, done.stderr
    assert log.read_text() == "custom\n" and not (machine.stub.parent / "rebuilt.log").exists()


def test_a_store_that_cannot_be_written_says_what_to_do(machine, corp):
    """A JDK's cacerts that may not be replaced (immutable here; a read-only /usr alike): the
    run is undone, and the one sentence names the store and what to do, not just errno text."""
    jdk = machine.jdks[1]
    if subprocess.run(["chattr", "+i", jdk], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not possible here (not root, or a file system without it)")
    try:
        before = jdk.read_bytes()
        result = machine.cli("sync", "--mode", "add", corp[2], "@java")
    finally:
        subprocess.run(["chattr", "-i", jdk])
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert jdk.read_bytes() == before
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"storesync: jks:{jdk}: cannot write it (Operation not permitted"), line
    assert "make it writable by this user or leave it out of the targets" in line, line


def test_status_of_a_selector_profile_lists_stores_not_the_selector(machine, corp, tmp_path):
    """`status --config` with `targets = ["@all"]` listed "@all" as a store that cannot be read."""
    config = tmp_path / "storesync.toml"
    config.write_text(f'[profile.corp]\nmode = "add"\nsource = "pem:{corp[2]}"\ntargets = ["@all", "@nss?builtins=pem:{corp[2]}"]\n')
    result = storesync("status", "--json", "--config", config, "--root", machine.root)
    assert result.returncode == 0, result.stderr
    listed = [s["store"] for s in json.loads(result.stdout)["stores"]]
    assert not [s for s in listed if s.startswith("@")], listed
    assert f"pem:{corp[2]}" in listed and f"nss:{machine.chromium}" in listed


def test_a_jdk_linked_to_etc_reaches_the_roots_keystore_not_this_machines(machine, corp):
    """Debian's JDKs hold `lib/security/cacerts -> /etc/ssl/certs/java/cacerts`, an absolute
    link: under a root it means the root's keystore. Followed as is it led to this machine's own
    /etc/ssl/certs/java/cacerts, which `@java --root` would have written."""
    keystore = machine.root / "etc/ssl/certs/java/cacerts"
    keystore.parent.mkdir(parents=True)
    shutil.copyfile(JAVA_CACERTS, keystore)
    linked = machine.root / "usr/lib/jvm/java-17-openjdk-amd64/lib/security/cacerts"
    linked.parent.mkdir(parents=True)
    linked.symlink_to("/etc/ssl/certs/java/cacerts")
    (machine.root / "usr/lib/jvm/dangling/lib/security").mkdir(parents=True)
    (machine.root / "usr/lib/jvm/dangling/lib/security/cacerts").symlink_to("/etc/pki/java/cacerts")  # not in the root
    result = machine.cli("sync", "--dry-run", "--json", "--mode", "add", corp[2], "@java")
    assert result.returncode == 1, result.stderr
    stores = [f["store"] for f in json.loads(result.stdout)["selectors"]["@java"]]
    real = [os.path.realpath(s.partition(":")[2]) for s in stores]
    assert all(p.startswith(os.path.realpath(machine.root) + "/") for p in real), stores
    assert sorted(real) == sorted({os.path.realpath(p) for p in [keystore, *machine.jdks]}), stores  # once each
    status = json.loads(storesync("status", "--json", "--root", machine.root).stdout)
    assert not [s["store"] for s in status["stores"] if not os.path.realpath(
        s["store"].partition(":")[2]).startswith(os.path.realpath(machine.root) + "/")]


def test_an_nss_database_that_cannot_be_written_says_what_to_do(machine, corp):
    db = machine.chromium / "cert9.db"
    if subprocess.run(["chattr", "+i", db], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not possible here (not root, or a file system without it)")
    try:
        result = machine.cli("sync", "--mode", "add", corp[2], "@nss")
    finally:
        subprocess.run(["chattr", "-i", db])
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert f"nss store {machine.chromium}: cannot write" in line, line
    assert "make it writable by its owner or leave it out of the targets" in line, line
    assert "Corp Selector Root" not in certutil_list(machine.chromium)


def test_a_hashed_folder_under_a_root_follows_its_absolute_links_inside_it(tmp_path, pki):
    """Debian's /etc/ssl/certs holds `NAME.pem -> /usr/share/ca-certificates/...`: under a root
    the link means the root's file. It was followed on this machine (here: to nothing)."""
    host = tmp_path / "host"
    ca = pki.ca("Rooted Link Root")
    real = host / "opt/storesync-rooted-only/rooted.crt"
    assert not Path("/opt/storesync-rooted-only").exists()
    real.parent.mkdir(parents=True)
    real.write_bytes(ca.pem)
    certs = host / "etc/ssl/certs"
    certs.mkdir(parents=True)
    (certs / "rooted.pem").symlink_to("/opt/storesync-rooted-only/rooted.crt")
    digest = run("openssl", "x509", "-hash", "-noout", "-in", str(real)).stdout.decode().strip()
    (certs / f"{digest}.0").symlink_to("rooted.pem")
    source = tmp_path / "source.pem"
    source.write_bytes(ca.pem)
    result = storesync("sync", "--dry-run", "--root", host, f"pem:{source}", f"dir:{certs}")
    assert result.returncode == 0, result.stdout + result.stderr  # in sync: the folder holds it, through its link
    assert storesync("sync", "--dry-run", f"pem:{source}", f"dir:{certs}").returncode == 1  # without the root: dangling


@pytest.mark.parametrize("command", ["sync", "daemon"])
def test_a_found_path_holding_a_question_mark_is_a_path_not_options(tmp_path, pki, corp, command):
    """A JDK folder named `jdk?b=1`: the path discovery found reaches its store as a path (it was
    parsed as the option b=, and that one error stopped every store @all named)."""
    root, _, pem = corp
    machine = tmp_path / "machine"
    (machine / "etc").mkdir(parents=True)
    (machine / "etc/os-release").write_text("ID=debian\n")
    nss_db(machine / "home/bob/.pki/nssdb")
    jdks = [machine / f"usr/lib/jvm/{name}/lib/security/cacerts" for name in ("jdk-a", "jdk?b=1")]
    existing = tmp_path / "existing.pem"
    pki.ca("Java Existing Root").write(existing)
    for jdk in jdks:
        jdk.parent.mkdir(parents=True)
    assert storesync("sync", "--mode", "add", existing, f"jks:{jdks[0]}").returncode == 0
    shutil.copyfile(jdks[0], jdks[1])  # no spec can name it
    config = tmp_path / "storesync.toml"
    config.write_text(f'[profile.corp]\nmode = "add"\nsource = "{pem}"\ntargets = ["@all"]\n')
    args = ("sync",) if command == "sync" else ("daemon", "--once")
    result = storesync(*args, "--config", config, "--root", machine)
    assert result.returncode == 0, result.stderr
    line = next(line for line in certutil_list(machine / "home/bob/.pki/nssdb").splitlines()
                if line.startswith("Corp Selector Root"))
    assert line.split()[-1] == "C,,", line
    for jdk in jdks:
        assert colon_fingerprint(root) in keytool_list(jdk), jdk


def test_a_found_store_that_cannot_be_opened_is_left_out_not_the_others(tmp_path, corp):
    """A store a selector found that cannot be opened (here a read-only kind) is its own error
    line and is left as it is; the others it found are written. A store the profile names
    itself that cannot be opened still stops its profile."""
    from storesync.config import Profile, StoreRef
    from storesync.engine import run as engine
    from storesync.stores import StoreSpec

    _, leaf, pem = corp
    good, certdata = tmp_path / "good.pem", tmp_path / "certdata.txt"
    certdata.write_text("BEGINDATA\n")

    def resolve(selector, pythons=(), warnings=None):
        return [discover.Found(StoreSpec("certdata", certdata), "test"), discover.Found(StoreSpec("pem", good), "test")]

    result = engine.run(Profile("found", "add", [StoreRef(f"pem:{pem}"), StoreRef("@all")]), resolve=resolve)
    assert result.exit_code == 2
    assert [o.error for o in result.outcomes if o.error] == [
        f"certdata:{certdata}: certdata stores are read-only: it can be the source of a sync, never a target "
        "or a merge's store; leave it out of those"]
    assert certdata.read_text() == "BEGINDATA\n"
    leaf.write(tmp_path / "leaf.pem")
    run("openssl", "verify", "-CAfile", good, tmp_path / "leaf.pem")  # written: the root is trusted

    named = tmp_path / "named.pem"
    profile = Profile("named", "add", [StoreRef(f"pem:{pem}"), StoreRef(f"certdata:{certdata}"), StoreRef(f"pem:{named}")])
    assert engine.run(profile).exit_code == 2 and not named.exists()
