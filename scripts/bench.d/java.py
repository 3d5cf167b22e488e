"""Issue 5: the system roots as a Java trust store (JKS and PKCS#12), written and read by storesync,
side by side with the usual ways: a `keytool -importcert` loop (one JVM per certificate, as
people script it), `trust extract --format=java-cacerts` (p11-kit), and `keytool -list`."""

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

cli_jks = scratch / "cli.jks"
probe = subprocess.run([*STORESYNC, "sync", f"pem:{BUNDLE}", f"jks:{cli_jks}"], capture_output=True)
if probe.returncode == 0:
    rows.append(("`storesync sync pem:BUNDLE jks:NEW`", median_time(
        [*STORESYNC, "sync", f"pem:{BUNDLE}", f"jks:{cli_jks}"], before=remove(cli_jks)), "whole CLI run"))

trust = shutil.which("trust")
extracted = scratch / "p11kit.jks"
if trust:
    rows.append(("`trust extract --format=java-cacerts`", median_time(
        [trust, "extract", "--format=java-cacerts", "--filter=ca-anchors", "--purpose=server-auth", str(extracted)],
        before=remove(extracted)), "p11-kit, JKS only"))

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
