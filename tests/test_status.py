"""`storesync status`: this machine's stores, their counts, the roots that differ, the daemon."""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import types
import warnings
from pathlib import Path

import pytest
from cryptography import x509

from conftest import NOW, need, run, storesync
from storesync import discover, status as machine
from storesync.engine.plan import make_plan
from storesync.model import DISTRUST, Certificate, Entry, TrustSet
from storesync.stores import open_store

DAY = dt.timedelta(days=1)
BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
JAVA = Path("/etc/ssl/certs/java/cacerts")
STORE_KEYS = {"store", "kind", "found_as", "partial", "owner", "error", "certificates", "anchors", "distrusted",
              "expired", "expiring", "warnings", "drift"}


@pytest.fixture
def env(tmp_path) -> dict[str, str]:
    """No config, a fresh state directory: what a new machine looks like to storesync."""
    environ = {k: v for k, v in os.environ.items() if k != "STORESYNC_CONFIG"}
    return {**environ, "STORESYNC_STATE_DIR": str(tmp_path / "state"), "XDG_CONFIG_HOME": str(tmp_path / "xdg")}


def status_json(*args, env) -> dict:
    result = storesync("status", "--json", *args, env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_fresh_machine_lists_the_system_stores_with_counts(env):
    need("keytool")
    data = status_json(env=env)
    assert set(data) == {"at", "soon_days", "stores", "matrix", "daemon", "warnings"}
    by_spec = {s["store"]: s for s in data["stores"]}
    for store in data["stores"]:
        assert set(store) == STORE_KEYS
    bundle = by_spec[f"pem:{BUNDLE}"]
    assert bundle["found_as"] == "system bundle" and bundle["owner"] == "root" and bundle["error"] is None
    # Oracles: the bundle's own BEGIN lines, openssl's count of its certificates, keytool's entries.
    assert bundle["anchors"] == BUNDLE.read_bytes().count(b"-----BEGIN CERTIFICATE-----")
    pkcs7 = run("openssl", "crl2pkcs7", "-nocrl", "-certfile", BUNDLE).stdout
    listed = run("openssl", "pkcs7", "-print_certs", "-noout", input=pkcs7).stdout.decode()
    assert bundle["anchors"] == listed.count("subject=")
    directory = by_spec["dir:/etc/ssl/certs"]
    assert directory["anchors"] == bundle["anchors"]  # Debian builds both from one list
    java = by_spec[f"jks:{JAVA}"]
    keytool = run("keytool", "-list", "-keystore", JAVA, "-storepass", "changeit").stdout.decode()
    assert java["anchors"] == keytool.count("trustedCertEntry")
    # Expiry counts agree with what cryptography says about the bundle's certificates.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Debian ships roots with serial 0; cryptography warns
        certs = x509.load_pem_x509_certificates(BUNDLE.read_bytes())
    at = dt.datetime.fromisoformat(data["at"].replace("Z", "+00:00"))
    assert bundle["expired"] == sum(c.not_valid_after_utc < at for c in certs)
    assert bundle["expiring"] == sum(at <= c.not_valid_after_utc <= at + 30 * DAY for c in certs)
    # JDK cacerts that are links to Debian's file are listed once.
    assert sum(os.path.realpath(s["store"].partition(":")[2]) == os.path.realpath(JAVA) for s in data["stores"]) == 1
    assert data["daemon"]["running"] is False and "no status file" in data["daemon"]["state"]


def test_text_output_is_the_first_thing_a_user_sees(env):
    result = storesync("status", env=env)
    assert result.returncode == 0, result.stderr
    assert "Trust stores on this machine" in result.stdout
    assert f"pem:{BUNDLE}" in result.stdout and "system bundle" in result.stdout
    assert "daemon: no status file" in result.stdout
    assert result.stderr == ""  # no config is no warning on a fresh machine


def test_certifi_environment_and_the_matrix(env, tmp_path, pki):
    """A Python environment whose certifi holds one private root and one system root."""
    site = tmp_path / "venv" / "lib" / "python3.99" / "site-packages" / "certifi"
    site.mkdir(parents=True)
    private = pki.ca("Private Certifi Root")
    system_root_pem = BUNDLE.read_bytes().split(b"-----END CERTIFICATE-----\n")[0] + b"-----END CERTIFICATE-----\n"
    (site / "cacert.pem").write_bytes(private.pem + system_root_pem)
    data = status_json("--python", tmp_path / "venv", env=env)
    spec = f"pem:{site / 'cacert.pem'}"
    certifi = next(s for s in data["stores"] if s["store"] == spec)
    assert certifi["anchors"] == 2 and certifi["found_as"].startswith("certifi")
    assert spec in data["matrix"]["stores"]
    rows = {r["sha256"]: r for r in data["matrix"]["roots"]}
    mine = rows[Certificate(private.der).sha256]
    assert mine["stores"][spec] == "trusted" and mine["stores"][f"pem:{BUNDLE}"] is None
    shared = Certificate(x509.load_pem_x509_certificate(system_root_pem).public_bytes(
        __import__("cryptography.hazmat.primitives.serialization", fromlist=["Encoding"]).Encoding.DER)).sha256
    assert shared not in rows  # in every complete store: not a difference
    missing = [r for r in data["matrix"]["roots"] if r["stores"][spec] is None]
    assert len(missing) == data["stores"][0]["anchors"] - 1  # every other system root is absent there
    # The text form shows the matrix, cut short.
    result = storesync("status", "--python", tmp_path / "venv", env=env)
    assert "Roots that differ between stores" in result.stdout and "Private Certifi Root" in result.stdout
    patterns: dict[tuple, int] = {}
    for row in data["matrix"]["roots"]:
        key = tuple(row["stores"][s] for s in data["matrix"]["stores"])
        patterns[key] = patterns.get(key, 0) + 1
    assert f"{max(patterns.values())} roots (" in result.stdout  # one line for the many roots certifi lacks
    assert len(result.stdout.splitlines()) < 30 and result.stderr == ""


def test_python_interpreter_is_asked_for_its_site_packages(tmp_path):
    warnings: list[str] = []
    found = discover.certifi_bundles(sys.executable, warnings)
    for path in found:
        assert path.name == "cacert.pem" and "certifi" in str(path)
    assert discover.certifi_bundles(str(tmp_path / "no-python"), warnings) == []
    assert any("no-python" in w for w in warnings)


@pytest.fixture
def machine_roots(tmp_path, pki):
    """Stores of every kind in a scratch tree, handed to discover() instead of the real paths."""
    r1, r2, r3, local = (pki.ca(f"Matrix Root {n}") for n in (1, 2, 3, "Local"))
    old = pki.ca("Matrix Expired", not_before=NOW - 100 * DAY, not_after=NOW - DAY)
    soon = pki.ca("Matrix Soon", not_after=NOW + 5 * DAY)
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(r1.pem + r2.pem + old.pem + soon.pem)
    hashed = tmp_path / "certs"
    store = open_store(f"dir:{hashed}")
    store.write(make_plan(TrustSet([Entry(Certificate(c.der)) for c in (r1, r2)]), TrustSet(), store.capabilities, store=str(hashed)))
    java = tmp_path / "cacerts"
    store = open_store(f"jks:{java}")
    store.write(make_plan(TrustSet([Entry(Certificate(c.der)) for c in (r1, r3)]), TrustSet(), store.capabilities, store=str(java)))
    local_dir = tmp_path / "local"
    local_dir.mkdir()
    local.write(local_dir / "local.crt")
    roots = {"bundles": [str(bundle)], "dirs": [str(hashed)], "local": [str(local_dir)], "java": [str(java)], "jdk": []}
    return roots, {"r1": r1, "r2": r2, "r3": r3, "local": local, "old": old, "soon": soon}


def test_matrix_lists_only_roots_that_differ(machine_roots):
    roots, certs = machine_roots
    found = discover.discover(roots=roots)
    assert [f.what for f in found] == ["system bundle", "hashed directory", "local additions", "java"]
    summaries = [machine.summarize(f, NOW, 30) for f in found]
    assert [s.error for s in summaries] == [None] * 4
    bundle = summaries[0]
    assert (bundle.anchors, bundle.expired, bundle.expiring) == (4, 1, 1)
    columns, rows = machine.matrix(summaries)
    sha = {name: Certificate(c.der).sha256 for name, c in certs.items()}
    by_sha = {r["sha256"]: r for r in rows}
    assert sha["r1"] not in by_sha  # everywhere
    assert set(by_sha) == {sha["r2"], sha["r3"], sha["local"], sha["old"], sha["soon"]}
    spec = {f.what: f.spec for f in found}
    assert by_sha[sha["r3"]]["stores"] == {spec["system bundle"]: None, spec["hashed directory"]: None,
                                           spec["local additions"]: None, spec["java"]: "trusted"}
    assert by_sha[sha["local"]]["stores"][spec["local additions"]] == "trusted"
    # Roots missing from the fewest stores come first.
    counts = [sum(v is not None for v in r["stores"].values()) for r in rows]
    assert counts == sorted(counts, reverse=True)


def test_distrusted_counts_and_matrix_marks(tmp_path, pki):
    root = pki.ca("Distrusted Somewhere")
    sst = tmp_path / "disallowed.sst"
    store = open_store(f"sst:{sst}?role=disallowed")
    store.write(make_plan(TrustSet([Entry(Certificate(root.der), trust=dict(DISTRUST))]), TrustSet(),
                          store.capabilities, store=str(sst)))
    bundle = tmp_path / "b.pem"
    root.write(bundle)
    found = [discover.Found(f"pem:{bundle}", "test"), discover.Found(f"sst:{sst}?role=disallowed", "test")]
    summaries = [machine.summarize(f, NOW, 30) for f in found]
    assert (summaries[1].anchors, summaries[1].distrusted) == (0, 1)
    _, rows = machine.matrix(summaries)
    assert [list(r["stores"].values()) for r in rows] == [["trusted", "distrusted"]]


def test_unreadable_store_is_reported_not_fatal(tmp_path):
    broken = tmp_path / "broken.pem"
    broken.write_bytes(b"-----BEGIN CERTIFICATE-----\nAAAA\n")
    summary = machine.summarize(discover.Found(f"pem:{broken}", "test"), NOW, 30)
    assert summary.error and str(broken) in summary.error and summary.to_json()["certificates"] is None


def test_daemon_status_file(env, tmp_path):
    state = Path(env["STORESYNC_STATE_DIR"])
    state.mkdir()
    (state / "status.json").write_text(json.dumps({"state": "watching", "pid": os.getpid(), "profiles": ["web"]}))
    daemon = status_json(env=env)["daemon"]
    assert daemon["running"] is True and daemon["state"] == "watching" and daemon["status"]["profiles"] == ["web"]
    assert "daemon: watching, running" in storesync("status", env=env).stdout
    (state / "status.json").write_text(json.dumps({"state": "watching", "pid": 2 ** 22 + 12345}))
    assert status_json(env=env)["daemon"]["running"] is False
    (state / "status.json").write_text("{not json")
    daemon = status_json(env=env)["daemon"]
    assert daemon["running"] is False and "unreadable" in daemon["state"]


def test_state_dir_default_is_platformdirs(monkeypatch):
    from platformdirs import user_state_dir

    from storesync.state import state_dir

    monkeypatch.delenv("STORESYNC_STATE_DIR", raising=False)
    expected = Path("/var/lib/storesync") if os.geteuid() == 0 else Path(user_state_dir("storesync"))
    assert Path(state_dir()) == expected
    monkeypatch.setenv("STORESYNC_STATE_DIR", "/srv/state")
    assert state_dir() == "/srv/state"
    assert machine.daemon_status()["file"] == "/srv/state/status.json"


def test_nss_and_profiles_are_used_when_their_modules_exist(monkeypatch, tmp_path):
    """status takes NSS databases from discover_nss and the profiles' stores from the config."""
    from storesync import config as configs
    from storesync.stores import StoreSpec

    nssdb = tmp_path / "nssdb"
    nssdb.mkdir()
    (nssdb / "cert9.db").write_bytes(b"")
    profile = configs.Profile("web", "merge", [configs.StoreRef(f"pem:{tmp_path / 'a.pem'}"), configs.StoreRef(f"nss:{nssdb}")])
    monkeypatch.setattr(configs, "load_config", lambda *a: configs.Config(None, {"web": profile}))
    monkeypatch.setattr(discover, "discover_nss", lambda count=True: [discover.NssDatabase(nssdb, "chromium", "root", 0)])
    empty = {"bundles": [], "dirs": [], "local": [], "java": [], "jdk": []}
    found = discover.discover(roots=empty)
    assert [(f.spec, f.what) for f in found] == [(f"nss:{nssdb}", "nss (chromium)"), (f"pem:{tmp_path / 'a.pem'}", "profile web")]

    def broken(*a):
        raise ValueError("storesync.toml line 3: bad")

    monkeypatch.setattr(configs, "load_config", broken)
    warnings: list[str] = []
    assert discover.discover(roots=empty, warnings=warnings) == [discover.Found(StoreSpec("nss", nssdb), "nss (chromium)")]
    assert warnings == ["config: storesync.toml line 3: bad"]


def test_a_store_tables_options_reach_the_store_as_they_are(env, tmp_path, pki):
    """status and check open a profile's store with its table's options as `sync` does: a
    password file's path, a label template as written (they were URL-encoded into the spec and
    never decoded); hook keys are no store options; check's fix names the store with them, and
    running it writes the store (checked with keytool and openssl)."""
    corp, other = pki.ca("Corp Table Root"), pki.ca("Other Table Root")
    leaf = pki.leaf("leaf.test", corp)
    source, others, cert = corp.write(tmp_path / "corp.pem"), other.write(tmp_path / "other.pem"), tmp_path / "leaf.pem"
    leaf.write(cert)
    password = tmp_path / "jks pw"
    password.write_text("not-changeit\n")
    jks, hooked, labelled = tmp_path / "m.jks", tmp_path / "h.pem", tmp_path / "lt.pem"
    assert storesync("sync", "--mode", "add", others, f"jks:{jks}?password-file={password}", env=env).returncode == 0
    for bundle in (hooked, labelled):
        other.write(bundle)
    config = tmp_path / "storesync.toml"
    config.write_text(f'''[profile.d]
mode = "merge"
stores = ["pem:{source}", {{ spec = "jks:{jks}", password-file = "{password}" }},
          {{ spec = "pem:{hooked}", on-change = ["true"], on-change-timeout = 5 }},
          {{ spec = "pem:{labelled}", label-template = "corp: {{label}}" }}]
''')
    data = status_json("--config", config, env=env)
    stores = {s["store"]: s for s in data["stores"] if s["found_as"] == "profile d"}
    assert list(stores) == [f"pem:{source}", f"jks:{jks}?password-file={password}", f"pem:{hooked}",
                            f"pem:{labelled}?label-template=corp: {{label}}"]
    assert [(s["error"], s["anchors"]) for s in stores.values()] == [(None, 1)] * 4

    result = storesync("check", cert, "--config", config, "--json", env=env)
    verdicts = {v["store"]: v for v in json.loads(result.stdout)["stores"]}
    import shlex

    for spec in (f"jks:{jks}?password-file={password}", f"pem:{labelled}?label-template=corp: {{label}}"):
        fix = verdicts[spec]["problems"][0]["fix"]
        assert fix.endswith(f" pem:{source} {shlex.quote(spec)}"), fix
        done = storesync(*shlex.split(fix)[1:], env=env)
        assert done.returncode == 0, done.stderr
    fingerprint = Certificate(corp.der).sha256.upper()
    listed = run(need("keytool"), "-list", "-keystore", jks, "-storepass", "not-changeit").stdout.decode().replace(":", "")
    assert fingerprint in listed
    run("openssl", "verify", "-CAfile", labelled, cert)


def test_profile_stores_from_a_real_config(env, tmp_path, pki):
    bundle = tmp_path / "corp.pem"
    pki.ca("Corp Root").write(bundle)
    config = tmp_path / "storesync.toml"
    config.write_text(f'''
[profile.web]
mode = "mirror"
source = "pem:{bundle}"
targets = [{{ spec = "dir:{tmp_path / 'out'}", links = "both" }}]
''')
    data = status_json("--config", config, env=env)
    profile = [s for s in data["stores"] if s["found_as"] == "profile web"]
    assert [s["store"] for s in profile] == [f"pem:{bundle}", f"dir:{tmp_path / 'out'}?links=both"]
    assert profile[0]["anchors"] == 1
    assert "does not exist" in profile[1]["error"]  # a target not created yet: reported, not fatal
    broken = tmp_path / "broken.toml"
    broken.write_text("[profile.x\n")
    result = storesync("status", "--json", "--config", broken, env=env)
    assert result.returncode == 0 and "config" in json.loads(result.stdout)["warnings"][0]



def test_a_tuf_source_is_named_as_typed(env, tmp_path):
    """Review: status printed a profile's `tuf:` store as `tuf:http:/…` (a Path folds `//`), so its
    rows could not be joined with the daemon's status, which names it as typed."""
    url = f"tuf:http://127.0.0.1:1/corp?root={tmp_path / '1.root.json'}"
    (tmp_path / "1.root.json").write_text("{}")
    config = tmp_path / "storesync.toml"
    config.write_text(f'[profile.fleet]\nsource = "{url}"\ntargets = ["pem:{tmp_path / "out.pem"}?format=trusted"]\n')
    data = status_json("--config", config, env=env)
    assert [s["store"] for s in data["stores"] if s["found_as"] == "profile fleet"][0] == url

def test_nss_databases_come_from_discover_nss(env, tmp_path, pki):
    """A Chromium-style ~/.pki/nssdb in a scratch home, found by issue 3's discovery."""
    need("certutil")
    home = tmp_path / "home"
    db = home / ".pki" / "nssdb"
    db.mkdir(parents=True)
    run("certutil", "-N", "-d", f"sql:{db}", "--empty-password")
    root = pki.ca("NSS Status Root").write(tmp_path / "nss-root.pem")
    run("certutil", "-A", "-d", f"sql:{db}", "-n", "NSS Status Root", "-t", "C,,", "-i", root)
    data = status_json(env={**env, "HOME": str(home)})
    nss = [s for s in data["stores"] if s["found_as"].startswith("nss")]
    assert f"nss:{db}" in [s["store"] for s in nss]
    mine = next(s for s in nss if s["store"] == f"nss:{db}")
    assert (mine["anchors"], mine["kind"]) == (1, "nss")
