"""ci/nbcache.py: the book renders nbval's execution only when nothing it depends on changed."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType, SimpleNamespace

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("jupyter_cache", reason="the book extra is not installed")
from jupyter_cache import get_cache  # noqa: E402


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


def test_the_build_empties_a_cache_filled_under_another_key(
    nbcache: ModuleType, project: Path
) -> None:
    """The Sphinx extension guards every build (make page, a bare jupyter-book build)."""
    notebook = project / "a.ipynb"
    stage(nbcache, project, nbcache.environment_key(project))
    assert nbcache.prepare([notebook], project) == []
    (project / "bncore" / "core.py").write_text("X = 2\n")
    config = SimpleNamespace(execution_mode="cache",
                             execution_cache_path=str(project / nbcache.CACHE))
    app = SimpleNamespace(confdir=str(project), env=SimpleNamespace(mystnb_config=config))
    nbcache._guard_cache(app)
    assert (project / nbcache.CACHE / nbcache.KEY_FILE).read_text() == (
        nbcache.environment_key(project))
    cache = get_cache(str(project / nbcache.CACHE))
    with pytest.raises(KeyError):
        cache.match_cache_notebook(nbformat.read(notebook, as_version=4))


def test_the_build_rereads_every_page_after_the_key_changed(nbcache: ModuleType) -> None:
    """Sphinx re-reads only edited sources; a new bncore must refresh every chapter's outputs."""
    app = SimpleNamespace(nbcache_key="new")
    env = SimpleNamespace(nbcache_key="old", found_docs={"book/a", "intro"})
    assert nbcache._outdated(app, env, set(), set(), set()) == ["book/a", "intro"]
    nbcache._read(app, env)
    assert nbcache._outdated(app, env, set(), set(), set()) == []


def test_the_key_covers_the_environment_variables_a_chapter_reads(
    nbcache: ModuleType, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = nbcache.environment_key(project)
    monkeypatch.setenv("BNCORE_WIDGETS", "1" if os.environ.get("BNCORE_WIDGETS") == "0" else "0")
    assert nbcache.environment_key(project) != before


# Outputs that nbval alone would get wrong: it merges every stream of a cell into one, moving
# text across figures, and it ignores clear_output and display updates.
FIDELITY_CELLS = [
    "import sys\nfrom IPython.display import Markdown, clear_output, display",
    "print('before')\ndisplay(Markdown('**between**'))\nprint('after')",
    "sys.stderr.write('a warning\\n')",
    "print('gone')\nclear_output(wait=True)\nprint('kept')",
    "handle = display(Markdown('old'), display_id=True)",
    "handle.update(Markdown('new'))\n6 * 7",
    "",
    "import matplotlib.pyplot as plt\nplt.plot([0, 1], [1, 0])\nplt.show()",
]


@pytest.mark.slow
def test_staged_outputs_are_those_the_book_build_would_get(
    nbcache: ModuleType, tmp_path: Path
) -> None:
    """Nbval plus the plugin stage exactly what jupyter-cache's executor (the build's) makes."""
    pytest.importorskip("nbval")
    from jupyter_cache.executors.utils import single_nb_execution

    (tmp_path / "ci").mkdir()
    shutil.copy(ROOT / "ci" / "nbcache.py", tmp_path / "ci" / "nbcache.py")
    (tmp_path / "book").mkdir()
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    nb.cells = [nbformat.v4.new_markdown_cell("# F")]
    nb.cells += [nbformat.v4.new_code_cell(source) for source in FIDELITY_CELLS]
    nbformat.write(nb, tmp_path / "book" / "f.ipynb")

    env = {**os.environ, "PYTHONPATH": str(tmp_path / "ci")}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "nbcache", "-p", "no:cacheprovider",
         "--nbval-lax", "-q", "--rootdir", str(tmp_path), "book/f.ipynb"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    staged = nbformat.read(tmp_path / nbcache.STAGE / "f.ipynb", as_version=4)

    executed = nbformat.read(tmp_path / "book" / "f.ipynb", as_version=4)
    with monkeypatched_environ(env):
        run = single_nb_execution(executed, cwd=str(tmp_path / "book"), timeout=300,
                                  allow_errors=False)
    assert run.err is None, run.exc_string

    def outputs(notebook: nbformat.NotebookNode) -> list:
        return [(c.execution_count, c.outputs) for c in notebook.cells if c.cell_type == "code"]

    for got, want in zip(outputs(staged), outputs(executed), strict=True):
        assert got == want
    texts = [o.get("text") for o in staged.cells[2].outputs]
    assert texts == ["before\n", None, "after\n"], texts
    assert staged.metadata["language_info"]["name"] == "python"


@contextlib.contextmanager
def monkeypatched_environ(env: dict[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def test_the_key_does_not_depend_on_how_python_was_started() -> None:
    """One key whether Python was started as ``python -m pytest`` (nbval: the repository, with
    the editable install's bncore.egg-info, on sys.path) or ``python ci/nbcache.py`` (make book).
    """
    env = {**os.environ, "PYTHONPATH": str(ROOT / "ci")}
    as_script = subprocess.run([sys.executable, str(ROOT / "ci" / "nbcache.py"), "key"],
                               cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    as_module = subprocess.run([sys.executable, "-c",
                                "import nbcache; print(nbcache.environment_key())"],
                               cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert as_script.stdout.strip() == as_module.stdout.strip()
