"""``bn_curvature.santurkar_slack``: Santurkar et al.'s Thm 4.1 and 4.2 on one random layer."""

from __future__ import annotations

import torch

from bncore.experiments.bn_curvature import random_bn_instance, santurkar_slack


def test_grad_slack_is_positive_for_eps_and_matches_the_exact_gap() -> None:
    r = santurkar_slack(0.1, seed=3)
    assert r.grad_slack.shape == (4,) and bool((r.grad_slack > 0).all())
    rel = (r.grad_slack - r.grad_slack_predicted).abs() / r.grad_slack_predicted
    assert float(rel.max()) < 1e-8


def test_eps_to_zero_makes_thm_41_an_equality_and_thm_42_an_identity() -> None:
    r = santurkar_slack(1e-14, seed=0)
    assert float(r.grad_slack.abs().max()) < 1e-10 * float(r.quad_in.abs().max() + 1)
    assert torch.allclose(r.quad_in, r.quad_bound, rtol=1e-8, atol=0)


def test_relative_eps_is_a_multiple_of_the_first_channels_batch_variance() -> None:
    var = float(random_bn_instance(2, num_channels=1)[0].var[0])
    r = santurkar_slack(1e-2, seed=2, relative=True, num_channels=1)
    assert r.eps == 1e-2 * var and float(r.var[0]) == var
