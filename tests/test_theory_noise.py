"""``bncore.theory.variance_shift`` and ``bncore.theory.weight_decay``."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bncore import theory


@given(st.floats(0.05, 1.0), st.floats(-3, 3), st.floats(0.1, 5))
def test_variance_ratio_is_one_over_p_plus_the_mean_term(p, c, v):
    ratio = theory.dropout_variance_ratio(p, c, v)
    assert ratio == pytest.approx(1 / p + (1 / p - 1) * c**2 / v)
    assert ratio >= 1 / p * (1 - 1e-12)


def test_linear_shift_reduces_to_one_unit():
    w = np.eye(3)
    m2 = np.array([1.0, 2.0, 5.0])
    shift = theory.dropout_linear_variance_shift(0.5, w, m2)
    np.testing.assert_allclose(shift, m2)  # (1/p − 1)·E[x²] with p = 1/2
    one = theory.dropout_linear_variance_shift(0.5, np.eye(1), np.array([2.0]))  # c = v = 1
    assert theory.dropout_train_variance(0.5, 1.0, 1.0) - 1.0 == pytest.approx(one[0])


def test_bad_keep_probability_is_refused():
    with pytest.raises(ValueError, match="keep probability"):
        theory.dropout_train_variance(0.0, 0.0, 1.0)


def test_equilibrium_is_a_fixed_point_of_the_norm_recursion():
    lr, wd, g_unit = 0.2, 0.05, 1.7
    w2 = theory.equilibrium_norm(lr, wd, g_unit) ** 2
    assert (1 - lr * wd) ** 2 * w2 + lr**2 * g_unit**2 / w2 == pytest.approx(w2)
    assert theory.equilibrium_sq_norm(lr, wd, g_unit**2 / w2) == pytest.approx(w2)
    turn = lr**2 * (g_unit**2 / w2) / w2
    assert turn == pytest.approx(theory.equilibrium_angular_update(lr, wd))
    assert theory.effective_learning_rate(lr, np.sqrt(w2)) == pytest.approx(lr / w2)


def test_weight_decay_arguments_are_checked():
    with pytest.raises(ValueError, match="lr·wd < 2"):
        theory.equilibrium_sq_norm(1.0, 0.0, 1.0)
