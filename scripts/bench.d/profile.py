"""Issue 18: where the time of the goals not met goes. For each case, the whole CLI process (as
the other parts time it), the interpreter's start (`python -c pass`), the imports the command
needs, and its work split by the engine's steps, timed inside fresh processes by wrapping those
functions (medians of 7). Read with the peers' times of the same run, it shows how much of each
goal is left once the interpreter and the imports are paid, and what a write's read-back costs.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _timing import BUNDLE, STORESYNC, median_time  # noqa: E402

RUNS = 7

# Run in a fresh interpreter: import what the command needs (timed), wrap the engine's steps, run
# the command as `storesync` would, and write the phases as JSON to the pipe $PROFILE_FD.
CHILD = r"""
import sys, time
t0 = time.perf_counter()
import importlib, json, os
kind, argv = sys.argv[1], sys.argv[2:]
for name in os.environ.get("PROFILE_IMPORTS", "").split():  # what the command imports, all of it, first
    importlib.import_module(name)
import storesync.cli, storesync.engine.run as run
module = importlib.import_module("storesync.stores." + {"dir": "directory"}.get(kind, kind))
store = next(v for v in vars(module).values() if isinstance(v, type) and getattr(v, "kind", None) == kind)
t1 = time.perf_counter()
spent = {}
def wrap(owner, name, label):
    real = getattr(owner, name)
    def timed(*a, **k):
        start = time.perf_counter()
        try:
            return real(*a, **k)
        finally:
            spent[label] = spent.get(label, 0) + time.perf_counter() - start
    setattr(owner, name, timed)
wrap(run, "_read", "read the stores")
wrap(run, "_plan", "plan")
wrap(run, "_apply", "apply")
wrap(store, "write", "write")
wrap(run, "_check_written", "read back")
sys.argv = ["storesync", *argv]
devnull = os.open(os.devnull, os.O_WRONLY)
os.dup2(devnull, 1)
t2 = time.perf_counter()
try:
    storesync.cli.main()
except SystemExit:
    pass
spent["main"] = time.perf_counter() - t2
spent["imports"] = t1 - t0
spent["modules"] = sorted(n for n, m in sys.modules.items() if m is not None and "." not in n or n.startswith("storesync."))
os.write(int(os.environ["PROFILE_FD"]), json.dumps(spent).encode())
"""


def phases(kind: str, argv, before) -> dict[str, float]:
    """Median of each phase over RUNS fresh processes (`argv()` after `before()`). A first run
    lists the modules the command imports; the timed runs import them before it starts."""
    runs, modules = [], ""
    for n in range(RUNS + 1):
        before()
        read, write = os.pipe()
        child = subprocess.Popen([sys.executable, "-c", CHILD, kind, *argv()], pass_fds=(write,),
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                 env={**os.environ, "PROFILE_FD": str(write), "PROFILE_IMPORTS": modules})
        os.close(write)
        with os.fdopen(read, "rb") as pipe:
            data = pipe.read()
        child.wait()
        if not data:
            raise SystemExit(f"profile child failed: {child.stderr.read().decode()}")
        found = json.loads(data)
        modules = modules or " ".join(found.pop("modules"))
        if n:
            runs.append(found)
    return {name: statistics.median(r.get(name, 0.0) for r in runs) for name in runs[0] if name != "modules"}


scratch = Path(tempfile.mkdtemp(prefix="storesync-bench-profile-"))
os.environ["STORESYNC_STATE_DIR"] = str(scratch / "state")  # checks remembered after the first run
template = scratch / "nss-template"
template.mkdir()
subprocess.run(["certutil", "-N", "-d", f"sql:{template}", "--empty-password"], check=True, capture_output=True)
count = iter(range(10**6))
target: Path = scratch


def fresh(kind: str):
    def make():
        global target
        target = scratch / f"{kind}{next(count)}"
        if kind == "nss":
            shutil.copytree(template, target)
        elif kind in ("jks", "p12"):
            target = target.with_suffix(f".{kind}")
        os.sync()
    return make


def argv_of(kind: str) -> list[str]:
    return ["sync", f"pem:{BUNDLE}", f"{kind}:{target}"]


CASES = [("nss", "the system roots into a fresh NSS database"), ("jks", "the system roots into a new JKS"),
         ("p12", "the system roots into a new PKCS#12"), ("dir", "the system roots into a fresh hashed directory")]
STEPS = ["read the stores", "plan", "write", "read back"]

interpreter = median_time([sys.executable, "-c", "pass"], runs=15)
rows = []
for kind, what in CASES:
    make = fresh(kind)
    make()
    subprocess.run([*STORESYNC, *argv_of(kind)], check=True, capture_output=True)  # checks remembered from here on
    whole = median_time(lambda: subprocess.run([*STORESYNC, *argv_of(kind)], check=True, capture_output=True),
                        runs=RUNS, before=make)
    p = phases(kind, lambda: argv_of(kind), make)
    other = p["apply"] - p["write"] - p["read back"]
    rest = p["main"] - p["read the stores"] - p["plan"] - p["apply"]
    rows.append((what, whole, p["imports"], *(p[s] for s in STEPS), other, rest))
shutil.rmtree(scratch)

ms = lambda s: f"{s * 1000:.1f} ms"  # noqa: E731
print("## Where the time goes: one sync, step by step\n")
print(f"Interpreter start (`python -c pass`): {ms(interpreter)}; every case pays it, then its imports. "
      "Steps are medians of 7 fresh processes, timed by wrapping the engine's functions; *backups, "
      "records* is what a write keeps in the state dir first, *rest* the locks, the parse of the "
      "command line and the output.\n")
print("| case | whole process | imports | read the stores | plan | write | read back | backups, records | rest |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for what, *times in rows:
    print(f"| {what} | " + " | ".join(ms(t) for t in times) + " |")
print()
