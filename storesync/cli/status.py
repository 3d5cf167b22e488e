"""`storesync status`: the trust stores on this machine, their counts, the roots that differ
between them, and the daemon's state (storesync.discover finds them, storesync.status sums them up)."""

from __future__ import annotations

import shlex
import sys
from typing import Optional
from pathlib import Path

import typer

from storesync.cli.options import PASSWORD_FILE, PYTHON, ROOT, STATE_DIR, STORES_CONFIG


def declare(app) -> None:
    app.command("status")(status)


def status(
    python: list[str] = PYTHON,
    config: Optional[str] = STORES_CONFIG,
    soon: int = typer.Option(30, "--soon", help="Count anchors expiring within this many days."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for machines."),
    password_file: Optional[Path] = PASSWORD_FILE,
    root: Optional[Path] = ROOT,
    state_dir: Optional[Path] = STATE_DIR,
) -> None:
    """The trust stores on this machine: kind, owner, counts, which roots differ between them, the daemon's state."""
    from storesync import discover, state
    from storesync import status as machine
    from storesync.cli.common import check_days, print_json, use_root

    check_days("--soon", soon)
    state.set_state_dir(state_dir)
    use_root(root)
    warnings: list[str] = []
    when = machine.now()
    found = discover.discover(python, config, warnings)
    found += machine.written_stores(found)
    options = {"password-file": str(password_file)} if password_file else None
    summaries = [machine.summarize(f, when, soon, options) for f in found]
    columns, rows = machine.matrix(summaries)
    daemon = machine.daemon_status()
    if as_json:
        print_json({
            "at": when.isoformat().replace("+00:00", "Z"), "soon_days": soon,
            "stores": [s.to_json() for s in summaries],
            "matrix": {"stores": columns, "roots": rows},
            "daemon": daemon, "warnings": warnings,
        })
        return
    for warning in warnings:
        print(f"storesync: warning: {warning}", file=sys.stderr)
    print_status(summaries, columns, rows, daemon, soon)


GROUP_ROWS = 5  # a larger group of roots sharing one pattern is one line


def print_status(summaries, columns, rows, daemon, soon: int) -> None:
    from storesync.cli.common import print_columns

    # Plain aligned text, not a rich table: store specs are long paths and must not be cut.
    header = ("#", "store", "found as", "owner", "anchors", "distrusted", "expired", f"expiring<={soon}d")
    lines = [header]
    for number, s in enumerate(summaries, 1):
        counts = ("-",) * 4 if s.error else (s.anchors, s.distrusted, s.expired, s.expiring)
        lines.append((number, s.found.spec, s.found.what, s.owner or "?", *counts))
    print("Trust stores on this machine")
    print_columns(lines, right={0, 4, 5, 6, 7})
    for number, s in enumerate(summaries, 1):
        if s.error:
            print(f"  #{number} cannot be read: {s.error}")
        elif s.freshness:
            fresh = s.freshness
            print(f"  #{number} policy version {fresh.get('version')}, verified {fresh.get('verified_at')}"
                  + (f"; ! STALE: {fresh.get('reason')} (the last verified policy is used)" if fresh.get("stale") else ""))
    print_drift(summaries)
    if rows:
        # Roots with the same pattern of presence are one line: "143 roots absent only from #5".
        index = {s.found.spec: n for n, s in enumerate(summaries, 1)}
        mark = {"trusted": "+", "distrusted": "x", None: "."}
        groups: dict[tuple, list] = {}
        for row in rows:
            groups.setdefault(tuple(mark[row["stores"][spec]] for spec in columns), []).append(row)
        print(f"\nRoots that differ between stores ({len(rows)}; + anchor, x distrusted, . absent)")
        grid = [("root", "sha256", *(f"#{index[spec]}" for spec in columns))]
        for pattern, members in groups.items():
            if len(members) > GROUP_ROWS:
                first = members[0]["label"]
                grid.append((f"{len(members)} roots ({first}, ...)", "", *pattern))
                continue
            for row in members:
                grid.append((row["label"], row["sha256"][:16], *pattern))
        print_columns(grid, right=set())
    elif len(columns) > 1:
        print("\nThe stores hold the same roots.")
    state = daemon["state"]
    if daemon.get("running") is True and state != "running":
        state += ", running"
    elif daemon.get("running") is False and state != "stopped" and "status" in daemon:
        state += ", but not running (it did not stop cleanly: stale status file)"
    print(f"\ndaemon: {state} ({daemon['file']})")
    profiles = daemon.get("status", {}).get("profiles", {}) if isinstance(daemon.get("status"), dict) else {}
    for name, run in profiles.items() if isinstance(profiles, dict) else ():
        if not isinstance(run, dict):
            continue
        line = f"  profile {name}: {run.get('summary') or 'not run yet'}"
        if run.get("last_run"):
            line += f" (last run {run['last_run']}, exit {run.get('exit_code')})"
        if run.get("error"):
            line += f"; error: {run['error']}"
        if run.get("held_back"):
            line += f"; held back: {'; '.join(map(str, run['held_back']))}"
        print(line)
        for hook in run.get("hooks") or ():
            if isinstance(hook, dict):
                ok = "ok" if hook.get("ok") else "FAILED"
                print(f"    on-change {shlex.join(map(str, hook.get('argv', [])))} for {hook.get('store')}: {ok} "
                      f"(exit {hook.get('exit_code')}{', timed out' if hook.get('timed_out') else ''})")


def print_drift(summaries) -> None:
    """Per store storesync wrote: what others added, removed or re-trusted since."""
    from types import SimpleNamespace

    from storesync.cli.common import trust_text

    drifted = [(n, s) for n, s in enumerate(summaries, 1)
               if s.drift and any(s.drift[k] for k in ("added", "removed", "trust_changed"))]
    if not drifted:
        return
    print("\nChanged by others since storesync's last write (+ added, - removed, ~ trust changed)")
    for number, s in drifted:
        d = s.drift
        print(f"  #{number} {s.found.spec} (storesync wrote it {d['since']})")
        for item in d["added"]:
            print(f"    + {item['label']}  {item['sha256'][:16]}")
        for item in d["removed"]:
            print(f"    - {item['label']}  {item['sha256'][:16]}  (storesync wrote it; a sync puts it back while its source holds it)")
        for item in d["trust_changed"]:
            before, after = (trust_text(SimpleNamespace(trust=item[k])) for k in ("before", "after"))
            print(f"    ~ {item['label']}  {item['sha256'][:16]}: {before} -> {after}")


