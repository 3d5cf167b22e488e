"""`storesync sync`: make targets agree with a source, or run the config's profiles.

`run` is the command; `declare` puts it on the typer app (storesync.cli.app) with its help.
The quick parser (storesync.cli) calls `run` without typer, so this module imports no
typer, typing or rich at the top (and no `from __future__ import annotations`: typer reads the
annotations of the function `declare` defines).
"""

import sys

from storesync.cli.common import NO_CONFIG, fail, print_json, print_plan, quote, use_root
from storesync.model import EXIT_DIFFERENT, EXIT_ERROR, EXIT_HELD, EXIT_OK, StoreError


def run(source: "Optional[str]" = None, targets: "Optional[list[str]]" = None, profile: "Optional[str]" = None,
         config: "Optional[Path]" = None, state_dir: "Optional[Path]" = None, mode: "Optional[str]" = None,
         purpose: "Optional[str]" = None, dry_run: bool = False, force: bool = False, as_json: bool = False,
         password_file: "Optional[Path]" = None, allow_empty: bool = False, only: tuple = (),
         root: "Optional[Path]" = None, python: tuple = ()) -> "NoReturn":
    from storesync.config import Profile, StoreRef, config_path, load_config, named_twice
    from storesync import state
    from storesync.engine import run as engine
    from storesync.stores import COMMON_VALUES

    state.set_state_dir(state_dir)
    resolve = None
    if purpose is not None and not COMMON_VALUES["purpose"].accepts(purpose):
        fail(COMMON_VALUES["purpose"].refusal("--purpose", purpose))
    defaults = {"purpose": purpose or "server-auth", **({"password-file": str(password_file)} if password_file else {})}
    if source is not None:
        chosen = "--profile" if profile is not None else "--config" if config is not None else None
        if chosen:  # a flag that would be silently ignored
            fail(f"{chosen} runs the profiles of a config file, which name their own stores; "
                 f"give either {chosen} or a SOURCE and TARGETs, not both")
        if not targets:
            fail("sync needs a SOURCE and at least one TARGET (or no store at all, to run the config's profiles)")
        mode = "mirror" if mode is None else mode
        if mode not in ("mirror", "add", "remove"):
            fail(f"--mode must be mirror, add or remove, not {mode!r}")
        if source.startswith("@"):
            fail(f"{source}: a selector names targets; the SOURCE is one store (the certificates to {mode})")
        if not all(only):
            fail("--only needs a fingerprint (SHA-256 or SHA-1 hex) or a label glob, not an empty word")
        profiles = [Profile(f"cli {source}", mode, [StoreRef(s) for s in (source, *targets)], only=only)]
        twice = named_twice(profiles[0].stores, mode)
        if twice:
            fail(twice)
        from storesync.config import SELECTORS

        unknown = [t for t in targets if t.startswith("@") and t.split("?")[0] not in SELECTORS]
        if unknown:
            fail(f"{unknown[0]}: unknown selector (selectors: {', '.join(SELECTORS)}); a store whose path begins "
                 f"with @ is written ./{unknown[0]}")
    else:
        if only:
            fail("--only selects from a SOURCE for its TARGETs; a profile takes `only` in the config file")
        runs = '--profile' if profile else '--config' if config else 'the profiles of the config file'
        bare = "no profiles to run ({}); name a SOURCE and TARGETs, or write a config file (see the README)"
        if runs != "--profile" and config_path(config) is None:  # no profiles at all: the flags are not the matter
            fail(bare.format("no config file found"))
        if mode is not None:
            fail(f"--mode and {runs} do not go together: a profile takes its `mode` from the config file; "
                 "leave --mode out, or give a SOURCE and TARGETs")
        if purpose is not None:  # read so by one run and not by the next (the daemon's), a store would flip
            fail(f"--purpose and {runs} do not go together: a profile's stores take their `purpose` from the "
                 "config file, as the daemon reads them; leave --purpose out, or give a SOURCE and TARGETs")
        try:
            loaded = load_config(config)
        except StoreError as exc:
            fail(str(exc))
        profiles = [p for name, p in loaded.profiles.items() if profile in (None, name)]
        if not profiles:
            if profile and loaded.path is None:
                fail(f"no profile {profile!r}: {NO_CONFIG}")
            where = loaded.path or "no config file found"
            fail(f"no profile {profile!r} in {where} (its profiles: {', '.join(loaded.profiles) or 'none'})" if profile
                 else bare.format(where))
    selectors = any(ref.selector for p in profiles for ref in p.stores)
    if root is not None or selectors:
        use_root(root)  # selectors find the stores under it; stores under it follow their links inside it
    if selectors:
        from storesync import discover

        resolve = discover.resolver(python, strict=True)
    results = [engine.run(p, dry_run=dry_run, force=force, defaults=defaults, allow_empty=allow_empty, resolve=resolve,
                          hooks=False) for p in profiles]
    engine.run_hooks(results)  # once per store, after every profile wrote
    if as_json:
        data = [r.to_json() for r in results]
        print_json(data[0] if source is not None else data)
    else:
        for result in results:
            report(result)
    codes = {r.exit_code for r in results}
    sys.exit(next((c for c in (EXIT_ERROR, EXIT_HELD, EXIT_DIFFERENT) if c in codes), EXIT_OK))


def report(result) -> None:
    # Plain print, not rich: a no-op sync should not pay for loading a console renderer.
    if not result.profile.startswith("cli "):
        print(f"profile {result.profile} ({result.mode})")
    for warning in result.warnings:
        print(f"storesync: note: {warning}", file=sys.stderr)
    if result.dry_run:  # what each selector named, with its owner as status shows it
        import shlex

        for selector, found in result.selectors.items():
            print(f"{selector}: {len(found)} store{'s' if len(found) != 1 else ''}")
            for item in found:
                hook = f", then {shlex.join(item['on_change'])}" if item.get("on_change") else ""
                print(f"  {item['store']}  ({item['found_as']}, owner {item['owner'] or '?'}{hook})")
    for outcome in result.outcomes:
        for warning in outcome.store.warnings if outcome.store else ():
            print(f"storesync: warning: {warning}", file=sys.stderr)
        if outcome.error:
            print(f"storesync: {outcome.error}", file=sys.stderr)
        fresh = getattr(outcome.store, "freshness", None)  # a tuf: source's
        if fresh and fresh.get("stale") and fresh.get("version") is not None:  # else none was used: the error says so
            print(f"{outcome.spec}: ! stale: {fresh['reason']}; the last verified policy (version {fresh['version']}, "
                  f"verified {fresh['verified_at']}) is used, nothing removed")
        plan = outcome.plan
        if plan is None:
            continue
        state = ("held back" if plan.held_back else "written" if outcome.written
                 else "not written" if not plan.empty else "")
        print(f"{outcome.spec}: {plan.summary()}" + (f" ({state})" if state else ""))
        print_plan(plan, outcome.readded)
        if plan.held_back:
            print(f"  held back: {plan.held_back}; run again with --force if that is intended")
        if outcome.backup:
            print(f"  backup: {outcome.backup} (storesync rollback {quote(outcome.spec)})")
        if outcome.written and outcome.store.notice():
            print(f"  note: {outcome.store.notice()}")
        if outcome.hook is not None:
            print(f"  on-change: {outcome.hook.command}: {outcome.hook.outcome()}")
            if outcome.hook.failure():
                for line in outcome.hook.output.splitlines()[-5:]:  # its last words, where the error is
                    print(f"    | {line}")
                print(f"storesync: {outcome.hook.failure()}", file=sys.stderr)
    for conflict in result.conflicts:
        print(f"  conflict: {conflict}")
    if result.error:
        print(f"storesync: {result.error}", file=sys.stderr)


def declare(app) -> None:
    from pathlib import Path  # typer reads it here; the quick path (run) takes str paths
    from typing import Optional

    import typer

    from storesync.cli.options import CONFIG, JSON, PASSWORD_FILE, PYTHON, ROOT, STATE_DIR

    @app.command("sync")
    def command(
        source: Optional[str] = typer.Argument(None, help="The store whose trust the targets take (none: run the config's profiles)."),
        targets: Optional[list[str]] = typer.Argument(None, help="Stores to bring into agreement with the source."),
        profile: Optional[str] = typer.Option(None, "--profile", help="Run only this profile of the config."),
        config: Optional[Path] = CONFIG,
        state_dir: Optional[Path] = STATE_DIR,
        mode: Optional[str] = typer.Option(
            None, "--mode",
            help="mirror (the default): targets hold exactly the source's anchors; add: never remove; remove: the source's certificates leave the targets.",
        ),
        purpose: Optional[str] = typer.Option(
            None, "--purpose",
            help="What the stores without per-purpose trust named here are for (default server-auth): server-auth, "
                 "client-auth, email, code-signing, any, or an EKU OID in dotted form (1.3.6.1.5.5.7.3.8). Not with "
                 "profiles: their stores take it from the config file.",
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
        root: Optional[Path] = ROOT,
        python: Optional[list[str]] = PYTHON,
    ) -> None:
        """Make each TARGET agree with SOURCE, or run the profiles of the config file.

        A TARGET may be a selector naming the stores found on this machine: @system, @nss, @java, @certifi, @all."""
        run(source=source, targets=targets or None, profile=profile, config=config, state_dir=state_dir, mode=mode,
                 purpose=purpose, dry_run=dry_run, force=force, as_json=as_json, password_file=password_file,
                 allow_empty=allow_empty, only=tuple(only), root=root, python=tuple(python or ()))
