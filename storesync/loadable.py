"""Would the programs that read a store load this certificate? A damaged certificate written into
a bundle or a keystore makes OpenSSL, Python's `ssl` or keytool refuse the *whole* file, so a
certificate goes only into stores whose readers load it (see `refusal`).

Readers, as a store kind declares them (`Store.reader`):

- `crypt32` (sst, reg): Windows is lenient and keeps bytes; it needs a certificate's outline,
  well-formed all through (it decodes every field, not what is inside names and extensions).
- `openssl` (pem, dir, p7b): what OpenSSL's `d2i_X509` accepts, asked of the system's libcrypto
  itself (it takes BER-ish quirks of real roots that `cryptography` refuses).
- `java` (jks, p12), `nss`: OpenSSL's verdict, and what Java checks beyond it: the two signature
  algorithm fields agree, the public key decodes, and the rest parses (`cryptography`), except for
  the DER quirks of real roots that Java and NSS read (an encoded DEFAULT, a bad DisplayText).

A self-signed root whose own signature fails is never an anchor (`bad_self_signature`).
Kept out of the one-shot path until a sync adds something: libcrypto is loaded on first use.

Verdicts are pure functions of a certificate's bytes, so a *passed* check is remembered by the
SHA-256 of the DER in the state dir (`remember_in`, `save`) and not run again: only a cache file
that the current user (or root) alone can write is believed. Refusals are never cached. Two
more such functions are kept there for the certificates a sync adds, which would otherwise walk
every one's DER again at every run: that `ca_only` lets it in (`may_anchor`; a refusal is not
remembered either) and its default label (`label`); and, for `list`, the subject and dates it
reads from the bytes (`outline`).
"""

from __future__ import annotations

from storesync import der

CRYPT32, OPENSSL, JAVA, NSS = "crypt32", "openssl", "java", "nss"
NAMES = {CRYPT32: "Windows", OPENSSL: "OpenSSL", JAVA: "Java's keytool", NSS: "NSS"}
_SLOTS = {reader: f"_refusal {reader}" for reader in NAMES}  # one key string per reader, for every certificate
_RSA, _EC = "1.2.840.113549.1.1.1", "1.2.840.10045.2.1"
#: cryptography's refusals that are DER strictness about real roots which Java and NSS read.
_TOLERATED = ("EncodedDefault", "DisplayText::VisibleString")


def refusal(cert, reader: str) -> str | None:
    """Why the programs of `reader` would not load `cert` (None: they would)."""
    cache = cert.__dict__  # kept on the certificate, beside its other facts (not a dict of its own each)
    slot = _SLOTS.get(reader) or f"_refusal {reader}"
    if slot not in cache:
        known = _known(cert.sha256, reader)
        cache[slot] = None if known else _refusal(cert, reader)
        if cache[slot] is None and not known and _openssl() is not None:
            _remember(cert.sha256, reader)  # a stand-in judge's pass (no libcrypto) is not remembered
    return cache[slot]


# --- passed checks, remembered by SHA-256 of the DER ----------------------------------------

_RULES = "storesync-passed-checks 1"  # the first line; bumped when a check changes, so older verdicts go
_CACHE_NAME = "passed-checks"
_MAX_REMEMBERED = 500_000  # lines (about 70 bytes each): beyond it, start afresh
#: The checks a line may name (a line naming another vouches for nothing).
_CHECKS = (*NAMES, "signature", "x509", "nss-empty-password", "anchor")
# A passed check is kept as one int in its check's set: the first 128 bits of the SHA-256 it
# names (a forged certificate passing for a remembered one is a second preimage of 128 bits).
# A set of the lines' strings held three times the file, as much as a 10 000-certificate store.
_passed: dict[str, set[int]] = {name: set() for name in _CHECKS}  # from the file, or passed in this process
_notes: dict[int, str] = {}  # the rare x509 line's note (its parse warning, base64, a dot), by prefix
_labels: dict[int, bytes] = {}  # a "label" line's note (a certificate's default label, base64, a dot), by prefix
_outlines: dict[int, bytes] = {}  # an "outline" line's note (subject and validity as `list` shows them, JSON, a dot)
_added: list[tuple] = []  # (sha256, check, note) passed in this process, for `save` to add to the file
_cache_dir = None
# The file's lines as read (after its header), looked up where they lie: the file keeps every
# certificate this machine ever checked, and a parse of every line (1 µs each: 21 ms for 21 000)
# was paid by every run, even one that asks nothing (a no-op sync). A lookup scans the file in
# C (0.1-0.2 ms for 21 000 lines, about 1/150 of the parse), so past `_BULK_AFTER` lookups the
# file is parsed once: a run asking about a few certificates never parses it, and one asking
# about many pays at most a tenth more than the parse.
_file = b""
_lookups = 0
_BULK_AFTER = 16


def _prefix(sha: str) -> int | None:
    if len(sha) != 64:
        return None
    try:
        return int(sha[:32], 16)
    except ValueError:
        return None


def _known(sha: str, name: str) -> bool:
    """Did the check `name` pass for the certificate of SHA-256 `sha` (this run, or the file)?"""
    prefix = _prefix(sha)
    if prefix is None:
        return False
    if prefix not in _passed[name] and _file and _in_file(sha, name) is not None:
        return True
    return prefix in _passed[name]  # (the file may have been parsed whole meanwhile)


def _in_file(sha: str, name: str) -> bytes | None:
    """The note of the file's last line for `sha` and check `name` (b"" for a line without one),
    as `_believe` would read it; None without such a line, or once the file is parsed whole."""
    global _file, _lookups
    _lookups += 1
    if _lookups > _BULK_AFTER:  # many lookups: one parse of every line is cheaper now, read
        _file = b""  # line by line again, the bytes let go first: never both held (~1.6x the file)
        file = _open_cache()
        if file is not None:
            with file:
                try:
                    _believe(file)
                except OSError:
                    pass
        return None
    key = f"{sha} {name}".encode()
    found, at = None, _file.find(key)
    while at >= 0:
        end = _file.find(b"\n", at + len(key))
        rest = _file[at + len(key):end] if end >= 0 and (at == 0 or _file[at - 1] == 10) else None
        if rest == b"":  # (None: not at a line's start, or the last line, cut short)
            found = found or b""
        elif rest and rest[:1] == b" " and name in _NOTED and rest[-1:] == b".":
            found = rest[1:]  # a parse warning (x509), a default label or an outline
        at = _file.find(key, at + 1)
    return found


def remember_in(directory) -> None:
    """Believe the passed checks kept in `directory` (the state dir), if only we can change them:
    a file another user could write might vouch for a forged root. `directory` may be a function
    returning it, called only the first time (a write's child, run as a database's owner, must
    not look for that user's own state dir: it imports platformdirs)."""
    import os

    global _cache_dir, _file, _lookups
    if _cache_dir is not None:
        return
    if callable(directory):
        directory = directory()
    _cache_dir = directory
    file = _open_cache()
    if file is None:
        return
    with file:
        try:
            size = os.fstat(file.fileno()).st_size - file.tell()  # read at once: no second copy
            _file, _lookups = file.read(max(size, 0)), 0  # looked up where its lines lie (`_in_file`)
        except OSError:
            pass  # a cache: what was not read is checked again


def _believe(file) -> None:
    """The checks the lines of `file` (after its header) say passed, read line by line: the
    file and a list of its lines held at once were ~2.5x the file."""
    sets = {name.encode(): _passed[name] for name in _CHECKS}
    noted = {b"label": _notes_of("label"), b"outline": _notes_of("outline")}
    for line in file:  # "SHA-256 hex, space, check[, space, note ending with a dot]"
        if line[-1:] != b"\n":
            break  # the last line, cut short by a run killed while saving: it vouches for nothing
        check, note = line[65:-1], None
        if check not in sets:
            check, _, note = check.partition(b" ")  # a parse warning (x509), a default label or an outline
            if check != b"x509" and check not in noted or note[-1:] != b".":
                continue  # no check this version runs, or a note cut short (see `save`)
        if line[64:65] != b" ":
            continue
        try:
            prefix = int(line[:32], 16)
        except ValueError:
            continue
        if check in noted:  # not a check: the label or outline itself
            noted[check][prefix] = note
            continue
        sets[check].add(prefix)
        if note:
            _notes[prefix] = note.decode("ascii", "replace")


def _open_cache():
    """The cache file, opened after its header line, if it is ours alone and of these rules
    (None otherwise)."""
    import os

    try:
        fd = os.open(os.path.join(_cache_dir, _CACHE_NAME), os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    file = os.fdopen(fd, "rb")
    try:
        if _private(os.fstat(fd)) and _private(os.stat(_cache_dir)) and file.readline() == _RULES.encode() + b"\n":
            return file
    except OSError:
        pass
    file.close()
    return None


def passed(check: str) -> bool:
    """Did the check `check` ("SHA-256 of the bytes it judged, space, its name") pass, in this
    process or in an earlier one (`remember_in`)?"""
    sha, _, name = check.partition(" ")
    return name in _passed and _known(sha, name)


def remember(check: str) -> None:
    """Keep a passed check for `save`: only one whose verdict is a pure function of the bytes
    its SHA-256 names, and that no secret went into (the file keeps only the hash)."""
    _remember(*check.partition(" ")[::2])


def _remember(sha: str, name: str, note: str | None = None) -> None:
    """`remember`, with the certificate's own `sha256` string kept (not a line made for each).
    A check remembered already (with the same note) is not added again: the file would say it twice."""
    prefix = _prefix(sha)
    if prefix is None or name not in _passed:
        raise ValueError(f"not a check this version remembers: {sha} {name}")
    if _known(sha, name) and (name != "x509" or _x509_note(sha) == note):
        return
    _passed[name].add(prefix)
    if note:
        _notes[prefix] = note
    _added.append((sha, name, note))


def may_anchor(cert) -> bool:
    """`cert.may_anchor` (what `ca_only` lets in), remembered when it is true: a pure function
    of the bytes, which otherwise walks the certificate's fields and extensions at every run."""
    if "may_anchor" not in cert.__dict__ and _known(cert.sha256, "anchor"):
        cert.__dict__["may_anchor"] = True
    elif cert.may_anchor:
        _remember(cert.sha256, "anchor")
    return cert.may_anchor


def label(cert) -> str:
    """`cert.default_label`, remembered (a pure function of the bytes, which otherwise walks
    its fields and subject at every run): a sync prints, records and names with the label of
    every certificate it adds."""
    if "default_label" in cert.__dict__:
        return cert.default_label
    import binascii  # here: `list` of a store with labels of its own never needs it

    prefix, note = _noted(cert.sha256, "label")
    if note is not None:
        try:  # without the dot every note ends with (a note cut short is not read: `_believe`)
            text = binascii.a2b_base64(note[:-1].translate(_URLSAFE_BYTES)).decode("utf-8")
        except ValueError:
            text = ""  # not a note this version wrote: worked out again
        if text and len(text.translate(_CONTROLS)) == len(text):  # as `default_label` makes them: no line break, no ESC
            cert.__dict__["default_label"] = text
            return text
    text = cert.default_label
    if prefix is not None:
        note = binascii.b2a_base64(text.encode("utf-8"), newline=False).translate(_TO_URLSAFE) + b"."
        _labels[prefix] = note
        _added.append((cert.sha256, "label", note.decode("ascii")))
    return text


def outline(cert):
    """(subject, notBefore, notAfter) as `Certificate._outline` reads them from the bytes, when
    remembered (None otherwise): `list` shows every certificate by them, and working them out
    again walks its subject and validity at every run (two fifths of a `list` of the system roots)."""
    note = _noted(cert.sha256, "outline")[1]
    if note is None:
        return None
    import json  # imported already (storesync.state)

    datetime, timezone = der.dates()

    try:
        subject, before, after = json.loads(note[:-1].decode())  # (bytes: json finds their encoding first)
        before, after = datetime.fromisoformat(before), datetime.fromisoformat(after)
        # As `remember_outline` writes them, in UTC to the second: a date without its zone cannot
        # be compared with another (`--expiring`), and one with a fraction is not what `list` prints
        if type(subject) is str and all(when.tzinfo is timezone.utc and not when.microsecond for when in (before, after)):
            return subject, before, after
    except (ValueError, TypeError, RecursionError):  # RecursionError: arrays nested thousands deep
        pass
    return None  # not a note this version wrote: worked out again


def outlined(sha: str) -> bool:
    """Is an outline remembered for the certificate of SHA-256 `sha`? Only a run that read its
    fields from these bytes remembers one (`Certificate._outline`), so they have a certificate's
    outline: a reader need not walk them again to know (`Certificate.check_outline`)."""
    return _noted(sha, "outline")[1] is not None


def remember_outline(cert, subject: str, not_before, not_after) -> None:
    prefix = _prefix(cert.sha256)
    if prefix is not None:
        import json

        # JSON, not base64: ASCII without a line break as well, and most subjects stay as they are
        note = json.dumps([subject, not_before.isoformat(), not_after.isoformat()]).encode() + b"."
        _outlines[prefix] = note
        _added.append((cert.sha256, "outline", note.decode("ascii")))


_NOTED = ("x509", "label", "outline")  # the lines with a note: a parse warning, a default label, an outline


def _notes_of(name: str) -> dict[int, bytes]:
    """The notes of the label or outline lines, by prefix: named when asked, not kept in a table of
    them, as tests put fresh dicts in their place."""
    return _labels if name == "label" else _outlines


def _noted(sha: str, name: str) -> tuple[int | None, bytes | None]:
    """(prefix, note) of the label or outline remembered for the certificate of SHA-256 `sha`."""
    prefix, table = _prefix(sha), _notes_of(name)
    note = table.get(prefix)
    if note is None and _file and prefix is not None:
        note = _in_file(sha, name) or None
        note = table.get(prefix, note)  # the file may have been parsed whole meanwhile
    return prefix, note


def remembered_parse(cert) -> tuple[str | None] | None:
    """(its warning or None,) when it is remembered that `cryptography` parses these bytes (a pass
    of the Java and NSS check), else None: `list` then shows the certificate without importing it."""
    if not _known(cert.sha256, "x509"):
        return None
    note = _x509_note(cert.sha256)
    if note is None:
        return (None,)
    import binascii

    try:  # base64.urlsafe_b64decode of it without its dot, not importing base64 (most certificates have no warning)
        return (binascii.a2b_base64(note[:-1].translate(_URLSAFE)).decode("utf-8"),)
    except ValueError:
        return None  # not a note this version wrote: the certificate is parsed again


def _x509_note(sha: str) -> str | None:
    """The parse warning remembered with a certificate's x509 check (None: none)."""
    prefix = _prefix(sha)
    note = _notes.get(prefix)
    if note is None and _file and prefix is not None:
        note = (_in_file(sha, "x509") or b"").decode("ascii", "replace") or None
        note = _notes.get(prefix, note)  # the file may have been parsed whole meanwhile
    return note


def remember_parse(sha256: str, warning: str | None) -> None:
    import base64  # here: a warning is rare, and `list` imports nothing it does not use

    note = None if warning is None else base64.urlsafe_b64encode(warning.encode("utf-8")).decode("ascii") + "."
    _remember(sha256, "x509", note)


def forget_parse(cert) -> None:
    """Drop `cryptography`'s objects for `cert` (about 2.5 KB a certificate), remembering what
    its parse said: a later run shows the certificate without parsing it again."""
    parsed = cert.__dict__.pop("_parsed", None)
    if parsed is not None and parsed[0] is not None:
        remember_parse(cert.sha256, parsed[1])


_URLSAFE = str.maketrans("-_", "+/")
_URLSAFE_BYTES, _TO_URLSAFE = bytes.maketrans(b"-_", b"+/"), bytes.maketrans(b"+/", b"-_")
_CONTROLS = dict.fromkeys([*range(0x20), *range(0x7F, 0xA0)])  # what storesync.model.printable shows as ?


def _private(st) -> bool:
    import os

    return st.st_uid in (os.geteuid(), 0) and not st.st_mode & 0o022


def save() -> None:
    """Keep what passed for the next run (best effort: a lost cache costs time, never safety):
    this process's lines are appended to the file (what other runs added meanwhile stays, and
    the file is not read again), or start it afresh when it is missing, of other rules, not
    ours alone, or beyond `_MAX_REMEMBERED` lines."""
    import os

    if _cache_dir is None or not _added:
        return
    path = os.path.join(_cache_dir, _CACHE_NAME)
    head = _RULES.encode() + b"\n"
    try:
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_NOFOLLOW)
    except OSError:
        fd = None
    try:
        if fd is not None:
            st = os.fstat(fd)
            if (_private(st) and _private(os.stat(_cache_dir)) and st.st_size < 80 * _MAX_REMEMBERED
                    and os.pread(fd, len(head), 0) == head):
                if os.pread(fd, 1, st.st_size - 1) != b"\n":  # a line cut short by a crash stays a line
                    os.write(fd, b" (cut short)\n")  # of its own, and names no check: no note ends so
                while _added:  # a batch at a time, each dropped once wholly written: a failed save
                    piece = memoryview(_text(_added[:_BATCH]))  # appends none of them twice when tried again
                    while piece:
                        piece = piece[os.write(fd, piece):]
                    del _added[:_BATCH]
                return
        _start_afresh(path, head, _lines())
        _added.clear()
    except OSError:
        pass
    finally:
        if fd is not None:
            os.close(fd)


def forget() -> None:
    """Save, then let go of the remembered checks (~1.35x their file, held through writes that
    ask none of them but an NSS database's password check, kept); the next `remember_in` reads
    them again. Kept if they could not be saved."""
    global _cache_dir, _file
    save()
    if _added:
        return
    _file = b""
    for name, remembered in _passed.items():
        if name != "nss-empty-password":
            remembered.clear()  # a cleared set lets its table go
    _notes.clear()
    _labels.clear()
    _outlines.clear()
    _cache_dir = None


_BATCH = 1024  # lines written at once


def _lines():
    """`_added` as the file's lines, a batch at a time: a first sync of 10 000 roots remembers
    50 000 checks, and their text made whole was a fifth of its peak memory. Each batch is whole
    lines, so another run appending between two batches interleaves none."""
    for start in range(0, len(_added), _BATCH):
        yield _text(_added[start : start + _BATCH])


def _text(entries) -> bytes:
    return "".join(f"{sha} {name} {note}\n" if note else f"{sha} {name}\n"
                   for sha, name, note in entries).encode("ascii", "replace")


def _start_afresh(path: str, head: bytes, lines) -> None:
    import os

    temp = f"{path}.{os.getpid()}.tmp"
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as file:
            file.write(head)
            for piece in lines:
                file.write(piece)
        os.replace(temp, path)
    except OSError:
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise


def _refusal(cert, reader: str) -> str | None:
    problem = outline_error(cert, deep=reader == CRYPT32)  # deeper down, d2i_X509 is the judge
    if problem or reader == CRYPT32:
        return problem and f"damaged: not a certificate ({problem})"
    if not openssl_loads(cert):
        return "damaged: OpenSSL cannot decode it"
    if reader == OPENSSL:
        return None
    return _java_refusal(cert) or (_java_name_refusal(cert) if reader == JAVA else None)


def outline_error(cert, deep: bool = True) -> str | None:
    """A certificate's outline: SEQUENCE { TBSCertificate, AlgorithmIdentifier, BIT STRING },
    with times for validity and, if `deep`, well-formed all through (crypt32 decodes every field)."""
    try:
        certificate = der.read_all(cert.der)
        parts = list(certificate.children())
        if len(parts) != 3 or [p.tag for p in parts] != [der.SEQUENCE, der.SEQUENCE, 0x03]:
            return "its outline is not SEQUENCE { tbs, algorithm, signature }"
        validity = list(der.read_all(cert.fields.validity).children())
        if [v.tag in (0x17, 0x18) for v in validity] != [True, True]:
            return "its validity is not two times"
        if deep:
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


_libcrypto = None


def openssl_loads(cert) -> bool:
    """OpenSSL's own answer: `d2i_X509` takes all of the certificate. Without a libcrypto to ask
    (a statically linked Python), `cryptography`'s parse stands in (it refuses more, never less)."""
    return _verdict(cert) is not None if _openssl() is not None else cert.x509 is not None


def _verdict(cert) -> int | None:
    """libcrypto's `examine` of a certificate, once: a self-signed one has its signature checked
    in the same decode."""
    if "_openssl" not in cert.__dict__:
        cert.__dict__["_openssl"] = _openssl().examine(cert.der, _self_signed(cert))
    return cert.__dict__["_openssl"]


def _openssl():
    """The system's libcrypto with `examine(der, verify)`: None if d2i_X509 refuses `der`, else
    X509_verify against its own key when asked (1 verifies, 0 fails, -1 unsupported algorithm,
    as md2), else 1."""
    global _libcrypto
    if _libcrypto is None:
        _libcrypto = _load_libcrypto() or False
    return _libcrypto or None


def _load_libcrypto():
    import ctypes

    from storesync.libcrypto import libcrypto

    lib = libcrypto()
    try:
        d2i, free, key, verify, clear = lib.d2i_X509, lib.X509_free, lib.X509_get0_pubkey, lib.X509_verify, lib.ERR_clear_error
    except AttributeError:  # none at all (None has no such attribute), or one without them
        return None
    pointer_type = ctypes.c_void_p
    d2i.restype, d2i.argtypes = pointer_type, [pointer_type, ctypes.POINTER(ctypes.c_char_p), ctypes.c_long]
    free.restype, free.argtypes = None, [pointer_type]
    key.restype, key.argtypes = pointer_type, [pointer_type]
    verify.restype, verify.argtypes = ctypes.c_int, [pointer_type, pointer_type]
    clear.restype, clear.argtypes = None, []

    def examine(data: bytes, check_signature: bool) -> int | None:
        cursor = ctypes.c_char_p(data)
        start = ctypes.cast(cursor, pointer_type).value
        x509 = d2i(None, ctypes.byref(cursor), len(data))
        try:
            if not x509 or ctypes.cast(cursor, pointer_type).value - start != len(data):  # no trailing bytes
                return None
            if not check_signature:
                return 1
            public_key = key(x509)
            return verify(x509, public_key) if public_key else -1
        finally:
            if x509:
                free(x509)
            clear()  # leave no error queued for Python's ssl to trip over

    lib.examine = examine
    return lib


def _java_refusal(cert) -> str | None:
    tbs, outer_algorithm, _ = der.read_all(cert.der).children()
    fields = list(tbs.children())
    inner_algorithm = fields[2 if fields[0].tag == 0xA0 else 1]
    if inner_algorithm.raw != outer_algorithm.raw:
        return "damaged: its two signature algorithm fields differ"
    parsed_before = "_parsed" in cert.__dict__
    try:
        if cert.x509 is None and not any(quirk in (cert.parse_warning or "") for quirk in _TOLERATED):
            return f"damaged: {cert.parse_warning.removeprefix('cryptography ').removesuffix('; kept as bytes')}"
        if cert.x509 is not None:
            remember_parse(cert.sha256, cert.parse_warning)
    finally:
        if not parsed_before:  # the verdict is kept, not `cryptography`'s objects
            forget_parse(cert)
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


def _java_name_refusal(cert) -> str | None:
    """The names Java's certificate parser refuses (sun.security.x509.X509CertInfo) and the
    other readers take: an empty issuer, and an empty subject that no critical, non-empty
    subjectAltName stands in for. keytool then refuses the whole keystore."""
    fields = cert.fields
    if _empty_name(fields.issuer):
        return "damaged: its issuer name is empty"
    if _empty_name(fields.subject) and not _critical_alt_names(fields):
        return "damaged: its subject name is empty, and no critical subjectAltName stands in for it"
    return None


def _empty_name(name: bytes) -> bool:
    try:
        element = der.read_all(name)
    except der.DERError:
        return False  # another check's to judge
    return element.content == element.end


def _critical_alt_names(fields) -> bool:
    """A critical subjectAltName extension holding at least one name."""
    if fields.extensions is None:
        return False
    try:
        for extension in next(fields.extensions.children()).children():
            parts = list(extension.children())
            if der.decode_oid(parts[0].value) == "2.5.29.17":
                names = der.read_all(parts[-1].value)
                critical = len(parts) == 3 and parts[1].tag == 0x01 and parts[1].value != b"\x00"
                return critical and names.content < names.end
    except (der.DERError, StopIteration, IndexError):
        pass
    return False


def bad_self_signature(cert) -> bool:
    """A self-signed certificate whose signature fails with an algorithm OpenSSL supports (md5
    and sha1 roots are checked; md2 roots of old Windows lists are not judged: unsupported is not
    failed). Without a libcrypto, `cryptography` judges (it supports no md5 or sha1)."""
    if "_bad_signature" not in cert.__dict__:
        known = _known(cert.sha256, "signature")
        cert.__dict__["_bad_signature"] = not known and _self_signed(cert) and _signature_fails(cert)
        if not known and (not _self_signed(cert) or _openssl() is not None and _verdict(cert) == 1):
            _remember(cert.sha256, "signature")  # not self-signed, or verified by libcrypto (not merely unsupported)
    return cert.__dict__["_bad_signature"]


def _self_signed(cert) -> bool:
    if "_self_signed" not in cert.__dict__:  # asked twice per certificate added: once is enough
        cert.__dict__["_self_signed"] = _signed_by_own_key(cert)
    return cert.__dict__["_self_signed"]


def _signed_by_own_key(cert) -> bool:
    try:
        fields = cert.fields
    except der.DERError:
        return False
    if fields.issuer != fields.subject:
        return False
    extensions = der.extensions(fields) or {}
    ski, aki = extensions.get("2.5.29.14"), extensions.get("2.5.29.35")
    return not (ski and aki and ski[2:] not in aki)  # else self-issued by another key (a key rollover)


def _signature_fails(cert) -> bool:
    if _openssl() is not None:
        return _verdict(cert) == 0
    if cert.x509 is None:
        return False
    from cryptography.exceptions import InvalidSignature

    try:
        cert.x509.verify_directly_issued_by(cert.x509)
    except InvalidSignature:
        return True
    except Exception:  # noqa: BLE001 - unsupported algorithm or key: not ours to judge
        return False
    return False
