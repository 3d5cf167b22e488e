"""This machine's trust stores summed up for `storesync status`: what each holds (counts,
owner), the roots that differ between them, and the daemon's state. Where the stores are is
storesync.discover's to say."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from storesync.discover import Found, machine_root, owner
from storesync.model import StoreError
from storesync.state import drift as drift_since, owned_stores, state_dir
from storesync.stores import StoreSpec, open_store, read_store

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
    freshness: dict | None = None  # a tuf: source's (storesync.stores.tuf.freshness)
    drift: dict | None = None  # what others changed since storesync last wrote it (None: it never did)

    def to_json(self) -> dict[str, Any]:
        return {
            "store": self.found.spec, "kind": self.kind, "found_as": self.found.what, "partial": self.found.partial,
            "owner": self.owner, "error": self.error, "certificates": len(self.trust_set) if self.trust_set is not None else None,
            "anchors": self.anchors, "distrusted": self.distrusted, "expired": self.expired, "expiring": self.expiring,
            "warnings": self.warnings, "drift": self.drift,
            **({"freshness": self.freshness} if self.freshness else {}),  # a tuf: source: version, staleness
        }


def summarize(found: Found, at: datetime, soon_days: int, options: dict[str, str] | None = None) -> Summary:

    summary = Summary(found)
    try:
        store = open_store(found.store, options)
        summary.kind = store.spec.kind
        summary.owner = owner_of(store.path)
        if not store.exists():
            raise store.error("does not exist (yet)")
        # a tuf: source as last verified: status never waits on its server
        summary.trust_set = store.read_cached() if store.spec.kind == "tuf" else read_store(store)
        summary.warnings = list(store.warnings)
        summary.freshness = getattr(store, "freshness", None)
        summary.drift = drift_since(store.spec.key, summary.trust_set)
        summary.trust_set = store.with_fixed(summary.trust_set)[0]  # counted as its readers trust them
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
        if not is_anchor(entry):
            continue
        summary.anchors += 1
        end = entry.cert.not_after
        if end is not None and end < at:
            summary.expired += 1
        elif end is not None and end <= horizon:
            summary.expiring += 1
    return summary


def is_anchor(entry) -> bool:
    return not entry.distrusted and bool(entry.trusted_purposes)


def anchors_of(trust_set) -> int:
    """The certificates a store trusts for something (what `status` counts as anchors)."""
    return sum(1 for entry in trust_set.values() if is_anchor(entry))


def written_stores(found: list[Found]) -> list[Found]:
    """Stores storesync wrote that discovery did not find (a sync named them): their drift is
    news too. Only those that still exist: a store deleted on purpose is not listed for ever;
    under a machine root (--root), only those of that machine."""
    root = machine_root()
    inside = str(root.resolve()).rstrip("/") + "/" if root else "/"

    def same(store: StoreSpec) -> str:
        return f"{store.kind}:{os.path.realpath(store.path)}"

    known = {same(f.store) for f in found}
    more = []
    for key in owned_stores():  # kind:real path, as StoreSpec.key made it: a path, never parsed
        kind, _, path = key.partition(":")
        store = StoreSpec(kind, Path(path))
        if same(store) not in known and os.path.realpath(path).startswith(inside) and os.path.exists(store.path):
            known.add(same(store))
            more.append(Found(store, "written by storesync"))
    return more


def drift(spec: str, options: dict[str, str] | None = None) -> dict | None:
    """What other programs changed in a store since storesync last wrote it: {"since", "added",
    "removed", "trust_changed"}, each a list of {"sha256", "label", ...}; None when storesync
    never wrote it. Raises StoreError when the store cannot be read."""
    store = open_store(spec, options)
    return drift_since(store.spec.key, read_store(store))


def owner_of(path: Path) -> str | None:
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
    path = Path(state_dir()) / "status.json"
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
