"""Where the config file is found without --config: the user's own, then the file the shipped
systemd unit reads, then the XDG site dir. The machine's /etc is never written: the unit's file
is made to "exist" by patching Path.exists for that one path."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from storesync import config

UNIT = Path(__file__).resolve().parents[1] / "packaging" / "storesync.service"


def unit_config() -> Path:
    """The --config the shipped unit gives the daemon."""
    match = re.search(r"^ExecStart=\S+ daemon .*--config (\S+)", UNIT.read_text(), re.M)
    assert match, f"{UNIT}: no ExecStart= with --config"
    return Path(match.group(1))


@pytest.fixture
def dirs(monkeypatch, tmp_path):
    """Scratch user and site config dirs (platformdirs reads the XDG variables), and the
    unit's config file present or not."""
    monkeypatch.delenv("STORESYNC_CONFIG", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_DIRS", str(tmp_path / "site"))
    exists = os.path.exists
    present = set()
    monkeypatch.setattr(os.path, "exists", lambda p: os.fspath(p) in present or (os.fspath(p) != str(unit_config()) and exists(p)))

    def make(where: str) -> Path:
        if where == "unit":
            present.add(str(unit_config()))
            return unit_config()
        path = tmp_path / where / "storesync" / "storesync.toml"
        path.parent.mkdir(parents=True)
        path.write_text("")
        return path

    return make


def test_the_unit_reads_etc_storesync():
    assert unit_config() == Path("/etc/storesync/storesync.toml")


def test_the_units_config_is_found_without_config(dirs):
    assert config.config_path() is None
    unit = dirs("unit")
    assert config.config_path() == str(unit)


def test_the_unit_config_comes_before_the_xdg_site_dir(dirs):
    site = dirs("site")
    assert config.config_path() == str(site)
    unit = dirs("unit")
    assert config.config_path() == str(unit)


def test_the_users_own_config_comes_first(dirs):
    dirs("unit")
    dirs("site")
    user = dirs("home")
    assert config.config_path() == str(user)


def test_explicit_and_environment_still_win(dirs, monkeypatch, tmp_path):
    dirs("home")
    dirs("unit")
    assert config.config_path(tmp_path / "x.toml") == str(tmp_path / "x.toml")
    monkeypatch.setenv("STORESYNC_CONFIG", str(tmp_path / "y.toml"))
    assert config.config_path() == str(tmp_path / "y.toml")
