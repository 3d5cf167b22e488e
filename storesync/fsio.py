"""Writing files so that a crash or a competing writer never leaves a half-written store.

Atomic replace (temp file beside the target, fsync, rename) keeping mode and owner; many files
made durable together (one syncfs from SYNCFS_FROM files on: a directory's, or one run's records); compare-and-swap
replace; temp-file naming and the cleanup of dead runs' temp files; a file's version stamp; and
running a write as the file's owner; and the machine root (`--root`), under which links are
followed as that machine follows them.

Paths are `str` here and in every module a one-shot sync, list or check imports (os.path, not
pathlib): importing pathlib costs ~18 M instructions (urllib.parse and ipaddress with it), 7 %
of writing a new JKS from the system bundle. Functions take `str | os.PathLike`.
"""

from __future__ import annotations

import os
import stat

TYPE_CHECKING = False  # pathlib's Path only for the annotations of the machine root's functions
if TYPE_CHECKING:
    from pathlib import Path


def spelled(path: str | os.PathLike) -> str:
    """`path` as pathlib spells it (what messages show, and earlier versions kept state under):
    no empty or `.` parts, no trailing slash; `..` kept (a link's `..` is not the folder above);
    two leading slashes kept (POSIX leaves their meaning to the system), three or more are one."""
    text = os.fspath(path)
    root = "//" if text[:2] == "//" and text[2:3] != "/" else "/" * text.startswith("/")
    return root + "/".join(p for p in text.split("/") if p not in ("", ".")) or "."


def absolute(path: str | os.PathLike) -> str:
    """`path` made absolute as pathlib's `absolute()` does: from the working directory, no link followed."""
    return spelled(os.path.join(os.getcwd(), path))


def parent(path: str | os.PathLike) -> str:
    """The folder holding `path`, as pathlib's `parent` (`.` for a bare name; `/` for `/`)."""
    return spelled(os.path.dirname(os.fspath(path)))


def existing(path: str | os.PathLike) -> str:
    """`path` if it exists, else the nearest folder above it that does (at the last `.` or `/`)."""
    path = spelled(path)
    while not os.path.exists(path) and path != parent(path):
        path = parent(path)
    return path


def atomic_write(path: str | os.PathLike, data, mode: int = 0o644, sync_dir: bool = True, durable: bool = True) -> bool:
    """Replace `path` with `data` (temp file, fsync, rename); keep mode and owner. `data` is
    bytes, or pieces of bytes written as they come (a large file never whole in memory).
    Not `durable`: no flush at all (a cache, which a crash may leave old, new or empty).

    Returns False and touches nothing when the file already holds exactly these bytes (given whole).
    A caller writing many files in one directory uses `atomic_write_many` instead.
    """
    return bool(atomic_write_many(parent(path), {os.path.basename(path): data}, mode, sync_dir, durable))


CAS_ATTEMPTS = 20  # rewrites of a file another program keeps changing before giving up


def replace_if_unchanged(path: str | os.PathLike, expected: bytes | None, data, mode: int = 0o644) -> bytes | None:
    """`atomic_write` of `data` (bytes, or pieces of bytes written as they come: a large store is
    never whole in memory), only if `path` still holds the bytes whose `digest_of` is `expected`
    (None: does not exist). Returns the digest of what it holds then; None, and nothing changed,
    if another program wrote it. A program that rewrites the file in place (keytool does) just
    as it is replaced wrote into the replaced file: its bytes are put back and None returned, so
    the caller starts again from them."""
    path = os.fspath(path)
    folder = parent(path)
    remove_dead_temps(folder)
    tmp, written = _staged(path, _file_stat(path), [data] if isinstance(data, (bytes, bytearray)) else data, mode,
                           fsync=True, digested=True)
    try:
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except FileNotFoundError:
            if expected is not None:
                return None
            try:
                os.link(tmp, path)  # unlike a rename, never replaces a file created meanwhile
            except FileExistsError:
                return None
            except OSError:  # a filesystem without hard links: a rename it is
                os.replace(tmp, path)
                tmp = None
            _sync_replaced(folder)
            return written
        try:
            before = os.fstat(fd)
            with os.fdopen(os.dup(fd), "rb") as file:
                now = file_digest(file)
            if now == written:
                return written  # it holds these bytes already
            if now != expected:
                return None
            os.replace(tmp, path)
            tmp = None
            _sync_replaced(folder)
            after = os.fstat(fd)
            if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
                import time

                time.sleep(0.05)  # let it finish writing
                atomic_write(path, _read_fd(fd), mode)
                return None
            return written
        finally:
            os.close(fd)
    finally:
        if tmp is not None:
            remove_file(tmp)


def digest_of(data: bytes | None) -> bytes | None:
    """What a file store keeps of the bytes it read, to see whether the file changed since:
    a digest, not a second copy of a large file for the whole run."""
    import hashlib

    return None if data is None else hashlib.blake2b(data, digest_size=32).digest()


def file_digest(file) -> bytes:
    """`digest_of` an open file's bytes from where it is, read in pieces (of 64 KiB: not
    `hashlib.file_digest`'s 256 KiB buffer, more than a small store's whole file)."""
    import hashlib

    hasher = hashlib.blake2b(digest_size=32)
    while chunk := file.read(1 << 16):
        hasher.update(chunk)
    return hasher.digest()


_deferred: list[str] | None = None  # folders whose renames `folders_synced_together` syncs at its end


class folders_synced_together:
    """Within it, `replace_if_unchanged` leaves the folder sync after its rename to the end,
    where every such folder is synced at once (one syncfs from two on). The file's bytes are
    still flushed before its rename, so a crash leaves each file old or new either way; the
    engine leaves the block only when every store of the run is written and read back."""

    def __enter__(self):
        global _deferred
        _deferred = []
        return self

    def __exit__(self, kind, exc, tb):
        global _deferred
        folders, _deferred = list(dict.fromkeys(_deferred)), None
        if kind is None and not (len(folders) > 1 and _syncfs_all(folders)):
            for folder in folders:
                fsync_dir(folder)


def _sync_replaced(folder: str) -> None:
    if _deferred is None:
        fsync_dir(folder)
    else:
        _deferred.append(folder)


def _read_fd(fd: int) -> bytes:
    chunks, offset = [], 0
    while True:
        chunk = os.pread(fd, 1 << 20, offset)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        offset += len(chunk)


#: From this many files on, one syncfs (one journal flush) replaces an fsync per file.
SYNCFS_FROM = 16


def atomic_write_many(directory: str | os.PathLike, files: dict, mode: int = 0o644, sync_dir: bool = True,
                      durable: bool = True) -> list[str]:
    """Replace files of one directory, each atomically, and make them durable together:
    all temp files are written first, flushed to disk, and only then renamed into place, so
    a crash leaves every file old or new and a rename never exposes unwritten data. A file's
    bytes may be pieces made as it is written. Files already holding their bytes (given
    whole) are not touched; returns the names written."""
    os.makedirs(directory, exist_ok=True)
    written = atomic_write_paths({os.path.join(directory, name): data for name, data in files.items()}, mode, sync_dir,
                                 durable)
    return [os.path.basename(path) for path in written]


def atomic_write_paths(files: dict, mode: int = 0o644, sync_dir: bool = True, durable: bool = True) -> list:
    """`atomic_write_many` for files of any directories (which must exist): every temp file is
    written and flushed before the first rename, and the folders are synced after the last,
    so one run's records cost one flush, not two per file. `files`: {path: bytes}; returns the
    paths written, as given."""
    staged: list[tuple[str, str | os.PathLike]] = []
    batch = len(files) >= SYNCFS_FROM
    folders = list(dict.fromkeys(parent(path) for path in files))
    for folder in folders:
        remove_dead_temps(folder)
    try:
        for path, data in files.items():
            tmp = _stage(path, data, mode, fsync=durable and not batch)
            if tmp is not None:
                staged.append((tmp, path))
        if not staged:
            return []
        if durable and batch and not _syncfs_all(folders):
            for tmp, _ in staged:
                _fsync(tmp)
        for tmp, path in staged:
            os.replace(tmp, path)
    except BaseException:
        for tmp, _ in staged:
            remove_file(tmp)
        raise
    if sync_dir and durable:
        renamed = list(dict.fromkeys(parent(path) for _, path in staged))
        if not (batch and len(renamed) > 1 and _syncfs_all(renamed)):  # one flush for many folders
            for folder in renamed:
                fsync_dir(folder)
    return [path for _, path in staged]


def _stage(path: str | os.PathLike, data, mode: int, fsync: bool) -> str | None:
    """A temp file beside `path` holding `data` (bytes, or pieces of bytes written as they come),
    with `path`'s mode and owner, synced to disk if `fsync` (None: the file already holds `data`)."""
    st = _file_stat(path)
    whole = isinstance(data, (bytes, bytearray))
    if st is not None and whole:
        try:
            if st.st_size == len(data) and read_bytes(path) == data:
                return None
        except OSError:
            pass
    return _staged(path, st, [data] if whole else data, mode, fsync)[0]


def _file_stat(path: str | os.PathLike) -> os.stat_result | None:
    """The stat of the file a write replaces (None: there is none, or it is a link: the link itself
    is replaced, and its target's bytes, mode and owner are not this file's)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    return None if stat.S_ISLNK(st.st_mode) else st


def _staged(path: str | os.PathLike, st: os.stat_result | None, pieces, mode: int, fsync: bool,
            digested: bool = False) -> tuple[str, bytes | None]:
    """(a temp file beside `path` holding the pieces of bytes as they come, with the mode and
    owner of `st` (else `mode`), synced to disk if `fsync`; their `digest_of` if `digested`)."""
    import hashlib

    hasher = hashlib.blake2b(digest_size=32) if digested else None
    fd, tmp = _create_temp(path)
    try:
        try:  # the descriptor itself, not a file object: a fresh directory stages hundreds of files
            if st is not None:
                os.fchmod(fd, st.st_mode & 0o7777)
                if (st.st_uid, st.st_gid) != (os.getuid(), os.getgid()):
                    os.fchown(fd, st.st_uid, st.st_gid)
            else:
                os.fchmod(fd, mode)
            held = bytearray()  # small pieces (a certificate each) written and hashed 64 KiB at a time
            for piece in pieces:
                if len(piece) >= 1 << 16:  # a large one as it is: no copy
                    held = _put(fd, hasher, held)
                    _put(fd, hasher, piece)
                    continue
                held += piece
                if len(held) >= 1 << 16:
                    held = _put(fd, hasher, held)
            _put(fd, hasher, held)
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        remove_file(tmp)
        raise
    return tmp, hasher.digest() if hasher is not None else None


def _put(fd: int, hasher, data) -> bytearray:
    """Write and hash `data`; returns an empty buffer for the small pieces that follow."""
    if data:
        with memoryview(data) as view:
            done = 0
            while done < len(view):  # a write may take less than it was given
                done += os.write(fd, view[done:])
        if hasher is not None:
            hasher.update(data)
    return bytearray()


LOOP = "a symbolic link loop"


def odd_file(path: str | os.PathLike) -> str | None:
    """What is at `path` when it is nothing a file can be read from, in words for a message:
    `LOOP`, "a character device", "a FIFO", "a socket", "a block device"; None: a regular file, a
    folder (what it is to the caller, the caller says), or nothing. A device may never end
    (/dev/zero fills memory) and a FIFO waits for a writer that may never come; an anonymous pipe
    (`<(...)`: /dev/fd/N) is read, its writer is there already."""
    import errno

    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        return LOOP if exc.errno == errno.ELOOP else None  # other errors: the open that follows says them
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    if stat.S_ISFIFO(mode):
        if os.path.basename(os.path.realpath(path)).startswith("pipe:"):  # /proc/self/fd/N links to pipe:[inode]
            return None
        return "a FIFO"
    return "a character device" if stat.S_ISCHR(mode) else "a block device" if stat.S_ISBLK(mode) else "a socket"


def read_bytes(path: str | os.PathLike) -> bytes:
    """A file's bytes (pathlib's `read_bytes`, without pathlib)."""
    with open(path, "rb") as file:
        return file.read()


def remove_file(path: str | os.PathLike) -> None:
    """Remove a file if it is there (pathlib's `unlink(missing_ok=True)`)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def temp_beside(path: str | os.PathLike, create):
    """(what `create(name)` returns, name) for a new temp name beside `path`, `.NAME.PID-N.tmp`;
    `create` raises FileExistsError for a name taken. The pid tells a later run whether the
    writer died (see `remove_dead_temps`)."""
    folder, name = os.path.split(os.fspath(path))
    prefix = f"{folder or '.'}/.{_temp_stem(name)}.{os.getpid()}-"
    for attempt in range(100):
        tmp = f"{prefix}{attempt}.tmp"
        try:
            return create(tmp), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {path}")


def _temp_stem(name: str) -> str:
    """`name` as its temp names hold it: whole, or, when `.NAME.PID-N.tmp` would pass the 255
    bytes a file name may have, its first 200 bytes and a digest of the whole."""
    raw = os.fsencode(name)
    if len(raw) <= 255 - len(".-99.tmp.4194304"):  # the longest pid Linux gives, the last attempt
        return name
    import hashlib

    return os.fsdecode(raw[:200] + b"~" + hashlib.blake2b(raw, digest_size=8).hexdigest().encode())


def _create_temp(path: str | os.PathLike) -> tuple[int, str]:
    # What tempfile.mkstemp does, without importing tempfile (and random, shutil) on every run.
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    return temp_beside(path, lambda tmp: os.open(tmp, flags, 0o600))


def remove_dead_temps(directory: str | os.PathLike) -> None:
    """Remove the temp files that runs killed mid-write left in `directory` (those whose
    writer is gone); a live writer's are its own. Called by writers, under the store's lock."""
    try:
        listing = os.scandir(directory)
    except OSError:
        return
    with listing:
        for item in listing:
            name = item.name
            if not (name.startswith(".") and name.endswith(".tmp")):
                continue
            pid, _, attempt = name[:-4].rpartition(".")[2].partition("-")
            if pid.isdigit() and attempt.isdigit() and int(pid) != os.getpid() and not _running(int(pid)):
                try:
                    os.unlink(item.path)
                except OSError:
                    pass  # not ours to remove after all (another owner, a read-only folder)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # someone else's process: alive
    return True


def _syncfs(directory: str | os.PathLike) -> bool:
    """Flush the whole filesystem holding `directory` (Linux syncfs); False where there is none."""
    try:
        import ctypes

        syncfs = ctypes.CDLL(None, use_errno=True).syncfs
    except (ImportError, OSError, AttributeError):
        return False
    fd = os.open(directory, os.O_RDONLY)
    try:
        if syncfs(fd) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, os.strerror(errno), str(directory))
        return True
    finally:
        os.close(fd)


def _syncfs_all(folders: list) -> bool:
    """`_syncfs` once per filesystem holding one of `folders`."""
    by_device = {os.stat(folder).st_dev: folder for folder in folders}
    return all(_syncfs(folder) for folder in by_device.values())


def stat_version(path: str | os.PathLike) -> tuple | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return ()
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def _fsync(path: str | os.PathLike) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(directory: str | os.PathLike) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- writing as the file's owner -----------------------------------------------------------


def owner_of(path: str | os.PathLike) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_uid, st.st_gid


def run_as(owner: tuple[int, int], fn, failed) -> None:
    """Run `fn` in a child process with `owner`'s uid and gid, so every file it creates (SQLite's
    journals) belongs to that user. An exception in the child comes back as `failed(its text)`."""
    import pickle
    import pwd  # here: the child imports nothing (what a fork imports is not the parent's)

    uid, gid = owner
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        status = 0
        try:
            os.close(read_end)
            try:
                os.initgroups(pwd.getpwuid(uid).pw_name, gid)
            except (KeyError, OSError):
                os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            fn()
            payload = pickle.dumps(None)
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            payload = pickle.dumps(str(exc))
            status = 1
        try:
            os.write(write_end, payload)
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    message = pickle.loads(data) if data else "the writer process died"
    if status != 0 or message is not None:
        raise failed(str(message))


# --- the machine root: --root DIR re-bases the paths of the machine (storesync.discover) ---

_root: Path | None = None  # --root; else $STORESYNC_ROOT


def set_root(root: str | os.PathLike | None) -> None:
    global _root
    _root = None
    if root:
        from pathlib import Path  # here (and below): the machine root is discovery's, off a plain sync's start-up

        _root = Path(root)


def machine_root() -> Path | None:
    """The directory the machine's paths are under (None: /): --root, else $STORESYNC_ROOT."""
    if _root is not None:
        return _root
    env = os.environ.get("STORESYNC_ROOT")
    if not env:
        return None
    from pathlib import Path

    return Path(env)


def at_root(path: str | os.PathLike) -> Path:
    """`path` of the machine, under its root."""
    from pathlib import Path

    root = machine_root()
    return Path(path) if root is None else root / str(path).lstrip("/")


def in_root(path: str | os.PathLike) -> str | os.PathLike | None:
    """Under a machine root, `path` with its links followed as that machine follows them: an
    absolute target is under the root (Debian's JDKs link `cacerts` to /etc/ssl/certs/java/cacerts,
    which is the root's, never this machine's). None: it leads nowhere there."""
    root = machine_root()
    if root is None or not os.path.islink(path) and os.path.realpath(path) == os.path.abspath(path):
        return path
    from pathlib import Path

    base = Path(os.path.abspath(root))
    try:
        todo = list(Path(os.path.abspath(path)).relative_to(base).parts)
    except ValueError:
        return path  # not under the root (a --java-home is taken as given)
    current, hops = base, 0
    while todo:
        part = todo.pop(0)
        if part == "..":
            current = current.parent if current != base else base
            continue
        step = current / part
        if not step.is_symlink():
            current = step
            continue
        hops += 1
        if hops > 40:
            return None
        target = os.readlink(step)
        if target.startswith("/"):
            current = base
        todo = [p for p in Path(target).parts if p not in ("/", ".")] + todo
    return current if current.exists() else None
