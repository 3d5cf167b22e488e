"""The `jks` store against the JDK's keytool and TrustManager, p11-kit and Debian's cacerts."""

from __future__ import annotations

import json
import os
import re
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from storesync.engine.plan import make_plan
from storesync.model import DISTRUST, Certificate, Entry, StoreError, TrustSet
from storesync.stores import open_store, parse_spec
from storesync.stores.jks import integrity_hash, parse_jks, render_jks, trusted_record

from conftest import NOW, SYSTEM_BUNDLE, need, run, storesync

DEBIAN_CACERTS = Path("/etc/ssl/certs/java/cacerts")

CHECK_JAVA = r"""
import java.io.*;
import java.security.KeyStore;
import java.security.MessageDigest;
import java.security.cert.*;
import java.util.*;
import javax.net.ssl.*;

public class Check {
    public static void main(String[] args) throws Exception {
        KeyStore ks = KeyStore.getInstance(args[1]);
        try (InputStream in = new FileInputStream(args[0])) {
            ks.load(in, args[2].isEmpty() ? null : args[2].toCharArray());
        }
        TrustManagerFactory tmf = TrustManagerFactory.getInstance("PKIX");
        tmf.init(ks);
        X509TrustManager tm = (X509TrustManager) tmf.getTrustManagers()[0];
        if (args.length == 3) {  // no chain: the SHA-256 of every certificate it trusts
            for (X509Certificate c : tm.getAcceptedIssuers()) {
                System.out.println(HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256").digest(c.getEncoded())));
            }
            return;
        }
        List<X509Certificate> chain = new ArrayList<>();
        try (InputStream in = new FileInputStream(args[3])) {
            for (Certificate c : CertificateFactory.getInstance("X.509").generateCertificates(in)) {
                chain.add((X509Certificate) c);
            }
        }
        try {
            tm.checkServerTrusted(chain.toArray(new X509Certificate[0]), "ECDHE_ECDSA");
            System.out.println("TRUSTED");
        } catch (CertificateException e) {
            System.out.println("REFUSED " + e.getMessage());
        }
    }
}
"""


# --- helpers (test_p12 uses them too) -------------------------------------------------------


def keytool(*args, check: bool = True):
    return run(need("keytool"), *args, check=check)


def keytool_list(path: Path, password: str | None = "changeit", storetype: str | None = None) -> dict[str, tuple[str, str]]:
    """alias -> (entry type, SHA-256 hex of the (first) certificate), as keytool sees the store."""
    args = ["-list", "-v", "-keystore", path]
    if password is not None:
        args += ["-storepass", password]
    if storetype:
        args += ["-storetype", storetype]
    out = keytool(*args).stdout.decode()
    entries = {}
    for block in out.split("Alias name: ")[1:]:
        alias = block.splitlines()[0]
        kind = re.search(r"Entry type: (\w+)", block).group(1)
        sha = re.search(r"SHA256: ([0-9A-F:]+)", block).group(1).replace(":", "").lower()
        entries[alias] = (kind, sha)
    count = re.search(r"Your keystore contains (\d+) entr", out)
    assert count and int(count.group(1)) == len(entries), out
    return entries


def java_trusts(tmp_path: Path, store: Path, storetype: str, password: str, *chain) -> str:
    """Run a JDK PKIX TrustManager over `chain` (leaf first) with `store` as its trust store."""
    source = tmp_path / "Check.java"
    source.write_text(CHECK_JAVA)
    chain_file = tmp_path / "chain.pem"
    chain_file.write_bytes(b"".join(c.pem for c in chain))
    java = need("java")
    return run(java, source, store, storetype, password, chain_file).stdout.decode().strip()


def java_anchors(tmp_path: Path, store: Path, storetype: str, password: str = "changeit") -> set[str]:
    """The SHA-256 of every certificate a JDK PKIX TrustManager over `store` trusts."""
    source = tmp_path / "Check.java"
    source.write_text(CHECK_JAVA)
    return set(run(need("java"), source, store, storetype, password).stdout.decode().split())


def sync(spec: str, source: TrustSet, **kwargs):
    store = open_store(spec)
    plan = make_plan(source, store.read(), store.capabilities, store=spec, purpose="any", **kwargs)
    store.write(plan)
    return plan


def trust_set(*issued) -> TrustSet:
    return TrustSet(Entry(Certificate(i.der)) for i in issued)


@pytest.fixture(scope="module")
def cas(pki):
    return [pki.ca(f"storesync Java CA {n}") for n in range(3)]


# --- writing -------------------------------------------------------------------------------


def test_keytool_lists_exactly_our_entries(cas, tmp_path):
    target = tmp_path / "new.jks"
    sync(str(target), trust_set(*cas))
    assert target.read_bytes()[:4] == b"\xfe\xed\xfe\xed"
    listed = keytool_list(target)
    assert sorted(listed.values()) == sorted(("trustedCertEntry", Certificate(c.der).sha256) for c in cas)
    assert set(listed) == {f"storesync java ca {n}" for n in range(3)}  # label scheme, lower-case
    # read back: labels are the aliases
    again = open_store(str(target)).read()
    assert set(again) == set(trust_set(*cas))
    assert {e.label for e in again.values()} == set(listed)


def test_java_trust_manager_accepts_a_leaf_under_our_anchor(pki, root, intermediate, server_leaf, cas, tmp_path):
    ours = tmp_path / "ours.jks"
    sync(f"jks:{ours}", trust_set(root, cas[0]))
    assert java_trusts(tmp_path, ours, "JKS", "changeit", server_leaf, intermediate) == "TRUSTED"
    without = tmp_path / "without.jks"
    sync(f"jks:{without}", trust_set(cas[0]))
    assert java_trusts(tmp_path, without, "JKS", "changeit", server_leaf, intermediate).startswith("REFUSED")


def test_same_set_gives_same_bytes_whatever_the_order(cas, tmp_path):
    a, b = tmp_path / "a.jks", tmp_path / "b.jks"
    sync(str(a), trust_set(*cas))
    sync(str(b), trust_set(*reversed(cas)))
    assert a.read_bytes() == b.read_bytes()
    stat = a.stat()
    sync(str(a), trust_set(*reversed(cas)))  # nothing to change: the file is not touched
    assert a.stat().st_mtime_ns == stat.st_mtime_ns and a.stat().st_ino == stat.st_ino


def test_distrusted_certificate_is_left_out_and_reported(cas, tmp_path):
    target = tmp_path / "t.jks"
    sync(str(target), trust_set(*cas))
    source = TrustSet([Entry(Certificate(cas[0].der), trust=dict(DISTRUST)), *trust_set(cas[1]).values()])
    plan = sync(str(target), source)
    assert any("distrusted" in loss.what for loss in plan.losses)
    assert {sha for _, sha in keytool_list(target).values()} == {Certificate(cas[1].der).sha256}


# --- reading what others wrote -------------------------------------------------------------


def test_debian_cacerts_holds_the_system_bundle(system_bundle):
    if not DEBIAN_CACERTS.exists():
        pytest.fail(f"{DEBIAN_CACERTS} is missing: scripts/test installs ca-certificates-java")
    store = open_store(str(DEBIAN_CACERTS))
    assert store.kind == "jks"
    java = store.read()
    assert set(java) == set(open_store(f"pem:{system_bundle}").read())
    debian = [e for e in java.values() if e.label.startswith("debian:") and e.label.endswith(".pem")]
    assert len(debian) >= 0.9 * len(java)  # a locally added CA may carry another alias
    assert not store.warnings


def test_storesync_diff_debian_cacerts_against_bundle():
    from conftest import storesync

    result = storesync("diff", DEBIAN_CACERTS, SYSTEM_BUNDLE)
    assert result.returncode == 0, result.stdout + result.stderr


def _keytool_store(tmp_path: Path, name: str, storetype: str, *issued, password="changeit") -> Path:
    path = tmp_path / name
    for n, item in enumerate(issued):
        item.write(tmp_path / f"import{n}.pem")
        keytool("-importcert", "-noprompt", "-alias", f"Imported {n}", "-file", tmp_path / f"import{n}.pem",
                "-keystore", path, "-storetype", storetype, "-storepass", password)
    return path


def test_keytool_store_round_trips_without_loss(cas, tmp_path):
    made = _keytool_store(tmp_path, "keytool.jks", "JKS", cas[0], cas[1])
    before = made.read_bytes()
    read = open_store(str(made)).read()
    assert set(read) == set(trust_set(cas[0], cas[1]))
    assert {e.label for e in read.values()} == {"imported 0", "imported 1"}  # JKS lower-cases aliases
    # the same set back: not a byte changes
    sync(str(made), read)
    assert made.read_bytes() == before
    # into a new store and back
    copy = tmp_path / "copy.jks"
    sync(str(copy), read)
    assert keytool_list(copy) == keytool_list(made)
    # an addition keeps the existing entries byte for byte (timestamps included)
    sync(str(made), trust_set(cas[0], cas[1], cas[2]))
    _, old = parse_jks(before)
    _, new = parse_jks(made.read_bytes())
    assert [r.raw for r in new[:2]] == [r.raw for r in old]
    assert keytool_list(made)["storesync java ca 2"][0] == "trustedCertEntry"


def test_p11kit_java_cacerts_round_trips(system_bundle, tmp_path):
    made = tmp_path / "p11kit.jks"
    run(need("trust"), "extract", "--format=java-cacerts", "--filter=ca-anchors", "--purpose=server-auth", made)
    read = open_store(str(made)).read()
    assert set(read) == set(open_store(f"pem:{system_bundle}").read())
    copy = tmp_path / "copy.jks"
    sync(str(copy), read)
    assert keytool_list(copy) == keytool_list(made)


def test_private_key_entry_is_kept_byte_for_byte(cas, tmp_path):
    store = _keytool_store(tmp_path, "withkey.jks", "JKS", cas[0])
    keytool("-genkeypair", "-alias", "server", "-keyalg", "EC", "-dname", "CN=server.test", "-keystore", store,
            "-storepass", "changeit", "-keypass", "changeit")
    _, before = parse_jks(store.read_bytes())
    key_raw = next(r.raw for r in before if r.tag == 1)
    reader = open_store(str(store))
    assert set(reader.read()) == set(trust_set(cas[0]))  # the key's certificate is not an anchor
    assert any("private-key entry 'server'" in w for w in reader.warnings)

    sync(str(store), trust_set(cas[1], cas[2]))  # mirror: removes cas[0], adds two
    _, after = parse_jks(store.read_bytes())
    assert [r.raw for r in after if r.tag == 1] == [key_raw]
    listed = keytool_list(store)
    assert listed["server"][0] == "PrivateKeyEntry"
    assert sorted(v for k, v in listed.items() if k != "server") == sorted(
        ("trustedCertEntry", Certificate(c.der).sha256) for c in cas[1:]
    )
    # the key still opens with its password: keytool can sign a request with it
    keytool("-certreq", "-alias", "server", "-keystore", store, "-storepass", "changeit", "-file", tmp_path / "req")


def test_debian_alias_scheme_is_kept_for_new_entries(cas, tmp_path):
    store = tmp_path / "debian.jks"
    cas[0].write(tmp_path / "c.pem")
    keytool("-importcert", "-noprompt", "-alias", "debian:storesync_java_ca_0.pem", "-file", tmp_path / "c.pem",
            "-keystore", store, "-storetype", "JKS", "-storepass", "changeit")
    sync(str(store), trust_set(*cas))
    assert set(keytool_list(store)) == {f"debian:storesync_java_ca_{n}.pem" for n in range(3)}
    jdk = tmp_path / "jdk.jks"
    sync(f"{jdk}?aliases=jdk", trust_set(*cas))
    assert set(keytool_list(jdk)) == {f"storesyncjavaca{n} [jdk]" for n in range(3)}


def test_other_password_from_password_file(cas, tmp_path):
    store = _keytool_store(tmp_path, "secret.jks", "JKS", cas[0], password="s3cret pass")
    with pytest.raises(StoreError, match="password is wrong.*password-file"):
        open_store(str(store)).read()
    secret = tmp_path / "pw"
    secret.write_text("s3cret pass\n")
    spec = f"{store}?password-file={secret}"
    assert set(open_store(spec).read()) == set(trust_set(cas[0]))
    sync(spec, trust_set(cas[0], cas[1]))
    assert len(keytool_list(store, password="s3cret pass")) == 2


def test_a_keystore_rewritten_between_its_check_and_its_read_is_not_believed(cas, tmp_path):
    """The file is read twice: once to check its integrity hash, once for its entries. Rewritten
    in place between the two (by someone without the password: its hash made with another),
    the entries read must not be believed: its trust would be widened with no password."""
    import io

    from storesync.stores.jks import render_jks, trusted_record

    store = _keytool_store(tmp_path, "secret.jks", "JKS", cas[0], password="s3cret pass")
    secret = tmp_path / "pw"
    secret.write_text("s3cret pass\n")
    spec = f"{store}?password-file={secret}"
    records = [trusted_record(f"ca{n}", Certificate(cas[n].der).der) for n in (0, 2)]
    forged = b"".join(render_jks(2, records, "changeit"))  # not the store's password

    class RewrittenAfterItsCheck(io.BytesIO):
        ends = 0

        def seek(self, offset, whence=0):
            if whence == io.SEEK_END:
                RewrittenAfterItsCheck.ends += 1
                if RewrittenAfterItsCheck.ends == 2:  # the second read begins: another program rewrote it
                    super().seek(0)
                    self.truncate()
                    self.write(forged)
            return super().seek(offset, whence)

    with pytest.raises(StoreError, match="integrity check failed"):
        open_store(spec).parse(RewrittenAfterItsCheck(store.read_bytes()))


# --- hostile input -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_jks(cas, tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("jks") / "small.jks"
    sync(str(path), trust_set(cas[0], cas[1]))
    return path.read_bytes()


def _with_hash(body: bytes, password: str = "changeit") -> bytes:
    return body + integrity_hash(password, body)


def _read(tmp_path: Path, data: bytes):
    path = tmp_path / "hostile.jks"
    path.write_bytes(data)
    return open_store(f"jks:{path}").read()


def test_tampered_store_is_reported_and_never_written(small_jks, cas, tmp_path):
    tampered = bytearray(small_jks)
    tampered[200] ^= 1
    path = tmp_path / "tampered.jks"
    path.write_bytes(bytes(tampered))
    store = open_store(str(path))
    with pytest.raises(StoreError, match="tampered"):
        store.read()
    plan = make_plan(trust_set(cas[2]), TrustSet(), store.capabilities, store="t")
    with pytest.raises(StoreError, match="tampered"):
        store.write(plan)
    assert path.read_bytes() == bytes(tampered)


@pytest.mark.parametrize(
    "patch, message",
    [
        (lambda d: b"\xca\xfe\xba\xbe" + d[4:], "not a JKS keystore"),
        (lambda d: b"\xce\xce\xce\xce" + d[4:], "JCEKS"),
        (lambda d: _with_hash(d[:8] + struct.pack(">I", 0xFFFFFFFF) + d[12:-20]), "truncated or damaged"),
        (lambda d: _with_hash(d[:8] + struct.pack(">I", 1) + d[12:-20]), "unexpected bytes"),
        (lambda d: _with_hash(d[:4] + struct.pack(">I", 7) + d[8:-20]), "version 7"),
        (lambda d: _with_hash(d[:12] + struct.pack(">I", 9) + d[16:-20]), "unknown type 9"),
        (lambda d: _with_hash(d[:16] + b"\xff\xff" + d[18:-20]), "alias of entry 1"),
    ],
)
def test_malformed_headers_are_one_clear_sentence(small_jks, tmp_path, patch, message):
    with pytest.raises(StoreError, match=message):
        _read(tmp_path, patch(small_jks))


def test_huge_certificate_length_is_refused(small_jks, tmp_path):
    _, records = parse_jks(small_jks)
    first = records[0]
    offset = 12 + len(first.raw) - len(first.certs[0][1]) - 4
    data = small_jks[:offset] + struct.pack(">I", 0x7FFFFFFF) + small_jks[offset + 4 : -20]
    with pytest.raises(StoreError, match="certificate of entry 1 .* needs 2147483647 bytes"):
        _read(tmp_path, _with_hash(data))


@pytest.mark.parametrize("body", [b"\x30\x00", b"\x30\x02\x04\x00", b"garbage"])
def test_an_entry_that_is_not_a_certificate_is_kept_not_read(tmp_path, body):
    from storesync.stores.jks import render_jks, trusted_record

    data = b"".join(render_jks(2, [trusted_record("odd", body)], "changeit"))
    path = tmp_path / "odd.jks"
    path.write_bytes(data)
    store = open_store(str(path))
    assert len(store.read()) == 0 and "'odd' is not a certificate" in store.warnings[0]


def test_every_truncation_fails_cleanly(small_jks, tmp_path):
    for cut in range(0, len(small_jks), 7):
        with pytest.raises(StoreError):
            _read(tmp_path, small_jks[:cut])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=300), rehash=st.booleans())
def test_arbitrary_bytes_parse_or_fail_cleanly(tmp_path, data, rehash):
    data = b"\xfe\xed\xfe\xed" + data
    if rehash and len(data) >= 32:
        data = _with_hash(data[:-20])
    try:
        _read(tmp_path, data)
    except StoreError:
        pass


def test_spec_detection():
    assert parse_spec(str(DEBIAN_CACERTS)).kind == "jks"
    assert parse_spec("/nonexistent/new.jks").kind == "jks"


def test_no_certificate_is_read_before_the_integrity_hash_verifies(cas, tmp_path, monkeypatch):
    """A keystore under another password (or tampered with) gives no certificate to the parser:
    the hash over the whole file is checked first, as a PKCS#12 file's MAC is."""
    from storesync.stores.jks import JksStore

    store = _keytool_store(tmp_path, "other.jks", "JKS", cas[0], password="not-changeit")
    read = []
    monkeypatch.setattr(JksStore, "_anchor", lambda self, record: read.append(record))
    with pytest.raises(StoreError, match="integrity check failed"):
        open_store(f"jks:{store}").read()
    assert read == []


@pytest.mark.parametrize("aliases", [("corp", "corp"), ("corp", "CORP"), ("CORP", "corp"), ("Corp Root",), ("\u00e9", "\u00c9")])
def test_colliding_and_upper_case_aliases_are_read_as_java_reads_them(cas, tmp_path, aliases):
    """Java keeps the last entry of an alias given twice and looks aliases up lower-cased, so it
    never reaches an entry whose alias has an upper-case letter: neither is an anchor. A rewrite
    leaves Java trusting what was planned (a hidden entry is not uncovered by removing the last)."""
    path = tmp_path / "collide.jks"
    records = [trusted_record(alias, cas[n].der) for n, alias in enumerate(aliases)]
    path.write_bytes(b"".join(render_jks(2, records, "changeit", len(records))))
    store = open_store(f"jks:{path}")
    read = store.read()
    assert {e.sha256 for e in read.values()} == java_anchors(tmp_path, path, "JKS")
    assert len(read) == len({a.lower() for a in aliases} & set(aliases))
    unread = [a for n, a in enumerate(aliases) if a != a.lower() or a in aliases[n + 1:]]
    assert all(any(repr(a) in w for w in store.warnings) for a in unread)
    added = Entry(Certificate(cas[2].der))
    sync(f"jks:{path}", TrustSet([added]))
    assert java_anchors(tmp_path, path, "JKS") == {added.sha256}
    assert {e.sha256 for e in open_store(f"jks:{path}").read().values()} == {added.sha256}


# --- private-key entries: Java trusts the first certificate of each ---------------------------


EVIL = "x'; touch pwned; echo '"  # an alias is the file's to choose: it must never run as a command


def sha(issued) -> str:
    return Certificate(issued.der).sha256


@pytest.fixture
def keyed(cas, tmp_path) -> Path:
    """A keystore keytool made: cas[0]'s key and certificate under two aliases (one hostile), and
    cas[1] as a trusted-certificate entry."""
    key, cert, exported = tmp_path / "k.pem", cas[0].write(tmp_path / "c.pem"), tmp_path / "k.p12"
    key.write_bytes(cas[0].key_pem())
    run(need("openssl"), "pkcs12", "-export", "-inkey", key, "-in", cert, "-name", "k1", "-out", exported,
        "-passout", "pass:changeit")
    store = _keytool_store(tmp_path, "keyed.jks", "JKS", cas[1])
    for alias in ("k1", EVIL):
        keytool("-importkeystore", "-noprompt", "-srckeystore", exported, "-srcstoretype", "PKCS12", "-srcstorepass",
                "changeit", "-srcalias", "k1", "-destalias", alias, "-destkeystore", store, "-deststorepass",
                "changeit", "-destkeypass", "changeit")
    return store


def test_every_alias_of_a_key_entrys_certificate_is_named_and_quoted_for_the_shell(keyed, cas, tmp_path):
    assert java_anchors(tmp_path, keyed, "JKS") == {sha(cas[0]), sha(cas[1])}  # the oracle: both trusted
    listed = json.loads(storesync("list", f"jks:{keyed}", "--json", check=True).stdout)["entries"]
    assert {e["sha256"] for e in listed} == {sha(cas[0]), sha(cas[1])}
    (fixed,) = [e["fixed"] for e in listed if "fixed" in e]
    assert fixed.startswith("private-key entries ") and "'k1'" in fixed and repr(EVIL) in fixed
    command = fixed[fixed.index("`") + 1:fixed.rindex("`")]
    stub = tmp_path / "bin"  # `keytool` that records its arguments: the pasted text run as it is
    stub.mkdir()
    (stub / "keytool").write_text('#!/bin/sh\nprintf "%s\\n" "$@" >> "$(dirname "$0")/argv"\n')
    (stub / "keytool").chmod(0o755)
    run("bash", "-c", command, env={**os.environ, "PATH": f"{stub}:{os.environ['PATH']}"})
    assert not (Path.cwd() / "pwned").exists() and not (tmp_path / "pwned").exists()
    argv = (stub / "argv").read_text().split("\n")[:-1]
    assert sorted(zip(*[iter(argv)] * 5)) == [("-delete", "-keystore", str(keyed), "-alias", alias)
                                              for alias in sorted(["k1", EVIL])]


def test_diff_and_status_count_a_key_entrys_certificate(keyed, cas, tmp_path):
    from storesync import discover, status as machine

    only_other = cas[1].write(tmp_path / "other.pem")
    differ = storesync("diff", f"jks:{keyed}", f"pem:{only_other}")
    assert differ.returncode == 1 and f"{sha(cas[0])[:16]} (fixed: trusted through its private-key entries" in differ.stdout
    both = tmp_path / "both.pem"
    both.write_bytes(cas[0].pem + cas[1].pem)
    assert storesync("diff", f"jks:{keyed}", f"pem:{both}").returncode == 0
    (summary,) = [machine.summarize(discover.Found(f"jks:{keyed}", "test"), NOW, 30)]
    assert summary.anchors == 2


def test_no_bang_line_where_the_source_trusts_it_through_a_key_entry_too(keyed, cas, tmp_path):
    """A `!` line says a certificate stays trusted against the source's word; a source (or
    another store of a merge) that holds the same key entry says no such thing."""
    copy = tmp_path / "copy.p12"
    keytool("-importkeystore", "-noprompt", "-srckeystore", keyed, "-srcstorepass", "changeit", "-destkeystore", copy,
            "-deststoretype", "PKCS12", "-deststorepass", "changeit")
    mirrored = storesync("sync", "--dry-run", f"jks:{keyed}", f"p12:{copy}", check=True).stdout
    assert "in sync" in mirrored and "!" not in mirrored
    bundle = cas[1].write(tmp_path / "bundle.pem")
    config = tmp_path / "storesync.toml"
    config.write_text(f'[profile.m]\nmode = "merge"\nstores = ["jks:{keyed}", "pem:{bundle}"]\n')
    env = {**os.environ, "STORESYNC_STATE_DIR": str(tmp_path / "state")}
    for _ in range(2):
        merged = storesync("sync", "--config", config, env=env)
        assert merged.returncode == 0 and "!" not in merged.stdout, merged.stdout + merged.stderr
    mirror = storesync("sync", "--dry-run", f"pem:{bundle}", f"jks:{keyed}", check=True).stdout
    assert ": the source does not hold it, but this store still trusts it through its private-key entries" in mirror


def test_a_damaged_chain_certificate_is_said_and_not_counted(keyed, cas, tmp_path):
    """Java parses every certificate of a key entry's chain, and loads no keystore holding a
    damaged one: such an entry's certificate is not counted, and a warning says why."""
    version, records = parse_jks(keyed.read_bytes())
    (key,) = [r for r in records if r.tag == 1 and r.alias == "k1"]
    key.certs.append(("X.509", b"\x30\x03\x02\x01\x00"))
    key.raw = key.v2_bytes()
    damaged = tmp_path / "damaged.jks"
    damaged.write_bytes(b"".join(render_jks(version, [r for r in records if r.alias != EVIL], "changeit")))
    assert keytool("-list", "-keystore", damaged, "-storepass", "changeit", check=False).returncode != 0  # the oracle
    store = open_store(f"jks:{damaged}")
    store.read()
    assert store.fixed_anchors == {}
    assert any("'k1': certificate 2 of its chain is not a certificate" in w and "Java cannot load" in w
               for w in store.warnings)
