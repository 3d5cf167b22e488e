"""The typer app, assembled top-down from the command modules (one per command, each with a
`declare(app)`). `storesync.cli:main` comes here for all but the plain forms of list, diff and
sync, which it runs without typer."""

from pathlib import Path
from typing import Optional

import typer

from storesync import __version__
from storesync.cli import check, daemon, diff, publish, rollback, status, sync
from storesync.cli import list as list_
from storesync.cli.options import STATE_DIR

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Keep certificate trust stores in agreement (PEM bundles, hashed directories, NSS, Windows exports, Java keystores).",
)


def print_version(value: bool) -> None:
    if value:
        print(f"storesync {__version__}")
        raise typer.Exit()


@app.callback()
def options(
    ctx: typer.Context,
    version: bool = typer.Option(False, "--version", callback=print_version, is_eager=True,
                                 help="Print storesync's version and exit."),
    state_dir: Optional[Path] = STATE_DIR,
) -> None:
    # The app's own options; its help is the Typer's.
    if state_dir:  # `storesync --state-dir DIR list ...`: the command's own --state-dir, unless it gives one
        ctx.default_map = {name: {"state_dir": state_dir} for name in ctx.command.commands}


for command in (list_, diff, sync, rollback, check, status, daemon, publish):
    command.declare(app)
