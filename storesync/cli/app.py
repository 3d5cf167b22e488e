"""The typer app, assembled top-down from the command modules (one per command, each with a
`declare(app)`). `storesync.cli:main` comes here for all but the plain forms of list, diff and
sync, which it runs without typer."""

import typer

from storesync.cli import check, daemon, diff, rollback, status, sync
from storesync.cli import list as list_

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Keep certificate trust stores in agreement (PEM bundles, hashed directories, NSS, Windows exports, Java keystores).",
)

for command in (list_, diff, sync, rollback, check, status, daemon):
    command.declare(app)
