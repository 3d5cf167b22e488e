"""Scale (issue 18): the stat cache of hashed directories never hides a change, and a no-op sync
of a large store touches no file. Timing goals live in `scripts/bench scale`, not here."""

from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path

import pytest

from storesync import state, statcache
from storesync.stores import open_store
from storesync.stores.pem import PemStore

from conftest import storesync

_spec = importlib.util.spec_from_file_location("scale_bench", Path(__file__).parents[1] / "scripts/bench.d/scale.py")
scale_bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(scale_bench)  # its certificate generator, cached in /tmp by count


@pytest.fixture
def own_state(tmp_path, monkeypatch):
    """A state dir of the test's own (the cache lives there); files settle after `SETTLE` s."""
    monkeypatch.setattr(statcache, "RACY_NS", 50_000_000)  # 50 ms, not 2 s: the tests wait that long
    state.set_state_dir(tmp_path / "state")
    yield tmp_path / "state"
    state.set_state_dir(None)


SETTLE = 0.1


class Parses:
    """Counts the files the bundle codec parses (a read served by the cache parses none)."""

    def __init__(self, monkeypatch):
        self.count = 0
        original = PemStore.parse

        def parse(store, data):
            self.count += 1
            return original(store, data)

        monkeypatch.setattr(PemStore, "parse", parse)


def read(path: Path, kind: str = "dir"):
    store = open_store(f"{kind}:{path}")
    return store, store.read()


def uncached(path: Path, tmp_path: Path, kind: str = "dir"):
    """What the store holds, read with no cache at all: the truth a cached read must equal."""
    previous = state.state_dir()
    state.set_state_dir(tmp_path / f"no-cache-{time.monotonic_ns()}")
    try:
        return read(path, kind)
    finally:
        state.set_state_dir(previous)


def same_size_pair(pki) -> tuple[bytes, bytes]:
    """Two PEM certificates of exactly the same length (ECDSA signatures vary by a byte or two)."""
    seen: dict[int, bytes] = {}
    for n in range(100):
        pem = pki.ca(f"Same Size Root {n:02d}").pem
        if len(pem) in seen:
            return seen[len(pem)], pem
        seen[len(pem)] = pem
    raise AssertionError("no two certificates of one size")


def settled_directory(tmp_path, pems: dict[str, bytes]) -> Path:
    directory = tmp_path / "ca"
    directory.mkdir()
    for name, pem in pems.items():
        (directory / name).write_bytes(pem)
        os.utime(directory / name, ns=(1_700_000_000_000_000_000,) * 2)  # one mtime for all, as `cp -p` or tar leave
    time.sleep(SETTLE)  # older than the racy window: the next read may record them
    return directory


def test_an_unchanged_directory_is_not_parsed_again(pki, tmp_path, own_state, monkeypatch):
    directory = settled_directory(tmp_path, {f"r{n}.pem": pki.ca(f"Cached Root {n}").pem for n in range(5)})
    _, first = read(directory)
    parses = Parses(monkeypatch)
    store, second = read(directory)
    assert parses.count == 0
    assert second == first == uncached(directory, tmp_path)[1]
    assert store._files == uncached(directory, tmp_path)[0]._files


def test_trusted_files_come_back_from_the_cache_with_their_trust(pki, tmp_path, own_state, monkeypatch):
    directory = tmp_path / "ca"
    bundle = tmp_path / "b.pem"
    bundle.write_bytes(pki.ca("Trusted Cached Root").pem)
    source = open_store(f"pem:{bundle}").read()
    entry = next(iter(source.values()))
    distrusted = entry.replace(trust={"server-auth": "distrusted", "email": "trusted"}, label="mine")
    from storesync.engine.plan import make_plan

    target = open_store(f"dir:{directory}?format=trusted")
    from storesync.model import TrustSet

    target.write(make_plan(TrustSet([distrusted]), target.read(), target.capabilities, store="t"))
    time.sleep(SETTLE)
    read(directory)
    parses = Parses(monkeypatch)
    store, again = read(directory)
    assert parses.count == 0 and store.holds_trusted
    assert again == uncached(directory, tmp_path)[1]
    assert again[entry.sha256].trust == {"server-auth": "distrusted", "email": "trusted"}


def test_an_edit_in_place_keeping_size_and_mtime_is_seen(pki, tmp_path, own_state):
    """The file is rewritten in place with another certificate of the same size and its mtime
    put back (as a coarse clock or `touch -r` would leave it): its ctime still moved."""
    one, other = same_size_pair(pki)
    directory = settled_directory(tmp_path, {"a.pem": one})
    read(directory)
    path = directory / "a.pem"
    before = path.stat()
    time.sleep(SETTLE)
    with open(path, "r+b") as file:
        file.write(other)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_size == before.st_size and path.stat().st_mtime_ns == before.st_mtime_ns
    assert read(directory)[1] == uncached(directory, tmp_path)[1]


def test_an_edit_within_the_same_tick_as_the_read_is_seen(pki, tmp_path, own_state):
    """Racy git: a file written just before it was read is not recorded, since an edit in the
    same clock tick could leave every stamp as it was (modelled by putting mtime and ctime back
    is impossible, so the edit keeps size and mtime and follows at once)."""
    one, other = same_size_pair(pki)
    directory = tmp_path / "ca"
    directory.mkdir()
    path = directory / "a.pem"
    path.write_bytes(one)
    read(directory)  # at once: racy, not recorded
    before = path.stat()
    with open(path, "r+b") as file:
        file.write(other)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert read(directory)[1] == uncached(directory, tmp_path)[1]


def test_a_replaced_file_is_seen(pki, tmp_path, own_state):
    one, other = same_size_pair(pki)
    directory = settled_directory(tmp_path, {"a.pem": one})
    read(directory)
    before = (directory / "a.pem").stat()
    new = tmp_path / "new.pem"
    new.write_bytes(other)
    os.utime(new, ns=(before.st_atime_ns, before.st_mtime_ns))
    os.replace(new, directory / "a.pem")
    assert read(directory)[1] == uncached(directory, tmp_path)[1]


def test_files_swapped_by_rename_are_seen(pki, tmp_path, own_state):
    """Same certificates, other names: a removal must delete the file that holds the certificate."""
    one, other = same_size_pair(pki)
    directory = settled_directory(tmp_path, {"a.pem": one, "b.pem": other})
    read(directory)
    os.rename(directory / "a.pem", directory / "swap")
    os.rename(directory / "b.pem", directory / "a.pem")
    os.rename(directory / "swap", directory / "b.pem")
    store, _ = read(directory)
    assert store._files == uncached(directory, tmp_path)[0]._files


def test_a_chmod_reads_the_file_again(pki, tmp_path, own_state, monkeypatch):
    directory = settled_directory(tmp_path, {"a.pem": pki.ca("Chmod Root").pem, "b.pem": pki.ca("Other").pem})
    read(directory)
    time.sleep(SETTLE)
    os.chmod(directory / "a.pem", 0o600)
    parses = Parses(monkeypatch)
    read(directory)
    assert parses.count == 1


@pytest.mark.parametrize("damage", ["garbage", "truncated", "other version", "writable by others", "absent"])
def test_a_damaged_or_foreign_index_reads_everything(pki, tmp_path, own_state, monkeypatch, damage):
    directory = settled_directory(tmp_path, {f"r{n}.pem": pki.ca(f"Index Root {n}").pem for n in range(3)})
    truth = read(directory)[1]
    (index,) = (own_state / "statcache").iterdir()
    data = index.read_bytes()
    if damage == "garbage":
        index.write_bytes(os.urandom(len(data)))
    elif damage == "truncated":
        index.write_bytes(data[:-20])
    elif damage == "other version":
        index.write_bytes(data.replace(b"statcache 2", b"statcache 1", 1))
    elif damage == "writable by others":
        index.chmod(0o666)
    else:
        index.unlink()
    parses = Parses(monkeypatch)
    assert read(directory)[1] == truth
    assert parses.count == 3


def tree(path: Path) -> dict[str, tuple]:
    """Every name under `path` (the folder itself too) with what any write would change."""
    out = {}
    for place in [path, *sorted(path.rglob("*"))] if path.is_dir() else [path, path.parent]:
        st = os.lstat(place)
        out[str(place)] = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode)
    if path.is_file():
        out["listing"] = tuple(sorted(os.listdir(path.parent)))  # no temp file left beside it
    return out


def no_op_touches_nothing(kind: str, count: int, tmp_path: Path) -> None:
    ders = scale_bench.certificates(count)
    source = tmp_path / "source.pem"
    source.write_bytes(scale_bench.pem_bundle(ders))
    target = tmp_path / ("target" if kind in ("dir", "nss") else f"target.{kind}")
    if kind == "nss":
        from conftest import need, run

        target.mkdir()
        run(need("certutil"), "-N", "-d", f"sql:{target}", "--empty-password")
    first = storesync("sync", f"pem:{source}", f"{kind}:{target}")
    assert first.returncode == 0, first.stderr
    storesync("sync", f"pem:{source}", f"{kind}:{target}")  # the cache is made once the files are settled
    before = tree(target)
    again = storesync("sync", f"pem:{source}", f"{kind}:{target}")
    assert again.returncode == 0 and "in sync" in again.stdout, again.stdout + again.stderr
    assert tree(target) == before


KINDS = ["dir", "pem", "nss", "sst", "jks", "p12"]


@pytest.mark.parametrize("kind", KINDS)
def test_a_no_op_of_1000_certificates_touches_no_file(kind, tmp_path):
    no_op_touches_nothing(kind, 1_000, tmp_path)


@pytest.mark.parametrize("kind", ["dir", "pem"])
def test_a_no_op_of_10000_certificates_touches_no_file(kind, tmp_path):
    no_op_touches_nothing(kind, 10_000, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_a_no_op_of_100000_certificates_touches_no_file(kind, tmp_path):
    no_op_touches_nothing(kind, 100_000, tmp_path)


# --- the bundle cache: by a digest of the bytes, so no change can hide ------------------------


@pytest.fixture
def cached_bundles(own_state, monkeypatch):
    from storesync.stores import pem

    monkeypatch.setattr(pem, "CACHE_FROM", 0)  # every bundle, not only those of 64 KiB or more


def test_an_unchanged_bundle_is_not_parsed_again_and_keeps_its_trust(pki, tmp_path, cached_bundles, monkeypatch):
    from storesync.model import TrustSet
    from storesync.engine.plan import make_plan

    plain = [pki.ca(f"Bundle Root {n}") for n in range(3)]
    bundle = tmp_path / "b.pem"
    bundle.write_bytes(b"".join(c.pem for c in plain))
    entries = list(open_store(f"pem:{bundle}").read().values())
    trusted = tmp_path / "t.pem"
    store = open_store(f"pem:{trusted}?format=trusted")
    wanted = TrustSet([entries[0].replace(trust={"server-auth": "distrusted"}, label="gone"), *entries[1:]])
    store.write(make_plan(wanted, store.read(), store.capabilities, store="t"))
    parses = Parses(monkeypatch)
    for path in (bundle, trusted):
        first = open_store(f"pem:{path}").read()
        parsed = parses.count
        again = open_store(f"pem:{path}")
        assert again.read() == first and parses.count == parsed
        assert again.holds_trusted == (path == trusted)
    assert open_store(f"pem:{trusted}").read()[entries[0].sha256].distrusted


def test_the_system_bundle_is_not_parsed_again_and_its_cache_is_not_flushed(tmp_path, own_state, monkeypatch):
    """Issue 18: a sync's source is most often the system bundle (220 KB): its parse was 7 % of a
    one-shot sync's instructions, so from 64 KiB on a bundle's parse is cached. The cache is
    written without fsync (a crash may lose it: it is read again), the bundle read once more."""
    from conftest import SYSTEM_BUNDLE

    first = open_store(f"pem:{SYSTEM_BUNDLE}").read()
    parses, flushes = Parses(monkeypatch), []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: flushes.append(fd) or real_fsync(fd))
    assert open_store(f"pem:{SYSTEM_BUNDLE}").read() == first and parses.count == 0
    state.set_state_dir(tmp_path / "other-state")  # no cache there: parsed, and its cache saved
    assert open_store(f"pem:{SYSTEM_BUNDLE}").read() == first and parses.count == 1
    assert os.listdir(tmp_path / "other-state" / "statcache") and not flushes


def test_a_bundle_edited_keeping_size_and_mtime_is_seen(pki, tmp_path, cached_bundles):
    one, other = same_size_pair(pki)
    bundle = tmp_path / "b.pem"
    bundle.write_bytes(one)
    open_store(f"pem:{bundle}").read()
    before = bundle.stat()
    with open(bundle, "r+b") as file:
        file.write(other)
    os.utime(bundle, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert open_store(f"pem:{bundle}").read() == uncached(bundle, tmp_path, "pem")[1]


def test_what_a_bundle_read_warns_about_is_said_every_time(pki, tmp_path, cached_bundles):
    bundle = tmp_path / "b.pem"
    bundle.write_bytes(pki.ca("Warned Root").pem + b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n")
    for _ in range(2):
        store = open_store(f"pem:{bundle}")
        store.read()
        assert any("skipped a X509 CRL block" in w for w in store.warnings)


# --- no step quadratic in the number of certificates (counted, not timed) --------------------


class CountingSet(set):
    lookups = 0

    def __contains__(self, item):
        CountingSet.lookups += 1
        return super().__contains__(item)


def test_naming_many_certificates_of_one_label_looks_each_name_up_a_few_times(tmp_path):
    """p11-kit's naming gives the k-th certificate labelled alike `label.k.pem`; trying every
    earlier suffix again for each one would be k²/2 lookups (5 billion for 100 000)."""
    from storesync.model import Certificate, Entry

    ders = scale_bench.certificates(2000)
    store = open_store(f"dir:{tmp_path / 'ca'}")
    taken, names = CountingSet(), []
    CountingSet.lookups = 0
    for der_bytes in ders:
        name = store._new_name(Entry(Certificate(der_bytes), label="Corp CA"), taken)
        taken.add(name)
        names.append(name)
    assert names[:3] == ["Corp_CA.pem", "Corp_CA.1.pem", "Corp_CA.2.pem"] and len(set(names)) == 2000
    assert CountingSet.lookups < 3 * 2000


def test_a_directory_of_hash_named_copies_gets_files_of_their_own_in_one_pass(tmp_path, monkeypatch):
    """c_rehash copies (regular files named like links) each get a file of their own: which of
    them still need one is a set lookup, not a search through the list of files to write."""
    from storesync.engine.plan import make_plan
    from storesync.model import Certificate, Entry, TrustSet

    ders = scale_bench.certificates(300)
    directory = tmp_path / "ca"
    directory.mkdir()
    entries = [Entry(Certificate(d)) for d in ders]
    for entry in entries[:150]:  # the other half are added by the sync
        h = entry.cert.subject_hash()
        (directory / f"{h}.0").write_bytes(scale_bench.pem_bundle([entry.cert.der]))
    store = open_store(f"dir:{directory}")
    current = store.read()
    compared = 0
    original = Entry.__eq__

    def counted(self, other):
        nonlocal compared
        compared += 1
        return original(self, other)

    monkeypatch.setattr(Entry, "__eq__", counted)
    store.write(make_plan(TrustSet(entries), current, store.capabilities, store="t"))
    monkeypatch.undo()
    assert compared < 300
    assert open_store(f"dir:{directory}").read() == TrustSet(entries)
    assert len([p for p in directory.iterdir() if p.suffix == ".pem"]) == 300


def test_nss_nicknames_for_many_certificates_of_one_label_are_found_in_a_few_queries(tmp_path, monkeypatch):
    """NSS nicknames are unique per subject: the k-th "Corp CA" becomes "Corp CA #k". Asking
    the database for every earlier number again would be k²/2 queries."""
    from conftest import need, run
    from storesync.engine.plan import make_plan
    from storesync.model import Certificate, Entry, TrustSet
    from storesync.stores.nss import NssStore

    db = tmp_path / "nssdb"
    db.mkdir()
    run(need("certutil"), "-N", "-d", f"sql:{db}", "--empty-password")
    statements = []
    connect = NssStore._connect

    def traced(self, path, readonly):
        conn = connect(self, path, readonly)
        conn.set_trace_callback(statements.append)
        return conn

    monkeypatch.setattr(NssStore, "_connect", traced)
    entries = TrustSet(Entry(Certificate(d), label="Corp CA") for d in scale_bench.certificates(300))
    store = open_store(f"nss:{db}")
    store.write(make_plan(entries, store.read(), store.capabilities, store="t"))
    asked = [s for s in statements if "a3 = " in s]
    assert len(asked) < 3 * 300
    listed = run(need("certutil"), "-L", "-d", f"sql:{db}").stdout.decode()
    nicknames = {line.rsplit(None, 1)[0].strip() for line in listed.splitlines() if line.startswith("Corp CA")}
    assert len(nicknames) == 300 and "Corp CA #300" in nicknames


def test_a_one_shot_run_over_a_large_store_runs_no_full_garbage_collection(tmp_path):
    """Every object a one-shot sync makes lives to its end; with the default thresholds Python
    scans them all again and again (3 full collections at 10 000 certificates, 19 at 100 000:
    the work grows as n²-ish, 40 % of a 100 000-certificate read). Counted, not timed."""
    import subprocess
    import sys

    bundle = tmp_path / "b.pem"
    bundle.write_bytes(scale_bench.pem_bundle(scale_bench.certificates(10_000)))
    probe = (
        "import gc, sys\n"
        "full = []\n"
        "gc.callbacks.append(lambda phase, info: phase == 'start' and info['generation'] == 2 and full.append(1))\n"
        f"sys.argv = ['storesync', 'list', '--json', 'pem:{bundle}']\n"
        "from storesync.cli import main\n"
        "try:\n    main()\nfinally:\n    print(len(full), file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            env={**os.environ, "STORESYNC_STATE_DIR": str(tmp_path / "state")})
    assert result.stderr.strip().splitlines()[-1] == "0", result.stderr



def plan_calls(count: int, kind: str, tmp_path: Path) -> int:
    """Python function calls of a `sync --dry-run` from a new bundle of `count` + 1 certificates
    to a settled store of `count`, as `scripts/bench scale`'s plan step runs it (the source
    parsed afresh, the target as a no-op finds it), in a process of its own (no certificate
    judged or parsed by another test's run)."""
    import shutil
    import subprocess
    import sys

    ders = scale_bench.certificates(2001)[: count + 1]
    work = tmp_path / f"{kind}-{count}"
    work.mkdir()
    source, plus, fresh = work / "src.pem", work / "plus.pem", work / "fresh.pem"
    source.write_bytes(scale_bench.pem_bundle(ders[:count]))
    plus.write_bytes(scale_bench.pem_bundle(ders))
    target = f"{kind}:{work / ('t' if kind == 'dir' else f't.{kind}')}"
    env = {"STORESYNC_STATE_DIR": str(work / "state")}
    assert storesync("sync", f"pem:{source}", target, env=env).returncode == 0
    shutil.copyfile(plus, fresh)
    probe = (
        "import cProfile, contextlib, pstats, sys\n"
        "from storesync.cli.sync import run\n"
        "profile = cProfile.Profile()\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(None):\n"
        f"    profile.runcall(run, {f'pem:{fresh}'!r}, [{target!r}], dry_run=True)\n"
        "print(pstats.Stats(profile).total_calls, file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            env={**os.environ, **env})
    return int(result.stderr.strip().splitlines()[-1])


@pytest.mark.parametrize("kind", ["pem", "dir", "sst", "jks"])
def test_a_plan_does_the_same_work_per_certificate_at_any_size(kind, tmp_path):
    """The plan step (a new source, a settled target: the source parsed, the target read, the
    ownership record and the remembered checks loaded, the plan made) costs as many Python calls
    per certificate from 1 000 to 2 000 certificates as from 200 to 1 000: nothing in it grows
    faster than the store (a quadratic step would nearly double them). Counted, not timed: its
    19x per 10x at 100 000 (pem) was a cold first round beside warm ones at 10 000 (see
    `scripts/bench.d/scale.py`)."""
    calls = {n: plan_calls(n, kind, tmp_path) for n in (200, 1000, 2000)}
    first, second = (calls[1000] - calls[200]) / 800, (calls[2000] - calls[1000]) / 1000
    print(f"{kind}: {first:.0f} calls per certificate from 200 to 1 000, {second:.0f} from 1 000 to 2 000")
    assert second < first * 1.1, f"{second:.0f} calls per certificate from 1 000 to 2 000 against {first:.0f} before"


def test_keeping_a_backup_reads_no_other_backup_until_there_are_more_than_kept(own_state, monkeypatch):
    """Issue 18: each backup is a base64 copy of its store (97 KB for an empty NSS database as
    `certutil -N` makes it). Keeping one read every backup of the store back to find those beyond
    BACKUPS_KEPT, the one just written included: a store's first writes read none; the one
    after BACKUPS_KEPT reads them all and drops the oldest, as before."""
    spec, read = "pem:/nowhere/bounded.pem", []
    monkeypatch.setattr(state, "read_bytes", lambda path: read.append(path) or open(path, "rb").read())
    for n in range(state.BACKUPS_KEPT):
        state.save_records(spec, state.backup_file(spec, {"/nowhere/bounded.pem": b"x" * n}, f"write {n}")[1])
        time.sleep(0.001)  # ids are timestamps in microseconds
    assert read == []
    assert len(state.list_backups(spec)) == state.BACKUPS_KEPT
    read.clear()
    state.save_records(spec, state.backup_file(spec, {"/nowhere/bounded.pem": b"last"}, "write last")[1])
    assert len(read) == state.BACKUPS_KEPT + 1  # each read to find the oldest, which goes
    backups = state.list_backups(spec)
    assert len(backups) == state.BACKUPS_KEPT and backups[-1]["reason"] == "write 1"


def test_a_cached_bundle_compiles_no_pem_pattern(tmp_path):
    """Issue 18: the PEM block patterns cost 1.9 M instructions to compile, 0.5 % of a sync of the
    system roots: they are compiled when a bundle is parsed, not when the module is imported, so
    a run that the stat cache answers compiles neither. The certdata store, whose `letter_trust`
    the NSS store used, is not imported by a sync into NSS either (1.5 M)."""
    import subprocess
    import sys

    from conftest import SYSTEM_BUNDLE
    from test_nss import new_db

    db = new_db(tmp_path / "db")
    code = ("import re, sys\nfrom storesync.stores import pem\nfrom storesync.cli import main\n"
            "compiled, compile = [], re._compile\n"
            "def counted(pattern, flags):\n    compiled.append(pattern)\n    return compile(pattern, flags)\n"
            "re._compile = counted\nsys.argv = ['storesync', *sys.argv[1:]]\n"
            "try:\n    main()\nexcept SystemExit as exc:\n    assert not exc.code, exc.code\n"
            "print(sum(p in (pem._BLOCK, pem._BEGIN) for p in compiled), 'storesync.stores.certdata' in sys.modules)")
    env = {**os.environ, "STORESYNC_STATE_DIR": str(tmp_path / "state")}
    runs = [subprocess.run([sys.executable, "-c", code, "sync", f"pem:{SYSTEM_BUNDLE}", f"nss:{db}"],
                           capture_output=True, text=True, env=env) for _ in range(2)]
    assert [r.returncode for r in runs] == [0, 0], runs[0].stderr + runs[1].stderr
    assert [r.stdout.splitlines()[-1] for r in runs] == ["2 False", "0 False"]  # parsed once, then cached
