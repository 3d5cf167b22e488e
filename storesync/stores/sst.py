"""`sst`: Microsoft serialized certificate stores (`certutil -generateSST`, `Export-Certificate -Type SST`).

Layout (docs/formats.md §4.2): `00 00 00 00 "CERT"`, then element groups (properties, then the 0x20
certificate element), CRL/CTL groups after the certificates, then a 12-byte zero end marker.

The file plays one role, chosen by the spec option `role`:

- `role=roots` (default): a list of trust anchors, as `certutil -addstore Root` imports it.
  ENHKEY_USAGE says for which purposes (absent: all, `30 00`: none), DISALLOWED_FILETIME
  [+ DISALLOWED_ENHKEY_USAGE] says distrust-after. Such a file cannot say "distrusted": a
  distrusted certificate is left out (the plan reports it) rather than written as an anchor.
- `role=disallowed`: a distrust list (Microsoft's `disallowedcert.sst`, `certutil -addstore
  Disallowed`). Every certificate in it is distrusted for every purpose; a certificate the desired
  set trusts is not written into it.

Every property of every certificate is kept (`Entry.extras["winprops"]`), so re-serializing a
parsed file gives the same bytes; CRL and CTL groups of an existing file are kept as they are.
Key-provider properties (KEY_PROV_INFO & co.) are dropped on read: a trust store never carries
a reference to a private key.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

from storesync import der
from storesync.model import Capabilities, Entry, TrustSet
from storesync.stores import FileStore, Values, readable
from storesync.stores import winprops as wp

MAGIC = b"\x00\x00\x00\x00CERT"
END_MARKER = bytes(12)

ROLES = {
    "roots": wp.ROLE_ANCHORS, "root": wp.ROLE_ANCHORS, "authroot": wp.ROLE_ANCHORS, "anchors": wp.ROLE_ANCHORS,
    "disallowed": wp.ROLE_DISTRUST, "distrust": wp.ROLE_DISTRUST,
}
_ANCHOR_CAPS = Capabilities(purposes=True, distrust=False, distrust_after=True, one_date=True, disabled=True, labels=True)
_DISTRUST_CAPS = Capabilities(anchors=False, purposes=False, distrust=True, distrust_after=False, labels=True)


@dataclass
class SstFile:
    groups: list[tuple[int, bytes, tuple]] = field(default_factory=list)  # (offset, cert DER, props)
    tail_parts: list[bytes] = field(default_factory=list)  # CRL and CTL groups, verbatim

    @property
    def tail(self) -> bytes:
        return b"".join(self.tail_parts)
    warnings: list[str] = field(default_factory=list)


def read_sst(data, each=None) -> SstFile:
    """Parse a serialized store (its bytes, or the file opened at its start, read element by
    element); raises ElementError (with the offset) for what cannot be read. With `each`, every
    certificate group goes to `each(offset, cert, props)` as it is read, and none is kept in
    `groups`."""
    file = readable(data)
    end = file.seek(0, io.SEEK_END)
    file.seek(0)
    result = SstFile()
    if not end:
        return result
    magic = file.read(8)
    if magic != MAGIC:
        raise wp.ElementError(0, f"not a serialized certificate store: the file starts with {magic.hex(' ')}, not 00 00 00 00 43 45 52 54")
    pending: list[tuple[int, int, bytes]] = []
    pending_start = None
    for pos, prop_id, encoding, value in wp.iter_elements(file, end, stop_at_marker=True):
        if pending_start is None:
            pending_start = pos
        if prop_id == wp.CERT_ELEMENT:
            try:
                der.read_all(value)
            except der.DERError as exc:
                result.warnings.append(f"offset {pos}: the certificate is not DER ({exc}); kept as bytes")
            if each is None:
                result.groups.append((pos, value, tuple(pending)))
            else:
                each(pos, value, tuple(pending))
            pending, pending_start = [], None
        elif prop_id in (wp.CRL_ELEMENT, wp.CTL_ELEMENT):  # kept as it was, its properties first
            result.tail_parts.append(b"".join(wp.element(i, v, e) for i, e, v in pending) + wp.element(prop_id, value, encoding))
            pending, pending_start = [], None
        elif prop_id in wp.KEY_PROPERTIES:
            result.warnings.append(
                f"offset {pos}: {wp.describe(prop_id)} (a private-key reference) dropped: a trust store does not carry it"
            )
        else:
            pending.append((prop_id, encoding, value))
    pos = file.tell()
    if file.read(12) == END_MARKER:
        if pos + 12 < end:
            result.warnings.append(f"offset {pos + 12}: {end - pos - 12} bytes after the end marker ignored")
    else:
        result.warnings.append(f"offset {end}: no end marker (the file may be truncated)")
    if pending:
        result.warnings.append(f"offset {pending_start}: {len(pending)} properties belong to no certificate; ignored")
    return result


class SstStore(FileStore):
    kind = "sst"
    streamed = True
    options = ("role",)
    values = {"role": Values(*ROLES, fold=True, what="roots (trust anchors) or disallowed (a distrust list)")}
    reader = "crypt32"

    def __init__(self, spec):
        super().__init__(spec)
        self.role = ROLES[self.option("role", "roots").lower()]

    @property
    def capabilities(self) -> Capabilities:
        return _DISTRUST_CAPS if self.role == wp.ROLE_DISTRUST else _ANCHOR_CAPS

    def notice(self) -> str | None:
        store = "Disallowed" if self.role == wp.ROLE_DISTRUST else "Root"
        return f"on Windows, import it with: certutil -addstore {store} {os.path.basename(self.path)}"

    def parse(self, data: bytes) -> TrustSet:
        entries, said = [], []

        def each(offset: int, cert: bytes, props: tuple) -> None:
            # taken as read: a certificate's bytes go as soon as a copy held already stands for
            # them, and no group waits for the end of the file (a second copy of all of them)
            warn = lambda what: said.append(f"{self.path}: offset {offset}: {what}")  # noqa: E731
            entries.append(wp.entry_from_group(cert, props, self.role, warn))

        try:
            sst = read_sst(data, each)
        except wp.ElementError as exc:
            raise self.damaged(str(exc)) from None
        self.warnings.extend(f"{self.path}: {w}" for w in sst.warnings)  # the file's, then the entries', as before
        self.warnings.extend(said)
        return TrustSet(entries)

    def render(self, plan) -> Iterator[bytes]:
        """The file group by group, each written as it is made: never the whole file in memory."""
        tail = b""
        try:  # only the CRL and CTL groups are kept from the file as it is
            with open(self.path, "rb") as file:
                tail = read_sst(file, lambda *group: None).tail
        except (wp.ElementError, OSError):
            tail = b""  # none yet, or an unreadable file, which is replaced (the engine refuses to get here anyway)
        yield MAGIC
        for entry in wp.in_store_order(plan):
            if self._fits(entry):
                yield wp.group_bytes(entry, self.role)
        yield tail + END_MARKER

    def _fits(self, entry: Entry) -> bool:
        if self.role == wp.ROLE_DISTRUST and not entry.distrusted:
            self.warnings.append(f"{self.path}: {entry.display_label}: trusted, so not written into a distrust list")
            return False
        if self.role == wp.ROLE_ANCHORS and entry.distrusted:
            self.warnings.append(f"{self.path}: {entry.display_label}: distrusted, so not written as a trust anchor")
            return False
        return True
