"""Windows certificate-context elements and properties, shared by the `sst` and `reg` stores.

An element is `u32 id, u32 encoding_type, u32 length, bytes[length]` (little-endian, no padding).
A certificate is a *group*: its property elements, then the context element 0x20 holding the DER
certificate. A serialized store (.sst) is a header, groups, and a 12-byte zero end marker; a
registry `Blob` value is exactly one group (docs/formats.md §4).

What this module does:

- reads element groups with every length checked before any slice (a 4 GiB length field costs
  nothing), raising `ElementError(offset, what)`;
- turns a group into an `Entry`: FRIENDLY_NAME (11) -> label, ENHKEY_USAGE (9) -> trusted purposes
  (absent = every purpose, `30 00` = none), DISALLOWED_FILETIME (104) [+ DISALLOWED_ENHKEY_USAGE
  (122)] -> distrust-after; the property list itself, in file order and with unknown ids, is kept
  in `entry.extras["winprops"]` as `Props`, read as `(id, encoding_type, bytes)` each;
- turns an entry back into a group: kept properties are written back unchanged, in their order,
  unless the entry now says something else (then that one property is replaced in place); hash
  properties are recomputed from the certificate (a wrong stored value is replaced, one we
  cannot compute is dropped); key-provider properties (1, 2, 5, 6) are never kept or written.
  A fresh entry is written as Windows writes one: `[11] [9] [104 [122]] 3 0x20`.
"""

from __future__ import annotations

import hashlib
import struct
from codecs import utf_16_le_decode
from datetime import datetime, timedelta, timezone
from typing import Iterable, Iterator, Mapping

from storesync import der
from storesync.model import ANCHOR, ANY_EKU, DISTRUST, PURPOSES, TRUSTED, Certificate, Entry, One, oid_from_purpose, purpose_from_oid, shared

EXTRAS_KEY = "winprops"

CERT_ELEMENT, CRL_ELEMENT, CTL_ELEMENT = 0x20, 0x21, 0x22
CONTEXT_ELEMENTS = (CERT_ELEMENT, CRL_ELEMENT, CTL_ELEMENT)

KEY_PROV_HANDLE, KEY_PROV_INFO, SHA1_HASH, MD5_HASH, KEY_CONTEXT, KEY_SPEC = 1, 2, 3, 4, 5, 6
ENHKEY_USAGE, FRIENDLY_NAME, SIGNATURE_HASH, KEY_IDENTIFIER = 9, 11, 15, 20
SUBJECT_PUBLIC_KEY_MD5_HASH, SUBJECT_NAME_MD5_HASH = 25, 29
AUTH_ROOT_SHA256_HASH, SHA256_HASH = 98, 107
DISALLOWED_FILETIME, DISALLOWED_ENHKEY_USAGE = 104, 122

#: Properties that refer to a private key: never carried into a trust store.
KEY_PROPERTIES = frozenset({KEY_PROV_HANDLE, KEY_PROV_INFO, KEY_CONTEXT, KEY_SPEC})
#: Properties derived from the certificate: recomputed on write, never trusted on read.
HASH_PROPERTIES = frozenset(
    {SHA1_HASH, MD5_HASH, SIGNATURE_HASH, KEY_IDENTIFIER, SUBJECT_PUBLIC_KEY_MD5_HASH,
     SUBJECT_NAME_MD5_HASH, AUTH_ROOT_SHA256_HASH, SHA256_HASH}
)
PROPERTY_NAMES = {
    KEY_PROV_HANDLE: "KEY_PROV_HANDLE", KEY_PROV_INFO: "KEY_PROV_INFO", KEY_CONTEXT: "KEY_CONTEXT",
    KEY_SPEC: "KEY_SPEC",
}

ROLE_ANCHORS, ROLE_DISTRUST = "roots", "disallowed"

_HEADER = struct.Struct("<III")
NO_PURPOSE = b"\x30\x00"
_FILETIME_EPOCH = datetime(1601, 1, 1, tzinfo=timezone.utc)



class Props:
    """A certificate group's properties as the file holds them: their elements' bytes, read as
    `(id, encoding_type, value)` each when asked. One bytes object per entry, not a tuple per
    property with its own bytes (about 200 bytes an entry less in a large store).

    `entry_from_group` notes what it read them as: the label (the entry's own string) and, in a
    file of anchors, the trust key (a shared tuple). An entry that still says that is written
    back from `raw` (`said_by`), so a rewrite decodes and encodes no property of it again."""

    __slots__ = ("raw", "label", "trust_key")
    __hash__ = None  # type: ignore[assignment]

    def __init__(self, props: Iterable[tuple[int, int, bytes]] = ()):
        # `element`'s bytes, made inline: this runs for every group a store reads
        self.raw = b"".join([_HEADER.pack(prop_id, encoding, len(value)) + value for prop_id, encoding, value in props])
        self.label = self.trust_key = _UNREAD  # not read from a file: nothing to compare

    def __iter__(self) -> Iterator[tuple[int, int, bytes]]:
        raw, at = self.raw, 0  # made by `element`: whole elements, nothing to check
        while at < len(raw):
            prop_id, encoding, length = _HEADER.unpack_from(raw, at)
            yield prop_id, encoding, raw[at + 12 : at + 12 + length]
            at += 12 + length

    def __bool__(self) -> bool:
        return bool(self.raw)

    def __getitem__(self, index):
        return tuple(self)[index]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Props):
            return self.raw == other.raw  # the same elements, as `element` makes them
        return tuple(self) == (tuple(other) if isinstance(other, (tuple, list)) else other)

    def __repr__(self) -> str:
        return f"Props({tuple(self)!r})"

    def said_by(self, entry: Entry, role: str) -> bool:
        """Whether `render_props` would give these properties back unchanged: `entry` says what
        they were read as (a distrust list's group has no trust to compare), none is a key
        property, and each hash property holds the certificate's own value (or one we cannot
        compute, which is kept)."""
        if self.label is _UNREAD or entry.label != self.label:
            return False
        if role == ROLE_ANCHORS and entry.trust_key() != self.trust_key:  # _UNREAD: read as a distrust list
            return False
        hashes = _Hashes(entry.cert)
        for prop_id, _enc, value in self:
            if prop_id in KEY_PROPERTIES or (prop_id in HASH_PROPERTIES and hashes.get(prop_id) not in (None, value)):
                return False
        return True


_UNREAD = object()


class ElementError(ValueError):
    """Malformed element data at a byte offset (relative to the buffer given)."""

    def __init__(self, offset: int, what: str):
        super().__init__(f"offset {offset}: {what}")
        self.offset = offset
        self.what = what


# --- elements -----------------------------------------------------------------------------


def iter_elements(file, end: int, *, stop_at_marker: bool) -> Iterator[tuple[int, int, int, bytes]]:
    """Yield `(offset, id, encoding_type, value)` of each element of `file` (a binary file or
    BytesIO, at the first element) up to offset `end`, read a piece of `_PIECE` bytes at a time
    (two reads an element cost more than the walk): a store file is never held whole in memory.

    Every length is checked against `end` before it is read. With `stop_at_marker`, a zero
    header (the .sst end marker) ends the walk, the file left at that header.
    """
    pos = file.tell()
    buf, at = b"", 0  # the file from offset `pos - at`, as far as it is read
    while pos < end:
        if len(buf) - at < 12:  # (`buf` never holds more than the elements: the last ones get here)
            need = min(12, end - pos)
            buf, at = _more(file, buf, at, need, end - pos), 0
            if len(buf) < need:
                raise ElementError(pos, _CUT_WHILE_READ)
            if need < 12:
                if stop_at_marker and not any(buf):
                    file.seek(pos)
                    return  # a file cut inside its end marker: as good as a missing one
                raise ElementError(pos, f"truncated element header ({end - pos} of 12 bytes)")
        prop_id, encoding, length = _HEADER.unpack_from(buf, at)
        if stop_at_marker and not (prop_id or encoding or length):
            file.seek(pos)
            return
        size = 12 + length
        if pos + size > end:
            raise ElementError(
                pos, f"element {prop_id} announces {length} bytes but only {end - pos - 12} remain (truncated or corrupt)"
            )
        if len(buf) - at < size:
            buf, at = _more(file, buf, at, size, end - pos), 0
            if len(buf) < size:
                raise ElementError(pos, _CUT_WHILE_READ)
        yield pos, prop_id, encoding, buf[at + 12 : at + size]
        pos += size
        at += size


_PIECE = 8192


def _more(file, buf: bytes, at: int, need: int, left: int) -> bytes:
    """What `buf` holds from `at` on, then as much more of the file as makes `need` bytes, or a
    piece if more (never past `left`, what is left of the elements); shorter if the file is."""
    return buf[at:] + file.read(max(need, min(_PIECE, left)) - (len(buf) - at))


#: A file shorter than its size when the read began: another program rewrote it in place meanwhile.
_CUT_WHILE_READ = "the file was cut short while it was read (another program rewriting it?)"


def element(prop_id: int, value: bytes, encoding: int = 1) -> bytes:
    return _HEADER.pack(prop_id, encoding, len(value)) + value


# --- trust mapping ------------------------------------------------------------------------


def filetime_to_datetime(raw: bytes) -> datetime | None:
    if len(raw) != 8:
        return None
    ticks = int.from_bytes(raw, "little")
    try:
        return _FILETIME_EPOCH + timedelta(microseconds=ticks // 10)
    except OverflowError:
        return None


def datetime_to_filetime(when: datetime) -> bytes:
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    delta = when - _FILETIME_EPOCH
    ticks = (delta.days * 86_400 + delta.seconds) * 10_000_000 + delta.microseconds * 10
    return max(ticks, 0).to_bytes(8, "little")


def decode_label(raw: bytes) -> str | None:
    """FRIENDLY_NAME: UTF-16LE up to its first NUL, as crypt32 shows it (the terminator may be
    missing; what follows an embedded NUL is no part of the name, but stays in the kept bytes; a
    dangling last byte is ignored, as crypt32 reads whole UTF-16 units)."""
    raw = raw[: len(raw) - len(raw) % 2]
    end = raw.find(b"\x00\x00")
    while end > 0 and end % 2:  # a NUL pair straddling two units is no terminator
        end = raw.find(b"\x00\x00", end + 1)
    if end < 0:
        end = len(raw)
    try:
        return utf_16_le_decode(raw[:end], "strict", True)[0]  # as .decode("utf-16-le"), without its Python wrapper
    except UnicodeDecodeError:
        return None


def encode_label(label: str) -> bytes:
    return label.encode("utf-16-le", "surrogatepass") + b"\x00\x00"


def decode_oids(raw: bytes) -> tuple[str, ...] | None:
    """A DER list of OIDs (None: unreadable). A store's certificates share a handful of usage
    lists, so each is decoded once (a read and a write decode each group's)."""
    return _remembered(_OIDS, raw, _decode_oids)


def _decode_oids(raw: bytes) -> tuple[str, ...] | None:
    try:
        return tuple(der.decode_oid_sequence(raw))
    except (der.DERError, ValueError):
        return None


def trust_from_eku(raw: bytes | None) -> Mapping[str, str] | None:
    """ENHKEY_USAGE -> trust of an anchor: absent = every purpose, `30 00` = none (None: unreadable).
    Shared (`model.shared`), and made once for each usage list of a store, as its OIDs are."""
    return _remembered(_TRUSTS, raw, _trust_from_eku)


def _trust_from_eku(raw: bytes | None) -> Mapping[str, str] | None:
    if raw is None:
        return shared(ANCHOR)
    oids = decode_oids(raw)
    if oids is None:
        return None
    trust: dict[str, str] = {}
    for oid in oids:
        if oid == ANY_EKU:
            trust.update(ANCHOR)
        else:
            trust[purpose_from_oid(oid)] = TRUSTED
    return shared(trust)


def _remembered(cache: dict, key, make):
    try:
        return cache[key]
    except KeyError:
        found = make(key)
        if len(cache) < 1024:  # bounded: a store of all-different ones costs its own work only
            cache[key] = found
        return found


_OIDS: dict[bytes, tuple[str, ...] | None] = {}
_TRUSTS: dict[bytes | None, Mapping[str, str] | None] = {}


def eku_from_trust(trust: Mapping[str, str]) -> bytes | None:
    """The ENHKEY_USAGE an anchor with `trust` needs (None: leave it out = every purpose)."""
    trusted = {p for p, state in trust.items() if state == TRUSTED}
    if trusted == set(PURPOSES):
        return None
    named = [p for p in PURPOSES if p in trusted]
    others = sorted(trusted - set(PURPOSES))
    return der.encode_oid_sequence([oid_from_purpose(p) for p in named + others]) if trusted else NO_PURPOSE


def distrust_after_from(filetime: bytes | None, usage: bytes | None) -> dict[str, datetime]:
    """DISALLOWED_FILETIME (+ DISALLOWED_ENHKEY_USAGE) -> purpose -> date. Zero length: no date."""
    when = filetime_to_datetime(filetime) if filetime else None
    if when is None:
        return {}
    if usage is None:
        return {p: when for p in PURPOSES}
    oids = decode_oids(usage)
    if not oids:  # unreadable or empty: the date applies to everything, never to nothing
        return {p: when for p in PURPOSES}
    purposes = [p for oid in oids for p in (PURPOSES if oid == ANY_EKU else (purpose_from_oid(oid),))]
    return {p: when for p in purposes}


def distrust_props(distrust_after: Mapping[str, datetime]) -> tuple[bytes | None, bytes | None]:
    """purpose -> date as (DISALLOWED_FILETIME, DISALLOWED_ENHKEY_USAGE).

    Windows has one date per certificate: with several, the earliest applies to every purpose
    that has one (distrusting early is the safe side).
    """
    if not distrust_after:
        return None, None
    when = min(_aware(d) for d in distrust_after.values())
    purposes = set(distrust_after)
    if purposes == set(PURPOSES):
        return datetime_to_filetime(when), None
    named = [p for p in PURPOSES if p in purposes]
    others = sorted(purposes - set(PURPOSES))
    return datetime_to_filetime(when), der.encode_oid_sequence([oid_from_purpose(p) for p in named + others])


def _aware(when: datetime) -> datetime:
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def _same_dates(a: Mapping[str, datetime], b: Mapping[str, datetime]) -> bool:
    return set(a) == set(b) and all(_aware(a[k]) == _aware(b[k]) for k in a)


# --- groups <-> entries -------------------------------------------------------------------


def entry_from_group(cert_der: bytes, props: Props, role: str, warn=None) -> Entry:
    """An entry for one certificate group read from a store playing `role`."""
    # a property given twice: the last one counts, as crypt32 sets each element in turn
    values = {prop_id: value for prop_id, _enc, value in props}
    label = None
    if FRIENDLY_NAME in values:
        label = decode_label(values[FRIENDLY_NAME])
        if label is None and warn:
            warn("FRIENDLY_NAME is not UTF-16LE text; kept as bytes, no label")
    cert = Certificate(cert_der)
    kept = Props(props)
    kept.label = label
    if role == ROLE_DISTRUST:
        return Entry(cert, trust=dict(DISTRUST), label=label, extras=One(EXTRAS_KEY, kept))
    trust = trust_from_eku(values.get(ENHKEY_USAGE))
    if trust is None:
        if warn:
            warn("ENHKEY_USAGE is not a DER list of OIDs; the certificate is trusted for no purpose")
        trust = {}
    distrust_after = distrust_after_from(values.get(DISALLOWED_FILETIME), values.get(DISALLOWED_ENHKEY_USAGE))
    entry = Entry(cert, trust=trust, label=label, distrust_after=distrust_after, extras=One(EXTRAS_KEY, kept))
    kept.trust_key = entry.trust_key()
    return entry


def group_bytes(entry: Entry, role: str) -> bytes:
    """Properties then the certificate element, as one group."""
    cert = element(CERT_ELEMENT, entry.cert.der)
    kept = entry.extras.get(EXTRAS_KEY)
    if isinstance(kept, Props) and kept.said_by(entry, role):
        return kept.raw + cert  # what it was read with: nothing to decode again
    return b"".join([*(element(prop_id, value, enc) for prop_id, enc, value in render_props(entry, role)), cert])


def render_props(entry: Entry, role: str) -> list[tuple[int, int, bytes]]:
    kept = entry.extras.get(EXTRAS_KEY)
    fresh = kept is None
    kept = list(kept or ())
    kept_values = {prop_id: value for prop_id, _enc, value in kept}  # the last of each, as it was read

    # What the model says now; None = must not be there. Ids absent from `wanted` stay opaque.
    wanted: dict[int, bytes | None] = {}
    label_now = decode_label(kept_values[FRIENDLY_NAME]) if FRIENDLY_NAME in kept_values else None
    if entry.label != label_now:  # an undecodable name with no label stays as it is
        wanted[FRIENDLY_NAME] = encode_label(entry.label) if entry.label is not None else None
    if role == ROLE_ANCHORS:
        # an unreadable ENHKEY_USAGE was read as "no purpose": unchanged trust keeps its bytes
        if (trust_from_eku(kept_values.get(ENHKEY_USAGE)) or {}) != _trusted_only(entry.trust):
            wanted[ENHKEY_USAGE] = eku_from_trust(entry.trust)
        before = distrust_after_from(kept_values.get(DISALLOWED_FILETIME), kept_values.get(DISALLOWED_ENHKEY_USAGE))
        if not _same_dates(before, entry.distrust_after):
            wanted[DISALLOWED_FILETIME], wanted[DISALLOWED_ENHKEY_USAGE] = distrust_props(entry.distrust_after)

    hashes = _Hashes(entry.cert)
    out: list[tuple[int, int, bytes]] = []
    written = set()
    for prop_id, enc, value in kept:
        if prop_id in KEY_PROPERTIES:
            continue
        if prop_id in wanted:
            if prop_id in written or wanted[prop_id] is None:
                continue
            value = wanted[prop_id]
        elif prop_id in HASH_PROPERTIES:
            # Recomputed, never trusted; one we cannot compute (an md2 root's signature hash)
            # is carried as Windows wrote it.
            value = hashes.get(prop_id) or value
        out.append((prop_id, enc, value))
        written.add(prop_id)

    def insert(prop_id: int, value: bytes, before_ids: Iterable[int]) -> None:
        before_ids = set(before_ids)
        for index, (other, _enc, _value) in enumerate(out):
            if other in before_ids:
                out.insert(index, (prop_id, 1, value))
                return
        out.append((prop_id, 1, value))

    for prop_id in (FRIENDLY_NAME, ENHKEY_USAGE, DISALLOWED_FILETIME, DISALLOWED_ENHKEY_USAGE):
        value = wanted.get(prop_id)
        if value is None or prop_id in written:
            continue
        if prop_id == FRIENDLY_NAME:
            insert(prop_id, value, [x for x, _e, _v in out])  # first
        elif prop_id == ENHKEY_USAGE:
            insert(prop_id, value, [x for x, _e, _v in out if x != FRIENDLY_NAME])
        else:
            insert(prop_id, value, [SHA1_HASH])
    if fresh:
        out.append((SHA1_HASH, 1, hashes.get(SHA1_HASH)))
    return out


def _trusted_only(trust: Mapping[str, str]) -> dict[str, str]:
    return {p: TRUSTED for p, state in trust.items() if state == TRUSTED}


# --- hash properties ----------------------------------------------------------------------

_SIGNATURE_HASHES = {
    "1.2.840.113549.1.1.4": "md5", "1.2.840.113549.1.1.5": "sha1", "1.2.840.113549.1.1.14": "sha224",
    "1.2.840.113549.1.1.11": "sha256", "1.2.840.113549.1.1.12": "sha384", "1.2.840.113549.1.1.13": "sha512",
    "1.2.840.10045.4.1": "sha1", "1.2.840.10045.4.3.1": "sha224", "1.2.840.10045.4.3.2": "sha256",
    "1.2.840.10045.4.3.3": "sha384", "1.2.840.10045.4.3.4": "sha512", "1.2.840.10040.4.3": "sha1",
    "2.16.840.1.101.3.4.3.2": "sha256", "1.3.14.3.2.29": "sha1",
}
_HASH_OIDS = {
    "1.3.14.3.2.26": "sha1", "2.16.840.1.101.3.4.2.1": "sha256", "2.16.840.1.101.3.4.2.2": "sha384",
    "2.16.840.1.101.3.4.2.3": "sha512", "2.16.840.1.101.3.4.2.4": "sha224", "1.2.840.113549.2.5": "md5",
}
_RSASSA_PSS = "1.2.840.113549.1.1.10"
_SKI_OID = der.encode_oid("2.5.29.14")


class _Hashes:
    """The hash properties of one certificate, computed on demand (None: cannot be computed)."""

    def __init__(self, cert: Certificate):
        self.cert = cert
        self._cache: dict[int, bytes | None] = {}

    def get(self, prop_id: int) -> bytes | None:
        if prop_id not in self._cache:
            try:
                self._cache[prop_id] = self._compute(prop_id)
            except (der.DERError, ValueError, IndexError, StopIteration):
                self._cache[prop_id] = None
        return self._cache[prop_id]

    def _compute(self, prop_id: int) -> bytes | None:
        raw = self.cert.der
        if prop_id == SHA1_HASH:
            return hashlib.sha1(raw).digest()
        if prop_id == MD5_HASH:
            return hashlib.md5(raw).digest()
        if prop_id in (AUTH_ROOT_SHA256_HASH, SHA256_HASH):
            return hashlib.sha256(raw).digest()
        if prop_id == SUBJECT_NAME_MD5_HASH:
            return hashlib.md5(self.cert.fields.subject).digest()
        if prop_id == SUBJECT_PUBLIC_KEY_MD5_HASH:
            bits = list(der.read(self.cert.fields.spki).children())[1]
            return hashlib.md5(bits.value[1:]).digest()
        if prop_id == KEY_IDENTIFIER:
            ski = _subject_key_identifier(raw)
            return ski if ski is not None else hashlib.sha1(self.cert.fields.spki).digest()
        if prop_id == SIGNATURE_HASH:
            return _signature_hash(raw)
        return None


def _subject_key_identifier(raw: bytes) -> bytes | None:
    tbs = next(der.read(raw).children())
    for field in tbs.children():
        if field.tag != 0xA3:
            continue
        for extension in next(field.children()).children():
            parts = list(extension.children())
            if parts[0].raw == _SKI_OID:
                return der.read_all(parts[-1].value).value
    return None


def _signature_hash(raw: bytes) -> bytes | None:
    tbs, algorithm = list(der.read(raw).children())[:2]
    parts = list(algorithm.children())
    oid = der.decode_oid(parts[0].value)
    name = _SIGNATURE_HASHES.get(oid)
    if oid == _RSASSA_PSS:
        name = "sha1"
        if len(parts) > 1:
            for param in parts[1].children():
                if param.tag == 0xA0:
                    hash_alg = next(next(param.children()).children())
                    name = _HASH_OIDS.get(der.decode_oid(hash_alg.value))
    if name is None:
        return None
    return hashlib.new(name, tbs.raw).digest()


def describe(prop_id: int) -> str:
    return PROPERTY_NAMES.get(prop_id, f"property {prop_id}")


def in_store_order(plan) -> list[Entry]:
    """The desired entries: those the store holds now in their current order, then the new ones.

    A sync that adds one certificate then changes one place of the file, not the whole order.
    """
    desired = plan.desired
    ordered = [desired[key] for key in plan.current if key in desired]
    # New ones in the desired set's own order (the source's): a trust set is ordered, and the
    # same ordered set gives the same bytes (and a Windows file copied into a new one, its bytes).
    ordered += [entry for key, entry in desired.items() if key not in plan.current]
    return ordered
