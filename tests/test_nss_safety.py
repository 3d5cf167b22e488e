"""Crash safety of NSS writes and never losing another writer's work (issue 12, defects 1-2).

Oracles: certutil (NSS itself) reads the database after a killed writer; a real SQLite writer
is SIGKILLed mid-transaction to leave the hot journal that SQLite leaves.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import PKI, need, run, storesync
from test_nss import certutil_add, certutil_flags, new_db

# A writer that changes cert9.db (or key4.db) inside one transaction with a tiny page cache, so
# SQLite has already synced its journal and overwritten database pages when it is killed: the
# hot journal a killed certutil, browser or storesync leaves.
KILLED_WRITER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("PRAGMA cache_size=1")
conn.execute("BEGIN IMMEDIATE")
conn.execute("DELETE FROM " + sys.argv[2])
conn.execute("CREATE TABLE filler(x)")
conn.executemany("INSERT INTO filler VALUES (?)", [(b"x" * 3000,)] * 50)
print("ready", flush=True)
time.sleep(60)
"""


def kill_mid_write(db_file: Path, table: str) -> None:
    child = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(db_file), table], stdout=subprocess.PIPE)
    assert child.stdout.readline() == b"ready\n"
    child.send_signal(signal.SIGKILL)
    child.wait()
    journal = Path(f"{db_file}-journal")
    assert journal.exists() and journal.stat().st_size > 0


@pytest.fixture
def state(tmp_path, monkeypatch):
    path = tmp_path / "state"
    monkeypatch.setenv("STORESYNC_STATE_DIR", str(path))
    return path


@pytest.fixture
def two_roots(tmp_path):
    pki = PKI()
    return [pki.ca(f"Safety Root {n}").write(tmp_path / f"root{n}.pem") for n in range(2)]


def hot_db(tmp_path: Path, roots: list[Path], file: str = "cert9.db") -> Path:
    db = new_db(tmp_path / "db")
    for n, pem in enumerate(roots):
        certutil_add(db, f"root{n}", "C,,", pem)
    kill_mid_write(db / file, "nssPublic" if file == "cert9.db" else "metaData")
    assert run("certutil", "-L", "-d", f"sql:{db}", check=False).returncode != 0  # NSS cannot read it either
    return db


@pytest.mark.parametrize("file", ["cert9.db", "key4.db"])
def test_list_recovers_a_hot_journal_and_says_so(tmp_path, state, two_roots, file):
    db = hot_db(tmp_path, two_roots, file)
    result = storesync("list", "--json", f"nss:{db}")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert f"{file}-journal" in result.stderr and "interrupted" in result.stderr and "warning" in result.stderr
    assert not (db / f"{file}-journal").exists()
    assert '"label": "root0"' in result.stdout and '"label": "root1"' in result.stdout  # the old state, intact
    assert certutil_flags(db) == {"root0": "C,,", "root1": "C,,"}  # NSS reads it again
    again = storesync("list", f"nss:{db}")
    assert again.returncode == 0 and "interrupted" not in again.stderr  # said once, when recovered


def test_diff_and_sync_recover_a_hot_journal(tmp_path, state, two_roots):
    db = hot_db(tmp_path, two_roots)
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(b"".join(p.read_bytes() for p in two_roots))
    result = storesync("diff", f"pem:{bundle}", f"nss:{db}")
    assert result.returncode == 0, result.stderr
    assert "cert9.db-journal" in result.stderr and "interrupted" in result.stderr

    kill_mid_write(db / "cert9.db", "nssPublic")
    extra = PKI().ca("Safety Root New").write(tmp_path / "new.pem")
    bundle.write_bytes(bundle.read_bytes() + extra.read_bytes())
    result = storesync("sync", f"pem:{bundle}", f"nss:{db}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "cert9.db-journal" in result.stdout + result.stderr
    assert len(certutil_flags(db)) == 3


def test_recovery_waits_for_the_store_lock(tmp_path, state, two_roots):
    """The journal is rolled back only under the store's lock (the one sync and rollback take)."""
    from storesync import state as state_module

    db = hot_db(tmp_path, two_roots)
    state_module.set_state_dir(state)
    held = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with state_module.lock(f"store {db.resolve()}"):
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        held.wait(5)
        child = subprocess.Popen([sys.executable, "-m", "storesync", "list", f"nss:{db}"],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(2)
        assert child.poll() is None  # waiting for the lock
        assert (db / "cert9.db-journal").exists()  # and nothing rolled back meanwhile
    finally:
        release.set()
        holder.join()
        state_module.set_state_dir(None)
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    assert "interrupted" in err and not (db / "cert9.db-journal").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root, to run the reader as another user")
def test_a_hot_journal_that_cannot_be_rolled_back_is_one_sentence(two_roots):
    """A user who may read the database but not write it cannot roll it back: one sentence, exit 2."""
    import tempfile

    need("setpriv")
    top = Path(tempfile.mkdtemp(prefix="storesync-hot-"))
    try:
        top.chmod(0o755)
        db = hot_db(top, two_roots)
        for path in [db, *db.iterdir()]:
            path.chmod(0o755 if path.is_dir() else 0o644)  # readable, not writable, by nobody
        state = top / "state"
        state.mkdir(mode=0o777)
        state.chmod(0o777)
        result = run("setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                     sys.executable, "-m", "storesync", "list", f"nss:{db}", check=False,
                     env={**os.environ, "STORESYNC_STATE_DIR": str(state)})
        err = result.stderr.decode()
        assert result.returncode == 2, err
        assert "Traceback" not in err and "interrupted" in err and "cert9.db-journal" in err
        assert (db / "cert9.db-journal").exists()
    finally:
        import shutil

        shutil.rmtree(top)


# --- another writer's work is never lost ---------------------------------------------------
#
# Each store kind with the program that owns it as the other writer and the oracle: certutil for
# NSS, keytool for JKS, and for a PEM bundle a shell appending to it (what update scripts do).


class Target:
    """A store under test, the other writer that adds to it, and an oracle listing it."""

    def __init__(self, kind: str, tmp_path: Path, roots: list[Path]):
        self.kind, self.tmp = kind, tmp_path
        if kind == "nss":
            self.path = new_db(tmp_path / "target")
            for n, pem in enumerate(roots):
                certutil_add(self.path, f"root{n}", "C,,", pem)
        elif kind == "jks":
            need("keytool")
            self.path = tmp_path / "target.jks"
            for n, pem in enumerate(roots):
                self.keytool("-importcert", "-noprompt", "-storetype", "JKS", "-alias", f"root{n}", "-file", pem)
        else:
            self.path = tmp_path / "target.pem"
            self.path.write_bytes(b"".join(p.read_bytes() for p in roots))
        self.spec = f"{kind}:{self.path}"

    def keytool(self, *args, check: bool = True) -> subprocess.CompletedProcess:
        return run("keytool", *args, "-keystore", self.path, "-storepass", "changeit", check=check)

    def add(self, name: str, pem: Path) -> int:
        """The other writer adds a certificate; its exit status."""
        if self.kind == "nss":
            return run("certutil", "-A", "-d", f"sql:{self.path}", "-n", name, "-t", "C,,", "-i", pem,
                       check=False).returncode
        if self.kind == "jks":
            return self.keytool("-importcert", "-noprompt", "-alias", name, "-file", pem, check=False).returncode
        return run("sh", "-c", 'cat "$1" >> "$2"', "sh", pem, self.path, check=False).returncode

    def ders(self, nicks: list[str] | None = None) -> set[bytes]:
        """Every certificate the owning program sees in the store (in NSS: of these nicknames)."""
        from cryptography import x509
        from cryptography.hazmat.primitives.serialization import Encoding

        if self.kind == "nss":
            listed = certutil_flags(self.path)
            return {run("certutil", "-L", "-d", f"sql:{self.path}", "-n", nick, "-r").stdout
                    for nick in (listed if nicks is None else [n for n in nicks if n in listed])}
        if self.kind == "jks":
            text = self.keytool("-list", "-rfc").stdout
        else:
            text = self.path.read_bytes()
        return {c.public_bytes(Encoding.DER) for c in x509.load_pem_x509_certificates(text)}


def der_of(pem: Path) -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    return x509.load_pem_x509_certificate(pem.read_bytes()).public_bytes(Encoding.DER)


@pytest.fixture(params=["nss", "pem", "jks"])
def target(request, tmp_path, two_roots):
    return Target(request.param, tmp_path, two_roots)


@pytest.fixture
def source(tmp_path, two_roots):
    """A bundle with the target's two roots and one more: a sync adds that one."""
    new = PKI().ca("Safety Root Synced").write(tmp_path / "synced.pem")
    path = tmp_path / "source.pem"
    path.write_bytes(b"".join(p.read_bytes() for p in [*two_roots, new]))
    return path, new


def run_profile(state, *specs: str):
    from storesync.config import Profile, StoreRef
    from storesync import state as state_module
    from storesync.engine.run import run as run_engine

    state_module.set_state_dir(state)
    try:
        return run_engine(Profile("safety", "mirror", [StoreRef(s) for s in specs]))
    finally:
        state_module.set_state_dir(None)


def test_a_failed_sync_keeps_what_another_writer_added(tmp_path, state, target, source, monkeypatch):
    """A later target fails after the other writer added to the first: the first is put back
    as it was for what the sync changed, and keeps what the other writer added."""
    from storesync.stores.p7b import P7bStore

    src, synced = source
    other = PKI().ca("Safety Root Other").write(tmp_path / "other.pem")
    before = target.ders()
    codes = []

    def full_disk(self, plan):
        codes.append(target.add("other", other))
        raise OSError(28, "No space left on device", str(self.path))

    monkeypatch.setattr(P7bStore, "write", full_disk)
    result = run_profile(state, f"pem:{src}", target.spec, f"p7b:{tmp_path / 'out.p7b'}")
    assert result.error and "No space left" in result.error
    assert target.spec in result.rolled_back
    assert codes == [0]
    assert target.ders() == before | {der_of(other)}  # the sync's addition undone, the other's kept


def test_a_concurrent_addition_does_not_fail_the_read_back_check(tmp_path, state, target, source, monkeypatch):
    """The other writer adds right after storesync wrote: the check judges only what the plan touched."""
    src, synced = source
    other = PKI().ca("Safety Root Other").write(tmp_path / "other.pem")
    store_class = type(__import__("storesync.stores", fromlist=["open_store"]).open_store(target.spec))
    real_write = store_class.write
    codes = []

    def write_then_other(self, plan):
        real_write(self, plan)
        codes.append(target.add("other", other))

    monkeypatch.setattr(store_class, "write", write_then_other)
    before = target.ders()
    result = run_profile(state, f"pem:{src}", target.spec)
    assert result.error is None and not result.rolled_back
    assert codes == [0]
    assert target.ders() == before | {der_of(other), der_of(synced)}


def test_an_addition_between_read_and_write_is_kept(tmp_path, state, target, source, monkeypatch):
    """The other writer adds after storesync read the store and before it writes: the write
    applies the plan to the store as it is then, not to what was read."""
    src, synced = source
    other = PKI().ca("Safety Root Other").write(tmp_path / "other.pem")
    store_class = type(__import__("storesync.stores", fromlist=["open_store"]).open_store(target.spec))
    real_write = store_class.write
    codes = []

    def other_then_write(self, plan):
        codes.append(target.add("other", other))
        real_write(self, plan)

    monkeypatch.setattr(store_class, "write", other_then_write)
    before = target.ders()
    result = run_profile(state, f"pem:{src}", target.spec)
    assert result.error is None and not result.rolled_back, result.error
    assert codes == [0]
    assert target.ders() == before | {der_of(other), der_of(synced)}


def campaign(tmp_path: Path, target: Target, state: Path, rounds: int, seed: int, stop: bool = True) -> dict:
    """`rounds` syncs, each raced by the other writer adding a certificate of its own; returns
    what happened. Nothing the other writer added with exit 0 may be lost.

    The race is aimed: each round measures when the sync took its backup (it writes right after)
    and when the other writer finished (it commits just before), and starts the next round's two
    processes so that the other writer commits around the sync's write, give or take a jitter."""
    import random

    rng = random.Random(seed)
    pki = PKI()
    source = tmp_path / "campaign-source.pem"
    # A store of a realistic size (a browser's holds ~150 roots): reading it back takes a while.
    source.write_bytes(b"".join(pki.ca(f"Campaign Filler {n}").pem for n in range(150)))
    filled = storesync("sync", "--mode", "add", f"pem:{source}", target.spec)
    assert filled.returncode == 0, filled.stderr
    added = []
    figures = {"other_ok": 0, "other_failed": 0, "sync_ok": 0, "sync_failed": 0, "lost": 0}
    backup_at, other_done = 0.4, (1.0 if target.kind == "jks" else 0.1)  # first guesses, seconds
    for n in range(rounds):
        mine = pki.ca(f"Campaign Sync {n}").write(tmp_path / f"sync{n}.pem")
        source.write_bytes(source.read_bytes() + mine.read_bytes())
        theirs = pki.ca(f"Campaign Other {n}").write(tmp_path / f"other{n}.pem")
        sync = [sys.executable, "-m", "storesync", "sync", "--mode", "add", f"pem:{source}", target.spec]
        backups = len(list(state.glob("backups/*/*.json")))
        lead = other_done - backup_at - rng.uniform(-0.02, 0.06)  # > 0: the other writer starts first
        times: dict = {}

        def other() -> None:
            start = time.monotonic()
            times["code"] = target.add(f"other{n}", theirs)
            times["other"] = time.monotonic() - start

        writer = threading.Thread(target=other)
        if lead > 0:
            writer.start()
            time.sleep(lead)
        start = time.monotonic()
        child = subprocess.Popen(sync, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if lead <= 0:
            time.sleep(-lead)
            writer.start()
        while child.poll() is None and "backup" not in times:
            if len(list(state.glob("backups/*/*.json"))) > backups:
                times["backup"] = time.monotonic() - start
            time.sleep(0.002)
        out, err = child.communicate()
        writer.join()
        backup_at = 0.5 * backup_at + 0.5 * times.get("backup", backup_at)
        other_done = 0.5 * other_done + 0.5 * times["other"]
        assert "Traceback" not in err, err
        figures["sync_ok" if child.returncode == 0 else "sync_failed"] += 1
        figures["other_ok" if times["code"] == 0 else "other_failed"] += 1
        if times["code"] == 0:
            added.append(der_of(theirs))
        present = target.ders([f"other{k}" for k in range(n + 1)])
        figures["lost"] = sum(1 for d in added if d not in present)
        assert figures["lost"] == 0 or not stop, f"round {n}: {figures}; sync said {out}{err}"
    return figures


@pytest.mark.parametrize("kind", ["nss", "jks", "pem"])
def test_concurrent_writers_lose_nothing(tmp_path, state, two_roots, kind):
    figures = campaign(tmp_path, Target(kind, tmp_path, two_roots), state, rounds=8, seed=12)
    print(kind, figures)
    assert figures["other_ok"] >= 6  # the other writer mostly succeeds: the test did race


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["nss", "jks", "pem"])
def test_concurrent_writers_lose_nothing_campaign(tmp_path, state, two_roots, kind):
    figures = campaign(tmp_path, Target(kind, tmp_path, two_roots), state, rounds=50, seed=1212)
    print(kind, figures)
    assert figures["other_ok"] >= 40


# --- `storesync rollback` and what others added since -------------------------------------


def test_rollback_keeps_what_another_writer_added_since(tmp_path, state, target, source):
    """`storesync rollback` undoes the sync, and keeps (and names) what another program added since."""
    src, synced = source
    before = target.ders()
    result = storesync("sync", f"pem:{src}", target.spec)
    assert result.returncode == 0, result.stderr
    assert target.ders() == before | {der_of(synced)}
    other = PKI().ca("Safety Root Added Later").write(tmp_path / "later.pem")
    assert target.add("later", other) == 0

    result = storesync("rollback", target.spec)
    assert result.returncode == 0, result.stderr
    assert target.ders() == before | {der_of(other)}  # the sync's addition gone, the other's kept
    import hashlib

    kept = [line for line in result.stdout.splitlines() if line.lstrip().startswith("! kept")]
    assert len(kept) == 1 and hashlib.sha256(der_of(other)).hexdigest()[:16] in kept[0] and "added" in kept[0]

    undo = storesync("rollback", target.spec)  # the rollback itself can be undone
    assert undo.returncode == 0, undo.stderr
    assert target.ders() == before | {der_of(synced), der_of(other)}


def test_rollback_with_nothing_added_since_restores_the_exact_bytes(tmp_path, state, target, source):
    src, synced = source
    files = [target.path] if target.path.is_file() else sorted(target.path.glob("*.db"))
    original = [f.read_bytes() for f in files]
    assert storesync("sync", f"pem:{src}", target.spec).returncode == 0
    result = storesync("rollback", target.spec)
    assert result.returncode == 0, result.stderr
    assert [f.read_bytes() for f in files] == original and "! kept" not in result.stdout


def test_the_daemon_recovers_a_hot_journal_and_says_so(tmp_path, state, two_roots):
    db = hot_db(tmp_path, two_roots)
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(b"".join(p.read_bytes() for p in two_roots))
    config = tmp_path / "s.toml"
    config.write_text(f'[profile.p]\nmode = "mirror"\nsource = "pem:{bundle}"\ntargets = ["nss:{db}"]\n')
    result = subprocess.run([sys.executable, "-m", "storesync", "daemon", "--once", "--config", config],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "cert9.db-journal" in result.stderr and "interrupted" in result.stderr
    assert certutil_flags(db) == {"root0": "C,,", "root1": "C,,"}


def _has_magic(path: Path) -> bool:
    try:
        with open(path, "rb") as journal:
            return journal.read(8) == b"\xd9\xd5\x05\xf9\x20\xa1\x63\xd7"  # SQLite's journal header
    except FileNotFoundError:
        return False


def killed_syncs(tmp_path: Path, rounds: int, enough: int) -> dict:
    """Syncs of 300 roots into a new database, each SIGKILLed after its backup (it writes right
    then): every other one at a random moment, the others as soon as a journal is hot. After each, `storesync list` must read the old or
    the new database (0 or 300 roots), rolling back what the kill left, and certutil must agree.
    Stops once `enough` hot journals were rolled back."""
    import json
    import random

    rng = random.Random(7)
    pki = PKI()
    source = tmp_path / "killed-source.pem"
    source.write_bytes(b"".join(pki.ca(f"Killed Sync {n}").pem for n in range(300)))
    backups = tmp_path / "state" / "backups"
    figures = {"rounds": 0, "recovered": 0, "old": 0, "new": 0}
    for n in range(rounds):
        db = new_db(tmp_path / f"killed{n}")
        before = len(list(backups.glob("*/*.json")))
        child = subprocess.Popen([sys.executable, "-m", "storesync", "sync", f"pem:{source}", f"nss:{db}"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while child.poll() is None and len(list(backups.glob("*/*.json"))) <= before:
            time.sleep(0.001)
        if n % 2:  # at a random moment of the write
            time.sleep(rng.uniform(0.0, 0.15))
        else:  # aimed: as soon as a journal is hot, i.e. inside a commit. SQLite creates it empty
            # when the transaction starts, fills it as it commits, and writes its magic number
            # only once the pages are on disk: a kill before that leaves the old database
            journals = (db / "cert9.db-journal", db / "key4.db-journal")
            while child.poll() is None and not any(_has_magic(path) for path in journals):
                pass
        child.send_signal(signal.SIGKILL)
        child.wait()
        listed = storesync("list", "--json", f"nss:{db}")
        assert listed.returncode == 0, listed.stderr
        count = len(json.loads(listed.stdout)["entries"])
        assert count in (0, 300), count
        assert len(certutil_flags(db)) == count  # NSS reads it, and sees the same
        figures["rounds"] += 1
        figures["old" if count == 0 else "new"] += 1
        figures["recovered"] += "interrupted" in listed.stderr
        if figures["recovered"] >= enough:
            break
    return figures


def test_a_sync_killed_mid_write_leaves_the_old_or_the_new_database(tmp_path, state):
    print(killed_syncs(tmp_path, rounds=4, enough=1))


@pytest.mark.slow
def test_syncs_killed_mid_write_campaign(tmp_path, state):
    figures = killed_syncs(tmp_path, rounds=80, enough=20)
    print(figures)
    assert figures["recovered"] >= 1  # a kill did leave a hot journal, rolled back


def test_a_certificate_row_swapped_for_another_of_the_same_issuer_and_serial_keeps_no_trust(tmp_path, state):
    """A trust object finds its certificate by issuer and serial, which nothing signs; its signed
    certificate hash is what ties it to the bytes. Whoever can write cert9.db but not key4.db
    can swap a trusted root's bytes for a certificate of their own with the same subject and
    serial: NSS then applies no trust to it (certutil -V refuses it), and neither does storesync,
    which would otherwise list the forgery as trusted and spread it to every other store."""
    import datetime as dt
    import json
    import sqlite3

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    from storesync.stores import nss

    def root(key) -> x509.Certificate:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Swapped Root")])
        now = dt.datetime.now(dt.timezone.utc)
        return (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                .serial_number(4242).not_valid_before(now - dt.timedelta(days=1))
                .not_valid_after(now + dt.timedelta(days=365))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .sign(key, hashes.SHA256()))

    real, forged = (root(ec.generate_private_key(ec.SECP256R1())) for _ in range(2))
    pem = tmp_path / "real.pem"
    pem.write_bytes(real.public_bytes(serialization.Encoding.PEM))
    db = new_db(tmp_path / "db")
    certutil_add(db, "Swapped Root", "C,,", pem)
    listed = storesync("list", f"nss:{db}", "--json")
    assert [e["trust"] for e in json.loads(listed.stdout)["entries"]] == [{"server-auth": "trusted"}]

    forged_der = forged.public_bytes(serialization.Encoding.DER)
    with sqlite3.connect(db / "cert9.db") as conn:
        conn.execute(f"UPDATE nssPublic SET {nss.col(nss.CKA_VALUE)} = ? WHERE {nss.col(nss.CKA_CLASS)} = ?",
                     (forged_der, nss.ulong(nss.CKO_CERTIFICATE)))
    listed = storesync("list", f"nss:{db}", "--json")
    entries = json.loads(listed.stdout)["entries"]
    assert all(e.get("trust") != {"server-auth": "trusted"} for e in entries), entries
    assert "certificate hash does not match" in listed.stderr
    out = tmp_path / "out.pem"
    storesync("sync", f"nss:{db}", f"pem:{out}", check=False)
    written = x509.load_pem_x509_certificates(out.read_bytes()) if out.exists() and out.stat().st_size else []
    assert forged not in written
    verified = subprocess.run(["certutil", "-V", "-d", f"sql:{db}", "-n", "Swapped Root", "-u", "L"],
                              capture_output=True, text=True)
    assert verified.returncode != 0  # NSS applies no trust to the swapped bytes either


@pytest.mark.parametrize("kind", ["nss", "jks", "p12"])
def test_rollback_of_a_store_named_without_its_password_refuses_and_keeps_what_others_added(tmp_path, state, kind):
    """A store with a password, named without it: neither it nor its backup can be read, so a
    rollback cannot tell storesync's change from another program's. It put the backup's bytes
    back, dropping what keytool or certutil had added since; it now refuses (exit 2, naming the
    option), and with the password (`--password-file`) puts back only storesync's change."""
    import hashlib

    from test_jks import keytool, keytool_list
    from test_nss import certutil_add, new_db

    pki = PKI()
    first, synced, later = (pki.ca(f"Password Root {n}").write(tmp_path / f"{n}.pem") for n in ("first", "synced", "later"))
    password = tmp_path / "store.pw"
    password.write_text("s3cret-pass\n")
    if kind == "nss":
        path = new_db(tmp_path / "db", "s3cret-pass")
        certutil_add(path, "first", "C,,", first, "-f", path.parent / "db.pw")
        files, add = sorted(path.glob("*.db")), lambda: certutil_add(path, "later", "C,,", later, "-f", password)
        held = lambda: {line.split()[0] for line in run("certutil", "-L", "-d", f"sql:{path}").stdout.decode().splitlines()[4:] if line.strip()}
    else:
        path = tmp_path / f"store.{kind}"
        store_type = "JKS" if kind == "jks" else "PKCS12"
        importing = lambda alias, pem: keytool("-importcert", "-noprompt", "-keystore", path, "-storetype", store_type,
                                               "-storepass", "s3cret-pass", "-alias", alias, "-file", pem)
        importing("first", first)
        files, add = [path], lambda: importing("later", later)
        held = lambda: {hashlib.sha256(der_of(p)).hexdigest() for p in (first, synced, later)} & {
            sha.lower().replace(":", "") for _, sha in keytool_list(path, "s3cret-pass").values()}
    result = storesync("sync", "--mode", "add", f"pem:{synced}", f"{kind}:{path}?password-file={password}")
    assert result.returncode == 0, result.stderr
    add()
    before, holding = [f.read_bytes() for f in files], held()

    result = storesync("rollback", f"{kind}:{path}")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "password-file" in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert [f.read_bytes() for f in files] == before and held() == holding

    result = storesync("rollback", "--password-file", password, f"{kind}:{path}")
    assert result.returncode == 0, result.stderr
    assert "! kept" in result.stdout and len(held()) == len(holding) - 1  # storesync's root gone, keytool's or certutil's kept
