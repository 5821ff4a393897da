"""Execute each chapter once per CI run: the book renders the execution that nbval checked.

``make test`` runs every notebook under nbval (``--nbval-lax``, both cores with pytest-xdist).
Loaded as a pytest plugin (``-p nbcache`` with ``ci/`` on ``PYTHONPATH``), this module keeps the
outputs nbval received from the kernel, and for each notebook whose every code cell passed writes
the executed notebook to ``_build/.nbval_executed/``, stamped with the *environment key*.
``make book`` then calls ``python ci/nbcache.py prepare``, which moves the executed notebooks
into the jupyter-cache that the book build reads (``execute_notebooks: cache``), and lists the
notebooks that still lack an execution; those are executed by nbval first (again on both cores).

Why a stale execution cannot be reused:

- jupyter-cache matches a notebook by a hash of its code cells (source and metadata) and its
  kernelspec, so an edited code cell misses the cache and is executed again;
- what the hash does not see (bncore's source, the pinned dependencies, the interpreter, this
  file) is the environment key: a SHA-256 over those files and the Python version. An executed
  notebook is ingested only under the key it was executed with, and the cache is emptied
  whenever the key changes.

The build itself stays strict: a notebook that misses the cache is executed by the build, and
an error in any cell fails it (``nb_execution_raise_on_error``).
"""

from __future__ import annotations

import hashlib
import platform
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat

ROOT = Path(__file__).resolve().parents[1]
STAGE = Path("_build") / ".nbval_executed"  # relative to the repository root
CACHE = Path("_build") / ".jupyter_cache"  # the book build's default cache
KEY_FILE = "environment.key"
KEY_META = "bncore_environment_key"


def environment_files(root: Path = ROOT) -> Iterator[Path]:
    """Everything besides a notebook's code that its outputs depend on."""
    yield from sorted((root / "bncore").rglob("*.py"))
    for name in ("pyproject.toml", "ci/requirements.lock", "ci/nbcache.py"):
        if (root / name).exists():
            yield root / name


def environment_key(root: Path = ROOT) -> str:
    """SHA-256 over :func:`environment_files` (path and content) and the Python version."""
    digest = hashlib.sha256(f"python {platform.python_version()}\n".encode())
    for path in environment_files(root):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


# --- pytest plugin: keep what nbval executed ---

_notebooks: dict[Path, dict[str, Any]] = {}


def _is_nbval_cell(item: Any) -> bool:
    return type(item).__name__ == "IPyNbCell" and hasattr(item, "cell")


def pytest_runtest_makereport(item: Any, call: Any) -> None:
    """Attach the outputs nbval collected to the cell, and note whether the cell passed."""
    if not _is_nbval_cell(item) or call.when != "call":
        return
    path = Path(str(item.parent.fspath))
    record = _notebooks.setdefault(path, {"nb": item.parent.nb, "passed": 0, "failed": False})
    if call.excinfo is not None or item.test_outputs is None:
        record["failed"] = True
        return
    record["passed"] += 1
    item.cell.outputs = list(item.test_outputs)
    item.cell.execution_count = item.cell_num + 1
    for out in item.cell.outputs:
        if out.get("output_type") == "execute_result":
            out["execution_count"] = item.cell_num + 1
    record["seconds"] = record.get("seconds", 0.0) + (call.stop - call.start)


def pytest_sessionfinish(session: Any) -> None:
    """Write every notebook whose code cells all passed to the staging folder."""
    if not _notebooks:
        return
    key = environment_key()
    stage = ROOT / STAGE
    stage.mkdir(parents=True, exist_ok=True)
    for path, record in _notebooks.items():
        nb = record["nb"]
        code_cells = sum(cell.cell_type == "code" for cell in nb.cells)
        staged = stage / path.name
        if record["failed"] or record["passed"] != code_cells:
            staged.unlink(missing_ok=True)
            continue
        nb.metadata[KEY_META] = key
        nb.metadata[KEY_META + "_seconds"] = round(record.get("seconds", 0.0), 2)
        nb.metadata[KEY_META + "_source"] = str(path.resolve())
        nbformat.write(nb, staged)


# --- command line: move executions into the book's cache ---


def _open_cache(root: Path, key: str) -> Any:
    """The book's jupyter-cache, emptied first if it was filled under another key."""
    from jupyter_cache import get_cache  # a dependency of the book extra only

    folder = root / CACHE
    stamp = folder / KEY_FILE
    if folder.exists() and (not stamp.exists() or stamp.read_text() != key):
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cache = get_cache(str(folder))
    stamp.write_text(key)
    return cache


def prepare(notebooks: list[Path], root: Path = ROOT) -> list[Path]:
    """Ingest the staged executions made under the current key; return the notebooks to run.

    A staged notebook is ingested only if its key is the current one and its code cells are
    those of the notebook on disk (jupyter-cache's hash); either way it is then removed.
    """
    from jupyter_cache.base import CacheBundleIn

    key = environment_key(root)
    cache = _open_cache(root, key)
    for staged in sorted((root / STAGE).glob("*.ipynb")):
        nb = nbformat.read(staged, as_version=4)
        meta = nb.metadata
        if meta.pop(KEY_META, None) == key:
            seconds = meta.pop(KEY_META + "_seconds", None)
            source = meta.pop(KEY_META + "_source", str(staged))
            cache.cache_notebook_bundle(
                CacheBundleIn(nb, source, data={"execution_seconds": seconds}),
                check_validity=False, overwrite=True,
            )
        staged.unlink()
    missing = []
    for path in notebooks:
        try:
            cache.match_cache_notebook(nbformat.read(path, as_version=4))
        except KeyError:
            missing.append(path)
    return missing


def main(argv: list[str]) -> int:
    """``python ci/nbcache.py prepare NOTEBOOK...``: print the notebooks still to execute."""
    if not argv or argv[0] not in ("prepare", "key"):
        print("usage: nbcache.py prepare NOTEBOOK... | nbcache.py key", file=sys.stderr)
        return 2
    if argv[0] == "key":
        print(environment_key())
        return 0
    missing = prepare([Path(p) for p in argv[1:]])
    print(" ".join(map(str, missing)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
