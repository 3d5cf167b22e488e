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


def open_and_read(spec: str, password_file: Optional[Path], must_exist: bool = True):
    """Open a store and read it; every expected failure becomes one sentence and exit 2.

    Only a sync target may not exist yet (it is created)."""
    from storesync.stores import open_store

    options = {"password-file": str(password_file)} if password_file else {}
    try:
        store = open_store(spec, options)
        if must_exist and not store.exists():
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
    as_json: bool = JSON,
    password_file: Optional[Path] = PASSWORD_FILE,
) -> None:
    """What a store holds, with trust and expiry."""
    opened, trust_set = open_and_read(store, password_file)
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
    result = compare(set_a, set_b)
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


@app.command()
def sync(
    source: str = typer.Argument(..., help="The store whose trust the targets take."),
    targets: list[str] = typer.Argument(..., help="Stores to bring into agreement with the source."),
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
    """Make each TARGET agree with SOURCE."""
    from storesync.engine.plan import MIRROR, ADD, make_plan
    from storesync.engine.policy import removal_guard

    if mode not in (MIRROR, ADD):
        fail(f"--mode must be {MIRROR} or {ADD}, not {mode!r}")
    _, wanted = open_and_read(source, password_file)
    results, code = [], EXIT_OK
    for spec in targets:
        try:
            target, current = open_and_read(spec, password_file, must_exist=False)
        except typer.Exit:
            code = EXIT_ERROR  # reported; this target is skipped, the others go on
            continue
        plan = make_plan(wanted, current, target.capabilities, store=str(target.spec), mode=mode, purpose=purpose)
        if not force:
            plan.held_back = removal_guard(plan)
        written = False
        if plan.held_back:
            code = max(code, EXIT_HELD)
        elif not plan.empty and dry_run:
            code = max(code, EXIT_DIFFERENT)
        elif not plan.empty:
            try:
                target.write(plan)
                written = True
            except StoreError as exc:
                print(f"storesync: {exc}", file=sys.stderr)
                code = EXIT_ERROR
            except PermissionError as exc:
                print(f"storesync: {spec}: permission denied writing {exc.filename}", file=sys.stderr)
                code = EXIT_ERROR
        results.append((target, plan, written))
    report(results, as_json, dry_run)
    raise typer.Exit(code)


def report(results, as_json: bool, dry_run: bool) -> None:
    if as_json:
        print(json.dumps({"dry_run": dry_run, "plans": [{**plan.to_json(), "written": written}
                                                        for _, plan, written in results]}, indent=2))
        return
    # Plain print, not rich: a no-op sync should not pay for loading a console renderer.
    for target, plan, written in results:
        state = "held back" if plan.held_back else "written" if written else "not written" if not plan.empty else ""
        print(f"{plan.store}: {plan.summary()}" + (f" ({state})" if state else ""))
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
        if written and target.notice():
            print(f"  note: {target.notice()}")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


# Commands kept in modules of their own register themselves on `app` when imported.
import storesync.cli_check  # noqa: E402,F401
