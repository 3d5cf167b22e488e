"""A store's `on-change` hook (issue 16, item 4): run once after a run changed the store, never on
a no-op or a dry run; a failing hook leaves the write standing and makes the run exit 2."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from conftest import need, run, storesync


@pytest.fixture
def env(tmp_path) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if k != "STORESYNC_CONFIG"}
    return {**environ, "STORESYNC_STATE_DIR": str(tmp_path / "state")}


def marker_hook(tmp_path: Path, exit_code: int = 0) -> Path:
    """A hook that notes each run (and the store it was told) in a marker file."""
    hook = tmp_path / "hook.sh"
    hook.write_text(f'#!/bin/sh\necho "$STORESYNC_STORE" >> {tmp_path / "marker"}\necho hello from the hook\nexit {exit_code}\n')
    hook.chmod(0o755)
    return hook


def config(tmp_path: Path, source: Path, target: str, hook: list[str] | None, extra: str = "") -> Path:
    path = tmp_path / "storesync.toml"
    options = f", on-change = {json.dumps(hook)}" if hook is not None else ""
    path.write_text(f'[profile.p]\nmode = "add"\nsource = "pem:{source}"\n'
                    f'targets = [{{ spec = "{target}"{options}{extra} }}]\n')
    return path


def runs(tmp_path: Path) -> list[str]:
    marker = tmp_path / "marker"
    return marker.read_text().splitlines() if marker.exists() else []


def test_hook_runs_once_only_when_the_store_changed(tmp_path, env, pki):
    source = tmp_path / "source.pem"
    source.write_bytes(pki.ca("Hook Root A").pem)
    target = tmp_path / "target.pem"
    cfg = config(tmp_path, source, f"pem:{target}", [str(marker_hook(tmp_path))])

    dry = storesync("sync", "--config", cfg, "--dry-run", env=env)
    assert dry.returncode == 1 and runs(tmp_path) == []  # a dry run changes nothing, runs nothing

    first = storesync("sync", "--config", cfg, env=env)
    assert first.returncode == 0, first.stderr
    assert runs(tmp_path) == [f"pem:{target}"]
    assert f"  on-change: {tmp_path / 'hook.sh'}: exit 0" in first.stdout

    again = storesync("sync", "--config", cfg, env=env)
    assert again.returncode == 0 and "on-change" not in again.stdout
    assert runs(tmp_path) == [f"pem:{target}"]  # a no-op runs no hook

    source.write_bytes(source.read_bytes() + pki.ca("Hook Root B").pem)
    data = json.loads(storesync("sync", "--config", cfg, "--json", env=env).stdout)[0]
    assert runs(tmp_path) == [f"pem:{target}"] * 2
    assert data["exit_code"] == 0
    [hook] = data["hooks"]
    assert hook["exit_code"] == 0 and hook["ok"] and hook["output"] == "hello from the hook\n"
    assert data["plans"][1]["hook"] == hook


def test_failing_hook_exits_2_and_the_nss_store_stays_written(tmp_path, env, pki):
    need("certutil")
    db = tmp_path / "nssdb"
    db.mkdir()
    run("certutil", "-N", "-d", f"sql:{db}", "--empty-password")
    source = tmp_path / "source.pem"
    source.write_bytes(pki.ca("Hooked NSS Root").pem)
    cfg = config(tmp_path, source, f"nss:{db}", [str(marker_hook(tmp_path, exit_code=3))])

    result = storesync("sync", "--config", cfg, env=env)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    [sentence] = [line for line in result.stderr.splitlines() if "on-change" in line]
    assert f"nss:{db}" in sentence and str(tmp_path / "hook.sh") in sentence and "exit 3" in sentence
    assert "written" in sentence
    assert "Hooked NSS Root" in run("certutil", "-L", "-d", f"sql:{db}").stdout.decode()  # the write stands
    assert runs(tmp_path) == [f"nss:{db}"]
    assert "    | hello from the hook" in result.stdout  # a failed hook's output is shown


def test_a_failed_hook_runs_again_at_the_next_run_until_it_succeeds(tmp_path, env, pki):
    """The reload a failed hook was to do has not happened: a no-op used to leave it so for good."""
    source = tmp_path / "source.pem"
    source.write_bytes(pki.ca("Retried Hook Root").pem)
    target = tmp_path / "target.pem"
    hook = marker_hook(tmp_path, exit_code=3)
    cfg = config(tmp_path, source, f"pem:{target}", [str(hook)])
    assert storesync("sync", "--config", cfg, env=env).returncode == 2
    assert storesync("sync", "--config", cfg, "--dry-run", env=env).returncode == 0  # a dry run runs nothing
    again = storesync("sync", "--config", cfg, env=env)
    assert again.returncode == 2 and "failed again (exit 3" in again.stderr and "next run runs it again" in again.stderr
    assert runs(tmp_path) == [f"pem:{target}"] * 2
    hook.write_text(hook.read_text().replace("exit 3", "exit 0"))  # the administrator fixes it
    fixed = json.loads(storesync("sync", "--config", cfg, "--json", env=env).stdout)[0]
    assert fixed["exit_code"] == 0 and fixed["hooks"][0]["retry"] is True and fixed["hooks"][0]["ok"]
    assert storesync("sync", "--config", cfg, env=env).stdout.count("on-change") == 0  # done: not run again
    assert runs(tmp_path) == [f"pem:{target}"] * 3


def test_hook_not_found_exits_2_with_the_pem_written(tmp_path, env, pki):
    need("openssl")
    source = tmp_path / "source.pem"
    source.write_bytes(pki.ca("Missing Hook Root").pem)
    target = tmp_path / "target.pem"
    cfg = config(tmp_path, source, f"pem:{target}", [str(tmp_path / "no-such-hook"), "arg"])
    result = storesync("sync", "--config", cfg, "--json", env=env)
    assert result.returncode == 2
    data = json.loads(result.stdout)[0]
    assert data["hooks"][0]["error"].startswith("command not found") and data["exit_code"] == 2
    subject = run("openssl", "x509", "-in", target, "-noout", "-subject").stdout.decode()
    assert "Missing Hook Root" in subject
    text = storesync("sync", "--config", cfg, env=env)  # in sync, but the hook has still not run
    assert text.returncode == 2 and "failed again (not run: command not found" in text.stderr


def test_hook_timeout_kills_it_and_its_children(tmp_path, env, pki):
    source = tmp_path / "source.pem"
    source.write_bytes(pki.ca("Slow Hook Root").pem)
    target = tmp_path / "target.pem"
    child = tmp_path / "child-lived"
    hook = ["sh", "-c", f"(sleep 3; touch {child}) & sleep 30"]
    cfg = config(tmp_path, source, f"pem:{target}", hook, extra=", on-change-timeout = 1")
    start = time.monotonic()
    result = storesync("sync", "--config", cfg, env=env)
    assert time.monotonic() - start < 15
    assert result.returncode == 2
    assert "timed out after 1 s" in result.stderr and f"pem:{target}" in result.stderr
    assert target.exists()
    time.sleep(3.5)
    assert not child.exists()  # the hook's own children went with it


def test_hook_timeout_kills_a_child_that_left_its_session(tmp_path, env, pki):
    """`setsid` takes a child out of the hook's process group, which the kill used to reach alone."""
    source = tmp_path / "source.pem"
    source.write_bytes(pki.ca("Setsid Hook Root").pem)
    pidfile = tmp_path / "escaper.pid"
    hook = ["sh", "-c", f"setsid sleep 300 & echo $! > {pidfile}; sleep 30"]
    cfg = config(tmp_path, source, f"pem:{tmp_path / 'target.pem'}", hook, extra=", on-change-timeout = 1")
    result = storesync("sync", "--config", cfg, env=env)
    assert result.returncode == 2 and "timed out after 1 s" in result.stderr
    pid = int(pidfile.read_text())
    for _ in range(50):  # killed, then reaped by init
        if not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split(")")[-1][:3]:
            break
        time.sleep(0.1)
    else:
        os.kill(pid, 9)
        raise AssertionError("the setsid child outlived the hook's time-out")


def test_hook_output_is_bounded(tmp_path, env, pki):
    from storesync.hooks import OUTPUT_KEPT

    source = tmp_path / "source.pem"
    source.write_bytes(pki.ca("Chatty Hook Root").pem)
    hook = ["sh", "-c", "head -c 200000 /dev/zero | tr '\\0' x; echo; echo the end"]
    cfg = config(tmp_path, source, f"pem:{tmp_path / 'target.pem'}", hook)
    data = json.loads(storesync("sync", "--config", cfg, "--json", env=env).stdout)[0]
    output = data["hooks"][0]["output"]
    assert len(output) <= OUTPUT_KEPT and output.endswith("the end\n")


@pytest.mark.parametrize("value, why", [
    ('"systemctl reload nginx"', "list of words"),
    ("[]", "list of words"),
    ('["systemctl", ""]', "list of words"),
])
def test_on_change_must_be_an_argv_list(tmp_path, env, value, why):
    cfg = tmp_path / "storesync.toml"
    cfg.write_text(f'[profile.p]\nsource = "pem:{tmp_path}/a.pem"\n'
                   f'targets = [{{ spec = "pem:{tmp_path}/b.pem", on-change = {value} }}]\n')
    result = storesync("sync", "--config", cfg, env=env)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert why in result.stderr and "on-change" in result.stderr and str(cfg) in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_on_change_timeout_must_be_positive(tmp_path, env):
    cfg = tmp_path / "storesync.toml"
    cfg.write_text(f'[profile.p]\nsource = "pem:{tmp_path}/a.pem"\n'
                   f'targets = [{{ spec = "pem:{tmp_path}/b.pem", on-change = ["true"], on-change-timeout = 0 }}]\n')
    result = storesync("sync", "--config", cfg, env=env)
    assert result.returncode == 2 and "on-change-timeout" in result.stderr


def test_daemon_status_file_keeps_the_hooks_of_the_last_write(tmp_path, env, pki):
    source = tmp_path / "source.pem"
    source.write_bytes(pki.ca("Daemon Hook Root").pem)
    cfg = config(tmp_path, source, f"pem:{tmp_path / 'target.pem'}", ["sh", "-c", "echo failing; exit 4"])
    result = storesync("daemon", "--once", "--config", cfg, env=env)
    assert result.returncode == 2
    status = json.loads((tmp_path / "state" / "status.json").read_text())["profiles"]["p"]
    assert status["hooks"][0]["exit_code"] == 4 and status["hooks"][0]["output"] == "failing\n"
    assert "on-change hook" in status["error"]
    text = storesync("status", "--config", cfg, env=env).stdout
    # quoted as `sync` prints it: `sh -c echo failing; exit 4` would read as another command
    assert "on-change sh -c 'echo failing; exit 4' for pem:" in text and "FAILED (exit 4)" in text


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs a hook as another user")
def test_root_runs_a_users_hook_as_that_user(tmp_path, env, pki):
    import pwd

    nobody = pwd.getpwnam("nobody")
    home = tmp_path / "home"
    home.mkdir()
    os.chown(home, nobody.pw_uid, nobody.pw_gid)
    target = home / "bundle.pem"
    target.write_bytes(pki.ca("Users Own Root").pem)
    os.chown(target, nobody.pw_uid, nobody.pw_gid)
    source = tmp_path / "source.pem"
    source.write_bytes(pki.ca("Corp Root For User").pem)
    cfg = config(tmp_path, source, f"pem:{target}", ["sh", "-c", 'id -u; echo "$HOME"'])
    data = json.loads(storesync("sync", "--config", cfg, "--json", env=env).stdout)[0]
    hook = data["hooks"][0]
    assert hook["output"].split() == [str(nobody.pw_uid), nobody.pw_dir] and hook["user"] == "nobody"


def test_merge_runs_the_hook_of_the_changed_store_only(tmp_path, env, pki):
    a, b = tmp_path / "a.pem", tmp_path / "b.pem"
    root = pki.ca("Merge Hook Root").pem
    a.write_bytes(root)
    b.write_bytes(root)
    cfg = tmp_path / "storesync.toml"
    cfg.write_text('[profile.m]\nmode = "merge"\nstores = [\n'
                   f'  {{ spec = "pem:{a}", on-change = ["sh", "-c", "echo a >> {tmp_path}/marker"] }},\n'
                   f'  {{ spec = "pem:{b}", on-change = ["sh", "-c", "echo b >> {tmp_path}/marker"] }},\n]\n')
    assert storesync("sync", "--config", cfg, env=env).returncode == 0
    assert runs(tmp_path) == []  # agreed already: nothing written, nothing run
    a.write_bytes(root + pki.ca("Merge Hook New").pem)
    result = storesync("sync", "--config", cfg, env=env)
    assert result.returncode == 0 and runs(tmp_path) == ["b"]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to mount a small tmpfs")
def test_no_hook_and_no_record_after_a_rolled_back_run(tmp_path, env, pki):
    """The second target sits on a full file system: the first is written, then put back; its
    hook does not run and storesync keeps no record of having written it."""
    full = tmp_path / "full"
    full.mkdir()
    run("mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", full)
    try:
        second = full / "second.pem"
        second.write_bytes(pki.ca("Full Disk Root").pem)
        try:
            (full / "filler").write_bytes(b"\0" * 65536)
        except OSError:
            pass  # full now
        source = tmp_path / "source.pem"
        source.write_bytes(pki.ca("Rolled Back Hook Root").pem)
        first = tmp_path / "first.pem"
        first.write_bytes(pki.ca("First Was Here").pem)
        before = first.read_bytes()
        hook = str(marker_hook(tmp_path))
        cfg = tmp_path / "storesync.toml"
        cfg.write_text(f'[profile.p]\nmode = "add"\nsource = "pem:{source}"\ntargets = [\n'
                       f'  {{ spec = "pem:{first}", on-change = ["{hook}"] }},\n'
                       f'  {{ spec = "pem:{second}", on-change = ["{hook}"] }},\n]\n')
        result = storesync("sync", "--config", cfg, env=env)
        assert result.returncode == 2 and "put back" in result.stderr
        assert first.read_bytes() == before
        assert runs(tmp_path) == [] and "on-change" not in result.stdout
        assert list((tmp_path / "state").glob("owned/*.json")) == []  # the record went back too
    finally:
        run("umount", full)


def test_hooks_run_after_every_profile_of_the_run_wrote(tmp_path, env, pki):
    """`storesync sync` runs two profiles: the first one's hook runs after the second one wrote too."""
    source = tmp_path / "source.pem"
    source.write_bytes(pki.ca("Two Profiles Root").pem)
    a, b = tmp_path / "a.pem", tmp_path / "b.pem"
    hook = ["sh", "-c", f"if [ -f {b} ]; then echo after; else echo before; fi >> {tmp_path}/marker"]
    cfg = tmp_path / "storesync.toml"
    cfg.write_text(f'[profile.a]\nmode = "add"\nsource = "pem:{source}"\n'
                   f'targets = [{{ spec = "pem:{a}", on-change = {json.dumps(hook)} }}]\n'
                   f'[profile.b]\nmode = "add"\nsource = "pem:{source}"\ntargets = ["pem:{b}"]\n')
    result = storesync("sync", "--config", cfg, env=env)
    assert result.returncode == 0, result.stderr
    assert runs(tmp_path) == ["after"]
