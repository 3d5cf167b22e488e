"""Interrupted and starved runs: rollback of a relatively named store, a full disk, temp files
left by killed runs, concurrent hash-link writers, and the SIGKILL campaign."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import run
from storesync.stores import open_store


@pytest.fixture(autouse=True)
def state_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("STORESYNC_STATE_DIR", str(tmp_path / "state"))
    return tmp_path / "state"


def cli(*args, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """The real CLI, in `cwd` (the `storesync` helper of conftest runs in the test's own cwd)."""
    return subprocess.run([sys.executable, "-m", "storesync", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env)


def keys(spec: str) -> set[str]:
    return set(open_store(spec).read())


def tree(directory: Path) -> dict[str, bytes | str]:
    """Every entry of a directory: bytes for files, 'link:target' for symlinks."""
    return {p.name: f"link:{os.readlink(p)}" if p.is_symlink() else p.read_bytes()
            for p in sorted(directory.iterdir())}


# --- defect 5: rollback of a directory the sync named by a relative path -----------------------


def test_rollback_of_a_directory_synced_by_a_relative_path(pki, root, tmp_path):
    capath = tmp_path / "ca"
    source = tmp_path / "s.pem"
    source.write_bytes(root.pem)
    assert cli("sync", "pem:s.pem", "dir:ca", cwd=tmp_path).returncode == 0
    before = tree(capath)
    source.write_bytes(root.pem + pki.ca("Relative Root").pem)
    assert cli("sync", "pem:s.pem", "dir:ca", cwd=tmp_path).returncode == 0
    assert tree(capath) != before
    undone = cli("rollback", "dir:ca", cwd=tmp_path)
    assert undone.returncode == 0, undone.stderr
    assert tree(capath) == before
    # ... and the same store named absolutely, from elsewhere: the rollback of the rollback
    again = cli("rollback", f"dir:{capath}", cwd="/")
    assert again.returncode == 0, again.stderr
    assert len(keys(f"dir:{capath}")) == 2
    assert run("openssl", "verify", "-CApath", capath, "-partial_chain", source).returncode == 0


def test_rollback_takes_backups_written_with_relative_names(pki, root, tmp_path, state_dir):
    """Backups made before the fix name the files `ca/NAME`, relative to where the sync ran."""
    capath = tmp_path / "ca"
    source = tmp_path / "s.pem"
    source.write_bytes(root.pem)
    assert cli("sync", "pem:s.pem", "dir:ca", cwd=tmp_path).returncode == 0
    before = tree(capath)
    source.write_bytes(root.pem + pki.ca("Old Backup Root").pem)
    assert cli("sync", "pem:s.pem", "dir:ca", cwd=tmp_path).returncode == 0
    backup = sorted((state_dir / "backups").glob("*/*.json"))[-1]  # the newest
    meta = json.loads(backup.read_text())
    meta["files"] = {os.path.relpath(name, tmp_path): item for name, item in meta["files"].items()}
    assert all(name.startswith("ca/") for name in meta["files"])
    backup.write_text(json.dumps(meta))
    undone = cli("rollback", f"dir:{capath}", cwd="/")
    assert undone.returncode == 0, undone.stderr
    assert tree(capath) == before


def test_a_backup_naming_a_file_elsewhere_is_still_refused(root, tmp_path, state_dir):
    capath = tmp_path / "ca"
    source = tmp_path / "s.pem"
    source.write_bytes(root.pem)
    assert cli("sync", "pem:s.pem", "dir:ca", cwd=tmp_path).returncode == 0
    source.write_bytes(b"")
    assert cli("sync", "--force", "pem:s.pem", "dir:ca", cwd=tmp_path).returncode == 0
    backup = sorted((state_dir / "backups").glob("*/*.json"))[-1]  # the newest
    meta = json.loads(backup.read_text())
    meta["files"]["elsewhere/victim.pem"] = {"data": ""}
    meta["files"]["../victim.pem"] = {"data": ""}
    backup.write_text(json.dumps(meta))
    result = cli("rollback", "dir:ca", cwd=tmp_path)
    assert result.returncode == 2 and "outside the store" in result.stderr
    assert not (tmp_path / "elsewhere").exists() and not (tmp_path / "victim.pem").exists()
