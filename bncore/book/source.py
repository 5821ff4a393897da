"""Show the source of a bncore function on a page, highlighted, as the reader would read it.

:func:`show_source` returns a :class:`Source`, which a notebook displays as a fenced ``python``
block (``text/markdown``): Jupyter highlights it, and the book renders it with Sphinx's own
highlighter, so it looks like every other listing. The docstring (and, on request, the
signature) is removed by position in the syntax tree, never by matching the text of
``__doc__``, so the result does not depend on how a Python version dedents docstrings.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Source:
    """Lines of Python to display; rendered as a fenced block in Jupyter and in the book."""

    code: str
    name: str = ""

    def _repr_markdown_(self) -> str:
        return f"```python\n{self.code}\n```\n"

    def __str__(self) -> str:
        return self.code


def _definition(tree: ast.Module) -> ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef:
    node = tree.body[0] if tree.body else None
    if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        raise TypeError("show_source needs a function, method or class")
    return node


def _docstring_node(node: ast.AST) -> ast.Expr | None:
    body = getattr(node, "body", [])
    first = body[0] if body else None
    if (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
            and isinstance(first.value.value, str)):
        return first
    return None


def show_source(*objs: Any, docstring: bool = False, signature: bool = True) -> Source:
    """The source of functions, methods or classes, without docstrings unless asked.

    Several objects are shown one after another in one listing. ``signature=False`` shows the
    body alone (dedented), for a listing whose prose has already named the function. Raises
    ``TypeError`` for anything that is not a function, method or class defined in Python source.
    """
    if not objs:
        raise TypeError("show_source needs a function, method or class")
    parts = [_listing(obj, docstring=docstring, signature=signature) for obj in objs]
    return Source("\n\n\n".join(parts), ", ".join(getattr(o, "__qualname__", "") for o in objs))


def _listing(obj: Any, *, docstring: bool, signature: bool) -> str:
    target = inspect.unwrap(obj)
    if not (inspect.isfunction(target) or inspect.ismethod(target) or inspect.isclass(target)):
        raise TypeError(f"show_source needs a function, method or class, got {type(obj).__name__}")
    text = textwrap.dedent(inspect.getsource(target))
    lines = text.splitlines()
    node = _definition(ast.parse(text))
    drop: set[int] = set()  # 0-based line numbers to leave out
    doc = _docstring_node(node)
    if doc is not None and not docstring:
        drop.update(range(doc.lineno - 1, doc.end_lineno or doc.lineno))
    first_body = node.body[0].lineno - 1
    if doc is not None and not docstring and len(node.body) > 1:
        first_body = node.body[1].lineno - 1
    if not signature:
        drop.update(range(0, first_body))
    kept = [line for i, line in enumerate(lines) if i not in drop]
    code = textwrap.dedent("\n".join(kept)) if not signature else "\n".join(kept)
    return code.strip("\n")
