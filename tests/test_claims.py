"""``bncore.book.claims``: a claim that holds prints one ✓ line; one that does not raises
:class:`ClaimError` (an ``AssertionError``) with the measured and the expected value; NaN never
passes.
"""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import torch

from bncore.book.claims import (
    ClaimError,
    check,
    check_between,
    check_close,
    check_less,
    check_mean,
    check_means_agree,
    check_raises,
    glue,
)


def test_claim_error_is_an_assertion_error():
    assert issubclass(ClaimError, AssertionError)


def test_check_close_passes_within_tolerance_and_prints_both_values(capsys):
    check_close("lambda matches theory", 1.02, 1.0, rtol=0.05)
    out = capsys.readouterr().out
    assert out.startswith("✓ lambda matches theory") and out.count("\n") == 1
    assert "measured 1.02" in out and "expected 1" in out


def test_check_close_raises_with_measured_and_expected_in_message():
    with pytest.raises(ClaimError, match=r"✗ lambda matches theory: measured 1\.5, expected 1\b"):
        check_close("lambda matches theory", 1.5, 1.0, rtol=0.1)


def test_check_close_bound_is_atol_plus_rtol_times_expected():
    # |2.75 − 2| = 0.75 = atol 0.25 + rtol 0.25·2, exactly representable: the edge passes
    check_close("on the edge", 2.75, 2.0, rtol=0.25, atol=0.25)
    with pytest.raises(ClaimError, match=r"> 0\.75"):
        check_close("just beyond", math.nextafter(2.75, 3.0), 2.0, rtol=0.25, atol=0.25)
    with pytest.raises(ClaimError):  # zero tolerance by default
        check_close("default is exact", 1.0 + 1e-12, 1.0)


@pytest.mark.parametrize("measured, expected", [(math.nan, 1.0), (1.0, math.nan),
                                                (math.nan, math.nan)])
def test_check_close_fails_on_nan(measured, expected):
    with pytest.raises(ClaimError, match="nan"):
        check_close("nan never passes", measured, expected, rtol=1e9, atol=1e9)


def test_check_close_accepts_numpy_and_torch_scalars(capsys):
    check_close("numpy scalar", np.float32(0.5), torch.tensor(0.5), atol=1e-7)
    assert capsys.readouterr().out.startswith("✓")


def test_check_passes_and_fails_with_detail(capsys):
    check("signs agree", True, "3 of 3")
    assert capsys.readouterr().out == "✓ signs agree (3 of 3)\n"
    with pytest.raises(ClaimError, match=r"✗ signs agree \(1 of 3\)"):
        check("signs agree", False, "1 of 3")


def test_check_less_is_strict_and_reports_both_values(capsys):
    check_less("error below 1e-7", 3e-9, 1e-7)
    assert "3e-09 < 1e-07" in capsys.readouterr().out
    with pytest.raises(ClaimError, match=r"error below 1e-7: 1e-07 is not < 1e-07"):
        check_less("error below 1e-7", 1e-7, 1e-7)
    with pytest.raises(ClaimError, match=r"2 is not < 1"):
        check_less("two below one", 2.0, 1.0)


def test_check_less_fails_on_nan():
    with pytest.raises(ClaimError, match="nan is not < 1"):
        check_less("nan never passes", math.nan, 1.0)


def test_check_between_is_inclusive_and_reports_the_interval(capsys):
    check_between("at the low end", 1.0, 1.0, 2.0)
    check_between("at the high end", 2.0, 1.0, 2.0)
    assert capsys.readouterr().out.count("✓") == 2
    with pytest.raises(ClaimError, match=r"2\.5 is outside \[1, 2\]"):
        check_between("in range", 2.5, 1.0, 2.0)
    with pytest.raises(ClaimError, match=r"0\.5 is outside \[1, 2\]"):
        check_between("in range", 0.5, 1.0, 2.0)


def test_check_between_fails_on_nan():
    with pytest.raises(ClaimError, match="nan is outside"):
        check_between("nan never passes", math.nan, -math.inf, math.inf)


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
    assert out.startswith("✓ rate matches") and "± 0.04082" in out and "n = 4" in out


def test_check_mean_fails_beyond_k_standard_errors():
    with pytest.raises(ClaimError, match=r"✗ rate matches: measured 1 ± 0\.04082.*> 3 s\.e\."):
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
    assert "± 0.08165 (mean ± s.d., n = 4)" in out and "≤ 3 s.d. = 0.2449" in out
    with pytest.raises(ClaimError, match=r"> 3 s\.d\. = 0\.2449"):
        check_mean("slope matches", samples, 1.25, k=3, spread="sd")
    with pytest.raises(ValueError, match="spread must be"):
        check_mean("slope matches", samples, 1.0, spread="var")  # type: ignore[arg-type]


def test_check_means_agree_bounds_the_range_by_root_two_max_standard_errors(capsys):
    # sd = √(0.04/3) each, n = 4: se = 0.05774, bound 3·√2·se = 0.2449
    a, b = [0.9, 1.1, 0.9, 1.1], [1.1, 1.3, 1.1, 1.3]  # means 1.0 and 1.2
    check_means_agree("the blocks train alike", {"bn": a, "fixup": b}, k=3)
    out = capsys.readouterr().out
    assert out.startswith("✓ the blocks train alike: means bn 1, fixup 1.2")
    assert "largest difference 0.2 < 3·√2·max s.e. = 0.2449" in out
    with pytest.raises(ClaimError, match=r"largest difference 0\.2 is not < 2·√2·max s\.e\."):
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
    assert capsys.readouterr().out.startswith("✓ bad eps is refused: ValueError: could not")


def test_check_raises_fails_when_the_call_returns_or_raises_otherwise():
    with pytest.raises(ClaimError, match="but the call returned"):
        check_raises("refused", ValueError, float, "1.5")
    with pytest.raises(ClaimError, match="expected ValueError, got TypeError"):
        check_raises("refused", ValueError, float, None)
    with pytest.raises(ClaimError, match="does not match"):
        check_raises("refused", ValueError, float, "x", match="^eps must be positive")
