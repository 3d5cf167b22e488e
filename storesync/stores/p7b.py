"""`p7b`: PKCS#7 certificate bundles (`.p7b`, `.p7c`), DER or PEM (`-----BEGIN PKCS7-----`).

A bundle is a degenerate SignedData: no signers, certificates in `[0]` (docs/formats.md §4.5). It carries
nothing but certificates: no labels, no purposes, no distrust, so every certificate read is a plain
anchor and a plan into it reports what it cannot keep. Certificates are taken from the SignedData as
their exact bytes (walked with `storesync.der`; `cryptography` would re-encode them), so serial-0 and
other certificates `cryptography` refuses are kept too.

Written as Windows writes it: DER, version 1, empty digestAlgorithms, content type `data` without
content, the certificates in order, no CRL field, empty signerInfos. `?format=pem` (or an existing
PEM file) writes PEM armor around the same bytes. A file whose certificates are already the desired
ones in the same order is left exactly as it is.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import textwrap
import warnings

from storesync import der
from storesync.fsio import read_bytes
from storesync.model import Capabilities, Certificate, Entry, TrustSet
from storesync.stores import FileStore, Values
from storesync.stores.winprops import in_store_order

SIGNED_DATA = der.encode_oid("1.2.840.113549.1.7.2")
DATA = der.encode_oid("1.2.840.113549.1.7.1")
_ARMOR = re.compile(rb"-----BEGIN PKCS7-----\s*(.*?)-----END PKCS7-----", re.S)


class P7bStore(FileStore):
    kind = "p7b"
    options = ("format",)
    values = {"format": Values("der", "pem")}
    capabilities = Capabilities()

    def parse(self, data: bytes) -> TrustSet:
        return TrustSet(Entry(Certificate(raw)) for raw in self._certificates(data))

    def _certificates(self, data: bytes) -> list[bytes]:
        if not data.strip():
            return []
        body = _unarmor(data)
        if body is None:
            raise self.error("has a -----BEGIN PKCS7----- block that is not valid base64 or has no END line")
        try:
            return certificates_of(body)
        except der.DERError as exc:
            reason = str(exc)
        # Not DER (e.g. BER with indefinite lengths): let cryptography try, keeping its bytes only as a last resort.
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.serialization import pkcs7

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                certs = pkcs7.load_der_pkcs7_certificates(body)
        except Exception:  # noqa: BLE001
            raise self.damaged(f"is not a PKCS#7 certificate bundle ({reason})") from None
        self.warnings.append(f"{self.path}: not DER ({reason}); certificates as re-encoded by cryptography")
        return [cert.public_bytes(serialization.Encoding.DER) for cert in certs]

    def render(self, plan) -> bytes:
        entries = [e for e in in_store_order(plan) if not e.distrusted]
        wanted = [e.cert.der for e in entries]
        pem = self.option("format") == "pem"
        if os.path.exists(self.path):
            try:
                existing = read_bytes(self.path)
                pem = pem or b"-----BEGIN PKCS7-----" in existing
                if self._certificates(existing) == wanted:
                    return existing  # nothing to change: keep the file as it is, whoever wrote it
            except Exception:  # noqa: BLE001 - an unreadable file is simply replaced
                pass
        data = bundle(wanted)
        if pem:
            body = "\n".join(textwrap.wrap(base64.b64encode(data).decode("ascii"), 64))
            return f"-----BEGIN PKCS7-----\n{body}\n-----END PKCS7-----\n".encode("ascii")
        return data


def _unarmor(data: bytes) -> bytes | None:
    if b"-----BEGIN PKCS7-----" not in data:
        return data
    match = _ARMOR.search(data)
    if match is None:
        return None
    try:
        return base64.b64decode(b"".join(match.group(1).split()), validate=True)
    except (binascii.Error, ValueError):
        return None


def certificates_of(data: bytes) -> list[bytes]:
    """The certificates of a DER PKCS#7 SignedData, each as its exact bytes. Raises DERError."""
    content_info = der.read_all(data)
    if content_info.tag != der.SEQUENCE:
        raise der.DERError("offset 0: not a ContentInfo SEQUENCE")
    parts = list(content_info.children())
    if len(parts) < 2 or parts[0].raw != SIGNED_DATA:
        raise der.DERError("offset 0: the content type is not signedData (1.2.840.113549.1.7.2)")
    if parts[1].tag != 0xA0:
        raise der.DERError(f"offset {parts[1].start}: no [0] content")
    signed = next(parts[1].children(), None)
    if signed is None:
        raise der.DERError(f"offset {parts[1].start}: no SignedData in [0]")
    fields = list(signed.children())
    if len(fields) < 4 or fields[0].tag != der.INTEGER:
        raise der.DERError(f"offset {signed.start}: not a SignedData")
    certs = []
    for part in fields[3:]:
        if part.tag != 0xA0:
            continue  # [1] CRLs, signerInfos
        for choice in part.children():
            if choice.tag == der.SEQUENCE:
                certs.append(choice.raw)
    return certs


def bundle(certs: list[bytes]) -> bytes:
    """DER SignedData as Windows writes it: version 1, {} digests, data, [0] certs, no [1], {} signers."""
    signed = der.encode(
        der.SEQUENCE,
        der.encode(der.INTEGER, b"\x01")
        + der.encode(der.SET, b"")
        + der.encode(der.SEQUENCE, DATA)
        + der.encode(0xA0, b"".join(certs))
        + der.encode(der.SET, b""),
    )
    return der.encode(der.SEQUENCE, SIGNED_DATA + der.encode(0xA0, signed))
