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


class IntoNewDirectory:
    """A contender that writes into a directory no earlier run used. Deleting the last run's
    output before each run instead would bill the deletion's aftermath (journal and disk
    trims, which slow every file creation for seconds here) to whichever run comes next."""

    def __init__(self, name: str, argv, env=None, premade: str | None = None):
        self.name, self.argv, self.env, self.premade, self.runs = name, argv, env, premade, 0

    def before(self) -> None:
        self.runs += 1
        self.target = scratch / f"{self.name}-{self.runs}"
        if self.premade:
            (self.target / self.premade).mkdir(parents=True)
        os.sync()  # earlier runs' writes are on disk, not billed to this one

    def __call__(self) -> None:
        subprocess.run(self.argv(self.target), capture_output=True, check=True, env=self.env)


# Debian's update-ca-certificates, entirely inside scratch directories (FORMATS.md §3).
uca = scratch / "uca"
for sub in ("tmp", "local", "hooks"):
    (uca / sub).mkdir(parents=True)
conf = [l for l in Path("/etc/ca-certificates.conf").read_text().splitlines() if l and not l.startswith("#")]
(uca / "ca-certificates.conf").write_text("\n".join(conf) + "\n")
uca_env = {"TMPDIR": str(uca / "tmp"), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}


def uca_command(etc: Path) -> list[str]:
    return ["update-ca-certificates", "--fresh", "--certsconf", str(uca / "ca-certificates.conf"),
            "--certsdir", "/usr/share/ca-certificates", "--localcertsdir", str(uca / "local"),
            "--etccertsdir", str(etc), "--hooksdir", str(uca / "hooks")]


(scratch / "probe" / "ssl" / "certs").mkdir(parents=True)
probe = subprocess.run(uca_command(scratch / "probe"), capture_output=True, text=True, env=uca_env)
assert "added" in probe.stdout, f"update-ca-certificates did not run as expected: {probe.stdout}{probe.stderr}"

contenders = {
    "ours": IntoNewDirectory("ours", lambda d: [*STORESYNC, "sync", f"pem:{BUNDLE}", f"dir:{d}"]),
    "ours_both": IntoNewDirectory("ours-both", lambda d: [*STORESYNC, "sync", f"pem:{BUNDLE}", f"dir:{d}?links=both"]),
    "debian": IntoNewDirectory("uca", uca_command, uca_env, premade="ssl/certs"),
    "p11kit": IntoNewDirectory("p11", lambda d: ["trust", "extract", "--format=openssl-directory",
                                                 "--filter=ca-anchors", "--purpose=server-auth", str(d)]),
}
contenders["ours"].before()
contenders["ours"]()  # the roots' checks are remembered from here on, as on a machine that synced them once
# In turns, so that a slow spell of a shared machine weighs on every contender alike.
times = side_by_side({name: (c, c.before) for name, c in contenders.items()}, rounds=9)
ours, ours_both, debian, p11kit = times["ours"], times["ours_both"], times["debian"], times["p11kit"]
in_sync = contenders["ours"].target
idle = side_by_side({
    "noop": ([*STORESYNC, "sync", f"pem:{BUNDLE}", f"dir:{in_sync}"], None),
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
