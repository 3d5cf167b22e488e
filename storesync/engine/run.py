"""Running a profile: read every store, plan every target, guard, then write as one
transaction (backups first; re-read and compare after; put everything back if any fails).
"""

from __future__ import annotations

import errno
import os
import stat

from storesync import fsio, state
from storesync.config import Profile, StoreRef, store_key
from storesync.engine import policy
from storesync.engine.plan import ADD, MIRROR, REMOVE, Plan, Scope, compare, lift, make_plan, retarget, touched, undo
from storesync.model import EXIT_DIFFERENT, EXIT_ERROR, EXIT_HELD, EXIT_OK, StoreError, TrustSet
from storesync.stores import Store, StoreSpec, cannot_read, open_store, options_of, read_store

UNDO_READS = 20  # reads of a store to undo, 0.1 s apart, before its backup's bytes go back
_EMPTY = ("an empty store is never a policy, so it empties nothing (if emptying the others is meant, "
          "say so with --allow-empty, or allow_empty = true in the profile)")


class Outcome:
    """What happened to one store of a run."""

    def __init__(self, spec: str, role: str):
        self.spec = spec
        self.role = role  # source, target, or store (merge)
        self.store: Store | None = None
        self.current: TrustSet | None = None
        self.version: object = None  # the store's version when `current` was read (None: unknown)
        self.plan: Plan | None = None
        self.error: str | None = None
        self.written = False
        self.backup: str | None = None
        self.written_version: object = None  # the store's version right after storesync wrote it
        self.ref: StoreRef | None = None
        self.readded: set[str] = set()  # adds storesync had written before and someone removed since
        self.hook = None  # its on-change hook's run (storesync.hooks.HookRun), if it ran

    def to_json(self) -> dict:
        data = {"store": self.spec, "role": self.role, "written": self.written}
        if self.plan is not None:
            data.update(self.plan.to_json())
            data["store"] = self.spec
        if self.error:
            data["error"] = self.error
        if getattr(self.store, "freshness", None):  # a tuf: source: which policy version, how fresh
            data["freshness"] = self.store.freshness
        if self.backup:
            data["backup"] = self.backup
        if self.readded:
            data["readded"] = sorted(self.readded)
        if self.hook is not None:
            data["hook"] = self.hook.to_json()
        return data


class Result:
    """What a run of one profile did."""

    def __init__(self, profile: str, mode: str, dry_run: bool):
        self.profile, self.mode, self.dry_run = profile, mode, dry_run
        self.outcomes: list[Outcome] = []
        self.conflicts: list[str] = []
        self.error: str | None = None
        self.rolled_back: list[str] = []
        self.selectors: dict[str, list[dict]] = {}  # selector -> the stores it named at this run
        self.warnings: list[str] = []  # notes of the run itself (a selector's store left out)

    @property
    def exit_code(self) -> int:
        if self.error or any(o.error for o in self.outcomes) or any(not h.ok for h in self.hooks):
            return EXIT_ERROR
        plans = [o.plan for o in self.outcomes if o.plan is not None]
        if any(p.held_back for p in plans):
            return EXIT_HELD
        if self.dry_run and any(not p.empty for p in plans):
            return EXIT_DIFFERENT  # changes pending (--dry-run)
        return EXIT_OK

    @property
    def changed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.written]

    @property
    def hooks(self) -> list:
        return [o.hook for o in self.outcomes if o.hook is not None]

    def to_json(self) -> dict:
        return {
            "profile": self.profile, "mode": self.mode, "dry_run": self.dry_run,
            "error": self.error, "rolled_back": self.rolled_back, "conflicts": self.conflicts,
            "plans": [o.to_json() for o in self.outcomes], "exit_code": self.exit_code,
            **({"selectors": self.selectors} if self.selectors else {}),
            **({"warnings": self.warnings} if self.warnings else {}),
            "hooks": [h.to_json() for h in self.hooks],
        }


def run(profile: Profile, *, dry_run: bool = False, force: bool = False,
        defaults: dict[str, str] | None = None, lock_timeout: float = 10.0, allow_empty: bool = False,
        resolve=None, hooks: bool = True) -> Result:
    """Run one profile; then its stores' on-change hooks, unless `hooks` is False: a caller
    running several profiles calls run_hooks once after all of them.

    `resolve(selector, pythons, warnings) -> [found stores]` names the stores of the profile's
    selectors (`@nss`, ...) afresh at every run (storesync.discover.resolver); it raises
    StoreError for a selector that must name something and does not."""
    allow_empty = allow_empty or profile.allow_empty
    resolved: dict[str, list[dict]] = {}
    notes: list[str] = []
    if any(ref.selector for ref in profile.stores):
        try:
            profile = _expand(profile, resolve, resolved, notes)
        except StoreError as exc:
            result = Result(profile.name, profile.mode, dry_run)
            result.selectors, result.warnings, result.error = resolved, notes, str(exc)
            return result
    result = _run(profile, dry_run, force, defaults, lock_timeout, allow_empty)
    result.selectors, result.warnings = resolved, notes
    if hooks:
        run_hooks([result])  # after the locks: a slow hook holds up no other run
    return result


def _expand(profile: Profile, resolve, resolved: dict[str, list[dict]], notes: list[str]) -> Profile:
    """The profile with each selector replaced by the stores it names now, each store once
    (by real path) and never the source; a store's options and hook come from the selector's
    entry in the profile, the hook otherwise from the store's family (@system: its rebuild)."""
    import copy

    if resolve is None:
        raise StoreError(f"profile {profile.name}: selectors ({', '.join(r.spec for r in profile.stores if r.selector)}) "
                         "are resolved by storesync sync and the daemon; name the stores instead")
    keys = {store_key(profile.stores[0].spec)}
    stores = [profile.stores[0]]
    for ref in profile.stores[1:]:
        if not ref.selector:
            if store_key(ref.spec) not in keys:
                keys.add(store_key(ref.spec))
                stores.append(ref)
            continue
        selector, _, query = ref.spec.partition("?")  # "@nss?builtins=...": options of every store it names
        options = _selector_options(ref.spec, query)
        found = resolve(selector, profile.python, notes)
        hooks = {f.spec: ref.on_change if ref.on_change is not None else f.on_change for f in found}
        resolved[ref.spec] = [{"store": f.spec, "owner": f.owner, "found_as": f.what,
                               **({"on_change": hooks[f.spec]} if hooks[f.spec] else {})} for f in found]
        for f in found:
            key = store_key(f.store)
            if key == store_key(profile.stores[0].spec):
                notes.append(f"{ref.spec}: {f.spec} is the source; not a target of itself")
            if key not in keys:
                keys.add(key)
                own = {k: v for k, v in options.items() if k in options_of(f.store.kind)}
                store = StoreSpec(f.store.kind, f.store.path, {**f.store.options, **own})  # a path: never parsed
                stores.append(StoreRef(store, ref.options, hooks[f.spec], ref.timeout))
    expanded = copy.copy(profile)
    expanded.stores = stores
    return expanded


def _selector_options(spec: str, query: str) -> dict[str, str]:
    """A selector's `?options`, read as a store spec's are. Each applies to the stores it names
    whose kind has it (`@all?password-file=F`: the NSS and Java stores); one that no kind has,
    or a value none of those takes, is an error as in a store's spec."""
    from storesync.stores import check_selector, parse_query

    options = parse_query(spec, query)
    check_selector(spec, options)
    return options


def _run(profile: Profile, dry_run: bool, force: bool, defaults: dict[str, str] | None, lock_timeout: float,
         allow_empty: bool) -> Result:
    unlocked = _new_result(profile, dry_run, defaults)
    # A wrong spec, a read-only target: nothing is read or planned. A store a selector found
    # that cannot be opened is reported and left out: the others it found are still written.
    if any(o.error and not o.ref.found for o in unlocked.outcomes):
        return unlocked
    if profile.mode != "merge":
        # Reading needs no lock, and most runs find nothing to do: plan first without locks
        # (nor the state dir), and take them only to write, reading again under them what
        # changed since (every storesync write changes a store's version).
        try:
            _prepare(profile, unlocked, force, allow_empty)
        except StoreError as exc:
            unlocked.error = str(exc)
        if dry_run or unlocked.error or not any(o.plan and not o.plan.empty and not o.plan.held_back
                                                for o in unlocked.outcomes):
            return unlocked

    result = _new_result(profile, dry_run, defaults) if profile.mode != "merge" else unlocked
    try:
        with state.held_locks(state.lock(f"profile {profile.name}", lock_timeout),
                              *(state.store_lock(path, lock_timeout)
                                for path in sorted({os.path.realpath(o.store.path) for o in result.outcomes if o.store}))):
            if profile.mode == "merge":
                merged = _prepare(profile, result, force, allow_empty)
            elif all(o.store is not None and o.version is not None and o.store.version() == o.version
                     for o in unlocked.outcomes):
                result, merged = unlocked, None  # no store changed since it was planned: the plan stands
            else:
                merged = _replan(profile, result, unlocked, force, allow_empty)
            if not dry_run and not result.error:
                policy.save_passed_checks(forget=True)  # planned: the writes judge nothing
                _apply(result)
                policy.save_passed_checks()  # what a write passed (an NSS database's password check)
                _save_baseline(profile, result, merged)
    except StoreError as exc:
        result.error = str(exc)
    return result


def _replan(profile: Profile, result: Result, unlocked: Result, force: bool, allow_empty: bool):
    """Plan again under the locks, reading again only the stores whose version changed since the
    unlocked plan; what that first read found (a recovery, say) is still news."""
    for outcome, earlier in zip(result.outcomes, unlocked.outcomes):
        earlier.plan = None  # the first plan is not held beside the new one
        if earlier.version is not None and outcome.store and outcome.store.version() == earlier.version:
            outcome.store, outcome.current, outcome.version = earlier.store, earlier.current, earlier.version
    merged = _prepare(profile, result, force, allow_empty)
    for outcome, earlier in zip(result.outcomes, unlocked.outcomes):
        if outcome.store and earlier.store and outcome.store is not earlier.store:
            outcome.store.warnings[:0] = [w for w in earlier.store.warnings if w not in outcome.store.warnings]
    return merged


def _new_result(profile: Profile, dry_run: bool, defaults: dict[str, str] | None) -> Result:
    result = Result(profile.name, profile.mode, dry_run)
    roles = ["source", *["target"] * (len(profile.stores) - 1)] if profile.mode != "merge" else None
    for n, ref in enumerate(profile.stores):
        result.outcomes.append(_open(ref, roles[n] if roles else "store", defaults or {}))
    return result


def _open(ref: StoreRef, role: str, defaults: dict[str, str]) -> Outcome:
    outcome = Outcome(str(ref.spec), role)
    outcome.ref = ref
    try:
        outcome.store = open_store(ref.spec, {**defaults, **ref.options}, written=role != "source")
        outcome.spec = str(outcome.store.spec)
    except StoreError as exc:
        outcome.error = str(exc)
    except OSError as exc:
        outcome.error = f"{ref.spec}: cannot open it ({exc.strerror or exc})"
    return outcome


def _read(outcome: Outcome) -> None:
    try:
        outcome.version = outcome.store.version()  # before reading: a change while reading shows
        outcome.current = read_store(outcome.store)
    except StoreError as exc:
        outcome.error = str(exc)
    except OSError as exc:
        outcome.error = f"{outcome.spec}: {cannot_read(exc)}"


def _prepare(profile: Profile, result: Result, force: bool, allow_empty: bool = False):
    """Read every store and plan every target (and guard); returns a merge's result, if any."""
    for outcome in result.outcomes:
        if outcome.store is not None and outcome.current is None:
            _read(outcome)
    readable = [o for o in result.outcomes if o.current is not None]
    if profile.mode == "merge":
        from storesync.engine.merge import View, merge

        baseline = state.load_baseline(profile.name)
        if baseline is not None:  # after the first merge, a vanished store is not "everything removed"
            for o in readable:
                if not o.store.exists():
                    o.current, o.error = None, f"{o.spec}: does not exist any more; restore it, or delete the baseline {state.baseline_path(profile.name)} to start afresh"
            readable = [o for o in readable if o.current is not None]
        for o in readable if baseline and not allow_empty else ():  # emptied since: not a removal of everything
            if not o.current:
                o.current, o.error = None, (f"{o.spec}: is empty, while the last agreed set holds {len(baseline)} "
                                            f"certificates; {_EMPTY}")
        readable = [o for o in readable if o.current is not None]
        views = [View(o.spec, o.current, o.store.capabilities, o.store.purpose,
                      may_escalate=profile.allow_escalation or _may_escalate(o, readable)) for o in readable]
        merged = merge(baseline, views, admit=(lambda e: e.cert.may_anchor) if profile.ca_only else (lambda e: True))
        result.conflicts += merged.conflicts
        scope = Scope(frozenset(profile.purposes) or None, True)  # the merged set speaks for all
        held = {sha for o in readable for sha in o.store.fixed_anchors}  # trusted where it stays: not dropped
        for outcome, view in zip(readable, views):
            outcome.plan = _plan(profile, merged.desired_for(view), outcome, MIRROR, scope, held)
        if not force:
            _guard(profile, readable)
            if any(o.plan.held_back for o in readable):  # a merge is applied whole or not at all
                for o in readable:
                    o.plan.held_back = o.plan.held_back or "another store of this merge was held back"
        return merged
    else:
        source = result.outcomes[0]
        if source.current is not None and not source.store.exists():
            source.current, source.error = None, f"{source.spec}: {source.store.missing()}"
        if source.current is None:
            result.error = f"source unreadable, nothing written: {source.error}"
            source.error = None
            return None
        if not source.current and profile.mode == MIRROR and not allow_empty:
            result.error = f"{source.spec}: is empty; {_EMPTY}"
            return None
        caps, purpose = source.store.capabilities, source.store.purpose
        wanted, scope = lift(source.current, caps, purpose), Scope.of(caps, purpose, profile.purposes)
        for outcome in readable[1:] if readable and readable[0] is source else readable:
            outcome.plan = _plan(profile, wanted, outcome, profile.mode if profile.mode in (ADD, REMOVE) else MIRROR, scope,
                                 set(source.store.fixed_anchors))
        if not force:
            _guard(profile, [o for o in readable if o is not source])
        return None


def _save_baseline(profile: Profile, result: Result, merged) -> None:
    """A merge's agreed set becomes the baseline only if every store took part and took it."""
    if merged is None or result.error:
        return
    if all(o.plan is not None and not o.error and not o.plan.held_back for o in result.outcomes):

        state.save_baseline(profile.name, merged.merged)


def _plan(profile: Profile, wanted: TrustSet, outcome: Outcome, mode: str, scope: Scope,
          held: set[str] = frozenset()) -> Plan:
    """`held`: certificates a source trusts through an entry storesync never changes (as the
    target may: `policy.note_fixed`)."""
    store = outcome.store
    if profile.only and not any(policy.selected(e, profile.only) for e in wanted.values()):
        raise StoreError(f"--only {' '.join(profile.only)}: no certificate of the source matches, so nothing "
                         "was planned (a selector is 16 or more hex digits of a SHA-256, a whole SHA-1, or a "
                         "glob on the label `storesync list` shows)")
    wanted = policy.select(wanted, profile.purposes, profile.drop_expired, profile.only)
    current = outcome.current
    if mode == REMOVE and store.unsynced:  # what remove takes out, whatever the trust, synced or not
        current = TrustSet([*current.values(), *(e for sha, e in store.unsynced.items() if sha not in current)])
    plan = make_plan(wanted, current, store.capabilities, store=outcome.spec, mode=mode,
                     purpose=store.purpose, scope=scope, builtins=store.builtin_anchors(), rewrite=store.rewrite)
    policy.note_fixed(plan, wanted, held, store, ADD if profile.only else mode, scope)  # --only: the rest is not the source's
    plan.create = not store.exists() and mode != REMOVE  # a target named is a target made, even with nothing to hold
    if plan.create:
        store.check_creatable()
    if profile.ca_only:
        policy.refuse_non_ca(plan)
    policy.refuse_unloadable(plan, store.reader)
    policy.label_new_entries(plan, store.option("label-template"), store.spec)
    if plan.adds:  # what storesync wrote and someone removed since: said in the plan line
        outcome.readded = state.owned_among(store.spec.key, (e.sha256 for e in plan.adds))
    return plan


def run_hooks(results: list[Result]) -> None:
    """Each changed store's on-change hook, once per run of these profiles, after all their
    writes stood (none for a rolled-back profile, a dry run or a no-op). A hook that failed is
    run again by the next run that finds its store as wanted: the change it was to announce
    (a reload) has not happened yet."""
    done = set()
    for result, outcome in ((r, o) for r in results if not r.dry_run for o in r.outcomes):
        argv = outcome.ref.on_change if outcome.ref and outcome.store else None
        if not argv or (outcome.store.spec.key, tuple(argv)) in done:
            continue
        key = outcome.store.spec.key
        retry = not outcome.written and outcome.plan is not None and outcome.plan.empty and not outcome.error
        if not outcome.written and not (retry and state.hook_failed(key, argv)):
            continue
        from storesync.hooks import DEFAULT_TIMEOUT, run_hook  # only when a hook runs

        done.add((key, tuple(argv)))
        timeout = float(outcome.ref.timeout or DEFAULT_TIMEOUT)
        outcome.hook = run_hook(outcome.spec, argv, outcome.store.path, timeout,
                                {"STORESYNC_STORE": outcome.spec, "STORESYNC_PROFILE": result.profile})
        outcome.hook.retry = retry
        state.note_hook(key, argv, outcome.hook.ok)


def _guard(profile: Profile, outcomes: list[Outcome]) -> None:
    for outcome in outcomes:
        share = outcome.store.option("max-removal-share")  # a store's own threshold wins (checked as it was opened)
        share = float(share) if share is not None else profile.max_removal_share
        outcome.plan.held_back = policy.removal_guard(outcome.plan, share)


def _apply(result: Result) -> None:
    """Write every changed store; if any write or check fails, undo what was written."""
    # (outcome, its ownership record's bytes before the run): an undo puts the record back, and the
    # store's bytes from its backup file (kept durable before the first write, and not held in
    # memory meanwhile: a large store's backup is a base64 copy of all of it)
    prepared: list[tuple[Outcome, bytes | None]] = []
    done: list[tuple[Outcome, bytes | None]] = []
    current = None
    try:
        # Every store's backup, and the record of what storesync writes in it (an undo puts the
        # record back: a run killed after the write leaves nothing half-done in the state dir for
        # a next run that finds nothing to do), is kept before the first store changes, made
        # durable together: one flush for the run instead of four fsyncs per store.
        records: dict = {}
        for outcome in result.outcomes:
            plan = outcome.plan
            if plan is None or plan.empty or plan.held_back or outcome.error:
                continue
            current = outcome
            key = outcome.store.spec.key
            outcome.backup, backup = state.backup_file(key, outcome.store.snapshot(), f"before sync of {result.profile}",
                                                       touched(plan))
            records.update(backup)
            owned = state.owned_bytes(key)  # bytes: not its parse, through the writes
            records.update(state.owned_file(key, {sha: plan.desired.get(sha) for sha in touched(plan)},
                                            plan.desired, set(plan.rewrites), owned))
            prepared.append((outcome, owned))
        if records:
            state.save_records(prepared[0][0].spec, records)
        records = None  # on disk now: not held through the writes
        with fsio.folders_synced_together():  # one flush for the renames of the run's files
            for item in prepared:
                outcome = current = item[0]
                done.append(item)
                outcome.store.write(outcome.plan)
                outcome.written = True
                outcome.written_version = outcome.store.version()
                if item is prepared[-1]:  # no write is left to ask what planning worked out: not held through the read-back
                    for entry in outcome.plan.desired.values():
                        entry.cert.forget_derived()
                _check_written(outcome)
    except Exception as exc:  # noqa: BLE001 - whatever failed, the stores written are put back
        todo = ""  # said last, after what was put back
        if isinstance(exc, StoreError):
            message = str(exc)
        elif isinstance(exc, OSError) and exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            path = current.store.path
            folder = os.path.dirname(os.path.realpath(path)) if os.path.isfile(path) else None
            what = (f"its folder {folder} writable by this user (a file is replaced through a new one beside it)"
                    if folder and os.access(path, os.W_OK) and not os.access(folder, os.W_OK) else "it writable by this user")
            message = (f"{current.spec}: cannot write it ({exc.strerror}: {exc.filename or path}); "
                       f"make {what} or leave it out of the targets")
        elif isinstance(exc, OSError):
            message = f"{current.spec}: {exc.strerror or exc} ({exc.filename or current.store.path})"
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                todo = "; free space on that disk and run the sync again"
        else:
            message = f"{current.spec}: writing failed unexpectedly ({type(exc).__name__}: {exc}); please report this"
        for outcome, owned in prepared[len(done):]:  # recorded, never written
            state.put_owned(outcome.store.spec.key, owned)
            state.drop_backup(outcome.store.spec.key, outcome.backup)
            outcome.backup = None
        for outcome, owned in reversed(done):
            state.put_owned(outcome.store.spec.key, owned)
            try:
                snapshot = _backup_of(outcome.store, outcome.backup)[1]
                _undo(outcome, snapshot)
                result.rolled_back.append(outcome.spec)
                if _as_backed_up(outcome.store, snapshot):  # nothing to roll back: no backup
                    state.drop_backup(outcome.store.spec.key, outcome.backup)
                    outcome.backup = None
            except Exception as undo_error:  # noqa: BLE001 - report, keep restoring the others
                from shlex import quote

                message += (f"; and putting back {outcome.spec} failed too ({undo_error}): "
                            f"`storesync rollback {quote(outcome.spec)}`")
            outcome.written = False
        everything = len(result.rolled_back) == len(done)  # else the message names those not put back
        result.error = message + ("" if not result.rolled_back else "; every store was put back as it was"
                                  if everything else "; the others were put back") + todo


def _as_backed_up(store: Store, snapshot: dict) -> bool:
    """Does the store hold exactly its backup's bytes (or still not exist) after a failed run: a
    write that failed before changing it, or one put back byte for byte?"""
    try:
        return store.snapshot() == snapshot
    except Exception:  # noqa: BLE001 - a store that cannot be read any more keeps its backup
        return False


def _undo(outcome: Outcome, snapshot: dict) -> None:
    """Put back what the plan touched, as it was, in the store as it is now: never the old
    bytes over what another program wrote meanwhile (only a store nobody wrote since storesync
    did, by its version, or one that cannot be read any more gets its backup's bytes back)."""
    import time

    store = open_store(outcome.store.spec)
    if outcome.written_version is not None and store.version() == outcome.written_version:
        store.restore(snapshot)  # nobody wrote since: the exact old bytes (a re-render may reorder)
        return
    for attempt in range(UNDO_READS):
        try:
            now = read_store(store)
            break
        except StoreError:  # another program may be rewriting it in place (keytool): wait
            if attempt == UNDO_READS - 1:
                store.restore(snapshot)
                return
            time.sleep(0.1)
    inverse = undo(outcome.plan, now)
    if not inverse.empty:
        store.write(inverse)


def _backup_of(store: Store, backup_id: str | None) -> tuple[str, dict]:
    """A backup of `store` read from the state dir, not trusted blindly: one that names a file
    outside the store is refused (for an undo as for `rollback`)."""
    backup_id, snapshot = state.load_backup(store.spec.key, backup_id)
    # A backup made through another name of the store's folder (a symlink) names its files by
    # that name: here they are named as this store names them.
    folder, real = fsio.absolute(store.path), os.path.realpath(store.path)
    moved = {d for d in {os.path.dirname(path) for path in snapshot} if d != folder and os.path.realpath(d) == real}
    snapshot = {os.path.join(folder, os.path.basename(path)) if os.path.dirname(path) in moved else path: value
                for path, value in snapshot.items()}
    strays = [path for path in snapshot if not store.owns(path)]
    if strays:
        raise StoreError(f"{store.spec.key}: backup {backup_id} names files outside the store ({strays[0]}); "
                         "not restored")
    return backup_id, snapshot


def rollback(store: Store, backup_id: str | None = None) -> dict:
    """`storesync rollback`: put the certificates storesync changed since a backup back as the
    backup has them. When nobody else changed the store since, that is the backup's exact bytes;
    otherwise what other programs added or changed stays, and is listed in "kept"."""

    spec = store.spec.key
    with state.store_lock(store.path):
        backup_id, snapshot = _backup_of(store, backup_id)
        mine = state.touched_since(spec, backup_id)  # None: an older version's backup, which does not say
        then = now = None  # a store (or backup) that cannot be read: only its bytes can go back
        try:
            then = store.snapshot_trust(snapshot)
        except StoreError:
            try:
                read_store(store)
            except StoreError as exc:
                # Neither the store nor its backup (which the sync that made it read) reads: the
                # options are wrong, most often a password not given. The backup's bytes would drop
                # what other programs added since, unseen.
                raise StoreError(f"{exc}; nor can backup {backup_id} be read, so nothing was put back") from None
        else:
            try:
                now = read_store(store)
            except StoreError:
                then = None  # the store is damaged: its backup's bytes go back
        plan, kept, changed = None, [], None
        if then is not None:
            changed = {sha for sha in {*then, *now}
                       if sha not in then or sha not in now or then[sha].trust_key() != now[sha].trust_key()}
            theirs = changed - mine if mine is not None else set()
            if theirs:
                plan = retarget(Plan(str(store.spec), now, now), now, {sha: then.get(sha) for sha in mine})
                changed = touched(plan)
                kept = [f"{(now.get(sha) or then[sha]).display_label}  {sha[:16]}: "
                        f"{'added' if sha not in then else 'removed' if sha not in now else 'changed'} "
                        "since the backup by another program" for sha in sorted(theirs)]
        undo = state.save_backup(spec, store.snapshot(), f"before rollback to {backup_id}", changed)
        record = state.load_owned(spec)
        if record is not None:  # what the rollback puts back is no one's drift, and no longer storesync's
            final = plan.desired if plan is not None else then
            if final is None:  # a store that cannot be read goes back byte for byte: start afresh
                state.put_owned(spec, None)
            else:
                state.save_owned(spec, {sha: None for sha in changed}, final)
        if plan is None:
            store.restore(snapshot)
        elif not plan.empty:
            store.write(plan)
    return {"store": spec, "restored": backup_id, "undo": undo, "kept": kept}


def _check_written(outcome: Outcome) -> None:
    """Read the store again, fresh, and make sure it says what the plan wanted for every
    certificate the plan touched (another program may add or change others meanwhile)."""

    store = open_store(outcome.store.spec)
    store.known = {e.cert.der: e.cert for e in outcome.plan.desired.values()}  # whole bytes compared: no parse twice
    store.digested = False  # never written: no digest of its bytes for a write to compare with
    mine = touched(outcome.plan)
    found = TrustSet(e for sha, e in read_store(store).items() if sha in mine)
    store = None  # not held while comparing: what its read kept for a write (a hashed directory's names, links)
    wanted = TrustSet(e for sha, e in outcome.plan.desired.items() if sha in mine)
    caps = outcome.store.capabilities
    diff = compare(wanted, found, caps, caps, outcome.store.purpose, outcome.store.purpose)
    if any(diff.values()):
        raise StoreError(f"{outcome.spec}: written, but reading it back does not give the planned set")


def _writers(store: Store) -> tuple[set[int], bool]:
    """Who can change a store: the owners of its file and of the folder holding it (which can
    replace the file), and whether a group or everyone can (then anyone counts). A folder store
    (an NSS database, a hashed directory) changes through its files too: their owners count, and
    a linked file's folder. A store named through a link is judged where the link leads too."""
    path = fsio.existing(store.path)
    places = {path, fsio.parent(os.path.realpath(path)), *map(fsio.parent, _links(path))}
    if os.path.isdir(path):
        for name in os.listdir(path):
            inside = os.path.join(path, name)
            places.add(inside)
            if os.path.islink(inside):
                places.add(fsio.parent(os.path.realpath(inside)))
    uids, anyone = set(), False
    for place in places:
        try:
            st = os.stat(place)
        except OSError:
            continue  # gone meanwhile, or a dangling link: nobody changes the store through it
        uids.add(st.st_uid)
        sticky = stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_ISVTX
        anyone |= bool(st.st_mode & stat.S_IWOTH) and not sticky
        anyone |= bool(st.st_mode & stat.S_IWGRP) and st.st_gid != 0 and not sticky
    return uids - {0} or {0}, anyone


def _links(path: str) -> list[str]:
    """`path` and every link it leads through: whoever may write one's folder can point it
    elsewhere."""
    hops = [path]
    while os.path.islink(hops[-1]) and len(hops) < 40:  # 40: the kernel's own limit on a chain
        hops.append(os.path.join(os.path.dirname(hops[-1]), os.readlink(hops[-1])))
    return hops


def _may_escalate(outcome: Outcome, others: list[Outcome]) -> bool:
    """A store may add trust to the others only if whoever can change it could change them."""
    writers, anyone = _writers(outcome.store)
    if anyone:
        return False
    return all(writers <= ({0} | _writers(o.store)[0]) for o in others if o is not outcome)
