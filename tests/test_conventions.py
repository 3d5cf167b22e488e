"""Command-line conventions people expect (issue 15): `--version`, and an error that names what
is missing in the words of the format."""

from __future__ import annotations

import storesync
from conftest import storesync as run


def test_version_prints_the_version():
    result = run("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"storesync {storesync.__version__}"


def test_a_folder_without_cert9_db_is_no_nss_database(tmp_path):
    folder = tmp_path / "profile"
    folder.mkdir()
    for command in (["list", f"nss:{folder}"], ["diff", f"nss:{folder}", f"nss:{folder}"]):
        result = run(*command)
        assert result.returncode == 2
        assert f"no NSS database (cert9.db) in {folder}" in result.stderr, result.stderr
        assert "does not exist" not in result.stderr and "Traceback" not in result.stderr
    assert list(folder.iterdir()) == []  # nothing created


def test_a_sync_from_a_folder_without_cert9_db_says_so(tmp_path):
    folder, target = tmp_path / "profile", tmp_path / "out.pem"
    folder.mkdir()
    result = run("sync", f"nss:{folder}", f"pem:{target}", "--state-dir", tmp_path / "state")
    assert result.returncode == 2
    assert f"no NSS database (cert9.db) in {folder}" in result.stderr, result.stderr
    assert not target.exists()


def test_a_missing_file_still_does_not_exist(tmp_path):
    result = run("list", f"pem:{tmp_path / 'none.pem'}")
    assert result.returncode == 2 and "does not exist" in result.stderr
