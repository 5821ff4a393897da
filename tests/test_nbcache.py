"""ci/nbcache.py: the book renders nbval's execution only when nothing it depends on changed."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("jupyter_cache", reason="the book extra is not installed")


@pytest.fixture(scope="module")
def nbcache() -> ModuleType:
    spec = importlib.util.spec_from_file_location("nbcache", ROOT / "ci" / "nbcache.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A miniature repository: one bncore module and one notebook."""
    (tmp_path / "bncore").mkdir()
    (tmp_path / "bncore" / "core.py").write_text("X = 1\n")
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    nb.cells = [nbformat.v4.new_markdown_cell("# A"), nbformat.v4.new_code_cell("print(1)")]
    nbformat.write(nb, tmp_path / "a.ipynb")
    return tmp_path


def stage(nbcache: ModuleType, project: Path, key: str) -> None:
    """What the pytest plugin writes after nbval ran a.ipynb without error."""
    nb = nbformat.read(project / "a.ipynb", as_version=4)
    nb.cells[1].outputs = [nbformat.v4.new_output("stream", name="stdout", text="1\n")]
    nb.cells[1].execution_count = 1
    nb.metadata[nbcache.KEY_META] = key
    (project / nbcache.STAGE).mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, project / nbcache.STAGE / "a.ipynb")


def test_key_changes_with_bncore_source(nbcache: ModuleType, project: Path) -> None:
    before = nbcache.environment_key(project)
    assert nbcache.environment_key(project) == before
    (project / "bncore" / "core.py").write_text("X = 2\n")
    assert nbcache.environment_key(project) != before


def test_a_staged_execution_is_rendered(nbcache: ModuleType, project: Path) -> None:
    notebook = project / "a.ipynb"
    assert nbcache.prepare([notebook], project) == [notebook]
    stage(nbcache, project, nbcache.environment_key(project))
    assert nbcache.prepare([notebook], project) == []
    assert not list((project / nbcache.STAGE).glob("*.ipynb")), "staged notebooks are consumed"


def test_an_execution_under_another_key_is_never_rendered(
    nbcache: ModuleType, project: Path
) -> None:
    notebook = project / "a.ipynb"
    stage(nbcache, project, "an older bncore")
    assert nbcache.prepare([notebook], project) == [notebook]


def test_changing_bncore_empties_the_cache(nbcache: ModuleType, project: Path) -> None:
    notebook = project / "a.ipynb"
    stage(nbcache, project, nbcache.environment_key(project))
    assert nbcache.prepare([notebook], project) == []
    (project / "bncore" / "core.py").write_text("X = 2\n")
    assert nbcache.prepare([notebook], project) == [notebook]


def test_editing_a_code_cell_misses_the_cache(nbcache: ModuleType, project: Path) -> None:
    notebook = project / "a.ipynb"
    stage(nbcache, project, nbcache.environment_key(project))
    assert nbcache.prepare([notebook], project) == []
    nb = nbformat.read(notebook, as_version=4)
    nb.cells[1].source = "print(2)"
    nbformat.write(nb, notebook)
    assert nbcache.prepare([notebook], project) == [notebook]
