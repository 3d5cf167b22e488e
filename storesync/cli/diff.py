"""`storesync diff`: do two stores hold the same trust.

`run` is the command; `declare` puts it on the typer app (storesync.cli.app) with its help.
The quick parser (storesync.cli) calls `run` without typer, so this module imports no
typer, typing or rich at the top (and no `from __future__ import annotations`: typer reads the
annotations of the function `declare` defines).
"""

import sys

from storesync.cli.common import entry_json, open_and_read, print_json, shown, trust_text
from storesync.model import EXIT_DIFFERENT, EXIT_OK


def run(store_a: str, store_b: str, as_json: bool = False, password_file: "Optional[Path]" = None,
        state_dir: "Optional[Path]" = None) -> "NoReturn":
    from storesync import state
    from storesync.engine.plan import compare

    state.set_state_dir(state_dir)
    a, set_a = open_and_read(store_a, password_file)
    b, set_b = open_and_read(store_b, password_file)
    (set_a, fixed_a), (set_b, fixed_b) = a.with_fixed(set_a), b.with_fixed(set_b)  # as their readers trust
    result = compare(set_a, set_b, a.capabilities, b.capabilities, a.purpose, b.purpose)
    if result["only_a"] or result["only_b"]:  # what a sync would leave out of the other is no difference
        from storesync.engine.policy import refused

        result["only_a"] = [e for e in result["only_a"] if not refused(e, b.reader)]
        result["only_b"] = [e for e in result["only_b"] if not refused(e, a.reader)]
    different = any(result.values())
    if as_json:
        print_json({
            "a": str(a.spec), "b": str(b.spec), "equal": not different,
            "only_a": [entry_json(e, fixed_a) for e in result["only_a"]],
            "only_b": [entry_json(e, fixed_b) for e in result["only_b"]],
            "trust_differs": [{"sha256": x.sha256, "label": x.display_label, "a": dict(x.trust), "b": dict(y.trust)}
                              for x, y in result["trust_differs"]],
        })
    else:
        if not different and len(set_a) == len(set_b):
            print(f"same: {len(set_a)} certificates in both")
        elif not different:  # what one holds, the other cannot say (a distrust list, a plain bundle's purposes)
            print(f"same, as far as both can say: {len(set_a)} certificates in A, {len(set_b)} in B")
        for spec, entries, fixed in ((a.spec, result["only_a"], fixed_a), (b.spec, result["only_b"], fixed_b)):
            for entry in entries:
                through = f" (fixed: trusted through its {fixed[entry.sha256]}; no sync copies it)" \
                    if entry.sha256 in fixed else ""
                print(f"only in {spec}: {shown(entry)}  {entry.sha256[:16]}{through}")
        for x, y in result["trust_differs"]:
            print(f"trust differs: {shown(x)}: {trust_text(x)} in A, {trust_text(y)} in B")
    sys.exit(EXIT_DIFFERENT if different else EXIT_OK)


def declare(app) -> None:
    from pathlib import Path  # typer reads it here; the quick path (run) takes str paths
    from typing import Optional

    import typer

    from storesync.cli.options import JSON, PASSWORD_FILE, STATE_DIR

    @app.command("diff")
    def command(
        store_a: str = typer.Argument(..., metavar="STORE_A"),
        store_b: str = typer.Argument(..., metavar="STORE_B"),
        as_json: bool = JSON,
        password_file: Optional[Path] = PASSWORD_FILE,
        state_dir: Optional[Path] = STATE_DIR,
    ) -> None:
        """Compare two stores: exit 0 when they hold the same trust, 1 when they differ, 2 on error."""
        run(store_a=store_a, store_b=store_b, as_json=as_json, password_file=password_file, state_dir=state_dir)
