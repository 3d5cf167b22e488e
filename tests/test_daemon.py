"""The daemon, as a real process: a store changes (by hand, certutil, keytool), the other stores
of its profile follow; storms, SIGKILL, SIGHUP, SIGTERM, sd_notify, the status file."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import need, run
from storesync.stores import open_store

BAD = b"-----BEGIN CERTIFICATE-----\nMIIB!!!garbage\n-----END CERTIFICATE-----\n"


@pytest.fixture(autouse=True)
def state_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("STORESYNC_STATE_DIR", str(tmp_path / "state"))
    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path / "state"


def keys(spec: str) -> set[str]:
    return set(open_store(spec).read())


def until(check, timeout: float = 15.0, what: str = "condition"):
    """Poll `check` until it returns something true; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except Exception:  # noqa: BLE001 - a store caught mid-write by the test's own read
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def agree(*specs: str, expected: set[str] | None = None) -> bool:
    sets = [keys(s) for s in specs]
    return all(s == sets[0] for s in sets) and (expected is None or sets[0] == expected)


def bundle(*issued) -> bytes:
    return b"".join(i.pem for i in issued)


def write_config(path: Path, profiles: dict[str, list[str]], mode: str = "merge", extra: str = "") -> Path:
    text = ""
    for name, specs in profiles.items():
        stores = ", ".join(json.dumps(s) for s in specs)
        if mode == "merge":
            text += f'[profile.{name}]\nmode = "merge"\nstores = [{stores}]\n{extra}\n'
        else:
            text += (f'[profile.{name}]\nmode = "mirror"\nsource = {json.dumps(specs[0])}\n'
                     f'targets = [{", ".join(json.dumps(s) for s in specs[1:])}]\n{extra}\n')
    path.write_text(text)
    return path


DECISIONS = ("reconcile", "no-op", "unchanged", "written", "held-back", "unreadable", "recovered", "crash")


class Daemon:
    """`storesync daemon` in a subprocess, logging JSON lines (with --verbose) to a file."""

    count = 0

    def __init__(self, tmp_path: Path, config: Path, *args: str, env=None, argv=None):
        Daemon.count += 1
        self.log_path = tmp_path / f"daemon-{Daemon.count}.log"
        self.log_file = open(self.log_path, "w")
        argv = argv or [sys.executable, "-m", "storesync"]
        self.proc = subprocess.Popen(
            [*argv, "daemon", "--config", str(config), "--log-format", "json", "--verbose", *args],
            stdout=subprocess.DEVNULL, stderr=self.log_file, env=env)

    def lines(self) -> list[dict]:
        out = []
        for line in self.log_path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                out.append({"event": "raw", "msg": line})  # a traceback would land here
        return out

    def events(self, kind: str) -> list[dict]:
        return [e for e in self.lines() if e.get("event") == kind]

    def wait_event(self, kind: str, count: int = 1, timeout: float = 15.0) -> list[dict]:
        return until(lambda: len(self.events(kind)) >= count and self.events(kind), timeout,
                     f"{count} {kind!r} log lines; log:\n{self.log_path.read_text()}")

    def settled(self, quiet: float = 0.8) -> "Daemon":
        """Wait until the last reconcile found nothing to do and nothing followed for `quiet` s."""
        def calm():
            lines = [e for e in self.lines() if e.get("event") in DECISIONS]
            if not lines or lines[-1]["event"] == "reconcile" or lines[-1]["event"] == "written":
                return False
            time.sleep(quiet)
            return len(self.lines()) == len(lines) + sum(e.get("event") not in DECISIONS for e in self.lines())
        until(calm, what=f"the daemon to settle; log:\n{self.log_path.read_text()}")
        return self

    def started(self) -> "Daemon":
        self.wait_event("started")
        return self

    def signal(self, sig) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 5.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self.log_file.close()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self.log_file.close()


@pytest.fixture
def daemons():
    started: list[Daemon] = []
    yield started
    for d in started:
        if d.proc.poll() is None:
            d.kill()
        # Every line is the daemon's own JSON: no traceback, no bare library noise (watchdog's
        # "queue_events() called when the thread is inactive" when a watch is removed).
        assert not any(e.get("event") == "raw" for e in d.lines()), d.log_path.read_text()


def start(daemons, *args, **kwargs) -> Daemon:
    d = Daemon(*args, **kwargs)
    daemons.append(d)
    return d.started()


# --- changes propagate ----------------------------------------------------------------------


def test_a_pem_bundle_change_reaches_the_other_stores_and_own_writes_are_quiet(pki, tmp_path, daemons, state_dir):
    cas = [pki.ca(f"Daemon PEM {n}") for n in range(6)]
    a, b, d = tmp_path / "a.pem", tmp_path / "b.pem", tmp_path / "ca"
    a.write_bytes(bundle(*cas[:4]))
    specs = [f"pem:{a}", f"pem:{b}", f"dir:{d}"]
    daemon = start(daemons, tmp_path, write_config(tmp_path / "s.toml", {"web": specs}))
    until(lambda: agree(*specs, expected=keys(f"pem:{a}")), what="the first reconcile")
    daemon.settled()
    first = len(daemon.events("reconcile"))
    assert first == 2  # the start, then one no-op for the events of its own writes

    with open(a, "ab") as f:  # an administrator appends a root in place
        f.write(cas[4].pem)
    until(lambda: agree(*specs) and len(keys(f"pem:{b}")) == 5, what="the appended root in every store")
    written = daemon.wait_event("written", count=4)  # two at the start, two now
    assert {e["store"] for e in written[-2:]} == {f"pem:{b}", f"dir:{d}"}
    assert all(e["profile"] == "web" and e["adds"] == 1 and "Daemon PEM 4" in e["msg"] for e in written[-2:])
    assert all(f"change in pem:{a}:" in e["msg"] for e in written[-2:])

    # The daemon's own writes cause one more reconcile, which finds nothing to do, then quiet.
    daemon.settled()
    assert len(daemon.events("reconcile")) == first + 2
    assert daemon.lines()[-1]["event"] == "no-op"
    assert len(daemon.events("written")) == len(written)

    status = json.loads((state_dir / "status.json").read_text())
    assert status["pid"] == daemon.proc.pid and status["state"] == "running" and status["started"]
    web = status["profiles"]["web"]
    assert web["exit_code"] == 0 and web["error"] is None and web["held_back"] == [] and web["last_run"]
    assert "in sync" in web["summary"]
    assert daemon.stop() == 0
    assert json.loads((state_dir / "status.json").read_text())["state"] == "stopped"


def test_a_hashed_directory_change_reaches_the_bundle(pki, tmp_path, daemons):
    cas = [pki.ca(f"Daemon Dir {n}") for n in range(4)]
    a, d = tmp_path / "a.pem", tmp_path / "certs"
    a.write_bytes(bundle(*cas[:3]))
    specs = [f"pem:{a}", f"dir:{d}"]
    start(daemons, tmp_path, write_config(tmp_path / "s.toml", {"dirs": specs}))
    until(lambda: agree(*specs) and len(keys(f"dir:{d}")) == 3, what="the directory filled")

    cas[3].write(d / "added-by-hand.pem")  # dropped in, like update-ca-certificates' input
    until(lambda: agree(*specs) and len(keys(f"pem:{a}")) == 4, what="the new file in the bundle")
    removed = next(p for p in d.iterdir() if p.suffix == ".pem" and p.name != "added-by-hand.pem")
    gone = next(iter(keys(f"pem:{removed}")))
    for link in [p for p in d.iterdir() if p.is_symlink() and os.readlink(p) == removed.name]:
        link.unlink()
    removed.unlink()
    until(lambda: agree(*specs) and gone not in keys(f"pem:{a}"), what="the removal in the bundle")
    assert len(keys(f"pem:{a}")) == 3


def test_an_nss_database_changed_by_certutil_reaches_the_bundle(pki, tmp_path, daemons):
    certutil = need("certutil")
    db = tmp_path / "nssdb"
    db.mkdir()
    run(certutil, "-N", "-d", f"sql:{db}", "--empty-password")
    cas = [pki.ca(f"Daemon NSS {n}") for n in range(3)]
    a = tmp_path / "a.pem"
    a.write_bytes(bundle(*cas[:2]))
    specs = [f"pem:{a}", f"nss:{db}"]
    start(daemons, tmp_path, write_config(tmp_path / "s.toml", {"nss": specs}))
    until(lambda: agree(*specs) and len(keys(f"nss:{db}")) == 2, what="the database filled")
    listed = run(certutil, "-L", "-d", f"sql:{db}").stdout.decode()
    assert "Daemon NSS 0" in listed and "Daemon NSS 1" in listed

    new = cas[2].write(tmp_path / "new.pem")
    run(certutil, "-A", "-d", f"sql:{db}", "-n", "added with certutil", "-t", "C,,", "-i", new)
    until(lambda: agree(*specs) and len(keys(f"pem:{a}")) == 3, what="certutil's root in the bundle")


def test_a_java_keystore_changed_by_keytool_reaches_the_bundle(pki, tmp_path, daemons):
    keytool = need("keytool")
    cas = [pki.ca(f"Daemon JKS {n}") for n in range(3)]
    a, jks = tmp_path / "a.pem", tmp_path / "trust.jks"
    a.write_bytes(bundle(*cas[:2]))
    specs = [f"pem:{a}", f"jks:{jks}"]
    start(daemons, tmp_path, write_config(tmp_path / "s.toml", {"java": specs}))
    until(lambda: agree(*specs) and len(keys(f"jks:{jks}")) == 2, what="the keystore written")
    listed = run(keytool, "-list", "-keystore", jks, "-storepass", "changeit").stdout.decode()
    assert listed.count("trustedCertEntry") == 2

    new = cas[2].write(tmp_path / "ca.pem")
    run(keytool, "-importcert", "-noprompt", "-storepass", "changeit", "-keystore", jks, "-alias", "x", "-file", new)
    until(lambda: agree(*specs) and len(keys(f"pem:{a}")) == 3, what="keytool's root in the bundle")


def test_a_store_that_does_not_exist_yet_is_picked_up_and_reported_once(pki, root, tmp_path, daemons):
    """Mirror from a source in a directory that does not exist yet: nothing is written (the
    missing source is reported, once, however many events follow); when the source appears,
    the target follows."""
    extra = pki.ca("Daemon Appears")
    target = tmp_path / "target.pem"
    target.write_bytes(root.pem)
    source = tmp_path / "later" / "deeper" / "source.pem"
    specs = [f"pem:{source}", f"pem:{target}"]
    daemon = start(daemons, tmp_path, write_config(tmp_path / "s.toml", {"up": specs}, mode="mirror"))
    reported = until(lambda: [e for e in daemon.lines() if e.get("level") in ("warning", "error")],
                     what="the missing source reported")
    for _ in range(3):  # events on the target re-run the profile; the problem is not said again
        target.write_bytes(root.pem)
        time.sleep(0.4)
    until(lambda: len(daemon.events("reconcile")) >= 3, what="reconciles of the touched target")
    assert [e for e in daemon.lines() if e.get("level") in ("warning", "error")] == reported
    assert target.read_bytes() == root.pem

    source.parent.mkdir(parents=True)
    source.write_bytes(root.pem + extra.pem)
    until(lambda: agree(*specs) and len(keys(f"pem:{target}")) == 2, what="the new source mirrored")
    daemon.wait_event("recovered")


def test_a_held_back_change_is_said_once(pki, tmp_path, daemons, state_dir):
    cas = [pki.ca(f"Held {n}") for n in range(20)]
    source, target = tmp_path / "source.pem", tmp_path / "target.pem"
    source.write_bytes(bundle(*cas[:1]))  # a truncated source would remove 19 of 20
    target.write_bytes(bundle(*cas))
    daemon = start(daemons, tmp_path, write_config(tmp_path / "s.toml", {"held": [f"pem:{source}", f"pem:{target}"]},
                                                  mode="mirror"))
    held = daemon.wait_event("held-back")[0]
    assert "19 of 20" in held["msg"] and "--force" in held["msg"]
    for _ in range(3):
        source.write_bytes(bundle(*cas[:1]))
        time.sleep(0.4)
    until(lambda: len(daemon.events("reconcile")) >= 3, what="reconciles of the touched source")
    assert len(daemon.events("held-back")) == 1 and len(keys(f"pem:{target}")) == 20
    assert daemon.events("unchanged") and not daemon.events("no-op")  # held back is not "nothing to do"
    status = json.loads((state_dir / "status.json").read_text())["profiles"]["held"]
    assert status["exit_code"] == 3 and "19 of 20" in status["held_back"][0]

    source.write_bytes(bundle(*cas[:19]))  # one removal is not held back
    until(lambda: len(keys(f"pem:{target}")) == 19, what="the small removal applied")
    daemon.wait_event("recovered")


# --- load, crashes, broken stores -------------------------------------------------------------


def test_a_storm_of_writes_ends_consistent_with_few_reconciles(pki, tmp_path, daemons):
    base = [pki.ca(f"Storm Base {n}") for n in range(5)]
    extras = [pki.ca(f"Storm Extra {n}") for n in range(7)]
    a, b, d = tmp_path / "a.pem", tmp_path / "b.pem", tmp_path / "ca"
    a.write_bytes(bundle(*base))
    specs = [f"pem:{a}", f"pem:{b}", f"dir:{d}"]
    daemon = start(daemons, tmp_path, write_config(tmp_path / "s.toml", {"storm": specs}))
    until(lambda: agree(*specs, expected=keys(f"pem:{a}")), what="the first reconcile")
    time.sleep(0.8)  # let the no-op after the first writes pass
    before = len(daemon.events("reconcile"))

    contents = [bundle(*base, extras[n % len(extras)]) for n in range(1000)]
    began = time.monotonic()
    for data in contents:  # in place: a reader may see a truncated or half-written file
        with open(a, "wb") as f:
            f.write(data)
        time.sleep(0.0008)
    storm = time.monotonic() - began
    final = keys(f"pem:{a}")
    until(lambda: agree(*specs, expected=final), what="one consistent state after the storm")
    time.sleep(1.0)
    assert agree(*specs, expected=final)
    reconciles = len(daemon.events("reconcile")) - before
    assert 1 <= reconciles <= 6, (reconciles, storm)
    assert daemon.proc.poll() is None


def test_sigkill_during_a_reconcile_then_restart_makes_every_store_consistent(pki, tmp_path, daemons):
    cas = [pki.ca(f"Kill {n}") for n in range(150)]
    sets = [bundle(*cas[:140]), bundle(*cas[10:])]  # each swap: 10 roots out, 10 in, in every store
    a, b, d, jks = tmp_path / "a.pem", tmp_path / "b.pem", tmp_path / "ca", tmp_path / "t.jks"
    a.write_bytes(sets[0])
    specs = [f"pem:{a}", f"pem:{b}", f"dir:{d}", f"jks:{jks}"]
    config = write_config(tmp_path / "s.toml", {"kill": specs}, extra="debounce_ms = 0")
    daemon = start(daemons, tmp_path, config)
    until(lambda: agree(*specs, expected=keys(f"pem:{a}")), what="the first reconcile")
    rng = random.Random(11)
    killed_mid_run = 0
    for attempt in range(6):
        daemon.settled(quiet=0.3)
        seen = len(daemon.events("reconcile"))
        (tmp_path / "a.new").write_bytes(sets[(attempt + 1) % 2])
        os.replace(tmp_path / "a.new", a)  # one event: the reconcile that is killed sees it whole
        while len(daemon.events("reconcile")) <= seen:  # a tight wait: the reconcile lasts ~0.1 s
            time.sleep(0.002)
        time.sleep(rng.uniform(0, 0.06))
        daemon.kill()
        lines = daemon.lines()
        last = max(n for n, e in enumerate(lines) if e.get("event") == "reconcile")
        killed_mid_run += sum(e.get("event") == "written" for e in lines[last:]) < 3
        for spec in specs:
            keys(spec)  # every store still parses
        daemon = start(daemons, tmp_path, config)
        expected = keys(f"pem:{a}")
        until(lambda: agree(*specs, expected=expected), what=f"every store consistent after kill {attempt}")
    assert killed_mid_run, "no kill landed before the reconcile finished"
    assert daemon.stop() == 0


def test_an_unreadable_store_is_reported_once_and_the_daemon_keeps_running(pki, tmp_path, daemons, state_dir):
    cas = [pki.ca(f"Unreadable {n}") for n in range(4)]
    a, b = tmp_path / "a.pem", tmp_path / "b.pem"
    a.write_bytes(bundle(*cas[:2]))
    specs = [f"pem:{a}", f"pem:{b}"]
    daemon = start(daemons, tmp_path, write_config(tmp_path / "s.toml", {"bad": specs}))
    until(lambda: agree(*specs) and len(keys(f"pem:{b}")) == 2, what="the first reconcile")

    b.write_bytes(BAD)
    daemon.wait_event("unreadable")
    for n in range(3):  # more events: the same broken store is not reported again
        a.write_bytes(bundle(*cas[:2]))
        time.sleep(0.5)
    assert len(daemon.events("unreadable")) == 1
    assert "not valid base64" in daemon.events("unreadable")[0]["msg"]
    status = json.loads((state_dir / "status.json").read_text())["profiles"]["bad"]
    assert status["exit_code"] == 2 and "not valid base64" in status["error"]
    assert b.read_bytes() == BAD  # nothing written to it

    b.write_bytes(bundle(*cas))  # repaired, with two new roots
    until(lambda: agree(*specs) and len(keys(f"pem:{a}")) == 4, what="propagation after the repair")
    daemon.wait_event("recovered")
    assert daemon.proc.poll() is None


def test_an_exception_in_one_reconcile_does_not_kill_the_daemon(pki, tmp_path, daemons):
    cas = [pki.ca(f"Crash {n}") for n in range(3)]
    a, b = tmp_path / "a.pem", tmp_path / "b.pem"
    a.write_bytes(bundle(*cas[:2]))
    specs = [f"pem:{a}", f"pem:{b}"]
    # Fault injection: the engine's first run raises an unexpected exception.
    boot = ("import sys, storesync.engine.run as r\n"
            "real, calls = r.run, []\n"
            "def run(*a, **k):\n"
            "    calls.append(1)\n"
            "    if len(calls) == 1: raise RuntimeError('injected fault')\n"
            "    return real(*a, **k)\n"
            "r.run = run\n"
            "from storesync.cli import main\n"
            "sys.argv[0] = 'storesync'\n"
            "main()\n")
    daemon = start(daemons, tmp_path, write_config(tmp_path / "s.toml", {"crash": specs}),
                   argv=[sys.executable, "-c", boot])
    crash = daemon.wait_event("crash")[0]
    assert "RuntimeError: injected fault" in crash["msg"] and crash["level"] == "error"
    a.write_bytes(bundle(*cas))
    until(lambda: agree(*specs) and len(keys(f"pem:{b}")) == 3, what="the next event reconciled")
    assert daemon.stop() == 0


# --- service behaviour ------------------------------------------------------------------------


def test_sighup_with_a_broken_config_keeps_the_old_one_and_a_good_one_is_taken(pki, tmp_path, daemons):
    cas = [pki.ca(f"Reload {n}") for n in range(3)]
    a, b, c = tmp_path / "a.pem", tmp_path / "b.pem", tmp_path / "c.pem"
    a.write_bytes(bundle(*cas[:1]))
    config = write_config(tmp_path / "s.toml", {"one": [f"pem:{a}", f"pem:{b}"]})
    daemon = start(daemons, tmp_path, config)
    until(lambda: agree(f"pem:{a}", f"pem:{b}") and b.exists(), what="the first reconcile")

    good = config.read_text()
    config.write_text(good + '\n[profile.two]\nmode = "merge"\nstores = ["pem:/x"]\n')  # one store only
    daemon.signal(signal.SIGHUP)
    failed = daemon.wait_event("reload-failed")[0]
    assert "keeping the previous config" in failed["msg"] and "a merge needs at least two stores" in failed["msg"]
    assert str(config) in failed["msg"] and "line" in failed["msg"]
    a.write_bytes(bundle(*cas[:2]))  # the old config still runs
    until(lambda: agree(f"pem:{a}", f"pem:{b}") and len(keys(f"pem:{b}")) == 2, what="the old profile at work")

    write_config(config, {"one": [f"pem:{a}", f"pem:{b}"], "two": [f"pem:{a}", f"pem:{c}"]})
    daemon.signal(signal.SIGHUP)
    daemon.wait_event("reloaded")
    until(lambda: agree(f"pem:{a}", f"pem:{c}") and len(keys(f"pem:{c}")) == 2, what="the new profile at work")
    assert daemon.proc.poll() is None and daemon.stop() == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_sigint_exit_0_within_a_second(root, tmp_path, daemons, state_dir, sig):
    a, b = tmp_path / "a.pem", tmp_path / "b.pem"
    a.write_bytes(root.pem)
    daemon = start(daemons, tmp_path, write_config(tmp_path / "s.toml", {"term": [f"pem:{a}", f"pem:{b}"]}))
    until(lambda: agree(f"pem:{a}", f"pem:{b}") and b.exists(), what="the first reconcile")
    began = time.monotonic()
    daemon.signal(sig)
    assert daemon.proc.wait(5) == 0
    assert time.monotonic() - began < 1.0
    assert daemon.events("stopping")
    assert json.loads((state_dir / "status.json").read_text())["state"] == "stopped"


def test_sigterm_during_a_reconcile_finishes_it_then_exits_0(pki, tmp_path, daemons):
    cas = [pki.ca(f"Term {n}") for n in range(150)]
    a, d, jks = tmp_path / "a.pem", tmp_path / "ca", tmp_path / "t.jks"
    a.write_bytes(bundle(*cas[:100]))
    specs = [f"pem:{a}", f"dir:{d}", f"jks:{jks}"]
    daemon = start(daemons, tmp_path, write_config(tmp_path / "s.toml", {"t": specs}, extra="debounce_ms = 0"))
    until(lambda: agree(*specs, expected=keys(f"pem:{a}")), what="the first reconcile")
    daemon.settled(quiet=0.3)
    seen = len(daemon.events("reconcile"))
    (tmp_path / "a.new").write_bytes(bundle(*cas))
    os.replace(tmp_path / "a.new", a)  # one event, one reconcile
    until(lambda: len(daemon.events("reconcile")) > seen, what="the reconcile to begin")
    daemon.signal(signal.SIGTERM)
    assert daemon.proc.wait(10) == 0
    assert agree(*specs) and len(keys(f"jks:{jks}")) == 150  # finished, not cut short


def test_sd_notify_ready_watchdog_status_stopping(root, tmp_path, daemons):
    sock_path = tmp_path / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(sock_path))
    listener.settimeout(15)
    a, b = tmp_path / "a.pem", tmp_path / "b.pem"
    a.write_bytes(root.pem)
    env = {**os.environ, "NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "200000"}
    daemon = start(daemons, tmp_path, write_config(tmp_path / "s.toml", {"sd": [f"pem:{a}", f"pem:{b}"]}), env=env)
    messages: list[str] = []

    def receive_until(wanted: str) -> None:
        while not any(wanted in m for m in messages):
            messages.append(listener.recv(4096).decode())

    receive_until("READY=1")
    ready = next(m for m in messages if "READY=1" in m)
    assert f"MAINPID={daemon.proc.pid}" in ready and "STATUS=" in ready
    receive_until("WATCHDOG=1")
    receive_until("STATUS=idle")
    daemon.signal(signal.SIGTERM)
    receive_until("STOPPING=1")
    assert daemon.proc.wait(5) == 0
    listener.close()


def test_once_reconciles_every_profile_and_exits_with_the_worst_code(pki, root, tmp_path, state_dir, monkeypatch):
    from storesync import status as machine

    a, b, c, e = (tmp_path / f"{n}.pem" for n in "abce")
    a.write_bytes(root.pem)
    e.write_bytes(BAD)
    config = tmp_path / "s.toml"
    write_config(config, {"ok": [f"pem:{a}", f"pem:{b}"]})
    result = subprocess.run([sys.executable, "-m", "storesync", "daemon", "--once", "--config", config],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert agree(f"pem:{a}", f"pem:{b}") and "wrote pem:" in result.stderr

    # a truncated source (an empty one is refused: exit 2) would replace its target: held back (3);
    # an unreadable store: error (2)
    c.write_bytes(bundle(*(pki.ca(f"Once {n}") for n in range(3))))
    (tmp_path / "truncated.pem").write_bytes(pki.ca("Once stray").pem)
    config.write_text(config.read_text() + f'\n[profile.held]\nmode = "mirror"\nsource = "pem:{tmp_path}/truncated.pem"\n'
                                           f'targets = ["pem:{c}"]\n')
    result = subprocess.run([sys.executable, "-m", "storesync", "daemon", "--once", "--config", config],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 3 and "held back" in result.stderr
    config.write_text(config.read_text() + f'\n[profile.broken]\nmode = "merge"\nstores = ["pem:{a}", "pem:{e}"]\n')
    result = subprocess.run([sys.executable, "-m", "storesync", "daemon", "--once", "--config", config],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "not valid base64" in result.stderr and "Traceback" not in result.stderr

    # the status file, as `storesync status` reads it
    status = machine.daemon_status()
    assert status["running"] is False and status["state"] == "stopped"
    profiles = status["status"]["profiles"]
    assert set(profiles) == {"ok", "held", "broken"}
    assert profiles["held"]["exit_code"] == 3 and "all 3" in profiles["held"]["held_back"][0]
    assert profiles["broken"]["exit_code"] == 2 and "not valid base64" in profiles["broken"]["error"]
    assert {"last_run", "exit_code", "summary", "error", "held_back"} <= set(profiles["ok"])


def test_a_target_edited_by_hand_is_named_as_the_change_it_undoes(pki, tmp_path, daemons, state_dir):
    """Review: in a mirror, a root appended to the target by hand was undone and logged as
    "change in" the source: the log names the store whose change started the run."""
    cas = [pki.ca(f"Daemon Edit {n}") for n in range(3)]
    a, b = tmp_path / "a.pem", tmp_path / "b.pem"
    a.write_bytes(bundle(*cas[:2]))
    daemon = start(daemons, tmp_path, write_config(tmp_path / "s.toml", {"web": [f"pem:{a}", f"pem:{b}"]},
                                                   mode="mirror"))
    until(lambda: agree(f"pem:{a}", f"pem:{b}"), what="the first reconcile")
    daemon.settled()
    with open(b, "ab") as f:
        f.write(cas[2].pem)
    written = daemon.wait_event("written", count=2)
    assert written[-1]["removals"] == 1 and f"change in pem:{b}:" in written[-1]["msg"], written[-1]["msg"]


def test_text_log_is_one_line_per_decision_and_cli_errors_are_sentences(root, tmp_path):
    a, b = tmp_path / "a.pem", tmp_path / "b.pem"
    a.write_bytes(root.pem)
    config = write_config(tmp_path / "s.toml", {"text": [f"pem:{a}", f"pem:{b}"]})
    result = subprocess.run([sys.executable, "-m", "storesync", "daemon", "--once", "--config", config],
                            capture_output=True, text=True, timeout=60, env={**os.environ, "JOURNAL_STREAM": "8:1"})
    lines = result.stderr.splitlines()
    assert result.returncode == 0 and len(lines) == 1 and lines[0].startswith(f"<6>profile text: change in pem:{a}: wrote pem:{b}: 1 added (storesync Test Root)")

    for args, message in (
        (["--config", tmp_path / "missing.toml"], "does not exist"),
        (["--config", config, "--log-format", "xml"], "--log-format must be text or json"),
    ):
        bad = subprocess.run([sys.executable, "-m", "storesync", "daemon", *map(str, args)],
                             capture_output=True, text=True, timeout=60)
        assert bad.returncode == 2 and message in bad.stderr and "Traceback" not in bad.stderr
    (tmp_path / "empty.toml").write_text("")
    bad = subprocess.run([sys.executable, "-m", "storesync", "daemon", "--config", str(tmp_path / "empty.toml")],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "no profiles" in bad.stderr


def test_the_unit_file_is_hardened_and_valid(tmp_path):
    unit = Path(__file__).resolve().parents[1] / "packaging" / "storesync.service"
    text = unit.read_text()
    for line in ("Type=notify", "WatchdogSec=", "ProtectSystem=strict", "ReadWritePaths=", "StateDirectory=storesync",
                 "Environment=STORESYNC_STATE_DIR=/var/lib/storesync", "NoNewPrivileges=yes", "ExecReload=/bin/kill -HUP"):
        assert line in text, line
    analyze = need("systemd-analyze")
    fixed = tmp_path / "storesync.service"  # verify wants the ExecStart binary to exist
    fixed.write_text(text.replace("/usr/bin/storesync", str(Path(sys.executable).parent / "storesync")))
    result = run(analyze, "verify", fixed, check=False)
    assert result.returncode == 0, result.stderr.decode()


def test_a_symlinked_store_follows_changes_of_its_target(pki, tmp_path, daemons):
    cas = [pki.ca(f"Linked {n}") for n in range(3)]
    real_dir = tmp_path / "real"
    real_dir.mkdir()
    real, link, b = real_dir / "bundle.pem", tmp_path / "link.pem", tmp_path / "b.pem"
    real.write_bytes(bundle(*cas[:2]))
    link.symlink_to(real)
    specs = [f"pem:{link}", f"pem:{b}"]
    start(daemons, tmp_path, write_config(tmp_path / "s.toml", {"ln": specs}))
    until(lambda: agree(*specs) and len(keys(f"pem:{b}")) == 2, what="the first reconcile")
    tmp = real_dir / ".bundle.new"  # replaced by rename where the link points, not where it is
    tmp.write_bytes(bundle(*cas))
    os.replace(tmp, real)
    until(lambda: agree(*specs) and len(keys(f"pem:{b}")) == 3, what="the linked bundle's change")


def test_a_symlink_re_pointed_elsewhere_is_watched_at_its_new_target(pki, tmp_path, daemons):
    """`ln -sfn B/b.pem L/src.pem`: the store is now another file, and later edits of that file
    (in place, in a directory nothing watched before) propagate at once, not at the rescan."""
    cas = [pki.ca(f"Re-pointed {n}") for n in range(6)]
    first, second, links = tmp_path / "A", tmp_path / "B", tmp_path / "L"
    for directory in (first, second, links):
        directory.mkdir()
    (first / "a.pem").write_bytes(bundle(*cas[:1]))
    (second / "b.pem").write_bytes(bundle(*cas[:2]))
    link, out = links / "src.pem", tmp_path / "out.pem"
    link.symlink_to(first / "a.pem")
    specs = [f"pem:{link}", f"pem:{out}"]
    daemon = start(daemons, tmp_path, write_config(tmp_path / "s.toml", {"ln": specs}, mode="mirror"))
    until(lambda: agree(*specs) and len(keys(f"pem:{out}")) == 1, what="the first reconcile")
    daemon.settled(quiet=0.3)

    subprocess.run(["ln", "-sfn", str(second / "b.pem"), str(link)], check=True)
    until(lambda: agree(*specs) and len(keys(f"pem:{out}")) == 2, what="the new target mirrored")
    daemon.wait_event("relinked")
    daemon.settled(quiet=0.3)

    with open(second / "b.pem", "ab") as f:  # an edit of the new target, where the link is not
        f.write(cas[2].pem)
    until(lambda: agree(*specs) and len(keys(f"pem:{out}")) == 3, timeout=5.0, what="the new target's edit")
    daemon.settled(quiet=0.3)
    tmp = second / ".b.new"  # and replaced by rename there
    tmp.write_bytes(bundle(*cas[:4]))
    os.replace(tmp, second / "b.pem")
    until(lambda: agree(*specs) and len(keys(f"pem:{out}")) == 4, timeout=5.0, what="the new target replaced")

    # A chain of links (L/src.pem -> M/hop.pem -> A/a.pem): re-pointing the middle one is seen too.
    daemon.settled(quiet=0.3)
    (first / "a.pem").write_bytes(bundle(*cas[:4]))  # no longer watched: the link leads to B
    middle = tmp_path / "M"
    middle.mkdir()
    (middle / "hop.pem").symlink_to(first / "a.pem")
    subprocess.run(["ln", "-sfn", str(middle / "hop.pem"), str(link)], check=True)
    daemon.wait_event("relinked", count=2)
    daemon.settled(quiet=0.3)
    (first / "a.pem").write_bytes(bundle(*cas[:5]))
    until(lambda: agree(*specs) and len(keys(f"pem:{out}")) == 5, timeout=5.0, what="an edit at the chain's end")
    daemon.settled(quiet=0.3)
    subprocess.run(["ln", "-sfn", str(second / "b.pem"), str(middle / "hop.pem")], check=True)
    daemon.wait_event("relinked", count=3)
    daemon.settled(quiet=0.3)
    (second / "b.pem").write_bytes(bundle(*cas))  # 4 -> 6: the middle link leads here now
    until(lambda: agree(*specs) and len(keys(f"pem:{out}")) == 6, timeout=5.0, what="the middle link re-pointed")
    assert daemon.stop() == 0
    assert not [e for e in daemon.lines() if e.get("level") in ("warning", "error") or e.get("event") == "raw"]


def test_a_store_directory_replaced_by_another_is_watched_anew(pki, tmp_path, daemons):
    """`mv src src.old; mkdir src; cp new.pem src/a.pem`: the old watch followed src.old; the
    new src is watched, and later edits in it propagate at once."""
    cas = [pki.ca(f"Replaced dir {n}") for n in range(4)]
    src, out = tmp_path / "src", tmp_path / "out.pem"
    src.mkdir()
    (src / "a.pem").write_bytes(bundle(*cas[:1]))
    specs = [f"pem:{src / 'a.pem'}", f"pem:{out}"]
    daemon = start(daemons, tmp_path, write_config(tmp_path / "s.toml", {"mv": specs}, mode="mirror"))
    until(lambda: agree(*specs) and len(keys(f"pem:{out}")) == 1, what="the first reconcile")
    daemon.settled(quiet=0.3)

    src.rename(tmp_path / "src.old")
    src.mkdir()
    (src / "a.pem").write_bytes(bundle(*cas[:2]))
    until(lambda: agree(*specs) and len(keys(f"pem:{out}")) == 2, what="the new directory's store mirrored")
    daemon.settled(quiet=0.3)
    (src / "a.pem").write_bytes(bundle(*cas[:3]))  # a later edit, in place, in the new directory
    until(lambda: agree(*specs) and len(keys(f"pem:{out}")) == 3, timeout=5.0, what="the edit in the new directory")
    daemon.settled(quiet=0.3)
    (tmp_path / "src.old" / "a.pem").write_bytes(bundle(*cas[:1]))  # the old one no longer matters
    time.sleep(0.6)
    assert len(keys(f"pem:{out}")) == 3

    # Twice in a row, in a profile that a SIGHUP added (its watches made by the reload).
    outer = tmp_path / "outer"
    (outer / "inner").mkdir(parents=True)
    deep, deep_out = outer / "inner" / "d.pem", tmp_path / "deep-out.pem"
    deep.write_bytes(bundle(*cas[:1]))
    config = write_config(tmp_path / "s.toml", {"mv": specs, "deep": [f"pem:{deep}", f"pem:{deep_out}"]},
                          mode="mirror")
    daemon.signal(signal.SIGHUP)
    daemon.wait_event("reloaded")
    daemon.settled(quiet=0.3)
    for n in range(2):
        (outer / "inner").rename(tmp_path / f"inner.old{n}")
        (outer / "inner").mkdir()
        deep.write_bytes(bundle(*cas[:2 + n]))
        until(lambda: len(keys(f"pem:{deep_out}")) == 2 + n, what=f"replacement {n} mirrored")
        daemon.settled(quiet=0.3)
    deep.write_bytes(bundle(*cas))
    until(lambda: len(keys(f"pem:{deep_out}")) == 4, timeout=5.0, what="the edit after two replacements")
    assert config.exists() and daemon.stop() == 0
