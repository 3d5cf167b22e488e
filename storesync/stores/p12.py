"""`p12`: a PKCS#12 trust store as Java reads it (keytool `-storetype PKCS12`, the JDK's own
`cacerts` since JDK 18, `cryptography`'s `serialize_java_truststore`).

Java counts a certificate bag as a trust anchor only when it carries the bag attribute
2.16.840.1.113894.746875.1.1 (docs/formats.md §5.2); without it keytool lists nothing and TLS fails.
`cryptography`'s `load_pkcs12` does not report bag attributes, so this module walks the
SafeBags itself (storesync.der) and decrypts encrypted safes with `cryptography`'s ciphers:
PBES2 (PBKDF2 + AES or 3DES: what keytool, OpenSSL 3 and `cryptography` write) and the PKCS#12
PBE schemes (SHA-1 with 3DES, RC2 or RC4: what OpenSSL 1.x and old JDKs wrote). The MAC is
checked (HMAC with the PKCS#12 key derivation, or PBMAC1). Certificate bags without the trust
attribute and private keys are reported in `warnings` and not counted.

Store options:

- `password-file=FILE`: the store password (first line of FILE); default `changeit`. A file
  whose MAC is keyed with the empty password (as `cryptography` writes with `NoEncryption()`)
  is recognised when no password file is given, and keeps its empty password.
- `aliases=debian|jdk|label`: alias scheme for added certificates, as for `jks` (by default the
  one the file already uses; the JDK's `<name> [jdk]`, Debian's `debian:<name>.pem`, else the
  certificate's label). An existing entry keeps its alias (friendlyName).
- `protect=no`: a *new* file is written password-less, as JDK >= 18 ships its cacerts (no
  MAC, certificates not encrypted). An existing file keeps its protection either way: a
  password-less file stays password-less, a protected one stays protected.

Writing keeps every bag that is not a trust anchor byte for byte (private keys and their
chains), and every anchor bag that stays; a safe that holds no anchor is copied unchanged.
Rewritten encrypted safes use PBES2 with PBKDF2-HMAC-SHA256 (10000 iterations) and AES-256-CBC,
the MAC is HMAC-SHA256 (keeping the file's own MAC digest and iteration count), as JDK 17's
keytool writes; salts and IVs are derived from the content, so the same set gives the same
bytes. A file in public-key privacy or integrity mode (enveloped or signed) is refused.
"""

from __future__ import annotations

import contextvars
import hashlib
import hmac
from dataclasses import dataclass

from storesync import der
from storesync.model import Capabilities, Certificate, Entry, TrustSet
from storesync.stores import FileStore
from storesync.stores.jks import chosen_scheme, make_alias, store_password, unchanged_anchor_set

OID_DATA = "1.2.840.113549.1.7.1"
OID_SIGNED_DATA = "1.2.840.113549.1.7.2"
OID_ENVELOPED_DATA = "1.2.840.113549.1.7.3"
OID_ENCRYPTED_DATA = "1.2.840.113549.1.7.6"
BAG_KEY = "1.2.840.113549.1.12.10.1.1"
BAG_SHROUDED_KEY = "1.2.840.113549.1.12.10.1.2"
BAG_CERT = "1.2.840.113549.1.12.10.1.3"
BAG_CRL = "1.2.840.113549.1.12.10.1.4"
BAG_SECRET = "1.2.840.113549.1.12.10.1.5"
BAG_SAFE_CONTENTS = "1.2.840.113549.1.12.10.1.6"
OID_X509_CERT = "1.2.840.113549.1.9.22.1"
OID_FRIENDLY_NAME = "1.2.840.113549.1.9.20"
OID_LOCAL_KEY_ID = "1.2.840.113549.1.9.21"
OID_JAVA_TRUST = "2.16.840.1.113894.746875.1.1"
OID_ANY_EKU = "2.5.29.37.0"
OID_PBES2 = "1.2.840.113549.1.5.13"
OID_PBKDF2 = "1.2.840.113549.1.5.12"
OID_PBMAC1 = "1.2.840.113549.1.5.14"
OID_AES256_CBC = "2.16.840.1.101.3.4.1.42"
OID_HMAC_SHA256 = "1.2.840.113549.2.9"

HMAC_PRFS = {
    "1.2.840.113549.2.7": "sha1", "1.2.840.113549.2.8": "sha224", OID_HMAC_SHA256: "sha256",
    "1.2.840.113549.2.10": "sha384", "1.2.840.113549.2.11": "sha512",
}
DIGESTS = {
    "1.3.14.3.2.26": "sha1", "2.16.840.1.101.3.4.2.4": "sha224", "2.16.840.1.101.3.4.2.1": "sha256",
    "2.16.840.1.101.3.4.2.2": "sha384", "2.16.840.1.101.3.4.2.3": "sha512",
}
DIGEST_OIDS = {name: oid for oid, name in DIGESTS.items()}
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
MAX_ITERATIONS = 2_000_000  # more is a hostile file: each iteration costs a hash
FILE_KDF_BUDGET = 2_000_000  # for a whole file: real keystores use well under 200 000
_kdf_budget: "contextvars.ContextVar[list[int] | None]" = contextvars.ContextVar("p12_kdf_budget", default=None)
_CAPS = Capabilities(purposes=False, distrust=False, distrust_after=False, labels=True)
_NULL = b"\x05\x00"


class P12Error(ValueError):
    """The bytes are not a PKCS#12 file storesync can read (message: a sentence fragment)."""


class DecryptError(P12Error):
    """Decryption gave garbage: wrong password or damaged ciphertext."""


# --- small DER helpers ----------------------------------------------------------------------


def _seq(*parts: bytes) -> bytes:
    return der.encode(der.SEQUENCE, b"".join(parts))


def _int(n: int) -> bytes:
    return der.encode(der.INTEGER, n.to_bytes(n.bit_length() // 8 + 1, "big", signed=True))


def _octets(data: bytes) -> bytes:
    return der.encode(der.OCTET_STRING, data)


def _explicit0(data: bytes) -> bytes:
    return der.encode(0xA0, data)


def _kids(tlv: der.TLV) -> list[der.TLV]:
    return list(tlv.children())


def _expect(tlv: der.TLV, tag: int, what: str) -> der.TLV:
    if tlv.tag != tag:
        raise P12Error(f"{what} has tag 0x{tlv.tag:02x}, expected 0x{tag:02x}")
    return tlv


def _oid(tlv: der.TLV, what: str) -> str:
    return der.decode_oid(_expect(tlv, der.OID, what).value)


def _integer(tlv: der.TLV, what: str) -> int:
    value = _expect(tlv, der.INTEGER, what).value
    if not value or len(value) > 8:
        raise P12Error(f"{what} is not a sensible integer")
    return int.from_bytes(value, "big", signed=True)


def _octet_string(tlv: der.TLV, what: str) -> bytes:
    """An OCTET STRING's content; BER's constructed form (definite lengths) is joined."""
    if tlv.tag == der.OCTET_STRING:
        return tlv.value
    if tlv.tag == 0x24:  # BER nests one level in practice; deeper is hostile
        pieces = list(tlv.children())
        if any(p.tag != der.OCTET_STRING for p in pieces):
            raise P12Error(f"{what} is a nested constructed OCTET STRING")
        return b"".join(p.value for p in pieces)
    raise P12Error(f"{what} is not an OCTET STRING")


def _content(content_info: der.TLV, what: str) -> tuple[str, der.TLV | None]:
    """ContentInfo -> (contentType, the element inside [0] EXPLICIT)."""
    kids = _kids(_expect(content_info, der.SEQUENCE, what))
    if not kids:
        raise P12Error(f"{what} is empty")
    content_type = _oid(kids[0], f"{what} content type")
    if len(kids) < 2:
        return content_type, None
    inner = _kids(_expect(kids[1], 0xA0, f"{what} content"))
    if len(inner) != 1:
        raise P12Error(f"{what} content is malformed")
    return content_type, inner[0]


def _algorithm(tlv: der.TLV, what: str) -> tuple[str, der.TLV | None]:
    kids = _kids(_expect(tlv, der.SEQUENCE, what))
    if not kids:
        raise P12Error(f"{what} is empty")
    return _oid(kids[0], what), (kids[1] if len(kids) > 1 else None)


# --- key derivation and ciphers -------------------------------------------------------------


def bmp_password(password: str) -> bytes:
    """The PKCS#12 KDF's password: BMPString with a two-byte terminator."""
    return password.encode("utf-16-be") + b"\x00\x00"


def _spend(iterations: int) -> None:
    """Charge key-derivation work to the file being read: many safes of many iterations each
    are hostile, however reasonable each one looks."""
    left = _kdf_budget.get()
    if left is not None:
        left[0] -= iterations
        if left[0] < 0:
            raise P12Error("asks for more key-derivation work than any real keystore does (a hostile file?)")


def pkcs12_kdf(hash_name: str, password: bytes, salt: bytes, purpose: int, iterations: int, n: int) -> bytes:
    """RFC 7292 appendix B.2 (purpose: 1 key, 2 IV, 3 MAC key)."""
    u = hashlib.new(hash_name).digest_size
    v = hashlib.new(hash_name).block_size
    if iterations < 1 or iterations > MAX_ITERATIONS:
        raise P12Error(f"iteration count {iterations} is out of range")
    _spend(iterations * -(-n // u))

    def fill(data: bytes) -> bytes:
        if not data:
            return b""
        size = v * -(-len(data) // v)
        return (data * (size // len(data) + 1))[:size]

    block = bytearray(fill(salt) + fill(password))
    diversifier = bytes([purpose]) * v
    out = b""
    while len(out) < n:
        a = hashlib.new(hash_name, diversifier + bytes(block)).digest()
        for _ in range(iterations - 1):
            a = hashlib.new(hash_name, a).digest()
        out += a
        b = int.from_bytes((a * (v // u + 1))[:v], "big") + 1
        for j in range(0, len(block), v):
            x = (int.from_bytes(block[j : j + v], "big") + b) & ((1 << (8 * v)) - 1)
            block[j : j + v] = x.to_bytes(v, "big")
    return out[:n]


def _cipher(name: str, key: bytes, iv: bytes):
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
    raise P12Error(f"is encrypted with {name.upper()} using a {len(key) * 8}-bit key, which storesync cannot decrypt")


def _decrypt_with(name: str, key: bytes, iv: bytes, data: bytes) -> bytes:
    if name == "rc2" and len(key) != 16:
        plain = _rc2_cbc_decrypt(key, len(key) * 8, iv, data)
    else:
        if name != "rc4" and len(data) % len(iv or b"x" * 8):
            raise DecryptError("the ciphertext length is not a whole number of blocks")
        decryptor = _cipher(name, key, iv).decryptor()
        plain = decryptor.update(data) + decryptor.finalize()
    if name == "rc4":
        return plain
    pad = plain[-1] if plain else 0
    if not 1 <= pad <= len(iv) or plain[-pad:] != bytes([pad]) * pad:
        raise DecryptError("bad padding")
    return plain[:-pad]


def decrypt(algorithm: der.TLV, data: bytes, password: str) -> bytes:
    """Decrypt `data` per its AlgorithmIdentifier with the store password."""
    oid, params = _algorithm(algorithm, "encryption algorithm")
    if oid == OID_PBES2 and params is not None:
        kdf, scheme = _kids(params)[:2]
        kdf_oid, kdf_params = _algorithm(kdf, "PBES2 key derivation")
        if kdf_oid != OID_PBKDF2 or kdf_params is None:
            raise P12Error(f"uses the key derivation {kdf_oid}, which storesync cannot use")
        cipher_oid, iv = _algorithm(scheme, "PBES2 cipher")
        if cipher_oid not in PBES2_CIPHERS or iv is None:
            raise P12Error(f"is encrypted with the cipher {cipher_oid}, which storesync cannot decrypt")
        name, key_length = PBES2_CIPHERS[cipher_oid]
        salt, iterations, prf = _pbkdf2_params(kdf_params)
        _spend(iterations)
        key = hashlib.pbkdf2_hmac(prf, password.encode("utf-8"), salt, iterations, key_length)
        return _decrypt_with(name, key, _octet_string(iv, "IV"), data)
    if oid in PKCS12_PBE and params is not None:
        name, key_length, iv_length = PKCS12_PBE[oid]
        kids = _kids(params)
        salt = _octet_string(kids[0], "PBE salt")
        iterations = _integer(kids[1], "PBE iterations") if len(kids) > 1 else 1
        secret = bmp_password(password) if password else b""
        candidates = [secret] if password else [b"\x00\x00", b""]
        last: Exception | None = None
        for secret in candidates:
            key = pkcs12_kdf("sha1", secret, salt, 1, iterations, key_length)
            iv = pkcs12_kdf("sha1", secret, salt, 2, iterations, iv_length) if iv_length else b""
            try:
                return _decrypt_with(name, key, iv, data)
            except DecryptError as exc:
                last = exc
        raise last  # type: ignore[misc]
    raise P12Error(f"is encrypted with the algorithm {oid}, which storesync cannot decrypt")


def _pbkdf2_params(params: der.TLV) -> tuple[bytes, int, str]:
    kids = _kids(_expect(params, der.SEQUENCE, "PBKDF2 parameters"))
    salt = _octet_string(kids[0], "PBKDF2 salt")
    iterations = _integer(kids[1], "PBKDF2 iterations")
    if not 1 <= iterations <= MAX_ITERATIONS:
        raise P12Error(f"PBKDF2 iteration count {iterations} is out of range")
    prf = "sha1"
    for kid in kids[2:]:
        if kid.tag == der.SEQUENCE:
            prf_oid, _ = _algorithm(kid, "PBKDF2 PRF")
            if prf_oid not in HMAC_PRFS:
                raise P12Error(f"uses the PBKDF2 PRF {prf_oid}, which storesync cannot use")
            prf = HMAC_PRFS[prf_oid]
    return salt, iterations, prf


def encrypt_pbes2(plain: bytes, password: str) -> tuple[bytes, bytes]:
    """(AlgorithmIdentifier, ciphertext): PBES2, PBKDF2-HMAC-SHA256, AES-256-CBC, as JDK 17.

    Salt and IV come from the plaintext (public certificates), so output is deterministic."""
    salt = hashlib.sha256(b"storesync p12 salt\0" + plain).digest()[:20]
    iv = hashlib.sha256(b"storesync p12 iv\0" + plain).digest()[:16]
    key = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, ITERATIONS, 32)
    pad = 16 - len(plain) % 16
    encryptor = _cipher("aes", key, iv).encryptor()
    ciphertext = encryptor.update(plain + bytes([pad]) * pad) + encryptor.finalize()
    algorithm = _seq(
        der.encode_oid(OID_PBES2),
        _seq(
            _seq(der.encode_oid(OID_PBKDF2),
                 _seq(_octets(salt), _int(ITERATIONS), _int(32), _seq(der.encode_oid(OID_HMAC_SHA256), _NULL))),
            _seq(der.encode_oid(OID_AES256_CBC), _octets(iv)),
        ),
    )
    return algorithm, ciphertext


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


# --- the PFX structure ----------------------------------------------------------------------


@dataclass
class Bag:
    raw: bytes
    bag_id: str
    attributes: dict[str, list[der.TLV]]
    cert: bytes | None = None

    @property
    def alias(self) -> str | None:
        for value in self.attributes.get(OID_FRIENDLY_NAME, []):
            if value.tag == 0x1E:
                return value.value.decode("utf-16-be", "replace")
            return value.value.decode("utf-8", "replace")
        return None

    @property
    def java_trusted(self) -> bool:
        return self.bag_id == BAG_CERT and self.cert is not None and OID_JAVA_TRUST in self.attributes

    @property
    def sha256(self) -> str | None:
        return hashlib.sha256(self.cert).hexdigest() if self.cert is not None else None


@dataclass
class Safe:
    raw: bytes  # the ContentInfo exactly as stored
    encrypted: bool
    bags: list[Bag]


@dataclass
class Pfx:
    safes: list[Safe]
    password: str
    mac: tuple[str, int] | None  # (digest name, iterations) of a classic MAC; None: no MAC
    mac_secret: bytes | None = None  # the KDF password bytes the MAC verified with

    @property
    def bags(self) -> list[Bag]:
        return [bag for safe in self.safes for bag in safe.bags]


def _parse_bags(data: bytes) -> list[Bag]:
    bags = []
    for tlv in _kids(_expect(der.read_all(data), der.SEQUENCE, "SafeContents")):
        kids = _kids(_expect(tlv, der.SEQUENCE, "SafeBag"))
        if len(kids) < 2:
            raise P12Error("a SafeBag is incomplete")
        bag_id = _oid(kids[0], "bag type")
        value = _kids(_expect(kids[1], 0xA0, "bag value"))
        attributes: dict[str, list[der.TLV]] = {}
        if len(kids) > 2:
            for attribute in _expect(kids[2], der.SET, "bag attributes").children():
                parts = _kids(_expect(attribute, der.SEQUENCE, "bag attribute"))
                if len(parts) != 2:
                    raise P12Error("a bag attribute is malformed")
                attributes[_oid(parts[0], "attribute type")] = _kids(_expect(parts[1], der.SET, "attribute values"))
        bag = Bag(tlv.raw, bag_id, attributes)
        if bag_id == BAG_CERT and len(value) == 1:
            cert_bag = _kids(_expect(value[0], der.SEQUENCE, "CertBag"))
            if len(cert_bag) == 2 and _oid(cert_bag[0], "certificate type") == OID_X509_CERT:
                inner = _kids(_expect(cert_bag[1], 0xA0, "certificate value"))
                if len(inner) != 1:
                    raise P12Error("a certificate bag is malformed")
                bag.cert = _octet_string(inner[0], "certificate")
        bags.append(bag)
    return bags


def _mac_ok(authsafe: bytes, mac_data: der.TLV, password: str) -> tuple[tuple[str, int] | None, bytes | None] | None:
    """Check the MAC; returns ((digest, iterations) or None for PBMAC1, secret) or None if it fails."""
    kids = _kids(_expect(mac_data, der.SEQUENCE, "MacData"))
    digest_info = _kids(_expect(kids[0], der.SEQUENCE, "MAC DigestInfo"))
    oid, params = _algorithm(digest_info[0], "MAC algorithm")
    expected = _octet_string(digest_info[1], "MAC value")
    salt = _octet_string(kids[1], "MAC salt") if len(kids) > 1 else b""
    iterations = _integer(kids[2], "MAC iterations") if len(kids) > 2 else 1
    if oid == OID_PBMAC1 and params is not None:
        kdf, scheme = _kids(params)[:2]
        kdf_oid, kdf_params = _algorithm(kdf, "PBMAC1 key derivation")
        scheme_oid, _ = _algorithm(scheme, "PBMAC1 MAC")
        if kdf_oid != OID_PBKDF2 or kdf_params is None or scheme_oid not in HMAC_PRFS:
            raise P12Error("uses a PBMAC1 variant storesync cannot check")
        pb_salt, pb_iterations, prf = _pbkdf2_params(kdf_params)
        key_kids = [k for k in _kids(kdf_params) if k.tag == der.INTEGER]
        length = _integer(key_kids[1], "PBMAC1 key length") if len(key_kids) > 1 else hashlib.new(prf).digest_size
        if not 1 <= length <= 64:
            raise P12Error(f"asks for a {length}-byte PBMAC1 key (HMAC keys are at most 64 bytes)")
        _spend(pb_iterations)
        key = hashlib.pbkdf2_hmac(prf, password.encode("utf-8"), pb_salt, pb_iterations, length)
        ok = hmac.compare_digest(hmac.new(key, authsafe, HMAC_PRFS[scheme_oid]).digest(), expected)
        # rewritten with a classic MAC under the same password
        return (None, bmp_password(password) if password else b"\x00\x00") if ok else None
    if oid not in DIGESTS:
        raise P12Error(f"has a MAC with the digest {oid}, which storesync cannot check")
    digest = DIGESTS[oid]
    size = hashlib.new(digest).digest_size
    for secret in ([bmp_password(password)] if password else [b"\x00\x00", b""]):
        key = pkcs12_kdf(digest, secret, salt, 3, iterations, size)
        if hmac.compare_digest(hmac.new(key, authsafe, digest).digest(), expected):
            return (digest, iterations), secret
    return None


def load_pfx(data: bytes, password: str, try_empty: bool) -> Pfx:
    """Parse, check the MAC and decrypt. Raises P12Error (DecryptError: wrong password)."""
    budget = _kdf_budget.set([FILE_KDF_BUDGET])
    try:
        return _load_pfx(data, password, try_empty)
    except der.DERError as exc:
        raise P12Error(f"is not a well-formed PKCS#12 file ({exc})") from None
    except (IndexError, ValueError, OverflowError, RecursionError) as exc:
        if isinstance(exc, P12Error):
            raise
        raise P12Error(f"is not a well-formed PKCS#12 file ({exc or 'a structure is incomplete'})") from None
    finally:
        _kdf_budget.reset(budget)


class MacError(P12Error):
    pass


def _load_pfx(data: bytes, password: str, try_empty: bool) -> Pfx:
    pfx = _kids(_expect(der.read_all(data), der.SEQUENCE, "PFX"))
    if len(pfx) < 2:
        raise P12Error("is not a PKCS#12 file (too few parts)")
    version = _integer(pfx[0], "PFX version")
    if version != 3:
        raise P12Error(f"has PKCS#12 version {version}; only version 3 exists")
    content_type, inner = _content(pfx[1], "authSafe")
    if content_type == OID_SIGNED_DATA:
        raise P12Error("uses public-key integrity mode (a signed PFX), which storesync does not read")
    if content_type != OID_DATA or inner is None:
        raise P12Error(f"has an authSafe of type {content_type}, not data")
    authsafe = _octet_string(inner, "authSafe")
    content_infos = _kids(_expect(der.read_all(authsafe), der.SEQUENCE, "AuthenticatedSafe"))

    mac = secret = None
    if len(pfx) > 2:
        checked = _mac_ok(authsafe, pfx[2], password)
        if checked is None and try_empty and password:
            checked = _mac_ok(authsafe, pfx[2], "")
            if checked is not None:
                password = ""
        if checked is None:
            raise MacError(_why_mac_failed(content_infos, password))
        mac, secret = checked
        if mac is None:
            mac = ("sha256", ITERATIONS)  # PBMAC1: rewritten as a classic HMAC-SHA256 MAC

    safes = []
    for index, info in enumerate(content_infos):
        kind, content = _content(info, f"safe {index + 1}")
        if kind == OID_DATA and content is not None:
            safes.append(Safe(info.raw, False, _parse_bags(_octet_string(content, "safe"))))
        elif kind == OID_ENCRYPTED_DATA and content is not None:
            plain = _decrypt_safe(content, password)
            try:
                bags = _parse_bags(plain)
            except (der.DERError, P12Error, IndexError):
                raise DecryptError("decrypted safe is not SafeContents") from None
            safes.append(Safe(info.raw, True, bags))
        elif kind == OID_ENVELOPED_DATA:
            raise P12Error("uses public-key privacy mode (an enveloped safe), which storesync does not read")
        else:
            raise P12Error(f"has a safe of unknown type {kind}")
    return Pfx(safes, password, mac, secret)


def _decrypt_safe(content: der.TLV, password: str) -> bytes:
    encrypted_data = _kids(_expect(content, der.SEQUENCE, "EncryptedData"))
    eci = _kids(_expect(encrypted_data[1], der.SEQUENCE, "EncryptedContentInfo"))
    if len(eci) < 3:
        raise P12Error("an encrypted safe has no content")
    body = eci[2]
    if body.tag == 0x80:
        ciphertext = body.value
    elif body.tag == 0xA0:  # constructed [0]: BER chunks
        ciphertext = b"".join(_octet_string(c, "ciphertext") for c in body.children())
    else:
        raise P12Error("an encrypted safe's content is malformed")
    return decrypt(eci[1], ciphertext, password)


def _why_mac_failed(content_infos: list[der.TLV], password: str) -> str:
    """A MAC failure is a wrong password or a changed file; an encrypted safe can tell which."""
    for info in content_infos:
        try:
            kind, content = _content(info, "safe")
            if kind != OID_ENCRYPTED_DATA or content is None:
                continue
            _parse_bags(_decrypt_safe(content, password))
        except (P12Error, der.DERError, IndexError, ValueError):
            return "wrong password"
        return "tampered"
    return "either"


# --- writing --------------------------------------------------------------------------------


def java_trusted_cert_bag(cert_der: bytes, alias: str) -> bytes:
    """A certificate bag as keytool writes a trustedCertEntry (friendlyName + Java trust)."""
    cert_bag = _seq(der.encode_oid(OID_X509_CERT), _explicit0(_octets(cert_der)))
    attributes = der.encode(
        der.SET,
        _seq(der.encode_oid(OID_FRIENDLY_NAME), der.encode(der.SET, der.encode(0x1E, alias.encode("utf-16-be"))))
        + _seq(der.encode_oid(OID_JAVA_TRUST), der.encode(der.SET, der.encode_oid(OID_ANY_EKU))),
    )
    return _seq(der.encode_oid(BAG_CERT), _explicit0(cert_bag), attributes)


def safe_content_info(bags: list[bytes], password: str | None) -> bytes:
    """A data ContentInfo (password None) or a PBES2-encrypted one."""
    plain = _seq(*bags)
    if password is None:
        return _seq(der.encode_oid(OID_DATA), _explicit0(_octets(plain)))
    algorithm, ciphertext = encrypt_pbes2(plain, password)
    encrypted_content_info = _seq(der.encode_oid(OID_DATA), algorithm, der.encode(0x80, ciphertext))
    return _seq(der.encode_oid(OID_ENCRYPTED_DATA), _explicit0(_seq(_int(0), encrypted_content_info)))


def render_pfx(content_infos: list[bytes], mac: tuple[str, int, bytes] | None) -> bytes:
    """PFX around `content_infos`; `mac` = (digest, iterations, KDF password bytes) or None."""
    authsafe = _seq(*content_infos)
    parts = [_int(3), _seq(der.encode_oid(OID_DATA), _explicit0(_octets(authsafe)))]
    if mac is not None:
        digest, iterations, secret = mac
        salt = hashlib.sha256(b"storesync p12 mac salt\0" + authsafe).digest()[:20]
        key = pkcs12_kdf(digest, secret, salt, 3, iterations, hashlib.new(digest).digest_size)
        value = hmac.new(key, authsafe, digest).digest()
        digest_info = _seq(_seq(der.encode_oid(DIGEST_OIDS[digest]), _NULL), _octets(value))
        parts.append(_seq(digest_info, _octets(salt), _int(iterations)))
    return _seq(*parts)


# --- the store ------------------------------------------------------------------------------


class P12Store(FileStore):
    kind = "p12"
    reader = "java"
    capabilities = _CAPS

    def _load(self, data: bytes) -> Pfx:
        password, explicit = store_password(self)
        try:
            return load_pfx(data, password, try_empty=not explicit)
        except MacError as exc:
            hint = "" if explicit else " (it was opened with Java's default 'changeit'; give the right one with ?password-file=FILE)"
            if str(exc) == "tampered":
                what = "MAC check failed although the password opens the certificates: the file was tampered with or damaged"
            elif str(exc) == "wrong password":
                what = f"MAC check failed: the store password is wrong{hint} (or the file was tampered with or damaged)"
            else:
                what = f"MAC check failed: either the store password is wrong{hint}, or the file was tampered with or damaged"
            raise self.error(f"{what}; nothing was read from it and it will not be written") from None
        except DecryptError:
            raise self.error(
                "cannot decrypt the certificates: the store password is wrong, or the file was tampered "
                "with or damaged; nothing was read from it and it will not be written"
            ) from None
        except P12Error as exc:
            raise self.error(f"{exc}; nothing was read from it") from None

    def parse(self, data: bytes) -> TrustSet:
        pfx = self._load(data)
        entries = []
        for bag in pfx.bags:
            entry = self._anchor(bag, report=True)
            if entry is not None:
                entries.append(entry)
        return TrustSet(entries)

    def _anchor(self, bag: Bag, report: bool) -> Entry | None:
        name = repr(bag.alias) if bag.alias is not None else "without a name"
        if bag.java_trusted:
            cert = Certificate(bag.cert)
            try:
                cert.fields
            except der.DERError as exc:
                if report:
                    self.warnings.append(f"{self.path}: certificate {name} is not a certificate ({exc}); kept, not read")
                return None
            extras = {"p12": {"alias": bag.alias}} if bag.alias is not None else {}
            return Entry(cert, label=bag.alias, extras=extras)
        if not report:
            return None
        if bag.bag_id in (BAG_KEY, BAG_SHROUDED_KEY):
            self.warnings.append(f"{self.path}: private-key entry {name} is not a trust anchor; it is kept as it is")
        elif bag.bag_id == BAG_CERT and bag.cert is not None:
            if OID_LOCAL_KEY_ID not in bag.attributes:
                label = Certificate(bag.cert).default_label
                self.warnings.append(
                    f"{self.path}: certificate {name} ({label}) has no Java trust attribute, so Java does not "
                    "trust it; not counted, kept as it is"
                )
        elif bag.bag_id == BAG_SAFE_CONTENTS:
            self.warnings.append(f"{self.path}: a nested safe is not read; it is kept as it is")
        else:
            self.warnings.append(f"{self.path}: a bag of type {bag.bag_id} is not a trust anchor; kept as it is")
        return None

    def render(self, plan) -> bytes:
        data = self.current_bytes()
        if data is None:
            password = store_password(self)[0]
            protected = self.option("protect", "yes") != "no"
            pfx = Pfx([], password, ("sha256", ITERATIONS) if protected else None, bmp_password(password) if password else b"\x00\x00")
        else:
            pfx = self._load(data)
        anchors: dict[str, Bag] = {}
        for bag in pfx.bags:
            if self._anchor(bag, report=False) is not None:
                anchors.setdefault(bag.sha256, bag)
        if data is not None and unchanged_anchor_set(self, plan, set(anchors)):
            return data

        desired = plan.desired
        keep_bag = lambda bag: not (bag.sha256 in anchors and bag.java_trusted) or bag.sha256 in desired  # noqa: E731
        taken = {bag.alias.lower() for bag in pfx.bags if bag.alias and keep_bag(bag)}
        scheme = chosen_scheme(self, [b.alias for b in anchors.values() if b.alias])
        new_bags = self._new_bags(desired, anchors, scheme, taken)
        cipher_password = pfx.password if pfx.mac is not None else None
        encrypt_new = pfx.mac is not None and (not pfx.safes or any(s.encrypted for s in pfx.safes))

        content_infos: list[bytes] = []
        placed = False
        for safe in pfx.safes:
            holds_anchor = any(bag.sha256 in anchors and bag.java_trusted for bag in safe.bags)
            if not holds_anchor:
                content_infos.append(safe.raw)  # nothing in it changes: copied as it is
                continue
            bags = [bag.raw for bag in safe.bags if keep_bag(bag)]
            if not placed:
                bags += new_bags
                placed = True
            if bags:
                content_infos.append(safe_content_info(bags, pfx.password if safe.encrypted else None))
        if not placed and new_bags:
            content_infos.insert(0, safe_content_info(new_bags, cipher_password if encrypt_new else None))
        mac = (*pfx.mac, pfx.mac_secret) if pfx.mac is not None else None
        out = render_pfx(content_infos, mac)
        self._check_rewrite(pfx, out, desired)
        return out

    def _new_bags(self, desired: TrustSet, anchors: dict[str, Bag], scheme: str, taken: set[str]) -> list[bytes]:
        made = []
        for entry in desired.values():
            if entry.sha256 in anchors:
                continue
            alias = make_alias(entry, scheme, taken, lower=False)
            made.append((alias, java_trusted_cert_bag(entry.cert.der, alias)))
        return [raw for _, raw in sorted(made)]

    def _check_rewrite(self, before: Pfx, out: bytes, desired: TrustSet) -> None:
        """Read the new bytes back: every bag that is not an anchor must be there unchanged."""
        try:
            after = load_pfx(out, before.password, try_empty=False)
        except P12Error as exc:
            raise self.error(f"the rewritten file would not read back ({exc}); nothing was written") from None
        others = lambda pfx: sorted(b.raw for b in pfx.bags if not b.java_trusted)  # noqa: E731
        if others(after) != others(before):
            raise self.error(
                "cannot keep its private-key entries and other bags exactly as they are; nothing was written"
            )
        if {b.sha256 for b in after.bags if b.java_trusted} != set(desired.keys()):
            raise self.error("the rewritten file would not hold the desired certificates; nothing was written")

