"""Profiles, transactions, backups and rollback, locks and guards, through the real CLI."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from storesync.config import ConfigError, parse_config
from storesync import state
from storesync.model import StoreError, TrustSet
from storesync.stores import open_store

from conftest import pem_of, run, storesync


@pytest.fixture(autouse=True)
def state_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("STORESYNC_STATE_DIR", str(tmp_path / "state"))
    return tmp_path / "state"


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "storesync.toml"
    path.write_text(text)
    return path


def keys(spec: str) -> set[str]:
    return set(open_store(spec).read())


def files_of(*paths: Path) -> dict[str, bytes | str]:
    out = {}
    for root in paths:
        if root.is_file():
            out[str(root)] = root.read_bytes()
            continue
        for dirpath, _, names in os.walk(root):
            for name in names:
                p = os.path.join(dirpath, name)
                out[p] = os.readlink(p) if os.path.islink(p) else open(p, "rb").read()
    return out


# --- config ----------------------------------------------------------------------------------


def test_config_profiles_and_store_options():
    config = parse_config('''
[profile.web]
source = "pem:/etc/ssl/certs/ca-certificates.crt"
targets = ["dir:/srv/ca", { spec = "pem:/srv/all.pem", purpose = "any" }]
purposes = ["server-auth"]

[profile.desk]
mode = "merge"
stores = ["pem:/a.pem", "pem:/b.pem"]
allow_escalation = true
max_removal_share = 0.5
''')
    web, desk = config.profiles["web"], config.profiles["desk"]
    assert web.mode == "mirror" and web.source.spec.startswith("pem:") and web.stores[2].options == {"purpose": "any"}
    assert web.ca_only and not web.drop_expired and web.purposes == ("server-auth",)
    assert desk.mode == "merge" and desk.allow_escalation and desk.max_removal_share == 0.5


@pytest.mark.parametrize("text, where", [
    ('[profile.x]\nmode = mirror\nsource = "a.pem"\n', "line 2"),
    ('[profile.x]\nmode = "mirror"\nsource = "a.pem"\ntargets = ["b.pem"]\nsorce = 1\n', "line 5: profile 'x': unknown key 'sorce'"),
    ('[profile.x]\nmode = "both"\nstores = ["a.pem", "b.pem"]\n', "line 2: profile 'x': mode must be"),
    ('[profile.x]\nmode = "merge"\nstores = ["a.pem"]\n', "a merge needs at least two stores"),
    ('[profile.x]\nsource = "a.pem"\ntargets = ["b.pem"]\npurposes = ["tls"]\n', "line 4: profile 'x': purposes cannot name 'tls': it is neither a purpose's name nor an OID"),
    ('[profile.x]\nsource = "a.pem"\ntargets = ["/t.pem"]\n\n[profile.y]\nsource = "b.pem"\ntargets = ["pem:/t.pem"]\n',
     "line 5: /t.pem is written by profiles 'x' and 'y'"),
    ('[profile.x]\nmode = "merge"\nstores = ["/a.pem", "/t.pem"]\n\n[profile.y]\nsource = "b.pem"\ntargets = ["pem:/t.pem"]\n',
     "line 5: /t.pem is written by profiles 'x' and 'y'"),
    ('[profile.x]\nsource = "a.pem"\ntargets = [{ spec = "jks:/t.jks", fromat = "pkcs12" }]\n',
     "line 3: profile 'x': jks:/t.jks: jks stores have no option fromat=; correct the table"),
    ('[profile.x]\nsource = "a.pem"\ntargets = [{ spec = "@all", pasword-file = "/p" }]\n',
     "line 3: profile 'x': @all: no store kind has option pasword-file="),
    # a store's options are checked as the file is loaded, by name and value, in the spec or its table
    ('[profile.x]\nsource = "a.pem"\ntargets = ["pem:/o.pem?purpse=x"]\n',
     "line 3: profile 'x': pem:/o.pem[?]purpse=x: pem stores have no option purpse="),
    ('[profile.x]\nsource = "a.pem"\n\ntargets = [{ spec = "pem:/o.pem", purpose = "bogus" }]\n',
     "line 4: profile 'x': pem:/o.pem: purpose= cannot be 'bogus'; use server-auth, client-auth, email, code-signing, any"),
    ('[profile.x]\nsource = "a.pem"\ntargets = ["reg:/o.reg?base=nope"]\n',
     "line 3: profile 'x': reg:/o.reg[?]base=nope: base= cannot be 'nope'; use machine, user, policies or enterprise"),
    ('[profile.x]\nsource = "a.pem"\ntargets = ["@all?format=xml"]\n', "line 3: profile 'x': @all: format= cannot be 'xml'"),
    # an option given twice (in the spec's query, or in the spec and its table) is an error: which was meant?
    ('[profile.x]\nsource = "a.pem"\n\ntargets = [{ spec = "pem:/o.pem?purpose=any", purpose = "2.5.29.37.0" }]\n',
     "line 4: profile 'x': pem:/o.pem[?]purpose=any: option purpose= is given in the spec and in its table; give it once"),
    ('[profile.x]\nsource = "a.pem"\n\ntargets = [{ spec = "pem:/o.pem?purpose=any", purpose = "bogus" }]\n',
     "line 4: profile 'x': pem:/o.pem[?]purpose=any: option purpose= is given in the spec and in its table"),
    ('[profile.x]\nsource = "a.pem"\n\ntargets = [{ spec="pem:/o.pem?format=trusted", format="xml" }]\n',
     "line 4: profile 'x': pem:/o.pem[?]format=trusted: option format= is given in the spec and in its table"),
    ('[profile.x]\nsource = "a.pem"\ntargets = ["pem:/o.pem?purpose=2.5.29.37.0&purpose=any"]\n',
     "line 3: profile 'x': pem:/o.pem[?]purpose=2.5.29.37.0&purpose=any: option purpose= is given twice"),
    ('[profile.x]\nsource = "a.pem"\n\ntargets = [{ spec = "@all?format=plain", format = "trusted" }]\n',
     "line 4: profile 'x': @all[?]format=plain: option format= is given in the spec and in its table"),
    # a read-only kind is a source, never a store to write
    ('[profile.x]\nsource = "a.pem"\ntargets = ["pem:/o.pem",\n  "tuf:http://127.0.0.1:9/repo/p"]\n',
     "line 4: profile 'x': tuf:http://127.0.0.1:9/repo/p: tuf stores are read-only"),
    ('[profile.x]\nmode = "merge"\nstores = ["pem:/a.pem", "certdata:/certdata.txt"]\n',
     "line 3: profile 'x': certdata:/certdata.txt: certdata stores are read-only"),
    # one store named twice in a profile (by real path): written twice, or a source its own target
    ('[profile.x]\nsource = "a.pem"\ntargets = ["pem:/t.pem", "pem:/t.pem?format=trusted"]\n',
     "line 1: profile 'x': pem:/t.pem and pem:/t.pem[?]format=trusted are one store (/t.pem); name it once"),
    ('[profile.x]\nsource = "/a.pem"\ntargets = ["pem:/a.pem"]\n',
     "line 1: profile 'x': the source /a.pem and the target pem:/a.pem are one store (/a.pem); a store is never a target"),
    ('[profile.x]\nmode = "merge"\nstores = ["/a.pem", "pem:/a.pem"]\n',
     "line 1: profile 'x': /a.pem and pem:/a.pem are one store (/a.pem); name it once"),
])
def test_a_bad_config_names_the_line(text, where):
    with pytest.raises(ConfigError, match=where.replace("(", r"\(").replace(")", r"\)")):
        parse_config(text, Path("storesync.toml"))


def test_bad_config_from_the_cli_is_one_sentence(tmp_path):
    config = write_config(tmp_path, "[profile.x]\nmode = 3\n")
    result = storesync("sync", "--config", config)
    assert result.returncode == 2 and "storesync.toml" in result.stderr and "Traceback" not in result.stderr


def test_a_bad_store_option_in_the_config_names_the_file_and_line_before_anything_runs(root, tmp_path):
    source, target = root.write(tmp_path / "root.pem"), tmp_path / "o.pem"
    config = write_config(tmp_path, f'[profile.w]\nsource = "pem:{source}"\ntargets = ["pem:{target}?purpse=x"]\n')
    for dry_run in (["--dry-run"], []):
        result = storesync("sync", "--config", config, *dry_run)
        assert (result.returncode, result.stdout) == (2, ""), result.stdout + result.stderr
        assert result.stderr == (f"storesync: config {config} line 3: profile 'w': pem:{target}?purpse=x: pem stores have "
                                 "no option purpse= (their options: format=, comments=, purpose=, max-removal-share=, "
                                 "label-template=); correct the spec\n")
    assert not target.exists()


# --- mirror and merge profiles ----------------------------------------------------------------


def test_mirror_profile_from_config_and_env(pki, root, tmp_path):
    source = tmp_path / "source.pem"
    source.write_bytes(root.pem + pki.ca("Profile Root").pem)
    config = write_config(tmp_path, f'''
[profile.web]
source = "pem:{source}"
targets = ["dir:{tmp_path / 'ca'}", "pem:{tmp_path / 'copy.pem'}"]
''')
    result = subprocess.run([sys.executable, "-m", "storesync", "sync", "--json"], capture_output=True, text=True,
                            env={**os.environ, "STORESYNC_CONFIG": str(config)})
    assert result.returncode == 0, result.stderr
    (profile,) = json.loads(result.stdout)
    assert profile["profile"] == "web" and [p["written"] for p in profile["plans"]] == [False, True, True]
    assert keys(f"dir:{tmp_path / 'ca'}") == keys(f"pem:{source}") == keys(f"pem:{tmp_path / 'copy.pem'}")
    assert storesync("sync", "--config", config, "--profile", "nope").returncode == 2


def test_merge_profile_propagates_adds_removals_and_distrust(pki, root, tmp_path):
    a, b, d = tmp_path / "a.pem", tmp_path / "b.pem", tmp_path / "ca"
    cas = [root, *(pki.ca(f"Merge Root {i}") for i in range(19))]
    a.write_bytes(b"".join(c.pem for c in cas[:12]))
    b.write_bytes(b"".join(c.pem for c in cas[8:]))
    config = write_config(tmp_path, f'''
[profile.desk]
mode = "merge"
stores = ["pem:{a}?format=trusted", "pem:{b}", "dir:{d}"]
''')
    first = storesync("sync", "--config", config)
    assert first.returncode == 0, first.stdout + first.stderr
    assert keys(f"pem:{a}") == keys(f"pem:{b}") == keys(f"dir:{d}") and len(keys(f"pem:{b}")) == 20

    # a removal in one store reaches all; an addition in another too
    b_set = open_store(f"pem:{b}").read()
    extra = pki.ca("Added Later")
    b.write_bytes(b"".join(pem_of(e.cert.der) for e in b_set.entries()[1:]) + extra.pem)
    second = storesync("sync", "--config", config)
    assert second.returncode == 0, second.stdout + second.stderr
    assert keys(f"pem:{a}") == keys(f"pem:{b}") == keys(f"dir:{d}")
    assert list(b_set)[0] not in keys(f"dir:{d}") and len(keys(f"dir:{d}")) == 20

    # a distrust written in the TRUSTED CERTIFICATE store: kept there, removed where it cannot be said
    victim = next(c for c in cas[1:] if hashlib.sha256(c.der).hexdigest() in keys(f"pem:{a}"))  # not the one removed
    victim_file = tmp_path / "victim.pem"
    victim.write(victim_file)
    rejected = run("openssl", "x509", "-in", victim_file, "-addreject", "anyExtendedKeyUsage", "-trustout").stdout
    text = a.read_bytes()
    start = text.index(pem_block_trusted_prefix(a, victim))
    end = text.index(b"-----END TRUSTED CERTIFICATE-----\n", start) + len(b"-----END TRUSTED CERTIFICATE-----\n")
    a.write_bytes(text[:start] + rejected + text[end:])
    third = storesync("sync", "--config", config)
    assert third.returncode == 0, third.stdout + third.stderr
    sha = open_store(f"pem:{victim_file}").read().entries()[0].sha256
    assert open_store(f"pem:{a}?format=trusted").read()[sha].distrusted
    assert sha not in keys(f"pem:{b}") and sha not in keys(f"dir:{d}")
    # and a fourth run is a no-op
    fourth = storesync("sync", "--config", config, "--json")
    assert fourth.returncode == 0 and not any(p["written"] for p in json.loads(fourth.stdout)[0]["plans"])


def pem_block_trusted_prefix(path: Path, issued) -> bytes:
    """The start of the TRUSTED CERTIFICATE block holding `issued` in a bundle."""
    import base64

    first_line = base64.b64encode(issued.der)[:64]
    text = path.read_bytes()
    at = text.index(first_line)
    return text[text.rindex(b"-----BEGIN TRUSTED CERTIFICATE-----", 0, at):at]


def test_escalation_guard_keeps_a_users_root_out_of_a_root_owned_store(pki, root, tmp_path):
    if os.geteuid() != 0:
        pytest.fail("this test needs root to make a store owned by another user")
    user_dir = tmp_path / "user"
    user_dir.mkdir()
    user, system = user_dir / "user.pem", tmp_path / "system.pem"
    user.write_bytes(root.pem)
    system.write_bytes(root.pem)
    os.chown(user_dir, 65534, 65534)
    os.chown(user, 65534, 65534)
    config = write_config(tmp_path, f'[profile.p]\nmode = "merge"\nstores = ["pem:{user}", "pem:{system}"]\n')
    assert storesync("sync", "--config", config).returncode == 0
    sneaky = pki.ca("Sneaky User Root")
    user.write_bytes(root.pem + sneaky.pem)
    result = storesync("sync", "--config", config)
    assert "held back" in result.stdout
    assert len(keys(f"pem:{system}")) == 1 and len(keys(f"pem:{user}")) == 2
    config.write_text(config.read_text() + "allow_escalation = true\n")
    assert storesync("sync", "--config", config).returncode == 0
    assert len(keys(f"pem:{system}")) == 2


# --- transactions ------------------------------------------------------------------------------


def test_a_target_failing_mid_profile_puts_every_store_back(pki, root, tmp_path):
    """The third target lives on a full file system: its write fails (ENOSPC) after the first two
    targets were written, and those two are put back byte for byte."""
    if os.geteuid() != 0:
        pytest.fail("this test needs root to mount a small tmpfs")
    full = tmp_path / "full"
    full.mkdir()
    run("mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", full)
    try:
        third = full / "third.pem"
        third.write_bytes(root.pem)
        try:
            (full / "filler").write_bytes(b"\0" * 65536)
        except OSError:
            pass  # the file system is full now
        source = tmp_path / "source.pem"
        source.write_bytes(root.pem + pki.ca("Txn Root").pem)
        out, ca = tmp_path / "out.pem", tmp_path / "ca"
        out.write_bytes(root.pem)
        assert storesync("sync", f"pem:{out}", f"dir:{ca}").returncode == 0
        before = files_of(out, ca, third)

        result = storesync("sync", f"pem:{source}", f"pem:{out}", f"dir:{ca}", f"pem:{third}")
        assert result.returncode == 2
        assert "No space left" in result.stderr and "put back" in result.stderr
        assert "free space on that disk and run the sync again" in result.stderr, result.stderr
        assert files_of(out, ca, third) == before
    finally:
        run("umount", full)


def test_rollback_restores_exact_bytes_and_is_itself_undoable(pki, root, tmp_path):
    out = tmp_path / "out.pem"
    out.write_bytes(b"# hand-made\n" + root.pem)
    original = out.read_bytes()
    source = tmp_path / "s.pem"
    source.write_bytes(root.pem + pki.ca("Rollback Root").pem)
    assert storesync("sync", f"pem:{source}", f"pem:{out}").returncode == 0
    synced = out.read_bytes()
    assert synced != original
    listing = json.loads(storesync("rollback", "--list", "--json", f"pem:{out}").stdout)
    assert len(listing["backups"]) == 1
    restored = storesync("rollback", f"pem:{out}")
    assert restored.returncode == 0 and out.read_bytes() == original
    assert storesync("rollback", f"pem:{out}").returncode == 0 and out.read_bytes() == synced  # undo the undo
    assert storesync("rollback", f"pem:{out}", "--to", listing["backups"][0]["id"]).returncode == 0
    assert out.read_bytes() == original
    assert storesync("rollback", f"pem:{tmp_path / 'never.pem'}").returncode == 2


def test_backups_are_bounded(pki, root, tmp_path):
    out, source = tmp_path / "out.pem", tmp_path / "s.pem"
    for i in range(state.BACKUPS_KEPT + 3):
        source.write_bytes(root.pem + pki.ca(f"Bounded {i}").pem)
        assert storesync("sync", "--force", f"pem:{source}", f"pem:{out}").returncode == 0
    assert len(state.list_backups(open_store(f"pem:{out}").spec.key)) == state.BACKUPS_KEPT


def test_a_leaf_is_never_added_as_an_anchor(root, server_leaf, tmp_path):
    source, out = tmp_path / "s.pem", tmp_path / "out.pem"
    source.write_bytes(root.pem + server_leaf.pem)
    result = storesync("sync", f"pem:{source}", f"pem:{out}")
    assert result.returncode == 0 and "not a CA certificate" in result.stdout
    assert len(keys(f"pem:{out}")) == 1


def test_locks_wait_then_say_who_holds_them(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys,time; from storesync import state\n"
         "with state.lock('profile x'):\n  print('held', flush=True); time.sleep(30)"],
        stdout=subprocess.PIPE, text=True, env=os.environ)
    try:
        assert holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        with pytest.raises(StoreError, match=rf"locked by pid {holder.pid}"):
            with state.lock("profile x", timeout=0.3):
                pass
        assert time.monotonic() - started >= 0.3
    finally:
        holder.kill()
        holder.wait()
    with state.lock("profile x", timeout=0.3):
        pass  # free again once the holder is gone


def test_two_concurrent_syncs_lose_no_update(pki, tmp_path):
    out = tmp_path / "out.pem"
    sources = []
    for i in range(2):
        source = tmp_path / f"s{i}.pem"
        source.write_bytes(b"".join(pki.ca(f"Concurrent {i}-{n}").pem for n in range(20)))
        sources.append(source)
    procs = [subprocess.Popen([sys.executable, "-m", "storesync", "sync", "--mode", "add", f"pem:{s}", f"pem:{out}"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for s in sources]
    assert [p.wait() for p in procs] == [0, 0]
    assert keys(f"pem:{out}") == keys(f"pem:{sources[0]}") | keys(f"pem:{sources[1]}")


def test_sigkill_at_random_points_leaves_every_store_old_or_new(pki, tmp_path):
    """Kill `storesync sync` at random moments while it writes four stores: each file store is
    its old or its new self; the hashed directory (written file by file) is between the two."""
    old = b"".join(pki.ca(f"Old {n}").pem for n in range(30))
    new = b"".join(pki.ca(f"New {n}").pem for n in range(30))
    sets = {}
    for name, data in (("old", old), ("new", new)):
        (tmp_path / f"{name}.pem").write_bytes(data)
        sets[name] = keys(f"pem:{tmp_path / f'{name}.pem'}")
    targets = [f"pem:{tmp_path / 't.pem'}", f"sst:{tmp_path / 't.sst'}", f"jks:{tmp_path / 't.jks'}",
               f"dir:{tmp_path / 'ca'}"]
    rng = random.Random(7)
    current = "old"
    assert storesync("sync", "--force", f"pem:{tmp_path / 'old.pem'}", *targets).returncode == 0
    for attempt in range(12):
        wanted = "new" if current == "old" else "old"
        proc = subprocess.Popen([sys.executable, "-m", "storesync", "sync", "--force",
                                 f"pem:{tmp_path / f'{wanted}.pem'}", *targets],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.05, 0.6))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        for spec in targets:
            held = keys(spec)  # parseable, or this raises
            if spec.startswith("dir:"):
                assert sets["old"] & sets["new"] <= held <= sets["old"] | sets["new"], attempt
            else:
                assert held in (sets["old"], sets["new"]), (spec, attempt)
        current = wanted
    # and the next complete run brings everything to one state
    assert storesync("sync", "--force", f"pem:{tmp_path / 'new.pem'}", *targets).returncode == 0
    assert all(keys(spec) == sets["new"] for spec in targets)


# --- regressions found in review -----------------------------------------------------------------


def test_a_missing_source_is_an_error_even_when_forced(root, tmp_path):
    out = tmp_path / "out.pem"
    out.write_bytes(root.pem)
    result = storesync("sync", "--force", f"pem:{tmp_path / 'typo.pem'}", f"pem:{out}")
    assert result.returncode == 2 and "does not exist" in result.stderr
    assert out.read_bytes() == root.pem


def test_a_bundle_source_leaves_what_it_does_not_speak_for(pki, root, tmp_path):
    """A TLS bundle mirrored into a store that can say purposes and distrust: the target's
    e-mail trust, e-mail-only roots and distrust records are out of the bundle's scope."""
    both, email_only, distrusted = pki.ca("Both Root"), pki.ca("Email Only Root"), pki.ca("Distrusted Root")
    files = {name: issued.write(tmp_path / f"{name}.pem") for name, issued in
             (("both", both), ("email", email_only), ("bad", distrusted), ("root", root))}
    target = tmp_path / "target.pem"
    parts = [run("openssl", "x509", "-in", files["both"], "-addtrust", "serverAuth", "-addtrust", "emailProtection", "-trustout").stdout,
             run("openssl", "x509", "-in", files["email"], "-addtrust", "emailProtection", "-trustout").stdout,
             run("openssl", "x509", "-in", files["bad"], "-addreject", "anyExtendedKeyUsage", "-trustout").stdout]
    target.write_bytes(b"".join(parts))
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(both.pem + root.pem)  # a server-auth bundle that lacks nothing the target has for TLS
    spec = f"pem:{target}?format=trusted"
    result = storesync("sync", "--force", f"pem:{bundle}", spec)
    assert result.returncode == 0, result.stdout + result.stderr
    after = open_store(spec).read()
    by_label = {e.display_label: dict(e.trust) for e in after.values()}
    assert by_label["Both Root"] == {"server-auth": "trusted", "email": "trusted"}
    assert by_label["Email Only Root"] == {"email": "trusted"}
    assert set(by_label["Distrusted Root"].values()) == {"distrusted"}
    assert by_label["storesync Test Root"] == {"server-auth": "trusted"}
    assert storesync("diff", f"pem:{bundle}", spec).returncode == 0


def test_a_non_ca_certificate_stays_in_its_own_store_across_merges(pki, root, server_leaf, tmp_path):
    a, b = tmp_path / "a.pem", tmp_path / "b.pem"
    a.write_bytes(root.pem + server_leaf.pem)
    b.write_bytes(root.pem)
    config = write_config(tmp_path, f'[profile.m]\nmode = "merge"\nstores = ["pem:{a}", "pem:{b}"]\n')
    for _ in range(3):
        assert storesync("sync", "--config", config).returncode == 0
        assert len(keys(f"pem:{a}")) == 2 and len(keys(f"pem:{b}")) == 1


def test_rollback_of_a_directory_with_hash_named_copies_loses_nothing(pki, root, tmp_path):
    capath = tmp_path / "ca"
    capath.mkdir()
    from storesync.model import Certificate

    copy = capath / f"{Certificate(root.der).subject_hash()}.0"
    copy.write_bytes(root.pem)  # c_rehash's copy mode: a plain file named like a link
    before = files_of(capath)
    source = tmp_path / "s.pem"
    source.write_bytes(root.pem + pki.ca("Another").pem)
    assert storesync("sync", "--mode", "add", f"pem:{source}", f"dir:{capath}").returncode == 0
    assert storesync("rollback", f"dir:{capath}").returncode == 0
    assert files_of(capath) == before
    assert run("openssl", "x509", "-noout", "-in", copy).returncode == 0


def test_a_store_reached_through_a_symlink_stays_a_symlink(pki, root, tmp_path):
    real, link = tmp_path / "real.pem", tmp_path / "link.pem"
    real.write_bytes(root.pem)
    link.symlink_to(real.name)
    source = tmp_path / "s.pem"
    source.write_bytes(root.pem + pki.ca("Via Link").pem)
    assert storesync("sync", f"pem:{source}", f"pem:{link}").returncode == 0
    assert link.is_symlink() and len(keys(f"pem:{real}")) == 2
    assert storesync("rollback", f"pem:{link}").returncode == 0
    assert link.is_symlink() and real.read_bytes() == root.pem


def test_every_name_of_a_store_shares_its_backups(pki, root, tmp_path):
    """A store's backups, record and locks are keyed by its real path: a bundle synced through
    a symlink is rolled back by its real name (and a hashed directory through a linked folder),
    and `rollback --list` of a store without backups says so, exit 1, as the rollback would fail."""
    real, link = tmp_path / "real.pem", tmp_path / "link.pem"
    real.write_bytes(root.pem)
    link.symlink_to(real)
    added = pki.ca("Named Twice")
    source = tmp_path / "s.pem"
    source.write_bytes(added.pem)
    assert storesync("sync", "--mode", "add", f"pem:{source}", f"pem:{link}").returncode == 0
    listing = storesync("rollback", "--list", "--json", f"pem:{real}")
    assert listing.returncode == 0 and len(json.loads(listing.stdout)["backups"]) == 1
    assert storesync("rollback", f"pem:{real}").returncode == 0
    assert link.is_symlink() and real.read_bytes() == root.pem
    capath, linked = tmp_path / "ca", tmp_path / "linked-ca"
    linked.symlink_to(capath)
    assert storesync("sync", f"pem:{real}", f"dir:{capath}").returncode == 0
    before = files_of(capath)
    assert storesync("sync", "--mode", "add", f"pem:{source}", f"dir:{linked}").returncode == 0
    verify = ("openssl", "verify", "-CApath", capath, source)
    assert run(*verify, check=False).returncode == 0
    assert storesync("rollback", f"dir:{capath}").returncode == 0
    assert run(*verify, check=False).returncode != 0 and files_of(capath) == before
    never = storesync("rollback", "--list", f"pem:{tmp_path / 'never.pem'}")
    assert never.returncode == 1 and "no backups" in never.stdout and "nothing to roll back" in never.stdout


def test_state_an_earlier_version_kept_under_a_symlinks_name_moves_to_the_real_path(pki, root, tmp_path):
    """Before keys were real paths, a store named through a symlink had its own state: its
    backups and record are adopted by the real path the first time the store is named so again."""
    real, link = tmp_path / "real.pem", tmp_path / "link.pem"
    real.write_bytes(root.pem)
    link.symlink_to(real)
    old = f"pem:{link}"
    state.save_backup(old, {str(real): root.pem}, "before sync of an earlier version")
    state.save_owned(old, {}, TrustSet())
    real.write_bytes(root.pem + pki.ca("Added Earlier").pem)
    for name in (link, real):
        listing = storesync("rollback", "--list", f"pem:{name}")
        assert listing.returncode == 0 and "before sync of an earlier version" in listing.stdout
    assert os.path.exists(state.owned_path(f"pem:{real}")) and not os.path.exists(state.backup_dir(old))
    assert storesync("rollback", f"pem:{real}").returncode == 0
    assert link.is_symlink() and real.read_bytes() == root.pem


def test_the_state_dir_is_no_write_primitive(root, tmp_path, state_dir):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    locks = state_dir / "locks"
    locks.mkdir(parents=True)
    name = state._key("profile x")
    (locks / f"{name}.lock").symlink_to(victim)
    with pytest.raises(StoreError, match="cannot keep locks"):
        with state.lock("profile x", timeout=0.1):
            pass
    assert victim.read_text() == "keep me"
    out = tmp_path / "out.pem"
    out.write_bytes(root.pem)
    assert storesync("rollback", f"pem:{out}", "--to", "../../victim").returncode == 2


def test_an_undecodable_name_neither_crashes_nor_half_writes(pki, tmp_path):
    """A UniversalString with an impossible code point: OpenSSL cannot hash it; we must not crash."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    odd = pki.ca(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Odd", _type=x509.name._ASN1Type.UniversalString)]))
    raw = odd.der.replace("Odd".encode("utf-32-be"), b"\x00\x11\x00\x00" * 3)
    source = tmp_path / "s.pem"
    from conftest import pem_of as armor

    source.write_bytes(armor(raw))
    result = storesync("sync", f"pem:{source}", f"dir:{tmp_path / 'ca'}")
    assert "Traceback" not in result.stderr and result.returncode in (0, 2)


def test_store_options_in_profiles_label_template_and_own_guard(pki, root, tmp_path):
    source, nss_like, plain = tmp_path / "s.pem", tmp_path / "t.pem", tmp_path / "p.pem"
    cas = [root, *(pki.ca(f"Opt Root {n}") for n in range(3))]
    source.write_bytes(b"".join(c.pem for c in cas))
    config = write_config(tmp_path, f'''
[profile.o]
source = "pem:{source}"
targets = [{{ spec = "pem:{nss_like}", format = "trusted", label-template = "corp: {{label}}" }},
           {{ spec = "pem:{plain}", max-removal-share = "1.0" }}]
''')
    assert storesync("sync", "--config", config).returncode == 0
    labels = sorted(e.label for e in open_store(f"pem:{nss_like}?format=trusted").read().values())
    assert labels == sorted(f"corp: {c.cert.subject.rfc4514_string()[3:]}" for c in cas)
    source.write_bytes(root.pem)  # 3 of 4 removed: held back for the first target, allowed for the second
    result = storesync("sync", "--config", config)
    assert result.returncode == 3
    assert len(keys(f"pem:{nss_like}")) == 4 and len(keys(f"pem:{plain}")) == 1
    config.write_text(config.read_text().replace('"corp: {label}"', '"{nope}"'))
    source.write_bytes(b"".join(c.pem for c in cas) + pki.ca("New One").pem)
    bad = storesync("sync", "--force", "--config", config)
    assert bad.returncode == 2 and "label-template" in bad.stderr and "Traceback" not in bad.stderr


def test_a_store_changed_before_the_lock_is_read_again_an_unchanged_one_is_not(pki, root, tmp_path, monkeypatch):
    """And planned again: a run whose stores all kept their versions writes the plan it made
    without the lock (planning it again under the lock would give the same plan)."""
    from contextlib import contextmanager

    from storesync.config import Profile, StoreRef
    from storesync.engine import run as engine_run
    from storesync.stores.pem import PemStore

    source, target = tmp_path / "source.pem", tmp_path / "target.pem"
    source.write_bytes(root.pem)
    later = pki.ca("Arrived Meanwhile")
    reads: list[str] = []
    real_read, real_lock = PemStore.read, state.lock
    monkeypatch.setattr(PemStore, "read", lambda self: (reads.append(os.path.basename(self.path)), real_read(self))[1])
    plans, real_plan = [], engine_run.make_plan
    monkeypatch.setattr(engine_run, "make_plan", lambda *a, **k: (plans.append(k["store"]), real_plan(*a, **k))[1])

    @contextmanager
    def lock_after_another_writer(name, timeout=10.0):
        if name.startswith("profile") and not source.read_bytes().count(later.pem):
            replacement = tmp_path / "source.new"  # another writer got there first, as storesync writes
            replacement.write_bytes(root.pem + later.pem)
            os.replace(replacement, source)
        with real_lock(name, timeout):
            yield

    monkeypatch.setattr(state, "lock", lock_after_another_writer)
    profile = Profile("race", "mirror", [StoreRef(f"pem:{source}"), StoreRef(f"pem:{target}")])
    result = engine_run.run(profile)
    engine_reads = list(reads)
    assert result.exit_code == 0, result.error
    assert keys(f"pem:{target}") == keys(f"pem:{source}") and len(keys(f"pem:{target}")) == 2
    # source and target without the lock; the source again under it (it changed; the target,
    # still missing, did not); the written target once more, fresh, to check it
    assert engine_reads == ["source.pem", "target.pem", "source.pem", "target.pem"]
    assert len(plans) == 2  # the source changed: planned again under the lock

    reads.clear()
    plans.clear()
    target.unlink()
    result = engine_run.run(profile)
    assert result.exit_code == 0 and reads == ["source.pem", "target.pem", "target.pem"]
    assert plans == [f"pem:{target}"]
    assert len(keys(f"pem:{target}")) == 2


# --- the removal guard and distrust ------------------------------------------------------------


def guard_case(pki, distrusted: int, vanished: int, caps):
    """The removal guard on a plan for 10 trusted roots, of which the source distrusts some and
    no longer holds others."""
    from storesync.engine.plan import make_plan
    from storesync.engine.policy import removal_guard
    from storesync.model import ANCHOR, DISTRUST, Certificate, Entry, TrustSet

    roots = [Entry(Certificate(pki.ca(f"Guard Root {n}").der), trust=dict(ANCHOR)) for n in range(10)]
    source = [e.replace(trust=dict(DISTRUST)) for e in roots[:distrusted]] + roots[distrusted + vanished:]
    plan = make_plan(TrustSet(source), TrustSet(roots), caps, store="t", purpose="any")
    return plan, removal_guard(plan)


@pytest.mark.parametrize("can_distrust", [False, True], ids=["removed", "distrusted"])
def test_a_mass_distrust_passes_the_removal_guard_a_mass_disappearance_does_not(pki, can_distrust):
    """Distrust is the source's word: 3 of 10 roots distrusted at once is applied (removed with a
    `!` line where the store cannot say distrusted, written as distrust where it can), while 3 of
    10 that merely vanished from the source is still held back, also beside a distrust."""
    from storesync.stores import Capabilities

    caps = Capabilities(purposes=True, distrust=True) if can_distrust else Capabilities()
    plan, why = guard_case(pki, distrusted=3, vanished=0, caps=caps)
    assert len(plan.changes if can_distrust else plan.removals) == 3 and why is None
    if not can_distrust:
        assert [loss.what for loss in plan.losses] == ["distrusted: left out, since this store cannot say distrusted"] * 3
    plan, why = guard_case(pki, distrusted=0, vanished=3, caps=caps)
    assert len(plan.removals) == 3 and why and "3 of 10" in why
    plan, why = guard_case(pki, distrusted=3, vanished=2, caps=caps)
    assert why and "2 of 10" in why  # only the vanished ones count
    plan, why = guard_case(pki, distrusted=10, vanished=0, caps=caps)
    assert why is None  # even a distrust of everything: the source says so


def test_a_distrust_list_reaches_a_plain_bundle_unforced_a_truncated_one_is_held(pki, tmp_path):
    """Through the CLI: a TRUSTED bundle distrusting 3 of 10 roots is written to a plain bundle
    without --force (the three are removed, each with a `!` line); the same bundle with the three
    simply missing is held back (exit 3) and the target stays as it was."""
    cas = [pki.ca(f"Listed Root {n}") for n in range(10)]
    target, source = tmp_path / "out.pem", tmp_path / "src.pem"
    target.write_bytes(b"".join(c.pem for c in cas))
    rejected = b""
    for ca in cas[:3]:
        ca.write(tmp_path / "one.pem")
        rejected += run("openssl", "x509", "-in", tmp_path / "one.pem", "-addreject", "anyExtendedKeyUsage",
                        "-trustout").stdout
    before = target.read_bytes()
    source.write_bytes(b"".join(c.pem for c in cas[3:]))
    held = storesync("sync", f"pem:{source}", f"pem:{target}")
    assert held.returncode == 3 and "held back" in held.stdout and target.read_bytes() == before
    source.write_bytes(rejected + b"".join(c.pem for c in cas[3:]))
    result = storesync("sync", f"pem:{source}?format=trusted", f"pem:{target}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert keys(f"pem:{target}") == {hashlib.sha256(c.der).hexdigest() for c in cas[3:]}
    assert result.stdout.count("cannot say distrusted") == 3, result.stdout


def test_an_entry_the_store_asks_to_rewrite_becomes_a_change_of_its_own(pki):
    """`Store.rewrite` (the store holds an entry in a form its readers may take differently): an
    unchanged entry is written again, saying why; one changing or leaving anyway is not doubled."""
    from storesync.engine.plan import make_plan
    from storesync.model import ANCHOR, DISTRUST, Certificate, Entry, TrustSet
    from storesync.stores import Capabilities

    kept, changing, leaving = (Entry(Certificate(pki.ca(f"Rewrite {n}").der), trust=dict(ANCHOR)) for n in range(3))
    source = TrustSet([kept, changing.replace(trust=dict(DISTRUST))])
    why = {e.sha256: "held oddly" for e in (kept, changing, leaving)}
    plan = make_plan(source, TrustSet([kept, changing, leaving]), Capabilities(purposes=True, distrust=True),
                     store="t", rewrite=why)
    assert [(b.sha256, a.trust) for b, a in plan.changes] == [(changing.sha256, DISTRUST), (kept.sha256, ANCHOR)]
    assert plan.rewrites == {kept.sha256: "held oddly"} and [e.sha256 for e in plan.removals] == [leaving.sha256]
    assert plan.to_json()["changes"][1]["why"] == "held oddly" and "why" not in plan.to_json()["changes"][0]


@pytest.mark.parametrize("kind", ["nss", "dir"])
def test_escalation_guard_judges_the_files_of_a_folder_store_too(pki, root, tmp_path, kind):
    """A root-owned NSS folder whose cert9.db and key4.db anyone may write, or a root-owned hashed
    directory holding a user's file: that user can add trust to the store, so it may not raise
    trust in a root-owned one. The guard looked at the folder and its parent only."""
    from test_nss import new_db

    if os.geteuid() != 0:
        pytest.fail("this test needs root to make a file owned by another user")
    system = tmp_path / "system.pem"
    system.write_bytes(root.pem)
    sneaky = pki.ca("Sneaky Root In A Folder Store")
    if kind == "nss":
        store = new_db(tmp_path / "db")
        for name in ("cert9.db", "key4.db"):
            (store / name).chmod(0o666)
    else:
        store = tmp_path / "certs"
        store.mkdir()
        (store / "root.pem").write_bytes(root.pem)
        (store / "alice.pem").write_bytes(pki.ca("Alice's Own Root").pem)
        os.chown(store / "alice.pem", 1000, 1000)
    config = write_config(tmp_path, f'[profile.p]\nmode = "merge"\nstores = ["{kind}:{store}", "pem:{system}"]\n')
    assert storesync("sync", "--config", config).returncode == 0
    count = len(keys(f"pem:{system}"))
    if kind == "nss":
        run("certutil", "-A", "-d", f"sql:{store}", "-n", "sneaky", "-t", "C,,", "-i", sneaky.write(tmp_path / "s.pem"))
    else:
        (store / "alice.pem").write_bytes(sneaky.pem)  # alice rewrites her own file
    result = storesync("sync", "--config", config)
    assert "held back" in result.stdout, result.stdout + result.stderr
    assert len(keys(f"pem:{system}")) == count


def test_escalation_guard_follows_a_store_named_through_a_link(pki, root, tmp_path):
    """A root-owned link, in a root-owned folder, to a bundle in a user's folder: the user can
    replace the bundle (with a link to any root-owned file holding another root), so the store
    may not raise trust in root's. The guard judged the link's folder and the file it reached,
    never the folder the file is in, nor a link on the way."""
    if os.geteuid() != 0:
        pytest.fail("this test needs root to make a folder owned by another user")
    system, user = tmp_path / "root", tmp_path / "user"
    system.mkdir()
    user.mkdir()
    os.chown(user, 65534, 65534)
    (system / "a.pem").write_bytes(root.pem)
    (user / "b.pem").write_bytes(root.pem)
    (system / "b-link.pem").symlink_to(user / "b.pem")
    config = write_config(tmp_path, f'[profile.p]\nmode = "merge"\n'
                                    f'stores = ["pem:{system / "a.pem"}", "pem:{system / "b-link.pem"}"]\n')
    assert storesync("sync", "--config", config).returncode == 0
    # what the user may do: put another root in the file, or a link to any root-owned file in its place
    elsewhere = tmp_path / "root-owned-elsewhere.pem"
    elsewhere.write_bytes(root.pem + pki.ca("Root Deselected Elsewhere").pem)
    for swap in (lambda: (user / "b.pem").write_bytes(root.pem + pki.ca("Root The User Wrote").pem),
                 lambda: ((user / "b.pem").unlink(), (user / "b.pem").symlink_to(elsewhere))):
        swap()
        result = storesync("sync", "--config", config)
        assert "held back" in result.stdout, result.stdout + result.stderr
        assert len(keys(f"pem:{system / 'a.pem'}")) == 1
