"""`p12`: a PKCS#12 trust store as Java reads it (keytool `-storetype PKCS12`, the JDK's own
`cacerts` since JDK 18, `cryptography`'s `serialize_java_truststore`).

Java counts a certificate bag as a trust anchor only when it carries the bag attribute
2.16.840.1.113894.746875.1.1 (docs/formats.md §5.2); without it keytool lists nothing and TLS fails.
`cryptography`'s `load_pkcs12` does not report bag attributes, so this module walks the
SafeBags itself (storesync.der) and decrypts encrypted safes with `cryptography`'s ciphers:
PBES2 (PBKDF2 + AES or 3DES: what keytool, OpenSSL 3 and `cryptography` write) and the PKCS#12
PBE schemes (SHA-1 with 3DES, RC2 or RC4: what OpenSSL 1.x and old JDKs wrote). The MAC is
checked (HMAC with the PKCS#12 key derivation, or PBMAC1). Certificate bags without the trust
attribute are reported in `warnings` and not counted; the certificate of a private key, which
Java trusts too, is one of the store's `fixed_anchors` (`_key_certificate`). Java files each bag under
its friendlyName lower-cased and keeps the last bag of an alias (`JavaAliases`): a trusted bag a
later one hides is not an anchor either (a warning names it; a rewrite drops it).

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

A file of the usual shape (DER, as keytool, OpenSSL 3, `cryptography` and storesync write) is
read from where it lies, never whole: once for the MAC, then for the bags, each safe decrypted
and parsed piece by piece and the MAC computed again (a file rewritten in between is refused);
any other shape is read whole. A write is made piece by piece too, reading the file again (and
its MAC) at each of its passes, and read back as it is written.

Writing keeps every bag that is not a trust anchor byte for byte (private keys and their
chains), and every anchor bag that stays; a safe that holds no anchor is copied unchanged.
Rewritten encrypted safes use PBES2 with PBKDF2-HMAC-SHA256 (10000 iterations) and AES-256-CBC,
the MAC is HMAC-SHA256 (keeping the file's own MAC digest and iteration count), as JDK 17's
keytool writes; salts and IVs are derived from the content, so the same set gives the same
bytes. A file in public-key privacy or integrity mode (enveloped or signed) is refused.
"""

from __future__ import annotations

import hashlib
import hmac
from functools import lru_cache

from storesync import der, pbe
from storesync.model import ANY_EKU, Certificate, Entry, TrustSet
from storesync.pbe import (
    HMAC_PRFS,
    ITERATIONS,
    OID_PBKDF2,
    OID_PBMAC1,
    DecryptError,
    bmp_password,
    budget,
    decrypt,
    decrypting,
    pbes2_encryption,
    pbes2_hashes,
    pbkdf2,
    pbkdf2_params,
    pkcs12_kdf,
)
from storesync.pbe import PbeError as P12Error  # what storesync cannot read in the file (a sentence fragment)
from storesync.stores import PASSWORD_FILE, FileStore, Values, readable
from storesync.stores._java import (
    ALIASES, CAPABILITIES, WRONG_PASSWORD, chosen_scheme, key_entry_anchors, make_alias, store_password,
    unchanged_anchor_set,
)

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
DIGESTS = {
    "1.3.14.3.2.26": "sha1", "2.16.840.1.101.3.4.2.4": "sha224", "2.16.840.1.101.3.4.2.1": "sha256",
    "2.16.840.1.101.3.4.2.2": "sha384", "2.16.840.1.101.3.4.2.3": "sha512",
}
DIGEST_OIDS = {name: oid for oid, name in DIGESTS.items()}


def _content(content_info: der.TLV, what: str) -> tuple[str, der.TLV | None]:
    """ContentInfo -> (contentType, the element inside [0] EXPLICIT)."""
    kids = der.kids(der.expect(content_info, der.SEQUENCE, what))
    if not kids:
        raise P12Error(f"{what} is empty")
    content_type = der.oid_of(kids[0], f"{what} content type")
    if len(kids) < 2:
        return content_type, None
    inner = der.kids(der.expect(kids[1], 0xA0, f"{what} content"))
    if len(inner) != 1:
        raise P12Error(f"{what} content is malformed")
    return content_type, inner[0]


# --- the PFX structure ----------------------------------------------------------------------


class Bag:
    __slots__ = ("raw", "bag_id", "attributes", "cert")  # plain classes here: no `dataclasses` import

    def __init__(self, raw: bytes, bag_id: str, attributes: dict[str, list[der.TLV]], cert: bytes | None = None):
        self.raw, self.bag_id, self.attributes, self.cert = raw, bag_id, attributes, cert

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


def _local_key_id(bag: Bag) -> bytes | None:
    """The bag's localKeyId (an OCTET STRING, maybe empty), which ties a private key to its
    certificate; None without one."""
    for value in bag.attributes.get(OID_LOCAL_KEY_ID, []):
        return bytes(value.value) if value.tag == der.OCTET_STRING else None
    return None


class JavaAliases:
    """The alias Java's PKCS12KeyStore files each bag under as its load reads them in turn (the
    JDK's loadSafeContents): a private-key bag (not one without a localKeyId after the file's
    first key), a secret bag, and a certificate bag with Java's trust attribute, each under its
    friendlyName lower-cased, or "1", "2", ... without one. A later bag of an alias replaces the
    earlier one: Java never sees that one."""

    def __init__(self):
        self.keys = self.unnamed = 0

    def key(self, bag: Bag, alias: str | None) -> str | None:
        """The alias `bag` (its friendlyName `alias`) is filed under (None: Java keeps no entry of it)."""
        if bag.bag_id == BAG_SHROUDED_KEY:
            self.keys += 1
            if OID_LOCAL_KEY_ID not in bag.attributes and self.keys > 1:
                return None
        elif bag.bag_id != BAG_SECRET and not bag.java_trusted:
            return None
        if alias is None:
            self.unnamed += 1
            alias = str(self.unnamed)
        return alias.lower()


class Safe:
    __slots__ = ("raw", "encrypted", "bags")

    def __init__(self, raw: bytes, encrypted: bool, bags: list[Bag]):
        self.raw = raw  # the ContentInfo exactly as stored
        self.encrypted, self.bags = encrypted, bags

    # what a safe read as a stream (_SafeIn) offers too
    size = property(lambda self: len(self.raw))

    def read_bags(self):
        return iter(self.bags)

    def pieces(self):
        return (self.raw,)


class Pfx:
    __slots__ = ("safes", "password", "mac", "mac_secret")

    def __init__(self, safes: list[Safe], password: str, mac: tuple[str, int] | None, mac_secret: bytes | None = None):
        self.safes, self.password = safes, password
        self.mac = mac  # (digest name, iterations) of a classic MAC; None: no MAC
        self.mac_secret = mac_secret  # the KDF password bytes the MAC verified with

    @property
    def bags(self) -> list[Bag]:
        return [bag for safe in self.safes for bag in safe.bags]

    def read(self):
        """The safes, as a `_Source` reads them again at every pass."""
        return iter(self.safes)


def _parse_bags(data: bytes, each=None) -> list[Bag]:
    """The bags of a SafeContents; with `each`, None is handed to it first (a safe begins), then
    every bag as it is parsed, and none is kept (a read of 10 000 held ~3 KB a certificate in
    bags, attributes and copies)."""
    bags = []
    if each is not None:
        each(None)  # a safe begins
    for tlv in der.expect(der.read_all(data), der.SEQUENCE, "SafeContents").children():
        bag = _bag(tlv)
        if each is None:
            bags.append(bag)
        else:
            each(bag)
    return bags


def _bag(tlv: der.TLV) -> Bag:
    bag = _trusted_cert_bag(tlv)  # every bag of a Java trust store
    if bag is not None:
        return bag
    kids = der.kids(der.expect(tlv, der.SEQUENCE, "SafeBag"))
    if len(kids) < 2:
        raise P12Error("a SafeBag is incomplete")
    bag_id = der.oid_of(kids[0], "bag type")
    value = der.kids(der.expect(kids[1], 0xA0, "bag value"))
    attributes: dict[str, list[der.TLV]] = {}
    if len(kids) > 2:
        for attribute in der.expect(kids[2], der.SET, "bag attributes").children():
            parts = der.kids(der.expect(attribute, der.SEQUENCE, "bag attribute"))
            if len(parts) != 2:
                raise P12Error("a bag attribute is malformed")
            attributes[der.oid_of(parts[0], "attribute type")] = der.kids(der.expect(parts[1], der.SET, "attribute values"))
    raw = tlv.raw
    bag = Bag(raw if type(raw) is bytes else bytes(raw), bag_id, attributes)  # bytes, from a decrypted bytearray too
    if bag_id == BAG_CERT and len(value) == 1:
        cert_bag = der.kids(der.expect(value[0], der.SEQUENCE, "CertBag"))
        if len(cert_bag) == 2 and der.oid_of(cert_bag[0], "certificate type") == OID_X509_CERT:
            inner = der.kids(der.expect(cert_bag[1], 0xA0, "certificate value"))
            if len(inner) != 1:
                raise P12Error("a certificate bag is malformed")
            cert = der.octets_of(inner[0], "certificate")
            bag.cert = cert if type(cert) is bytes else bytes(cert)
    return bag


def _trusted_cert_bag(tlv: der.TLV) -> Bag | None:
    """The bag `_bag` reads of a trusted certificate's bag laid out exactly as keytool and
    storesync write one (`java_trusted_cert_bag`: the certificate, its friendlyName, Java's
    trust for any purpose), read by offsets and the fixed parts compared as bytes: 9 element
    reads, not 21, and no list of children at each level. None for any other bag (another OID
    encoding, attribute, order or extra element), which `_bag` reads as ever."""
    data, end = tlv.data, tlv.end
    start = tlv.content + len(_BAG_CERT)
    if tlv.tag != der.SEQUENCE or data[tlv.content : start] != _BAG_CERT:
        return None
    read = der.read
    try:
        value = read(data, start, end)  # [0] the bag's value: one CertBag
        cert_bag = read(data, value.content, value.end)
        at = cert_bag.content + len(_X509_CERT)
        if value.tag != 0xA0 or cert_bag.tag != der.SEQUENCE or cert_bag.end != value.end or \
                data[cert_bag.content : at] != _X509_CERT:
            return None
        explicit = read(data, at, cert_bag.end)  # [0] the certificate, one OCTET STRING
        octets = read(data, explicit.content, explicit.end)
        if explicit.tag != 0xA0 or explicit.end != cert_bag.end or octets.tag != der.OCTET_STRING or \
                octets.end != explicit.end:
            return None
        attributes = read(data, value.end, end)  # the bag's last element: friendlyName, then the trust
        name = read(data, attributes.content, attributes.end)
        at = name.content + len(_FRIENDLY_NAME)
        if attributes.tag != der.SET or attributes.end != end or name.tag != der.SEQUENCE or \
                data[name.content : at] != _FRIENDLY_NAME or data[name.end : end] != _JAVA_TRUST_ANY:
            return None
        values = read(data, at, name.end)
        alias = read(data, values.content, values.end)
        if values.tag != der.SET or values.end != name.end or alias.tag != 0x1E or alias.end != values.end:
            return None
        trust = read(data, end - len(_ANY_EKU), end)
    except der.DERError:
        return None  # `_bag` says what is wrong
    raw, cert = tlv.raw, octets.value
    return Bag(raw if type(raw) is bytes else bytes(raw), BAG_CERT, {OID_FRIENDLY_NAME: [alias], OID_JAVA_TRUST: [trust]},
               cert if type(cert) is bytes else bytes(cert))


def _mac_ok(pieces, mac_data: der.TLV, password: str) -> tuple[tuple[tuple[str, int] | None, bytes], object] | None:
    """Check the MAC of the authenticated safe, which `pieces()` gives (in pieces); returns
    (((digest, iterations) or None for PBMAC1, secret), the HMAC of its key before any byte)
    or None if it fails."""
    for fresh, expected, result in _macs(mac_data, password):
        value = fresh.copy()
        for piece in pieces():
            value.update(piece)
        if hmac.compare_digest(value.digest(), expected):
            return result, fresh
    return None


def _macs(mac_data: der.TLV, password: str):
    """(HMAC before any byte, expected value, what `_mac_ok` returns) of each key the MAC may be
    made with, each derived only when the one before did not match."""
    kids = der.kids(der.expect(mac_data, der.SEQUENCE, "MacData"))
    digest_info = der.kids(der.expect(kids[0], der.SEQUENCE, "MAC DigestInfo"))
    oid, params = der.algorithm(digest_info[0], "MAC algorithm")
    expected = der.octets_of(digest_info[1], "MAC value")
    salt = der.octets_of(kids[1], "MAC salt") if len(kids) > 1 else b""
    iterations = der.integer_of(kids[2], "MAC iterations") if len(kids) > 2 else 1
    if oid == OID_PBMAC1 and params is not None:
        kdf, scheme = der.kids(params)[:2]
        kdf_oid, kdf_params = der.algorithm(kdf, "PBMAC1 key derivation")
        scheme_oid, _ = der.algorithm(scheme, "PBMAC1 MAC")
        if kdf_oid != OID_PBKDF2 or kdf_params is None or scheme_oid not in HMAC_PRFS:
            raise P12Error("uses a PBMAC1 variant storesync cannot check")
        pb_salt, pb_iterations, prf, length = pbkdf2_params(kdf_params)
        length = hashlib.new(prf).digest_size if length is None else length
        if not 1 <= length <= 64:
            raise P12Error(f"asks for a {length}-byte PBMAC1 key (HMAC keys are at most 64 bytes)")
        key = pbkdf2(prf, password.encode("utf-8"), pb_salt, pb_iterations, length)
        # rewritten with a classic MAC under the same password
        yield hmac.new(key, digestmod=HMAC_PRFS[scheme_oid]), expected, (None, bmp_password(password) if password else b"\x00\x00")
        return
    if oid not in DIGESTS:
        raise P12Error(f"has a MAC with the digest {oid}, which storesync cannot check")
    digest = DIGESTS[oid]
    size = hashlib.new(digest).digest_size
    for secret in ([bmp_password(password)] if password else [b"\x00\x00", b""]):
        key = pkcs12_kdf(digest, secret, salt, 3, iterations, size)
        yield hmac.new(key, digestmod=digest), expected, ((digest, iterations), secret)


def load_pfx(data: bytes, password: str, try_empty: bool, each=None) -> Pfx:
    """Parse, check the MAC and decrypt. Raises P12Error (DecryptError: wrong password).
    With `each`, every bag goes to it once the MAC is verified, and the safes keep none."""
    try:
        with budget():
            return _load_pfx(data, password, try_empty, each)
    except der.ShapeError as exc:
        raise P12Error(str(exc)) from None
    except der.DERError as exc:
        raise P12Error(f"is not a well-formed PKCS#12 file ({exc})") from None
    except (IndexError, ValueError, OverflowError, RecursionError) as exc:
        if isinstance(exc, P12Error):
            raise
        raise P12Error(f"is not a well-formed PKCS#12 file ({exc or 'a structure is incomplete'})") from None


class MacError(P12Error):
    pass


def _load_pfx(data: bytes, password: str, try_empty: bool, each=None) -> Pfx:
    pfx = der.kids(der.expect(der.read_all(data), der.SEQUENCE, "PFX"))
    if len(pfx) < 2:
        raise P12Error("is not a PKCS#12 file (too few parts)")
    version = der.integer_of(pfx[0], "PFX version")
    if version != 3:
        raise P12Error(f"has PKCS#12 version {version}; only version 3 exists")
    content_type, inner = _content(pfx[1], "authSafe")
    if content_type == OID_SIGNED_DATA:
        raise P12Error("uses public-key integrity mode (a signed PFX), which storesync does not read")
    if content_type != OID_DATA or inner is None:
        raise P12Error(f"has an authSafe of type {content_type}, not data")
    if inner.tag == der.OCTET_STRING:  # read where it lies in the file: no copy of all of it
        authsafe, top = memoryview(data)[inner.content : inner.end], der.read(data, inner.content, inner.end)
        if top.end != inner.end:
            raise der.DERError(f"{inner.end - top.end} trailing bytes after the element")
    else:  # BER's constructed form: joined
        authsafe = der.octets_of(inner, "authSafe")
        top = der.read_all(authsafe)
    content_infos = der.kids(der.expect(top, der.SEQUENCE, "AuthenticatedSafe"))

    mac = secret = None
    if len(pfx) > 2:
        checked, password = _mac_checked(lambda: (authsafe,), pfx[2], password, try_empty)
        if checked is None:
            raise MacError(_why_mac_failed(content_infos, password))
        mac, secret = checked[0]
    return Pfx([_safe(info, index, password, each) for index, info in enumerate(content_infos)], password, mac, secret)


def _mac_checked(pieces, mac_data: der.TLV, password: str, try_empty: bool):
    """(`_mac_ok` with the password, else (`try_empty`) with the empty one, the password it took)."""
    checked = _mac_ok(pieces, mac_data, password)
    if checked is None and try_empty and password:
        checked = _mac_ok(pieces, mac_data, "")
        if checked is not None:
            password = ""
    if checked is not None and checked[0][0] is None:  # PBMAC1: rewritten as a classic HMAC-SHA256 MAC
        checked = (("sha256", ITERATIONS), checked[0][1]), checked[1]
    return checked, password


def _safe(info: der.TLV, index: int, password: str, each=None) -> Safe:
    kind, content = _content(info, f"safe {index + 1}")
    raw = info.raw if each is None else b""  # a copy of the safe: kept only with its bags
    if kind == OID_DATA and content is not None:
        return Safe(raw, False, _parse_bags(der.octets_of(content, "safe"), each))
    if kind == OID_ENCRYPTED_DATA and content is not None:
        plain = _decrypt_safe(content, password)
        try:
            bags = _parse_bags(plain, each)
        except (der.DERError, P12Error, IndexError):
            raise DecryptError("decrypted safe is not SafeContents") from None
        return Safe(raw, True, bags)
    if kind == OID_ENVELOPED_DATA:
        raise P12Error("uses public-key privacy mode (an enveloped safe), which storesync does not read")
    raise P12Error(f"has a safe of unknown type {kind}")


def _decrypt_safe(content: der.TLV, password: str) -> bytes:
    encrypted_data = der.kids(der.expect(content, der.SEQUENCE, "EncryptedData"))
    eci = der.kids(der.expect(encrypted_data[1], der.SEQUENCE, "EncryptedContentInfo"))
    if len(eci) < 3:
        raise P12Error("an encrypted safe has no content")
    body = eci[2]
    if body.tag == 0x80:  # decrypted where it lies in the file: no copy of the ciphertext
        return decrypt(eci[1], body.data, password, span=(body.content, body.end))
    if body.tag == 0xA0:  # constructed [0]: BER chunks
        return decrypt(eci[1], b"".join(der.octets_of(c, "ciphertext") for c in body.children()), password)
    raise P12Error("an encrypted safe's content is malformed")


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


# --- reading as a stream --------------------------------------------------------------------
#
# The common shape (what keytool, OpenSSL 3, `cryptography` and storesync write: definite
# lengths, the authSafe an OCTET STRING) is read from the open file front to back, twice: once
# for the MAC, then, only if it verifies, for the bags, each safe decrypted and parsed as it is
# read and the MAC computed again on the way (a file rewritten in between is not believed). A
# safe of another shape (BER chunks, an older cipher) is read whole, alone; a file of another
# shape, or any fault, is read whole as before, so what is said of it is as before.

CHUNK = 1 << 14  # what the file is read in, and new safes encrypted in
#: A write's passes over a smaller file, or over fewer bytes of new certificates, take them from
#: memory: each pass reading, decrypting and parsing the file again, or making the new bags
#: again, cost a small store more time than holding it costs memory.
STREAM_FROM = 1 << 20
_VERSION3, _DATA, _ENCRYPTED = der.integer(3), der.encode_oid(OID_DATA), der.encode_oid(OID_ENCRYPTED_DATA)
_PFX_LEVELS = [(der.SEQUENCE, _VERSION3), (der.SEQUENCE, _DATA), (0xA0, b""), (der.OCTET_STRING, b"")]


class _Unstreamed(P12Error):
    """A shape (or a fault) the streamed read leaves to the whole one."""


class _Changed(Exception):
    """The file's second read is not the one its MAC was checked on."""


class _Reader:
    """A file read front to back; every byte of the authenticated safe (up to `mac_end`) is fed
    to `mac` as it is read. `size`: the file's, when it is known."""

    def __init__(self, file, size: int | None = None):
        self.file, self.size, self.pos, self.mac, self.mac_end = file, size, 0, None, 0

    def take(self, n: int) -> bytes:
        if n < 0 or (self.size is not None and self.pos + n > self.size):
            raise _Unstreamed("an element runs past the end")
        data = self.file.read(n)
        if len(data) != n:
            raise _Unstreamed("truncated")
        if self.mac is not None and self.pos < self.mac_end:  # no read straddles the safe's end
            self.mac.update(data)
        self.pos += n
        return data

    def head(self) -> tuple[bytes, int, int]:
        """An element's tag and length: (their bytes, the tag, where the element ends)."""
        raw = self.take(2)
        count = raw[1] & 0x7F if raw[1] & 0x80 else 0
        if raw[1] == 0x80 or count > 4 or raw[0] & 0x1F == 0x1F:
            raise _Unstreamed("an indefinite length, or what DER does not write")
        if count:
            raw += self.take(count)
        return raw, raw[0], self.pos + (int.from_bytes(raw[2:], "big") if count else raw[1])

    def element(self) -> bytes:
        """A small element whole (an OID, an algorithm, the MacData)."""
        raw, _, end = self.head()
        if end - self.pos > 1 << 20:
            raise _Unstreamed("an element too large to be a header's")
        return raw + self.take(end - self.pos)

    def chunks(self, end: int):
        while self.pos < end:
            yield self.take(min(CHUNK, end - self.pos))

    def authsafe(self) -> tuple[int, int]:
        """Read a PFX up to its authenticated safe's content: (where that ends, where the PFX ends)."""
        _, tag, pfx_end = self.head()
        if tag != der.SEQUENCE or self.element() != _VERSION3:
            raise _Unstreamed("another PFX layout")
        _, tag, info_end = self.head()
        if tag != der.SEQUENCE or self.element() != _DATA:
            raise _Unstreamed("another authSafe")
        _, tag, explicit_end = self.head()
        _, tag_inner, end = self.head()
        if (tag, tag_inner) != (0xA0, der.OCTET_STRING) or not end == explicit_end == info_end:
            raise _Unstreamed("an authSafe in BER chunks")
        return end, pfx_end


class _Source:
    """A PFX of the common shape read from its open file, its MAC checked (`password` and
    `try_empty` as for `load_pfx`); `read()` reads its safes again at every pass, each pass
    checking the MAC on the bytes it read (_Changed at its end if they are not those checked)."""

    def __init__(self, file, password: str, try_empty: bool):
        self.file, size = file, file.seek(0, 2)
        file.seek(0)
        reader = _Reader(file, size)
        end, pfx_end = reader.authsafe()
        start = reader.pos
        file.seek(end)
        reader.pos = end
        self.mac_data = reader.element() if end < pfx_end else None
        if reader.pos != pfx_end or pfx_end != size:
            raise _Unstreamed("another PFX layout")
        self.password, self.mac, self.mac_secret, self.fresh = password, None, None, None
        with budget() as left:  # the MAC's key derivations and the safes' are one file's, as in a whole read
            if self.mac_data is not None:

                def pieces():
                    file.seek(start)
                    return _Reader(file).chunks(end - start)

                checked, self.password = _mac_checked(pieces, der.read_all(self.mac_data), password, try_empty)
                if checked is None:
                    raise _Unstreamed("the MAC does not match")  # the whole read says why
                (self.mac, self.mac_secret), self.fresh = checked
        self.left = left[0]  # what each pass may spend on the safes

    def read(self):
        size = self.file.seek(0, 2)  # what it is now: no element read is longer than the file
        self.file.seek(0)
        return _safes(_Reader(self.file, size), self.password, self.fresh, self.mac_data, self.left)


def _safes(reader: _Reader, password: str, fresh, mac_data: bytes | None, left: int | None = None):
    """The safes of a PFX read from `reader`, each as a `_SafeIn` (what its consumer does not
    read of it is passed over); at the end, the MAC computed over the bytes read (with `fresh`,
    an HMAC before any byte; None: no MAC) must be the file's, in MacData `mac_data` (None:
    whatever MacData the stream ends with: a read-back of what is being written). `left`: the
    key-derivation work the safes may take (None: a whole file's, read when called)."""
    end, pfx_end = reader.authsafe()
    if fresh is not None:
        reader.mac, reader.mac_end = fresh.copy(), end
    _, tag, listed = reader.head()
    if tag != der.SEQUENCE or listed != end:
        raise _Unstreamed("another AuthenticatedSafe")
    left = [pbe.FILE_KDF_BUDGET if left is None else left]  # the key derivations of this pass
    index = 0
    while reader.pos < end:
        safe = _SafeIn(reader, password, index, left)
        if safe.end > end:
            raise _Unstreamed("a safe runs past the authSafe")
        yield safe
        for _ in reader.chunks(safe.end):  # what was not read of it
            pass
        if reader.pos != safe.end:  # its inside ran past it
            raise _Unstreamed("a safe's elements run past it")
        index += 1
    found = reader.element() if reader.pos < pfx_end else None
    if reader.pos != pfx_end or reader.file.read(1) or (found is None) != (fresh is None):
        raise _Changed()
    if fresh is not None:
        if mac_data is not None and found != mac_data:
            raise _Changed()
        try:
            expected = der.octets_of(der.kids(der.kids(der.read_all(found))[0])[1], "MAC value")
        except (ValueError, IndexError):
            raise _Changed() from None
        if not hmac.compare_digest(reader.mac.digest(), expected):
            raise _Changed()


class _SafeIn:
    """One ContentInfo of an authenticated safe, being read: `read_bags()` its bags, or
    `pieces()` its bytes as stored; `size` and `encrypted` as a `Safe`'s."""

    def __init__(self, reader: _Reader, password: str, index: int, left: list[int]):
        self.reader, self.password, self.index, self.left = reader, password, index, left
        start = reader.pos
        head, tag, self.end = reader.head()
        if tag != der.SEQUENCE:
            raise _Unstreamed("a safe that is not a ContentInfo")
        self.size, self.taken = self.end - start, [head]  # the bytes read of it so far
        self.kind = self._element()
        self.encrypted = self.kind == _ENCRYPTED

    def _element(self) -> bytes:
        self.taken.append(self.reader.element())
        return self.taken[-1]

    def _head(self, tag: int) -> bool:
        """Read the next header: is it `tag`'s, its element ending where the safe ends?"""
        raw, found, end = self.reader.head()
        self.taken.append(raw)
        return found == tag and end == self.end

    def pieces(self):
        yield b"".join(self.taken)
        yield from self.reader.chunks(self.end)

    def read_bags(self):
        plain = self._plain()
        if plain is not None:
            yield from _bags_of(plain)
            return
        # another shape: this safe read whole, as ever
        raw = b"".join(self.taken) + self.reader.take(self.end - self.reader.pos)
        with budget(self.left):
            safe = _safe(der.read_all(raw), self.index, self.password)
        yield from safe.bags

    def _plain(self):
        """The safe's plaintext, in pieces as they are read, when it has the shape read as a
        stream; else None, nothing read past its headers."""
        reader = self.reader
        if self.kind == _DATA:
            return reader.chunks(self.end) if self._head(0xA0) and self._head(der.OCTET_STRING) else None
        if not (self.encrypted and self._head(0xA0) and self._head(der.SEQUENCE)):
            return None
        if self._element()[:1] != bytes([der.INTEGER]) or not self._head(der.SEQUENCE):  # version, EncryptedContentInfo
            return None
        self._element()  # its content type
        algorithm = self._element()
        if not self._head(0x80):  # the ciphertext, in one piece
            return None
        with budget(self.left):
            return decrypting(der.read_all(algorithm), self.password, self.end - reader.pos, reader.chunks(self.end))


def _bags_of(pieces):
    """The bags of a SafeContents whose bytes come in pieces, each parsed once it is all there."""
    buf, left = bytearray(), None  # left: the SafeContents' bytes not parsed yet (None: before its header)
    for piece in pieces:
        buf += piece
        at = 0
        while left != 0:
            sizes = _sizes(buf, at)
            if sizes is None:
                break
            head, whole = sizes
            if left is None:
                if buf[at] != der.SEQUENCE:
                    raise _Unstreamed("not SafeContents")
                left, at = whole - head, at + head
                continue
            if at + whole > len(buf):
                break
            if whole > left:
                raise _Unstreamed("a bag runs past its SafeContents")
            yield _bag(der.read_all(bytes(buf[at : at + whole])))
            at, left = at + whole, left - whole
        del buf[:at]
    if left != 0 or buf:
        raise _Unstreamed("SafeContents incomplete or followed by more")


def _sizes(buf: bytearray, at: int) -> tuple[int, int] | None:
    """(header size, element size) of the element at `at`; None while its header is incomplete."""
    if len(buf) < at + 2:
        return None
    first = buf[at + 1]
    if first < 0x80:
        return 2, 2 + first
    count = first & 0x7F
    if not 1 <= count <= 4:
        raise _Unstreamed("an indefinite or oversized length")
    if len(buf) < at + 2 + count:
        return None
    return 2 + count, 2 + count + int.from_bytes(buf[at + 2 : at + 2 + count], "big")


# --- writing --------------------------------------------------------------------------------


def _headers(levels: list[tuple[int, bytes]], size: int, after: int = 0) -> bytes:
    """The headers of elements nested around `size` bytes of content, outermost first, each level
    (tag, what comes before the next level inside it); `after` bytes end the outermost. Made
    before the content, which is written after them as it comes."""
    headers = []
    for n, (tag, before) in enumerate(reversed(levels)):
        size += len(before) + (after if n == len(levels) - 1 else 0)
        header = der.header(tag, size)
        headers.append(header + before)
        size += len(header)
    return b"".join(reversed(headers))


def java_trusted_cert_bag(cert_der: bytes, alias: str) -> bytes:
    """A certificate bag as keytool writes a trustedCertEntry (friendlyName + Java trust)."""
    friendly_name = der.seq(_FRIENDLY_NAME, der.encode(der.SET, der.encode(0x1E, alias.encode("utf-16-be"))))
    attributes = der.encode(der.SET, friendly_name + _JAVA_TRUST_ANY)
    # the certificate copied once; the headers by the two lengths, which recur: a write makes
    # each new bag at each of its passes
    return b"".join((_cert_bag_headers(len(cert_der), len(attributes)), cert_der, attributes))


@lru_cache(maxsize=4096)
def _cert_bag_headers(cert_size: int, attributes_size: int) -> bytes:
    return _headers(_CERT_BAG, cert_size, attributes_size)


# What every bag repeats, encoded once (a keystore's write makes one bag per certificate).
_X509_CERT, _FRIENDLY_NAME, _BAG_CERT = der.encode_oid(OID_X509_CERT), der.encode_oid(OID_FRIENDLY_NAME), der.encode_oid(BAG_CERT)
_CERT_BAG = [(der.SEQUENCE, _BAG_CERT), (0xA0, b""), (der.SEQUENCE, _X509_CERT), (0xA0, b""), (der.OCTET_STRING, b"")]
_ANY_EKU = der.encode_oid(ANY_EKU)
_JAVA_TRUST_ANY = der.seq(der.encode_oid(OID_JAVA_TRUST), der.encode(der.SET, _ANY_EKU))


def _encrypted(pieces, encryptor):
    """`pieces` encrypted 64 KiB at a time, PKCS#7 padding added at the end."""
    held, size = bytearray(), 0
    for piece in pieces:
        held += piece
        size += len(piece)
        if len(held) >= CHUNK:
            yield encryptor.update(bytes(held))
            held = bytearray()
    pad = 16 - size % 16
    yield encryptor.update(bytes(held + bytes([pad]) * pad)) + encryptor.finalize()


def _mac_data(digest: str, value: bytes, salt: bytes, iterations: int) -> bytes:
    digest_info = der.seq(der.seq(der.encode_oid(DIGEST_OIDS[digest]), der.NULL), der.octets(value))
    return der.seq(digest_info, der.octets(salt), der.integer(iterations))


class _Out:
    """One ContentInfo of a rewritten file: a safe of the file copied (`copy`), or made of the bags
    kept of safe `index` (None: a new safe) and, `new`, the new bags (`content`: their bytes)."""

    __slots__ = ("index", "copy", "encrypted", "content", "new", "size", "head", "encryptor")

    def __init__(self, index: int | None, copy: bool, encrypted: bool, content: int = 0, new: bool = False, size: int = 0):
        self.index, self.copy, self.encrypted, self.content, self.new, self.size = index, copy, encrypted, content, new, size


class _Tee:
    """A file over pieces as they are made, for a read-back: what `read` takes of them waits in
    `out` until `drain` hands it on to be written."""

    def __init__(self, pieces):
        self.pieces, self.buf, self.out, self.failed = iter(pieces), bytearray(), [], False

    def read(self, n: int) -> bytes:
        while len(self.buf) < n:
            try:
                piece = next(self.pieces, None)
            except BaseException:
                self.failed = True  # making the file failed, not reading it back
                raise
            if piece is None:
                break
            self.out.append(piece)
            self.buf += piece
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    def drain(self) -> list[bytes]:
        out, self.out = self.out, []
        return out


FAULTS = (ValueError, IndexError, OverflowError, RecursionError)  # what a parse of bad bytes may raise
CHANGED = ("changed while it was read (its MAC no longer matches the bytes read again); nothing was read from it "
           "and it will not be written: run the command again, or restore it (storesync rollback) if no program "
           "of yours rewrote it")


# --- the store ------------------------------------------------------------------------------


class P12Store(FileStore):
    kind = "p12"
    streamed = True
    options = ("password-file", "protect", "aliases")
    values = {"password-file": PASSWORD_FILE, "protect": Values("yes", "no"), "aliases": ALIASES}
    reader = "java"
    capabilities = CAPABILITIES

    def _load(self, data: bytes, each=None) -> Pfx:
        password, explicit = store_password(self)
        try:
            return load_pfx(data, password, try_empty=not explicit, each=each)
        except MacError as exc:
            hint = "" if explicit else " (it was opened with Java's default 'changeit')"
            if str(exc) == "tampered":
                raise self.damaged("MAC check failed although the password opens the certificates: the file was "
                                   "tampered with or damaged") from None
            if str(exc) == "wrong password":
                what = f"MAC check failed: the store password is wrong{hint} (or the file was tampered with or damaged)"
            else:
                what = f"MAC check failed: either the store password is wrong{hint}, or the file was tampered with or damaged"
            raise self.error(what + WRONG_PASSWORD) from None
        except DecryptError:
            raise self.error("cannot decrypt the certificates: the store password is wrong, or the file was tampered "
                             f"with or damaged{WRONG_PASSWORD}") from None
        except P12Error as exc:
            raise self.damaged(str(exc)) from None

    def parse(self, data) -> TrustSet:
        """The anchors, each bag dropped as soon as it is read; none before the MAC is verified,
        nothing returned (nor said) unless every safe reads. `data`: the bytes, or the file."""
        # Java's map: alias -> (its last bag's name, anchor, a private key's localKeyId)
        live: dict[str, tuple[str, Entry | None, bytes | None]] = {}
        chains: list[tuple[bytes, bytes | None, str | None]] = []  # certificate bags without trust: Java's certEntries
        java, said = JavaAliases(), len(self.warnings)
        in_safe = [0]  # bags of the safe being read, so far

        def each(safe, bag: Bag | None) -> None:
            if bag is None:  # a safe begins
                in_safe[0] = 0
                return
            in_safe[0] += 1
            entry = self._anchor(bag, report=True)
            alias = entry.label if entry is not None else bag.alias  # an anchor's decoded once
            if bag.cert is not None and not bag.java_trusted and self._loads(bag):
                key_id = _local_key_id(bag)
                if key_id is None and java.keys == 1 and in_safe[0] == 1:
                    key_id = b"01"  # Java's: the first bag of a safe, while the file's only key so far has none
                chains.append((bag.cert, key_id, alias))
            key = java.key(bag, alias)
            if key is None:
                return
            if key in live:
                self.warnings.append(
                    f"{self.path}: alias {live[key][0]!r} is given again later in the file; Java compares aliases "
                    "ignoring case and keeps the last bag of one, so the earlier one is not read (a rewrite drops it)")
            key_id = None
            if bag.bag_id == BAG_SHROUDED_KEY:  # without a localKeyId, "01" as Java (only a file's first such is filed)
                key_id = _local_key_id(bag)
                key_id = b"01" if key_id is None else key_id
            live[key] = (alias or key, entry, key_id)

        def restart() -> None:
            live.clear()
            chains.clear()
            java.__init__()
            del self.warnings[said:]

        try:
            read = self._first_read(readable(data), each, restart, keep=False)
        except BaseException:
            del self.warnings[said:]
            raise
        if read.mac is None and store_password(self)[1]:  # whoever can write it could have changed it
            self.warnings.append(f"{self.path}: has no MAC, so nothing proves it unchanged (Java reads it so too); "
                                 "the password of password-file= is not needed to read it")
        self.fixed_anchors = key_entry_anchors(self, filter(None, (
            self._key_certificate(name, key_id, chains) for name, _, key_id in live.values() if key_id is not None)))
        return TrustSet(entry for _name, entry, _ in live.values() if entry is not None)

    def _loads(self, bag: Bag) -> bool:
        """Whether a certificate bag without the trust attribute (a key's chain) holds a certificate."""
        try:
            Certificate(bag.cert).check_outline()
        except der.DERError as exc:
            name = repr(bag.alias) if bag.alias is not None else "without a name"
            self.warnings.append(f"{self.path}: certificate {name} is not a certificate ({exc}); kept, not read "
                                 "(Java cannot load a keystore holding a damaged certificate: delete it, or "
                                 "restore the file)")
            return False
        return True

    def _key_certificate(self, alias: str, key_id: bytes, chains) -> Entry | None:
        """The first certificate of a private-key entry's chain, as Java's PKCS12KeyStore finds
        it (findMatchedCertificate): a certificate bag of the same localKeyId and friendlyName,
        else the last of that localKeyId, else the last of that name."""
        by_id = by_name = None
        for cert, cert_key_id, name in chains:
            same_name = name is not None and name.lower() == alias.lower()
            if cert_key_id == key_id:
                if same_name:
                    by_id = cert
                    break
                by_id = cert
            elif same_name:
                by_name = cert
        found = by_id if by_id is not None else by_name
        if found is None:
            self.warnings.append(f"{self.path}: private-key entry {alias!r} has no certificate in the file, so Java "
                                 "trusts nothing through it; it is kept as it is")
            return None
        return Entry(self.certificate(found), label=alias)  # its outline checked as it was read (`_loads`)

    def _first_read(self, file, each, restart, keep: bool = True):
        """Read the file, every safe and then each of its bags handed to `each(safe, None)` and
        `each(safe, bag)`; returns what to read it again from: a `_Source`, or a `Pfx` (holding
        its bags only with `keep`). Streamed (see `_Source`); of another shape or with any
        fault, `restart()` and read whole, as ever: what is said of such a file is what always
        was."""
        password, explicit = store_password(self)
        try:
            if keep and file.seek(0, 2) < STREAM_FROM:
                raise _Unstreamed("a small file, held whole")
            source = _Source(file, password, try_empty=not explicit)
            for safe in source.read():
                each(safe, None)
                for bag in safe.read_bags():
                    each(safe, bag)
            return source
        except _Changed:
            raise self.error(CHANGED) from None
        except FAULTS:
            restart()
        file.seek(0)
        if not keep:
            return self._load(file.read(), lambda bag: each(None, bag))
        pfx = self._load(file.read())
        for safe in pfx.safes:
            each(safe, None)
            for bag in safe.bags:
                each(safe, bag)
        return pfx

    def _anchor(self, bag: Bag, report: bool) -> Entry | None:
        if bag.java_trusted:
            cert = self.certificate(bag.cert)
            try:
                cert.check_outline()
            except der.DERError as exc:
                if report:
                    name = repr(bag.alias) if bag.alias is not None else "without a name"
                    self.warnings.append(f"{self.path}: certificate {name} is not a certificate ({exc}); kept, not read")
                return None
            return Entry(cert, label=bag.alias)  # the label is the alias (friendlyName)
        if not report:
            return None
        name = repr(bag.alias) if bag.alias is not None else "without a name"
        if bag.bag_id == BAG_SHROUDED_KEY:
            return None  # said by `key_entry_anchors`, or by `_key_certificate`
        if bag.bag_id == BAG_KEY:
            self.warnings.append(f"{self.path}: key bag {name} is not encrypted, so Java does not load it; kept as it is")
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

    def render(self, plan):
        """The new file piece by piece as it is written, never whole in memory: the file is read
        again at each pass over it (its MAC checked each time), and what replaces it is read back
        as it is written (MAC, decryption, every bag) before it may replace the file."""
        file = self.current_file()
        try:
            yield from self._render(file, plan)
        except (_Changed, *FAULTS):  # the file changed under the passes (they read it alike before)
            raise self.error(CHANGED) from None
        finally:
            if file is not None:
                file.close()

    def _render(self, file, plan):
        desired = plan.desired
        anchors: dict[str, str | None] = {}  # SHA-256 -> the alias of its first bag
        layout: list[list] = []  # each safe's [encrypted, size, holds an anchor, bytes of the bags kept]
        taken: set[str] = set()
        others: list[bytes] = []  # the SHA-256 of each bag that is not a Java anchor: all must stay
        java = JavaAliases()
        keys: set[str] = set()  # the aliases Java files the bags under (the strings `taken` holds too)
        repeated: set[str] = set()  # those given to more than one bag: rare, sorted out by `_hidden`
        hidden: set[tuple[int, int]] = set()  # (safe, place in it) of each trusted bag a later one of its alias hides

        def each(safe, bag: Bag | None) -> None:
            if bag is None:
                layout.append([safe.encrypted, safe.size, False, 0])
                return
            alias = bag.alias
            key = java.key(bag, alias)
            if key is not None:
                (repeated if key in keys else keys).add(key)
            anchor = self._anchor(bag, report=False) is not None
            if anchor:
                anchors.setdefault(bag.sha256, alias)
                layout[-1][2] = True
            if not bag.java_trusted:
                others.append(hashlib.sha256(bag.raw).digest())
            if not anchor or bag.sha256 in desired:
                layout[-1][3] += len(bag.raw)
                if alias:
                    taken.add(alias.lower() if key is None else key)

        def restart() -> None:
            for made in (anchors, layout, taken, others, keys, repeated):
                made.clear()
            java.__init__()

        if file is None:
            password = store_password(self)[0]
            protected = self.option("protect", "yes") != "no"
            source = Pfx([], password, ("sha256", ITERATIONS) if protected else None, bmp_password(password) if password else b"\x00\x00")
        else:
            source = self._first_read(file, each, restart)
            keys.clear()
            if repeated:
                self._hidden(source, repeated, desired, layout, anchors, hidden)
            if unchanged_anchor_set(self, plan, set(anchors)):
                file.seek(0)
                yield from iter(lambda: file.read(CHUNK), b"")
                return

        keep = lambda bag: not (bag.java_trusted and bag.sha256 in anchors) or bag.sha256 in desired  # noqa: E731
        scheme = chosen_scheme(self, [alias for alias in anchors.values() if alias])
        new = sorted(((make_alias(entry, scheme, taken, lower=False), entry) for entry in desired.values()
                      if entry.sha256 not in anchors), key=lambda pair: pair[0])  # the aliases are unique
        taken.clear()  # made: not held through the passes
        new_bags = lambda: (java_trusted_cert_bag(entry.cert.der, alias) for alias, entry in new)  # noqa: E731
        if sum(len(entry.cert.der) for _, entry in new) < STREAM_FROM:
            made = list(new_bags())
            new_bags = lambda: iter(made)  # noqa: E731
        new_size = sum(map(len, new_bags()))
        outs, placed = [], False
        for index, (encrypted, size, holds, kept) in enumerate(layout):
            if not holds:
                outs.append(_Out(index, True, encrypted, size=size))  # nothing in it changes: copied as it is
                continue
            if kept or (new and not placed):
                outs.append(_Out(index, False, encrypted, kept + (0 if placed else new_size), new=not placed))
            placed = True
        if not placed and new:
            encrypt_new = source.mac is not None and (not layout or any(safe[0] for safe in layout))
            outs.insert(0, _Out(None, False, encrypt_new, new_size, new=True))

        def passes():
            """(each ContentInfo to write, the safe of the file it comes from), the file read once."""
            safes = enumerate(source.read() if layout else ())
            for out in outs:
                found = None
                for index, found in safes if out.index is not None else ():
                    if index == out.index:
                        break
                yield out, found
            for _ in safes:  # to the end, where the MAC is checked
                pass

        def plain(out: _Out, safe):
            yield der.header(der.SEQUENCE, out.content)
            if safe is not None:
                yield from (bag.raw for n, bag in enumerate(safe.read_bags()) if (out.index, n) not in hidden and keep(bag))
            if out.new:
                yield from new_bags()

        if any(out.encrypted and not out.copy for out in outs):  # salt and IV from the plaintext: a pass
            for out, safe in passes():
                if out.encrypted and not out.copy:
                    hashes = pbes2_hashes()
                    for piece in plain(out, safe):
                        hashes[0].update(piece)
                        hashes[1].update(piece)
                    algorithm, out.encryptor = pbes2_encryption(hashes, source.password)
                    out.size = (len(der.header(der.SEQUENCE, out.content)) + out.content) // 16 * 16 + 16
                    out.head = _headers([(der.SEQUENCE, _ENCRYPTED), (0xA0, b""), (der.SEQUENCE, der.integer(0)),
                                         (der.SEQUENCE, _DATA + algorithm), (0x80, b"")], out.size)
                    out.size += len(out.head)
        for out in outs:
            if not (out.encrypted or out.copy):
                out.size = len(der.header(der.SEQUENCE, out.content)) + out.content
                out.head = _headers([(der.SEQUENCE, _DATA), (0xA0, b""), (der.OCTET_STRING, b"")], out.size)
                out.size += len(out.head)
        listed = sum(out.size for out in outs)

        def authsafe():
            yield der.header(der.SEQUENCE, listed)
            for out, safe in passes():
                if out.copy:
                    yield from safe.pieces()
                    continue
                yield out.head
                yield from _encrypted(plain(out, safe), out.encryptor()) if out.encrypted else plain(out, safe)

        fresh, mac_size = None, 0
        if source.mac is not None:  # its salt from the authenticated safe: a pass
            digest, iterations = source.mac
            salted = hashlib.sha256(b"storesync p12 mac salt\0")
            for piece in authsafe():
                salted.update(piece)
            salt = salted.digest()[:20]
            fresh = hmac.new(pkcs12_kdf(digest, source.mac_secret, salt, 3, iterations, hashlib.new(digest).digest_size),
                             digestmod=digest)
            mac_size = len(_mac_data(digest, bytes(fresh.digest_size), salt, iterations))

        def pfx():
            yield _headers(_PFX_LEVELS, len(der.header(der.SEQUENCE, listed)) + listed, mac_size)
            value = fresh.copy() if fresh is not None else None
            for piece in authsafe():
                if value is not None:
                    value.update(piece)
                yield piece
            if value is not None:
                yield _mac_data(digest, value.digest(), salt, iterations)

        if file is None:  # a new file: nothing of another program's to keep; the engine reads it back from disk
            yield from pfx()
            return
        yield from self._read_back(pfx(), source.password, fresh, others, desired)

    def _hidden(self, source, repeated: set[str], desired: TrustSet, layout: list[list], anchors: dict, hidden: set) -> None:
        """A file giving an alias to several bags, read again: Java sees only the last of them, so
        each trusted bag a later one hides goes in `hidden` (a rewrite drops it, or removing the
        later bag would make Java trust it), its safe is rewritten without it, and `anchors`
        holds only the anchors Java sees."""
        java, last, found = JavaAliases(), {}, []  # found: (where, SHA-256, alias) of every anchor bag
        for index, safe in enumerate(source.read()):
            for place, bag in enumerate(safe.read_bags()):
                alias = bag.alias
                key = java.key(bag, alias)
                anchor = self._anchor(bag, report=False) is not None
                if anchor:
                    found.append(((index, place), bag.sha256, alias))
                if key not in repeated:
                    continue
                before = last.get(key)
                if before is not None and before[1] is not None:
                    hidden.add(before[0])
                    layout[before[0][0]][2] = True  # rewritten without it
                    layout[before[0][0]][3] -= before[1]
                counted = len(bag.raw) if not anchor or bag.sha256 in desired else 0
                last[key] = ((index, place), counted if bag.java_trusted else None)
        anchors.clear()
        for where, sha, alias in found:
            if where not in hidden:
                anchors.setdefault(sha, alias)

    def _read_back(self, pieces, password: str, fresh, others: list[bytes], desired: TrustSet):
        """`pieces`, handed on as they are read back: the MAC (with `fresh`), every safe decrypted,
        every bag parsed and looked at (none kept); each bag that is not an anchor (`others`: their
        SHA-256) must be there unchanged, the anchors must be `desired`'s, or nothing is written."""
        tee = _Tee(pieces)
        kept, found, stranger = [], set(), False  # found: the desired entries met, by id (no second fingerprint of each)
        java, keys, repeated = JavaAliases(), set(), False  # keys: the aliases Java files the bags under, hashed
        try:
            for safe in _safes(_Reader(tee), password, fresh, None):
                for bag in safe.read_bags():
                    key = java.key(bag, bag.alias)
                    if key is not None:  # by hash, held lighter than the string (a clash only refuses the write)
                        repeated = repeated or hash(key) in keys
                        keys.add(hash(key))
                    if bag.java_trusted:
                        entry = desired.get(bag.sha256)
                        stranger = stranger or entry is None
                        found.add(id(entry))
                    else:
                        kept.append(hashlib.sha256(bag.raw).digest())
                    yield from tee.drain()
        except (_Changed, *FAULTS) as exc:
            if tee.failed:
                raise
            raise self.error(f"the rewritten file would not read back ({exc or 'its MAC does not match'}); "
                             "nothing was written") from None
        if repeated:  # Java would see only the last of them: not what the plan says
            raise self.error("the rewritten file would give one alias to two bags (a private key's and another's?); "
                             "nothing was written")
        if sorted(kept) != sorted(others):
            raise self.error(
                "cannot keep its private-key entries and other bags exactly as they are; nothing was written"
            )
        if stranger or len(found) != len(desired):
            raise self.error("the rewritten file would not hold the desired certificates; nothing was written")
        yield from tee.drain()
