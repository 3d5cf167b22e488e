"""The command line: `main`, and the everyday commands (list, diff, sync) without typer.

A one-shot `storesync sync` spends most of its time starting up, and importing typer costs as
much as all the rest. So `main` first tries `quick_parse`, which knows only the plain forms of
list, diff and sync (their stores and options, nothing else), and calls the command here
directly. Everything else (help, other commands, a mistake) goes to the typer app in
`storesync.cli_app`, which declares the same commands with the same defaults and forwards to
these functions; a test holds the two parsers to the same result.

Exit codes: 0 done / equal / nothing to do; 1 different, or changes pending in --dry-run;
2 error; 3 a guard held a change back.
"""

from __future__ import annotations

import sys
from pathlib import Path
from storesync.model import StoreError

TYPE_CHECKING = False  # typing's, without importing typing at start-up
if TYPE_CHECKING:
    from typing import Any, NoReturn, Optional

EXIT_OK, EXIT_DIFFERENT, EXIT_ERROR, EXIT_HELD = 0, 1, 2, 3


def main() -> None:
    try:
        try:
            quick = quick_parse(sys.argv[1:])
            if quick is None:
                from storesync.cli_app import app

                app()
            else:
                command, arguments = quick
                {"list": list_command, "diff": diff, "sync": sync}[command](**arguments)
        finally:
            sys.stdout.flush()  # a reader gone away shows here, not in Python's exit
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:
        closed_pipe()


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


# --- the quick parser ------------------------------------------------------------------------

_PASSWORD_FILE = {"--password-file": ("password_file", Path)}
_JSON = {"--json": ("as_json", bool)}
#: command -> (positional parameters, options). A positional "name?" may be left out, "*name"
#: takes the remaining words; an option maps to (parameter, type), bool means a flag and tuple a
#: repeatable option (its values collected in a tuple).
QUICK_FORMS: dict[str, tuple[list[str], dict[str, tuple[str, type]]]] = {
    "list": (["store"], {"--expiring": ("expiring", int), "--expired": ("expired", bool), **_JSON, **_PASSWORD_FILE}),
    "diff": (["store_a", "store_b"], {**_JSON, **_PASSWORD_FILE}),
    "sync": (["source?", "*targets"], {
        "--profile": ("profile", str), "--config": ("config", Path), "--state-dir": ("state_dir", Path),
        "--mode": ("mode", str), "--purpose": ("purpose", str), "--dry-run": ("dry_run", bool),
        "--force": ("force", bool), "--allow-empty": ("allow_empty", bool), "--only": ("only", tuple),
        **_JSON, **_PASSWORD_FILE,
    }),
}


def quick_parse(argv: list[str]) -> tuple[str, dict[str, Any]] | None:
    """(command, its arguments) for a plain list/diff/sync command line; None: typer's to parse."""
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


# --- shared by the commands ------------------------------------------------------------------


def fail(message: str) -> NoReturn:
    print(f"storesync: {message}", file=sys.stderr)
    sys.exit(EXIT_ERROR)


def open_and_read(spec: str, password_file: Optional[Path]):
    """Open an existing store and read it; every expected failure becomes one sentence and exit 2."""
    from storesync.stores import open_store, read_store

    defaults = {"password-file": str(password_file)} if password_file else {}
    try:
        store = open_store(spec, defaults)
        if not store.exists():
            raise store.error("does not exist")
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
    from storesync.model import ANCHOR, DISTRUST

    if dict(entry.trust) == ANCHOR:
        return "anchor"
    if dict(entry.trust) == DISTRUST:
        return "distrusted"
    return ", ".join(f"{'+' if s == 'trusted' else '-'}{p}" for p, s in sorted(entry.trust.items()))


# --- the commands (their help texts are in cli_app) ------------------------------------------


def list_command(store: str, expiring: Optional[int] = None, expired: bool = False, as_json: bool = False,
                 password_file: Optional[Path] = None) -> None:
    from storesync.engine.plan import lift

    opened, trust_set = open_and_read(store, password_file)
    trust_set = lift(trust_set, opened.capabilities, opened.purpose)  # as diff and sync read it
    if expiring is not None or expired:
        from storesync.doctor import expiry_filter

        trust_set = expiry_filter(trust_set, expiring, expired)
    if as_json:
        print_json({"store": str(opened.spec), "entries": [entry_json(e) for e in trust_set.values()]})
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{opened.spec}: {len(trust_set)} certificates", title_justify="left")
    for column in ("label", "sha256", "expires", "trust"):
        table.add_column(column)
    for entry in trust_set.values():
        expires = entry.cert.not_after
        table.add_row(entry.display_label, entry.sha256[:16], f"{expires:%Y-%m-%d}" if expires else "?", trust_text(entry))
    console = Console(highlight=False)
    console.on_broken_pipe = closed_pipe  # rich's own exits 1, which means "different" here
    console.print(table)


def diff(store_a: str, store_b: str, as_json: bool = False, password_file: Optional[Path] = None) -> NoReturn:
    from storesync.engine.plan import compare

    a, set_a = open_and_read(store_a, password_file)
    b, set_b = open_and_read(store_b, password_file)
    result = compare(set_a, set_b, a.capabilities, b.capabilities, a.purpose, b.purpose)
    different = any(result.values())
    if as_json:
        print_json({
            "a": str(a.spec), "b": str(b.spec), "equal": not different,
            "only_a": [entry_json(e) for e in result["only_a"]],
            "only_b": [entry_json(e) for e in result["only_b"]],
            "trust_differs": [{"sha256": x.sha256, "label": x.display_label, "a": dict(x.trust), "b": dict(y.trust)}
                              for x, y in result["trust_differs"]],
        })
    else:
        if not different:
            print(f"same: {len(set_a)} certificates in both")
        for entry in result["only_a"]:
            print(f"only in {a.spec}: {entry.display_label}  {entry.sha256[:16]}")
        for entry in result["only_b"]:
            print(f"only in {b.spec}: {entry.display_label}  {entry.sha256[:16]}")
        for x, y in result["trust_differs"]:
            print(f"trust differs: {x.display_label}: {trust_text(x)} in A, {trust_text(y)} in B")
    sys.exit(EXIT_DIFFERENT if different else EXIT_OK)


def sync(source: Optional[str] = None, targets: Optional[list[str]] = None, profile: Optional[str] = None,
         config: Optional[Path] = None, state_dir: Optional[Path] = None, mode: str = "mirror",
         purpose: str = "server-auth", dry_run: bool = False, force: bool = False, as_json: bool = False,
         password_file: Optional[Path] = None, allow_empty: bool = False, only: tuple = ()) -> NoReturn:
    from storesync.config import Profile, StoreRef, load_config
    from storesync.engine import run, state

    state.set_state_dir(state_dir)
    defaults = {"purpose": purpose, **({"password-file": str(password_file)} if password_file else {})}
    if source is not None:
        if not targets:
            fail("sync needs a SOURCE and at least one TARGET (or no store at all, to run the config's profiles)")
        if mode not in ("mirror", "add"):
            fail(f"--mode must be mirror or add, not {mode!r}")
        if not all(only):
            fail("--only needs a fingerprint (SHA-256 or SHA-1 hex) or a label glob, not an empty word")
        profiles = [Profile(f"cli {source}", mode, [StoreRef(s) for s in (source, *targets)], only=only)]
    else:
        if only:
            fail("--only selects from a SOURCE for its TARGETs; a profile takes `only` in the config file")
        try:
            loaded = load_config(config)
        except StoreError as exc:
            fail(str(exc))
        profiles = [p for name, p in loaded.profiles.items() if profile in (None, name)]
        if not profiles:
            where = loaded.path or "no config file found"
            fail(f"no profile {profile!r} in {where}" if profile else f"no profiles to run ({where}); "
                 "name a SOURCE and TARGETs, or write a config file (see the README)")
    results = [run.run(p, dry_run=dry_run, force=force, defaults=defaults, allow_empty=allow_empty) for p in profiles]
    if as_json:
        data = [r.to_json() for r in results]
        print_json(data[0] if source is not None else data)
    else:
        for result in results:
            report(result)
    codes = {r.exit_code for r in results}
    sys.exit(next((c for c in (EXIT_ERROR, EXIT_HELD, EXIT_DIFFERENT) if c in codes), EXIT_OK))


def report(result) -> None:
    # Plain print, not rich: a no-op sync should not pay for loading a console renderer.
    if not result.profile.startswith("cli "):
        print(f"profile {result.profile} ({result.mode})")
    for outcome in result.outcomes:
        for warning in outcome.store.warnings if outcome.store else ():
            print(f"storesync: warning: {warning}", file=sys.stderr)
        if outcome.error:
            print(f"storesync: {outcome.error}", file=sys.stderr)
        plan = outcome.plan
        if plan is None:
            continue
        state = ("held back" if plan.held_back else "written" if outcome.written
                 else "not written" if not plan.empty else "")
        print(f"{outcome.spec}: {plan.summary()}" + (f" ({state})" if state else ""))
        for entry in plan.adds:
            print(f"  + {entry.display_label}  {entry.sha256[:16]}")
        for entry in plan.removals:
            print(f"  - {entry.display_label}  {entry.sha256[:16]}")
        for before, after in plan.changes:
            why = plan.rewrites.get(after.sha256)
            print(f"  ~ {after.display_label}: {why or f'{trust_text(before)} -> {trust_text(after)}'}")
        for loss in plan.losses:
            print(f"  ! {loss.entry.display_label}: {loss.what}")
        if plan.held_back:
            print(f"  held back: {plan.held_back}; run again with --force if that is intended")
        if outcome.backup:
            print(f"  backup: {outcome.backup} (storesync rollback {outcome.spec})")
        if outcome.written and outcome.store.notice():
            print(f"  note: {outcome.store.notice()}")
    for conflict in result.conflicts:
        print(f"  conflict: {conflict}")
    if result.error:
        print(f"storesync: {result.error}", file=sys.stderr)
