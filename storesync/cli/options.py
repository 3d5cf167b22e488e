"""Options several commands declare alike (typer; imported only when the typer app is built)."""

import typer

JSON = typer.Option(False, "--json", help="Print JSON for machines.")
PASSWORD_FILE = typer.Option(
    None, "--password-file", help="File holding the password of password-protected stores (NSS, Java)."
)
CONFIG = typer.Option(None, "--config", help="Config file (default: $STORESYNC_CONFIG, then ~/.config/storesync/, /etc/storesync/, /etc/xdg/storesync/ storesync.toml).")
STATE_DIR = typer.Option(None, "--state-dir", help="Where baselines, backups, locks and caches live (default: $STORESYNC_STATE_DIR, else /var/lib/storesync for root, else the user state dir).")
PYTHON = typer.Option(None, "--python", help="A Python interpreter or environment whose certifi bundle to include (repeatable).")
ROOT = typer.Option(None, "--root", help="Find this machine's stores under this directory (a host mounted at /host; default: $STORESYNC_ROOT, else /).")
STORES_CONFIG = typer.Option(None, "--config", help="Config file whose profiles' stores to include.")
