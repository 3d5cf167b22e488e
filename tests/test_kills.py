"""Interrupted and starved runs: rollback of a relatively named store, a full disk, temp files
left by killed runs, concurrent hash-link writers, and the SIGKILL campaign."""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from conftest import run
from storesync.model import Certificate
from storesync.stores import open_store


@pytest.fixture(autouse=True)
def state_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("STORESYNC_STATE_DIR", str(tmp_path / "state"))
    return tmp_path / "state"


def cli(*args, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """The real CLI, in `cwd` (the `storesync` helper of conftest runs in the test's own cwd)."""
    return subprocess.run([sys.executable, "-m", "storesync", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env)


def keys(spec: str) -> set[str]:
    return set(open_store(spec).read())


def tree(directory: Path) -> dict[str, bytes | str]:
    """Every entry of a directory: bytes for files, 'link:target' for symlinks."""
    return {p.name: f"link:{os.readlink(p)}" if p.is_symlink() else p.read_bytes()
            for p in sorted(directory.iterdir())}


# --- defect 5: rollback of a directory the sync named by a relative path -----------------------


def test_rollback_of_a_directory_synced_by_a_relative_path(pki, root, tmp_path):
    capath = tmp_path / "ca"
    source = tmp_path / "s.pem"
    source.write_bytes(root.pem)
    assert cli("sync", "pem:s.pem", "dir:ca", cwd=tmp_path).returncode == 0
    before = tree(capath)
    source.write_bytes(root.pem + pki.ca("Relative Root").pem)
    assert cli("sync", "pem:s.pem", "dir:ca", cwd=tmp_path).returncode == 0
    assert tree(capath) != before
    undone = cli("rollback", "dir:ca", cwd=tmp_path)
    assert undone.returncode == 0, undone.stderr
    assert tree(capath) == before
    # ... and the same store named absolutely, from elsewhere: the rollback of the rollback
    again = cli("rollback", f"dir:{capath}", cwd="/")
    assert again.returncode == 0, again.stderr
    assert len(keys(f"dir:{capath}")) == 2
    assert run("openssl", "verify", "-CApath", capath, "-partial_chain", source).returncode == 0


def test_rollback_takes_backups_written_with_relative_names(pki, root, tmp_path, state_dir):
    """Backups made before the fix name the files `ca/NAME`, relative to where the sync ran."""
    capath = tmp_path / "ca"
    source = tmp_path / "s.pem"
    source.write_bytes(root.pem)
    assert cli("sync", "pem:s.pem", "dir:ca", cwd=tmp_path).returncode == 0
    before = tree(capath)
    source.write_bytes(root.pem + pki.ca("Old Backup Root").pem)
    assert cli("sync", "pem:s.pem", "dir:ca", cwd=tmp_path).returncode == 0
    backup = sorted((state_dir / "backups").glob("*/*.json"))[-1]  # the newest
    meta = json.loads(backup.read_text())
    meta["files"] = {os.path.relpath(name, tmp_path): item for name, item in meta["files"].items()}
    assert all(name.startswith("ca/") for name in meta["files"])
    backup.write_text(json.dumps(meta))
    undone = cli("rollback", f"dir:{capath}", cwd="/")
    assert undone.returncode == 0, undone.stderr
    assert tree(capath) == before


def test_a_backup_naming_a_file_elsewhere_is_still_refused(root, tmp_path, state_dir):
    capath = tmp_path / "ca"
    source = tmp_path / "s.pem"
    source.write_bytes(root.pem)
    assert cli("sync", "pem:s.pem", "dir:ca", cwd=tmp_path).returncode == 0
    source.write_bytes(b"")
    assert cli("sync", "--force", "--allow-empty", "pem:s.pem", "dir:ca", cwd=tmp_path).returncode == 0
    backup = sorted((state_dir / "backups").glob("*/*.json"))[-1]  # the newest
    meta = json.loads(backup.read_text())
    meta["files"]["elsewhere/victim.pem"] = {"data": ""}
    meta["files"]["../victim.pem"] = {"data": ""}
    backup.write_text(json.dumps(meta))
    result = cli("rollback", "dir:ca", cwd=tmp_path)
    assert result.returncode == 2 and "outside the store" in result.stderr
    assert not (tmp_path / "elsewhere").exists() and not (tmp_path / "victim.pem").exists()


# --- defect 6: a full disk, under the state dir or under the stores ------------------------------


@contextmanager
def tmpfs(path: Path, size: str = "64k"):
    """A small file system of its own at `path` (needs root, as the test run has)."""
    if os.geteuid() != 0:
        pytest.fail("this test needs root to mount a small tmpfs")
    path.mkdir(parents=True, exist_ok=True)
    run("mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path)
    try:
        yield path
    finally:
        run("umount", "-l", path)


def fill(fs: Path, leave: int = 0) -> None:
    """Take all the room of `fs` but about `leave` bytes."""
    st = os.statvfs(fs)
    room = st.f_bavail * st.f_frsize - leave
    if room > 0:
        with open(fs / "filler", "ab") as f:
            try:
                f.write(b"\0" * room)
            except OSError:
                pass


def one_sentence(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if not line.startswith("storesync: warning:")]
    assert len(errors) == 1 and errors[0].startswith("storesync: "), result.stderr
    return errors[0]


@pytest.mark.parametrize("used", [False, True], ids=["fresh-state-dir", "used-state-dir"])
def test_a_full_state_dir_is_a_sentence_and_changes_nothing(pki, root, tmp_path, used):
    source = tmp_path / "s.pem"
    source.write_bytes(root.pem)
    pem, capath, jks = tmp_path / "out.pem", tmp_path / "ca", tmp_path / "out.jks"
    targets = [f"pem:{pem}", f"dir:{capath}", f"jks:{jks}"]
    with tmpfs(tmp_path / "fs") as fs:
        state = fs / "state"
        assert cli("sync", "--state-dir", state, f"pem:{source}", *targets).returncode == 0
        if not used:
            run("rm", "-rf", state)
        before = {p: tree(p) if p.is_dir() else p.read_bytes() for p in (pem, capath, jks)}
        fill(fs)
        source.write_bytes(root.pem + pki.ca("Full Disk Root").pem)
        line = one_sentence(cli("sync", "--state-dir", state, f"pem:{source}", *targets))
        assert "No space left" in line and str(state) in line
        assert {p: tree(p) if p.is_dir() else p.read_bytes() for p in (pem, capath, jks)} == before
        line = one_sentence(cli("rollback", "--state-dir", state, f"pem:{pem}"))
        assert str(state) in line or "no backups" in line
        config = tmp_path / "merge.toml"
        config.write_text(f'[profile.m]\nmode = "merge"\nstores = ["pem:{source}", "pem:{pem}"]\n')
        line = one_sentence(cli("sync", "--state-dir", state, "--config", config))
        assert "No space left" in line and str(state) in line
        assert pem.read_bytes() == before[pem]


# --- what "whole" means, per store ---------------------------------------------------------------

HASH_LINK = re.compile(r"^[0-9a-f]{8}\.[0-9]+$")
TEMP = re.compile(r"^\..+\.tmp$")


def hashed_dir_set(capath: Path, oracle: bool = False) -> set[str]:
    """The certificates of a hashed directory, after checking that each file is whole (one
    certificate) and each link valid (it reaches a file of a certificate with its hash)."""
    found = set()
    for path in capath.iterdir():
        if path.name.startswith("."):
            continue
        if HASH_LINK.match(path.name):
            assert path.is_symlink() and path.exists(), f"{path}: a dangling hash link"
            cert = Certificate(x509.load_pem_x509_certificate(path.read_bytes()).public_bytes(Encoding.DER))
            assert cert.subject_hash() == path.name.split(".")[0], f"{path}: links a certificate of another hash"
            if oracle:
                hashed = run("openssl", "x509", "-hash", "-noout", "-in", path).stdout.decode().strip()
                assert hashed == path.name.split(".")[0]
        else:
            data = path.read_bytes()
            assert data.count(b"-----BEGIN CERTIFICATE-----") == 1, f"{path}: not one whole certificate"
            found.add(hashlib.sha256(x509.load_pem_x509_certificate(data).public_bytes(Encoding.DER)).hexdigest())
            if oracle:
                run("openssl", "x509", "-noout", "-in", path)
    return found


def oracle_set(kind: str, path: Path) -> set[str] | int | None:
    """The certificates the program that owns the format finds, or how many where it names
    them without fingerprints (None: no cheap oracle; sst and reg would need Wine)."""
    if kind == "pem":
        out = run("openssl", "storeutl", "-noout", "-text", "-certs", path).stdout.decode() if path.exists() else ""
        return out.count("Certificate:\n")
    if kind in ("jks", "p12"):
        if not path.exists():
            return set()
        listing = run("keytool", "-list", "-rfc", "-keystore", path, "-storepass", "changeit",
                      "-storetype", "JKS" if kind == "jks" else "PKCS12").stdout
        return {hashlib.sha256(x509.load_pem_x509_certificate(b).public_bytes(Encoding.DER)).hexdigest()
                for b in re.findall(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", listing, re.S)}
    if kind == "nss":
        if not (path / "cert9.db").exists():
            return set()
        names = run("certutil", "-L", "-d", f"sql:{path}").stdout.decode().splitlines()[4:]
        return len([n for n in names if n.strip()])
    return None


def store_state(kind: str, path: Path, old: set[str], new: set[str], oracle: bool = False) -> str:
    """'old' or 'new' (a hashed directory may also be 'between', file by file); fails otherwise."""
    if kind == "dir":
        found = hashed_dir_set(path, oracle) if path.exists() else set()
        assert old & new <= found <= old | new, f"{path}: holds certificates of neither set"
        return "old" if found == old else "new" if found == new else "between"
    found = set(open_store(f"{kind}:{path}").read())
    assert found in (old, new), f"{kind}:{path} is neither old nor new"
    if oracle:
        seen = oracle_set(kind, path)
        if isinstance(seen, int):
            assert seen == len(found), f"{kind}:{path}: the oracle counts {seen}, storesync reads {len(found)}"
        elif seen is not None:
            assert seen == found, f"{kind}:{path}: the oracle reads another set"
    return "old" if found == old else "new"


def temps(*places: Path) -> list[Path]:
    """Temp files (ours are `.NAME.PID-N.tmp`) anywhere under `places`."""
    return [p for place in places if place.exists()
            for p in (place.rglob(".*") if place.is_dir() else place.parent.glob(".*")) if TEMP.match(p.name)]


FILE_KINDS = {"pem": "out.pem", "dir": "ca", "jks": "out.jks", "p12": "out.p12", "sst": "out.sst", "reg": "out.reg"}
CAMPAIGN_KINDS = {**FILE_KINDS, "nss": "nss"}


def make_sets(pki, old: int, new: int, shared: int):
    """Two bundles of CAs: `old` and `new` certificates, `shared` of them in both."""
    cas = [pki.ca(f"Campaign Root {i}") for i in range(old + new - shared)]
    first, second = cas[:old], cas[old - shared:]
    sha = lambda issued: hashlib.sha256(issued.der).hexdigest()  # noqa: E731
    return (b"".join(c.pem for c in first), {sha(c) for c in first},
            b"".join(c.pem for c in second), {sha(c) for c in second})


def snapshot_of(base: Path, kinds: list[str]) -> dict:
    return {kind: tree(base / CAMPAIGN_KINDS[kind]) if (base / CAMPAIGN_KINDS[kind]).is_dir()
            else (base / CAMPAIGN_KINDS[kind]).read_bytes() for kind in kinds}


def full_disk_sweep(pki, tmp_path, state_on_fs: bool, steps: int, kinds: list[str] = list(FILE_KINDS)) -> list[tuple[int, int, str]]:
    """Sync 6 stores on a tmpfs left with less and less room (from enough to none, in `steps`
    steps), the state dir on it or elsewhere; every outcome must be a sentence and whole stores."""
    old_pem, old, new_pem, new = make_sets(pki, 12, 24, 6)
    template, source = tmp_path / "template", tmp_path / "new.pem"
    template.mkdir()
    (tmp_path / "old.pem").write_bytes(old_pem)
    source.write_bytes(new_pem)
    specs = lambda base: [f"{kind}:{base / CAMPAIGN_KINDS[kind]}" for kind in kinds]  # noqa: E731
    if "nss" in kinds:
        (template / "nss").mkdir()
        run("certutil", "-N", "-d", f"sql:{template / 'nss'}", "--empty-password")
    assert cli("sync", "--state-dir", tmp_path / "scratch", f"pem:{tmp_path / 'old.pem'}", *specs(template)).returncode == 0
    need = None
    outcomes = []
    for step in range(steps + 1):
        with tmpfs(tmp_path / "fs", "1m") as fs:
            run("cp", "-a", *template.iterdir(), fs)
            state = fs / "state" if state_on_fs else tmp_path / f"state-{step}"
            before = snapshot_of(fs, kinds)
            free = os.statvfs(fs).f_bavail * os.statvfs(fs).f_frsize
            leave = None if need is None else need * (steps - step) // steps
            if leave is not None:
                fill(fs, leave)
            result = cli("sync", "--force", "--state-dir", state, f"pem:{source}", *specs(fs))
            if need is None:  # the first run has room: what it takes is the room the others get less of
                need = free - os.statvfs(fs).f_bavail * os.statvfs(fs).f_frsize
            if result.returncode == 0:
                for kind in kinds:
                    assert store_state(kind, fs / CAMPAIGN_KINDS[kind], old, new) == "new"
                line = ""
            else:
                line = one_sentence(result)
                assert "No space left" in line or "disk is full" in line  # the OS's words, or SQLite's
                if "failed too" not in line:
                    assert snapshot_of(fs, kinds) == before, line  # put back byte for byte
                    assert "every store was put back" in line or "was not changed" in line
                else:
                    assert "every store was put back" not in line
                for kind in kinds:  # old, new, or (a hashed directory) file by file
                    store_state(kind, fs / CAMPAIGN_KINDS[kind], old, new, oracle=step % 3 == 1)
            assert not temps(fs, state)
            outcomes.append((leave, result.returncode, line))
    assert outcomes[0][1] == 0 and outcomes[-1][1] == 2
    return outcomes


@pytest.mark.parametrize("state_on_fs", [True, False], ids=["state-dir-on-it", "state-dir-elsewhere"])
def test_a_file_system_filling_mid_write_leaves_every_store_old_or_whole(pki, tmp_path, state_on_fs):
    full_disk_sweep(pki, tmp_path, state_on_fs, steps=8)


def test_a_file_system_filling_mid_write_of_an_nss_database(pki, tmp_path):
    full_disk_sweep(pki, tmp_path, True, steps=6, kinds=["pem", "nss"])


@pytest.mark.slow
@pytest.mark.parametrize("state_on_fs", [True, False], ids=["state-dir-on-it", "state-dir-elsewhere"])
def test_a_file_system_filling_mid_write_page_by_page(pki, tmp_path, state_on_fs):
    outcomes = full_disk_sweep(pki, tmp_path, state_on_fs, steps=60)
    print(f"\nfull disk, state dir {'on it' if state_on_fs else 'elsewhere'}: {len(outcomes)} runs, "
          f"{sum(code == 2 for _, code, _ in outcomes)} refused with a sentence")


# --- defect 7: temp files of killed runs ---------------------------------------------------------


def dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_temp_files_of_dead_runs_are_removed_by_the_next_write(pki, root, tmp_path, state_dir):
    source, pem, capath = tmp_path / "s.pem", tmp_path / "out.pem", tmp_path / "ca"
    source.write_bytes(root.pem)
    assert cli("sync", f"pem:{source}", f"pem:{pem}", f"dir:{capath}").returncode == 0
    gone, alive = dead_pid(), os.getpid()  # this test's own process: a writer still at work
    backups = [d for d in (state_dir / "backups").iterdir()]
    left = [pem.parent / f".out.pem.{gone}-0.tmp", capath / f".Some_Root.pem.{gone}-3.tmp",
            *(d / f".20260101T000000000000Z.json.{gone}-0.tmp" for d in backups)]
    kept = [pem.parent / f".out.pem.{alive}-0.tmp", capath / f".Some_Root.pem.{alive}-0.tmp",
            pem.parent / f".other.pem.{gone}.tmp", pem.parent / "notes.12-1.tmp"]  # not our names: not ours
    for path in left + kept:
        path.write_bytes(b"half a cert")
    (capath / f".00000000.0.{gone}-0.tmp").symlink_to("nowhere")  # a hash link's temp
    left.append(capath / f".00000000.0.{gone}-0.tmp")
    source.write_bytes(root.pem + pki.ca("After The Kill").pem)
    assert cli("sync", f"pem:{source}", f"pem:{pem}", f"dir:{capath}").returncode == 0
    assert [p for p in left if os.path.lexists(p)] == []
    assert all(p.read_bytes() == b"half a cert" for p in kept)
    assert len(keys(f"dir:{capath}")) == 2 and len(keys(f"pem:{pem}")) == 2


# --- defect 8: hash links of two writers that share no state dir -------------------------------


def test_a_hash_link_is_replaced_without_touching_another_writers_temp(pki, tmp_path):
    first, second = pki.ca("Same Subject"), pki.ca("Same Subject")  # one subject: one hash
    h = Certificate(first.der).subject_hash()
    source, capath = tmp_path / "s.pem", tmp_path / "ca"
    source.write_bytes(first.pem)
    assert cli("sync", f"pem:{source}", f"dir:{capath}").returncode == 0
    theirs = capath / f".{h}.0.tmp"  # the name every writer used to take
    theirs.symlink_to("their-target.pem")
    source.write_bytes(second.pem)
    assert cli("sync", "--force", f"pem:{source}", f"dir:{capath}", env={**os.environ, "STORESYNC_STATE_DIR": str(tmp_path / "other")}).returncode == 0
    assert theirs.is_symlink() and os.readlink(theirs) == "their-target.pem"
    assert keys(f"dir:{capath}") == {hashlib.sha256(second.der).hexdigest()}
    assert run("openssl", "verify", "-CApath", capath, "-partial_chain", tmp_path / "s.pem").returncode == 0


def _hammer(directory: str, name: str, rounds: int, failures) -> None:
    from storesync.stores.directory import _symlink

    for i in range(rounds):
        try:
            _symlink(Path(directory), name, f"target-{os.getpid()}-{i}.pem")
        except OSError:
            failures.value += 1


def test_two_writers_replacing_one_hash_link_never_fail(tmp_path):
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    failures = ctx.Value("i", 0)
    (tmp_path / "abcdef01.0").symlink_to("start.pem")
    writers = [ctx.Process(target=_hammer, args=(str(tmp_path), "abcdef01.0", 3000, failures)) for _ in range(2)]
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    assert failures.value == 0
    assert (tmp_path / "abcdef01.0").is_symlink()
    assert [p.name for p in tmp_path.iterdir()] == ["abcdef01.0"]  # no temp left behind


# --- the SIGKILL campaign ------------------------------------------------------------------------



def links_complete(capath: Path) -> bool:
    """Every certificate file has its hash link, and each hash's links run 0..n-1 without a gap."""
    targets, numbers = set(), {}
    for path in capath.iterdir():
        if HASH_LINK.match(path.name) and path.is_symlink():
            targets.add(os.readlink(path))
            h, n = path.name.split(".")
            numbers.setdefault(h, []).append(int(n))
    files = {p.name for p in capath.iterdir() if not p.name.startswith(".") and not p.is_symlink()}
    return files <= targets and all(sorted(ns) == list(range(len(ns))) for ns in numbers.values())


def backups_readable(state: Path) -> None:
    for path in (state / "backups").glob("*/*.json"):
        meta = json.loads(path.read_text())  # a half-written backup would not parse
        assert isinstance(meta["files"], dict), path


def campaign(pki, tmp_path, kinds: list[str], kills: int, oracle_every: int, seed: int) -> dict:
    """Sync pem -> `kinds` back and forth between two sets, SIGKILLing runs at random points: a
    quarter at a random delay from the start, the others aimed into the writing phase (a random
    delay after the run took its profile lock, within the time the writing took on the runs
    before). After each kill every store must be old or new (a hashed directory: each file
    whole, each link valid), every backup whole, no lock held; the next run must converge and
    leave no temp file. Returns the figures."""
    from storesync import state as state_module

    rng = random.Random(seed)
    a_pem, a, b_pem, b = make_sets(pki, 8, 12, 4)
    stores, state = tmp_path / "stores", tmp_path / "state"
    stores.mkdir()
    (tmp_path / "a.pem").write_bytes(a_pem)
    (tmp_path / "b.pem").write_bytes(b_pem)
    if "nss" in kinds:
        (stores / "nss").mkdir()
        run("certutil", "-N", "-d", f"sql:{stores / 'nss'}", "--empty-password")
    targets = [f"{kind}:{stores / CAMPAIGN_KINDS[kind]}" for kind in kinds]
    env = {**os.environ, "STORESYNC_STATE_DIR": str(state)}
    sets = {"a": a, "b": b}
    timings = {"start": [], "write": []}  # start -> lock taken, lock -> exit, of whole runs

    def sync(name: str, kill_after=None) -> bool:
        """Run a sync to set `name`; `kill_after(locked: bool)` says when to SIGKILL it (None: let
        it finish). True if it was killed while still running."""
        source = f"pem:{tmp_path / f'{name}.pem'}"
        lock_file = state / "locks" / f"{state_module._key(f'profile cli {source}')}.lock"
        started = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "storesync", "sync", "--force", source, *targets], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        mine, locked = f"pid {proc.pid} ".encode(), None
        delay = kill_after(False) if kill_after else None
        while proc.poll() is None:  # watch for the lock: the writing phase begins
            now = time.monotonic()
            if locked is None:
                try:
                    if lock_file.read_bytes().startswith(mine):
                        locked = now
                        more = kill_after(True) if kill_after else None
                        if more is not None:
                            delay = now - started + more
                except FileNotFoundError:
                    pass
            if delay is not None and now - started >= delay:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate()
                return True
            time.sleep(0.0005)
        out, err = proc.communicate()
        assert b"Traceback" not in err and (kill_after or not err.strip()), err.decode()
        if locked is not None:
            timings["start"].append(locked - started)
            timings["write"].append(time.monotonic() - locked)
        return False

    def converge(name: str) -> None:
        assert not sync(name)
        for kind in kinds:
            store_state(kind, stores / CAMPAIGN_KINDS[kind], sets[name], sets[name])  # holds this set
        assert links_complete(stores / "ca") if "dir" in kinds else True

    for name in "aba":
        converge(name)
    current = "a"
    figures = {"kills": 0, "finished_first": 0, "aimed": 0, "oracle_checks": 0,  # corrupt or lost: asserted none
               "states": {kind: {"old": 0, "new": 0, "between": 0} for kind in kinds}}
    while figures["kills"] < kills:
        new = "b" if current == "a" else "a"
        aimed = rng.random() < 0.75
        write = sorted(timings["write"][-8:])[len(timings["write"][-8:]) // 2]  # the recent median
        start = sorted(timings["start"][-8:])[len(timings["start"][-8:]) // 2]

        def kill_after(locked: bool):
            if not aimed:
                return None if locked else rng.uniform(0, start + write)
            return rng.uniform(0, write) if locked else None

        if sync(new, kill_after):
            figures["kills"] += 1
            figures["aimed"] += aimed
        else:
            figures["finished_first"] += 1
        oracle = figures["kills"] % oracle_every == 0
        figures["oracle_checks"] += oracle
        for kind in kinds:
            found = store_state(kind, stores / CAMPAIGN_KINDS[kind], sets[current], sets[new], oracle=oracle)
            figures["states"][kind][found] += 1
        for path in sorted({stores / CAMPAIGN_KINDS[k] for k in kinds}):
            with state_module.lock(f"store {path.resolve()}", timeout=0):  # nobody holds it any more
                pass
        backups_readable(state)
        converge(new)
        left = temps(stores, state)
        assert not left, f"temp files left after the next run: {left}"
        current = new
    figures["median_write_s"] = round(write, 3)
    return figures


def test_sigkill_campaign_small_file_stores(pki, tmp_path):
    figures = campaign(pki, tmp_path, list(FILE_KINDS), kills=30, oracle_every=10, seed=12)
    print(f"\nSIGKILL campaign, file stores (default run): {figures}")


def test_sigkill_campaign_small_nss(pki, tmp_path):
    figures = campaign(pki, tmp_path, ["pem", "nss"], kills=20, oracle_every=5, seed=13)
    print(f"\nSIGKILL campaign, NSS (default run): {figures}")


@pytest.mark.slow
def test_sigkill_campaign_file_stores(pki, tmp_path):
    figures = campaign(pki, tmp_path, list(FILE_KINDS), kills=int(os.environ.get("STORESYNC_KILLS", 300)),
                       oracle_every=5, seed=int(os.environ.get("STORESYNC_KILL_SEED", 1212)))
    print(f"\nSIGKILL campaign, file stores: {figures}")


@pytest.mark.slow
def test_sigkill_campaign_all_seven_stores(pki, tmp_path):
    figures = campaign(pki, tmp_path, list(CAMPAIGN_KINDS), kills=int(os.environ.get("STORESYNC_KILLS", 300)),
                       oracle_every=5, seed=int(os.environ.get("STORESYNC_KILL_SEED", 1207)))
    print(f"\nSIGKILL campaign, all seven stores: {figures}")
