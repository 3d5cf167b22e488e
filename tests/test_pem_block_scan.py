"""The pem reader's block scan (issue 18): the quick pattern finds exactly the blocks that the
plain lazy pattern finds, on bundles and on any mix of the pieces that could confuse it."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

import pytest

from conftest import SYSTEM_BUNDLE
from storesync.model import StoreError
from storesync.stores import parse_spec, pem

# What the reader used before: the body is everything up to the first matching END line.
LAZY = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n(.*?)-----END \1-----", re.DOTALL)

PIECES = [b"-----BEGIN ", b"-----END ", b"-----", b"----", b"-", b"CERTIFICATE", b"X509 CRL", b"TRUSTED CERTIFICATE",
          b"RSA PRIVATE KEY", b"\n", b"\r\n", b"\r", b" ", b"MIIB", b"abc+/=", b"Proc-Type: 4,ENCRYPTED\n",
          b"DEK-Info: DES-EDE3-CBC,01\n", b"x"]


def blocks(pattern, data: bytes) -> list:
    return [(m.span(), m.groups()) for m in re.finditer(pattern, data)]  # pem's: the pattern's bytes


def test_the_same_blocks_in_the_system_bundle():
    data = SYSTEM_BUNDLE.read_bytes()
    assert blocks(pem._BLOCK, data) == blocks(LAZY, data) and len(blocks(LAZY, data)) > 100


@settings(max_examples=600, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=40))
def test_the_same_blocks_in_any_mix_of_the_pieces(pieces):
    data = b"".join(pieces)
    assert blocks(pem._BLOCK, data) == blocks(LAZY, data)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.sampled_from([b"CERTIFICATE", b"X509 CRL"]), st.sampled_from([b"CERTIFICATE", b"A"]))
def test_the_same_blocks_around_arbitrary_bodies(body, begin, end):
    """Mismatched END labels, dashes and line ends inside the body, a block that never ends."""
    for data in (b"-----BEGIN %s-----\n%s-----END %s-----\n" % (begin, body, end),
                 b"-----BEGIN %s-----\r\n%s" % (begin, body),
                 b"-----BEGIN %s-----\n%s-----END %s-----\n%s-----END %s-----" % (begin, body, end, body, begin)):
        assert blocks(pem._BLOCK, data) == blocks(LAZY, data)


@settings(max_examples=600, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=40))
def test_a_begin_found_without_its_end_is_a_file_the_pattern_refused_too(pieces):
    """The quick look for a BEGIN line with no END line of its kind after it refuses only what
    counting the pattern's blocks refused."""
    data = b"".join(pieces)
    if pem._unended(data) is not None:
        assert data.count(b"-----BEGIN ") != len(blocks(LAZY, data))


def test_thousands_of_begin_lines_without_end_are_refused_without_running_the_pattern(tmp_path, monkeypatch):
    """From each BEGIN without END the block pattern scans to the end of the file: 3 000 of them
    took about 2 s (quadratic). They are refused at the first, before the pattern runs."""
    class NotRun:  # not a pattern: re.finditer would raise TypeError
        pass

    monkeypatch.setattr(pem, "_BLOCK", NotRun())
    bundle = tmp_path / "damaged.pem"
    bundle.write_bytes(b"# a damaged bundle\n" + b"-----BEGIN CERTIFICATE-----\nMIIB\n" * 20_000)
    with pytest.raises(StoreError, match="PEM block at line 2 has no matching END line"):
        pem.PemStore(parse_spec(f"pem:{bundle}")).read()
