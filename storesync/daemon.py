"""`storesync daemon`: watch every store of the config's profiles and reconcile on change.

One thread does all the work (the main one); watchdog's threads only note which profiles an
event concerns and wake it through a pipe. The main thread sleeps in select() until an event,
a signal (signal.set_wakeup_fd writes to the same pipe), a debounce deadline, the periodic
rescan or a systemd watchdog ping is due: an idle daemon uses no CPU.

Watching: inotify cannot follow a file that is replaced by rename, so each store's parent
directory is watched (non-recursively) and events are filtered by path; a directory store is
watched itself too; a store that does not exist yet is watched through its nearest existing
ancestor and picked up when it appears. A watch follows its directory's inode, so the parent of
every watched directory is watched as well: a directory replaced by another (`mv ca ca.old;
mkdir ca`) shows up there, and watches are re-made whenever a directory comes, goes or is
replaced. A symlinked store is watched where it is, at every link it goes through and at its
target; the links are resolved again on every event of its profile (a few readlink calls), so a
link re-pointed elsewhere (`ln -sfn`) moves the watch to the new target.

Selectors (`@nss`, `@java`, `@all` ...): the engine resolves them afresh at every reconcile, and
the stores they named are watched like the others. Something appearing in a discovery root
(`discover.watch_roots()`: the profiles.ini folders, the Chromium databases, the JVM folders and
each --java-home, the --python environments) reconciles every profile naming a selector. The
roots are watched like a missing store: through their nearest existing directory,
non-recursively, so the watches follow a JDK being copied in or a new Firefox profile down to
where its store will be, and never sit on a certificate file.

After a reconcile every store of the profile equals what was just written (a merge profile:
the baseline), so the events of the daemon's own writes lead to one reconcile with an empty
plan, which logs nothing unless --verbose.
"""

from __future__ import annotations

import json
import logging
import os
import select
import shlex
import signal
import socket
import sys
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from storesync import state
from storesync.config import Config, Profile, load_config
from storesync.engine import run as engine
from storesync.fsio import atomic_write
from storesync.model import EXIT_DIFFERENT, EXIT_ERROR, EXIT_HELD, EXIT_OK, StoreError
from storesync.stores import open_store

# Events that can mean "a store changed"; opened / closed-without-writing are our own reads.
RELEVANT = {"created", "modified", "deleted", "moved", "closed"}
STRUCTURAL = {"created", "deleted", "moved"}  # may make or unmake a watched directory
LOCK_RETRY_S = 2.0      # a CLI sync holds the profile's lock: try again soon
LOCK_TIMEOUT_S = 3.0    # wait this long for a lock (keeps SIGTERM prompt)
SEVERITY = (EXIT_ERROR, EXIT_HELD, EXIT_DIFFERENT, EXIT_OK)


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def worst(codes) -> int:
    codes = set(codes)
    return next((c for c in SEVERITY if c in codes), EXIT_OK)


# --- logging: one line per decision -----------------------------------------------------------

PRIORITY = {"debug": 7, "info": 6, "notice": 5, "warning": 4, "error": 3}


class Log:
    """Lines on stderr. Text: `<N>message` under journald (it reads the priority prefix),
    `TIME LEVEL message` elsewhere. JSON: one object per line."""

    def __init__(self, fmt: str = "text", verbose: bool = False, stream=None):
        self.fmt, self.verbose = fmt, verbose
        self.stream = stream or sys.stderr
        self.journald = bool(os.environ.get("JOURNAL_STREAM"))

    def __call__(self, level: str, message: str, **fields) -> None:
        if level == "debug" and not self.verbose:
            return
        if self.fmt == "json":
            line = json.dumps({"time": now_iso(), "level": level, "msg": message,
                               **{k: v for k, v in fields.items() if v is not None}})
        elif self.journald:
            line = f"<{PRIORITY[level]}>{message}"
        else:
            line = f"{now_iso()} {level} {message}"
        try:
            print(line, file=self.stream, flush=True)
        except (OSError, ValueError):
            pass  # stderr gone (journald restarted): keep reconciling


# --- systemd notification (sd_notify(3) without libsystemd) -----------------------------------


def sd_notify(message: str) -> bool:
    """Send `message` (e.g. "READY=1") to $NOTIFY_SOCKET; False when not under systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
        return True
    except OSError:
        return False


def watchdog_interval() -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WatchdogSec), or None."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return max(int(usec) / 2e6, 0.01)
    except ValueError:
        return None


# --- per-profile bookkeeping ------------------------------------------------------------------


@dataclass
class Track:
    """What the daemon remembers of one profile between reconciles."""

    profile: Profile
    targets: dict[str, str] = field(default_factory=dict)  # watched path -> store spec
    bases: dict[str, str] = field(default_factory=dict)    # a store's own path -> its spec
    relink: bool = False              # an event came: resolve the stores' symlinks again
    due: float | None = None          # monotonic time of the next reconcile
    burst_start: float | None = None  # first event of the current burst
    triggers: set[str] = field(default_factory=set)  # specs whose files changed
    next_rescan: float | None = None
    reported: set[str] = field(default_factory=set)  # problems already logged (held back, errors)
    warned: set[str] = field(default_factory=set)  # the stores' warnings of the last run, said once
    status: dict = field(default_factory=dict)
    runs: int = 0
    errors: dict[str, int] = field(default_factory=dict)  # kind -> reconciles that had one (metrics)
    last_success: float | None = None  # unix time of the last reconcile that exited 0
    rooted: bool = False              # a discovery root changed since the last reconcile
    selectors: bool = False           # names `@nss`, `@java`...: resolved at every reconcile
    named: set[str] | None = None     # the stores its selectors named at the last reconcile
    stale: bool = False               # its tuf: source was stale at the last reconcile (said once)


def _daemon_running() -> bool:
    """Is another daemon alive on this state dir (its status file says running, its pid lives)?"""
    try:
        data = json.loads((Path(state.state_dir()) / "status.json").read_text())
        if data.get("state") != "running" or data.get("pid") == os.getpid():
            return False
        os.kill(int(data["pid"]), 0)
        return True
    except PermissionError:
        return True
    except (OSError, ValueError, KeyError, TypeError, OverflowError):
        return False


def store_paths(profile: Profile, defaults: dict[str, str]) -> dict[str, str]:
    """Absolute path -> store spec, for every path a profile's stores want watched, as named."""
    bases = {}
    for ref in profile.stores:
        try:
            store = open_store(ref.spec, {**defaults, **ref.options})
            paths = store.watch_paths()
        except (StoreError, OSError):
            continue  # reported by the reconcile
        for path in paths:
            bases[os.path.abspath(os.path.expanduser(str(path)))] = str(store.spec)
    return bases


def resolve_links(bases: dict[str, str]) -> dict[str, str]:
    """`bases` plus, for a symlinked store (/etc/pki/tls/cert.pem), every link on the way and
    the file it ends at: its content changes where the target lives, and re-pointing any of
    the links (`ln -sfn`) makes it another file. Only lstat/readlink: cheap to redo often."""
    targets = {}
    for path, spec in bases.items():
        targets[path] = spec
        hop = path
        for _ in range(40):  # the kernel's own limit on a chain of links
            try:
                link = os.readlink(hop)
            except OSError:
                break
            hop = os.path.normpath(os.path.join(os.path.dirname(hop), link))
            targets.setdefault(hop, spec)
        targets.setdefault(os.path.realpath(path), spec)
    return targets


def concerns(target: str, path: str, event_type: str, is_directory: bool) -> bool:
    """Whether an event on `path` may change the store file or directory `target`."""
    if path == target or path.startswith(target + "-"):  # the file, or SQLite's -journal / -wal
        return True
    if os.path.dirname(path) == target:  # a file inside a directory store
        return True
    # An ancestor appearing, vanishing or renamed (a store picked up when it appears); a
    # mere "directory modified" of the parent is just some other file next to the store.
    return event_type in STRUCTURAL and target.startswith(path.rstrip("/") + "/")


def _debounce(track: Track, moment: float) -> None:
    """Reconcile `track` a debounce after `moment`, the end of a burst of changes; a
    never-ending storm still reconciles now and then."""
    if track.burst_start is None:
        track.burst_start = moment
    debounce = track.profile.debounce_ms / 1000
    track.due = min(moment + debounce, track.burst_start + max(1.0, 10 * debounce))


def next_poll(profile: Profile) -> float | None:
    """Seconds to the next periodic run: the rescan, or sooner the poll of a source that cannot be
    watched (tuf:), jittered by 10% either way so that a fleet started together spreads its polls."""
    import random

    times = [profile.rescan_s] if profile.rescan_s else []
    if any(ref.spec.startswith("tuf:") for ref in profile.stores):
        times.append(profile.poll * random.uniform(0.9, 1.1))
    return min(times) if times else None


class Daemon:
    def __init__(self, config: Config, log: Log, defaults: dict[str, str] | None = None,
                 pythons: list[str] = (), java_homes: list[str] = (), sync: str = "storesync sync"):
        self.config = config
        self.sync = sync  # the command its hints name, with the daemon's --config and other options
        self.log = log
        self.defaults = defaults or {}
        self.pythons, self.java_homes = list(pythons), list(java_homes)
        self.roots: set[str] = set()  # discovery roots (only when a profile names a selector)
        self.above_roots: set[str] = set()  # every directory above one: made or moved, it may bring one
        self.reroot = False           # an event in a root: list the roots again
        self.tracks: dict[str, Track] = {}
        self.started = now_iso()
        self.stopping = False
        self.reload_wanted = False
        self.rewatch = False
        self.observer = None
        self.watching = False  # the first watches are placed (the start's reconcile reads after them)
        self.watches: dict[str, tuple] = {}  # directory -> ((dev, ino), watchdog watch)
        self.watch_failures: set[str] = set()
        import threading

        self.lock = threading.Lock()  # guards tracks' due/burst/triggers against watchdog threads
        self._wake_w: int | None = None
        self.once_only = False
        self.lock_timeout = LOCK_TIMEOUT_S
        self._apply_config(config)

    # --- config ---------------------------------------------------------------------------

    def _apply_config(self, config: Config) -> None:
        old = self.tracks
        tracks = {}
        for name, profile in config.profiles.items():
            bases = store_paths(profile, self.defaults)
            track = Track(profile, resolve_links(bases), bases, selectors=any(r.selector for r in profile.stores))
            kept = old.get(name)
            if kept is not None:  # the same profile, even edited: its counters never go back (Prometheus)
                track.status, track.runs = kept.status, kept.runs
                track.errors, track.last_success = kept.errors, kept.last_success
            if kept is not None and kept.profile == profile:  # unchanged: its stores, and what was said of them
                track.reported = kept.reported
                track.bases, track.targets, track.named = kept.bases, kept.targets, kept.named
            track.due = time.monotonic()  # reconcile every profile once on start and reload
            tracks[name] = track
        with self.lock:
            self.config, self.tracks = config, tracks
        self._list_roots()

    # --- selectors --------------------------------------------------------------------------

    def _resolver(self):
        """How the engine resolves selectors here: as `sync` does, with the daemon's --python
        and --java-home, and a selector naming nothing is a warning (its stores may appear)."""
        from storesync import discover

        def resolve(selector: str, pythons=(), warnings: list[str] | None = None):
            notes: list[str] = []
            found = discover.resolve(selector, (*self.pythons, *pythons), notes)
            if selector in ("@java", "@all"):
                seen = {os.path.realpath(f.store.path) for f in found}
                found += [f for f in discover.java_home_stores(self.java_homes)
                          if os.path.realpath(f.store.path) not in seen
                          and (selector != "@all" or discover.writable(f.store))]
            if not found:
                notes.append(discover.nothing_found(selector))  # a warning: its stores may appear
            if warnings is not None:
                warnings += notes
            return found

        return resolve

    def _named(self, track: Track, result) -> list[str]:
        """Watch the stores the selectors named at this run; say which ones are new."""
        named = {o.spec for o in result.outcomes if o.role != "source"}
        appeared = sorted(named - track.named) if track.named is not None else []
        track.named = named
        bases = store_paths(track.profile, self.defaults)  # the stores the profile names itself
        for outcome in result.outcomes:
            if outcome.store is not None:
                for path in outcome.store.watch_paths():
                    bases.setdefault(os.path.abspath(str(path)), outcome.spec)
        if bases != track.bases:
            targets = resolve_links(bases)
            with self.lock:
                track.bases, track.targets = bases, targets
            self.rewatch = True
        name = track.profile.name
        if appeared:
            self.log("info", f"profile {name}: new store{'s' if len(appeared) > 1 else ''} found: "
                             f"{', '.join(appeared)}", event="appeared", profile=name, stores=appeared)
        return appeared

    def _list_roots(self) -> None:
        """The discovery roots as they are now (a new profiles.ini entry, a new JDK add places)."""
        roots: set[str] = set()
        if any(t.selectors for t in self.tracks.values()):
            from storesync import discover

            pythons = [p for t in self.tracks.values() for p in t.profile.python]
            roots = {os.path.abspath(str(p)) for p in discover.watch_roots([*self.pythons, *pythons], self.java_homes)}
        above = set()
        for root in roots:
            while (root := os.path.dirname(root)) not in above and root != "/":
                above.add(root)
        self.roots, self.above_roots = roots, above

    def reload(self) -> None:
        """SIGHUP: take the config file anew; whatever goes wrong (a broken file, a bug) is one
        line in the log and the previous config keeps running."""
        path, previous = self.config.path, self.config
        applying = False
        try:
            config = load_config(path)
            sd_notify(f"RELOADING=1\nMONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")
            applying = True
            self._apply_config(config)
            self._refresh_watches()
        except Exception as exc:  # noqa: BLE001 - a reload must never take the service down
            why = exc if isinstance(exc, StoreError) else f"{type(exc).__name__}: {exc}"  # a bug: say which
            self.log("error", f"config reload failed, keeping the previous config: {why}", event="reload-failed",
                     config=str(path))
            if applying:
                self._apply_config(previous)
                self._refresh_watches()
            sd_notify(("READY=1\n" if applying else "") + "STATUS=config reload failed; running the previous config")
            return
        self.log("info", f"config reloaded from {path}: {len(config.profiles)} profiles "
                         f"({', '.join(config.profiles) or 'none'})", event="reloaded", config=str(path))
        sd_notify("READY=1")

    # --- reconciling ------------------------------------------------------------------------

    def reconcile(self, track: Track, reason: str) -> int:
        """Run one profile through the engine and report what it decided; never raises."""
        profile = track.profile
        with self.lock:
            triggers, track.triggers = sorted(track.triggers), set()
            track.due = track.burst_start = None
            rooted, track.rooted = track.rooted, False
        if rooted and not triggers:
            reason = "a change in a discovery root"
        interval = next_poll(profile)
        if interval:
            track.next_rescan = time.monotonic() + interval
        track.runs += 1
        why = f"change in {', '.join(triggers)}" if triggers else reason
        sd_notify(f"STATUS=reconciling {profile.name} ({why})")
        self.log("debug", f"profile {profile.name}: reconciling ({why})", event="reconcile", profile=profile.name)
        try:
            result = engine.run(profile, defaults=self.defaults, lock_timeout=self.lock_timeout,
                                resolve=self._resolver() if track.selectors else None)
            if result.error and "is locked by" in result.error and not self.once_only:
                self.log("debug", f"profile {profile.name}: {result.error}; retrying", profile=profile.name)
                with self.lock:
                    track.due = time.monotonic() + LOCK_RETRY_S
                    track.triggers.update(triggers)
                return result.exit_code
            appeared = self._named(track, result) if track.selectors else []
            self._report(track, result, why, appeared, triggers)
            return result.exit_code
        except Exception as exc:  # noqa: BLE001 - one profile's failure must not stop the others
            message = f"{type(exc).__name__}: {exc}"
            self.log("error", f"profile {profile.name}: reconcile failed ({message}); the daemon keeps running",
                     event="crash", profile=profile.name)
            self.log("debug", traceback.format_exc().rstrip().replace("\n", " | "), event="traceback",
                     profile=profile.name)
            track.errors["crash"] = track.errors.get("crash", 0) + 1
            track.status = {"last_run": now_iso(), "exit_code": EXIT_ERROR, "summary": "reconcile failed",
                            "error": message, "held_back": [], "runs": track.runs, "errors": dict(track.errors)}
            return EXIT_ERROR

    def _report(self, track: Track, result, why: str, appeared: list[str] = (), triggers=()) -> None:
        name = track.profile.name
        problems: dict[str, tuple[str, str, dict]] = {}  # key -> (level, message, fields)
        written = []
        for outcome in result.outcomes:
            plan = outcome.plan
            if outcome.error:
                problems[f"error {outcome.spec} {outcome.error}"] = (
                    "warning", f"profile {name}: {outcome.error}; nothing propagated from or to this store",
                    {"event": "unreadable", "store": outcome.spec})
            elif plan is not None and plan.held_back:
                key = f"held {outcome.spec} {plan.held_back} {plan.summary()} {sorted(e.sha256 for e in plan.removals)}"
                problems[key] = (
                    "warning", f"profile {name}: held back for {outcome.spec}: {plan.summary()}: {plan.held_back}; "
                               f"`{self.sync} --profile {shlex.quote(name)} --force` applies it if intended",
                    {"event": "held-back", "store": outcome.spec})
            elif outcome.written:
                written.append(outcome)
        if result.error:
            problems[f"error {result.error}"] = ("error", f"profile {name}: {result.error}", {"event": "error"})
        warnings = {w for o in result.outcomes if o.store for w in o.store.warnings} | set(result.warnings)
        for warning in sorted(warnings - track.warned):  # e.g. a killed writer's journal rolled back
            self.log("warning", f"profile {name}: {warning}", event="store-warning", profile=name)
        track.warned = warnings

        # the stores whose events started the run (a target edited by hand, undone); in a merge,
        # or with none (a start, a poll), the stores the change came from
        origin = (list(triggers) if triggers and result.mode != "merge" else changed_in(result)) if written else []
        for outcome in written:
            plan = outcome.plan
            said = ("new store, found by its selector" if outcome.spec in appeared else
                    f"change in {', '.join(origin)}" if origin else why)
            self.log("info", f"profile {name}: {said}: wrote {outcome.spec}: {describe(plan)}",
                     event="written", profile=name, store=outcome.spec, adds=len(plan.adds),
                     removals=len(plan.removals), changes=len(plan.changes), backup=outcome.backup)
        for hook in result.hooks:  # each ran for a write of this run, so always said
            self.log("info" if hook.ok else "error",
                     f"profile {name}: {hook.failure() or f'{hook.store}: on-change `{hook.command}`: {hook.outcome()}'}",
                     event="hook", profile=name, store=hook.store, exit_code=hook.exit_code)
        for conflict in result.conflicts:  # a decision of this run, so always said
            self.log("notice", f"profile {name}: conflict: {conflict}", event="conflict", profile=name)
        # Each held-back change or broken store is said once, not on every event.
        for key, (level, message, fields) in problems.items():
            if key not in track.reported:
                self.log(level, message, profile=name, **fields)
        if track.reported and not problems:
            self.log("info", f"profile {name}: in agreement again", event="recovered", profile=name)
        elif not written and not result.conflicts and not (problems.keys() - track.reported):
            if problems:  # not "nothing to do": a change is still held back, or a store still broken
                still = "held back" if any(k.startswith("held ") for k in problems) else "failing"
                self.log("debug", f"profile {name}: {why}: still {still}, as said before", event="unchanged",
                         profile=name)
            else:
                self.log("debug", f"profile {name}: {why}: nothing to do", event="no-op", profile=name)
        track.reported = set(problems)

        plans = [o for o in result.outcomes if o.plan is not None]
        errors = [o.error for o in result.outcomes if o.error] + ([result.error] if result.error else [])
        inventory = observe(result)
        kinds = {fields["event"] for _, _, fields in problems.values()}  # unreadable, held-back, error
        source = inventory.get("source", {})
        if source.get("stale"):
            kinds.add("stale")
        elif source and track.stale:  # the stale warning was said: say its end too
            self.log("info", f"profile {name}: {source.get('url')}: verified again (policy version "
                             f"{source.get('version')}), no longer stale", event="verified", profile=name)
        track.stale = bool(source.get("stale"))
        if source:  # the policy the stores hold: a held-back or failed run applied none
            source["applied"] = (source.get("version") if result.exit_code == EXIT_OK
                                 else (track.status.get("source") or {}).get("applied"))
        if any(not h.ok for h in result.hooks):
            kinds.add("hook")
        for kind in kinds:
            track.errors[kind] = track.errors.get(kind, 0) + 1
        if result.exit_code == EXIT_OK:
            track.last_success = time.time()
        errors += [h.failure() for h in result.hooks if not h.ok]
        track.status = {
            "last_run": now_iso(),
            "exit_code": result.exit_code,
            "summary": "; ".join(f"{o.spec}: {'wrote ' + describe(o.plan) if o.written else o.plan.summary()}"
                                 for o in plans) or "nothing read",
            "error": "; ".join(errors) or None,
            "held_back": [f"{o.spec}: {o.plan.summary()}: {o.plan.held_back}" for o in plans if o.plan.held_back],
            "conflicts": list(result.conflicts),
            "runs": track.runs,
            **inventory,
            "errors": dict(track.errors),
            "last_success": _iso(track.last_success),
            # the hooks of the last run that wrote: a later no-op does not hide a failed one
            **({"hooks": [h.to_json() for h in result.hooks]} if result.hooks else
               {"hooks": track.status["hooks"]} if track.status.get("hooks") else {}),
            **({"last_change": now_iso()} if written else
               {"last_change": track.status.get("last_change")} if track.status.get("last_change") else {}),
        }

    # --- status file ------------------------------------------------------------------------

    def write_status(self, state_name: str) -> None:
        data = {
            "state": state_name, "pid": os.getpid(), "started": self.started, "updated": now_iso(),
            "config": str(Path(self.config.path).absolute()) if self.config.path else None,
            "profiles": {name: t.status or {"last_run": None, "exit_code": None, "summary": "not run yet",
                                            "error": None, "held_back": []}
                         for name, t in self.tracks.items()},
        }
        try:
            atomic_write(Path(state.state_dir()) / "status.json", json.dumps(data, indent=1).encode() + b"\n")
        except OSError as exc:
            key = f"status {exc}"
            if key not in self.watch_failures:
                self.watch_failures.add(key)
                self.log("warning", f"cannot write the status file in {state.state_dir()} ({exc.strerror or exc})",
                         event="status-failed")

    # --- --once -----------------------------------------------------------------------------

    def once(self) -> int:
        self.once_only, self.lock_timeout = True, 10.0  # like `storesync sync`: wait for a lock
        codes = [self.reconcile(track, "run once") for track in self.tracks.values()]
        if not _daemon_running():
            self.write_status("stopped")  # the status file is a running daemon's to write
        return worst(codes)

    # --- the service ------------------------------------------------------------------------

    def serve(self) -> int:
        from watchdog.observers import Observer

        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._wake_w = wake_w
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_hup)

        _route_watchdog_logs(self.log)
        self.observer = Observer()
        self.observer.start()
        self._refresh_watches()
        ping = watchdog_interval()
        next_ping = time.monotonic() + ping if ping else None
        self.log("info", f"started (pid {os.getpid()}): {len(self.tracks)} profiles "
                         f"({', '.join(self.tracks) or 'none'}), watching {len(self.watches)} directories, "
                         f"state in {state.state_dir()}", event="started", config=str(self.config.path))
        self.write_status("running")
        sd_notify(f"READY=1\nSTATUS=watching {len(self.tracks)} profiles\nMAINPID={os.getpid()}")

        while not self.stopping:
            timeout = self._next_deadline(next_ping)
            try:
                select.select([wake_r], [], [], timeout)
            except InterruptedError:
                pass
            _drain(wake_r)
            if self.stopping:
                break
            if self.reload_wanted:
                self.reload_wanted = False
                self.reload()
            if self.reroot:  # something appeared in a discovery root: list the roots again
                self.reroot = False
                self._list_roots()
                self.rewatch = True
            self._relink()  # before the watches are re-made and before any reconcile reads
            if self.rewatch:
                self._refresh_watches()
            ran = self._run_due()
            if self.rewatch:  # a selector found a new store
                self._refresh_watches()
            if ran:
                self.write_status("running")
                sd_notify(f"STATUS=idle; {self._status_line()}")
            if next_ping is not None and time.monotonic() >= next_ping:
                sd_notify("WATCHDOG=1")
                next_ping = time.monotonic() + ping

        sd_notify("STOPPING=1")
        self.log("info", "stopping", event="stopping")
        self.observer.stop()  # stops and joins every watch's thread (its stop race: see _WatchdogLog)
        self.observer.join(timeout=0.5)  # the dispatching thread; SIGTERM still exits within a second
        self.write_status("stopped")
        os.close(wake_r)
        os.close(wake_w)
        return 0

    def _on_stop(self, signum, frame) -> None:
        self.stopping = True  # the reconcile in progress finishes; the loop then ends

    def _on_hup(self, signum, frame) -> None:
        self.reload_wanted = True

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"\0")
        except (BlockingIOError, OSError, TypeError):
            pass  # the pipe is full: the main thread is awake anyway

    def _next_deadline(self, next_ping: float | None) -> float | None:
        with self.lock:
            times = [t.due for t in self.tracks.values() if t.due is not None]
            times += [t.next_rescan for t in self.tracks.values() if t.next_rescan is not None]
        if next_ping is not None:
            times.append(next_ping)
        return max(0.0, min(times) - time.monotonic()) if times else None

    def _run_due(self) -> bool:
        ran = False
        for track in list(self.tracks.values()):
            if self.stopping or self.reload_wanted:
                break
            moment = time.monotonic()
            if track.due is not None and track.due <= moment:
                # An event that came during an earlier reconcile of this loop may have re-pointed
                # a link: watch where it leads before the reconcile reads it.
                self._relink()
                if self.rewatch:
                    self._refresh_watches()
                self.reconcile(track, "start" if not track.runs else "retry")
                ran = True
            elif track.next_rescan is not None and track.next_rescan <= moment:
                # Events may have been missed, watches too; a store that could not be opened
                # at load time may open now; a selector may name more (the reconcile watches them).
                if track.selectors:
                    self._list_roots()
                else:
                    track.bases = store_paths(track.profile, self.defaults)
                with self.lock:
                    track.relink = True
                self._relink()
                self._refresh_watches()
                self.reconcile(track, "periodic rescan")
                ran = True
        return ran

    def _status_line(self) -> str:
        parts = []
        for name, track in self.tracks.items():
            code = track.status.get("exit_code")
            parts.append(f"{name} {'ok' if code == 0 else 'held back' if code == 3 else 'error' if code else '-'}")
        return ", ".join(parts)

    # --- watching ---------------------------------------------------------------------------

    def on_event(self, event) -> None:
        """Called on a watchdog thread: note the profiles concerned, wake the main thread."""
        try:
            self._note(event)
        except Exception as exc:  # noqa: BLE001 - an exception here would end watchdog's thread
            self.log("error", f"event {event!r} not handled ({type(exc).__name__}: {exc}); the rescan will "
                              "catch what it meant", event="event-failed")

    def _note(self, event) -> None:
        kind = event.event_type
        if kind not in RELEVANT:
            return
        paths = [os.fsdecode(event.src_path)]
        if getattr(event, "dest_path", None):
            paths.append(os.fsdecode(event.dest_path))
        moment = time.monotonic()
        hit = False
        with self.lock:
            for track in self.tracks.values():
                specs = {spec for target, spec in track.targets.items()
                         for path in paths if concerns(target, path, kind, event.is_directory)}
                if not specs:
                    continue
                hit = True
                track.triggers |= specs
                track.relink = True
                _debounce(track, moment)
            if hit and (kind in STRUCTURAL or event.is_directory):
                self.rewatch = True
            if self.roots and self._in_roots(paths, kind):
                hit = self.reroot = self.rewatch = True
                self._rooted(moment)
        if hit:
            self._wake()

    def _rooted(self, moment: float) -> None:
        """Something may have appeared in a discovery root: every profile with a selector looks
        again (the caller holds the lock)."""
        for track in self.tracks.values():
            if track.selectors:
                track.rooted = True
                _debounce(track, moment)

    def _in_roots(self, paths: list[str], kind: str) -> bool:
        """Whether an event may bring a store into a selector: something made, removed or
        renamed at a discovery root, in it or above it, or a profiles.ini rewritten in place (a
        known store's own writes are not: they are its profile's business). Set look-ups only:
        a busy home directory sends many events."""
        for path in paths:
            if kind in STRUCTURAL:
                if path in self.roots or os.path.dirname(path) in self.roots or path in self.above_roots:
                    return True
            elif path.endswith("/profiles.ini") and path in self.roots:
                return True
        return False

    def _relink(self) -> None:
        """Resolve the symlinks of the stores of every profile an event concerned since the
        last time; where one now leads elsewhere, the watches follow (on the main thread, and
        before the reconcile that the same event asked for reads the store)."""
        for track in list(self.tracks.values()):
            with self.lock:
                if not track.relink:
                    continue
                track.relink = False
            targets = resolve_links(track.bases)
            if targets != track.targets:
                added = sorted(targets.keys() - track.targets.keys())
                with self.lock:
                    track.targets = targets
                self.rewatch = True
                if added:
                    self.log("debug", f"profile {track.profile.name}: a link now leads to {', '.join(added)}; "
                                      "watching it", event="relinked", profile=track.profile.name)

    def _refresh_watches(self) -> None:
        """Watch the parent (or nearest existing ancestor) of every target, and every target
        that is a directory; re-make a watch whose directory was replaced. The parent of each
        of those is watched too: a watch follows its directory's inode, so only there does a
        directory renamed away and another made in its place show up."""
        self.rewatch = False
        if self.observer is None:
            return
        wanted: dict[str, tuple] = {}
        owners: dict[str, set[str]] = {}  # directory -> the profiles with a target it watches
        targets = [(name, target) for name, track in self.tracks.items() for target in track.targets]
        for name, target in [*targets, *((None, root) for root in self.roots)]:
            for directory in (target, os.path.dirname(target)):
                while True:
                    try:
                        st = os.stat(directory)
                    except OSError:
                        st = None
                    if st is not None or directory == os.path.dirname(directory):
                        break
                    if directory == target:
                        break  # a missing target: its parent's turn
                    directory = os.path.dirname(directory)
                if st is not None and os.path.isdir(directory):
                    wanted[directory] = (st.st_dev, st.st_ino)
                    if name is not None:
                        owners.setdefault(directory, set()).add(name)
        outer: dict[str, tuple] = {}
        for directory in wanted:
            parent = os.path.dirname(directory)
            if parent == directory or parent in wanted:
                continue
            try:
                st = os.stat(parent)
            except OSError:
                continue
            if os.path.isdir(parent):
                outer[parent] = (st.st_dev, st.st_ino)
        wanted.update(outer)
        added: set[str] = set()
        for directory, (identity, watch) in list(self.watches.items()):
            if wanted.get(directory) != identity:
                try:
                    self.observer.unschedule(watch)
                except Exception:  # noqa: BLE001 - a watch whose directory is gone may be half torn down
                    pass
                del self.watches[directory]
        for directory, identity in wanted.items():
            if directory in self.watches:
                continue
            try:
                watch = self.observer.schedule(_Handler(self), directory, recursive=False,
                                               event_filter=_event_classes())
            except OSError as exc:
                if directory in outer:  # only there to notice a replaced directory; the rescan covers it
                    if directory not in self.watch_failures:
                        self.watch_failures.add(directory)
                        self.log("debug", f"cannot watch {directory} ({exc.strerror or exc}); a directory "
                                          "replaced in it is noticed by the periodic rescan", event="watch-failed")
                    continue
                if directory not in self.watch_failures:
                    self.watch_failures.add(directory)
                    self.log("warning", f"cannot watch {directory} ({exc.strerror or exc}); "
                                        "its stores are checked by the periodic rescan only", event="watch-failed")
                continue
            self.watch_failures.discard(directory)
            self.watches[directory] = (identity, watch)
            added.add(directory)
        # A watch sees only what happens after it exists: what appeared in a root between the
        # last listing and now sent no event (a profiles.ini naming a new profile, say), nor did
        # a store changed between the read of a reconcile and its new watch (a store a selector
        # just found). So the roots are listed once more after a new watch there, and a profile
        # reconciles once more after a new watch on its stores; that settles when none is new.
        rooted = self.watching and added & (self.roots | self.above_roots)
        unseen = {name for directory in added for name in owners.get(directory, ())} if self.watching else ()
        if rooted or unseen:
            moment = time.monotonic()
            with self.lock:
                if rooted:
                    self.reroot = True
                    self._rooted(moment)
                for name in unseen:
                    _debounce(self.tracks[name], moment)
            self._wake()
        self.watching = True


class _WatchdogLog(logging.Handler):
    """watchdog's own log records, as lines of the daemon's log (not Python's bare stderr).

    Stopping an inotify emitter (at exit, or when a replaced directory's watch is re-made) races
    its reading thread: an event already read is dropped with an error record "queue_events()
    called when the thread is inactive". Nothing is lost that matters (the watch was being
    removed), so that one is said at debug level only."""

    BENIGN = "called when the thread is inactive"

    def __init__(self, log: Log):
        super().__init__(logging.WARNING)
        self.daemon_log = log

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record must not end watchdog's thread
            message = str(record.msg)
        level = "debug" if self.BENIGN in message else "warning"
        self.daemon_log(level, f"watchdog: {message}", event="watchdog")


def _route_watchdog_logs(log: Log) -> None:
    logger = logging.getLogger("watchdog")
    for handler in [h for h in logger.handlers if isinstance(h, _WatchdogLog)]:
        logger.removeHandler(handler)
    logger.addHandler(_WatchdogLog(log))
    logger.propagate = False


class _Handler:
    """The smallest watchdog handler: forwards every event to the daemon."""

    def __init__(self, daemon: Daemon):
        self.daemon = daemon

    def dispatch(self, event) -> None:
        self.daemon.on_event(event)


def _event_classes() -> list:
    from watchdog import events as ev

    return [ev.FileCreatedEvent, ev.FileModifiedEvent, ev.FileDeletedEvent, ev.FileMovedEvent,
            ev.FileClosedEvent, ev.DirCreatedEvent, ev.DirModifiedEvent, ev.DirDeletedEvent, ev.DirMovedEvent]


def changed_in(result) -> list[str]:
    """Where a change came from: a mirror's source; in a merge, the stores that already
    held the agreed state while others were written (events alone cannot tell: the
    daemon's own writes raise them too)."""
    if result.mode != "merge":
        return [result.outcomes[0].spec]
    return [o.spec for o in result.outcomes if o.plan is not None and o.plan.empty and not o.error]


def observe(result) -> dict:
    """What inventory tools and metrics want of a run: anchors per store after it, and, for a
    source that says how fresh it is (a `tuf:` store's `freshness`), its version and staleness."""
    from storesync.status import anchors_of

    stores, facts = {}, {}
    for outcome in result.outcomes:
        after = (outcome.plan.desired if outcome.written else outcome.plan.current) if outcome.plan else outcome.current
        if after is not None:
            stores[outcome.spec] = {"anchors": anchors_of(after)}
            if outcome.store is not None and outcome.role != "source":
                moved = drift_counts(outcome.store.spec.key, after)
                if moved is not None:
                    stores[outcome.spec]["drift"] = moved
        fresh = getattr(outcome.store, "freshness", None) if outcome.role == "source" else None
        if isinstance(fresh, dict):
            facts["source"] = {"store": outcome.spec, **fresh}
    return {"stores": stores, **facts}


def drift_counts(key: str, after) -> dict[str, int] | None:
    """Entries of a store changed by other hands since storesync last wrote it, per category
    (added, removed, trust_changed), from its ownership record and the trust set just read; None
    where storesync never wrote it (the drift metric is then absent)."""
    try:
        found = state.drift(key, after)
    except (StoreError, OSError, ValueError):
        return None  # no usable record: no figure rather than a wrong one
    if found is None:
        return None
    return {category: len(items) for category, items in found.items() if isinstance(items, list)}


def _iso(moment: float | None) -> str | None:
    if moment is None:
        return None
    return datetime.fromtimestamp(moment, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def describe(plan) -> str:
    """`2 added (A, B), 1 removed (C)`: counts and the first few labels."""
    def names(entries) -> str:
        labels = [e.display_label for e in entries]
        more = f", and {len(labels) - 3} more" if len(labels) > 3 else ""
        return f" ({', '.join(labels[:3])}{more})" if labels else ""

    parts = []
    if plan.adds:
        parts.append(f"{len(plan.adds)} added{names(plan.adds)}")
    if plan.removals:
        parts.append(f"{len(plan.removals)} removed{names(plan.removals)}")
    if plan.changes:
        parts.append(f"{len(plan.changes)} trust changed{names([after for _, after in plan.changes])}")
    return ", ".join(parts) or "rewritten"


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except (BlockingIOError, InterruptedError):
        pass
