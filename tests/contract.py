"""The store contract's shared parts: the registry of store kinds, the trust shapes, and the
properties every kind and every ordered pair of kinds must have (used by test_contract.py and
by scripts that regenerate the README's translation table).

A kind added to storesync.stores.KINDS without a registration here fails
test_every_kind_is_registered: a new kind gets the whole suite by registering itself.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from conftest import NOW, PKI, Issued, run, storesync, with_serial
from test_certdata import HEADER, cert_object, trust_object  # its writer of generated certdata.txt files
from fleet import contract_seed, contract_url  # a tuf: store is a repository published and served on loopback
from storesync import der
from storesync.engine.plan import lift, make_plan
from storesync.model import ANCHOR, DISTRUST, DISTRUSTED, PURPOSES, TRUSTED, Certificate, Entry, TrustSet
from storesync.stores import open_store

# --- the registry of kinds -------------------------------------------------------------------


def _nothing(path: Path) -> None:
    """A file store needs nothing before its first write: it is created."""


def _nss_db(path: Path) -> None:
    path.mkdir()
    run("certutil", "-N", "-d", f"sql:{path}", "--empty-password")


class Kind:
    """One store variant the suite knows: how to name it, make it empty, and break it."""

    def __init__(self, name: str, kind: str, spec: str, file: str, create=_nothing, writable: bool = True,
                 hostile=None, label=lambda text: text, seed=None):
        self.name, self.kind, self.spec, self.file = name, kind, spec, file
        self.create, self.writable = create, writable
        self.seed = seed  # how a read-only kind is filled: function(path, entries)
        self.label = label  # what the format makes of a label (Java aliases are lower case)
        self.hostile = hostile or {}  # what -> function(path) that breaks an existing store

    def spec_at(self, directory: Path) -> str:
        return self.spec.format(path=directory / self.file)

    def path_at(self, directory: Path) -> Path:
        return directory / self.file

    def __repr__(self) -> str:
        return self.name


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])


def _garbage(path: Path) -> None:
    path.write_bytes(b"\x30\x82\xff\xff" + bytes(range(256)) * 4)


def _flip_middle(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x55
    path.write_bytes(bytes(data))


def _nss_garbage(path: Path) -> None:
    (path / "cert9.db").write_bytes(b"SQLite format 3\x00" + b"\xff" * 4000)


def _dir_as_file(path: Path) -> None:
    shutil.rmtree(path)
    path.write_bytes(b"not a directory\n")


def _certdata(path: Path, entries: list[Entry]) -> None:
    """Mozilla's format, written as test_certdata writes it: server, e-mail and code-signing trust."""
    states = {TRUSTED: "TRUSTED_DELEGATOR", DISTRUSTED: "NOT_TRUSTED", None: "MUST_VERIFY_TRUST"}
    objects = []
    for e in entries:
        label = e.display_label.replace('"', "'")
        after = e.distrust_after.get("server-auth")
        objects.append(cert_object(e.cert.der, label, server_after=after and after.strftime("%y%m%d%H%M%SZ")))
        server, email, code = (states[e.trust.get(p)] for p in ("server-auth", "email", "code-signing"))
        fields = e.cert.fields
        objects.append(trust_object(fields.issuer, fields.serial, label, server, email, code, der=e.cert.der))
    path.write_text(HEADER + "\n".join(objects))


def _cut_at_nul(text: str) -> str:
    """A Windows FRIENDLY_NAME is shown (by crypt32, and read by storesync) up to its first NUL."""
    return text.split("\x00")[0]


FILE_HOSTILE = {"truncated": _truncate, "garbage": _garbage}
REGISTRY = {
    k.name: k
    for k in (
        Kind("pem", "pem", "pem:{path}", "bundle.pem", hostile={"truncated": _truncate, "private key": lambda p: p.write_bytes(
            p.read_bytes() + b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")}),
        Kind("pem-trusted", "pem", "pem:{path}?format=trusted", "trusted.pem", hostile={"truncated": _truncate}),
        Kind("dir", "dir", "dir:{path}", "hashdir", hostile={"a file, not a directory": _dir_as_file}),
        Kind("anchors", "anchors", "anchors:{path}", "anchors", hostile={"a file, not a directory": _dir_as_file}),
        Kind("nss", "nss", "nss:{path}", "nssdb", create=_nss_db, hostile={"garbage cert9.db": _nss_garbage}),
        Kind("sst", "sst", "sst:{path}", "roots.sst", hostile=FILE_HOSTILE, label=_cut_at_nul),
        Kind("sst-disallowed", "sst", "sst:{path}?role=disallowed", "disallowed.sst", hostile=FILE_HOSTILE,
             label=_cut_at_nul),
        Kind("reg", "reg", "reg:{path}", "roots.reg", hostile={"truncated": _truncate}, label=_cut_at_nul),
        Kind("p7b", "p7b", "p7b:{path}", "bundle.p7b", hostile=FILE_HOSTILE),
        Kind("jks", "jks", "jks:{path}", "cacerts.jks", hostile={**FILE_HOSTILE, "tampered": _flip_middle},
             label=str.lower),
        Kind("p12", "p12", "p12:{path}", "cacerts.p12", hostile={**FILE_HOSTILE, "tampered": _flip_middle}),
        Kind("certdata", "certdata", "certdata:{path}", "certdata.txt", writable=False, seed=_certdata),
        Kind("tuf", "tuf", "tuf:" + contract_url() + "{path}/policy?root={path}/1.root.json", "repo", writable=False,
             seed=contract_seed),
    )
}
WRITABLE = [k for k in REGISTRY.values() if k.writable]
SOURCES = list(REGISTRY.values())  # a read-only kind is a source only


# --- trust shapes ----------------------------------------------------------------------------

#: Every shape of trust the suite puts through every pair, in the README table's order.
SHAPES = (
    "anchor-one", "anchor-all", "distrust-one", "distrust-all", "distrust-after", "leaf", "root-no-bc",
    "v1-root", "duplicate-labels", "label-non-ascii", "label-nul", "serial-0", "serial-negative", "non-der",
)


def _self_signed(subject: str, extensions: bool, serial: int = 77) -> Issued:
    """A self-signed root without basicConstraints (SKI only), or with no extensions at all."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
               .serial_number(serial).not_valid_before(NOW - dt.timedelta(days=1))
               .not_valid_after(NOW + dt.timedelta(days=3650)))
    if extensions:
        builder = builder.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    return Issued(builder.sign(key, hashes.SHA256()), key)


def _v1(issued: Issued) -> bytes:
    """The certificate as X.509 v1: no version field, no extensions, re-signed."""
    tbs, sig_alg, _ = list(der.read(issued.der).children())
    fields = [f.raw for f in tbs.children() if f.tag not in (0xA0, 0xA3)]
    new_tbs = der.encode(der.SEQUENCE, b"".join(fields))
    signature = issued.key.sign(new_tbs, ec.ECDSA(hashes.SHA256()))
    return der.encode(der.SEQUENCE, new_tbs + sig_alg.raw + der.encode(0x03, b"\x00" + signature))


def _non_der(issued: Issued) -> bytes:
    """basicConstraints cA TRUE as 0x01 (BER allows it, DER says 0xFF): cryptography refuses it."""
    data = issued.der
    marker = b"\x30\x03\x01\x01\xff"
    assert data.count(marker) == 1
    return data.replace(marker, b"\x30\x03\x01\x01\x01")


class ShapeCerts:
    """The certificates of the shapes, made once per session (P-256: fast)."""

    def __init__(self, pki: PKI):
        ca = pki.ca
        self.der = {shape: ca(f"contract {shape}").der for shape in (
            "anchor-one", "anchor-all", "distrust-one", "distrust-all", "distrust-after", "label-non-ascii", "label-nul")}
        issuer = pki.ca("contract leaf issuer")
        self.der["leaf"] = pki.leaf("contract leaf", issuer).der
        self.der["root-no-bc"] = _self_signed("contract root-no-bc", extensions=True).der
        self.der["v1-root"] = _v1(_self_signed("contract v1-root", extensions=False))
        self.der["duplicate-labels"] = ca("contract duplicate one").der
        self.der["duplicate-labels-2"] = ca("contract duplicate two").der
        zero, negative = ca("contract serial-0"), ca("contract serial-negative")
        self.der["serial-0"] = with_serial(zero, zero, b"\x00")
        self.der["serial-negative"] = with_serial(negative, negative, b"\xfe\xdc")
        self.der["non-der"] = _non_der(ca("contract non-der"))
        self.prior = ca("contract prior anchor").der  # in a --mode add target before the sync
        assert Certificate(self.der["non-der"]).x509 is None, "the non-DER certificate must be refused by cryptography"


def default_variation(shape: str) -> dict:
    """The variation a shape has when hypothesis does not draw one."""
    return {"purpose": "email", "also": None, "after": dt.datetime(2025, 4, 15, tzinfo=dt.timezone.utc),
            "label": {"label-non-ascii": "Zertifikat Ä € 日本", "label-nul": "NUL\x00inside"}.get(shape)}


def entries_of(certs: ShapeCerts, case: dict[str, dict]) -> list[Entry]:
    """The entries of a case: shape -> its variation (purpose, second purpose, date, label)."""
    entries = []
    for shape, v in case.items():
        cert = Certificate(certs.der[shape])
        label = v.get("label") or f"contract {shape}"
        trust, after = dict(ANCHOR), {}
        if shape == "anchor-one":
            trust = {v["purpose"]: TRUSTED}
        elif shape == "distrust-one":
            trust = {v["purpose"]: DISTRUSTED}
            if v.get("also") and v["also"] != v["purpose"]:
                trust[v["also"]] = TRUSTED
        elif shape == "distrust-all":
            trust = dict(DISTRUST)
        elif shape == "distrust-after":
            after = {"server-auth": v["after"]}
        entries.append(Entry(cert, trust, label, after))
        if shape == "duplicate-labels":
            entries.append(Entry(Certificate(certs.der["duplicate-labels-2"]), dict(ANCHOR), label))
    return entries


def shape_of(certs: ShapeCerts) -> dict[str, str]:
    """SHA-256 -> shape, to say which shape a difference belongs to."""
    out = {Certificate(d).sha256: s for s, d in certs.der.items()}
    return {sha: s.removesuffix("-2") if s == "duplicate-labels-2" else s for sha, s in out.items()}


# --- stores ------------------------------------------------------------------------------------


def make_store(kind: Kind, directory: Path, entries: list[Entry]) -> str:
    """A store of `kind` in `directory` holding `entries` as the kind can (written in process,
    through the kind's own writer). Returns its spec."""
    kind.create(kind.path_at(directory))
    spec = kind.spec_at(directory)
    if kind.seed:
        kind.seed(kind.path_at(directory), entries)
    elif entries:
        store = open_store(spec)
        plan = make_plan(TrustSet(entries), store.read(), store.capabilities, store=spec, purpose=store.purpose)
        store.write(plan)
    return spec


def read_store(spec: str) -> tuple[TrustSet, object]:
    store = open_store(spec)
    return store.read(), store


def effective(spec: str) -> dict[str, set[str]]:
    """SHA-256 -> the purposes the store trusts the certificate for (distrusted: none)."""
    trust_set, store = read_store(spec)
    lifted = lift(trust_set, store.capabilities, store.purpose)
    return {sha: {p for p, s in e.trust.items() if s == TRUSTED} for sha, e in lifted.items()}


def state_of(path: Path) -> dict[str, tuple]:
    """Every file of a store: inode, mtime and bytes (a write that changes nothing shows here)."""
    files = sorted(path.rglob("*")) if path.is_dir() else [path] if path.exists() else []
    out = {}
    for f in files:
        st = os.lstat(f)
        out[str(f)] = (st.st_ino, st.st_mtime_ns, os.readlink(f) if f.is_symlink() else f.read_bytes() if f.is_file() else None)
    return out


def cli_json(*args) -> tuple[int, dict, str]:
    result = storesync(*args, "--json")
    try:
        data = json.loads(result.stdout) if result.stdout.strip() else {}
    except json.JSONDecodeError:
        data = {"unparsed": result.stdout}
    return result.returncode, data, result.stderr


def target_plan(data: dict, position: int = 1) -> dict:
    return data.get("plans", [{}] * (position + 1))[position] if data.get("plans") else {}


# --- the pair properties -------------------------------------------------------------------------


def check_pair(a: Kind, b: Kind, certs: ShapeCerts, case: dict[str, dict], tmp: Path) -> list[tuple[str, str, str]]:
    return check_pairs(a, [b], certs, case, tmp)[b.name]


def check_pairs(a: Kind, targets: list[Kind], certs: ShapeCerts, case: dict[str, dict],
                tmp: Path) -> dict[str, list[tuple[str, str, str]]]:
    """Sync a store of kind `a` holding `case` into new stores of the `targets` kinds (one CLI
    run for all: a campaign costs a few runs per source, not per pair); returns, per target,
    every broken property as (shape, property, what), shape "*" when it is not one certificate's."""
    shapes = shape_of(certs)
    broken: dict[str, list[tuple[str, str, str]]] = {b.name: [] for b in targets}

    def fail(b: Kind, sha: str | None, prop: str, what: str) -> None:
        broken[b.name].append((shapes.get(sha, "?") if sha else "*", prop, what))

    (tmp / "a").mkdir()
    spec_a = make_store(a, tmp / "a", entries_of(certs, case))
    before_a = state_of(a.path_at(tmp / "a"))
    trusted_a = effective(spec_a)
    specs, places = {}, {}
    for role in ("b", "add", "narrow"):
        for b in targets:
            where = tmp / role / b.name
            where.mkdir(parents=True)
            places[role, b.name] = b.path_at(where)
            if role == "b":
                b.create(places[role, b.name])
                specs[role, b.name] = b.spec_at(where)
            elif role == "add":  # a target that already holds something of its own
                specs[role, b.name] = make_store(b, where, [Entry(Certificate(certs.prior), dict(ANCHOR), "contract prior")])
            else:  # a target that trusts every certificate of the case for everything
                anchors = [e.replace(trust=dict(ANCHOR), distrust_after={}) for e in entries_of(certs, case)]
                specs[role, b.name] = make_store(b, where, anchors)

    code, data, err = cli_json("sync", spec_a, *(specs["b", b.name] for b in targets))
    if code != 0 or "Traceback" in err:
        for b in targets:
            fail(b, None, "sync", f"exit {code}: {err.strip() or data.get('error')}")
        return broken
    lost = {b.name: {loss["sha256"] for loss in target_plan(data, n + 1).get("losses", [])}
            for n, b in enumerate(targets)}
    for b in targets:
        spec_b = specs["b", b.name]
        if not places["b", b.name].exists():  # nothing to write: see test_sync_creates_its_target
            fail(b, None, "create", "the sync had nothing to write and did not create the target")
            open_store(spec_b).write(make_plan(TrustSet(), TrustSet(), open_store(spec_b).capabilities, store=spec_b))

        # diff exits 0, or the sync said `!` for every difference
        code, diff, err = cli_json("diff", spec_a, spec_b)
        if code not in (0, 1) or "Traceback" in err:
            fail(b, None, "diff", f"exit {code}: {err.strip()}")
        for key in ("only_a", "only_b"):
            for e in diff.get(key, []):
                if e["sha256"] not in lost[b.name]:
                    fail(b, e["sha256"], "diff", f"{key} without a ! line")
        for e in diff.get("trust_differs", []):
            if e["sha256"] not in lost[b.name]:
                fail(b, e["sha256"], "diff", f"trust differs ({e['a']} vs {e['b']}) without a ! line")

        # no trust is ever widened: trusted for P in B only if trusted for P in A
        for sha, purposes in effective(spec_b).items():
            widened = purposes - trusted_a.get(sha, set())
            if widened:
                fail(b, sha, "no-widening", f"trusted for {sorted(widened)} in B, not in A")

    # a second identical sync says in sync and touches nothing
    before = {b.name: state_of(places["b", b.name]) for b in targets}
    code, data, err = cli_json("sync", spec_a, *(specs["b", b.name] for b in targets))
    for n, b in enumerate(targets):
        plan = target_plan(data, n + 1)
        if code != 0 or plan.get("adds") or plan.get("removals") or plan.get("changes"):
            fail(b, None, "idempotent", f"second sync: exit {code}, {plan.get('adds')} {plan.get('removals')} "
                                        f"{plan.get('changes')} {err.strip()}")
        if state_of(places["b", b.name]) != before[b.name]:
            fail(b, None, "idempotent", "second sync rewrote the target")
    if state_of(a.path_at(tmp / "a")) != before_a:
        for b in targets:
            fail(b, None, "source", "the sync changed its source")

    # --mode add never removes and never widens beyond what A or the target already trusted
    had = {b.name: effective(specs["add", b.name]) for b in targets}
    code, data, err = cli_json("sync", "--mode", "add", spec_a, *(specs["add", b.name] for b in targets))
    for b in targets:
        if code != 0 or "Traceback" in err:
            fail(b, None, "add", f"exit {code}: {err.strip() or data.get('error')}")
            continue
        after = effective(specs["add", b.name])
        for sha in had[b.name]:
            if sha not in after:
                fail(b, sha, "add", "--mode add removed it")
        for sha, purposes in after.items():
            widened = purposes - trusted_a.get(sha, set()) - had[b.name].get(sha, set())
            if widened:
                fail(b, sha, "add", f"--mode add trusts it for {sorted(widened)}: neither store did")
        for sha in effective(specs["b", b.name]):
            if sha not in after:
                fail(b, sha, "add", "the mirror sync wrote it, --mode add did not")

    # a mirror narrows: what A speaks for, B trusts no more than A, whatever B trusted before
    source = open_store(spec_a)
    scope = set(PURPOSES) if source.capabilities.purposes or source.purpose == "any" else {source.purpose}
    code, data, err = cli_json("sync", "--force", spec_a, *(specs["narrow", b.name] for b in targets))
    for b in targets:
        if code != 0 or "Traceback" in err:
            fail(b, None, "narrow", f"exit {code}: {err.strip() or data.get('error')}")
            continue
        for sha, purposes in effective(specs["narrow", b.name]).items():
            widened = (purposes & scope) - trusted_a.get(sha, set())
            if widened:
                fail(b, sha, "narrow", f"still trusted for {sorted(widened)} after a mirror of a store that does not")
    return broken


# --- the per-kind properties ---------------------------------------------------------------------


def check_round_trip(kind: Kind, certs: ShapeCerts, case: dict[str, dict], tmp: Path) -> list[tuple[str, str, str]]:
    """What the kind's writer writes reads back as the plan's desired set (the case projected
    onto the kind's capabilities): same certificates, same trust and dates, same labels where
    the kind keeps labels."""
    shapes = shape_of(certs)
    kind.create(kind.path_at(tmp))
    spec = kind.spec_at(tmp)
    store = open_store(spec)
    plan = make_plan(TrustSet(entries_of(certs, case)), store.read(), store.capabilities, store=spec,
                     purpose=store.purpose)
    store.write(plan)
    again, reader = read_store(spec)
    broken = []
    for sha in set(plan.desired) | set(again):
        want, got = plan.desired.get(sha), again.get(sha)
        if want is None or got is None:
            broken.append((shapes.get(sha, "?"), "round-trip", "not written" if got is None else "not planned"))
        elif want.trust_key() != got.trust_key():
            broken.append((shapes[sha], "round-trip", f"trust {dict(want.trust)} {want.distrust_after} read back as "
                                                      f"{dict(got.trust)} {got.distrust_after}"))
        elif reader.capabilities.labels and not _same_label(kind.label(want.label or ""), got.label or ""):
            broken.append((shapes[sha], "round-trip", f"label {want.label!r} read back as {got.label!r}"))
    return broken


WHAT_TO_DO = ("restore it", "restore the file", "give the right", "give that folder", "check the path", "create one with",
              "use pem:", "move the key")


def check_hostile(kind: Kind, what: str, certs: ShapeCerts, tmp: Path) -> list[str]:
    """A broken store: `list` and a sync into it exit 2 with one sentence naming the file, and
    the store stays as it was."""
    spec = make_store(kind, tmp, entries_of(certs, {"anchor-all": {}, "distrust-all": {}}))
    path = kind.path_at(tmp)
    kind.hostile[what](path)
    before = state_of(path)
    source = tmp / "source.pem"
    source.write_bytes(pem_of_der(certs.der["anchor-one"]))
    problems = []
    for args in (("list", spec), ("sync", f"pem:{source}", spec)):
        result = storesync(*args)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        if result.returncode != 2:
            problems.append(f"{args[0]}: exit {result.returncode}, not 2 ({result.stderr.strip()[:200]})")
        elif "Traceback" in result.stderr or len(lines) != 1 or not lines[0].startswith("storesync: "):
            problems.append(f"{args[0]}: not one sentence: {result.stderr.strip()[:300]}")
        elif str(path) not in lines[0]:
            problems.append(f"{args[0]}: the sentence does not name {path}: {lines[0]}")
        elif not any(todo in lines[0] for todo in WHAT_TO_DO):
            problems.append(f"{args[0]}: the sentence does not say what to do: {lines[0]}")
        if state_of(path) != before:
            problems.append(f"{args[0]}: the store changed")
    return problems


def pem_of_der(data: bytes) -> bytes:
    from conftest import pem_of

    return pem_of(data)


def _same_label(want: str, got: str) -> bool:
    """Equal, or made unique by the format (NSS's `#2`, Java's `[sha]`) for a duplicate."""
    return got == want or (got.startswith(want + " ") and want.startswith("contract duplicate"))


# --- the README's translation table --------------------------------------------------------------


def translate(kind: Kind, certs: ShapeCerts, shape: str, tmp: Path) -> str:
    """What a sync does to one shape in one kind (a fresh store): the plan as `sync` makes it
    (projection, ca_only, what the kind's readers would load), written by the kind's writer and
    read back. `!`: the plan says so."""
    from storesync.engine import policy

    (tmp / kind.name).mkdir()
    kind.create(kind.path_at(tmp / kind.name))
    spec = kind.spec_at(tmp / kind.name)
    store = open_store(spec)
    wanted = entries_of(certs, {shape: default_variation(shape)})
    plan = make_plan(TrustSet(wanted), store.read(), store.capabilities, store=spec, purpose=store.purpose)
    policy.refuse_non_ca(plan)
    policy.refuse_unloadable(plan, store.reader)
    store.write(plan)
    got = read_store(spec)[0]
    losses = " ".join(loss.what for loss in plan.losses)
    bang = " !" if losses else ""
    if any(why in losses for why in ("not a CA", "would not load it", "refused as an anchor")):
        return "refused !"
    notes = []
    for entry in wanted:
        have = got.get(entry.sha256)
        if have is None:
            return f"dropped{bang}"
        if dict(have.trust) != dict(entry.trust):
            notes.append("distrusted for all" if have.distrusted and dict(have.trust) == DISTRUST
                         else "trusted for all" if dict(have.trust) == ANCHOR
                         else "not trusted for " + ", ".join(sorted(set(entry.trusted_purposes) - set(have.trusted_purposes)))
                         if set(have.trusted_purposes) < set(entry.trusted_purposes)
                         else "also trusted for " + ", ".join(sorted(set(have.trusted_purposes) - set(entry.trusted_purposes))))
        if have.distrust_after != entry.distrust_after:
            notes.append("date dropped")
        if shape.startswith(("label", "duplicate")) and store.capabilities.labels:
            label = have.label or ""
            notes.append("label kept" if label == entry.label else "label lower-cased" if label == entry.label.lower()
                         else "label cut at NUL" if "\x00" in entry.label and label == _cut_at_nul(entry.label)
                         else "label made unique" if label.lower().startswith(entry.label.lower()) else f"label {label!r}")
        elif shape.startswith(("label", "duplicate")):
            notes.append("label dropped")
    notes = list(dict.fromkeys(n for n in notes if n != "label kept")) if shape == "duplicate-labels" else list(dict.fromkeys(notes))
    return (", ".join(notes) or "kept") + bang


def translation_table(certs: ShapeCerts, tmp: Path) -> str:
    """The README's table: a row per shape, a column per writable kind."""
    head = "| shape | " + " | ".join(f"`{k.name}`" for k in WRITABLE) + " |"
    lines = [head, "|---" * (len(WRITABLE) + 1) + "|"]
    for shape in SHAPES:
        cells = []
        for kind in WRITABLE:
            where = tmp / shape
            where.mkdir(exist_ok=True)
            cells.append(translate(kind, certs, shape, where))
        lines.append(f"| {shape} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # print the table for the README: python tests/contract.py
    import sys
    import tempfile

    os.environ.setdefault("STORESYNC_STATE_DIR", tempfile.mkdtemp())
    with tempfile.TemporaryDirectory() as scratch:
        sys.stdout.write(translation_table(ShapeCerts(PKI()), Path(scratch)))
