"""The book's pages in the order of ``_toc.yml``, shared by the tests that read every page."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def toc_pages() -> list[str]:
    """Document paths (without suffix) in the order of ``_toc.yml``: the root, then each part's
    chapters and their sections.
    """
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    pages = [toc["root"]]
    for part in toc.get("parts", []):
        for chapter in part["chapters"]:
            pages += [chapter["file"], *(s["file"] for s in chapter.get("sections", []))]
    return pages
