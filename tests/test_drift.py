"""Ownership and drift (issue 16, item 5): the state dir keeps what storesync last wrote in each
store; `status` reports what other hands changed since (edits made with the stores' own tools),
and `sync --mode add` puts back what storesync added and someone removed, and nothing else."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import need, run, storesync


@pytest.fixture
def env(tmp_path) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if k != "STORESYNC_CONFIG"}
    return {**environ, "STORESYNC_STATE_DIR": str(tmp_path / "state")}


def add_profile(tmp_path: Path, source: Path, target: str) -> Path:
    cfg = tmp_path / "storesync.toml"
    cfg.write_text(f'[profile.corp]\nmode = "add"\nsource = "pem:{source}"\ntargets = ["{target}"]\n')
    return cfg


def drift_of(cfg: Path, target: str, env) -> dict | None:
    result = storesync("status", "--json", "--config", cfg, env=env)
    assert result.returncode == 0, result.stderr
    [store] = [s for s in json.loads(result.stdout)["stores"] if s["store"] == target]
    assert store["error"] is None
    return store["drift"]


def labels(items: list[dict]) -> list[str]:
    return sorted(item["label"] for item in items)


def nss_list(db: Path) -> str:
    return run("certutil", "-L", "-d", f"sql:{db}").stdout.decode()


def test_nss_hand_edits_show_as_drift_and_add_puts_back_only_what_storesync_wrote(tmp_path, env, pki):
    need("certutil")
    db = tmp_path / "nssdb"
    db.mkdir()
    run("certutil", "-N", "-d", f"sql:{db}", "--empty-password")
    theirs, later = tmp_path / "theirs.pem", tmp_path / "later.pem"
    theirs.write_bytes(pki.ca("Their Own Root").pem)
    later.write_bytes(pki.ca("Added Later By Hand").pem)
    # Their Own Root comes from another storesync (another state dir: another user's, say)
    other = {**env, "STORESYNC_STATE_DIR": str(tmp_path / "other-state")}
    assert storesync("sync", "--mode", "add", f"pem:{theirs}", f"nss:{db}", env=other).returncode == 0
    source = tmp_path / "corp.pem"
    source.write_bytes(pki.ca("Corp Root One").pem + pki.ca("Corp Root Two").pem)
    target = f"nss:{db}"
    cfg = add_profile(tmp_path, source, target)

    assert drift_of(cfg, target, env) is None  # storesync never wrote it
    assert storesync("sync", "--config", cfg, env=env).returncode == 0
    clean = drift_of(cfg, target, env)
    assert clean["added"] == clean["removed"] == clean["trust_changed"] == []  # Their Own Root was there before

    run("certutil", "-D", "-d", f"sql:{db}", "-n", "Corp Root One")
    run("certutil", "-M", "-d", f"sql:{db}", "-n", "Corp Root Two", "-t", "p,,")  # distrusted by hand
    run("certutil", "-A", "-d", f"sql:{db}", "-n", "Added Later By Hand", "-t", "C,,", "-i", later)
    run("certutil", "-M", "-d", f"sql:{db}", "-n", "Their Own Root", "-t", ",,")  # not storesync's
    drift = drift_of(cfg, target, env)
    assert labels(drift["removed"]) == ["Corp Root One"]
    assert labels(drift["added"]) == ["Added Later By Hand"]
    assert labels(drift["trust_changed"]) == ["Corp Root Two"]
    [changed] = drift["trust_changed"]
    assert changed["before"]["server-auth"] == "trusted" and changed["after"]["server-auth"] == "distrusted"
    text = storesync("status", "--config", cfg, env=env).stdout
    assert "Changed by others since storesync's last write" in text
    assert "- Corp Root One" in text and "+ Added Later By Hand" in text and "~ Corp Root Two" in text

    dry = storesync("sync", "--config", cfg, "--dry-run", env=env)
    assert "re-added (removed since storesync's last write)" in dry.stdout and "Corp Root One" in dry.stdout
    again = storesync("sync", "--config", cfg, "--json", env=env)
    assert again.returncode == 0, again.stderr
    [plan] = [p for p in json.loads(again.stdout)[0]["plans"] if p["store"] == target]
    assert [a["label"] for a in plan["adds"]] == ["Corp Root One"] and plan["removals"] == []
    assert plan["readded"] == [plan["adds"][0]["sha256"]]
    rewritten = {c["label"] for c in plan["changes"] if c.get("why")}
    listed = nss_list(db)
    for name in ("Corp Root One", "Corp Root Two", "Their Own Root", "Added Later By Hand"):
        assert name in listed  # nothing outside what storesync wrote was removed
    trust = {line.rsplit(None, 1)[0].strip(): line.rsplit(None, 1)[1] for line in listed.splitlines()[4:] if line.strip()}
    assert trust["Corp Root Two"].startswith("p")  # the hand distrust wins over an add
    after = drift_of(cfg, target, env)
    assert after["removed"] == [] and after["added"] == []  # the new write is the new reference
    # certutil -M changes only NSS's legacy trust class, so the sync wrote both entries again with
    # their effective trust (docs/formats.md §3.3): Corp Root Two stays storesync's (now as
    # distrusted, the hand's word); Their Own Root, another storesync's, does not become ours.
    assert rewritten == {"Corp Root Two", "Their Own Root"}
    assert "Their Own Root" not in labels(after["trust_changed"])
    record = json.loads(next((tmp_path / "state" / "owned").glob("*.json")).read_text())
    assert sorted(e["label"] for e in record["entries"].values()) == ["Corp Root One", "Corp Root Two"]


def test_shell_edit_of_a_pem_bundle(tmp_path, env, pki):
    need("openssl")
    source = tmp_path / "corp.pem"
    one, two = pki.ca("Bundle Root One"), pki.ca("Bundle Root Two")
    source.write_bytes(one.pem + two.pem)
    bundle = tmp_path / "bundle.pem"
    other = pki.ca("Other Bundle Root")
    bundle.write_bytes(other.pem)
    target = f"pem:{bundle}"
    cfg = add_profile(tmp_path, source, target)
    assert storesync("sync", "--config", cfg, env=env).returncode == 0
    # By hand: Bundle Root One cut out with the shell, a new root appended.
    text = bundle.read_text()
    start = text.index(one.pem.decode().splitlines()[1])
    begin = text.rindex("-----BEGIN", 0, start)
    end = text.index("-----END CERTIFICATE-----", start) + len("-----END CERTIFICATE-----\n")
    hand = pki.ca("Appended By Shell")
    bundle.write_text(text[:begin] + text[end:] + hand.pem.decode())
    run("openssl", "storeutl", "-noout", "-certs", bundle)  # still a good bundle for openssl
    drift = drift_of(cfg, target, env)
    assert labels(drift["removed"]) == ["Bundle Root One"]
    assert labels(drift["added"]) == ["Appended By Shell"]
    assert drift["trust_changed"] == []

    result = storesync("sync", "--config", cfg, env=env)
    assert "+ Bundle Root One" in result.stdout and "re-added (removed since storesync's last write)" in result.stdout
    certs = run("openssl", "storeutl", "-noout", "-text", "-certs", bundle).stdout.decode()
    for name in ("Bundle Root One", "Bundle Root Two", "Other Bundle Root", "Appended By Shell"):
        assert f"CN = {name}" in certs or f"CN={name}" in certs


def test_keytool_delete_shows_as_removed(tmp_path, env, pki):
    need("keytool")
    source = tmp_path / "corp.pem"
    source.write_bytes(pki.ca("Java Corp Root").pem + pki.ca("Java Corp Root Two").pem)
    keystore = tmp_path / "cacerts"
    target = f"jks:{keystore}"
    cfg = add_profile(tmp_path, source, target)
    assert storesync("sync", "--config", cfg, env=env).returncode == 0
    listing = run("keytool", "-list", "-keystore", keystore, "-storepass", "changeit").stdout.decode()
    alias = next(line.split(",")[0] for line in listing.splitlines() if "trustedCertEntry" in line and "two" not in line.lower())
    run("keytool", "-delete", "-alias", alias, "-keystore", keystore, "-storepass", "changeit")
    drift = drift_of(cfg, target, env)
    assert [l.lower() for l in labels(drift["removed"])] == ["java corp root"] and drift["added"] == drift["trust_changed"] == []
    result = storesync("sync", "--config", cfg, env=env)
    assert "re-added" in result.stdout
    listing = run("keytool", "-list", "-keystore", keystore, "-storepass", "changeit").stdout.decode()
    assert listing.count("trustedCertEntry") == 2


def test_storesync_removals_are_not_drift(tmp_path, env, pki):
    """A mirror that drops a root storesync wrote: storesync's own removal, not someone else's."""
    source = tmp_path / "corp.pem"
    keep, drop = pki.ca("Mirror Keep"), pki.ca("Mirror Drop")
    source.write_bytes(keep.pem + drop.pem)
    target = f"pem:{tmp_path / 'out.pem'}"
    cfg = tmp_path / "storesync.toml"
    cfg.write_text(f'[profile.m]\nsource = "pem:{source}"\ntargets = ["{target}"]\nmax_removal_share = 1.0\n')
    assert storesync("sync", "--config", cfg, env=env).returncode == 0
    source.write_bytes(keep.pem)
    assert storesync("sync", "--config", cfg, env=env).returncode == 0
    drift = drift_of(cfg, target, env)
    assert drift["removed"] == drift["added"] == drift["trust_changed"] == []


def test_drift_function_for_other_code(tmp_path, env, pki, monkeypatch):
    """storesync.status.drift(spec): what a metrics exporter calls."""
    from storesync import state
    from storesync import status as machine

    monkeypatch.setenv("STORESYNC_STATE_DIR", env["STORESYNC_STATE_DIR"])
    state.set_state_dir(None)
    source = tmp_path / "corp.pem"
    source.write_bytes(pki.ca("Function Root").pem)
    bundle = tmp_path / "out.pem"
    bundle.write_bytes(pki.ca("Was Here First").pem)
    assert machine.drift(f"pem:{bundle}") is None  # storesync never wrote it
    cfg = add_profile(tmp_path, source, f"pem:{bundle}")
    assert storesync("sync", "--config", cfg, env=env).returncode == 0
    assert machine.drift(f"pem:{bundle}")["removed"] == []
    bundle.write_text("")
    assert labels(machine.drift(str(bundle))["removed"]) == ["Function Root"]  # a bare path is the same store


def test_rollback_is_not_drift(tmp_path, env, pki):
    need("openssl")
    source = tmp_path / "corp.pem"
    source.write_bytes(pki.ca("Rolled Back Root").pem)
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(pki.ca("Before Any Sync").pem)
    target = f"pem:{bundle}"
    cfg = add_profile(tmp_path, source, target)
    assert storesync("sync", "--config", cfg, env=env).returncode == 0
    assert storesync("rollback", target, env=env).returncode == 0
    assert "Rolled Back Root" not in run("openssl", "storeutl", "-noout", "-text", "-certs", bundle).stdout.decode()
    drift = drift_of(cfg, target, env)
    assert drift["removed"] == drift["added"] == drift["trust_changed"] == []
    again = storesync("sync", "--config", cfg, env=env)
    assert "+ Rolled Back Root" in again.stdout and "re-added" not in again.stdout


def test_status_lists_a_store_a_sync_named_and_shows_its_drift(tmp_path, env, pki):
    """No config names it and discovery does not find it: storesync wrote it, so status lists it."""
    source = tmp_path / "corp.pem"
    source.write_bytes(pki.ca("Named Root").pem)
    bundle = tmp_path / "named.pem"
    assert storesync("sync", "--mode", "add", f"pem:{source}", f"pem:{bundle}", env=env).returncode == 0
    gone = tmp_path / "gone.pem"
    assert storesync("sync", "--mode", "add", f"pem:{source}", f"pem:{gone}", env=env).returncode == 0
    gone.unlink()  # deleted on purpose: not listed for ever
    bundle.write_text("")
    data = json.loads(storesync("status", "--json", env=env).stdout)
    mine = [s for s in data["stores"] if str(tmp_path) in s["store"]]
    assert [(s["store"], s["found_as"]) for s in mine] == [(f"pem:{bundle}", "written by storesync")]
    assert labels(mine[0]["drift"]["removed"]) == ["Named Root"]
    text = storesync("status", env=env).stdout
    assert "written by storesync" in text and "- Named Root" in text
