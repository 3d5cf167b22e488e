"""Issue 6: a merge of four stores of 10 000 certificates each, with one change.
Planning must take under 10 % of the time it takes to read the stores; writing must touch only
the changed entries (files written are counted)."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

sys.path.insert(0, str(Path(__file__).parent))
from _timing import table  # noqa: E402

from storesync.engine.merge import View, merge  # noqa: E402
from storesync.engine.plan import MIRROR, make_plan  # noqa: E402
from storesync.stores import open_store  # noqa: E402

COUNT = int(os.environ.get("BENCH_MERGE_CERTS", "10000"))
scratch = Path(tempfile.mkdtemp(prefix="storesync-bench-merge-"))
key = ec.generate_private_key(ec.SECP256R1())
now = dt.datetime.now(dt.timezone.utc)


def ca(n: int) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"Bench Root {n:05d}")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(n + 1).not_valid_before(now).not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


pems = [ca(n) for n in range(COUNT + 1)]
(scratch / "a.pem").write_bytes(b"".join(pems[:COUNT]))
specs = [f"pem:{scratch / 'a.pem'}", f"pem:{scratch / 'b.pem'}?format=trusted", f"dir:{scratch / 'ca'}",
         f"sst:{scratch / 'd.sst'}"]


def reconcile(baseline, timed: bool):
    stores = [open_store(s) for s in specs]
    start = time.perf_counter()
    currents = [s.read() for s in stores]
    read = time.perf_counter() - start
    start = time.perf_counter()
    views = [View(str(s.spec), c, s.capabilities, s.purpose) for s, c in zip(stores, currents)]
    result = merge(baseline, views)
    plans = [make_plan(result.desired_for(v), c, s.capabilities, store=str(s.spec), mode=MIRROR, purpose=s.purpose)
             for s, c, v in zip(stores, currents, views)]
    plan = time.perf_counter() - start
    start = time.perf_counter()
    for store, p in zip(stores, plans):
        if not p.empty:
            store.write(p)
    write = time.perf_counter() - start
    return result.merged, read, plan, write, plans


def tree_state() -> dict[str, tuple[int, int]]:
    out = {}
    for dirpath, _, names in os.walk(scratch):
        for name in names:
            st = os.lstat(os.path.join(dirpath, name))
            out[os.path.join(dirpath, name)] = (st.st_ino, st.st_mtime_ns)
    return out


baseline, *_ = reconcile(None, timed=False)  # first merge: every store gets everything
before = tree_state()
# one change: a new root appears in the first bundle
(scratch / "a.pem").write_bytes((scratch / "a.pem").read_bytes() + pems[COUNT])
before[str(scratch / "a.pem")] = tree_state()[str(scratch / "a.pem")]
merged, read, plan, write, plans = reconcile(baseline, timed=True)
after = tree_state()
touched = sorted(p for p in after if before.get(p) != after[p])
dir_touched = [p for p in touched if "/ca/" in p]
shutil.rmtree(scratch)

table(f"Merge of four stores of {COUNT} certificates, one certificate added to one store", [
    ("read the four stores", read, "pem, pem (TRUSTED), hashed dir, sst"),
    ("merge and plan", plan, f"{plan / read:.1%} of the read time (goal < 10 %)"),
    ("write", write, f"{len(touched)} files touched: {len(dir_touched)} in the hashed dir "
                     f"(the new file and its link), {len(touched) - len(dir_touched)} bundle files rewritten"),
])
