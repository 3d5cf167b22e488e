"""The typer app: every command with its help. `storesync.cli.main` comes here for all but the
plain forms of list, diff and sync, whose bodies live in storesync.cli (without typer)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from storesync import cli
from storesync.cli import fail
from storesync.model import StoreError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Keep certificate trust stores in agreement (PEM bundles, hashed directories, NSS, Windows exports, Java keystores).",
)

JSON = typer.Option(False, "--json", help="Print JSON for machines.")
PASSWORD_FILE = typer.Option(
    None, "--password-file", help="File holding the password of password-protected stores (NSS, Java)."
)
CONFIG = typer.Option(None, "--config", help="Config file (default: $STORESYNC_CONFIG, then ~/.config/storesync/, /etc/storesync/, /etc/xdg/storesync/ storesync.toml).")
STATE_DIR = typer.Option(None, "--state-dir", help="Where baselines, backups and locks live (default: $STORESYNC_STATE_DIR, then the user state dir).")


@app.command("list")
def list_command(
    store: str = typer.Argument(..., help="Store spec: KIND:PATH or a path."),
    expiring: Optional[int] = typer.Option(None, "--expiring", metavar="DAYS", help="Only certificates not yet expired that expire within DAYS days."),
    expired: bool = typer.Option(False, "--expired", help="Only certificates already expired."),
    as_json: bool = JSON,
    password_file: Optional[Path] = PASSWORD_FILE,
) -> None:
    """What a store holds, with trust and expiry."""
    cli.list_command(store=store, expiring=expiring, expired=expired, as_json=as_json, password_file=password_file)


@app.command()
def diff(
    store_a: str = typer.Argument(..., metavar="STORE_A"),
    store_b: str = typer.Argument(..., metavar="STORE_B"),
    as_json: bool = JSON,
    password_file: Optional[Path] = PASSWORD_FILE,
) -> None:
    """Compare two stores: exit 0 when they hold the same trust, 1 when they differ, 2 on error."""
    cli.diff(store_a=store_a, store_b=store_b, as_json=as_json, password_file=password_file)


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
    allow_empty: bool = typer.Option(
        False, "--allow-empty", help="An empty source (or merge store) is meant: let it empty the others (with --force)."
    ),
    only: list[str] = typer.Option(
        [], "--only", metavar="FINGERPRINT|LABEL-GLOB",
        help="Take only these certificates of SOURCE (SHA-256/SHA-1 hex, or a label glob; repeatable).",
    ),
) -> None:
    """Make each TARGET agree with SOURCE, or run the profiles of the config file."""
    cli.sync(source=source, targets=targets or None, profile=profile, config=config, state_dir=state_dir, mode=mode,
             purpose=purpose, dry_run=dry_run, force=force, as_json=as_json, password_file=password_file,
             allow_empty=allow_empty, only=tuple(only))


@app.command()
def rollback(
    store: str = typer.Argument(..., help="The store to put back."),
    list_only: bool = typer.Option(False, "--list", help="List the backups of this store."),
    to: Optional[str] = typer.Option(None, "--to", help="Backup id to restore (default: the newest)."),
    state_dir: Optional[Path] = STATE_DIR,
    as_json: bool = JSON,
) -> None:
    """Put back what storesync changed in a store since a backup (what others added since stays)."""
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
        from storesync.engine.run import rollback as roll_back

        done = roll_back(opened, to)
    except StoreError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"{store}: cannot put it back ({exc.strerror or exc}, {exc.filename or store}); nothing more was changed")
    if as_json:
        print(json.dumps(done))
        return
    print(f"{done['store']}: restored backup {done['restored']} (the state before it is kept as {done['undo']})")
    for what in done["kept"]:
        print(f"  ! kept {what}")




# Commands kept in modules of their own register themselves on `app` when imported.
import storesync.cli_check  # noqa: E402,F401
import storesync.cli_daemon  # noqa: E402,F401
