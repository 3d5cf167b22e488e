"""Issues 5 and 18: the system roots as a Java trust store (JKS and PKCS#12), written and read by
storesync, side by side with the usual ways: a `keytool -importcert` loop (one JVM per certificate,
as people script it), `trust extract --format=java-cacerts` (p11-kit), and `keytool -list`.

Goals (issue 18): a new JKS from the CLI <= 1.5x p11-kit's `trust extract --format=java-cacerts`,
a new PKCS#12 with JDK 17's default protection <= 2x the same. p11-kit writes no PKCS#12 and this
OpenSSL (3.0) has no `pkcs12 -jdktrust`, so p11-kit's JKS extract is the closest C tool that
writes a Java trust store in one process (keytool needs a JVM per certificate)."""

from __future__ import annotations

import itertools
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

scratch = Path(tempfile.mkdtemp(prefix="storesync-bench-java-"))
roots = open_store(f"pem:{BUNDLE}").read()
count = len(roots)


def write(spec: str) -> None:
    store = open_store(spec)
    store.write(make_plan(roots, store.read(), store.capabilities, store=spec, purpose="any"))


def remove(*paths: Path):
    return lambda: [p.unlink(missing_ok=True) for p in paths]


def read(spec: str):
    return lambda: open_store(spec).read()


jks, p12 = scratch / "out.jks", scratch / "out.p12"
rows = [
    ("storesync: write JKS, in process", median_time(lambda: write(f"jks:{jks}"), before=remove(jks)), "new file"),
    ("storesync: write PKCS#12, in process", median_time(lambda: write(f"p12:{p12}"), before=remove(p12)),
     "new file; PBES2/AES-256 + HMAC-SHA256 MAC, 10000 iterations, as JDK 17"),
]
write(f"jks:{jks}")
write(f"p12:{p12}")
rows += [
    ("storesync: read JKS, in process", median_time(read(f"jks:{jks}")), "integrity hash checked"),
    ("storesync: read PKCS#12, in process", median_time(read(f"p12:{p12}")), "MAC checked, safe decrypted"),
]

os.environ["STORESYNC_STATE_DIR"] = str(scratch / "state")  # where passed checks are remembered
trust = shutil.which("trust")
fresh = itertools.count()


def new_file(suffix: str):
    """A contender writing into a file no earlier run used (argv with NEW in place of the path)."""
    def prepare():
        prepare.path = scratch / f"new-{next(fresh)}.{suffix}"
    prepare()
    return prepare


def writing(argv: list[str], target):
    return lambda: subprocess.run([a.replace("NEW", str(target.path)) for a in argv], check=True,
                                  capture_output=True)


to_jks, to_p12, to_p11 = new_file("jks"), new_file("p12"), new_file("p11.jks")
ours_jks = writing([*STORESYNC, "sync", f"pem:{BUNDLE}", "jks:NEW"], to_jks)
ours_p12 = writing([*STORESYNC, "sync", f"pem:{BUNDLE}", "p12:NEW"], to_p12)
ours_jks()  # the roots' checks are remembered from here on (storesync.loadable)
# The floor of any Python writer of a keystore: the interpreter and what it cannot do without
# (re: pip's `storesync` script imports it; hashlib for the digests; json for the records
# `rollback` reads).
FLOOR_IMPORTS = "import re, hashlib, json"
floor = lambda: subprocess.run([sys.executable, "-c", FLOOR_IMPORTS], check=True)  # noqa: E731
contenders = {"jks": (ours_jks, to_jks), "p12": (ours_p12, to_p12), "floor": (floor, None)}
if trust:
    contenders["p11kit"] = (writing([trust, "extract", "--format=java-cacerts", "--filter=ca-anchors",
                                     "--purpose=server-auth", "NEW"], to_p11), to_p11)
cli = side_by_side(contenders, rounds=21)  # many turns: the goals are ratios to a peer of 40-50 ms
base = cli.get("p11kit")
rows += [
    ("`storesync sync pem:BUNDLE jks:NEW`", cli["jks"],
     f"whole CLI run; {cli['jks'] / base:.2f}x p11-kit's time (goal <= 1.5x)" if base else "whole CLI run"),
    ("`storesync sync pem:BUNDLE p12:NEW`", cli["p12"],
     f"whole CLI run; {cli['p12'] / base:.2f}x p11-kit's JKS time (goal <= 2x)" if base else "whole CLI run"),
]
if base:
    rows.append(("`trust extract --format=java-cacerts`", base, "p11-kit, JKS only"))
rows.append((f"`python -c '{FLOOR_IMPORTS}'`", cli["floor"], "the floor of any Python writer"
             + (f"; the JKS goal allows {1.5 * base * 1000:.0f} ms" if base else "")))

keytool = shutil.which("keytool")
if keytool:
    pems = []
    for n, entry in enumerate(roots.values()):
        path = scratch / f"{n}.pem"
        path.write_bytes(b"-----BEGIN CERTIFICATE-----\n" + __import__("base64").encodebytes(entry.cert.der)
                         + b"-----END CERTIFICATE-----\n")
        pems.append(path)

    def keytool_loop(storetype: str, target: Path):
        def run():
            for n, path in enumerate(pems):
                subprocess.run([keytool, "-importcert", "-noprompt", "-alias", f"root{n}", "-file", str(path),
                                "-keystore", str(target), "-storetype", storetype, "-storepass", "changeit"],
                               capture_output=True, check=True)
        return run

    kt_jks, kt_p12 = scratch / "kt.jks", scratch / "kt.p12"
    rows += [
        (f"`keytool -importcert` loop, JKS ({count} JVMs)", median_time(keytool_loop("JKS", kt_jks), runs=1,
                                                                        before=remove(kt_jks)), "one run"),
        (f"`keytool -importcert` loop, PKCS12 ({count} JVMs)", median_time(keytool_loop("PKCS12", kt_p12), runs=1,
                                                                           before=remove(kt_p12)), "one run"),
        ("`keytool -list` of our JKS", median_time([keytool, "-list", "-keystore", str(jks), "-storepass", "changeit"],
                                                   runs=3), "one JVM start"),
        ("`keytool -list` of our PKCS#12", median_time([keytool, "-list", "-keystore", str(p12), "-storepass",
                                                        "changeit"], runs=3), "one JVM start"),
    ]
shutil.rmtree(scratch)

table(f"The {count} system roots as a Java trust store", rows)
