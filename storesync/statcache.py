"""What the files of a store held when last read, keyed by their stat data, as git's index does:
a file whose size, mtime, ctime, inode and device are those recorded holds what it held then,
so a large store that has not changed is not parsed again.

A cache only: kept in the state dir (`statcache/`, one file per store), it is ignored when
absent, damaged, written by another version, or not the user's own, and failing to save it
loses nothing. It never hides a change: any write to a file changes its mtime and ctime
(a restored mtime still changes the ctime, which no user can set; a chmod too), a file
replaced by a rename has another inode, and a file whose timestamps were within `RACY_NS` of
the moment it was read is not recorded at all, since a change within the same clock tick could
leave its stamp as it was (git's "racy clean" entries).
"""

from __future__ import annotations

import os
import stat
import struct
import time
from collections.abc import Iterator

from storesync import __version__
from storesync.fsio import atomic_write
from storesync.state import _key, in_state

#: Timestamps closer than this to the read are not trusted to show a later change: file systems
#: keep them in ticks (a few ms on ext4, 1 s on ext3 and HFS+, 2 s on FAT).
RACY_NS = 2_000_000_000
_MAGIC = f"storesync statcache 2 {__version__}\n".encode()
_FILE = struct.Struct(">HBI")  # name length, stamp length, records
_RECORD = struct.Struct(">BI")  # flags, length
_STAT = struct.Struct(">QqqQQ")

Records = list  # [(flags, bytes)]: what the file held, in the form its store wants back


def stamp(st: os.stat_result) -> bytes:
    """What any change to a file changes: size, mtime, ctime, inode and device."""
    return _STAT.pack(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)


class StatCache:
    """The cache of one store, keyed by its spec key: `get` what a file held if its stamp is
    unchanged, `put` what it holds now; `save` keeps only the files seen in this read. A stamp
    is `stamp(os.stat(file))`, or a digest of the file's bytes for a store that reads them anyway."""

    def __init__(self, store_key: str):
        self.path = in_state("statcache", _key(store_key))
        self.now = time.time_ns()
        self._old: dict[str, tuple[bytes, Records]] = {}
        self._new: dict[str, tuple[bytes, Records]] = {}
        self._dirty = False
        try:
            self._old = _load(self.path)
        except Exception:  # noqa: BLE001 - a cache that cannot be read is no cache
            self._old = {}

    def __contains__(self, name: str) -> bool:
        """Whether `name` was recorded: a file never read before needs no stamp to look it up."""
        return name in self._old

    def get(self, name: str, key: bytes) -> Records | None:
        known = self._old.get(name)
        if known is None or known[0] != key:
            return None
        self._new[name] = known
        return known[1]

    def put(self, name: str, key: bytes, records: Records) -> None:
        self._dirty = True
        self._new[name] = (key, records)

    def put_stat(self, name: str, st: os.stat_result, records: Records) -> None:
        """Record what `name` held, by its stat taken after reading it."""
        if max(st.st_mtime_ns, st.st_ctime_ns) >= self.now - RACY_NS:
            self._dirty |= name in self._old  # its old record must go; a new file: nothing to save yet
            return  # racy: a change in the same tick would keep this stamp
        self.put(name, stamp(st), records)

    def save(self) -> None:
        if not self._dirty and len(self._new) == len(self._old):
            return  # every file as recorded: nothing to write
        try:
            atomic_write(self.path, _dump(self._new), mode=0o600, durable=False)  # lost in a crash: read again
        except OSError:
            pass  # only a cache: the next read parses again


def _dump(files: dict[str, tuple[bytes, Records]]) -> Iterator[bytearray]:
    """The cache file in pieces of about 16 KiB, written as they come: never a second copy of
    every record."""
    out = bytearray(_MAGIC + len(files).to_bytes(4, "big"))
    pack = _RECORD.pack
    for name, (key, records) in files.items():
        encoded = name.encode("utf-8", "surrogateescape")
        out += _FILE.pack(len(encoded), len(key), len(records)) + encoded + key
        for flags, data in records:
            out += pack(flags, len(data))
            out += data
            if len(out) >= 1 << 14:
                yield out
                out = bytearray()
    yield out


def _load(path) -> dict[str, tuple[bytes, Records]]:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb", buffering=1 << 16) as file:  # read in pieces: never the whole file and its records at once
        st = os.fstat(fd)
        if st.st_uid != os.geteuid() or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            return {}  # someone else's file could make a store say what it does not
        read = file.read
        if read(len(_MAGIC)) != _MAGIC:
            return {}  # another version's, or not ours
        count = int.from_bytes(read(4), "big")
        files = {}
        unpack_file, unpack_record = _FILE.unpack, _RECORD.unpack
        file_size, record_size = _FILE.size, _RECORD.size
        for _ in range(count):
            name_length, key_length, n = unpack_file(read(file_size))
            name = read(name_length)
            key = read(key_length)
            if len(name) != name_length or len(key) != key_length:
                raise ValueError("truncated")
            records = []
            for _ in range(n):
                flags, length = unpack_record(read(record_size))
                data = read(length)
                if len(data) != length:
                    raise ValueError("truncated")
                records.append((flags, data))
            files[name.decode("utf-8", "surrogateescape")] = (key, records)
        if read(1):
            raise ValueError("trailing bytes")  # damaged: read everything
    return files
