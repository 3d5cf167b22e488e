"""A store's `on-change` hook: a command (argv, no shell) run once after a run changed the store,
e.g. `systemctl reload nginx`. It cannot undo the write, so a failing hook is reported, never
rolled back."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import tempfile
import time

from storesync.fsio import existing, owner_of

DEFAULT_TIMEOUT = 60.0
OUTPUT_KEPT = 4000  # characters of the hook's output kept for the report: its end, where errors are


class HookRun:
    """What one hook did: its exit status, or why it did not finish."""

    def __init__(self, store: str, argv: list[str]):
        self.store, self.argv = store, list(argv)
        self.exit_code: int | None = None
        self.timed_out = False
        self.error: str | None = None  # it could not be started (not found, not executable)
        self.output = ""
        self.seconds = 0.0
        self.user: str | None = None  # run as the store's owner (root writing a user's store)
        self.retry = False  # run again because it failed at an earlier run, not for a change of this one

    @property
    def command(self) -> str:
        return shlex.join(self.argv)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def outcome(self) -> str:
        """`exit 0 in 0.1 s`, `timed out after 60 s`, `not run: no such file ...`."""
        if self.error:
            return f"not run: {self.error}"
        if self.timed_out:
            return f"timed out after {self.seconds:g} s, killed"
        if self.exit_code is not None and self.exit_code < 0:
            return f"killed by signal {-self.exit_code}"
        return f"exit {self.exit_code} in {self.seconds:.1f} s"

    def failure(self) -> str | None:
        """One sentence for a failed hook: the store, the command, what to do."""
        if self.ok:
            return None
        failed = "failed again" if self.retry else "failed"
        return (f"{self.store}: written, but its on-change hook `{self.command}` {failed} ({self.outcome()}); "
                "the write stands: fix the hook, and the next run runs it again")

    def to_json(self) -> dict:
        return {"store": self.store, "argv": self.argv, "exit_code": self.exit_code, "timed_out": self.timed_out,
                "error": self.error, "seconds": round(self.seconds, 3), "output": self.output, "user": self.user,
                "ok": self.ok, "retry": self.retry}


def run_hook(store: str, argv: list[str], path: str | os.PathLike, timeout: float = DEFAULT_TIMEOUT,
             env: dict[str, str] | None = None) -> HookRun:
    """Run `argv` for the store at `path`: as the store's owner when root runs it on a user's
    store (what root writes there is written as that user, and so is what it runs for it)."""
    hook = HookRun(store, argv)
    kwargs: dict = {}
    env = {**os.environ, **(env or {})}
    if os.geteuid() == 0:
        uid, gid = owner_of(existing(path))
        if uid != 0:
            import pwd

            kwargs.update(user=uid, group=gid, extra_groups=[])
            try:
                account = pwd.getpwuid(uid)
                hook.user = account.pw_name
                kwargs["extra_groups"] = os.getgrouplist(hook.user, gid)
                env.update(HOME=account.pw_dir, USER=hook.user, LOGNAME=hook.user)  # not root's
            except KeyError:
                hook.user = str(uid)
    # Output goes to a file, not a pipe: a hook that leaves a daemon behind holding the pipe
    # would keep us waiting; only its end is kept.
    with tempfile.TemporaryFile() as out:
        start = time.monotonic()
        try:
            child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                     start_new_session=True, env=env, **kwargs)
        except (OSError, subprocess.SubprocessError) as exc:
            hook.error = getattr(exc, "strerror", None) or str(exc)
            if isinstance(exc, FileNotFoundError):
                hook.error = f"command not found ({argv[0]})"
            return hook
        try:
            hook.exit_code = child.wait(timeout)
        except subprocess.TimeoutExpired:
            hook.timed_out = True
            _kill_tree(child.pid)
            child.wait()
        hook.seconds = timeout if hook.timed_out else time.monotonic() - start
        out.seek(0, os.SEEK_END)
        out.seek(max(0, out.tell() - OUTPUT_KEPT))
        hook.output = out.read().decode(errors="replace")
    return hook


def _kill_tree(pid: int) -> None:
    """Kill the hook and everything it started: its process group, and the descendants that left
    it (`setsid`), found by parent pid. They are stopped first, until no new one appears, so
    none can fork away between the listing and the kill."""
    try:
        os.killpg(pid, signal.SIGSTOP)
    except OSError:
        pass
    tree: set[int] = set()
    while True:
        found = _descendants(pid) - tree
        if not found:
            break
        tree |= found
        for each in found:
            _signal(each, signal.SIGSTOP)
    for each in tree | {pid}:
        _signal(each, signal.SIGKILL)
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/stat", "rb") as f:
                    ppid = int(f.read().rsplit(b")", 1)[1].split()[1])  # the name may hold spaces and ')'
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except OSError:
        pass  # gone already
