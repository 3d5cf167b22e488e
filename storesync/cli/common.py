"""What the commands share: one-sentence errors, opening a store to read, JSON and trust text."""

from __future__ import annotations

import sys
from pathlib import Path

from storesync.model import ANCHOR, DISTRUST, EXIT_ERROR, StoreError

TYPE_CHECKING = False  # typing's, without importing typing at start-up
if TYPE_CHECKING:
    from typing import Any, NoReturn, Optional


def closed_pipe() -> NoReturn:
    """The reader went away (`storesync list --json | head -c1`): end as cat or grep do, killed
    by SIGPIPE, without a traceback. Anything written to stores was written before the output."""
    import os
    import signal

    devnull = os.open(os.devnull, os.O_WRONLY)
    for stream in (sys.stdout, sys.stderr):  # their buffers must not fail again on the way out
        os.dup2(devnull, stream.fileno())
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGPIPE)
    sys.exit(128 + signal.SIGPIPE)  # where SIGPIPE does not end a process


def fail(message: str) -> NoReturn:
    print(f"storesync: {message}", file=sys.stderr)
    sys.exit(EXIT_ERROR)


def use_root(root) -> None:
    """Find the machine's stores under `root` (else $STORESYNC_ROOT): a mistyped one is an
    error, not an empty machine."""
    from storesync import fsio

    fsio.set_root(root)
    where = fsio.machine_root()
    if where is not None and not where.is_dir():
        given = "--root" if root else "$STORESYNC_ROOT"
        fail(f"{given} {where}: no such directory; give the folder the machine's files are under "
             "(a host mounted at /host), or leave it out")


def open_and_read(spec: str, password_file: Optional[Path]):
    """Open an existing store and read it; every expected failure becomes one sentence and exit 2."""
    from storesync.stores import open_store, read_store

    defaults = {"password-file": str(password_file)} if password_file else {}
    try:
        store = open_store(spec, defaults)
        if not store.exists():
            raise store.error(store.missing())
        trust_set = read_store(store)
    except StoreError as exc:
        fail(str(exc))
    except PermissionError as exc:
        fail(f"{spec}: permission denied reading {exc.filename or spec}; run as a user who may read it")
    for warning in store.warnings:
        print(f"storesync: warning: {warning}", file=sys.stderr)
    return store, trust_set


def print_json(data) -> None:
    import json

    print(json.dumps(data, indent=2))


def iso(value) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def entry_json(entry) -> dict[str, Any]:
    cert = entry.cert
    return {
        "sha256": cert.sha256,
        "sha1": cert.sha1,
        "subject": cert.subject,
        "label": entry.display_label,
        "not_before": iso(cert.not_before),
        "not_after": iso(cert.not_after),
        "trust": dict(entry.trust),
        "distrust_after": {p: iso(d) for p, d in entry.distrust_after.items()},
        **({"parse_warning": cert.parse_warning} if cert.parse_warning else {}),
    }


def trust_text(entry) -> str:
    if dict(entry.trust) == ANCHOR:
        return "anchor"
    if dict(entry.trust) == DISTRUST:
        return "distrusted"
    return ", ".join(f"{'+' if s == 'trusted' else '-'}{p}" for p, s in sorted(entry.trust.items()))
