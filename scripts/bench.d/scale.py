"""Issue 18, item 4: the cost curve of stores of 1 000, 10 000 and 100 000 certificates.

For each store kind: read (`storesync list --json`), plan (`sync --dry-run` from a bundle with one
certificate more), write into a new store, and a no-op sync, as whole CLI processes; plus a
four-store merge with one change. Prints, per kind, the median times, the cost per certificate,
the growth between sizes (linear is 10x per 10x step; anything above n log n is flagged) and
the peak RSS of the storesync process against the store's size on disk.

Usage: scale.py [--sizes 1000,10000] [--kinds pem,dir,...] [--shape roots|small] [--rounds N]
(or $BENCH_SCALE_SIZES, $BENCH_SCALE_KINDS, $BENCH_SCALE_SHAPE, as `scripts/bench scale` passes
no arguments). The certificates are generated once per shape and count and kept in /tmp (one
key per shape, so it is fast). The default shape, roots, is sized like real roots (~1.1 KB of
DER); small (377 bytes) puts the per-certificate overhead of Python objects in front.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _timing import STORESYNC  # noqa: E402

KINDS = ["pem", "dir", "nss", "sst", "jks", "p12"]
CACHE = Path(tempfile.gettempdir())


SHAPES = ("small", "roots")


def certificates(count: int, shape: str = "small") -> list[bytes]:
    """`count` distinct self-signed CA certificates (DER), made once and cached by shape and count.

    small: P-256 roots of 377 bytes, one key (derived, so every cached set agrees); 100 000 take
    about half a minute. roots: sized like the system's roots (1 085 bytes of DER on average):
    an RSA-2048 key, a name of country, organisation, unit and common name, and basic
    constraints, key usage, key identifier and policies; one key (made once, kept beside the
    sets) signs them all, so every signature verifies."""
    cache = CACHE / (f"storesync-scale-{count}.der" if shape == "small" else f"storesync-scale-{shape}-{count}.der")
    if cache.exists():
        data, out, at = cache.read_bytes(), [], 0
        while at < len(data):
            size = int.from_bytes(data[at : at + 4], "big")
            out.append(data[at + 4 : at + 4 + size])
            at += 4 + size
        if len(out) == count:
            return out
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    key = _key(shape)
    public = key.public_key()
    start = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)
    end = start + dt.timedelta(days=3650 * 3)
    extensions = [(x509.BasicConstraints(ca=True, path_length=None), True)]
    if shape == "roots":
        ski = x509.SubjectKeyIdentifier.from_public_key(public)
        usage = x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                              data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                              encipher_only=False, decipher_only=False)
        policies = x509.CertificatePolicies([x509.PolicyInformation(
            x509.ObjectIdentifier("2.5.29.32.0"), ["https://www.scale.storesync.example/repository"])])
        extensions += [(usage, True), (ski, False), (policies, False)]
    out = []
    for n in range(count):
        if shape == "roots":
            name = x509.Name([
                x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, f"Scale Trust Services {n % 97:02d} Inc."),
                x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Certification Authority"),
                x509.NameAttribute(NameOID.COMMON_NAME, f"Storesync Scale Root CA {n:06d} - G2")])
            serial = int.from_bytes(hashlib.sha256(b"%d" % n).digest()[:16], "big") >> 1  # 16 bytes, as CAs use
        else:
            name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "storesync scale"),
                              x509.NameAttribute(NameOID.COMMON_NAME, f"Scale Root {n:06d}")])
            serial = n + 1
        builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(public)
                   .serial_number(serial).not_valid_before(start).not_valid_after(end))
        for extension, critical in extensions:
            builder = builder.add_extension(extension, critical=critical)
        out.append(builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER))
    tmp = cache.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_bytes(b"".join(len(d).to_bytes(4, "big") + d for d in out))
    os.replace(tmp, cache)
    return out


def _key(shape: str):
    """The one signing key of a shape: P-256 derived from a constant, or an RSA-2048 key made
    once and kept in /tmp (sets cached with it must verify under it)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    if shape == "small":
        return ec.derive_private_key(18, ec.SECP256R1())
    if shape != "roots":
        raise SystemExit(f"unknown certificate shape {shape!r} (shapes: {', '.join(SHAPES)})")
    path = CACHE / "storesync-scale-roots-key.pem"
    if path.exists():
        return serialization.load_pem_private_key(path.read_bytes(), None)
    key = rsa.generate_private_key(65537, 2048)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    os.replace(tmp, path)
    for stale in CACHE.glob("storesync-scale-roots-*.der"):  # signed by a key that is gone
        stale.unlink()
    return key


def pem_bundle(ders: list[bytes]) -> bytes:
    import base64

    out = []
    for d in ders:
        text = base64.b64encode(d)
        out.append(b"-----BEGIN CERTIFICATE-----\n" + b"\n".join(text[i : i + 64] for i in range(0, len(text), 64))
                   + b"\n-----END CERTIFICATE-----\n")
    return b"".join(out)


def measured(argv: list[str], env: dict[str, str]) -> tuple[float, int]:
    """(wall seconds, peak RSS in bytes) of one whole process. The RSS comes from GNU time:
    a child forked from this (large) process would report this process's pages as its own."""
    start = time.perf_counter()
    result = subprocess.run(["/usr/bin/time", "-f", "%M", *argv], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=env)
    elapsed = time.perf_counter() - start
    *err, peak = result.stderr.decode().rstrip("\n").split("\n")
    if result.returncode not in (0, 1):
        raise SystemExit(f"benchmark command failed ({result.returncode}): {' '.join(argv)}\n" + "\n".join(err))
    return elapsed, int(peak) * 1024


def disk_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.lstat().st_size for p in path.rglob("*") if not p.is_symlink() and p.is_file())


def new_nss(path: Path) -> None:
    path.mkdir()
    subprocess.run(["certutil", "-N", "-d", f"sql:{path}", "--empty-password"], check=True, capture_output=True)


def spec(kind: str, path: Path) -> str:
    return f"{kind}:{path}"


def target_path(kind: str, scratch: Path, name: str) -> Path:
    return scratch / (name if kind in ("dir", "nss") else f"{name}.{kind}")


class Row:
    def __init__(self):
        self.times: list[float] = []
        self.rss = 0

    def add(self, result: tuple[float, int]) -> None:
        self.times.append(result[0])
        self.rss = max(self.rss, result[1])

    @property
    def median(self) -> float:
        return statistics.median(self.times)


def bench_kind(kind: str, size: int, scratch: Path, env: dict, rounds: int) -> tuple[dict[str, Row], int]:
    work = scratch / f"{kind}-{size}"
    work.mkdir()
    src, plus = scratch / f"src-{size}.pem", scratch / f"plus-{size}.pem"
    settled = target_path(kind, work, "settled")
    if kind == "nss":
        new_nss(settled)
    run = dict(env, STORESYNC_STATE_DIR=str(work / "state"))
    rows = {op: Row() for op in ("read", "plan", "write", "no-op", "first write")}
    # The write that makes the settled store is the first of this state dir: the source parsed
    # and every check run. Its own row: a round's write finds both kept (and its peak RSS,
    # counted in the write row before, was then the first write's).
    rows["first write"].add(measured([*STORESYNC, "sync", f"pem:{src}", spec(kind, settled)], run))
    for n in range(rounds):
        fresh = target_path(kind, work, f"fresh-{n}")
        if kind == "nss":
            new_nss(fresh)
        os.sync()  # earlier writes are on disk, not billed to this step
        rows["write"].add(measured([*STORESYNC, "sync", f"pem:{src}", spec(kind, fresh)], run))
        shutil.rmtree(fresh) if fresh.is_dir() else fresh.unlink()
        rows["read"].add(measured([*STORESYNC, "list", "--json", spec(kind, settled)], run))
        # A source that gained a certificate is parsed afresh (its stat cache no longer fits): each
        # round plans from a copy under a new name, so no round's source comes from the cache. (The
        # same file every round made the first round cold and the others warm: a single round
        # at 100 000 against a median of warm ones at 10 000 showed growth the code does not have.)
        fresh_plus = work / f"plus-{n}.pem"
        shutil.copyfile(plus, fresh_plus)
        os.sync()  # the copy is on disk, not billed to the plan
        rows["plan"].add(measured([*STORESYNC, "sync", "--dry-run", f"pem:{fresh_plus}", spec(kind, settled)], run))
        fresh_plus.unlink()
        rows["no-op"].add(measured([*STORESYNC, "sync", f"pem:{src}", spec(kind, settled)], run))
    return rows, disk_size(settled)


def bench_merge(size: int, ders: list[bytes], scratch: Path, env: dict, rounds: int) -> Row:
    """A merge profile of four stores of `size` certificates; each round one store gains (or
    loses again) one certificate, and `storesync sync --profile` carries it to the other three."""
    work = scratch / f"merge-{size}"
    work.mkdir()
    a = work / "a.pem"
    a.write_bytes(pem_bundle(ders[:size]))
    stores = [f"pem:{a}", f"pem:{work / 'b.pem'}?format=trusted", f"dir:{work / 'ca'}", f"sst:{work / 'd.sst'}"]
    config = work / "storesync.toml"
    config.write_text('[profile.scale]\nmode = "merge"\nstores = [%s]\n' % ", ".join(f'"{s}"' for s in stores))
    run = dict(env, STORESYNC_STATE_DIR=str(work / "state"))
    argv = [*STORESYNC, "sync", "--config", str(config), "--profile", "scale"]
    measured(argv, run)  # the first merge: every store gets everything
    row = Row()
    small, large = pem_bundle(ders[:size]), pem_bundle(ders[: size + 1])
    for n in range(rounds * 2):
        a.write_bytes(large if n % 2 == 0 else small)
        os.sync()
        row.add(measured(argv, run))
    return row


def growth_note(n1: int, t1: float, n2: int, t2: float) -> str:
    ratio = t2 / t1
    bound = (n2 / n1) * math.log(n2) / math.log(n1)  # n log n
    return f"{ratio:.1f}x" + (" **worse than n log n**" if ratio > bound else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=os.environ.get("BENCH_SCALE_SIZES", "1000,10000"))
    parser.add_argument("--kinds", default=os.environ.get("BENCH_SCALE_KINDS", ",".join(KINDS + ["merge"])))
    parser.add_argument("--shape", choices=SHAPES, default=os.environ.get("BENCH_SCALE_SHAPE", "roots"),
                        help="roots: sized like real roots (RSA-2048, ~1.1 KB); small: P-256, 377 bytes")
    parser.add_argument("--rounds", type=int, default=int(os.environ.get("BENCH_SCALE_ROUNDS", "3")))
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    kinds = args.kinds.split(",")
    scratch = Path(tempfile.mkdtemp(prefix="storesync-bench-scale-"))
    env = dict(os.environ)
    try:
        largest = certificates(max(sizes) + 1, args.shape)
        for size in [1, *sizes]:
            (scratch / f"src-{size}.pem").write_bytes(pem_bundle(largest[:size]))
            (scratch / f"plus-{size}.pem").write_bytes(pem_bundle(largest[: size + 1]))
        # The floor: a whole no-op sync of a one-certificate store (interpreter, imports), from a
        # copy of it (a store is never a target of itself).
        (scratch / "one.pem").write_bytes(pem_bundle(largest[:1]))
        (scratch / "one-copy.pem").write_bytes(pem_bundle(largest[:1]))
        floor = Row()
        for _ in range(5):
            floor.add(measured([*STORESYNC, "sync", f"pem:{scratch / 'one-copy.pem'}", f"pem:{scratch / 'one.pem'}"], env))
        mean = sum(map(len, largest)) / len(largest)
        print(f"## Scale: stores of {', '.join(f'{s:,}' for s in sizes)} certificates "
              f"(shape {args.shape}: {mean:.0f} bytes of DER on average)\n")
        print(f"Whole CLI processes, medians of {args.rounds} runs in turns. Floor (a no-op sync of one "
              f"certificate): {floor.median * 1000:.0f} ms, peak RSS {floor.rss / 2**20:.0f} MB. "
              "read = `list --json` (parses every certificate for its dates); plan = `sync --dry-run` "
              "from a bundle with one more (a new file each round: never from the stat cache); write = `sync` into a new store "
              "(first write: the first of its state dir, the source parsed and every check run); the bundle source is "
              "read in plan, write and no-op. RSS goal: (peak - floor) < 3x the store on disk. The last column "
              "takes each step's own floor instead, the same step on a store of one certificate: the interpreter "
              "and the code that step loads (`cryptography`'s 11 MB for a step that judges a new certificate), "
              "so what is left grows with the store.\n")
        for kind in kinds:
            results = {}
            for size in sizes:
                if kind == "merge":
                    results[size] = ({"merge, one change": bench_merge(size, largest, scratch, env, args.rounds)}, None)
                else:
                    results[size] = bench_kind(kind, size, scratch, env, args.rounds)
            own = bench_kind(kind, 1, scratch, env, 1)[0] if kind != "merge" else None
            report(kind, sizes, results, floor, own)
            sys.stdout.flush()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def report(kind: str, sizes: list[int], results: dict, floor: Row, own: dict[str, Row] | None) -> None:
    """`own`: each step's rows at one certificate, its own floor."""
    title = "four-store merge (pem, pem TRUSTED, dir, sst)" if kind == "merge" else kind
    print(f"### {title}\n")
    print("| step | certificates | median | per certificate | growth | peak RSS | RSS - floor vs disk "
          "| RSS - the step's own floor vs disk |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    ops = list(results[sizes[0]][0])
    for op in ops:
        previous = None
        for size in sizes:
            rows, on_disk = results[size]
            row = rows[op]
            growth = growth_note(previous[0], previous[1], size, row.median) if previous else ""
            memory = (f"{(row.rss - floor.rss) / on_disk:.1f}x of {on_disk / 2**20:.1f} MB" if on_disk else "")
            step = f"{(row.rss - own[op].rss) / on_disk:.1f}x ({own[op].rss / 2**20:.0f} MB)" if own and on_disk else ""
            print(f"| {op} | {size:,} | {row.median * 1000:.0f} ms | {row.median / size * 1e6:.0f} µs | {growth} "
                  f"| {row.rss / 2**20:.0f} MB | {memory} | {step} |")
            previous = (size, row.median)
    print()
    if kind == "dir":
        for size in sizes:
            rows = results[size][0]
            print(f"No-op of {size:,} certificates: {rows['no-op'].median / rows['write'].median:.2f} of the fresh "
                  "write's time (goal at 10 000: under a third).  ")
        print()


if __name__ == "__main__":
    main()
