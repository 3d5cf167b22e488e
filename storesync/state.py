"""What storesync keeps between runs: baselines, backups and locks, under the state dir.

State dir: --state-dir, else $STORESYNC_STATE_DIR, else /var/lib/storesync for root (where the
shipped systemd unit keeps it, so root's CLI and the service share locks and backups), else
platformdirs' user state dir.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import re
import sys
import time

from storesync.model import Certificate, Entry, StoreError, TrustSet
from storesync.fsio import atomic_write, atomic_write_paths, read_bytes, remove_file, spelled

BACKUPS_KEPT = 10
SYSTEM_STATE_DIR = "/var/lib/storesync"  # the systemd unit's StateDirectory
_override: str | None = None


def set_state_dir(path: str | os.PathLike | None) -> None:
    global _override
    _override = _home_expanded(os.fspath(path), "--state-dir") if path else None


def _home_expanded(path: str, given: str) -> str:
    """`path` with `~` or `~user` made that home; a user this machine does not know is an error
    (taken as it is, `~nouser/state` would be a folder named `~nouser` in the working directory)."""
    expanded = os.path.expanduser(path)
    if expanded.startswith("~"):
        user = expanded[1:].split("/")[0]
        raise StoreError(f"state dir {path} ({given}): {user!r} is no user of this machine, so it has no home; "
                         "give the folder's full path")
    return spelled(expanded)


def state_dir() -> str:
    """The state dir, a str path (as every path of a one-shot run: see storesync.fsio)."""
    if _override:
        return _override
    if os.environ.get("STORESYNC_STATE_DIR"):
        return _home_expanded(os.environ["STORESYNC_STATE_DIR"], "STORESYNC_STATE_DIR")
    if os.geteuid() == 0:
        return SYSTEM_STATE_DIR  # root's CLI shares the shipped service's backups, baselines and locks
    import platformdirs  # here: it imports pathlib, which a run given a state dir does without

    return platformdirs.user_state_dir("storesync")


def in_state(*parts: str) -> str:
    """A path under the state dir."""
    return os.path.join(state_dir(), *parts)


def utc_now(form: str) -> str:
    """The time now in UTC as `form` (strftime's codes; %f: microseconds), without importing
    datetime (a plain sync needs it for nothing else)."""
    ns = time.time_ns()
    return time.strftime(form.replace("%f", f"{ns // 1000 % 1_000_000:06d}"), time.gmtime(ns // 1_000_000_000))


def _key(text: str) -> str:
    """A file name for a store or profile: readable, and unique by a hash of the full text."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", text)[-60:].strip("_")
    digest = hashlib.sha256(text.encode("utf-8", "surrogateescape"))  # a path's bytes, UTF-8 or not
    return f"{readable}-{digest.hexdigest()[:12]}"


# --- baselines: the last trust set a merge profile agreed on ------------------------------


def _entry_json(entry: Entry) -> dict:
    import base64  # here: `list` needs the state dir, never backups

    return {
        "der": base64.b64encode(entry.cert.der).decode(),
        "trust": dict(entry.trust),
        "label": entry.label,
        "distrust_after": {p: d.isoformat() for p, d in entry.distrust_after.items()},
    }


def _entry_from_json(data: dict) -> Entry:
    import base64
    from datetime import datetime

    return Entry(
        Certificate(base64.b64decode(data["der"])),
        trust=data["trust"],
        label=data.get("label"),
        distrust_after={p: datetime.fromisoformat(d) for p, d in data.get("distrust_after", {}).items()},
    )


def baseline_path(profile: str) -> str:
    return in_state("baselines", f"{_key(profile)}.json")


def load_baseline(profile: str) -> TrustSet | None:
    path = baseline_path(profile)
    try:
        data = json.loads(read_bytes(path))
        return TrustSet(_entry_from_json(e) for e in data["entries"])
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StoreError(f"baseline {path}: cannot read it ({exc.strerror}); check the state dir") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise StoreError(f"baseline {path}: unreadable ({exc}); delete it to start the profile afresh") from None


def save_baseline(profile: str, trust_set: TrustSet) -> None:
    data = {"profile": profile, "entries": [_entry_json(e) for e in trust_set.values()]}
    try:
        atomic_write(baseline_path(profile), json.dumps(data).encode(), mode=0o600)  # one line: as owned_file
    except OSError as exc:
        raise StoreError(f"baseline {baseline_path(profile)}: cannot write it ({exc.strerror}); "
                         "the stores were written, the next run merges again") from None


# --- backups: the exact bytes of a store before storesync changed it ------------------------


def backup_dir(spec: str) -> str:
    return in_state("backups", _key(spec))


def save_backup(spec: str, snapshot: dict[str, bytes | str | None], reason: str,
                touched: set[str] | None = None) -> str:
    """Keep `snapshot` (path -> bytes, link target, or None = absent) and the SHA-256s of the
    certificates the change that follows touches (None: unknown); returns the backup id."""
    backup_id, files = backup_file(spec, snapshot, reason, touched)
    save_records(spec, files)
    return backup_id


def backup_file(spec: str, snapshot: dict[str, bytes | str | None], reason: str,
                touched: set[str] | None = None) -> tuple[str, dict[str, bytes]]:
    """The backup `save_backup` keeps, not yet written: (its id, {its path: its bytes})."""
    import binascii  # base64.b64encode is b2a_base64 without the newline: the base64 module is not imported

    stamp = utc_now("%Y%m%dT%H%M%S%fZ")
    backup_id = stamp
    files = {}
    for path, value in snapshot.items():
        if value is None:
            files[path] = {"absent": True}
        elif isinstance(value, str):
            files[path] = {"link": value}
        else:
            files[path] = {"data": binascii.b2a_base64(value, newline=False).decode()}
    meta = {"id": backup_id, "spec": spec, "created": stamp, "reason": reason, "files": files}
    if touched is not None:
        meta["touched"] = sorted(touched)
    return backup_id, {os.path.join(backup_dir(spec), f"{backup_id}.json"): json.dumps(meta).encode()}


def save_records(spec: str, files: dict[str, bytes]) -> None:
    """Write backups and ownership records (of one store, `spec`, or of every store a run writes,
    `spec` the first) before the stores change, made durable together: one flush for a run, not
    two per file. Then drop the backups beyond BACKUPS_KEPT of each store."""
    try:
        for folder in dict.fromkeys(os.path.dirname(path) for path in files):
            os.makedirs(folder, mode=0o700, exist_ok=True)
        atomic_write_paths(files, mode=0o600)
    except OSError as exc:
        others = " (nor any other store of the run)" if len(files) > 2 else ""
        raise StoreError(f"{spec}: cannot keep a backup in {state_dir()} ({exc.strerror}), so it was not "
                         f"changed{others}; choose a state dir with --state-dir") from None
    for folder in dict.fromkeys(os.path.dirname(path) for path in files):
        if os.path.basename(os.path.dirname(folder)) != "backups" or not _more_than_kept(folder):
            continue
        for old in _backups_in(folder)[BACKUPS_KEPT:]:
            if os.path.join(folder, f"{old['id']}.json") not in files:  # never the one just kept: an undo reads it
                remove_file(os.path.join(folder, f"{old['id']}.json"))


def _more_than_kept(folder: str) -> bool:
    """Could the folder hold more than BACKUPS_KEPT backups? Only then are they read to drop the
    oldest: a store's first writes read none of them back (each is a base64 copy of the store)."""
    try:
        return sum(name.endswith(".json") for name in os.listdir(folder)) > BACKUPS_KEPT
    except OSError:
        return False


def drop_backup(spec: str, backup_id: str | None) -> None:
    """Remove the backup kept for a write that never happened (the run failed before it)."""
    if backup_id:
        remove_file(os.path.join(backup_dir(spec), f"{backup_id}.json"))


def list_backups(spec: str) -> list[dict]:
    """Backups of a store, newest first (without their data)."""
    return _backups_in(backup_dir(spec))


def _backups_in(root: str) -> list[dict]:
    out = []
    try:
        names = os.listdir(root)  # not root.glob("*.json"): its pattern is compiled for each run
    except OSError:
        names = []
    for name in sorted((name for name in names if name.endswith(".json")), reverse=True):
        try:
            meta = json.loads(read_bytes(os.path.join(root, name)))
            out.append({"id": meta["id"], "created": meta["created"], "reason": meta.get("reason", ""),
                        "files": len(meta["files"])})
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not a backup of ours: ignored, never restored
    return out


def no_backups(spec: str) -> str:
    return (f"{spec}: no backups in {backup_dir(spec)}, so nothing to roll back (storesync keeps one each time "
            "it changes the store; a run with another state dir keeps them there: give its --state-dir)")


def load_backup(spec: str, backup_id: str | None = None) -> tuple[str, dict[str, bytes | str | None]]:
    import base64

    backups = list_backups(spec)
    if not backups:
        raise StoreError(no_backups(spec))
    chosen = backup_id or backups[0]["id"]
    if chosen not in {b["id"] for b in backups}:  # an id is a name in the list, never a path
        from shlex import quote

        raise StoreError(f"{spec}: no backup {chosen!r}; `storesync rollback {quote(spec)} --list` shows them")
    meta = json.loads(read_bytes(os.path.join(backup_dir(spec), f"{chosen}.json")))
    snapshot: dict[str, bytes | str | None] = {}
    base = spec.partition(":")[2]
    for name, item in meta["files"].items():
        name = _absolute(name, base)
        snapshot[name] = None if item.get("absent") else item["link"] if "link" in item else base64.b64decode(item["data"])
    return chosen, snapshot


def _absolute(name: str, base: str) -> str:
    """A file name of a backup, absolute. Older backups of a hashed directory the sync named by
    a relative path (`dir:ca`) hold names relative to the folder it ran in, which the store's
    absolute path (`base`, from the backup's key) ends with; other names are left as they are."""
    folder = spelled(os.path.dirname(name))
    if name.startswith("/") or folder == "." or not f"/{spelled(base)}/".endswith(f"/{folder}/"):
        return name
    return os.path.join(spelled(base), os.path.basename(name))


def touched_since(spec: str, backup_id: str) -> set[str] | None:
    """The certificates storesync changed in a store since a backup was taken (the changes that
    followed it and every later backup); None when a backup does not say (an older version's)."""
    touched: set[str] = set()
    for backup in list_backups(spec):
        if backup["id"] < backup_id:
            continue
        try:
            listed = json.loads(read_bytes(os.path.join(backup_dir(spec), f"{backup['id']}.json"))).get("touched")
        except (OSError, ValueError):
            return None
        if not isinstance(listed, list):
            return None
        touched.update(str(sha) for sha in listed)
    return touched


# --- hooks that failed: run again by the next run that finds the store as wanted ----------


def _hook_path(spec: str) -> str:
    return in_state("hooks", f"{_key(spec)}.json")


def hook_failed(spec: str, argv: list[str]) -> bool:
    """Did this store's hook, this very command, fail at its last run?"""
    try:
        return json.loads(read_bytes(_hook_path(spec))).get("argv") == list(argv)
    except (OSError, ValueError, AttributeError):
        return False


def note_hook(spec: str, argv: list[str], ok: bool) -> None:
    path = _hook_path(spec)
    try:
        if ok:
            remove_file(path)
        else:
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            atomic_write(path, json.dumps({"argv": list(argv), "failed": utc_now("%Y-%m-%dT%H:%M:%SZ")}).encode(), mode=0o600)
    except OSError:
        pass  # then the next run does not retry it; the failure was reported all the same


# --- ownership: what storesync last wrote in a store, to tell what others changed since ------

PREFIX = 16  # hex digits of a SHA-256 kept per certificate of the full set: enough to tell it apart


def owned_path(spec: str) -> str:
    return in_state("owned", f"{_key(spec)}.json")


def load_owned(spec: str) -> dict | None:
    """The record of what storesync wrote in a store (None: it never wrote it, or the record is
    unreadable, which only loses drift reporting)."""
    return _owned(owned_bytes(spec))


def _owned(record: bytes | None) -> dict | None:
    try:
        data = json.loads(record) if record is not None else None
        if isinstance(data.get("entries"), dict) and isinstance(data.get("all"), str):
            return data
    except (ValueError, AttributeError):
        pass
    return None


def owned_bytes(spec: str) -> bytes | None:
    """The record of a store as it is on disk (None: there is none), for an undo to put back:
    its bytes are a third of its parse (a dict per certificate: ~80 MB at 100 000)."""
    try:
        return read_bytes(owned_path(spec))
    except OSError:
        return None


# Compiled on first use (re keeps them): a store's first write has no record to search.
#: A certificate of a record's "entries": its SHA-256 as a key whose value is an object. In JSON
#: a quote inside a string is escaped, so a quote right after `{` or `,` opens a key (every
#: record storesync wrote, on one line or indented).
_OWNED_KEY = rb'[{,]\s*"([0-9a-f]{64})"\s*:\s*\{'
_ENTRIES = rb'[{,]\s*"entries"\s*:\s*\{'
_ALL = rb'"all"\s*:\s*"[0-9a-f]*"\s*\}\s*\Z'


def owned_among(spec: str, shas) -> set[str]:
    """Which of `shas` the record says storesync wrote (none: no record). Its text is searched,
    not parsed: a plan adding one certificate to a large store held the whole record as Python
    objects (3.5x its size, 4.6x at its peak, beside both stores' entries) to look up that one."""
    data = owned_bytes(spec)
    if not data or not data.lstrip().startswith(b"{"):
        return set()  # none: as load_owned, only the note of what is re-added is lost
    # Whole as storesync writes it: its "entries", then "all" (hex digits only) closing it. A
    # record cut just after an entry also ends in `}`; keys outside "entries" are not its own.
    tail, entries = data.rfind(b'"all"'), re.search(_ENTRIES, data)
    if entries is None or tail < entries.end() or not re.compile(_ALL).match(data, tail) or not data[max(0, tail - 64) : tail].rstrip().endswith(b","):
        return set()
    wanted = set(shas)
    found = (m.group(1).decode() for m in re.compile(_OWNED_KEY).finditer(data, entries.end() - 1, tail))
    return {sha for sha in found if sha in wanted}


def save_owned(spec: str, written: dict[str, Entry | None], after: TrustSet, rewritten: set[str] = frozenset()) -> None:
    """For a write: `written` holds what the plan adds or changes (an Entry) or removes (None).
    Entries storesync wrote earlier stay storesync's until it removes them (one that someone
    else removed stays recorded: that is drift, and `add` puts it back); `all` is every
    certificate in the store after the write, so what others add later shows. An entry only
    written again in the same form (`rewritten`) does not become storesync's."""
    save_records(spec, owned_file(spec, written, after, rewritten))


def owned_file(spec: str, written: dict[str, Entry | None], after: TrustSet,
               rewritten: set[str] = frozenset(), record: bytes | None = None) -> dict[str, bytes]:
    """The record `save_owned` writes, not yet written: {its path: its bytes}. `record`: the
    current record's bytes when the caller has them (`owned_bytes`), else it is read."""
    old = _owned(record if record is not None else owned_bytes(spec))
    entries = dict(old["entries"]) if old else {}  # sha256 -> its JSON object, or the Entry written
    for sha, entry in written.items():
        if entry is None:
            entries.pop(sha, None)
        elif sha not in rewritten or sha in entries:
            entries[sha] = entry
    # Encoded entry by entry (the few distinct trust maps once each), on one line: a dict per
    # entry and then their encoding held ~3x the record at its peak, and json's indenting
    # encoder is pure Python, 5x slower and 3x the memory of the C one.
    dumps, trusts = json.dumps, {}

    def encoded(value) -> str:
        if not isinstance(value, Entry):
            return dumps(value)
        trust = trusts.get(id(value.trust)) or trusts.setdefault(id(value.trust), dumps(dict(value.trust)))
        return f'{{"trust": {trust}, "label": {dumps(value.display_label)}}}'

    # Into one growing buffer, whose bytes are the record: joined, a list of the entries' texts,
    # their text and its encoding were 3x the record at once. (json.dumps writes ASCII only.)
    out = io.BytesIO()
    out.write(f'{{"spec": {dumps(spec)}, "written": {dumps(utc_now("%Y-%m-%dT%H:%M:%SZ"))}, "entries": {{'.encode())
    separator = ""
    for sha, value in entries.items():
        out.write(f'{separator}{dumps(sha)}: {encoded(value)}'.encode())  # a key of an old record as read
        separator = ", "
    out.write(f'}}, "all": "{"".join(sorted(sha[:PREFIX] for sha in after))}"}}'.encode())
    return {owned_path(spec): out.getvalue()}  # the buffer itself, not a copy


def put_owned(spec: str, record: bytes | None) -> None:
    """Put back the record as it was before a write that was undone (its bytes, `owned_bytes`;
    None: there was none)."""
    try:
        if record is None:
            remove_file(owned_path(spec))
        else:
            atomic_write(owned_path(spec), record, mode=0o600)
    except OSError:
        pass  # only drift reporting suffers; the undo of the store itself goes on


def owned_stores() -> list[str]:
    """The stores storesync keeps a record of writing (their specs: kind and absolute path)."""
    specs = []
    try:
        names = os.listdir(in_state("owned"))
    except OSError:
        names = []
    for name in sorted(name for name in names if name.endswith(".json")):
        try:
            spec = json.loads(read_bytes(in_state("owned", name))).get("spec")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(spec, str):
            specs.append(spec)
    return specs


def drift(spec: str, now: TrustSet) -> dict | None:
    """What others changed in a store since storesync last wrote it (None: it never did):
    certificates added, and, of those storesync wrote, the ones removed or whose trust changed."""
    record = load_owned(spec)
    if record is None:
        return None
    known = {record["all"][i:i + PREFIX] for i in range(0, len(record["all"]), PREFIX)}
    added = [{"sha256": e.sha256, "label": e.display_label, "trust": dict(e.trust)}
             for e in now.values() if e.sha256[:PREFIX] not in known]
    removed, changed = [], []
    for sha, mine in sorted(record["entries"].items(), key=lambda item: item[1].get("label", "")):
        entry = now.get(sha)
        if entry is None:
            removed.append({"sha256": sha, "label": mine.get("label", sha[:16]), "trust": mine.get("trust", {})})
        elif dict(entry.trust) != mine.get("trust"):
            changed.append({"sha256": sha, "label": entry.display_label, "before": mine.get("trust"),
                            "after": dict(entry.trust)})
    return {"since": record.get("written"), "added": added, "removed": removed, "trust_changed": changed}


# --- keys: a store's state is kept under its real path ---------------------------------------

_adopted: set[tuple[str, str]] = set()  # (state dir, name) adopted by this process


def adopt(named: str, key: str) -> None:
    """Move what an earlier version kept under a store's name as given (`pem:/etc/link.pem`,
    before a store's key was its real path) to its key, once per process: its backups join the
    key's, its record and failed hook move unless the key has its own, its stat cache goes."""
    if (state_dir(), named) in _adopted:
        return
    _adopted.add((state_dir(), named))
    try:
        old, new = backup_dir(named), backup_dir(key)
        for name in sorted(os.listdir(old) if os.path.isdir(old) else ()):
            if name.endswith(".json"):
                os.makedirs(new, mode=0o700, exist_ok=True)
                if not os.path.exists(os.path.join(new, name)):
                    os.rename(os.path.join(old, name), os.path.join(new, name))
        for was, now in ((owned_path(named), owned_path(key)), (_hook_path(named), _hook_path(key))):
            if os.path.exists(was) and not os.path.exists(now):
                os.rename(was, now)
        remove_file(in_state("statcache", _key(named)))  # a cache: read afresh
        if os.path.isdir(old):
            os.rmdir(old)
    except OSError:
        pass  # left where it was: the next run tries again


# --- locks ---------------------------------------------------------------------------------


_NOTE = 200  # the bytes of a lock file that say who holds it


class lock:
    """An exclusive lock shared by the CLI and the daemon, held inside `with`; waits up to
    `timeout` seconds, then says who holds it. (A class, not contextlib's generator: contextlib
    is 2.9 M instructions to import, 1 % of a one-shot sync.)"""

    def __init__(self, name: str, timeout: float = 10.0):
        self.name, self.timeout, self.fd = name, timeout, None

    def __enter__(self) -> None:
        name = self.name
        path = in_state("locks", f"{_key(name)}.lock")
        try:
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise StoreError(
                f"state dir {state_dir()}: cannot keep locks there ({exc.strerror}); "
                "choose another with --state-dir or $STORESYNC_STATE_DIR"
            ) from None
        try:
            deadline = time.monotonic() + self.timeout
            while True:
                try:
                    import fcntl  # here: `list` takes no lock

                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EAGAIN, errno.EACCES) or time.monotonic() > deadline:
                        holder = os.pread(fd, _NOTE, 0).decode(errors="replace").strip() or "another process"
                        raise StoreError(f"{name} is locked by {holder}; try again when it has finished") from None
                    time.sleep(0.05)
            try:  # who holds it, for the message of a waiting run; a full disk only loses the note
                # written over in place, padded: truncating a file the disk is still writing waits for it
                note = f"pid {os.getpid()} ({' '.join(sys.argv[:3])})".encode()[:_NOTE]
                os.pwrite(fd, note.ljust(_NOTE), 0)
            except OSError:
                pass
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd

    def __exit__(self, *exc) -> None:
        fd, self.fd = self.fd, None
        os.close(fd)  # closing releases the lock


_held_stores: set[tuple[str, int]] = set()  # (store lock, thread) this process holds


class store_lock:
    """The lock of one store (by its resolved path), as sync, rollback and a store's own
    recovery take it, held inside `with`. Re-entrant within a thread: a store read under a run's
    lock may need it."""

    def __init__(self, path: str | os.PathLike, timeout: float = 10.0):
        self.path, self.timeout, self.taken = path, timeout, None

    def __enter__(self) -> None:
        import _thread

        held = (f"store {os.path.realpath(self.path)}", _thread.get_ident())
        if held in _held_stores:
            return
        taken = lock(held[0], self.timeout)
        taken.__enter__()
        _held_stores.add(held)
        self.taken = (taken, held)

    def __exit__(self, *exc) -> None:
        if self.taken is not None:
            (taken, held), self.taken = self.taken, None
            _held_stores.discard(held)
            taken.__exit__(None, None, None)


class held_locks:
    """Locks taken in order inside `with`, released in the reverse order (contextlib.ExitStack's
    part the engine needs)."""

    def __init__(self, *locks):
        self.locks, self.taken = locks, []

    def __enter__(self) -> None:
        try:
            for one in self.locks:
                one.__enter__()
                self.taken.append(one)
        except BaseException:
            self.__exit__(None, None, None)
            raise

    def __exit__(self, *exc) -> None:
        while self.taken:
            self.taken.pop().__exit__(None, None, None)
