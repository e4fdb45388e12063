"""The documentation builds without warnings, and the guides' Python code blocks run.

Convention: every ```python block of a page under docs/ runs, in order, in one fresh process per
page (blocks share names, like cells of a notebook) inside an empty working directory. Put the
line `<!-- docs: skip -->` right before a block that must not run (it starts a server, needs a
GPU, ...). Shell blocks (```bash) never run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
SKIP_MARK = "<!-- docs: skip -->"
_BLOCK = re.compile(
    r"^(?P<mark><!-- docs: skip -->\s*\n)?```python[^\n]*\n(?P<code>.*?)^```", re.M | re.S
)


def python_blocks(text: str) -> list[str]:
    """The runnable ```python blocks of a markdown page, in order (skipped ones left out)."""
    return [m.group("code") for m in _BLOCK.finditer(text) if not m.group("mark")]


def _pages_with_code() -> list[Path]:
    pages = sorted(DOCS.glob("*.md")) + [ROOT / "README.md"]
    return [p for p in pages if python_blocks(p.read_text(encoding="utf-8"))]


def test_block_extraction_honours_the_skip_mark() -> None:
    text = "```python\na = 1\n```\n<!-- docs: skip -->\n```python\nserve()\n```\n```bash\nls\n```\n"
    assert python_blocks(text) == ["a = 1\n"]


@pytest.mark.e2e
def test_mkdocs_build_strict(tmp_path: Path) -> None:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "site" / "api" / "index.html").is_file()


@pytest.mark.e2e
@pytest.mark.parametrize("page", _pages_with_code(), ids=lambda p: p.name)
def test_guide_code_blocks_run(page: Path, tmp_path: Path) -> None:
    code = "\n\n".join(python_blocks(page.read_text(encoding="utf-8")))
    script = tmp_path / f"{page.stem}_blocks.py"
    script.write_text(code, encoding="utf-8")
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "MPLBACKEND": "Agg"}
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 0, f"{page.name}: code blocks failed\n{result.stderr[-4000:]}"
