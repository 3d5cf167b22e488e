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

import hashlib
import hmac

from storesync import der
from storesync.model import Certificate, Entry, TrustSet
from storesync.pbe import (
    HMAC_PRFS,
    ITERATIONS,
    OID_PBKDF2,
    OID_PBMAC1,
    DecryptError,
    bmp_password,
    budget,
    decrypt,
    encrypt_pbes2,
    pbkdf2,
    pbkdf2_params,
    pkcs12_kdf,
)
from storesync.pbe import PbeError as P12Error  # what storesync cannot read in the file (a sentence fragment)
from storesync.stores import FileStore, Values
from storesync.stores._java import (
    ALIASES, CAPABILITIES, WRONG_PASSWORD, chosen_scheme, make_alias, store_password, unchanged_anchor_set,
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
OID_ANY_EKU = "2.5.29.37.0"
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


class Safe:
    __slots__ = ("raw", "encrypted", "bags")

    def __init__(self, raw: bytes, encrypted: bool, bags: list[Bag]):
        self.raw = raw  # the ContentInfo exactly as stored
        self.encrypted, self.bags = encrypted, bags


class Pfx:
    __slots__ = ("safes", "password", "mac", "mac_secret")

    def __init__(self, safes: list[Safe], password: str, mac: tuple[str, int] | None, mac_secret: bytes | None = None):
        self.safes, self.password = safes, password
        self.mac = mac  # (digest name, iterations) of a classic MAC; None: no MAC
        self.mac_secret = mac_secret  # the KDF password bytes the MAC verified with

    @property
    def bags(self) -> list[Bag]:
        return [bag for safe in self.safes for bag in safe.bags]


def _parse_bags(data: bytes, each=None) -> list[Bag]:
    """The bags of a SafeContents; with `each`, every bag is handed to it as it is parsed and
    none is kept (a read of 10 000 held ~3 KB a certificate in bags, attributes and copies)."""
    bags = []
    for tlv in der.expect(der.read_all(data), der.SEQUENCE, "SafeContents").children():
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
        if each is None:
            bags.append(bag)
        else:
            each(bag)
    return bags


def _mac_ok(authsafe: bytes | memoryview, mac_data: der.TLV, password: str) -> tuple[tuple[str, int] | None, bytes | None] | None:
    """Check the MAC; returns ((digest, iterations) or None for PBMAC1, secret) or None if it fails."""
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
        raw = info.raw if each is None else b""  # a copy of the safe: kept only with its bags
        if kind == OID_DATA and content is not None:
            safes.append(Safe(raw, False, _parse_bags(der.octets_of(content, "safe"), each)))
        elif kind == OID_ENCRYPTED_DATA and content is not None:
            plain = _decrypt_safe(content, password)
            try:
                bags = _parse_bags(plain, each)
            except (der.DERError, P12Error, IndexError):
                raise DecryptError("decrypted safe is not SafeContents") from None
            safes.append(Safe(raw, True, bags))
        elif kind == OID_ENVELOPED_DATA:
            raise P12Error("uses public-key privacy mode (an enveloped safe), which storesync does not read")
        else:
            raise P12Error(f"has a safe of unknown type {kind}")
    return Pfx(safes, password, mac, secret)


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


# --- writing --------------------------------------------------------------------------------


def java_trusted_cert_bag(cert_der: bytes, alias: str) -> bytes:
    """A certificate bag as keytool writes a trustedCertEntry (friendlyName + Java trust)."""
    cert_bag = der.seq(_X509_CERT, der.explicit0(der.octets(cert_der)))
    friendly_name = der.seq(_FRIENDLY_NAME, der.encode(der.SET, der.encode(0x1E, alias.encode("utf-16-be"))))
    return der.seq(_BAG_CERT, der.explicit0(cert_bag), der.encode(der.SET, friendly_name + _JAVA_TRUST_ANY))


# What every bag repeats, encoded once (a keystore's write makes one bag per certificate).
_X509_CERT, _FRIENDLY_NAME, _BAG_CERT = der.encode_oid(OID_X509_CERT), der.encode_oid(OID_FRIENDLY_NAME), der.encode_oid(BAG_CERT)
_JAVA_TRUST_ANY = der.seq(der.encode_oid(OID_JAVA_TRUST), der.encode(der.SET, der.encode_oid(OID_ANY_EKU)))


def safe_content_info(bags: list[bytes], password: str | None) -> bytes:
    """A data ContentInfo (password None) or a PBES2-encrypted one. Takes the bags: `bags` is
    emptied once they are joined, so they are not held beside the encryption's copies."""
    plain = der.seq(*bags)
    bags.clear()
    if password is None:
        return _nested([(der.SEQUENCE, der.encode_oid(OID_DATA)), (0xA0, b""), (der.OCTET_STRING, b"")], [plain])
    algorithm, ciphertext = encrypt_pbes2(plain, password)
    del plain
    return _nested([(der.SEQUENCE, der.encode_oid(OID_ENCRYPTED_DATA)), (0xA0, b""), (der.SEQUENCE, der.integer(0)),
                    (der.SEQUENCE, der.encode_oid(OID_DATA) + algorithm), (0x80, b"")], [ciphertext])


def _nested(levels: list[tuple[int, bytes]], content: list[bytes], after: bytes = b"") -> bytes:
    """Elements nested around `content`, outermost first, each level (tag, what comes before the
    next level inside it); `after` ends the outermost. The headers are made first and all joined
    once: an element built around each level's result copied everything once per level."""
    size = sum(map(len, content))
    headers = []
    for n, (tag, before) in enumerate(reversed(levels)):
        size += len(before) + (len(after) if n == len(levels) - 1 else 0)
        header = der.header(tag, size)
        headers.append(header + before)
        size += len(header)
    return b"".join((*reversed(headers), *content, after))


def render_pfx(content_infos: list[bytes], mac: tuple[str, int, bytes] | None) -> bytes:
    """PFX around `content_infos` (emptied: the new file is their one copy); `mac` = (digest,
    iterations, KDF password bytes) or None. The MAC and its salt are computed over the
    authenticated safe piece by piece, never joined on its own."""
    authsafe = [der.header(der.SEQUENCE, sum(map(len, content_infos))), *content_infos]
    content_infos.clear()
    mac_data = b""
    if mac is not None:
        digest, iterations, secret = mac
        salted = hashlib.sha256(b"storesync p12 mac salt\0")
        for piece in authsafe:
            salted.update(piece)
        salt = salted.digest()[:20]
        key = pkcs12_kdf(digest, secret, salt, 3, iterations, hashlib.new(digest).digest_size)
        value = hmac.new(key, digestmod=digest)
        for piece in authsafe:
            value.update(piece)
        digest_info = der.seq(der.seq(der.encode_oid(DIGEST_OIDS[digest]), der.NULL), der.octets(value.digest()))
        mac_data = der.seq(digest_info, der.octets(salt), der.integer(iterations))
    return _nested([(der.SEQUENCE, der.integer(3)), (der.SEQUENCE, der.encode_oid(OID_DATA)), (0xA0, b""),
                    (der.OCTET_STRING, b"")], authsafe, mac_data)


# --- the store ------------------------------------------------------------------------------


class P12Store(FileStore):
    kind = "p12"
    options = ("password-file", "protect", "aliases")
    values = {"protect": Values("yes", "no"), "aliases": ALIASES}
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

    def parse(self, data: bytes) -> TrustSet:
        """The anchors, each bag dropped as soon as it is read; none before the MAC is verified,
        nothing returned (nor said) unless every safe reads."""
        entries, said = [], len(self.warnings)

        def each(bag: Bag) -> None:
            entry = self._anchor(bag, report=True)
            if entry is not None:
                entries.append(entry)

        try:
            self._load(data, each)
        except BaseException:
            del self.warnings[said:]
            raise
        return TrustSet(entries)

    def _anchor(self, bag: Bag, report: bool) -> Entry | None:
        name = repr(bag.alias) if bag.alias is not None else "without a name"
        if bag.java_trusted:
            cert = self.certificate(bag.cert)
            try:
                cert.check_outline()
            except der.DERError as exc:
                if report:
                    self.warnings.append(f"{self.path}: certificate {name} is not a certificate ({exc}); kept, not read")
                return None
            return Entry(cert, label=bag.alias)  # the label is the alias (friendlyName)
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
        placed, bags = False, None
        for safe in pfx.safes:
            holds_anchor = any(bag.sha256 in anchors and bag.java_trusted for bag in safe.bags)
            if not holds_anchor:
                content_infos.append(safe.raw)  # nothing in it changes: copied as it is
                continue
            bags = [bag.raw for bag in safe.bags if keep_bag(bag)]
            if not placed:
                bags += new_bags
                new_bags.clear()  # held by `bags` alone, which safe_content_info empties
                placed = True
            if bags:
                content_infos.append(safe_content_info(bags, pfx.password if safe.encrypted else None))
        if not placed and new_bags:
            content_infos.insert(0, safe_content_info(new_bags, cipher_password if encrypt_new else None))
        mac = (*pfx.mac, pfx.mac_secret) if pfx.mac is not None else None
        out = render_pfx(content_infos, mac)
        del new_bags, content_infos, bags  # copies of the new file: not held through its read-back
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
        """Read the new bytes back: every bag that is not an anchor must be there unchanged.
        The bags are looked at as they are read, not kept (~3 KB a certificate)."""
        kept, anchors = [], set()

        def each(bag: Bag) -> None:
            if bag.java_trusted:
                anchors.add(bag.sha256)
            else:
                kept.append(bag.raw)

        try:
            load_pfx(out, before.password, try_empty=False, each=each)
        except P12Error as exc:
            raise self.error(f"the rewritten file would not read back ({exc}); nothing was written") from None
        if sorted(kept) != sorted(b.raw for b in before.bags if not b.java_trusted):
            raise self.error(
                "cannot keep its private-key entries and other bags exactly as they are; nothing was written"
            )
        if anchors != set(desired.keys()):
            raise self.error("the rewritten file would not hold the desired certificates; nothing was written")

