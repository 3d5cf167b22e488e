"""A run's backups and ownership records are kept before the first store changes, made durable
together (one flush for the run, not two fsyncs per file), the folders of the files it replaced
are synced together once all are written and read back, and a run that fails leaves no record
or backup of a store it never wrote."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from storesync import fsio, state
from storesync.stores import open_store

from conftest import run, storesync

TARGETS = 12  # 24 records: past fsio.SYNCFS_FROM


def sync_in_process(monkeypatch, *args) -> int:
    from storesync.cli import main

    monkeypatch.setattr(sys, "argv", ["storesync", "sync", *map(str, args)])
    with pytest.raises(SystemExit) as exit:
        main()
    return exit.value.code


def test_the_records_and_renames_of_a_run_cost_a_flush_each_not_fsyncs_per_file(pki, tmp_path, monkeypatch):
    monkeypatch.setenv("STORESYNC_STATE_DIR", str(tmp_path / "state"))
    source = tmp_path / "source.pem"
    source.write_bytes(pki.ca("Records Root").pem)
    targets = [tmp_path / f"app{n}" / "cacert.pem" for n in range(TARGETS)]
    for t in targets:
        t.parent.mkdir()
    fsyncs, flushes = [], []
    real_fsync, real_syncfs = os.fsync, fsio._syncfs
    monkeypatch.setattr(fsio.os, "fsync", lambda fd: (fsyncs.append(fd), real_fsync(fd))[1])
    monkeypatch.setattr(fsio, "_syncfs", lambda d: (flushes.append(d), real_syncfs(d))[1])
    assert sync_in_process(monkeypatch, "--mode", "add", f"pem:{source}", *(f"pem:{t}" for t in targets)) in (0, None)
    assert all(t.read_bytes() == source.read_bytes() for t in targets)
    # each target's temp file before its rename; then one flush for the 2 x TARGETS records
    # (staged, then renamed) and one for the targets' folders after the last rename
    assert len(fsyncs) == TARGETS and len(flushes) == 3
    for t in targets:
        key = open_store(f"pem:{t}").spec.key
        assert len(state.list_backups(key)) == 1 and state.load_owned(key) is not None


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to mount a small tmpfs")
def test_a_failed_run_leaves_no_record_or_backup_of_a_store_it_never_wrote(pki, tmp_path):
    env = {**os.environ, "STORESYNC_STATE_DIR": str(tmp_path / "state")}
    full = tmp_path / "full"
    full.mkdir()
    run("mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", full)
    try:
        second = full / "second.pem"
        second.write_bytes(pki.ca("Full Disk Root 2").pem)
        try:
            (full / "filler").write_bytes(b"\0" * 65536)
        except OSError:
            pass  # full now
        source = tmp_path / "source.pem"
        source.write_bytes(pki.ca("Never Written Root").pem)
        first, third = tmp_path / "first.pem", tmp_path / "third.pem"
        first.write_bytes(pki.ca("First Here").pem)
        third.write_bytes(pki.ca("Third Here").pem)
        before = first.read_bytes(), third.read_bytes()
        result = storesync("sync", "--mode", "add", f"pem:{source}", f"pem:{first}", f"pem:{second}",
                           f"pem:{third}", env=env)
        assert result.returncode == 2 and "put back" in result.stderr
        assert (first.read_bytes(), third.read_bytes()) == before
        assert list((tmp_path / "state").glob("owned/*.json")) == []
        with_env = os.environ.get("STORESYNC_STATE_DIR")
        os.environ["STORESYNC_STATE_DIR"] = env["STORESYNC_STATE_DIR"]
        try:
            assert state.list_backups(open_store(f"pem:{third}").spec.key) == []  # never written
            # written, then put back byte for byte: as before the run, nothing to roll back
            assert state.list_backups(open_store(f"pem:{first}").spec.key) == []
        finally:
            os.environ["STORESYNC_STATE_DIR"] = with_env
    finally:
        run("umount", full)


def test_a_write_that_failed_before_changing_its_store_leaves_no_backup(pki, tmp_path):
    """A full disk refuses a store's temp file: the store is as it was (or still absent), so
    the backup kept for it is dropped and the plan prints none beside "(not written)"."""
    from test_kills import fill, tmpfs

    env = {**os.environ, "STORESYNC_STATE_DIR": str(tmp_path / "state")}
    source = tmp_path / "source.pem"
    source.write_bytes(pki.ca("No Room Root").pem)
    with tmpfs(tmp_path / "full", "16k") as full:
        there, absent = full / "there.pem", full / "absent.pem"
        there.write_bytes(pki.ca("Already There").pem)
        before = there.read_bytes()
        fill(full)
        result = storesync("sync", "--mode", "add", f"pem:{source}", f"pem:{there}", f"pem:{absent}", env=env)
        assert result.returncode == 2 and "No space left" in result.stderr
        assert result.stdout.count("(not written)") == 2 and "backup:" not in result.stdout
        assert there.read_bytes() == before and not absent.exists()
        for target in (there, absent):
            listed = storesync("rollback", "--list", f"pem:{target}", env=env)
            assert listed.returncode == 1 and "no backups" in listed.stdout
        assert list((tmp_path / "state").glob("backups/*/*.json")) == []


def test_identical_bundles_are_parsed_once_per_process_and_a_damaged_copy_still_refused(pki, tmp_path, monkeypatch):
    from storesync.stores import pem, read_store
    from storesync.model import StoreError

    monkeypatch.setattr(pem, "_READ", {}, raising=False)
    data = pki.ca("Copy Root A").pem + pki.ca("Copy Root B").pem
    copies = [tmp_path / f"venv{n}.pem" for n in range(3)]
    for path in copies:
        path.write_bytes(data)
    parsed = []
    real = pem.PemStore.parse
    monkeypatch.setattr(pem.PemStore, "parse", lambda self, d: (parsed.append(self.path), real(self, d))[1])
    sets = [read_store(open_store(f"pem:{path}")) for path in copies]
    assert len(parsed) == 1 and all(s.keys() == sets[0].keys() and len(s) == 2 for s in sets)
    damaged = tmp_path / "damaged.pem"
    damaged.write_bytes(data[:-40])  # another digest: parsed, and refused as before
    with pytest.raises(StoreError, match="no matching END"):
        read_store(open_store(f"pem:{damaged}"))
    key = tmp_path / "key.pem"
    key.write_bytes(data + b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    with pytest.raises(StoreError, match="private key"):
        read_store(open_store(f"pem:{key}"))


def test_an_undone_write_puts_the_ownership_record_back_byte_for_byte(pki, tmp_path, monkeypatch):
    """The record of a store written before is kept for an undo as its bytes (not its parse:
    a dict per certificate through every write of the run), and goes back exactly so."""
    import json

    from storesync.stores.pem import PemStore

    monkeypatch.setenv("STORESYNC_STATE_DIR", str(tmp_path / "state"))
    source, target = tmp_path / "source.pem", tmp_path / "target.pem"
    source.write_bytes(pki.ca("Kept Root One").pem)
    assert sync_in_process(monkeypatch, f"pem:{source}", f"pem:{target}") in (0, None)
    record = Path(state.owned_path(open_store(f"pem:{target}").spec.key))
    record.write_text(json.dumps(json.loads(record.read_text()), indent=2))  # as an earlier version wrote it
    before = record.read_bytes()
    source.write_bytes(source.read_bytes() + pki.ca("Kept Root Two").pem)

    def broken(store, plan):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(PemStore, "write", broken)
    assert sync_in_process(monkeypatch, f"pem:{source}", f"pem:{target}") == 2
    assert record.read_bytes() == before


def test_which_adds_storesync_wrote_before_is_read_from_the_record_text(pki, tmp_path, monkeypatch):
    """`owned_among` finds the certificates of a record's entries in its text, written on one
    line (this version) or indented (earlier ones), never a key-like text inside a label, and
    nothing in a damaged record; it agrees with the parsed record."""
    import json

    from storesync.model import Certificate, Entry, TrustSet

    monkeypatch.setenv("STORESYNC_STATE_DIR", str(tmp_path / "state"))
    entries = TrustSet(Entry(Certificate(pki.ca(f"Record Root {n}").der), label=f"root {n}") for n in range(4))
    shas = list(entries)
    sneaky = Entry(entries[shas[3]].cert, label=f'x", "{shas[2]}": {{"trust": {{}}}}, "y')
    written = {shas[0]: entries[shas[0]], shas[1]: entries[shas[1]], shas[3]: sneaky}
    state.save_records("pem:/x.pem", state.owned_file("pem:/x.pem", written, entries))
    assert state.owned_among("pem:/x.pem", shas) == {shas[0], shas[1], shas[3]}
    assert set(state.load_owned("pem:/x.pem")["entries"]) == {shas[0], shas[1], shas[3]}
    path = Path(state.owned_path("pem:/x.pem"))
    path.write_text(json.dumps(json.loads(path.read_text()), indent=2))  # as an earlier version wrote it
    assert state.owned_among("pem:/x.pem", shas) == {shas[0], shas[1], shas[3]}
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    assert state.owned_among("pem:/x.pem", shas) == set() and state.load_owned("pem:/x.pem") is None
    assert state.owned_among("pem:/nowhere.pem", shas) == set()


def test_a_record_cut_after_an_entry_or_with_keys_outside_its_entries_says_nothing_was_readded(pki, tmp_path, monkeypatch):
    """Review: `owned_among` agrees with `load_owned` on records that end in `}` but are not
    whole (cut just after an entry: load_owned reads nothing), and on certificate-like keys
    outside "entries" (a record of a later or other shape): only the entries are storesync's."""
    import json

    from storesync.model import Certificate, Entry, TrustSet

    monkeypatch.setenv("STORESYNC_STATE_DIR", str(tmp_path / "state"))
    entries = TrustSet(Entry(Certificate(pki.ca(f"Cut Root {n}").der), label=f"root {n}") for n in range(3))
    shas = list(entries)
    state.save_records("pem:/x.pem", state.owned_file("pem:/x.pem", {shas[0]: entries[shas[0]]}, entries))
    path = Path(state.owned_path("pem:/x.pem"))
    whole = path.read_bytes()
    assert state.owned_among("pem:/x.pem", shas) == {shas[0]}
    cut = whole[: whole.index(b'"root 0"}') + len(b'"root 0"}')]  # just after the entry's closing brace
    path.write_bytes(cut)
    assert state.load_owned("pem:/x.pem") is None
    assert state.owned_among("pem:/x.pem", shas) == set()
    record = json.loads(whole)
    record = {"spec": record["spec"], "moved": {shas[1]: {"label": "not written by storesync"}}, **record}
    path.write_text(json.dumps(record))
    assert set(state.load_owned("pem:/x.pem")["entries"]) == {shas[0]}
    assert state.owned_among("pem:/x.pem", shas) == {shas[0]}


def test_a_sync_reads_each_stores_ownership_record_once_to_write_it(pki, tmp_path, monkeypatch):
    """The record of a store written by a run is read once for the write (its new text and the
    bytes an undo puts back come from the same read): the second sync below adds one root to a
    store with a record of 40. `owned_among` (plan) is the one other read."""
    monkeypatch.setenv("STORESYNC_STATE_DIR", str(tmp_path / "state"))
    source, target = tmp_path / "source.pem", tmp_path / "target.pem"
    roots = [pki.ca(f"Read Once Root {n}") for n in range(41)]
    source.write_bytes(b"".join(r.pem for r in roots[:40]))
    assert sync_in_process(monkeypatch, f"pem:{source}", f"pem:{target}") == 0
    source.write_bytes(b"".join(r.pem for r in roots))
    reads = []
    real = state.read_bytes
    monkeypatch.setattr(state, "read_bytes", lambda path: (
        reads.append(path) if os.path.basename(os.path.dirname(path)) == "owned" else None, real(path))[1])
    assert sync_in_process(monkeypatch, f"pem:{source}", f"pem:{target}") == 0
    assert len(reads) == 2, reads  # before: 3 (owned_among, owned_file, then owned_bytes again)
    assert len(open_store(f"pem:{target}").read()) == 41


def test_a_record_rewritten_from_an_odd_old_one_is_still_json(tmp_path, pki):
    """The ownership record is encoded by hand, entry by entry: a key of the old record as it was
    read (here one with a quote and a backslash, as a damaged or hand-edited file may hold) is
    encoded as JSON, never pasted into the text."""
    import json

    from storesync.model import Certificate, Entry, TrustSet

    state.set_state_dir(tmp_path / "state")
    try:
        entry = Entry(Certificate(pki.ca("Odd Record Root").der))
        old = json.dumps({"spec": "pem:/x.pem", "entries": {'a"b\\c': {"trust": {}, "label": "x"}}, "all": ""}).encode()
        (record,) = state.owned_file("pem:/x.pem", {entry.sha256: entry}, TrustSet([entry]), record=old).values()
        assert set(json.loads(record)["entries"]) == {'a"b\\c', entry.sha256}
    finally:
        state.set_state_dir(None)
