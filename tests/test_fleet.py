"""Fleet (issue 17): `storesync publish` makes a TUF repository; agents read it as a `tuf:` store
over HTTP, through python-tuf's ngclient, and keep their last good policy when anything is wrong.

Oracles: python-tuf's own ngclient Updater reads what the publisher wrote; `openssl x509` reads
the policy's TRUSTED CERTIFICATE blocks; the repository is served by `python -m http.server`
(or an in-process server told to answer 500 or to hang); agents are real `storesync` processes
(CLI runs and `storesync daemon`s), each with its own state dir."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import run, storesync
from fleet import ControlledServer, StaticServer
from test_daemon import Daemon, daemons, until  # noqa: F401 - daemons is a fixture

NAME = "corp"


class Fleet:
    """A publisher (repo + keys) and its served URL; agents are state dirs."""

    def __init__(self, tmp: Path, threshold: int = 1):
        self.tmp = tmp
        self.repo, self.keys = tmp / "repo", tmp / "keys"
        out = storesync("publish", "init", self.repo, "--keys", self.keys, "--threshold", threshold)
        assert out.returncode == 0, out.stderr
        self.root = tmp / "root.json"
        shutil.copy(self.repo / "1.root.json", self.root)  # what an agent is given, once
        self.server: StaticServer | ControlledServer | None = None

    def serve(self, controlled: bool = False):
        self.server = ControlledServer(self.repo).start() if controlled else StaticServer(self.repo)
        return self.server

    def spec(self, timeout: float | None = None) -> str:
        return f"tuf:{self.server.url}/{NAME}?root={self.root}" + (f"&timeout={timeout:g}" if timeout else "")

    def publish(self, policy: Path, *args) -> subprocess.CompletedProcess:
        return storesync("publish", self.repo, NAME, f"pem:{policy}?format=trusted", *args)

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()


@pytest.fixture
def fleets():
    made: list[Fleet] = []
    yield made
    for f in made:
        f.stop()


def new_fleet(fleets, tmp_path: Path, **kwargs) -> Fleet:
    fleet = Fleet(tmp_path, **kwargs)
    fleets.append(fleet)
    return fleet


def policy_file(path: Path, *blocks: bytes) -> Path:
    path.write_bytes(b"".join(blocks))
    return path


def trusted_pem(issued, label: str, distrust: bool = False) -> bytes:
    """A TRUSTED CERTIFICATE block made by openssl (the oracle), labelled, trusted or rejected for TLS."""
    flag = "-addreject" if distrust else "-addtrust"
    return run("openssl", "x509", "-trustout", flag, "serverAuth", "-setalias", label,
               input=issued.pem).stdout


@pytest.fixture
def cas(pki):
    return [pki.ca(f"Fleet Root {n}") for n in range(12)]


def policy_v(tmp_path: Path, cas, count: int, version: str, distrusted: int | None = None) -> Path:
    return policy_file(tmp_path / f"policy-{version}.pem", *(
        trusted_pem(ca, f"Fleet {version} {n}", distrust=n == distrusted) for n, ca in enumerate(cas[:count])))


def agent_sync(spec: str, agent: Path, target: Path, *args) -> subprocess.CompletedProcess:
    return storesync("sync", spec, f"pem:{target}?format=trusted", "--state-dir", agent, *args)


def shas(path: Path) -> set[str]:
    from storesync.stores import open_store

    return set(open_store(f"pem:{path}?format=trusted").read())


def sha_of(issued) -> str:
    from storesync.model import Certificate

    return Certificate(issued.der).sha256


# --- the publisher ----------------------------------------------------------------------------


def test_init_writes_the_layout_ngclient_reads_and_keeps_keys_private(tmp_path, fleets, cas):
    fleet = new_fleet(fleets, tmp_path, threshold=2)
    keys = sorted(fleet.keys.iterdir())
    assert [k.name.split("-")[0] for k in keys].count("root") == 2  # --threshold 2: root and targets
    assert [k.name.split("-")[0] for k in keys].count("targets") == 2
    assert all(stat.S_IMODE(k.stat().st_mode) == 0o600 for k in keys)
    assert not list(fleet.repo.rglob("*.pem"))  # no private key in what is served
    root = json.loads((fleet.repo / "1.root.json").read_text())["signed"]
    assert root["consistent_snapshot"] is True and root["roles"]["root"]["threshold"] == 2

    policy = policy_v(tmp_path, cas, 3, "v1", distrusted=2)
    out = fleet.publish(policy, "--expires", "12h")
    assert out.returncode == 0, out.stderr
    assert {p.name for p in fleet.repo.iterdir()} >= {"1.root.json", "timestamp.json", "2.snapshot.json",
                                                      "2.targets.json", "targets"}
    targets = json.loads((fleet.repo / "2.targets.json").read_text())["signed"]
    assert targets["version"] == 2 and NAME in targets["targets"]
    expires = targets["expires"]
    import datetime as dt

    left = dt.datetime.fromisoformat(expires.replace("Z", "+00:00")) - dt.datetime.now(dt.timezone.utc)
    assert dt.timedelta(hours=11, minutes=58) < left <= dt.timedelta(hours=12)

    # python-tuf's own client, on its own, accepts the repository and gets the policy
    from tuf.ngclient import Updater

    server = fleet.serve()
    (tmp_path / "ngclient").mkdir()
    updater = Updater(str(tmp_path / "ngclient"), server.url + "/", str(tmp_path / "dl"), server.url + "/targets/",
                      bootstrap=fleet.root.read_bytes())
    info = updater.get_targetinfo(NAME)
    path = updater.download_target(info)
    text = run("openssl", "x509", "-noout", "-text", "-in", path).stdout.decode()  # the first block
    assert "Alias: Fleet v1 0" in text and "Trusted Uses" in text
    assert Path(path).read_bytes().count(b"BEGIN TRUSTED CERTIFICATE") == 3


@pytest.mark.parametrize("text", ["7", "7x", "0d", "-1h", "", "100001d", "99999999d", "9" * 5000 + "w"])
def test_a_bad_expires_is_one_sentence(tmp_path, fleets, cas, text):
    fleet = new_fleet(fleets, tmp_path)
    before = sorted(p.name for p in fleet.repo.iterdir())
    out = fleet.publish(policy_v(tmp_path, cas, 2, "v1"), "--expires", text)
    assert out.returncode == 2 and "--expires takes a duration" in out.stderr and "Traceback" not in out.stderr
    assert sorted(p.name for p in fleet.repo.iterdir()) == before


@pytest.mark.parametrize("share", ["5", "-1", "1.5", "nan", "many"])
def test_a_max_removal_share_outside_0_to_1_is_refused(tmp_path, fleets, cas, share):
    """`--max-removal-share 5` switched the guard off (a policy dropping 9 of 10 roots was
    published); the store option and the config refuse such a value, and so does the flag."""
    fleet = new_fleet(fleets, tmp_path)
    assert fleet.publish(policy_v(tmp_path, cas, 10, "v1")).returncode == 0
    before = {p.name: p.read_bytes() for p in fleet.repo.iterdir() if p.is_file()}
    out = fleet.publish(policy_v(tmp_path, cas, 1, "v2"), "--max-removal-share", share)
    assert (out.returncode, out.stdout) == (2, ""), out
    assert out.stderr == f"storesync: --max-removal-share cannot be {share!r}; use a number from 0 to 1\n"
    assert {p.name: p.read_bytes() for p in fleet.repo.iterdir() if p.is_file()} == before


def test_the_publishing_guards_hold_back_an_emptied_or_truncated_policy(tmp_path, fleets, cas):
    fleet = new_fleet(fleets, tmp_path)
    assert fleet.publish(policy_v(tmp_path, cas, 10, "v1")).returncode == 0
    timestamp = (fleet.repo / "timestamp.json").read_bytes()

    out = fleet.publish(policy_v(tmp_path, cas, 5, "half"))
    assert out.returncode == 3 and "5 of 10" in out.stderr and "--force" in out.stderr, out
    empty = policy_file(tmp_path / "empty.pem")
    out = fleet.publish(empty)
    assert out.returncode == 3 and "is empty" in out.stderr
    assert (fleet.repo / "timestamp.json").read_bytes() == timestamp  # nothing published

    out = fleet.publish(policy_v(tmp_path, cas, 9, "v2"))  # one dropped: within 10%
    assert out.returncode == 0 and "published corp version 3" in out.stdout, out
    out = fleet.publish(empty, "--force")
    assert out.returncode == 0 and "! published with --force" in out.stdout


def test_publish_without_keys_or_repo_is_one_sentence(tmp_path, cas):
    out = storesync("publish", tmp_path / "nothing", NAME, f"pem:{policy_v(tmp_path, cas, 1, 'v1')}",
                    "--keys", tmp_path / "keys")
    assert out.returncode == 2 and "publish init" in out.stderr and "Traceback" not in out.stderr
    Fleet(tmp_path / "f")
    (tmp_path / "elsewhere").mkdir()  # a keys folder, but not this repository's
    out = storesync("publish", tmp_path / "f" / "repo", NAME, f"pem:{tmp_path / 'policy-v1.pem'}",
                    "--keys", tmp_path / "elsewhere")
    assert out.returncode == 2 and "of the 1 targets keys" in out.stderr and "Traceback" not in out.stderr


# --- the agent ----------------------------------------------------------------------------------


def test_an_agent_lists_the_published_roots_with_labels_and_distrust(tmp_path, fleets, cas):
    fleet = new_fleet(fleets, tmp_path)
    fleet.publish(policy_v(tmp_path, cas, 3, "v1", distrusted=1))
    fleet.serve()
    out = storesync("list", fleet.spec(), "--json")
    assert out.returncode == 0, out.stderr
    entries = {e["label"]: e["trust"]["server-auth"] for e in json.loads(out.stdout)["entries"]}
    assert entries == {"Fleet v1 0": "trusted", "Fleet v1 1": "distrusted", "Fleet v1 2": "trusted"}
    out = storesync("sync", fleet.spec(), f"pem:{tmp_path / 'agent.pem'}?format=trusted", "--json")
    assert json.loads(out.stdout)["plans"][0]["freshness"]["version"] == 2, out.stdout
    fresh = json.loads(run(sys.executable, "-c", "import sys,json; from storesync.stores.tuf import freshness; "
                           "print(json.dumps(freshness(sys.argv[1])))", fleet.spec()).stdout)
    assert fresh["version"] == 2 and fresh["stale"] is False and fresh["reason"] is None and fresh["verified_at"]


def test_an_unchanged_poll_is_one_request_and_a_new_timestamp_the_whole_refresh(tmp_path, fleets, cas):
    fleet = new_fleet(fleets, tmp_path)
    fleet.publish(policy_v(tmp_path, cas, 3, "v1"))
    server = fleet.serve(controlled=True)
    agent, target = tmp_path / "agent", tmp_path / "agent.pem"
    assert agent_sync(fleet.spec(), agent, target).returncode == 0
    server.paths.clear()
    out = agent_sync(fleet.spec(), agent, target)
    assert out.returncode == 0 and "stale" not in out.stdout + out.stderr, out
    assert server.paths == ["/timestamp.json"]  # the timestamp verified last time: nothing else to ask
    fleet.publish(policy_v(tmp_path, cas, 4, "v2"))
    server.paths.clear()
    assert agent_sync(fleet.spec(), agent, target).returncode == 0
    assert server.paths[:2] == ["/timestamp.json", "/2.root.json"]  # changed: TUF's refresh, root first
    assert shas(target) == {sha_of(ca) for ca in cas[:4]}


def test_with_no_good_copy_ever_the_run_is_an_error_that_writes_nothing(tmp_path, fleets, cas):
    fleet = new_fleet(fleets, tmp_path)
    fleet.publish(policy_v(tmp_path, cas, 3, "v1"))
    fleet.serve()
    spec = fleet.spec()
    fleet.stop()
    target = tmp_path / "agent.pem"
    out = agent_sync(spec, tmp_path / "agent", target)
    assert out.returncode == 2 and "no verified policy was ever read" in out.stderr and "Traceback" not in out.stderr
    assert "last verified policy" not in out.stdout, out.stdout  # there is none: no "version None ... is used"
    assert not target.exists()
    fresh = json.loads(next((tmp_path / "agent" / "tuf").iterdir()).joinpath("freshness.json").read_text())
    assert fresh["stale"] is True and fresh["version"] is None and "unreachable" in fresh["reason"]


@pytest.mark.parametrize("query,said", [
    ("", "needs root=FILE"),
    ("?root={tmp}/missing.json", "cannot read its root= file"),
    ("?root={tmp}/garbage.json", "is not valid TUF root metadata"),
    ("?root={tmp}/root.json&timeout=soon", "timeout= cannot be 'soon'; use a number of seconds above 0"),
])
def test_a_bad_agent_spec_is_one_sentence(tmp_path, fleets, cas, query, said):
    fleet = new_fleet(fleets, tmp_path)
    fleet.publish(policy_v(tmp_path, cas, 2, "v1"))
    fleet.serve()
    (tmp_path / "garbage.json").write_text("{not json")
    target = tmp_path / "agent.pem"
    out = agent_sync(f"tuf:{fleet.server.url}/{NAME}" + query.format(tmp=tmp_path), tmp_path / "agent", target)
    assert out.returncode == 2 and said in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and not target.exists()


def test_a_tuf_store_is_read_only(tmp_path, fleets, cas):
    fleet = new_fleet(fleets, tmp_path)
    fleet.publish(policy_v(tmp_path, cas, 2, "v1"))
    fleet.serve()
    out = storesync("sync", f"pem:{policy_v(tmp_path, cas, 3, 'v2')}?format=trusted", fleet.spec())
    assert out.returncode == 2 and "read-only" in out.stderr and "Traceback" not in out.stderr


def test_listing_a_pem_bundle_does_not_import_tuf(tmp_path, pki):
    bundle = tmp_path / "b.pem"
    bundle.write_bytes(pki.ca("Lean").pem)
    code = ("import sys; sys.argv = ['storesync', 'list', sys.argv[1]]\n"
            "from storesync.cli import main\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tuf', 'securesystemslib', 'urllib3')))")
    out = run(sys.executable, "-c", code, f"pem:{bundle}")
    assert out.stdout.decode().strip().splitlines()[-1] == "[]"


# --- attacks: every agent keeps its last good policy, says why, removes nothing ----------------------

AGENTS = 2


def agents_on_v1(fleet: Fleet, tmp_path: Path, cas, spec: str | None = None) -> list[tuple[Path, Path]]:
    """Agents (state dir, target) that applied policy v1."""
    fleet.publish(policy_v(tmp_path, cas, 4, "v1"), "--expires", "1h")
    out = []
    for n in range(AGENTS):
        agent, target = tmp_path / f"agent{n}", tmp_path / f"target{n}.pem"
        done = agent_sync(spec or fleet.spec(), agent, target)
        assert done.returncode == 0, done.stderr
        out.append((agent, target))
    return out


def assert_kept(fleet, agents, spec: str, cas, reason: str) -> None:
    v1 = {sha_of(ca) for ca in cas[:4]}
    for agent, target in agents:
        out = agent_sync(spec, agent, target)
        assert out.returncode == 0, out.stderr
        assert "! stale:" in out.stdout and reason in out.stdout, out.stdout
        assert "nothing removed" in out.stdout
        assert shas(target) == v1
        fresh = json.loads((next((agent / "tuf").iterdir()) / "freshness.json").read_text())
        assert fresh["stale"] is True and reason in fresh["reason"] and fresh["version"] == 2


def test_freeze_an_expired_timestamp_keeps_the_last_good_policy(tmp_path, fleets, cas):
    fleet = new_fleet(fleets, tmp_path)
    fleet.serve()
    agents = agents_on_v1(fleet, tmp_path, cas)
    storesync("publish", "refresh", fleet.repo, "--expires", "2s")  # then the publisher stops refreshing
    time.sleep(2.5)
    assert_kept(fleet, agents, fleet.spec(), cas, "expired")


def test_rollback_an_older_timestamp_or_snapshot_served_again_is_refused(tmp_path, fleets, cas):
    fleet = new_fleet(fleets, tmp_path)
    fleet.serve()
    old_timestamp = (fleet.repo / "timestamp.json").read_bytes()  # before v1: version 1
    old_snapshot = (fleet.repo / "1.snapshot.json").read_bytes()
    agents = agents_on_v1(fleet, tmp_path, cas)
    fleet.publish(policy_v(tmp_path, cas, 5, "v2"))  # what the attacker hides
    good = (fleet.repo / "timestamp.json").read_bytes()
    (fleet.repo / "timestamp.json").write_bytes(old_timestamp)
    assert_kept(fleet, agents, fleet.spec(), cas, "rollback")
    (fleet.repo / "timestamp.json").write_bytes(good)
    assert storesync("publish", "refresh", fleet.repo).returncode == 0  # a new timestamp naming a new snapshot...
    snapshot = json.loads((fleet.repo / "timestamp.json").read_text())["signed"]["meta"]["snapshot.json"]["version"]
    (fleet.repo / f"{snapshot}.snapshot.json").write_bytes(old_snapshot)  # ...whose bytes are an old one
    assert_kept(fleet, agents, fleet.spec(), cas, "older metadata")


def test_tamper_changed_target_bytes_are_refused(tmp_path, fleets, cas):
    fleet = new_fleet(fleets, tmp_path)
    fleet.serve()
    agents = agents_on_v1(fleet, tmp_path, cas)
    fleet.publish(policy_v(tmp_path, cas, 5, "v2"))
    info = json.loads((fleet.repo / "3.targets.json").read_text())["signed"]["targets"][NAME]
    served = fleet.repo / "targets" / f"{info['hashes']['sha256']}.{NAME}"
    served.write_bytes(served.read_bytes().replace(b"MII", b"MIJ", 1))
    assert_kept(fleet, agents, fleet.spec(), cas, "tampered")


def test_metadata_signed_by_a_key_not_in_root_is_refused(tmp_path, fleets, cas):
    from securesystemslib.signer import CryptoSigner
    from tuf.api.metadata import Metadata

    fleet = new_fleet(fleets, tmp_path)
    fleet.serve()
    agents = agents_on_v1(fleet, tmp_path, cas)
    forged = Metadata.from_file(str(fleet.repo / "timestamp.json"))
    forged.signed.version += 1
    forged.sign(CryptoSigner.generate_ed25519())  # replaces the signature: a stranger's key
    forged.to_file(str(fleet.repo / "timestamp.json"))
    assert_kept(fleet, agents, fleet.spec(), cas, "not signed by the keys its root names")


def test_a_server_answering_500_or_hanging_keeps_the_last_good_policy(tmp_path, fleets, cas):
    fleet = new_fleet(fleets, tmp_path)
    server = fleet.serve(controlled=True)
    spec = fleet.spec(timeout=1)
    agents = agents_on_v1(fleet, tmp_path, cas, spec)
    server.mode = "500"
    assert_kept(fleet, agents, spec, cas, "HTTP 500")
    server.mode = "hang"
    started = time.monotonic()
    assert_kept(fleet, agents, spec, cas, "did not answer within 1 s")
    assert time.monotonic() - started < 30  # urllib3 retries, each bounded by timeout=


def test_an_empty_policy_validly_signed_empties_nothing(tmp_path, fleets, cas):
    fleet = new_fleet(fleets, tmp_path)
    fleet.serve()
    agents = agents_on_v1(fleet, tmp_path, cas)
    assert fleet.publish(policy_file(tmp_path / "empty.pem"), "--force").returncode == 0
    for agent, target in agents:
        out = agent_sync(fleet.spec(), agent, target)
        assert out.returncode == 2 and "is empty" in out.stderr
        assert shas(target) == {sha_of(ca) for ca in cas[:4]}
    fleet.publish(policy_v(tmp_path, cas, 1, "one"), "--force")  # 3 of 4 dropped: the agent's guard holds
    for agent, target in agents:
        out = agent_sync(fleet.spec(), agent, target)
        assert out.returncode == 3 and "held back" in out.stdout
        assert shas(target) == {sha_of(ca) for ca in cas[:4]}


# --- rotation -------------------------------------------------------------------------------------


def test_agents_follow_a_root_rotation_signed_by_the_old_root_and_refuse_one_that_is_not(tmp_path, fleets, cas):
    from securesystemslib.signer import CryptoSigner
    from tuf.api.metadata import Metadata

    fleet = new_fleet(fleets, tmp_path)
    fleet.serve()
    agents = agents_on_v1(fleet, tmp_path, cas)
    for role in ("root", "timestamp", "targets", "snapshot"):
        out = storesync("publish", "rotate", fleet.repo, "--role", role)
        assert out.returncode == 0, out.stderr
    assert (fleet.repo / "5.root.json").exists()
    assert len(list((fleet.keys / "retired").iterdir())) == 4 and len(list(fleet.keys.glob("*.pem"))) == 4
    fleet.publish(policy_v(tmp_path, cas, 5, "v2"))
    for agent, target in agents:
        out = agent_sync(fleet.spec(), agent, target)
        assert out.returncode == 0 and "stale" not in out.stdout + out.stderr, out
        assert shas(target) == {sha_of(ca) for ca in cas[:5]}
        cached = json.loads((next((agent / "tuf").iterdir()) / "metadata" / "root.json").read_text())
        assert cached["signed"]["version"] == 5

    # root 6 that only its own new key signs: not the old root's word. The publisher signs nothing
    # over it; agents that see it (a new timestamp, published before the forgery) refuse it.
    assert storesync("publish", "refresh", fleet.repo).returncode == 0
    forged = Metadata.from_file(str(fleet.repo / "5.root.json"))
    stranger = CryptoSigner.generate_ed25519()
    for keyid in list(forged.signed.roles["root"].keyids):
        forged.signed.revoke_key(keyid, "root")
    forged.signed.add_key(stranger.public_key, "root")
    forged.signed.version = 6
    forged.signatures.clear()
    forged.sign(stranger)
    forged.to_file(str(fleet.repo / "6.root.json"))
    refused = storesync("publish", "refresh", fleet.repo)
    assert refused.returncode == 2 and "does not verify" in refused.stderr, refused.stderr
    v2 = {sha_of(ca) for ca in cas[:5]}
    for agent, target in agents:
        out = agent_sync(fleet.spec(), agent, target)
        assert out.returncode == 0 and "! stale:" in out.stdout and "root" in out.stdout, out.stdout
        assert shas(target) == v2


# --- the daemon: converge, and say when stale -----------------------------------------------------


def converge(tmp_path: Path, fleets, daemons, cas, count: int, poll: float) -> None:
    fleet = new_fleet(fleets, tmp_path)
    fleet.publish(policy_v(tmp_path, cas, 4, "v1"))
    fleet.serve()
    agents = []
    for n in range(count):
        target = tmp_path / f"node{n}.pem"
        config = tmp_path / f"node{n}.toml"
        config.write_text(f'[profile.fleet]\nmode = "mirror"\nsource = {json.dumps(fleet.spec())}\n'
                          f'targets = [{json.dumps(f"pem:{target}?format=trusted")}]\npoll = {poll}\n')
        daemon = Daemon(tmp_path, config, "--state-dir", str(tmp_path / f"node{n}-state"))
        daemons.append(daemon)
        agents.append((daemon, target))
    v1, v2 = {sha_of(ca) for ca in cas[:4]}, {sha_of(ca) for ca in cas[:5]}
    for daemon, target in agents:
        daemon.wait_event("written", timeout=60)
        assert shas(target) == v1
    assert fleet.publish(policy_v(tmp_path, cas, 5, "v2")).returncode == 0
    published = time.monotonic()
    seen = [len(daemon.lines()) for daemon, _ in agents]
    until(lambda: all(target.exists() and shas(target) == v2 for _, target in agents), timeout=poll * 1.1 + 60,
          what="every agent to apply policy v2")
    took = time.monotonic() - published
    print(f"{count} agents applied v2 {took:.1f} s after it was published (poll {poll} s)")
    for (daemon, _), start in zip(agents, seen):  # the first poll that started after publishing applies it
        after = [e["event"] for e in daemon.lines()[start:]]
        if "written" in after:  # else it was written while `publish` was still exiting
            before = after[:after.index("written")]
            assert not ("reconcile" in before and "no-op" in before[before.index("reconcile"):]), after
    assert took < poll * 1.1 + 10  # one poll with its jitter, plus reconciles on a loaded machine

    fleet.stop()  # the server goes away: each agent says so once, keeps v2
    for daemon, target in agents:
        until(lambda: any("stale" in e.get("msg", "") for e in daemon.events("store-warning")),
              timeout=poll * 1.1 + 30, what="the stale warning")
        assert shas(target) == v2
    for daemon, _ in agents:
        assert daemon.stop() == 0


def test_three_agents_converge_within_one_poll_and_say_when_stale(tmp_path, fleets, daemons, cas):
    converge(tmp_path, fleets, daemons, cas, count=3, poll=3)


@pytest.mark.slow
def test_twenty_agents_converge_within_one_poll(tmp_path, fleets, daemons, cas):
    converge(tmp_path, fleets, daemons, cas, count=20, poll=5)


def test_status_says_a_tuf_source_is_stale(tmp_path, fleets, cas):
    fleet = new_fleet(fleets, tmp_path)
    fleet.publish(policy_v(tmp_path, cas, 3, "v1"))
    fleet.serve()
    state = tmp_path / "state"
    assert agent_sync(fleet.spec(), state, tmp_path / "t.pem").returncode == 0
    config = tmp_path / "s.toml"
    target = json.dumps(f"pem:{tmp_path / 't.pem'}?format=trusted")
    config.write_text(f'[profile.fleet]\nsource = {json.dumps(fleet.spec())}\ntargets = [{target}]\n')
    env = {**os.environ, "STORESYNC_STATE_DIR": str(state)}
    out = storesync("status", "--config", config, env=env)
    assert "policy version 2, verified" in out.stdout and "STALE" not in out.stdout, out.stdout + out.stderr
    fleet.stop()
    assert agent_sync(fleet.spec(), state, tmp_path / "t.pem").returncode == 0
    out = storesync("status", "--config", config, env=env)
    assert "! STALE: the server is unreachable" in out.stdout, out.stdout + out.stderr


# --- a new administrator's mistakes (review of issue 17) -----------------------------------------


def test_init_refuses_a_keys_folder_inside_the_served_repository(tmp_path):
    repo = tmp_path / "repo"
    for keys in (repo / "keys", repo):
        out = storesync("publish", "init", repo, "--keys", keys)
        assert out.returncode == 2 and "served" in out.stderr and "Traceback" not in out.stderr, out
        assert len(out.stderr.strip().splitlines()) == 1
        assert not repo.exists() or not list(repo.rglob("*.pem")), "a private key in what is served"


@pytest.mark.parametrize("words", [["refresh", "{repo}"], ["rotate", "{repo}", "--role", "root"],
                                   ["{repo}", NAME, "pem:{policy}"]])
def test_a_typo_in_the_repository_path_says_it_is_not_a_repository(tmp_path, cas, words):
    fleet = Fleet(tmp_path / "f")  # init remembered the keys of the real repository only
    policy = policy_v(tmp_path, cas, 1, "v1")
    typo = tmp_path / "f" / "rep"
    out = storesync("publish", *[w.format(repo=typo, policy=policy) for w in words])
    assert out.returncode == 2 and "Traceback" not in out.stderr, out
    assert f"repository {typo}: no N.root.json in it" in out.stderr and "--keys" not in out.stderr, out.stderr
    assert not typo.exists() and fleet.repo.exists()


def test_a_url_without_a_policy_name_says_so(tmp_path, fleets, cas):
    fleet = new_fleet(fleets, tmp_path)
    fleet.publish(policy_v(tmp_path, cas, 2, "v1"))
    fleet.serve()
    for url in (fleet.server.url, fleet.server.url + "/"):
        started = time.monotonic()
        out = agent_sync(f"tuf:{url}?root={fleet.root}&timeout=3", tmp_path / "agent", tmp_path / "agent.pem")
        assert out.returncode == 2 and "names no target" in out.stderr and "Traceback" not in out.stderr, out.stderr
        assert time.monotonic() - started < 3


def test_a_root_file_of_another_role_is_not_called_an_unreachable_server(tmp_path, fleets, cas):
    fleet = new_fleet(fleets, tmp_path)
    fleet.publish(policy_v(tmp_path, cas, 2, "v1"))
    fleet.serve()
    out = agent_sync(f"tuf:{fleet.server.url}/{NAME}?root={fleet.repo / '1.targets.json'}", tmp_path / "agent",
                     tmp_path / "agent.pem")
    assert out.returncode == 2 and "is not valid TUF root metadata" in out.stderr, out.stderr
    assert "unreachable" not in out.stderr and "Traceback" not in out.stderr, out.stderr


def test_a_wrong_root_file_given_first_is_not_kept_once_corrected(tmp_path, fleets, cas):
    fleet = new_fleet(fleets, tmp_path)
    fleet.publish(policy_v(tmp_path, cas, 2, "v1"))
    fleet.serve()
    other = Fleet(tmp_path / "other")  # the root of another repository: a copy of the wrong file
    agent, target = tmp_path / "agent", tmp_path / "agent.pem"
    out = agent_sync(f"tuf:{fleet.server.url}/{NAME}?root={other.root}", agent, target)
    assert out.returncode == 2 and "not signed by the keys" in out.stderr and not target.exists(), out.stderr
    out = agent_sync(fleet.spec(), agent, target)  # the administrator corrects root=
    assert out.returncode == 0, out.stderr
    assert len(shas(target)) == 2


def test_status_says_why_a_tuf_source_was_never_verified(tmp_path, fleets, cas):
    fleet = new_fleet(fleets, tmp_path)
    fleet.publish(policy_v(tmp_path, cas, 3, "v1"))
    fleet.serve()
    spec = fleet.spec()
    fleet.stop()
    state = tmp_path / "state"
    assert agent_sync(spec, state, tmp_path / "t.pem").returncode == 2
    config = tmp_path / "s.toml"
    target = json.dumps(f"pem:{tmp_path / 't.pem'}?format=trusted")
    config.write_text(f'[profile.fleet]\nsource = {json.dumps(spec)}\ntargets = [{target}]\n')
    out = storesync("status", "--config", config, env={**os.environ, "STORESYNC_STATE_DIR": str(state)})
    assert "no verified policy in the state dir); the last try: the server is unreachable" in out.stdout, out.stdout


def test_the_daemon_log_says_when_a_stale_source_is_verified_again(tmp_path, fleets, daemons, cas):
    fleet = new_fleet(fleets, tmp_path)
    fleet.publish(policy_v(tmp_path, cas, 3, "v1"))
    server = fleet.serve(controlled=True)
    target = tmp_path / "node.pem"
    config = tmp_path / "node.toml"
    config.write_text(f'[profile.fleet]\nsource = {json.dumps(fleet.spec(timeout=1))}\n'
                      f'targets = [{json.dumps(f"pem:{target}?format=trusted")}]\npoll = 1\n')
    daemon = Daemon(tmp_path, config, "--state-dir", str(tmp_path / "node-state"))
    daemons.append(daemon)
    daemon.wait_event("written", timeout=60)
    server.mode = "500"
    until(lambda: any("stale" in e.get("msg", "") for e in daemon.events("store-warning")), timeout=30,
          what="the stale warning")
    server.mode = "ok"
    until(lambda: daemon.events("verified"), timeout=30, what="the line that says the source is fresh again")
    (said,) = daemon.events("verified")
    assert "verified again" in said["msg"] and "version 2" in said["msg"], said
    assert daemon.stop() == 0


def test_refresh_warns_when_the_root_metadata_is_about_to_expire(tmp_path):
    fleet = Fleet(tmp_path)
    out = storesync("publish", "refresh", fleet.repo)
    assert out.returncode == 0 and "root" not in out.stderr, out
    import datetime as dt

    from tuf.api.metadata import Metadata

    from storesync.publish import _signers

    root = Metadata.from_file(str(fleet.repo / "1.root.json"))  # as if 355 days had passed
    root.signed.expires = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) + dt.timedelta(days=10)
    root.signatures.clear()
    for signer in _signers(fleet.keys, root.signed, "root"):
        root.sign(signer, append=True)
    root.to_file(str(fleet.repo / "1.root.json"))
    out = storesync("publish", "refresh", fleet.repo)
    assert out.returncode == 0, out.stderr
    assert "root metadata expires" in out.stderr and "publish rotate" in out.stderr and "--role root" in out.stderr


@pytest.mark.parametrize("url", ["htp://127.0.0.1:9/repo/corp", "/srv/trust-repo/corp", "ftp://127.0.0.1:9/corp"])
def test_a_url_that_is_not_http_says_what_to_write(tmp_path, url):
    out = agent_sync(f"tuf:{url}?root={tmp_path / 'root.json'}", tmp_path / "agent", tmp_path / "agent.pem")
    assert out.returncode == 2 and "Traceback" not in out.stderr, out
    assert "must begin with https:// or http://" in out.stderr and "download failed" not in out.stderr, out.stderr


def test_the_repository_folders_are_readable_by_the_web_server_whatever_the_umask(tmp_path, cas):
    policy = policy_v(tmp_path, cas, 2, "v1")
    old = os.umask(0o077)  # a hardened root shell: what it makes is its own
    try:
        fleet = Fleet(tmp_path)
        assert fleet.publish(policy).returncode == 0
    finally:
        os.umask(old)
    for path in [fleet.repo, *fleet.repo.rglob("*")]:  # served by nginx or Apache as another user
        want = 0o755 if path.is_dir() else 0o644
        assert stat.S_IMODE(path.stat().st_mode) == want, path
    assert stat.S_IMODE(fleet.keys.stat().st_mode) == 0o700


@pytest.mark.parametrize("action", ["publish", "refresh", "rotate"])
def test_a_missing_keys_folder_is_said_as_missing(tmp_path, cas, action):
    fleet = Fleet(tmp_path)
    gone = tmp_path / "usb-stick" / "keys"
    words = {"publish": [fleet.repo, NAME, f"pem:{policy_v(tmp_path, cas, 1, 'v1')}?format=trusted"],
             "refresh": ["refresh", fleet.repo], "rotate": ["rotate", fleet.repo, "--role", "timestamp"]}[action]
    before = sorted(p.name for p in fleet.repo.iterdir())
    out = storesync("publish", *words, "--keys", gone)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out
    assert f"keys {gone}: no such folder" in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert sorted(p.name for p in fleet.repo.iterdir()) == before and not gone.exists()


def test_publishing_into_a_closed_pipe_does_not_say_nothing_was_published(tmp_path, cas):
    fleet = Fleet(tmp_path)
    many = policy_v(tmp_path, cas, 12, "v1")  # `true` exits at once: the report meets a closed pipe
    out = subprocess.run(f'"{sys.executable}" -m storesync publish "{fleet.repo}" {NAME} '
                         f'"pem:{many}?format=trusted" | true', shell=True, capture_output=True, text=True)
    assert (fleet.repo / "2.targets.json").exists()  # it was published
    assert "nothing was published" not in out.stderr and "Traceback" not in out.stderr, out.stderr


def test_refresh_and_publish_sign_nothing_over_metadata_they_did_not_sign(tmp_path, cas):
    """Review: whoever could write the served folder (no keys) changed N.targets.json to name
    another policy and stripped its signatures; the next `publish refresh` signed snapshot and
    timestamp over it, and every agent trusted the attacker's root."""
    fleet = Fleet(tmp_path)
    assert fleet.publish(policy_v(tmp_path, cas, 3, "v1")).returncode == 0
    newest = max(fleet.repo.glob("*.targets.json"), key=lambda p: int(p.name.split(".")[0]))
    evil = trusted_pem(cas[9], "Evil")
    digest = hashlib.sha256(evil).hexdigest()
    (fleet.repo / "targets" / f"{digest}.{NAME}").write_bytes(evil)
    targets = json.loads(newest.read_text())
    targets["signed"]["targets"][NAME] = {"length": len(evil), "hashes": {"sha256": digest}}
    targets["signatures"] = []
    newest.write_text(json.dumps(targets))
    timestamp = (fleet.repo / "timestamp.json").read_bytes()
    for argv in (["publish", "refresh", fleet.repo], ["publish", fleet.repo, NAME, f"pem:{policy_v(tmp_path, cas, 4, 'v2')}?format=trusted"]):
        out = storesync(*argv)
        assert out.returncode == 2 and "does not verify" in out.stderr and out.stderr.count("\n") == 1, out.stderr
    assert (fleet.repo / "timestamp.json").read_bytes() == timestamp  # nothing signed


def test_publish_reads_no_policy_file_its_signed_metadata_does_not_name(tmp_path, cas):
    """Review: `publish` parsed the published policy's file without checking it against the
    signed hash: the plan and the removal guard were judged against bytes nobody signed."""
    fleet = Fleet(tmp_path)
    assert fleet.publish(policy_v(tmp_path, cas, 5, "v1")).returncode == 0
    (published,) = (fleet.repo / "targets").glob(f"*.{NAME}")
    published.write_bytes(trusted_pem(cas[9], "Swapped"))
    out = fleet.publish(policy_v(tmp_path, cas, 3, "v2"))
    assert out.returncode == 2 and "is not the one its signed metadata names" in out.stderr, out.stdout + out.stderr
