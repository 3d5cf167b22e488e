"""The command line: `main` and `entry` (the entry point, `storesync = "storesync.cli:entry"`), its quick
parser; one module per command beside it (storesync.cli.list, .diff, .sync, .rollback, .check,
.status, .daemon), and the typer app assembled from them in storesync.cli.app.

A one-shot `storesync sync` spends most of its time starting up, and importing typer costs as
much as all the rest. So `main` first tries `quick_parse`, which knows only the plain forms of
list, diff, sync and check (their arguments and options, nothing else), and calls the command's
`run` directly. Everything else (help, other commands, a mistake) goes to the typer app in
`storesync.cli.app`, which declares the same commands with the same defaults and forwards to
the same functions (`run` in storesync.cli.list, .diff, .sync, .check); a test holds the two parsers
to the same result. Exit codes: storesync.model (EXIT_*).
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # typing's, without importing typing at start-up
if TYPE_CHECKING:
    from typing import Any


def main() -> None:
    if sys.stdout is None:  # started with fd 1 closed (`>&-`): a file opened later would take it
        from storesync.cli.common import fail

        fail("cannot write the output to standard output (it is closed); nothing was done; "
             "send it somewhere, even > /dev/null")
    try:
        try:
            quick = quick_parse(sys.argv[1:])
            if quick is None:
                from storesync.cli.app import run

                run()
            else:
                import gc

                # One short run: what it reads lives to its end, and the default thresholds scan
                # it all again and again (full collections grow with the heap: 40 % of reading
                # 100 000 certificates). Cycles are rare here; the daemon keeps the defaults.
                gc.set_threshold(100_000, 50, 1000)
                command, arguments = quick
                if command == "list":
                    from storesync.cli.list import run
                elif command == "diff":
                    from storesync.cli.diff import run
                elif command == "check":
                    from storesync.cli.check import run
                else:
                    from storesync.cli.sync import run
                try:
                    run(**arguments)
                finally:
                    # What the run made lives to the end of the process, whose memory the OS takes
                    # back whole; Python's exit would first scan all of it for cycles (a tenth of
                    # a one-shot sync's CPU). Frozen objects are still freed as they always are.
                    gc.freeze()
        finally:
            sys.stdout.flush()  # a reader gone away shows here, not in Python's exit
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:
        from storesync.cli.common import closed_pipe

        closed_pipe()
    except OSError as exc:
        from storesync.cli.common import unwritable_output

        unwritable_output(exc)  # returns when the error was not standard output's
        raise
    except Exception as exc:
        from storesync.model import StoreError  # imported already by whatever raised it

        if not isinstance(exc, StoreError):
            raise
        from storesync.cli.common import fail

        fail(str(exc))  # one a command does not catch itself (a state dir it cannot use): a sentence


def entry() -> None:
    """`main`, then leave the process without Python's finalization: tearing down every module
    costs a one-shot run several milliseconds (12 ms once `cryptography.x509` is imported) and
    frees nothing the OS does not. Exit handlers still run and the output is flushed; with other
    threads alive the exit is Python's own. Tests call `main`, which raises SystemExit as usual."""
    import os

    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code
    import _thread

    if _thread._count():  # threads still running (threading's or _thread's own)
        sys.exit(code)
    if code is None:
        code = 0
    elif not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    import atexit

    atexit._run_exitfuncs()  # CPython's own exit runs these first too
    try:
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:  # None: started with that fd closed
                stream.flush()
    except BrokenPipeError:
        code = code or 1
    os._exit(code)


# --- the quick parser ------------------------------------------------------------------------



def path(text: str) -> str:
    """An option naming a file, kept as typed: typer's gives a Path, and every command takes either
    (a str here: pathlib is not imported on this path, see storesync.fsio)."""
    return text


_PASSWORD_FILE = {"--password-file": ("password_file", path)}
_JSON = {"--json": ("as_json", bool)}
_STATE_DIR = {"--state-dir": ("state_dir", path)}
#: command -> (positional parameters, options). A positional "name?" may be left out, "*name"
#: takes the remaining words; an option maps to (parameter, type), bool means a flag and tuple a
#: repeatable option (its values collected in a tuple).
QUICK_FORMS: dict[str, tuple[list[str], dict[str, tuple[str, type]]]] = {
    "list": (["store"], {"--expiring": ("expiring", int), "--expired": ("expired", bool), **_JSON, **_PASSWORD_FILE,
             **_STATE_DIR}),
    "diff": (["store_a", "store_b"], {**_JSON, **_PASSWORD_FILE, **_STATE_DIR}),
    "sync": (["source?", "*targets"], {
        "--profile": ("profile", str), "--config": ("config", path), **_STATE_DIR,
        "--mode": ("mode", str), "--purpose": ("purpose", str), "--dry-run": ("dry_run", bool),
        "--force": ("force", bool), "--allow-empty": ("allow_empty", bool), "--only": ("only", tuple),
        "--root": ("root", path), "--python": ("python", tuple),
        **_JSON, **_PASSWORD_FILE,
    }),
    "check": (["cert"], {
        "--chain": ("chain", tuple), "--store": ("stores", tuple), "--crl": ("crls", tuple),
        "--purpose": ("purpose", str), "--at": ("at", str), "--name": ("name", str), "--server": ("server", str),
        "--nginx-conf": ("nginx_conf", path), "--apache-conf": ("apache_conf", path), "--python": ("python", tuple),
        "--config": ("config", str), **_JSON, **_PASSWORD_FILE, **_STATE_DIR,
    }),
}


def quick_parse(argv: list[str]) -> tuple[str, dict[str, Any]] | None:
    """(command, its arguments) for a plain list/diff/sync/check command line; None: typer's to parse."""
    if not argv or argv[0] not in QUICK_FORMS:
        return None
    positional, options = QUICK_FORMS[argv[0]]
    arguments: dict[str, Any] = {}
    words: list[str] = []
    rest = iter(argv[1:])
    for arg in rest:
        if not arg.startswith("-"):
            words.append(arg)
            continue
        name, has_value, value = arg.partition("=")
        if name not in options:
            return None  # --help, --, -x, a typo: typer explains
        parameter, kind = options[name]
        if kind is bool:
            if has_value:
                return None
            arguments[parameter] = True
            continue
        if not has_value:
            value = next(rest, None)
            if value is None or value.startswith("-"):
                return None
        if not value:
            return None
        if kind is tuple:
            arguments[parameter] = (*arguments.get(parameter, ()), value)
            continue
        try:
            arguments[parameter] = kind(value)
        except ValueError:
            return None
    required = [n for n in positional if n[-1] != "?" and n[0] != "*"]
    if len(words) < len(required) or (positional[-1][0] != "*" and len(words) > len(positional)):
        return None
    for name, word in zip(positional, words):
        if name[0] == "*":
            arguments[name[1:]] = words[len(positional) - 1:]
            break
        arguments[name.rstrip("?")] = word
    return argv[0], arguments
