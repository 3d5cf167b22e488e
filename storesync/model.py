"""The trust model: certificates as raw DER, per-purpose trust, entries and trust sets.

Nothing here knows a store format. `cryptography` is imported only when a caller asks for
something that needs a full parse (dates, an RFC 4514 subject, CA checks), so a one-shot
command that only compares fingerprints never pays for it.
"""

from __future__ import annotations

import hashlib
import re
from _weakref import _remove_dead_weakref, ref as _weak
from collections.abc import Iterator, Mapping

from storesync import der
from storesync.libcrypto import name_hash  # no import of its own until asked (ctypes then)

TYPE_CHECKING = False  # typing's, without importing typing: datetime is only named here
if TYPE_CHECKING:
    from datetime import datetime

# Purposes by name; any other purpose is spelled as its EKU OID.
SERVER_AUTH, CLIENT_AUTH, EMAIL, CODE_SIGNING = "server-auth", "client-auth", "email", "code-signing"
PURPOSES = (SERVER_AUTH, CLIENT_AUTH, EMAIL, CODE_SIGNING)
EKU_OIDS = {
    SERVER_AUTH: "1.3.6.1.5.5.7.3.1",
    CLIENT_AUTH: "1.3.6.1.5.5.7.3.2",
    CODE_SIGNING: "1.3.6.1.5.5.7.3.3",
    EMAIL: "1.3.6.1.5.5.7.3.4",
}
ANY_EKU = "2.5.29.37.0"
PURPOSE_OF_OID = {oid: name for name, oid in EKU_OIDS.items()}

TRUSTED, DISTRUSTED = "trusted", "distrusted"

#: Trust of a plain anchor (a certificate in a bundle or a hashed directory): every purpose.
ANCHOR = {p: TRUSTED for p in PURPOSES}
#: Trust of an explicit distrust record.
DISTRUST = {p: DISTRUSTED for p in PURPOSES}


def purpose_from_oid(oid: str) -> str:
    return PURPOSE_OF_OID.get(oid, oid)


def oid_from_purpose(purpose: str) -> str:
    return EKU_OIDS.get(purpose, purpose)


def purpose_problem(text: str) -> str | None:
    """Why `text` is no purpose (None: it is one): a purpose is named, or any other is its EKU
    OID in canonical dotted form, as stores write it back (an OID of leading zeros, 1.3.6.1.5.5.7.3.01,
    would be a purpose of its own that no certificate's EKU ever spells). Not anyExtendedKeyUsage:
    read from a store it is trust for the four PURPOSES, so no certificate is trusted for it as
    one purpose more, and a store for it would be emptied; `any` says that."""
    if text in PURPOSES:
        return None
    if re.fullmatch(r"[0-9]+(\.[0-9]+)+", text) is None:
        return "it is neither a purpose's name nor an OID in dotted form"
    arcs = [int(arc) for arc in text.split(".")]
    if arcs[0] > 2 or (arcs[0] < 2 and arcs[1] >= 40):
        return "an OID's first arc is 0, 1 or 2, and its second is below 40 when the first is 0 or 1"
    canonical = ".".join(map(str, arcs))
    if canonical == ANY_EKU:
        return f"it is anyExtendedKeyUsage ({ANY_EKU}), every purpose"
    if canonical != text:
        return f"an OID's arcs have no leading zero: write {purpose_from_oid(canonical)}"
    return None


def is_purpose(text: str) -> bool:
    return purpose_problem(text) is None


def purpose_order(purpose: str) -> tuple:
    """A fixed order for writing purposes (named ones by their EKU OID, then other OIDs)."""
    oid = oid_from_purpose(purpose)
    return tuple(int(part) if part.isdigit() else 0 for part in oid.split("."))


class StoreError(Exception):
    """A failure a person can act on. The message is one sentence naming the store and file."""


# --- certificates -------------------------------------------------------------------------

# ASN.1 string tag -> codec OpenSSL uses to turn it into UTF-8: the types x_name.c's
# ASN1_MASK_CANON canonicalises for the subject hash. NumericString is not among them: it is
# hashed as it is (and read as Latin-1 for display, as any other type).
_STRING_CODECS = {
    0x0C: "utf-8",  # UTF8String
    0x13: "latin-1",  # PrintableString
    0x14: "latin-1",  # T61String (OpenSSL reads it as Latin-1)
    0x16: "latin-1",  # IA5String
    0x1A: "latin-1",  # VisibleString
    0x1C: "utf-32-be",  # UniversalString
    0x1E: "utf-16-be",  # BMPString
}
# C0, DEL and C1 as `printable` shows them: a translation, where a pattern compiled at import cost
# every run 0.1-0.25 ms (as the ones below, which a name's canonical form and RFC 4514 text used)
_CONTROLS = dict.fromkeys([*range(0x20), *range(0x7F, 0xA0)], "?")


def printable(text: str) -> str:
    """`text` with control characters (line breaks, ESC, NUL) shown as `?`: for a label put in a
    line of text, where a line break would start a line of its own (a PEM block in a bundle)."""
    return text.translate(_CONTROLS)


_SHORT_NAMES = {
    "2.5.4.3": "CN", "2.5.4.6": "C", "2.5.4.7": "L", "2.5.4.8": "ST", "2.5.4.10": "O",
    "2.5.4.11": "OU", "2.5.4.9": "STREET", "0.9.2342.19200300.100.1.25": "DC",
    "0.9.2342.19200300.100.1.1": "UID",
}


def _canonical_value(tag: int, value: bytes) -> bytes | None:
    """OpenSSL's asn1_string_canon: UTF-8, trimmed, inner spaces folded, ASCII lower-cased."""
    codec = _STRING_CODECS.get(tag)
    if codec is None:
        return None  # other types are hashed as they are
    text = value.decode(codec, "replace").encode("utf-8")  # OpenSSL refuses such names; we must not crash
    # bytes.split() splits at runs of " \t\n\v\f\r" and drops them at the ends; bytes.lower()
    # touches ASCII only: as OpenSSL canonicalises a name
    return b" ".join(text.split()).lower()


def _name_rdns(name_tlv: bytes) -> list[list[tuple[str, int, bytes]]]:
    """(OID, tag, value) of each attribute of a DER Name, by RDN."""
    rdns, span = [], der.span
    at, end = der.span_all(name_tlv)
    while at < end:  # by offsets, without a TLV for each part: every certificate shown comes through here
        inner, rdn_end = span(name_tlv, at, end)
        attributes = []
        while inner < rdn_end:
            content, attribute_end = span(name_tlv, inner, rdn_end)
            if content == attribute_end:
                raise der.DERError("a name attribute is not a (type, value) pair")
            oid, oid_end = span(name_tlv, content, attribute_end)
            if oid_end == attribute_end or name_tlv[content] != der.OID:
                raise der.DERError("a name attribute is not a (type, value) pair")
            value, after = span(name_tlv, oid_end, attribute_end)
            attributes.append((der.decode_oid(name_tlv[oid:oid_end]), name_tlv[oid_end], name_tlv[value:after]))
            while after < attribute_end:  # the rest must be whole elements too, as before
                after = span(name_tlv, after, attribute_end)[1]
            inner = attribute_end
        rdns.append(attributes)
        at = rdn_end
    return rdns


def subject_hash(name_tlv: bytes) -> str:
    """OpenSSL's `X509_NAME_hash` (the `-subject_hash` of OpenSSL >= 1.0): the system's own,
    else computed here."""
    return name_hash(name_tlv) or subject_hash_python(name_tlv)


def subject_hash_python(name_tlv: bytes) -> str:
    """`X509_NAME_hash` without libcrypto: OpenSSL's canonical form of the name, hashed."""
    canon, read, encode = bytearray(), der.read, der.encode
    name = der.read_all(name_tlv)
    at = name.content
    while at < name.end:  # by offsets, not `children()`: every new file of a hashed directory comes through here
        rdn = read(name_tlv, at, name.end)
        encoded, inner = [], rdn.content
        while inner < rdn.end:
            attribute = read(name_tlv, inner, rdn.end)
            oid = read(name_tlv, attribute.content, attribute.end)
            value = read(name_tlv, oid.end, attribute.end)
            text = _canonical_value(value.tag, name_tlv[value.content : value.end])
            value_tlv = name_tlv[value.start : value.end] if text is None else encode(der.UTF8_STRING, text)
            encoded.append(encode(der.SEQUENCE, name_tlv[oid.start : oid.end] + value_tlv))
            inner = attribute.end
        if encoded:  # OpenSSL keeps a name as its attributes: an empty RDN leaves no SET behind
            canon += encode(der.SET, b"".join(sorted(encoded)))
        at = rdn.end
    return int.from_bytes(hashlib.sha1(canon).digest()[:4], "little").to_bytes(4).hex()


def subject_hash_old(name_tlv: bytes) -> str:
    """OpenSSL's `X509_NAME_hash_old` (MD5 of the DER name; OpenSSL < 1.0 and p11-kit)."""
    return int.from_bytes(hashlib.md5(name_tlv).digest()[:4], "little").to_bytes(4).hex()


def name_attributes(name_tlv: bytes) -> list[tuple[str, str]]:
    """(short name or OID, text) pairs of a DER Name, in order; lenient about encodings."""
    pairs = []
    for rdn in _name_rdns(name_tlv):
        for oid, tag, value in rdn:
            pairs.append((_SHORT_NAMES.get(oid, oid), value.decode(_STRING_CODECS.get(tag, "latin-1"), "replace")))
    return pairs


# What `cryptography` (50) decodes a name value with: BMP and Universal strings by their codecs,
# every other string type as UTF-8 (a value that is not refuses the whole certificate).
_RFC4514_CODECS = {0x1E: "utf-16-be", 0x1C: "utf-32-be"}
_RFC4514_STRINGS = {0x0C, 0x12, 0x13, 0x14, 0x16, 0x1A, 0x1C, 0x1E}  # UTF8 Numeric Printable T61 IA5 Visible Univ. BMP


_RFC4514_SPECIAL = frozenset('\\"+,;<>\0')


def _rfc4514_value(text: str) -> str:
    """`cryptography.x509.name._escape_dn_value` (cryptography 50), for a str."""
    if not text:
        return ""
    if text[0] not in "# " and text[-1] != " " and _RFC4514_SPECIAL.isdisjoint(text):
        return text  # most values: nothing to escape, one scan instead of eight replaces
    for special in ("\\", '"', "+", ",", ";", "<", ">"):
        text = text.replace(special, "\\" + special)
    text = text.replace("\0", "\\00")
    if text[0] == "#" or (text[0] == " " and len(text) > 1):
        text = "\\" + text
    if text[-1] == " ":
        text = text[:-1] + "\\ "
    return text


def rfc4514(name_tlv: bytes) -> str | None:
    """A DER Name as `cryptography`'s `Name.rfc4514_string()` renders it, for a name it reads
    without complaint; None for a value this does not render as it does (a bit string, another
    type, bytes its codec refuses)."""
    try:
        rdns = []
        for rdn in reversed(_name_rdns(name_tlv)):
            parts = []
            for oid, tag, value in rdn:
                if tag not in _RFC4514_STRINGS:
                    return None
                text = value.decode(_RFC4514_CODECS.get(tag, "utf-8"))
                parts.append(f"{_SHORT_NAMES.get(oid, oid)}={_rfc4514_value(text)}")
            rdns.append("+".join(parts))
    except (der.DERError, UnicodeDecodeError):
        return None
    return ",".join(rdns)


class cached:
    """`functools.cached_property` without its lock: Python 3.11 takes one at the first access on
    every instance (3.12 dropped it), a tenth of showing a certificate in `list`. Two threads asking
    at once may both compute it: every such value is a function of the certificate's bytes."""

    def __init__(self, func):
        self.func, self.name, self.__doc__ = func, func.__name__, func.__doc__

    def __set_name__(self, owner, name: str) -> None:
        self.name = name

    def __get__(self, instance, owner=None):
        if instance is None:
            return self
        value = instance.__dict__[self.name] = self.func(instance)
        return value


class Certificate:
    """One certificate: its DER bytes exactly as read. Identity is SHA-256 of those bytes.

    One object per distinct certificate alive in the process: a certificate read from the
    source, from the target and again after writing it is held once (everything a Certificate
    knows follows from its bytes, so whoever reads it may share it)."""

    __slots__ = ("der", "sha256", "outlined", "__dict__", "__weakref__")  # the __dict__ holds only what a caller asked for

    def __new__(cls, der_bytes: bytes, fields: der.CertFields | None = None) -> "Certificate":
        der_bytes = bytes(der_bytes)  # no copy when given bytes
        sha256 = hashlib.sha256(der_bytes).hexdigest()  # the identity: needed at once, always
        self = _CERTIFICATES.get(sha256)
        if self is None or self.der != der_bytes:
            self = object.__new__(cls)
            self.der, self.sha256, self.outlined = der_bytes, sha256, False
            _CERTIFICATES[sha256] = self
        if fields is not None and "fields" not in self.__dict__:  # read already, from these very bytes, by the caller
            self.__dict__["fields"] = fields
        return self

    def __reduce__(self):
        return Certificate, (self.der,)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Certificate) and other.der == self.der

    def __hash__(self) -> int:
        return hash(self.der)

    def __repr__(self) -> str:
        return f"Certificate({self.sha256[:16]}…)"

    @cached
    def sha1(self) -> str:
        return hashlib.sha1(self.der).hexdigest()

    @cached
    def fields(self) -> der.CertFields:
        """Raw TLVs read by hand, so even certificates `cryptography` refuses have them."""
        fields = der.cert_fields(self.der)
        self.outlined = True
        return fields

    def forget_derived(self) -> None:
        """Drop what was worked out from the bytes (parsed fields, flags, verdicts) but the label,
        which is still printed: about 0.4 KB a certificate. Anything asked again is worked out
        again. A new dict: one emptied key by key keeps its size."""
        label = self.__dict__.get("default_label")
        self.__dict__ = {} if label is None else {"default_label": label}

    def check_outline(self) -> None:
        """Raise DERError unless the bytes have a certificate's outline. Once per certificate in
        the process (a sync reads it in the source, the target and the read-back), and without
        keeping the parsed fields, which most certificates are never asked for."""
        if not self.outlined:
            der.cert_fields(self.der)
            self.outlined = True

    @cached
    def _parsed(self) -> tuple[object, str | None]:
        import warnings  # here, beside cryptography: a sync that parses nothing imports neither

        from cryptography import x509

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                cert = x509.load_der_x509_certificate(self.der)
                cert.subject, cert.not_valid_after_utc, cert.extensions  # force lazy parts
            except Exception as exc:  # noqa: BLE001 - any refusal means "carry as bytes"
                return None, f"cryptography cannot parse this certificate ({exc}); kept as bytes"
        warning = "; ".join(str(w.message) for w in caught) or None
        return cert, warning

    @property
    def x509(self):
        """The `cryptography` certificate, or None when it refuses the bytes."""
        return self._parsed[0]

    @property
    def parse_warning(self) -> str | None:
        return self._outline[3] if self._outline is not None else self._parsed[1]

    @cached
    def _outline(self) -> tuple[str, datetime, datetime, str | None] | None:
        """(subject, not before, not after, parse warning), the first three read by hand, when a
        remembered check says that `cryptography` parses these bytes and with what warning
        (`loadable.remembered_parse`): showing a known certificate then costs no `cryptography`
        import. None otherwise."""
        if "_parsed" in self.__dict__:
            return None  # parsed already: its answers cost nothing more
        from storesync import loadable

        remembered = loadable.remembered_parse(self)
        if remembered is None:
            return None
        shown = loadable.outline(self)
        if shown is not None:
            return *shown, remembered[0]
        try:
            fields = self.fields
            not_before, not_after = der.validity(fields.validity)
        except (der.DERError, ValueError):
            return None
        subject = rfc4514(fields.subject)
        if subject is None or not_before is None or not_after is None:
            return None
        loadable.remember_outline(self, subject, not_before, not_after)
        return subject, not_before, not_after, remembered[0]

    def subject_hash(self) -> str:
        return subject_hash(self.fields.subject)

    def subject_hash_old(self) -> str:
        return subject_hash_old(self.fields.subject)

    @cached
    def subject(self) -> str:
        if self._outline is not None:
            return self._outline[0]
        if self.x509 is not None:
            try:
                return self.x509.subject.rfc4514_string()
            except Exception:  # noqa: BLE001
                pass
        try:
            return ",".join(f"{k}={v}" for k, v in reversed(name_attributes(self.fields.subject)))
        except der.DERError:
            return ""  # not even a certificate's outline: a printer shows it by its fingerprint

    @cached
    def default_label(self) -> str:
        """CN, else OU, else O (p11-kit's choice), else a fingerprint."""
        try:
            attributes = name_attributes(self.fields.subject)
        except der.DERError:
            attributes = []
        for wanted in ("CN", "OU", "O"):
            for key, value in attributes:
                if key == wanted and value.strip():
                    return printable(value.strip())  # a NUL ends an NSS nickname; ESC reaches terminals
        return self.sha256[:16]

    @property
    def not_before(self) -> datetime | None:
        if self._outline is not None:
            return self._outline[1]
        return self.x509.not_valid_before_utc if self.x509 is not None else None

    @property
    def not_after(self) -> datetime | None:
        if self._outline is not None:
            return self._outline[2]
        return self.x509.not_valid_after_utc if self.x509 is not None else None

    @cached
    def ca_flag(self) -> bool | None:
        """basicConstraints' cA as OpenSSL reads it (what follows the constraints is ignored); a
        self-issued certificate without extensions (an old v1 root) counts as a CA. None: the
        extensions cannot be read. From the DER: this must not cost a `cryptography` import."""
        try:
            extensions = der.extensions(self.fields)
        except der.DERError:
            return None
        if extensions is None:
            return None
        value = extensions.get("2.5.29.19")
        if value is None:
            return not extensions and self.fields.issuer == self.fields.subject
        try:
            first = next(der.read(value).children(), None)
        except der.DERError:
            return None
        return first is not None and first.tag == 0x01 and first.value != b"\x00"

    @cached
    def says_leaf(self) -> bool:
        """basicConstraints is there and says cA false: OpenSSL, NSS and Windows refuse this
        certificate as an issuer, so trusting it trusts it alone (a self-signed server's)."""
        if self.ca_flag is not False:
            return False
        extensions = der.extensions(self.fields)  # read already by ca_flag: it did not fail
        return extensions is not None and "2.5.29.19" in extensions

    @cached
    def may_anchor(self) -> bool:
        """What `ca_only` lets in: a CA, or a self-issued certificate (Windows and OpenSSL accept
        a self-signed certificate as an anchor for itself, and real roots such as Microsoft Root
        Authority have no basicConstraints). Refused: a leaf issued by someone else, also one
        whose extensions cannot be read (no benefit of the doubt for what is not a root)."""
        if self.ca_flag:
            return True
        try:
            self.fields
        except der.DERError:
            return True  # not even a certificate's outline: the damage check refuses it, saying why
        return self.self_issued

    @cached
    def self_signed(self) -> bool:
        """Self-issued with no authority key identifier naming another key or serial: OpenSSL's
        EXFLAG_SS (`X509_check_akid` of the certificate against itself), which its compatibility
        trust asks of a root that only rejects some purposes."""
        if not self.self_issued:
            return False
        try:
            extensions = der.extensions(self.fields) or {}
            aki, ski = extensions.get("2.5.29.35"), extensions.get("2.5.29.14")
            parts = {c.tag: c.value for c in der.read(aki).children()} if aki is not None else {}
            if 0x80 in parts and ski is not None and der.read(ski).value != parts[0x80]:
                return False  # [0] keyIdentifier: another key's
            return 0x82 not in parts or parts[0x82] == der.read(self.fields.serial).value  # [2] serial
        except der.DERError:
            return False

    @cached
    def self_issued(self) -> bool:
        """Issuer and subject are one name, compared as OpenSSL compares them (False: names that
        cannot be read or compared)."""
        try:
            fields = self.fields
            return fields.issuer == fields.subject or subject_hash(fields.issuer) == subject_hash(fields.subject)
        except der.DERError:
            return False


class _Interned:
    """SHA-256 -> the Certificate alive with it, held weakly: what `weakref.WeakValueDictionary`
    does for get and set, from the C module it is built on. The weakref module is 2.6 M
    instructions to import, 1 % of a one-shot sync or list. A dead reference is dropped by its
    callback only if it is still the one held (`_remove_dead_weakref`, as WeakValueDictionary)."""

    __slots__ = ("refs", "gone")

    def __init__(self):
        refs = self.refs = {}

        def gone(reference: "_KeyedRef") -> None:
            _remove_dead_weakref(refs, reference.key)

        self.gone = gone

    def get(self, key: str) -> "Certificate | None":
        reference = self.refs.get(key)
        return reference() if reference is not None else None

    def __setitem__(self, key: str, value: "Certificate") -> None:
        reference = _KeyedRef(value, self.gone)
        reference.key = key
        self.refs[key] = reference


class _KeyedRef(_weak):
    """A weak reference that knows its key (as weakref.KeyedRef)."""

    __slots__ = ("key",)


_CERTIFICATES = _Interned()


_LETTER_MODEL = {"C": TRUSTED, "p": DISTRUSTED}  # NSS letters (certutil's): C anchor, p distrusted


def letter_trust(letters: dict[str, str], cert: Certificate | None, warnings: list[str], where: str) -> dict[str, str]:
    """The model's trust of NSS letters. A trusted peer (P) is trusted as itself, never as an
    issuer: NSS refuses a P certificate that issued the one it checks. So P is an anchor only
    for a certificate that cannot issue (basicConstraints says it is no CA); on one that can,
    reading it as an anchor would let bundles and keystores trust all it issues."""
    trust = {p: _LETTER_MODEL[l] for p, l in letters.items() if l in _LETTER_MODEL}
    peer = [p for p, l in letters.items() if l == "P"]
    if not peer:
        return trust  # nearly every entry: its extensions are not read for this
    if cert is not None and cert.says_leaf:
        trust.update(dict.fromkeys(peer, TRUSTED))
    else:
        warnings.append(f"{where}: trusted as a peer (P) for {', '.join(peer)} while it may issue certificates: "
                        "that is no anchor, so it is not synced")
    return trust


# --- entries and trust sets ---------------------------------------------------------------


class Record:
    """Equality, hashing and a repr from `__slots__`: what a frozen dataclass gives, without
    importing `dataclasses` (it loads `inspect`, a tenth of a one-shot sync's time).
    Records are not changed after they are made."""

    __slots__: tuple[str, ...] = ()
    _compared: tuple[str, ...] | None = None  # the slots that make two records equal (None: all)

    def _values(self) -> tuple:
        return tuple(getattr(self, name) for name in self._compared or self.__slots__)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other._values() == self._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{n}={getattr(self, n)!r}' for n in self._compared or self.__slots__)})"


_TRUST_KEYS: dict[tuple, tuple] = {}


class Shared(dict):
    """A mapping many entries hold at once (a large store has a handful of distinct trusts):
    made once and never changed. Changing one would change every entry holding it, so it
    refuses; copy it with dict(...) first."""

    __slots__ = ("sorted", "alone", "distrusts", "trusted", "named")

    def __init__(self, mapping: Mapping = ()):
        dict.__init__(self, mapping)
        # What every Entry holding it would otherwise work out again (most of making one):
        self.sorted = tuple(sorted(self.items()))
        self.alone = _TRUST_KEYS.setdefault((self.sorted, ()), (self.sorted, ()))  # Entry.trust_key with no dates
        self.distrusts = DISTRUSTED in self.values()
        # and what a plan asks of every entry of every store (as a trust map: a date map ignores them)
        self.trusted = tuple(p for p, state in self.items() if state == TRUSTED)
        self.named = all(p in PURPOSES for p in self)  # only the four purposes every store can name

    def _refuse(self, *args, **kwargs):
        raise TypeError("a shared mapping of many entries: change a copy (dict(...)) instead")

    __setitem__ = __delitem__ = __ior__ = clear = pop = popitem = setdefault = update = _refuse  # type: ignore[assignment]

    def __copy__(self) -> dict:
        return dict(self)

    def __reduce__(self):
        return dict, (dict(self),)


class One(Mapping):
    """A mapping of one item: a store's own data on each of its entries (`extras`) in 48 bytes,
    not a dict's 184."""

    __slots__ = ("key", "value")

    def __init__(self, key, value):
        self.key, self.value = key, value

    def __getitem__(self, key):
        if key == self.key:
            return self.value
        raise KeyError(key)

    def __iter__(self) -> Iterator:
        yield self.key

    def __len__(self) -> int:
        return 1

    def __repr__(self) -> str:
        return f"{{{self.key!r}: {self.value!r}}}"


_SHARED: dict[tuple, Shared] = {}
NOTHING: Mapping = Shared()  # the empty distrust_after and extras of most entries


def shared(mapping: Mapping) -> Mapping:
    """The one Shared copy of a trust or distrust-after map (its items in order: a few distinct
    ones in any store, where a dict per entry would cost a quarter of a kilobyte each)."""
    if type(mapping) is Shared:  # most entries are made from another's map: shared already
        return mapping
    if not mapping:
        return NOTHING
    key = tuple(mapping.items())
    found = _SHARED.get(key)
    if found is None:
        found = _SHARED[key] = Shared(mapping)
    return found


_ANCHOR = shared(ANCHOR)


class Entry(Record):
    """A certificate with what one store says about it.

    `trust` maps purpose -> TRUSTED / DISTRUSTED (an absent purpose is unspecified; the default
    is a plain anchor); `distrust_after` maps purpose -> datetime; `extras` maps a store kind
    to whatever that format keeps that the model does not know, so a round trip through it
    loses nothing.
    """

    __slots__ = ("cert", "trust", "label", "distrust_after", "extras", "sha256", "distrusted", "_key", "as_anchor")
    _compared = ("cert", "trust", "label", "distrust_after", "extras")
    __hash__ = None  # type: ignore[assignment]  # its mappings are not hashable

    def __init__(self, cert: Certificate, trust: Mapping[str, str] | None = None, label: str | None = None,
                 distrust_after: Mapping[str, datetime] | None = None, extras: Mapping[str, object] | None = None):
        self.cert = cert
        # Shared: a store of 100 000 entries holds a few distinct trusts, not 100 000 dicts.
        self.trust = trust = _ANCHOR if trust is None else shared(trust)
        self.label = label
        self.distrust_after = shared(distrust_after) if distrust_after else NOTHING
        self.extras = extras or NOTHING  # a store's own data: kept as given, unless empty
        # Read many times per sync: computed once.
        self.sha256 = cert.sha256
        self.distrusted = trust.distrusts
        if self.distrust_after:
            key = (trust.sorted, self.distrust_after.sorted)
            self._key = _TRUST_KEYS.setdefault(key, key)  # a few distinct ones: shared, not one per entry of a large store
        else:
            self._key = trust.alone
        self.as_anchor: Entry | None = None  # the engine's cache of this entry trusted for everything

    @property
    def display_label(self) -> str:
        return self.label or self.cert.default_label

    @property
    def trusted_purposes(self) -> list[str]:
        return list(self.trust.trusted)

    def trust_key(self) -> tuple:
        """What makes two entries for one certificate say the same thing."""
        return self._key

    def replace(self, **changes: object) -> "Entry":
        return Entry(changes.get("cert", self.cert), changes.get("trust", self.trust), changes.get("label", self.label),
                     changes.get("distrust_after", self.distrust_after), changes.get("extras", self.extras))


class TrustSet(Mapping[str, Entry]):
    """What one store says at one moment: SHA-256 hex -> Entry, in the store's own order."""

    __slots__ = ("_entries",)

    def __init__(self, entries: "Iterator[Entry] | list[Entry] | tuple[Entry, ...]" = ()):
        self._entries: dict[str, Entry] = {}
        known = self._entries
        for entry in entries:
            # A certificate listed twice keeps its first place; distrust wins.
            sha = entry.sha256
            if sha not in known or (entry.distrusted and not known[sha].distrusted):
                known[sha] = entry

    @classmethod
    def adopt(cls, entries: dict[str, Entry]) -> "TrustSet":
        """A set made of a dict keyed by each entry's sha256 (one entry per certificate already),
        taken as it is: the engine's plans build one for every store of a merge."""
        made = cls.__new__(cls)
        made._entries = entries
        return made

    def __getitem__(self, sha256: str) -> Entry:
        return self._entries[sha256]

    # The Mapping mixins go through __getitem__ for every item; these are hot in large merges.
    def __contains__(self, sha256: object) -> bool:
        return sha256 in self._entries

    def get(self, sha256: str, default=None):
        return self._entries.get(sha256, default)

    def keys(self):
        return self._entries.keys()

    def values(self):
        return self._entries.values()

    def items(self):
        return self._entries.items()

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"TrustSet({len(self)} entries)"

    def entries(self) -> list[Entry]:
        return list(self._entries.values())


class Capabilities(Record):
    """What a store can express. The engine projects a desired set onto these."""

    __slots__ = ("anchors", "purposes", "distrust", "distrust_after", "one_date", "disabled", "labels", "writable",
                 "purpose_distrust", "lone_reject_trusts", "oids")

    def __init__(self, anchors: bool = True, purposes: bool = False, distrust: bool = False,
                 distrust_after: "bool | tuple[str, ...]" = False, disabled: bool = False, labels: bool = False,
                 writable: bool = True, purpose_distrust: bool | None = None, lone_reject_trusts: bool = False,
                 one_date: bool = False, oids: bool = True):
        self.anchors = anchors  # holds trusted certificates (False: a distrust list only)
        self.purposes = purposes  # per-purpose trust (else: an anchor is trusted for everything)
        # with purposes: trust for any EKU OID, besides the named PURPOSES (False: NSS, whose trust
        # object has an attribute for each named purpose and none for another OID)
        self.oids = oids
        self.distrust = distrust  # explicit "distrusted" records
        # distrust per purpose (default: as trust); False: distrusted means for every purpose
        # (Windows' Disallowed store, beside per-purpose anchors in ROOT)
        self.purpose_distrust = purposes if purpose_distrust is None else purpose_distrust
        # a distrust with no trust beside it reads as trusted for every purpose not rejected
        # (OpenSSL's X509_CERT_AUX: a reject list alone)
        self.lone_reject_trusts = lone_reject_trusts
        # distrust-after dates it can hold: True for every purpose, else those purposes' (NSS: two)
        self.distrust_after = distrust_after
        self.one_date = one_date  # one date for all its dated purposes (Windows' DISALLOWED_FILETIME)
        self.disabled = disabled  # holds a certificate trusted for nothing (Windows' ENHKEY_USAGE `30 00`)
        self.labels = labels
        self.writable = writable

    def dates(self, purpose: str) -> bool:
        """Whether this store can hold a distrust-after date for `purpose`."""
        return self.distrust_after is True or purpose in (self.distrust_after or ())

    def whole_distrust(self, entry) -> bool:
        """Whether this store can say `entry`'s distrust only as a distrust for every purpose
        (saying less would leave it trusted, or say nothing, for the rest)."""
        if not entry.distrusted:
            return False
        return not self.purpose_distrust or (self.lone_reject_trusts and not entry.trusted_purposes)


#: Exit codes of every command: done / equal / nothing to do; different, or changes pending in
#: --dry-run; an error; a guard held a change back.
EXIT_OK, EXIT_DIFFERENT, EXIT_ERROR, EXIT_HELD = 0, 1, 2, 3

#: The furthest ahead, in days, that --expiring, --soon and --expires reach: past any real
#: certificate's or metadata's life, and far inside what a date can hold (year 9999).
MAX_DAYS = 100_000
