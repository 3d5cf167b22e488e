"""What the ninth session's new-administrator review found."""

from __future__ import annotations

from conftest import storesync


def test_the_warnings_of_a_store_are_printed_once_per_sync(tmp_path, pki):
    anchors = tmp_path / "anchors"
    anchors.mkdir()
    pki.ca("s9 Kept Root").write(anchors / "kept.pem")
    source = pki.ca("s9 Added Root").write(tmp_path / "added.pem")
    result = storesync("sync", "--mode", "add", f"pem:{source}", f"anchors:{anchors}")
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("kept.pem: not a .crt file") == 1, result.stderr
