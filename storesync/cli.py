"""The command line: parses, calls the engine, prints (rich for people, --json for machines).

Exit codes: 0 done / equal / nothing to do; 1 different, or changes pending in --dry-run;
2 error; 3 a guard held a change back.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, NoReturn, Optional

import typer

from storesync.model import StoreError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Keep certificate trust stores in agreement (PEM bundles, hashed directories, NSS, Windows exports, Java keystores).",
)

EXIT_OK, EXIT_DIFFERENT, EXIT_ERROR, EXIT_HELD = 0, 1, 2, 3

JSON = typer.Option(False, "--json", help="Print JSON for machines.")
PASSWORD_FILE = typer.Option(
    None, "--password-file", help="File holding the password of password-protected stores (NSS, Java)."
)


def fail(message: str) -> NoReturn:
    print(f"storesync: {message}", file=sys.stderr)
    raise typer.Exit(EXIT_ERROR)


def open_and_read(spec: str, password_file: Optional[Path]):
    """Open an existing store and read it; every expected failure becomes one sentence and exit 2."""
    from storesync.stores import open_store

    defaults = {"password-file": str(password_file)} if password_file else {}
    try:
        store = open_store(spec, defaults)
        if not store.exists():
            raise store.error("does not exist")
        trust_set = store.read()
    except StoreError as exc:
        fail(str(exc))
    except PermissionError as exc:
        fail(f"{spec}: permission denied reading {exc.filename or spec}; run as a user who may read it")
    for warning in store.warnings:
        print(f"storesync: warning: {warning}", file=sys.stderr)
    return store, trust_set


def console():
    from rich.console import Console

    return Console(highlight=False)


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


@app.command("list")
def list_command(
    store: str = typer.Argument(..., help="Store spec: KIND:PATH or a path."),
    expiring: Optional[int] = typer.Option(None, "--expiring", metavar="DAYS", help="Only certificates not yet expired that expire within DAYS days."),
    expired: bool = typer.Option(False, "--expired", help="Only certificates already expired."),
    as_json: bool = JSON,
    password_file: Optional[Path] = PASSWORD_FILE,
) -> None:
    """What a store holds, with trust and expiry."""
    opened, trust_set = open_and_read(store, password_file)
    if expiring is not None or expired:
        from storesync.doctor import expiry_filter

        trust_set = expiry_filter(trust_set, expiring, expired)
    if as_json:
        print(json.dumps({"store": str(opened.spec), "entries": [entry_json(e) for e in trust_set.values()]}, indent=2))
        return
    from rich.table import Table

    table = Table(title=f"{opened.spec}: {len(trust_set)} certificates", title_justify="left")
    for column in ("label", "sha256", "expires", "trust"):
        table.add_column(column)
    for entry in trust_set.values():
        expires = entry.cert.not_after
        table.add_row(entry.display_label, entry.sha256[:16], f"{expires:%Y-%m-%d}" if expires else "?", trust_text(entry))
    console().print(table)


@app.command()
def diff(
    store_a: str = typer.Argument(..., metavar="STORE_A"),
    store_b: str = typer.Argument(..., metavar="STORE_B"),
    as_json: bool = JSON,
    password_file: Optional[Path] = PASSWORD_FILE,
) -> None:
    """Compare two stores: exit 0 when they hold the same trust, 1 when they differ, 2 on error."""
    from storesync.engine.plan import compare

    a, set_a = open_and_read(store_a, password_file)
    b, set_b = open_and_read(store_b, password_file)
    result = compare(set_a, set_b, a.capabilities, b.capabilities, a.purpose, b.purpose)
    different = any(result.values())
    if as_json:
        print(json.dumps({
            "a": str(a.spec), "b": str(b.spec), "equal": not different,
            "only_a": [entry_json(e) for e in result["only_a"]],
            "only_b": [entry_json(e) for e in result["only_b"]],
            "trust_differs": [{"sha256": x.sha256, "label": x.display_label, "a": dict(x.trust), "b": dict(y.trust)}
                              for x, y in result["trust_differs"]],
        }, indent=2))
    else:
        if not different:
            print(f"same: {len(set_a)} certificates in both")
        for entry in result["only_a"]:
            print(f"only in {a.spec}: {entry.display_label}  {entry.sha256[:16]}")
        for entry in result["only_b"]:
            print(f"only in {b.spec}: {entry.display_label}  {entry.sha256[:16]}")
        for x, y in result["trust_differs"]:
            print(f"trust differs: {x.display_label}: {trust_text(x)} in A, {trust_text(y)} in B")
    raise typer.Exit(EXIT_DIFFERENT if different else EXIT_OK)


CONFIG = typer.Option(None, "--config", help="Config file (default: $STORESYNC_CONFIG, then the user's and the site's storesync.toml).")
STATE_DIR = typer.Option(None, "--state-dir", help="Where baselines, backups and locks live (default: $STORESYNC_STATE_DIR, then the user state dir).")


@app.command()
def sync(
    source: Optional[str] = typer.Argument(None, help="The store whose trust the targets take (none: run the config's profiles)."),
    targets: Optional[list[str]] = typer.Argument(None, help="Stores to bring into agreement with the source."),
    profile: Optional[str] = typer.Option(None, "--profile", help="Run only this profile of the config."),
    config: Optional[Path] = CONFIG,
    state_dir: Optional[Path] = STATE_DIR,
    mode: str = typer.Option("mirror", "--mode", help="mirror: targets hold exactly the source's anchors; add: never remove."),
    purpose: str = typer.Option(
        "server-auth", "--purpose",
        help="What stores without per-purpose trust are for (server-auth, client-auth, email, code-signing, any).",
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan; write nothing."),
    force: bool = typer.Option(False, "--force", help="Apply changes a guard would hold back."),
    as_json: bool = JSON,
    password_file: Optional[Path] = PASSWORD_FILE,
) -> None:
    """Make each TARGET agree with SOURCE, or run the profiles of the config file."""
    from storesync.config import Profile, StoreRef, load_config
    from storesync.engine import run, state

    state.set_state_dir(state_dir)
    defaults = {"purpose": purpose, **({"password-file": str(password_file)} if password_file else {})}
    if source is not None:
        if not targets:
            fail("sync needs a SOURCE and at least one TARGET (or no store at all, to run the config's profiles)")
        if mode not in ("mirror", "add"):
            fail(f"--mode must be mirror or add, not {mode!r}")
        profiles = [Profile(f"cli {source}", mode, [StoreRef(s) for s in (source, *targets)])]
    else:
        try:
            loaded = load_config(config)
        except StoreError as exc:
            fail(str(exc))
        profiles = [p for name, p in loaded.profiles.items() if profile in (None, name)]
        if not profiles:
            where = loaded.path or "no config file found"
            fail(f"no profile {profile!r} in {where}" if profile else f"no profiles to run ({where}); "
                 "name a SOURCE and TARGETs, or write a config file (see the README)")
    results = [run.run(p, dry_run=dry_run, force=force, defaults=defaults) for p in profiles]
    if as_json:
        data = [r.to_json() for r in results]
        print(json.dumps(data[0] if source is not None else data, indent=2))
    else:
        for result in results:
            report(result)
    codes = {r.exit_code for r in results}
    raise typer.Exit(next((c for c in (EXIT_ERROR, EXIT_HELD, EXIT_DIFFERENT) if c in codes), EXIT_OK))


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
            print(f"  ~ {after.display_label}: {trust_text(before)} -> {trust_text(after)}")
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


@app.command()
def rollback(
    store: str = typer.Argument(..., help="The store to put back."),
    list_only: bool = typer.Option(False, "--list", help="List the backups of this store."),
    to: Optional[str] = typer.Option(None, "--to", help="Backup id to restore (default: the newest)."),
    state_dir: Optional[Path] = STATE_DIR,
    as_json: bool = JSON,
) -> None:
    """Put a store back exactly as it was before storesync changed it."""
    from storesync.engine import state
    from storesync.stores import open_store

    state.set_state_dir(state_dir)
    try:
        opened = open_store(store)
        spec = opened.spec.key
        if list_only:
            backups = state.list_backups(spec)
            if as_json:
                print(json.dumps({"store": spec, "backups": backups}, indent=2))
            elif not backups:
                print(f"{spec}: no backups")
            for b in [] if as_json else backups:
                print(f"{b['id']}  {b['reason']}")
            return
        with state.lock(f"store {opened.path.resolve()}"):
            backup_id, snapshot = state.load_backup(spec, to)
            strays = [path for path in snapshot if not opened.owns(path)]
            if strays:
                raise StoreError(f"{spec}: backup {backup_id} names files outside the store ({strays[0]}); not restored")
            undo = state.save_backup(spec, opened.snapshot(), f"before rollback to {backup_id}")
            opened.restore(snapshot)
    except StoreError as exc:
        fail(str(exc))
    if as_json:
        print(json.dumps({"store": spec, "restored": backup_id, "undo": undo}))
    else:
        print(f"{spec}: restored backup {backup_id} (the state before it is kept as {undo})")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


# Commands kept in modules of their own register themselves on `app` when imported.
import storesync.cli_check  # noqa: E402,F401
import storesync.cli_daemon  # noqa: E402,F401
