"""``bncore.book.source``: listings without docstrings, found by the syntax tree."""

from __future__ import annotations

import pytest

from bncore.book.source import Source, show_source


def documented(x: int) -> int:
    """A docstring that spans lines.

    With a \"\"\" inside.
    """
    y = x + 1  # the body
    return y


class Documented:
    """A class."""

    def method(self) -> int:
        """A method."""
        return 1


def test_docstring_is_dropped_and_the_code_kept():
    code = show_source(documented).code
    assert "docstring" not in code and "With a" not in code
    assert code.splitlines() == [
        "def documented(x: int) -> int:", "    y = x + 1  # the body", "    return y"]


def test_docstring_kept_on_request():
    assert "With a" in show_source(documented, docstring=True).code


def test_body_alone_is_dedented():
    assert show_source(documented, signature=False).code == "y = x + 1  # the body\nreturn y"


def test_methods_and_classes():
    assert show_source(Documented.method).code == "def method(self) -> int:\n    return 1"
    assert "A class" not in show_source(Documented).code


def test_renders_as_a_fenced_python_block():
    shown = show_source(documented)
    assert isinstance(shown, Source)
    assert shown._repr_markdown_().startswith("```python\ndef documented")
    assert str(shown) == shown.code


def test_refuses_what_is_not_a_definition():
    with pytest.raises(TypeError, match="function, method or class"):
        show_source(42)


def test_several_objects_in_one_listing():
    code = show_source(documented, Documented.method).code
    assert code.startswith("def documented")
    assert code.endswith("def method(self) -> int:\n    return 1")
    with pytest.raises(TypeError):
        show_source()
