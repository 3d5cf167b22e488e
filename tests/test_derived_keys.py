"""Writing a PKCS#12 with JDK 17 protection derives its MAC key and its encryption key once:
the store checking its own output and the engine reading the file back reuse them (keys are
pure functions of password, salt and iterations); a wrong password still fails."""

from __future__ import annotations

import hashlib
import sys

import pytest

from storesync import pbe
from storesync.model import StoreError
from storesync.stores import open_store, read_store

from conftest import run


def test_a_new_p12_derives_each_key_once_and_keytool_reads_it(pki, tmp_path, monkeypatch):
    from storesync.cli import main

    monkeypatch.setenv("STORESYNC_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setattr(pbe, "_DERIVED", {})
    source, out = tmp_path / "source.pem", tmp_path / "out.p12"
    root = pki.ca("Derived Once Root")
    source.write_bytes(root.pem)
    kdf, pbkdf2 = [], []
    real_kdf, real_pbkdf2 = pbe._pkcs12_kdf, hashlib.pbkdf2_hmac
    monkeypatch.setattr(pbe, "_pkcs12_kdf", lambda *a: (kdf.append(a[4]), real_kdf(*a))[1])
    monkeypatch.setattr(pbe.hashlib, "pbkdf2_hmac", lambda *a: (pbkdf2.append(a[3]), real_pbkdf2(*a))[1])
    monkeypatch.setattr(sys, "argv", ["storesync", "sync", f"pem:{source}", f"p12:{out}"])
    with pytest.raises(SystemExit) as exit:
        main()
    assert exit.value.code in (0, None)
    assert kdf == [pbe.ITERATIONS] and pbkdf2 == [pbe.ITERATIONS]  # the MAC key, the AES key
    listed = run("keytool", "-list", "-keystore", out, "-storetype", "PKCS12", "-storepass", "changeit").stdout
    assert root.cert.fingerprint(hashes()).hex(":").upper() in listed.decode()
    wrong = tmp_path / "wrong"
    wrong.write_text("not-changeit\n")
    with pytest.raises(StoreError, match="MAC check failed"):
        read_store(open_store(f"p12:{out}?password-file={wrong}"))


def hashes():
    from cryptography.hazmat.primitives import hashes as h

    return h.SHA256()
