"""Serve MathJax from the built site instead of a CDN, so the book works with no network.

MathJax 3 ships inside the ``django-static-mathjax`` wheel on PyPI (static files only, no
dependencies). At build time its ``es5`` directory is copied to ``_static/mathjax`` and Sphinx's
``mathjax_path`` points there; a relative ``mathjax_path`` is resolved against ``_static``.
"""

from __future__ import annotations

import shutil
from importlib.resources import files
from pathlib import Path

from sphinx.application import Sphinx
from sphinx.config import Config


def _mathjax_source() -> Path:
    return Path(str(files("mathjax"))) / "static" / "mathjax" / "es5"


def _use_local_mathjax(app: Sphinx, config: Config) -> None:
    if not (_mathjax_source() / "tex-chtml.js").is_file():
        raise RuntimeError("MathJax not found: install the book extra (django-static-mathjax)")
    config.mathjax_path = "mathjax/tex-chtml.js"


def _copy_mathjax(app: Sphinx, exception: Exception | None) -> None:
    if exception is None and app.builder.format == "html":
        target = Path(app.outdir) / "_static" / "mathjax"
        shutil.copytree(_mathjax_source(), target, dirs_exist_ok=True)


def setup(app: Sphinx) -> dict[str, object]:
    app.connect("config-inited", _use_local_mathjax)
    app.connect("build-finished", _copy_mathjax)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
