"""The documentation is tested (issue 26): every relative link and image path of README.md, CONTRIBUTING.md and
docs/*.md exists, and every ```python block runs — offline, on the bundled model — unless the line right above it
says ``<!-- not run: REASON -->`` (followed by a visible note line on the page). A block marked
``<!-- slow lane: REASON -->`` runs in the slow lane. `mkdocs build --strict` (.ci/run) checks the site itself."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)|<img[^>]*\ssrc=\"([^\"]+)\"")
FENCE = re.compile(r"^```")


def _outside_code(text: str) -> list[tuple[int, str]]:
    """(line number, line) of the lines outside fenced code blocks, with inline code removed."""
    lines, inside = [], False
    for i, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            inside = not inside
            continue
        if not inside:
            lines.append((i, re.sub(r"`[^`]*`", "", line)))
    return lines


def relative_links(page: Path) -> list[tuple[int, str]]:
    """(line, target) of every link and image of ``page`` that points into the repository."""
    found = []
    for i, line in _outside_code(page.read_text()):
        for m in LINK.finditer(line):
            target = m.group(1) or m.group(2)
            if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
                continue  # a URL, mailto:, or an anchor on the same page
            found.append((i, target.split("#")[0]))
    return found


def missing_links(page: Path) -> list[str]:
    """``PAGE:LINE: TARGET`` for each relative link or image of ``page`` whose file is not there."""
    return [f"{page.name}:{i}: {t}" for i, t in relative_links(page) if not (page.parent / t).exists()]


def python_blocks(page: Path) -> list[tuple[int, str, str]]:
    """(line, mark, source) of every ```python block: mark is "run", "slow" or "not run"."""
    lines = page.read_text().splitlines()
    blocks, i = [], 0
    while i < len(lines):
        if lines[i].strip() == "```python":
            end = lines.index("```", i + 1)
            above = "\n".join(lines[max(0, i - 3) : i])
            mark = "not run" if "<!-- not run:" in above else "slow" if "<!-- slow lane:" in above else "run"
            blocks.append((i + 1, mark, "\n".join(lines[i + 1 : end]) + "\n"))
            i = end
        i += 1
    return blocks


BLOCKS = [(p, line, mark, src) for p in PAGES for line, mark, src in python_blocks(p)]


def _param(page: Path, line: int, mark: str, src: str):
    marks = [pytest.mark.slow] if mark == "slow" else []
    if mark == "not run":
        marks.append(pytest.mark.skip(reason="marked not run on the page"))
    return pytest.param(src, id=f"{page.relative_to(ROOT)}:{line}", marks=marks)


def test_every_relative_link_and_image_exists():
    missing = [m for page in PAGES for m in missing_links(page)]
    assert not missing, missing
    assert sum(len(relative_links(p)) for p in PAGES) > 20  # the checker sees the links


def test_the_checker_catches_a_missing_link(tmp_path):
    (tmp_path / "there.png").write_bytes(b"")
    page = tmp_path / "page.md"
    page.write_text("![ok](there.png) [gone](nowhere.md#x) `[code](not-a-link.md)` [web](https://example.org)\n")
    assert missing_links(page) == ["page.md:1: nowhere.md"]


def test_every_not_run_mark_is_visible_on_the_page():
    for page in PAGES:
        lines = page.read_text().splitlines()
        for i, line in enumerate(lines):
            if line.startswith("<!-- not run:"):
                note = lines[i + 1]
                assert note.startswith("*Not run by the tests:"), f"{page.relative_to(ROOT)}:{i + 2}: {note!r}"


def test_the_docs_have_runnable_blocks():
    assert any(p.name == "README.md" and mark == "run" for p, _, mark, _ in BLOCKS), BLOCKS


@pytest.mark.parametrize("src", [_param(*b) for b in BLOCKS])
def test_python_block_runs(src, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # blocks that save files write them here
    exec(compile(src, "<docs block>", "exec"), {"__name__": "__docs__"})
