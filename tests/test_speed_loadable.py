"""Issue 18 item 5: the loadability and self-signature checks of a large add are asked of
libcrypto in one batch over the cores, with the verdicts they give one by one; a sync that adds
nothing never loads libcrypto."""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest

from conftest import pem_of, storesync
from test_damaged import broken_signature, loaded_by_owner, retagged_validity, sha1_root


def system_roots(system_bundle) -> list[bytes]:
    from storesync.stores import open_store

    return [e.cert.der for e in open_store(f"pem:{system_bundle}").read().values()]


def p384_root(system_bundle) -> bytes:
    from cryptography import x509

    for der_bytes in system_roots(system_bundle):
        cert = x509.load_der_x509_certificate(der_bytes)
        if cert.signature_algorithm_oid.dotted_string == "1.2.840.10045.4.3.3":  # ecdsa-with-SHA384
            return der_bytes
    pytest.skip("no ECDSA P-384 root in the system bundle")


def test_a_batch_gives_the_verdicts_one_by_one_on_several_threads(monkeypatch, pki, system_bundle):
    from storesync import loadable
    from storesync.model import Certificate

    if loadable._openssl() is None:
        pytest.skip("no libcrypto to ask")
    forged = [broken_signature(p384_root(system_bundle)), broken_signature(sha1_root(system_bundle)),
              broken_signature(pki.ca("Batch Forged").der)]
    damaged = retagged_validity(pki.ca("Batch Damaged").der)
    ders = [*system_roots(system_bundle), *forged, damaged]
    lib = loadable._openssl()
    one_by_one = [lib.examine(d, loadable._self_signed(Certificate(d))) for d in ders]
    assert one_by_one[-4:] == [0, 0, 0, None] and one_by_one.count(1) == len(ders) - 4

    seen = set()
    examine = lib.examine

    def spying(*args):
        seen.add(threading.get_ident())
        return examine(*args)

    monkeypatch.setattr(lib, "examine", spying)
    monkeypatch.setattr(loadable, "_cores", lambda: range(2))  # as on this 2-core machine
    certs = [Certificate(d) for d in ders]
    loadable.examine_all(certs)
    assert len(seen) == 2, "the batch was not split over two threads"
    assert [c.__dict__["_openssl"] for c in certs] == one_by_one
    assert [loadable.bad_self_signature(c) for c in certs] == [False] * (len(ders) - 4) + [True] * 3 + [False]
    assert [loadable.refusal(c, "openssl") is None for c in certs[-4:]] == [True] * 3 + [False]


def test_forged_roots_among_the_system_roots_are_refused_in_a_fresh_directory(tmp_path, pki, system_bundle):
    """The batch route end to end: the system roots go in, each forged or damaged one is a `!`
    line and stays out; OpenSSL loads all that was written."""
    roots = system_roots(system_bundle)
    forged = [broken_signature(p384_root(system_bundle)), broken_signature(sha1_root(system_bundle))]
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
    probe = ("import sys, runpy; sys.argv = ['storesync', 'sync', sys.argv[1], sys.argv[2]]\n"
             "try: runpy.run_module('storesync', run_name='__main__')\n"
             "except SystemExit as exit: assert not exit.code, exit.code\n"
             "print(sorted(m for m in ('ctypes', 'storesync.loadable', 'cryptography.x509') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe, f"pem:{system_bundle}", f"dir:{target}"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout
