"""Where the trust stores of this machine are: every "where are the stores" rule is here.

`discover()` finds the system bundle and hashed directory, local additions
(/usr/local/share/ca-certificates), Java keystores (Debian's and every JDK's
`lib/security/cacerts`), certifi bundles in the Python environments it is pointed at, NSS
databases and the stores of configured profiles. Paths are deduplicated by their real path:
JDK cacerts are often links to one file.

NSS databases (docs/formats.md §3):
`discover_nss()` returns every NSS database it finds in the usual places of every user's home
(when run as root; else the caller's own), with its owner and trust-anchor count:
Firefox and Thunderbird profiles listed in `profiles.ini` (classic, XDG, snap, flatpak), Chrome /
Chromium's `~/.pki/nssdb` and `~/.local/share/pki/nssdb`, snap Chromium, and `/etc/pki/nssdb`.
Reading never writes: databases are opened read-only, so no root-owned file is ever left behind.

The machine root (`--root DIR`, `STORESYNC_ROOT`; `machine_root()`) re-bases every path here: a
scratch machine in tests, a host mounted at /host in a container. Under a root, the homes are
ROOT/home/* and ROOT/root.

Selectors (`SELECTORS`, `resolve()`) name families of the stores found: `@system` (the
distribution's anchor folder, carrying its rebuild command), `@nss`, `@java`, `@certifi` (the
given Python environments) and `@all` (every writable store of those families).
"""

from __future__ import annotations

import configparser
import glob
import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from storesync.config import SELECTORS
from storesync.fsio import at_root, in_root, machine_root, set_root  # noqa: F401 - the machine root lives low: stores follow links under it
from storesync.model import DISTRUSTED, TRUSTED, StoreError
from storesync.stores import StoreSpec, read_store
from storesync.stores.nss import NssStore

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
    """(home directory, is it the caller's own) for the users this process may look at.
    Under a machine root: ROOT/home/* and ROOT/root, none of them the caller's own."""
    root = machine_root()
    if root is not None:
        found = [p for p in sorted((root / "home").glob("*")) if p.is_dir()]
        return [(home, False) for home in [*found, root / "root"] if home.is_dir()]
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
                path = root / raw if relative else at_root(raw)
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


def owner(path: str | os.PathLike) -> tuple[str, int]:
    """(user name, uid) owning `path`; ("?", -1) when it cannot be read."""
    try:
        uid = os.stat(path).st_uid
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
        found.extend((app, None, at_root(path)) for app, path in SYSTEM_DATABASES)
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


# --- every store of the machine -----------------------------------------------------------

SYSTEM_BUNDLES = ["/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt", "/etc/ssl/cert.pem"]
SYSTEM_DIRS = ["/etc/ssl/certs"]
LOCAL_DIRS = ["/usr/local/share/ca-certificates"]
JAVA_STORES = ["/etc/ssl/certs/java/cacerts", "/etc/pki/java/cacerts"]
JDK_GLOBS = ["/usr/lib/jvm/*/lib/security/cacerts", "/usr/lib/jvm/*/jre/lib/security/cacerts", "/opt/*/lib/security/cacerts"]
CERTIFI_GLOBS = ["lib/python*/site-packages/certifi/cacert.pem", "lib/python*/site-packages/pip/_vendor/certifi/cacert.pem",
                 "Lib/site-packages/certifi/cacert.pem"]


@dataclass
class Found:
    store: StoreSpec  # what to open: the path found, never parsed as text (a "?" in a path is a path)
    what: str  # why it is here: "system bundle", "java", "profile NAME", ...
    partial: bool = False  # holds additions only (a local CA directory): not expected to hold every root
    owner: str | None = None  # who owns it, as status shows (filled by resolve)
    on_change: list[str] | None = None  # the command to run after a write (@system: the rebuild)

    @property
    def spec(self) -> str:
        """The store as printed."""
        return str(self.store)


def discover(pythons: list[str] = (), config: str | None = None, warnings: list[str] | None = None,
             roots: dict[str, list[str]] | None = None) -> list[Found]:
    """Every store found. `roots` overrides the well-known path lists (tests use it)."""
    warnings = warnings if warnings is not None else []
    paths = {"bundles": [at_root(p) for p in SYSTEM_BUNDLES], "dirs": [at_root(p) for p in SYSTEM_DIRS],
             "local": [at_root(p) for p in LOCAL_DIRS], **_java_paths(), **(roots or {})}
    found: list[Found] = []
    seen: set[str] = set()

    def add(kind: str, path: str | Path, what: str, partial: bool = False) -> None:
        path = Path(path)
        key = f"{kind}:{os.path.realpath(path)}"
        if key not in seen and path.exists():
            seen.add(key)
            found.append(Found(StoreSpec(kind, path), what, partial))

    for path in paths["bundles"]:
        add("pem", path, "system bundle")
    for path in paths["dirs"]:
        add("dir", path, "hashed directory")
    for path in paths["local"]:
        add("anchors", path, "local additions", partial=True)  # not dir: a rebuild reads it, no hash links
    found += [f for f in java_stores(paths) if _new(f, seen)]
    for python in pythons or ():
        bundles = certifi_bundles(python, warnings)
        for path in bundles:
            add("pem", path, f"certifi ({python})")
    found += [f for f in nss_stores(warnings) if _new(f, seen)]
    found += [f for f in profile_stores(config, warnings) if _new(f, seen)]
    return found


def java_stores(paths: dict[str, list] | None = None) -> list[Found]:
    """Debian's and RHEL's Java keystores, and every JDK's `lib/security/cacerts`."""
    paths = paths or _java_paths()
    found: list[Found] = []
    places = [(Path(p), "java") for p in paths["java"]]
    places += [(Path(p), "java (" + Path(p).parents[2].name + ")") for pattern in paths["jdk"]
               for p in sorted(glob.glob(str(pattern)))]
    for path, what in places:
        path = in_root(path)
        if path is not None and path.exists():
            found.append(Found(StoreSpec(_java_kind(path), path), what))
    return found


def _new(found: Found, seen: set[str]) -> bool:
    key = f"{found.store.kind}:{os.path.realpath(found.store.path)}"
    if key in seen:
        return False
    seen.add(key)
    return True


def _java_kind(path: Path) -> str:
    """JKS by its magic; otherwise PKCS#12 (JDK >= 18 ships password-less PKCS#12)."""
    try:
        with path.open("rb") as f:
            return "jks" if f.read(4) == b"\xfe\xed\xfe\xed" else "p12"
    except OSError:
        return "jks"


def certifi_bundles(python: str, warnings: list[str]) -> list[Path]:
    """certifi's cacert.pem in a Python environment: a directory (venv, prefix) is searched,
    an interpreter is asked where its site-packages are."""
    target = Path(os.path.expanduser(python))
    if target.is_dir():
        return sorted(Path(p) for pattern in CERTIFI_GLOBS for p in glob.glob(str(target / pattern)))
    try:
        out = subprocess.run([str(target), "-c", "import sys, json; print(json.dumps(sys.path))"],
                             capture_output=True, text=True, timeout=20, check=True).stdout
        places = [Path(p) for p in json.loads(out) if p]
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        warnings.append(f"--python {python}: cannot ask it for its site-packages ({exc})")
        return []
    bundles = []
    for place in places:
        for sub in ("certifi/cacert.pem", "pip/_vendor/certifi/cacert.pem"):
            if (place / sub).is_file():
                bundles.append(place / sub)
    if not bundles:
        warnings.append(f"--python {python}: no certifi bundle in its environment")
    return bundles


def nss_stores(warnings: list[str]) -> list[Found]:
    try:
        results = list(discover_nss(count=False))  # status reads and counts each store itself
    except Exception as exc:  # noqa: BLE001 - discovery of one kind must not stop status
        warnings.append(f"NSS discovery failed: {exc}")
        return []
    return [Found(StoreSpec("nss", item.path), f"nss ({item.app})") for item in results]


def profile_stores(config: str | None, warnings: list[str]) -> list[Found]:
    """The stores the config's profiles name, each with its table's options (as `sync` opens
    it: those of its text win), printed in its spec: what a fix naming it needs."""
    from storesync.config import load_config
    from storesync.stores import parse_spec

    try:
        loaded = load_config(config) if config else load_config()
    except Exception as exc:  # noqa: BLE001 - a broken config is reported, status goes on
        warnings.append(f"config: {exc}")
        return []
    found = []
    for name, profile in sorted(loaded.profiles.items()):
        for ref in profile.stores:
            if ref.selector:
                continue  # "@nss", "@all": the stores it names are those found here already
            try:
                spec = parse_spec(ref.spec)
            except StoreError as exc:  # a bare path whose kind cannot be told: status goes on
                warnings.append(f"profile {name}: {exc}")
                continue
            store = StoreSpec(spec.kind, spec.path, {**ref.options, **spec.options})
            if spec.kind == "tuf":  # its "path" is a URL, printed as typed (a Path folds `http://`)
                from storesync.stores.tuf import _as_tuf_spec

                store = _as_tuf_spec(store)
            found.append(Found(store, f"profile {name}"))
    return found


def _java_paths() -> dict[str, list]:
    root = machine_root()
    return {"java": [at_root(p) for p in JAVA_STORES],
            "jdk": [p if root is None else glob.escape(str(root)) + p for p in JDK_GLOBS]}


# --- selectors: families of the stores found ---------------------------------------------------

# (os-release IDs, the anchor folder, its rebuild command): the system store, the distribution's way
SYSTEM_ANCHORS = [
    (("debian", "ubuntu"), "/usr/local/share/ca-certificates", ["update-ca-certificates"]),
    (("fedora", "rhel", "centos"), "/etc/pki/ca-trust/source/anchors", ["update-ca-trust", "extract"]),
]
PROGRAM_DIRS = ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]


def os_ids() -> set[str]:
    """ID and ID_LIKE of the machine's os-release."""
    for name in ("/etc/os-release", "/usr/lib/os-release"):
        try:
            text = at_root(name).read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        ids: set[str] = set()
        for line in text.splitlines():
            key, _, value = line.partition("=")
            if key.strip() in ("ID", "ID_LIKE"):
                ids.update(value.strip().strip("\"'").lower().split())
        return ids
    return set()


def _program(name: str) -> str | None:
    """The rebuild command as a hook runs it: its name on this machine, its path under a root
    (the root's own program, not this machine's)."""
    import shutil

    if machine_root() is None:
        return name if shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), *PROGRAM_DIRS])) else None
    for folder in PROGRAM_DIRS:
        candidate = at_root(folder) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def system_anchors() -> Found | None:
    """The distribution's anchor folder (with its rebuild command as the hook), by os-release
    and the presence of the folder or the command."""
    ids = os_ids()
    for family, folder, command in SYSTEM_ANCHORS:
        if not ids & set(family):
            continue
        where, program = at_root(folder), _program(command[0])
        if where.is_dir() or program:
            # No rebuild program, no hook: under a root, never this machine's own program
            return Found(StoreSpec("anchors", where), "system anchors", partial=True,
                         on_change=[program, *command[1:]] if program else None)
    return None


def writable(store: StoreSpec) -> bool:
    """May this process write the store: the file and the folder its replacement goes into
    (a folder store: the folder, and an NSS database's files)."""
    path = Path(os.path.realpath(store.path))
    if path.is_dir():
        files = [path / n for n in ("cert9.db", "key4.db") if (path / n).exists()]
        return os.access(path, os.W_OK | os.X_OK) and all(os.access(f, os.W_OK) for f in files)
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return os.access(folder, os.W_OK | os.X_OK) and (not path.exists() or os.access(path, os.W_OK))


def _family(name: str, pythons, warnings: list[str]) -> list[Found]:
    if name == "@system":
        found = system_anchors()
        return [found] if found else []
    if name == "@nss":
        return nss_stores(warnings)
    if name == "@java":
        return java_stores()
    if name == "@certifi":
        return [Found(StoreSpec("pem", path), f"certifi ({python})") for python in pythons
                for path in certifi_bundles(python, warnings)]
    raise StoreError(f"unknown selector {name!r} (selectors: {', '.join(SELECTORS)})")


def resolve(selector: str, pythons=(), warnings: list[str] | None = None) -> list[Found]:
    """The stores `selector` names on this machine now, each with its owner (as status shows
    it), once each (by real path). `@all`: every writable store of the other families; those
    this process may not write are left out with a note in `warnings`."""
    warnings = warnings if warnings is not None else []
    names = [s for s in SELECTORS if s != "@all"] if selector == "@all" else [selector]
    found, seen = [], set()
    for name in names:
        for item in _family(name, pythons, warnings):
            if not _new(item, seen):
                continue
            if selector == "@all" and not writable(item.store):
                warnings.append(f"@all: {item.spec} is not writable by this user; left out")
                continue
            item.owner = _owner_name(item.store.path)
            found.append(item)
    return found


def _owner_name(path: str | os.PathLike) -> str | None:
    name, uid = owner(path)
    return None if uid < 0 else name


def nothing_found(selector: str) -> str:
    """The sentence for a selector that names no store."""
    where = f" under {machine_root()}" if machine_root() else ""
    hints = {
        "@system": "no distribution anchor folder (Debian's /usr/local/share/ca-certificates, Fedora's "
                   f"/etc/pki/ca-trust/source/anchors) nor its rebuild command found{where}",
        "@nss": f"no NSS database (Firefox or Thunderbird profile, ~/.pki/nssdb, /etc/pki/nssdb) found{where}",
        "@java": f"no Java keystore (/etc/ssl/certs/java/cacerts, a JDK's lib/security/cacerts) found{where}",
        "@certifi": "no certifi bundle in the Python environments given (name them with --python, or "
                    "`python = [...]` in the profile)",
        "@all": f"no writable store found{where}",
    }
    return f"{selector}: {hints.get(selector, 'matches no store')}; name the stores instead, or leave the selector out"


def resolver(pythons=(), strict: bool = True):
    """What the engine resolves a profile's selectors with, at every run: `strict` (one-shot
    runs) makes a selector that names nothing an error; else (the daemon) it is a warning."""
    def resolve_now(selector: str, more_pythons=(), warnings: list[str] | None = None) -> list[Found]:
        warnings = warnings if warnings is not None else []
        found = resolve(selector, (*pythons, *more_pythons), warnings)
        if not found:
            if strict:
                raise StoreError(nothing_found(selector))
            warnings.append(nothing_found(selector))
        return found
    return resolve_now


# --- where stores may appear (the daemon's watches) -------------------------------------------

JVM_FOLDERS = sorted({pattern.split("/*/")[0] for pattern in JDK_GLOBS})  # /usr/lib/jvm, /opt


def watch_roots(pythons=(), java_homes=()) -> list[Path]:
    """Paths whose appearance may bring a new store to a selector (`storesync daemon` watches
    them): the homes' folder, every profiles.ini folder of every home, its profiles.ini and each profile's
    cert9.db; the Chromium databases; every JVM folder (/usr/lib/jvm, each --java-home) and
    where each JDK in it keeps its cacerts; each Python environment's certifi bundle. Most do not
    exist yet: the daemon watches their nearest existing directory, never a certificate file."""
    paths: list[Path] = [at_root("/home")]  # a user added later: their home appears here
    for home, own in homes():
        if not own and home in _service_homes():
            continue  # /bin, /var/www...: no browser profile appears there; the rescan still looks
        for _, template in PROFILE_ROOTS:
            root = _expand(template, home, own)
            paths += [root, root / "profiles.ini"]
            if root.is_dir():
                paths += [path / "cert9.db" for _, path in _profiles(root)]
        paths += [_expand(template, home, own) / "cert9.db" for _, template in FIXED_DATABASES]
    paths += [at_root(p) for p in JAVA_STORES]
    for folder in [*(at_root(f) for f in JVM_FOLDERS), *(Path(os.path.expanduser(h)) for h in java_homes)]:
        paths.append(folder)
        for jdk in [folder, *_subdirs(folder)]:  # a --java-home is a JDK or a folder of JDKs
            paths += [jdk / "lib/security/cacerts", jdk / "jre/lib/security/cacerts"]
    for python in pythons:
        env = Path(os.path.expanduser(python))
        env = env if env.is_dir() or not env.exists() else env.parent.parent  # bin/python -> the env
        places = glob.glob(glob.escape(str(env)) + "/lib/python*/site-packages")
        paths += [env / "lib"] + [Path(p) / "certifi/cacert.pem" for p in places]
    return paths


def _service_homes() -> set[Path]:
    """Homes of accounts that cannot log in (nologin or false as their shell)."""
    if machine_root() is not None:
        return set()
    import pwd

    return {Path(u.pw_dir) for u in pwd.getpwall() if u.pw_shell.endswith(("/nologin", "/false"))}


def java_home_stores(java_homes=()) -> list[Found]:
    """The cacerts of each --java-home (a JDK, or a folder of JDKs), which `@java` adds."""
    patterns = [f"{glob.escape(os.path.expanduser(h))}{sub}" for h in java_homes
                for sub in ("/lib/security/cacerts", "/jre/lib/security/cacerts", "/*/lib/security/cacerts")]
    return java_stores({"java": [], "jdk": patterns})


def _subdirs(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if p.is_dir())
    except OSError:
        return []
