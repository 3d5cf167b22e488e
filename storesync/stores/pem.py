"""`pem`: a bundle file of PEM certificates (or a single DER certificate).

Reads `CERTIFICATE`, `X509 CERTIFICATE` and OpenSSL's `TRUSTED CERTIFICATE` (DER followed by
X509_CERT_AUX: trusted and rejected EKUs and an alias). Writes plain PEM by default, byte for
byte what `trust extract --format=pem-bundle` writes; `?format=trusted` writes TRUSTED
CERTIFICATE blocks that keep per-purpose trust, distrust and labels; `?comments=yes` puts
`# label` above each plain block. A private key anywhere in the file refuses the whole file.
A bundle of `CACHE_FROM` bytes (64 KiB) or more read again unchanged (same digest) is not parsed again,
nor is a smaller one this process has parsed already (an identical copy elsewhere).
"""

from __future__ import annotations

import binascii  # base64's b64decode and b64encode are these calls: the base64 module is not imported
import os
import re
from collections.abc import Iterator

from storesync import der
from storesync.fsio import digest_of
from storesync.model import (
    Capabilities,
    ANCHOR, ANY_EKU, DISTRUSTED, PURPOSES, TRUSTED, Certificate, Entry, StoreError, TrustSet, oid_from_purpose, printable,
    purpose_from_oid, purpose_order,
)
from storesync.stores import FileStore, Values

# A block's body runs to the first END line of its kind: runs of non-dashes, each dash checked
# not to start that END line, taken whole (atomic: no backtracking into a body with no END line).
# The same matches as a lazy `(.*?)`, which tries the END line at every byte: ten times slower
# (2 ms of a 144-root bundle's read).
# Compiled at their first use, through re's cache (1.9 M instructions): a read that the stat
# cache answers, as a sync from the system bundle's is, never parses PEM
_BLOCK = rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n((?>[^-]*(?:-(?!----END \1-----)[^-]*)*))-----END \1-----"
_BEGIN = rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n"
_CERT_TYPES = {b"CERTIFICATE", b"X509 CERTIFICATE", b"TRUSTED CERTIFICATE"}
#: From this size on a bundle's parse is kept in the state dir's stat cache, by a digest of its
#: bytes: a bundle read again unchanged (a sync's source, most runs) is not parsed again. The
#: system bundle (220 KB) is: its parse is 7 % of a one-shot sync's instructions. A bundle of a
#: few certificates parses quicker than its cache loads.
CACHE_FROM = 1 << 16
#: Smaller bundles this process parsed, by digest: identical copies (every venv's certifi, a
#: file read back after writing it) are parsed once per run. Bounded for the daemon.
_READ: dict[bytes, list[tuple[int, bytes]]] = {}
READ_KEPT = 32
_PLAIN = Capabilities(labels=False)
_TRUSTED = Capabilities(purposes=True, distrust=True, labels=True, lone_reject_trusts=True)


def speaks_trusted(store) -> bool:
    """Whether a bundle (or hashed directory) has the trusted capabilities: asked for with
    `format=trusted`, or holding any TRUSTED CERTIFICATE block. Reading such a block as a plain
    anchor would lose its distrust or widen its trust, so what the file holds wins."""
    return store.option("format") == "trusted" or store.holds_trusted


class PemStore(FileStore):
    kind = "pem"
    options = ("format", "comments")
    values = {"format": Values("plain", "trusted"), "comments": Values("yes", "no")}
    holds_trusted = False  # set by parse: a TRUSTED CERTIFICATE block was read
    blocks: list[tuple[int, bytes]] = []  # set by parse: (1 if TRUSTED, bytes) per entry, for `cached_entry`
    others: list[bytes] = []  # set by parse: blocks that are no certificate (CRLs), written back as they are
    parsed_digest: bytes | None = None  # set by parse: the digest of the bytes it read

    @property
    def capabilities(self) -> Capabilities:
        return _TRUSTED if speaks_trusted(self) else _PLAIN

    def read(self) -> TrustSet:
        if _size(self.path) >= CACHE_FROM:
            return self._read_large()
        data = self.current_bytes()
        digest = self._read_digest = digest_of(data)
        if data is None:
            return TrustSet()  # a target not created yet
        known = _READ.get(digest)
        if known is not None:
            return self._cached(known)
        warnings = len(self.warnings)
        found = self.parse(data)
        if len(self.warnings) == warnings:  # what it says about the file is said again on every read
            if len(_READ) >= READ_KEPT:
                _READ.clear()
            _READ[digest] = self.blocks
        self.blocks = []  # for the caller of `parse` (a hashed directory's file); a bundle's is kept above
        return found

    def _read_large(self) -> TrustSet:
        """Digested as a stream first: read again unchanged (most runs' source), a large bundle
        comes from the stat cache; else it is parsed piece by piece. Never held whole in memory."""
        from storesync.statcache import StatCache

        cache, digest = StatCache(self.spec.key), self._digest_now()
        known = cache.get("", digest)
        if known is not None:
            self._read_digest = digest
            return self._cached(known)
        file = self.current_file()
        if file is None:
            self._read_digest = None
            return TrustSet()  # removed since
        warnings = len(self.warnings)
        with file:
            found = self.parse(file)
        self._read_digest = self.parsed_digest
        if len(self.warnings) == warnings and self.parsed_digest == digest:  # not changed while read
            cache.put("", digest, self.blocks)
            cache.save()
        self.blocks = []
        return found

    def _cached(self, known: list[tuple[int, bytes]]) -> TrustSet:
        self.holds_trusted = any(trusted for trusted, _ in known)
        return TrustSet([cached_entry(trusted, raw) for trusted, raw in known])

    def parse(self, data) -> TrustSet:
        """The bundle's entries, from its bytes, or from the file opened at its start read in pieces
        that end after an END line (a large one is never held whole). What a piece cannot settle
        alone (a block whose END line is not in it; no block at all) is read again whole, as ever,
        so the answers and the errors are those of the whole file. `parsed_digest`: what was read."""
        self.holds_trusted, self.blocks, self.others = False, [], []
        if isinstance(data, (bytes, bytearray)):
            self.parsed_digest = digest_of(data)
            return TrustSet(self._entries(data, 1, alone=True))
        import hashlib

        hasher, entries, line, said = hashlib.blake2b(digest_size=32), [], 1, len(self.warnings)
        for piece in _pieces(data, hasher):
            try:
                found = self._entries(piece, line, alone=False)
            except StoreError:  # the whole file may have a fault to name first (a block with no END line)
                found = None
            if found is None:
                break
            entries += found
            line += piece.count(b"\n")
        else:
            if entries or self.others:  # else no block: a DER file, comments, or damage, said as ever
                self.parsed_digest = hasher.digest()
                return TrustSet(entries)
        del self.warnings[said:]  # said again by the whole read
        entries = None  # not held beside the whole file
        data.seek(0)
        return self.parse(data.read())

    def _entries(self, data: bytes, first_line: int, alone: bool) -> list[Entry] | None:
        """The entries of the blocks of `data`, whose first line is the file's `first_line`; None
        when a piece cannot be read alone (`alone` false)."""
        unended = _unended(data)
        blocks = list(re.finditer(_BLOCK, data)) if unended is None else []
        if unended is not None or data.count(b"-----BEGIN ") != len(blocks):
            if not alone:
                return None
            line = _unterminated_line(data, blocks) if unended is None else data.count(b"\n", 0, unended) + 1
            raise self.damaged(f"PEM block at line {line} has no matching END line (truncated file?)")
        if not blocks:
            return self._parse_without_blocks(data) if alone else []
        entries = []
        _line = lambda data, block: _line_of(data, block) + first_line - 1  # noqa: E731 - of the file, not the piece
        for block in blocks:
            kind = block.group(1)
            if b"PRIVATE KEY" in kind:
                raise self.error(
                    f"holds a private key (line {_line(data, block)}); a trust bundle must not, "
                    "so nothing was read from it: move the key to a file of its own"
                )
            if kind not in _CERT_TYPES:
                self.warnings.append(f"{self.path}: line {_line(data, block)}: skipped a {kind.decode()} block "
                                     "(not a certificate: a rewrite keeps it)")
                self.others.append(block.group(0).rstrip(b"\r\n") + b"\n")
                continue
            body = block.group(2)
            if b":" in body:  # RFC 1421 headers (Proc-Type: ...) precede the base64
                body = b"".join(l for l in body.splitlines() if b":" not in l)
            try:
                raw = binascii.a2b_base64(body.replace(b"\n", b"").replace(b"\r", b""), strict_mode=True)
            except (binascii.Error, ValueError):
                raise self.damaged(f"PEM block at line {_line(data, block)} is not valid base64 (corrupted file?)") from None
            trusted = kind == b"TRUSTED CERTIFICATE"
            self.holds_trusted |= trusted
            try:
                entry = self._entry(raw, trusted=trusted)
                entries.append(entry)
                self.blocks.append((int(trusted), raw if trusted else entry.cert.der))  # the bytes held already
            except der.DERError as exc:
                raise self.damaged(f"PEM block at line {_line(data, block)} is not a certificate ({exc})") from None
        return entries

    def _parse_without_blocks(self, data: bytes) -> list[Entry]:
        if data[:1] == b"\x30":
            try:
                entry = self._entry(data, trusted=False, whole=True)
                self.blocks = [(0, data)]
                return [entry]
            except der.DERError as exc:
                raise self.damaged(f"is neither PEM nor a DER certificate ({exc})") from None
        if all(not line.strip() or line.lstrip().startswith(b"#") for line in data.splitlines()):
            return []  # empty, or comments only
        raise self.damaged("holds no PEM certificate and is not a DER certificate")

    def _entry(self, raw: bytes, trusted: bool, whole: bool = False) -> Entry:
        cert_tlv = der.read_all(raw) if whole else der.read(raw)
        cert = Certificate(cert_tlv.raw)
        cert.check_outline()  # there even when the certificate is kept as bytes
        if not trusted:
            if cert_tlv.end != len(raw):
                raise der.DERError("trailing bytes after the certificate")
            return Entry(cert)
        return _trusted_entry(cert, raw[cert_tlv.end :])

    def render(self, plan) -> Iterator[bytes]:
        """The bundle block by block, each written as it is made: never the whole file in memory.
        What people and programs wrote around the blocks stays (`_text_around`)."""
        commented = self.option("comments") == "yes" and not speaks_trusted(self)  # `# label` lines of our own
        ours = None
        if commented:
            ours = lambda sha: _label_line(entry) if (entry := plan.desired.get(sha) or plan.current.get(sha)) else None
        found = self._from_file(lambda file: _text_around(_pieces(file), ours))
        head, notes, tail = found or (b"", {}, b"")
        yield head + b"\n" if head else b""  # a blank line: the first block's note is not read as the head
        blocks = _blocks(plan.desired.values(), speaks_trusted(self), self.option("comments") == "yes")
        for entry, block in zip(plan.desired.values(), blocks):
            yield notes.get(entry.sha256, b"") + block
        for other in self.others:  # another program's CRLs: last, as they were
            yield notes.get(other, b"") + other
        yield tail


def _size(path) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0  # reading it says why


def cached_entry(trusted: int, raw: bytes) -> Entry:
    """The entry of a block `parse` read earlier (one of its `blocks`), without checking again
    what was checked then: its certificate's outline too (a read-back of what a sync wrote
    from it would otherwise parse every certificate's fields once more)."""
    if not trusted:
        cert = Certificate(raw)
        cert.outlined = True
        return Entry(cert)
    end = der.read(raw).end
    cert = Certificate(raw[:end])
    cert.outlined = True
    return _trusted_entry(cert, raw[end:])


def render_entries(entries, trusted: bool = False, comments: bool = False) -> bytes:
    """PEM blocks for `entries`: plain (optionally with `# label` lines) or TRUSTED CERTIFICATE."""
    return b"".join(_blocks(entries, trusted, comments))


def _text_around(pieces, ours=None) -> tuple[bytes, dict, bytes]:
    """What is written around the blocks of a bundle (read in `pieces`), kept through a rewrite
    (a header saying who manages the file, a note above a root): the text before the first block
    and after the last, and the text above each other block, by its certificate's SHA-256 (a
    non-certificate block: by its bytes), which goes where it goes. Blank lines are the writer's
    own, and so is a line right above a block that is `ours(its key)`: the `# label` line
    `comments=yes` writes, made again."""
    head, notes, carry = None, {}, b""
    for piece in pieces:
        end = 0
        for block in re.finditer(_BLOCK, piece):
            gap, end, carry = carry + piece[end : block.start()], block.end(), b""
            key = _block_key(block) if gap.strip() else None
            above, _, last = gap.rstrip(b"\r\n").rpartition(b"\n")
            if key is not None and ours is not None and last + b"\n" == ours(key):
                gap = above
            if head is None:  # the file's own, but for lines right above the block, after a blank one
                before, blank, above = gap.rpartition(b"\n\n")
                head, gap = (_kept(before), above) if blank else (_kept(gap), b"")
            if gap.strip():
                notes[key] = _kept(gap)
        carry += piece[end:]
    if head is None:  # no block: empty, comments only (kept), or one DER certificate
        comments = all(not line.strip() or line.lstrip().startswith(b"#") for line in carry.splitlines())
        return _kept(carry) if comments else b"", {}, b""
    return head, notes, _kept(carry)


def _kept(text: bytes) -> bytes:
    """Text as it goes back into a file: its own lines, the last one ended; nothing when blank."""
    text = text.strip(b"\r\n")
    return text + b"\n" if text.strip() else b""


def _block_key(block) -> str | bytes:
    if block.group(1) not in _CERT_TYPES:
        return block.group(0).rstrip(b"\r\n") + b"\n"  # as `others` holds it
    try:
        raw = binascii.a2b_base64(b"".join(l for l in block.group(2).splitlines() if b":" not in l))
        return Certificate(der.read(raw).raw).sha256
    except (binascii.Error, ValueError, der.DERError):
        return b""  # not read as a certificate: its text has no block to go with


def _blocks(entries, trusted: bool, comments: bool):
    """`render_entries`'s pieces, one entry's (its `# label` line and its block) at a time."""
    for e in entries:
        if trusted:
            yield _pem(_aux_bytes(e), "TRUSTED CERTIFICATE")
        else:
            yield (_label_line(e) if comments else b"") + _pem(e.cert.der, "CERTIFICATE")


def _label_line(entry: Entry) -> bytes:
    """The `# label` line `comments=yes` writes above a block: one line that cannot be read as
    armor (a label's line break would start a block)."""
    return f"# {printable(entry.display_label).replace('-----', '- - -')}\n".encode()


def _pem(data: bytes, kind: str) -> bytes:
    text = binascii.b2a_base64(data, newline=False)
    body = b"\n".join(text[i : i + 64] for i in range(0, len(text), 64))
    return b"-----BEGIN %s-----\n%s\n-----END %s-----\n" % (kind.encode(), body, kind.encode())


def _line_of(data: bytes, block) -> int:
    return data.count(b"\n", 0, block.start()) + 1


PIECE = 1 << 20  # what a large bundle is read in: about a thousand certificates


def _pieces(file, hasher=None) -> Iterator[bytes]:
    """The file in pieces of about PIECE bytes, each ending after an END line (the last one
    whatever is left), every byte read fed to `hasher`. A piece is not held beside the chunk it
    was cut from, and no read asks for more than the file holds (a read allocates what it asks)."""
    size, held = file.seek(0, 2), []  # held: read, with no whole END line of its own yet
    file.seek(0)
    while chunk := file.read(min(PIECE, max(size - file.tell(), 1 << 12))):
        if hasher is not None:
            hasher.update(chunk)
        end = chunk.rfind(b"-----END ")
        cut = chunk.find(b"\n", end) + 1 if end >= 0 else 0
        if not cut:
            held.append(chunk)
            continue
        piece = chunk if not held and cut == len(chunk) else b"".join([*held, chunk[:cut]])
        held, chunk = [chunk[cut:]], None
        yield piece
    if any(held):
        yield b"".join(held)


def _unended(data: bytes) -> int | None:
    """Where the first BEGIN line with no END line of its kind after it is (None: there is none),
    found before the block pattern runs: from each such BEGIN the pattern would scan to the end
    of the file, so thousands of them (a damaged file) cost quadratic time."""
    last_end: dict[bytes, int] = {}
    for begin in re.finditer(_BEGIN, data):
        kind = begin.group(1)
        if kind not in last_end:
            last_end[kind] = data.rfind(b"-----END " + kind + b"-----")
        if last_end[kind] < begin.end():
            return begin.start()
    return None


def _unterminated_line(data: bytes, blocks) -> int:
    covered = {b.start() for b in blocks}
    for match in re.finditer(rb"-----BEGIN ", data):
        if match.start() not in covered and not any(b.start() < match.start() < b.end() for b in blocks):
            return data.count(b"\n", 0, match.start()) + 1
    return data.count(b"\n") + 1


def _trusted_entry(cert: Certificate, aux: bytes) -> Entry:
    """X509_CERT_AUX: SEQUENCE { trust SEQ OF OID?, [0] reject?, alias UTF8?, keyid OCTET?, [1] other? },
    read as OpenSSL's `X509_check_trust` with a purpose reads it: a trust list trusts what it
    lists (anyExtendedKeyUsage: the four PURPOSES, no other OID) and an empty one rejects everything; the uses a
    list leaves out, which OpenSSL rejects for this file's readers, are no opinion, as p11-kit
    reads them and writes its own (its distrust goes in the reject list): read as distrust, every
    root of its openssl-bundle would leave a plain bundle. With no list, a self-signed certificate is
    trusted for what it does not reject, any other is not trusted (neutral) once it rejects
    something, and like a plain block (an anchor, as p11-kit reads bundles) when it says nothing."""
    trusted: list[str] | None = None
    rejected: list[str] = []
    alias, kept = None, {}
    outer = der.read_all(aux) if aux else None
    if outer is not None and outer.tag != der.SEQUENCE:
        raise der.DERError("its trust data (X509_CERT_AUX) is not a SEQUENCE")
    at = 0
    for field in outer.children() if outer is not None else ():
        # OpenSSL's template (x_x509a.c) takes each field at most once and in order, and refuses the
        # block otherwise: read leniently, a second reject list would lose the first one's distrust.
        if field.tag not in _AUX_FIELDS[at:]:
            raise der.DERError(f"its trust data (X509_CERT_AUX) has a field (tag 0x{field.tag:02x}) repeated, "
                               "out of order or unknown, which OpenSSL refuses to load")
        at = _AUX_FIELDS.index(field.tag) + 1
        if field.tag == der.SEQUENCE:
            trusted = _aux_oids(field)
        elif field.tag == 0xA0:
            rejected = _aux_oids(field)
        elif field.tag == der.UTF8_STRING:
            alias = field.value.decode("utf-8", "replace")
        else:
            kept[field.tag] = field.raw  # keyid, other: carried unchanged
    if trusted == []:
        trust = dict.fromkeys(PURPOSES, DISTRUSTED)  # OpenSSL: trust listed, none matches: rejected
    elif trusted is not None or (rejected and not cert.self_signed):
        trust = {}
    else:
        trust = dict(ANCHOR)
    for oid in trusted or ():
        trust.update(dict(ANCHOR) if oid == ANY_EKU else {purpose_from_oid(oid): TRUSTED})
    for oid in rejected:
        trust.update({p: DISTRUSTED for p in PURPOSES} if oid == ANY_EKU else {purpose_from_oid(oid): DISTRUSTED})
    return Entry(cert, trust=trust, label=alias, extras={"pem": kept} if kept else {})


#: X509_CERT_AUX's fields in their order, each optional: trust, [0] reject, alias, keyid, [1] other.
_AUX_FIELDS = (der.SEQUENCE, 0xA0, der.UTF8_STRING, der.OCTET_STRING, 0xA1)


def _aux_oids(field: der.TLV) -> list[str]:
    """A trust or reject list's OIDs, refused where OpenSSL's c2i_ASN1_OBJECT refuses them."""
    oids = []
    for child in field.children():
        if child.tag != der.OID:
            raise der.DERError("its trust data (X509_CERT_AUX) lists something that is not an OID")
        try:
            oids.append(der.decode_oid(child.value, strict=True))
        except der.DERError as exc:
            raise der.DERError(f"its trust data (X509_CERT_AUX) has an OID that OpenSSL refuses ({exc})") from None
    return oids


def _aux_bytes(entry: Entry) -> bytes:
    """DER certificate + X509_CERT_AUX. A full anchor carries only its alias, as p11-kit writes."""
    ordered = sorted(entry.trust.items(), key=lambda item: purpose_order(item[0]))  # same trust, same bytes
    trusted = [oid_from_purpose(p) for p, s in ordered if s == TRUSTED]
    rejected = [oid_from_purpose(p) for p, s in ordered if s == DISTRUSTED]
    if set(entry.trust.items()) == set(ANCHOR.items()):
        trusted = []
    if rejected and set(rejected) == {oid_from_purpose(p) for p in PURPOSES}:
        rejected = [ANY_EKU]
    aux = b""
    if trusted:
        aux += der.encode_oid_sequence(trusted)
    if rejected:
        aux += der.encode(0xA0, b"".join(der.encode_oid(o) for o in rejected))
    if entry.label:
        aux += der.encode(der.UTF8_STRING, entry.label.encode("utf-8"))
    for raw in entry.extras.get("pem", {}).values():
        aux += raw
    return entry.cert.der + der.encode(der.SEQUENCE, aux)
