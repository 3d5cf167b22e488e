"""What the commands share: one-sentence errors, opening a store to read, JSON and trust text."""

from __future__ import annotations

import sys

from storesync.model import ANCHOR, DISTRUST, EXIT_ERROR, MAX_DAYS, StoreError

TYPE_CHECKING = False  # typing's, without importing typing at start-up
if TYPE_CHECKING:
    import os
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


def unwritable_output(exc: OSError) -> None:
    """Standard output takes nothing (a full disk, `> /dev/full`): say so in one line and end
    with exit 2. Returns when `exc` is not that. A store's own failures reach here only as
    StoreErrors (the full-disk campaign holds that), so an unnamed full or failing device here is
    standard output's; a failed write that left its text in the buffer fails again to flush."""
    import errno
    import os

    read_only = exc.errno == errno.EBADF and exc.filename is None and _read_only(sys.stdout.fileno())
    try:
        sys.stdout.flush()
        if not read_only and (exc.filename is not None or
                              exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO)):
            return
    except OSError:
        pass
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())  # its buffer must not fail again on the way out
    done = "; what a sync wrote to its stores stays written" if "sync" in sys.argv[1:2] else ""
    if read_only:  # `1</dev/null`
        fail(f"cannot write the output to standard output (it is open for reading only); send it with > instead{done}")
    fail(f"cannot write the output to standard output ({exc.strerror or exc}); "
         f"send it where there is room, or free some there{done}")


def _read_only(fd: int) -> bool:
    import fcntl
    import os

    try:
        return fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDONLY
    except OSError:
        return False


def shown(entry) -> str:
    """An entry's label as a terminal shows it: control characters (an escape sequence in a
    keystore alias or a friendly name, a newline) as `?`, so a store's labels cannot move the
    cursor, recolour or fake lines of the output. `--json` keeps labels whole, escaped."""
    label = entry.display_label
    return label if label.isprintable() else "".join(c if c.isprintable() or c == " " else "?" for c in label)


_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_@%+=:,./-")


def quote(word: str) -> str:
    """`shlex.quote`, for the command a write prints to undo it: importing shlex (and compiling
    its pattern) is a hundredth of a fresh directory's whole sync."""
    if word and all(c in _SAFE for c in word):
        return word
    return "'" + word.replace("'", "'\"'\"'") + "'"


def print_plan(plan, readded=frozenset()) -> None:
    """A plan's lines for people: + added (`readded`: storesync wrote it before and someone
    removed it), - removed, ~ trust changed (or rewritten, and why), ! what a store cannot keep."""
    for entry in plan.adds:
        again = "  re-added (removed since storesync's last write)" if entry.sha256 in readded else ""
        print(f"  + {shown(entry)}  {entry.sha256[:16]}{again}")
    for entry in plan.removals:
        print(f"  - {shown(entry)}  {entry.sha256[:16]}")
    for before, after in plan.changes:
        why = plan.rewrites.get(after.sha256)
        print(f"  ~ {shown(after)}: {why or f'{trust_text(before)} -> {trust_text(after)}'}")
    for loss in plan.losses:
        print(f"  ! {shown(loss.entry)}: {loss.what}")


def print_columns(lines, right: set[int]) -> None:
    """Plain aligned text, two spaces in: nothing is cut, and 10 000 rows print at once (a rich
    table measures every cell: 4x a `list --json` of the same store)."""
    cells = [[str(c) for c in line] for line in lines]
    sizes = [[_width(c) for c in row] for row in cells]
    widths = [max(size[i] for size in sizes) for i in range(len(cells[0]))]
    for row, size in zip(cells, sizes):
        padded = (" " * (w - n) + c if i in right else c + " " * (w - n) for i, (c, n, w) in enumerate(zip(row, size, widths)))
        print("  " + "  ".join(padded).rstrip())


def _width(text: str) -> int:
    """Terminal cells `text` takes: a wide (CJK) character two, a combining mark none."""
    if text.isascii():
        return len(text)
    import unicodedata

    return sum(0 if unicodedata.combining(ch) or unicodedata.category(ch) in ("Mn", "Me", "Cf")
               else 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1 for ch in text)


NO_CONFIG = "no config file found; pass --config FILE or set $STORESYNC_CONFIG (see the README)"


def fail(message: str) -> NoReturn:
    print(f"storesync: {message}", file=sys.stderr)
    sys.exit(EXIT_ERROR)


def check_days(option: str, days: Optional[int]) -> None:
    """A number of days ahead (--expiring, --soon): past what a date holds it was a traceback,
    and below 0 an answer that is always empty."""
    if days is not None and not 0 <= days <= MAX_DAYS:
        fail(f"{option} takes a whole number of days from 0 to {MAX_DAYS}, not {days}; give one in that range")


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


def open_and_read(spec: str, password_file: Optional[str | os.PathLike], named_at: str | None = None):
    """Open an existing store and read it; every expected failure becomes one sentence and exit 2
    (after `named_at`, where a config file names the store)."""
    from storesync.stores import open_store, read_store

    defaults = {"password-file": str(password_file)} if password_file else {}
    try:
        store = open_store(spec, defaults)
        if not store.exists():
            raise store.error(store.missing())
        trust_set = read_store(store)
    except StoreError as exc:
        fail(f"{named_at}: {exc}" if named_at else str(exc))
    except PermissionError as exc:
        fail(f"{named_at + ': ' if named_at else ''}{spec}: permission denied reading {exc.filename or spec}; "
             "run as a user who may read it")
    for warning in store.warnings:
        print(f"storesync: warning: {warning}", file=sys.stderr)
    return store, trust_set


def print_json(data) -> None:
    """Print `data` as JSON, streamed: the top-level object (or list) one member per line, a list
    in it one element per line, each member or element written compactly by json's C encoder
    (`indent` selects its pure-Python one: 5x slower, and it builds the whole text first). A list
    may be any iterator (a generator of certificates is never held whole). One certificate per
    line, valid JSON all the same."""
    from json import dumps

    write = sys.stdout.write
    if isinstance(data, dict):
        write("{")
        for i, (key, value) in enumerate(data.items()):
            write(f'{"," if i else ""}\n  {dumps(str(key))}: ')
            _write_value(value, "  ", dumps, write)
        write("\n}\n" if data else "}\n")
    else:
        _write_value(data, "", dumps, write)
        write("\n")


def _write_value(value, indent: str, dumps, write) -> None:
    if not isinstance(value, (list, tuple)) and not hasattr(value, "__next__"):
        write(dumps(value))
        return
    opened = False
    for item in value:
        write(f'{"," if opened else "["}\n{indent}  {dumps(item)}')
        opened = True
    write(f"\n{indent}]" if opened else "[]")


def iso(value) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def entry_json(entry, fixed: "dict[str, str] | None" = None) -> dict[str, Any]:
    """`fixed`: sha256 -> the entry it is trusted through, for those no sync copies (`Store.with_fixed`)."""
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
        **({"fixed": fixed[entry.sha256]} if fixed and entry.sha256 in fixed else {}),
    }


def trust_text(entry) -> str:
    if dict(entry.trust) == ANCHOR:
        return "anchor"
    if dict(entry.trust) == DISTRUST:
        return "distrusted"
    return ", ".join(f"{'+' if s == 'trusted' else '-'}{p}" for p, s in sorted(entry.trust.items()))
