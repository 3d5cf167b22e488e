"""`anchors:DIR`, a distribution's folder of local anchors, against the program that reads it:
Debian's own `update-ca-certificates`, re-based into temporary folders (its options allow it),
builds a bundle that OpenSSL and Python's ssl then trust the root through."""

from __future__ import annotations

import ssl
from pathlib import Path

from conftest import need, run, storesync
from storesync.stores import open_store

SYSTEM_CERTS = Path("/usr/share/ca-certificates")


def rebuild(tmp: Path, local: Path) -> Path:
    """Debian's update-ca-certificates on `local` and one system root, writing only under `tmp`."""
    tool = need("update-ca-certificates")
    conf, etc, hooks = tmp / "ca-certificates.conf", tmp / "etc-ssl-certs", tmp / "hooks"
    etc.mkdir(exist_ok=True)
    hooks.mkdir(exist_ok=True)  # none: Debian's Java hook would write /etc/ssl/certs/java
    system_root = next(p for p in sorted(SYSTEM_CERTS.rglob("*.crt")))
    conf.write_text(str(system_root.relative_to(SYSTEM_CERTS)) + "\n")
    run(tool, "--fresh", "--certsconf", conf, "--certsdir", SYSTEM_CERTS, "--localcertsdir", local,
        "--etccertsdir", etc, "--hooksdir", hooks)
    return etc / "ca-certificates.crt"


def corp_setup(tmp_path: Path, pki, name: str) -> tuple:
    """A root (written as the sync's source), a leaf it signed, and an empty local folder."""
    corp = pki.ca(name)
    source, leaf_pem = tmp_path / "corp.pem", tmp_path / "leaf.pem"
    corp.write(source)
    pki.leaf("leaf.test", corp).write(leaf_pem)
    local = tmp_path / "local"
    local.mkdir()
    return corp, source, leaf_pem, local


def verifies(bundle: Path, leaf: Path) -> bool:
    return run("openssl", "verify", "-CAfile", bundle, leaf, check=False).returncode == 0


def test_update_ca_certificates_trusts_what_anchors_writes_and_forgets_what_it_removes(tmp_path, pki):
    corp, source, leaf_pem, local = corp_setup(tmp_path, pki, "Corp Anchor Root")
    pki.ca("Other Local Root").write(local / "other.crt")  # the rebuild writes no bundle from an empty folder

    assert not verifies(rebuild(tmp_path, local), leaf_pem)
    added = storesync("sync", "--mode", "add", source, f"anchors:{local}")
    assert added.returncode == 0, added.stderr
    bundle = rebuild(tmp_path, local)
    assert verifies(bundle, leaf_pem)
    context = ssl.create_default_context(cafile=str(bundle))
    assert {"commonName": "Corp Anchor Root"} in [dict(x[0] for x in c["subject"]) for c in context.get_ca_certs()]

    removed = storesync("sync", "--mode", "remove", source, f"anchors:{local}")
    assert removed.returncode == 0, removed.stderr
    assert sorted(p.name for p in local.iterdir()) == ["other.crt"]
    assert not verifies(rebuild(tmp_path, local), leaf_pem)


def test_one_file_per_certificate_named_from_the_label_and_nothing_else_touched(tmp_path, pki):
    folder = tmp_path / "anchors"
    folder.mkdir()
    two = pki.ca("Bundle One").pem + pki.ca("Bundle Two").pem
    keep = {"README": b"local roots\n", "bundle.crt": two, "notes.txt": b"x", "old.pem.disabled": b"y"}
    for name, data in keep.items():
        (folder / name).write_bytes(data)
    roots = [pki.ca("Corp/Root: \u00fc"), pki.ca("Corp/Root: \u00fc"), pki.ca(".hidden")]
    source = tmp_path / "roots.pem"
    source.write_bytes(b"".join(r.pem for r in roots))

    result = storesync("sync", "--mode", "add", source, f"anchors:{folder}")
    assert result.returncode == 0, result.stderr
    names = sorted(p.name for p in folder.iterdir())
    assert names == sorted([*keep, "Corp_Root____.crt", "Corp_Root____.1.crt", "hidden.crt"]), names
    assert all((folder / n).read_bytes() == data for n, data in keep.items())  # not ours: untouched
    assert not any(p.is_symlink() for p in folder.iterdir())
    store = open_store(f"anchors:{folder}")
    trust_set = store.read()
    assert len(trust_set) == 3  # the two-certificate bundle.crt is not an anchor of the folder
    assert store.purpose == "server-auth" and not store.capabilities.purposes  # anchors for one purpose, as a bundle
    again = storesync("sync", "--mode", "add", source, f"anchors:{folder}")
    assert again.returncode == 0 and "in sync" in again.stdout


def test_a_root_trusted_for_email_only_is_never_widened_into_the_folder(tmp_path, pki):
    folder, nssdb = tmp_path / "anchors", tmp_path / "nssdb"
    mail = pki.ca("Mail Only Root")
    nssdb.mkdir()
    run(need("certutil"), "-N", "-d", f"sql:{nssdb}", "--empty-password")
    cert = tmp_path / "mail.pem"
    mail.write(cert)
    run("certutil", "-A", "-d", f"sql:{nssdb}", "-n", "Mail Only Root", "-t", ",C,", "-i", cert)
    assert list(open_store(f"nss:{nssdb}").read().values())[0].trusted_purposes == ["email"]
    result = storesync("sync", "--mode", "add", f"nss:{nssdb}", f"anchors:{folder}")
    assert result.returncode == 0, result.stderr
    assert "! Mail Only Root: trusted only for email: left out of this server-auth store" in result.stdout
    assert not folder.exists() or not any(folder.iterdir())


def test_a_subfolder_is_named_in_a_warning_not_read(tmp_path, pki):
    folder = tmp_path / "anchors"
    (folder / "corp").mkdir(parents=True)
    pki.ca("In A Subfolder").write(folder / "corp" / "sub.crt")
    result = storesync("list", f"anchors:{folder}")
    assert result.returncode == 0
    assert "1 certificate files in a subfolder" in result.stderr and "In A Subfolder" not in result.stdout


def test_a_file_where_the_folder_should_be_is_one_sentence(tmp_path, pki):
    path = tmp_path / "anchors"
    path.write_bytes(b"not a folder\n")
    source = tmp_path / "corp.pem"
    pki.ca("Corp").write(source)
    result = storesync("sync", "--mode", "add", source, f"anchors:{path}")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"anchors store {path}: is not a directory" in result.stderr
    assert path.read_bytes() == b"not a folder\n"


def test_anchor_file_mode_is_world_readable(tmp_path, pki):
    """The rebuild links the files into /etc/ssl/certs, read by every user."""
    folder = tmp_path / "anchors"
    source = tmp_path / "corp.pem"
    pki.ca("Corp Mode").write(source)
    assert storesync("sync", "--mode", "add", source, f"anchors:{folder}").returncode == 0
    assert (folder / "Corp_Mode.crt").stat().st_mode & 0o777 == 0o644


def test_a_root_in_a_bundle_file_is_named_in_a_warning(tmp_path, pki):
    """Debian's rebuild trusts every certificate of a `.crt` holding several; storesync reads
    and writes one-certificate files only, so a remove cannot take the root out of such a file:
    the run must say so (the rebuild below still trusts it), never report it gone in silence."""
    corp, source, leaf_pem, local = corp_setup(tmp_path, pki, "Corp Bundled Root")
    (local / "bundle.crt").write_bytes(corp.pem + pki.ca("Other Bundled Root").pem)
    assert verifies(rebuild(tmp_path, local), leaf_pem)

    removed = storesync("sync", "--mode", "remove", source, f"anchors:{local}")
    assert removed.returncode == 0, removed.stderr
    assert verifies(rebuild(tmp_path, local), leaf_pem)  # still trusted: the file is not storesync's
    assert f"{local / 'bundle.crt'}: 2 certificates in one file" in removed.stderr, removed.stderr


def test_a_pem_file_debian_ignores_does_not_count_as_trusted(tmp_path, pki):
    """Debian's rebuild takes `*.crt` only: a root lying in the folder as `corp.pem` is not
    trusted by the system, so an add must still write it as a `.crt` (checked by the rebuild),
    never say "in sync"; the `.pem` is named in a warning and left alone."""
    corp, source, leaf_pem, local = corp_setup(tmp_path, pki, "Corp Pem Root")
    pki.ca("Other Local Root").write(local / "other.crt")
    corp.write(local / "corp.pem")
    assert not verifies(rebuild(tmp_path, local), leaf_pem)

    added = storesync("sync", "--mode", "add", source, f"anchors:{local}")
    assert added.returncode == 0, added.stderr
    assert verifies(rebuild(tmp_path, local), leaf_pem), added.stdout
    assert (local / "corp.pem").read_bytes() == corp.pem
    assert f"{local / 'corp.pem'}: not a .crt file" in added.stderr, added.stderr
