"""Paths are str on the one-shot commands' modules (storesync.fsio says why), spelled as pathlib
spelled them before: what messages show, and the names the state dir keeps, do not change."""

from __future__ import annotations

import os
from pathlib import PurePosixPath

from hypothesis import given, settings, strategies as st

from storesync.fsio import spelled
from storesync.state import _key
from storesync.stores import _suffix

from conftest import storesync

PARTS = st.sampled_from(["", ".", "..", "a", "b.pem", "..pem", ".pem", "x.", "~", "ü é", "c.tar.gz"])
PATHS = st.lists(PARTS, max_size=6).map("/".join) | st.tuples(st.sampled_from(["/", "//", "///"]),
                                                              st.lists(PARTS, max_size=4)).map(lambda t: t[0] + "/".join(t[1]))


@settings(max_examples=500)
@given(PATHS)
def test_a_path_is_spelled_as_pathlib_spells_it(text):
    assert spelled(text) == str(PurePosixPath(text))


@settings(max_examples=500)
@given(PATHS)
def test_a_name_has_the_suffix_pathlib_gives_it(text):
    assert _suffix(text) == PurePosixPath(text).suffix.lower()


def test_a_bare_nss_file_name_names_its_folder_as_dot(tmp_path):
    (tmp_path / "cert9.db").write_bytes(b"SQLite format 3\0" + bytes(100))
    result = storesync("list", "pem:cert9.db", cwd=tmp_path)
    assert result.returncode == 2 and "name its folder nss:." in result.stderr, result.stderr


def test_a_folder_whose_name_is_not_utf8_has_a_state_key(tmp_path):
    name = os.fsdecode(b"b\xffx")
    assert _key(f"nss:{tmp_path / name}") != _key(f"nss:{tmp_path / 'b?x'}")


def test_a_new_folder_named_with_a_trailing_slash_is_a_hashed_directory(tmp_path):
    """A bare target that does not exist yet, typed with a trailing `/`, is a folder to make:
    a hashed directory (the slash was dropped before it was looked at, so the name was refused)."""
    source = tmp_path / "b.pem"
    source.write_bytes(open("/etc/ssl/certs/ca-certificates.crt", "rb").read())
    result = storesync("sync", "--dry-run", f"pem:{source}", "new/", cwd=tmp_path)
    assert result.returncode in (0, 1) and "dir:new:" in result.stdout, result.stdout + result.stderr


@settings(max_examples=500)
@given(st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12))
def test_an_nss_uri_path_is_quoted_as_urllib_quotes_it(name):
    """The NSS store quotes its SQLite URI itself (urllib.parse is off the start-up path)."""
    from urllib.parse import quote

    from storesync.stores.nss import _quote

    path = "/tmp/" + name
    assert _quote(path) == quote(os.path.realpath(path))


@settings(max_examples=500)
@given(st.text() | st.sampled_from(["", "'", "dir:/etc/ssl/certs", "pem:a b.pem", "nss:~/.pki/nssdb", "sst:ü.sst"]))
def test_the_undo_command_is_quoted_as_shlex_quotes_it(word):
    """A write prints `storesync rollback SPEC` to paste; `sync` quotes SPEC without importing shlex."""
    import shlex

    from storesync.cli.common import quote

    assert quote(word) == shlex.quote(word)
