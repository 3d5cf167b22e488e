"""Would the programs that read a store load this certificate? A damaged certificate written into
a bundle or a keystore makes OpenSSL, Python's `ssl` or keytool refuse the *whole* file, so a
certificate goes only into stores whose readers load it (see `refusal`).

Readers, as a store kind declares them (`Store.reader`):

- `crypt32` (sst, reg): Windows is lenient and keeps bytes; it needs a certificate's outline.
- `openssl` (pem, dir, p7b): what OpenSSL's `d2i_X509` accepts, asked of the system's libcrypto
  itself (it takes BER-ish quirks of real roots that `cryptography` refuses).
- `java` (jks, p12), `nss`: OpenSSL's verdict, and what Java checks beyond it: the two signature
  algorithm fields agree, the public key decodes, and the rest parses (`cryptography`), except for
  the DER quirks of real roots that Java and NSS read (an encoded DEFAULT, a bad DisplayText).

Kept out of the one-shot path until a sync adds something: libcrypto is loaded on first use.
"""

from __future__ import annotations

from storesync import der

CRYPT32, OPENSSL, JAVA, NSS = "crypt32", "openssl", "java", "nss"
NAMES = {CRYPT32: "Windows", OPENSSL: "OpenSSL", JAVA: "Java's keytool", NSS: "NSS"}
_RSA, _EC = "1.2.840.113549.1.1.1", "1.2.840.10045.2.1"
#: cryptography's refusals that are DER strictness about real roots which Java and NSS read.
_TOLERATED = ("EncodedDefault", "DisplayText::VisibleString")


def refusal(cert, reader: str) -> str | None:
    """Why the programs of `reader` would not load `cert` (None: they would)."""
    cache = cert.__dict__.setdefault("_refusals", {})
    if reader not in cache:
        cache[reader] = _refusal(cert, reader)
    return cache[reader]


def _refusal(cert, reader: str) -> str | None:
    problem = outline_error(cert.der)
    if problem or reader == CRYPT32:
        return problem and f"damaged: not a certificate ({problem})"
    if not openssl_loads(cert.der):
        return "damaged: OpenSSL cannot decode it"
    if reader == OPENSSL:
        return None
    return _java_refusal(cert)


def outline_error(data: bytes) -> str | None:
    """A certificate's outline: SEQUENCE { TBSCertificate, AlgorithmIdentifier, BIT STRING },
    well-formed all through (crypt32 decodes every field of it), with times for validity."""
    try:
        certificate = der.read_all(data)
        parts = list(certificate.children())
        if len(parts) != 3 or [p.tag for p in parts] != [der.SEQUENCE, der.SEQUENCE, 0x03]:
            return "its outline is not SEQUENCE { tbs, algorithm, signature }"
        validity = list(der.read_all(der.cert_fields(data).validity).children())
        if [v.tag in (0x17, 0x18) for v in validity] != [True, True]:
            return "its validity is not two times"
        _walk(certificate, 0)
    except der.DERError as exc:
        return str(exc)
    return None


def _walk(element: der.TLV, depth: int) -> None:
    if depth > 32:
        raise der.DERError("nested too deep")
    if element.tag & 0x20:  # constructed: its content is elements
        for child in element.children():
            _walk(child, depth + 1)


_d2i = None


def openssl_loads(data: bytes) -> bool:
    """OpenSSL's own answer: `d2i_X509` takes all of `data`. Without a libcrypto to ask,
    `cryptography`'s parse stands in (it refuses more, never less, in practice)."""
    global _d2i
    if _d2i is None:
        _d2i = _load_d2i() or False
    if not _d2i:
        from storesync.model import Certificate

        return Certificate(data).x509 is not None
    return _d2i(data)


def _load_d2i():
    import ctypes
    import ctypes.util

    try:
        lib = ctypes.CDLL(ctypes.util.find_library("crypto") or "libcrypto.so.3")
        d2i, free = lib.d2i_X509, lib.X509_free
    except (OSError, AttributeError):
        return None
    d2i.restype, d2i.argtypes = ctypes.c_void_p, [ctypes.c_void_p, ctypes.POINTER(ctypes.c_char_p), ctypes.c_long]
    free.restype, free.argtypes = None, [ctypes.c_void_p]
    lib.ERR_clear_error.restype, lib.ERR_clear_error.argtypes = None, []

    def loads(data: bytes) -> bool:
        pointer = ctypes.c_char_p(data)
        start = ctypes.cast(pointer, ctypes.c_void_p).value
        x509 = d2i(None, ctypes.byref(pointer), len(data))
        lib.ERR_clear_error()  # leave no error queued for Python's ssl to trip over
        if not x509:
            return False
        free(x509)
        return ctypes.cast(pointer, ctypes.c_void_p).value - start == len(data)  # no trailing bytes

    return loads


def _java_refusal(cert) -> str | None:
    tbs, outer_algorithm, _ = der.read_all(cert.der).children()
    fields = list(tbs.children())
    inner_algorithm = fields[2 if fields[0].tag == 0xA0 else 1]
    if inner_algorithm.raw != outer_algorithm.raw:
        return "damaged: its two signature algorithm fields differ"
    if cert.x509 is None and not any(quirk in (cert.parse_warning or "") for quirk in _TOLERATED):
        return f"damaged: {cert.parse_warning.removeprefix('cryptography ').removesuffix('; kept as bytes')}"
    try:
        spki = der.read_all(cert.fields.spki)
        algorithm = der.decode_oid(next(next(spki.children()).children()).value)
    except (der.DERError, StopIteration):
        return "damaged: its public key is not readable"
    if algorithm in (_RSA, _EC):
        from cryptography.hazmat.primitives.serialization import load_der_public_key

        try:
            load_der_public_key(cert.fields.spki)
        except Exception:  # noqa: BLE001 - any refusal: Java refuses the key too
            return "damaged: its public key does not decode"
    return None


def bad_self_signature(cert) -> bool:
    """A self-signed certificate whose signature fails with an algorithm `cryptography` supports
    (md2/md5 roots of old Windows lists are not judged: unsupported is not failed)."""
    try:
        fields = cert.fields
    except der.DERError:
        return False
    if fields.issuer != fields.subject or cert.x509 is None:
        return False
    extensions = der.extensions(fields) or {}
    ski, aki = extensions.get("2.5.29.14"), extensions.get("2.5.29.35")
    if ski and aki and ski[2:] not in aki:  # self-issued by another key (a key rollover): not self-signed
        return False
    from cryptography.exceptions import InvalidSignature

    try:
        cert.x509.verify_directly_issued_by(cert.x509)
    except InvalidSignature:
        return True
    except Exception:  # noqa: BLE001 - unsupported algorithm or key: not ours to judge
        return False
    return False
