"""Work a one-shot sync into a Java store no longer does (issue 18), counted, not timed: the
exit scanning every object the run made for cycles, and the read-back parsing again the
certificates it has just written. What is checked stays checked: the read-back still reads
the file and verifies its integrity hash or MAC, and a damaged write is still caught."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import cli_modules
from storesync.engine import run as engine
from storesync.model import Certificate
from storesync.stores.jks import integrity_hash


def test_a_one_shot_sync_leaves_the_exit_nothing_to_scan(tmp_path, pki):
    """At the end of a quick command the objects the run made are frozen: Python's exit
    collection has (almost) nothing left to traverse."""
    source = tmp_path / "roots.pem"
    source.write_bytes(b"".join(pki.ca(f"Exit Root {n}").pem for n in range(20)))
    probe = ("import gc, sys\n"
             f"sys.argv = ['storesync', 'sync', 'pem:{source}', 'jks:{tmp_path / 'out.jks'}']\n"
             "from storesync.cli import main\n"
             "try:\n    main()\nexcept SystemExit as exc:\n"
             "    print(exc.code, len(gc.get_objects()), gc.get_freeze_count(), file=sys.stderr)\n")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            env={**os.environ, "STORESYNC_STATE_DIR": str(tmp_path / "state")})
    code, scanned, frozen = result.stderr.split()[-3:]
    assert code == "0" and int(scanned) < 100 and int(frozen) > 10_000, result.stderr


@pytest.fixture
def parses(monkeypatch):
    """The certificates whose DER is parsed (Certificate.fields computed), by SHA-256."""
    seen = []
    real = Certificate.__dict__["fields"].func

    def counting(self):
        seen.append(self.sha256)
        return real(self)

    from functools import cached_property

    prop = cached_property(counting)
    prop.__set_name__(Certificate, "fields")
    monkeypatch.setattr(Certificate, "fields", prop)
    return seen


@pytest.mark.parametrize("kind", ["jks", "p12"])
def test_the_read_back_parses_no_certificate_it_wrote(kind, tmp_path, pki, parses, monkeypatch):
    monkeypatch.setenv("STORESYNC_STATE_DIR", str(tmp_path / "state"))
    source = tmp_path / "roots.pem"
    source.write_bytes(b"".join(pki.ca(f"Read-back Root {n}").pem for n in range(5)))
    checked = []
    real = engine._check_written
    monkeypatch.setattr(engine, "_check_written", lambda outcome: (parses.clear(), real(outcome),
                                                                    checked.append(list(parses))))
    from storesync.config import Profile, StoreRef

    result = engine.run(Profile("cli", "mirror", [StoreRef(f"pem:{source}"), StoreRef(f"{kind}:{tmp_path / 'out'}")]))
    assert result.error is None and result.changed
    assert checked == [[]]  # read back, and every certificate in it was one just written: none parsed again



@pytest.mark.parametrize("kind", ["jks", "p12"])
def test_a_sync_reads_each_certificates_outline_once_whatever_reads_it_back(kind, tmp_path, pki, monkeypatch):
    """The source's read, the store's check of its own output and the engine's read-back each
    ask that the bytes have a certificate's outline: one parse per certificate serves them all
    (and one more for the fields the plan reads, basicConstraints, which are kept)."""
    from storesync import der
    from storesync.config import Profile, StoreRef

    monkeypatch.setenv("STORESYNC_STATE_DIR", str(tmp_path / "state"))
    source = tmp_path / "roots.pem"
    source.write_bytes(b"".join(pki.ca(f"Outline Root {n}").pem for n in range(5)))
    parsed = []
    real = der.cert_fields
    monkeypatch.setattr(der, "cert_fields", lambda data: (parsed.append(data), real(data))[1])
    result = engine.run(Profile("cli", "mirror", [StoreRef(f"pem:{source}"), StoreRef(f"{kind}:{tmp_path / 'out'}")]))
    assert result.error is None and result.changed
    assert len(set(parsed)) == 5 and len(parsed) == 2 * 5  # three parses each before


def test_a_read_back_still_reads_the_file_and_checks_its_hash(tmp_path, pki, monkeypatch):
    """A write whose bytes on disk differ from what was rendered (a flipped byte in a
    certificate, the integrity hash made to match) fails the read-back and is rolled back."""
    monkeypatch.setenv("STORESYNC_STATE_DIR", str(tmp_path / "state"))
    source, target = tmp_path / "roots.pem", tmp_path / "out.jks"
    roots = [pki.ca(f"Damaged Write Root {n}") for n in range(3)]
    source.write_bytes(b"".join(r.pem for r in roots))
    from storesync.stores import jks

    real = jks.render_jks

    def damaged(version, records, password, count=None):
        data = bytearray(b"".join(real(version, records, password, count))[:-20])
        where = data.find(roots[1].der[-40:])
        data[where + 5] ^= 0xFF  # inside the signature: still a certificate, another one
        return bytes(data) + integrity_hash(password, bytes(data))

    monkeypatch.setattr(jks, "render_jks", damaged)
    from storesync.config import Profile, StoreRef

    result = engine.run(Profile("cli", "mirror", [StoreRef(f"pem:{source}"), StoreRef(f"jks:{target}")]))
    assert "reading it back does not give the planned set" in (result.error or "")
    assert not target.exists()  # put back as it was: absent


def test_a_lock_says_who_holds_it_without_truncating_its_file(tmp_path, monkeypatch):
    """The holder's note is written over the last one in place (a truncate of a file the disk is
    still writing waits for the disk: milliseconds per lock); a longer old note is covered."""
    from storesync import state

    monkeypatch.setenv("STORESYNC_STATE_DIR", str(tmp_path / "state"))
    truncated = []
    real = os.ftruncate
    monkeypatch.setattr(os, "ftruncate", lambda *a: (truncated.append(a), real(*a))[1])
    with state.lock("profile y"):
        pass
    path = next((tmp_path / "state" / "locks").glob("*.lock"))
    path.write_bytes(b"pid 1 (an older and much longer note " + b"x" * 300 + b")")
    monkeypatch.setattr(sys, "argv", ["storesync", "sync", "pem:a"])
    with state.lock("profile y"):
        note = path.read_bytes()[:200].decode().strip()
    assert truncated == [] and note == f"pid {os.getpid()} (storesync sync pem:a)"


@pytest.mark.parametrize("kind", ["jks", "p12"])
def test_a_one_shot_sync_into_a_java_store_imports_no_datetime(kind, tmp_path, pki):
    """Backups and records are stamped with `time`; datetime (and math) stay unloaded."""
    source, out = tmp_path / "roots.pem", tmp_path / f"out.{kind}"
    source.write_bytes(pki.ca("Stamp Root").pem)
    env = {**os.environ, "STORESYNC_STATE_DIR": str(tmp_path / "state")}
    subprocess.run([sys.executable, "-m", "storesync", "sync", f"pem:{source}", f"jks:{tmp_path / 'warm.jks'}"],
                   env=env, check=True, capture_output=True)  # the root's checks are remembered from here on
    code, imported = cli_modules(["sync", f"pem:{source}", f"{kind}:{out}"], env,
                                 ("datetime", "cryptography", "typing", "dataclasses"))
    assert code in (0, None) and imported == []
    backups = list((tmp_path / "state" / "backups").glob("*/*.json"))
    assert len(backups) == 2 and all(len(b.stem) == len("20261201T142014519302Z") for b in backups)


def test_a_keystore_is_walked_once_its_hash_checked_over_its_bytes_as_they_lie(tmp_path, pki, monkeypatch):
    """The integrity hash is checked over the file's bytes, 64 KiB at a time, before any record
    is read; the records are walked once, for the anchors, and hashed again on the way (the file
    rewritten in between is not believed: test_jks). Walked twice before, the first time only to
    check the hash: the read-back's largest cost."""
    from storesync.stores import jks, open_store

    monkeypatch.setenv("STORESYNC_STATE_DIR", str(tmp_path / "state"))
    source, target = tmp_path / "roots.pem", tmp_path / "out.jks"
    source.write_bytes(b"".join(pki.ca(f"Walked Root {n}").pem for n in range(4)))
    from storesync.config import Profile, StoreRef

    assert engine.run(Profile("cli", "mirror", [StoreRef(f"pem:{source}"), StoreRef(f"jks:{target}")])).changed
    walks = []
    real = jks.iter_jks
    monkeypatch.setattr(jks, "iter_jks", lambda *args: (walks.append(args), real(*args))[1])
    assert len(open_store(f"jks:{target}").read()) == 4
    assert len(walks) == 1


@pytest.mark.parametrize("kind", ["jks", "p12"])
def test_the_read_back_keeps_no_digest_of_the_file_for_a_write(kind, tmp_path, pki, monkeypatch):
    """A read keeps a digest of the bytes it read, for a later write to see whether the file
    changed since: a pass over the whole file. The read-back writes nothing: it takes none."""
    import storesync.stores as stores

    monkeypatch.setenv("STORESYNC_STATE_DIR", str(tmp_path / "state"))
    source = tmp_path / "roots.pem"
    source.write_bytes(b"".join(pki.ca(f"Digest Root {n}").pem for n in range(3)))
    digests, checked = [], []
    real_digest, real_check = stores.file_digest, engine._check_written
    monkeypatch.setattr(stores, "file_digest", lambda file: (digests.append(file), real_digest(file))[1])
    monkeypatch.setattr(engine, "_check_written", lambda outcome: (digests.clear(), real_check(outcome),
                                                                    checked.append(len(digests))))
    from storesync.config import Profile, StoreRef

    result = engine.run(Profile("cli", "mirror", [StoreRef(f"pem:{source}"), StoreRef(f"{kind}:{tmp_path / 'out'}")]))
    assert result.error is None and result.changed
    assert checked == [0]


def test_a_pkcs12_read_decodes_each_anchors_alias_once(tmp_path, pki, monkeypatch):
    """The alias (friendlyName) of an anchor is its label; it was decoded twice more for a name
    that only a warning uses."""
    from storesync.stores import open_store
    from storesync.stores.p12 import Bag

    monkeypatch.setenv("STORESYNC_STATE_DIR", str(tmp_path / "state"))
    source, target = tmp_path / "roots.pem", tmp_path / "out.p12"
    source.write_bytes(b"".join(pki.ca(f"Alias Root {n}").pem for n in range(4)))
    from storesync.config import Profile, StoreRef

    assert engine.run(Profile("cli", "mirror", [StoreRef(f"pem:{source}"), StoreRef(f"p12:{target}")])).changed
    decoded = []
    real = Bag.alias.fget
    monkeypatch.setattr(Bag, "alias", property(lambda bag: (decoded.append(bag), real(bag))[1]))
    read = open_store(f"p12:{target}").read()
    assert sorted(e.label for e in read.values()) == [f"Alias Root {n}" for n in range(4)]
    assert len(decoded) == 4


def test_a_one_shot_sync_into_a_new_jks_imports_no_hmac_nor_warnings(tmp_path, pki):
    """A keystore's integrity hash is compared with hmac's own compare_digest (from _hashlib),
    and warnings is imported where `cryptography` parses: neither module is loaded (2 M)."""
    source, out = tmp_path / "roots.pem", tmp_path / "out.jks"
    source.write_bytes(pki.ca("Hmac Root").pem)
    env = {**os.environ, "STORESYNC_STATE_DIR": str(tmp_path / "state")}
    subprocess.run([sys.executable, "-m", "storesync", "sync", f"pem:{source}", f"jks:{tmp_path / 'warm'}"],
                   env=env, check=True, capture_output=True)  # the root's first judging imports cryptography
    code, imported = cli_modules(["sync", f"pem:{source}", f"jks:{out}"], env, ("hmac", "warnings"), installed=True)
    assert code in (0, None) and imported == []
