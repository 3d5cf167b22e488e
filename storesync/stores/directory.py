"""`dir`: a hashed directory, as OpenSSL's `-CApath` reads it.

One file per certificate plus symlinks `<subject hash>.<n>` to it. Reads `*.pem *.crt *.cer
*.der` files holding exactly one certificate (plain or TRUSTED), and regular files named like
hash links (c_rehash copies). Other files, bundles, subdirectories and CRL links
(`<hash>.r<n>`) are not part of the store and are left alone; a `*.pem` that is not a
certificate (or holds a private key) makes the whole directory unreadable, so nothing spreads from it.
Of two files holding one certificate, the one `-CApath` loads counts (`_as_loaded`).

A file whose stat data is as the state dir's stat cache recorded it (storesync.statcache) is not
opened again. Writes incrementally: a one-certificate change touches that certificate's file and
the links of its hash only. Options: `links=new` (default, like `openssl rehash`) or `links=both` (also
the old MD5 hash links, like p11-kit); `format=plain` (default) or `format=trusted`
(TRUSTED CERTIFICATE files that keep purposes, distrust and labels).
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from collections.abc import Iterator

from storesync.fsio import LOOP, absolute, atomic_write_many, fsync_dir, in_root, machine_root, odd_file, read_bytes, remove_file, stat_version, temp_beside
from storesync.model import DISTRUSTED, TRUSTED, Capabilities, Entry, TrustSet
from storesync.stores import (
    CERT_SUFFIXES, HASH_LINK, Store, StoreSpec, Values, cannot_enter, cannot_read, nss_folder,
)
from storesync.statcache import StatCache, stamp
from storesync.stores.pem import PemStore, cached_entry, render_entries, speaks_trusted

_HASH_LINK = re.compile(HASH_LINK)
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


class DirStore(Store):
    kind = "dir"
    options = ("links", "format")
    values = {"links": Values("new", "both"), "format": PemStore.values["format"]}
    new_suffix = ".pem"  # of the files it names
    holds_trusted = False  # set by read: a file holds a TRUSTED CERTIFICATE block
    holds = "hashed certificates"  # what the folder is for, in an error

    def __init__(self, spec: StoreSpec):
        super().__init__(spec)
        self._files: dict[str, list[str]] = {}  # sha256 -> names holding it (first: its file)
        self._links: dict[str, str] = {}  # hash-link name -> what it points to now
        self._suffixes: dict[str, int] = {}  # file-name stem -> the first suffix not tried yet
        self._codec: PemStore | None = None  # reads every file of the folder (see `_bundle`)

    @property
    def capabilities(self) -> Capabilities:
        trusted = speaks_trusted(self)
        return Capabilities(purposes=trusted, distrust=trusted, labels=trusted, lone_reject_trusts=trusted)

    def _bundle(self, path: str) -> PemStore:
        """The bundle codec, for one file of this directory (its errors name that file): one for
        every file, made once (a fresh directory's read-back would spend a fifth of it making them)."""
        if self._codec is None:
            self._codec = PemStore(StoreSpec(self.kind, path, {"format": self.option("format", "plain")}))
        self._codec.path, self._codec.warnings = path, []
        return self._codec

    def read(self) -> TrustSet:
        self._files, self._links, self.holds_trusted = {}, {}, False
        self.warnings = []  # what this read finds: a second read (a backup's) says it once, not again
        if not self._folder_there():
            return TrustSet()
        entries: dict[str, Entry] = {}  # sha256 -> the first file's entry
        others: dict[str, dict[str, Entry]] = {}  # sha256 -> file name -> entry, for one held twice (rare)
        try:
            with os.scandir(self.path) as listing:  # its entries know their type: no stat per file
                found = sorted(listing, key=lambda item: item.name)
        except OSError as exc:
            raise self.error(cannot_read(exc, "list")) from None
        cache = StatCache(self.spec.key)  # files unchanged since the last read are not parsed again
        found.reverse()
        while found:  # taken as read: a listing of 100 000 files is not held to the end
            item = found.pop()
            name = item.name
            is_link_name = bool(_HASH_LINK.match(name))
            if name.startswith(".") or not (is_link_name or os.path.splitext(name)[1].lower() in CERT_SUFFIXES):
                continue
            if is_link_name:
                self._links[name] = os.readlink(item.path) if item.is_symlink() else None  # None: a copy
                if item.is_symlink():
                    continue  # its target is read on its own (or is dangling, and gets mended)
            path = item.path
            if item.is_symlink():
                if machine_root() is not None:  # --root: where that machine's link leads
                    path = in_root(path)
                if path is None or not os.path.isfile(path):
                    continue  # a dangling link, or one to a folder: not ours
            elif not item.is_file():  # the listing's type: no stat
                continue  # a subdirectory: not ours
            entry = self._read_file(name, path, cache)
            if entry is None:
                continue
            holders = self._files.setdefault(entry.sha256, [])
            holders.append(name)
            holders.sort(key=lambda n: bool(_HASH_LINK.match(n)))  # a real file name first
            if len(holders) == 1:
                entries[entry.sha256] = entry
            else:  # a second file for one certificate: which one counts is settled once all are read
                files = others.setdefault(entry.sha256, {n: entries[entry.sha256] for n in holders if n != name})
                files[name] = entry
        cache.save()
        return TrustSet(self._as_loaded(entries, others))

    def _as_loaded(self, entries: dict[str, Entry], others: dict[str, dict[str, Entry]]) -> list[Entry]:
        """The entries as OpenSSL's -CApath loads them (a read never reports more trust than it
        grants): of two files holding one certificate the first its subject hash's links reach is
        loaded, the other ignored (by_dir.c, X509_STORE_add_cert); where that cannot be told,
        distrust wins. (A file no link reaches is read as an anchor, as the README says.)"""
        if not others:
            return list(entries.values())
        reached = self._reached()
        for sha, files in others.items():
            entry, first = self._duplicate(entries[sha].cert, files, reached)
            entries[sha] = entry
            # the file a write rewrites: a real name (a write gives a hash-named copy one), the loaded one first
            self._files[sha].sort(key=lambda n: (bool(_HASH_LINK.match(n)), n != first))
        return list(entries.values())

    def _reached(self) -> dict[str, list[tuple[str, int]]]:
        """File name -> the (hash, n) of each link OpenSSL's lookup takes to it: it tries `<hash>.0`,
        `.1`, ... and stops at the first that is missing or leads nowhere (by_dir.c)."""
        base, reached = os.path.normpath(self.path), {}
        held = {n for names in self._files.values() for n in names}
        for name in self._links:
            h, n = name.split(".")
            if n != "0":
                continue
            k = 0
            while (link := f"{h}.{k}") in self._links:
                full = os.path.normpath(os.path.join(base, self._links[link] or link))
                if os.path.dirname(full) == base and os.path.basename(full) in held:
                    reached.setdefault(os.path.basename(full), []).append((h, k))
                else:
                    there = in_root(os.path.join(base, link))
                    if there is None or not os.path.exists(there):
                        break  # OpenSSL's stat fails: no later number is tried
                k += 1
        return reached

    def _duplicate(self, cert, files: dict[str, Entry], reached: dict[str, list[tuple[str, int]]]) -> tuple[Entry, str]:
        """The entry of a certificate several files hold, and the file OpenSSL loads."""
        loaded = {n: e for n, e in files.items() if n in reached} or files  # none linked: all count
        h = cert.subject_hash()
        placed = sorted((k, n) for n in loaded for hh, k in reached.get(n, ()) if hh == h)
        both = " and ".join(sorted(files))
        if placed:
            k, first = placed[0]
            entry = loaded[first]
            said = f"OpenSSL's -CApath loads {first} (through {h}.{k}, its first link), so its trust is read"
        else:  # no link of its subject hash reaches them: which one is loaded cannot be told
            first = next(iter(loaded))
            entry = _distrust_wins(list(loaded.values()))
            said = "which one OpenSSL loads cannot be told, so their trust is combined, distrust winning"
        if len({(e.trust_key(), e.label) for e in files.values()}) > 1:
            self.warnings.append(f"{self.path}: {both} hold one certificate ({entry.display_label}); {said}: "
                                 "remove all but one")  # not said of copies that agree (c_rehash's)
        return entry, first

    def _folder_there(self) -> bool:
        """Whether the folder exists (a target not created yet does not). A file, or an NSS
        database's folder, is an error: read as certificate files it would be an empty store,
        which a mirror would copy onto its targets, and a sync would write files among NSS's."""
        if odd_file(self.path) == LOOP:  # not there to os.path.exists, yet no folder can be made in its place
            raise self.error(self.missing())
        if not os.path.exists(self.path):
            return False
        if not os.path.isdir(self.path):
            raise self.error(f"is not a directory; {self._not_a_folder()}")
        try:
            nss = nss_folder(self.path)
        except PermissionError as exc:  # its names may be listed, but no file of it opened: not an empty store
            raise self.error(cannot_enter(self.path, exc)) from None
        if nss:
            raise self.error(f"holds an NSS database ({nss}), not {self.holds}; name it nss:{self.path}")
        return True

    def _not_a_folder(self) -> str:
        return self.other_kind() or f"use pem:{self.path} for a bundle file"

    def _read_file(self, name: str, path: str | os.PathLike, cache: StatCache) -> Entry | None:
        known = None
        if name in cache:  # a stat only for a file read before
            try:
                known = cache.get(name, stamp(os.stat(path)))
            except OSError:
                pass  # reading it says why
        if known is not None:
            ((trusted, raw),) = known
            self.holds_trusted |= bool(trusted)
            return cached_entry(trusted, raw)
        path = os.fspath(path)
        try:
            with open(path, "rb") as file:
                data = file.read()
                st = os.fstat(file.fileno())  # after reading: a change while reading shows in it
        except OSError as exc:
            raise self.error(cannot_read(exc), path) from None
        bundle = self._bundle(path)
        found = bundle.parse(data)
        self.warnings.extend(bundle.warnings)
        self.holds_trusted |= bundle.holds_trusted
        if len(found) != 1:
            if len(found) > 1:
                self._bundled(path, len(found))
            return None  # a bundle or an empty file inside the directory: left alone
        if not bundle.warnings:
            cache.put_stat(name, st, bundle.blocks)
        (entry,) = found.values()
        return entry

    def _bundled(self, path: str, count: int) -> None:
        """A file of the folder holding several certificates (OpenSSL's -CApath reads one per file)."""

    def version(self) -> object:
        return stat_version(self.path)  # storesync adds, replaces and removes files by name: the folder changes

    def watch_paths(self) -> list[str]:
        return [self.path]

    # --- writing -----------------------------------------------------------------------------

    def write(self, plan) -> None:
        os.makedirs(self.path, exist_ok=True)
        taken, self._suffixes = set(os.listdir(self.path)), {}
        rewrite = [*plan.adds, *(after for _, after in plan.changes)]
        # A certificate known only as a hash-named copy gets a file of its own, so links can point at it.
        planned = {entry.sha256 for entry in rewrite}
        rewrite += [plan.desired[sha] for sha, names in self._files.items()
                    if sha in plan.desired and _HASH_LINK.match(names[0]) and sha not in planned]
        trusted = speaks_trusted(self)
        files = {}
        for entry in rewrite:
            names = self._files.get(entry.sha256, [])
            name = names[0] if names and not _HASH_LINK.match(names[0]) else self._new_name(entry, taken)
            taken.add(name)
            # a file there already is compared with its new bytes (not rewritten if the same)
            files[name] = render_entries([entry], trusted=trusted) if name in names else _made_when_written(entry, trusted)
            self._files[entry.sha256] = [name, *(n for n in names if n != name)]
        atomic_write_many(self.path, files, sync_dir=False)
        files = taken = planned = self._suffixes = None  # written: not held through the links
        touched = {e.sha256: e for e in [*rewrite, *plan.removals]}
        self._write_links(plan.desired, touched)
        for entry in plan.removals:  # last, so a reader never misses a certificate still wanted
            for name in self._files.pop(entry.sha256, []):
                if not _HASH_LINK.match(name):  # hash names were settled by _write_links
                    remove_file(os.path.join(self.path, name))
        fsync_dir(self.path)

    def _new_name(self, entry: Entry, taken: set[str]) -> str:
        # p11-kit's naming: every byte outside [A-Za-z0-9._-] of the UTF-8 label becomes "_".
        stem = _UNSAFE.sub(lambda m: "_" * len(m.group().encode()), entry.display_label).lstrip(".")
        stem = stem or entry.sha256[:16]
        n = self._suffixes.get(stem, 0)  # a thousand certificates of one label: not a million tries
        name = f"{stem}.{n}{self.new_suffix}" if n else f"{stem}{self.new_suffix}"
        while name in taken:
            n += 1
            name = f"{stem}.{n}{self.new_suffix}"
        self._suffixes[stem] = n + 1
        return name

    def _write_links(self, desired: TrustSet, touched: dict[str, Entry]) -> None:
        """Give every hash its links 0..n-1 with no gaps (OpenSSL stops at the first gap),
        keeping each existing correct link where it is. Only the hashes of `touched`
        certificates are computed when every other certificate already has its links."""
        target_of = {sha: names[0] for sha, names in self._files.items() if sha in desired}
        owner_of = {target: sha for sha, target in target_of.items()}
        styles = 2 if self.option("links") == "both" else 1
        by_hash: dict[str, list[tuple[int, str]]] = defaultdict(list)
        links_of: dict[str, int] = defaultdict(int)
        for name, target in self._links.items():
            owner = owner_of.get(target)
            if owner is not None:
                h, n = name.split(".")
                by_hash[h].append((int(n), owner))
                links_of[owner] += 1
        incremental = all(links_of[sha] == styles for sha in desired if sha not in touched)
        buckets: dict[str, set[str]] = defaultdict(set)
        for entry in touched.values() if incremental else desired.values():
            cert = entry.cert
            for h in {cert.subject_hash(), *([cert.subject_hash_old()] if styles == 2 else [])}:
                members = buckets[h]  # a removed certificate's hash is affected too: its links close up
                if entry.sha256 in desired:
                    members.add(entry.sha256)
        if incremental:  # the other members of an affected hash keep their places
            for h in list(buckets):
                buckets[h].update(sha for _, sha in by_hash[h] if sha not in touched)
        wanted = {} if not incremental else {
            name: target for name, target in self._links.items() if name.split(".")[0] not in buckets
        }
        for h, members in buckets.items():
            present = [sha for _, sha in sorted(by_hash[h]) if sha in members]
            for n, sha in enumerate(dict.fromkeys([*present, *sorted(members)])):
                wanted[f"{h}.{n}"] = target_of[sha]
        for name, target in wanted.items():
            if self._links.get(name) != target:
                _symlink(self.path, name, target)
        for name in set(self._links) - set(wanted):
            remove_file(os.path.join(self.path, name))
        self._links = wanted

    def snapshot(self) -> dict[str, bytes | str | None]:
        """Every file and link of the store: bytes for files, str for link targets. Named by
        absolute path, as the store's backups are keyed: a rollback may run in another folder."""
        self.read()
        base = absolute(self.path)
        shot: dict[str, bytes | str | None] = {os.path.join(base, n): t for n, t in self._links.items()}
        for names in self._files.values():
            for name in names:
                path = os.path.join(base, name)
                shot[path] = os.readlink(path) if os.path.islink(path) else read_bytes(path)
        return shot

    def restore(self, snapshot: dict[str, bytes | str | None]) -> None:
        # By file name: `owns` has made sure every path of the snapshot is in this directory.
        wanted = {os.path.basename(name): value for name, value in snapshot.items()}
        self.read()
        # Files first, then links, removals last (as `write` does): a restore that fails half way
        # (a full disk) leaves no link pointing at a file not written back.
        files = {n: v for n, v in wanted.items() if isinstance(v, bytes)}
        if files:
            atomic_write_many(self.path, files)
        for name, value in wanted.items():
            if isinstance(value, str):
                _symlink(self.path, name, value)
        current = set(self._links) | {n for names in self._files.values() for n in names}
        for name in current - set(wanted):
            remove_file(os.path.join(self.path, name))


def _distrust_wins(entries: list[Entry]) -> Entry:
    """One entry for files that hold one certificate: distrusted for what any distrusts, trusted
    for what all trust."""
    trust = {}
    for purpose in dict.fromkeys(p for e in entries for p in e.trust):
        states = [e.trust.get(purpose) for e in entries]
        if DISTRUSTED in states or all(state == TRUSTED for state in states):
            trust[purpose] = DISTRUSTED if DISTRUSTED in states else TRUSTED
    first = entries[0]
    return Entry(first.cert, trust=trust, label=first.label, extras=first.extras)


def _made_when_written(entry: Entry, trusted: bool) -> Iterator[bytes]:
    """A certificate's file, made as it is written: a large store's new files are never all
    held at once."""
    yield render_entries([entry], trusted=trusted)


def _symlink(directory: str, name: str, target: str) -> None:
    """Create or replace a symlink atomically (a reader sees the old or the new link)."""
    path = os.path.join(directory, name)
    try:
        os.symlink(target, path)  # a new name: atomic as it is
        return
    except FileExistsError:
        pass
    _, tmp = temp_beside(path, lambda tmp: os.symlink(target, tmp))  # unique: writers may race
    try:
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
