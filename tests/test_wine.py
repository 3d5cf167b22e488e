"""Windows' crypt32, through Wine 8, as an oracle for the `.sst`, `.reg` and `.p7b` storesync writes
and reads. The programs in tests/oracles/wine/ (see the README there) are built once per session
with MinGW; one Wine prefix and one `wineserver -p` serve the whole session.

Wine 8's limits (tests/oracles/wine/README.md): its whole-file `.sst` reader finds nothing in a
real `.sst`, so `sstdump elements+` frames the file itself and crypt32 decodes each element; its
element reader rejects an element with a property id it does not know (distrust-after), which
`elements+` retries without those ids ("stripped"); its PKCS#7 writer is broken, so only Wine-read
`.p7b` results are used; the first open of ROOT adds the host's roots, so imports are compared
with what was there before them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import storesync
from contract import REGISTRY, SHAPES, ShapeCerts, default_variation, entries_of, make_store, read_store
from storesync.engine.plan import make_plan
from storesync.model import ANCHOR, oid_from_purpose
from storesync.stores import open_store

HERE = Path(__file__).parent / "oracles" / "wine"
PROGRAMS = ("sstdump", "sstwrite", "regstore")
pytestmark = pytest.mark.skipif(
    not (shutil.which("wine") and shutil.which("wineserver") and shutil.which("x86_64-w64-mingw32-gcc")),
    reason="wine or MinGW is not installed (scripts/test installs both)",
)
CERTS_KEY = r"HKLM\Software\Microsoft\SystemCertificates"


class Crypt32:
    """Runs the oracle programs under Wine; rows are TSV lists, CRs stripped."""

    def __init__(self, bin_dir: Path, env: dict[str, str]):
        self.bin, self.env = bin_dir, env

    def wine(self, *args: str, cwd: Path) -> str:
        # Output to files, not pipes: Wine's helper processes may hold a pipe open after the
        # program exits, and a pipe reader would wait for them.
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            code = subprocess.run(["wine", *args], cwd=cwd, env=self.env, stdout=out, stderr=err,
                                  stdin=subprocess.DEVNULL, timeout=120).returncode
            out.seek(0), err.seek(0)
            assert code == 0, err.read().decode(errors="replace")
            return out.read().decode("utf-8", "replace").replace("\r", "")

    def rows(self, program: str, *args: str, cwd: Path) -> list[list[str]]:
        out = self.wine(str(self.bin / f"{program}.exe"), *args, cwd=cwd)
        return [line.split("\t") for line in out.splitlines() if line]


@pytest.fixture(scope="session")
def crypt32(tmp_path_factory):
    cache = tmp_path_factory.mktemp("wine")
    for program in PROGRAMS:
        subprocess.run(["x86_64-w64-mingw32-gcc", "-O1", "-Wall", "-o", str(cache / f"{program}.exe"),
                        str(HERE / f"{program}.c"), "-lcrypt32"], check=True, capture_output=True)
    env = {**os.environ, "WINEDEBUG": "-all", "WINEPREFIX": str(cache / "prefix"), "WINEDLLOVERRIDES": "mscoree,mshtml="}
    quiet = {"stdin": subprocess.DEVNULL, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    (cache / "prefix").mkdir()
    for attempt in range(3):  # one server: ROOT's host roots stay put
        code = subprocess.run(["wineserver", "-p"], env=env, **quiet).returncode  # no pipes: it outlives this call
        if code == 0:
            break
        time.sleep(2)  # a server of an earlier session on a recycled inode is still on its way out
    assert code == 0, "wineserver -p failed: is a server of this prefix already running?"
    subprocess.run(["wine", "wineboot", "--init"], env=env, check=True, timeout=300, **quiet)  # one server: ROOT's host roots stay put
    yield Crypt32(cache, env)
    subprocess.run(["wineserver", "-k"], env=env, **quiet)
    subprocess.run(["wineserver", "-w"], env=env, timeout=60, **quiet)  # gone before its prefix is


@pytest.fixture(scope="session")
def certs(pki) -> ShapeCerts:
    return ShapeCerts(pki)


def by_sha1(rows: list[list[str]], *views: str) -> dict[str, list[str]]:
    return {row[1].lower(): row for row in rows if row[0] in views}


def crypt32_purposes(row: list[str]) -> set[str] | None:
    """The purposes crypt32 decodes (None: no ENHKEY_USAGE, every purpose)."""
    if row[3] == "none":
        return None
    return set() if row[4] == "<no-purpose>" else set(row[4].split(","))


def expected_purposes(entry) -> set[str] | None:
    if dict(entry.trust) == ANCHOR:
        return None
    return {oid_from_purpose(p) for p in entry.trusted_purposes}


def crypt32_label(row: list[str]) -> str | None:
    return None if row[2] == "<none>" else "" if row[2] == "<empty>" else row[2]


def compare_rows(entries, rows: dict[str, list[str]], with_purposes: bool = True) -> list[str]:
    problems = []
    for entry in entries:
        row = rows[entry.cert.sha1]
        if crypt32_label(row) != entry.label:
            problems.append(f"{entry.label!r}: crypt32 reads the label as {crypt32_label(row)!r}")
        if with_purposes and crypt32_purposes(row) != expected_purposes(entry):
            problems.append(f"{entry.label!r}: crypt32 reads purposes {crypt32_purposes(row)}, storesync {dict(entry.trust)}")
    return problems


SHAPES_OK = [s for s in SHAPES if s not in ("distrust-one", "label-nul")]


@pytest.mark.parametrize("variant,shapes", [
    ("sst", SHAPES_OK), ("sst-disallowed", SHAPES_OK),
    pytest.param("sst", ["label-nul"], id="sst-label-nul"),
])
def test_crypt32_reads_the_sst_storesync_writes(crypt32, certs, tmp_path, variant, shapes):
    kind = REGISTRY[variant]
    case = {s: default_variation(s) for s in shapes}
    spec = make_store(kind, tmp_path, entries_of(certs, case))
    written, _ = read_store(spec)
    rows = crypt32.rows("sstdump", "elements+", kind.file, cwd=tmp_path)
    found = by_sha1(rows, "elements", "stripped")
    assert set(found) == {e.cert.sha1 for e in written.values()}
    stripped = {sha for sha, row in found.items() if row[0] == "stripped"}
    assert stripped == {e.cert.sha1 for e in written.values() if e.distrust_after}, "only Wine's known limit"
    assert compare_rows(written.values(), found, with_purposes=variant == "sst") == []
    if "label-nul" in shapes:  # crypt32 shows a FRIENDLY_NAME up to its first NUL, and so does storesync
        nul = next(e for e in written.values() if e.cert.der == certs.der["label-nul"])
        assert nul.label == crypt32_label(found[nul.cert.sha1]) == default_variation("label-nul")["label"].split("\x00")[0]


def test_crypt32_reads_the_p7b_storesync_writes(crypt32, certs, tmp_path):
    spec = make_store(REGISTRY["p7b"], tmp_path, entries_of(certs, {s: default_variation(s) for s in SHAPES_OK}))
    written, _ = read_store(spec)
    found = by_sha1(crypt32.rows("sstdump", "pkcs7", REGISTRY["p7b"].file, cwd=tmp_path), "pkcs7")
    assert set(found) == {e.cert.sha1 for e in written.values()} and len(written) >= 10


def regstore(crypt32, cwd) -> dict[str, dict[str, list[str]]]:
    rows = crypt32.rows("regstore", "--system", "ROOT", "Disallowed", cwd=cwd)
    views = {}
    for row in rows:
        if not row[0].startswith("#"):
            views.setdefault(row[0] if row[0] != "key" else f"key:{row[1]}", {})[
                (row[2] if row[0] == "key" else row[1]).lower()] = row
    return views


def test_reg_import_brings_crypt32s_system_stores_to_the_plan(crypt32, certs, tmp_path):
    """After `wine reg import` of storesync's .reg, ROOT and Disallowed hold what the plan said,
    and Wine's own roots are untouched; a second .reg removes what the plan removes."""
    before = regstore(crypt32, tmp_path)  # the first open of ROOT adds the host's roots
    wine_roots = set(before["sys:ROOT"])
    assert wine_roots, "Wine's ROOT should hold the host's roots"
    (tmp_path / "src").mkdir()
    source = make_store(REGISTRY["nss"], tmp_path / "src",
                        entries_of(certs, {s: default_variation(s) for s in SHAPES_OK}))
    target = f"reg:{tmp_path / 'roots.reg'}"
    result = storesync("sync", "--purpose", "any", source, target)
    assert result.returncode == 0, result.stderr
    planned, _ = read_store(target)
    anchors = {e.cert.sha1 for e in planned.values() if not e.distrusted}
    distrusted = {e.cert.sha1 for e in planned.values() if e.distrusted}
    assert anchors and distrusted

    crypt32.wine("reg", "import", "roots.reg", cwd=tmp_path)
    after = regstore(crypt32, tmp_path)
    rejected = {e.cert.sha1 for e in planned.values() if e.distrust_after}  # Wine 8 refuses ids it does not know
    assert set(after["sys:ROOT"]) == wine_roots | (anchors - rejected)
    assert set(after["sys:Disallowed"]) == set(before.get("sys:Disallowed", {})) | distrusted
    keys = {**after["key:ROOT"], **after["key:Disallowed"]}
    assert all(keys[sha][4] == "name==SHA1:yes" for sha in (anchors | distrusted) - rejected)
    assert compare_rows([e for e in planned.values() if e.cert.sha1 not in rejected],
                        {**after["reg:ROOT"], **after["reg:Disallowed"]}, with_purposes=False) == []
    for entry in planned.values():
        if not entry.distrusted and entry.cert.sha1 not in rejected:
            assert crypt32_purposes(after["reg:ROOT"][entry.cert.sha1]) == expected_purposes(entry)

    # a narrower source: the .reg now deletes what left, and only that
    (tmp_path / "src2").mkdir()
    kept = {s: default_variation(s) for s in ("anchor-all", "v1-root")}
    source2 = make_store(REGISTRY["pem"], tmp_path / "src2", entries_of(certs, kept))
    result = storesync("sync", "--force", "--purpose", "any", source2, target)
    assert result.returncode == 0, result.stderr + result.stdout
    remaining, _ = read_store(target)
    crypt32.wine("reg", "import", "roots.reg", cwd=tmp_path)
    again = regstore(crypt32, tmp_path)
    assert set(again["sys:ROOT"]) == wine_roots | {e.cert.sha1 for e in remaining.values() if not e.distrusted}
    assert set(again["sys:Disallowed"]) == set(after["sys:Disallowed"]), "a plain source says nothing of distrust"

    # `wine reg export` of ROOT reads in storesync as crypt32 holds it, and is rewritten byte for byte
    crypt32.wine("reg", "export", rf"{CERTS_KEY}\ROOT", "export.reg", "/y", cwd=tmp_path)
    exported = open_store(f"reg:{tmp_path / 'export.reg'}")
    held = exported.read()
    assert {e.cert.sha1 for e in held.values()} == set(again["key:ROOT"])
    ours = [e for e in held.values() if e.cert.sha1 in again["reg:ROOT"]]
    assert len(ours) == len(again["reg:ROOT"]) and compare_rows(ours, again["reg:ROOT"]) == []
    assert_rewrite_is_identical(f"reg:{tmp_path / 'export.reg'}")


def test_reg_import_takes_what_a_sync_wrote_into_an_empty_reg_file(crypt32, pki, tmp_path):
    """An empty .reg a sync wrote into is a file `reg import` takes (storesync once wrote its
    blocks without the header): ROOT then holds the source's root."""
    from storesync.model import Certificate

    root = pki.ca("Empty Reg File Root")
    (tmp_path / "src.pem").write_bytes(root.pem)
    (tmp_path / "empty.reg").write_bytes(b"")
    result = storesync("sync", f"pem:{tmp_path / 'src.pem'}", f"reg:{tmp_path / 'empty.reg'}")
    assert result.returncode == 0, result.stderr
    crypt32.wine("reg", "import", "empty.reg", cwd=tmp_path)
    assert Certificate(root.der).sha1 in regstore(crypt32, tmp_path)["sys:ROOT"]


def assert_rewrite_is_identical(spec: str) -> None:
    store = open_store(spec)
    held = store.read()
    plan = make_plan(held, held, store.capabilities, store=spec, purpose="any")
    out = store.render(plan)  # bytes, or pieces written as they come
    assert (out if isinstance(out, (bytes, bytearray)) else b"".join(out)) == Path(store.path).read_bytes()


def test_storesync_reads_what_crypt32_writes(crypt32, certs, tmp_path):
    """sstwrite sets friendly names and EKU with crypt32's own setters and saves with CertSaveStore."""
    names = []
    for n, shape in enumerate(("anchor-all", "anchor-one", "v1-root", "serial-0", "serial-negative")):
        names.append(f"c{n}.cer")
        (tmp_path / names[-1]).write_bytes(certs.der[shape])
    manifest = {row[1].lower(): row for row in crypt32.rows("sstwrite", *names, "wine.sst", cwd=tmp_path)
                if row[0] == "expect"}
    read, _ = read_store(f"sst:{tmp_path / 'wine.sst'}")
    assert {e.cert.sha1 for e in read.values()} == set(manifest)
    for entry in read.values():
        _, _, label, purposes = manifest[entry.cert.sha1]
        assert entry.label == (None if label == "<none>" else label)
        want = None if purposes == "<all>" else set() if purposes == "<no-purpose>" else set(purposes.split(","))
        assert (None if dict(entry.trust) == ANCHOR else {oid_from_purpose(p) for p in entry.trusted_purposes}) == want
    assert_rewrite_is_identical(f"sst:{tmp_path / 'wine.sst'}")
    copy = tmp_path / "copy.sst"
    result = storesync("sync", "--purpose", "any", f"sst:{tmp_path / 'wine.sst'}", f"sst:{copy}")
    assert result.returncode == 0, result.stderr
    assert copy.read_bytes() == (tmp_path / "wine.sst").read_bytes()


ODD = {0: "", 1: "NoTerminator", 2: "Embedded", 3: "A"}  # crypt32's reading of sstwrite --odd's names


@pytest.mark.parametrize("index", [
    0, 1, 3,  # 3: an odd byte length; storesync read no label there before
    2,  # 2: a NUL inside the name: the label is what comes before it, as in crypt32
])
def test_storesync_reads_crypt32s_odd_friendly_names(crypt32, certs, tmp_path, index):
    names = []
    for n, shape in enumerate(("anchor-all", "anchor-one", "distrust-all", "distrust-after")):
        names.append(f"c{n}.cer")
        (tmp_path / names[-1]).write_bytes(certs.der[shape])
    written = crypt32.rows("sstwrite", "--odd", *names, "odd.sst", cwd=tmp_path)
    sha1 = next(row[1].lower() for row in written if row[0] == "odd" and row[2] == str(index))
    dumped = by_sha1(crypt32.rows("sstdump", "elements", "odd.sst", cwd=tmp_path), "elements")
    assert crypt32_label(dumped[sha1]) == (ODD[index] or "")
    read, _ = read_store(f"sst:{tmp_path / 'odd.sst'}")
    entry = next(e for e in read.values() if e.cert.sha1 == sha1)
    assert (entry.label or "") == ODD[index]
    assert_rewrite_is_identical(f"sst:{tmp_path / 'odd.sst'}")


@pytest.mark.parametrize("option,shapes", [
    ("hive=HKCU", ("serial-0", "serial-negative")),  # certificates of their own: imports accumulate
    # label-nul: the one anchor no other test imports (test_reg_import puts v1-root and non-der in
    # HKLM's ROOT, where they would be found whatever this .reg did)
    ("base=user", ("label-nul",)),
])
def test_a_user_reg_lands_in_the_users_store(crypt32, certs, tmp_path, option, shapes):
    """A .reg for the current user's ROOT, imported, is in crypt32's HKCU ROOT and not in HKLM's."""
    (tmp_path / "src").mkdir()
    source = make_store(REGISTRY["pem"], tmp_path / "src", entries_of(certs, {s: {} for s in shapes}))
    result = storesync("sync", source, f"reg:{tmp_path / 'user.reg'}?{option}")
    assert result.returncode == 0, result.stderr
    ours = {e.cert.sha1 for e in read_store(f"reg:{tmp_path / 'user.reg'}?{option}")[0].values()}
    crypt32.wine("reg", "import", "user.reg", cwd=tmp_path)
    rows = crypt32.rows("regstore", "HKCU:ROOT", "ROOT", cwd=tmp_path)
    user = {row[1].lower() for row in rows if row[0] == "reg:HKCU:ROOT"}
    machine = {row[1].lower() for row in rows if row[0] == "reg:ROOT"}
    assert ours and not ours & machine, "in HKLM's ROOT"
    assert ours <= user


def test_a_property_given_twice_is_read_as_crypt32_reads_it(crypt32, pki, tmp_path):
    """A group holding ENHKEY_USAGE twice: crypt32 sets each element in turn, so the last one
    counts, in a .sst and in a registry Blob; storesync read the first (server-auth trust for a
    certificate crypt32 trusts for nothing)."""
    import hashlib
    import struct

    from storesync.stores.reg import HEADER_V5, blob_lines

    server, nothing = bytes.fromhex("300a06082b06010505070301"), b"\x30\x00"  # {serverAuth}, no purpose
    alpha, beta = pki.ca("twice alpha").der, pki.ca("twice beta").der
    element = lambda prop_id, value: struct.pack("<III", prop_id, 1, len(value)) + value  # noqa: E731

    def group(cert: bytes, *ekus: bytes) -> bytes:
        return b"".join(element(9, eku) for eku in ekus) + element(3, hashlib.sha1(cert).digest()) + element(0x20, cert)

    (tmp_path / "twice.sst").write_bytes(b"\0\0\0\0CERT" + group(alpha, server, nothing) + group(beta, nothing, server) + bytes(12))
    rows = by_sha1(crypt32.rows("sstdump", "elements", "twice.sst", cwd=tmp_path), "elements")
    read, _ = read_store(f"sst:{tmp_path / 'twice.sst'}")
    assert len(rows) == len(read) == 2
    for entry in read.values():
        assert crypt32_purposes(rows[entry.cert.sha1]) == expected_purposes(entry)
    assert expected_purposes(next(e for e in read.values() if e.cert.der == alpha)) == set()

    key = r"HKEY_CURRENT_USER\Software\Microsoft\SystemCertificates\ROOT\Certificates" + "\\"
    text = HEADER_V5 + "\r\n\r\n" + "".join(
        f"[{key}{hashlib.sha1(cert).hexdigest().upper()}]\r\n" + blob_lines(group(cert, *ekus)) + "\r\n"
        for cert, ekus in ((alpha, (server, nothing)), (beta, (nothing, server))))
    (tmp_path / "twice.reg").write_bytes(b"\xff\xfe" + text.encode("utf-16-le"))
    crypt32.wine("reg", "import", "twice.reg", cwd=tmp_path)
    rows = by_sha1(crypt32.rows("regstore", "HKCU:ROOT", cwd=tmp_path), "reg:HKCU:ROOT")
    read, _ = read_store(f"reg:{tmp_path / 'twice.reg'}")
    assert len(read) == 2
    for entry in read.values():
        assert crypt32_purposes(rows[entry.cert.sha1]) == expected_purposes(entry)
