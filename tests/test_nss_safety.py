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
    from storesync.engine import state as state_module

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


def test_a_hot_journal_that_cannot_be_rolled_back_is_one_sentence(two_roots):
    """A user who may read the database but not write it cannot roll it back: one sentence, exit 2."""
    import tempfile

    if os.geteuid() != 0:
        pytest.skip("needs root, to run the reader as another user")
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
