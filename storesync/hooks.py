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
from pathlib import Path

from storesync.fsio import owner_of

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


def run_hook(store: str, argv: list[str], path: Path, timeout: float = DEFAULT_TIMEOUT,
             env: dict[str, str] | None = None) -> HookRun:
    """Run `argv` for the store at `path`: as the store's owner when root runs it on a user's
    store (what root writes there is written as that user, and so is what it runs for it)."""
    hook = HookRun(store, argv)
    kwargs: dict = {}
    env = {**os.environ, **(env or {})}
    if os.geteuid() == 0:
        place = Path(path)
        while not place.exists() and place != place.parent:
            place = place.parent
        uid, gid = owner_of(place)
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
            try:
                os.killpg(child.pid, signal.SIGKILL)  # the hook and whatever it started
            except OSError:
                pass
            child.wait()
        hook.seconds = timeout if hook.timed_out else time.monotonic() - start
        out.seek(0, os.SEEK_END)
        out.seek(max(0, out.tell() - OUTPUT_KEPT))
        hook.output = out.read().decode(errors="replace")
    return hook
