"""Issue 2: the system bundle into a fresh hashed directory, storesync vs update-ca-certificates
vs p11-kit; and a no-op sync vs the bare import of cryptography.x509."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _timing import BUNDLE, STORESYNC, side_by_side, table  # noqa: E402

scratch = Path(tempfile.mkdtemp(prefix="storesync-bench-"))
fresh = scratch / "fresh"


def clear(*paths: Path):
    def clear_them():
        for path in paths:
            shutil.rmtree(path, ignore_errors=True)
        os.sync()  # the deletion's disk work is done now, not billed to the next timed run
    return clear_them


# Debian's update-ca-certificates, entirely inside scratch directories (FORMATS.md §3).
uca = scratch / "uca"
for sub in ("tmp", "local", "etc", "hooks"):
    (uca / sub).mkdir(parents=True)
conf = [l for l in Path("/etc/ca-certificates.conf").read_text().splitlines() if l and not l.startswith("#")]
(uca / "ca-certificates.conf").write_text("\n".join(conf) + "\n")
uca_command = ["update-ca-certificates", "--fresh", "--certsconf", str(uca / "ca-certificates.conf"),
               "--certsdir", "/usr/share/ca-certificates", "--localcertsdir", str(uca / "local"),
               "--etccertsdir", str(uca / "etc"), "--hooksdir", str(uca / "hooks")]
probe = subprocess.run(uca_command, capture_output=True, text=True, env={"TMPDIR": str(uca / "tmp"), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
assert "added" in probe.stdout, f"update-ca-certificates did not run as expected: {probe.stdout}{probe.stderr}"


def run_uca():
    subprocess.run(uca_command, capture_output=True, check=True,
                   env={"TMPDIR": str(uca / "tmp"), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})


def reset_uca():
    shutil.rmtree(uca / "etc")
    (uca / "etc" / "ssl" / "certs").mkdir(parents=True)
    os.sync()


# In turns, so that a slow spell of a shared machine weighs on every contender alike.
fresh_both = scratch / "fresh-both"
p11_dir = scratch / "p11"
times = side_by_side({
    "ours": ([*STORESYNC, "sync", f"pem:{BUNDLE}", f"dir:{fresh}"], clear(fresh)),
    "ours_both": ([*STORESYNC, "sync", f"pem:{BUNDLE}", f"dir:{fresh_both}?links=both"], clear(fresh_both)),
    "debian": (run_uca, reset_uca),
    "p11kit": (["trust", "extract", "--format=openssl-directory", "--filter=ca-anchors", "--purpose=server-auth",
                str(p11_dir)], clear(p11_dir)),
}, rounds=9)
ours, ours_both, debian, p11kit = times["ours"], times["ours_both"], times["debian"], times["p11kit"]
subprocess.run([*STORESYNC, "sync", f"pem:{BUNDLE}", f"dir:{fresh}"], check=True, capture_output=True)
idle = side_by_side({
    "noop": ([*STORESYNC, "sync", f"pem:{BUNDLE}", f"dir:{fresh}"], None),
    "bare": ([sys.executable, "-c", "import cryptography.x509"], None),
}, rounds=15)
noop, bare = idle["noop"], idle["bare"]
shutil.rmtree(scratch)

count = BUNDLE.read_bytes().count(b"-----BEGIN CERTIFICATE-----")
table(f"System bundle ({count} roots) into a fresh hashed directory", [
    ("storesync sync pem: dir: (new-style links)", ours, f"{debian / ours:.1f}x faster than update-ca-certificates (goal >= 6x)"),
    ("storesync sync pem: dir:?links=both", ours_both, f"{ours_both / p11kit:.1f}x p11-kit's time, same layout (goal <= 2x)"),
    ("update-ca-certificates --fresh (scratch dirs)", debian, "Debian, shell + openssl rehash"),
    ("trust extract --format=openssl-directory", p11kit, "p11-kit, C, new + old links"),
    ("storesync sync, target already in sync (no-op)", noop, f"{noop / bare:.2f}x the bare import (goal <= 1.5x)"),
    ("python -c 'import cryptography.x509'", bare, "baseline"),
])
