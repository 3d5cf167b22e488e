"""Issue 18: NSS from the command line, counted rather than timed: what a one-shot read or write
of an NSS database imports and does. Each claim is checked against certutil or libnss3 where the
result could differ (trust read back, passwords)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import run, storesync
from test_nss import NOBODY, PASSWORD, certutil_add, certutil_flags, new_db, nobodys_database

CIPHERS = "cryptography.hazmat.primitives.ciphers"


def fresh_process(code: str) -> str:
    """Run `code` in a new interpreter (nothing imported yet) and return what it prints."""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def imported_after(code: str, *modules: str) -> list[str]:
    out = fresh_process(f"import sys\n{code}\nprint(' '.join(m for m in {modules!r} if m in sys.modules))")
    return out.split()


# --- the password check --------------------------------------------------------------------


def test_aes_cbc_decrypt_agrees_with_cryptography():
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    from storesync import pbe

    for key_length in (16, 24, 32):
        for size in (16, 48):
            key, iv, data = os.urandom(key_length), os.urandom(16), os.urandom(size)
            decryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
            assert pbe.aes_cbc_decrypt(key, iv, data) == decryptor.update(data) + decryptor.finalize()


def test_reading_signed_trust_imports_no_cipher(tmp_path, pki):
    """The empty password is proved by the password-check entry (never by a MAC: anyone can sign
    under it), decrypted by libcrypto: no cryptography cipher."""
    db = new_db(tmp_path / "db")
    certutil_add(db, "A", "CT,C,C", pki.ca("Speed Root A").write(tmp_path / "a.pem"))
    code = f"from storesync.stores import open_store\nprint(len(open_store('nss:{db}').read()))"
    assert fresh_process(code + f"\nimport sys\nprint({CIPHERS!r} in sys.modules)").split() == ["1", "False"]


def test_writing_a_fresh_database_imports_no_cipher(tmp_path, pki):
    """A fresh database has no MAC yet: the password-check entry decides, decrypted by libcrypto."""
    db = new_db(tmp_path / "db")
    pem = pki.ca("Speed Root B").write(tmp_path / "b.pem")
    code = ("from storesync.engine.plan import make_plan\nfrom storesync.stores import open_store\n"
            f"source, store = open_store('pem:{pem}').read(), open_store('nss:{db}')\n"
            "store.write(make_plan(source, store.read(), store.capabilities, store='t', purpose='any'))")
    assert imported_after(code, CIPHERS) == []
    assert certutil_flags(db) == {"Speed Root B": "CT,C,C"}


def test_a_password_database_with_trust_is_still_refused_without_its_password(tmp_path, pki):
    """The empty password's MAC key does not verify MACs made under a real password: refused as before."""
    db = new_db(tmp_path / "db", PASSWORD)
    pw = tmp_path / "db.pw"
    certutil_add(db, "A", "CT,C,C", pki.ca("Speed Root C").write(tmp_path / "c.pem"), "-f", pw)
    refused = storesync("list", f"nss:{db}")
    assert refused.returncode == 2 and "password-protected" in refused.stderr
    wrong = tmp_path / "wrong.pw"
    wrong.write_text("not it\n")
    assert "wrong" in storesync("list", f"nss:{db}?password-file={wrong}").stderr
    listed = storesync("list", f"nss:{db}?password-file={pw}", "--json")
    assert listed.returncode == 0 and "Speed Root C" in listed.stdout


# --- list --json without cryptography ------------------------------------------------------


def awkward_names():
    from cryptography import x509
    from cryptography.x509.name import _ASN1Type
    from cryptography.x509.oid import NameOID

    a = x509.NameAttribute
    return {
        "non-ascii": x509.Name([a(NameOID.COUNTRY_NAME, "CH"), a(NameOID.LOCALITY_NAME, "Zürich"),
                                a(NameOID.COMMON_NAME, "Ωmega 中文 Root")]),
        "multi-valued": x509.Name([x509.RelativeDistinguishedName([a(NameOID.ORGANIZATION_NAME, "Multi O"),
                                                                   a(NameOID.ORGANIZATIONAL_UNIT_NAME, "Multi OU")]),
                                   x509.RelativeDistinguishedName([a(NameOID.COMMON_NAME, "Multi CN")])]),
        "escapes": x509.Name([a(NameOID.ORGANIZATION_NAME, ' lead,comma+plus"quote\\back<lt>gt;semi trail '),
                              a(NameOID.ORGANIZATIONAL_UNIT_NAME, "#hash"), a(NameOID.LOCALITY_NAME, " "),
                              a(NameOID.STREET_ADDRESS, "nul\x00inside"), a(NameOID.COMMON_NAME, "Escapes Root")]),
        "unknown-oids": x509.Name([a(x509.ObjectIdentifier("1.3.6.1.4.1.99999.7"), "private arc"),
                                   a(NameOID.EMAIL_ADDRESS, "ca@example.test"), a(NameOID.DOMAIN_COMPONENT, "test"),
                                   a(NameOID.USER_ID, "uid1"), a(NameOID.SERIAL_NUMBER, "42"),
                                   a(NameOID.COMMON_NAME, "Unknown OIDs Root")]),
        "string-types": x509.Name([a(NameOID.COUNTRY_NAME, "DE", _ASN1Type.PrintableString),
                                   a(NameOID.ORGANIZATION_NAME, "T61 Org", _ASN1Type.T61String),
                                   a(NameOID.ORGANIZATIONAL_UNIT_NAME, "BMP Ünï ☃", _ASN1Type.BMPString),
                                   a(NameOID.LOCALITY_NAME, "Universal 𝄞", _ASN1Type.UniversalString),
                                   a(NameOID.COMMON_NAME, "ia5 root", _ASN1Type.IA5String)]),
        "long-cn": x509.Name([a(NameOID.COMMON_NAME, "W" * 70, _validate=False)]),
    }


@pytest.mark.filterwarnings("ignore:Attribute's length must be")  # the 70-character CN, on purpose
def test_rfc4514_renders_names_as_cryptography_does(pki):
    from cryptography import x509

    from storesync import der
    from storesync.model import rfc4514

    for label, subject in awkward_names().items():
        issued = pki.ca(subject)
        parsed = x509.load_der_x509_certificate(issued.der)
        assert rfc4514(der.cert_fields(issued.der).subject) == parsed.subject.rfc4514_string(), label
    # what it cannot render the same way it leaves to cryptography
    bit_string = der.encode(der.SEQUENCE, der.encode(der.SET, der.encode(
        der.SEQUENCE, der.encode_oid("2.5.4.45") + der.encode(0x03, b"\x00\x01"))))
    assert rfc4514(bit_string) is None
    latin1 = der.encode(der.SEQUENCE, der.encode(der.SET, der.encode(
        der.SEQUENCE, der.encode_oid("2.5.4.3") + der.encode(0x14, "Zürich".encode("latin-1")))))
    assert rfc4514(latin1) is None


def test_x509_time_reads_what_cryptography_reads(pki):
    import datetime as dt

    from cryptography import x509

    from storesync import der

    for before, after in ((dt.datetime(1999, 12, 31, 23, 59, 58), dt.datetime(2049, 12, 31, 23, 59, 59)),
                          (dt.datetime(1950, 1, 1), dt.datetime(2050, 1, 1, 0, 0, 1))):  # UTCTime, then GeneralizedTime
        issued = pki.ca("Times Root", not_before=before, not_after=after)
        parsed = x509.load_der_x509_certificate(issued.der)
        times = der.validity(der.cert_fields(issued.der).validity)
        assert times == (parsed.not_valid_before_utc, parsed.not_valid_after_utc)
    assert der.x509_time(0x18, b"20250101000000.5Z") is None  # fractions: cryptography's call
    assert der.x509_time(0x17, b"2501010000Z") is None
    assert der.x509_time(0x17, b"250101000000+") is None  # an offset, not Z
    assert der.x509_time(0x18, b"2025010100000 Z") is None
    assert der.x509_time(0x17, b"1\xd60526000000Z") is None  # not a year (it was read as 1999)


@pytest.mark.filterwarnings("ignore:Parsed a serial number")  # a root of the system's with a negative serial
def test_the_systems_roots_outlines_read_by_hand_are_cryptographys():
    """Subject and dates read by hand (what `list` shows for a certificate a sync checked) are
    cryptography's, for every root of the system's bundle."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    from storesync import der
    from storesync.model import rfc4514

    roots = x509.load_pem_x509_certificates(Path("/etc/ssl/certs/ca-certificates.crt").read_bytes())
    assert len(roots) > 50
    for root in roots:
        fields = der.cert_fields(root.public_bytes(Encoding.DER))
        assert rfc4514(fields.subject) == root.subject.rfc4514_string()
        assert der.validity(fields.validity) == (root.not_valid_before_utc, root.not_valid_after_utc)


WALKED = "len(walked)"  # how many certificates, subjects and validities a `list` read by hand


def list_json_in_process(db: Path, state: Path, asked: str = "'cryptography' in sys.modules") -> tuple[str, object]:
    """`storesync list nss:DB --json` in a fresh interpreter: (its output, the value of the
    expression `asked` after it: by default whether it imported cryptography)."""
    code = ("import contextlib, io, sys\nfrom storesync.cli import main\nfrom storesync import der, model\n"
            "walked = []\nrfc4514, validity, fields = model.rfc4514, der.validity, der.cert_fields\n"
            "model.rfc4514 = lambda name: (walked.append(1), rfc4514(name))[1]\n"
            "der.validity = lambda data: (walked.append(1), validity(data))[1]\n"
            "der.cert_fields = lambda data: (walked.append(1), fields(data))[1]\n"
            f"sys.argv = ['storesync', 'list', 'nss:{db}', '--json']\nout = io.StringIO()\n"
            "with contextlib.redirect_stdout(out):\n    try:\n        main()\n    except SystemExit:\n        pass\n"
            f"print(out.getvalue(), {asked}, sep='\\n')")
    env = {**os.environ, "STORESYNC_STATE_DIR": str(state)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    output, _, said = result.stdout.rstrip("\n").rpartition("\n")
    return output, ast.literal_eval(said)


@pytest.mark.filterwarnings("ignore:Attribute's length must be")  # the 70-character CN, on purpose
def test_list_json_of_synced_certificates_needs_no_cryptography_and_prints_the_same(tmp_path, pki):
    """A sync remembers how cryptography parsed each root (warnings too); `list --json` then prints
    subjects and dates read by hand, byte for byte what a run without that memory prints."""
    from conftest import with_serial

    issued = [pki.ca(subject) for subject in awkward_names().values()]
    ders = [i.der for i in issued]
    negative = pki.ca("Negative Serial Root")
    ders.append(with_serial(negative, negative, b"\xff\x01"))  # a real-world warning: Go Daddy's roots
    from conftest import pem_of

    bundle = tmp_path / "awkward.pem"
    bundle.write_bytes(b"".join(pem_of(d) for d in ders))
    db, state = new_db(tmp_path / "db"), tmp_path / "state"
    synced = storesync("sync", f"pem:{bundle}", f"nss:{db}", env={**os.environ, "STORESYNC_STATE_DIR": str(state)})
    assert synced.returncode == 0, synced.stderr
    remembered, imported = list_json_in_process(db, state)
    assert not imported
    fresh, imported_fresh = list_json_in_process(db, tmp_path / "no-memory")
    assert imported_fresh
    assert remembered == fresh
    import json

    entries = json.loads(remembered)["entries"]
    assert len(entries) == len(ders)
    assert {e["label"] for e in entries if "parse_warning" in e} == {"Negative Serial Root", "W" * 70}


@pytest.mark.filterwarnings("ignore:Attribute's length must be")  # the 70-character CN, on purpose
def test_a_second_list_shows_each_certificate_by_its_remembered_outline(tmp_path, pki):
    """`list` remembers the subject and dates it read by hand (pure functions of the bytes, kept
    by their SHA-256 as the checks are): the next `list` prints the same, byte for byte, and reads
    no subject or validity again (they were two fifths of a `list` of the system roots), nor the
    certificate's outline to know that it has one (a remembered outline says so)."""
    from conftest import pem_of

    ders = [pki.ca(subject).der for subject in awkward_names().values()]
    bundle = tmp_path / "awkward.pem"
    bundle.write_bytes(b"".join(pem_of(d) for d in ders))
    db, state = new_db(tmp_path / "db"), tmp_path / "state"
    synced = storesync("sync", f"pem:{bundle}", f"nss:{db}", env={**os.environ, "STORESYNC_STATE_DIR": str(state)})
    assert synced.returncode == 0, synced.stderr
    first, walked = list_json_in_process(db, state, WALKED)
    assert walked == 3 * len(ders)  # each certificate's outline, subject and validity, once
    again, walked_again = list_json_in_process(db, state, WALKED)
    assert (again, walked_again) == (first, 0)
    assert again == list_json_in_process(db, tmp_path / "no-memory")[0]  # cryptography's own, parsed anew


def test_a_list_of_remembered_certificates_imports_neither_datetime_nor_the_sqlite3_package(tmp_path, pki):
    """On Python 3.11 both run pure Python at import that `list` does without (1/40 of a `list` of
    the system roots): datetime.py defines a twin of each C type it then replaces, and the sqlite3
    package imports datetime for adapters storesync never uses. The C modules do the same work."""
    db, state = new_db(tmp_path / "db"), tmp_path / "state"
    pem = pki.ca("Dated Root").write(tmp_path / "dated.pem")
    synced = storesync("sync", f"pem:{pem}", f"nss:{db}", env={**os.environ, "STORESYNC_STATE_DIR": str(state)})
    assert synced.returncode == 0, synced.stderr
    first = list_json_in_process(db, state)[0]  # the outline is remembered from here on
    output, imported = list_json_in_process(db, state, "[m for m in ('datetime', 'sqlite3') if m in sys.modules]")
    assert output == first and imported == []
    import json

    entry, = json.loads(output)["entries"]
    assert entry["label"] == "Dated Root" and entry["not_after"].endswith("Z")


# --- reads per sync ------------------------------------------------------------------------


def test_a_sync_reads_the_database_once_before_writing_and_once_to_check(tmp_path, pki):
    """The unlocked read stands under the lock when the database's version did not change."""
    db = new_db(tmp_path / "db")
    pem = pki.ca("Speed Root D").write(tmp_path / "d.pem")
    code = ("import sys\nfrom storesync.stores import nss\nfrom storesync.cli import main\ncount = [0]\n"
            "read = nss.NssStore.read\n"
            "def counted(self):\n    count[0] += 1\n    return read(self)\n"
            f"nss.NssStore.read = counted\nsys.argv = ['storesync', 'sync', 'pem:{pem}', 'nss:{db}']\n"
            "try:\n    main()\nexcept SystemExit as exc:\n    assert not exc.code, exc.code\n"
            "print(count[0])")
    assert fresh_process(code).splitlines()[-1] == "2"
    assert certutil_flags(db)["Speed Root D"].startswith("C")


def test_the_version_changes_with_every_write_by_certutil(tmp_path, pki):
    from storesync.stores import open_store

    db = new_db(tmp_path / "db")
    store = open_store(f"nss:{db}")
    versions = [store.version()]
    pem = pki.ca("Speed Root E").write(tmp_path / "e.pem")
    certutil_add(db, "E", "CT,C,C", pem)
    versions.append(store.version())
    run("certutil", "-M", "-d", f"sql:{db}", "-n", "E", "-t", "p,p,p")  # same rows, other values
    versions.append(store.version())
    run("certutil", "-M", "-d", f"sql:{db}", "-n", "E", "-t", "CT,C,C")
    versions.append(store.version())
    assert None not in versions and len(set(versions)) == 4
    assert store.version() == versions[-1]


def counted_cli(setup: str, printed: str, *argv) -> str:
    """`storesync ARGV` in a fresh interpreter after `setup` (which wraps what is counted): the
    last line it prints, `printed` evaluated after the run."""
    code = (f"import sys\n{setup}\nfrom storesync.cli import main\nsys.argv = ['storesync', *sys.argv[1:]]\n"
            f"try:\n    main()\nexcept SystemExit as exc:\n    assert not exc.code, exc.code\nprint({printed})")
    result = subprocess.run([sys.executable, "-c", code, *map(str, argv)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()[-1]


def test_the_check_after_a_write_parses_no_certificate_it_wrote(tmp_path, pki):
    """The read-back still reads every byte from disk, but a certificate whose DER is the one just
    written is not parsed again; a listing parses each certificate once."""
    db = new_db(tmp_path / "db")
    bundle = tmp_path / "three.pem"
    bundle.write_bytes(b"".join(pki.ca(f"Speed Root F{i}").pem for i in range(3)))
    setup = ("from storesync import der\nfrom storesync.stores import nss\n"
             "inside, parsed = [False], [0]\nread, fields = nss.NssStore.read, der.cert_fields\n"
             "def counted_read(self):\n    inside[0] = True\n    try:\n        return read(self)\n"
             "    finally:\n        inside[0] = False\n"
             "def counted_fields(data):\n    parsed[0] += inside[0]\n    return fields(data)\n"
             "nss.NssStore.read, der.cert_fields = counted_read, counted_fields")
    assert counted_cli(setup, "parsed[0]", "sync", f"pem:{bundle}", f"nss:{db}") == "0"
    assert len(certutil_flags(db)) == 3


def test_the_check_after_a_write_hashes_no_certificate_it_wrote(tmp_path, pki):
    """Issue 18: the read-back takes the certificate of bytes byte for byte those it wrote from
    the plan (`Store.known`, compared whole as a dict key), with its SHA-256: a certificate is
    hashed once per run, not again for each read (144 SHA-256 of the system roots)."""
    db = new_db(tmp_path / "db")
    bundle = tmp_path / "three.pem"
    bundle.write_bytes(b"".join(pki.ca(f"Speed Root H{i}").pem for i in range(3)))
    setup = ("from storesync.stores import nss\nmade, make = [0], nss.Certificate\n"
             "def counted(*args):\n    made[0] += 1\n    return make(*args)\nnss.Certificate = counted")
    assert counted_cli(setup, "made[0]", "sync", f"pem:{bundle}", f"nss:{db}") == "0"
    assert counted_cli(setup, "made[0]", "list", f"nss:{db}") == "3"  # a read of what this run did not write hashes each
    assert set(certutil_flags(db)) == {f"Speed Root H{i}" for i in range(3)}


class Counted:
    """A connection that counts the statements Python hands it (an executemany is one)."""

    def __init__(self, conn, count):
        self._conn, self._count = conn, count

    def __getattr__(self, name):
        if name in ("execute", "executemany"):
            self._count[0] += 1
        return getattr(self._conn, name)


def statements_to_write(tmp_path: Path, pki, n: int) -> int:
    """Calls into SQLite the write of `n` new roots into a fresh database makes."""
    from storesync.engine.plan import make_plan
    from storesync.model import TrustSet
    from storesync.stores import nss, open_store

    db = new_db(tmp_path / f"db{n}")
    source = TrustSet(nss.Entry(nss.Certificate(pki.ca(f"Speed Root G{n}-{i}").der)) for i in range(n))
    store = open_store(f"nss:{db}")
    plan = make_plan(source, store.read(), store.capabilities, store="t", purpose="any")
    count, connect = [0], store._connect

    def traced(path, readonly):
        return Counted(connect(path, readonly), count)

    store._connect = traced
    store.write(plan)
    assert len(open_store(f"nss:{db}").read()) == n
    return count[0]


def test_a_write_runs_as_many_statements_for_six_roots_as_for_two(tmp_path, pki):
    assert statements_to_write(tmp_path, pki, 6) == statements_to_write(tmp_path, pki, 2)


class Bound:
    """A connection that counts the values bound into nssPublic's rows."""

    def __init__(self, conn, count):
        self._conn, self._count = conn, count

    def executemany(self, sql, rows):
        rows = list(rows)
        if sql.startswith("INSERT INTO nssPublic"):
            self._count[0] += sum(map(len, rows))
        return self._conn.executemany(sql, rows)

    def __getattr__(self, name):
        return getattr(self._conn, name)


def test_a_write_binds_only_what_differs_from_root_to_root(tmp_path, pki):
    """Issue 18: what every certificate or trust object of a kind stores alike (class, token,
    private and modifiable flags, the trust states of a trust map, the hash algorithm) is written
    into the INSERT as BLOB literals: a root binds its id, names, serial, value, key id and hashes,
    16 values in all, where it bound 41. The objects are byte for byte certutil's (test_nss)."""
    import sqlite3

    from storesync.engine.plan import make_plan
    from storesync.model import TrustSet
    from storesync.stores import nss, open_store

    db = new_db(tmp_path / "db")
    source = TrustSet(nss.Entry(nss.Certificate(pki.ca(f"Bound Root {i}").der)) for i in range(4))
    store = open_store(f"nss:{db}")
    plan = make_plan(source, store.read(), store.capabilities, store="t", purpose="any")
    count, connect = [0], store._connect
    store._connect = lambda path, readonly: Bound(connect(path, readonly), count)
    store.write(plan)
    assert count[0] == 4 * 16
    assert certutil_flags(db) == {f"Bound Root {i}": "CT,C,C" for i in range(4)}
    with sqlite3.connect(db / "cert9.db") as conn:
        kinds = {kind for row in conn.execute("SELECT typeof(a0), typeof(a1), typeof(ace536358), typeof(a62c) "
                                              "FROM nssPublic WHERE a0 != ?", (nss.ulong(nss.CKO_CERTIFICATE),))
                 for kind in row}
    assert kinds == {"blob", "null"}  # each trust object has its class's attributes, as BLOBs


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to write as another user")
def test_root_writes_a_users_signed_database_as_that_user(pki):
    """The write runs in a child as the database's owner, who may not read root's Python: what
    it needs (random ids, the password check's AES through libcrypto) is loaded before. The
    second sync finds signed trust, so its own read proves the password by a MAC, not by AES."""
    with nobodys_database() as (base, db):
        first, second = (pki.ca(f"Owner Root {name}").write(base / f"{name}.pem") for name in ("First", "Second"))
        elsewhere = new_db(base / "elsewhere")  # the second root's checks are remembered: nothing loads libcrypto
        for pem, target in ((first, db), (second, elsewhere), (second, db)):
            result = storesync("sync", "--mode", "add", f"pem:{pem}", f"nss:{target}")
            assert result.returncode == 0, result.stderr
        assert set(certutil_flags(db)) == {"Owner Root First", "Owner Root Second"}
        assert {p.stat().st_uid for p in [db, *db.iterdir()]} == {NOBODY}


def test_a_list_remembers_how_cryptography_read_the_certificates_for_the_next_list(tmp_path, pki):
    """A database storesync never synced (or synced before parses were remembered): the first
    list parses with cryptography, the next one reads the same from the DER alone."""
    db = new_db(tmp_path / "db")
    root = pki.ca("Listed Once Root").write(tmp_path / "root.pem")
    run("certutil", "-A", "-d", f"sql:{db}", "-n", "listed", "-t", "C,,", "-i", str(root))
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    first, imported = list_json_in_process(db, state)
    second, imported_again = list_json_in_process(db, state)
    assert imported and not imported_again and first == second and "Listed Once Root" in first


# --- the empty password's check, remembered --------------------------------------------------


def test_the_empty_password_check_is_remembered_for_the_same_key_db(tmp_path, pki):
    """The check entry decrypts under the empty password: a pure function of key4.db's global salt
    and the entry, remembered by their SHA-256 in the private state dir. The next list of the same
    database runs no AES (no ctypes import); a changed salt is checked again, and refused."""
    import sqlite3

    db = new_db(tmp_path / "db")
    certutil_add(db, "Remembered", "CT,C,C", pki.ca("Remembered Password Root").write(tmp_path / "r.pem"))
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    env = {**os.environ, "STORESYNC_STATE_DIR": str(state)}
    argv = ["list", f"nss:{db}", "--json"]
    code = ("import contextlib, io, sys\nfrom storesync.cli import main\n"
            f"sys.argv = ['storesync', *{argv!r}]\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n    main()\nprint('ctypes' in sys.modules)")
    first, again = (subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
                    for _ in range(2))
    assert (first.stdout, again.stdout) == ("True\n", "False\n"), first.stderr + again.stderr
    remembered = [line for line in (state / "passed-checks").read_text().splitlines() if "nss" in line]
    assert len(remembered) == 1 and remembered[0].endswith(" nss-empty-password")
    listed = storesync(*argv, env=env)
    assert listed.returncode == 0 and "Remembered Password Root" in listed.stdout

    with sqlite3.connect(db / "key4.db") as conn:  # another salt: the entry no longer decrypts under ""
        salt = conn.execute("SELECT item1 FROM metaData WHERE id = 'password'").fetchone()[0]
        conn.execute("UPDATE metaData SET item1 = ? WHERE id = 'password'", (bytes(len(salt)),))
    refused = storesync(*argv, env=env)
    assert refused.returncode == 2 and "password-protected" in refused.stderr


def test_a_real_password_is_never_remembered(tmp_path, pki):
    """Only the empty password's verdict is kept: for a real one the file would hold a quick hash
    of it. A database given a password at the same path is refused without it."""
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    env = {**os.environ, "STORESYNC_STATE_DIR": str(state)}
    db = new_db(tmp_path / "db", PASSWORD)
    pw = tmp_path / "db.pw"
    certutil_add(db, "A", "CT,C,C", pki.ca("Real Password Root").write(tmp_path / "a.pem"), "-f", pw)
    assert storesync("list", f"nss:{db}?password-file={pw}", "--json", env=env).returncode == 0
    assert "nss" not in (state / "passed-checks").read_text()

    empty = new_db(tmp_path / "empty")
    certutil_add(empty, "B", "CT,C,C", pki.ca("Empty Password Root").write(tmp_path / "b.pem"))
    assert storesync("list", f"nss:{empty}", "--json", env=env).returncode == 0
    for name in ("cert9.db", "key4.db"):  # the same path now holds the password-protected database
        (empty / name).write_bytes((db / name).read_bytes())
    refused = storesync("list", f"nss:{empty}", env=env)
    assert refused.returncode == 2 and "password-protected" in refused.stderr


def test_writing_draws_ids_and_salts_without_importing_random(tmp_path, pki):
    """Object ids and MAC salts come from os.urandom (what `secrets` uses), not through `secrets`,
    whose `random` import costs a one-shot write more than drawing 300 ids. The ids stay distinct
    and certutil reads the trust."""
    db = new_db(tmp_path / "db")
    pems = [pki.ca(f"Random Root {i}").write(tmp_path / f"{i}.pem") for i in range(3)]
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(b"".join(p.read_bytes() for p in pems))
    code = ("from storesync.engine.plan import make_plan\nfrom storesync.stores import open_store\n"
            f"source, store = open_store('pem:{bundle}').read(), open_store('nss:{db}')\n"
            "store.write(make_plan(source, store.read(), store.capabilities, store='t', purpose='any'))")
    assert imported_after(code, "random", "secrets") == []
    assert certutil_flags(db) == {f"Random Root {i}": "CT,C,C" for i in range(3)}
    import sqlite3

    with sqlite3.connect(db / "cert9.db") as conn:
        ids = [row[0] for row in conn.execute("SELECT id FROM nssPublic")]
    assert len(ids) == len(set(ids)) == 9 and all(0 < i <= 0x3FFFFFFF for i in ids)


def test_a_write_draws_its_random_ids_and_salt_in_a_few_system_calls(tmp_path, pki, monkeypatch):
    """Issue 18: one getrandom call per new object was 435 system calls for the system roots:
    ids are drawn 256 at a time (still uniform in 1..2**30-1, each checked unused), the MAC salt
    once."""
    from storesync.engine.plan import make_plan
    from storesync.model import TrustSet
    from storesync.stores import nss, open_store

    db = new_db(tmp_path / "db")
    source = TrustSet(nss.Entry(nss.Certificate(pki.ca(f"Drawn Root {i}").der)) for i in range(90))
    store = open_store(f"nss:{db}")
    plan = make_plan(source, store.read(), store.capabilities, store="t", purpose="any")
    calls, urandom = [], os.urandom
    monkeypatch.setattr(os, "urandom", lambda n: calls.append(n) or urandom(n))
    store.write(plan)
    assert len(calls) == 3  # 270 objects: two draws of 256 ids, and the salt
    assert len(open_store(f"nss:{db}").read()) == 90
    assert len(certutil_flags(db)) == 90


# --- MACs ----------------------------------------------------------------------------------


def test_hmac_sha256_is_hmacs_hmac():
    import hmac

    from storesync.stores.nss import hmac_sha256

    for key_length in (0, 1, 32, 63, 64, 65, 200):
        key = os.urandom(key_length)
        mac = hmac_sha256(key)
        for size in (0, 12, 40, 64, 65, 1000):
            message = os.urandom(size)
            assert mac(message) == hmac.digest(key, message, "sha256")
        assert mac(b"again") == hmac.digest(key, b"again", "sha256")  # the kept states are not changed


def test_the_read_back_checks_its_own_signatures_by_equality_and_still_catches_a_changed_value(tmp_path, pki,
                                                                                            monkeypatch):
    """A write's read-back computes no HMAC for a signature the write made: it was made under this
    key for this message (`_SIGNED`). A value changed after the write, its signature kept, is
    still caught, in the same process, as certutil catches it."""
    import sqlite3

    from storesync.engine.plan import make_plan
    from storesync.model import TrustSet
    from storesync.stores import nss, open_store

    db = new_db(tmp_path / "db")
    roots = [nss.Certificate(pki.ca(f"Own Root {i}").der) for i in range(3)]
    store = open_store(f"nss:{db}")
    store.write(make_plan(TrustSet(map(nss.Entry, roots)), store.read(), store.capabilities, store="t", purpose="any"))
    macs, made = [0], nss.hmac_sha256

    def counted(key):
        mac = made(key)

        def count(message):
            macs[0] += 1
            return mac(message)

        return count

    monkeypatch.setattr(nss, "hmac_sha256", counted)
    assert len(open_store(f"nss:{db}").read()) == 3
    assert macs[0] <= 1  # at most the one that proves the password

    with sqlite3.connect(db / "cert9.db") as conn:  # Own Root 0: server trust made peer trust, signatures kept
        for cls, attribute, peer in ((nss.CKO_NSS_TRUST, nss.NSS_SERVER, nss.CKT_NSS_TRUSTED),
                                     (nss.CKO_TRUST, nss.P11_SERVER, nss.CKT_TRUSTED)):
            conn.execute(f"UPDATE nssPublic SET {nss.col(attribute)} = ? WHERE a0 = ? AND a81 = ?",
                         (nss.ulong(peer), nss.ulong(cls), roots[0].fields.issuer))
    assert certutil_flags(db)["Own Root 0"] == ",,"
    again = open_store(f"nss:{db}").read()
    assert {e.cert for e in again.values()} == set(roots[1:])


def test_a_write_and_its_read_set_each_mac_key_up_once(tmp_path, pki, monkeypatch):
    """13 MACs per certificate written (7 legacy and 6 PKCS#11 trust attributes), checked again
    on read, each under the key of its salt: the key's HMAC states are made once per salt
    (`hmac_sha256`), never once per MAC (`hmac.digest`). certutil reads every trust they sign."""
    import hmac

    from storesync.engine.plan import make_plan
    from storesync.model import TrustSet
    from storesync.stores import nss, open_store

    db = new_db(tmp_path / "db")
    source = TrustSet(nss.Entry(nss.Certificate(pki.ca(f"Mac Root {i}").der)) for i in range(5))
    store = open_store(f"nss:{db}")
    plan = make_plan(source, store.read(), store.capabilities, store="t", purpose="any")
    setups, per_mac, made = [0], [0], nss.hmac_sha256
    digest = hmac.digest

    def counted_setup(key):
        setups[0] += 1
        return made(key)

    def counted_digest(*args, **kwargs):
        per_mac[0] += 1
        return digest(*args, **kwargs)

    monkeypatch.setattr(nss, "hmac_sha256", counted_setup)
    monkeypatch.setattr(hmac, "digest", counted_digest)
    store.write(plan)
    assert (setups[0], per_mac[0]) == (1, 0)
    again = open_store(f"nss:{db}").read()
    assert (setups[0], per_mac[0]) == (2, 0)
    assert len(again) == 5 and all(e.trust for e in again.values())
    assert certutil_flags(db) == {f"Mac Root {i}": "CT,C,C" for i in range(5)}


def test_bytes_are_bound_without_asking_for_an_adapter(tmp_path, pki):
    """sqlite3 looks for an adapter of every bytes parameter (int and str it binds at once), and
    that failed lookup raises and drops an AttributeError per value. The NSS store registers the
    identity adapter for bytes: found at once, and the values stay BLOBs that certutil reads. It
    is bytes.__bytes__, which takes no arguments to parse (the type `bytes`, called, does)."""
    import sqlite3

    from storesync.stores import nss  # noqa: F401 - registers it

    adapter = sqlite3.adapters.get((bytes, sqlite3.PrepareProtocol))
    assert adapter == bytes.__bytes__ and adapter(b"\xa5\x00\x5a") == b"\xa5\x00\x5a"
    db = new_db(tmp_path / "db")
    pem = pki.ca("Blob Root").write(tmp_path / "blob.pem")
    assert storesync("sync", f"pem:{pem}", f"nss:{db}").returncode == 0
    assert certutil_flags(db)["Blob Root"].startswith("C")
    with sqlite3.connect(db / "cert9.db") as conn:
        kinds = {row[0] for row in conn.execute("SELECT typeof(a11) FROM nssPublic WHERE a11 IS NOT NULL")}
        kinds |= {row[0] for row in conn.execute("SELECT typeof(a81) FROM nssPublic")}
    assert kinds == {"blob"}
    with sqlite3.connect(db / "key4.db") as conn:
        assert {row[0] for row in conn.execute("SELECT typeof(item1) FROM metaData WHERE id LIKE 'sig_%'")} == {"blob"}


def test_mac_keys_of_one_salt_and_count_but_other_lengths_are_each_derived():
    """A signature's PBKDF2 parameters name its key's length: two signatures with the same salt
    and iterations but other lengths need other keys (the cache once returned the first)."""
    from storesync import pbe
    from storesync.stores import nss

    keys = nss.KeyDB(b"\x01" * 20, None)
    keys.password = b""
    salt = b"\x02" * 32
    long, short = keys.mac_key(salt, 1, 32), keys.mac_key(salt, 1, 16)
    assert len(long) == 32 and len(short) == 16
    assert short == pbe.pbkdf2("sha256", keys.pass_key(b""), salt, 1, 16)


class Rows:
    """A connection that counts the signature rows its queries return."""

    def __init__(self, conn, count):
        self._conn, self._count = conn, count

    def execute(self, sql, *args):
        cursor = self._conn.execute(sql, *args)
        if not sql.startswith("SELECT id, item1 FROM metaData"):
            return cursor
        rows = cursor.fetchall()
        self._count[0] += len(rows)
        return Fetched(rows)

    def __getattr__(self, name):
        return getattr(self._conn, name)


class Fetched:
    def __init__(self, rows):
        self.rows = rows

    def fetchall(self):
        return self.rows


def signature_rows_read(db: Path) -> tuple[int, dict]:
    from storesync.stores import open_store

    store, count = open_store(f"nss:{db}"), [0]
    connect = store._connect
    store._connect = lambda path, readonly: Rows(connect(path, readonly), count)
    trust = {e.label: dict(e.trust) for e in store.read().values()}
    return count[0], trust


def test_a_read_looks_up_only_the_signatures_of_trust_that_says_something(tmp_path, pki):
    """Issue 18: a read checks the signatures of the trust attributes that state trust or distrust
    for a purpose and, for an object that trusts, of everything NSS fetches with that trust (its
    four purposes, step-up and certificate hash: one failing fails them all, `_signed`); not
    the MD5 no NSS reads, nor the rest of an object that only distrusts. Looked up by id while
    those are under half of the signatures: a database that distrusts (`p,,` in certutil 3.87,
    which writes the legacy class alone: server and client distrust, 2 of 7); read all at once
    where they are not (`C,,`: 6 of 7). A signature moved from another object is caught either way,
    as certutil catches it."""
    import sqlite3

    from storesync.stores import nss

    distrusting = new_db(tmp_path / "distrusting")
    for i in range(3):
        certutil_add(distrusting, f"Bad Root {i}", "p,,", pki.ca(f"Bad Root {i}").write(tmp_path / f"b{i}.pem"))
    rows, trust = signature_rows_read(distrusting)
    assert rows == 3 * 2
    assert trust == {f"Bad Root {i}": {"server-auth": "distrusted", "client-auth": "distrusted"} for i in range(3)}

    db = new_db(tmp_path / "db")
    for i in range(3):
        certutil_add(db, f"Server Root {i}", "C,,", pki.ca(f"Server Root {i}").write(tmp_path / f"s{i}.pem"))
    rows, trust = signature_rows_read(db)
    assert rows == 3 * 7
    assert trust == {f"Server Root {i}": {"server-auth": "trusted"} for i in range(3)}

    with sqlite3.connect(db / "cert9.db") as conn:  # one legacy trust object's server signature, swapped for another's
        ids = [r[0] for r in conn.execute("SELECT id FROM nssPublic WHERE a0 = ?", (nss.ulong(nss.CKO_NSS_TRUST),))]
    with sqlite3.connect(db / "key4.db") as conn:
        other = conn.execute("SELECT item1 FROM metaData WHERE id = ?", (nss.sig_id(ids[1], nss.NSS_SERVER),)).fetchone()[0]
        conn.execute("UPDATE metaData SET item1 = ? WHERE id = ?", (other, nss.sig_id(ids[0], nss.NSS_SERVER)))
    rows, trust = signature_rows_read(db)
    assert rows == 3 * 7 and set(trust) == {"Server Root 1", "Server Root 2"}  # its trust counts as unspecified
    assert certutil_flags(db) == {"Server Root 0": ",,", "Server Root 1": "C,,", "Server Root 2": "C,,"}

    everything = new_db(tmp_path / "everything")
    certutil_add(everything, "All Root", "CT,C,C", pki.ca("All Root").write(tmp_path / "all.pem"))
    rows, trust = signature_rows_read(everything)
    assert rows == 7  # certutil 3.87 writes the legacy class alone: 4 of its 7 say something, so one scan
    assert trust == {"All Root": {p: "trusted" for p in ("server-auth", "client-auth", "email", "code-signing")}}
