"""The typer app, assembled top-down from the command modules (one per command, each with a
`declare(app)`). `storesync.cli:main` comes here for all but the plain forms of list, diff and
sync, which it runs without typer."""

import re
import sys
from pathlib import Path
from typing import Optional

import typer

from storesync import __version__
from storesync.cli import check, daemon, diff, publish, rollback, status, sync
from storesync.cli import list as list_
from storesync.cli.common import fail
from storesync.cli.options import STATE_DIR

try:
    from typer._click.exceptions import UsageError  # newer typers carry their own click
except ImportError:
    from click import UsageError

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
COMMANDS = {info.name for info in app.registered_commands}


def run() -> None:
    """The app as `storesync.cli.main` runs it: a mistake on the command line is one sentence
    (typer's own is a usage line and a box); help and everything else as typer does them."""
    try:
        code = app(standalone_mode=False)
    except UsageError as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # plain `storesync`: typer has printed the help
            sys.exit(exc.exit_code)
        what = exc.format_message().rstrip(".")
        what = re.sub(r"\. ([A-Z])(.*)", lambda m: f" ({m[1].lower()}{m[2]})", what)  # typer's "Did you mean"
        # the parser's own mistakes ("requires an argument") carry no context: the command is the first argv names
        named = [word for word in sys.argv[1:] if word in COMMANDS][:1]
        where = exc.ctx.command_path if exc.ctx else " ".join(["storesync", *named])
        fail(f"{what[:1].lower()}{what[1:]}; see `{where} --help`")
    sys.exit(code or 0)  # --help, --version and the commands that return
