"""`storesync rollback`: put back what storesync changed in a store since a backup."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from storesync.cli.common import fail, print_json
from storesync.cli.options import JSON, PASSWORD_FILE, STATE_DIR
from storesync.model import EXIT_DIFFERENT, StoreError


def declare(app) -> None:
    app.command("rollback")(rollback)


def rollback(
    store: str = typer.Argument(..., help="The store to put back."),
    list_only: bool = typer.Option(False, "--list", help="List the backups of this store."),
    to: Optional[str] = typer.Option(None, "--to", help="Backup id to restore (default: the newest)."),
    password_file: Optional[Path] = PASSWORD_FILE,
    state_dir: Optional[Path] = STATE_DIR,
    as_json: bool = JSON,
) -> None:
    """Put back what storesync changed in a store since a backup (what others added since stays)."""
    from storesync import state
    from storesync.stores import open_store

    if list_only and to is not None:
        fail("--list and --to do not go together: --list only lists the backups, --to restores one; give one of them")
    state.set_state_dir(state_dir)
    opened = None
    try:
        opened = open_store(store, {"password-file": str(password_file)} if password_file else {})
        spec = opened.spec.key
        if list_only:
            backups = state.list_backups(spec)
        else:
            from storesync.engine.run import rollback as roll_back

            done = roll_back(opened, to)
    except StoreError as exc:
        other = opened and opened.other_kind()  # named as a kind it is not: no backups under that name
        fail(f"{exc}; {other}" if other and other not in str(exc) else str(exc))
    except OSError as exc:
        fail(f"{store}: cannot put it back ({exc.strerror or exc}, {exc.filename or store}); nothing more was changed")
    # Printed out of the try: output that cannot be written is standard output's (storesync.cli.main says so)
    if list_only:
        if as_json:
            print_json({"store": spec, "backups": backups})
        elif not backups:
            print(state.no_backups(spec))
        for b in [] if as_json else backups:
            print(f"{b['id']}  {b['reason']}")
        if not backups:
            raise typer.Exit(EXIT_DIFFERENT)  # as `diff`: an answer, "no", not an error
        return
    if as_json:
        print(json.dumps(done))
        return
    print(f"{done['store']}: restored backup {done['restored']} (the state before it is kept as {done['undo']})")
    for what in done["kept"]:
        print(f"  ! kept {what}")
