"""Discovery of NSS databases in fake home directories built with certutil."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

from storesync.discover import discover_nss
from test_nss import certutil_add, new_db


def _ini(root: Path, text: str) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "profiles.ini").write_text(text)


def test_finds_every_kind_of_profile(tmp_path, pki):
    home = tmp_path / "home"
    ff = home / ".mozilla/firefox"
    _ini(ff, "[General]\nStartWithLastProfile=1\n\n[Profile0]\nName=default-release\nIsRelative=1\n"
             f"Path=abcd.default-release\n\n[Profile1]\nName=elsewhere\nIsRelative=0\nPath={tmp_path / 'away'}\n\n"
             "[Install4F96D1932A9F858E]\nDefault=abcd.default-release\n")
    main = new_db(ff / "abcd.default-release")
    away = new_db(tmp_path / "away")
    unlisted = new_db(ff / "zzzz.unlisted")  # not in profiles.ini, still a database
    xdg = new_db(home / ".config/mozilla/firefox/xdg.default")
    snap = new_db(home / "snap/firefox/common/.mozilla/firefox/s.default")
    flatpak = new_db(home / ".var/app/org.mozilla.firefox/.mozilla/firefox/f.default")
    tb = new_db(home / ".thunderbird/t.default")
    chrome_old = new_db(home / ".pki/nssdb")
    chrome_new = new_db(home / ".local/share/pki/nssdb")
    chrome_snap = new_db(home / "snap/chromium/current/.pki/nssdb")
    legacy = home / ".mozilla/firefox/old.default"
    legacy.mkdir()
    (legacy / "cert8.db").write_bytes(b"\x00" * 64)
    (ff / "not-a-profile").mkdir()

    a, b, c = pki.ca("Disc A"), pki.ca("Disc B"), pki.ca("Disc C")
    certutil_add(main, "a", "C,,", a.write(tmp_path / "a.pem"))
    certutil_add(main, "b", "CT,C,C", b.write(tmp_path / "b.pem"))
    certutil_add(main, "c", "p,p,p", c.write(tmp_path / "c.pem"))
    certutil_add(chrome_old, "a", "c,c,c", a.write(tmp_path / "a.pem"))  # no trust opinion: no anchor

    found = discover_nss([(home, False)], system=False)
    by_path = {d.path.resolve(): d for d in found}
    expected = {
        main: "firefox", away: "firefox", unlisted: "firefox", xdg: "firefox", snap: "firefox-snap",
        flatpak: "firefox-flatpak", tb: "thunderbird", chrome_old: "chromium", chrome_new: "chromium",
        chrome_snap: "chromium-snap", legacy: "firefox",
    }
    assert set(by_path) == {p.resolve() for p in expected}
    for path, app in expected.items():
        assert by_path[path.resolve()].app == app
    m = by_path[main.resolve()]
    assert (m.anchors, m.distrusted, m.profile) == (2, 1, "default-release")
    assert by_path[away.resolve()].profile == "elsewhere"
    assert by_path[chrome_old.resolve()].anchors == 0
    assert by_path[legacy.resolve()].legacy and "legacy" in by_path[legacy.resolve()].error
    me = pwd.getpwuid(os.getuid()).pw_name
    assert all(d.owner == me and d.uid == os.getuid() for d in found)
    assert m.spec == f"nss:{main}"


def test_broken_database_reported_not_fatal(tmp_path):
    home = tmp_path / "home"
    db = new_db(home / ".pki/nssdb")
    (db / "cert9.db").write_bytes(b"garbage" * 50)
    [found] = discover_nss([(home, False)], system=False)
    assert found.anchors is None and "cert9.db" in found.error


def test_discovery_writes_nothing(tmp_path, pki):
    home = tmp_path / "home"
    db = new_db(home / ".pki/nssdb")
    certutil_add(db, "a", "C,,", pki.ca("Disc W").write(tmp_path / "a.pem"))
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in db.iterdir()}
    discover_nss([(home, False)], system=False)
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in db.iterdir()} == before


def test_system_database(tmp_path, monkeypatch):
    from storesync import discover

    system = new_db(tmp_path / "etc/pki/nssdb")
    monkeypatch.setattr(discover, "SYSTEM_DATABASES", [("system", str(system))])
    found = discover_nss([], system=True)
    assert [(d.app, d.path) for d in found] == [("system", system)]
    assert found[0].anchors == 0


def test_default_homes_run(tmp_path):
    # on the real machine: must not raise, whatever is there
    for db in discover_nss(count=False):
        assert db.path.is_dir()
