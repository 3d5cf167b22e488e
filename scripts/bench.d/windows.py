"""Issue 4: reading and writing an SST of 500 roots (the size of Windows Update's root list) vs the
same certificates as a PEM bundle through storesync's pem store. Goal: SST within 2x of PEM."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from _timing import STORESYNC, median_time, side_by_side, table  # noqa: E402

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

from storesync.engine.plan import make_plan  # noqa: E402
from storesync.model import EMAIL, SERVER_AUTH, TRUSTED, Certificate, Entry, TrustSet  # noqa: E402
from storesync.stores import open_store  # noqa: E402

COUNT = 500
scratch = Path(tempfile.mkdtemp(prefix="storesync-bench-windows-"))
now = dt.datetime.now(dt.timezone.utc)


def make_roots(count: int) -> TrustSet:
    """Self-signed roots with friendly names; a third restricted to server-auth + email, as in authroot."""
    key = ec.generate_private_key(ec.SECP256R1())
    entries = []
    for n in range(count):
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"Benchmark Root {n:03d}"),
                             x509.NameAttribute(NameOID.ORGANIZATION_NAME, "storesync bench")])
        cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
                .serial_number(n + 1).not_valid_before(now).not_valid_after(now + dt.timedelta(days=3650))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .sign(key, hashes.SHA256()))
        trust = {SERVER_AUTH: TRUSTED, EMAIL: TRUSTED} if n % 3 == 0 else None
        entry = Entry(Certificate(cert.public_bytes(serialization.Encoding.DER)), label=f"Benchmark Root {n:03d}")
        entries.append(entry.replace(trust=trust) if trust else entry)
    return TrustSet(entries)


def write(spec: str, source: TrustSet) -> None:
    store = open_store(spec)
    store.write(make_plan(source, store.read(), store.capabilities, store=spec, purpose="any"))


roots = make_roots(COUNT)
sst_in, pem_in = scratch / "in.sst", scratch / "in.pem"
write(f"sst:{sst_in}", roots)
write(f"pem:{pem_in}", roots)
sst_out, pem_out = scratch / "out.sst", scratch / "out.pem"


def remove(path: Path):
    return lambda: path.unlink(missing_ok=True)


def round_trip(kind: str, source: Path, target: Path):
    def run():
        write(f"{kind}:{target}", open_store(f"{kind}:{source}").read())
    return run


# in turns: one after the other, the two had moved 40 % apart between runs (s15's first: 2.51x, then 1.56x)
times = side_by_side({"sst": (round_trip("sst", sst_in, sst_out), remove(sst_out)),
                      "pem": (round_trip("pem", pem_in, pem_out), remove(pem_out))}, rounds=21)
sst_time, pem_time = times["sst"], times["pem"]
assert len(open_store(f"sst:{sst_out}").read()) == COUNT
sst_cli = median_time([*STORESYNC, "sync", f"sst:{sst_in}", f"sst:{sst_out}"], before=remove(sst_out))
pem_cli = median_time([*STORESYNC, "sync", f"pem:{pem_in}", f"pem:{pem_out}"], before=remove(pem_out))
check = subprocess.run([*STORESYNC, "sync", f"sst:{sst_in}", f"sst:{sst_out}"], capture_output=True)
shutil.rmtree(scratch)

table(f"SST of {COUNT} roots vs the same as a PEM bundle (read + write into a new file)", [
    ("sst: read + write, in process", sst_time, f"{sst_time / pem_time:.2f}x the PEM time (goal <= 2x)"),
    ("pem: read + write, in process", pem_time, "baseline"),
    ("storesync sync sst: sst: (CLI)", sst_cli, f"{sst_cli / pem_cli:.2f}x the PEM time" + ("" if check.returncode in (0, 1) else " (CLI failed)")),
    ("storesync sync pem: pem: (CLI)", pem_cli, "baseline"),
])
