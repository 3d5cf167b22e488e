"""Issue 18 item 5: the loadability and self-signature checks cost a sync only what it adds: a
sync that adds nothing never imports them, and a large add still refuses every forged or damaged
root among good ones."""

from __future__ import annotations

import subprocess
import sys

from conftest import pem_of, storesync
from test_damaged import broken_signature, loaded_by_owner, retagged_validity, sha1_root


def system_roots(system_bundle) -> list[bytes]:
    from storesync.stores import open_store

    return [e.cert.der for e in open_store(f"pem:{system_bundle}").read().values()]


def p384_root(pki) -> bytes:
    """A root with an ECDSA P-384 key, signed with SHA-384, as several system roots are."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "P-384 Root")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA384()))
    return cert.public_bytes(serialization.Encoding.DER)


def test_forged_roots_among_the_system_roots_are_refused_in_a_fresh_directory(tmp_path, pki, system_bundle):
    """The system roots go in, each forged or damaged one (an ECDSA P-384 root, a SHA-1 RSA root,
    a retagged validity) is a `!` line and stays out; OpenSSL loads all that was written."""
    roots = system_roots(system_bundle)
    forged = [broken_signature(p384_root(pki)), broken_signature(sha1_root())]
    damaged = retagged_validity(pki.ca("Fresh Damaged").der)
    source = tmp_path / "source.pem"
    middle = len(roots) // 2
    source.write_bytes(b"".join(map(pem_of, [*roots[:middle], *forged, damaged, *roots[middle:]])))
    directory, bundle = tmp_path / "certs", tmp_path / "out.pem"

    result = storesync("sync", f"pem:{source}", f"dir:{directory}", f"pem:{bundle}")

    assert result.returncode == 0, result.stderr
    assert result.stdout.count("a self-signed root whose signature does not verify") == 2 * 2, result.stdout
    assert result.stdout.count("! Fresh Damaged: damaged: not a certificate") == 2, result.stdout
    assert loaded_by_owner("dir", directory) == len(roots)
    assert loaded_by_owner("pem", bundle) == len(roots)


def test_a_sync_that_adds_nothing_never_loads_libcrypto(tmp_path, system_bundle):
    target = tmp_path / "certs"
    assert storesync("sync", f"pem:{system_bundle}", f"dir:{target}").returncode == 0
    probe = ("import sys; from storesync.cli import main; sys.argv = ['storesync', 'sync', sys.argv[1], sys.argv[2]]\n"
             "try: main()\n"
             "except SystemExit as exit: assert not exit.code, exit.code\n"
             "print(sorted(m for m in ('ctypes', 'storesync.loadable', 'cryptography.x509') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe, f"pem:{system_bundle}", f"dir:{target}"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout
