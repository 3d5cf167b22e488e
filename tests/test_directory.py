"""The `dir` store against `openssl verify -CApath`, `openssl x509 -subject_hash` and p11-kit."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

import pytest
from pathlib import Path

from storesync.model import Certificate
from storesync.stores import open_store

from conftest import need, run, storesync


def verify(capath: Path, leaf: Path, untrusted: Path | None = None) -> bool:
    args = [need("openssl"), "verify", "-CApath", capath]
    if untrusted:
        args += ["-untrusted", untrusted]
    return run(*args, leaf, check=False).returncode == 0


def state(directory: Path) -> dict[str, tuple[int, int, str | None]]:
    """name -> (inode, mtime_ns, link target) for everything in a directory."""
    out = {}
    for name in os.listdir(directory):
        st = os.lstat(directory / name)
        out[name] = (st.st_ino, st.st_mtime_ns, os.readlink(directory / name) if os.path.islink(directory / name) else None)
    return out


def hash_links(directory: Path) -> dict[str, str]:
    return {n: os.readlink(directory / n) for n in os.listdir(directory) if os.path.islink(directory / n)}


def test_openssl_verifies_with_our_directory_and_refuses_after_mirror_drops_the_root(
    pki, root, intermediate, server_leaf, tmp_path
):
    other = pki.ca("Some Other Root")
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(root.pem + other.pem)
    capath = tmp_path / "ca"
    leaf, chain = server_leaf.write(tmp_path / "leaf.pem"), intermediate.write(tmp_path / "int.pem")

    assert storesync("sync", f"pem:{bundle}", f"dir:{capath}").returncode == 0
    assert verify(capath, leaf, chain)

    bundle.write_bytes(other.pem)
    result = storesync("sync", "--mode", "mirror", f"pem:{bundle}", f"dir:{capath}")
    assert result.returncode == 0, result.stderr
    assert not verify(capath, leaf, chain)
    assert len(open_store(f"dir:{capath}").read()) == 1


def test_links_agree_with_openssl_and_allow_many_sharing_one_hash(pki, tmp_path):
    twins = [pki.ca("Same Subject Root") for _ in range(12)]
    bundle = tmp_path / "twins.pem"
    bundle.write_bytes(b"".join(t.pem for t in twins))
    capath = tmp_path / "ca"
    assert storesync("sync", f"pem:{bundle}", f"dir:{capath}?links=both").returncode == 0

    new_hash, old_hash = run("openssl", "x509", "-noout", "-subject_hash", "-subject_hash_old",
                             "-in", twins[0].write(tmp_path / "t0.pem")).stdout.decode().split()
    links = hash_links(capath)
    assert sorted(links) == sorted([f"{new_hash}.{n}" for n in range(12)] + [f"{old_hash}.{n}" for n in range(12)])
    # every certificate is reachable, including the twelfth
    for twin in (twins[0], twins[11]):
        leaf = pki.leaf("twin-leaf.test", twin).write(tmp_path / "leaf.pem")
        assert verify(capath, leaf)


def test_second_sync_writes_nothing_and_a_change_touches_only_its_files(pki, root, tmp_path):
    cas = [root, *(pki.ca(f"Incremental Root {i}") for i in range(5))]
    bundle = tmp_path / "b.pem"
    bundle.write_bytes(b"".join(c.pem for c in cas))
    capath, out = tmp_path / "ca", tmp_path / "out.pem"
    assert storesync("sync", f"pem:{bundle}", f"dir:{capath}", f"pem:{out}").returncode == 0
    before, out_before = state(capath), os.stat(out)

    again = storesync("sync", f"pem:{bundle}", f"dir:{capath}", f"pem:{out}")
    assert again.returncode == 0 and "in sync" in again.stdout
    assert state(capath) == before
    assert (os.stat(out).st_ino, os.stat(out).st_mtime_ns) == (out_before.st_ino, out_before.st_mtime_ns)

    added = pki.ca("One More Root")
    bundle.write_bytes(bundle.read_bytes() + added.pem)
    assert storesync("sync", f"pem:{bundle}", f"dir:{capath}").returncode == 0
    after = state(capath)
    changed = {n for n in after if before.get(n) != after[n]}
    h = Certificate(added.der).subject_hash()
    assert changed == {"One_More_Root.pem", f"{h}.0"}
    assert set(before) - set(after) == set()


def test_removal_closes_gaps_in_link_numbers(pki, tmp_path):
    twins = [pki.ca("Gap Root") for _ in range(3)]
    bundle = tmp_path / "b.pem"
    bundle.write_bytes(b"".join(t.pem for t in twins))
    capath = tmp_path / "ca"
    assert storesync("sync", f"pem:{bundle}", f"dir:{capath}").returncode == 0
    bundle.write_bytes(twins[1].pem + twins[2].pem)  # drop one (1 of 3 is more than 10 %: forced)
    assert storesync("sync", "--force", f"pem:{bundle}", f"dir:{capath}").returncode == 0
    h = Certificate(twins[0].der).subject_hash()
    assert sorted(hash_links(capath)) == [f"{h}.0", f"{h}.1"]
    for twin in twins[1:]:
        assert verify(capath, pki.leaf("gap-leaf.test", twin).write(tmp_path / "leaf.pem"))


def test_files_that_are_not_ours_are_left_alone(root, pki, tmp_path):
    capath = tmp_path / "ca"
    capath.mkdir()
    (capath / "README.txt").write_text("not a certificate")
    (capath / "bundle.crt").write_bytes(root.pem + pki.ca("Bundled").pem)
    (capath / "sub").mkdir()
    (capath / "0123abcd.r0").write_text("a CRL link name")
    keep = state(capath)
    bundle = tmp_path / "b.pem"
    bundle.write_bytes(root.pem)
    assert storesync("sync", f"pem:{bundle}", f"dir:{capath}").returncode == 0
    after = state(capath)
    assert {n: after[n] for n in keep} == keep
    assert len(open_store(f"dir:{capath}").read()) == 1


def test_layout_with_both_hashes_is_p11kits(system_bundle, tmp_path):
    p11kit = tmp_path / "p11kit"
    run(need("trust"), "extract", "--format=openssl-directory", "--filter=ca-anchors", "--purpose=server-auth", p11kit)
    ours = tmp_path / "ours"
    assert storesync("sync", f"pem:{system_bundle}", f"dir:{ours}?links=both").returncode == 0
    assert hash_links(ours) == hash_links(p11kit)
    assert sorted(os.listdir(ours)) == sorted(os.listdir(p11kit))
    assert storesync("diff", f"pem:{system_bundle}", f"dir:{p11kit}").returncode == 0


def test_reading_debians_etc_ssl_certs_equals_the_bundle(system_bundle):
    result = storesync("diff", f"pem:{system_bundle}", "dir:/etc/ssl/certs")
    assert result.returncode == 0, result.stdout


def test_the_version_changes_with_every_write(pki, tmp_path):
    """A run re-reads a store under its lock only when its version moved: every write must move it."""
    from storesync.model import Certificate, Entry, TrustSet
    from storesync.engine.plan import make_plan
    from storesync.stores import open_store

    store = open_store(f"dir:{tmp_path / 'ca'}?format=trusted")  # where new trust rewrites a file
    versions = [store.version()]
    one, two = (Entry(Certificate(pki.ca(f"Version Root {n}").der)) for n in (1, 2))
    for wanted in ([one], [one, two], [two], [two.replace(trust={"email": "trusted"})]):
        current = store.read()
        plan = make_plan(TrustSet(wanted), current, store.capabilities, store=str(store.spec))
        assert not plan.empty
        store.write(plan)
        versions.append(store.version())
    assert len(set(versions)) == len(versions)


@pytest.mark.parametrize("kind", ["dir", "anchors"])
@pytest.mark.parametrize("db", ["sql", "dbm"])  # cert9.db/key4.db, and the legacy cert8.db/key3.db
def test_a_folder_holding_an_nss_database_is_no_hashed_directory(kind, db, root, tmp_path):
    """`dir:` (or `anchors:`) on an NSS database folder read as an empty store: a mirror from it
    would empty its targets, a sync into it scattered certificate files and hash links among NSS's."""
    nssdb = tmp_path / "nssdb"
    nssdb.mkdir()
    run(need("certutil"), "-N", "-d", f"{db}:{nssdb}", "--empty-password")
    run("certutil", "-A", "-d", f"{db}:{nssdb}", "-n", "Root", "-t", "C,,", "-i", root.write(tmp_path / "root.pem"))
    target = tmp_path / "target.pem"
    target.write_bytes(root.pem)
    before = {p.name: p.read_bytes() for p in [*nssdb.iterdir(), target]}
    spec = f"{kind}:{nssdb}"
    for argv in (["list", spec], ["sync", "--force", "--allow-empty", spec, f"pem:{target}"],
                 ["sync", f"pem:{tmp_path / 'root.pem'}", spec]):
        result = storesync(*argv)
        assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stdout + result.stderr
        assert "holds an NSS database (" in result.stderr and f"name it nss:{nssdb}" in result.stderr
        assert "Traceback" not in result.stderr
    assert {p.name: p.read_bytes() for p in [*nssdb.iterdir(), target]} == before


@pytest.mark.parametrize("kind", ["dir", "anchors", None])
@pytest.mark.parametrize("parts", [("key4.db", "pkcs11.txt"), ("key3.db",), ("pkcs11.txt",), ("dangling cert9.db",)])
def test_a_folder_holding_part_of_an_nss_database_is_no_hashed_directory(kind, parts, root, tmp_path):
    """A folder with key4.db and pkcs11.txt but no cert9.db read as an empty hashed directory (a
    sync wrote certificate files beside key4.db), and a cert9.db that is a dangling link was not
    seen. Each NSS file marks an NSS folder (secmod.db alone does not: see below), found by lstat;
    `nss:` on the dangling link names it."""
    half = tmp_path / "half"
    half.mkdir()
    for part in parts:
        if part.startswith("dangling"):
            (half / "cert9.db").symlink_to(tmp_path / "gone" / "cert9.db")
        else:
            (half / part).write_bytes(b"")
    before = sorted(p.name for p in half.iterdir())
    spec = f"{kind}:{half}" if kind else str(half)
    for argv in (["list", spec], ["sync", "--mode", "add", f"pem:{root.write(tmp_path / 'root.pem')}", spec]):
        result = storesync(*argv)
        assert (result.returncode, result.stdout) == (2, ""), result.stdout + result.stderr
        if kind:
            assert f"holds an NSS database ({parts[0].removeprefix('dangling ')})" in result.stderr, result.stderr
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert sorted(p.name for p in half.iterdir()) == before
    if parts[0].startswith("dangling"):
        result = storesync("list", f"nss:{half}")
        assert result.returncode == 2 and f"symbolic link to {tmp_path / 'gone' / 'cert9.db'}, which does not exist" \
            in result.stderr, result.stderr


@pytest.mark.parametrize("spec", ["dir:{d}", "anchors:{d}", "{d}"])
def test_a_folder_that_can_be_listed_but_not_entered_is_an_error(spec, root, tmp_path):
    """A folder of mode 0744 (another's: names listed, no file opened) read as 0 certificates,
    exit 0, where `list PATH` said "cannot list it": an empty store a mirror would copy. Both
    say it cannot be entered, exit 2. Run as nobody (root opens anything)."""
    if os.geteuid() != 0:
        pytest.fail("this test needs root, to run the command as nobody (CI runs as root)")
    top = Path(tempfile.mkdtemp(prefix="storesync-enter-"))  # reachable by nobody, unlike tmp_path's parents
    os.chmod(top, 0o755)
    folder, state = top / "ca", top / "state"
    folder.mkdir()
    root.write(folder / "root.crt")
    os.chmod(folder, 0o744)
    state.mkdir(mode=0o777)
    os.chmod(state, 0o777)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "STORESYNC_STATE_DIR": str(state)}
    command = [shutil.which("setpriv"), "--reuid=nobody", "--regid=nogroup", "--clear-groups",
               sys.executable, "-m", "storesync", "list", spec.format(d=folder)]
    try:
        result = subprocess.run(command, capture_output=True, text=True, env=env)
    finally:
        shutil.rmtree(top)
    assert (result.returncode, result.stdout) == (2, ""), result.stdout + result.stderr
    assert f"{folder}: cannot enter it (Permission denied)" in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1


def test_a_folder_with_stray_files_is_still_a_hashed_directory(root, tmp_path):
    folder = tmp_path / "ca"
    folder.mkdir()
    (folder / "README").write_text("not a certificate\n")
    (folder / "secmod.db").write_bytes(b"")  # a stray NSS file alone is no database
    root.write(folder / "root.pem")
    listed = storesync("list", f"dir:{folder}")
    assert listed.returncode == 0 and "1 certificates" in listed.stdout, listed.stdout + listed.stderr


def test_dir_on_a_file_is_refused(root, tmp_path):
    bundle, source = root.write(tmp_path / "bundle.pem"), root.write(tmp_path / "source.pem")
    for argv in (["list", f"dir:{bundle}"], ["sync", f"pem:{source}", f"dir:{bundle}"]):
        result = storesync(*argv)
        assert result.returncode == 2 and f"is not a directory; it looks like a PEM file: name it pem:{bundle}" in result.stderr
    assert bundle.read_bytes() == root.pem


def test_a_directory_read_for_the_first_time_stats_no_file(pki, tmp_path, monkeypatch):
    """Issue 18: a fresh directory is read back after it is written. Its files were never read,
    so the stat cache has nothing to compare a stat with, and the listing says which entries are
    files: no stat per file (the links to them are followed, as OpenSSL follows them)."""
    bundle, capath = tmp_path / "bundle.pem", tmp_path / "ca"
    bundle.write_bytes(b"".join(pki.ca(f"Stat Root {n}").pem for n in range(5)))
    monkeypatch.setenv("STORESYNC_STATE_DIR", str(tmp_path / "state"))
    assert storesync("sync", f"pem:{bundle}", f"dir:{capath}").returncode == 0
    (capath / "sub.pem").mkdir()  # a folder named like a certificate: not read as one
    stats = []
    real_stat = os.stat
    monkeypatch.setattr(os, "stat", lambda path, *a, **k: stats.append(path) or real_stat(path, *a, **k))
    monkeypatch.setenv("STORESYNC_STATE_DIR", str(tmp_path / "never-read"))  # no stat cache of it
    store = open_store(f"dir:{capath}")
    found = store.read()
    assert len(found) == 5
    assert not [p for p in stats if str(p).endswith(".pem")], stats


def test_two_files_for_one_certificate_read_as_openssl_capath_loads_them(pki, root, intermediate, server_leaf, tmp_path):
    """Two files for one certificate, a plain one and a TRUSTED one rejecting serverAuth, the
    TRUSTED one behind `<hash>.0`: OpenSSL loads it first (and keeps only that copy), so refuses a
    server chain; storesync kept the file whose name sorts first and dropped the other's distrust."""
    leaf, chain = server_leaf.write(tmp_path / "leaf.pem"), intermediate.write(tmp_path / "inter.pem")
    h = Certificate(root.der).subject_hash()
    folder = tmp_path / "ca"
    folder.mkdir()
    root.write(folder / "a.pem")
    root.write(tmp_path / "root.pem")
    run(need("openssl"), "x509", "-in", tmp_path / "root.pem", "-trustout", "-addreject", "serverAuth",
        "-setalias", "Rejecting", "-out", folder / "z.pem")

    def openssl_server_ok() -> bool:
        return run(need("openssl"), "verify", "-purpose", "sslserver", "-CApath", folder, "-untrusted", chain, leaf,
                   check=False).returncode == 0

    for first, second, ok in (("z.pem", "a.pem", False), ("a.pem", "z.pem", True)):
        for link in folder.glob(f"{h}.*"):
            link.unlink()
        (folder / f"{h}.0").symlink_to(first)
        (folder / f"{h}.1").symlink_to(second)
        assert openssl_server_ok() is ok
        store = open_store(f"dir:{folder}")
        (entry,) = store.read().values()
        assert (entry.trust.get("server-auth") == "trusted") is ok, (first, dict(entry.trust))
        assert any("a.pem and z.pem hold one certificate" in w and f"loads {first}" in w for w in store.warnings)
        if not ok:  # and a sync spreads no trust OpenSSL does not grant
            out = tmp_path / "out.pem"
            storesync("sync", "--mode", "add", f"dir:{folder}", f"pem:{out}")
            assert not out.exists() or b"CERTIFICATE" not in out.read_bytes()

    # reached only through links of another hash (not its subject hash's), or none: distrust wins
    for link in folder.glob(f"{h}.*"):
        link.unlink()
    (folder / "00000000.0").symlink_to("a.pem")
    (folder / "00000000.1").symlink_to("z.pem")
    store = open_store(f"dir:{folder}")
    (entry,) = store.read().values()
    assert entry.trust.get("server-auth") == "distrusted" and entry.trust.get("email") == "trusted"
    assert any("cannot be told" in w for w in store.warnings)
    for link in folder.glob("00000000.*"):
        link.unlink()
    (entry,) = open_store(f"dir:{folder}").read().values()
    assert entry.trust.get("server-auth") == "distrusted"
