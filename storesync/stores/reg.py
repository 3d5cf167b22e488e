"""`reg`: registry exports of Windows certificate stores (`reg export`, regedit), read and written.

A certificate is the key `<hive>\\<base>\\<STORE>\\Certificates\\<SHA-1>` with a REG_BINARY `Blob`
holding one element group (docs/formats.md §4.3). A file is read as **the state after importing it**: keys
are applied in order, `[-key]` deletes a key and its subkeys, `"Blob"=-` deletes the value; any
number of hives, bases and stores may be mixed. Meaning of the stores:

- `ROOT`, `AuthRoot` (under any base: machine, user, Group Policy, enterprise): trust anchors,
  with purposes (ENHKEY_USAGE), label (FRIENDLY_NAME) and distrust-after (DISALLOWED_FILETIME);
- `Disallowed`: distrusted for every purpose;
- anything else (`CA`, `My`, `TrustedPublisher`…): out of scope, kept untouched, not in the trust set.

Writing produces a file that, imported with `reg import`, brings the target store to the desired
set: a new or changed anchor becomes a key with a `Blob` (uppercase SHA-1, regedit's line wrapping,
UTF-16LE with BOM, CRLF), a distrusted certificate a key in `Disallowed`, and a certificate to
remove an explicit `[-…\\Certificates\\<SHA-1>]` key — never the delete of a whole store. Keys the
change does not concern keep their exact text, so an unchanged file is rewritten byte for byte
(an existing REGEDIT4 / UTF-8 / LF file keeps its own encoding and line ends).

Options: `hive=` (`HKLM`, default, or `HKCU`), `base=` (a path under the hive, or `machine`,
`user`, `policies`, `enterprise`; `user` means HKCU and `machine`/`enterprise` HKLM when `hive=` is
left out, and a `hive=` saying otherwise is an error), `store=` (`ROOT`, default, or `AuthRoot`). Distrusted
certificates go to `Disallowed` beside it.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
from dataclasses import dataclass, field

from storesync.fsio import read_bytes
from storesync.model import Capabilities, Entry, TrustSet
from storesync.stores import FileStore, Values
from storesync.stores import winprops as wp

HEADER_V5 = "Windows Registry Editor Version 5.00"
HEADER_V4 = "REGEDIT4"
HIVES = {
    "hklm": "HKEY_LOCAL_MACHINE", "hkey_local_machine": "HKEY_LOCAL_MACHINE",
    "hkcu": "HKEY_CURRENT_USER", "hkey_current_user": "HKEY_CURRENT_USER",
    "hku": "HKEY_USERS", "hkey_users": "HKEY_USERS",
}
BASES = {
    "machine": "SOFTWARE\\Microsoft\\SystemCertificates",
    "user": "Software\\Microsoft\\SystemCertificates",
    "policies": "SOFTWARE\\Policies\\Microsoft\\SystemCertificates",
    "enterprise": "SOFTWARE\\Microsoft\\EnterpriseCertificates",
}
BASE_HIVES = {"machine": "HKEY_LOCAL_MACHINE", "user": "HKEY_CURRENT_USER", "enterprise": "HKEY_LOCAL_MACHINE"}
ANCHOR_STORES = {"root": "ROOT", "authroot": "AuthRoot"}
DISTRUST_STORE = "Disallowed"
_CERT_BASES = ("systemcertificates", "enterprisecertificates")
_CAPS = Capabilities(purposes=True, distrust=True, distrust_after=True, one_date=True, disabled=True, labels=True,
                     purpose_distrust=False)  # Disallowed is for every purpose

_VALUE = re.compile(r'\s*(@|"(?:[^"\\]|\\.)*")\s*=\s*(.*)$', re.S)
_HEX_PREFIX = re.compile(r"hex(\([0-9a-fA-F]+\))?:", re.I)
_HEX_TOKEN = re.compile(r"[0-9a-fA-F]{1,2}")
_FAST_HEX = re.compile(r"(?:[0-9a-fA-F]{2},)*[0-9a-fA-F]{2},?|")
BLOB_PREFIX = '"Blob"=hex:'


class RegError(ValueError):
    def __init__(self, line: int, what: str):
        super().__init__(f"line {line}: {what}")
        self.line = line


# --- text ---------------------------------------------------------------------------------


@dataclass
class Dialect:
    encoding: str = "utf-16-le"
    bom: bytes = b"\xff\xfe"
    newline: str = "\r\n"
    header: str = HEADER_V5

    def encode(self, text: str) -> bytes:
        return self.bom + text.encode(self.encoding, "surrogatepass")


def decode(data: bytes) -> tuple[str, Dialect]:
    """Bytes of a .reg file -> text and the encoding to write it back in. Raises RegError(0-based offset)."""
    dialect = Dialect()
    if data.startswith(b"\xff\xfe"):
        dialect.encoding, dialect.bom, body = "utf-16-le", data[:2], data[2:]
    elif data.startswith(b"\xfe\xff"):
        dialect.encoding, dialect.bom, body = "utf-16-be", data[:2], data[2:]
    elif data.startswith(b"\xef\xbb\xbf"):
        dialect.encoding, dialect.bom, body = "utf-8", data[:3], data[3:]
    elif len(data) >= 2 and data[0] and not data[1]:
        dialect.encoding, dialect.bom, body = "utf-16-le", b"", data
    else:
        dialect.bom, body = b"", data
        try:
            body.decode("utf-8")
            dialect.encoding = "utf-8"
        except UnicodeDecodeError:
            dialect.encoding = "latin-1"  # ANSI (REGEDIT4): every byte survives the round trip
    if dialect.encoding.startswith("utf-16") and len(body) % 2:
        raise RegError(0, f"offset {len(data) - 1}: odd number of bytes in UTF-16 text (the file is cut in the middle of a character)")
    try:
        text = body.decode(dialect.encoding, "surrogatepass")
    except UnicodeDecodeError as exc:
        raise RegError(0, f"offset {len(dialect.bom) + exc.start}: not {dialect.encoding} text ({exc.reason})") from None
    dialect.newline = "\r\n" if "\r\n" in text else "\n"
    return text, dialect


def canonical_path(path: str) -> str:
    parts = [p for p in path.strip().split("\\") if p]
    if parts:
        parts[0] = HIVES.get(parts[0].lower(), parts[0])
    return "\\".join(parts).lower()


def blob_lines(data: bytes, newline: str = "\r\n", prefix: str = BLOB_PREFIX) -> str:
    """regedit's binary value: count from len(prefix), +3 per `xx,`, wrap with `\\` at >= 77."""
    out = [prefix]
    column = len(prefix)
    last = len(data) - 1
    wrap = "\\" + newline + "  "
    for index, byte in enumerate(data):
        out.append(f"{byte:02x}")
        if index == last:
            break
        out.append(",")
        column += 3
        if column >= 77:
            out.append(wrap)
            column = 2
    out.append(newline)
    return "".join(out)


# --- parsing ------------------------------------------------------------------------------


@dataclass
class Block:
    """A key line and every line up to the next key line, exactly as in the file."""

    text: str
    line: int
    path: str
    delete: bool
    blob: tuple[bytes | None, int] | None = None  # last Blob value set (bytes) or deleted (None), and its line


@dataclass
class CertKey:
    """A key that names a certificate in the state after import."""

    path: str
    store: str  # the store name as in the file
    role: str | None  # ROLE_ANCHORS, ROLE_DISTRUST or None (out of scope)
    blocks: list[int] = field(default_factory=list)  # blocks that built it since its last deletion
    blob: bytes | None = None
    line: int = 0
    deleted_at: int | None = None  # a block that deleted exactly this path before it was built


@dataclass
class RegFile:
    dialect: Dialect = field(default_factory=Dialect)
    preamble: str = ""
    blocks: list[Block] = field(default_factory=list)

    def text(self) -> str:
        return self.preamble + "".join(b.text for b in self.blocks)


def _lines(text: str) -> list[str]:
    return re.findall(r"[^\n]*\n|[^\n]+$", text)


def read_reg(data: bytes) -> RegFile:
    text, dialect = decode(data)
    result = RegFile(dialect)
    lines = _lines(text)
    index = 0
    while index < len(lines) and not lines[index].strip():
        index += 1
    if index == len(lines):
        if text.strip():
            raise RegError(1, "not a registry export")
        result.preamble = text
        return result
    first = lines[index].strip()
    if first not in (HEADER_V5, HEADER_V4):
        shown = first if len(first) <= 60 else first[:57] + "..."
        raise RegError(index + 1, f"not a registry export: the first line is {shown!r}, not {HEADER_V5!r} or {HEADER_V4!r}")
    dialect.header = first
    preamble_end = None
    block: Block | None = None
    start = 0
    position = 0  # character offset of lines[index]
    offsets = []
    for line in lines:
        offsets.append(position)
        position += len(line)
    index += 1
    while index < len(lines):
        content = lines[index].rstrip("\r\n")
        stripped = content.strip()
        number = index + 1
        if stripped.startswith("["):
            if not stripped.endswith("]"):
                raise RegError(number, "a key line without its closing ']'")
            if block is None:
                preamble_end = offsets[index]
            else:
                block.text = text[start : offsets[index]]
                result.blocks.append(block)
            path = stripped[1:-1]
            delete = path.startswith("-")
            block = Block("", number, path[1:] if delete else path, delete)
            start = offsets[index]
            index += 1
            continue
        if not stripped or stripped.startswith(";"):
            index += 1
            continue
        match = _VALUE.match(content)
        if match is None:
            raise RegError(number, f"cannot read this line: {stripped[:60]!r}")
        if block is None:
            raise RegError(number, "a value before any [key] line")
        name, value = match.group(1), match.group(2)
        hex_match = _HEX_PREFIX.match(value.lstrip())
        if hex_match:
            data_bytes, index = _hex_value(lines, index, value.lstrip()[hex_match.end() :])
            if name.lower() == '"blob"' and not block.delete:
                block.blob = (data_bytes, number)
            continue
        if name.lower() == '"blob"' and not block.delete:
            if value.strip() == "-":
                block.blob = (None, number)
            else:
                raise RegError(number, "the Blob value is not binary (hex:)")
        index += 1
    if block is None:
        result.preamble = text
    else:
        block.text = text[start:]
        result.blocks.append(block)
        result.preamble = text[:preamble_end]
    return result


def _hex_value(lines: list[str], index: int, rest: str) -> tuple[bytes, int]:
    """Read a hex value starting on lines[index] (after `hex:`); returns bytes and the next line index."""
    # Fast path: regedit's own layout (two digits per byte, `\` continuations) in one go.
    pieces: list[str] | None = []
    end, piece = index, rest
    while True:
        piece = piece.rstrip(" \t\r\n")
        if not piece.endswith("\\"):
            pieces.append(piece.lstrip(" \t"))
            break
        pieces.append(piece[:-1].lstrip(" \t"))
        end += 1
        if end >= len(lines):
            pieces = None  # continues past the end: the slow path says where
            break
        piece = lines[end]
    if pieces is not None:
        joined = "".join(pieces)
        if _FAST_HEX.fullmatch(joined):
            return bytes.fromhex(joined.replace(",", "")), end + 1
    out = bytearray()
    while True:
        number = index + 1
        piece = rest.rstrip(" \t\r\n")
        more = piece.endswith("\\")
        if more:
            piece = piece[:-1]
        tokens = piece.split(",")
        for position, token in enumerate(tokens):
            token = token.strip()
            if not token:
                if position == len(tokens) - 1:
                    continue  # trailing comma before a continuation or at the end
                raise RegError(number, "an empty byte in a hex value (two commas in a row)")
            if not _HEX_TOKEN.fullmatch(token):
                raise RegError(number, f"{token[:20]!r} is not a hex byte")
            out.append(int(token, 16))
        index += 1
        if not more:
            return bytes(out), index
        if index >= len(lines):
            raise RegError(number, "the hex value continues past the end of the file")
        rest = lines[index]


def cert_key_parts(path: str) -> tuple[str, str, str] | None:
    """(location, store, thumbprint) when `path` is `…\\<Base>Certificates\\STORE\\Certificates\\THUMB`."""
    parts = [p for p in path.split("\\") if p]
    for i, part in enumerate(parts):
        if part.lower() in _CERT_BASES and len(parts) == i + 4 and parts[i + 2].lower() == "certificates":
            return "\\".join(parts[: i + 1]), parts[i + 1], parts[i + 3]
    return None


def store_role(store: str) -> str | None:
    name = store.lower()
    if name in ANCHOR_STORES:
        return wp.ROLE_ANCHORS
    if name == DISTRUST_STORE.lower():
        return wp.ROLE_DISTRUST
    return None


def state_after_import(reg: RegFile) -> list[CertKey]:
    """The certificate keys that exist once the file is imported, in the order they were created."""
    keys: dict[str, CertKey] = {}
    deleted_exactly: dict[str, int] = {}
    for number, block in enumerate(reg.blocks):
        norm = canonical_path(block.path)
        if block.delete:
            if cert_key_parts(block.path) is not None:  # one certificate's key: no scan of the others
                keys.pop(norm, None)
            else:
                prefix = norm + "\\"
                for other in [k for k in keys if k == norm or k.startswith(prefix)]:
                    del keys[other]
            deleted_exactly[norm] = number
            continue
        parts = cert_key_parts(block.path)
        if parts is None:
            continue
        key = keys.get(norm)
        if key is None:
            key = keys[norm] = CertKey(block.path, parts[1], store_role(parts[1]), deleted_at=deleted_exactly.get(norm))
        key.blocks.append(number)
        if block.blob is not None:
            key.blob, key.line = block.blob
    return list(keys.values())


# --- the store ----------------------------------------------------------------------------


class RegStore(FileStore):
    kind = "reg"
    options = ("hive", "base", "store")
    values = {"hive": Values(test=lambda v: v.lower().strip("\\") in HIVES, what="HKLM or HKCU"),
              "base": Values(*BASES, fold=True), "store": Values(*ANCHOR_STORES.values(), fold=True, what="ROOT or AuthRoot (the stores of trust anchors)")}
    reader = "crypt32"
    capabilities = _CAPS

    def __init__(self, spec):
        super().__init__(spec)
        base, hive = self.option("base"), self.option("hive")
        implied = BASE_HIVES.get((base or "").lower())  # base=user is HKCU's store, machine HKLM's
        self.hive = HIVES[hive.lower().strip("\\")] if hive else implied or "HKEY_LOCAL_MACHINE"
        if implied and implied != self.hive:
            raise self.error(f"base={base} is a store of {implied}, not of hive={hive}; leave hive= out, or use "
                             f"hive={'HKCU' if implied == 'HKEY_CURRENT_USER' else 'HKLM'}")
        base = base or ("user" if self.hive == "HKEY_CURRENT_USER" else "machine")
        self.base = BASES[base.lower()].strip("\\")
        self.store = ANCHOR_STORES[self.option("store", "ROOT").lower()]

    def notice(self) -> str | None:
        where = "as an administrator" if self.hive == "HKEY_LOCAL_MACHINE" else "as the user"
        return f"on Windows, apply it {where} with: reg import {os.path.basename(self.path)}"

    def location(self, store: str) -> str:
        return f"{self.hive}\\{self.base}\\{store}\\Certificates"

    def _load(self, data: bytes) -> tuple[RegFile, list[tuple[CertKey, Entry]]]:
        try:
            reg = read_reg(data)
        except RegError as exc:
            raise self.damaged(str(exc)) from None
        found = []
        for key in state_after_import(reg):
            if key.role is None:
                continue  # CA, My…: kept in the file, no part of the trust set
            if key.blob is None:
                self.warnings.append(f"{self.path}: {key.path}: a certificate key without a Blob value; ignored")
                continue
            where = f"line {key.line}"
            try:
                props, cert = _read_group(key.blob)
            except wp.ElementError as exc:
                raise self.damaged(f"{where}: the Blob of {key.path} is not a certificate ({exc})") from None
            thumb = cert_key_parts(key.path)[2]
            sha1 = hashlib.sha1(cert).hexdigest()
            if thumb != sha1.upper():  # crypt32 compares with the uppercase hex: any other name is ignored
                self.warnings.append(
                    f"{self.path}: {where}: key {thumb} is not the certificate's SHA-1 ({sha1.upper()}); Windows ignores it, so does storesync"
                )
                continue
            warn = lambda what, where=where: self.warnings.append(f"{self.path}: {where}: {what}")  # noqa: E731
            for dropped in props[1]:
                warn(f"{wp.describe(dropped)} (a private-key reference) dropped: a trust store does not carry it")
            found.append((key, wp.entry_from_group(cert, props[0], key.role, warn)))
        return reg, found

    def parse(self, data: bytes) -> TrustSet:
        _reg, found = self._load(data)
        return TrustSet(entry for _key, entry in found)

    def render(self, plan) -> bytes:
        reg, found = self._load(read_bytes(self.path)) if os.path.exists(self.path) else (RegFile(), [])
        if not reg.blocks and not reg.preamble.strip():  # none yet, or an empty file: a new export, as regedit's
            reg = RegFile(preamble=HEADER_V5 + "\r\n\r\n")
        nl = reg.dialect.newline
        by_cert: dict[str, list[CertKey]] = {}
        for key, entry in found:
            by_cert.setdefault(entry.sha256, []).append(key)
        current = TrustSet(entry for _key, entry in found)  # as read: distrust wins
        texts: list[str | None] = [b.text for b in reg.blocks]  # None: block dropped
        appended: list[str] = []

        def replace(key: CertKey, new_text: str | None) -> None:
            first, *rest = key.blocks
            texts[first] = new_text
            for other in rest:
                texts[other] = None

        def remove(key: CertKey) -> None:
            if key.deleted_at is not None:
                replace(key, None)  # the file already deletes it before building it
            else:
                replace(key, f"[-{key.path}]{nl}{nl}")

        desired = plan.desired
        for sha256, keys in by_cert.items():
            if sha256 not in desired:
                for key in keys:
                    remove(key)
        for entry in wp.in_store_order(plan):
            keys = by_cert.get(entry.sha256, [])
            if keys and entry == current.get(entry.sha256):
                continue  # unchanged: its keys keep their bytes
            role = wp.ROLE_DISTRUST if entry.distrusted else wp.ROLE_ANCHORS
            blob = wp.group_bytes(entry, role)
            kept = False
            for key in keys:
                if key.role != role:
                    remove(key)
                else:
                    replace(key, f"[{key.path}]{nl}{blob_lines(blob, nl)}{nl}")
                    kept = True
            if not kept:
                store = DISTRUST_STORE if role == wp.ROLE_DISTRUST else self.store
                path = f"{self.location(store)}\\{entry.cert.sha1.upper()}"
                appended.append(f"[{path}]{nl}{blob_lines(blob, nl)}{nl}")
        text = reg.preamble + "".join(t for t in texts if t is not None)
        if appended:
            if not text.endswith(nl):
                text += nl
            if not text.endswith(nl + nl):
                text += nl
            text += "".join(appended)
        return reg.dialect.encode(text)


def _read_group(blob: bytes) -> tuple[tuple[tuple, list[int]], bytes]:
    """A Blob: properties then exactly one certificate element, nothing after it."""
    props, dropped = [], []
    cert = None
    for pos, prop_id, encoding, value in wp.iter_elements(io.BytesIO(blob), len(blob), stop_at_marker=False):
        if cert is not None:
            raise wp.ElementError(pos, "data after the certificate element")
        if prop_id == wp.CERT_ELEMENT:
            cert = value
        elif prop_id in wp.KEY_PROPERTIES:
            dropped.append(prop_id)
        else:
            props.append((prop_id, encoding, value))
    if cert is None:
        raise wp.ElementError(len(blob), "no certificate element (0x20)")
    return (tuple(props), dropped), cert
