"""`certdata` (read-only): Mozilla's certdata.txt, the source of NSS's built-in roots.

After `BEGINDATA` come objects of `ATTRIBUTE TYPE VALUE` lines; an object starts at `CKA_CLASS`
and ends at a blank line; `#` comments can sit inside objects. Certificates and their trust are
paired by (issuer, serial), never by label (labels repeat), and a trust object grants trust only
when its certificate hash is its certificate's, as NSS's nssTrust_Create checks it; an attribute
given twice counts by its first line, as builtins_mdObject_GetAttribute returns it. Kept from the
file: per-purpose trust in both spellings (`CKO_NSS_TRUST` / `CKT_NSS_*` and PKCS#11 3.2
`CKO_TRUST` / `CKT_*`), distrust-after dates from either object, labels, and NSS's own letters in `extras["nss"]` so
a sync into an NSS database keeps "valid CA" and "trusted peer".

Trust objects without a certificate (issuer + serial only) are distrust records. A trust set is
keyed by the certificate's SHA-256, so they cannot be entries: they are listed in
`store.distrust_records` and reported in `store.warnings`.
"""

from __future__ import annotations

import re

from storesync import der
from storesync.fsio import read_bytes
from storesync.model import (
    Capabilities,
    CLIENT_AUTH,
    CODE_SIGNING,
    EMAIL,
    SERVER_AUTH,
    Certificate,
    Entry,
    TrustSet,
    letter_trust,
)
from storesync.stores import Store, cannot_read, not_a_file

TYPE_CHECKING = False  # typing's, without importing typing (nor dataclasses)
if TYPE_CHECKING:
    from datetime import datetime
    from typing import Any

_PURPOSE_SUFFIX = {
    "SERVER_AUTH": SERVER_AUTH,
    "CLIENT_AUTH": CLIENT_AUTH,
    "EMAIL_PROTECTION": EMAIL,
    "CODE_SIGNING": CODE_SIGNING,
}
# trust value name (either spelling) -> NSS letter (C anchor, P trusted peer, p distrusted, c valid CA)
_LETTERS = {
    "CKT_NSS_TRUSTED_DELEGATOR": "C",
    "CKT_TRUST_ANCHOR": "C",
    "CKT_NSS_TRUSTED": "P",
    "CKT_TRUSTED": "P",
    "CKT_NSS_NOT_TRUSTED": "p",
    "CKT_NOT_TRUSTED": "p",
    "CKT_NSS_VALID_DELEGATOR": "c",
}
_CERT_CLASSES = {"CKO_CERTIFICATE"}
_TRUST_CLASSES = {"CKO_NSS_TRUST", "CKO_TRUST"}
_OCTAL = re.compile(r"\\([0-3][0-7]{2})")  # \ooo is one byte: at most \377


_GRANTING = ("C", "P")  # the letters that make a certificate trusted
# CKA_NAME_HASH_ALGORITHM of a PKCS#11 3.2 trust object -> the hash of CKA_HASH_OF_CERTIFICATE
_HASH_OF_MECHANISM = {"CKM_SHA_1": "sha1", "CKM_SHA224": "sha224", "CKM_SHA256": "sha256", "CKM_SHA384": "sha384",
                      "CKM_SHA512": "sha512"}


def _hash_matches(trust: "_Object", der_bytes: bytes) -> bool:
    """Does the trust object's certificate hash name these bytes? (SHA-1 in CKO_NSS_TRUST,
    CKA_HASH_OF_CERTIFICATE by CKA_NAME_HASH_ALGORITHM in CKO_TRUST), as NssStore checks it."""
    import hashlib

    value = trust.get("CKA_CERT_SHA1_HASH")
    if isinstance(value, bytes):
        return value == hashlib.sha1(der_bytes).digest()
    value, name = trust.get("CKA_HASH_OF_CERTIFICATE"), _HASH_OF_MECHANISM.get(trust.get("CKA_NAME_HASH_ALGORITHM"))
    return isinstance(value, bytes) and name is not None and value == hashlib.new(name, der_bytes).digest()


class _Object:
    __slots__ = ("line", "attrs")

    def __init__(self, line: int):
        self.line = line
        self.attrs: dict[str, tuple[str, Any]] = {}

    def get(self, name: str) -> Any:
        value = self.attrs.get(name)
        return value[1] if value else None


class DistrustRecord:
    """A trust object with no certificate: whatever has this issuer and serial is distrusted."""

    __slots__ = ("label", "issuer", "serial", "trust", "distrust_after", "line")

    def __init__(self, label: str | None, issuer: bytes, serial: bytes, trust: dict[str, str],
                 distrust_after: dict[str, datetime], line: int):
        self.label, self.issuer, self.serial, self.trust = label, issuer, serial, trust
        self.distrust_after, self.line = distrust_after, line

    def __repr__(self) -> str:
        return f"DistrustRecord({self.label!r}, line {self.line})"


class CertdataStore(Store):
    kind = "certdata"
    capabilities = Capabilities(purposes=True, distrust=True, distrust_after=(SERVER_AUTH, EMAIL), labels=True,
                                writable=False, oids=False)
    remedy = "fetch Mozilla's certdata.txt again"  # storesync never writes it, so keeps no backup of it

    def __init__(self, spec):
        super().__init__(spec)
        self.distrust_records: list[DistrustRecord] = []

    def read(self) -> TrustSet:
        odd = not_a_file(self.path)
        if odd:
            raise self.error(odd)
        try:
            text = read_bytes(self.path).decode("utf-8")
        except FileNotFoundError:
            raise self.error("does not exist") from None
        except IsADirectoryError:
            raise self.error("is a directory, not a certdata.txt file") from None
        except UnicodeDecodeError as exc:
            raise self.damaged(f"is not UTF-8 text (byte {exc.start}), so not a certdata.txt file") from None
        except OSError as exc:
            raise self.error(cannot_read(exc)) from None
        self.warnings, self.distrust_records = [], []
        return self.parse(text)

    def write(self, plan) -> None:
        raise self.error("certdata.txt is read-only for storesync (it is Mozilla's published list)")

    # -- parsing

    def parse(self, text: str) -> TrustSet:
        objects = self._objects(text)
        certs: list[_Object] = []
        trusts: dict[tuple[bytes, bytes], _Object] = {}
        for obj in objects:
            cls = obj.get("CKA_CLASS")
            if cls in _CERT_CLASSES:
                certs.append(obj)
            elif cls in _TRUST_CLASSES:
                key = self._key(obj)
                if key in trusts:
                    self.warnings.append(f"{self.path}: line {obj.line}: a second trust object for one issuer and serial; the first counts")
                    continue
                trusts[key] = obj
        entries = []
        paired: set[tuple[bytes, bytes]] = set()
        for obj in certs:
            value = obj.get("CKA_VALUE")
            if not isinstance(value, bytes) or not value:
                raise self.error(f"line {obj.line}: certificate object without CKA_VALUE")
            cert = Certificate(value)
            try:
                fields = cert.fields
            except der.DERError as exc:
                raise self.error(f"line {obj.line}: CKA_VALUE is not a certificate ({exc})") from None
            key = (obj.get("CKA_ISSUER") or fields.issuer, obj.get("CKA_SERIAL_NUMBER") or fields.serial)
            trust_obj = trusts.get(key)
            label = obj.get("CKA_LABEL")
            if trust_obj is None:
                self.warnings.append(f"{self.path}: line {obj.line}: {label!r} has no trust object: no trust for it")
                letters, step_up = {}, False
            else:
                paired.add(key)
                letters, step_up = self._letters(trust_obj)
                granted = [p for p, letter in letters.items() if letter in _GRANTING]
                if granted and not _hash_matches(trust_obj, value):
                    # NSS (nssTrust_Create) gives a trust object whose certificate hash is not this
                    # certificate's no trust; issuer and serial alone find it. Distrust still counts.
                    letters = {p: ("" if p in granted else letter) for p, letter in letters.items()}
                    self.warnings.append(
                        f"{self.path}: line {trust_obj.line}: the trust object for {label!r} names another "
                        "certificate (its CKA_CERT_SHA1_HASH or CKA_HASH_OF_CERTIFICATE is not this one's hash, or "
                        f"is missing); trust for {', '.join(granted)} not read, as NSS does")
            distrust_after = self._distrust_after(obj)
            if trust_obj is not None:
                for purpose, when in self._distrust_after(trust_obj).items():
                    distrust_after.setdefault(purpose, when)
            extras: dict[str, Any] = {"letters": {p: l for p, l in letters.items() if l}}
            if step_up:
                extras["step_up"] = True
            policy = obj.get("CKA_NSS_MOZILLA_CA_POLICY")
            entries.append(
                Entry(
                    cert,
                    trust=letter_trust(letters, cert, self.warnings, f"{self.path}: line {obj.line}: {label!r}"),
                    label=label,
                    distrust_after=distrust_after,
                    extras={"nss": extras, "certdata": {"mozilla_ca_policy": policy}},
                )
            )
        for key, obj in trusts.items():
            if key in paired:
                continue
            letters, _ = self._letters(obj)
            record = DistrustRecord(
                label=obj.get("CKA_LABEL"),
                issuer=key[0],
                serial=key[1],
                trust=letter_trust(letters, None, self.warnings, f"{self.path}: line {obj.line}"),
                distrust_after=self._distrust_after(obj),
                line=obj.line,
            )
            self.distrust_records.append(record)
            self.warnings.append(
                f"{self.path}: line {obj.line}: trust object {record.label!r} has no certificate (a distrust "
                "record by issuer and serial); a trust set holds certificates, so it is listed apart"
            )
        return TrustSet(entries)

    def _key(self, obj: _Object) -> tuple[bytes, bytes]:
        issuer, serial = obj.get("CKA_ISSUER"), obj.get("CKA_SERIAL_NUMBER")
        if not isinstance(issuer, bytes) or not isinstance(serial, bytes):
            raise self.error(f"line {obj.line}: trust object without CKA_ISSUER and CKA_SERIAL_NUMBER")
        return issuer, serial

    def _letters(self, obj: _Object) -> tuple[dict[str, str], bool]:
        letters = {}
        for name, (kind, value) in obj.attrs.items():
            if kind != "CK_TRUST":
                continue
            for suffix, purpose in _PURPOSE_SUFFIX.items():
                if name.endswith("_" + suffix):
                    letters[purpose] = _LETTERS.get(value, "")
        return letters, obj.get("CKA_TRUST_STEP_UP_APPROVED") == "CK_TRUE"

    def _distrust_after(self, obj: _Object) -> dict[str, datetime]:
        result = {}
        for name, purpose in (("CKA_NSS_SERVER_DISTRUST_AFTER", SERVER_AUTH), ("CKA_NSS_EMAIL_DISTRUST_AFTER", EMAIL)):
            value = obj.get(name)
            if isinstance(value, bytes):
                when = der.parse_time(value)
                if when is None:
                    raise self.error(f"line {obj.line}: {name} is not a UTCTime ({value!r})")
                result[purpose] = when
        return result

    def _objects(self, text: str) -> list[_Object]:
        lines = text.splitlines()
        try:
            start = next(i for i, line in enumerate(lines) if line.strip() == "BEGINDATA") + 1
        except StopIteration:
            raise self.damaged("has no BEGINDATA line: not a certdata.txt file") from None
        objects: list[_Object] = []
        current: _Object | None = None
        i = start
        while i < len(lines):
            line = lines[i].strip()
            number = i + 1
            i += 1
            if not line:
                current = None  # a blank line ends an object
                continue
            if line.startswith("#"):
                continue
            parts = line.split(None, 2)
            if len(parts) < 2:
                raise self.error(f"line {number}: expected ATTRIBUTE TYPE [VALUE], got {line[:60]!r}")
            name, kind = parts[0], parts[1]
            rest = parts[2] if len(parts) > 2 else ""
            if name == "CKA_CLASS":
                current = _Object(number)
                objects.append(current)
            elif current is None:
                raise self.error(f"line {number}: attribute {name} outside an object (no CKA_CLASS before it)")
            if kind == "MULTILINE_OCTAL":
                data = bytearray()
                while True:
                    if i >= len(lines):
                        raise self.damaged(f"line {number}: {name} has no END (truncated file?)")
                    chunk = lines[i].strip()
                    i += 1
                    if chunk == "END":
                        break
                    if chunk.startswith("#"):
                        continue
                    if _OCTAL.sub("", chunk).strip():
                        raise self.error(f"line {i}: {name}: not octal escapes ({chunk[:40]!r})")
                    data.extend(int(m, 8) for m in _OCTAL.findall(chunk))
                value: Any = bytes(data)
            elif kind == "UTF8":
                if not (rest.startswith('"') and rest.endswith('"') and len(rest) >= 2):
                    raise self.error(f"line {number}: {name}: UTF8 value must be quoted")
                value = _unescape(rest[1:-1])
            else:
                value = rest
            if name in current.attrs:  # NSS's builtins module (builtins_mdObject_GetAttribute) returns the first
                self.warnings.append(f"{self.path}: line {number}: {name} given again in one object; "
                                     "the first counts, as in NSS")
                continue
            current.attrs[name] = (kind, value)
        return objects


def _unescape(text: str) -> str:
    if "\\" not in text:
        return text
    raw = _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), text).replace('\\"', '"').replace("\\\\", "\\")
    try:
        return raw.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return raw


