"""Fleet test helpers (test_fleet.py, and the `tuf` kind of the contract suite): TUF repositories
published with storesync, served on loopback by `python -m http.server` in a subprocess, or by an
in-process server that can be told to answer 500 or to hang."""

from __future__ import annotations

import functools
import http.server
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_served(url: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class StaticServer:
    """`python -m http.server` serving `directory` on 127.0.0.1, in a subprocess."""

    def __init__(self, directory: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "http.server", str(self.port), "-b", "127.0.0.1", "-d", str(directory)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_served(self.url + "/1.root.json")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(5)


class _Handler(http.server.SimpleHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's name
        self.server.paths.append(self.path)
        mode = self.server.mode
        if mode == "500":
            self.send_error(500, "broken on purpose")
            return
        if mode == "hang":
            self.server.hung.wait(30)  # answers nothing until the test ends
            return
        allowed = self.server.allowed
        if allowed is not None and not any(self.path.startswith(str(a) + "/") for a in list(allowed)):
            self.send_error(404)
            return
        super().do_GET()

    def log_message(self, *args) -> None:
        pass


class ControlledServer:
    """An in-process static server whose `mode` ("ok", "500", "hang") the test changes. With
    `directory` None it serves absolute paths under the folders `allow()`ed (the contract suite)."""

    def __init__(self, directory: Path | None = None):
        handler = functools.partial(_Handler, directory=str(directory or "/"))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.httpd.mode = "ok"
        self.httpd.hung = threading.Event()
        self.httpd.paths = []  # every GET, in order
        self.httpd.allowed = None if directory is not None else set()
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = None

    def start(self) -> "ControlledServer":
        if self.thread is None:
            self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
            self.thread.start()
        return self

    @property
    def paths(self) -> list[str]:
        return self.httpd.paths

    def allow(self, folder: Path) -> None:
        self.httpd.allowed.add(folder)

    @property
    def mode(self) -> str:
        return self.httpd.mode

    @mode.setter
    def mode(self, value: str) -> None:
        self.httpd.mode = value

    def stop(self) -> None:
        self.httpd.hung.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def publish_entries(repo: Path, keys: Path, name: str, entries, state_dir: Path | None = None) -> None:
    """Publish `entries` as policy `name` in process (a new repository if there is none): what
    `storesync publish` does, without a subprocess per call. Empty policies are forced."""
    from storesync import publish, state
    from storesync.engine.plan import make_plan
    from storesync.model import TrustSet
    from storesync.stores import open_store

    if state_dir is not None:
        state.set_state_dir(state_dir)
    if not (repo / "1.root.json").exists():
        publish.init(repo, keys)
    source = repo.parent / f"{name}.policy.pem"
    source.unlink(missing_ok=True)
    spec = f"pem:{source}?format=trusted"
    store = open_store(spec)
    store.write(make_plan(TrustSet(entries), TrustSet(), store.capabilities, store=spec))
    publish.publish(repo, keys, name, spec, publish.parse_duration("7d"), force=True)


_contract_server: ControlledServer | None = None


def contract_url() -> str:
    """The base URL of the contract suite's server (serving the folders its seeds allow)."""
    global _contract_server
    if _contract_server is None:
        _contract_server = ControlledServer(None)
    return _contract_server.url


def contract_seed(path: Path, entries) -> None:
    """The contract suite's `tuf` kind: `entries` published as policy `policy` in a repository at `path`."""
    contract_url()
    path.mkdir(parents=True, exist_ok=True)
    publish_entries(path, path.parent / "keys", "policy", list(entries))
    os.chmod(path, 0o755)
    _contract_server.allow(path)
    _contract_server.start()
