"""Store specs, the Store protocol, and the registry of store kinds.

A store spec is `kind:path`, optionally followed by `?option=value&option=value`
(`dir:/srv/ca?links=both`, `sst:roots.sst?role=disallowed`). A bare path is recognised by
its content (or, for a file that does not exist yet, by its name). Store modules are
imported only when a store of their kind is opened, so a command pays only for what it uses.
"""

from __future__ import annotations

import os
import re
import sys

from storesync.fsio import (
    CAS_ATTEMPTS, LOOP, absolute, atomic_write, digest_of, file_digest, odd_file, parent, read_bytes, remove_file,
    replace_if_unchanged, spelled, stat_version,
)
from storesync.model import (
    ANY_EKU, PURPOSES, Capabilities, Certificate, Entry, Record, StoreError, TrustSet, is_purpose, purpose_from_oid,
    purpose_problem,
)

TYPE_CHECKING = False  # typing's, without importing typing at start-up
if TYPE_CHECKING:
    from storesync.engine.plan import Plan

KINDS = {
    "pem": "storesync.stores.pem:PemStore",
    "dir": "storesync.stores.directory:DirStore",
    "anchors": "storesync.stores.anchors:AnchorsStore",
    "nss": "storesync.stores.nss:NssStore",
    "certdata": "storesync.stores.certdata:CertdataStore",
    "sst": "storesync.stores.sst:SstStore",
    "reg": "storesync.stores.reg:RegStore",
    "p7b": "storesync.stores.p7b:P7bStore",
    "jks": "storesync.stores.jks:JksStore",
    "p12": "storesync.stores.p12:P12Store",
    "tuf": "storesync.stores.tuf:TufStore",  # read-only: a policy from `storesync publish`, over HTTP(S)
}
ALIASES = {"sql": "nss", "bundle": "pem", "pkcs12": "p12", "pkcs7": "p7b", "hashdir": "dir"}
EXTENSIONS = {
    ".pem": "pem", ".crt": "pem", ".cer": "pem", ".der": "pem", ".sst": "sst", ".reg": "reg",
    ".p7b": "p7b", ".p7c": "p7b", ".jks": "jks", ".p12": "p12", ".pfx": "p12",
}
CERT_SUFFIXES = {".pem", ".crt", ".cer", ".der"}  # a hashed directory's certificate files
HASH_LINK = r"^[0-9a-f]{8}\.[0-9]+$"  # and its links, named HASH.N (compiled by the directory store, not here)


class StoreSpec(Record):
    """Which store: its kind and path (what makes two specs the same store; a str, spelled as
    pathlib would: see storesync.fsio), and its options."""

    __slots__ = ("kind", "path", "options", "defaults")
    _compared = ("kind", "path")

    def __init__(self, kind: str, path: str | os.PathLike, options: dict[str, str] | None = None,
                 defaults: dict[str, str] | None = None):
        self.kind, self.path = kind, spelled(path)
        self.options = options or {}  # from the spec text
        self.defaults = defaults or {}  # from the command or profile

    @property
    def key(self) -> str:
        """The store's identity for its state (backups, ownership record, stat cache, locks): kind
        and real path, so every name of a store (a symlink to it, or to its folder) is the same."""
        key, named = f"{self.kind}:{os.path.realpath(self.path)}", f"{self.kind}:{absolute(self.path)}"
        if named != key:
            from storesync import state

            state.adopt(named, key)  # what an earlier version kept under this name
        return key

    def __str__(self) -> str:
        query = "&".join(f"{k}={v}" for k, v in self.options.items())
        return f"{self.kind}:{self.path}" + (f"?{query}" if query else "")


def parse_spec(text: str, defaults: dict[str, str] | None = None) -> StoreSpec:
    """`kind:path[?opts]` or a bare path; raises StoreError for an unknown kind.
    `defaults` are options the spec text does not set itself."""
    kind, spec_text = None, text
    head, sep, rest = text.partition(":")
    if sep and (head in KINDS or head in ALIASES):
        kind, text = ALIASES.get(head, head), rest
    elif sep and head.isalnum() and head.islower() and len(head) > 1 and not os.path.exists(text):
        raise StoreError(f"{text}: unknown store kind {head!r} (kinds: {', '.join(KINDS)})")
    text, _, raw = text.partition("?")
    query = parse_query(spec_text, raw)
    typed = os.path.expanduser(text)
    if kind is None:
        kind = detect_kind(typed)
    return StoreSpec(kind, spelled(typed), query, dict(defaults or {}))


def parse_query(spec: str, raw: str) -> dict[str, str]:
    """The options of a spec's `?query` (no escapes: paths as typed). One given twice is a
    mistake, not a value that wins: which of the two was meant cannot be told."""
    query: dict[str, str] = {}
    for item in filter(None, raw.split("&")):
        name, _, value = item.partition("=")
        if name in query:
            raise StoreError(f"{spec}: option {name}= is given twice; give it once")
        query[name] = value
    return query


def detect_kind(typed: str) -> str:
    """Recognise a store by its content; a path that does not exist yet, by its name (typed
    with a trailing `/`: a folder)."""
    path = spelled(typed)
    odd = not_a_file(path)
    if odd:
        raise StoreError(f"{path}: {odd}")
    if os.path.isdir(path):
        try:
            return "nss" if nss_folder(path) else "dir"
        except PermissionError as exc:  # a folder this user may not search
            raise StoreError(f"{path}: {cannot_enter(path, exc)}") from None
    if not os.path.exists(path):
        if typed.endswith("/"):
            return "dir"
        kind = EXTENSIONS.get(_suffix(path))
        if kind is None:
            raise StoreError(
                f"{path}: does not exist and its name does not say which kind of store to create; "
                f"write it as KIND:PATH (kinds: {', '.join(KINDS)})"
            )
        return kind
    if not os.path.isfile(path):  # a pipe (/dev/stdin): its first bytes, once read to tell, are gone
        raise StoreError(f"{path}: is a pipe, whose kind cannot be told without reading what the store's read "
                         f"needs; name the kind: KIND:{path} (pem:{path}, jks:{path}, ...)")
    try:
        head = _head(path)
    except OSError as exc:
        raise StoreError(f"{path}: {cannot_read(exc)}") from None
    return sniff(head) or EXTENSIONS.get(_suffix(path), "pem")


# The files that make a folder an NSS database's (secmod.db alone does not: a stray file of old
# tools, beside certificate files). A dangling link counts: it is the database, mislaid.
NSS_FILES = ("cert9.db", "cert8.db", "key4.db", "key3.db", "pkcs11.txt")


def nss_folder(path: str | os.PathLike) -> str | None:
    """The first file of NSS_FILES the folder holds (None: none). A few lstat calls, never a
    listing: this runs on every read of a hashed directory. PermissionError: the folder cannot
    be entered (searched), so whether it holds one cannot be told."""
    for name in NSS_FILES:
        try:
            os.lstat(os.path.join(path, name))
        except (FileNotFoundError, NotADirectoryError):
            continue
        return name
    return None


def _suffix(path: str) -> str:
    """The extension of a file's name, lower case, as pathlib's `suffix`: from its last dot, none
    for a name that starts there (`.pem`) or ends there (`x.`); `..pem` has `.pem`."""
    name = os.path.basename(spelled(path))
    dot = name.rfind(".")
    return name[dot:].lower() if 0 < dot < len(name) - 1 else ""


def _folder(path: str) -> tuple[str, str] | None:
    """(kind, what it is) of a folder holding an NSS database or certificate files; None: neither."""
    if nss_folder(path):
        return "nss", "an NSS database folder"
    with os.scandir(path) as listing:
        if any(re.match(HASH_LINK, item.name) or os.path.splitext(item.name)[1].lower() in CERT_SUFFIXES for item in listing):
            return "dir", "a hashed directory of certificates"
    return None


def _head(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read(4096)


def readable(data):
    """A binary file to read a store from: the file given (a streamed read), or its bytes as one."""
    import io

    return io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data


def cannot_read(exc: OSError, verb: str = "read") -> str:
    """Why a file or folder could not be read, and what to do when it is the user's permission."""
    why = f"cannot {verb} it ({exc.strerror or exc})"
    return f"{why}; run as a user who may {verb} it, or make it readable to this one" if isinstance(exc, PermissionError) else why


def not_a_file(path: str | os.PathLike) -> str | None:
    """What to say of a store's path or a password file that is nothing to read (see `odd_file`),
    and what to do; None: it is a file, a folder or nothing, which the caller tells apart."""
    what = odd_file(path)
    if what == LOOP:
        return f"is {LOOP} (its links lead to each other, never to a file or folder); correct or remove the link"
    return f"is {what}, not a regular file; name a regular file instead" if what else None


def cannot_enter(folder: str | os.PathLike, exc: PermissionError) -> str:
    """Why a folder this user may not search cannot be read: one it may list (mode 0744 of
    another's) shows its names, but none of its files opens."""
    return cannot_read(exc, "enter" if os.access(folder, os.R_OK) else "list")


def sniff(head: bytes) -> str | None:
    """The kind a file's first bytes announce, if they announce one (a bare path's kind)."""
    found = identify(head)
    if found is not None:
        return found[0]
    if head.startswith(b"\xff\xfe"):
        return "reg"  # UTF-16: only Windows' registry exports are
    return "pem" if head[:1] == b"\x30" else None  # a single DER certificate, maybe damaged


_REG_HEADERS = ("Windows Registry Editor", "REGEDIT4")


def identify(head: bytes) -> tuple[str | None, str] | None:
    """(kind, what it is) of a file whose first bytes are a format's magic number or header
    (kind None: a format storesync does not read); None when they are no format's."""
    text = head.lstrip(b"\xef\xbb\xbf")
    if head.startswith(b"\xfe\xed\xfe\xed"):
        return "jks", "a JKS keystore"
    if head.startswith(b"\xce\xce\xce\xce"):
        return None, "a JCEKS keystore, which storesync does not read"
    if head.startswith(b"\x00\x00\x00\x00CERT"):
        return "sst", "a Windows serialized store (.sst)"
    if head.startswith(b"SQLite format 3\x00"):
        return "nss", "a file of an NSS database"
    if text.startswith(tuple(h.encode() for h in _REG_HEADERS)) or \
            head.startswith(tuple(b"\xff\xfe" + h.encode("utf-16-le") for h in _REG_HEADERS)):
        return "reg", "a registry export (.reg)"
    if b"-----BEGIN PKCS7-----" in text:
        return "p7b", "a PKCS#7 bundle"
    if b"-----BEGIN " in text:
        return "pem", "a PEM file"
    if b"BEGINDATA" in text or b"CKA_CLASS" in text:
        return "certdata", "Mozilla's certdata.txt"
    if head[:1] == b"\x30" and len(head) > 1:
        body = head[2 + (head[1] & 0x7F if head[1] > 0x80 else 0) :]  # after the SEQUENCE's tag and length
        if body.startswith(b"\x02\x01\x03\x30"):  # PFX version 3
            return "p12", "a PKCS#12 keystore"
        if b"\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x07\x02" in head[:32]:  # signedData OID
            return "p7b", "a PKCS#7 bundle"
        if body[:1] == b"\x30" and len(body) > 1:  # a certificate: its TBS, then a version or the serial
            tbs = body[2 + (body[1] & 0x7F if body[1] > 0x80 else 0) :]
            if tbs.startswith(b"\xa0\x03\x02\x01") or tbs[:1] == b"\x02":
                return "pem", "a DER certificate"
    return None


def store_class(kind: str) -> type["Store"]:
    module_name, _, class_name = KINDS[kind].partition(":")
    try:
        __import__(module_name)  # importlib.import_module without importing importlib (0.6 M instructions)
        module = sys.modules[module_name]
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            raise StoreError(f"store kind {kind!r} is not available in this version") from None
        raise
    return getattr(module, class_name)


def open_store(spec: "StoreSpec | str", defaults: dict[str, str] | None = None, written: bool = False) -> "Store":
    """The store of a spec, its options checked; `written`: one a sync may write (a target, a
    merge's store), which a read-only kind refuses before anything is read or planned. A
    StoreSpec (a path a selector found: never parsed) takes `defaults` as its text would."""
    if isinstance(spec, str):
        spec = parse_spec(spec, defaults)
    elif defaults:
        spec = StoreSpec(spec.kind, spec.path, spec.options, {**defaults, **spec.defaults})
    store = store_class(spec.kind)(spec)
    if written and not store.capabilities.writable:
        raise StoreError(f"{store.spec}: {spec.kind} stores are read-only: it can be the source of a sync, never a "
                         "target or a merge's store; leave it out of those")
    return store


def read_store(store: "Store") -> TrustSet:
    """`store.read()`, where a parser tripping over damaged bytes is one sentence, never a traceback."""
    try:
        return store.read()
    except (StoreError, OSError):
        raise
    except Exception as exc:  # noqa: BLE001 - whatever the bytes, the person gets a sentence
        raise store.damaged(f"cannot be read, its content is damaged ({type(exc).__name__}: {exc})") from None


class Values:
    """The values an option takes, declared by a store kind beside its `options`: one of `words`
    (in any case with `fold`), or what `test` accepts; `what` names them in an error. An option
    a kind declares no Values for takes any text (a file, a name)."""

    def __init__(self, *words: str, test=None, what: str = "", fold: bool = False, why=None):
        self.words, self.test, self.fold = {w.lower() if fold else w for w in words}, test, fold
        self.what = what or (", ".join(words[:-1]) + " or " + words[-1] if len(words) > 1 else words[0])
        self.why = why  # value -> what is wrong with it, when more can be said than `what`

    def refusal(self, name: str, value: str) -> str:
        """`name` cannot be `value`: what is wrong with it, and what it takes."""
        reason = self.why(value) if self.why else None
        return f"{name} cannot be {value!r}" + (f": {reason}" if reason else "") + f"; use {self.what}"

    def accepts(self, value: str) -> bool:
        return (value.lower() if self.fold else value) in self.words or bool(self.test and self.test(value))


def number(text: str) -> float:
    """`text` as a number; NaN, which no range holds, when it is none."""
    try:
        return float(text)
    except ValueError:
        return float("nan")


def format_label(template: str, label: str, sha1: str, sha256: str) -> str | None:
    """A `label-template` filled in; None when it is not one. Its fields are exactly {label},
    {sha1} and {sha256}, each with a format spec at most ({sha1:.8}): no attribute or index
    ({label.upper} would name a certificate after a Python method), no nested field."""
    import string

    try:
        fields = [(name, spec) for _, name, spec, _ in string.Formatter().parse(template) if name is not None]
        if any(name not in ("label", "sha1", "sha256") or "{" in spec for name, spec in fields):
            return None
        return template.format(label=label, sha1=sha1, sha256=sha256)
    except ValueError:  # unbalanced braces, an unknown conversion or format spec
        return None


COMMON_OPTIONS = ("purpose", "max-removal-share", "label-template")  # the engine reads these of any store
COMMON_VALUES = {
    # a wrong purpose is no smaller store: it would leave every certificate out of it
    "purpose": Values("any", *PURPOSES, test=is_purpose, what=f"{', '.join(PURPOSES)}, any, or an EKU OID "
                      f"in dotted form (1.3.6.1.5.5.7.3.8; for anyExtendedKeyUsage, {ANY_EKU}, write any)",
                      why=lambda v: purpose_problem(v) if v[:1].isdigit() else None),  # an OID: what is wrong in it
    "max-removal-share": Values(test=lambda v: 0 <= number(v) <= 1, what="a number from 0 to 1"),
    "label-template": Values(test=lambda v: format_label(v, "label", "0" * 40, "0" * 64) is not None,
                             what="a text whose only fields are {label}, {sha1} and {sha256} (a format spec "
                             "such as {sha1:.8} allowed; no .attribute, [index] or nested field)"),
}


#: `password-file=` of the kinds that take it: empty, it was no option at all (a new Java store
#: then took the password `changeit`)
PASSWORD_FILE = Values(test=bool, what="the file whose first line is the password (or leave the option out)")


def options_of(kind: str) -> tuple[str, ...]:
    """The `?option=` names a store of `kind` understands."""
    return (*store_class(kind).options, *COMMON_OPTIONS)


def values_of(kind: str) -> dict[str, Values]:
    """What the options of a store of `kind` take (an option not named takes any text)."""
    return {**COMMON_VALUES, **store_class(kind).values}


def bad_value(kinds, name: str, value: str) -> Values | None:
    """What `name=` takes, when no kind of `kinds` that has the option takes `value` (else None)."""
    declared = [values_of(kind).get(name) for kind in kinds if name in options_of(kind)]
    if not declared or any(v is None or v.accepts(value) for v in declared):
        return None
    return declared[0]


def check_selector(spec: str, options: dict[str, str]) -> None:
    """A selector's options (`@all?password-file=F`) apply to the stores it names whose kind has
    them: one that no kind has, or a value no kind having it takes, is a mistake, said before
    anything is read."""
    for name, value in options.items():
        if not any(name in options_of(kind) for kind in KINDS):
            raise StoreError(f"{spec}: no store kind has option {name}=; correct the selector")
        accepted = bad_value(KINDS, name, value)
        if accepted:
            raise StoreError(f"{spec}: {accepted.refusal(name + '=', value)}")


PASSWORD_FILE_MAX = 1 << 16  # bytes read of a password file: its first line is the password


class Store:
    """One concrete place that holds trust. Subclasses implement read and write."""

    kind: str  # set by each kind
    capabilities: Capabilities = Capabilities()
    reader = "openssl"  # which programs read it: what they cannot load is not written (storesync.loadable)
    options: tuple[str, ...] = ()  # what `?option=` the kind understands, besides COMMON_OPTIONS
    remedy = "restore it (storesync rollback) or regenerate it"  # what to do about damaged bytes
    values: dict[str, Values] = {}  # what its options take, besides COMMON_VALUES

    def __init__(self, spec: StoreSpec):
        self.spec = spec
        self.path = spec.path
        unknown = [name for name in spec.options if name not in COMMON_OPTIONS and name not in self.options]
        if unknown:  # a typo would otherwise be a default silently taken
            known = ", ".join(f"{name}=" for name in (*self.options, *COMMON_OPTIONS))
            raise StoreError(f"{spec}: {self.kind} stores have no option {unknown[0]}= (their options: {known}); "
                             "correct the spec")
        values = {**COMMON_VALUES, **self.values}
        for name, value in {**spec.defaults, **spec.options}.items():  # a wrong value would change what is written
            if name in values and not values[name].accepts(value):
                raise StoreError(f"{spec}: {values[name].refusal(name + '=', value)}")
        self.warnings: list[str] = []  # filled by read(): things a person should know
        # filled by read(): certificates held in a form the store's readers may take differently,
        # which a sync writes again even when their trust is unchanged (sha256 -> why, for the plan)
        self.rewrite: dict[str, str] = {}
        # filled by read(): certificates it holds with a trust the model has no word for (an NSS
        # peer that may issue), left out of syncs; `--mode remove` takes them out all the same
        self.unsynced: dict[str, Entry] = {}
        # filled by read(): certificates its readers trust through entries storesync neither writes
        # nor removes (a Java private-key entry's own certificate), sha256 -> (entry, that entry
        # named with how to take it out): listed and checked, never spread, never removed
        self.fixed_anchors: dict[str, tuple[Entry, str]] = {}
        self.known: dict[bytes, Certificate] = {}  # set by the engine's read-back: see `certificate`

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.spec}>"

    @property
    def purpose(self) -> str:
        """What a store without per-purpose trust is for: its anchors are trusted for this."""
        return purpose_from_oid(self.option("purpose", "server-auth"))  # a named one's OID is that one

    def option(self, name: str, default: str | None = None) -> str | None:
        return self.spec.options.get(name, self.spec.defaults.get(name, default))

    def password(self) -> bytes | None:
        """The first line of the `password-file` option's file (None: no such option)."""
        name = self.option("password-file")
        if not name:
            return None
        if "_password" not in self.__dict__:  # read once: a write may later run as another user
            path = os.path.expanduser(name)
            odd = not_a_file(path)
            if odd:
                raise self.error(f"the password file {name} {odd}")
            try:
                with open(path, "rb") as file:
                    head = file.read(PASSWORD_FILE_MAX + 1)  # it is one line: no more is read
            except OSError as exc:
                raise self.error(f"cannot read the password file {name} ({exc.strerror})") from None
            lines = head.splitlines()
            if len(head) > PASSWORD_FILE_MAX and len(lines[0]) == len(head):  # no line end among what it read
                raise self.error(f"the password file {name} has no line end in its first {PASSWORD_FILE_MAX} bytes; "
                                 "put the password alone on its first line")
            self._password = lines[0] if lines else b""
        return self._password

    def error(self, what: str, path: str | None = None) -> StoreError:
        return StoreError(f"{self.spec.kind} store {path or self.path}: {what}")

    def damaged(self, what: str, path: str | None = None) -> StoreError:
        """The error for bytes that cannot be read, with what to do about them."""
        todo = self.other_kind(path)
        return self.error(f"{what}; {todo}" if todo else f"{what}; nothing was read from it: {self.remedy}", path)

    def other_kind(self, path: str | None = None) -> str | None:
        """What to name a file or folder that is another kind's, by its first bytes or the files
        it holds (None: it is not, or that cannot be told)."""
        path = path or self.path
        try:
            folder = os.path.isdir(path)
            found = _folder(path) if folder else identify(_head(path)) if os.path.isfile(path) else None
        except OSError:
            return None
        if found is None or found[0] == self.kind or (folder and self.kind == "anchors"):  # anchors: a dir kind
            return None
        kind, what = found
        if folder:
            return f"it looks like {what}: name it {kind}:{path}"
        if kind is None:  # JCEKS
            return (f"it looks like {what}: convert it with `keytool -importkeystore -srckeystore {path} "
                    f"-deststoretype pkcs12 -destkeystore {path}.p12` and name that p12:{path}.p12")
        return f"it looks like {what}: name " + (f"its folder nss:{parent(path)}" if kind == "nss" else f"it {kind}:{path}")

    def exists(self) -> bool:
        return os.path.exists(self.path)

    def missing(self) -> str:
        """What to say when the store is not there, in the words of its format."""
        return not_a_file(self.path) or "does not exist; check the path"  # a link loop is there, and leads nowhere

    def read(self) -> TrustSet:
        raise NotImplementedError

    def check_creatable(self) -> None:
        """Raise StoreError when a sync cannot create the store where it is named (checked as a
        target not there yet is planned, before anything is written)."""

    def certificate(self, der_bytes: bytes) -> Certificate:
        """The certificate of DER bytes read from the store: one of `known` when these are its
        very bytes (the engine reading back what it has just written parses none of it again),
        else a new one."""
        return self.known.get(der_bytes) or Certificate(der_bytes)

    def version(self) -> object:
        """Something that differs after any write by storesync (None: unknown). A run that read
        the store before taking its lock reads it again under the lock only if this changed."""
        return None

    def write(self, plan: "Plan") -> None:
        """Bring the store to `plan.desired`, atomically, touching only what the plan changes."""
        raise NotImplementedError

    def watch_paths(self) -> list[str]:
        return [self.path]

    def with_fixed(self, trust_set: TrustSet) -> tuple[TrustSet, dict[str, str]]:
        """What the store's readers trust: `trust_set` (as `read` gave it) with the `fixed_anchors`
        it lacks; and those, sha256 -> the entry they are trusted through."""
        fixed = {sha: through for sha, (_, through) in self.fixed_anchors.items() if sha not in trust_set}
        if not fixed:
            return trust_set, fixed
        return TrustSet([*trust_set.values(), *(self.fixed_anchors[sha][0] for sha in fixed)]), fixed

    def builtin_anchors(self) -> set[str]:
        """SHA-256s its users trust even when the store does not hold them (a browser's built-in
        roots): removing one of these from the store must be written as a distrust."""
        return set()

    def notice(self) -> str | None:
        """A hint to print after a write (e.g. "restart the browser")."""
        return None

    # Backups: the bytes of every file the store consists of (None: the file did not exist).
    # A store reached through a symlink (RHEL's ca-bundle.crt) is read and written through it.
    def snapshot(self) -> dict[str, bytes | None]:
        real = os.path.realpath(self.path)
        return {real: read_bytes(real) if os.path.exists(real) else None}

    def owns(self, path: str) -> bool:
        """May a backup of this store write `path`? (A backup file is not trusted blindly.)"""
        places = {absolute(self.path), os.path.realpath(self.path)}
        return spelled(path) in places or spelled(os.path.dirname(path)) in places

    def snapshot_trust(self, snapshot: dict[str, bytes | str | None]) -> TrustSet:
        """What a backup says: its files put in a temporary folder and read as a store of this
        kind with these options. Raises StoreError when the backup is not a readable store."""
        import shutil
        import tempfile

        if all(value is None for value in snapshot.values()):
            return TrustSet()  # the store did not exist
        top = tempfile.mkdtemp(prefix="storesync-backup-")
        try:
            path = top
            for name, value in snapshot.items():
                dest = os.path.join(top, os.path.basename(name))
                if spelled(name) in {absolute(self.path), os.path.realpath(self.path)}:
                    path = dest  # the store is this one file
                if isinstance(value, str):
                    os.symlink(value, dest)
                elif value is not None:
                    with open(dest, "wb") as file:
                        file.write(value)
            return type(self)(StoreSpec(self.spec.kind, path, self.spec.options, self.spec.defaults)).read()
        finally:
            shutil.rmtree(top, ignore_errors=True)

    def restore(self, snapshot: dict[str, bytes | None]) -> None:
        for name, data in snapshot.items():
            if data is None:
                remove_file(name)
            else:
                atomic_write(name, data)


class FileStore(Store):
    """A store that is one file: subclasses turn bytes into a trust set and back."""

    #: `parse` takes the file opened at its start too, and reads it piece by piece: a large
    #: store is never held whole in memory beside its parse
    streamed = False
    #: A read keeps a digest of the bytes it read, for a later `write` to see whether the file
    #: changed since; the engine's read-back of what it wrote, which writes nothing, needs none.
    digested = True

    def read(self) -> TrustSet:
        file = self.current_file() if self.streamed else None
        if file is not None and file.seekable():
            with file:  # digested and parsed through one opening: a file replaced meanwhile is not mixed in
                if self.digested:
                    self._read_digest = self._from_file(file_digest, file)
                    file.seek(0)
                return self.parse(file)
        if file is None:
            data = self.current_bytes()
        else:
            with file:  # a pipe (`<(...)`): it is read once
                data = self._from_file(lambda opened: opened.read(), file)
        if self.digested:
            self._read_digest = digest_of(data)
        return TrustSet() if data is None else self.parse(data)  # None: a target not created yet

    def write(self, plan: "Plan") -> None:
        """The plan applied to the file as it is when written: if another program changed it
        since it was read, the plan is rebased onto what it holds now (its additions stay),
        and the file is replaced only if it still holds the bytes the new ones were made from.
        The new bytes go to disk as `render` makes them, never whole in memory."""
        import time

        path = os.path.realpath(self.path)
        base = self.__dict__.get("_read_digest", False)  # False: never read, the plan is for what is there
        for attempt in range(CAS_ATTEMPTS):
            now = self._digest_now()
            try:
                if base is not False and now != base:  # another program wrote it: read it again (seldom)
                    data = self.current_bytes()
                    now = digest_of(data)
                    plan = plan.rebased(self.parse(data) if data is not None else TrustSet())
                    data = None
                base = now
                written = replace_if_unchanged(path, now, self.render(plan))
            except StoreError:
                if self._digest_now() == now:
                    raise
                written = None  # caught mid-write by another program: read it again
            if written is not None:
                self._read_digest = written
                return
            time.sleep(0.01 * (attempt + 1))
        raise self.error("kept changing while storesync wrote it (another program writing it too?); "
                         "nothing was written: run the sync again")

    def version(self) -> object:
        return stat_version(self.path)  # a write replaces the file: a new inode

    def check_creatable(self) -> None:
        folder = os.path.dirname(self.path) or "."  # not made: a folder that is not there is more often a mistyped path
        if not os.path.exists(folder):
            import shlex

            raise self.error(f"the folder {folder} does not exist; create it (mkdir -p {shlex.quote(str(folder))}) "
                             "or correct the path")

    def current_bytes(self) -> bytes | None:
        """The file as it is now (None: it does not exist yet); errors are sentences."""
        return self._from_file(lambda file: file.read())

    def _digest_now(self) -> bytes | None:
        """`digest_of` the file as it is now, read in pieces (None: it does not exist)."""
        return self._from_file(file_digest)

    def _from_file(self, use, file=None):
        """`use(file)` of `file`, or of the file opened as it is now (None: it does not exist
        yet); errors are sentences."""
        opened = file is None
        file = self.current_file() if opened else file
        if file is None:
            return None
        try:
            return use(file)
        except OSError as exc:
            raise self.error(cannot_read(exc)) from None
        finally:
            if opened:
                file.close()

    def current_file(self):
        """The file opened for reading (None: it does not exist yet); errors are sentences."""
        odd = not_a_file(self.path)
        if odd:  # never opened: a device may not end, a FIFO may wait for ever
            raise self.error(odd)
        try:
            return open(self.path, "rb")
        except FileNotFoundError:
            return None
        except IsADirectoryError:
            raise self.error(f"is a directory; {self.other_kind() or f'use dir:{self.path} for a hashed directory'}") from None
        except OSError as exc:
            raise self.error(cannot_read(exc)) from None

    def parse(self, data: bytes) -> TrustSet:
        raise NotImplementedError

    def render(self, plan: "Plan") -> bytes:
        raise NotImplementedError
