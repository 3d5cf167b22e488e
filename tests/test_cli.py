"""The command line as a user runs it: output, exit codes, and that bad input changes nothing."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from storesync.model import Certificate

from conftest import need, run, storesync


@pytest.fixture
def stores(pki, root, tmp_path):
    """A source bundle of 10 roots, and two targets already in sync with it."""
    cas = [root, *(pki.ca(f"CLI Root {i}") for i in range(9))]
    source = tmp_path / "source.pem"
    source.write_bytes(b"".join(c.pem for c in cas))
    targets = [f"pem:{tmp_path / 'out.pem'}", f"dir:{tmp_path / 'ca'}"]
    assert storesync("sync", f"pem:{source}", *targets).returncode == 0
    return source, targets, cas


def snapshot(tmp_path):
    files = {}
    for dirpath, _, names in os.walk(tmp_path):
        for name in names:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            files[path] = (st.st_ino, st.st_mtime_ns, os.readlink(path) if os.path.islink(path) else open(path, "rb").read())
    return files


def test_list_json_has_the_documented_fields(stores, root):
    source, _, cas = stores
    result = storesync("list", "--json", str(source))
    assert result.returncode == 0
    data = json.loads(result.stdout)
    assert data["store"] == f"pem:{source}"
    first = data["entries"][0]
    assert first["sha256"] == Certificate(root.der).sha256 and first["sha1"] == Certificate(root.der).sha1
    assert first["subject"] == "CN=storesync Test Root" and first["label"] == "storesync Test Root"
    assert first["not_after"].endswith("Z") and first["not_before"] < first["not_after"]
    assert first["trust"] == {"server-auth": "trusted"}  # a plain bundle holds anchors for its one purpose
    assert len(data["entries"]) == len(cas)


def test_list_for_people_and_python_dash_m(stores):
    source, _, _ = stores
    result = subprocess.run([sys.executable, "-m", "storesync", "list", str(source)], capture_output=True, text=True)
    assert result.returncode == 0 and "CLI Root 3" in result.stdout and "+server-auth" in result.stdout


def test_list_for_people_prints_plain_columns_that_cut_nothing(tmp_path, pki):
    """One line a certificate, the whole label however long the terminal is narrow, and no rich
    table: measuring every cell made `list` of 10 000 certificates 4x its `--json`."""
    long_label = "A Very Long Root Name Wider Than The Terminal"
    bundle = tmp_path / "a.pem"
    bundle.write_bytes(pki.ca(long_label.strip()).pem + pki.ca("Short").pem)
    code = ("import sys; sys.argv = ['storesync', 'list', sys.argv[1]]\n"
            "from storesync.cli import main\nmain()\nprint('rich' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code, f"pem:{bundle}"], capture_output=True, text=True,
                            env={**os.environ, "COLUMNS": "40"})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"pem:{bundle}: 2 certificates" and lines[-1] == "False"
    assert lines[1].split() == ["label", "sha256", "expires", "trust"]
    assert any(line.startswith(f"  {long_label.strip()}  ") for line in lines[2:4]), lines


def test_diff_exit_codes(stores, pki, tmp_path):
    source, targets, _ = stores
    assert storesync("diff", f"pem:{source}", targets[1]).returncode == 0
    other = tmp_path / "other.pem"
    other.write_bytes(source.read_bytes() + pki.ca("Extra Root").pem)
    result = storesync("diff", "--json", f"pem:{source}", f"pem:{other}")
    assert result.returncode == 1
    data = json.loads(result.stdout)
    assert [e["label"] for e in data["only_b"]] == ["Extra Root"] and data["only_a"] == []
    missing = storesync("diff", f"pem:{source}", f"pem:{tmp_path / 'missing' / 'x.pem'}")
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    assert storesync("diff", f"pem:{source}", f"nosuchkind:{other}").returncode == 2


def test_dry_run_prints_the_plan_and_writes_nothing(stores, pki, tmp_path):
    source, targets, _ = stores
    source.write_bytes(source.read_bytes() + pki.ca("Dry Run Root").pem)
    before = snapshot(tmp_path / "ca")
    result = storesync("sync", "--dry-run", "--json", f"pem:{source}", *targets)
    assert result.returncode == 1
    plans = [p for p in json.loads(result.stdout)["plans"] if p["role"] == "target"]
    assert [[a["label"] for a in p["adds"]] for p in plans] == [["Dry Run Root"], ["Dry Run Root"]]
    assert all(not p["written"] for p in plans)
    assert snapshot(tmp_path / "ca") == before


def test_add_mode_never_removes(stores, tmp_path, root):
    source, targets, cas = stores
    only_one = tmp_path / "one.pem"
    only_one.write_bytes(root.pem)
    assert storesync("sync", "--mode", "add", f"pem:{only_one}", targets[0]).returncode == 0
    assert storesync("diff", f"pem:{source}", targets[0]).returncode == 0


BAD_SOURCES = {
    "private-key": lambda ca: ca.pem + ca.key_pem(),
    "truncated-block": lambda ca: ca.pem + ca.pem[:200],
    "garbage": lambda ca: os.urandom(3000).replace(b"-", b"_"),
}


@pytest.mark.parametrize("kind", sorted(BAD_SOURCES))
def test_bad_source_exit_2_and_targets_unchanged(stores, tmp_path, kind):
    source, targets, cas = stores
    source.write_bytes(BAD_SOURCES[kind](cas[0]))
    before = snapshot(tmp_path / "ca"), (tmp_path / "out.pem").read_bytes()
    result = storesync("sync", f"pem:{source}", *targets)
    assert result.returncode == 2
    assert result.stderr.startswith("storesync: ") and str(source) in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert (snapshot(tmp_path / "ca"), (tmp_path / "out.pem").read_bytes()) == before


def test_unreadable_source_is_a_clear_error(stores, tmp_path):
    source, targets, _ = stores
    os.chmod(source, 0)
    os.chmod(tmp_path, 0o755)
    command = [sys.executable, "-m", "storesync", "sync", f"pem:{source}", targets[0]]
    if os.geteuid() == 0:  # root reads anything: drop to nobody, as an ordinary admin account would be
        command = [shutil.which("setpriv"), "--reuid=nobody", "--regid=nogroup", "--clear-groups", *command]
        os.chmod(sys.prefix, 0o755)
    state = Path(tempfile.mkdtemp(prefix="storesync-state-"))  # reachable by nobody, unlike tmp_path
    os.chmod(state, 0o777)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "STORESYNC_STATE_DIR": str(state)}
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    assert result.returncode == 2, result.stderr
    assert "cannot read" in result.stderr or "permission denied" in result.stderr
    assert "Traceback" not in result.stderr


def test_truncated_source_is_held_back_unless_forced(stores, tmp_path, root):
    source, targets, _ = stores
    source.write_bytes(root.pem)  # 9 of 10 roots gone
    before = (tmp_path / "out.pem").read_bytes()
    result = storesync("sync", f"pem:{source}", targets[0])
    assert result.returncode == 3 and "held back" in result.stdout
    assert (tmp_path / "out.pem").read_bytes() == before
    assert storesync("sync", "--force", f"pem:{source}", targets[0]).returncode == 0
    assert storesync("diff", f"pem:{source}", targets[0]).returncode == 0


def test_a_bad_target_is_skipped_and_reported_others_are_written(stores, pki, tmp_path):
    source, targets, _ = stores
    broken = tmp_path / "broken.pem"
    broken.write_bytes(b"-----BEGIN CERTIFICATE-----\nAAAA")
    source.write_bytes(source.read_bytes() + pki.ca("New Root").pem)
    result = storesync("sync", f"pem:{source}", f"pem:{broken}", targets[0])
    assert result.returncode == 2 and str(broken) in result.stderr
    assert broken.read_bytes() == b"-----BEGIN CERTIFICATE-----\nAAAA"
    assert storesync("diff", f"pem:{source}", targets[0]).returncode == 0


def test_mode_and_owner_of_replaced_files_are_kept(stores, pki, tmp_path):
    source, targets, _ = stores
    out = tmp_path / "out.pem"
    os.chmod(out, 0o640)
    if os.geteuid() == 0:
        os.chown(out, 65534, 65534)
    source.write_bytes(source.read_bytes() + pki.ca("Mode Root").pem)
    assert storesync("sync", f"pem:{source}", targets[0]).returncode == 0
    st = os.stat(out)
    assert st.st_mode & 0o777 == 0o640
    if os.geteuid() == 0:
        assert (st.st_uid, st.st_gid) == (65534, 65534)


@pytest.mark.parametrize("kind, name", [("pem", "out.pem"), ("dir", "ca"), ("jks", "out.jks"), ("p12", "out.p12"),
                                        ("p7b", "out.p7b")])
def test_a_target_with_nothing_to_hold_is_still_created(pki, tmp_path, kind, name):
    """A target named is a target made: with nothing it can hold (here: a root trusted for
    e-mail only, into a server-auth store), the sync creates it empty, so `diff` can read it."""
    source = tmp_path / "src.pem"
    run("openssl", "x509", "-in", pki.ca("E-mail Only Root").write(tmp_path / "r.pem"), "-trustout",
        "-addtrust", "emailProtection", "-out", source)
    target = f"{kind}:{tmp_path / name}"
    dry = storesync("sync", "--dry-run", f"pem:{source}?format=trusted", target)
    assert dry.returncode == 1 and "to create, empty" in dry.stdout, dry.stdout
    result = storesync("sync", f"pem:{source}?format=trusted", target)
    assert result.returncode == 0 and (tmp_path / name).exists(), result.stdout + result.stderr
    assert storesync("diff", f"pem:{source}?format=trusted", target).returncode == 0
    again = storesync("sync", f"pem:{source}?format=trusted", target)
    assert again.returncode == 0 and "in sync" in again.stdout, again.stdout


@pytest.mark.parametrize("spec", ["pem:{out}?purpse=any", "dir:{ca}?link=both", "pem:{out}?links=both"])
def test_an_option_the_kind_does_not_have_is_an_error_not_a_default(stores, tmp_path, spec):
    """A typo in an option (purpse=, link=) or another kind's option used to be ignored, so the
    default was silently taken: the sync now stops before reading anything."""
    source, targets, cas = stores
    spec = spec.format(out=tmp_path / "out.pem", ca=tmp_path / "ca")
    before = snapshot(tmp_path)
    result = storesync("sync", f"pem:{source}", spec)
    assert result.returncode == 2
    name = spec.partition("?")[2].partition("=")[0]
    assert f"have no option {name}=" in result.stderr and "correct the spec" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert snapshot(tmp_path) == before
    assert storesync("sync", f"pem:{source}", spec.partition("?")[0] + "?purpose=server-auth").returncode == 0


def test_state_dir_is_where_list_diff_check_and_status_keep_their_state(tmp_path, root):
    """`--state-dir DIR`, after the command (either parser) or before it, moves the caches list,
    diff and check keep and the daemon status file status reads; $STORESYNC_STATE_DIR is untouched.
    A command's own --state-dir wins over one given before it."""
    big = tmp_path / "big.pem"  # from 1 MiB on, a bundle's parse is kept in the state dir's stat cache
    big.write_bytes(b"# padding\n" * (1 << 17) + root.pem)
    cert = root.write(tmp_path / "root.pem")
    env_dir, other = tmp_path / "env-state", tmp_path / "other-state"
    env = {**os.environ, "STORESYNC_STATE_DIR": str(env_dir)}
    lines = [
        ["list", f"pem:{big}", "--state-dir", "{state}"],  # the quick parser
        ["list", "--state-dir={state}", "--", f"pem:{big}"],  # typer
        ["--state-dir", str(other), "list", f"pem:{big}", "--state-dir", "{state}"],
        ["diff", f"pem:{big}", f"pem:{big}", "--state-dir", "{state}"],
        ["check", cert, "--store", f"pem:{big}", "--purpose", "server-auth", "--state-dir", "{state}"],
    ]
    for i, argv in enumerate(lines):
        state = tmp_path / f"state{i}"
        result = storesync(*(str(a).format(state=state) for a in argv), env=env)
        assert result.returncode in (0, 1), (argv, result.stderr)
        assert any((state / "statcache").iterdir()), argv
    before = tmp_path / "state-before"
    result = storesync("--state-dir", before, "list", f"pem:{big}", env=env)
    assert result.returncode == 0 and any((before / "statcache").iterdir()), result.stderr
    for argv in (["status", "--state-dir", before], ["--state-dir", before, "status"]):
        result = storesync(*argv, "--root", tmp_path, env=env)
        assert result.returncode == 0 and f"({before / 'status.json'})" in result.stdout, result.stdout + result.stderr
    assert not env_dir.exists() and not other.exists()


@pytest.mark.parametrize("argv, command", [
    (["diff", "{store}"], "storesync diff"),
    (["list", "--expiring", "abc", "{store}"], "storesync list"),
    (["list", "--bogus", "{store}"], "storesync list"),
    (["lsit", "{store}"], "storesync"),
    (["status", "--soon", "many"], "storesync status"),
    (["rollback"], "storesync rollback"),
])
def test_a_mistake_on_the_command_line_is_one_sentence(tmp_path, root, argv, command):
    """What is wrong and which --help to see, on one line prefixed `storesync: `, exit 2 (typer's
    own was a usage line and a five-line box); --help itself is typer's."""
    store = root.write(tmp_path / "root.pem")
    result = storesync(*(a.format(store=store) for a in argv))
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("storesync: ") and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.endswith(f" -m {command} --help`\n"), result.stderr  # `python -m storesync` here
    help_ = storesync(*command.split()[1:], "--help")
    assert help_.returncode == 0 and f"Usage: python -m {command} " in help_.stdout and help_.stderr == ""


@pytest.mark.parametrize("target, option, value", [
    ("pem:{d}/a.pem?purpose=bogus", "purpose", "bogus"),
    ("pem:{d}/b.pem?purpose=", "purpose", ""),
    ("pem:{d}/c.pem?format=xml", "format", "xml"),
    ("pem:{d}/d.pem?comments=maybe", "comments", "maybe"),
    ("dir:{d}/e?links=old", "links", "old"),
    ("p12:{d}/f.p12?protect=maybe", "protect", "maybe"),
    ("reg:{d}/x.reg?base=nope", "base", "nope"),
    ("jks:{d}/x.jks?aliases=weird", "aliases", "weird"),
    ("pem:{d}/h.pem?max-removal-share=2", "max-removal-share", "2"),
    # an empty password-file= was no option: a new Java store took the password changeit
    ("p12:{d}/g.p12?password-file=", "password-file", ""),
    ("jks:{d}/g.jks?password-file=", "password-file", ""),
    ("nss:{d}/nssdb?password-file=", "password-file", ""),
])
def test_a_bad_option_value_is_refused_before_anything_is_planned(target, option, value, root, tmp_path):
    """A wrong value is no smaller store: `purpose=bogus` wrote an empty bundle (a mirror would
    have removed every certificate), `max-removal-share=2` switched the guard off. Exit 2, one
    sentence naming the store, the option, the value and what it takes; nothing written."""
    source = root.write(tmp_path / "root.pem")
    spec = target.format(d=tmp_path)
    before = snapshot(tmp_path)
    for argv in (["sync", "--mode", "add", source, spec], ["list", spec]):
        result = storesync(*argv)
        assert (result.returncode, result.stdout) == (2, ""), result.stdout + result.stderr
        assert result.stderr.startswith(f"storesync: {spec}: {option}= cannot be {value!r}; use ")
        assert result.stderr.count("\n") == 1
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("target, option", [
    ("pem:{d}/a.pem?purpose=2.5.29.37.0&purpose=any", "purpose"),
    ("pem:{d}/b.pem?format=trusted&purpose=email&format=xml", "format"),
    ("dir:{d}/c?links=both&links=both", "links"),
])
def test_an_option_given_twice_in_a_spec_is_refused(target, option, root, tmp_path):
    """`?purpose=2.5.29.37.0&purpose=any` took the last value, the first never checked: which
    was meant cannot be told. Exit 2, one sentence naming the store and the option; nothing written."""
    source, spec = root.write(tmp_path / "root.pem"), target.format(d=tmp_path)
    before = snapshot(tmp_path)
    for argv in (["sync", "--mode", "add", source, spec], ["list", spec], ["check", source, "--store", spec]):
        result = storesync(*argv)
        assert (result.returncode, result.stdout) == (2, ""), result.stdout + result.stderr
        assert result.stderr == f"storesync: {spec}: option {option}= is given twice; give it once\n"
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("targets, named", [
    (["pem:{d}/t.pem", "pem:./t.pem?format=trusted"], "pem:{d}/t.pem and pem:./t.pem?format=trusted are one store"),
    (["pem:{d}/t.pem", "{d}/link.pem"], "pem:{d}/t.pem and {d}/link.pem are one store"),  # a link is its file
    (["pem:{d}/root.pem"], "the source {d}/root.pem and the target pem:{d}/root.pem are one store"),
    (["pem:./link-to-root.pem"], "the source {d}/root.pem and the target pem:./link-to-root.pem are one store"),
])
def test_one_store_named_twice_on_the_command_line_is_refused(targets, named, root, tmp_path):
    """`sync SRC pem:t.pem 'pem:./t.pem?format=trusted'` planned both from one read and wrote the
    file twice (two backups, the last write winning); a source named as its own target was "in
    sync". Stores are one by real path, as the engine tells a selector's stores apart. Exit 2,
    one sentence naming both spellings; nothing written."""
    source = root.write(tmp_path / "root.pem")
    (tmp_path / "link.pem").symlink_to("t.pem")
    (tmp_path / "link-to-root.pem").symlink_to("root.pem")
    before = snapshot(tmp_path)
    result = storesync("sync", source, *(t.format(d=tmp_path) for t in targets), cwd=tmp_path)
    assert (result.returncode, result.stdout) == (2, ""), result.stdout + result.stderr
    assert result.stderr.startswith(f"storesync: {named.format(d=tmp_path)} ({tmp_path.resolve()}/"), result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("argv, option", [
    (["list", "--expiring", "3000000", "{store}"], "--expiring"),  # past year 9999: was an OverflowError
    (["list", "--expiring", "-1", "{store}"], "--expiring"),  # was silently an empty list
    (["list", "--expiring=-1", "{store}"], "--expiring"),  # the quick parser's path
    (["status", "--soon", "3000000", "--root", "{d}"], "--soon"),
    (["status", "--soon", "-1", "--root", "{d}"], "--soon"),
])
def test_a_number_of_days_out_of_range_is_one_sentence(argv, option, root, tmp_path):
    store = root.write(tmp_path / "root.pem")
    result = storesync(*(a.format(store=store, d=tmp_path) for a in argv))
    assert (result.returncode, result.stdout) == (2, ""), result.stdout + result.stderr
    assert result.stderr.startswith(f"storesync: {option} takes a whole number of days from 0 to 100000, not ")
    assert result.stderr.count("\n") == 1


@pytest.mark.parametrize("purpose", ["bogus", ""])
def test_a_bad_purpose_flag_is_refused(purpose, root, tmp_path):
    source, target = root.write(tmp_path / "root.pem"), tmp_path / "g.pem"
    result = storesync("sync", "--purpose", purpose, source, f"pem:{target}")
    assert (result.returncode, result.stdout) == (2, "") and not target.exists()
    assert result.stderr.startswith(f"storesync: --purpose cannot be {purpose!r}; use server-auth, client-auth")


@pytest.mark.parametrize("argv, flags", [
    (["sync", "--mode", "add", "--profile", "w", "{root}", "pem:{d}/o.pem"], ["--profile", "SOURCE"]),
    (["sync", "--config", "{d}/c.toml", "{root}", "pem:{d}/o.pem"], ["--config", "SOURCE"]),
    (["sync", "--config", "{d}/c.toml", "--mode", "add"], ["--mode", "--config"]),
    (["sync", "--profile", "w", "--mode", "add"], ["--mode", "--profile"]),
    (["sync", "--config", "{d}/c.toml", "--purpose", "email"], ["--purpose", "--config"]),
    (["sync", "--profile", "w", "--purpose", "server-auth"], ["--purpose", "--profile"]),
    (["sync", "--purpose", "any"], ["--purpose", "the profiles of the config file"]),
    (["rollback", "--list", "--to", "123", "pem:{d}/o.pem"], ["--list", "--to"]),
    (["check", "{root}", "--nginx-conf", "{d}/n.conf", "--apache-conf", "{d}/a.conf"], ["--nginx-conf", "--apache-conf"]),
    (["check", "{root}", "--nginx-conf", "{d}/n.conf", "--server", "apache"], ["--server apache", "--nginx-conf"]),
])
def test_flags_that_do_not_go_together_are_refused(argv, flags, root, tmp_path):
    """A flag that would be silently ignored (the profile's mode, the stores named beside a
    profile, a backup to restore while listing) is a mistake: exit 2, one sentence naming both.
    So is `--purpose` with profiles: it re-read every plain store of them as anchors for another
    purpose than the daemon's runs read, so a merge moved an NSS root from server-auth to email."""
    source = root.write(tmp_path / "root.pem")
    (tmp_path / "c.toml").write_text(f'[profile.w]\nmode = "mirror"\nsource = "pem:{source}"\ntargets = ["pem:{tmp_path}/o.pem"]\n')
    (tmp_path / "n.conf").write_text("")
    (tmp_path / "a.conf").write_text("")
    env = {**os.environ, "STORESYNC_CONFIG": str(tmp_path / "c.toml")}
    result = storesync(*(word.format(d=tmp_path, root=source) for word in argv), env=env)
    assert (result.returncode, result.stdout) == (2, ""), result.stdout + result.stderr
    assert result.stderr.startswith("storesync: ") and result.stderr.count("\n") == 1
    assert all(flag in result.stderr for flag in flags), result.stderr
    assert not (tmp_path / "o.pem").exists()


@pytest.mark.parametrize("how", ["flag", "spec", "table", "profile"])
@pytest.mark.parametrize("oid, why", [
    ("2.5.29.37.0", "anyExtendedKeyUsage"),
    ("1.3.6.1.5.5.7.3.01", "no leading zero: write server-auth"), ("1.3.6.1.5.5.7.3.08", "no leading zero: write 1.3.6.1.5.5.7.3.8"),
    ("2.5.29.37.00", "anyExtendedKeyUsage"), ("02.5.29.37.0", "anyExtendedKeyUsage"),
    ("3.1", "first arc is 0, 1 or 2"), ("1.40.2", "below 40"),
])
def test_a_purpose_oid_is_in_canonical_dotted_form_and_not_any_eku(how, oid, why, root, tmp_path):
    """An OID with a leading zero in an arc (1.3.6.1.5.5.7.3.01) was taken as a purpose of its own,
    which no certificate's EKU spells (a store's OIDs are read back canonical): a store for it was
    planned empty, and written into a kind with per-purpose trust it failed at read-back. So was
    `2.5.29.37.0` (anyExtendedKeyUsage: read from a store, the named purposes, never one more).
    Refused as the spec is read, saying what is wrong (for anyExtendedKeyUsage: to write `any`)."""
    source, target = root.write(tmp_path / "root.pem"), tmp_path / "o.pem"
    argv = {"flag": ["sync", "--purpose", oid, f"pem:{source}", f"pem:{target}"],
            "spec": ["sync", f"pem:{source}", f"pem:{target}?purpose={oid}"]}.get(how, ["sync"])
    table = {"table": f'targets = [{{ spec = "pem:{target}?format=trusted", purpose = "{oid}" }}]\n',
             "profile": f'targets = ["pem:{target}"]\npurposes = ["{oid}"]\n'}.get(how, "")
    (tmp_path / "c.toml").write_text(f'[profile.w]\nmode = "mirror"\nsource = "pem:{source}"\n{table}')
    result = storesync(*argv, env={**os.environ, "STORESYNC_CONFIG": str(tmp_path / "c.toml")})
    assert (result.returncode, result.stdout) == (2, ""), result.stdout + result.stderr
    assert result.stderr.count("\n") == 1 and repr(oid) in result.stderr and why in result.stderr, result.stderr
    assert why != "anyExtendedKeyUsage" or "write any" in result.stderr or "leave" in result.stderr, result.stderr
    assert not target.exists()


@pytest.mark.parametrize("flags", [["--purpose", "email"], ["--mode", "add"], []])
def test_sync_with_no_config_file_anywhere_says_so_whatever_the_flags(flags, tmp_path):
    """`sync --purpose email` with no config file said "--purpose and the profiles of the config
    file do not go together", of profiles that do not exist: it says what plain `sync` says."""
    env = {k: v for k, v in os.environ.items() if k != "STORESYNC_CONFIG"}
    env.update(HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path))
    machine = [d for d in ("/etc/storesync", "/etc/xdg/storesync") if Path(d, "storesync.toml").exists()]
    if machine:  # this machine's own config, hidden from the run under an empty folder of a mount namespace
        if os.geteuid() != 0 or shutil.which("unshare") is None:
            pytest.skip("this machine has a config file, and hiding it needs root and unshare(1)")
        hide = " && ".join(f"mount -t tmpfs none {d}" for d in machine)
        result = subprocess.run(["unshare", "-m", "sh", "-c", f'{hide} && exec "$@"', "sh", sys.executable, "-m",
                                 "storesync", "sync", *flags], capture_output=True, text=True, env=env)
    else:
        result = storesync("sync", *flags, env=env)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == ("storesync: no profiles to run (no config file found); name a SOURCE and TARGETs, "
                             "or write a config file (see the README)\n")


def test_check_and_rollback_of_an_nss_folder_named_dir_say_so_and_nothing_else(root, tmp_path):
    """`check --store dir:NSSDIR` printed the error and then the certificate's header (exit 2);
    `rollback dir:NSSDIR` said only "no backups". One sentence each, naming nss:."""
    need("certutil")
    db = tmp_path / "db"
    db.mkdir()
    run("certutil", "-N", "-d", f"sql:{db}", "--empty-password")
    leaf = root.write(tmp_path / "root.pem")
    for argv in (["check", leaf, "--store", f"dir:{db}"], ["check", leaf, "--store", f"pem:{leaf}", "--store", f"dir:{db}"],
                 ["check", leaf, "--store", f"dir:{db}", "--json"], ["rollback", f"dir:{db}"]):
        result = storesync(*argv)
        assert (result.returncode, result.stdout) == (2, ""), result.stdout + result.stderr
        assert result.stderr.count("\n") == 1 and f"nss:{db}" in result.stderr, result.stderr


@pytest.mark.parametrize("given", ["option", "environment"])
def test_a_state_dir_in_the_home_of_no_user_is_an_error(tmp_path, root, given):
    """`~nouser/state` cannot be expanded: a sentence and exit 2, not a folder named `~nouser` made
    in the working directory (nor, as with pathlib before, a traceback)."""
    bundle = tmp_path / "b.pem"
    bundle.write_bytes(root.pem)
    option = ["--state-dir", "~nosuchuser-storesync/state"] if given == "option" else []
    env = {**os.environ, "STORESYNC_STATE_DIR": "~nosuchuser-storesync/state"}
    for command in (["sync", *option, f"pem:{bundle}", f"pem:{tmp_path / 'out.pem'}"], ["status", *option]):
        result = storesync(*command, env=env, cwd=tmp_path)
        assert result.returncode == 2, result.stderr
        assert "'nosuchuser-storesync' is no user of this machine" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert sorted(os.listdir(tmp_path)) == ["b.pem"]  # nothing made, not even the target


def one_sentence(*argv: str, cwd=None) -> str:
    """Run the CLI (a hang fails, never waits for ever); exit 2 with one sentence, which is returned."""
    result = subprocess.run([sys.executable, "-m", "storesync", *argv], capture_output=True, text=True, timeout=20,
                            cwd=cwd)
    assert result.returncode == 2, result.stderr + result.stdout
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    return result.stderr


@pytest.mark.parametrize("kind", ["pem", "jks", "sst", "p12", "reg", "p7b", "certdata", None])
def test_a_device_or_fifo_is_refused_as_a_store_not_read_for_ever(stores, tmp_path, kind):
    """/dev/zero never ends and a FIFO nobody writes to never starts: neither is read (a read of
    /dev/zero filled memory, one of a FIFO hung); as a target, nothing is written."""
    source, targets, _ = stores
    fifo = tmp_path / "store.fifo"
    os.mkfifo(fifo)
    for path, what in (("/dev/zero", "a character device"), (str(fifo), "a FIFO")):
        spec = f"{kind}:{path}" if kind else path
        said = one_sentence("list", spec)
        assert f"{path}: is {what}, not a regular file; name a regular file instead" in said
        if kind not in (None, "certdata"):  # certdata is read-only
            before = snapshot(tmp_path / "ca")
            said = one_sentence("sync", f"pem:{source}", targets[1], spec)
            assert f"{path}: is {what}, not a regular file" in said and snapshot(tmp_path / "ca") == before
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)  # left as it was


def test_a_password_file_that_is_a_device_or_a_fifo_or_one_endless_line_is_refused(stores, tmp_path):
    """A password file is one line: a device (/dev/zero grew to GBs), a FIFO or a file with no line
    end in its first 64 KiB is refused, not read whole; a pipe (`<(...)`) still gives a password."""
    source, _, _ = stores
    keystore = tmp_path / "k.jks"
    assert storesync("sync", f"pem:{source}", f"jks:{keystore}").returncode == 0
    before = keystore.read_bytes()
    fifo, endless = tmp_path / "pw.fifo", tmp_path / "endless"
    os.mkfifo(fifo)
    endless.write_bytes(b"a" * (1 << 17))
    for password, what in (("/dev/zero", "is a character device, not a regular file"),
                           (fifo, "is a FIFO, not a regular file"),
                           (endless, "has no line end in its first 65536 bytes; put the password alone on its first line")):
        for argv in (["list"], ["sync", "--mode", "add", f"pem:{source}"]):
            said = one_sentence(*argv, f"jks:{keystore}?password-file={password}")
            assert f"jks store {keystore}: the password file {password} {what}" in said
    assert keystore.read_bytes() == before
    read, write = os.pipe()  # what `--password-file <(echo changeit)` gives: /dev/fd/N of a pipe
    os.write(write, b"changeit\n")
    os.close(write)
    listed = subprocess.run([sys.executable, "-m", "storesync", "list", f"jks:{keystore}?password-file=/dev/fd/{read}"],
                            capture_output=True, text=True, timeout=20, pass_fds=(read,))
    os.close(read)
    assert listed.returncode == 0 and "10 certificates" in listed.stdout, listed.stderr
    longest = tmp_path / "longest"  # a line of the most it reads, then its line end: a password
    longest.write_bytes(b"a" * (1 << 16) + b"\n")
    said = storesync("list", f"jks:{keystore}?password-file={longest}").stderr
    assert "line end" not in said and "password is wrong" in said, said


@pytest.mark.parametrize("kind", ["pem", "dir", "anchors", "nss", None])
def test_a_symbolic_link_loop_is_said_to_be_one_by_list_and_sync(stores, tmp_path, kind):
    """A loop is neither "does not exist" (list) nor "File exists" or "Too many levels of
    symbolic links" (sync): it is named, with what to do."""
    source, _, _ = stores
    os.symlink("loop2", tmp_path / "loop1")
    os.symlink("loop1", tmp_path / "loop2")
    spec = f"{kind}:loop1" if kind else "loop1"
    for argv in (["list", spec], ["sync", f"pem:{source}", spec]):
        said = one_sentence(*argv, cwd=tmp_path)
        assert (f"loop1: is a symbolic link loop (its links lead to each other, never to a file or folder); "
                "correct or remove the link") in said
    assert os.readlink(tmp_path / "loop1") == "loop2"


def test_a_writable_file_in_a_folder_that_is_not_says_to_make_the_folder_writable(pki, root):
    """A bundle anyone may write, in a folder this user may not: the file is replaced through a
    new one beside it, so the folder is what must change. The sentence said to make the file
    writable, which it was."""
    base = Path(tempfile.mkdtemp(prefix="storesync-locked-"))  # reachable by nobody, unlike tmp_path
    base.chmod(0o755)
    source, folder = base / "source.pem", base / "locked"
    source.write_bytes(root.pem + pki.ca("A Root To Add").pem)
    source.chmod(0o644)
    folder.mkdir()
    target = folder / "out.pem"
    target.write_bytes(root.pem)
    target.chmod(0o666)
    folder.chmod(0o555)
    state = base / "state"
    state.mkdir(mode=0o777)
    state.chmod(0o777)
    command = [sys.executable, "-m", "storesync", "sync", f"pem:{source}", f"pem:{target}"]
    if os.geteuid() == 0:  # root writes anything: drop to nobody
        command = [shutil.which("setpriv"), "--reuid=nobody", "--regid=nogroup", "--clear-groups", *command]
        os.chmod(sys.prefix, 0o755)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "STORESYNC_STATE_DIR": str(state)}
    try:
        result = subprocess.run(command, capture_output=True, text=True, env=env)
        assert result.returncode == 2, result.stdout + result.stderr
        assert f"make its folder {folder} writable by this user" in result.stderr, result.stderr
        assert target.read_bytes() == root.pem
    finally:
        folder.chmod(0o755)
        shutil.rmtree(base)


def test_a_pipe_named_without_its_kind_is_refused_not_read_short(pki):
    """`storesync list /dev/stdin` fed a bundle: telling the kind read the pipe's first 4 KiB,
    which the store's read then never saw, so it listed fewer certificates than it was given (and a sync from it
    would remove the rest everywhere). A pipe names its kind now; `pem:/dev/stdin` reads them all."""
    bundle = b"".join(pki.ca(f"Piped Root {n}").pem for n in range(9))
    assert len(bundle) > 4096
    command = [sys.executable, "-m", "storesync", "list", "--json"]
    result = subprocess.run([*command, "/dev/stdin"], input=bundle, capture_output=True)
    assert result.returncode == 2 and b"pem:/dev/stdin" in result.stderr, result.stdout + result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    result = subprocess.run([*command, "pem:/dev/stdin"], input=bundle, capture_output=True)
    assert result.returncode == 0 and len(json.loads(result.stdout)["entries"]) == 9
