"""This machine's trust stores: where they are, what they hold, where they differ.

Finds the system bundle and hashed directory, local additions (/usr/local/share/ca-certificates),
Java keystores (Debian's and every JDK's `lib/security/cacerts`), certifi bundles in the Python
environments it is pointed at, NSS databases (through `storesync.discover.discover_nss`, when
that module is there) and the stores of configured profiles (through `storesync.config`, when
it is there). Paths are deduplicated by their real path: JDK cacerts are often links to one file.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

SYSTEM_BUNDLES = ["/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt", "/etc/ssl/cert.pem"]
SYSTEM_DIRS = ["/etc/ssl/certs"]
LOCAL_DIRS = ["/usr/local/share/ca-certificates"]
JAVA_STORES = ["/etc/ssl/certs/java/cacerts", "/etc/pki/java/cacerts"]
JDK_GLOBS = ["/usr/lib/jvm/*/lib/security/cacerts", "/usr/lib/jvm/*/jre/lib/security/cacerts", "/opt/*/lib/security/cacerts"]
CERTIFI_GLOBS = ["lib/python*/site-packages/certifi/cacert.pem", "lib/python*/site-packages/pip/_vendor/certifi/cacert.pem",
                 "Lib/site-packages/certifi/cacert.pem"]


@dataclass
class Found:
    spec: str  # store spec to open it with
    what: str  # why it is here: "system bundle", "java", "profile NAME", ...
    partial: bool = False  # holds additions only (a local CA directory): not expected to hold every root


def discover(pythons: list[str] = (), config: str | None = None, warnings: list[str] | None = None,
             roots: dict[str, list[str]] | None = None) -> list[Found]:
    """Every store found. `roots` overrides the well-known path lists (tests use it)."""
    warnings = warnings if warnings is not None else []
    paths = {"bundles": SYSTEM_BUNDLES, "dirs": SYSTEM_DIRS, "local": LOCAL_DIRS, "java": JAVA_STORES,
             "jdk": JDK_GLOBS, **(roots or {})}
    found: list[Found] = []
    seen: set[str] = set()

    def add(kind: str, path: str | Path, what: str, partial: bool = False) -> None:
        path = Path(path)
        key = f"{kind}:{os.path.realpath(path)}"
        if key not in seen and path.exists():
            seen.add(key)
            found.append(Found(f"{kind}:{path}", what, partial))

    for path in paths["bundles"]:
        add("pem", path, "system bundle")
    for path in paths["dirs"]:
        add("dir", path, "hashed directory")
    for path in paths["local"]:
        add("dir", path, "local additions", partial=True)
    for path in paths["java"]:
        add(_java_kind(Path(path)), path, "java")
    for pattern in paths["jdk"]:
        for path in sorted(glob.glob(pattern)):
            add(_java_kind(Path(path)), path, "java (" + Path(path).parents[2].name + ")")
    for python in pythons or ():
        bundles = certifi_bundles(python, warnings)
        for path in bundles:
            add("pem", path, f"certifi ({python})")
    found += [f for f in nss_stores(warnings) if _new(f, seen)]
    found += [f for f in profile_stores(config, warnings) if _new(f, seen)]
    return found


def _new(found: Found, seen: set[str]) -> bool:
    kind, _, path = found.spec.partition(":")
    key = f"{kind}:{os.path.realpath(path.partition('?')[0])}"
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
        from storesync.discover import discover_nss
    except ImportError:
        return []
    try:
        try:
            results = list(discover_nss(count=False))  # status reads and counts each store itself
        except TypeError:
            results = list(discover_nss())
    except Exception as exc:  # noqa: BLE001 - discovery of one kind must not stop status
        warnings.append(f"NSS discovery failed: {exc}")
        return []
    found = []
    for item in results:
        spec = getattr(item, "spec", None) or getattr(item, "path", None) or item
        spec = str(spec)
        if not spec.startswith(("nss:", "sql:")):
            spec = f"nss:{spec}"
        app = getattr(item, "app", None)
        found.append(Found(spec, f"nss ({app})" if app else "nss"))
    return found


def profile_stores(config: str | None, warnings: list[str]) -> list[Found]:
    try:
        from storesync.config import load_config
    except ImportError:
        return []
    try:
        loaded = load_config(config) if config else load_config()
    except Exception as exc:  # noqa: BLE001 - a broken config is reported, status goes on
        warnings.append(f"config: {exc}")
        return []
    found = []
    from urllib.parse import urlencode

    for name, profile in sorted(getattr(loaded, "profiles", {}).items()):
        for ref in getattr(profile, "stores", []):
            spec, options = str(getattr(ref, "spec", ref)), getattr(ref, "options", None) or {}
            if options:  # a store table's options travel in the spec's query
                spec += ("&" if "?" in spec else "?") + urlencode(options)
            found.append(Found(spec, f"profile {name}"))
    return found


# --- summaries ------------------------------------------------------------------------------


@dataclass
class Summary:
    found: Found
    kind: str = ""
    owner: str | None = None
    trust_set: Any = None
    error: str | None = None
    anchors: int = 0
    distrusted: int = 0
    expired: int = 0
    expiring: int = 0
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "store": self.found.spec, "kind": self.kind, "found_as": self.found.what, "partial": self.found.partial,
            "owner": self.owner, "error": self.error, "certificates": len(self.trust_set) if self.trust_set is not None else None,
            "anchors": self.anchors, "distrusted": self.distrusted, "expired": self.expired, "expiring": self.expiring,
            "warnings": self.warnings,
        }


def summarize(found: Found, at: datetime, soon_days: int, options: dict[str, str] | None = None) -> Summary:
    from storesync.model import StoreError
    from storesync.stores import open_store, read_store

    summary = Summary(found)
    try:
        store = open_store(found.spec, options)
        summary.kind = store.spec.kind
        summary.owner = owner_of(store.path)
        if not store.exists():
            raise store.error("does not exist (yet)")
        summary.trust_set = read_store(store)
        summary.warnings = list(store.warnings)
    except StoreError as exc:
        summary.error = str(exc)
        return summary
    except PermissionError as exc:
        summary.error = f"{found.spec}: permission denied reading {exc.filename or found.spec}"
        return summary
    horizon = at + timedelta(days=soon_days)
    for entry in summary.trust_set.values():
        if entry.distrusted:
            summary.distrusted += 1
            continue
        if not entry.trusted_purposes:
            continue
        summary.anchors += 1
        end = entry.cert.not_after
        if end is not None and end < at:
            summary.expired += 1
        elif end is not None and end <= horizon:
            summary.expiring += 1
    return summary


def owner_of(path: Path) -> str | None:
    from storesync.discover import owner

    name, uid = owner(path)
    return None if uid < 0 else name


def matrix(summaries: list[Summary]) -> tuple[list[str], list[dict[str, Any]]]:
    """Which roots are where, only for roots that differ: a root is listed when the complete
    stores do not all say the same about it, or when a store of local additions holds it and
    some complete store does not.

    Each row: sha256, label, and per store "trusted" / "distrusted" / None (absent)."""
    readable = [s for s in summaries if s.trust_set is not None]
    columns = [s.found.spec for s in readable]
    labels: dict[str, str] = {}
    states: dict[str, dict[str, str | None]] = {}
    for summary in readable:
        for entry in summary.trust_set.values():
            if not entry.distrusted and not entry.trusted_purposes:
                continue
            labels.setdefault(entry.sha256, entry.display_label)
            states.setdefault(entry.sha256, {})[summary.found.spec] = "distrusted" if entry.distrusted else "trusted"
    rows = []
    complete = [s.found.spec for s in readable if not s.found.partial]
    local = [s.found.spec for s in readable if s.found.partial]
    for sha, where in states.items():
        said = {where.get(spec) for spec in complete}
        if len(said) > 1 or (None in said and any(spec in where for spec in local)):
            rows.append({"sha256": sha, "label": labels[sha], "stores": {spec: where.get(spec) for spec in columns}})
    # The roots missing from the fewest stores first: those are the ones a sync would fix.
    rows.sort(key=lambda r: (-sum(v is not None for v in r["stores"].values()), r["label"].lower(), r["sha256"]))
    return columns, rows


# --- daemon ---------------------------------------------------------------------------------


def daemon_status() -> dict[str, Any]:
    """The daemon's status file, as it wrote it, plus where it is and whether its pid lives."""
    from storesync.engine.state import state_dir

    path = state_dir() / "status.json"
    if not path.exists():
        return {"file": str(path), "running": False, "state": "no status file (the daemon has not run here)"}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        return {"file": str(path), "running": False, "state": f"unreadable status file ({exc})"}
    if not isinstance(data, dict):
        return {"file": str(path), "running": False, "state": "status file holds no JSON object"}
    pid = data.get("pid")
    running = None
    if data.get("state") == "stopped":
        running = False  # stopped cleanly; a live pid now is some other process
    elif isinstance(pid, int) and pid > 0:
        try:
            os.kill(pid, 0)
            running = True
        except PermissionError:
            running = True  # it exists, owned by someone else
        except (OSError, OverflowError):
            running = False
    return {"file": str(path), "running": running, "status": data,
            "state": str(data.get("state", "unknown"))}


def now() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)
