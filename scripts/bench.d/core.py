"""Issue 2: the system bundle into a fresh hashed directory, storesync vs update-ca-certificates
vs p11-kit; and a no-op sync vs the bare import of cryptography.x509."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _timing import BUNDLE, STORESYNC, median_time, table  # noqa: E402

scratch = Path(tempfile.mkdtemp(prefix="storesync-bench-"))
fresh = scratch / "fresh"


def clear(*paths: Path):
    def clear_them():
        for path in paths:
            shutil.rmtree(path, ignore_errors=True)
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


ours = median_time([*STORESYNC, "sync", f"pem:{BUNDLE}", f"dir:{fresh}"], before=clear(fresh))
ours_both = median_time([*STORESYNC, "sync", f"pem:{BUNDLE}", f"dir:{fresh}?links=both"], before=clear(fresh))
debian = median_time(run_uca, runs=5, before=reset_uca)
p11kit = median_time(["trust", "extract", "--format=openssl-directory", "--filter=ca-anchors",
                      "--purpose=server-auth", str(fresh)], before=clear(fresh))
subprocess.run([*STORESYNC, "sync", f"pem:{BUNDLE}", f"dir:{fresh}"], check=True, capture_output=True)
noop = median_time([*STORESYNC, "sync", f"pem:{BUNDLE}", f"dir:{fresh}"], runs=11)
bare = median_time([sys.executable, "-c", "import cryptography.x509"], runs=11)
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
