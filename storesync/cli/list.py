"""`storesync list`: what a store holds, with trust and expiry.

`run` is the command; `declare` puts it on the typer app (storesync.cli.app) with its help.
The quick parser (storesync.cli) calls `run` without typer, so this module imports no
typer, typing or rich at the top (and no `from __future__ import annotations`: typer reads the
annotations of the function `declare` defines).
"""


from storesync.cli.common import check_days, entry_json, open_and_read, print_columns, print_json, shown, trust_text


def run(store: str, expiring: "Optional[int]" = None, expired: bool = False, as_json: bool = False,
        password_file: "Optional[Path]" = None, state_dir: "Optional[Path]" = None) -> None:
    from storesync import loadable, state

    check_days("--expiring", expiring)
    state.set_state_dir(state_dir)
    loadable.remember_in(state.state_dir())  # certificates a sync checked print without `cryptography`
    opened, trust_set = open_and_read(store, password_file)
    trust_set, fixed = opened.with_fixed(trust_set)  # an entry storesync never changes is listed too, marked
    if not opened.capabilities.purposes:  # anchors for the store's purpose, as diff and sync read them
        from storesync.engine.plan import lift  # here: a store with trust per purpose is shown as it is

        trust_set = lift(trust_set, opened.capabilities, opened.purpose)
    if expiring is not None or expired:
        from storesync.check import expiry_filter

        trust_set = expiry_filter(trust_set, expiring, expired)
    if as_json:
        print_json({"store": str(opened.spec), "entries": _shown(trust_set.values(), loadable, fixed)})
    else:
        _table(opened, trust_set, fixed)
        for entry in trust_set.values():
            _forget(entry.cert, loadable)
    loadable.save()


def _shown(entries, loadable, fixed):
    """Each entry's JSON; then its parse is remembered and dropped, so never all are held."""
    for entry in entries:
        yield entry_json(entry, fixed)
        _forget(entry.cert, loadable)


def _forget(cert, loadable) -> None:
    """Its parse remembered, drop all that was computed from the certificate's bytes to show it
    (about 0.8 KB a certificate; computed again if asked)."""
    loadable.forget_parse(cert)
    cert.__dict__.clear()


def _table(opened, trust_set, fixed) -> None:
    lines = [("label", "sha256", "expires", "trust")]
    for entry in trust_set.values():
        expires = entry.cert.not_after
        trust = trust_text(entry) + (" (fixed)" if entry.sha256 in fixed else "")
        lines.append((shown(entry), entry.sha256[:16], f"{expires:%Y-%m-%d}" if expires else "?", trust))
    print(f"{opened.spec}: {len(trust_set)} certificates")
    print_columns(lines, right=set())
    for sha, through in fixed.items():
        print(f"  (fixed) {sha[:16]}: trusted through the store's {through}, which storesync never changes")


def declare(app) -> None:
    from pathlib import Path  # typer reads it here; the quick path (run) takes str paths
    from typing import Optional

    import typer

    from storesync.cli.options import JSON, PASSWORD_FILE, STATE_DIR

    @app.command("list")
    def command(
        store: str = typer.Argument(..., help="Store spec: KIND:PATH or a path."),
        expiring: Optional[int] = typer.Option(None, "--expiring", metavar="DAYS", help="Only certificates not yet expired that expire within DAYS days."),
        expired: bool = typer.Option(False, "--expired", help="Only certificates already expired (with --expiring: those too)."),
        as_json: bool = JSON,
        password_file: Optional[Path] = PASSWORD_FILE,
        state_dir: Optional[Path] = STATE_DIR,
    ) -> None:
        """What a store holds, with trust and expiry."""
        run(store=store, expiring=expiring, expired=expired, as_json=as_json, password_file=password_file,
            state_dir=state_dir)
