"""Issue 18: NSS from the command line, counted rather than timed: what a one-shot read or write
of an NSS database imports and does. Each claim is checked against certutil or libnss3 where the
result could differ (trust read back, passwords)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import need, run, storesync
from test_nss import PASSWORD, certutil_add, certutil_flags, new_db

CIPHERS = "cryptography.hazmat.primitives.ciphers"


def fresh_process(code: str) -> str:
    """Run `code` in a new interpreter (nothing imported yet) and return what it prints."""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def imported_after(code: str, *modules: str) -> list[str]:
    out = fresh_process(f"import sys\n{code}\nprint(' '.join(m for m in {modules!r} if m in sys.modules))")
    return out.split()


# --- the password check --------------------------------------------------------------------


def test_aes_cbc_decrypt_agrees_with_cryptography():
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    from storesync import pbe

    for key_length in (16, 24, 32):
        for size in (16, 48):
            key, iv, data = os.urandom(key_length), os.urandom(16), os.urandom(size)
            decryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
            assert pbe.aes_cbc_decrypt(key, iv, data) == decryptor.update(data) + decryptor.finalize()


def test_reading_signed_trust_imports_no_cipher(tmp_path, pki):
    """The empty password is proved by a trust MAC that verifies under its key: no AES."""
    db = new_db(tmp_path / "db")
    certutil_add(db, "A", "CT,C,C", pki.ca("Speed Root A").write(tmp_path / "a.pem"))
    code = f"from storesync.stores import open_store\nprint(len(open_store('nss:{db}').read()))"
    assert fresh_process(code + f"\nimport sys\nprint({CIPHERS!r} in sys.modules)").split() == ["1", "False"]


def test_writing_a_fresh_database_imports_no_cipher(tmp_path, pki):
    """A fresh database has no MAC yet: the password-check entry decides, decrypted by libcrypto."""
    db = new_db(tmp_path / "db")
    pem = pki.ca("Speed Root B").write(tmp_path / "b.pem")
    code = ("from storesync.engine.plan import make_plan\nfrom storesync.stores import open_store\n"
            f"source, store = open_store('pem:{pem}').read(), open_store('nss:{db}')\n"
            "store.write(make_plan(source, store.read(), store.capabilities, store='t', purpose='any'))")
    assert imported_after(code, CIPHERS) == []
    assert certutil_flags(db) == {"Speed Root B": "CT,C,C"}


def test_a_password_database_with_trust_is_still_refused_without_its_password(tmp_path, pki):
    """The empty password's MAC key does not verify MACs made under a real password: refused as before."""
    db = new_db(tmp_path / "db", PASSWORD)
    pw = tmp_path / "db.pw"
    certutil_add(db, "A", "CT,C,C", pki.ca("Speed Root C").write(tmp_path / "c.pem"), "-f", pw)
    refused = storesync("list", f"nss:{db}")
    assert refused.returncode == 2 and "password-protected" in refused.stderr
    wrong = tmp_path / "wrong.pw"
    wrong.write_text("not it\n")
    assert "wrong" in storesync("list", f"nss:{db}?password-file={wrong}").stderr
    listed = storesync("list", f"nss:{db}?password-file={pw}", "--json")
    assert listed.returncode == 0 and "Speed Root C" in listed.stdout
