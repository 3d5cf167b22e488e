"""Issues 3 and 18: the system roots with trust into a fresh NSS database, storesync vs a
`certutil -A` loop vs `certutil -B` batch (goal: the CLI >= 20x faster than the loop); and reading
a database with all its trust, storesync vs `certutil -L` plus one `certutil -L -n NICK -a` per
certificate (goal >= 20x). Contenders run in turns on the same files."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from _timing import BUNDLE, STORESYNC, median_time, side_by_side, table  # noqa: E402

from storesync.engine.plan import make_plan  # noqa: E402
from storesync.stores import open_store  # noqa: E402

scratch = Path(tempfile.mkdtemp(prefix="storesync-bench-nss-"))
state = scratch / "state"  # the checks a sync passed are remembered here (storesync.loadable)
os.environ["STORESYNC_STATE_DIR"] = str(state)
source = open_store(f"pem:{BUNDLE}").read()
pems = []
for i, entry in enumerate(source.values()):
    pem = scratch / f"{i}.der"
    pem.write_bytes(entry.cert.der)
    pems.append((f"{entry.display_label} {i}", pem))
batch = scratch / "batch.txt"
batch.write_text("".join(f'-A -n "{nick}" -t "CT,C,C" -i {pem}\n' for nick, pem in pems))
runs = iter(range(10**6))
db = scratch / "db"


def fresh():
    global db
    db = scratch / f"db{next(runs)}"  # a database no earlier run used
    db.mkdir()
    subprocess.run(["certutil", "-N", "-d", f"sql:{db}", "--empty-password"], check=True, capture_output=True)


def forget_checks():
    shutil.rmtree(state, ignore_errors=True)
    fresh()


def run(*argv: str):
    return lambda: subprocess.run([str(a).replace("DB", str(db)) for a in argv], check=True, capture_output=True)


def certutil_loop():
    for nick, pem in pems:
        subprocess.run(["certutil", "-A", "-d", f"sql:{db}", "-n", nick, "-t", "CT,C,C", "-i", str(pem)],
                       check=True, capture_output=True)


def api_write():
    store = open_store(f"nss:{db}")
    store.write(make_plan(source, store.read(), store.capabilities, store="bench", purpose="any"))


def certutil_read():
    listing = subprocess.run(["certutil", "-L", "-d", f"sql:{db}"], check=True, capture_output=True, text=True)
    for line in listing.stdout.splitlines()[4:]:
        nick = line.rstrip().rpartition(" ")[0].strip()
        if nick:
            subprocess.run(["certutil", "-L", "-d", f"sql:{db}", "-n", nick, "-a"], check=True, capture_output=True)


ours = run(*STORESYNC, "sync", f"pem:{BUNDLE}", "nss:DB")
# What any Python writer of this database pays before its first row: the interpreter and the
# modules it cannot do without (re: pip's `storesync` script imports it; sqlite3; hashlib and
# hmac for the digests and the 13 MACs a root needs; json for the records `rollback` reads).
FLOOR_IMPORTS = "import re, sqlite3, hashlib, hmac, json"
floor = run(sys.executable, "-c", FLOOR_IMPORTS)
# The least any Python writer of the roots does: given each root's DER in a file of its own, one
# certificate and two trust rows per root and its 13 signatures (HMAC-SHA256, under a key derived
# as NSS derives it), in one transaction per file. It parses no PEM nor certificate, checks nothing,
# keeps no backup and reads nothing back: a floor, not a database NSS would read.
LEAST_WRITER = """import hashlib, hmac, os, sqlite3, sys
cert = sqlite3.connect(f"{sys.argv[1]}/cert9.db", isolation_level=None)
key = sqlite3.connect(f"{sys.argv[1]}/key4.db", isolation_level=None)
cert.execute("BEGIN IMMEDIATE"); key.execute("BEGIN IMMEDIATE")
salt = key.execute("SELECT item1 FROM metaData WHERE id = 'password'").fetchone()[0]
mac = hmac.new(hashlib.pbkdf2_hmac("sha256", hashlib.sha1(salt).digest(), os.urandom(32), 1), digestmod="sha256")
rows, signatures = [], []
for n, path in enumerate(sys.argv[2:]):
    with open(path, "rb") as file:
        der = file.read()
    i, sha1 = 3 * n + 1, hashlib.sha1(der).digest()
    rows += [(i, b"\\0\\0\\0\\1", der, sha1), (i + 1, b"\\xceSC\\3", hashlib.md5(der).digest(), sha1),
             (i + 2, b"\\0\\0\\0\\3", hashlib.sha256(der).digest(), sha1)]
    for a in range(13):
        signed = mac.copy()
        signed.update(i.to_bytes(4, "big") + a.to_bytes(4, "big") + sha1)
        signatures.append((f"sig_cert_{i:08x}_{a:08x}", signed.digest()))
cert.executemany("INSERT INTO nssPublic (id, a0, a11, a81) VALUES (?, ?, ?, ?)", rows)
key.executemany("INSERT INTO metaData (id, item1, item2) VALUES (?, ?, NULL)", signatures)
key.execute("COMMIT"); cert.execute("COMMIT")"""
least_writer = run(sys.executable, "-c", LEAST_WRITER, "DB", *(pem for _, pem in pems))
fresh()
ours()  # the roots' checks are remembered from here on, as on a machine that synced them once before
written = side_by_side({
    "ours": (ours, fresh),
    "ours_cold": (ours, forget_checks),
    "loop": (certutil_loop, fresh),
    "batch": (run("certutil", "-B", "-d", "sql:DB", "-i", batch), fresh),
    "floor": (floor, None),
    "least": (least_writer, fresh),
}, rounds=15)
ours_api = median_time(api_write, before=fresh)

# The least any Python reader of the database does: start, import what it needs, fetch every object
# and every signature, and print each certificate's SHA-256 and nickname as JSON. It checks no
# signature nor certificate hash, decodes no trust, and parses no certificate: a floor, not a reader.
LEAST_READER = """import hashlib, json, sqlite3, sys
cert = sqlite3.connect(f"file:{sys.argv[1]}/cert9.db?mode=ro", uri=True)
rows = cert.execute("SELECT id, a0, a3, a11, a81, a82, a102 FROM nssPublic").fetchall()
key = sqlite3.connect(f"file:{sys.argv[1]}/key4.db?mode=ro", uri=True)
signatures = dict(key.execute("SELECT id, item1 FROM metaData WHERE id LIKE 'sig_cert_%'").fetchall())
password = key.execute("SELECT item1, item2 FROM metaData WHERE id = 'password'").fetchone()
print(json.dumps([{"sha256": hashlib.sha256(r[3]).hexdigest(), "label": r[2].decode()} for r in rows if r[3]]))"""
fresh()
api_write()
# `list` remembers the subject and dates it reads from each certificate (storesync.loadable), as
# a sync remembers its checks: "ours" is a machine that listed these roots before, "ours_first"
# one that only synced them (its state dir put back as the write left it before each run).
synced_state, first_state = scratch / "synced-state", scratch / "first-state"
shutil.copytree(state, synced_state)


def as_synced():
    shutil.rmtree(first_state, ignore_errors=True)
    shutil.copytree(synced_state, first_state)


def list_first():
    subprocess.run([*STORESYNC, "list", f"nss:{db}", "--json"], check=True, capture_output=True,
                   env={**os.environ, "STORESYNC_STATE_DIR": str(first_state)})


read = side_by_side({
    "ours": (run(*STORESYNC, "list", "nss:DB", "--json"), None),
    "ours_first": (list_first, as_synced),
    "certutil": (certutil_read, None),
    "least": (run(sys.executable, "-c", LEAST_READER, "DB"), None),
}, rounds=15)
read_api = median_time(lambda: open_store(f"nss:{db}").read(), runs=7)
noop = median_time(run(*STORESYNC, "sync", f"pem:{BUNDLE}", "nss:DB"), runs=7)
shutil.rmtree(scratch)

n = len(source)
loop = written["loop"]
table(f"System roots ({n}) with trust into a fresh NSS database", [
    ("storesync sync (CLI, whole process)", written["ours"],
     f"{loop / written['ours']:.1f}x faster than the certutil -A loop (goal >= 20x), "
     f"{written['batch'] / written['ours']:.1f}x faster than certutil -B"),
    ("the same, first sync of these roots on the machine", written["ours_cold"],
     f"{loop / written['ours_cold']:.1f}x; every root's loadability and signature checked (then remembered)"),
    ("storesync write (in process: read, plan, one transaction per file, MACs)", ours_api, ""),
    (f"certutil -A loop ({n} processes)", loop, "what mkcert and most scripts do"),
    ("certutil -B batch", written["batch"], ""),
    (f"`python -c '{FLOOR_IMPORTS}'`", written["floor"],
     f"the floor of any Python writer; the goal allows {loop / 20 * 1000:.0f} ms (1/20 of the loop)"),
    ("the least a Python writer does (rows and signatures in; nothing parsed, checked, kept or read back)",
     written["least"], f"{written['least'] / (loop / 20) * 100:.0f} % of what the goal allows"),
    ("storesync sync again (no change, CLI)", noop, "writes nothing"),
])
table(f"Reading the database ({n} certificates, all trust, MACs checked)", [
    ("storesync list --json (CLI, whole process)", read["ours"],
     f"{read['certutil'] / read['ours']:.1f}x faster than certutil (goal >= 20x)"),
    ("the same, first list of these roots on the machine (they were synced before)", read["ours_first"],
     f"{read['certutil'] / read['ours_first']:.1f}x; every subject and date read from the DER (then remembered)"),
    ("storesync read (in process)", read_api, ""),
    (f"certutil -L + {n} × certutil -L -n NICK -a", read["certutil"], ""),
    ("the least a Python reader does (rows out as JSON; nothing checked, decoded or parsed)", read["least"],
     f"{read['least'] / (read['certutil'] / 20) * 100:.0f} % of what the goal allows ({read['certutil'] / 20 * 1000:.1f} ms)"),
])
