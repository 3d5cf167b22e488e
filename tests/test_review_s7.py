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
