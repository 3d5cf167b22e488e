"""AES-CBC and the PKCS#12 key derivation run in the system's libcrypto (storesync.libcrypto):
the same bytes as `cryptography`'s AES and the Python KDF of RFC 7292 appendix B.2, each way,
and a one-shot PKCS#12 write no longer imports `cryptography` (its cipher modules cost more
than the write itself). Where libcrypto is missing, the other way gives the same bytes."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from storesync import pbe

from conftest import cli_modules, run

C = pbe._c()
pytestmark = pytest.mark.skipif(C.lib is None, reason="no system libcrypto to call")


@pytest.mark.parametrize("hash_name", ["sha1", "sha256", "sha512"])
@pytest.mark.parametrize("password", [pbe.bmp_password("changeit"), pbe.bmp_password("pässwörd€"), b"\0\0", b""])
def test_libcrypto_kdf_is_the_python_kdf(hash_name, password):
    h = hashlib.new(hash_name)
    for salt in (os.urandom(8), os.urandom(20), os.urandom(33)):
        for purpose in (1, 2, 3):
            for n in (5, 16, 24, 32, 100):
                c = C.pkcs12_kdf(hash_name, password, salt, purpose, 17, n)
                assert c == pbe._pkcs12_kdf_python(hash_name, password, salt, purpose, 17, n, h.digest_size,
                                                    h.block_size)


def test_a_derivation_libcrypto_refuses_is_computed_in_python():
    """No salt and no password: OpenSSL allocates nothing and fails; the KDF still answers."""
    assert C.pkcs12_kdf("sha256", b"", b"", 3, 5, 32) is None
    h = hashlib.sha256()
    assert pbe._pkcs12_kdf("sha256", b"", b"", 3, 5, 32, 32, 64) == pbe._pkcs12_kdf_python(
        "sha256", b"", b"", 3, 5, 32, 32, 64) == _python_b2(b"", b"", 3, 5, 32, h)


def _python_b2(password, salt, purpose, iterations, n, h):
    """RFC 7292 B.2 for an empty password and salt: I is empty, A = H^c(D)."""
    a = hashlib.sha256(bytes([purpose]) * h.block_size).digest()
    for _ in range(iterations - 1):
        a = hashlib.sha256(a).digest()
    return (a * (n // len(a) + 1))[:n]


@pytest.mark.parametrize("key_length", [16, 24, 32])
def test_libcrypto_aes_is_cryptographys_aes(key_length):
    for length in (0, 16, 48, 4096):
        key, iv, plain = os.urandom(key_length), os.urandom(16), os.urandom(length)
        encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
        expected = encryptor.update(plain) + encryptor.finalize()
        assert C.aes_cbc(key, iv, plain, encrypt=True) == expected
        assert C.aes_cbc(key, iv, expected, encrypt=False) == plain


def test_what_libcrypto_is_not_asked_goes_to_cryptography():
    assert C.aes_cbc(os.urandom(32), os.urandom(8), os.urandom(16), encrypt=True) is None  # a wrong IV size
    assert C.aes_cbc(os.urandom(32), os.urandom(16), os.urandom(15), encrypt=True) is None  # not whole blocks
    assert C.aes_cbc(os.urandom(20), os.urandom(16), os.urandom(16), encrypt=True) is None  # no such AES


def test_without_libcrypto_the_same_bytes_are_written(pki, tmp_path, monkeypatch):
    from storesync.engine.plan import make_plan
    from storesync.model import Entry, TrustSet
    from storesync.model import Certificate
    from storesync.stores import open_store

    roots = TrustSet([Entry(Certificate(pki.ca(f"Libcrypto Root {n}").der)) for n in range(3)])

    def write(name):
        store = open_store(f"p12:{tmp_path / name}")
        store.write(make_plan(roots, store.read(), store.capabilities, store=name, purpose="any"))
        return (tmp_path / name).read_bytes()

    with_c = write("c.p12")
    monkeypatch.setattr(pbe, "_c_calls", pbe._C.__new__(pbe._C))
    pbe._c_calls.lib = None
    monkeypatch.setattr(pbe, "_DERIVED", {})
    assert write("python.p12") == with_c
    listed = run("keytool", "-list", "-keystore", tmp_path / "python.p12", "-storetype", "PKCS12",
                 "-storepass", "changeit").stdout.decode()
    assert "Your keystore contains 3 entries" in listed


def test_a_one_shot_p12_write_imports_no_cryptography(pki, tmp_path):
    """With the roots' checks remembered (as in the bench), writing and reading back a JDK 17
    PKCS#12 needs no `cryptography` module at all; keytool and OpenSSL read what it wrote."""
    source, warm, out = tmp_path / "roots.pem", tmp_path / "warm.jks", tmp_path / "out.p12"
    roots = [pki.ca(f"Import-free Root {n}") for n in range(3)]
    source.write_bytes(b"".join(r.pem for r in roots))
    env = {**os.environ, "STORESYNC_STATE_DIR": str(tmp_path / "state")}
    subprocess.run([sys.executable, "-m", "storesync", "sync", f"pem:{source}", f"jks:{warm}"], env=env, check=True,
                   capture_output=True)
    code, imported = cli_modules(["sync", f"pem:{source}", f"p12:{out}"], env, ("cryptography",))
    assert code in (0, None) and imported == []
    listed = run("keytool", "-list", "-keystore", out, "-storetype", "PKCS12", "-storepass", "changeit").stdout
    assert b"Your keystore contains 3 entries" in listed
    dumped = run("openssl", "pkcs12", "-in", out, "-passin", "pass:changeit", "-nokeys").stdout
    assert dumped.count(b"BEGIN CERTIFICATE") == 3


@pytest.mark.parametrize("length", [0, 15, 16, 33, 4096])
def test_padding_in_libcrypto_is_pkcs7_and_checked_in_its_buffer(length, monkeypatch):
    """libcrypto pads what it encrypts (no padded copy first) and a decryption's padding is
    checked and dropped in its buffer, reading the ciphertext where it lies in a larger buffer:
    the bytes of the plain PKCS#7 computation, with or without libcrypto, and a bad padding
    is refused both ways."""
    key, iv, plain = os.urandom(32), os.urandom(16), os.urandom(length)
    pad = 16 - length % 16
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    expected = encryptor.update(plain + bytes([pad]) * pad) + encryptor.finalize()
    assert C.aes_cbc(key, iv, plain, encrypt=True, pad=True) == expected
    around = b"before" + expected + b"after"
    span = (6, 6 + len(expected))
    assert pbe.aes_cbc_decrypt(key, iv, around, pad=True, span=span) == plain
    assert pbe.aes_cbc_decrypt(key, iv, around, pad=True, span=span, mutable=True) == plain  # libcrypto's buffer
    assert C.aes_cbc(key, iv, plain, encrypt=True, pad=True, mutable=True) == expected
    assert pbe.aes_cbc_decrypt(key, iv, expected) == plain + bytes([pad]) * pad  # padding left in place
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    unpadded = b"x" + encryptor.update(b"p" * 15 + b"\0") + encryptor.finalize()  # ends in 0: no padding
    with pytest.raises(pbe.DecryptError):
        pbe.aes_cbc_decrypt(key, iv, unpadded, pad=True, span=(1, 17))
    monkeypatch.setattr(pbe, "_c_calls", pbe._C.__new__(pbe._C))
    pbe._c_calls.lib = None
    assert pbe.aes_cbc_decrypt(key, iv, around, pad=True, span=span) == plain
    with pytest.raises(pbe.DecryptError):
        pbe.aes_cbc_decrypt(key, iv, unpadded, pad=True, span=(1, 17))


@pytest.mark.parametrize("libcrypto", [True, False])
def test_aes_fed_piece_by_piece_is_the_one_shot_aes(libcrypto, monkeypatch):
    """A PKCS#12 safe read or written as a stream goes through AES in pieces of any size: the
    bytes of the one-shot computation, in libcrypto or, without it, in `cryptography`; a
    streamed plaintext's padding is checked at its end."""
    if not libcrypto:
        monkeypatch.setattr(pbe, "_c_calls", pbe._C.__new__(pbe._C))
        pbe._c_calls.lib = None
    key, iv, plain = os.urandom(32), os.urandom(16), os.urandom(1000) + bytes([8]) * 8
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    expected = encryptor.update(plain) + encryptor.finalize()
    for pieces in (1, 7, 100, 4096):
        fed = pbe.aes_cbc(key, iv, encrypt=True)
        assert isinstance(fed, pbe._Feed) == libcrypto
        out = b"".join(fed.update(plain[n : n + pieces]) for n in range(0, len(plain), pieces)) + fed.finalize()
        assert out == expected
        fed = pbe.aes_cbc(key, iv, encrypt=False)
        assert b"".join(fed.update(out[n : n + pieces]) for n in range(0, len(out), pieces)) + fed.finalize() == plain
        chunks = (out[n : n + pieces] for n in range(0, len(out), pieces))
        assert b"".join(pbe._unpadded(pbe.aes_cbc(key, iv, encrypt=False), chunks)) == plain[:-8]
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    unpadded = encryptor.update(b"p" * 31 + b"\0") + encryptor.finalize()  # ends in 0: no padding
    with pytest.raises(pbe.DecryptError):
        b"".join(pbe._unpadded(pbe.aes_cbc(key, iv, encrypt=False), [unpadded[:16], unpadded[16:]]))
