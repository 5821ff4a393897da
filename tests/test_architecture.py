"""The layout of ``bncore`` stays as the API page describes it.

- Four groups, imports flowing one way: ``norm`` → ``theory`` → ``experiments`` → ``book``; a
  module never imports from a group after its own.
- Imports of ``bncore`` sit at the top of a module, never inside a function.
- Every module is documented on the API page of its group.
- A module over 400 lines says in its docstring why it earns its length.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "bncore"
GROUPS = ("norm", "theory", "experiments", "book")
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = sorted(PACKAGE.rglob("*.py"))


def group_of(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in GROUPS else None


def bncore_imports(tree: ast.AST) -> list[tuple[ast.ImportFrom | ast.Import, str]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("bncore"):
            if node.module == "bncore":
                found += [(node, f"bncore.{a.name}") for a in node.names]
            else:
                found.append((node, node.module))
        elif isinstance(node, ast.Import):
            found += [(node, a.name) for a in node.names if a.name.startswith("bncore")]
    return found


def test_there_are_four_groups_and_nothing_else_but_the_package_init():
    subpackages = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists())
    loose = sorted(p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py")
    assert subpackages == sorted(GROUPS)
    assert loose == [], f"modules outside the four groups: {loose}"


@pytest.mark.parametrize("path", MODULES, ids=module_name)
def test_imports_flow_one_way(path: Path):
    name = module_name(path)
    own = group_of(name)
    if own is None:  # bncore/__init__.py re-exports the layers
        return
    for node, target in bncore_imports(ast.parse(path.read_text())):
        other = group_of(target)
        if other is not None:
            assert GROUPS.index(other) <= GROUPS.index(own), (
                f"{name} (line {node.lineno}) imports {target}: {own} may import only from "
                f"{', '.join(GROUPS[: GROUPS.index(own) + 1])}"
            )


@pytest.mark.parametrize("path", MODULES, ids=module_name)
def test_bncore_imports_sit_at_the_top(path: Path):
    tree = ast.parse(path.read_text())
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            inner = bncore_imports(fn)
            assert not inner, f"{module_name(path)}: bncore import inside {fn.name} (line " \
                f"{inner[0][0].lineno}); imports go at the top"


def documented_modules() -> set[str]:
    pages = [ROOT / "book" / "api.md", *sorted((ROOT / "book" / "api").glob("*.md"))]
    text = "\n".join(p.read_text() for p in pages if p.exists())
    return set(re.findall(r"^\.\. automodule:: (bncore[\w.]*)", text, re.M))


@pytest.mark.parametrize("path", MODULES, ids=module_name)
def test_every_module_is_on_the_api_page(path: Path):
    name = module_name(path)
    if name == "bncore":
        return
    assert name in documented_modules(), f"{name} is missing from book/api/*.md"


@pytest.mark.parametrize("path", MODULES, ids=module_name)
def test_a_long_module_says_why(path: Path):
    text = path.read_text()
    lines = len(text.splitlines())
    if lines > MAX_LINES:
        doc = ast.get_docstring(ast.parse(text)) or ""
        assert "lines" in doc and "because" in doc.lower(), (
            f"{module_name(path)} has {lines} lines; split it, or say in its docstring why it "
            f"earns its length (a sentence with 'lines' and 'because')"
        )
