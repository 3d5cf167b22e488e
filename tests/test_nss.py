"""NSS `sql:` databases, with certutil (NSS 3.87) and libnss3 itself as the oracles."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

from conftest import need, run, storesync
from storesync.engine.plan import make_plan
from storesync.model import ANCHOR, DISTRUST, Certificate, Entry, StoreError, TrustSet
from storesync.stores import open_store
from storesync.stores import nss

PASSWORD = "s3cret pass"


# --- helpers -------------------------------------------------------------------------------


def new_db(path: Path, password: str | None = None) -> Path:
    need("certutil")
    path.mkdir(parents=True, exist_ok=True)
    if password is None:
        run("certutil", "-N", "-d", f"sql:{path}", "--empty-password")
    else:
        pw = path.parent / f"{path.name}.pw"
        pw.write_text(password + "\n")
        run("certutil", "-N", "-d", f"sql:{path}", "-f", pw)
    return path


def certutil_add(db: Path, nick: str, trust: str, pem: Path, *extra) -> None:
    run("certutil", "-A", "-d", f"sql:{db}", "-n", nick, "-t", trust, "-i", pem, *extra)


def certutil_flags(db: Path, *extra) -> dict[str, str]:
    out = run("certutil", "-L", "-d", f"sql:{db}", *extra).stdout.decode()
    flags = {}
    for line in out.splitlines()[4:]:
        if line.strip():
            nick, _, trust = line.rstrip().rpartition(" ")
            flags[nick.strip()] = trust
    return flags


def verify(db: Path, nick: str, *extra) -> str:
    result = run("certutil", "-V", "-d", f"sql:{db}", "-u", "V", "-n", nick, *extra, check=False)
    return (result.stdout + result.stderr).decode()


def sync(entries, db: Path | str, mode: str = "mirror"):
    store = open_store(db if isinstance(db, str) else f"nss:{db}")
    plan = make_plan(TrustSet(entries), store.read(), store.capabilities, store=str(store.spec), mode=mode,
                     purpose="any")
    store.write(plan)
    return plan


def read(db: Path | str):
    store = open_store(db if isinstance(db, str) else f"nss:{db}")
    return store.read(), store


def files_of(db: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(db.iterdir()) if p.is_file()}


def integrity(db: Path) -> None:
    for name in ("cert9.db", "key4.db"):
        conn = sqlite3.connect(db / name)
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        conn.close()


def entry(issued, trust=None, label=None, **kw) -> Entry:
    return Entry(Certificate(issued.der), trust=dict(ANCHOR if trust is None else trust), label=label, **kw)


def nss_trust_after_login(db: Path, nick: str, password: str) -> tuple[int, int, int]:
    """libnss3 itself: log in (which is when NSS drops unsigned trust), then read the trust flags."""
    code = r"""
import ctypes, sys
nss = ctypes.CDLL("libnss3.so")
class T(ctypes.Structure):
    _fields_ = [("ssl", ctypes.c_uint), ("email", ctypes.c_uint), ("objsign", ctypes.c_uint)]
nss.NSS_Initialize.argtypes = [ctypes.c_char_p] * 4 + [ctypes.c_uint32]
assert nss.NSS_Initialize(("sql:" + sys.argv[1]).encode(), b"", b"", b"secmod.db", 1) == 0
nss.PK11_GetInternalKeySlot.restype = ctypes.c_void_p
nss.PK11_CheckUserPassword.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
assert nss.PK11_CheckUserPassword(nss.PK11_GetInternalKeySlot(), sys.argv[3].encode()) == 0, "login failed"
nss.CERT_GetDefaultCertDB.restype = ctypes.c_void_p
nss.CERT_FindCertByNickname.restype = ctypes.c_void_p
nss.CERT_FindCertByNickname.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
cert = nss.CERT_FindCertByNickname(nss.CERT_GetDefaultCertDB(), sys.argv[2].encode())
assert cert, "no such nickname"
t = T()
nss.CERT_GetCertTrust.argtypes = [ctypes.c_void_p, ctypes.POINTER(T)]
nss.CERT_GetCertTrust(ctypes.c_void_p(cert), ctypes.byref(t))
print(t.ssl, t.email, t.objsign)
"""
    out = subprocess.run([sys.executable, "-c", code, str(db), nick, password], capture_output=True, text=True,
                         check=True).stdout
    return tuple(int(x) for x in out.split())


CERTDB_TRUSTED_CA = 0x10


@pytest.fixture
def cas(pki):
    return {name: pki.ca(f"NSS Test {name}") for name in ("a", "b", "c", "d", "e", "f")}


# --- reading what certutil wrote -----------------------------------------------------------


FLAG_CASES = {
    "C,,": {"server-auth": "trusted"},
    "CT,C,C": dict(ANCHOR),
    "c,c,c": None,
    "P,,": None,  # a trusted peer that may issue: not an anchor (the peer leaf below is one, as itself)
    "p,p,p": dict(DISTRUST),
    ",,": None,
    ",C,": {"email": "trusted"},
    "T,,": {"client-auth": "trusted"},
    "p,C,": {"server-auth": "distrusted", "client-auth": "distrusted", "email": "trusted"},
}


def test_reads_exactly_the_trust_certutil_shows(tmp_path, pki, root, server_leaf, intermediate):
    db = new_db(tmp_path / "db")
    issued = {}
    for flags in FLAG_CASES:
        issued[flags] = pki.ca(f"Flags {flags}")
        certutil_add(db, f"ca {flags}", flags, issued[flags].write(tmp_path / "x.pem"))
    certutil_add(db, "leaf", ",,", server_leaf.write(tmp_path / "leaf.pem"))
    certutil_add(db, "inter", ",,", intermediate.write(tmp_path / "inter.pem"))
    certutil_add(db, "peer leaf", "P,,", pki.leaf("peer.test", root).write(tmp_path / "peer.pem"))

    trust_set, store = read(db)
    assert [w.split(": ", 1)[1] for w in store.warnings] == [
        "ca P,,: trusted as a peer (P) for server-auth, client-auth while it may issue certificates: that is no "
        "anchor, so it is not synced"]
    assert store.flags() == certutil_flags(db)  # every certificate, in scope or not
    for flags, expected in FLAG_CASES.items():
        sha = Certificate(issued[flags].der).sha256
        if expected is None:
            assert sha not in trust_set, flags  # no opinion: out of scope
        else:
            got = trust_set[sha]
            assert dict(got.trust) == expected, flags
            assert got.label == f"ca {flags}"
            assert store.flags()[f"ca {flags}"] == flags
    assert Certificate(server_leaf.der).sha256 not in trust_set
    assert Certificate(intermediate.der).sha256 not in trust_set
    assert len(trust_set) == 1 + sum(1 for v in FLAG_CASES.values() if v)


# --- writing: certutil and libnss3 read it --------------------------------------------------


def test_certutil_lists_what_we_write(tmp_path, pki, cas, root):
    db = new_db(tmp_path / "db")
    peer = pki.leaf("peer.test", root)
    entries = [
        entry(cas["a"], label="All purposes"),
        entry(cas["b"], {"server-auth": "trusted"}, label="Server only"),
        entry(cas["c"], DISTRUST, label="Distrusted"),
        entry(cas["d"], {"email": "trusted", "server-auth": "distrusted"}, label="Mixed"),
        entry(cas["e"], {"client-auth": "trusted"}, label="Client anchor"),
        entry(peer, {"server-auth": "trusted"}, label="Peer"),  # a leaf: stored as a trusted peer
    ]
    sync(entries, db)
    assert certutil_flags(db) == {
        "All purposes": "CT,C,C",
        "Server only": "C,,",
        "Distrusted": "p,p,p",
        "Mixed": "p,C,",
        "Client anchor": "T,,",
        "Peer": "P,,",
    }
    integrity(db)
    # the new trust class needed new columns, added the way NSS adds them
    columns = {r[1] for r in sqlite3.connect(db / "cert9.db").execute("PRAGMA table_info(nssPublic)")}
    assert {"a62c", "a62d", "a62e", "a62f", "a635", "a8c"} <= columns
    # and both classes say the same thing, signed
    trust_set, store = read(db)
    assert store.warnings == [] and store.rewrite == {}
    for obj in store.objects:
        assert obj.legacy is not None and obj.p11 is not None
        assert not obj.legacy.bad_macs and not obj.p11.bad_macs
    assert {e.label: dict(e.trust) for e in trust_set.values()} == {e.label: dict(e.trust) for e in entries}


def test_our_objects_match_certutils(tmp_path, system_bundle):
    """Certificate objects byte for byte as certutil makes them (CKA_ID for RSA and EC keys too)."""
    from storesync.stores.pem import PemStore
    from storesync.stores import parse_spec

    bundle = PemStore(parse_spec(f"pem:{system_bundle}")).read()
    picked = bundle.entries()
    ours, theirs = new_db(tmp_path / "ours"), new_db(tmp_path / "theirs")
    sync(picked, ours)
    for i, e in enumerate(picked):
        pem = tmp_path / f"{i}.pem"
        pem.write_bytes(e.cert.der)
        certutil_add(theirs, f"{e.display_label} {i}", "CT,C,C", pem)

    def objects(db):
        conn = sqlite3.connect(db / "cert9.db")
        cols = [r[1] for r in conn.execute("PRAGMA table_info(nssPublic)")]
        result = {}
        for row in conn.execute("SELECT * FROM nssPublic"):
            values = {c: v for c, v in zip(cols, row) if v is not None and c not in ("id", "a3")}
            if values["a0"] in (nss.ulong(nss.CKO_CERTIFICATE), nss.ulong(nss.CKO_NSS_TRUST)):
                result[(values["a0"], values["a81"], values["a82"])] = values
        return result

    assert objects(ours) == objects(theirs)
    assert set(certutil_flags(ours).values()) == set(certutil_flags(theirs).values()) == {"CT,C,C"}


def test_certutil_validates_under_our_anchor_and_rejects_under_our_distrust(tmp_path, pki):
    trusted, distrusted = pki.ca("Good Root"), pki.ca("Bad Root")
    good_leaf, bad_leaf = pki.leaf("good.test", trusted), pki.leaf("bad.test", distrusted)
    db = new_db(tmp_path / "db")
    sync([entry(trusted, label="Good Root"), entry(distrusted, DISTRUST, label="Bad Root")], db)
    certutil_add(db, "good", ",,", good_leaf.write(tmp_path / "good.pem"))
    certutil_add(db, "bad", ",,", bad_leaf.write(tmp_path / "bad.pem"))
    assert "certificate is valid" in verify(db, "good")
    assert "marked as not trusted" in verify(db, "bad")
    # re-trust through us: the distrust goes in both classes
    sync([entry(trusted, label="Good Root"), entry(distrusted, label="Bad Root")], db)
    assert "certificate is valid" in verify(db, "bad")
    assert certutil_flags(db)["Bad Root"] == "CT,C,C"


def test_certutil_can_modify_and_delete_our_entries(tmp_path, cas):
    db = new_db(tmp_path / "db")
    sync([entry(cas["a"], label="A"), entry(cas["b"], label="B")], db)
    run("certutil", "-M", "-d", f"sql:{db}", "-n", "A", "-t", "p,p,p")
    assert certutil_flags(db)["A"] == "p,p,p"
    trust_set, store = read(db)
    # certutil 3.87 changed only the legacy object; the distrust counts, and the skew is reported
    sha = Certificate(cas["a"].der).sha256
    assert trust_set[sha].trust == DISTRUST
    assert list(store.rewrite) == [sha] and "disagree" in store.rewrite[sha]
    run("certutil", "-D", "-d", f"sql:{db}", "-n", "B")
    assert "B" not in certutil_flags(db)
    trust_set, _ = read(db)
    assert Certificate(cas["b"].der).sha256 not in trust_set
    # our next write makes the two classes agree again
    sync([entry(cas["a"], label="A"), entry(cas["b"], label="B")], db)
    trust_set, store = read(db)
    assert store.rewrite == {} and certutil_flags(db) == {"A": "CT,C,C", "B": "CT,C,C"}
    integrity(db)


def test_round_trip_keeps_peer_and_valid_ca_letters(tmp_path, pki, root):
    src = new_db(tmp_path / "src")
    peer = pki.leaf("peer.test", root)
    certutil_add(src, "peer", "P,,", peer.write(tmp_path / "p.pem"))
    certutil_add(src, "server", "C,,", root.write(tmp_path / "r.pem"))  # C,, keeps client `c`
    trust_set, _ = read(src)
    dst = new_db(tmp_path / "dst")
    sync(trust_set.values(), dst)
    assert certutil_flags(dst) == {"peer": "P,,", "server": "C,,"}
    trust_set2, _ = read(dst)
    assert {k: v.extras["nss"]["letters"] for k, v in trust_set2.items()} == {
        k: v.extras["nss"]["letters"] for k, v in trust_set.items()
    }


def test_password_protected_database(tmp_path, cas, pki):
    db = new_db(tmp_path / "db", PASSWORD)
    pw = tmp_path / "db.pw"
    before = files_of(db)
    with pytest.raises(StoreError, match="password-protected.*password-file"):
        sync([entry(cas["a"], label="A")], db)
    assert files_of(db) == before  # refused: nothing written
    wrong = tmp_path / "wrong.pw"
    wrong.write_text("nope\n")
    with pytest.raises(StoreError, match=f"the password in {wrong} is wrong .* first line"):  # which file, and what to do
        sync([entry(cas["a"], label="A")], f"nss:{db}?password-file={wrong}")
    assert files_of(db) == before

    sync([entry(cas["a"], label="A")], f"nss:{db}?password-file={pw}")
    ssl, email, objsign = nss_trust_after_login(db, "A", PASSWORD)
    assert ssl & CERTDB_TRUSTED_CA and email & CERTDB_TRUSTED_CA and objsign & CERTDB_TRUSTED_CA
    leaf = pki.leaf("leaf.test", cas["a"])
    certutil_add(db, "leaf", ",,", leaf.write(tmp_path / "leaf.pem"), "-f", pw)
    assert "certificate is valid" in verify(db, "leaf", "-f", pw)
    trust_set, store = read(f"nss:{db}?password-file={pw}")
    assert store.warnings == [] and len(trust_set) == 1

    # negative control: the same trust without signatures is dropped by NSS after login, and by us
    conn = sqlite3.connect(db / "key4.db")
    conn.execute("DELETE FROM metaData WHERE id LIKE 'sig_cert_%'")
    conn.commit()
    conn.close()
    assert nss_trust_after_login(db, "A", PASSWORD) == (0, 0, 0)
    trust_set, store = read(f"nss:{db}?password-file={pw}")
    assert len(trust_set) == 0 and any("signature" in w for w in store.warnings)
    # without the password we cannot check signatures: no trust is read, so none can spread
    with pytest.raises(StoreError, match="password-protected.*cannot be checked"):
        read(db)


def test_bad_or_missing_mac_is_unspecified_like_nss(tmp_path, cas):
    db = new_db(tmp_path / "db")
    sync([entry(cas["a"], label="A"), entry(cas["b"], label="B")], db)
    conn = sqlite3.connect(db / "cert9.db")
    # forge: flip A's legacy server trust to NOT_TRUSTED without re-signing
    conn.execute(
        "UPDATE nssPublic SET ace536358 = ? WHERE a0 = ? AND a81 = ?",
        (nss.ulong(nss.CKT_NSS_NOT_TRUSTED), nss.ulong(nss.CKO_NSS_TRUST), Certificate(cas["a"].der).fields.issuer),
    )
    conn.commit()
    conn.close()
    key = sqlite3.connect(db / "key4.db")
    key.execute("DELETE FROM metaData WHERE id LIKE 'sig_cert_%'")  # and drop every signature
    key.commit()
    key.close()
    assert certutil_flags(db) == {"A": ",,", "B": ",,"}  # NSS: unsigned trust is no trust
    trust_set, store = read(db)
    assert len(trust_set) == 0
    assert any("missing or wrong signature" in w for w in store.warnings)


@pytest.mark.parametrize("attribute", [nss.NSS_SERVER, nss.NSS_CLIENT, nss.NSS_STEP_UP, nss.NSS_SHA1])
def test_one_bad_signature_of_a_trust_object_leaves_none_of_its_trust_as_in_nss(tmp_path, cas, attribute):
    """NSS fetches a trust object's purposes, step-up and certificate hash in one template: one
    attribute whose signature fails fails them all, and certutil shows `,,`. storesync kept the
    purposes whose own signatures held (`CT,C,C` read as client, e-mail and code signing: more
    trust than NSS grants, which a sync would then spread). Found by review in session 18."""
    db = new_db(tmp_path / "db")
    certutil_add(db, "A", "CT,C,C", cas["a"].write(tmp_path / "a.pem"))
    conn = sqlite3.connect(db / "cert9.db")
    (trust_id,) = conn.execute("SELECT id FROM nssPublic WHERE a0 = ?", (nss.ulong(nss.CKO_NSS_TRUST),)).fetchone()
    conn.close()
    key = sqlite3.connect(db / "key4.db")
    name = nss.sig_id(trust_id, attribute)
    (signature,) = key.execute("SELECT item1 FROM metaData WHERE id = ?", (name,)).fetchone()
    key.execute("UPDATE metaData SET item1 = ? WHERE id = ?", (signature[:-1] + bytes([signature[-1] ^ 1]), name))
    key.commit()
    key.close()
    assert certutil_flags(db) == {"A": ",,"}
    trust_set, store = read(db)
    assert len(trust_set) == 0, {k: dict(v.trust) for k, v in trust_set.items()}
    assert any("NSS then reads none of that object's trust" in w for w in store.warnings), store.warnings


@pytest.mark.parametrize("value", [5, -7, 0.5, 1e100])
def test_a_number_where_nss_stores_a_blob_reads_as_sqlite_hands_it_to_nss(tmp_path, cas, value):
    """NSS takes every value with sqlite3_column_blob, which turns a number into its text. A
    number in a trust column is then a value whose signature fails, and NSS reads none of that
    object's trust (certutil `,,`); storesync read the number as absent and kept the rest
    (`C,C,C`: more trust than NSS grants). A number as a label is the certificate's nickname
    (certutil shows `1.0e+100`); storesync named it by its object id. Found by review in
    session 18, fixed in 19."""
    db = new_db(tmp_path / "db")
    certutil_add(db, "A", "CT,C,C", cas["a"].write(tmp_path / "a.pem"))
    certutil_add(db, "B", "CT,C,C", cas["b"].write(tmp_path / "b.pem"))
    conn = sqlite3.connect(db / "cert9.db")
    a = (Certificate(cas["a"].der).fields.issuer,)
    conn.execute(f"UPDATE nssPublic SET {nss.col(nss.NSS_CLIENT)} = ? WHERE a0 = ? AND a81 = ?",
                 (value, nss.ulong(nss.CKO_NSS_TRUST), *a))
    conn.execute(f"UPDATE nssPublic SET {nss.col(nss.CKA_LABEL)} = ? WHERE a0 = ? AND a81 != ?",
                 (value, nss.ulong(nss.CKO_CERTIFICATE), *a))
    conn.commit()
    conn.close()
    shown = certutil_flags(db)
    assert shown["A"] == ",," and len(shown) == 2 and list(shown.values())[1] == "CT,C,C"
    trust_set, store = read(db)
    assert store.flags() == shown
    assert [entry.label for entry in trust_set.values()] == [name for name in shown if name != "A"]


@pytest.mark.parametrize("change", [
    "UPDATE nssPublic SET a82 = 77",  # every row: the certificate's and its trust objects'
    "UPDATE nssPublic SET a81 = 12345",
    "UPDATE nssPublic SET a82 = CAST(a82 AS TEXT)",
    "UPDATE nssPublic SET a82 = 0.5 WHERE a0 != x'00000001'",  # the trust objects only
    "UPDATE nssPublic SET a82 = CASE WHEN a0 = x'00000001' THEN 77 ELSE CAST('77' AS BLOB) END",  # found
])
def test_a_trust_object_whose_issuer_or_serial_is_no_blob_is_never_found_as_in_nss(tmp_path, cas, change):
    """NSS finds a certificate's trust objects by a search on issuer and serial, bound as BLOBs,
    and SQLite never finds a number or TEXT equal to a BLOB: such a trust object is no one's
    trust (certutil `,,`). The certificate's own issuer and serial NSS reads as their text (the
    last case). storesync matched the text of both, and read `CT,C,C`. Found by review in
    session 19."""
    db = new_db(tmp_path / "db")
    certutil_add(db, "A", "CT,C,C", cas["a"].write(tmp_path / "a.pem"))
    with sqlite3.connect(db / "cert9.db") as conn:
        conn.execute(change)
    shown = certutil_flags(db)
    trust_set, store = read(db)
    assert store.flags() == shown
    assert len(trust_set) == (shown["A"] == "CT,C,C")
    assert shown["A"] == ("CT,C,C" if "CASE" in change else ",,")


def test_a_trust_object_id_no_signature_can_name_is_ignored_not_a_traceback(tmp_path, cas):
    """A signature names its object by 4 bytes: a trust object with an id past them raised
    struct.error from the signature checks, a traceback from `read` (found by review in session 19)."""
    db = new_db(tmp_path / "db")
    sync([entry(cas["a"], label="A")], db)
    with sqlite3.connect(db / "cert9.db") as conn:
        conn.execute("UPDATE nssPublic SET id = id + 5000000000 WHERE a0 = ?", (nss.ulong(nss.CKO_NSS_TRUST),))
    trust_set, store = read(db)
    assert any("its id is out of range" in w for w in store.warnings), store.warnings
    assert len(trust_set) == 1  # by its CKO_TRUST object, which was not changed


def test_sync_system_bundle_then_equal_and_idempotent(tmp_path, system_bundle):
    db = new_db(tmp_path / "db")
    source = open_store(f"pem:{system_bundle}").read()
    plan = sync(source.values(), db)
    assert len(plan.adds) == len(source)
    trust_set, store = read(db)
    assert set(trust_set) == set(source)
    assert all(dict(e.trust) == ANCHOR for e in trust_set.values())
    flags = certutil_flags(db)
    subjects = {e.cert.fields.subject for e in source.values()}  # NSS: one nickname per subject
    assert len(flags) == len(subjects) and set(flags.values()) == {"CT,C,C"}
    before = files_of(db)
    plan = sync(source.values(), db)
    assert plan.empty
    assert files_of(db) == before  # nothing rewritten


def test_mirror_removal_deletes_our_objects_but_never_a_user_cert(tmp_path, cas):
    db = new_db(tmp_path / "db")
    sync([entry(cas["a"], label="A"), entry(cas["b"], label="B")], db)
    noise = tmp_path / "noise"
    noise.write_bytes(os.urandom(64))
    run("certutil", "-S", "-d", f"sql:{db}", "-n", "me", "-s", "CN=me", "-x", "-t", "P,,", "-k", "ec",
        "-q", "nistp256", "-z", noise)
    assert certutil_flags(db)["me"] == "Pu,Pu,Pu" or certutil_flags(db)["me"].startswith("Pu")
    keys_before = run("certutil", "-K", "-d", f"sql:{db}").stdout
    sync([entry(cas["a"], label="A")], db)  # mirror: B and "me" are not in the source
    flags = certutil_flags(db)
    assert "B" not in flags
    assert flags["A"] == "CT,C,C"
    assert flags["me"].startswith("Pu")  # a trusted peer that may issue (no basicConstraints) is no anchor: out of scope
    assert run("certutil", "-K", "-d", f"sql:{db}").stdout == keys_before
    conn = sqlite3.connect(db / "cert9.db")
    b = Certificate(cas["b"].der).fields
    assert conn.execute("SELECT count(*) FROM nssPublic WHERE a81 = ? AND a82 = ?", (b.issuer, b.serial)).fetchone() == (0,)
    integrity(db)


def test_out_of_scope_certificates_untouched(tmp_path, root, intermediate, cas):
    db = new_db(tmp_path / "db")
    certutil_add(db, "inter", ",,", intermediate.write(tmp_path / "i.pem"))
    certutil_add(db, "validca", "c,c,c", cas["f"].write(tmp_path / "f.pem"))
    conn = sqlite3.connect(db / "cert9.db")
    before = conn.execute("SELECT * FROM nssPublic ORDER BY id").fetchall()
    conn.close()
    sync([entry(cas["a"], label="A")], db)
    conn = sqlite3.connect(db / "cert9.db")
    ids = {r[0] for r in before}
    after = [r for r in conn.execute("SELECT * FROM nssPublic ORDER BY id").fetchall() if r[0] in ids]
    assert [r[: len(before[0])] for r in after] == before
    assert certutil_flags(db)["validca"] == "c,c,c"


@pytest.mark.parametrize("mode", ["add", "mirror"])
def test_a_purpose_nss_has_no_trust_attribute_for_is_left_out_with_a_line(mode, tmp_path, pki):
    """NSS's trust object holds the four named purposes only: a root trusted for another EKU
    (time stamping, 1.3.6.1.5.5.7.3.8) was planned as a trust change, and the write failed at
    read-back ("reading it back does not give the planned set"). The plan leaves that purpose
    out, saying so in a `!` line; the rest of its trust is written, as certutil shows."""
    ca = pki.ca("Stamp Root")
    plain = ca.write(tmp_path / "ca.pem")
    db = new_db(tmp_path / "db")
    certutil_add(db, "stamp", "C,,", plain)
    result = storesync("sync", "--mode", mode, f"pem:{plain}?purpose=1.3.6.1.5.5.7.3.8", f"nss:{db}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "! Stamp Root: 1.3.6.1.5.5.7.3.8: left out" in result.stdout, result.stdout
    assert certutil_flags(db) == {"stamp": "C,,"}  # a bundle for time stamping says nothing of server-auth
    # A TRUSTED block for client-auth and time stamping, rejected for OCSP signing: client-auth only.
    trusted = tmp_path / "t.pem"
    run("openssl", "x509", "-in", plain, "-addtrust", "clientAuth", "-addtrust", "timeStamping",
        "-addreject", "OCSPSigning", "-trustout", "-out", trusted)
    fresh = new_db(tmp_path / "fresh")
    result = storesync("sync", "--mode", mode, f"pem:{trusted}", f"nss:{fresh}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1.3.6.1.5.5.7.3.8, 1.3.6.1.5.5.7.3.9: left out" in result.stdout, result.stdout
    assert certutil_flags(fresh) == {"Stamp Root": "T,,"}
    assert storesync("sync", "--mode", mode, f"pem:{trusted}", f"nss:{fresh}").returncode == 0  # in sync


def test_nickname_rules(tmp_path, pki):
    db = new_db(tmp_path / "db")
    one, two = pki.ca("Same Label One"), pki.ca("Same Label Two")
    sync([entry(one, label="Dup"), entry(two, label="Dup")], db)
    flags = certutil_flags(db)
    assert set(flags) == {"Dup", "Dup #2"}
    # a certificate whose subject is already known takes that subject's nickname (NSS: one per subject)
    renewed = pki.ca("Renewed CA")
    certutil_add(db, "Renewed old", ",,", renewed.write(tmp_path / "r.pem"))
    again = pki.ca("Renewed CA")  # same subject, new key and serial
    sync([entry(one, label="Dup"), entry(two, label="Dup"), entry(again, label="Something else")], db)
    assert certutil_flags(db)["Renewed old"] in ("CT,C,C", ",,")
    names = run("certutil", "-L", "-d", f"sql:{db}", "-n", "Renewed old").stdout.decode()
    assert names.count("Certificate:") == 2


def test_a_distrust_after_date_is_never_written_where_nss_would_not_apply_it(tmp_path):
    """NSS never applies CKA_NSS_SERVER_DISTRUST_AFTER (vfychain accepts a leaf issued after it),
    and Firefox applies it only to its built-in roots, from the built-in module: a database cannot
    hold a date. storesync wrote the date and kept the root trusted for server-auth, so NSS took
    a leaf the source distrusts. A dated root is now written without its date, with a `!` line:
    trusted until the date, and not for that purpose once it has passed."""
    from conftest import PKI

    pki, now = PKI(), dt.datetime.now(dt.timezone.utc)
    root = pki.ca("Dated Root")
    inter = pki.ca("Dated Intermediate", root)
    leaf = pki.leaf("dated.example", inter, not_before=now - dt.timedelta(days=1))
    chain = [leaf.write(tmp_path / "leaf.pem"), inter.write(tmp_path / "inter.pem")]
    db = new_db(tmp_path / "db")
    passed, coming = now - dt.timedelta(days=30), now + dt.timedelta(days=3650)
    plan = sync([entry(root, label="Dated", distrust_after={"server-auth": passed, "email": coming})], db)
    assert any("distrust-after" in loss.what for loss in plan.losses)
    verdict = run("vfychain", "-d", f"sql:{db}", "-u", "1", "-a", chain[0], "-a", chain[1], check=False)
    assert b"Chain is good" not in verdict.stdout + verdict.stderr  # issued after the date: NSS refuses it
    assert certutil_flags(db)["Dated"] == "T,C,C"  # client-auth (T) and e-mail (its date has not come) stay
    columns = {r[1] for r in sqlite3.connect(f"file:{db}/cert9.db?mode=ro", uri=True).execute("PRAGMA table_info(nssPublic)")}
    dated = [c for c in ("ace534373", "ace534374") if c in columns]
    assert not any(v for row in sqlite3.connect(f"file:{db}/cert9.db?mode=ro", uri=True).execute(
        f"SELECT {', '.join(dated) or 'NULL'} FROM nssPublic") for v in row)
    trust_set, _ = read(db)
    assert dict(trust_set[Certificate(root.der).sha256].distrust_after) == {}


def test_snapshot_and_restore(tmp_path, cas):
    db = new_db(tmp_path / "db")
    sync([entry(cas["a"], label="A")], db)
    store = open_store(f"nss:{db}")
    snap = store.snapshot()
    assert set(snap) == {str(db / "cert9.db"), str(db / "key4.db")}
    before = files_of(db)
    sync([entry(cas["b"], label="B")], db)
    assert certutil_flags(db) == {"B": "CT,C,C"}
    store.restore(snap)
    assert files_of(db) == before
    assert certutil_flags(db) == {"A": "CT,C,C"}
    assert store.watch_paths() == [str(db / "cert9.db"), str(db / "key4.db")]
    assert "restart" in store.notice()


def test_concurrent_with_certutil_loop(tmp_path, pki):
    db = new_db(tmp_path / "db")
    theirs = [pki.ca(f"Their CA {i}") for i in range(25)]
    ours = [pki.ca(f"Our CA {i}") for i in range(25)]
    errors: list[str] = []

    def certutil_loop():
        for i, issued in enumerate(theirs):
            pem = tmp_path / f"their{i}.pem"
            issued.write(pem)
            result = run("certutil", "-A", "-d", f"sql:{db}", "-n", f"their {i}", "-t", "C,,", "-i", pem, check=False)
            if result.returncode:
                errors.append(result.stderr.decode())

    thread = threading.Thread(target=certutil_loop)
    thread.start()
    for i in range(len(ours)):
        sync([entry(ours[j], label=f"our {j}") for j in range(i + 1)], db, mode="add")
    thread.join()
    assert errors == []
    flags = certutil_flags(db)
    assert all(flags[f"their {i}"] == "C,," for i in range(len(theirs)))
    assert all(flags[f"our {i}"] == "CT,C,C" for i in range(len(ours)))
    integrity(db)
    _, store = read(db)
    assert store.warnings == []


# --- hostile input -------------------------------------------------------------------------


def test_truncated_cert9(tmp_path, cas):
    db = new_db(tmp_path / "db")
    sync([entry(cas["a"], label="A")], db)
    data = (db / "cert9.db").read_bytes()
    (db / "cert9.db").write_bytes(data[: len(data) // 3])
    before = files_of(db)
    with pytest.raises(StoreError, match="cert9.db"):
        read(db)
    with pytest.raises(StoreError, match="cert9.db"):
        sync([entry(cas["b"], label="B")], db)
    assert files_of(db) == before


def test_garbage_file_as_cert9(tmp_path):
    db = new_db(tmp_path / "db")
    (db / "cert9.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="not a readable NSS database"):
        read(db)


def test_a_damaged_key4_db_says_what_to_do_as_a_damaged_cert9_db_does(tmp_path):
    db = new_db(tmp_path / "db")
    (db / "key4.db").write_bytes(b"garbage\n")
    before = files_of(db)
    result = storesync("list", f"nss:{db}")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith(f"storesync: nss store {db / 'key4.db'}: key4.db is not a usable NSS key database")
    assert result.stderr.rstrip().endswith("nothing was read from it: restore it (storesync rollback) or regenerate it")
    assert files_of(db) == before


def test_garbage_rows_are_skipped_with_warnings(tmp_path, cas):
    db = new_db(tmp_path / "db")
    sync([entry(cas["a"], label="A")], db)
    conn = sqlite3.connect(db / "cert9.db")
    cert = nss.ulong(nss.CKO_CERTIFICATE)
    conn.execute("INSERT INTO nssPublic (id, a0, a11, a81, a82) VALUES (7, ?, ?, ?, ?)", (cert, b"garbage", b"x", b"y"))
    conn.execute("INSERT INTO nssPublic (id, a0, a11) VALUES (8, ?, 12345)", (cert,))
    conn.execute("INSERT INTO nssPublic (id, a0, a81, a82, ace536358) VALUES (9, ?, 'txt', 'x', 5)",
                 (nss.ulong(nss.CKO_NSS_TRUST),))
    conn.commit()
    conn.close()
    trust_set, store = read(db)
    assert len(trust_set) == 1
    assert any("not a certificate" in w for w in store.warnings)
    before = files_of(db)
    assert sync([entry(cas["a"], label="A")], db).empty
    assert files_of(db) == before


def test_missing_key4(tmp_path, cas):
    db = new_db(tmp_path / "db")
    sync([entry(cas["a"], label="A")], db)
    (db / "key4.db").unlink()
    before = files_of(db)
    with pytest.raises(StoreError, match="key4.db is missing"):
        read(db)
    store = open_store(f"nss:{db}")
    with pytest.raises(StoreError):
        plan = make_plan(TrustSet([entry(cas["b"])]), TrustSet(), store.capabilities, store="x")
        store.write(plan)
    assert files_of(db) == before


def test_legacy_dbm_refused(tmp_path, cas):
    db = tmp_path / "old"
    db.mkdir()
    (db / "cert8.db").write_bytes(b"\x00\x06\x15\x61" + b"\x00" * 100)
    (db / "key3.db").write_bytes(b"\x00\x06\x15\x61" + b"\x00" * 100)
    before = files_of(db)
    with pytest.raises(StoreError, match="legacy dbm"):
        read(f"sql:{db}")
    store = open_store(f"sql:{db}")
    with pytest.raises(StoreError, match="legacy dbm"):
        store.write(make_plan(TrustSet([entry(cas["a"])]), TrustSet(), store.capabilities, store="x"))
    assert files_of(db) == before


def test_missing_database_says_how_to_create(tmp_path):
    with pytest.raises(StoreError, match="certutil -N"):
        read(tmp_path / "nope")


def test_mac_recipe_matches_certutil(tmp_path, cas):
    """Our verifier accepts every signature certutil made (the MAC recipe is NSS's)."""
    db = new_db(tmp_path / "db")
    certutil_add(db, "a", "CT,C,C", cas["a"].write(tmp_path / "a.pem"))
    certutil_add(db, "b", "p,p,p", cas["b"].write(tmp_path / "b.pem"))
    _, store = read(db)
    assert store.warnings == []
    assert all(o.legacy and not o.legacy.bad_macs for o in store.objects)


# --- root writing another user's database --------------------------------------------------


@contextlib.contextmanager
def nobodys_database(mode: int = 0o755):
    """(folder, database) of a database that `nobody` owns, in a folder of its own outside
    pytest's (which is under /root, out of that user's reach); removed afterwards."""
    base = Path(tempfile.mkdtemp(prefix="storesync-nss-"))
    try:
        os.chmod(base, mode)
        db = new_db(base / "db")
        for path in [db, *db.iterdir()]:
            os.chown(path, NOBODY, NOBODY)
        yield base, db
    finally:
        shutil.rmtree(base)


NOBODY = 65534


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to write as another user")
def test_root_writes_as_the_owner(cas):
    with nobodys_database() as (_, db):
        sync([entry(cas["a"], label="A")], db)
        assert certutil_flags(db) == {"A": "CT,C,C"}
        owners = {(p.name, p.stat().st_uid) for p in [db, *db.iterdir()]}
        assert all(o == NOBODY for _, o in owners), owners
        trust_set, _ = read(db)
        assert len(trust_set) == 1


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to write as another user")
def test_root_undoing_a_users_database_reads_the_backup_before_becoming_the_user(cas, monkeypatch):
    """The owner's process imports nothing new: that user may not read Python's own files
    (a Python under /root, mode 0700). The backup's signatures are read by root, before the fork."""
    from storesync.stores import nss as nss_module

    with nobodys_database(0o777) as (base, db):
        sync([entry(cas["a"], label="A")], db)
        shot = open_store(f"nss:{db}").snapshot()
        sync([entry(cas["b"], label="B")], db)
        readers, real = base / "readers", nss_module._signature_rows

        def noted(data):
            with open(readers, "a") as out:
                out.write(f"{os.getpid()}\n")
            return real(data)

        monkeypatch.setattr(nss_module, "_signature_rows", noted)
        open_store(f"nss:{db}").restore(shot)
        assert readers.read_text().split() == [str(os.getpid())]
        assert set(certutil_flags(db)) == {"A"}
        assert {p.stat().st_uid for p in db.iterdir()} == {NOBODY}


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to write as another user")
def test_root_writing_a_users_database_imports_nothing_as_the_user(cas, monkeypatch):
    """Root's own state dir (no STORESYNC_STATE_DIR): the owner's process logs in with the empty
    password's remembered check and imports nothing (platformdirs neither: that user may not
    read Python's files)."""
    from storesync import state

    with nobodys_database() as (base, db):
        monkeypatch.delenv("STORESYNC_STATE_DIR", raising=False)
        monkeypatch.setattr(state, "_override", None)
        monkeypatch.setattr(state, "SYSTEM_STATE_DIR", base / "state")
        monkeypatch.delitem(sys.modules, "platformdirs", raising=False)
        parent = os.getpid()

        class Unreadable:  # Python's files, as the owner sees them
            def find_spec(self, name, path=None, target=None):
                if os.getpid() != parent:
                    raise ImportError(f"the owner's process imports {name}")

        monkeypatch.setattr(sys, "meta_path", [Unreadable(), *sys.meta_path])
        sync([entry(cas["a"], label="A")], db)
        assert certutil_flags(db) == {"A": "CT,C,C"}


# --- through the CLI -----------------------------------------------------------------------


def test_cli_sync_diff_and_second_sync_writes_nothing(tmp_path, system_bundle):
    from conftest import storesync

    db = new_db(tmp_path / "db")
    result = storesync("sync", f"pem:{system_bundle}", f"nss:{db}")
    assert result.returncode == 0, result.stderr
    assert "restart the browser" in result.stdout + result.stderr
    result = storesync("diff", f"pem:{system_bundle}", f"nss:{db}")
    assert result.returncode == 0, result.stdout + result.stderr
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in db.iterdir()}
    result = storesync("sync", f"pem:{system_bundle}", f"sql:{db}")  # NSS's own spelling
    assert result.returncode == 0 and "in sync" in result.stdout
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in db.iterdir()} == before


def test_cli_password_file_and_refusal(tmp_path, cas):
    from conftest import storesync

    db = new_db(tmp_path / "db", PASSWORD)
    bundle = tmp_path / "b.pem"
    bundle.write_bytes(cas["a"].pem)
    before = files_of(db)
    result = storesync("sync", f"pem:{bundle}", f"nss:{db}")
    assert result.returncode == 2 and "password-file" in result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert files_of(db) == before
    result = storesync("--password-file", tmp_path / "db.pw", "sync", f"pem:{bundle}", f"nss:{db}")
    if result.returncode != 0:  # the option may sit after the command
        result = storesync("sync", "--password-file", tmp_path / "db.pw", f"pem:{bundle}", f"nss:{db}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert nss_trust_after_login(db, "NSS Test a", PASSWORD)[0] & CERTDB_TRUSTED_CA


def test_cli_refuses_legacy_dbm_clearly(tmp_path):
    from conftest import storesync

    db = tmp_path / "old"
    db.mkdir()
    (db / "cert8.db").write_bytes(b"\x00" * 64)
    result = storesync("list", f"sql:{db}")
    assert result.returncode == 2 and "legacy dbm" in result.stdout + result.stderr
    assert "Traceback" not in result.stderr


def test_email_attribute_like_certutil(tmp_path, pki):
    """CKA_NSS_EMAIL (S/MIME lookups) from a subjectAltName rfc822Name, as PK11_ImportCert sets it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from conftest import NOW, Issued

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "Mail CA")])
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(4242).not_valid_before(NOW - dt.timedelta(days=1)).not_valid_after(NOW + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("x.test"), x509.RFC822Name("Admin@Example.TEST")]),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    issued = Issued(cert, key)
    ours, theirs = new_db(tmp_path / "ours"), new_db(tmp_path / "theirs")
    sync([entry(issued, label="Mail CA")], ours)
    certutil_add(theirs, "Mail CA", "CT,C,C", issued.write(tmp_path / "m.pem"))

    def email(db):
        conn = sqlite3.connect(db / "cert9.db")
        return conn.execute("SELECT ace534352 FROM nssPublic WHERE a0 = ?", (nss.ulong(nss.CKO_CERTIFICATE),)).fetchone()

    assert email(ours) == email(theirs) == (b"admin@example.test",)


def test_removing_a_builtin_root_writes_a_distrust_record(pki, tmp_path):
    """A root the browser also trusts through its built-in module: deleting the database's copy
    would change nothing, so a mirror that drops it writes `p,p,p` and says so."""
    builtin, other = pki.ca("Builtin Root"), pki.ca("Ordinary Root")
    builtins = tmp_path / "builtins.pem"
    builtins.write_bytes(builtin.pem)
    db = new_db(tmp_path / "db")
    source = tmp_path / "source.pem"
    source.write_bytes(builtin.pem + other.pem)
    spec = f"nss:{db}?builtins=pem:{builtins}"
    assert storesync("sync", f"pem:{source}", spec).returncode == 0
    source.write_bytes(other.pem)
    result = storesync("sync", "--force", f"pem:{source}", spec)
    assert result.returncode == 0, result.stderr
    assert "distrusted instead of removed" in result.stdout
    flags = certutil_flags(db)
    assert flags["Builtin Root"] == "p,p,p" and flags["Ordinary Root"].startswith("C")
    # stable: the next run keeps the record
    again = storesync("sync", "--force", "--json", f"pem:{source}", spec)
    assert again.returncode == 0 and not json.loads(again.stdout)["plans"][1]["written"]


def test_hostile_key_database_values_are_errors_not_tracebacks(tmp_path, cas):
    db = new_db(tmp_path / "db")
    sync([entry(cas["a"], label="A")], f"nss:{db}")
    conn = sqlite3.connect(db / "key4.db")
    conn.execute("UPDATE metaData SET item1 = 99999999999 WHERE id LIKE 'sig_cert_%'")
    conn.commit()
    conn.close()
    result = storesync("list", f"nss:{db}")
    assert result.returncode in (0, 2) and "Traceback" not in result.stderr
    conn = sqlite3.connect(db / "key4.db")
    conn.execute("UPDATE metaData SET item1 = NULL WHERE id = 'password'")
    conn.commit()
    conn.close()
    result = storesync("list", f"nss:{db}")
    assert result.returncode == 2 and "Traceback" not in result.stderr and "key4.db" in result.stderr


def test_a_fifo_is_not_opened_as_a_database(tmp_path):
    db = tmp_path / "db"
    db.mkdir()
    os.mkfifo(db / "cert9.db")
    (db / "key4.db").write_bytes(b"")
    result = subprocess.run([sys.executable, "-m", "storesync", "list", f"nss:{db}"], capture_output=True,
                            text=True, timeout=20)
    assert result.returncode == 2 and "not a regular file" in result.stderr


def test_a_damaged_index_a_read_never_reaches_is_one_sentence_on_sync(tmp_path, cas):
    """A broken index page (what `pragma integrity_check` reports) passes `list`, which scans the
    table, but fails the write that updates it: exit 2, the file named as damaged and how to
    restore it, the database unchanged (it was "writing failed unexpectedly; please report this")."""
    db = new_db(tmp_path / "db")
    source = tmp_path / "src.pem"
    source.write_bytes(cas["a"].pem + cas["b"].pem)
    assert storesync("sync", source, f"nss:{db}").returncode == 0
    conn = sqlite3.connect(db / "cert9.db")
    page_size, page = conn.execute("SELECT (SELECT page_size FROM pragma_page_size), rootpage FROM sqlite_master "
                                   "WHERE name = 'subject'").fetchone()
    conn.close()
    with open(db / "cert9.db", "r+b") as file:  # the page's type byte: no b-tree page's any more
        file.seek((page - 1) * page_size)
        file.write(b"\x00")
    before = files_of(db)
    assert storesync("list", f"nss:{db}").returncode == 0
    source.write_bytes(cas["a"].pem + cas["b"].pem + cas["c"].pem)
    result = storesync("sync", source, f"nss:{db}")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert (f"nss store {db / 'cert9.db'}: is damaged (database disk image is malformed; " in result.stderr
            and "restore it from a backup, or recreate the database with certutil -N" in result.stderr)
    assert files_of(db) == before


def test_one_password_file_for_several_databases(tmp_path, cas):
    """A --password-file given for a protected database does not lock out an empty-password one."""
    protected, empty = new_db(tmp_path / "p", password=PASSWORD), new_db(tmp_path / "e")
    pw = tmp_path / "pw"
    pw.write_text(PASSWORD + "\n")
    bundle = tmp_path / "b.pem"
    bundle.write_bytes(cas["a"].pem)
    result = storesync("sync", "--password-file", pw, f"pem:{bundle}", f"nss:{protected}", f"nss:{empty}")
    assert result.returncode == 0, result.stderr
    assert "A" not in certutil_flags(empty) or True  # the label comes from the certificate
    assert len(certutil_flags(empty)) == 1 and len(certutil_flags(protected, "-f", pw)) == 1


def test_restore_never_leaves_unsigned_trust_even_when_cut_short(tmp_path, cas, monkeypatch):
    """A rollback interrupted between the two files still leaves every trust object signed."""
    from storesync.stores import nss as nss_module

    db = new_db(tmp_path / "db")
    sync([entry(cas["a"], label="A")], db)
    store = open_store(f"nss:{db}")
    shot = store.snapshot()
    # A re-trusted (its trust objects and signatures replaced) and B added
    sync([entry(cas["a"], {"server-auth": "trusted"}, label="A"), entry(cas["b"], label="B")], db)

    real_write, calls = nss_module.atomic_write, []

    def crash_after_first(path, data, **kw):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real_write(path, data, **kw)

    monkeypatch.setattr(nss_module, "atomic_write", crash_after_first)
    with pytest.raises(OSError):
        open_store(f"nss:{db}").restore(shot)
    monkeypatch.setattr(nss_module, "atomic_write", real_write)
    trust_set, after = read(db)
    assert not any("signature" in w for w in after.warnings)
    assert certutil_flags(db)["A"] == "CT,C,C"  # cert9.db is the old one, and its trust is signed
    open_store(f"nss:{db}").restore(shot)  # completed, it is the backup again
    assert set(certutil_flags(db)) == {"A"}


# --- the two trust classes ------------------------------------------------------------------


def trust_objects(db: Path, cas_der: bytes) -> dict[str, list[int]]:
    """Straight from cert9.db, not through storesync's reader: per trust class, the server-auth,
    client-auth, code-signing and e-mail values of the certificate's trust object."""
    from cryptography import x509

    cert = x509.load_der_x509_certificate(cas_der)
    serial = cert.serial_number.to_bytes((cert.serial_number.bit_length() + 8) // 8, "big")
    serial_der = bytes([0x02, len(serial)]) + serial
    conn = sqlite3.connect(db / "cert9.db")
    try:
        found = {}
        for name, cls, attrs in (("CKO_NSS_TRUST", nss.CKO_NSS_TRUST, nss.LEGACY_ATTR),
                                 ("CKO_TRUST", nss.CKO_TRUST, nss.P11_ATTR)):
            columns = ", ".join(nss.col(attrs[p]) for p in ("server-auth", "client-auth", "code-signing", "email"))
            rows = conn.execute(f"SELECT {columns} FROM nssPublic WHERE a0 = ? AND a82 = ?",
                                (nss.ulong(cls), serial_der)).fetchall()
            assert len(rows) == 1, (name, rows)
            found[name] = [int.from_bytes(v, "big") for v in rows[0]]
        return found
    finally:
        conn.close()


def test_a_sync_makes_the_two_trust_classes_agree_after_certutil_distrusts(tmp_path, cas):
    """certutil (NSS 3.87) writes `p,p,p` into the legacy CKO_NSS_TRUST object only, leaving the
    CKO_TRUST object storesync wrote trusting the root (NSS >= 3.114 reads that one first). The
    next sync finds nothing to change in the trust, yet rewrites that entry with both classes
    saying distrusted (a `~` line says why); a second sync is in sync."""
    source = tmp_path / "roots.pem"
    source.write_bytes(b"".join(c.pem for c in cas.values()))
    db = new_db(tmp_path / "db")
    assert storesync("sync", f"pem:{source}", f"nss:{db}").returncode == 0
    a = cas["a"].der
    synced = trust_objects(db, a)  # a TLS bundle: an anchor for server-auth
    assert synced["CKO_NSS_TRUST"][0] == nss.CKT_NSS_TRUSTED_DELEGATOR and synced["CKO_TRUST"][0] == nss.CKT_ANCHOR
    run("certutil", "-M", "-d", f"sql:{db}", "-n", "NSS Test a", "-t", "p,p,p")
    skewed = trust_objects(db, a)
    assert skewed["CKO_NSS_TRUST"] == [nss.CKT_NSS_NOT_TRUSTED] * 4 and skewed["CKO_TRUST"] == synced["CKO_TRUST"]

    result = storesync("sync", f"pem:{source}", f"nss:{db}")  # a bundle cannot say distrust: it stays
    assert result.returncode == 0, result.stdout + result.stderr
    lines = [line for line in result.stdout.splitlines() if "NSS Test a" in line]
    assert len(lines) == 2 and lines[0].startswith("  ~ ") and "the two NSS trust classes disagree" in lines[0] \
        and "both now say" in lines[0] and "distrusted" in lines[0], result.stdout
    assert lines[1].startswith("  ! ") and "distrusted here for server-auth: kept" in lines[1]
    assert trust_objects(db, a) == {"CKO_NSS_TRUST": [nss.CKT_NSS_NOT_TRUSTED] * 4,
                                    "CKO_TRUST": [nss.CKT_NOT_TRUSTED] * 4}
    assert certutil_flags(db)["NSS Test a"] == "p,p,p" and "certificate is valid" not in verify(db, "NSS Test a")
    assert trust_objects(db, cas["b"].der) == synced  # the others untouched
    again = storesync("sync", f"pem:{source}", f"nss:{db}")
    assert again.returncode == 0 and "in sync" in again.stdout and "disagree" not in again.stderr, \
        again.stdout + again.stderr
    integrity(db)
