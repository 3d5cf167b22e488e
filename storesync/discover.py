"""Find the trust stores of this machine. For now: NSS databases (docs/formats.md §3).

`discover_nss()` returns every NSS database it finds in the usual places of every user's home
(when run as root; else the caller's own), with its owner and trust-anchor count:
Firefox and Thunderbird profiles listed in `profiles.ini` (classic, XDG, snap, flatpak), Chrome /
Chromium's `~/.pki/nssdb` and `~/.local/share/pki/nssdb`, snap Chromium, and `/etc/pki/nssdb`.
Reading never writes: databases are opened read-only, so no root-owned file is ever left behind.
"""

from __future__ import annotations

import configparser
import os
from dataclasses import dataclass, field
from pathlib import Path

# (application, directory relative to a home that holds profiles.ini)
PROFILE_ROOTS = [
    ("firefox", ".mozilla/firefox"),
    ("firefox", "{xdg_config}/mozilla/firefox"),
    ("firefox-snap", "snap/firefox/common/.mozilla/firefox"),
    ("firefox-flatpak", ".var/app/org.mozilla.firefox/.mozilla/firefox"),
    ("thunderbird", ".thunderbird"),
    ("thunderbird", "{xdg_config}/thunderbird"),
    ("thunderbird-snap", "snap/thunderbird/common/.thunderbird"),
    ("thunderbird-flatpak", ".var/app/org.mozilla.Thunderbird/.thunderbird"),
]
# (application, a database directory relative to a home)
FIXED_DATABASES = [
    ("chromium", ".pki/nssdb"),
    ("chromium", "{xdg_data}/pki/nssdb"),  # Chromium >= M146
    ("chromium-snap", "snap/chromium/current/.pki/nssdb"),
]
SYSTEM_DATABASES = [("system", "/etc/pki/nssdb")]


@dataclass
class NssDatabase:
    path: Path
    app: str
    owner: str  # user name (or uid when it has no name)
    uid: int
    profile: str | None = None  # the profile name from profiles.ini
    anchors: int | None = None  # certificates trusted for some purpose (None: not read)
    distrusted: int | None = None
    legacy: bool = False  # cert8.db only: a dbm database storesync does not handle
    error: str | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def spec(self) -> str:
        return f"nss:{self.path}"


def homes() -> list[tuple[Path, bool]]:
    """(home directory, is it the caller's own) for the users this process may look at."""
    own = Path(os.path.expanduser("~"))
    found = [(own, True)]
    if os.geteuid() == 0:
        import pwd

        seen = {own.resolve()}
        for user in pwd.getpwall():
            home = Path(user.pw_dir)
            if user.pw_dir in ("", "/") or not home.is_dir():
                continue
            if home.resolve() not in seen:
                seen.add(home.resolve())
                found.append((home, False))
    return found


def _expand(template: str, home: Path, own: bool) -> Path:
    xdg_config = os.environ.get("XDG_CONFIG_HOME") if own else None
    xdg_data = os.environ.get("XDG_DATA_HOME") if own else None
    text = template.format(
        xdg_config=xdg_config or str(home / ".config"), xdg_data=xdg_data or str(home / ".local/share")
    )
    return home / text  # an absolute XDG path wins over `home /`


def _profiles(root: Path) -> list[tuple[str | None, Path]]:
    """Profiles listed in root/profiles.ini, plus any directory under root holding a database."""
    result: list[tuple[str | None, Path]] = []
    ini = root / "profiles.ini"
    if ini.is_file():
        parser = configparser.RawConfigParser(strict=False)
        try:
            parser.read(ini, encoding="utf-8")
        except (configparser.Error, UnicodeDecodeError, OSError):
            parser = None
        if parser is not None:
            for section in parser.sections():
                if not section.lower().startswith("profile") or not parser.has_option(section, "Path"):
                    continue
                raw = parser.get(section, "Path")
                if "\0" in raw:
                    continue  # a hostile profiles.ini must not hide the other databases
                relative = parser.get(section, "IsRelative", fallback="1").strip() != "0"
                path = root / raw if relative else Path(raw)
                result.append((parser.get(section, "Name", fallback=None), path))
    try:
        children = sorted(p for p in root.iterdir() if p.is_dir())
    except OSError:
        children = []
    listed = set()
    for _, p in result:
        try:
            listed.add(p.resolve())
        except (OSError, RuntimeError):  # a symlink loop
            pass
    for child in children:  # profiles.ini can be stale or missing; profiles are still databases
        if child.resolve() not in listed and _is_database(child):
            result.append((None, child))
    return result


def _is_database(path: Path) -> bool:
    try:
        return (path / "cert9.db").is_file() or (path / "cert8.db").is_file()
    except (OSError, ValueError):  # an unreadable home, a NUL in a path
        return False


def owner(path: Path) -> tuple[str, int]:
    """(user name, uid) owning `path`; ("?", -1) when it cannot be read."""
    try:
        uid = path.stat().st_uid
    except OSError:
        return "?", -1
    try:
        import pwd

        return pwd.getpwuid(uid).pw_name, uid
    except KeyError:
        return str(uid), uid


def candidates(home_list: list[tuple[Path, bool]] | None = None, system: bool = True) -> list[tuple[str, str | None, Path]]:
    """(app, profile name, directory) of every place that holds an NSS database."""
    found: list[tuple[str, str | None, Path]] = []
    for home, own in home_list if home_list is not None else homes():
        for app, template in PROFILE_ROOTS:
            root = _expand(template, home, own)
            if root.is_dir():
                found.extend((app, name, path) for name, path in _profiles(root))
        for app, template in FIXED_DATABASES:
            found.append((app, None, _expand(template, home, own)))
    if system:
        found.extend((app, None, Path(path)) for app, path in SYSTEM_DATABASES)
    unique, seen = [], set()
    for app, name, path in found:
        if not _is_database(path):
            continue
        try:
            key = path.resolve()
        except (OSError, RuntimeError):
            continue
        if key not in seen:
            seen.add(key)
            unique.append((app, name, path))
    return unique


def discover_nss(home_list: list[tuple[Path, bool]] | None = None, *, system: bool = True,
                 count: bool = True) -> list[NssDatabase]:
    """The NSS databases of this machine, each with owner and (when `count`) its anchor count."""
    from storesync.model import DISTRUSTED, TRUSTED, StoreError
    from storesync.stores import StoreSpec, read_store
    from storesync.stores.nss import NssStore

    result = []
    for app, name, path in candidates(home_list, system):
        owner_name, uid = owner(path / "cert9.db" if (path / "cert9.db").exists() else path)
        db = NssDatabase(path=path, app=app, owner=owner_name, uid=uid, profile=name)
        if not (path / "cert9.db").exists():
            db.legacy = True
            db.error = "legacy dbm database (cert8.db): not supported"
        elif count:
            store = NssStore(StoreSpec("nss", path))  # not re-parsed: a "?" in a path is a path
            try:
                trust_set = read_store(store)
            except StoreError as exc:
                db.error = str(exc)
            else:
                db.anchors = sum(1 for e in trust_set.values() if TRUSTED in e.trust.values())
                db.distrusted = sum(1 for e in trust_set.values() if DISTRUSTED in e.trust.values())
                db.warnings = list(store.warnings)
        result.append(db)
    return result
