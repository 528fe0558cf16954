"""docs/ALGORITHM.md keeps up with the code, and nothing in the repository points at files outside it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tnd_core import stats
from tnd_core.config import field_specs

REPO = Path(__file__).resolve().parents[1]
ALGORITHM = REPO / "docs" / "ALGORITHM.md"
# Spelled in pieces so that this file does not match its own check.
OUTSIDE_REFERENCES = ("TND" + "_SPEC", ".." + "/shared")
# A section of ALGORITHM.md named in code or docs: a quoted heading after the file name and a comma ("section" may
# come between), or an anchor after a '#'.
SECTION_REFERENCE = re.compile(r'ALGORITHM\.md(?:,\s*(?:section\s+)?"([^"]+)"|#([\w-]+))')


def _algorithm_text() -> str:
    return ALGORITHM.read_text(encoding="utf-8")


def _headings(text: str) -> list[str]:
    return [line.lstrip("#").strip() for line in text.splitlines() if re.match(r"#{1,6} ", line)]


def _anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def _tracked_text_files() -> dict[str, str]:
    try:
        listing = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: no list of tracked files")
    texts = {}
    for name in listing.decode().split("\0"):
        path = REPO / name
        if not name or not path.is_file():
            continue
        data = path.read_bytes()
        if b"\0" in data[:8192]:
            continue
        texts[name] = data.decode("utf-8", errors="replace")
    return texts


def test_algorithm_doc_names_every_option():
    text = _algorithm_text()
    missing = [spec.name for spec in field_specs() if f"`{spec.name}`" not in text]
    assert not missing, f"docs/ALGORITHM.md does not say what these options do: {', '.join(missing)}"


def test_algorithm_doc_names_every_statistic():
    text = _algorithm_text()
    missing = [name for name in stats.DESCRIPTIONS if f"`{name}`" not in text]
    assert not missing, f"docs/ALGORITHM.md does not explain these statistics: {', '.join(missing)}"


def test_references_to_algorithm_sections_exist():
    text = _algorithm_text()
    headings = _headings(text)
    anchors = {_anchor(h) for h in headings}
    broken = []
    for name, content in _tracked_text_files().items():
        for section, anchor in SECTION_REFERENCE.findall(content):
            if (section and section not in headings) or (anchor and anchor not in anchors):
                broken.append(f"{name}: {section or '#' + anchor}")
    broken += [f"docs/ALGORITHM.md: #{a}" for a in re.findall(r"\]\(#([\w-]+)\)", text) if a not in anchors]
    assert not broken, "references to sections that docs/ALGORITHM.md does not have:\n" + "\n".join(broken)


def test_no_tracked_file_points_outside_the_repository():
    found = [
        f"{name}:{number}: {line.strip()}"
        for name, content in _tracked_text_files().items()
        for number, line in enumerate(content.splitlines(), 1)
        if any(reference in line for reference in OUTSIDE_REFERENCES)
    ]
    assert not found, "files pointing outside the repository (point to docs/ALGORITHM.md instead):\n" + "\n".join(found)
