"""Review of the night's memory and output work (s7): what a user sees and what a store keeps."""

from __future__ import annotations

import re

from rich.cells import cell_len  # an independent measure of terminal cells (rich drew `list` before)

from conftest import storesync


def test_list_columns_line_up_on_the_screen_with_wide_and_combining_labels(tmp_path, pki):
    """CJK characters take two terminal cells and a combining accent none: the sha256 column
    starts in the same cell on every row, as the rich table it replaced kept it."""
    labels = ["Plain Root", "根证书 CA 中国", "Cafe\u0301 Root", "Zoë Wurzel"]
    bundle = tmp_path / "b.pem"
    bundle.write_bytes(b"".join(pki.ca(label).pem for label in labels))
    result = storesync("list", f"pem:{bundle}", env=None)
    assert result.returncode == 0, result.stderr
    rows = result.stdout.splitlines()[1:]
    assert len(rows) == 1 + len(labels)
    starts = set()
    for row in rows:
        cut = row.index("sha256") if row.strip().startswith("label") else re.search(r"  [0-9a-f]{16}  ", row).start() + 2
        starts.add(cell_len(row[:cut]))
    assert len(starts) == 1, result.stdout


def test_a_label_with_control_characters_reaches_the_terminal_as_question_marks(tmp_path, pki):
    """A keystore alias is anyone's text who may write the store: an escape sequence in it would
    clear the admin's screen or fake a line of the plan. People's output shows `?` for each
    control character; `--json` keeps the label whole (escaped by JSON)."""
    import json
    import subprocess
    import sys

    from storesync.engine.plan import make_plan
    from storesync.model import Certificate, Entry, TrustSet
    from storesync.stores import open_store

    evil = "Evil\x1b[2J\x1b]0;pwned\x07\nstoresync: all good"
    keystore = tmp_path / "evil.jks"
    store = open_store(f"jks:{keystore}")
    source = TrustSet([Entry(Certificate(pki.ca("Control Root").der), label=evil)])
    store.write(make_plan(source, store.read(), store.capabilities, store="test", purpose="any"))
    empty = tmp_path / "empty.pem"
    empty.write_text("")

    def cli(*argv):
        return subprocess.run([sys.executable, "-m", "storesync", *argv], capture_output=True, text=True)

    for argv in (["list", f"jks:{keystore}"], ["diff", f"jks:{keystore}", f"pem:{empty}"],
                 ["sync", "--dry-run", f"jks:{keystore}", f"pem:{tmp_path / 'new.pem'}"]):
        out = cli(*argv).stdout
        assert "evil?[2j?]0;pwned??storesync: all good" in out.lower(), (argv, out)  # JKS aliases are lower case
        assert not any(c in out for c in "\x1b\x07"), (argv, out)
    listed = json.loads(cli("list", "--json", f"jks:{keystore}").stdout)
    assert [e["label"] for e in listed["entries"]] == [evil.lower()]
