"""No launch buttons on pages with nothing to run.

sphinx-book-theme offers Binder and Colab on every notebook page, the build-status page
included, where there is nothing for a reader to run. The pages listed in the Sphinx setting
``bncore_no_launch_buttons`` (``_config.yml``) keep their other header buttons and lose those.
"""

from __future__ import annotations

from typing import Any

from sphinx.application import Sphinx


def drop_launch_buttons(
    app: Sphinx, pagename: str, templatename: str, context: dict[str, Any], doctree: Any
) -> None:
    """Remove the theme's launch group from the header of a listed page."""
    if pagename in app.config.bncore_no_launch_buttons and "header_buttons" in context:
        context["header_buttons"] = [
            b for b in context["header_buttons"] if b.get("label") != "launch-buttons"
        ]


def setup(app: Sphinx) -> dict[str, Any]:
    """Run after the theme has added its launch buttons (priority 501)."""
    app.add_config_value("bncore_no_launch_buttons", [], "html")
    app.connect("html-page-context", drop_launch_buttons, priority=900)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
