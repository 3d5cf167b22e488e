"""`storesync daemon --metrics`: a real daemon serves Prometheus metrics, scraped over HTTP and
parsed with prometheus_client's own parser; `status --json` carries the same for inventory tools."""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import storesync
from test_daemon import BAD, Daemon, bundle, daemons, keys, state_dir, until, write_config  # noqa: F401 - fixtures


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def scrape(port: int, host: str = "127.0.0.1") -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value}, as prometheus_client's parser reads the page."""
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples, name: str, **labels):
    return samples.get((name, tuple(sorted(labels.items()))))


def start_with_metrics(daemons, tmp_path, config, port, host: str = "127.0.0.1") -> Daemon:
    d = Daemon(tmp_path, config, "--metrics", f"{host}:{port}")
    daemons.append(d)
    d.started()
    until(lambda: scrape(port), what="the metrics endpoint")
    return d


def fleet_agent(daemons, tmp_path: Path, fleet, target: str) -> int:
    """A daemon mirroring the fleet's tuf: source into `target`, polling every second (its
    config: tmp_path/node.toml), with --metrics on a free port (returned)."""
    config = tmp_path / "node.toml"
    config.write_text(f'[profile.fleet]\nmode = "mirror"\nsource = {json.dumps(fleet.spec(timeout=1))}\n'
                      f'targets = [{json.dumps(target)}]\npoll = 1\n')
    port = free_port()
    start_with_metrics(daemons, tmp_path, config, port)
    return port


def test_metrics_follow_a_real_change_while_the_daemon_runs(pki, tmp_path, daemons, state_dir):
    cas = [pki.ca(f"Metrics Root {n}") for n in range(4)]
    source, target = tmp_path / "policy.pem", tmp_path / "target.pem"
    source.write_bytes(bundle(*cas[:2]))
    config = write_config(tmp_path / "s.toml", {"corp": [f"pem:{source}", f"pem:{target}"]}, mode="mirror")
    port = free_port()
    before = time.time()
    daemon = start_with_metrics(daemons, tmp_path, config, port)
    until(lambda: len(keys(f"pem:{target}")) == 2, what="the first reconcile")
    daemon.settled()

    first = scrape(port)
    assert value(first, "storesync_store_anchors", profile="corp", store=f"pem:{target}") == 2
    assert value(first, "storesync_store_anchors", profile="corp", store=f"pem:{source}") == 2
    assert value(first, "storesync_last_exit_code", profile="corp") == 0
    assert before - 1 <= value(first, "storesync_last_success_timestamp_seconds", profile="corp") <= time.time()
    runs = value(first, "storesync_runs_total", profile="corp")
    assert runs >= 1
    # No tuf: source: no version, no staleness (absent, not a made-up 0).
    assert not [k for k in first if k[0] in ("storesync_policy_version", "storesync_source_stale")]

    source.write_bytes(bundle(*cas))  # the policy grows by two roots
    until(lambda: value(scrape(port), "storesync_store_anchors", profile="corp", store=f"pem:{target}") == 4,
          what="the anchors gauge to follow the change")
    daemon.settled()
    after = scrape(port)
    assert value(after, "storesync_runs_total", profile="corp") > runs
    assert not [k for k in after if k[0] == "storesync_errors_total"]

    # A broken source (a run error: "source unreadable, nothing written"): the error is counted by kind and the exit code says so; the target keeps its roots.
    source.write_bytes(BAD)
    until(lambda: value(scrape(port), "storesync_errors_total", profile="corp", kind="error") == 1,
          what="the error counter")
    broken = scrape(port)
    assert value(broken, "storesync_last_exit_code", profile="corp") == 2
    assert value(broken, "storesync_last_success_timestamp_seconds", profile="corp") == \
        value(after, "storesync_last_success_timestamp_seconds", profile="corp")
    assert len(keys(f"pem:{target}")) == 4

    # status --json carries the same for inventory tools.
    report = json.loads(storesync("status", "--json").stdout)
    corp = report["daemon"]["status"]["profiles"]["corp"]
    assert corp["stores"][f"pem:{target}"]["anchors"] == 4
    assert corp["errors"] == {"error": 1}
    assert corp["last_success"] and corp["exit_code"] == 2
    assert daemon.stop() == 0


def test_metrics_address_errors_are_one_sentence(root, tmp_path):
    source = root.write(tmp_path / "a.pem")
    config = write_config(tmp_path / "s.toml", {"p": [f"pem:{source}", f"pem:{tmp_path / 'b.pem'}"]}, mode="mirror")
    bad = storesync("daemon", "--config", config, "--metrics", "localhost")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "HOST:PORT" in bad.stderr
    assert "Traceback" not in bad.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = storesync("daemon", "--config", config, "--metrics", f"127.0.0.1:{port}")
    assert busy.returncode == 2 and busy.stderr.count("\n") == 1, busy.stderr
    assert f"cannot serve metrics on 127.0.0.1:{port}" in busy.stderr and "Traceback" not in busy.stderr
    assert not (tmp_path / "b.pem").exists()  # nothing ran


def test_an_empty_host_serves_every_address_ipv4_and_ipv6(root, tmp_path, daemons):
    source = root.write(tmp_path / "a.pem")
    config = write_config(tmp_path / "s.toml", {"p": [f"pem:{source}", f"pem:{tmp_path / 'b.pem'}"]}, mode="mirror")
    port = free_port()
    start_with_metrics(daemons, tmp_path, config, port, host="")  # `--metrics :PORT`; answers on 127.0.0.1
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return  # a machine without IPv6: IPv4 alone, as answered above (the fallback, tested below)
    assert value(scrape(port, "[::1]"), "storesync_runs_total", profile="p") is not None


@pytest.mark.parametrize("refusal", [errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL])
def test_an_empty_host_serves_ipv4_on_a_machine_without_ipv6(monkeypatch, refusal):
    """Where `::` cannot be bound (no IPv6), an empty host serves every IPv4 address instead."""
    from types import SimpleNamespace

    from storesync import metrics

    def no_ipv6(port, registry):
        raise OSError(refusal, os.strerror(refusal))

    monkeypatch.setattr(metrics, "dual_stack", no_ipv6)
    port = free_port()
    server = metrics.serve(f":{port}", SimpleNamespace(tracks={}))
    try:
        assert scrape(port) == {} and server.server_address[0] == "0.0.0.0"
    finally:
        server.shutdown()


def test_prometheus_client_is_imported_only_with_the_flag(root, tmp_path):
    source = root.write(tmp_path / "a.pem")
    config = write_config(tmp_path / "s.toml", {"p": [f"pem:{source}", f"pem:{tmp_path / 'b.pem'}"]}, mode="mirror")
    code = ("import sys; from storesync.cli import main\n"
            f"sys.argv = ['storesync', 'daemon', '--once', '--config', {str(config)!r}]\n"
            "try:\n    main()\nexcept SystemExit as exc:\n    code = exc.code\n"
            "print(code, 'prometheus_client' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.split()[-2:] == ["0", "False"], result.stdout + result.stderr


def test_a_tuf_source_shows_its_policy_version_and_goes_stale_when_its_server_fails(tmp_path, cas_fleet, daemons):
    """A repository published with `storesync publish`, served on loopback; the daemon polls it."""
    from test_fleet import Fleet, policy_v

    fleet = Fleet(tmp_path)
    fleet.publish(policy_v(tmp_path, cas_fleet, 3, "v1"))
    server = fleet.serve(controlled=True)
    try:
        target = tmp_path / "node.pem"
        port = fleet_agent(daemons, tmp_path, fleet, f"pem:{target}?format=trusted")
        fresh = until(lambda: (s := scrape(port)) and value(s, "storesync_policy_version", profile="fleet") and s,
                      what="the policy version")
        first = value(fresh, "storesync_policy_version", profile="fleet")
        assert value(fresh, "storesync_source_stale", profile="fleet") == 0
        assert 0 <= value(fresh, "storesync_source_verified_age_seconds", profile="fleet") < 30
        assert value(fresh, "storesync_store_anchors", profile="fleet", store=f"pem:{target}?format=trusted") == 3

        fleet.publish(policy_v(tmp_path, cas_fleet, 4, "v2"))  # a new policy: the version moves
        until(lambda: value(scrape(port), "storesync_policy_version", profile="fleet") == first + 1,
              what="the next policy version")
        until(lambda: value(scrape(port), "storesync_store_anchors", profile="fleet",
                            store=f"pem:{target}?format=trusted") == 4, what="the new policy's anchors")

        server.mode = "500"  # keep last good: stale, counted, nothing removed
        stale = until(lambda: (s := scrape(port)) and value(s, "storesync_source_stale", profile="fleet") == 1 and s,
                      what="the source to go stale")
        assert value(stale, "storesync_policy_version", profile="fleet") == first + 1
        assert value(stale, "storesync_errors_total", profile="fleet", kind="stale") >= 1
        assert value(stale, "storesync_store_anchors", profile="fleet", store=f"pem:{target}?format=trusted") == 4
        time.sleep(1.5)
        assert value(scrape(port), "storesync_source_verified_age_seconds", profile="fleet") >= 1

        report = json.loads(storesync("status", "--json", "--config", tmp_path / "node.toml").stdout)
        fleet_status = report["daemon"]["status"]["profiles"]["fleet"]
        source = fleet_status["source"]
        assert source["stale"] is True and source["version"] == first + 1 and "500" in source["reason"]
        assert source["verified_at"] and fleet_status["last_success"]
        # status itself reads the source as last verified (no network) and says the same
        (found,) = [s for s in report["stores"] if s["store"].startswith("tuf:")]
        assert found["freshness"]["stale"] is True and found["freshness"]["version"] == first + 1
    finally:
        fleet.stop()


@pytest.fixture
def cas_fleet(pki):
    return [pki.ca(f"Metrics Fleet Root {n}") for n in range(5)]


def test_drift_is_exported_once_the_ownership_record_says_it(pki, tmp_path):
    """A store storesync never wrote has no drift figure; once it wrote it, a root another hand
    added shows in the gauge, counted by category, from the ownership record."""
    from prometheus_client import CollectorRegistry, generate_latest

    from storesync import daemon as service, metrics
    from storesync.config import load_config

    source, target = tmp_path / "a.pem", tmp_path / "b.pem"
    source.write_bytes(bundle(pki.ca("Drift Root")))
    config = tmp_path / "s.toml"
    config.write_text(f'[profile.p]\nmode = "add"\nsource = "pem:{source}"\ntargets = ["pem:{target}"]\n')
    agent = service.Daemon(load_config(config), service.Log(stream=open(os.devnull, "w")))

    def exported() -> dict:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(metrics.Collector(agent))
        return {tuple(sorted(s.labels.items())): s.value
                for f in text_string_to_metric_families(generate_latest(registry).decode()) for s in f.samples
                if s.name == "storesync_store_drift"}

    agent.once()  # storesync writes the target: its own write is no drift
    store = ("store", f"pem:{target}")
    assert exported() == {(("category", c), ("profile", "p"), store): 0 for c in ("added", "removed", "trust_changed")}
    with target.open("ab") as f:  # another hand adds a root; add mode leaves it
        f.write(bundle(pki.ca("Hand Added")))
    agent.once()
    assert exported() == {(("category", "added"), ("profile", "p"), store): 1,
                          (("category", "removed"), ("profile", "p"), store): 0,
                          (("category", "trust_changed"), ("profile", "p"), store): 0}


def test_a_tuf_source_never_verified_is_stale_with_no_version(tmp_path, cas_fleet, daemons):
    from test_fleet import Fleet, policy_v

    fleet = Fleet(tmp_path)
    fleet.publish(policy_v(tmp_path, cas_fleet, 2, "v1"))
    server = fleet.serve(controlled=True)
    server.mode = "500"
    try:
        target = tmp_path / "node.pem"
        port = fleet_agent(daemons, tmp_path, fleet, f"pem:{target}")
        seen = until(lambda: (s := scrape(port)) and value(s, "storesync_source_stale", profile="fleet") == 1 and s,
                     what="the stale gauge")
        assert value(seen, "storesync_last_exit_code", profile="fleet") == 2
        assert value(seen, "storesync_errors_total", profile="fleet", kind="error") >= 1
        assert not [k for k in seen if k[0] in ("storesync_policy_version", "storesync_source_verified_age_seconds",
                                                "storesync_last_success_timestamp_seconds")]
        assert not target.exists()
    finally:
        fleet.stop()


def test_a_held_back_policy_is_not_reported_as_the_version_applied(tmp_path, cas_fleet, daemons):
    """The agent's removal guard holds back a validly signed policy that drops too many roots: the
    stores keep the old one, so the version applied stays the old one (the source's is the new)."""
    from test_fleet import Fleet, policy_v

    fleet = Fleet(tmp_path)
    fleet.publish(policy_v(tmp_path, cas_fleet, 5, "v1"))
    fleet.serve(controlled=True)
    try:
        target = tmp_path / "node.pem"
        port = fleet_agent(daemons, tmp_path, fleet, f"pem:{target}?format=trusted")
        first = until(lambda: value(scrape(port), "storesync_policy_version", profile="fleet"), what="the version")
        assert fleet.publish(policy_v(tmp_path, cas_fleet, 3, "v2"), "--force").returncode == 0
        until(lambda: value(scrape(port), "storesync_last_exit_code", profile="fleet") == 3, what="the hold")
        samples = scrape(port)
        assert value(samples, "storesync_store_anchors", profile="fleet", store=f"pem:{target}?format=trusted") == 5
        assert value(samples, "storesync_policy_version", profile="fleet") == first, "v2 was held back, not applied"
        report = json.loads(storesync("status", "--json", "--config", tmp_path / "node.toml").stdout)
        source = report["daemon"]["status"]["profiles"]["fleet"]["source"]
        assert source["version"] == first + 1 and source["applied"] == first, source
    finally:
        fleet.stop()


def test_a_sighup_keeps_the_counters_of_a_profile_it_edits(pki, tmp_path, daemons, state_dir):
    """Counters are monotonic for the daemon's lifetime: a profile edited by a reload (same name)
    keeps its runs, errors and last success; a removed one leaves /metrics; a new one starts at 0."""
    import signal

    a, b, c, d, e = (tmp_path / f"{n}.pem" for n in "abcde")
    a.write_bytes(bundle(pki.ca("Reload Metrics Root")))
    config = write_config(tmp_path / "s.toml", {"kept": [f"pem:{a}", f"pem:{b}"], "gone": [f"pem:{a}", f"pem:{c}"]},
                          mode="mirror")
    port = free_port()
    daemon = start_with_metrics(daemons, tmp_path, config, port)
    until(lambda: b.exists() and c.exists(), what="the first reconciles")
    b.write_bytes(BAD)  # kept's target breaks: an error at every run from now on
    until(lambda: value(scrape(port), "storesync_errors_total", profile="kept", kind="unreadable"),
          what="the error counter")
    daemon.settled()
    before = scrape(port)

    write_config(config, {"kept": [f"pem:{a}", f"pem:{b}", f"pem:{d}"], "new": [f"pem:{a}", f"pem:{e}"]},
                 mode="mirror")  # kept gains a target, gone goes, new comes
    daemon.signal(signal.SIGHUP)
    daemon.wait_event("reloaded")
    until(lambda: d.exists() and e.exists(), what="the reconciles of the reload")
    daemon.settled()
    after = scrape(port)

    def reconciles(profile: str) -> int:  # the daemon's log: one line per reconcile since it started
        return sum(line.get("profile") == profile for line in daemon.events("reconcile"))

    runs = value(after, "storesync_runs_total", profile="kept")
    assert runs == reconciles("kept") > value(before, "storesync_runs_total", profile="kept")
    assert value(after, "storesync_errors_total", profile="kept", kind="unreadable") > \
        value(before, "storesync_errors_total", profile="kept", kind="unreadable")
    assert value(after, "storesync_last_success_timestamp_seconds", profile="kept") == \
        value(before, "storesync_last_success_timestamp_seconds", profile="kept")  # its first run, before b broke
    assert value(after, "storesync_runs_total", profile="new") == reconciles("new")
    assert not [k for k in after if ("profile", "gone") in k[1]]
    kept = json.loads(storesync("status", "--json").stdout)["daemon"]["status"]["profiles"]["kept"]
    assert kept["runs"] == runs and kept["errors"]["unreadable"] == \
        value(after, "storesync_errors_total", profile="kept", kind="unreadable")
    assert daemon.stop() == 0
