"""Shared helpers for the benchmark parts: run a command N times, take the median wall time."""

from __future__ import annotations

import atexit
import glob
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Sequence

STORESYNC = [str(Path(sys.executable).parent / "storesync")]  # the script pip installs, as users run it
# A state dir of the part's own (a part may set another): the machine's grows with every run that
# uses it (remembered checks, backups, records), and its figures would follow that history.
os.environ.setdefault("STORESYNC_STATE_DIR", tempfile.mkdtemp(prefix="storesync-bench-state-"))
atexit.register(shutil.rmtree, os.environ["STORESYNC_STATE_DIR"], True)
BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


def median_time(command: Sequence[str] | Callable[[], object], runs: int = 7,
                before: Callable[[], object] | None = None, check: bool = True) -> float:
    """Median wall time of `command` (argv, or a Python callable); `before` runs untimed."""
    times = []
    for _ in range(runs):
        if before:
            before()
        start = time.perf_counter()
        if callable(command):
            command()
        else:
            result = subprocess.run(command, capture_output=True)
            if check and result.returncode not in (0, 1):
                raise SystemExit(f"benchmark command failed: {' '.join(command)}\n{result.stderr.decode()}")
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def side_by_side(contenders: dict[str, tuple], rounds: int = 7) -> dict[str, float]:
    """Median wall time of each contender, name -> (command, before), run in turns (one run of
    each per round) so that a machine slowing down for a while weighs on all of them alike."""
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, (command, before) in contenders.items():
            times[name].append(median_time(command, runs=1, before=before))
    return {name: statistics.median(t) for name, t in times.items()}


def table(title: str, rows: list[tuple[str, float, str]]) -> None:
    """rows: (what, seconds, note)."""
    print(f"## {title}\n")
    print("| what | median | note |\n|---|---:|---|")
    for what, seconds, note in rows:
        print(f"| {what} | {seconds * 1000:.1f} ms | {note} |")
    print()


def cpu_seconds(pid: int) -> float:
    """CPU time of every thread of `pid`, in ns precision (schedstat, not clock ticks)."""
    total = 0
    for path in glob.glob(f"/proc/{pid}/task/*/schedstat"):
        try:
            total += int(Path(path).read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return total / 1e9


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")
