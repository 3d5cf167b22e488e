"""The format facts the code cites live in the project: every `docs/formats.md §N` cited in the
code or the tests is a heading of docs/formats.md, and nothing cites the old outside FORMATS.md."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "formats.md"
CITATION = re.compile(r"docs/formats\.md §(\d+(?:\.\d+)*)")
HEADING = re.compile(r"^#{2,4} (\d+(?:\.\d+)*)\.? ", re.M)


def sources() -> list[Path]:
    """The project's Python files that may cite the document (this test excepted)."""
    files = sorted([*(ROOT / "storesync").rglob("*.py"), *(ROOT / "tests").rglob("*.py")])
    return [f for f in files if f.resolve() != Path(__file__).resolve()]


def test_headings_are_numbered_sections():
    sections = HEADING.findall(DOC.read_text(encoding="utf-8"))
    assert sections[:2] == ["1", "2"] and len(sections) == len(set(sections))


def test_every_citation_names_a_section_of_the_document():
    sections = set(HEADING.findall(DOC.read_text(encoding="utf-8")))
    cited = [(f.relative_to(ROOT), n) for f in sources() for n in CITATION.findall(f.read_text(encoding="utf-8"))]
    assert len({str(f) for f, _ in cited}) >= 8  # the store modules cite it: the check is not vacuous
    dangling = [f"{f}: §{n}" for f, n in cited if n not in sections]
    assert not dangling, f"citations of sections docs/formats.md does not have: {dangling}"


def test_nothing_cites_the_outside_formats_file():
    stale = [str(f.relative_to(ROOT)) for f in sources() if "FORMATS.md" in f.read_text(encoding="utf-8")]
    assert not stale, f"cite docs/formats.md §N instead of FORMATS.md in {stale}"
