"""`check`: would this store accept this certificate, and if not, why and what to do.

The verdict always comes from `cryptography`'s X.509 verifier (path building, signatures,
validity periods, name and basic constraints): a store accepts when the verifier finds a path
from the certificate to one of the store's anchors for the purpose, and no certificate of that
path is distrusted, revoked by a given CRL or caught by a distrust-after date.

When the verifier refuses, the explanation comes from asking it again with one thing relaxed at
a time folded into a single relaxed run: every certificate of the store as anchor whatever its
trust, any EKU accepted, and a time at which the certificates involved are all valid. The path
it then finds is inspected for what the strict run did not forgive (a distrusted or
other-purpose root, an expired certificate, a missing EKU). If even the relaxed run finds no
path, the root is missing from the store. A refusal that comes from an algorithm or key size
the verifier does not support (SHA-1 or MD5 signatures, RSA under 2048 bits, Ed25519, Ed448,
DSA keys: OpenSSL may accept them) is `unsupported`; to find the path then, an issuer whose
signature cryptography cannot check is matched by name and key identifiers. Still a refusal.

Policy choices (so `check` agrees with OpenSSL's `verify -purpose sslclient|sslserver`, which is
what Apache, nginx and most TLS servers run): a leaf needs no subjectAltName (client
certificates often have none) and no EKU; an EKU present, in the leaf or a CA, must hold the
purpose or anyExtendedKeyUsage. In stores OpenSSL reads (pem, dir) only self-issued
certificates are anchors and the others serve as intermediates, as `-CAfile` works; in the other
kinds (NSS, Windows, Java) every trusted certificate is an anchor.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone

from storesync.fsio import read_bytes
from storesync.model import ANY_EKU, DISTRUSTED, EKU_OIDS, TRUSTED, TrustSet, purpose_from_oid

TYPE_CHECKING = False  # plain classes below and typing's names only for checkers: a check starts quicker
if TYPE_CHECKING:
    from typing import Any

    from storesync.stores import StoreSpec

# Reason codes, in the order a store's problems are reported (the first is the verdict).
# `unsupported` (an algorithm or key size cryptography's web-PKI verifier refuses, which OpenSSL
# may accept) comes after every reason OpenSSL would refuse for too.
(OK, MISSING_ROOT, DISTRUSTED_CODE, REVOKED, EXPIRED, NOT_YET_VALID, DISTRUST_AFTER, PURPOSE, UNSUPPORTED,
 INVALID) = (
    "ok", "missing-root", "distrusted", "revoked", "expired", "not-yet-valid", "distrust-after", "purpose",
    "unsupported", "invalid",
)
# What a server's own rules add (see Rules): a store file the server cannot read, a CRL missing
# or past its nextUpdate, a chain longer than the verify depth, a host name the leaf lacks.
# Schannel's (IIS): a CA-name list too long to send, a Trusted Root that is not self-signed.
UNREADABLE, CRL_MISSING, CRL_EXPIRED, DEPTH, NAME_MISMATCH, CA_LIST, NOT_SELF_SIGNED = (
    "unreadable", "crl-missing", "crl-expired", "depth", "name-mismatch", "ca-list-too-long", "root-not-self-signed")
ORDER = [UNREADABLE, NOT_SELF_SIGNED, MISSING_ROOT, DISTRUSTED_CODE, REVOKED, CRL_MISSING, CRL_EXPIRED, EXPIRED,
         NOT_YET_VALID, DISTRUST_AFTER, PURPOSE, DEPTH, CA_LIST, NAME_MISMATCH, UNSUPPORTED, INVALID]
SCHANNEL_CA_LIST_LIMIT = 16384  # bytes of distinguished names Schannel sends (KB 933430)
CHECK_PURPOSES = ("client-auth", "server-auth", "email", "code-signing")
OPENSSL_KINDS = {"pem", "dir"}  # stores whose readers take only self-issued anchors


class CheckError(Exception):
    """Input `check` cannot work with (unreadable certificate, CRL, time)."""


# --- inputs ---------------------------------------------------------------------------------


def load_certificates(path: str | os.PathLike) -> list:
    """A PEM file (one or several certificates, other blocks such as a key ignored) or DER."""
    from cryptography import x509

    try:
        data = read_bytes(path)
    except OSError as exc:
        raise CheckError(f"{path}: cannot read it ({exc.strerror})") from None
    try:
        if b"-----BEGIN" in data:
            certs = x509.load_pem_x509_certificates(data)
        else:
            certs = [x509.load_der_x509_certificate(data)]
        for cert in certs:
            cert.subject, cert.issuer  # names are read lazily: one cryptography cannot read is bad input now
    except ValueError as exc:
        raise CheckError(f"{path}: holds no certificate storesync can read ({str(exc).split(':')[0]}); "
                         "give a PEM or DER certificate") from None
    return certs


def load_crls(paths: list) -> list[tuple[str | os.PathLike, Any]]:
    from cryptography import x509

    crls = []
    for path in paths:
        try:
            data = read_bytes(path)
        except OSError as exc:
            raise CheckError(f"CRL {path}: cannot read it ({exc.strerror})") from None
        # A PEM file may hold several CRLs (nginx's ssl_crl and Apache's SSLCARevocationFile do).
        blocks = [b"-----BEGIN X509 CRL-----" + b for b in data.split(b"-----BEGIN X509 CRL-----")[1:]]
        try:
            if b"-----BEGIN" not in data:
                crls.append((path, x509.load_der_x509_crl(data)))
            else:
                crls += [(path, x509.load_pem_x509_crl(block)) for block in blocks or [data]]
        except ValueError as exc:
            raise CheckError(f"CRL {path}: not a CRL storesync can read ({str(exc).split(':')[0]}); give a PEM or "
                             "DER CRL, as the CA publishes it") from None
    return crls


def parse_time(text: str | None) -> datetime:
    if not text:
        return datetime.now(timezone.utc).replace(microsecond=0)
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise CheckError(f"--at {text!r} is not an ISO time such as 2026-05-01T12:00:00Z") from None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


# --- server rules -------------------------------------------------------------------------

# Each server's names for what it lets the administrator set (for messages and fixes).
SETTING_NAMES = {
    "openssl": {"depth": "openssl verify -verify_depth", "crl": "--crl", "ca": "the store"},
    "nginx": {"depth": "ssl_verify_depth", "crl": "ssl_crl", "ca": "ssl_client_certificate",
              "trusted": "ssl_trusted_certificate"},
    "apache": {"depth": "SSLVerifyDepth", "crl": "SSLCARevocationFile", "crl_check": "SSLCARevocationCheck",
               "ca": "SSLCACertificateFile"},
    "iis": {"ca": "the Trusted Root Certification Authorities store", "crl": "the revocation check"},
}
SERVERS = tuple(SETTING_NAMES)


class Rules:
    """How one server decides (`check --server`), and where its settings were read from.

    depth: the most intermediate CAs between the client certificate and the anchor (OpenSSL's
    verify depth, as nginx sets it; Apache's mod_ssl counts the root too, measured with httpd 2.4:
    "Certificate Chain too long (chain has 2 certificates, but maximum allowed are only 1)" for
    a client under one intermediate; None: no limit). crl: which certificates are
    checked against the CRLs given, "leaf", "chain" (every certificate below the anchor) or
    "none"; crl_required: a certificate so checked needs a valid CRL from its issuer (OpenSSL's
    CRL_CHECK flags: "unable to get certificate CRL" otherwise)."""

    def __init__(self, server: str = "openssl", depth: int | None = None, depth_counts_root: bool = False,
                 crl: str = "leaf", crl_required: bool = False, block: str | None = None,
                 settings: dict[str, dict] | None = None):
        self.server, self.depth, self.crl, self.crl_required = server, depth, crl, crl_required
        self.depth_counts_root = depth_counts_root  # Apache's SSLVerifyDepth counts every CA above the leaf, root too
        self.block = block  # the server block / virtual host judged (from a config file)
        self.settings = {} if settings is None else settings  # key -> {directive, value, file, line}

    def name(self, key: str) -> str:
        return SETTING_NAMES[self.server].get(key, key)

    def where(self, key: str) -> str:
        """`ssl_verify_depth 2 (nginx.conf:12)`, or the bare name for a setting left at its default."""
        found = self.settings.get(key)
        if not found or not found.get("file"):
            return self.name(key)
        return f"{found['directive']} {found['value']} ({found['file']}:{found['line']})"


def server_rules(server: str) -> Rules:
    """Each server's defaults: nginx's ssl_verify_depth 1 and, with ssl_crl, a CRL for every CA
    (X509_V_FLAG_CRL_CHECK_ALL); Apache's SSLVerifyDepth 1 (CRLs given: as SSLCARevocationCheck
    chain); Schannel checks the whole chain; openssl: `openssl verify`, today's rules."""
    return {
        "openssl": Rules("openssl"),
        "nginx": Rules("nginx", depth=1, crl="chain", crl_required=True),
        "apache": Rules("apache", depth=1, depth_counts_root=True, crl="chain", crl_required=True),
        "iis": Rules("iis", crl="chain", crl_required=True),
    }[server]


# --- results --------------------------------------------------------------------------------


class Problem:
    def __init__(self, reason: str, message: str, fix: str | None = None, cert: Any = None,
                 data: dict[str, Any] | None = None):
        self.reason, self.message, self.fix = reason, message, fix
        self.cert = cert  # the cryptography certificate concerned
        self.data = {} if data is None else data

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"reason": self.reason, "message": self.message, "fix": self.fix}
        if self.cert is not None:
            out["certificate"] = cert_json(self.cert)
        return {**out, **self.data}


class Verdict:
    def __init__(self, store: str, kind: str, rules: Rules | None = None):
        self.store, self.kind = store, kind
        self.problems: list[Problem] = []
        self.chain: list = []  # the path found (strict, else relaxed)
        self.warnings: list[str] = []
        self.verifier_error: str | None = None
        self.rules = Rules() if rules is None else rules
        self.data: dict[str, Any] = {}  # what a server's rules measured (ca_names)

    @property
    def reason(self) -> str:
        return self.problems[0].reason if self.problems else OK

    @property
    def accepted(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        first = self.problems[0] if self.problems else None
        return {
            "store": self.store,
            "kind": self.kind,
            "accepted": self.accepted,
            "reason": self.reason,
            "message": first.message if first else "accepted",
            "fix": first.fix if first else None,
            "problems": [p.to_json() for p in self.problems],
            "chain": [cert_json(c) for c in self.chain],
            "verifier_error": self.verifier_error,
            "warnings": self.warnings,
            "server": self.rules.server,
            **({"server_block": self.rules.block} if self.rules.block else {}),
            **({"settings": self.rules.settings} if self.rules.settings else {}),
            **self.data,
        }


def cert_json(cert) -> dict[str, Any]:
    from cryptography.hazmat.primitives import hashes

    return {
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "serial": format(cert.serial_number, "x"),
        "sha256": cert.fingerprint(hashes.SHA256()).hex(),
        "not_before": _iso(cert.not_valid_before_utc),
        "not_after": _iso(cert.not_valid_after_utc),
    }


def serial_text(number: int) -> str:
    """A serial number as `openssl crl -text` prints it (hex, two digits a byte: 05, 0ABC),
    marked 0x: its bare "1092" (4242) reads as a decimal number."""
    digits = f"{abs(number):X}"
    return f"{'-' if number < 0 else ''}0x{'0' * (len(digits) % 2)}{digits}"


def _iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def short_name(cert) -> str:
    from cryptography.x509.oid import NameOID

    for oid in (NameOID.COMMON_NAME, NameOID.ORGANIZATIONAL_UNIT_NAME, NameOID.ORGANIZATION_NAME):
        values = cert.subject.get_attributes_for_oid(oid)
        if values:
            return str(values[0].value)
    return cert.subject.rfc4514_string() or "(empty subject)"


# --- the check ------------------------------------------------------------------------------


class StoreView:
    """A store's entries sorted for one purpose."""

    def __init__(self, anchors: list, all_anchors: list, pool: list, by_sha: dict):
        self.anchors = anchors  # cryptography certificates usable as trust anchors for the purpose
        self.all_anchors = all_anchors  # the same rule, whatever the trust: the relaxed run's anchors
        self.pool = pool  # store certificates that serve only as intermediates
        self.by_sha = by_sha  # sha256 -> Entry, every entry of the store

    def entry(self, cert):
        """The store's entry for `cert`, if the store holds it (and cryptography reads it there)."""
        from cryptography.hazmat.primitives import hashes

        entry = self.by_sha.get(cert.fingerprint(hashes.SHA256()).hex())
        return entry if entry is not None and entry.cert.x509 is not None else None


def store_view(trust_set: TrustSet, kind: str, purpose: str, wanted: list | None = None) -> StoreView:
    """The store's anchors and intermediates for `purpose`. With `wanted` (the certificate
    checked and its chain), cryptography parses only the entries that may issue one of them or
    of those (`_mark_issuers`), kept in the store's order, plus one anchor whatever its name
    where the store has any (the verifier wants one). `check_store` then decides and explains
    exactly as with every entry parsed: the verifier looks only at anchors whose name is, byte
    for byte, the issuer name of a certificate it walks, and `_issued_by` only at those equal
    to it by cryptography's Name equality; both hold the issuer's attribute values."""
    entries = list(trust_set.values())
    parse = [wanted is None] * len(entries)
    if wanted is not None:
        for index, entry in enumerate(entries):
            if kind in OPENSSL_KINDS:  # only self-issued certificates are anchors: whether it is decides the role
                try:
                    fields = entry.cert.fields
                    parse[index] = fields.issuer != fields.subject  # equal bytes: self-issued (Name equality too)
                except ValueError:  # der.DERError: no outline, cryptography will say
                    parse[index] = True
        _mark_issuers(entries, parse, wanted, kind, purpose)
    anchors, all_anchors, pool, by_sha = [], [], [], {}
    for index, entry in enumerate(entries):
        by_sha[entry.sha256] = entry
        cert = entry.cert.x509 if parse[index] else None
        if cert is None:
            continue  # cryptography cannot read it, so it cannot verify with it either (or it cannot matter)
        if kind in OPENSSL_KINDS and cert.issuer != cert.subject:
            if entry.trust.get(purpose) == TRUSTED:
                pool.append(cert)
            continue
        all_anchors.append(cert)
        if entry.trust.get(purpose) == TRUSTED:
            anchors.append(cert)
    return StoreView(anchors, all_anchors, pool, by_sha)


def _mark_issuers(entries: list, parse: list[bool], wanted: list, kind: str, purpose: str) -> None:
    """Mark in `parse` the entries that may issue a certificate of `wanted`, of the store's pool
    (check_store uses every intermediate) or of an entry so marked, and the entries that are one
    of these certificates (the verifier stops at a certificate the store holds); then one anchor,
    and one anchor for the purpose, where the store has any and none is marked."""
    from cryptography.hazmat.primitives import hashes

    def role(index):  # what the entry is, once parsed: None (unreadable), "pool" or "anchor"
        cert = entries[index].cert.x509
        if cert is None:
            return None
        return "pool" if kind in OPENSSL_KINDS and cert.issuer != cert.subject else "anchor"

    def subject(index) -> bytes:  # where an issuer's name would be: the raw subject (no outline: all of it)
        try:
            return entries[index].cert.fields.subject
        except ValueError:
            return entries[index].cert.der

    index_of = {entry.sha256: index for index, entry in enumerate(entries)}
    todo = list(wanted) + [entries[i].cert.x509 for i, p in enumerate(parse) if p and role(i) == "pool"
                           and entries[i].trust.get(purpose) == TRUSTED]
    searched = set()  # issuer names looked for already (the certificates of one CA share theirs)
    while todo:
        cert = todo.pop()
        same = index_of.get(cert.fingerprint(hashes.SHA256()).hex())
        if same is not None:
            parse[same] = True
        try:
            needles = _name_needles(cert.issuer)
        except ValueError:  # a name cryptography cannot read (the verifier never reads it): every entry
            needles = []
        if tuple(needles) in searched:
            continue
        searched.add(tuple(needles))
        for index, entry in enumerate(entries):
            if not parse[index] and _may_issue(subject(index), needles):
                parse[index] = True
                if entry.cert.x509 is not None:
                    todo.append(entry.cert.x509)
    for trusted_only in (False, True):
        if any(parse[i] and role(i) == "anchor" and (not trusted_only or entries[i].trust.get(purpose) == TRUSTED)
               for i in range(len(entries))):
            continue
        for index, entry in enumerate(entries):
            if not parse[index] and (not trusted_only or entry.trust.get(purpose) == TRUSTED) \
                    and role(index) == "anchor":
                parse[index] = True
                break


def _name_needles(name) -> list[tuple[bytes, ...]]:
    """Per attribute of a Name, the bytes its value is stored as in any certificate whose name
    cryptography reads as this value: UTF-8 (PrintableString, UTF8String and the other string
    types), UTF-16BE (BMPString), UTF-32BE (UniversalString), or the bytes of a BIT STRING."""
    import codecs  # its encoders directly: no codec lookup, no encodings module to import

    needles = []
    for attribute in name:
        value = attribute.value
        if isinstance(value, bytes):
            needles.append((value,))
        else:
            needles.append((value.encode(), codecs.utf_16_be_encode(value)[0], codecs.utf_32_be_encode(value)[0]))
    return needles


def _may_issue(subject: bytes, needles: list[tuple[bytes, ...]]) -> bool:
    """Whether a certificate's raw subject holds every attribute value of an issuer's name, in
    one of its encodings: true of every subject that is that name, by bytes (as the verifier
    matches) or by cryptography's Name equality (as `_issued_by` does)."""
    return all(any(needle in subject for needle in choices) for choices in needles)


def _may_sign_certificates(_policy, _cert, usage) -> None:
    if usage is not None and not usage.key_cert_sign:
        raise ValueError("its keyUsage does not allow signing certificates")


def _is_ca(_policy, _cert, constraints) -> None:
    if not constraints.ca:
        raise ValueError("its basicConstraints say it is not a CA")


def _eku_validator(oid_text: str | None):
    """An EKU, where present, must hold the purpose (or anyEKU); None accepts any EKU."""

    def validate(_policy, _cert, ext) -> None:
        if ext is None or oid_text is None:
            return
        oids = {o.dotted_string for o in ext}
        if oid_text not in oids and ANY_EKU not in oids:
            raise ValueError(f"its extendedKeyUsage does not include {oid_text}")

    return validate


def verify(anchors: list, intermediates: list, leaf, at: datetime, purpose: str | None,
           name: str | None = None) -> list:
    """Run cryptography's verifier; returns the chain or raises VerificationError.

    purpose None = relaxed (any EKU). With `name`, a server verifier also checks the host.
    """
    from cryptography import x509
    from cryptography.x509.verification import (
        Criticality, DNSName, ExtensionPolicy, IPAddress, PolicyBuilder, Store, VerificationError,
    )

    if not anchors:
        raise VerificationError("the store holds no anchor for this purpose")
    oid = EKU_OIDS.get(purpose) if purpose else None
    # authorityKeyIdentifier optional, as OpenSSL (and Windows) have it: the Web PKI's rule that
    # every issued certificate carries one is not what the servers storesync explains enforce.
    ee = (ExtensionPolicy.webpki_defaults_ee()
          .may_be_present(x509.ExtendedKeyUsage, Criticality.AGNOSTIC, _eku_validator(oid))
          .may_be_present(x509.AuthorityKeyIdentifier, Criticality.AGNOSTIC, None))
    if name is None:
        ee = ee.may_be_present(x509.SubjectAlternativeName, Criticality.AGNOSTIC, None)
    # CA rules as OpenSSL's (what Apache and nginx use): keyUsage optional, but allowing
    # certificate signing when present; basicConstraints cA required, critical or not.
    ca = (ExtensionPolicy.webpki_defaults_ca()
          .may_be_present(x509.ExtendedKeyUsage, Criticality.AGNOSTIC, _eku_validator(oid))
          .may_be_present(x509.KeyUsage, Criticality.AGNOSTIC, _may_sign_certificates)
          .may_be_present(x509.AuthorityKeyIdentifier, Criticality.AGNOSTIC, None)
          .may_be_present(x509.SubjectKeyIdentifier, Criticality.AGNOSTIC, None)
          .require_present(x509.BasicConstraints, Criticality.AGNOSTIC, _is_ca))
    builder = PolicyBuilder().store(Store(anchors)).time(at).extension_policies(ca_policy=ca, ee_policy=ee)
    if name is not None:
        import ipaddress

        try:
            subject = IPAddress(ipaddress.ip_address(name))
        except ValueError:
            subject = DNSName(name)
        return builder.build_server_verifier(subject).verify(leaf, intermediates)
    return builder.build_client_verifier().verify(leaf, intermediates).chain


def _issued_by(cert, issuer) -> bool:
    """Did `issuer` sign `cert`? By signature; where cryptography cannot check the signature
    (SHA-1, MD5 and other algorithms it does not support), by name and key identifiers. For
    explanations only: the verdict never rests on this."""
    from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm

    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
        return True
    except UnsupportedAlgorithm:
        return _key_ids_match(cert, issuer)
    except ValueError as exc:  # cryptography says "Unsupported signature algorithm" as a ValueError
        return "unsupported" in str(exc).lower() and _key_ids_match(cert, issuer)
    except (InvalidSignature, TypeError):  # wrong key, or a key type it cannot verify with
        return False
    except Exception:  # noqa: BLE001 - anything else: not its issuer as far as we can tell
        return False


def _key_ids_match(cert, issuer) -> bool:
    """The name already matches; the authority key identifier, where both sides have one,
    must be the issuer's subject key identifier (or its serial and issuer name)."""
    from cryptography import x509

    try:
        aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    except (x509.ExtensionNotFound, ValueError):
        return True  # nothing more to compare than the name
    if aki.key_identifier is not None:
        try:
            ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
        except (x509.ExtensionNotFound, ValueError):
            try:
                ski = x509.SubjectKeyIdentifier.from_public_key(issuer.public_key()).digest
            except Exception:  # noqa: BLE001 - a key cryptography cannot read: compare nothing more
                return True
        return aki.key_identifier == ski
    if aki.authority_cert_serial_number is not None:
        return aki.authority_cert_serial_number == issuer.serial_number
    return True


def _links(leaf, pool: list) -> list:
    """Follow issuers from the leaf through the certificates we have, as far as they go
    (names and signatures only: this explains a refusal, it never accepts anything)."""
    path = [leaf]
    while path[-1].issuer != path[-1].subject:
        nxt = next((c for c in pool if all(c is not p for p in path) and _issued_by(path[-1], c)), None)
        if nxt is None:
            break
        path.append(nxt)
    return path


def _key_id(cert) -> str | None:
    from cryptography import x509

    try:
        aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
        return aki.key_identifier.hex(":") if aki.key_identifier else None
    except x509.ExtensionNotFound:
        return None


def _relaxed_time(at: datetime, certs: list) -> datetime:
    """`at` moved into the window where all these certificates are valid (the leaf's alone if
    they have none in common): a run at that time tells whether dates are the only obstacle."""
    def clamp(group):
        start = max(c.not_valid_before_utc for c in group)
        end = min(c.not_valid_after_utc for c in group)
        return min(max(at, start), end) if start <= end else None

    return clamp(certs) or clamp(certs[:1]) or at


def check_store(store: str, kind: str, trust_set: TrustSet, leaf, chain: list, purpose: str, at: datetime,
                crls: list, name: str | None = None, rules: Rules | None = None) -> Verdict:
    """Would `store` accept `leaf` (with `chain` intermediates) for `purpose` at `at`, under the
    server's `rules`? Every problem the strict run would hit is listed, the verdict's reason first."""
    from cryptography.x509.verification import VerificationError

    rules = rules or Rules()
    view = store_view(trust_set, kind, purpose, wanted=[leaf, *chain])
    verdict = Verdict(store, kind, rules=rules)
    if rules.server == "iis":
        verdict.problems += _schannel(trust_set, verdict)
    store_wide = list(verdict.problems)
    intermediates = chain + view.pool
    try:
        path = verify(view.anchors, intermediates, leaf, at, purpose, name)
    except VerificationError as exc:
        verdict.verifier_error = str(exc)
        path = None
    if path is not None:
        verdict.chain = path
        verdict.problems = store_wide + _path_problems(path, view, purpose, at, crls, verdict.warnings, strict=True,
                                                       rules=rules)
        verdict.problems += _depth(path, rules) + _ca_list_fix(verdict, path[-1])
        return _ordered(verdict)

    # Refused: find the path with everything relaxed, then say what the strict run did not forgive.
    issuers = [c for c in view.all_anchors + intermediates if any(_issued_by(x, c) for x in [leaf, *intermediates])]
    when = _relaxed_time(at, [leaf, *chain, *issuers])
    try:
        relaxed = verify(view.all_anchors, intermediates, leaf, when, None)
    except VerificationError:
        relaxed = None
    unsupported = []
    if relaxed is None:
        # No path even relaxed. Either no anchor issued the top of what we have (missing root), or
        # no single time fits the whole path (a leaf older than its reissued intermediate): then
        # the path by names and signatures says which dates are wrong.
        relaxed = _links(leaf, intermediates + view.all_anchors)
        top = relaxed[-1]
        anchored = any(top == c for c in view.all_anchors)
        unsupported = _unsupported(relaxed, anchored, purpose, verdict.verifier_error)
        if not anchored:
            # Also what the path we have would meet once the root is there: one fix, one refusal.
            verdict.problems = [*store_wide, _missing_root(top, leaf), *unsupported]
            verdict.problems += _path_problems(relaxed, view, purpose, at, crls, verdict.warnings, strict=False,
                                               rules=rules)
            verdict.problems += _depth(relaxed, rules) + _name_problems(leaf, name) + _ca_list_fix(verdict, None)
            return _ordered(verdict)
    else:
        unsupported = _unsupported(relaxed, True, purpose, verdict.verifier_error)
    verdict.chain = relaxed
    verdict.problems = store_wide + _path_problems(relaxed, view, purpose, at, crls, verdict.warnings, strict=False,
                                                   rules=rules)
    verdict.problems += unsupported + _depth(relaxed, rules) + _name_problems(leaf, name)
    verdict.problems += _ca_list_fix(verdict, relaxed[-1])
    if not verdict.problems and "unsupported" in (verdict.verifier_error or ""):
        # what the verifier cannot judge (a directoryName name constraint): not the certificate's fault
        verdict.problems = [Problem(UNSUPPORTED, f"storesync's verifier cannot judge this chain "
                                                 f"({verdict.verifier_error}); OpenSSL may accept it",
                                    fix=_compare_with_openssl(purpose), cert=leaf,
                                    data={"algorithm": None, "refused": None})]
    if not verdict.problems:  # the strict verifier refused for a reason we do not name
        verdict.problems = [Problem(INVALID, f"the verifier refused it: {verdict.verifier_error}",
                                    fix="see the verifier's message", cert=leaf)]
    return _ordered(verdict)


def _schannel(trust_set: TrustSet, verdict: Verdict) -> list[Problem]:
    """What breaks client authentication on IIS whatever the certificate: a Trusted Root store
    holding a certificate that is not self-signed (403.16, KB 2795828), and an acceptable-CA list
    (each root's DER subject with its 2-byte length, as TLS sends them) over about 16 KB: Schannel
    cuts it and clients then offer no certificate (403.7, KB 933430). The size is reported always."""
    import warnings

    problems, sizes = [], []
    warnings.filterwarnings("ignore", "Attribute's length", UserWarning)  # real roots have such names
    for entry in trust_set.values():
        cert = entry.cert.x509
        if entry.distrusted or cert is None:
            continue
        sizes.append((2 + len(cert.subject.public_bytes()), entry))
        if cert.issuer != cert.subject:
            problems.append(Problem(
                NOT_SELF_SIGNED, f"{short_name(cert)} is in the Trusted Root store but is not self-signed (issued by "
                                 f"{cert.issuer.rfc4514_string()}): IIS then refuses client certificates (403.16)",
                fix=f"move {short_name(cert)} (SHA-1 {entry.cert.sha1}) from Trusted Root Certification Authorities "
                    f"to Intermediate Certification Authorities: certutil -delstore Root {entry.cert.sha1}, then "
                    "certutil -addstore CA with its file", cert=cert))
    total = sum(size for size, _ in sizes)
    verdict.data["ca_names"] = {"bytes": total, "roots": len(sizes), "limit": SCHANNEL_CA_LIST_LIMIT}
    verdict.data["_ca_sizes"] = sizes
    return problems


def _ca_list_fix(verdict: Verdict, anchor) -> list[Problem]:
    """The CA-name list problem, once the anchor to keep is known: drop the fewest roots (the
    longest names first, never the anchor of this chain) that bring the list under the limit."""
    names = verdict.data.pop("_ca_sizes", None)
    if names is None or verdict.data["ca_names"]["bytes"] <= SCHANNEL_CA_LIST_LIMIT:
        return []
    total, dropped = verdict.data["ca_names"]["bytes"], 0
    for size, entry in sorted(names, key=lambda pair: -pair[0]):
        if total <= SCHANNEL_CA_LIST_LIMIT:
            break
        if entry.cert.x509 == anchor:
            continue
        total, dropped = total - size, dropped + 1
    info = verdict.data["ca_names"]
    info["drop"] = dropped
    return [Problem(
        CA_LIST, f"the store's {info['roots']} roots make an acceptable-CA list of {info['bytes']} bytes; Schannel "
                 f"cuts it at about {SCHANNEL_CA_LIST_LIMIT} bytes and clients that choose a certificate by these names "
                 "then offer none (403.7)",
        fix=f"drop at least {dropped} roots from the Trusted Root store (the longest names first; keep "
            + (short_name(anchor) if anchor is not None else "the roots of your clients")
            + "), or stop sending the list (SCHANNEL SendTrustedIssuerList = 0)",
        data={"bytes": info["bytes"], "roots": info["roots"], "drop": dropped})]


def _depth(path: list, rules: Rules) -> list[Problem]:
    """More intermediate CAs than the server's verify depth allows (OpenSSL counts the CAs
    between the leaf and the anchor; a self-issued top is the anchor, not counted)."""
    cas = [c for c in path[1:] if c.issuer != c.subject]
    needed = len(cas) + (1 if rules.depth_counts_root else 0)
    if rules.depth is None or needed <= rules.depth:
        return []
    found = rules.settings.get("depth")
    found = found if found and found.get("file") else None
    now = rules.where("depth") if found else f"{rules.name('depth')} is not set (default {rules.depth})"
    counted = "CAs above it, its root included" if rules.depth_counts_root else "intermediate CAs up to its root"
    return [Problem(
        DEPTH, f"{short_name(path[0])} has {len(cas)} intermediate CAs ({', '.join(short_name(c) for c in cas)}), "
               f"so a depth of {needed} ({counted}); {rules.server} allows {rules.depth}: {now}",
        fix=f"set {rules.name('depth')} {needed}" + (f" in {rules.block}" if rules.block else "")
            + (f" ({found['file']}:{found['line']})" if found else ""),
        cert=path[0], data={"intermediates": len(cas), "depth": rules.depth, "needed": needed,
                            "setting": rules.name("depth")})]


def _name_problems(leaf, name: str | None) -> list[Problem]:
    """The host name against the leaf's subjectAltName (DNS with a leftmost wildcard, or IP), as
    the web-PKI verifier matches it: the common name does not count."""
    import ipaddress

    from cryptography import x509

    if name is None:
        return []
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns, ips = san.get_values_for_type(x509.DNSName), san.get_values_for_type(x509.IPAddress)
    except (x509.ExtensionNotFound, ValueError):
        dns, ips = [], []
    try:
        address = ipaddress.ip_address(name)
        if address in ips:
            return []
    except ValueError:
        host = name.lower().rstrip(".")
        for pattern in (d.lower().rstrip(".") for d in dns):
            if pattern == host or (pattern.startswith("*.") and "." in host
                                   and host.split(".", 1)[1] == pattern[2:] and host.split(".", 1)[0]):
                return []
    names = ", ".join([*dns, *map(str, ips)]) or "no subjectAltName"
    return [Problem(NAME_MISMATCH, f"{short_name(leaf)} is not for the host {name}: it names {names}",
                    fix=f"get a certificate whose subjectAltName holds {name} (or connect by a name it holds)",
                    cert=leaf, data={"name": name, "names": [*dns, *map(str, ips)]})]


# What cryptography's web-PKI verifier accepts (cryptography-x509-verification's WEBPKI_PERMITTED_*
# and its 2048-bit RSA floor); OpenSSL's `verify` accepts more.
_WEBPKI_SIGNATURES = {
    "1.2.840.113549.1.1.11", "1.2.840.113549.1.1.12", "1.2.840.113549.1.1.13",  # sha256/384/512WithRSAEncryption
    "1.2.840.10045.4.3.2", "1.2.840.10045.4.3.3", "1.2.840.10045.4.3.4",  # ecdsa-with-SHA256/384/512
}
_RSA_PSS = "1.2.840.113549.1.1.10"
_RSA_KEY, _EC_KEY = "1.2.840.113549.1.1.1", "1.2.840.10045.2.1"
_WEBPKI_CURVES = {"secp256r1", "secp384r1", "secp521r1"}
_MIN_RSA_BITS = 2048
_HASH_NAMES = {"md2": "MD2", "md4": "MD4", "md5": "MD5", "sha1": "SHA-1", "sha224": "SHA-224"}
_KEY_NAMES = {
    "1.3.101.112": "Ed25519", "1.3.101.113": "Ed448", "1.2.840.10040.4.1": "DSA", _RSA_PSS: "RSA-PSS",
    "1.3.101.110": "X25519", "1.3.101.111": "X448",
}
# The verifier's words for such a refusal (its message names one candidate path only).
_VERIFIER_UNSUPPORTED = ("forbidden signature algorithm", "forbidden public key algorithm", "key is too weak")
_OPENSSL_PURPOSE = {"client-auth": "sslclient", "server-auth": "sslserver", "email": "smimesign"}


def _signature_label(cert) -> str | None:
    """None if the web-PKI verifier accepts `cert`'s signature algorithm, else its name."""
    oid = cert.signature_algorithm_oid
    if oid.dotted_string in _WEBPKI_SIGNATURES:
        return None
    name = getattr(oid, "_name", None) or oid.dotted_string
    if oid.dotted_string == _RSA_PSS:
        try:
            params = cert.signature_algorithm_parameters
            digest = cert.signature_hash_algorithm
            mgf = getattr(getattr(params, "_mgf", None), "_algorithm", None)
            salt = getattr(params, "_salt_length", None)
        except Exception:  # noqa: BLE001 - parameters cryptography cannot read
            return "RSA-PSS with unreadable parameters"
        if (digest is not None and digest.name in ("sha256", "sha384", "sha512")
                and mgf is not None and mgf.name == digest.name and salt == digest.digest_size):
            return None
        return f"RSA-PSS ({digest.name if digest else '?'}, salt length {salt})"
    try:
        digest = cert.signature_hash_algorithm
    except Exception:  # noqa: BLE001 - e.g. MD2, which cryptography does not know
        digest = None
    if digest is not None and digest.name in _HASH_NAMES:
        return f"{_HASH_NAMES[digest.name]} ({name})"
    if oid.dotted_string in _KEY_NAMES:  # Ed25519, Ed448: the signature OID is the key's
        return _KEY_NAMES[oid.dotted_string]
    if name.lower().startswith("dsa"):
        return f"DSA ({name})"
    return name


def _key_label(cert) -> str | None:
    """None if the web-PKI verifier accepts `cert`'s public key as an issuer's, else a description."""
    try:
        oid = cert.public_key_algorithm_oid.dotted_string
    except Exception:  # noqa: BLE001
        return "a public key cryptography cannot read"
    if oid == _RSA_KEY:
        try:
            bits = cert.public_key().key_size
        except Exception:  # noqa: BLE001
            return "an RSA key cryptography cannot read"
        return None if bits >= _MIN_RSA_BITS else f"a {bits}-bit RSA key"
    if oid == _EC_KEY:
        try:
            curve = cert.public_key().curve.name
        except Exception:  # noqa: BLE001
            return "an EC key on a curve cryptography does not know"
        return None if curve in _WEBPKI_CURVES else f"an EC key on {curve}"
    name = _KEY_NAMES.get(oid) or getattr(cert.public_key_algorithm_oid, "_name", None) or oid
    return f"{'an' if name[:1] in 'AEIOUX' else 'a'} {name} key"


def _compare_with_openssl(purpose: str) -> str:
    """The command that shows what OpenSSL makes of a chain storesync's verifier cannot judge."""
    openssl = _OPENSSL_PURPOSE.get(purpose)
    return ("compare with OpenSSL: openssl verify -CAfile ROOT.pem -untrusted CHAIN.pem"
            + (f" -purpose {openssl}" if openssl else "") + " CERT.pem")


def _unsupported(path: list, anchored: bool, purpose: str, verifier_error: str | None) -> list[Problem]:
    """The certificates of `path` whose signature algorithm or (as an issuer) key cryptography's
    web-PKI verifier refuses: OpenSSL may accept them, `check` cannot. The verifier checks no
    anchor's self-signature and no leaf's key, so neither counts."""
    problems = []
    but = "OpenSSL may accept this chain, but storesync's verifier (cryptography's web-PKI rules) does not"
    compare = _compare_with_openssl(purpose)
    for index, cert in enumerate(path):
        is_top = index == len(path) - 1
        who = f"the root {short_name(cert)}" if is_top and anchored else short_name(cert)
        if not (is_top and (anchored or cert.issuer == cert.subject)):
            label = _signature_label(cert)
            if label is not None:
                problems.append(Problem(
                    UNSUPPORTED, f"{who} is signed with {label}: {but}",
                    fix=f"have {short_name(cert)} reissued with SHA-256 or better (ECDSA P-256/P-384 or RSA of "
                        f"2048 bits or more); until then storesync cannot vouch for this chain ({compare})",
                    cert=cert, data={"algorithm": label, "refused": "signature"}))
        if index > 0:
            label = _key_label(cert)
            if label is not None:
                problems.append(Problem(
                    UNSUPPORTED, f"{who} has {label} (it signs {short_name(path[index - 1])}): {but}",
                    fix=f"move to a CA with an ECDSA P-256/P-384 key or an RSA key of 2048 bits or more in place of "
                        f"{short_name(cert)}; until then storesync cannot vouch for this chain ({compare})",
                    cert=cert, data={"algorithm": label, "refused": "key"}))
    if not problems and verifier_error and any(w in verifier_error.lower() for w in _VERIFIER_UNSUPPORTED):
        # The verifier names an algorithm or key this path does not hold (another candidate path's).
        detail = verifier_error.split(":", 2)[-1].strip()
        detail = detail if len(detail) <= 120 else detail[:117] + "..."
        problems.append(Problem(
            UNSUPPORTED, f"a certificate that could complete the chain of {short_name(path[0])} uses an algorithm or "
                         f"key ({detail}): {but}",
            fix=f"see the verifier's message ({compare})", cert=path[0], data={"algorithm": None, "refused": None}))
    return problems


def _ordered(verdict: Verdict) -> Verdict:
    verdict.problems.sort(key=lambda p: ORDER.index(p.reason))
    return verdict


def _missing_root(top, leaf) -> Problem:
    if top.issuer == top.subject:
        what = f"the root {short_name(top)} ({top.subject.rfc4514_string()}) is not an anchor in this store"
    else:
        key_id = _key_id(top)
        what = (f"no anchor in this store issued {short_name(top)}: its issuer is {top.issuer.rfc4514_string()}"
                + (f", key id {key_id}" if key_id else ""))
    return Problem(MISSING_ROOT, what, cert=top, data={
        "issuer": top.issuer.rfc4514_string(), "key_id": _key_id(top), "self_signed_top": top.issuer == top.subject,
    })


def _path_problems(path: list, view: StoreView, purpose: str, at: datetime, crls: list, warnings: list[str],
                   strict: bool, rules: Rules | None = None) -> list[Problem]:
    from cryptography import x509

    leaf, root = path[0], path[-1]
    problems: list[Problem] = []
    for cert in path:
        entry = view.entry(cert)
        if entry is not None and entry.trust.get(purpose) == DISTRUSTED:
            problems.append(Problem(
                DISTRUSTED_CODE, f"{short_name(cert)} is distrusted for {purpose} in this store",
                fix=f"reissue the certificate under a CA this store trusts (or lift the distrust of {short_name(cert)} "
                    "if it was a mistake)", cert=cert))
        if entry is not None and cert is root and entry.trust.get(purpose) not in (TRUSTED, DISTRUSTED):
            others = ", ".join(entry.trusted_purposes) or "no purpose"
            problems.append(Problem(
                PURPOSE, f"the root {short_name(cert)} is in this store but trusted only for {others}, not {purpose}",
                fix=f"trust {short_name(cert)} for {purpose} in this store, if that is intended", cert=cert))
        if entry is not None:
            date = entry.distrust_after.get(purpose)
            if date is not None and leaf.not_valid_before_utc > date:
                problems.append(Problem(
                    DISTRUST_AFTER,
                    f"{short_name(cert)} is distrusted for {purpose} certificates issued after {_iso(date)}; "
                    f"{short_name(leaf)} was issued {_iso(leaf.not_valid_before_utc)}",
                    fix="get a certificate from a CA this store still trusts", cert=cert,
                    data={"distrust_after": _iso(date)}))
        if at < cert.not_valid_before_utc:
            problems.append(Problem(
                NOT_YET_VALID,
                f"{short_name(cert)} is not valid before {_iso(cert.not_valid_before_utc)}; checked at {_iso(at)} "
                "(if that is not the time now, check this machine's clock)",
                fix=f"wait until {_iso(cert.not_valid_before_utc)}, or fix the clock of the machine that checks",
                cert=cert, data={"checked_at": _iso(at)}))
        elif at > cert.not_valid_after_utc:
            problems.append(Problem(
                EXPIRED, f"{short_name(cert)} expired {_iso(cert.not_valid_after_utc)}; checked at {_iso(at)}",
                fix=f"renew {short_name(cert)}" + (" (its issuer must reissue it)" if cert is not leaf else ""),
                cert=cert, data={"checked_at": _iso(at)}))
        if not strict:
            try:
                eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
                oids = {o.dotted_string for o in eku}
                if EKU_OIDS[purpose] not in oids and ANY_EKU not in oids:
                    names = ", ".join(o._name for o in eku)
                    problems.append(Problem(
                        PURPOSE, f"{short_name(cert)} is not for {purpose}: its extendedKeyUsage is {names}",
                        fix=f"get a certificate issued for {purpose}", cert=cert))
            except x509.ExtensionNotFound:
                pass
    problems += _revocations(path, at, crls, warnings, rules or Rules())
    return problems


def _revocations(path: list, at: datetime, crls: list, warnings: list[str], rules: Rules) -> list[Problem]:
    """Each certificate below the top against the CRLs of its issuer. Which certificates, and
    whether a valid CRL must be there, are the server's rules: OpenSSL refuses a certificate it
    checks whose issuer's CRL is missing ("unable to get certificate CRL") or past its nextUpdate
    ("CRL has expired")."""
    if rules.crl == "none":
        if crls:
            warnings.append(f"CRLs not checked: {rules.where('crl_check') if 'crl_check' in rules.settings else rules.name('crl_check') + ' none (the default)'}")
        return []
    problems = []
    used = set()
    top = path[-1]
    for index, (cert, issuer) in enumerate(zip(path, path[1:])):
        fresh = stale = None
        for source, crl in crls:
            if crl.issuer != cert.issuer:
                continue
            used.add(source)
            if not crl.is_signature_valid(issuer.public_key()):
                warnings.append(f"CRL {source}: its signature does not verify against {short_name(issuer)}; ignored")
                continue
            if crl.next_update_utc is not None and crl.next_update_utc < at:
                stale = stale or (source, crl)
            else:
                fresh = fresh or (source, crl)
            revoked = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
            if revoked is None:
                continue
            when = revoked.revocation_date_utc
            if when > at:
                warnings.append(f"{short_name(cert)} is revoked from {_iso(when)}, after the time checked")
                continue
            problems.append(Problem(
                REVOKED, f"{short_name(cert)} (serial {serial_text(cert.serial_number)}) was revoked on {_iso(when)} "
                         f"by {short_name(issuer)} (CRL {source})",
                fix=f"issue a new certificate to replace {short_name(cert)}", cert=cert,
                data={"revoked_at": _iso(when), "crl": str(source)}))
        checked = rules.crl == "chain" or index == 0
        if fresh is None and stale is not None:
            source, crl = stale
            problems.append(Problem(
                CRL_EXPIRED, f"the CRL of {short_name(issuer)} ({source}) is past its nextUpdate "
                             f"({_iso(crl.next_update_utc)}); checked at {_iso(at)}: {rules.server} refuses every "
                             f"certificate {short_name(issuer)} issued (\"CRL has expired\")",
                fix=f"fetch a fresh CRL from {short_name(issuer)} and put it in place of {source}"
                    + (f", then reload {rules.server}" if rules.server in ("nginx", "apache") else ""),
                cert=issuer, data={"crl": str(source), "next_update": _iso(crl.next_update_utc)}))
        elif fresh is None and checked and rules.crl_required and crls and not (cert is top):
            problems.append(Problem(
                CRL_MISSING, f"no valid CRL from {short_name(issuer)} ({issuer.subject.rfc4514_string()}) among "
                             f"the CRLs of {rules.where('crl')}: {rules.server} checks a CRL for every "
                             + ("certificate of the chain" if rules.crl == "chain" else "client certificate")
                             + f" and refuses {short_name(cert)} (\"unable to get certificate CRL\")",
                fix=f"add the current CRL of {short_name(issuer)} to {rules.where('crl')}"
                    + (f", then reload {rules.server}" if rules.server in ("nginx", "apache") else ""),
                cert=cert, data={"crl_issuer": issuer.subject.rfc4514_string()}))
    if (top.issuer != top.subject and rules.crl == "chain" and rules.crl_required and crls
            and not any(crl.issuer == top.issuer for _, crl in crls)):
        # The root is not in the store (missing-root): its CRL will be wanted once it is.
        problems.append(Problem(
            CRL_MISSING, f"no CRL from {top.issuer.rfc4514_string()} among the CRLs of {rules.where('crl')}: "
                         f"{rules.server} checks a CRL for every certificate of the chain and will refuse "
                         f"{short_name(top)} (\"unable to get certificate CRL\")",
            fix=f"add the current CRL of {top.issuer.rfc4514_string()} to {rules.where('crl')}",
            cert=top, data={"crl_issuer": top.issuer.rfc4514_string()}))
    for source, crl in crls:
        if source not in used:
            warnings.append(f"CRL {source}: issued by {crl.issuer.rfc4514_string()}, which issued no certificate "
                            "of this chain; not used")
    return problems


def sync_fix(verdict: Verdict, target: str, sources: dict[str, TrustSet], kinds: dict[str, str], purpose: str,
             plain: "StoreSpec | None" = None) -> None:
    """Complete a missing-root problem with the `storesync sync` command that brings exactly the
    anchor the chain needs, for this purpose only (never the rest of the store that holds it:
    a client-CA file that took a whole system bundle would accept clients of every public CA);
    from a store that holds it, else from a file the user must get. `plain`: the target's spec
    when it holds anchors for one purpose, its spec's (`_fix_target`)."""
    problem = verdict.problems[0] if verdict.problems else None
    if problem is None or problem.reason != MISSING_ROOT:
        return
    from shlex import quote

    top = problem.cert
    flag = f" --purpose {purpose}"
    named, declared = _fix_target(target, plain, purpose)
    for spec, trust_set in sources.items():
        if spec == target:
            continue
        view = store_view(trust_set, kinds[spec], purpose, wanted=[top])
        anchor = next((c for c in view.anchors if c == top or _issued_by(top, c)), None)
        if anchor is not None:
            from cryptography.hazmat.primitives import hashes

            sha = anchor.fingerprint(hashes.SHA256()).hex()
            problem.fix = f"storesync sync --mode add --only {sha}{flag} {quote(spec)} {quote(named)}"
            problem.data.update(source=spec, adds={"subject": anchor.subject.rfc4514_string(), "sha256": sha},
                                fix_note=f"this adds one certificate, the root {short_name(anchor)} "
                                         f"({anchor.subject.rfc4514_string()}), for {purpose} only" + declared)
            return
    name = top.subject if top.issuer == top.subject else top.issuer
    problem.fix = (f"get the root certificate of {name.rfc4514_string()} and add it: "
                   f"storesync sync --mode add{flag} pem:ROOT.pem {quote(named)}"
                   + ("" if top.issuer == top.subject else "; if that issuer is an intermediate CA, pass it with --chain"))
    if declared:
        problem.data["fix_note"] = declared.removeprefix("; ")


_READERS = {"client-auth": "client certificates", "server-auth": "servers' certificates",
            "email": "e-mail signatures", "code-signing": "code signatures"}


def _fix_target(target: str, plain: "StoreSpec | None", purpose: str) -> tuple[str, str]:
    """The target as a fix names it, and what to add to the fix's note. A store without
    per-purpose trust whose spec declares another purpose takes no root trusted for this one
    only: a sync into it as named would do nothing. The fix names it for this purpose, saying
    that its readers, which take its anchors for every purpose, must then be of this purpose."""
    own = plain.options.get("purpose") if plain is not None else None
    if own is None or own == "any" or purpose_from_oid(own) == purpose:
        return target, ""
    from storesync.stores import StoreSpec

    named = StoreSpec(plain.kind, plain.path, {**plain.options, "purpose": purpose})
    return str(named), (f"; {target} is declared for {own}, and takes no root trusted for {purpose} only: the fix "
                        f"names it purpose={purpose}; run it only if its readers are those that check "
                        f"{_READERS[purpose]}, and write purpose={purpose} wherever it is named")


# --- list filters ---------------------------------------------------------------------------


def expiry_filter(trust_set: TrustSet, expiring_days: int | None = None, expired: bool = False,
                  at: datetime | None = None) -> TrustSet:
    """The entries expired at `at` (`--expired`) and/or not yet expired but expiring within
    `expiring_days` of it (`--expiring DAYS`); both: either. A certificate cryptography cannot
    read has no known date and is never selected. Neither option: the set unchanged."""
    if expiring_days is None and not expired:
        return trust_set
    at = at or datetime.now(timezone.utc)
    horizon = at + timedelta(days=expiring_days) if expiring_days is not None else None
    selected = []
    for entry in trust_set.values():
        end = entry.cert.not_after
        if end is None:
            continue
        if (expired and end < at) or (horizon is not None and at <= end <= horizon):
            selected.append(entry)
    return TrustSet(selected)
