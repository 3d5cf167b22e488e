"""Issue 7: the daemon. Four stores of the system roots in one merge profile (PEM bundle, hashed
directory, NSS database, Java keystore): median time from a change of the bundle to every other
store reconciled (default debounce, 50 changes); CPU time of the idle daemon (measured over 20 s,
scaled to 60 s); peak RSS. The peer: `storesync daemon --once` from cron every minute."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from _timing import BUNDLE, STORESYNC, cpu_seconds, peak_rss_mb  # noqa: E402

CHANGES = 50
IDLE_S = 20

scratch = Path(tempfile.mkdtemp(prefix="storesync-bench-daemon-"))
bundle, certs, nssdb, jks = scratch / "roots.pem", scratch / "certs", scratch / "nssdb", scratch / "cacerts.jks"
config = scratch / "storesync.toml"
env = {**os.environ, "STORESYNC_STATE_DIR": str(scratch / "state")}


def extra_ca() -> bytes:
    """One more root to add and take away."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "storesync bench extra root")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(4242).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


def replace(path: Path, data: bytes) -> None:
    """Like a package manager: temp file and rename."""
    tmp = path.with_name(f".{path.name}.new")
    tmp.write_bytes(data)
    os.replace(tmp, path)


class Log:
    """The daemon's JSON log lines, each stamped with the moment it arrived."""

    def __init__(self, stream):
        self.lines: list[tuple[float, dict]] = []
        self.cond = threading.Condition()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream) -> None:
        for raw in stream:
            stamp = time.perf_counter()
            try:
                line = json.loads(raw)
            except ValueError:
                line = {"event": "raw", "msg": raw}
            with self.cond:
                self.lines.append((stamp, line))
                self.cond.notify_all()

    def wait(self, predicate, since: int, timeout: float = 30.0) -> tuple[float, dict]:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for stamp, line in self.lines[since:]:
                    if predicate(line):
                        return stamp, line
                if not self.cond.wait(max(0.0, deadline - time.monotonic())):
                    raise SystemExit(f"daemon benchmark: timed out; log: {[l for _, l in self.lines[-10:]]}")


def main() -> None:
    roots = BUNDLE.read_bytes()
    bundle.write_bytes(roots)
    nssdb.mkdir()
    subprocess.run(["certutil", "-N", "-d", f"sql:{nssdb}", "--empty-password"], check=True, capture_output=True)
    config.write_text(f'[profile.bench]\nmode = "merge"\nstores = ["pem:{bundle}", "dir:{certs}", '
                      f'"nss:{nssdb}", "jks:{jks}"]\n')
    # The first run fills the three empty stores (not measured: that is `storesync sync`'s job).
    subprocess.run([*STORESYNC, "daemon", "--once", "--config", str(config)], env=env, check=True,
                   capture_output=True)
    once_cpu = []
    for _ in range(5):  # the peer: a cron job running a no-op pass
        before = os.times()
        subprocess.run([*STORESYNC, "daemon", "--once", "--config", str(config)], env=env, check=True,
                       capture_output=True)
        after = os.times()
        once_cpu.append(after.children_user + after.children_system - before.children_user - before.children_system)

    proc = subprocess.Popen([*STORESYNC, "daemon", "--config", str(config), "--log-format", "json", "--verbose"],
                            env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    log = Log(proc.stderr)
    try:
        log.wait(lambda l: l.get("event") == "no-op", 0)  # started, found everything in agreement
        extra = extra_ca()
        latencies = []
        for n in range(CHANGES):
            time.sleep(0.05)
            since = len(log.lines)
            begin = time.perf_counter()
            replace(bundle, roots + extra if n % 2 == 0 else roots)
            # Every other store written: three "written" lines of one reconcile.
            written = []
            while len(written) < 3:
                stamp, line = log.wait(lambda l: l.get("event") == "written" and l not in written, since)
                written.append(line)
            latencies.append(stamp - begin)
            log.wait(lambda l: l.get("event") == "no-op", since)  # the echo of its own writes
        time.sleep(1.0)
        cpu_before = cpu_seconds(proc.pid)
        time.sleep(IDLE_S)
        idle = (cpu_seconds(proc.pid) - cpu_before) * 60 / IDLE_S
        rss = peak_rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(scratch, ignore_errors=True)

    roots_count = roots.count(b"-----BEGIN CERTIFICATE-----")
    print("## Daemon: change to reconciled, idle cost, memory\n")
    print(f"One merge profile: PEM bundle, hashed directory, NSS database, Java keystore, {roots_count} system roots each. "
          f"A root is added to / removed from the bundle (temp file + rename) {CHANGES} times; the time runs until the "
          "daemon has written the three other stores. Idle CPU measured over "
          f"{IDLE_S} s and scaled to 60 s.\n")
    print("| what | storesync daemon (default debounce, 250 ms) | cron: `storesync daemon --once` every minute | goal |")
    print("|---|---:|---:|---:|")
    print(f"| median change → all stores reconciled | {statistics.median(latencies) * 1000:.0f} ms "
          f"(p90 {sorted(latencies)[int(0.9 * len(latencies))] * 1000:.0f} ms) | 30 s (half the period) | < 0.5 s |")
    print(f"| CPU time idle, per 60 s | {idle * 1000:.2f} ms | {statistics.median(once_cpu) * 1000:.0f} ms (one no-op pass) "
          "| < 50 ms |")
    print(f"| peak RSS | {rss:.1f} MB | — | < 60 MB |")
    print()


if __name__ == "__main__":
    main()
