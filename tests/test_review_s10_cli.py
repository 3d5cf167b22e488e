"""What the tenth session's new-administrator review found on the command line: label templates
that crashed or named certificates after Python methods, a daemon that died on SIGHUP, raw
errnos for a target in a missing folder, flags silently ignored, and printed commands that
could not be run as printed. Stores are checked with the programs that own their formats."""

from __future__ import annotations

import io
import os
import shlex
import subprocess
import sys

import pytest

from conftest import run, storesync
from test_nss import certutil_flags, new_db
from test_translation import openssl_subjects
from storesync.model import StoreError

LABEL_FIELDS = "{label}, {sha1} and {sha256}"


def one_sentence(result, *words: str) -> str:
    """The stderr of a refused command: exit 2, one `storesync: ` line holding `words`."""
    assert (result.returncode, result.stderr.count("\n")) == (2, 1), result.stdout + result.stderr
    assert result.stderr.startswith("storesync: ") and "Traceback" not in result.stderr, result.stderr
    for word in words:
        assert word in result.stderr, result.stderr
    return result.stderr


# --- 1, 2: label-template ------------------------------------------------------------------------

BAD_TEMPLATES = ["{label.x}", "{sha1[x]}", "{label.upper}", "{label:{sha1}}", "{}", "{0}", "{label!z}", "{sha1:d}"]


@pytest.mark.parametrize("template", BAD_TEMPLATES)
def test_a_label_template_holds_only_label_sha1_and_sha256(template, root, tmp_path):
    """No attribute, index, positional or nested field (`{label.upper}` named certificates after a
    method, `{label.x}` was a traceback): refused as the spec is opened, nothing written."""
    source, target = tmp_path / "root.pem", tmp_path / "t.pem"
    root.write(source)
    result = storesync("sync", "--mode", "add", source, f"pem:{target}?label-template={template}")
    one_sentence(result, f"pem:{target}", f"label-template= cannot be {template!r}", LABEL_FIELDS)
    assert not target.exists()


def test_a_bad_label_template_in_a_config_is_its_line_in_sync_daemon_and_status(root, tmp_path):
    source, config = tmp_path / "root.pem", tmp_path / "s.toml"
    root.write(source)
    config.write_text(f'[profile.a]\nmode = "add"\nsource = "pem:{source}"\n'
                      f'targets = [{{ spec = "pem:{tmp_path}/x.pem", label-template = "{{label.x}}" }}]\n')
    said = f"config {config} line 4: profile 'a': pem:{tmp_path}/x.pem: label-template= cannot be '{{label.x}}'"
    one_sentence(storesync("sync", "--config", config), said, LABEL_FIELDS)
    one_sentence(storesync("daemon", "--once", "--config", config), said, LABEL_FIELDS)
    status = storesync("status", "--config", config)
    assert f"warning: config: {said}" in status.stderr and "attribute" not in status.stderr.replace(".attribute", "")


def test_a_label_template_with_a_format_spec_names_what_a_sync_adds(root, tmp_path):
    """`{sha1:.8}` is a field with a format spec, which stays allowed: certutil shows the nickname."""
    source = tmp_path / "root.pem"
    root.write(source)
    db = new_db(tmp_path / "db")
    result = storesync("sync", "--mode", "add", source, f"nss:{db}?label-template=corp {{sha1:.8}}")
    assert result.returncode == 0, result.stderr
    sha1 = run("openssl", "x509", "-noout", "-fingerprint", "-sha1", "-in", source).stdout.decode()
    assert set(certutil_flags(db)) == {f"corp {sha1.split('=')[1].replace(':', '').lower()[:8]}"}


def test_where_a_template_is_applied_a_bad_one_is_a_sentence(root):
    """The engine applies what the store's opening let through; handed one all the same, it says so."""
    from storesync.engine import policy
    from storesync.engine.plan import make_plan
    from storesync.model import Capabilities, Certificate, Entry, TrustSet

    entry = Entry(Certificate(root.der), {"server-auth": "trusted"}, label="Root")
    for template in BAD_TEMPLATES:
        plan = make_plan(TrustSet([entry]), TrustSet(), Capabilities(), store="pem:/x.pem")
        with pytest.raises(StoreError, match=LABEL_FIELDS.replace("{", r"\{").replace("}", r"\}")):
            policy.label_new_entries(plan, template, "pem:/x.pem")


def test_a_reload_keeps_the_previous_config_whatever_loading_the_new_one_raises(root, tmp_path, monkeypatch):
    """SIGHUP's reload: a template the file check refuses, and an exception of any other kind
    (a bug), are each one log line, and the previous config keeps running."""
    from storesync import daemon as service
    from storesync.config import load_config

    source, config = tmp_path / "root.pem", tmp_path / "s.toml"
    root.write(source)
    config.write_text(f'[profile.a]\nmode = "add"\nsource = "pem:{source}"\n'
                      f'targets = [{{ spec = "pem:{tmp_path}/x.pem", label-template = "x {{label}}" }}]\n')
    log = io.StringIO()
    agent = service.Daemon(load_config(config), service.Log(stream=log))
    before = agent.config
    config.write_text(config.read_text().replace("x {label}", "{label.x}"))
    agent.reload()
    assert agent.config is before and list(agent.tracks) == ["a"]
    lines = log.getvalue().splitlines()
    assert len(lines) == 1 and "config reload failed, keeping the previous config" in lines[0]
    assert LABEL_FIELDS in lines[0]

    def broken(path):
        raise RuntimeError("injected fault")

    monkeypatch.setattr(service, "load_config", broken)
    agent.reload()
    lines = log.getvalue().splitlines()
    assert len(lines) == 2 and lines[1].endswith("keeping the previous config: RuntimeError: injected fault")
    assert agent.config is before


# --- 3: a target in a folder that does not exist -------------------------------------------------

@pytest.mark.parametrize("kind", ["pem", "jks", "sst", "reg", "p7b", "p12"])
def test_a_file_target_in_a_missing_folder_is_refused_before_anything_is_written(kind, root, tmp_path, monkeypatch):
    source, written = tmp_path / "root.pem", tmp_path / "ok.pem"
    root.write(source)
    monkeypatch.chdir(tmp_path)
    result = storesync("sync", "--mode", "add", source, f"pem:{written}", f"{kind}:new dir/x.{kind}")
    one_sentence(result, f"{kind} store new dir/x.{kind}: the folder new dir does not exist; "
                         "create it (mkdir -p 'new dir') or correct the path")
    assert not written.exists() and not (tmp_path / "new dir").exists()
    (tmp_path / "new dir").mkdir()  # as told: then it is made
    assert storesync("sync", "--mode", "add", source, f"pem:new dir/x.pem").returncode == 0
    assert openssl_subjects(tmp_path / "new dir" / "x.pem") == ["storesync Test Root"]


# --- 4, 5, 7: the command line -------------------------------------------------------------------

def test_metrics_with_once_is_refused(tmp_path):
    one_sentence(storesync("daemon", "--once", "--metrics", "nope"), "--metrics and --once do not go together")


@pytest.mark.parametrize("argv", [["rollback", "--to"], ["sync", "--purpose"], ["list", "x", "--state-dir"],
                                  ["check", "c", "--store"], ["--state-dir", "/tmp", "daemon", "--config"]])
def test_an_option_without_its_argument_points_to_its_commands_help(argv):
    command = next(w for w in argv if w in ("rollback", "sync", "list", "check", "daemon"))
    one_sentence(storesync(*argv), f"option '{argv[-1]}' requires an argument; see `storesync {command} --help`")


def test_sync_help_says_purpose_takes_an_eku_oid():
    help_text = " ".join(storesync("sync", "--help").stdout.replace("│", " ").split())
    assert "or an EKU OID in dotted form" in help_text


# --- 6, 8: commands printed to be run --------------------------------------------------------------

def test_the_daemons_held_back_hint_runs_as_printed(pki, root, tmp_path):
    """With the daemon's --config (a folder with a space in it) and --state-dir, from another
    folder and without $STORESYNC_STATE_DIR; and `sync --profile` without a config says to name one."""
    folder = tmp_path / "conf dir"
    folder.mkdir()
    source, target, config = tmp_path / "root.pem", tmp_path / "t.pem", folder / "g.toml"
    root.write(source)
    target.write_bytes(root.pem + b"".join(pki.ca(f"Held {n}").pem for n in range(3)))
    config.write_text(f'[profile.g]\nsource = "pem:{source}"\ntargets = ["pem:{target}"]\n')
    env = {k: v for k, v in os.environ.items() if k not in ("STORESYNC_STATE_DIR", "STORESYNC_CONFIG")}
    daemon = subprocess.run([sys.executable, "-m", "storesync", "daemon", "--once", "--config", "g.toml",
                             "--state-dir", tmp_path / "state"], cwd=folder, env=env, capture_output=True, text=True)
    assert daemon.returncode == 3, daemon.stderr
    hint = daemon.stderr.split("`")[1]
    assert hint.startswith("storesync sync --config ") and hint.endswith("--profile g --force")
    assert len(openssl_subjects(target)) == 4
    forced = subprocess.run([sys.executable, "-m", *shlex.split(hint)], cwd="/", env=env, capture_output=True, text=True)
    assert forced.returncode == 0, forced.stderr
    assert openssl_subjects(target) == ["storesync Test Root"]
    assert (tmp_path / "state").is_dir()

    alone = subprocess.run([sys.executable, "-m", "storesync", "sync", "--profile", "g"], cwd="/",
                           env={**env, "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path)},
                           capture_output=True, text=True)
    one_sentence(alone, "no profile 'g': no config file found; pass --config FILE")


def test_the_backup_hint_is_quoted_for_the_shell(root, tmp_path):
    source = tmp_path / "root.pem"
    root.write(source)
    spec = f"pem:{tmp_path}/t.pem?purpose=server-auth&label-template=corp {{sha1}}"
    result = storesync("sync", "--mode", "add", source, spec)
    assert result.returncode == 0, result.stderr
    line = next(l for l in result.stdout.splitlines() if "backup:" in l)
    command = line.partition("(")[2].rstrip(")")
    assert shlex.split(command) == ["storesync", "rollback", spec]
    back = subprocess.run([sys.executable, "-m", *shlex.split(command)], capture_output=True, text=True)
    assert back.returncode == 0 and not (tmp_path / "t.pem").exists(), back.stdout + back.stderr
