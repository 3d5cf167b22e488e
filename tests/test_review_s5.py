"""Issue 18 review: defects found in the speed work, each shown against the program that owns
the format (libnss3, certutil, ...) where there is one."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from conftest import storesync
from test_selectors import corp, machine  # noqa: F401 - fixtures
from test_nss import CERTDB_TRUSTED_CA, PASSWORD, certutil_add, certutil_flags, new_db, nss_trust_after_login, read
from storesync.stores import nss


def _forge_under_empty_password(db, obj) -> None:
    """Sign every trust attribute of `obj` with the empty password's MAC key, as anyone can."""
    conn = sqlite3.connect(db / "key4.db")
    salt, check = conn.execute("SELECT item1, item2 FROM metaData WHERE id = 'password'").fetchone()
    keys = nss.KeyDB(salt, check)
    keys.password = b""
    sign = keys.signer()
    for trust, signed in ((obj.legacy, nss.LEGACY_SIGNED), (obj.p11, nss.P11_SIGNED)):
        if trust is None:
            continue  # certutil (NSS 3.87) writes only the legacy class
        values = {a: trust.raw[a] for a in signed if trust.raw.get(a) is not None}
        conn.executemany("UPDATE metaData SET item1 = ? WHERE id = ?",
                         [(signature, row) for row, signature in sign(trust.id, values, values)])
    conn.commit()
    conn.close()


def test_a_mac_under_the_empty_password_does_not_unlock_a_password_database(tmp_path, pki):
    """The empty password's MAC key is anyone's: a trust MAC that verifies under it must not
    prove the empty password of a database whose password-check entry says otherwise. NSS
    logs in by the check entry and then honours the genuine MACs, not the forged ones."""
    db = new_db(tmp_path / "db", PASSWORD)
    pw = tmp_path / "db.pw"
    for name in ("A", "B"):
        certutil_add(db, name, "CT,C,C", pki.ca(f"Review Root {name}").write(tmp_path / f"{name}.pem"), "-f", pw)
    _, store = read(f"nss:{db}?password-file={pw}")
    first, other = store.objects  # the first holds the attribute a login would take as proof
    _forge_under_empty_password(db, first)

    trusted_by_nss = {o.label for o in (first, other)
                      if nss_trust_after_login(db, o.label, PASSWORD)[0] & CERTDB_TRUSTED_CA}
    assert trusted_by_nss == {other.label}  # libnss3: the forged trust is dropped, the genuine one holds
    trust_set, _ = read(f"nss:{db}?password-file={pw}")
    assert {e.label for e in trust_set.values() if e.trust.get("server-auth") == "trusted"} == trusted_by_nss
    # without its password the database's trust cannot be checked: refused, not read as forged
    refused = storesync("list", f"nss:{db}")
    assert refused.returncode == 2 and "password-protected" in refused.stderr, refused.stdout


def test_label_template_is_an_option_of_every_store_in_a_spec_too(tmp_path, pki):
    """`label-template` is a store option "for any store" (README): given in a spec string it
    names what a sync adds, as it did before unknown options became an error."""
    source = tmp_path / "roots.pem"
    source.write_bytes(pki.ca("Template Root").pem)
    db = new_db(tmp_path / "db")
    result = storesync("sync", f"pem:{source}", f"nss:{db}?label-template=corp {{label}}")
    assert result.returncode == 0, result.stderr
    assert set(certutil_flags(db)) == {"corp Template Root"}


def test_an_undo_finds_its_backup_when_later_dated_backups_fill_the_quota(pki, tmp_path):
    """An undo reads the backup file the run kept (not a copy in memory): that file must not be
    the one dropped for BACKUPS_KEPT, as it was when the store's older backups bore later dates
    (a clock set back since), so the write stood unreverted and `rollback` had nothing either."""
    import base64
    import json
    import os

    import pytest

    from conftest import run
    from storesync import state

    if os.geteuid() != 0:
        pytest.fail("this test needs root to mount a small tmpfs")
    out = tmp_path / "out.pem"
    out.write_bytes(pki.ca("Kept Root").pem)
    before = out.read_bytes()
    key = f"pem:{out.absolute()}"
    folder = Path(state.backup_dir(key))
    folder.mkdir(parents=True, mode=0o700)
    for n in range(state.BACKUPS_KEPT):  # kept while the clock was ahead
        stamp = f"29990101T0000{n:02d}000000Z"
        meta = {"id": stamp, "spec": key, "created": stamp, "reason": "before sync of earlier",
                "files": {str(out.absolute()): {"data": base64.b64encode(before).decode()}}}
        (folder / f"{stamp}.json").write_text(json.dumps(meta))
    full = tmp_path / "full"
    full.mkdir()
    run("mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", full)
    try:
        third = full / "third.pem"
        third.write_bytes(before)
        try:
            (full / "filler").write_bytes(b"\0" * 65536)
        except OSError:
            pass  # the file system is full now
        source = tmp_path / "source.pem"
        source.write_bytes(before + pki.ca("Added Root").pem)
        result = storesync("sync", f"pem:{source}", f"pem:{out}", f"pem:{third}")
        assert result.returncode == 2 and "No space left" in result.stderr
        assert "failed too" not in result.stderr and "put back" in result.stderr, result.stderr
        assert out.read_bytes() == before
    finally:
        run("umount", full)


def test_an_undo_writes_no_file_its_backup_names_outside_the_store(pki, tmp_path, monkeypatch):
    """An undo now reads the store's backup back from the state dir: like `rollback`, it must
    not trust that file blindly. Here the backup kept for the first target is rewritten while
    the second target's write fails; the undo then wrote a file the backup named outside the
    store."""
    import base64
    import errno
    import json

    from storesync import state
    from storesync.config import Profile, StoreRef
    from storesync.engine import run as engine_run
    from storesync.stores.pem import PemStore

    kept, added = pki.ca("Undo Kept Root"), pki.ca("Undo Added Root")
    source, first, second = tmp_path / "source.pem", tmp_path / "first.pem", tmp_path / "second.pem"
    source.write_bytes(kept.pem + added.pem)
    first.write_bytes(kept.pem)
    second.write_bytes(kept.pem)
    victim = tmp_path / "elsewhere" / "victim"
    victim.parent.mkdir()
    real_write = PemStore.write

    def write(self, plan):
        if os.path.basename(self.path) != "second.pem":
            return real_write(self, plan)
        (backup,) = Path(state.backup_dir(f"pem:{first.absolute()}")).glob("*.json")
        meta = json.loads(backup.read_text())
        meta["files"][str(victim)] = {"data": base64.b64encode(b"forged").decode()}
        backup.write_text(json.dumps(meta))
        raise OSError(errno.ENOSPC, "No space left on device", str(self.path))

    monkeypatch.setattr(PemStore, "write", write)
    profile = Profile("undo", "mirror", [StoreRef(f"pem:{source}"), StoreRef(f"pem:{first}"), StoreRef(f"pem:{second}")])
    result = engine_run.run(profile)
    assert result.error and "No space left" in result.error
    assert not victim.exists()
    assert "outside the store" in result.error


def test_a_selectors_options_apply_to_the_stores_of_its_kinds_that_have_them(machine, corp, tmp_path):
    """`@all?password-file=F`: "options after the selector apply to every store it names"
    (README), the Java and NSS stores among them; the bundle and folder stores it names have no
    such option, which is no reason to refuse them. An option no store kind has is still a typo."""
    from test_selectors import certutil_list, colon_fingerprint, keytool_list

    _, _, pem = corp
    password = tmp_path / "java.pass"
    password.write_text("changeit\n")
    result = machine.cli("sync", "--mode", "add", pem, f"@all?password-file={password}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert all(colon_fingerprint(corp[0]) in keytool_list(jdk) for jdk in machine.jdks)
    assert all("Corp Selector Root" in certutil_list(db) for db in machine.nss)
    assert corp[0].pem in machine.certifi.read_bytes()
    typo = machine.cli("sync", "--mode", "add", pem, f"@all?pasword-file={password}")
    assert typo.returncode == 2 and "pasword-file=" in typo.stderr + typo.stdout
