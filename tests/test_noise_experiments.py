"""The practice chapter's experiments: lr_init_grid, regularization, dropout_shift,
wd_equilibrium and training_probes, on tiny settings.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bncore import theory
from bncore.experiments.batched_mlp import BatchedMLP
from bncore.experiments.data import digits
from bncore.experiments.dropout_shift import (
    monte_carlo_variance,
    network_variance_shift,
    placement_accuracy,
)
from bncore.experiments.lr_init_grid import lr_init_grid, region_fraction, steps_to
from bncore.experiments.nets import MLP
from bncore.experiments.regularization import dropout_gap, ghost_gap, subsample
from bncore.experiments.train import train
from bncore.experiments.training_probes import (
    activation_probe,
    ratio_probe,
    saturated_fraction,
    stack_records,
)
from bncore.experiments.wd_equilibrium import batch_means, equilibrium_runs, stationary_means


@pytest.fixture(scope="module")
def data():
    return digits()


def test_lr_init_grid_shapes_and_region(data):
    g = lr_init_grid(data, [0.1, 1.0], [0.5, 1.0, 2.0], [0, 1], norm="bn", steps=20,
                     width=8, depth=1, eval_every=10)
    assert g.test_acc.shape == (2, 2, 3, 2) and g.final_acc.shape == (2, 3, 2)
    assert region_fraction(g, 0.0).tolist() == [1.0, 1.0]
    assert np.all(steps_to(g, 0.0) == 10) and np.all(np.isinf(steps_to(g, 1.01)))


def test_subsample_is_balanced_and_keeps_the_test_split(data):
    small = subsample(data, 100)
    counts = np.bincount(small.y_train.numpy(), minlength=10)
    assert counts.sum() == 100 and counts.max() - counts.min() <= 1
    assert small.x_test is data.x_test


def test_gap_runs_return_one_value_per_seed(data):
    small = subsample(data, 64)
    g = ghost_gap(small, 4, [0, 1, 2], steps=5, width=8)
    assert g.gap.shape == (3,)
    d = dropout_gap(small, [1.0, 0.5], [0, 1], steps=5, width=8)
    assert d.gap.shape == (2, 2)


def test_monte_carlo_matches_li_et_al():
    var, se = monte_carlo_variance(0.5, 1.0, 2.0, n=100_000, seed=0)
    assert abs(var - theory.dropout_train_variance(0.5, 1.0, 2.0)) < 4 * se


def test_network_variance_shift_matches_the_linear_formula():
    net = BatchedMLP(2, 6, 32, 2, 3, keep=0.5, dropout_after=[0], seed=0)
    shift = network_variance_shift(net, torch.randn(4000, 6), 1)
    assert abs(np.mean(shift.train / shift.predicted) - 1) < 0.02
    assert np.all(shift.train > shift.test)
    with pytest.raises(ValueError, match="no dropout"):
        network_variance_shift(net, torch.randn(10, 6), 0)


def test_dropout_after_the_last_bn_leaves_the_statistics_alone(data):
    r = placement_accuracy(data, [1], 0.5, [0, 1], steps=5, width=8, depth=2)
    np.testing.assert_array_equal(r.running, r.recalibrated)


def test_equilibrium_runs_and_their_time_averages(data):
    runs = equilibrium_runs(data, [(0.1, 0.1)], seeds=2, steps=20, width=8)
    assert runs.weight_sq.shape == (20, 1, 2, 2)
    avg = stationary_means(runs)
    assert avg["w_sq"].shape == (1, 2, 2) and np.all(avg["w_sq_se"] >= 0)
    mean, se = batch_means(np.arange(20.0), n_batches=4)
    assert mean == pytest.approx(9.5) and se > 0


def test_probes_record_saturation_and_ratios(data):
    torch.manual_seed(0)
    model = MLP(64, 16, 2, 10, norm="none", activation="tanh", weight_std=4.0)
    hist = train(model, data, steps=3, lr=0.1, progress=False, probe_every=1,
                 probes={"act": activation_probe(data.x_train[:32], np.linspace(-1, 1, 5)),
                         "ratio": ratio_probe(0.1)})
    sat = stack_records(hist.probes["act"], "saturated")
    assert sat.shape == (3, 2) and np.all(sat > 0.3)
    hists = stack_records(hist.probes["act"], "hist")
    assert hists.shape == (3, 2, 4) and np.all(hists.sum(-1) == 32 * 16)
    r = stack_records(hist.probes["ratio"], "update_data")
    np.testing.assert_allclose(r, 0.1 * stack_records(hist.probes["ratio"], "grad_data"))


def test_saturation_definitions():
    a = torch.tensor([0.0, 0.5, 0.99, -0.98])
    assert saturated_fraction(a, "tanh") == 0.5
    assert saturated_fraction(torch.relu(a), "relu") == 0.5
    with pytest.raises(ValueError, match="no saturation"):
        saturated_fraction(a, "linear")
