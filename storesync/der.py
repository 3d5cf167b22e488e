"""A very small DER reader and writer.

Only what `cryptography` cannot give us: the raw TLVs of a certificate that it refuses to
parse (serial 0, BER, negative serials), the exact bytes NSS and OpenSSL hash, and the few
ASN.1 structures of the store formats that no library reads (SST properties, X509_CERT_AUX).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from functools import lru_cache

SEQUENCE = 0x30
SET = 0x31
INTEGER = 0x02
OCTET_STRING = 0x04
OID = 0x06
UTF8_STRING = 0x0C


class DERError(ValueError):
    """The bytes are not the DER structure they were expected to be."""


class TLV:
    """One element, as offsets into the buffer it lives in (not a dataclass: reading a
    certificate makes dozens of these, and a plain class is four times quicker to build)."""

    __slots__ = ("tag", "data", "start", "content", "end")

    def __init__(self, tag: int, data: bytes, start: int, content: int, end: int):
        self.tag = tag
        self.data = data  # the buffer this element lives in
        self.start = start  # offset of the tag byte
        self.content = content  # offset of the first content byte
        self.end = end  # offset just past the content

    def __repr__(self) -> str:
        return f"TLV(tag=0x{self.tag:02x}, {self.end - self.start} bytes at {self.start})"

    @property
    def raw(self) -> bytes:
        return self.data[self.start : self.end]

    @property
    def value(self) -> bytes:
        return self.data[self.content : self.end]

    def children(self) -> Iterator["TLV"]:
        pos = self.content
        while pos < self.end:
            child = read(self.data, pos, self.end)
            yield child
            pos = child.end


def read(data: bytes, pos: int = 0, limit: int | None = None) -> TLV:
    """Read the element starting at `pos`; it must end by `limit` (default: end of data)."""
    content, end = span(data, pos, len(data) if limit is None else limit)
    return TLV(data[pos], data, pos, content, end)


def span(data: bytes, pos: int, limit: int) -> tuple[int, int]:
    """(content, end) offsets of the element starting at `pos` (its tag is `data[pos]`), which
    must end by `limit`: `read` without making a TLV, for the walks every certificate goes through."""
    if pos + 2 > limit:
        raise DERError(f"truncated element at offset {pos}")
    if data[pos] & 0x1F == 0x1F:
        raise DERError(f"multi-byte tag at offset {pos}")
    first = data[pos + 1]
    content = pos + 2
    if first < 0x80:
        length = first
    elif first == 0x80:
        raise DERError(f"indefinite length at offset {pos}")
    else:
        count = first & 0x7F
        if count > 4 or content + count > limit:
            raise DERError(f"bad length at offset {pos}")
        length = int.from_bytes(data[content : content + count], "big")
        content += count
    end = content + length
    if end > limit:
        raise DERError(f"element at offset {pos} runs past the end ({length} bytes announced)")
    return content, end


def read_all(data: bytes) -> TLV:
    """Read one element that must span all of `data`."""
    content, end = span_all(data)
    return TLV(data[0], data, 0, content, end)


def span_all(data: bytes) -> tuple[int, int]:
    """`span` of one element that must span all of `data`."""
    content, end = span(data, 0, len(data))
    if end != len(data):
        raise DERError(f"{len(data) - end} trailing bytes after the element")
    return content, end


def length_bytes(length: int) -> bytes:
    if length < 0x80:
        return bytes([length])
    body = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def header(tag: int, length: int) -> bytes:
    """An element's tag and length, for content written after it (not joined to it here)."""
    return bytes([tag]) + length_bytes(length)


def encode(tag: int, content: bytes) -> bytes:
    return b"".join((bytes([tag]), length_bytes(len(content)), content))  # one copy of a large content, not two


def encode_oid(dotted: str) -> bytes:
    parts = [int(p) for p in dotted.split(".")]
    numbers = [parts[0] * 40 + parts[1], *parts[2:]]
    body = bytearray()
    for n in numbers:
        chunk = [n & 0x7F]
        n >>= 7
        while n:
            chunk.append(0x80 | (n & 0x7F))
            n >>= 7
        body.extend(reversed(chunk))
    return encode(OID, bytes(body))


@lru_cache(maxsize=4096)  # a few dozen OIDs recur in every certificate
def decode_oid(value: bytes, strict: bool = False) -> str:
    """`strict`: refuse a subidentifier padded with a leading 0x80 byte, as OpenSSL's
    c2i_ASN1_OBJECT does (where OpenSSL refuses what storesync reads, trust must not be read)."""
    if strict and any(b == 0x80 and (i == 0 or not value[i - 1] & 0x80) for i, b in enumerate(value)):
        raise DERError("OID with a non-minimal (padded) subidentifier")
    numbers, n = [], 0
    for byte in value:
        n = (n << 7) | (byte & 0x7F)
        if not byte & 0x80:
            numbers.append(n)
            n = 0
    if not numbers or n:
        raise DERError("malformed OID")
    first = min(numbers[0] // 40, 2)
    return ".".join(str(x) for x in [first, numbers[0] - 40 * first, *numbers[1:]])


def encode_oid_sequence(oids: list[str]) -> bytes:
    return encode(SEQUENCE, b"".join(encode_oid(o) for o in oids))


def decode_oid_sequence(raw: bytes) -> list[str]:
    return [decode_oid(child.value) for child in read_all(raw).children()]


class CertFields:
    """Raw TLVs of a certificate's TBSCertificate, as stored (never re-encoded). Kept as offsets
    into the certificate's DER and sliced when asked: a store of 100 000 certificates whose
    fields were read keeps 100 000 small records, not half a million copies of names and keys."""

    __slots__ = ("der", "_spans")

    def __init__(self, der: bytes, spans: bytes):
        self.der = der  # the buffer the fields live in
        self._spans = spans  # _SPANS: (start, end) of serial, issuer, subject, validity, spki; the [3]'s (start, content, end)

    def _field(self, n: int) -> bytes:
        start, end = _PAIR.unpack_from(self._spans, 8 * n)
        return self.der[start:end]

    serial = property(lambda self: self._field(0))
    issuer = property(lambda self: self._field(1))
    subject = property(lambda self: self._field(2))
    validity = property(lambda self: self._field(3))
    spki = property(lambda self: self._field(4))

    @property
    def extensions(self) -> TLV | None:
        """The [3] element, if there is one."""
        start, content, end = _TRIPLE.unpack_from(self._spans, 40)
        return TLV(0xA3, self.der, start, content, end) if end else None


_SPANS, _PAIR, _TRIPLE = struct.Struct(">13I"), struct.Struct(">II"), struct.Struct(">III")


def cert_fields(der: bytes) -> CertFields:
    content, end = span(der, 0, len(der))
    if der[0] != SEQUENCE:
        raise DERError("not a certificate: no outer SEQUENCE")
    if content >= end:
        raise DERError("not a certificate: no TBSCertificate")
    at, tbs_end = span(der, content, end)
    if der[content] != SEQUENCE:
        raise DERError("not a certificate: no TBSCertificate")
    starts, ends = [], []  # of each field, by offsets: every certificate read comes through here
    while at < tbs_end:
        starts.append(at)
        at = span(der, at, tbs_end)[1]
        ends.append(at)
    first = 1 if starts and der[starts[0]] == 0xA0 else 0  # explicit [0] version
    if len(starts) < first + 6 or der[starts[first]] != INTEGER:
        raise DERError("not a certificate: TBSCertificate is too short")
    extension = (0, 0, 0)
    for n in range(first + 6, len(starts)):
        if der[starts[n]] == 0xA3:  # [3] EXPLICIT Extensions
            extension = (starts[n], span(der, starts[n], tbs_end)[0], ends[n])
            break
    kept = (first, first + 2, first + 4, first + 3, first + 5)  # serial, issuer, subject, validity, spki (not the signature)
    return CertFields(der, _SPANS.pack(*(x for n in kept for x in (starts[n], ends[n])), *extension))


def extensions(fields: CertFields) -> dict[str, bytes] | None:
    """extnID -> extnValue contents of a certificate (None: unreadable), without `cryptography`."""
    result = {}
    outer = fields.extensions
    if outer is None:
        return result
    data = outer.data
    try:  # a walk by offsets, without a TLV for each part: every certificate of a sync comes through here
        at, listing_end = span(data, outer.content, outer.end)
        while at < listing_end:
            inner, extension_end = span(data, at, listing_end)
            oid, oid_end = content, end = span(data, inner, extension_end)
            while end < extension_end:  # extnValue is the last part, after critical
                content, end = span(data, end, extension_end)
            result[decode_oid(data[oid:oid_end])] = data[content:end]
            at = extension_end
        return result
    except DERError:
        return None


def dates():
    """(datetime, timezone): the C types the `datetime` module exports, from `_datetime` itself
    where it is there. Python 3.11's datetime.py first defines a pure-Python twin of each: a
    millisecond of every `list` and sync that reads a date, 1/40 of a `list` of the system roots."""
    try:
        from _datetime import datetime, timezone
    except ImportError:  # a Python without the C module: datetime.py's own types
        from datetime import datetime, timezone
    return datetime, timezone


def x509_time(tag: int, text: bytes):
    """A certificate's UTCTime (RFC 5280: years 50-99 are 19xx) or GeneralizedTime (`tag`, and
    the element's content), seconds and `Z` only, as an aware datetime; None for any other form
    (fractions, offsets)."""
    datetime, timezone = dates()

    if tag == 0x17 and len(text) == 13 and text[:12].isdigit():
        year = int(text[:2])
        year += 1900 if year >= 50 else 2000
    elif tag == 0x18 and len(text) == 15 and text[:14].isdigit():
        year, text = int(text[:4]), text[2:]
    else:
        return None
    if text[12] != 0x5A:  # Z
        return None
    return datetime(year, int(text[2:4]), int(text[4:6]), int(text[6:8]), int(text[8:10]), int(text[10:12]),
                    tzinfo=timezone.utc)  # ValueError: no such date


def validity(data: bytes) -> tuple:
    """(notBefore, notAfter) of a certificate's Validity, each as `x509_time` reads it."""
    at, end = span_all(data)
    times = []
    while at < end:
        content, stop = span(data, at, end)
        times.append(x509_time(data[at], data[content:stop]))
        at = stop
    if len(times) != 2:
        raise DERError("a validity is not two times")
    return tuple(times)


def parse_time(value: bytes):
    """An ASCII UTCTime or GeneralizedTime (`241130235959Z`), as an aware datetime; None if not one."""
    datetime, timezone = dates()

    text = value.decode("ascii", "replace").strip()
    for fmt in ("%y%m%d%H%M%SZ", "%Y%m%d%H%M%SZ"):
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=timezone.utc)
        except ValueError:
            pass
    return None


# --- building and checking the structures of the store formats (PKCS#12, PBES2, ...) --------

NULL = b"\x05\x00"


class ShapeError(DERError):
    """An element is not what its format says it is; the message names it (a sentence fragment)."""


def seq(*parts: bytes) -> bytes:
    return b"".join((bytes([SEQUENCE]), length_bytes(sum(map(len, parts))), *parts))  # the parts joined once


def integer(n: int) -> bytes:
    return encode(INTEGER, n.to_bytes(n.bit_length() // 8 + 1, "big", signed=True))


def octets(data: bytes) -> bytes:
    return encode(OCTET_STRING, data)


def explicit0(data: bytes) -> bytes:
    return encode(0xA0, data)


def kids(tlv: TLV) -> list[TLV]:
    return list(tlv.children())


def expect(tlv: TLV, tag: int, what: str) -> TLV:
    if tlv.tag != tag:
        raise ShapeError(f"{what} has tag 0x{tlv.tag:02x}, expected 0x{tag:02x}")
    return tlv


def oid_of(tlv: TLV, what: str) -> str:
    value = expect(tlv, OID, what).value
    return decode_oid(value if type(value) is bytes else bytes(value))  # cached by value: bytes (a bytearray's too)


def integer_of(tlv: TLV, what: str) -> int:
    value = expect(tlv, INTEGER, what).value
    if not value or len(value) > 8:
        raise ShapeError(f"{what} is not a sensible integer")
    return int.from_bytes(value, "big", signed=True)


def octets_of(tlv: TLV, what: str) -> bytes:
    """An OCTET STRING's content; BER's constructed form (definite lengths) is joined."""
    if tlv.tag == OCTET_STRING:
        return tlv.value
    if tlv.tag == 0x24:  # BER nests one level in practice; deeper is hostile
        pieces = list(tlv.children())
        if any(p.tag != OCTET_STRING for p in pieces):
            raise ShapeError(f"{what} is a nested constructed OCTET STRING")
        return b"".join(p.value for p in pieces)
    raise ShapeError(f"{what} is not an OCTET STRING")


def algorithm(tlv: TLV, what: str) -> tuple[str, TLV | None]:
    """AlgorithmIdentifier -> (OID, parameters or None)."""
    parts = kids(expect(tlv, SEQUENCE, what))
    if not parts:
        raise ShapeError(f"{what} is empty")
    return oid_of(parts[0], what), (parts[1] if len(parts) > 1 else None)
