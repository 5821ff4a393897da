"""Checked claims: how a chapter asserts each number its prose states.

Every quantitative claim in the book is a call to one of these functions. It prints a one-line
``✓`` with the measured and expected values when the claim holds and raises :class:`ClaimError`
(an ``AssertionError``) with both values when it does not, so that nbval and the book build fail
loudly. :func:`glue` stores a value for the prose (myst-nb's ``glue``), and degrades to a no-op
where myst-nb is not installed (e.g. a chapter opened in Colab).
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["ClaimError", "check", "check_between", "check_close", "check_less", "glue"]


class ClaimError(AssertionError):
    """A claim made in the book's prose does not hold for the numbers just computed."""


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def check(claim: str, ok: bool, detail: str = "") -> None:
    """Assert a yes/no claim; ``detail`` says what was measured."""
    suffix = f" ({detail})" if detail else ""
    if not ok:
        raise ClaimError(f"✗ {claim}{suffix}")
    print(f"✓ {claim}{suffix}")


def check_close(
    claim: str, measured: float, expected: float, *, rtol: float = 0.0, atol: float = 0.0
) -> None:
    """Assert ``|measured − expected| ≤ atol + rtol·|expected|``.

    The tolerance should come from the statistics of the measurement (e.g. a few standard errors
    across seeds), not from whatever passed once; say in the chapter where it comes from.
    """
    measured, expected = float(measured), float(expected)
    err = abs(measured - expected)
    bound = atol + rtol * abs(expected)
    rel = err / abs(expected) if expected else math.inf
    detail = (
        f"measured {_fmt(measured)}, expected {_fmt(expected)}, "
        f"|Δ| = {_fmt(err)} (rel. {rel:.2%}) ≤ {_fmt(bound)}"
    )
    if not (err <= bound):  # also fails on NaN
        raise ClaimError(f"✗ {claim}: {detail.replace('≤', '>')}")
    print(f"✓ {claim}: {detail}")


def check_less(claim: str, value: float, bound: float) -> None:
    """Assert value < bound."""
    value, bound = float(value), float(bound)
    if not (value < bound):
        raise ClaimError(f"✗ {claim}: {_fmt(value)} is not < {_fmt(bound)}")
    print(f"✓ {claim}: {_fmt(value)} < {_fmt(bound)}")


def check_between(claim: str, value: float, low: float, high: float) -> None:
    """Assert low ≤ value ≤ high."""
    value = float(value)
    if not (low <= value <= high):
        raise ClaimError(f"✗ {claim}: {_fmt(value)} is outside [{_fmt(low)}, {_fmt(high)}]")
    print(f"✓ {claim}: {_fmt(value)} in [{_fmt(low)}, {_fmt(high)}]")


def glue(name: str, value: Any, display: bool = False) -> None:
    """Store ``value`` under ``name`` for ``{glue:text}`` roles in the prose.

    Uses ``myst_nb.glue`` when myst-nb is installed (the book build and the test suite);
    elsewhere it does nothing. Like ``myst_nb.glue`` it returns ``None``, so a cell that ends
    with a call to it shows no stray output.
    """
    try:
        from myst_nb import glue as _glue
    except ImportError:
        return
    _glue(name, value, display=display)
