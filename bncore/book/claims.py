"""Checked claims: how a chapter asserts each number its prose states.

Every quantitative claim in the book is a call to one of these functions. It prints a one-line
``✓`` with the measured and expected values when the claim holds and raises :class:`ClaimError`
(an ``AssertionError``) with both values when it does not, so that nbval and the book build fail
loudly. :func:`glue` stores a value for the prose (myst-nb's ``glue``), and degrades to a no-op
where myst-nb is not installed (e.g. a chapter opened in Colab).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any, Literal

import numpy as np

from bncore.experiments.grid import standard_error

__all__ = [
    "ClaimError",
    "check",
    "check_between",
    "check_close",
    "check_less",
    "check_mean",
    "check_means_agree",
    "check_raises",
    "glue",
]


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


def check_mean(
    claim: str,
    samples: Any,
    expected: float,
    *,
    k: float = 3.0,
    atol: float = 0.0,
    spread: Literal["se", "sd"] = "se",
) -> None:
    r"""Assert that the mean of per-seed ``samples`` is within k standard errors of ``expected``.

    ``|v̄ − expected| ≤ k·se + atol`` with se = sd(v)/√n
    (:func:`~bncore.experiments.grid.standard_error`);
    ``atol`` is for a known bias the statistics do not cover (say where it comes from).
    ``spread="sd"`` puts the sample standard deviation sd(v) (``ddof=1``) in place of se, for a
    claim about a typical seed rather than about the mean. Needs at least two samples.
    """
    v = np.asarray(samples, dtype=float).ravel()
    if v.size < 2:
        raise ValueError(f"check_mean needs at least 2 samples for a standard error, got {v.size}")
    if spread not in ("se", "sd"):
        raise ValueError(f"spread must be 'se' or 'sd', got {spread!r}")
    mean, se = float(v.mean()), standard_error(v)
    width = se if spread == "se" else se * math.sqrt(v.size)  # sd = se·√n
    unit = "s.e." if spread == "se" else "s.d."
    err, bound = abs(mean - expected), k * width + atol
    extra = f" + {_fmt(atol)}" if atol else ""
    detail = (f"measured {_fmt(mean)} ± {_fmt(width)} (mean ± {unit}, n = {v.size}), expected "
              f"{_fmt(expected)}, |Δ| = {_fmt(err)} ≤ {k:g} {unit}{extra} = {_fmt(bound)}")
    if not (err <= bound):
        raise ClaimError(f"✗ {claim}: {detail.replace('≤', '>')}")
    print(f"✓ {claim}: {detail}")


def check_means_agree(claim: str, samples: Mapping[str, Any], *, k: float = 3.0) -> None:
    r"""Assert that several per-seed samples have means that differ by less than k s.e.

    max v̄ − min v̄ < k·√2·maxᵢ seᵢ, with seᵢ = sd(vᵢ)/√nᵢ: √(seᵢ² + seⱼ²) ≤ √2·max se bounds the
    standard error of every pairwise difference of means. ``samples`` maps a label to the values
    of one setting over the seeds; each needs at least two values.
    """
    if len(samples) < 2:
        raise ValueError(f"check_means_agree needs at least 2 samples, got {len(samples)}")
    arrays = {name: np.asarray(v, dtype=float).ravel() for name, v in samples.items()}
    if min(v.size for v in arrays.values()) < 2:
        raise ValueError("check_means_agree needs at least 2 values per sample")
    means = {name: float(v.mean()) for name, v in arrays.items()}
    m = np.array(list(means.values()))
    se = float(np.max([standard_error(v) for v in arrays.values()]))  # nan propagates
    spread, bound = float(m.max() - m.min()), k * math.sqrt(2) * se
    listed = ", ".join(f"{name} {_fmt(m)}" for name, m in means.items())
    detail = (f"means {listed}; largest difference {_fmt(spread)} < {k:g}·√2·max s.e. "
              f"= {_fmt(bound)}")
    if not (spread < bound):
        raise ClaimError(f"✗ {claim}: {detail.replace('<', 'is not <', 1)}")
    print(f"✓ {claim}: {detail}")


def check_raises(
    claim: str,
    exc_type: type[BaseException],
    fn: Callable[..., Any],
    *args: Any,
    match: str | None = None,
    **kwargs: Any,
) -> BaseException:
    """Assert that ``fn(*args, **kwargs)`` raises ``exc_type`` (message matching ``match``).

    Prints the message it caught and returns the exception. A call that returns, or raises
    something else, is a :class:`ClaimError`.
    """
    try:
        fn(*args, **kwargs)
    except exc_type as err:
        message = str(err)
        if match is not None and not re.search(match, message):
            raise ClaimError(
                f"✗ {claim}: {type(err).__name__} raised, but its message {message!r} does not "
                f"match {match!r}"
            ) from err
        print(f"✓ {claim}: {type(err).__name__}: {message}")
        return err
    except Exception as err:
        raise ClaimError(
            f"✗ {claim}: expected {exc_type.__name__}, got {type(err).__name__}: {err}"
        ) from err
    raise ClaimError(f"✗ {claim}: expected {exc_type.__name__}, but the call returned")


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
