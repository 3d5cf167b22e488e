"""Issue 16: one root into every store of a machine. A scratch machine (--root) with 40 stores:
20 Firefox profiles (NSS databases made by certutil), 10 JDKs (a copy of Debian's cacerts each),
10 venvs (certifi's bundle). `storesync sync --mode add root.pem @all` writing all 40, the same
run again (nothing to do), in turns; then the daemon with `targets = ["@all"]`: a JDK copied in
until its cacerts holds the root, and its CPU time idle for a minute (/proc/PID/stat)."""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from _timing import BUNDLE, STORESYNC, side_by_side  # noqa: E402
from daemon import Log, extra_ca  # noqa: E402

PROFILES, JDKS, VENVS = 20, 10, 10
APPEARING = 5  # JDKs copied in while the daemon runs
IDLE_S = 60
JAVA_CACERTS = Path("/etc/ssl/certs/java/cacerts")

# One level down: the daemon watches the parent of what it watches, and /tmp is busy on a shared
# machine (every event there wakes watchdog's threads, if not the daemon's own).
scratch = Path(tempfile.mkdtemp(prefix="storesync-bench-machine-")) / "bench"
scratch.mkdir()
machine, pristine, state_dir = scratch / "root", scratch / "pristine", scratch / "state"
venvs = [machine / f"srv/app{n}/venv" for n in range(VENVS)]
env = {**os.environ, "STORESYNC_STATE_DIR": str(state_dir)}


def corp_root(path: Path) -> Path:
    path.write_bytes(extra_ca())  # the daemon part's extra root: a private CA no store holds
    return path


def fingerprint(pem: Path) -> str:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    return x509.load_pem_x509_certificate(pem.read_bytes()).fingerprint(hashes.SHA256()).hex(":").upper()


def jdk(folder: Path) -> Path:
    (folder / "lib/security").mkdir(parents=True)
    (folder / "bin").mkdir()
    (folder / "release").write_text('JAVA_VERSION="17"\n')
    shutil.copy(JAVA_CACERTS, folder / "lib/security/cacerts")
    return folder


def build() -> None:
    home = pristine / "home/alice/.mozilla/firefox"
    home.mkdir(parents=True)
    ini = "[General]\nStartWithLastProfile=1\nVersion=2\n"
    for n in range(PROFILES):
        db = home / f"p{n:02}.default"
        db.mkdir()
        subprocess.run(["certutil", "-N", "-d", f"sql:{db}", "--empty-password"], check=True, capture_output=True)
        ini += f"\n[Profile{n}]\nName=p{n}\nIsRelative=1\nPath={db.name}\n"
    (home / "profiles.ini").write_text(ini)
    for n in range(JDKS):
        jdk(pristine / f"usr/lib/jvm/jdk-{n}")
    for n in range(VENVS):
        package = pristine / f"srv/app{n}/venv/lib/python3.11/site-packages/certifi"
        package.mkdir(parents=True)
        shutil.copy(BUNDLE, package / "cacert.pem")


def reset() -> None:
    shutil.rmtree(machine, ignore_errors=True)
    shutil.rmtree(state_dir, ignore_errors=True)
    shutil.copytree(pristine, machine, symlinks=True)


def cpu_ticks(pid: int) -> int:
    """utime + stime of the process (every thread), in clock ticks."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return int(fields[11]) + int(fields[12])


def watches(pid: int) -> int:
    count = 0
    for fd in Path(f"/proc/{pid}/fdinfo").iterdir():
        try:
            count += fd.read_text().count("inotify wd:")
        except OSError:
            pass
    return count


def main() -> None:
    root_pem = corp_root(scratch / "corp-root.pem")
    build()
    sync = [*STORESYNC, "sync", "--mode", "add", f"pem:{root_pem}", "@all", "--root", str(machine),
            *(a for v in venvs for a in ("--python", str(v)))]

    def run_sync() -> None:
        result = subprocess.run(sync, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            raise SystemExit(f"sync failed ({result.returncode}): {result.stderr}")

    reset()
    run_sync()
    planned = subprocess.run([*sync, "--dry-run", "--json"], env=env, capture_output=True, text=True).stdout
    stores = len(json.loads(planned)["plans"]) - 1  # the source is one of them
    times = side_by_side({"first": (run_sync, reset), "no-op": (run_sync, None)}, rounds=5)

    # The daemon: the machine as the last sync left it (every store holds the root).
    config = scratch / "storesync.toml"
    config.write_text(f'[profile.corp]\nmode = "add"\nsource = "pem:{root_pem}"\ntargets = ["@all"]\n'
                      f'python = [{", ".join(chr(34) + str(v) + chr(34) for v in venvs)}]\n')
    proc = subprocess.Popen([*STORESYNC, "daemon", "--config", str(config), "--log-format", "json", "--verbose"],
                            env={**env, "STORESYNC_ROOT": str(machine)}, stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True)
    log = Log(proc.stderr)
    try:
        log.wait(lambda l: l.get("event") == "no-op", 0, timeout=120)
        latencies = []
        for n in range(APPEARING):
            source = jdk(scratch / f"incoming/jdk-new-{n}")
            time.sleep(1.0)
            since = len(log.lines)
            target = machine / f"usr/lib/jvm/jdk-new-{n}"
            begin = time.perf_counter()
            shutil.copytree(source, target)
            cacerts = f"{target}/lib/security/cacerts"
            stamp, _ = log.wait(lambda l: l.get("event") == "written" and l.get("store", "").endswith(cacerts), since)
            latencies.append(stamp - begin)
            log.wait(lambda l: l.get("event") == "no-op", since)
        listed = subprocess.run(["keytool", "-list", "-keystore", cacerts, "-storepass", "changeit"],
                                capture_output=True, text=True).stdout
        assert fingerprint(root_pem) in listed, f"keytool does not list the root in {cacerts}"
        time.sleep(2.0)
        watched = watches(proc.pid)
        before = cpu_ticks(proc.pid)
        time.sleep(IDLE_S)
        idle_ms = (cpu_ticks(proc.pid) - before) * 1000 / os.sysconf("SC_CLK_TCK") * 60 / IDLE_S
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(scratch.parent, ignore_errors=True)

    print("## Selectors: one root into every store of a machine\n")
    print(f"A scratch machine (`--root`): {PROFILES} Firefox profiles (NSS), {JDKS} JDKs (Debian's cacerts), "
          f"{VENVS} venvs (certifi) — {stores} stores. `sync --mode add root.pem @all` writing all of them and "
          f"the same run again, in turns (median of 5). The daemon (`targets = [\"@all\"]`): {APPEARING} JDKs copied "
          f"under /usr/lib/jvm one by one, time until its cacerts is written; CPU (utime + stime) idle over "
          f"{IDLE_S} s with {watched} inotify watches.\n")
    print("| what | storesync | goal |\n|---|---:|---:|")
    print(f"| `sync --mode add root.pem @all`, {stores} stores written | {times['first'] * 1000:.0f} ms | < 1 s |")
    print(f"| the same, nothing to do | {times['no-op'] * 1000:.0f} ms | < 0.5 s |")
    print(f"| daemon: JDK copied in → its cacerts holds the root | median {statistics.median(latencies) * 1000:.0f} ms "
          f"(max {max(latencies) * 1000:.0f} ms) | < 2 s |")
    print(f"| daemon idle, CPU per minute | {idle_ms:.0f} ms | < 50 ms |")
    print()


if __name__ == "__main__":
    main()
