"""`jks`: a Java KeyStore file (Sun's JKS format, magic FEEDFEED), such as Debian's
`/etc/ssl/certs/java/cacerts`.

Layout (docs/formats.md §5.1): `u32 0xFEEDFEED, u32 version (2; 1 is read too), u32 count`, then per
entry `u32 tag` (2 = trusted certificate, 1 = private key), a u16-length (modified) UTF-8 alias,
a u64 timestamp in milliseconds, and either one certificate (`u16`-length type, normally
"X.509", then a u32-length DER certificate) or, for a key, a u32-length protected key and a u32
count of chain certificates. The file ends with `SHA-1(UTF-16BE(password) + b"Mighty Aphrodite"
+ everything before)`.

Store options:

- `password-file=FILE`: the store password is the first line of FILE (default `changeit`).
- `aliases=debian|jdk|label`: the alias scheme for certificates that are added. By default the
  scheme the file already uses is kept: Debian's `debian:<name>.pem` (ca-certificates-java),
  the JDK's `<name> [jdk]`, otherwise the *label* scheme (the certificate's label, lower-cased
  because JKS aliases are case-insensitive). An alias already taken gets ` [<8 hex of its
  SHA-256>]` appended. An existing entry always keeps its alias.

Trusted-certificate entries are anchors, and so is the first certificate of a private-key entry
(the store's `fixed_anchors`: Java trusts it, storesync never spreads nor removes it); only those
Java reaches: Java keeps the last entry of an alias given twice, and looks aliases up lower-cased,
so an entry whose alias has an upper-case letter, or that a later one of the same alias hides, is
not an anchor (a warning names it; a rewrite drops the hidden ones, as keytool's does). Private-key
entries are never created or removed: on a rewrite every entry that stays is copied byte for byte
(a new entry gets the fixed timestamp 0, so the same set gives the same bytes), and nothing is
rewritten when the set of anchors does not change. Java trust stores cannot say "distrusted" nor
restrict an anchor to some purposes; the plan reports what is lost.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import struct
from collections.abc import Iterator

from storesync import der
from storesync.model import Certificate, Entry, TrustSet
from storesync.stores import PASSWORD_FILE, FileStore, readable
from storesync.stores._java import (
    ALIASES,
    CAPABILITIES,
    DEFAULT_PASSWORD,
    WRONG_PASSWORD,
    chosen_scheme,
    key_entry_anchors,
    make_alias,
    store_password,
    unchanged_anchor_set,
)

try:  # hmac's own compare_digest: importing hmac loads warnings too (2 M instructions), for this call alone
    from _hashlib import compare_digest
except ImportError:  # a Python without OpenSSL
    from hmac import compare_digest

MAGIC = 0xFEEDFEED
PRIVATE_KEY, TRUSTED_CERT, SECRET_KEY = 1, 2, 3
FIXED_TIMESTAMP = 0  # milliseconds since 1970: new entries get it, so the output is deterministic
_WHITENER = b"Mighty Aphrodite"


# --- JKS bytes ------------------------------------------------------------------------------


class JksFormatError(ValueError):
    """The bytes are not a well-formed JKS file."""


def java_utf(raw: bytes) -> str:
    """Java's modified UTF-8 (DataInput.readUTF) to str."""
    if raw.isascii():  # most aliases: ASCII reads as itself in modified UTF-8 too
        return raw.decode("ascii")
    raw = raw.replace(b"\xc0\x80", b"\x00")
    try:
        text = raw.decode("utf-8", "surrogatepass")
        return text.encode("utf-16-be", "surrogatepass").decode("utf-16-be")
    except UnicodeError:
        raise JksFormatError("an alias is not valid modified UTF-8") from None


def java_utf_bytes(text: str) -> bytes:
    """str to Java's modified UTF-8 (DataOutput.writeUTF), without the length."""
    if text.isascii() and "\x00" not in text:  # most aliases: the bytes are the ASCII text itself
        if len(text) > 0xFFFF:
            raise ValueError("alias too long for a Java keystore")
        return text.encode("ascii")
    raw = text.encode("utf-16-be", "surrogatepass")
    out = bytearray()
    for (unit,) in struct.iter_unpack(">H", raw):
        if 0 < unit < 0x80:
            out.append(unit)
        elif unit < 0x800:
            out += bytes([0xC0 | unit >> 6, 0x80 | unit & 0x3F])
        else:
            out += bytes([0xE0 | unit >> 12, 0x80 | (unit >> 6) & 0x3F, 0x80 | unit & 0x3F])
    if len(out) > 0xFFFF:
        raise ValueError("alias too long for a Java keystore")
    return bytes(out)


class JksRecord:
    __slots__ = ("tag", "alias", "raw", "timestamp", "certs", "key")  # a plain class: no `dataclasses` import

    def __init__(self, tag: int, alias: str, raw: bytes, timestamp: int, certs: list[tuple[str, bytes]],
                 key: bytes | None = None):
        self.tag, self.alias, self.timestamp = tag, alias, timestamp
        self.raw = raw  # the entry exactly as stored, tag included
        self.certs = certs  # trusted: one (type, DER); key: the chain
        self.key = key  # the protected key of a private-key entry

    def v2_bytes(self) -> bytes:
        """This entry in version-2 layout (for a version-1 file that gets rewritten)."""
        out = struct.pack(">I", self.tag) + _utf(self.alias) + struct.pack(">q", self.timestamp)
        if self.tag == PRIVATE_KEY:
            out += struct.pack(">I", len(self.key)) + self.key + struct.pack(">I", len(self.certs))
        for cert_type, body in self.certs:
            out += _utf(cert_type) + struct.pack(">I", len(body)) + body
        return out


def _utf(text: str) -> bytes:
    raw = java_utf_bytes(text)
    return struct.pack(">H", len(raw)) + raw


class _Reader:
    """A keystore read piece by piece from a binary file (never held whole), every piece
    hashed into `digest` if one is given and kept in `pieces` for the record being read."""

    def __init__(self, file, end: int, digest=None):
        self.file, self.pos, self.end, self.digest = file, 0, end, digest
        self.pieces: list[bytes] = []
        self.index = self.count = 0  # the entry being read (from 0), of how many: `{entry}` in a `what`

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > self.end:
            # `what` is formatted only here: building it for every field of every entry cost a
            # sixth of a keystore's parse
            raise JksFormatError(
                f"truncated or damaged: {what.format(entry=self.entry())} at offset {self.pos} needs {n} bytes, "
                f"{max(self.end - self.pos, 0)} are left"
            )
        chunk = self.file.read(n)
        if len(chunk) != n:
            raise JksFormatError(f"truncated while it was read: {what.format(entry=self.entry())} at offset {self.pos}")
        self.pos += n
        if self.digest is not None:
            self.digest.update(chunk)
        self.pieces.append(chunk)
        return chunk

    def record(self) -> bytes:
        """The bytes taken since the last call: one record exactly as stored."""
        raw, self.pieces = b"".join(self.pieces), []
        return raw

    def entry(self) -> str:
        return f"entry {self.index + 1} of {self.count}"

    def u16(self, what: str) -> int:
        return struct.unpack(">H", self.take(2, what))[0]

    def u32(self, what: str) -> int:
        return struct.unpack(">I", self.take(4, what))[0]

    def i64(self, what: str) -> int:
        return struct.unpack(">q", self.take(8, what))[0]

    def utf(self, what: str) -> str:
        return java_utf(self.take(self.u16(what), what))


def integrity_hash(password: str, body: bytes | memoryview) -> bytes:
    digest = _hasher(password)
    digest.update(body)  # not joined to the password: no second copy of the file
    return digest.digest()


def _hashes(file, password: str) -> tuple[bytes, bytes]:
    """(the integrity hash of a keystore's file with this password, the one its last 20 bytes
    hold), read 64 KiB at a time from its start, without walking its records."""
    size = file.seek(0, io.SEEK_END)
    file.seek(0)
    digest, left = _hasher(password), max(size - 20, 0)
    while left:
        chunk = file.read(min(left, 1 << 16))
        if not chunk:
            break
        digest.update(chunk)
        left -= len(chunk)
    return digest.digest(), file.read(20)


def _hasher(password: str):
    """The integrity hash of a keystore with this password, before its bytes are fed to it."""
    return hashlib.sha1(password.encode("utf-16-be") + _WHITENER)


def parse_jks(data: bytes) -> tuple[int, list[JksRecord]]:
    """The version and the entries of a JKS file (the integrity hash is not checked here)."""
    version, records = iter_jks(data)
    return version, list(records)


def iter_jks(data, digest=None) -> tuple[int, Iterator[JksRecord]]:
    """The version, and the entries one by one, of a keystore's bytes or of the file opened at its
    start, read piece by piece (a read keeps none of them: a keystore's records held all at once
    were ~1.9 KB a certificate). A damage found on the way is raised then. With `digest`, every
    byte the integrity hash covers is fed to it, and the file is left at that hash."""
    file = readable(data)
    size = file.seek(0, io.SEEK_END)
    file.seek(0)
    magic = file.read(4)
    if len(magic) < 4:
        raise JksFormatError(f"truncated: {size} bytes, too short for a keystore")
    if struct.unpack(">I", magic)[0] != MAGIC:  # a JCEKS or PKCS#12 file: the store's error names it
        raise JksFormatError(f"is not a JKS keystore (it starts with {magic.hex(' ')}, not fe ed fe ed)")
    if size < 12 + 20:
        raise JksFormatError(f"truncated: {size} bytes, too short for a keystore")
    file.seek(0)
    reader = _Reader(file, size - 20, digest)
    reader.take(4, "magic")
    version = reader.u32("version")
    if version not in (1, 2):
        raise JksFormatError(f"has format version {version}; only versions 1 and 2 exist")
    return version, _records(reader, version, reader.u32("entry count"))


def _records(reader: _Reader, version: int, count: int) -> Iterator[JksRecord]:
    reader.record()  # the file's header is no record's
    reader.count = count
    for index in range(count):
        reader.index = index
        tag = reader.u32("{entry}")
        alias = reader.utf("alias of {entry}")
        timestamp = reader.i64("date of {entry}")
        key = None
        if tag == TRUSTED_CERT:
            chain_length = 1
        elif tag == PRIVATE_KEY:
            key = reader.take(reader.u32("key of {entry}"), "key of {entry}")
            chain_length = reader.u32("chain length of {entry}")
        elif tag == SECRET_KEY:
            raise JksFormatError(f"{reader.entry()} ({alias!r}) is a secret key, which only JCEKS stores hold")
        else:
            raise JksFormatError(f"{reader.entry()} has unknown type {tag} (damaged file?)")
        certs = []
        for _ in range(chain_length):
            cert_type = reader.utf("certificate type in {entry}") if version == 2 else "X.509"
            certs.append((cert_type, reader.take(reader.u32("certificate of {entry}"), "certificate of {entry}")))
        yield JksRecord(tag, alias, reader.record(), timestamp, certs, key)
    if reader.pos != reader.end:
        raise JksFormatError(
            f"damaged: {reader.end - reader.pos} unexpected bytes after the {count} entries "
            f"(offset {reader.pos})"
        )


def render_jks(version: int, records, password: str, count: int | None = None) -> Iterator[bytes]:
    """A version-2 keystore of `records`, piece by piece, each record made and written as it
    comes (`count`: how many there are, when `records` is an iterator), the integrity hash last."""
    if count is None:
        records = list(records)
        count = len(records)
    header = struct.pack(">III", MAGIC, 2, count)
    digest = _hasher(password)
    digest.update(header)
    yield header
    for record in records:
        piece = record.raw if version == 2 else record.v2_bytes()
        digest.update(piece)
        yield piece
        count -= 1
    if count:
        raise ValueError("the keystore's header counts other records than were written")
    yield digest.digest()


def trusted_record(alias: str, cert_der: bytes, timestamp: int = FIXED_TIMESTAMP) -> JksRecord:
    record = JksRecord(TRUSTED_CERT, alias, b"", timestamp, [("X.509", cert_der)])
    record.raw = record.v2_bytes()
    return record


# --- the store ------------------------------------------------------------------------------


class JksStore(FileStore):
    kind = "jks"
    streamed = True
    options = ("password-file", "aliases")
    values = {"password-file": PASSWORD_FILE, "aliases": ALIASES}
    reader = "java"
    capabilities = CAPABILITIES

    def _load(self, data: bytes) -> tuple[int, list[JksRecord], str]:
        """Parse and verify; returns (version, records, password)."""
        try:
            version, records = parse_jks(data)
        except JksFormatError as exc:
            raise self.damaged(str(exc)) from None
        return version, records, self._verified(data)

    def _verified(self, data: bytes) -> str:
        """The password, once the file's integrity hash is checked with it."""
        password, explicit = store_password(self)
        self._check_hash(integrity_hash(password, memoryview(data)[:-20]), data[-20:], explicit)
        return password

    def _check_hash(self, computed: bytes, stored: bytes, explicit: bool) -> None:
        if not compare_digest(computed, stored):
            hint = "" if explicit else f" (it was opened with Java's default {DEFAULT_PASSWORD!r})"
            raise self.error(
                f"integrity check failed: either the store password is wrong{hint}, or the file was tampered "
                f"with or damaged{WRONG_PASSWORD}"
            )

    def parse(self, data) -> TrustSet:
        """The anchors, read only once the file's integrity hash verifies over its bytes as they
        lie (no certificate reaches a parser before, as a PKCS#12 file's MAC is checked first),
        and believed only if the bytes they are read from hash alike: the file rewritten in
        place in between (by someone without the password) is not. A file whose hash fails is
        walked for what is wrong with its layout, said first as ever (the same errors, in the
        same order). Read piece by piece, each record dropped as it is read."""
        file = readable(data)
        password, explicit = store_password(self)
        computed, stored = _hashes(file, password)
        if not compare_digest(computed, stored):
            try:
                for _record in iter_jks(file)[1]:
                    pass
            except JksFormatError as exc:
                raise self.damaged(str(exc)) from None
            self._check_hash(computed, stored, explicit)
        digest = _hasher(password)
        live: dict[str, tuple[int, Entry | None]] = {}  # Java's map: each alias holds its last record only
        try:
            for record in iter_jks(file, digest)[1]:
                if record.alias in live:
                    self._shadowed(record.alias)
                live[record.alias] = record.tag, self._anchor(record)
        except JksFormatError as exc:
            raise self.damaged(str(exc)) from None
        self._check_hash(digest.digest(), file.read(20), explicit)
        self.fixed_anchors = key_entry_anchors(self, (e for tag, e in live.values() if tag == PRIVATE_KEY and e))
        return TrustSet(entry for tag, entry in live.values() if tag == TRUSTED_CERT and entry is not None)

    def _shadowed(self, alias: str) -> None:
        self.warnings.append(f"{self.path}: alias {alias!r} is given again later in the keystore; Java keeps only the "
                             "last entry of an alias, so the earlier one is not read (a rewrite drops it, as keytool's does)")

    def _anchor(self, record: JksRecord) -> Entry | None:
        """The certificate Java trusts through a record (None, with a warning, when none): a
        trusted-certificate entry's, or the first of a private-key entry's chain."""
        if not record.certs:
            self.warnings.append(f"{self.path}: private-key entry {record.alias!r} has no certificate, so Java "
                                 "trusts nothing through it; it is kept as it is")
            return None
        if record.alias != record.alias.lower():
            # JKS files an entry under its alias as stored but looks every alias up lower-cased
            # (toLowerCase(Locale.ENGLISH)): Java never reaches this one
            self.warnings.append(f"{self.path}: entry {record.alias!r} has an upper-case alias, which Java never finds "
                                 "(it looks aliases up in lower case); not a trust anchor, kept as it is")
            return None
        cert_type, body = record.certs[0]
        if cert_type != "X.509":
            self.warnings.append(f"{self.path}: entry {record.alias!r} holds a {cert_type} certificate; kept, not read")
            return None
        cert = self.certificate(body)
        for n, (_, chained) in enumerate(record.certs):  # Java parses every certificate of a chain
            try:
                (cert if n == 0 else Certificate(chained)).check_outline()
            except der.DERError as exc:
                which = "" if n == 0 else f": certificate {n + 1} of its chain"
                self.warnings.append(f"{self.path}: entry {record.alias!r}{which} is not a certificate ({exc}); kept, "
                                     "not read (Java cannot load a keystore holding a damaged certificate: delete "
                                     "the entry with keytool, or restore the file)")
                return None
        return Entry(cert, label=record.alias)  # the label is the alias: a write keeps it by the record

    def render(self, plan) -> bytes | Iterator[bytes]:
        data = self.current_bytes()
        version, records, password = (2, [], store_password(self)[0]) if data is None else self._load(data)
        last = {record.alias: index for index, record in enumerate(records)}
        # an entry an alias given again later hides is never loaded by Java: dropped, as keytool's
        # rewrite drops it (kept, removing the later one would make Java trust it)
        records = [record for index, record in enumerate(records) if last[record.alias] == index]
        anchors = {}
        for record in records:
            entry = self._anchor_quietly(record) if record.tag == TRUSTED_CERT else None
            if entry is not None:
                anchors.setdefault(entry.sha256, entry)
        if data is not None and unchanged_anchor_set(self, plan, set(anchors)):
            return data
        if version == 1 and any(r.tag == PRIVATE_KEY for r in records):
            raise self.error(
                "is a version-1 keystore with a private-key entry, which storesync will not "
                "convert; nothing was written (rewrite it once with keytool -importkeystore)"
            )
        desired = plan.desired
        kept = [r for r in records if r.tag != TRUSTED_CERT or _record_sha(r) not in anchors or _record_sha(r) in desired]
        taken = {r.alias.lower() for r in kept}
        scheme = chosen_scheme(self, [r.alias for r in records if r.tag == TRUSTED_CERT])
        aliases = sorted((make_alias(entry, scheme, taken, lower=True), entry.sha256)
                         for entry in desired.values() if entry.sha256 not in anchors)  # unique: taken
        new = (trusted_record(alias, desired[sha].cert.der) for alias, sha in aliases)  # made as written
        return render_jks(version, itertools.chain(kept, new), password, len(kept) + len(aliases))

    def _anchor_quietly(self, record: JksRecord) -> Entry | None:
        saved = list(self.warnings)
        try:
            return self._anchor(record)
        finally:
            self.warnings[:] = saved



def _record_sha(record: JksRecord) -> str | None:
    if record.tag != TRUSTED_CERT:
        return None
    return hashlib.sha256(record.certs[0][1]).hexdigest()
