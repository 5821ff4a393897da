"""The book build cannot pass green when something is wrong.

Two throwaway books, each built with the project's own ``_config.yml`` and the flags of
``make book``: one whose notebook raises, one whose page has a broken cross-reference (a Sphinx
warning). Both builds must exit non-zero and say why.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
JUPYTER_BOOK = Path(sys.executable).with_name("jupyter-book")


FLAGS = ["--builder", "html", "-W", "--keep-going"]


def test_make_book_uses_the_strict_flags() -> None:
    makefile = (ROOT / "Makefile").read_text().splitlines()
    line = next(ln for ln in makefile if "jupyter-book build . " in ln)
    assert " ".join(FLAGS) in line, line


def _build(tmp_path: Path, page_name: str, write_page) -> subprocess.CompletedProcess[str]:
    book = tmp_path / "book"
    (book / "book").mkdir(parents=True)
    shutil.copy(ROOT / "_config.yml", book / "_config.yml")
    shutil.copytree(ROOT / "book" / "_ext", book / "book" / "_ext")
    (book / "ci").mkdir()
    shutil.copy(ROOT / "ci" / "nbcache.py", book / "ci" / "nbcache.py")
    shutil.copytree(ROOT / "book" / "_static", book / "book" / "_static")
    shutil.copy(ROOT / "book" / "references.bib", book / "book" / "references.bib")
    (book / "_toc.yml").write_text(f"format: jb-book\nroot: book/{page_name}\n")
    write_page(book / "book")
    return subprocess.run(
        [str(JUPYTER_BOOK), "build", str(book), *FLAGS],
        capture_output=True, text=True, timeout=300,
    )


pytestmark = pytest.mark.skipif(not JUPYTER_BOOK.exists(), reason="jupyter-book not installed")


@pytest.mark.slow  # builds a book: `make test` runs it, `make unit` does not
def test_notebook_error_fails_the_build(tmp_path: Path) -> None:
    def write(folder: Path) -> None:
        nb = nbformat.v4.new_notebook()
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
        nb.cells = [
            nbformat.v4.new_markdown_cell("# A broken chapter"),
            nbformat.v4.new_code_cell("raise RuntimeError('deliberately broken')"),
        ]
        nbformat.write(nb, folder / "broken.ipynb")

    result = _build(tmp_path, "broken", write)
    assert result.returncode != 0
    assert "deliberately broken" in result.stdout + result.stderr


@pytest.mark.slow
def test_sphinx_warning_fails_the_build(tmp_path: Path) -> None:
    def write(folder: Path) -> None:
        (folder / "warns.md").write_text("# A page\n\nSee {ref}`no-such-label`.\n")

    result = _build(tmp_path, "warns", write)
    assert result.returncode != 0
    assert "no-such-label" in result.stdout + result.stderr
