"""Checked claims: how a chapter asserts each number its prose states.

Every quantitative claim in the book is a call to one of these functions. A claim that holds
reads as one sentence, *what is claimed: measured X, required Y ✓*; one that does not raises
:class:`ClaimError` (an ``AssertionError``) with the same sentence and ✗, so that nbval and the
book build fail loudly. Numbers are written for people (``4.6 × 10⁻⁵``, never ``4.6e-05``;
:func:`format_number`). :func:`glue` stores a value for the prose (myst-nb's ``glue``), and
degrades to a no-op where myst-nb is not installed (e.g. a chapter opened in Colab).

Where the tolerance comes from: ``why=``
    Every check takes an optional keyword ``why=``, a few words saying where its tolerance comes
    from, computed or argued in the same cell, for example::

        check_close("ReLU rate matches theory", rate, theory, atol=3 * se,
                    why=f"3 standard errors over {n} networks")
        check_less("round-off of the fused kernel", err, 8 * n * u,
                   why="8·n·u, the forward error bound of a length-n sum")

    :func:`check_mean` and :func:`check_means_agree` derive it when it is not given ("3
    standard errors of the mean over 8 seeds"); :func:`check_close`, :func:`check_less`,
    :func:`check_greater` and :func:`check_between` cannot, and say "not stated" in the ledger
    until a chapter passes ``why=``. A check that compares a threshold with a measurement puts
    the *measurement* first: ``check_less(claim, measured, bound)`` or
    ``check_greater(claim, measured, bound)``, so that the sentence never reads backwards.

The ledger
    Outside IPython each passing check prints its sentence. In a notebook (IPython), the checks
    of one cell are collected and, when the cell has run, shown as one display output: a
    ``<details>`` element whose summary line the reader can expand into the sentences and the
    reasons for their tolerances. The same output carries the records (claim, measured,
    required, tolerance, why) as JSON in the output's metadata under :data:`LEDGER_KEY` and in
    the HTML's ``data-ledger`` attribute, so they are part of the executed notebook (and of its
    cached execution); the book's ``claim_ledger`` extension (``book/_ext``) collects them from
    every chapter into the ledger page, each linked back to its cell.
"""

from __future__ import annotations

import html
import json
import math
import re
import sys
from collections.abc import Callable, Mapping
from typing import Any, Literal

import numpy as np

from bncore.experiments.grid import standard_error

__all__ = [
    "LEDGER_KEY",
    "ClaimError",
    "check",
    "check_between",
    "check_close",
    "check_greater",
    "check_less",
    "check_mean",
    "check_means_agree",
    "check_raises",
    "format_number",
    "glue",
]

LEDGER_KEY = "bncore_claims"
"""The key of a cell's claim records in its display output's metadata."""

_NOT_STATED = "not stated"
_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


class ClaimError(AssertionError):
    """A claim made in the book's prose does not hold for the numbers just computed."""


def format_number(value: float, digits: int = 4) -> str:
    """``value`` for prose: ``digits`` significant digits, powers of ten as ``× 10⁻⁵``.

    Fixed notation from 10⁻³ up to 10⁵ (``0.001234``, ``1.518``, ``12346``); beyond that a
    mantissa times a power of ten with a superscript exponent (``4.6 × 10⁻⁵``, ``10⁶``).
    Integers below 10⁵ print as integers; NaN and infinities as ``NaN`` and ``∞``.
    """
    v = float(value)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "∞" if v > 0 else "−∞"
    if v == 0:
        return "0"
    sign = "−" if v < 0 else ""
    a = abs(v)
    if 1e-3 <= a < 1e5:
        if a >= 10 ** (digits - 1):  # no exponent for the integer part of a large value
            return sign + f"{a:.0f}"
        return sign + f"{a:.{digits}g}"
    mantissa, exponent = f"{a:.{digits - 1}e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    power = "10" + str(int(exponent)).translate(_SUPERSCRIPT)
    return sign + (power if mantissa == "1" else f"{mantissa} × {power}")


_fmt = format_number


# ---------------------------------------------------------------------------------------------
# Reporting: a sentence per check, printed, or folded per cell into one display output.


def _ipython() -> Any:
    """The shell of a running Jupyter kernel, or None (plain Python, pytest, a terminal).

    A kernel's shell has a ``kernel``; the bare ``InteractiveShell`` that ``IPython.display``
    creates on first use in plain Python (myst-nb's ``glue`` does) runs no cells.
    """
    if "IPython" not in sys.modules:
        return None
    from IPython import get_ipython

    shell = get_ipython()
    return shell if getattr(shell, "kernel", None) is not None else None


_pending: list[dict[str, str]] = []
_hooked: list[Any] = []  # the shell whose post_run_cell event flushes _pending


def _flush(*_: Any) -> None:
    """Show the checks of the cell that just ran as one expandable display output."""
    if not _pending:
        return
    records = list(_pending)
    _pending.clear()
    from IPython.display import display

    display(_bundle(records), metadata={LEDGER_KEY: records}, raw=True)


def _bundle(records: list[dict[str, str]]) -> dict[str, Any]:
    """The MIME bundle of a cell's checks: plain sentences, foldable HTML, the records."""
    sentences = [r["sentence"] for r in records]
    if len(records) == 1:
        summary = sentences[0]
    else:
        summary = f"✓ {len(records)} claims hold: " + "; ".join(r["claim"] for r in records)
        if len(summary) > 140:
            summary = summary[:139].rstrip() + "…"
    items = "".join(
        f"<li>{html.escape(r['sentence'])}<br><small>tolerance: {html.escape(r['tolerance'])}"
        f"; from: {html.escape(r['why'])}</small></li>"
        for r in records
    )
    data = html.escape(json.dumps(records, ensure_ascii=False), quote=True)
    page = (
        f'<details class="bncore-claims" data-ledger="{data}" '
        'style="white-space: normal; overflow-wrap: anywhere">'
        f"<summary>{html.escape(summary)}</summary>"
        f'<ul style="margin: 0.3em 0 0.3em 1.2em; padding: 0">{items}</ul></details>'
    )
    return {"text/plain": "\n".join(sentences), "text/html": page}


def _report(
    kind: str,
    claim: str,
    measured: str,
    required: str,
    tolerance: str,
    why: str | None,
    sentence: str = "",
) -> None:
    """Print (or collect, in IPython) the sentence of a check that holds."""
    sentence = sentence or f"{claim}: measured {measured}, required {required} ✓"
    record = {
        "kind": kind, "claim": claim, "measured": measured, "required": required,
        "tolerance": tolerance, "why": why or _NOT_STATED, "sentence": sentence,
    }
    shell = _ipython()
    if shell is None:
        print(sentence)
        return
    if shell not in _hooked:
        shell.events.register("post_run_cell", _flush)
        _hooked.append(shell)
    _pending.append(record)


def _fail(claim: str, measured: str, required: str, why: str | None) -> ClaimError:
    reason = f" (tolerance: {why})" if why else ""
    return ClaimError(f"✗ {claim}: measured {measured}, required {required}{reason}")


# ---------------------------------------------------------------------------------------------
# The checks.


def check(claim: str, ok: bool, detail: str = "", *, why: str | None = None) -> None:
    """Assert a yes/no claim; ``detail`` says what was measured."""
    suffix = f" ({detail})" if detail else ""
    if not ok:
        raise ClaimError(f"✗ {claim}{suffix}")
    _report("check", claim, detail or "yes", "yes", "—", why or "a yes/no claim",
            sentence=f"{claim}{suffix} ✓")


def check_close(
    claim: str,
    measured: float,
    expected: float,
    *,
    rtol: float = 0.0,
    atol: float = 0.0,
    why: str | None = None,
) -> None:
    """Assert ``|measured − expected| ≤ atol + rtol·|expected|``.

    The tolerance should come from the statistics of the measurement (e.g. a few standard errors
    across seeds) or from a round-off bound, not from whatever passed once; ``why=`` says where
    it comes from. Prints ``measured m, required e ± bound``.
    """
    measured, expected = float(measured), float(expected)
    err = abs(measured - expected)
    bound = atol + rtol * abs(expected)
    parts = ([f"rtol {_fmt(rtol)}"] if rtol else []) + ([f"atol {_fmt(atol)}"] if atol else [])
    tolerance = f"|Δ| ≤ {_fmt(bound)}" + (f" ({' + '.join(parts)})" if parts else " (exact)")
    required = f"{_fmt(expected)} ± {_fmt(bound)}"
    if not (err <= bound):  # also fails on NaN
        raise _fail(claim, f"{_fmt(measured)} (|Δ| = {_fmt(err)})", required, why)
    _report("check_close", claim, _fmt(measured), required, tolerance, why)


def check_less(claim: str, value: float, bound: float, *, why: str | None = None) -> None:
    """Assert ``value < bound``: the measured value first, the bound it must stay below second."""
    value, bound = float(value), float(bound)
    if not (value < bound):
        raise _fail(claim, _fmt(value), f"< {_fmt(bound)}", why)
    _report("check_less", claim, _fmt(value), f"< {_fmt(bound)}", f"< {_fmt(bound)}", why)


def check_greater(claim: str, value: float, bound: float, *, why: str | None = None) -> None:
    """Assert ``value > bound``: the measured value first, the bound it must exceed second."""
    value, bound = float(value), float(bound)
    if not (value > bound):
        raise _fail(claim, _fmt(value), f"> {_fmt(bound)}", why)
    _report("check_greater", claim, _fmt(value), f"> {_fmt(bound)}", f"> {_fmt(bound)}", why)


def check_between(
    claim: str, value: float, low: float, high: float, *, why: str | None = None
) -> None:
    """Assert ``low ≤ value ≤ high``."""
    value = float(value)
    interval = f"in [{_fmt(low)}, {_fmt(high)}]"
    if not (low <= value <= high):
        raise _fail(claim, _fmt(value), interval, why)
    _report("check_between", claim, _fmt(value), interval, interval, why)


def check_mean(
    claim: str,
    samples: Any,
    expected: float,
    *,
    k: float = 3.0,
    atol: float = 0.0,
    spread: Literal["se", "sd"] = "se",
    why: str | None = None,
) -> None:
    r"""Assert that the mean of per-seed ``samples`` is within k standard errors of ``expected``.

    ``|v̄ − expected| ≤ k·se + atol`` with se = sd(v)/√n
    (:func:`~bncore.experiments.grid.standard_error`);
    ``atol`` is for a known bias the statistics do not cover (say where it comes from in
    ``why=``). ``spread="sd"`` puts the sample standard deviation sd(v) (``ddof=1``) in place of
    se, for a claim about a typical seed rather than about the mean. Needs at least two samples.
    Without ``why=`` the ledger says "k standard errors of the mean over n seeds".
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
    tolerance = f"|Δ| ≤ {k:g} {unit}{extra} = {_fmt(bound)}"
    words = "standard errors of the mean" if spread == "se" else "sample standard deviations"
    derived = f"{k:g} {words} over n = {v.size} seeds" + (f", plus {_fmt(atol)}" if atol else "")
    measured = f"{_fmt(mean)} ± {_fmt(width)} (mean ± {unit}, n = {v.size})"
    required = f"{_fmt(expected)} ± {_fmt(bound)}"
    if not (err <= bound):
        raise _fail(claim, f"{measured}, |Δ| = {_fmt(err)}", required, why or derived)
    _report("check_mean", claim, measured, required, tolerance, why or derived)


def check_means_agree(
    claim: str, samples: Mapping[str, Any], *, k: float = 3.0, why: str | None = None
) -> None:
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
    n = min(v.size for v in arrays.values())
    derived = f"{k:g}·√2 × the largest standard error of a mean (n ≥ {n} seeds)"
    measured = f"largest difference of means {_fmt(spread)} ({listed})"
    required = f"< {k:g}·√2·max s.e. = {_fmt(bound)}"
    if not (spread < bound):
        raise _fail(claim, measured, required, why or derived)
    _report("check_means_agree", claim, measured, required, f"< {_fmt(bound)}", why or derived)


def check_raises(
    claim: str,
    exc_type: type[BaseException],
    fn: Callable[..., Any],
    *args: Any,
    match: str | None = None,
    **kwargs: Any,
) -> BaseException:
    """Assert that ``fn(*args, **kwargs)`` raises ``exc_type`` (message matching ``match``).

    Reports the message it caught and returns the exception. A call that returns, or raises
    something else, is a :class:`ClaimError`.
    """
    required = f"raises {exc_type.__name__}" + (f" matching {match!r}" if match else "")
    try:
        fn(*args, **kwargs)
    except exc_type as err:
        message = str(err)
        caught = f"{type(err).__name__}: {message}"
        if match is not None and not re.search(match, message):
            raise _fail(claim, caught, required, None) from err
        _report("check_raises", claim, caught, required, "—", "an error or none")
        return err
    except Exception as err:
        raise _fail(claim, f"{type(err).__name__}: {err}", required, None) from err
    raise _fail(claim, "the call returned", required, None)


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
