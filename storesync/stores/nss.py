"""`nss`: an NSS `sql:` database (cert9.db + key4.db), read and written through SQLite.

No certutil at run time. Every byte-level fact used here is in docs/formats.md §3:

* `cert9.db` table `nssPublic(id, a0, a1, …)`: one column per PKCS#11 attribute (`a` + hex type),
  every value a BLOB, CK_ULONGs 4-byte big-endian, an empty value is the marker `a5 00 5a`.
* Trust lives in two classes and we keep both: legacy `CKO_NSS_TRUST` (what NSS <= 3.113 reads)
  and PKCS#11 3.2 `CKO_TRUST` (NSS >= 3.114 prefers it). Reads prefer `CKO_TRUST`, report skew and
  ask for the entry to be rewritten (`Store.rewrite`), so a sync makes both classes agree.
* Every trust attribute is MAC'd in `key4.db` `metaData` (`sig_cert_<object id>_<attribute>`);
  trust with a missing or wrong MAC counts as unspecified, as NSS does.
* Writes: lock cert9.db then key4.db (`BEGIN IMMEDIATE`, short busy timeout, retries), commit the
  signatures in key4.db before the objects in cert9.db, so a crash leaves orphan signatures and
  never unsigned trust.

The trust set of an NSS database holds only certificates with a trust opinion (trusted or
distrusted for some purpose). User certificates with keys and intermediates without trust are
out of scope: never listed, never touched. What the model cannot say (trusted peer `P` versus
anchor `C`, valid-CA `c`, step-up) is kept in `extras["nss"]` so a round trip keeps it.

Store options: `password-file=PATH` (first line is the database password; needed to verify
and write trust in a password-protected database); `builtins=SPEC`, the store that lists the
roots the browser trusts anyway through its built-in module (`certdata:…/certdata.txt` for
libnssckbi, `pem:/etc/ssl/certs/ca-certificates.crt` for p11-kit-trust): removing one of those
is written as an explicit distrust, since deleting the database's copy would change nothing.
"""

from __future__ import annotations

import hashlib
import os
import struct
import time

try:  # the C module `sqlite3` re-exports: its package also imports datetime (for adapters unused here)
    import _sqlite3 as sqlite3
except ImportError:  # pragma: no cover - a Python whose sqlite3 is not _sqlite3
    import sqlite3

from storesync import der, loadable, pbe
from storesync.fsio import absolute, atomic_write, owner_of, read_bytes, remove_file, run_as, stat_version
from storesync.model import (
    CLIENT_AUTH,
    CODE_SIGNING,
    DISTRUSTED,
    EMAIL,
    PURPOSES,
    SERVER_AUTH,
    TRUSTED,
    Capabilities,
    Certificate,
    Entry,
    StoreError,
    TrustSet,
    letter_trust,
    name_attributes,
)
from storesync.stores import PASSWORD_FILE, Store, cannot_read, not_a_file, open_store

TYPE_CHECKING = False  # typing's, without importing typing (nor dataclasses) on the one-shot path
if TYPE_CHECKING:
    from datetime import datetime
    from typing import Any, Callable, Iterable

    from storesync.engine.plan import Plan

# --- PKCS#11 numbers ------------------------------------------------------------------------

CKA_CLASS, CKA_TOKEN, CKA_PRIVATE, CKA_LABEL = 0x0, 0x1, 0x2, 0x3
CKA_VALUE, CKA_CERTIFICATE_TYPE, CKA_ISSUER, CKA_SERIAL_NUMBER = 0x11, 0x80, 0x81, 0x82
CKA_SUBJECT, CKA_ID, CKA_MODIFIABLE = 0x101, 0x102, 0x170
CKA_NAME_HASH_ALGORITHM, CKA_HASH_OF_CERTIFICATE = 0x8C, 0x635
CKA_NSS_SERVER_DISTRUST_AFTER, CKA_NSS_EMAIL_DISTRUST_AFTER = 0xCE534373, 0xCE534374
CKA_NSS_EMAIL = 0xCE534352
CKM_SHA256 = 0x250

CKO_CERTIFICATE, CKO_TRUST, CKO_NSS_TRUST = 0x1, 0xB, 0xCE534353

# legacy CKO_NSS_TRUST
NSS_SERVER, NSS_CLIENT, NSS_CODE, NSS_EMAIL = 0xCE536358, 0xCE536359, 0xCE53635A, 0xCE53635B
NSS_STEP_UP, NSS_SHA1, NSS_MD5 = 0xCE536360, 0xCE5363B4, 0xCE5363B5
CKT_NSS_TRUSTED, CKT_NSS_TRUSTED_DELEGATOR, CKT_NSS_MUST_VERIFY = 0xCE534351, 0xCE534352, 0xCE534353
CKT_NSS_UNKNOWN, CKT_NSS_NOT_TRUSTED, CKT_NSS_VALID_DELEGATOR = 0xCE534355, 0xCE53435A, 0xCE53435B

# PKCS#11 3.2 CKO_TRUST
P11_SERVER, P11_CLIENT, P11_CODE, P11_EMAIL = 0x62C, 0x62D, 0x62E, 0x62F
CKT_UNKNOWN, CKT_TRUSTED, CKT_ANCHOR, CKT_NOT_TRUSTED, CKT_MUST_VERIFY = 0, 1, 2, 3, 4

LEGACY_ATTR = {SERVER_AUTH: NSS_SERVER, CLIENT_AUTH: NSS_CLIENT, CODE_SIGNING: NSS_CODE, EMAIL: NSS_EMAIL}
P11_ATTR = {SERVER_AUTH: P11_SERVER, CLIENT_AUTH: P11_CLIENT, CODE_SIGNING: P11_CODE, EMAIL: P11_EMAIL}
DISTRUST_AFTER_ATTR = {SERVER_AUTH: CKA_NSS_SERVER_DISTRUST_AFTER, EMAIL: CKA_NSS_EMAIL_DISTRUST_AFTER}

# Per purpose an NSS trust state is one of these letters (certutil's, plus "" for no opinion).
ANCHOR_L, PEER_L, DISTRUST_L, VALID_CA_L, NONE_L = "C", "P", "p", "c", ""
_FROM_LEGACY = {
    CKT_NSS_TRUSTED_DELEGATOR: ANCHOR_L,
    CKT_NSS_TRUSTED: PEER_L,
    CKT_NSS_NOT_TRUSTED: DISTRUST_L,
    CKT_NSS_VALID_DELEGATOR: VALID_CA_L,
}
_FROM_P11 = {CKT_ANCHOR: ANCHOR_L, CKT_TRUSTED: PEER_L, CKT_NOT_TRUSTED: DISTRUST_L}
# The same by the stored value (4 bytes): a value of another length is no CK_ULONG, so no letter
_FROM_STORED_LEGACY = {n.to_bytes(4, "big"): letter for n, letter in _FROM_LEGACY.items()}
_FROM_STORED_P11 = {n.to_bytes(4, "big"): letter for n, letter in _FROM_P11.items()}
_TO_LEGACY = {
    ANCHOR_L: CKT_NSS_TRUSTED_DELEGATOR,
    PEER_L: CKT_NSS_TRUSTED,
    DISTRUST_L: CKT_NSS_NOT_TRUSTED,
    VALID_CA_L: CKT_NSS_VALID_DELEGATOR,
    NONE_L: CKT_NSS_MUST_VERIFY,
}
_TO_P11 = {ANCHOR_L: CKT_ANCHOR, PEER_L: CKT_TRUSTED, DISTRUST_L: CKT_NOT_TRUSTED, VALID_CA_L: CKT_MUST_VERIFY,
           NONE_L: CKT_MUST_VERIFY}
_MODEL_OF_LETTER = {ANCHOR_L: TRUSTED, PEER_L: TRUSTED, DISTRUST_L: DISTRUSTED}

LEGACY_SIGNED = (NSS_SERVER, NSS_CLIENT, NSS_CODE, NSS_EMAIL, NSS_STEP_UP, NSS_SHA1, NSS_MD5)
P11_SIGNED = (P11_SERVER, P11_CLIENT, P11_CODE, P11_EMAIL, CKA_HASH_OF_CERTIFICATE, CKA_NAME_HASH_ALGORITHM)

EMPTY = b"\xa5\x00\x5a"  # how sdb stores a zero-length value
# What a read takes of a certificate's row (in this order), and of a trust object's.
_CERT_READ = (CKA_LABEL, CKA_VALUE, CKA_ISSUER, CKA_SERIAL_NUMBER, *DISTRUST_AFTER_ATTR.values())
#: What NSS fetches of a trust object in one template (nssCryptokiTrust_GetAttributes): one whose
#: signature fails fails the whole fetch, and NSS reads no trust from that object at all.
_FETCHED = {CKO_NSS_TRUST: (*LEGACY_ATTR.values(), NSS_STEP_UP, NSS_SHA1),
            CKO_TRUST: (*P11_ATTR.values(), CKA_HASH_OF_CERTIFICATE, CKA_NAME_HASH_ALGORITHM)}
_TRUST_READ = {cls: (*fetched, *DISTRUST_AFTER_ATTR.values()) for cls, fetched in _FETCHED.items()}  # not MD5
# The CK_ULONGs a write stores again and again, encoded once.
_ULONG = {n: n.to_bytes(4, "big") for n in (*LEGACY_SIGNED, *P11_SIGNED, *_TO_LEGACY.values(), *_TO_P11.values(),
                                            CKO_NSS_TRUST, CKO_TRUST)}
_HEX = {n: "%08x" % n for n in _ULONG}  # the attribute part of a signature's id
_HEX_BYTES = {n: text.encode() for n, text in _HEX.items()}
# sqlite3 binds int, float, str and bytearray as they are, but asks every bytes value for an
# adapter first: its protocol type raises (and sqlite3 drops) an AttributeError per value, half the
# cost of binding the ~7 000 BLOBs a write of the system roots binds. An adapter found at once
# that returns the value unchanged spares that; the database gets the same BLOBs. bytes.__bytes__
# (Python 3.11) is a C method without arguments: calling the type `bytes` parses its arguments
# first, a fifth more instructions per value bound.
sqlite3.register_adapter(bytes, bytes.__bytes__)
MAX_ID = 0x3FFFFFFF
MAX_HANDLE = 0xFFFFFFFF  # an object id a signature's id and MAC can name (4 bytes)
BUSY_TIMEOUT = 0.25  # seconds SQLite waits for a lock per attempt
ATTEMPTS = 40  # attempts before giving up (NSS itself gives up after ~1-2 s)



def col(attribute: int) -> str:
    return f"a{attribute:x}"


def ulong(value: int) -> bytes:
    return value.to_bytes(4, "big")


def stored(value: bytes) -> bytes:
    return value if value else EMPTY


def unstored(value: Any) -> bytes | None:
    """A value as NSS takes it (sqlite3_column_blob): None for NULL, a number as its text."""
    if type(value) is bytes:  # nearly every value: a BLOB (and TEXT, under text_factory=bytes)
        return b"" if value == EMPTY else value
    if value is None:
        return None
    if not isinstance(value, (str, bytes)):  # garbage where NSS keeps BLOBs; SQLite's own text of it
        (value,) = _sqlite_text().execute("SELECT CAST(? AS BLOB)", (value,)).fetchone()
    value = value.encode("utf-8") if isinstance(value, str) else bytes(value)
    return b"" if value == EMPTY else value


def _sqlite_text(made: list = []) -> sqlite3.Connection:  # noqa: B006 - made once, on first need
    """An in-memory database, to have SQLite convert a value as it converts it for NSS."""
    if not made:
        made.append(sqlite3.connect(":memory:", check_same_thread=False))
    return made[0]


def as_ulong(value: bytes | None) -> int | None:
    if value is None or len(value) != 4:
        return None
    return int.from_bytes(value, "big")


# --- key4.db: password and MACs -------------------------------------------------------------


class KeyDB:
    """What we need from key4.db: the global salt, the password check, and MAC rows."""

    def __init__(self, salt: bytes, check: bytes | None):
        self.global_salt = salt
        self.check = check
        self.password: bytes | None = None
        self._keys: dict[tuple[bytes, int, int], bytes] = {}
        self._macs: dict[bytes, Callable[[bytes], bytes]] = {}  # MAC key -> its HMAC-SHA256 (mac_of)
        self._by_prefix: dict[bytes, tuple[bytes, Callable[[bytes], bytes]]] = {}  # signature without its MAC -> key, HMAC

    @property
    def iterations(self) -> int:
        """The iteration count NSS uses for this database (1 for the empty password)."""
        try:
            _alg_outer = der.read_all(self.check).children()
            alg = next(_alg_outer)
            params = list(alg.children())[1]
            kdf = next(params.children())
            return pbe.pbkdf2_of(kdf)[1]
        except Exception:  # noqa: BLE001
            return 1 if not self.password else 10000

    def pass_key(self, password: bytes) -> bytes:
        digest = hashlib.sha384 if len(self.global_salt) == 48 else hashlib.sha1
        return digest(self.global_salt + password).digest()

    def try_password(self, password: bytes) -> bool:
        """Decrypt the `password-check` entry with this password."""
        if self.check is None:
            return False
        try:
            outer = der.read_all(self.check)
            alg, ciphertext = list(outer.children())[:2]
            oid, params = list(alg.children())[:2]
            if der.decode_oid(oid.value) != pbe.OID_PBES2:
                return False
            kdf, enc = list(params.children())[:2]
            salt, iterations, _, key_length = pbe.pbkdf2_of(kdf)
            enc_oid, iv = list(enc.children())[:2]
            if der.decode_oid(enc_oid.value) != pbe.OID_AES256_CBC:
                return False
            iv = iv.raw if len(iv.value) == 14 else iv.value  # NSS quirk: 14-byte IV stored, 040e prefix
            key = pbe.pbkdf2("sha256", self.pass_key(password), salt, iterations, key_length or 32)
            plain = pbe.aes_cbc_decrypt(key, iv, ciphertext.value)
        except Exception:  # noqa: BLE001 - any failure means "not this password"
            return False
        return plain.startswith(b"password-check")

    def login(self, password: bytes | None, proof: tuple[bytes, int, int, bytes] | None = None) -> bool:
        """Find the database's password among the empty one and `password`. `proof`, when the
        database holds signed trust: (signature, object id, attribute, value) of one attribute.
        A MAC that verifies under the given password proves it as well as the password-check
        entry does: the MAC key derives from the global salt and the password alone, and NSS
        re-signs every MAC when the password changes (sftkpwd.c: sftkdb_pbehash, sftk_updateMacs).
        It spares the AES decryption of the check entry. Never for the empty password: anyone
        can sign under it, so such a MAC in a protected database proves nothing (NSS logs in by
        the check entry, and then drops that trust); the check entry decides it."""
        # The empty password first, as certutil does: a --password-file given for one
        # database of a sync must not lock out the empty-password ones.
        for candidate in dict.fromkeys([b"", *([password] if password is not None else [])]):
            if candidate and proof is not None and self._proved(candidate, proof) or self._checked(candidate):
                self.password = candidate
                return True
        return False

    def _checked(self, candidate: bytes) -> bool:
        """`try_password`; for the empty password remembered in the state dir as the checks of
        certificates are (storesync.loadable): whether the check entry decrypts under it is a
        pure function of the global salt and the entry, so it is kept by their SHA-256 and a
        database whose key4.db is unchanged needs no AES (nor the ctypes import) the next time.
        Never for a real password: the file would hold a quick hash of it."""
        if candidate or self.check is None:
            return self.try_password(candidate)
        from storesync import state

        salt = self.global_salt
        check = f"{hashlib.sha256(len(salt).to_bytes(4, 'big') + salt + self.check).hexdigest()} nss-empty-password"
        if not loadable.passed(check):  # passed in this run: kept through its writes (`loadable.forget`)
            loadable.remember_in(state.state_dir)  # the parent's, in a write's child (run as the owner)
        if loadable.passed(check):
            return True
        if not self.try_password(b""):
            return False
        loadable.remember(check)
        return True

    def _proved(self, candidate: bytes, proof: tuple[bytes, int, int, bytes]) -> bool:
        self.password = candidate
        if self.verify(*proof):
            return True
        self.password = None
        self._keys.clear()  # derived from the wrong password: the next candidate derives its own
        self._macs.clear()
        self._by_prefix.clear()
        return False

    def mac_key(self, salt: bytes, iterations: int, key_length: int = 32) -> bytes:
        assert self.password is not None
        cached = self._keys.get((salt, iterations, key_length))
        if cached is None:
            cached = pbe.pbkdf2("sha256", self.pass_key(self.password), salt, iterations, key_length)
            self._keys[(salt, iterations, key_length)] = cached
        return cached

    def mac_of(self, key: bytes) -> Callable[[bytes], bytes]:
        mac = self._macs.get(key)
        if mac is None:
            mac = self._macs[key] = hmac_sha256(key)
        return mac

    def verify(self, signature: bytes | None, object_id: int, attribute: int, value: bytes) -> bool:
        if signature is None or self.password is None:
            return False
        # One writer signs many attributes with one salt: the DER before a 32-byte MAC, once read,
        # fixes the key (its lengths fix the layout), so the next signature like it is not parsed.
        known, mac = self._by_prefix.get(signature[:-32]), signature[-32:]
        if known is not None:
            compute = known[1]
        else:
            try:
                outer = der.read_all(signature)
                alg, mac_tlv = list(outer.children())[:2]
                oid, params = list(alg.children())[:2]
                if der.decode_oid(oid.value) != pbe.OID_PBMAC1:
                    return False
                kdf = next(params.children())
                salt, iterations, _, key_length = pbe.pbkdf2_of(kdf)
            except Exception:  # noqa: BLE001
                return False
            key = self.mac_key(salt, iterations, key_length or 32)
            compute, mac = self.mac_of(key), mac_tlv.value
            if len(mac) == 32 and mac_tlv.end == len(signature) and mac_tlv.tag == der.OCTET_STRING:
                self._by_prefix[signature[:-32]] = key, compute
        return compare_digest(compute(_TWO_ULONGS(object_id, attribute) + value), mac)

    def verify_all(self, checks: list[tuple[bytes | None, int, int, bytes]]) -> list[bool]:
        """`verify` of each (signature, object id, attribute, value): a read checks thousands, and
        those of a layout seen before are checked here, without two calls each. A signature this
        process made (`_SIGNED`: a write's read-back) needs no HMAC: made under this very key for
        this very message, its MAC is that message's."""
        if self.password is None:
            return [False] * len(checks)
        by_prefix, pack, verify, signed, results = self._by_prefix, _TWO_ULONGS, self.verify, _SIGNED, []
        for signature, object_id, attribute, value in checks:
            known = None if signature is None else by_prefix.get(signature[:-32])
            if known is None:
                results.append(verify(signature, object_id, attribute, value))
                continue
            message = pack(object_id, attribute) + value
            made = signed.get(signature)
            if made is not None and made[0] == known[0] and made[1] == message:
                results.append(True)
            else:
                results.append(compare_digest(known[1](message), signature[-32:]))
        return results

    def signer(self) -> Callable[[int, dict[int, bytes], Iterable[int]], list[tuple[str, bytes]]]:
        """A function (object id, its stored values, the attributes to sign) -> the metaData rows
        (id, DER signature) NSS expects."""
        salt = os.urandom(32)  # what secrets.token_bytes is, without importing random
        iterations = self.iterations
        key = self.mac_key(salt, iterations)
        mac = self.mac_of(key)
        alg = der.seq(der.encode_oid(pbe.OID_PBMAC1), der.seq(
            pbe.pbkdf2_algorithm(salt, iterations), der.seq(der.encode_oid(pbe.OID_HMAC_SHA256), der.NULL)))

        prefix = der.encode(der.SEQUENCE, alg + der.encode(der.OCTET_STRING, bytes(32)))[:-32]  # all but the MAC

        def sign(object_id: int, values: dict[int, bytes], attributes: Iterable[int]) -> list[tuple[str, bytes]]:
            head, name = ulong(object_id), _SIG_ID[:-4] % object_id  # + _HEX[a]: sig_id(object_id, a), quicker
            if len(_SIGNED) >= SIGNED_KEPT:
                _SIGNED.clear()
            rows = []
            for a in attributes:
                message = head + _ULONG[a] + values[a]
                signature = prefix + mac(message)
                _SIGNED[signature] = key, message
                rows.append((name + _HEX[a], signature))
            return rows

        return sign


_TWO_ULONGS = struct.Struct(">II").pack  # what a signature signs before the value: object id, attribute
#: The signatures this process made: signature -> (MAC key, message). Each is its MAC key's HMAC of
#: its message, so the read-back after a write checks them by equality (`KeyDB.verify_all`); at
#: most SIGNED_KEPT (about 1 MB: the 1 872 of the system roots), as `_WRITTEN` keeps certificates.
_SIGNED: dict[bytes, tuple[bytes, bytes]] = {}
SIGNED_KEPT = 4096


try:  # as storesync.stores.jks: importing hmac for these loads warnings too
    from _hashlib import compare_digest
except ImportError:  # a Python without OpenSSL's hashlib
    from hmac import compare_digest
_TRANS_36, _TRANS_5C = bytes(x ^ 0x36 for x in range(256)), bytes(x ^ 0x5C for x in range(256))  # hmac's


def hmac_sha256(key: bytes) -> Callable[[bytes], bytes]:
    """HMAC-SHA256 under `key` (RFC 2104, as hmac's own pure-Python HMAC computes it): the key's
    two padded blocks are hashed once, and each MAC copies those states. `hmac.digest` sets the
    key up again for every MAC, and on OpenSSL 3 looks SHA-256 up by name: twice the time for
    the thousands of MACs of a write (13 per certificate) and its read-back."""
    if len(key) > 64:
        key = hashlib.sha256(key).digest()
    key = key.ljust(64, b"\0")
    inner, outer = hashlib.sha256(key.translate(_TRANS_36)), hashlib.sha256(key.translate(_TRANS_5C))

    def mac(message: bytes) -> bytes:
        digest = inner.copy()
        digest.update(message)
        result = outer.copy()
        result.update(digest.digest())
        return result.digest()

    return mac


_SIG_ID = "sig_cert_%08x_%08x"  # a trust attribute's signature in key4.db's metaData: (object id, attribute)
_SIG_KEY = _SIG_ID.encode()
_SIG_HEAD = _SIG_KEY[:-4]  # its object part: + _HEX_BYTES[attribute]


def sig_id(object_id: int, attribute: int) -> str:
    return _SIG_ID % (object_id, attribute)


def sig_key(object_id: int, attribute: int) -> bytes:
    """`sig_id` as the bytes a read keys signatures by."""
    return _SIG_KEY % (object_id, attribute)


# --- certificates as NSS objects -------------------------------------------------------------


def key_id(cert: Certificate) -> bytes:
    """CKA_ID as NSS sets it: SHA-1 of the RSA modulus (no leading zero) or the EC point."""
    try:
        spki = der.read_all(cert.fields.spki)
        alg, bits = list(spki.children())[:2]
        oid = der.decode_oid(next(alg.children()).value)
        key = bits.value[1:]
        if oid == "1.2.840.113549.1.1.1":  # rsaEncryption: RSAPublicKey { modulus, exponent }
            modulus = next(der.read_all(key).children()).value.lstrip(b"\x00")
            return hashlib.sha1(modulus).digest()
        if oid == "1.2.840.10040.4.1":  # DSA: INTEGER y
            return hashlib.sha1(der.read_all(key).value.lstrip(b"\x00")).digest()
        return hashlib.sha1(key).digest()
    except (der.DERError, StopIteration, IndexError):
        return hashlib.sha1(cert.der).digest()


_EMAIL_OID = der.encode_oid("1.2.840.113549.1.9.1")  # emailAddress, as a TLV
_SAN_OID = der.encode_oid("2.5.29.17")  # subjectAltName


def email_of(cert: Certificate) -> bytes | None:
    """CKA_NSS_EMAIL as PK11_ImportCert sets it: the first e-mail address of the subject,
    else of the subjectAltName, lower-cased. Most roots have neither: the encoded OIDs are looked
    for in the bytes first (present in the DER if the attribute or extension is)."""
    if _EMAIL_OID not in cert.der and _SAN_OID not in cert.der:
        return None
    try:
        for key, value in name_attributes(cert.fields.subject):
            if key == "1.2.840.113549.1.9.1" and value:
                return value.lower().encode("utf-8")
    except der.DERError:
        return None
    san = (der.extensions(cert.fields) or {}).get("2.5.29.17")
    if san is None:
        return None
    try:
        for name in der.read_all(san).children():
            if name.tag == 0x81:  # rfc822Name [1] IMPLICIT IA5String
                return name.value.decode("latin-1").lower().encode("utf-8")
    except der.DERError:
        return None
    return None




def _utctime_bytes(when: datetime) -> bytes:
    when = when.astimezone(der.dates()[1].utc)
    if 1950 <= when.year < 2050:
        return when.strftime("%y%m%d%H%M%SZ").encode("ascii")
    return when.strftime("%Y%m%d%H%M%SZ").encode("ascii")


class TrustObject:
    __slots__ = ("id", "cls", "letters", "raw", "bad_macs", "stated", "signed", "unsigned")

    def __init__(self, id: int, cls: int, letters: dict[str, str], raw: dict[int, bytes | None]):
        self.id, self.cls = id, cls
        self.letters = letters  # purpose -> letter, after MAC checks
        self.raw = raw  # attribute -> stored value
        self.bad_macs: list[str] = []  # the purposes whose own signature failed
        self.stated = _stated(self)  # (purpose, attribute, letter) as stored, before the MAC checks
        self.signed = _signed(self)  # the attributes whose signatures a read checks
        self.unsigned: list[int] = []  # those of them whose signature is missing or wrong


class CertObject:
    __slots__ = ("id", "cert", "label", "issuer", "serial", "distrust_after", "legacy", "p11", "skew")

    def __init__(self, id: int, cert: Certificate, label: str | None, issuer: bytes, serial: bytes,
                 distrust_after: dict[str, datetime]):
        self.id, self.cert, self.label = id, cert, label
        self.issuer, self.serial = issuer, serial
        self.distrust_after = distrust_after
        self.legacy: TrustObject | None = None
        self.p11: TrustObject | None = None
        self.skew: str | None = None  # how the two trust classes disagree, if they do

    @property
    def letters(self) -> dict[str, str]:
        """Per purpose, the trust NSS acts on: CKO_TRUST when present, else the legacy object.

        When both exist and one of them distrusts a purpose, distrust wins: an older certutil
        (NSS <= 3.113) that marks a certificate `p` changes only the legacy object, and the
        NSS generation reading that object would refuse the certificate.
        """
        chosen = self.p11 or self.legacy
        letters = dict(chosen.letters) if chosen else {}
        if self.p11 and self.legacy:
            for purpose, letter in self.legacy.letters.items():
                if letter == DISTRUST_L:
                    letters[purpose] = DISTRUST_L
                # CKO_TRUST cannot say `c`; take it from the legacy object.
                elif letter == VALID_CA_L and not letters.get(purpose):
                    letters[purpose] = VALID_CA_L
        return letters

    def flags(self) -> str:
        """The trust as `certutil -L` prints it: `SSL,S/MIME,JAR/XPI`."""
        letters = self.letters
        server, client = letters.get(SERVER_AUTH, ""), letters.get(CLIENT_AUTH, "")
        ssl = ""
        valid_ca = VALID_CA_L in (server, client) or ANCHOR_L in (server, client)
        trusted_ca = server == ANCHOR_L
        client_ca = client == ANCHOR_L
        terminal = DISTRUST_L in (server, client) or PEER_L in (server, client)
        peer = PEER_L in (server, client)
        if valid_ca and not trusted_ca and not client_ca:
            ssl += "c"
        if terminal and not peer:
            ssl += "p"
        if trusted_ca:
            ssl += "C"
        if client_ca:
            ssl += "T"
        if peer:
            ssl += "P"

        def one(letter: str) -> str:
            return letter

        return f"{ssl},{one(letters.get(EMAIL, ''))},{one(letters.get(CODE_SIGNING, ''))}"


# --- the store ------------------------------------------------------------------------------


class NssStore(Store):
    kind = "nss"
    options = ("password-file", "builtins")
    values = {"password-file": PASSWORD_FILE}
    reader = "nss"
    # No distrust-after dates: NSS never applies CKA_NSS_*_DISTRUST_AFTER, and Firefox only to its
    # built-in roots, read from the built-in module (NSSCertDBTrustDomain::IsChainValid); in a
    # database a date limits nothing, so a dated root is written without it (a `!` line) and not
    # trusted for the purpose once the date has passed.
    capabilities = Capabilities(purposes=True, distrust=True, labels=True,
                                oids=False)  # trust attributes: LEGACY_ATTR's and P11_ATTR's purposes only

    def __init__(self, spec):
        super().__init__(spec)
        self.cert_db = os.path.join(self.path, "cert9.db")
        self.key_db = os.path.join(self.path, "key4.db")
        self.objects: list[CertObject] = []  # every certificate of the last read, in scope or not

    # -- paths and checks

    def exists(self) -> bool:
        return os.path.exists(self.cert_db) or os.path.exists(os.path.join(self.path, "cert8.db"))  # cert8: read() says why not

    def missing(self) -> str:
        if os.path.exists(self.path) and not os.path.isdir(self.path):
            return "is a file, not an NSS database folder; " + (
                self.other_kind() or "name the folder that holds cert9.db and key4.db instead")
        if not os.path.isdir(self.path):
            return super().missing()
        if os.path.islink(self.cert_db):
            return (f"its cert9.db is a symbolic link to {os.readlink(self.cert_db)}, which does not exist; "
                    "mend or remove the link")
        return f"no NSS database (cert9.db) in {self.path}; " + (
            self.other_kind() or f"create one with `certutil -N -d sql:{self.path} --empty-password`")

    def watch_paths(self) -> list[str]:
        return [self.cert_db, self.key_db]

    def version(self) -> object:
        """Both files' and their journals' stat, and each file's SQLite change counter (every commit
        in rollback-journal mode bumps it): a write by storesync, certutil or a browser changes
        one, so a sync that read the database before its lock need not read it again."""
        parts: list[object] = []
        for path in (self.cert_db, self.key_db):
            parts += [stat_version(f"{path}{suffix}") for suffix in ("", "-journal", "-wal")]
            try:
                with open(path, "rb") as file:
                    parts.append(file.read(28)[24:28])  # docs/formats.md §3.5: the header's file change counter
            except OSError:
                parts.append(None)
        return None if None in parts else tuple(parts)

    def builtin_anchors(self) -> set[str]:
        spec = self.option("builtins")
        if not spec:
            return set()
        builtins = open_store(spec)
        if not builtins.exists():
            raise self.error(f"its builtins store {spec} does not exist")
        return {sha for sha, entry in builtins.read().items() if not entry.distrusted}

    def notice(self) -> str | None:
        return (
            f"{self.path}: restart the browser or application using this NSS database "
            "(Firefox, Thunderbird, Chrome) so it sees the new trust"
        )

    def _check_layout(self) -> None:
        if not os.path.exists(self.path):
            raise self.error(not_a_file(self.path) or  # a link loop is there, and leads nowhere
                             f"no such directory; create the database first with `certutil -N -d sql:{self.path} --empty-password`")
        if not os.path.isdir(self.path):
            raise self.error(self.missing())
        for part in (self.cert_db, self.key_db):
            if os.path.exists(part) and not os.path.isfile(part):
                raise self.error(f"{os.path.basename(part)} is not a regular file; refusing to open it", part)
        if not os.path.exists(self.cert_db):
            if os.path.exists(os.path.join(self.path, "cert8.db")):
                raise self.error(
                    "is a legacy dbm database (cert8.db/key3.db), which storesync does not read or write; "
                    f"upgrade it with `certutil -L -d sql:{self.path}` (NSS converts it to cert9.db on first open)"
                )
            raise self.error(self.missing())

    def _unreadable(self) -> StoreError | None:
        """The error for a file of the database this user may not read (SQLite says only "unable to open")."""
        for part in (self.cert_db, self.key_db):
            try:
                open(part, "rb").close()
            except PermissionError as exc:
                return self.error(cannot_read(exc), part)
            except OSError:
                pass  # missing, or another trouble: SQLite's error says it
        return None

    # -- SQLite

    def _connect(self, path: str, readonly: bool) -> sqlite3.Connection:
        if readonly:
            uri = f"file:{_quote(path)}?mode=ro"
            conn = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT * 8, isolation_level=None)
        else:
            # mode=rw: never create a missing file (a lone cert9.db must not get an empty key4.db)
            uri = f"file:{_quote(path)}?mode=rw"
            conn = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT, isolation_level=None)
        conn.text_factory = bytes  # labels and values are BLOBs; tolerate TEXT garbage
        return conn

    def _open_key_db(self, conn: sqlite3.Connection, signatures: "Callable[[], dict[bytes, bytes]]",
                     objects: list[CertObject]) -> tuple[KeyDB, dict[bytes, bytes]]:
        try:
            row = conn.execute("SELECT item1, item2 FROM metaData WHERE id = 'password'").fetchone()
        except sqlite3.DatabaseError as exc:
            raise self.damaged(f"key4.db is not a usable NSS key database ({exc})", self.key_db) from None
        if row is None:
            raise self.error("key4.db has no password entry; initialise it with certutil -N", self.key_db)
        if not isinstance(row[0], bytes) or not isinstance(row[1], (bytes, type(None))):
            raise self.error("key4.db's password entry is not what NSS writes (damaged?)", self.key_db)
        keys = KeyDB(row[0], row[1])
        signed = signatures()
        password = self.password()
        if not keys.login(password, _proof(objects, signed)):
            if password is not None:
                raise self.error(f"the password in {self.option('password-file')} is wrong for this database; "
                                 "put its password alone on that file's first line", self.key_db)
        return keys, signed

    # -- a write killed mid-transaction

    def _recover(self) -> None:
        """Roll back what a killed writer left half-done (a hot `-journal`): a read-only open cannot,
        and fails from then on, as NSS does. A read-write open rolls it back; under the store's lock,
        so no storesync run writes meanwhile. Either file may have one: both roll back alone safely,
        since a writer commits key4.db's signatures before cert9.db's objects."""
        hot = [p for p in (self.cert_db, self.key_db) if _hot(p)]
        if not hot:
            return
        from storesync import state

        with state.store_lock(self.path):
            for path in hot:
                if not _hot(path):
                    continue  # another process rolled it back meanwhile
                try:
                    conn = self._connect(path, readonly=False)
                    try:
                        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # the first read rolls back
                    finally:
                        conn.close()
                except sqlite3.DatabaseError as exc:
                    raise self.error(
                        f"a write to {os.path.basename(path)} was interrupted (a killed program left "
                        f"{os.path.basename(path)}-journal) and "
                        f"rolling it back failed ({exc}); run storesync once as a user who may write {self.path}",
                        path,
                    ) from None
                self.warnings.append(
                    f"{path}: a write to it was interrupted (a killed program left {os.path.basename(path)}-journal); "
                    "rolled back under the store's lock: the database is as it was before that write"
                )

    # -- read

    def read(self) -> TrustSet:
        self._check_layout()
        self.warnings, self.rewrite, self.unsynced = [], {}, {}
        self._recover()
        try:
            conn = self._connect(self.cert_db, readonly=True)
            try:
                objects, keys, signatures = _with_retries(lambda: self._read_both(conn), self)
            finally:
                conn.close()
        except sqlite3.DatabaseError as exc:
            raise self._unreadable() or self.damaged(f"cert9.db is not a readable NSS database ({exc})", self.cert_db) from None
        except (TypeError, ValueError, OverflowError, MemoryError) as exc:
            raise self.error(f"holds values NSS never writes ({type(exc).__name__}: {exc}); "
                             "is it damaged or forged?") from None
        self._apply_macs(objects, keys, signatures)
        self.objects = objects
        entries = []
        for obj in objects:
            entry = self._entry(obj)
            if entry is not None:
                entries.append(entry)
                if obj.skew:  # NSS >= 3.114 and older NSS would decide differently: write both anew
                    self.rewrite[entry.sha256] = f"{obj.skew}: both now say {_describe(entry.trust)}"
        return TrustSet(entries)

    def _read_both(self, conn: sqlite3.Connection):
        """Objects, then signatures, all under cert9.db's shared lock: a writer commits key4.db's
        new signatures first and can neither commit cert9.db nor drop old signatures while we
        hold it, so every object read has its signature present."""
        conn.execute("BEGIN")
        try:
            objects = self._read_objects(conn)
            keys, signatures = self._read_keys(objects)
        finally:
            conn.execute("COMMIT")
        return objects, keys, signatures

    def _read_keys(self, objects: list[CertObject]) -> tuple[KeyDB | None, dict[bytes, bytes]]:
        if not os.path.exists(self.key_db):
            raise self.error(
                "key4.db is missing, so the trust signatures cannot be checked (a damaged or half-copied "
                "database?); restore it, or recreate the database with certutil -N",
                self.key_db,
            )
        try:
            conn = self._connect(self.key_db, readonly=True)
            try:
                def signed() -> dict[bytes, bytes]:
                    wanted = _checked_signatures(objects)
                    if wanted is None:
                        rows = _with_retries(lambda: conn.execute(
                            "SELECT id, item1 FROM metaData WHERE id LIKE 'sig_cert_%'").fetchall(), self)
                    else:
                        rows = []
                        for start in range(0, len(wanted), SIGNATURES_PER_QUERY):
                            part = wanted[start : start + SIGNATURES_PER_QUERY]
                            rows += _with_retries(lambda: conn.execute(
                                f"SELECT id, item1 FROM metaData WHERE id IN ({', '.join('?' * len(part))})",
                                part).fetchall(), self)
                    # by the id's bytes (text_factory=bytes): thousands of rows, none decoded
                    return {i if type(i) is bytes else _text(i).encode(): v for i, v in rows if isinstance(v, bytes)}

                keys, signatures = self._open_key_db(conn, signed, objects)
            finally:
                conn.close()
        except sqlite3.DatabaseError as exc:
            raise self._unreadable() or self.damaged(f"key4.db is not a readable NSS key database ({exc})", self.key_db) from None
        if keys.password is None:
            raise self.error(
                "is password-protected and no password-file was given, so its trust signatures cannot be "
                "checked; storesync reads no trust it cannot verify (give --password-file or ?password-file=)",
                self.key_db,
            )
        return keys, signatures

    def _read_objects(self, conn: sqlite3.Connection) -> list[CertObject]:
        columns = _columns(conn)
        if columns is None:
            raise sqlite3.DatabaseError("no nssPublic table")

        def named(attributes) -> str:  # a column this database lacks is read as NULL
            return ", ".join(col(a) if col(a) in columns else "NULL" for a in attributes)

        # Certificates, then trust objects, each with only its own columns: a certificate's row
        # is read by position, a trust object's attributes are kept by number.
        rows = conn.execute(f"SELECT id, {named(_CERT_READ)} FROM nssPublic WHERE a0 = ?",
                            (ulong(CKO_CERTIFICATE),)).fetchall()
        certs: dict[tuple[bytes, bytes], CertObject] = {}
        order: list[CertObject] = []
        for object_id, *values in rows:
            label, value, issuer, serial, *after = map(unstored, values)
            if not isinstance(object_id, int) or issuer is None or serial is None:
                self.warnings.append(f"{self.cert_db}: object {object_id!r} lacks issuer or serial; ignored")
                continue
            if not value:
                self.warnings.append(f"{self.cert_db}: certificate object {object_id} has no value; ignored")
                continue
            cert = self.known.get(value) or Certificate(value, _WRITTEN.pop(value, None))  # `known`: as Store.certificate
            if not cert.outlined and "fields" not in cert.__dict__:
                if loadable.outlined(cert.sha256):  # an earlier run read them from these bytes
                    cert.outlined = True
                else:
                    try:
                        cert.fields  # kept, as `list` shows the certificate by them  # noqa: B018
                    except der.DERError as exc:
                        self.warnings.append(
                            f"{self.cert_db}: certificate object {object_id} is not a certificate ({exc}); ignored")
                        continue
            obj = CertObject(
                id=object_id,
                cert=cert,
                label=label.decode("utf-8", "replace") if label else None,
                issuer=issuer,
                serial=serial,
                distrust_after=_distrust_after(after) if after != _NO_DATES else {},
            )
            if (issuer, serial) not in certs:
                certs[(issuer, serial)] = obj
                order.append(obj)
            else:
                self.warnings.append(f"{self.cert_db}: certificate object {object_id} has the issuer and serial "
                                     "of another; ignored (its trust objects would be the other's)")
        trusts: list[TrustObject] = []
        trust_keys: dict[int, tuple[bytes, bytes]] = {}
        for cls, attributes in _TRUST_READ.items():  # each class with its own columns: half the values
            # NSS finds a certificate's trust by a search on issuer and serial bound as BLOBs, which
            # never finds a number or TEXT: such a trust object is nobody's (certutil shows `,,`)
            rows = conn.execute(f"SELECT id, typeof(a81) || typeof(a82), a81, a82, {named(attributes)} "
                                "FROM nssPublic WHERE a0 = ?", (ulong(cls),)).fetchall()
            for object_id, types, issuer, serial, *values in rows:
                if types != b"blobblob" or not isinstance(object_id, int) or not 0 <= object_id <= MAX_HANDLE:
                    self.warnings.append(f"{self.cert_db}: trust object {object_id!r}: its issuer or serial is no "
                                         "BLOB, or its id is out of range, so NSS never finds it; ignored")
                    continue
                issuer, serial = unstored(issuer), unstored(serial)
                raw = {a: v for a, v in zip(attributes, values) if v is not None}  # absent: not kept
                if EMPTY in raw.values() or {*map(type, raw.values())} - _BLOB:  # rare: as `unstored` reads them
                    raw = {a: unstored(v) for a, v in raw.items()}
                trust = TrustObject(object_id, cls, {}, raw)
                trusts.append(trust)
                trust_keys[object_id] = (issuer, serial)
        for trust in trusts:
            obj = certs.get(trust_keys[trust.id])
            if obj is None:
                continue  # a trust object for a certificate held elsewhere (or a bare distrust)
            slot = "p11" if trust.cls == CKO_TRUST else "legacy"
            if getattr(obj, slot) is None:
                setattr(obj, slot, trust)
            else:
                self.warnings.append(f"{self.cert_db}: two trust objects of one class for {obj.label!r}; using the first")
            for purpose, attribute in DISTRUST_AFTER_ATTR.items():
                value = trust.raw.get(attribute)
                when = der.parse_time(value) if value and value != b"\x00" else None
                if when is not None and purpose not in obj.distrust_after:
                    obj.distrust_after[purpose] = when
        return order

    def _apply_macs(self, objects: list[CertObject], keys: KeyDB | None, signatures: dict[bytes, bytes]) -> None:
        if keys is not None:
            # Every signature at once (`KeyDB.verify_all`); an attribute not stored has none to check
            # (a certificate hash must be there: `_hash_holds`).
            checked, looked_up = [], []
            for trust in _trusts(objects):
                object_id, raw, head = trust.id, trust.raw, _SIG_HEAD % trust.id  # sig_key(object_id, a), quicker
                for a in trust.signed:
                    if a in raw:
                        checked.append((trust, a))
                        looked_up.append((signatures.get(head + _HEX_BYTES[a]), object_id, a, raw[a]))
            good = keys.verify_all(looked_up)
            for (trust, a), ok in zip(checked, good):
                if not ok:
                    trust.unsigned.append(a)
        for obj in objects:
            for trust in (obj.legacy, obj.p11):
                if trust is None:
                    continue
                letters, unsigned = trust.letters, trust.unsigned
                for purpose, attribute, letter in trust.stated:
                    if letter and attribute in unsigned:
                        trust.bad_macs.append(purpose)
                        letter = NONE_L
                    letters[purpose] = letter
                kind = "CKO_NSS_TRUST" if trust.cls == CKO_NSS_TRUST else "CKO_TRUST"
                if trust.bad_macs:
                    self.warnings.append(
                        f"{self.cert_db}: {obj.label or obj.id}: trust for {', '.join(trust.bad_macs)} has a missing "
                        f"or wrong signature in key4.db ({kind}); treated as unspecified, as NSS does"
                    )
                granted = [p for p, letter in trust.letters.items() if letter in _GRANTING]
                if not granted:
                    continue
                if unsigned:
                    why = (f"a signature of its trust object ({kind}) is missing or wrong, and NSS then reads none of "
                           "that object's trust (certutil shows ,,)")
                elif not _hash_holds(obj, trust):
                    why = (f"its trust object ({kind}) is for another certificate of the same issuer and serial "
                           "(its signed certificate hash does not match, or is missing)")
                else:
                    continue
                for purpose in granted:
                    trust.letters[purpose] = NONE_L
                self.warnings.append(f"{self.cert_db}: {obj.label or obj.id}: {why}; trust for {', '.join(granted)} "
                                     "treated as unspecified, as NSS does")
            if obj.legacy and obj.p11 and obj.legacy.letters != obj.p11.letters:  # (most agree letter for letter)
                new = {p: _MODEL_OF_LETTER.get(l) for p, l in obj.p11.letters.items()}
                old = {p: _MODEL_OF_LETTER.get(l) for p, l in obj.legacy.letters.items()}
                if new != old:
                    obj.skew = (f"the two NSS trust classes disagree (CKO_TRUST: {_describe(new)}; legacy "
                                f"CKO_NSS_TRUST: {_describe(old)})")
                    self.warnings.append(
                        f"{self.cert_db}: {obj.label or obj.id}: {obj.skew}; NSS >= 3.114 uses the first, older NSS "
                        "the second; a distrust in either counts; a sync makes them agree"
                    )

    def _entry(self, obj: CertObject) -> Entry | None:
        letters = obj.letters
        cert = obj.cert
        trust = letter_trust(letters, cert, self.warnings, f"{self.cert_db}: {obj.label or obj.id}")
        if not trust:
            if PEER_L in letters.values():  # a peer that may issue: not synced, but `--mode remove` takes it out
                self.unsynced[cert.sha256] = Entry(cert, label=obj.label)
            return None  # no opinion: out of scope
        extras: dict[str, Any] = {"letters": {p: l for p, l in letters.items() if l}}  # certutil's: `flags()`
        if obj.legacy is not None and obj.legacy.raw.get(NSS_STEP_UP) == b"\x01":
            extras["step_up"] = True
        return Entry(
            cert,
            trust=trust,
            label=obj.label,
            distrust_after=dict(obj.distrust_after),
            extras={"nss": extras},
        )

    def flags(self) -> dict[str, str]:
        """nickname -> trust flags as certutil -L prints them, for every certificate of the last read."""
        return {obj.label or str(obj.id): obj.flags() for obj in self.objects}

    # -- write

    def write(self, plan: "Plan") -> None:
        self._check_layout()
        if not os.path.exists(self.key_db):
            raise self.error(
                "key4.db is missing, so trust cannot be signed; nothing was written (restore key4.db, "
                "or recreate the database with certutil -N)",
                self.key_db,
            )
        work = [*(("put", e) for e in plan.adds), *(("put", after) for _, after in plan.changes),
                *(("remove", e) for e in plan.removals)]
        if not work:
            return
        prepared = [(op, _Prepared.of(entry)) for op, entry in work]
        self.password()  # read now: the file may be readable only by root, and the write may run as the owner
        owner = owner_of(self.cert_db)
        if os.geteuid() == 0 and owner[0] != 0:
            # The child writing as the owner may not read root's Python: it imports nothing itself.
            pbe.prepare_aes()  # the password check, when no MAC proves the password
            run_as(owner, lambda: self._write(prepared), self._child_error)
        else:
            self._write(prepared)

    def _child_error(self, text: str) -> StoreError:
        """A write run as the database's owner failed in the child: the same sentence here."""
        return StoreError(text) if text.startswith(f"{self.spec.kind} store") else self.error(text)

    def _write(self, prepared: list[tuple[str, "_Prepared"]]) -> None:
        password = self.password()
        last: Exception | None = None
        for attempt in range(ATTEMPTS):
            try:
                self._write_once(prepared, password)
                return
            except sqlite3.OperationalError as exc:
                if "readonly" in str(exc):
                    raise self.error(f"cannot write ({exc}); make it writable by its owner or leave it "
                                     "out of the targets") from None
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise self.error(f"cannot write ({exc})") from None
                last = exc
                time.sleep(0.01 + os.urandom(1)[0] % 40 / 1000)
            except sqlite3.DatabaseError as exc:  # a damaged page a read never reached (a broken index)
                path = self._damaged_file()
                raise self.error(f"is damaged ({exc}; `sqlite3 {path} 'pragma integrity_check'` says where); "
                                 "nothing was written: restore it from a backup, or recreate the database "
                                 "with certutil -N and sync into it again", path) from None
        raise self.error(f"stayed locked by another program ({last}); nothing was written")

    def _damaged_file(self) -> str:
        """The file of the database SQLite's `quick_check` finds damaged (cert9.db when neither)."""
        for path in (self.cert_db, self.key_db):
            try:
                conn = self._connect(path, readonly=True)
                try:
                    if conn.execute("PRAGMA quick_check").fetchone() != (b"ok",):
                        return path
                finally:
                    conn.close()
            except sqlite3.DatabaseError:
                return path
        return self.cert_db

    def _write_once(self, prepared: list[tuple[str, "_Prepared"]], password: bytes | None) -> None:
        cert_conn = self._connect(self.cert_db, readonly=False)
        key_conn = None
        try:
            # lock order: cert9.db, then key4.db (NSS's own; the reverse live-locks)
            cert_conn.execute("BEGIN IMMEDIATE")
            key_conn = self._connect(self.key_db, readonly=False)
            key_conn.execute("BEGIN IMMEDIATE")
            try:
                keys = self._logged_in(key_conn, password)
                writer = _Writer(cert_conn, key_conn, keys, self)
                for op, item in prepared:
                    if op == "put":
                        writer.put(item)
                    else:
                        writer.remove(item)
                writer.flush()
                key_conn.execute("COMMIT")  # signatures first
                cert_conn.execute("COMMIT")  # then the objects they sign
            except BaseException:
                for conn in (key_conn, cert_conn):
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                raise
            if writer.stale_signatures:
                try:  # orphan signatures of replaced trust objects: harmless, tidied when possible
                    key_conn.execute("BEGIN IMMEDIATE")
                    key_conn.executemany("DELETE FROM metaData WHERE id = ?", [(s,) for s in writer.stale_signatures])
                    key_conn.execute("COMMIT")
                except sqlite3.OperationalError:
                    if key_conn.in_transaction:
                        key_conn.execute("ROLLBACK")
        finally:
            if key_conn is not None:
                key_conn.close()
            cert_conn.close()

    def _logged_in(self, key_conn: sqlite3.Connection, password: bytes | None) -> KeyDB:
        row = key_conn.execute("SELECT item1, item2 FROM metaData WHERE id = 'password'").fetchone()
        if row is None:
            raise self.error("key4.db has no password entry; initialise it with certutil -N", self.key_db)
        keys = KeyDB(bytes(row[0]), bytes(row[1]) if row[1] is not None else None)
        if keys.login(password):
            return keys
        if password is None:
            raise self.error(
                "the database is password-protected: give its password with the store option "
                f"password-file (nss:{self.path}?password-file=FILE); storesync never writes unsigned trust, "
                "so nothing was written",
                self.key_db,
            )
        raise self.error(f"the password in {self.option('password-file')} is wrong for this database; nothing was "
                         "written: put its password alone on that file's first line",
                         self.key_db)

    # -- backups

    def _files(self) -> list[str]:
        return [absolute(self.cert_db), absolute(self.key_db)]

    def snapshot(self) -> dict[str, bytes | None]:
        """Both databases, copied consistently (under the same locks a writer takes)."""
        if not os.path.exists(self.cert_db):
            return {p: None for p in self._files()}
        self._recover()  # a backup of a half-written database would keep the half-written write
        for attempt in range(ATTEMPTS):
            try:
                cert_conn = self._connect(self.cert_db, readonly=True)
                key_conn = self._connect(self.key_db, readonly=True) if os.path.exists(self.key_db) else None
                try:
                    cert_conn.execute("BEGIN")
                    cert_conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # shared lock
                    if key_conn is not None:
                        key_conn.execute("BEGIN")
                        key_conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
                    return self._copies()
                finally:
                    for conn in (key_conn, cert_conn):
                        if conn is not None:
                            if conn.in_transaction:
                                conn.execute("COMMIT")
                            conn.close()
            except sqlite3.OperationalError:
                time.sleep(0.02)
            except sqlite3.DatabaseError:
                break
        return self._copies()

    def _copies(self) -> dict[str, bytes | None]:
        return {p: read_bytes(p) if os.path.exists(p) else None for p in self._files()}

    def _merge_signatures(self, rows: list[tuple]) -> None:
        conn = self._connect(self.key_db, readonly=False)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany("INSERT OR IGNORE INTO metaData (id, item1, item2) VALUES (?, ?, ?)", rows)
            conn.execute("COMMIT")
        finally:
            conn.close()

    def restore(self, snapshot: dict[str, bytes | None]) -> None:
        """Put both files back without a moment of unsigned trust: first the backup's trust
        signatures join the live key4.db (it then signs both the live and the old objects),
        then cert9.db is replaced, then key4.db."""
        key_name, cert_name = absolute(self.key_db), absolute(self.cert_db)
        old_keys = snapshot.get(key_name)
        try:  # read here, not in the owner's process: that user may not read tempfile's module
            rows = _signature_rows(old_keys) if old_keys else []
        except sqlite3.DatabaseError:
            rows = []  # not a database: the files are put back as they are

        def put_back() -> None:
            if rows and os.path.exists(self.key_db):
                self._merge_signatures(rows)
            for name in sorted(snapshot, key=lambda n: n != cert_name):  # cert9.db first
                data = snapshot[name]
                if data is None:
                    remove_file(name)
                else:
                    atomic_write(name, data, mode=0o600)

        owner = owner_of(self.cert_db) if os.path.exists(self.cert_db) else (os.getuid(), os.getgid())
        if os.geteuid() == 0 and owner[0] != 0:
            run_as(owner, put_back, self._child_error)
        else:
            put_back()


def _signature_rows(key_db_bytes: bytes) -> list[tuple]:
    """The `sig_cert_%` rows of a key4.db held as bytes (a backup)."""
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".db") as copy:
        copy.write(key_db_bytes)
        copy.flush()
        conn = sqlite3.connect(f"file:{_quote(copy.name)}?mode=ro", uri=True)
        try:
            return conn.execute("SELECT id, item1, item2 FROM metaData WHERE id LIKE 'sig_cert_%'").fetchall()
        finally:
            conn.close()


_GRANTING = (ANCHOR_L, PEER_L)  # the letters that make a certificate trusted
CKM_SHA_1, CKM_SHA224, CKM_SHA384, CKM_SHA512 = 0x220, 0x255, 0x260, 0x270
_HASH_OF_MECHANISM = {CKM_SHA_1: "sha1", CKM_SHA224: "sha224", CKM_SHA256: "sha256", CKM_SHA384: "sha384",
                      CKM_SHA512: "sha512"}


def _stated(trust: TrustObject) -> list[tuple[str, int, str]]:
    """(purpose, attribute, letter) for each purpose of a trust object, as stored: before its
    signatures are checked ("" for no opinion, or a value that is no trust state)."""
    legacy = trust.cls == CKO_NSS_TRUST
    table, raw = (_FROM_STORED_LEGACY if legacy else _FROM_STORED_P11), trust.raw
    return [(p, a, table.get(raw.get(a), NONE_L)) for p, a in (LEGACY_ATTR if legacy else P11_ATTR).items()]


_HASHES = {CKO_NSS_TRUST: (NSS_SHA1,), CKO_TRUST: (CKA_HASH_OF_CERTIFICATE, CKA_NAME_HASH_ALGORITHM)}


def _signed(trust: TrustObject) -> tuple[int, ...] | list[int]:
    """The attributes of a trust object whose signatures a read checks: everything NSS fetches with
    its trust when it grants any (one bad signature fails that whole fetch: `_FETCHED`), else those
    that state distrust or `c` (each stands on its own signature); never the MD5 no NSS reads."""
    stated = []
    for _, attribute, letter in trust.stated:
        if letter in _GRANTING:
            return _FETCHED[trust.cls]
        if letter:
            stated.append(attribute)
    return stated


def _hash_holds(obj: CertObject, trust: TrustObject) -> bool:
    """Does the trust object's certificate hash (its signature checked: `_signed`) name these very bytes?
    NSS applies a trust object to a certificate only then (pk11_HandleTrustObject): a certificate
    row swapped for another of the same issuer and serial keeps no trust."""
    raw, cert = trust.raw, obj.cert
    name = "sha1" if trust.cls == CKO_NSS_TRUST else _HASH_OF_MECHANISM.get(as_ulong(raw.get(CKA_NAME_HASH_ALGORITHM)))
    value = raw.get(_HASHES[trust.cls][0])
    if name is None or not value:
        return False
    if name == "sha256":  # the certificate's identity, hashed already
        return value.hex() == cert.sha256
    return value == getattr(hashlib, name)(cert.der).digest()  # not kept: a read-back holds no more than it needs


#: Bound values per statement when a read looks its signatures up by id (SQLite before 3.32 takes 999).
SIGNATURES_PER_QUERY = 500


def _trusts(objects: list[CertObject]) -> list[TrustObject]:
    """The trust objects of `objects`, each certificate's legacy one before its CKO_TRUST one."""
    return [trust for obj in objects for trust in (obj.legacy, obj.p11) if trust is not None]


def _checked_signatures(objects: list[CertObject]) -> list[str] | None:
    """The ids of the signatures a read checks (`_signed`). None when they are half or more of the
    trust objects' signatures: one scan of them all is then cheaper than a lookup of each (the
    system roots, trusted for server authentication, check 12 of 13)."""
    trusts = _trusts(objects)
    stored = sum(len(LEGACY_SIGNED) if trust.cls == CKO_NSS_TRUST else len(P11_SIGNED) for trust in trusts)
    if 2 * sum(len(trust.signed) for trust in trusts) >= stored:  # counted first: most reads need no ids
        return None
    return [_SIG_ID % (trust.id, a) for trust in trusts for a in trust.signed]


def _proof(objects: list[CertObject], signatures: dict[bytes, bytes]) -> tuple[bytes, int, int, bytes] | None:
    """One signed trust attribute (signature, object id, attribute, value) for `KeyDB.login`."""
    for trust in _trusts(objects):
        for attribute in (LEGACY_ATTR if trust.cls == CKO_NSS_TRUST else P11_ATTR).values():
            value, signature = trust.raw.get(attribute), signatures.get(sig_key(trust.id, attribute))
            if value is not None and signature is not None:
                return signature, trust.id, attribute, value
    return None


def _columns(conn: sqlite3.Connection) -> set[str] | None:
    """The columns of nssPublic (None: no such table), named by a statement that reads no row:
    `PRAGMA table_info` made a row of six values for each of its 126 columns."""
    try:
        return set(next(zip(*conn.execute("SELECT * FROM nssPublic LIMIT 0").description)))
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return None
        raise


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _describe(trust: dict[str, str | None]) -> str:
    parts = [f"{p} {s}" for p, s in sorted(trust.items()) if s]
    return ", ".join(parts) or "no trust"


_BLOB = {bytes}  # the type of every value NSS stores
_NO_DATES = [None] * len(DISTRUST_AFTER_ATTR)  # a certificate row without distrust-after dates (most)


def _distrust_after(values: list[bytes | None]) -> dict[str, datetime]:
    """The dates of a certificate's row, `values` in the order of DISTRUST_AFTER_ATTR."""
    result = {}
    for purpose, value in zip(DISTRUST_AFTER_ATTR, values):
        if value and value != b"\x00":
            when = der.parse_time(value)
            if when is not None:
                result[purpose] = when
    return result


_URI_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~/")


def _quote(path: str) -> str:
    """The real path of `path` for a SQLite URI, %-escaped as urllib.parse.quote does: not imported,
    it costs a one-shot run 12 M instructions (see storesync.fsio)."""
    return "".join(chr(b) if b in _URI_SAFE else f"%{b:02X}" for b in os.fsencode(os.path.realpath(path)))


SQLITE_READONLY_ROLLBACK = 776


def _hot(path: str) -> bool:
    """Does `path` have a hot journal (one a read-only open cannot roll back)? A live writer's
    journal is not hot: the writer holds its lock, and readers go on reading the old pages."""
    if not os.path.exists(f"{path}-journal"):
        return False
    try:
        conn = sqlite3.connect(f"file:{_quote(path)}?mode=ro", uri=True, timeout=BUSY_TIMEOUT)
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        finally:
            conn.close()
    except sqlite3.OperationalError as exc:
        return getattr(exc, "sqlite_errorcode", None) == SQLITE_READONLY_ROLLBACK or "readonly" in str(exc)
    except sqlite3.DatabaseError:
        return False  # not a database: read() says so
    return False


def _with_retries(fn, store: Store):
    for attempt in range(ATTEMPTS):
        try:
            return fn()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc) or attempt == ATTEMPTS - 1:
                raise
            time.sleep(0.01 + os.urandom(1)[0] % 30 / 1000)
    raise AssertionError("unreachable")


# --- building and changing objects ---------------------------------------------------------


#: The fields of certificates this process is writing, by their DER: reading a database back after
#: a write parses no certificate whose bytes are byte for byte one it wrote (the bytes are still
#: read from disk and compared whole, as the dict's key). Taken out when read back; bounded.
_WRITTEN: dict[bytes, der.CertFields] = {}
WRITTEN_KEPT = 4096


class _Prepared:
    """Everything derived from an entry before any lock is taken."""

    __slots__ = ("entry", "issuer", "serial", "subject", "sha1", "md5", "sha256", "ckaid", "letters", "step_up", "email")

    @classmethod
    def of(cls, entry: Entry) -> "_Prepared":
        cert = entry.cert
        fields = cert.fields
        item = cls()
        item.entry = entry
        item.issuer, item.serial, item.subject = fields.issuer, fields.serial, fields.subject
        item.sha1 = hashlib.sha1(cert.der).digest()
        item.md5 = hashlib.md5(cert.der).digest()
        item.sha256 = bytes.fromhex(cert.sha256)
        item.ckaid = key_id(cert)
        if len(_WRITTEN) >= WRITTEN_KEPT:
            _WRITTEN.clear()
        _WRITTEN[cert.der] = fields  # the check after the write reads these bytes back: not parsed again
        item.letters = _letters_for(entry)
        item.step_up = bool(entry.extras.get("nss", {}).get("step_up"))
        item.email = email_of(cert)
        return item


def _letters_for(entry: Entry) -> dict[str, str]:
    """Per purpose the NSS trust to store: the model's trust, in the letter the store had before
    (P versus C, c) when that letter still says the same thing."""
    kept = entry.extras.get("nss", {}).get("letters", {})
    leaf = entry.cert.says_leaf  # P for a certificate that cannot issue, as certutil users mark one
    letters = {}
    for purpose in PURPOSES:
        state = entry.trust.get(purpose)
        before = kept.get(purpose, NONE_L)
        if state == TRUSTED:
            letters[purpose] = before if before == ANCHOR_L or (before == PEER_L and leaf) else PEER_L if leaf else ANCHOR_L
        elif state == DISTRUSTED:
            letters[purpose] = DISTRUST_L
        else:
            letters[purpose] = VALID_CA_L if before == VALID_CA_L else NONE_L
    return letters


# The attributes of a new object whose values recur from row to row (`_Writer._insert`)
_COMMON_FIXED = (CKA_CLASS, CKA_TOKEN, CKA_PRIVATE, CKA_MODIFIABLE)
_CERT_FIXED = (*_COMMON_FIXED, CKA_CERTIFICATE_TYPE)
_LEGACY_FIXED = (*_COMMON_FIXED, CKA_LABEL, *LEGACY_ATTR.values(), NSS_STEP_UP)
_P11_FIXED = (*_COMMON_FIXED, CKA_LABEL, *P11_ATTR.values(), CKA_NAME_HASH_ALGORITHM)


class _Writer:
    """One write transaction. The objects it looks up (certificates and trust by class, issuer and
    serial; nicknames) are read in one scan, then kept up to date in memory; rows and signatures
    are inserted in batches, one `executemany` per shape, before any delete and at the end."""

    def __init__(self, cert_conn: sqlite3.Connection, key_conn: sqlite3.Connection, keys: KeyDB, store: NssStore):
        self.cert = cert_conn
        self.key = key_conn
        self.store = store
        self.sign = keys.signer()
        self.columns = _columns(self.cert)
        if self.columns is None:
            raise self.store.error("cert9.db has no nssPublic table (not an NSS database?)", self.store.cert_db)
        self.stale_signatures: list[str] = []
        self._next_number: dict[str, int] = {}  # nickname base -> the first " #n" not tried yet
        self._rows: dict[str, list[list]] = {}  # INSERT statement -> rows not yet inserted
        self._statements: dict[tuple, tuple[str, list[int]]] = {}  # a row's shape -> its INSERT, the attributes bound
        self._signatures: list[tuple[str, bytes]] = []  # not yet inserted
        self._ids: dict[int, tuple] = {}  # object id -> its key in _objects
        self._random: list[int] = []  # ids drawn, not yet tried
        self._objects: dict[tuple, list[tuple[int, Any]]] = {}  # (class, issuer, serial) -> [(id, value)]
        self._nick_of: dict[Any, Any] = {}  # certificate subject -> the first nickname stored for it
        self._subjects_of: dict[Any, set] = {}  # nickname -> subjects of the certificates that have it
        for object_id, cls, issuer, serial, value, subject, nick in self.cert.execute(
                "SELECT id, a0, a81, a82, a11, a101, a3 FROM nssPublic"):
            self._add(object_id, cls, issuer, serial, value, subject, nick)

    def _add(self, object_id, cls, issuer, serial, value, subject, nick) -> None:
        self._ids[object_id] = (cls, issuer, serial)
        self._objects.setdefault((cls, issuer, serial), []).append((object_id, value))
        if cls == ulong(CKO_CERTIFICATE) and nick is not None:
            self._nick_of.setdefault(subject, nick)
            if subject is not None:
                self._subjects_of.setdefault(nick, set()).add(subject)

    def _ensure_columns(self, attributes: Iterable[int]) -> None:
        for attribute in attributes:
            name = col(attribute)
            if name not in self.columns:
                self.cert.execute(f"ALTER TABLE nssPublic ADD COLUMN {name}")  # as sdb does
                self.columns.add(name)

    def _new_id(self) -> int:
        while True:  # uniform in 1..MAX_ID (2**30 - 1), as secrets.randbelow(MAX_ID) + 1, without importing random
            if not self._random:  # drawn 256 at a time: one system call, not one per object
                self._random = [n & MAX_ID for n in memoryview(os.urandom(4 * 256)).cast("I")]
            candidate = self._random.pop()
            if candidate and candidate not in self._ids:
                self._ids[candidate] = ()  # taken; _add files it
                return candidate

    def _insert(self, values: dict[int, bytes], fixed: tuple[int, ...] = ()) -> int:
        """Queue a new object's row. `fixed`: its attributes whose values recur from row to row
        (class, flags, trust states): written into the statement as BLOB literals, not bound for
        every row (sqlite3 looks up an adapter for each bytes value it binds)."""
        shape = (tuple(values), fixed, *map(values.__getitem__, fixed))
        known = self._statements.get(shape)
        if known is None:  # a few per write: certificates (with an e-mail or not), trust by its states
            self._ensure_columns(values)
            names = ", ".join(["id", *(col(a) for a in values)])
            marks = ", ".join(["?", *(f"X'{values[a].hex()}'" if a in fixed else "?" for a in values)])
            known = self._statements[shape] = (f"INSERT INTO nssPublic ({names}) VALUES ({marks})",
                                               [a for a in values if a not in fixed])
        statement, bound = known
        object_id = self._new_id()
        self._rows.setdefault(statement, []).append([object_id, *map(values.__getitem__, bound)])
        self._add(object_id, values[CKA_CLASS], values[CKA_ISSUER], values[CKA_SERIAL_NUMBER], values.get(CKA_VALUE),
                  values.get(CKA_SUBJECT), values.get(CKA_LABEL))
        return object_id

    def flush(self) -> None:
        """Insert what waits: before a statement that changes rows, and before the commit."""
        for statement, rows in self._rows.items():
            self.cert.executemany(statement, rows)
        self._rows.clear()
        if self._signatures:
            self.key.executemany("INSERT OR REPLACE INTO metaData (id, item1, item2) VALUES (?, ?, NULL)",
                                 self._signatures)
            self._signatures.clear()

    def _delete(self, object_id: int) -> None:
        self.flush()
        self.cert.execute("DELETE FROM nssPublic WHERE id = ?", (object_id,))
        key = self._ids.get(object_id)
        if key in self._objects:
            self._objects[key] = [(i, v) for i, v in self._objects[key] if i != object_id]

    def _find(self, cls: int, issuer: bytes, serial: bytes) -> list[tuple[int, bytes | None]]:
        return list(self._objects.get((ulong(cls), issuer, serial), ()))

    def _nickname(self, item: _Prepared) -> bytes:
        stored_nick = self._nick_of.get(item.subject)
        if stored_nick is not None and unstored(stored_nick):
            return unstored(stored_nick)  # NSS keeps one nickname per subject
        base = (item.entry.label or item.entry.cert.default_label).strip() or item.entry.sha256[:16]
        n = self._next_number.get(base, 1)  # k certificates of one label: k lookups, not k²/2
        nick = f"{base} #{n}" if n > 1 else base
        while self._subjects_of.get(nick.encode("utf-8"), set()) - {item.subject}:
            n += 1
            nick = f"{base} #{n}"
        self._next_number[base] = n + 1
        return nick.encode("utf-8")

    def put(self, item: _Prepared) -> None:
        rows = self._find(CKO_CERTIFICATE, item.issuer, item.serial)
        cert_id = None
        for object_id, value in rows:
            if unstored(value) == item.entry.cert.der:
                cert_id = object_id
        if rows and cert_id is None:
            # (class, issuer, serial) is unique in NSS: another certificate holds this issuer+serial.
            raise self.store.error(
                f"{item.entry.display_label}: another certificate with the same issuer and serial number is in "
                "the database; NSS cannot hold both, so nothing was written"
            )
        distrust_after = {
            attr: stored(_utctime_bytes(item.entry.distrust_after[p])) if p in item.entry.distrust_after else None
            for p, attr in DISTRUST_AFTER_ATTR.items()
        }
        if cert_id is None:
            values = {
                CKA_CLASS: ulong(CKO_CERTIFICATE),
                CKA_TOKEN: b"\x01",
                CKA_PRIVATE: b"\x00",
                CKA_LABEL: stored(self._nickname(item)),
                CKA_VALUE: item.entry.cert.der,
                CKA_CERTIFICATE_TYPE: ulong(0),
                CKA_ISSUER: item.issuer,
                CKA_SERIAL_NUMBER: item.serial,
                CKA_SUBJECT: item.subject,
                CKA_ID: item.ckaid,
                CKA_MODIFIABLE: b"\x01",
            }
            if item.email:
                values[CKA_NSS_EMAIL] = item.email
            values.update({a: v for a, v in distrust_after.items() if v is not None})
            self._insert(values, _CERT_FIXED)
        else:
            current = self._get(cert_id, list(distrust_after))
            if current != distrust_after:
                self._ensure_columns(distrust_after)
                self.flush()
                sets = ", ".join(f"{col(a)} = ?" for a in distrust_after)
                self.cert.execute(f"UPDATE nssPublic SET {sets} WHERE id = ?", [*distrust_after.values(), cert_id])
        self._replace_trust(item)

    def _get(self, object_id: int, attributes: list[int]) -> dict[int, bytes | None]:
        self.flush()
        present = [a for a in attributes if col(a) in self.columns]
        row = self.cert.execute(
            f"SELECT {', '.join(col(a) for a in present) or 'id'} FROM nssPublic WHERE id = ?", (object_id,)
        ).fetchone()
        found = dict(zip(present, row)) if present and row else {}
        return {a: (bytes(found[a]) if found.get(a) is not None else None) for a in attributes}

    def _drop_trust(self, item: _Prepared) -> None:
        for cls, signed in ((CKO_NSS_TRUST, LEGACY_SIGNED), (CKO_TRUST, P11_SIGNED)):
            for object_id, _ in self._find(cls, item.issuer, item.serial):
                self._delete(object_id)
                self.stale_signatures.extend(sig_id(object_id, a) for a in signed)

    def _replace_trust(self, item: _Prepared) -> None:
        """New trust objects (new ids, signed first), then the old ones go: a crash at any point
        leaves either the old signed trust or the new signed trust, never unsigned trust."""
        self._drop_trust(item)
        letters = item.letters
        if not any(letters.values()) and not item.step_up:
            return  # `,,`: NSS stores no trust object at all
        common = {
            CKA_TOKEN: b"\x01",
            CKA_PRIVATE: b"\x00",
            CKA_LABEL: EMPTY,
            CKA_ISSUER: item.issuer,
            CKA_SERIAL_NUMBER: item.serial,
            CKA_MODIFIABLE: b"\x01",
        }
        legacy = {CKA_CLASS: _ULONG[CKO_NSS_TRUST], **common}
        for purpose, attribute in LEGACY_ATTR.items():
            legacy[attribute] = _ULONG[_TO_LEGACY[letters[purpose]]]
        legacy[NSS_STEP_UP] = b"\x01" if item.step_up else b"\x00"
        legacy[NSS_SHA1] = item.sha1
        legacy[NSS_MD5] = item.md5
        p11 = {CKA_CLASS: _ULONG[CKO_TRUST], **common}
        for purpose, attribute in P11_ATTR.items():
            p11[attribute] = _ULONG[_TO_P11[letters[purpose]]]
        p11[CKA_HASH_OF_CERTIFICATE] = item.sha256
        p11[CKA_NAME_HASH_ALGORITHM] = ulong(CKM_SHA256)
        for values, signed, fixed in ((legacy, LEGACY_SIGNED, _LEGACY_FIXED), (p11, P11_SIGNED, _P11_FIXED)):
            self._signatures += self.sign(self._insert(values, fixed), values, signed)

    def remove(self, item: _Prepared) -> None:
        self._drop_trust(item)
        for object_id, value in self._find(CKO_CERTIFICATE, item.issuer, item.serial):
            if unstored(value) != item.entry.cert.der:
                continue
            if self.key.execute("SELECT 1 FROM nssPrivate WHERE a102 = ? LIMIT 1", (item.ckaid,)).fetchone():
                continue  # a user certificate with its key: only its trust was ours
            self._delete(object_id)
