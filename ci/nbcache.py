"""Execute each chapter once per CI run: the book renders the execution that nbval checked.

Three roles, one module (``ci/`` is on the path of each):

1. **pytest plugin** (``-p nbcache`` with ``ci/`` on ``PYTHONPATH``; ``make test`` and
   ``make book``). While nbval (``--nbval-lax``, both cores with pytest-xdist) runs a notebook,
   the plugin records every kernel message of every cell and replays them through nbclient's
   own ``NotebookClient.process_message``, the code the book build executes with. So the outputs
   are built exactly as the build would build them: streams kept in order between figures (nbval
   itself merges them), ``clear_output`` and display updates applied, glue data and images as
   sent, stderr kept (the build shows it). A notebook whose every code cell passed is written,
   with those outputs, to ``_build/.nbval_executed/``, stamped with the *environment key*.
2. **command line** (``python ci/nbcache.py prepare NOTEBOOK...``; ``make book``): moves the
   staged notebooks into the jupyter-cache that the book build reads
   (``execute_notebooks: cache``) and prints the notebooks that still lack an execution.
3. **Sphinx extension** (``local_extensions`` in ``_config.yml``): when the environment key
   differs from the one the last build ran under, empties the build's jupyter-cache and makes
   Sphinx re-read every page (Sphinx itself re-reads only pages whose source changed). This
   guards every build, ``make page`` and a bare ``jupyter-book build .`` included.

Why a stale execution is never rendered:

- jupyter-cache matches a notebook by a hash of its code cells (source and metadata) and its
  kernelspec, so an edited code cell misses the cache and is executed again;
- what that hash does not see is the environment key: a SHA-256 over bncore's source files, the
  installed distributions and their versions, the Python version, the environment variables that
  change what a chapter prints (``TQDM_DISABLE``, ``BNCORE_*``, ...) and this file. The plugin
  takes the key when the test session starts and stages nothing if it changed by the end; a
  staged notebook is ingested only under the current key; and a cache filled under another key
  is emptied, by ``prepare`` and again by the build itself, which then re-reads every page.

The build stays strict: a notebook that misses the cache is executed by the build, and an error
in any cell fails it (``nb_execution_raise_on_error``).
"""

from __future__ import annotations

import copy
import functools
import hashlib
import importlib.metadata
import importlib.util
import os
import platform
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat

try:
    from pytest import hookimpl
except ImportError:  # the book extra alone: the Sphinx extension and command line need none

    def hookimpl(**_: Any) -> Any:
        return lambda function: function


ROOT = Path(__file__).resolve().parents[1]
STAGE = Path("_build") / ".nbval_executed"  # relative to the repository root
CACHE = Path("_build") / ".jupyter_cache"  # the book build's default cache
KEY_FILE = "environment.key"
KEY_META = "bncore_environment_key"
# Environment variables that change what a chapter computes or prints (besides BNCORE_*).
KEY_ENVIRONMENT = ("TQDM_DISABLE", "MPLBACKEND", "PYTHONHASHSEED", "OMP_NUM_THREADS",
                   "MKL_NUM_THREADS", "CUDA_VISIBLE_DEVICES")


def bncore_dir(root: Path = ROOT) -> Path | None:
    """The bncore sources a kernel imports: ``root/bncore``, else the installed package."""
    if (root / "bncore").is_dir():
        return root / "bncore"
    spec = importlib.util.find_spec("bncore")
    return Path(spec.origin).parent if spec and spec.origin else None


def environment_files(root: Path = ROOT) -> Iterator[Path]:
    """The files besides a notebook's code that its outputs depend on."""
    package = bncore_dir(root)
    if package is not None:
        yield from sorted(p for p in package.rglob("*") if p.is_file() and p.suffix != ".pyc")
    yield Path(__file__).resolve()


@functools.cache
def _distributions() -> tuple[str, ...]:
    """``name==version`` of every installed distribution (read once per process), each once:
    with the working directory on ``sys.path`` (``python -m pytest``), an editable install's
    ``bncore.egg-info`` is found a second time, and the key must not depend on how it was run.
    """
    return tuple(sorted({f"{d.metadata['Name']}=={d.version}".lower()
                         for d in importlib.metadata.distributions() if d.metadata["Name"]}))


def environment_key(root: Path = ROOT) -> str:
    """SHA-256 over :func:`environment_files`, the installed distributions, the interpreter and
    :data:`KEY_ENVIRONMENT` (plus every ``BNCORE_*`` variable).
    """
    digest = hashlib.sha256(f"{platform.python_implementation()} {sys.version}\n".encode())
    for path in environment_files(root):
        name = path.relative_to(root) if path.is_relative_to(root) else path.name
        digest.update(f"{name}\0".encode() + path.read_bytes() + b"\0")
    digest.update("\n".join(_distributions()).encode())
    names = sorted(set(KEY_ENVIRONMENT) | {n for n in os.environ if n.startswith("BNCORE_")})
    digest.update("".join(f"\n{n}={os.environ.get(n)}" for n in names).encode())
    return digest.hexdigest()


# --- 1. pytest plugin: keep what nbval executed ---

_key_at_start: str | None = None
_notebooks: dict[Path, dict[str, Any]] = {}


def _is_nbval_cell(item: Any) -> bool:
    return type(item).__name__ == "IPyNbCell" and hasattr(item, "cell")


def _record(item: Any) -> dict[str, Any]:
    """The notebook being executed: a copy of nbval's, and an nbclient to build its outputs."""
    from nbclient import NotebookClient

    path = Path(str(item.parent.fspath)).resolve()
    if path not in _notebooks:
        nb = copy.deepcopy(item.parent.nb)
        for cell in nb.cells:
            if cell.cell_type == "code":
                cell.outputs, cell.execution_count = [], None
        try:  # what the kernel reports in its kernel_info reply, as nbclient stores it
            from ipykernel.ipkernel import IPythonKernel
            nb.metadata["language_info"] = copy.deepcopy(IPythonKernel.language_info)
        except ImportError:
            pass
        _notebooks[path] = {"nb": nb, "client": NotebookClient(nb, record_timing=False),
                            "passed": set(), "failed": False, "seconds": 0.0}
    return _notebooks[path]


def pytest_configure(config: Any) -> None:
    global _key_at_start
    _key_at_start = environment_key()


@hookimpl(tryfirst=True)
def pytest_runtest_call(item: Any) -> None:
    """Record the kernel messages of an nbval cell (nbval keeps only merged outputs)."""
    if not _is_nbval_cell(item):
        return
    notebook, kernel = item.parent, item.parent.kernel
    messages: list[dict[str, Any]] = []
    msg_ids: list[str] = []
    get = notebook.get_kernel_message

    def recording_execute(source: str, allow_stdin: bool | None = None) -> str:
        # As nbclient executes a cell: in the history (nbval: store_history=False), so that
        # execution counts, ``_`` and ``Out`` are the build's.
        msg_ids.append(kernel.kc.execute(source, store_history=True, allow_stdin=False,
                                         stop_on_error=False))
        return msg_ids[-1]

    def recording_get(*args: Any, **kwargs: Any) -> dict[str, Any]:
        messages.append(get(*args, **kwargs))
        return messages[-1]

    # Instance attributes shadow the methods for this cell only (removed in makereport).
    kernel.execute_cell_input = recording_execute
    notebook.get_kernel_message = recording_get
    item._nbcache_messages, item._nbcache_msg_ids = messages, msg_ids


def _replay(record: dict[str, Any], item: Any) -> None:
    """Build the cell's outputs from its messages with nbclient, as the book build would."""
    from nbclient.exceptions import CellExecutionComplete

    nb, client = record["nb"], record["client"]
    index = next(i for i, cell in enumerate(item.parent.nb.cells) if cell is item.cell)
    cell = nb.cells[index]
    if not cell.source.strip():  # nbclient does not execute an empty cell
        return
    msg_id = item._nbcache_msg_ids[-1]
    client.clear_before_next_output = False
    for msg in item._nbcache_messages:
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        try:
            client.process_message(msg, cell, index)
        except CellExecutionComplete:
            return
    raise RuntimeError("the kernel's idle message was not seen")


def pytest_runtest_makereport(item: Any, call: Any) -> None:
    """Rebuild the outputs of a cell that passed; mark its notebook failed otherwise."""
    if not _is_nbval_cell(item) or call.when != "call":
        return
    for obj, name in ((item.parent.kernel, "execute_cell_input"),
                      (item.parent, "get_kernel_message")):
        obj.__dict__.pop(name, None)
    record = _record(item)
    if call.excinfo is not None or not getattr(item, "_nbcache_msg_ids", None):
        record["failed"] = True
        return
    try:
        _replay(record, item)
    except Exception:  # an execution that cannot be rebuilt is not handed on
        record["failed"] = True
        return
    record["passed"].add(item.cell_num)
    record["seconds"] += call.stop - call.start


def pytest_sessionfinish(session: Any) -> None:
    """Stage every notebook whose code cells all passed, if the environment did not change."""
    if not _notebooks:
        return
    key = environment_key()
    stage = ROOT / STAGE
    stage.mkdir(parents=True, exist_ok=True)
    for path, record in _notebooks.items():
        nb = record["nb"]
        staged = stage / path.name
        code_cells = sum(cell.cell_type == "code" for cell in nb.cells)
        if record["failed"] or len(record["passed"]) != code_cells or key != _key_at_start:
            staged.unlink(missing_ok=True)
            continue
        nb.metadata[KEY_META] = key
        nb.metadata[KEY_META + "_seconds"] = round(record["seconds"], 2)
        nb.metadata[KEY_META + "_source"] = str(path)
        nbformat.write(nb, staged)


# --- 2. command line: move executions into the book's cache ---


def open_cache(folder: Path, key: str) -> Any:
    """The jupyter-cache in ``folder``, emptied first if it was filled under another key."""
    from jupyter_cache import get_cache  # a dependency of the book extra only

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
    cache = open_cache(root / CACHE, key)
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


# --- 3. Sphinx extension: no build renders an execution made under another key ---


def _guard_cache(app: Any) -> None:
    """Empty the build's jupyter-cache if it was filled under another key."""
    app.nbcache_key = environment_key(Path(app.confdir))
    config = getattr(app.env, "mystnb_config", None)
    if config is None or config.execution_mode != "cache" or not config.execution_cache_path:
        return
    open_cache(Path(config.execution_cache_path), app.nbcache_key)


def _outdated(app: Any, env: Any, added: set, changed: set, removed: set) -> list[str]:
    """Every page, if the last build read them under another key.

    Sphinx re-reads only the pages whose source changed, so without this an edit to bncore
    would leave every chapter's old outputs (and the API pages) in the HTML.
    """
    if getattr(env, "nbcache_key", None) == app.nbcache_key:
        return []
    return sorted(env.found_docs)


def _read(app: Any, env: Any) -> None:
    env.nbcache_key = app.nbcache_key


def setup(app: Any) -> dict[str, Any]:
    # after myst-nb's own builder-inited handler, which sets the cache path
    app.connect("builder-inited", _guard_cache, priority=900)
    app.connect("env-get-outdated", _outdated)
    app.connect("env-updated", _read)
    return {"parallel_read_safe": True, "parallel_write_safe": True}


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
