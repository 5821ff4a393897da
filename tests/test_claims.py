"""``bncore.book.claims``: a claim that holds reads as one sentence, "what is claimed: measured X,
required Y ✓"; one that does not raises :class:`ClaimError` (an ``AssertionError``) with the
measured and the required value; NaN never passes. In IPython the checks of a cell fold into one
display output that carries their ledger records.
"""

from __future__ import annotations

import html
import json
import math
import re
import sys

import numpy as np
import pytest
import torch

from bncore.book import claims
from bncore.book.claims import (
    LEDGER_KEY,
    ClaimError,
    check,
    check_between,
    check_close,
    check_greater,
    check_less,
    check_mean,
    check_means_agree,
    check_raises,
    format_number,
    glue,
)


def test_claim_error_is_an_assertion_error():
    assert issubclass(ClaimError, AssertionError)


@pytest.mark.parametrize("value, text", [
    (1.518, "1.518"), (0.15, "0.15"), (0.001234, "0.001234"), (12345.6, "12346"),
    (4.6e-05, "4.6 × 10⁻⁵"), (1e-7, "10⁻⁷"), (2.5e6, "2.5 × 10⁶"), (-3e-9, "−3 × 10⁻⁹"),
    (0.0, "0"), (3, "3"), (math.nan, "NaN"), (math.inf, "∞"),
])
def test_format_number_writes_powers_of_ten_for_people(value, text):
    assert format_number(value) == text


def test_no_printed_number_uses_e_notation(capsys):
    check_less("error below round-off", 3e-9, 1e-7)
    check_close("tiny", 4.6e-05, 4.5e-05, atol=2e-6)
    out = capsys.readouterr().out
    assert not re.search(r"\de[+-]\d", out), out


def test_check_close_reads_as_measured_and_required(capsys):
    check_close("lambda matches theory", 1.02, 1.0, rtol=0.05)
    out = capsys.readouterr().out
    assert out == "lambda matches theory: measured 1.02, required 1 ± 0.05 ✓\n"


def test_check_close_raises_with_measured_and_required_in_message():
    with pytest.raises(ClaimError, match=r"✗ lambda matches theory: measured 1\.5 .*required 1 ±"):
        check_close("lambda matches theory", 1.5, 1.0, rtol=0.1)


def test_check_close_bound_is_atol_plus_rtol_times_expected():
    # |2.75 − 2| = 0.75 = atol 0.25 + rtol 0.25·2, exactly representable: the edge passes
    check_close("on the edge", 2.75, 2.0, rtol=0.25, atol=0.25)
    with pytest.raises(ClaimError, match=r"required 2 ± 0\.75"):
        check_close("just beyond", math.nextafter(2.75, 3.0), 2.0, rtol=0.25, atol=0.25)
    with pytest.raises(ClaimError):  # zero tolerance by default
        check_close("default is exact", 1.0 + 1e-12, 1.0)


@pytest.mark.parametrize("measured, expected", [(math.nan, 1.0), (1.0, math.nan),
                                                (math.nan, math.nan)])
def test_check_close_fails_on_nan(measured, expected):
    with pytest.raises(ClaimError, match="NaN"):
        check_close("nan never passes", measured, expected, rtol=1e9, atol=1e9)


def test_check_close_accepts_numpy_and_torch_scalars(capsys):
    check_close("numpy scalar", np.float32(0.5), torch.tensor(0.5), atol=1e-7)
    assert capsys.readouterr().out.endswith("✓\n")


def test_check_passes_and_fails_with_detail(capsys):
    check("signs agree", True, "3 of 3")
    assert capsys.readouterr().out == "signs agree (3 of 3) ✓\n"
    with pytest.raises(ClaimError, match=r"✗ signs agree \(1 of 3\)"):
        check("signs agree", False, "1 of 3")


def test_check_less_is_strict_and_never_reads_backwards(capsys):
    check_less("error below round-off", 3e-9, 1e-7)
    assert capsys.readouterr().out == (
        "error below round-off: measured 3 × 10⁻⁹, required < 10⁻⁷ ✓\n")
    with pytest.raises(ClaimError, match=r"measured 10⁻⁷, required < 10⁻⁷"):
        check_less("error below round-off", 1e-7, 1e-7)
    with pytest.raises(ClaimError, match=r"measured 2, required < 1"):
        check_less("two below one", 2.0, 1.0)


def test_check_greater_puts_the_measurement_first(capsys):
    check_greater("BN differs by more than 15 %", 0.1813, 0.15)
    assert capsys.readouterr().out == (
        "BN differs by more than 15 %: measured 0.1813, required > 0.15 ✓\n")
    with pytest.raises(ClaimError, match=r"measured 0\.1, required > 0\.15"):
        check_greater("BN differs by more than 15 %", 0.1, 0.15)
    with pytest.raises(ClaimError):
        check_greater("nan never passes", math.nan, -math.inf)


def test_check_less_fails_on_nan():
    with pytest.raises(ClaimError, match="measured NaN, required < 1"):
        check_less("nan never passes", math.nan, 1.0)


def test_check_between_is_inclusive_and_reports_the_interval(capsys):
    check_between("at the low end", 1.0, 1.0, 2.0)
    check_between("at the high end", 2.0, 1.0, 2.0)
    assert capsys.readouterr().out.count("required in [1, 2] ✓") == 2
    with pytest.raises(ClaimError, match=r"measured 2\.5, required in \[1, 2\]"):
        check_between("in range", 2.5, 1.0, 2.0)
    with pytest.raises(ClaimError, match=r"measured 0\.5, required in \[1, 2\]"):
        check_between("in range", 0.5, 1.0, 2.0)


def test_check_between_fails_on_nan():
    with pytest.raises(ClaimError, match="measured NaN"):
        check_between("nan never passes", math.nan, -math.inf, math.inf)


def test_a_failure_says_where_its_tolerance_comes_from():
    with pytest.raises(ClaimError, match=r"\(tolerance: 3 s\.e\. over 8 seeds\)"):
        check_less("small", 2.0, 1.0, why="3 s.e. over 8 seeds")


def test_glue_returns_none_so_a_cell_ending_with_it_shows_nothing(capsys):
    assert glue("test_claims_value", 0.25) is None
    assert "0.25" not in capsys.readouterr().out


def test_glue_is_a_no_op_without_myst_nb(monkeypatch):
    monkeypatch.setitem(sys.modules, "myst_nb", None)  # makes `import myst_nb` fail
    assert glue("test_claims_value", 0.25) is None


def test_check_mean_passes_within_k_standard_errors(capsys):
    samples = [0.9, 1.0, 1.1, 1.0]  # mean 1, se = 0.0408
    check_mean("rate matches", samples, 1.1, k=3)
    out = capsys.readouterr().out
    assert out == ("rate matches: measured 1 ± 0.04082 (mean ± s.e., n = 4), "
                   "required 1.1 ± 0.1225 ✓\n")


def test_check_mean_fails_beyond_k_standard_errors():
    with pytest.raises(ClaimError, match=r"✗ rate matches: measured 1 ± 0\.04082.*"
                                         r"required 1\.2 ± 0\.1225 \(tolerance: 3 standard"):
        check_mean("rate matches", [0.9, 1.0, 1.1, 1.0], 1.2, k=3)


def test_check_mean_needs_two_samples_and_fails_on_nan():
    with pytest.raises(ValueError, match="at least 2 samples"):
        check_mean("one seed", [1.0], 1.0)
    with pytest.raises(ClaimError):
        check_mean("nan", [1.0, math.nan], 1.0)


def test_check_mean_with_sd_spread_is_a_claim_about_a_typical_seed(capsys):
    samples = [0.9, 1.0, 1.1, 1.0]  # mean 1, sd = 0.08165, se = 0.04082
    check_mean("slope matches", samples, 1.2, k=3, spread="sd")  # 0.2 ≤ 3 sd = 0.245
    out = capsys.readouterr().out
    assert "± 0.08165 (mean ± s.d., n = 4)" in out and "required 1.2 ± 0.2449 ✓" in out
    with pytest.raises(ClaimError, match=r"required 1\.25 ± 0\.2449"):
        check_mean("slope matches", samples, 1.25, k=3, spread="sd")
    with pytest.raises(ValueError, match="spread must be"):
        check_mean("slope matches", samples, 1.0, spread="var")  # type: ignore[arg-type]


def test_check_means_agree_bounds_the_range_by_root_two_max_standard_errors(capsys):
    # sd = √(0.04/3) each, n = 4: se = 0.05774, bound 3·√2·se = 0.2449
    a, b = [0.9, 1.1, 0.9, 1.1], [1.1, 1.3, 1.1, 1.3]  # means 1.0 and 1.2
    check_means_agree("the blocks train alike", {"bn": a, "fixup": b}, k=3)
    out = capsys.readouterr().out
    assert out.startswith("the blocks train alike: measured largest difference of means 0.2 "
                          "(bn 1, fixup 1.2), required < 3·√2·max s.e. = 0.2449 ✓")
    with pytest.raises(ClaimError, match=r"required < 2·√2·max s\.e\. = 0\.1633"):
        check_means_agree("the blocks train alike", {"bn": a, "fixup": b}, k=2)


def test_check_means_agree_needs_two_samples_of_two_and_fails_on_nan():
    with pytest.raises(ValueError, match="at least 2 samples"):
        check_means_agree("alone", {"bn": [1.0, 2.0]})
    with pytest.raises(ValueError, match="2 values per sample"):
        check_means_agree("one seed", {"bn": [1.0, 2.0], "none": [1.0]})
    with pytest.raises(ClaimError):
        check_means_agree("nan", {"bn": [1.0, 2.0], "none": [1.0, math.nan]})


def test_check_raises_returns_the_exception_and_prints_its_message(capsys):
    err = check_raises("bad eps is refused", ValueError, float, "x", match="could not convert")
    assert isinstance(err, ValueError)
    assert capsys.readouterr().out.startswith(
        "bad eps is refused: measured ValueError: could not")


def test_check_raises_fails_when_the_call_returns_or_raises_otherwise():
    with pytest.raises(ClaimError, match="measured the call returned, required raises ValueE"):
        check_raises("refused", ValueError, float, "1.5")
    with pytest.raises(ClaimError, match=r"measured TypeError.*required raises ValueError"):
        check_raises("refused", ValueError, float, None)
    with pytest.raises(ClaimError, match="required raises ValueError matching"):
        check_raises("refused", ValueError, float, "x", match="^eps must be positive")


class _Events:
    def __init__(self):
        self.callbacks = []

    def register(self, event, callback):
        assert event == "post_run_cell"
        self.callbacks.append(callback)


class _Shell:
    """What ``_report`` needs of IPython: an events manager to flush after each cell."""

    def __init__(self):
        self.events = _Events()

    def run_cell(self):
        for callback in self.events.callbacks:
            callback(None)


@pytest.fixture
def shell(monkeypatch):
    pytest.importorskip("IPython")
    fake, shown = _Shell(), []
    monkeypatch.setattr(claims, "_ipython", lambda: fake)
    monkeypatch.setattr(claims, "_hooked", [])
    monkeypatch.setattr("IPython.display.display",
                        lambda obj, metadata, raw: shown.append({**obj, **metadata}))
    return fake, shown


def test_checks_of_one_cell_fold_into_one_expandable_output(shell, capsys):
    fake, shown = shell
    check_close("rate matches", 1.02, 1.0, rtol=0.05, why="3 s.e. over 8 seeds")
    check_mean("slope matches", [0.9, 1.0, 1.1, 1.0], 1.1)
    check("signs agree", True, "3 of 3")
    assert capsys.readouterr().out == "" and not shown  # nothing until the cell has run
    fake.run_cell()
    fake.run_cell()  # a cell with no checks shows nothing
    assert len(shown) == 1 and len(fake.events.callbacks) == 1
    bundle = shown[0]
    assert bundle["text/plain"].splitlines()[0] == (
        "rate matches: measured 1.02, required 1 ± 0.05 ✓")
    page = bundle["text/html"]
    assert page.startswith('<details class="bncore-claims"')
    summary = re.search("<summary>(.*)</summary>", page).group(1)
    assert html.unescape(summary).startswith("✓ 3 claims hold: rate matches; slope matches")
    records = json.loads(html.unescape(re.search('data-ledger="([^"]*)"', page).group(1)))
    assert records == bundle[LEDGER_KEY]
    assert [r["why"] for r in records] == [
        "3 s.e. over 8 seeds", "3 standard errors of the mean over n = 4 seeds",
        "a yes/no claim"]
    assert records[0]["measured"] == "1.02" and records[0]["required"] == "1 ± 0.05"
    assert records[1]["tolerance"] == "|Δ| ≤ 3 s.e. = 0.1225"


def test_a_single_check_shows_its_sentence_as_the_summary(shell):
    fake, shown = shell
    check_less("error below round-off", 3e-9, 1e-7)
    fake.run_cell()
    summary = re.search("<summary>(.*)</summary>", shown[0]["text/html"]).group(1)
    assert summary == "error below round-off: measured 3 × 10⁻⁹, required &lt; 10⁻⁷ ✓"
    assert shown[0][LEDGER_KEY][0]["why"] == "not stated"
