"""``bncore.experiments.grid``: one runner over settings × seeds, and standard errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bncore.experiments.grid import (
    Grid,
    run_grid,
    standard_error,
    standard_error_of_difference,
)


def affine(setting: float, seed: int, offset: float = 0.0) -> float:
    return 10 * setting + seed + offset


def draw(setting: int, seed: int) -> float:
    return float(torch.randn(()).item()) + setting


def test_values_are_settings_by_seeds_and_fixed_kwargs_reach_every_run():
    grid = run_grid(affine, [1, 2], [0, 1, 2], offset=0.5)
    assert isinstance(grid, Grid)
    np.testing.assert_array_equal(grid.values(), [[10.5, 11.5, 12.5], [20.5, 21.5, 22.5]])
    assert grid.row(2) == (20.5, 21.5, 22.5)


def test_mean_sem_is_mean_and_sd_over_root_n():
    mean, sem = run_grid(affine, [1.0], [0, 1, 2]).mean_sem()
    np.testing.assert_allclose(mean, [11.0])
    np.testing.assert_allclose(sem, [1.0 / math.sqrt(3)])


def test_dict_settings_are_keyword_arguments_and_fields_are_read_by_name():
    grid = run_grid(dict, [{"a": 1.0}, {"a": 2.0}], [7])
    np.testing.assert_array_equal(grid.values("a"), [[1.0], [2.0]])
    np.testing.assert_array_equal(grid.values("seed"), [[7.0], [7.0]])


def test_each_run_is_seeded_so_a_grid_is_reproducible():
    first, second = run_grid(draw, [0, 1], [3, 4]), run_grid(draw, [0, 1], [3, 4])
    np.testing.assert_array_equal(first.values(), second.values())
    assert first.values()[0, 0] == first.values()[1, 0] - 1  # same seed, same draw


def test_an_empty_grid_is_an_error():
    with pytest.raises(ValueError, match="at least one setting and one seed"):
        run_grid(affine, [], [0])
    with pytest.raises(ValueError, match="at least one setting and one seed"):
        run_grid(affine, [1], [])


def test_standard_error_and_its_edge_cases():
    assert standard_error([1.0, 2.0, 3.0]) == pytest.approx(1 / math.sqrt(3))
    assert math.isnan(standard_error([1.0]))
    np.testing.assert_allclose(standard_error(np.ones((4, 2)), axis=0), [0.0, 0.0])


def test_standard_error_of_difference_independent_and_paired():
    a, b = np.array([1.0, 2.0, 3.0]), np.array([2.0, 3.5, 4.0])
    assert standard_error_of_difference(a, b) == pytest.approx(
        math.hypot(standard_error(a), standard_error(b)))
    assert standard_error_of_difference(a, b, paired=True) == pytest.approx(standard_error(a - b))
    with pytest.raises(ValueError, match="same shape"):
        standard_error_of_difference(a, b[:2], paired=True)


def profile(setting: float, seed: int) -> dict[str, dict[str, np.ndarray]]:
    return {"fit": {"curve": setting * np.arange(3.0) + seed}}


def test_array_fields_add_their_axes_after_the_seeds_and_dotted_names_reach_inside():
    grid = run_grid(profile, [1.0, 2.0], [0, 1])
    values = grid.values("fit.curve")
    assert values.shape == (2, 2, 3)  # settings × seeds × the field's own axis
    np.testing.assert_array_equal(values[1, 1], [1.0, 3.0, 5.0])
    mean, sem = grid.mean_sem("fit.curve")
    np.testing.assert_allclose(mean, [[0.5, 1.5, 2.5], [0.5, 2.5, 4.5]])
    np.testing.assert_allclose(sem, np.full((2, 3), 0.5))  # sd √0.5 over √2 seeds
