"""Make the built pages self-contained and free of console errors.

- Serve MathJax from the built site instead of a CDN, so the book works with no network.
- Drop repeated ``<script>`` entries. sphinx-thebe registers its inline configuration once per
  ``env-before-read-docs`` event, which Jupyter Book fires twice, and the second
  ``const THEBE_JS_URL`` is a JavaScript ``SyntaxError`` in the browser console.

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


def _dedupe_scripts(app: Sphinx, pagename: str, templatename: str, context: dict, doctree) -> None:
    seen: set[tuple[str, str]] = set()
    unique = []
    for script in context.get("script_files", []):
        # The same inline script comes back with filename None and with "": compare by content.
        key = (str(script.filename or ""), repr(sorted(script.attributes.items())))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"][:] = unique  # in place: later handlers (MathJax) append to it


def setup(app: Sphinx) -> dict[str, object]:
    """Register the handlers that serve MathJax from the site and drop duplicate scripts."""
    app.connect("config-inited", _use_local_mathjax)
    # Priority 100: run before theme handlers, which may end this first-result event.
    app.connect("html-page-context", _dedupe_scripts, priority=100)
    app.connect("build-finished", _copy_mathjax)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
