"""Issue 3: the system roots with trust into a fresh NSS database, storesync vs a `certutil -A`
loop vs `certutil -B` batch; and reading a database with all its trust, storesync vs `certutil -L`
plus one `certutil -L -n NICK -a` per certificate."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from _timing import BUNDLE, STORESYNC, median_time, table  # noqa: E402

from storesync.engine.plan import make_plan  # noqa: E402
from storesync.stores import open_store  # noqa: E402

scratch = Path(tempfile.mkdtemp(prefix="storesync-bench-nss-"))
db = scratch / "db"
source = open_store(f"pem:{BUNDLE}").read()
pems = []
for i, entry in enumerate(source.values()):
    pem = scratch / f"{i}.der"
    pem.write_bytes(entry.cert.der)
    pems.append((f"{entry.display_label} {i}", pem))
batch = scratch / "batch.txt"
batch.write_text("".join(f'-A -n "{nick}" -t "CT,C,C" -i {pem}\n' for nick, pem in pems))


def fresh():
    shutil.rmtree(db, ignore_errors=True)
    db.mkdir()
    subprocess.run(["certutil", "-N", "-d", f"sql:{db}", "--empty-password"], check=True, capture_output=True)


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


def api_read():
    open_store(f"nss:{db}").read()


ours_cli = median_time([*STORESYNC, "sync", f"pem:{BUNDLE}", f"nss:{db}"], before=fresh)
ours_api = median_time(api_write, before=fresh)
loop = median_time(certutil_loop, runs=3, before=fresh)
batched = median_time(["certutil", "-B", "-d", f"sql:{db}", "-i", str(batch)], runs=5, before=fresh)

fresh()
api_write()
read_cli = median_time([*STORESYNC, "list", f"nss:{db}", "--json"], runs=7)
read_api = median_time(api_read, runs=7)
read_certutil = median_time(certutil_read, runs=3)
noop = median_time([*STORESYNC, "sync", f"pem:{BUNDLE}", f"nss:{db}"], runs=7)
shutil.rmtree(scratch)

n = len(source)
table(f"System roots ({n}) with trust into a fresh NSS database", [
    ("storesync sync (CLI, whole process)", ours_cli, f"{loop / ours_cli:.0f}x faster than the certutil -A loop, "
                                                      f"{batched / ours_cli:.1f}x faster than certutil -B"),
    ("storesync write (in process: read, plan, one transaction per file, MACs)", ours_api, ""),
    (f"certutil -A loop ({n} processes)", loop, "what mkcert and most scripts do"),
    ("certutil -B batch", batched, ""),
    ("storesync sync again (no change, CLI)", noop, "writes nothing"),
])
table(f"Reading the database ({n} certificates, all trust, MACs checked)", [
    ("storesync list --json (CLI, whole process)", read_cli, f"{read_certutil / read_cli:.0f}x faster than certutil"),
    ("storesync read (in process)", read_api, ""),
    (f"certutil -L + {n} × certutil -L -n NICK -a", read_certutil, ""),
])
