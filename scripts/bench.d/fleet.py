"""Issue 17: a fleet of agents on one signed policy. A TUF repository made with `storesync publish`
(the system roots as policy `corp`), served on loopback by an http.server that counts requests and
bytes. Agents are `storesync daemon` processes, each with its own state dir, mirroring the `tuf:`
source into a PEM bundle.

- unchanged poll (the timestamp did not move): agent CPU per poll (schedstat of every thread,
  over POLLS polls), HTTP requests and bytes per poll (as the server sent them, headers included);
- a policy change reaching AGENTS agents: seconds from publishing v2 to the last agent's target
  holding it, against one poll (+10% jitter) + 1 s;
- memory: peak RSS of an agent;
- what 10 000 agents polling every 5 minutes cost the web server, from the per-poll figures."""

from __future__ import annotations

import functools
import http.server
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
from _timing import BUNDLE, STORESYNC, cpu_seconds, peak_rss_mb  # noqa: E402

POLLS = 20          # unchanged polls measured on one agent
POLL_S = 1.0        # that agent's poll
AGENTS = 20         # agents that must apply a change within one poll + 1 s
FLEET_POLL_S = 5.0  # their poll
FLEET, EVERY_S = 10_000, 300  # the fleet the README prices: 10 000 agents, every 5 minutes

scratch = Path(tempfile.mkdtemp(prefix="storesync-bench-fleet-"))
repo, keys = scratch / "repo", scratch / "keys"


class Counting(http.server.SimpleHTTPRequestHandler):
    """A static server that notes every request: (client port, path, status, bytes sent)."""

    def setup(self) -> None:
        super().setup()
        self.sent = 0
        raw = self.wfile

        class Wrapper:
            def write(inner, data):  # noqa: N805 - a tiny proxy
                self.sent += len(data)
                return raw.write(data)

            def __getattr__(inner, name):  # noqa: N805
                return getattr(raw, name)

        self.wfile = Wrapper()

    def log_request(self, code="-", size="-") -> None:
        self.code = code

    def finish(self) -> None:
        super().finish()
        with self.server.lock:
            self.server.log.append((self.path, int(getattr(self, "code", 0)), self.sent))

    def log_message(self, *args) -> None:
        pass


def serve() -> http.server.ThreadingHTTPServer:
    handler = functools.partial(Counting, directory=str(repo))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    httpd.lock, httpd.log = threading.Lock(), []
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


def storesync(*args) -> None:
    result = subprocess.run([*STORESYNC, *map(str, args)], capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"fleet benchmark: storesync {' '.join(map(str, args))} failed: {result.stderr}")


def publish(policy: Path) -> None:
    storesync("publish", repo, "corp", f"pem:{policy}", "--keys", keys, "--expires", "7d")


def agent(n: int, url: str, poll: float) -> tuple[subprocess.Popen, Path]:
    home = scratch / f"agent{n}"
    home.mkdir()
    target = home / "ca-certificates.crt"
    spec = f"tuf:{url}/corp?root={scratch / 'root.json'}"
    (home / "storesync.toml").write_text(f'[profile.fleet]\nmode = "mirror"\nsource = {json.dumps(spec)}\n'
                                         f'targets = [{json.dumps(f"pem:{target}")}]\npoll = {poll}\n')
    proc = subprocess.Popen([*STORESYNC, "daemon", "--config", str(home / "storesync.toml"),
                             "--state-dir", str(home / "state")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, target


def count(target: Path) -> int:
    try:
        return target.read_bytes().count(b"-----BEGIN CERTIFICATE-----")
    except OSError:
        return -1


def wait(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"fleet benchmark: timed out waiting for {what}")
        time.sleep(0.02)


def main() -> None:
    roots = BUNDLE.read_bytes()
    blocks = [b"-----BEGIN CERTIFICATE-----" + b for b in roots.split(b"-----BEGIN CERTIFICATE-----")[1:]]
    v1, v2 = scratch / "v1.pem", scratch / "v2.pem"
    v1.write_bytes(b"".join(blocks[:-1]))
    v2.write_bytes(b"".join(blocks))
    storesync("publish", "init", repo, "--keys", keys)
    shutil.copy(repo / "1.root.json", scratch / "root.json")
    publish(v1)
    httpd = serve()
    url = f"http://127.0.0.1:{httpd.server_address[1]}"
    procs = []
    try:
        # --- one agent, unchanged polls ---------------------------------------------------
        proc, target = agent(0, url, POLL_S)
        procs.append(proc)
        wait(lambda: count(target) == len(blocks) - 1, 60, "the first agent's first reconcile")
        time.sleep(2 * POLL_S)  # its own write's reconcile and a first unchanged poll are over
        with httpd.lock:
            start_log = len(httpd.log)
        start_cpu = cpu_seconds(proc.pid)
        polls = lambda: sum(1 for p, _, _ in httpd.log[start_log:] if p.endswith("timestamp.json"))  # noqa: E731
        wait(lambda: polls() >= POLLS, POLLS * POLL_S * 3 + 30, f"{POLLS} polls")
        cpu = cpu_seconds(proc.pid) - start_cpu
        with httpd.lock:
            made = polls()
            seen = httpd.log[start_log:]
        requests = len(seen) / made
        sent = sum(b for _, _, b in seen) / made
        kinds = sorted({f"{os.path.basename(p)} {c}" for p, c, _ in seen})
        rss = peak_rss_mb(proc.pid)

        # --- AGENTS agents, one policy change ---------------------------------------------
        targets = [target]
        for n in range(1, AGENTS):
            p, t = agent(n, url, FLEET_POLL_S)
            procs.append(p)
            targets.append(t)
        wait(lambda: all(count(t) == len(blocks) - 1 for t in targets), 180, "every agent on v1")
        time.sleep(FLEET_POLL_S)  # start-up bursts over: the agents are polling
        published = time.monotonic()
        publish(v2)
        reached = {}
        while len(reached) < AGENTS and time.monotonic() - published < 120:
            for n, t in enumerate(targets):
                if n not in reached and count(t) == len(blocks):
                    reached[n] = time.monotonic() - published
            time.sleep(0.02)
        rss_all = [peak_rss_mb(p.pid) for p in procs]
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(10)
        httpd.shutdown()
    last = max(reached.values()) if len(reached) == AGENTS else float("nan")
    rate = FLEET / EVERY_S

    print(f"## Fleet: `tuf:` agents on one signed policy ({len(blocks)} roots; shared machine)\n")
    print("| what | measured | goal |\n|---|---:|---|")
    print(f"| agent CPU per unchanged poll ({made} polls) | {cpu / made * 1000:.1f} ms | < 30 ms |")
    print(f"| HTTP requests per unchanged poll | {requests:.2f} ({', '.join(kinds)}) | 1 small request |")
    print(f"| bytes sent per unchanged poll (headers included) | {sent:.0f} B | small |")
    print(f"| policy v2 reached {len(reached)}/{AGENTS} agents (poll {FLEET_POLL_S:g} s) | "
          f"{last:.1f} s after publishing (median {statistics.median(reached.values()):.1f} s) | "
          f"< {FLEET_POLL_S * 1.1 + 1:.1f} s (one poll + 10% jitter + 1 s) |")
    print(f"| agent peak RSS | {rss:.0f} MB (max over {AGENTS}: {max(rss_all):.0f} MB) | < 80 MB |")
    print(f"| {FLEET} agents every {EVERY_S // 60} min: web server load | {rate * requests:.0f} requests/s, "
          f"{rate * sent / 1000:.1f} kB/s | from the per-poll figures |")
    print()
    shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
