"""Atomic writes, one file or a batch: every file old or new, no temp file left, unchanged files untouched."""

from __future__ import annotations

import os

import pytest

from storesync import fsio
from storesync.fsio import atomic_write, atomic_write_many


@pytest.mark.parametrize("count", [3, fsio.SYNCFS_FROM + 5])  # an fsync per file, then one syncfs
def test_a_batch_writes_new_and_changed_files_and_leaves_equal_ones(tmp_path, count):
    (tmp_path / "same.pem").write_bytes(b"same")
    (tmp_path / "old.pem").write_bytes(b"old")
    os.chmod(tmp_path / "old.pem", 0o600)
    before = (tmp_path / "same.pem").stat()
    files = {f"new{n}.pem": b"new %d" % n for n in range(count)} | {"same.pem": b"same", "old.pem": b"changed"}
    written = atomic_write_many(tmp_path, files)
    assert sorted(written) == sorted(set(files) - {"same.pem"})
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == files  # and no temp file
    after = (tmp_path / "same.pem").stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert (tmp_path / "old.pem").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "new0.pem").stat().st_mode & 0o777 == 0o644


def test_without_syncfs_every_file_is_fsynced(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(fsio, "_syncfs", lambda directory: False)
    monkeypatch.setattr(fsio.os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    atomic_write_many(tmp_path, {f"f{n}": b"x" for n in range(fsio.SYNCFS_FROM)}, sync_dir=False)
    assert len(synced) == fsio.SYNCFS_FROM


def test_a_failed_batch_leaves_no_temp_files_and_no_half_written_file(tmp_path):
    (tmp_path / "b.pem").mkdir()  # a file cannot replace a directory: the batch fails there
    (tmp_path / "c.pem").write_bytes(b"old c")
    with pytest.raises(OSError):
        atomic_write_many(tmp_path, {"a.pem": b"new a", "b.pem": b"new b", "c.pem": b"new c"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pem", "b.pem", "c.pem"]
    assert (tmp_path / "c.pem").read_bytes() == b"old c"


def test_a_symlink_is_replaced_not_followed(tmp_path):
    (tmp_path / "target").write_bytes(b"target")
    (tmp_path / "link").symlink_to("target")
    assert atomic_write(tmp_path / "link", b"new")
    assert not (tmp_path / "link").is_symlink()
    assert (tmp_path / "target").read_bytes() == b"target"


def test_a_small_batch_fsyncs_each_file_once_as_it_writes_it(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(fsio, "_syncfs", lambda directory: pytest.fail("a small batch must not flush the filesystem"))
    monkeypatch.setattr(fsio.os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    atomic_write_many(tmp_path, {"a": b"1", "b": b"2", "c": b"3"}, sync_dir=False)
    assert len(synced) == 3


@pytest.mark.parametrize("name", ["y" * 250 + ".pem", "é" * 125 + ".pem"])  # 254 bytes: a legal name
def test_a_file_named_up_to_the_longest_legal_name_is_written(tmp_path, pki, name):
    """`.NAME.PID-N.tmp` of a 250-character name passes NAME_MAX ("File name too long"): the temp
    name holds a shortened NAME instead, which the cleanup of dead runs' temp files still knows."""
    from conftest import storesync

    source = tmp_path / "src.pem"
    source.write_bytes(pki.ca("Long Name Root").pem)
    for kind in ("pem", "jks", "reg"):
        (tmp_path / kind).mkdir()
        result = storesync("sync", f"pem:{source}", f"{kind}:{tmp_path / kind / name}")
        assert result.returncode == 0, result.stderr
        assert os.listdir(tmp_path / kind) == [name]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(fsio.os, "getpid", lambda: 2 ** 22 - 1)  # a writer that is gone (Linux's highest pid)
        fd, tmp = fsio._create_temp(str(tmp_path / "pem" / name))
        os.close(fd)
    assert len(os.fsencode(os.path.basename(tmp))) <= 255
    fsio.remove_dead_temps(tmp_path / "pem")
    assert os.listdir(tmp_path / "pem") == [name]
