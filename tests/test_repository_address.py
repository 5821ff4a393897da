"""The repository has one address: pyproject.toml's, which the book and the chapters repeat."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import yaml

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
ADDRESS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]["Homepage"]


def test_the_book_links_to_the_address_in_pyproject():
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert config["repository"]["url"] == ADDRESS


@pytest.mark.parametrize("notebook", sorted(p.name for p in (ROOT / "book").glob("*.ipynb")))
def test_a_chapters_colab_install_cell_uses_the_address_in_pyproject(notebook):
    cells = json.loads((ROOT / "book" / notebook).read_text())["cells"]
    code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    addresses = re.findall(r"git\+(https?://[^\s\"'@]+)", code)
    assert all(a.rstrip("/").removesuffix(".git") == ADDRESS for a in addresses), addresses
