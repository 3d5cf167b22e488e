"""`storesync publish`: sign trust policies into a TUF repository that agents read as `tuf:` stores.

    storesync publish init REPO --keys DIR [--threshold N]
    storesync publish REPO NAME SOURCE-SPEC [--expires 7d] [--force]
    storesync publish refresh REPO [--expires 7d]
    storesync publish rotate REPO --role root|targets|snapshot|timestamp

One typer command whose first word picks the action (a repository folder named like an action
is written ./init). The work is storesync.publish's; this module reads the command line and prints.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from storesync.cli.common import fail, print_json
from storesync.cli.options import STATE_DIR
from storesync.model import EXIT_HELD, StoreError

ACTIONS = {"init": 1, "refresh": 1, "rotate": 1}  # action -> its positional words after the action
USAGE = ("publish init REPO --keys DIR | publish REPO NAME SOURCE-SPEC | publish refresh REPO | "
         "publish rotate REPO --role ROLE")


def declare(app) -> None:
    app.command("publish")(publish)


def publish(
    words: list[str] = typer.Argument(..., metavar="[init|refresh|rotate] REPO [NAME SOURCE-SPEC]",
                                      help="What to do: init REPO; REPO NAME SOURCE-SPEC; refresh REPO; rotate REPO."),
    keys: Optional[Path] = typer.Option(None, "--keys", help="Folder of the private keys (init writes them there, "
                                        "mode 0600; later commands default to the folder init used)."),
    threshold: int = typer.Option(1, "--threshold", help="init: signatures needed for root and targets (as many keys made)."),
    expires: str = typer.Option("7d", "--expires", help="How long new timestamp, snapshot and targets metadata is valid (30s, 12h, 7d)."),
    force: bool = typer.Option(False, "--force", help="Publish a policy the guards hold back (empty, or dropping too many roots)."),
    role: Optional[str] = typer.Option(None, "--role", help="rotate: root, targets, snapshot or timestamp."),
    max_removal_share: str = typer.Option("0.10", "--max-removal-share", metavar="SHARE", help="Share of the published roots (0 to 1) a new policy may drop without --force."),
    state_dir: Optional[Path] = STATE_DIR,
    as_json: bool = typer.Option(False, "--json", help="Print JSON for machines."),
) -> None:
    """Publish trust policies as a signed TUF repository (any static web server serves it); agents read
    it with `storesync list|sync 'tuf:URL/NAME?root=1.root.json'`."""
    from storesync import publish as repo_tool
    from storesync import state
    from storesync.stores import COMMON_VALUES

    share = COMMON_VALUES["max-removal-share"]  # the store option's range: outside it the guard is off
    if not share.accepts(max_removal_share):
        fail(share.refusal("--max-removal-share", max_removal_share))
    state.set_state_dir(state_dir)
    action = words[0] if words[0] in ACTIONS else "publish"
    rest = words[1:] if action != "publish" else words
    wanted = ACTIONS.get(action, 3)
    if len(rest) != wanted:
        fail(f"publish {action if action != 'publish' else ''}".rstrip()
             + f" takes {wanted} word{'s' if wanted > 1 else ''} ({USAGE}), not {len(rest)}")
    repo = Path(rest[0]).expanduser()
    try:
        duration = repo_tool.parse_duration(expires)
        if action == "init":
            if keys is None:
                fail("publish init needs --keys DIR: the folder for the private keys (keep it off the web server)")
            done = repo_tool.init(repo, keys.expanduser(), threshold, duration)
            _say(as_json, done, f"initialised {repo} (threshold {threshold}); keys in {keys}; give every agent "
                                f"{done['root']} as its root= file")
            return
        if action == "rotate" and role is None:
            fail("publish rotate needs --role root, targets, snapshot or timestamp")
        key_dir = repo_tool.keys_dir(repo, keys)
        if action == "refresh":
            done = repo_tool.refresh(repo, key_dir, duration)
            _say(as_json, done, f"{repo}: timestamp version {done['timestamp']}, valid until {done['expires']}")
            if done["note"]:
                print(f"storesync: note: {done['note']}", file=sys.stderr)
        elif action == "rotate":
            done = repo_tool.rotate(repo, key_dir, role, duration)
            _say(as_json, done, f"{repo}: new {role} keys {', '.join(k[:16] for k in done['keys'])} in root "
                                f"version {done['root']} (signed by the previous root keys)")
        else:
            done = repo_tool.publish(repo, key_dir, rest[1], rest[2], duration, force, float(max_removal_share))
            _report(as_json, done, repo)
    except StoreError as exc:
        fail(str(exc))
    except BrokenPipeError:  # the report's reader left (| head): published all the same; cli's handler ends quietly
        raise
    except OSError as exc:
        fail(f"repository {repo}: {exc.strerror or exc} ({exc.filename or repo}); nothing was published")


def _say(as_json: bool, data: dict, text: str) -> None:
    if as_json:
        print_json(data)
    else:
        print(text)


def _report(as_json: bool, done: dict, repo: Path) -> None:
    import sys

    from storesync.cli.common import print_plan

    plan = done.pop("plan", None)
    if as_json:
        print_json(done)
    else:
        if done["changed"]:
            print(f"{repo}: published {done['name']} version {done['version']} ({done['certificates']} certificates)")
        elif done["held_back"]:
            print(f"{repo}: {done['name']}: not published, held back")
        else:
            print(f"{repo}: {done['name']} version {done['version']} already holds this policy; nothing published")
        if plan:
            print_plan(plan)
        if done.get("forced"):
            print(f"  ! published with --force: {done['forced']}")
    if done["held_back"]:
        print(f"storesync: {done['held_back']}", file=sys.stderr)
        sys.exit(EXIT_HELD)
