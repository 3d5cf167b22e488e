"""Password-based cryptography, shared by the NSS (key4.db) and PKCS#12 stores.

PBKDF2 (RFC 8018) with its parameters read and written as DER, PBES2 and the PKCS#12 PBE
schemes (RFC 7292 appendix B.2 key derivation; SHA-1 with 3DES, RC2 or RC4) for decryption,
PBES2 with PBKDF2-HMAC-SHA256 and AES-256-CBC for encryption (AES also piece by piece, for a
PKCS#12 store read and written as a stream), and one iteration budget:
MAX_ITERATIONS per derivation, and, inside `budget()`, FILE_KDF_BUDGET for a whole file, so a
hostile file cannot buy hours of CPU. PBMAC1 and key4.db's MACs use `pbkdf2` and `HMAC_PRFS`.
AES and the PKCS#12 key derivation run in the system's libcrypto (storesync.libcrypto);
`cryptography` is imported only for the older ciphers, or where there is no libcrypto.
"""

from __future__ import annotations

import contextvars
import hashlib

from storesync import der

OID_PBES2 = "1.2.840.113549.1.5.13"
OID_PBKDF2 = "1.2.840.113549.1.5.12"
OID_PBMAC1 = "1.2.840.113549.1.5.14"
OID_AES256_CBC = "2.16.840.1.101.3.4.1.42"
OID_HMAC_SHA256 = "1.2.840.113549.2.9"
HMAC_PRFS = {
    "1.2.840.113549.2.7": "sha1", "1.2.840.113549.2.8": "sha224", OID_HMAC_SHA256: "sha256",
    "1.2.840.113549.2.10": "sha384", "1.2.840.113549.2.11": "sha512",
}
PBES2_CIPHERS = {  # OID -> (name, key length)
    "2.16.840.1.101.3.4.1.2": ("aes", 16), "2.16.840.1.101.3.4.1.22": ("aes", 24), OID_AES256_CBC: ("aes", 32),
    "1.2.840.113549.3.7": ("3des", 24),
}
PKCS12_PBE = {  # OID -> (cipher, key length, IV length)
    "1.2.840.113549.1.12.1.1": ("rc4", 16, 0), "1.2.840.113549.1.12.1.2": ("rc4", 5, 0),
    "1.2.840.113549.1.12.1.3": ("3des", 24, 8), "1.2.840.113549.1.12.1.4": ("3des", 16, 8),
    "1.2.840.113549.1.12.1.5": ("rc2", 16, 8), "1.2.840.113549.1.12.1.6": ("rc2", 5, 8),
}
ITERATIONS = 10000
MAX_ITERATIONS = 2_000_000  # per derivation, for NSS and PKCS#12 alike: more is a hostile file (each costs a hash)
FILE_KDF_BUDGET = 2_000_000  # for a whole file: real keystores use well under 200 000
_budget: "contextvars.ContextVar[list[int] | None]" = contextvars.ContextVar("pbe_kdf_budget", default=None)


class PbeError(ValueError):
    """What storesync cannot decrypt or check (message: a sentence fragment)."""


class DecryptError(PbeError):
    """Decryption gave garbage: wrong password or damaged ciphertext."""


def bmp_password(password: str) -> bytes:
    """The PKCS#12 KDF's password: BMPString with a two-byte terminator."""
    return password.encode("utf-16-be") + b"\x00\x00"


def spend(iterations: int) -> None:
    """Charge key-derivation work to the file being read (see `budget`): many safes of many iterations each
    are hostile, however reasonable each one looks."""
    left = _budget.get()
    if left is not None:
        left[0] -= iterations
        if left[0] < 0:
            raise PbeError("asks for more key-derivation work than any real keystore does (a hostile file?)")


def pkcs12_kdf(hash_name: str, password: bytes, salt: bytes, purpose: int, iterations: int, n: int) -> bytes:
    """RFC 7292 appendix B.2 (purpose: 1 key, 2 IV, 3 MAC key)."""
    u = hashlib.new(hash_name).digest_size
    v = hashlib.new(hash_name).block_size
    if iterations < 1 or iterations > MAX_ITERATIONS:
        raise PbeError(f"iteration count {iterations} is out of range")
    spend(iterations * -(-n // u))
    return _derived(("pkcs12", hash_name, password, salt, purpose, iterations, n),
                    lambda: _pkcs12_kdf(hash_name, password, salt, purpose, iterations, n, u, v))


#: Keys this process derived, by every input: writing a keystore derives its MAC key and
#: encryption key, and checking what it wrote (the store, then the engine reading the file
#: back) derives the same ones again. Pure functions of their inputs; bounded.
_DERIVED: dict[tuple, bytes] = {}
DERIVED_KEPT = 32


def _derived(key: tuple, compute) -> bytes:
    found = _DERIVED.get(key)
    if found is None:
        if len(_DERIVED) >= DERIVED_KEPT:
            _DERIVED.clear()
        found = _DERIVED[key] = compute()
    return found


def _pkcs12_kdf(hash_name: str, password: bytes, salt: bytes, purpose: int, iterations: int, n: int,
                u: int, v: int) -> bytes:
    return _c().pkcs12_kdf(hash_name, password, salt, purpose, iterations, n) or \
        _pkcs12_kdf_python(hash_name, password, salt, purpose, iterations, n, u, v)


def _pkcs12_kdf_python(hash_name: str, password: bytes, salt: bytes, purpose: int, iterations: int, n: int,
                       u: int, v: int) -> bytes:
    def fill(data: bytes) -> bytes:
        if not data:
            return b""
        size = v * -(-len(data) // v)
        return (data * (size // len(data) + 1))[:size]

    block = bytearray(fill(salt) + fill(password))
    diversifier = bytes([purpose]) * v
    out = b""
    # the C constructor (hashlib.sha256) is several times quicker per call than hashlib.new: this
    # loop runs 10000 times per key in a JDK 17 keystore
    new = getattr(hashlib, hash_name, None) if hash_name in hashlib.algorithms_guaranteed else None
    new = new or (lambda data: hashlib.new(hash_name, data))
    while len(out) < n:
        a = new(diversifier + bytes(block)).digest()
        for _ in range(iterations - 1):
            a = new(a).digest()
        out += a
        b = int.from_bytes((a * (v // u + 1))[:v], "big") + 1
        for j in range(0, len(block), v):
            x = (int.from_bytes(block[j : j + v], "big") + b) & ((1 << (8 * v)) - 1)
            block[j : j + v] = x.to_bytes(v, "big")
    return out[:n]


class _C:
    """libcrypto's PKCS#12 key derivation and AES-CBC (storesync.libcrypto): the same
    computations as `_pkcs12_kdf_python` (10000 hashes a key, in a Python loop) and
    `cryptography`'s AES (whose import costs more than the whole write), in C. Each returns
    None where there is no libcrypto, or it refuses: the caller computes it the other way."""

    def __init__(self):
        import ctypes

        from storesync.libcrypto import libcrypto

        self.ctypes, lib = ctypes, libcrypto()
        try:
            self.digest, self.kdf = lib.EVP_get_digestbyname, lib.PKCS12_key_gen_uni
            new, init, padding = lib.EVP_CIPHER_CTX_new, lib.EVP_CipherInit_ex, lib.EVP_CIPHER_CTX_set_padding
            update, final, free = lib.EVP_CipherUpdate, lib.EVP_CipherFinal_ex, lib.EVP_CIPHER_CTX_free
            aes = {16: lib.EVP_aes_128_cbc, 24: lib.EVP_aes_192_cbc, 32: lib.EVP_aes_256_cbc}
            self.clear = lib.ERR_clear_error
        except AttributeError:  # no libcrypto (None has none of these), or an unlike one
            self.lib = None
            return
        self.lib, self.aes = lib, aes
        p, i, c = ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p
        self.digest.restype, self.digest.argtypes = p, [c]
        self.kdf.restype, self.kdf.argtypes = i, [c, i, c, i, i, i, i, c, p]
        for f in aes.values():
            f.restype, f.argtypes = p, []
        new.restype, new.argtypes = p, []
        init.restype, init.argtypes = i, [p, p, p, c, c, i]
        padding.restype, padding.argtypes = i, [p, i]
        update.restype, update.argtypes = i, [p, c, ctypes.POINTER(i), p, i]  # input: bytes, or an address in them
        final.restype, final.argtypes = i, [p, p, ctypes.POINTER(i)]
        free.restype, free.argtypes = None, [p]
        self.clear.restype, self.clear.argtypes = None, []
        self.cipher_calls = new, init, padding, update, final, free

    def pkcs12_kdf(self, hash_name: str, password: bytes, salt: bytes, purpose: int, iterations: int,
                   n: int) -> bytes | None:
        md = self.digest(hash_name.encode()) if self.lib else None
        if not md:
            return None
        out = self.ctypes.create_string_buffer(n)
        if self.kdf(password, len(password), salt, len(salt), purpose, iterations, n, out, md) != 1:
            self.clear()  # leave no error queued for Python's ssl and hashlib to trip over
            return None
        return out.raw

    def aes_cbc(self, key: bytes, iv: bytes, data: bytes, encrypt: bool, pad: bool = False,
                span: tuple[int, int] | None = None, mutable: bool = False) -> bytes | bytearray | None:
        """AES-CBC of whole blocks, without padding (the caller pads and unpads); with `pad`, an
        encryption adds PKCS#7 padding and a decryption checks and drops it in libcrypto's
        buffer (DecryptError if it is wrong), so neither makes a padded or unpadded copy.
        `span`: (start, end) of the input within `data` (bytes), read where it lies. `mutable`:
        the output is the bytearray libcrypto wrote into (no copy of it as bytes)."""
        start, end = span or (0, len(data))
        if not self.lib or len(key) not in self.aes or len(iv) != 16 or ((end - start) % 16 and not (pad and encrypt)):
            return None
        new, init, padding, update, final, free = self.cipher_calls
        ctypes = self.ctypes
        ctx = new()
        if not ctx:
            return None
        try:
            written, last = ctypes.c_int(), ctypes.c_int()
            buffer = bytearray(end - start + 16) if mutable else None
            out = (ctypes.c_char * len(buffer)).from_buffer(buffer) if mutable else ctypes.create_string_buffer(end - start + 16)
            source = data if not start else ctypes.cast(ctypes.c_char_p(data), ctypes.c_void_p).value + start
            if (init(ctx, self.aes[len(key)](), None, key, iv, int(encrypt)) != 1 or padding(ctx, int(pad and encrypt)) != 1
                    or update(ctx, out, ctypes.byref(written), source, end - start) != 1
                    or final(ctx, ctypes.addressof(out) + written.value, ctypes.byref(last)) != 1):
                self.clear()
                return None
            size = written.value + last.value
            if pad and not encrypt:
                size -= _padding(out[size - 1 : size] if size else b"", lambda n: out[size - n : size], 16)
            if not mutable:
                return ctypes.string_at(out, size)  # one copy (`raw[:n]` made two)
            del out  # the buffer's export ends: it can shrink in place
            del buffer[size:]
            return buffer
        finally:
            free(ctx)


    def aes_cbc_stream(self, key: bytes, iv: bytes, encrypt: bool) -> "_Feed | None":
        """AES-CBC fed piece by piece, without padding (None where libcrypto cannot)."""
        if not self.lib or len(key) not in self.aes or len(iv) != 16:
            return None
        new, init, padding = self.cipher_calls[:3]
        ctx = new()
        if not ctx:
            return None
        feed = _Feed(self, ctx)  # frees the context when it goes
        if init(ctx, self.aes[len(key)](), None, key, iv, int(encrypt)) != 1 or padding(ctx, 0) != 1:
            self.clear()
            return None
        return feed


class _Feed:
    """libcrypto's cipher context with the `update`/`finalize` of a `cryptography` one."""

    def __init__(self, c: _C, ctx):
        self.c, self.ctx, self.out = c, ctx, None

    def update(self, data: bytes) -> bytes:
        ctypes, update = self.c.ctypes, self.c.cipher_calls[3]
        if self.out is None or len(self.out) < len(data) + 16:  # one buffer, grown by 4 KiB: ctypes keeps
            self.out = ctypes.create_string_buffer((len(data) + 16 + 4095) & ~4095)  # a type for each size
        out, written = self.out, ctypes.c_int()
        if update(self.ctx, out, ctypes.byref(written), data, len(data)) != 1:
            self.c.clear()
            raise DecryptError("libcrypto refused the cipher's input")
        return ctypes.string_at(out, written.value)

    def finalize(self) -> bytes:
        ctypes, final = self.c.ctypes, self.c.cipher_calls[4]
        out, written = ctypes.create_string_buffer(16), ctypes.c_int()
        if final(self.ctx, out, ctypes.byref(written)) != 1:  # without padding: the input was not whole blocks
            self.c.clear()
            raise DecryptError("the ciphertext length is not a whole number of blocks")
        return out.raw[: written.value]

    def __del__(self):
        self.c.cipher_calls[5](self.ctx)


_c_calls: _C | None = None


def _c() -> _C:
    global _c_calls
    if _c_calls is None:
        _c_calls = _C()
    return _c_calls


def cipher(name: str, key: bytes, iv: bytes):
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    if name == "aes":
        return Cipher(algorithms.AES(key), modes.CBC(iv))
    from cryptography.hazmat.decrepit.ciphers import algorithms as old

    if name == "3des":
        return Cipher(old.TripleDES(key), modes.CBC(iv))
    if name == "rc4":
        return Cipher(old.ARC4(key), None)
    if name == "rc2" and len(key) == 16:
        return Cipher(old.RC2(key), modes.CBC(iv))
    raise PbeError(f"is encrypted with {name.upper()} using a {len(key) * 8}-bit key, which storesync cannot decrypt")


def aes_cbc_decrypt(key: bytes, iv: bytes, data: bytes, pad: bool = False, span: tuple[int, int] | None = None,
                    mutable: bool = False) -> bytes | bytearray:
    """AES-CBC decryption, padding left in place (`pad`: checked and dropped): libcrypto's, else
    `cryptography`'s. `span`: the ciphertext's (start, end) in `data`, read where it lies.
    `mutable`: the plaintext may be a bytearray (libcrypto's own buffer, not copied)."""
    plain = _c().aes_cbc(key, iv, data, encrypt=False, pad=pad, span=span, mutable=mutable)
    if plain is None:
        if span is not None:
            data = data[span[0] : span[1]]
        decryptor = cipher("aes", key, iv).decryptor()
        plain = decryptor.update(data) + decryptor.finalize()
        if pad:
            plain = plain[: len(plain) - _padding(plain[-1:], lambda n: plain[-n:], 16)]
    return plain


def aes_cbc(key: bytes, iv: bytes, encrypt: bool):
    """AES-CBC fed piece by piece (`update`, then `finalize`), no padding: libcrypto's, else
    `cryptography`'s."""
    feed = _c().aes_cbc_stream(key, iv, encrypt)
    if feed is None:
        context = cipher("aes", key, iv)
        feed = context.encryptor() if encrypt else context.decryptor()
    return feed


def decrypting(algorithm: der.TLV, password: str, size: int, chunks):
    """The plaintext of ciphertext that comes in `chunks` (`size` bytes in all), piece by piece,
    its padding checked and dropped at the end, when it is PBES2 with AES-CBC; None for another
    scheme or a length that is not whole blocks (the caller decrypts it whole with `decrypt`)."""
    oid, params = der.algorithm(algorithm, "encryption algorithm")
    if oid != OID_PBES2 or params is None or not size or size % 16:
        return None
    name, key, iv = _pbes2(params, password)
    if name != "aes" or len(iv) != 16:
        return None
    return _unpadded(aes_cbc(key, iv, encrypt=False), chunks)


def _unpadded(decryptor, chunks):
    held = b""  # the last block, which holds the padding, waits for the next piece
    for chunk in chunks:
        out = held + decryptor.update(chunk)
        held = out[-16:]
        yield out[:-16]
    out = held + decryptor.finalize()
    yield out[: len(out) - _padding(out[-1:], lambda n: out[-n:], 16)]


def _padding(last: bytes, tail, block: int) -> int:
    """The length of PKCS#7 padding whose last byte is `last`; `tail(n)` gives the last n bytes.
    DecryptError if it is not padding (a wrong key decrypts to noise)."""
    pad = last[0] if last else 0
    if not 1 <= pad <= block or tail(pad) != bytes([pad]) * pad:
        raise DecryptError("bad padding")
    return pad


def prepare_aes() -> None:
    """Load now what `aes_cbc_decrypt` needs: for a child that drops root's privileges first."""
    if _c().lib is None:
        from cryptography.hazmat.primitives.ciphers import Cipher  # noqa: F401


def _decrypt_with(name: str, key: bytes, iv: bytes, data: bytes, span: tuple[int, int] | None = None) -> bytes:
    if name == "aes" and len(iv) == 16:  # the plaintext made once: no copy of the ciphertext, none to unpad
        if ((span[1] - span[0]) if span else len(data)) % 16:
            raise DecryptError("the ciphertext length is not a whole number of blocks")
        return aes_cbc_decrypt(key, iv, data, pad=True, span=span, mutable=True)
    if span is not None:
        data = data[span[0] : span[1]]
    if name == "rc2" and len(key) != 16:
        plain = _rc2_cbc_decrypt(key, len(key) * 8, iv, data)
    else:
        if name != "rc4" and len(data) % len(iv or b"x" * 8):
            raise DecryptError("the ciphertext length is not a whole number of blocks")
        if name == "aes":
            plain = aes_cbc_decrypt(key, iv, data)
        else:
            decryptor = cipher(name, key, iv).decryptor()
            plain = decryptor.update(data) + decryptor.finalize()
    if name == "rc4":
        return plain
    return plain[: len(plain) - _padding(plain[-1:], lambda n: plain[-n:], len(iv))]


def decrypt(algorithm: der.TLV, data: bytes, password: str, span: tuple[int, int] | None = None) -> bytes | bytearray:
    """Decrypt `data` (`span`: its (start, end) within `data`, read where it lies) per its
    AlgorithmIdentifier with the store password. An AES plaintext is the bytearray libcrypto
    decrypted into (a copy of a keystore's safe as bytes was the third copy of the file)."""
    oid, params = der.algorithm(algorithm, "encryption algorithm")
    if oid == OID_PBES2 and params is not None:
        return _decrypt_with(*_pbes2(params, password), data, span)
    if oid in PKCS12_PBE and params is not None:
        name, key_length, iv_length = PKCS12_PBE[oid]
        kids = der.kids(params)
        salt = der.octets_of(kids[0], "PBE salt")
        iterations = der.integer_of(kids[1], "PBE iterations") if len(kids) > 1 else 1
        secret = bmp_password(password) if password else b""
        candidates = [secret] if password else [b"\x00\x00", b""]
        last: Exception | None = None
        for secret in candidates:
            key = pkcs12_kdf("sha1", secret, salt, 1, iterations, key_length)
            iv = pkcs12_kdf("sha1", secret, salt, 2, iterations, iv_length) if iv_length else b""
            try:
                return _decrypt_with(name, key, iv, data, span)
            except DecryptError as exc:
                last = exc
        raise last  # type: ignore[misc]
    raise PbeError(f"is encrypted with the algorithm {oid}, which storesync cannot decrypt")


def _pbes2(params: der.TLV, password: str) -> tuple[str, bytes, bytes]:
    """PBES2 parameters -> (cipher name, key, IV)."""
    kdf, scheme = der.kids(params)[:2]
    kdf_oid, kdf_params = der.algorithm(kdf, "PBES2 key derivation")
    if kdf_oid != OID_PBKDF2 or kdf_params is None:
        raise PbeError(f"uses the key derivation {kdf_oid}, which storesync cannot use")
    cipher_oid, iv = der.algorithm(scheme, "PBES2 cipher")
    if cipher_oid not in PBES2_CIPHERS or iv is None:
        raise PbeError(f"is encrypted with the cipher {cipher_oid}, which storesync cannot decrypt")
    name, key_length = PBES2_CIPHERS[cipher_oid]
    salt, iterations, prf, _ = pbkdf2_params(kdf_params)
    return name, pbkdf2(prf, password.encode("utf-8"), salt, iterations, key_length), der.octets_of(iv, "IV")


def pbkdf2_params(params: der.TLV) -> tuple[bytes, int, str, int | None]:
    """PBKDF2-params -> (salt, iterations, PRF hash name, key length or None when absent)."""
    kids = der.kids(der.expect(params, der.SEQUENCE, "PBKDF2 parameters"))
    salt = der.octets_of(kids[0], "PBKDF2 salt")
    iterations = der.integer_of(kids[1], "PBKDF2 iterations")
    if not 1 <= iterations <= MAX_ITERATIONS:
        raise PbeError(f"PBKDF2 iteration count {iterations} is out of range")
    prf, key_length = "sha1", None
    for kid in kids[2:]:
        if kid.tag == der.INTEGER and key_length is None:
            key_length = der.integer_of(kid, "PBKDF2 key length")
        elif kid.tag == der.SEQUENCE:
            prf_oid, _ = der.algorithm(kid, "PBKDF2 PRF")
            if prf_oid not in HMAC_PRFS:
                raise PbeError(f"uses the PBKDF2 PRF {prf_oid}, which storesync cannot use")
            prf = HMAC_PRFS[prf_oid]
    return salt, iterations, prf, key_length


def pbkdf2_of(algorithm: der.TLV) -> tuple[bytes, int, str, int | None]:
    """An AlgorithmIdentifier that must be PBKDF2 -> `pbkdf2_params` of it."""
    oid, params = der.algorithm(algorithm, "key derivation")
    if oid != OID_PBKDF2 or params is None:
        raise PbeError(f"uses the key derivation {oid}, which storesync cannot use")
    return pbkdf2_params(params)


def pbkdf2_algorithm(salt: bytes, iterations: int, key_length: int = 32) -> bytes:
    """The AlgorithmIdentifier of PBKDF2-HMAC-SHA256, as NSS and JDK 17 write it."""
    return der.seq(der.encode_oid(OID_PBKDF2), der.seq(der.octets(salt), der.integer(iterations),
                                                       der.integer(key_length), der.seq(der.encode_oid(OID_HMAC_SHA256), der.NULL)))


def pbkdf2(prf: str, secret: bytes, salt: bytes, iterations: int, length: int) -> bytes:
    """PBKDF2, its iterations charged to the file being read."""
    spend(iterations)
    return _pbkdf2(prf, secret, salt, iterations, length)


def _pbkdf2(prf: str, secret: bytes, salt: bytes, iterations: int, length: int) -> bytes:
    return _derived(("pbkdf2", prf, secret, salt, iterations, length),
                    lambda: hashlib.pbkdf2_hmac(prf, secret, salt, iterations, length))


def pbes2_hashes() -> tuple:
    """What `pbes2_encryption` derives its salt and IV from, to be fed the plaintext."""
    return hashlib.sha256(b"storesync p12 salt\0"), hashlib.sha256(b"storesync p12 iv\0")


def pbes2_encryption(hashes: tuple, password: str):
    """(AlgorithmIdentifier, a new AES-CBC encryptor): PBES2, PBKDF2-HMAC-SHA256, AES-256-CBC, as
    JDK 17. Salt and IV come from `hashes` fed the plaintext (public certificates), so output is
    deterministic; the caller feeds the encryptor the plaintext and its PKCS#7 padding."""
    salt, iv = hashes[0].digest()[:20], hashes[1].digest()[:16]
    key = _pbkdf2("sha256", password.encode("utf-8"), salt, ITERATIONS, 32)
    algorithm = der.seq(
        der.encode_oid(OID_PBES2),
        der.seq(pbkdf2_algorithm(salt, ITERATIONS), der.seq(der.encode_oid(OID_AES256_CBC), der.octets(iv))),
    )
    return algorithm, lambda: aes_cbc(key, iv, encrypt=True)


# RC2 (RFC 2268), decryption only: 40-bit RC2 is what OpenSSL 1.x and JDK 8 encrypted
# certificates with, and `cryptography` offers RC2 with 128-bit keys only.
_PITABLE = bytes.fromhex(
    "d978f9c419ddb5ed28e9fd794aa0d89dc67e37832b76538e624c6488448bfba2179a59f587b34f1361456d8d09817d32"
    "bd8f40eb86b77b0bf09521225c6b4e8254d66593ce60b21c7356c014a78cf1dc1275ca1f3bbee4d1423dd430a33cb626"
    "6fbf0eda4669075727f21d9bbc944303f811c7f690ef3ee706c3d52fc8661ed708e8eade8052eef784aa72ac354d6a2a"
    "961ad2715a1549744b9fd05e0418a4ecc2e0416e0f51cbcc2491af50a1f47039997c3a8523b8b47afc02365b25559731"
    "2d5dfa98e38a92ae05df29106 76cbac9d300e6cfe19ea82c6316013f58e289a90d38341bab33ffb0bb480c5fb9b1cd2e"
    "c5f3db47e5a59c770aa62068fe7fc1ad".replace(" ", "")
)


def _rc2_key_schedule(key: bytes, bits: int) -> list[int]:
    t8 = (bits + 7) // 8
    tm = 255 % (1 << (8 + bits - 8 * t8))
    expanded = bytearray(key) + bytearray(128 - len(key))
    for i in range(len(key), 128):
        expanded[i] = _PITABLE[(expanded[i - 1] + expanded[i - len(key)]) & 0xFF]
    expanded[128 - t8] = _PITABLE[expanded[128 - t8] & tm]
    for i in range(127 - t8, -1, -1):
        expanded[i] = _PITABLE[expanded[i + 1] ^ expanded[i + t8]]
    return [expanded[2 * i] | expanded[2 * i + 1] << 8 for i in range(64)]


def _rc2_decrypt_block(k: list[int], block: bytes) -> bytes:
    r = [block[2 * i] | block[2 * i + 1] << 8 for i in range(4)]
    j = 63
    for round_ in range(16):
        for i in (3, 2, 1, 0):
            shift = (1, 2, 3, 5)[i]
            r[i] = ((r[i] >> shift) | (r[i] << (16 - shift))) & 0xFFFF
            r[i] = (r[i] - k[j] - (r[i - 1] & r[i - 2]) - (~r[i - 1] & r[i - 3])) & 0xFFFF
            j -= 1
        if round_ in (4, 10):
            for i in (3, 2, 1, 0):
                r[i] = (r[i] - k[r[i - 1] & 63]) & 0xFFFF
    return b"".join(x.to_bytes(2, "little") for x in r)


def _rc2_cbc_decrypt(key: bytes, bits: int, iv: bytes, data: bytes) -> bytes:
    if len(data) % 8 or len(iv) != 8:
        raise DecryptError("the ciphertext length is not a whole number of blocks")
    k = _rc2_key_schedule(key, bits)
    out, previous = bytearray(), iv
    for pos in range(0, len(data), 8):
        block = data[pos : pos + 8]
        out += bytes(a ^ b for a, b in zip(_rc2_decrypt_block(k, block), previous))
        previous = block
    return bytes(out)


class budget:
    """Charge every key derivation inside `with` to one file: FILE_KDF_BUDGET iterations in all
    (`left`: what a read of the file has left, when it is charged in more than one place);
    gives what is left, as it is spent. (A class: contextlib is not imported on the one-shot path.)"""

    def __init__(self, left: list[int] | None = None):
        self.left, self.token = [FILE_KDF_BUDGET] if left is None else left, None

    def __enter__(self) -> list[int]:
        self.token = _budget.set(self.left)
        return self.left

    def __exit__(self, *exc) -> None:
        _budget.reset(self.token)
