"""What the ninth session's new-administrator review found in the error sentences: a file of
another kind is named as what it is, and every damage, permission and space error says what to
do. The files of each kind are made by the program that owns the format where one is installed
(openssl, certutil, Debian's Java cacerts), else by storesync's own writer."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import need, run, storesync
from test_certdata import HEADER, cert_object, trust_object
from storesync.model import Certificate, StoreError
from storesync.stores import open_store, read_store

JAVA_CACERTS = Path("/etc/ssl/certs/java/cacerts")
#: The store kinds a file may be named as by mistake (anchors: its own sentence, the folder's).
READERS = ("pem", "dir", "nss", "certdata", "sst", "reg", "p7b", "jks", "p12")
#: name -> (its kind, what the sentence tells to do), for a file of that name made by `samples`
SAMPLES = {
    "root.pem": ("pem", "name it pem:{path}"),
    "root.der": ("pem", "name it pem:{path}"),
    "roots.sst": ("sst", "name it sst:{path}"),
    "roots.reg": ("reg", "name it reg:{path}"),
    "roots.p7b": ("p7b", "name it p7b:{path}"),
    "cacerts": ("jks", "name it jks:{path}"),
    "roots.p12": ("p12", "name it p12:{path}"),
    "certdata.txt": ("certdata", "name it certdata:{path}"),
    "db/cert9.db": ("nss", "name its folder nss:{folder}"),
    "old.jceks": (None, "keytool -importkeystore -srckeystore {path}"),
}


@pytest.fixture(scope="module")
def samples(pki, tmp_path_factory) -> Path:
    """One file of each kind in a folder, each holding the same root."""
    top = tmp_path_factory.mktemp("kinds")
    root = pki.ca("s9 Kinds Root")
    root.write(top / "root.pem")
    (top / "root.der").write_bytes(root.der)
    run("openssl", "crl2pkcs7", "-nocrl", "-certfile", top / "root.pem", "-outform", "DER", "-out", top / "roots.p7b")
    run("openssl", "pkcs12", "-export", "-nokeys", "-in", top / "root.pem", "-passout", "pass:changeit",
        "-out", top / "roots.p12")
    assert storesync("sync", f"pem:{top / 'root.pem'}", f"sst:{top / 'roots.sst'}", f"reg:{top / 'roots.reg'}").returncode == 0
    shutil.copyfile(JAVA_CACERTS, top / "cacerts")
    (top / "old.jceks").write_bytes(b"\xce\xce\xce\xce" + JAVA_CACERTS.read_bytes()[4:])  # keytool -storetype jceks's magic
    fields = Certificate(root.der).fields
    (top / "certdata.txt").write_text(HEADER + cert_object(root.der, "s9 Kinds Root") + trust_object(
        fields.issuer, fields.serial, "s9 Kinds Root", "TRUSTED_DELEGATOR", "MUST_VERIFY_TRUST", "MUST_VERIFY_TRUST"))
    (top / "db").mkdir()
    run(need("certutil"), "-N", "-d", f"sql:{top / 'db'}", "--empty-password")
    return top


def listed(spec: str) -> str:
    """What `storesync list` says of a store (in process: ninety runs of the CLI would be slow)."""
    try:
        store = open_store(spec)
        if not store.exists():
            raise store.error(store.missing())
        read_store(store)
    except StoreError as exc:
        return str(exc)
    return "read"


def _pairs():
    for name, (kind, _) in SAMPLES.items():
        for reader in READERS:
            if reader != kind:
                yield pytest.param(name, reader, id=f"{reader}-on-{name}")


@pytest.mark.parametrize("name,reader", list(_pairs()))
def test_a_file_named_as_another_kind_is_named_as_what_it_is(samples, name, reader):
    path = samples / name
    before = path.read_bytes()
    said = listed(f"{reader}:{path}")
    todo = SAMPLES[name][1].format(path=path, folder=path.parent)
    assert todo in said and str(path) in said and "restore it" not in said, said
    assert path.read_bytes() == before


def test_the_cli_says_it_in_one_sentence_and_a_damaged_file_of_the_kind_is_still_restored(samples, tmp_path):
    path = samples / "cacerts"
    result = storesync("list", f"p12:{path}")
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("storesync: p12 store ") and f"it looks like a JKS keystore: name it jks:{path}" in result.stderr
    truncated = tmp_path / "truncated.jks"
    truncated.write_bytes(path.read_bytes()[:300])
    assert "restore it (storesync rollback)" in listed(f"jks:{truncated}")


def test_a_file_named_as_an_nss_database_says_so_not_that_it_is_missing(samples, tmp_path):
    plain = tmp_path / "notes.txt"
    plain.write_text("hello\n")
    said = listed(f"nss:{plain}")
    assert "is a file, not an NSS database folder" in said and "folder that holds cert9.db" in said, said
    assert "does not exist" not in listed(f"nss:{samples / 'root.pem'}")


def test_a_folder_named_as_another_kind_is_named_as_what_it_is(tmp_path, pki):
    """An NSS database folder named as a bundle, a hashed directory named as an NSS database
    (made by certutil and openssl rehash): each says which kind it is, not what the named kind
    wants; an empty folder still gets the named kind's hint."""
    db, hashed, empty = tmp_path / "nssdb", tmp_path / "certs", tmp_path / "empty"
    for folder in (db, hashed, empty):
        folder.mkdir()
    run(need("certutil"), "-N", "-d", f"sql:{db}", "--empty-password")
    pki.ca("Folder Root").write(hashed / "root.pem")
    run("openssl", "rehash", hashed)
    said = listed(f"pem:{db}")
    assert said == f"pem store {db}: is a directory; it looks like an NSS database folder: name it nss:{db}", said
    said = listed(f"nss:{hashed}")
    assert f"it looks like a hashed directory of certificates: name it dir:{hashed}" in said and "certutil" not in said, said
    assert "create one with `certutil -N" in listed(f"nss:{empty}") and f"use dir:{empty}" in listed(f"pem:{empty}")
    result = storesync("list", f"nss:{hashed}")
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr


@pytest.mark.parametrize("content, message", [
    (bytes(range(7, 250)) * 2, "holds no PEM certificate"),
    (b"\x30\x82\x01\x73\x30\x82\x01\x19\xa0\x03\x02\x01\x02", "neither PEM nor a DER certificate"),
])
def test_damaged_bundles_say_what_to_do_also_in_a_hashed_directory(tmp_path, content, message):
    bad = tmp_path / "ca" / "x.der"
    bad.parent.mkdir()
    bad.write_bytes(content)
    for spec in (f"pem:{bad}", f"dir:{bad.parent}"):
        said = listed(spec)
        assert message in said and str(bad) in said and "restore it (storesync rollback)" in said, said


def test_a_certdata_file_that_is_not_text_says_to_fetch_it_again(tmp_path):
    bad = tmp_path / "certdata.txt"
    bad.write_bytes(b"\xff\xfe\x00garbage")
    said = listed(f"certdata:{bad}")
    assert "not a certdata.txt file" in said and "fetch Mozilla's certdata.txt again" in said, said


def as_nobody(*args: str, state: Path) -> subprocess.CompletedProcess:
    """The CLI run as `nobody` (root reads everything), as tests/test_cli.py runs it."""
    command = [sys.executable, "-m", "storesync", *args]
    if os.geteuid() == 0:
        command = [need("setpriv"), "--reuid=nobody", "--regid=nogroup", "--clear-groups", *command]
        os.chmod(sys.prefix, 0o755)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "STORESYNC_STATE_DIR": str(state)}
    return subprocess.run(command, capture_output=True, text=True, env=env)


def test_what_this_user_may_not_read_is_a_permission_error_never_damage():
    """An NSS database whose cert9.db is unreadable (SQLite says only "unable to open database
    file"), a folder that cannot be listed, a bare path that cannot be read: each says to run
    as a user who may read it. The database is sound: certutil lists it."""
    top = Path(tempfile.mkdtemp(prefix="storesync-s9-"))  # reachable by nobody, unlike tmp_path
    try:
        top.chmod(0o755)
        db, folder, bare, state = top / "db", top / "ca", top / "bundle.pem", top / "state"
        db.mkdir(mode=0o755)
        run(need("certutil"), "-N", "-d", f"sql:{db}", "--empty-password")
        db.chmod(0o755)
        (db / "cert9.db").chmod(0)
        folder.mkdir(mode=0)
        bare.write_bytes(b"")
        bare.chmod(0)
        state.mkdir(mode=0o777)
        state.chmod(0o777)
        for spec, path in ((f"nss:{db}", db / "cert9.db"), (f"dir:{folder}", folder), (str(folder), folder),
                           (str(bare), bare)):
            result = as_nobody("list", spec, state=state)
            lines = result.stderr.splitlines()
            assert result.returncode == 2 and len(lines) == 1, result.stderr
            assert str(path) in lines[0] and "run as a user who may" in lines[0], lines[0]
            assert "restore it" not in lines[0]
            if path == folder:  # a bare path too: not blamed on a cert9.db it does not hold
                assert "cannot list it" in lines[0] and "cert9.db" not in lines[0], lines[0]
        run(need("certutil"), "-L", "-d", f"sql:{db}")
    finally:
        shutil.rmtree(top)


def test_the_warnings_of_a_store_are_printed_once_per_sync(tmp_path, pki):
    anchors = tmp_path / "anchors"
    anchors.mkdir()
    pki.ca("s9 Kept Root").write(anchors / "kept.pem")
    source = pki.ca("s9 Added Root").write(tmp_path / "added.pem")
    result = storesync("sync", "--mode", "add", f"pem:{source}", f"anchors:{anchors}")
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("kept.pem: not a .crt file") == 1, result.stderr
