"""Fuzzing every parser with damaged files (issue 12): through `list --json`, never a traceback;
through `sync`, a damaged source never spreads: every target is either left alone or holds only
what its owner (OpenSSL, keytool, certutil) loads.

A damaged file is one of nine kinds' good files with a few bytes changed: inside one certificate
("cert": outer lengths intact, re-encoded as the format encodes it: PEM, octal, hex) or anywhere
in the file ("raw"). The default run keeps to a few dozen cases; `-m slow` runs the campaign.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import struct
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from conftest import SYSTEM_BUNDLE, need, pem_of, run, storesync
from test_certdata import HEADER, cert_object, trust_object
from test_damaged import loaded_by_owner, new_nss, spec

from storesync import cli
from storesync.model import Certificate
from storesync.stores import open_store

KINDS = ("pem", "dir", "nss", "certdata", "sst", "reg", "p7b", "jks", "p12")
TARGETS = ("pem", "dir", "p7b", "jks", "p12", "nss", "sst")


def fuzz(examples: int) -> settings:
    return settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck))


# --- the good files, and damage ---------------------------------------------------------------


@pytest.fixture(scope="module")
def originals(tmp_path_factory, pki):
    """One good store of every kind holding the same four roots (three RSA system roots, one EC)."""
    need("certutil")
    system = [e.cert.der for e in open_store(f"pem:{SYSTEM_BUNDLE}").read().values()][:3]
    ders = [*system, pki.ca("Fuzz EC Root").der]
    home = tmp_path_factory.mktemp("originals")
    bundle = home / "source.pem"
    bundle.write_bytes(b"".join(pem_of(d) for d in ders))
    stores = {"pem": bundle, "certdata": home / "certdata.txt"}
    for kind in KINDS:
        if kind in stores:
            continue
        path = new_nss(home / "nss") if kind == "nss" else home / f"store.{kind}"
        done = storesync("sync", f"pem:{bundle}", spec(kind, path), "--purpose", "any")
        assert done.returncode == 0, done.stderr
        stores[kind] = path
    stores["certdata"].write_text(HEADER + "\n".join(_certdata_objects(ders, ders)))
    return ders, stores


def _certdata_objects(originals: list[bytes], ders: list[bytes]) -> list[str]:
    objects = []
    for n, (good, der) in enumerate(zip(originals, ders)):
        fields = Certificate(good).fields  # the trust object names the certificate as it was
        objects.append(cert_object(der, f"Root {n}") if der == good else _cert_object_of_bytes(der, good, f"Root {n}"))
        objects.append(trust_object(fields.issuer, fields.serial, f"Root {n}", "TRUSTED_DELEGATOR",
                                    "TRUSTED_DELEGATOR", "MUST_VERIFY_TRUST", der=der))
    return objects


def _cert_object_of_bytes(der: bytes, good: bytes, label: str) -> str:
    """A certificate object whose CKA_VALUE is damaged (its other attributes from the good one)."""
    from test_certdata import octal

    text = cert_object(good, label)
    return text.replace(octal(good), octal(der))


def damage_der(der: bytes, changes: list[tuple[float, int]]) -> bytes:
    """Bytes changed inside the certificate, after its outer tag and length."""
    header = 2 + (der[1] & 0x7F if der[1] & 0x80 else 0)
    data = bytearray(der)
    for where, value in changes:
        data[header + int(where * (len(der) - header))] = value
    return bytes(data)


def damage_raw(data: bytes, changes: list[tuple[float, int]]) -> bytes:
    out = bytearray(data)
    for where, value in changes:
        if out:
            out[int(where * len(out))] = value
    return bytes(out)


def damaged_copy(kind: str, originals, mode: str, which: int, changes, into: Path) -> Path:
    """A copy of the good store of `kind` in `into`, damaged."""
    ders, stores = originals
    source = stores[kind]
    target = into / source.name
    if source.is_dir():
        shutil.copytree(source, target)
    else:
        shutil.copy(source, target)
    if mode == "raw":
        files = sorted(p for p in target.iterdir() if p.is_file() and not p.is_symlink()) if target.is_dir() else [target]
        victim = files[which % len(files)]
        if kind == "nss":
            victim = target / "cert9.db"
        victim.write_bytes(damage_raw(victim.read_bytes(), changes))
        return target
    good = ders[which % len(ders)]
    bad = damage_der(good, changes)
    if kind == "pem":
        target.write_bytes(b"".join(pem_of(bad if d == good else d) for d in ders))
    elif kind == "dir":
        for file in target.iterdir():
            if not file.is_symlink() and file.read_bytes() == pem_of(good):
                file.write_bytes(pem_of(bad))
    elif kind == "certdata":
        target.write_text(HEADER + "\n".join(_certdata_objects(ders, [bad if d == good else d for d in ders])))
    elif kind == "reg":
        text = target.read_bytes().decode("utf-16")
        wrapped = _reg_hex(good)
        assert wrapped in text.replace(",\\\r\n  ", ",")
        flat = text.replace(",\\\r\n  ", ",").replace(wrapped, _reg_hex(bad))
        target.write_bytes(b"\xff\xfe" + flat.encode("utf-16-le"))  # regedit's wrapping is optional on import
    else:  # the certificate's bytes are in the file as they are (sst, p7b, jks, p12, nss)
        file = target / "cert9.db" if kind == "nss" else target
        data = file.read_bytes()
        assert good in data, kind
        file.write_bytes(data.replace(good, bad))
    return target


def _reg_hex(der: bytes) -> str:
    return ",".join(f"{b:02x}" for b in der)


def changes_strategy(most: int = 3):
    return st.lists(st.tuples(st.floats(0, 0.999), st.integers(0, 255)), min_size=1, max_size=most)


def in_process(*argv: str) -> tuple[int, str, str]:
    """The CLI's `main` in this process (a hundred times quicker than a subprocess): exit code,
    stdout, stderr. Anything but SystemExit escaping `main` would be a traceback for a user."""
    out, err = io.StringIO(), io.StringIO()
    saved = sys.argv
    sys.argv = ["storesync", *argv]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                cli.main()
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 2
    finally:
        sys.argv = saved
    return code, out.getvalue(), err.getvalue()


# --- list --json: every parser, every printer ----------------------------------------------


def check_list(kind: str, path: Path) -> int:
    code, out, err = in_process("list", "--json", spec(kind, path))
    assert code in (0, 2), (code, err)
    if code == 2:
        assert err.startswith("storesync: ") and err.count("\n") == 1 and str(path) in err, err
    else:
        json.loads(out)
    return code


def list_campaign(originals, examples: int):
    @fuzz(examples)
    @given(kind=st.sampled_from(KINDS), mode=st.sampled_from(["cert", "raw"]), which=st.integers(0, 3),
           changes=changes_strategy())
    def campaign(kind, mode, which, changes):
        with tempfile.TemporaryDirectory() as scratch:
            code = check_list(kind, damaged_copy(kind, originals, mode, which, changes, Path(scratch)))
            tally[f"exit {code}"] = tally.get(f"exit {code}", 0) + 1

    tally: dict[str, int] = {}
    campaign()
    print(f"list --json campaign: {sum(tally.values())} cases, {tally}, 0 tracebacks")


def test_list_json_of_damaged_files_never_crashes(originals):
    list_campaign(originals, 150)


@pytest.mark.slow
def test_list_json_campaign(originals):
    list_campaign(originals, 16000)


def test_every_kind_is_damaged_where_its_certificates_are(originals, tmp_path):
    """The fuzzer's own check: a "cert" change lands in a certificate of every kind's file."""
    ders, _ = originals
    for kind in KINDS:
        into = tmp_path / kind
        into.mkdir()
        path = damaged_copy(kind, originals, "cert", 0, [(0.5, 0x00), (0.5001, 0xFF)], into)
        code, out, err = in_process("list", "--json", spec(kind, path))
        if code == 0:
            assert Certificate(ders[0]).sha256 not in out, kind


# --- sync: a damaged source never spreads -------------------------------------------------------


def sst_certificates(path: Path) -> list[bytes]:
    """The CERT elements (id 0x20) of a serialized store, walked here, not by storesync."""
    data, pos, found = path.read_bytes(), 8, []
    while pos + 12 <= len(data):
        prop, _, size = struct.unpack_from("<III", data, pos)
        if prop == 0 and size == 0:
            break
        if prop == 0x20:
            found.append(data[pos + 12 : pos + 12 + size])
        pos += 12 + size
    return found


def owner_count(kind: str, path: Path, scratch: Path) -> int | None:
    if kind != "sst":
        return loaded_by_owner(kind, path)
    if not path.exists():
        return 0
    certs = sst_certificates(path)
    for n, der in enumerate(certs):  # Windows keeps bytes; it needs well-formed ASN.1
        (scratch / f"element{n}.der").write_bytes(der)
        if run("openssl", "asn1parse", "-inform", "DER", "-in", scratch / f"element{n}.der", check=False).returncode:
            return None
    return len(certs)


def check_sync(kind: str, source: Path, scratch: Path) -> tuple[int, int]:
    """(exit code, certificates refused as damaged or forged) of a sync from a damaged store."""
    targets = {t: (new_nss(scratch / "t-nss") if t == "nss" else scratch / f"t.{t}") for t in TARGETS}
    code, out, err = in_process("sync", spec(kind, source), *(spec(t, p) for t, p in targets.items()),
                                "--purpose", "any")
    assert code in (0, 2), (code, out, err)
    if code == 2:
        assert err.startswith("storesync: "), err
    for target, path in targets.items():
        count = owner_count(target, path, scratch)
        assert count is not None, f"{target} written from a damaged {kind} is refused by its owner:\n{out}"
        if code == 2:
            assert count == 0, f"{target} written although the sync failed"
    return code, out.count("damaged: ") + out.count("signature does not verify")


def sync_campaign(originals, examples: int, kinds=KINDS, modes=("cert",)):
    @fuzz(examples)
    @given(kind=st.sampled_from(kinds), mode=st.sampled_from(modes), which=st.integers(0, 3),
           changes=changes_strategy(1))
    def campaign(kind, mode, which, changes):
        with tempfile.TemporaryDirectory() as scratch:
            home = Path(scratch)
            (home / "src").mkdir()
            code, refusals = check_sync(kind, damaged_copy(kind, originals, mode, which, changes, home / "src"), home)
            tally[f"exit {code}"] = tally.get(f"exit {code}", 0) + 1
            tally["refusal lines"] = tally.get("refusal lines", 0) + refusals

    tally: dict[str, int] = {}
    campaign()
    print(f"sync campaign ({', '.join(kinds)}): {sum(v for k, v in tally.items() if k.startswith('exit'))} cases, "
          f"{tally}, 0 tracebacks, 0 spread (every target loaded whole by its owner)")


def test_a_damaged_bundle_never_spreads(originals):
    sync_campaign(originals, 6, kinds=("pem",))


def test_a_damaged_store_of_any_kind_never_spreads(originals):
    sync_campaign(originals, 6, kinds=KINDS, modes=("cert", "raw"))


@pytest.mark.slow
def test_sync_campaign(originals):
    sync_campaign(originals, 200, kinds=("pem",))
    sync_campaign(originals, 200, kinds=KINDS, modes=("cert", "raw"))
