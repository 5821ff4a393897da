"""``bncore.experiments.eval_gap``: one seed of the train/eval gap study, and recalibration."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bncore.experiments.data import digits
from bncore.experiments.eval_gap import floor_gap, gap_after_training, recalibration_effect
from bncore.experiments.grid import run_grid
from bncore.norm.inference import train_eval_gap

TRAIN = {"width": 16, "depth": 2, "steps": 5, "lr": 0.1, "batch_size": 32,
         "eval_every": 0, "progress": False}


@pytest.fixture(scope="module")
def data():
    return digits()


def test_gaps_of_both_splits_per_batch_size_and_the_floors(data):
    grid = run_grid(gap_after_training, [{"norm": "bn"}], [0, 1], data=data,
                    batch_sizes=[4, 16], **TRAIN)
    assert grid.values("test.gap").shape == (1, 2, 2)
    run = grid.results[0][1]
    n = data.x_test.shape[0]
    expected = train_eval_gap(run.model, data.x_test, data.y_test, [n], batches_per_size=1)
    assert run.floor_test == pytest.approx(float(expected.gap[0]), rel=0, abs=0)
    np.testing.assert_array_equal(
        run.train.gap, train_eval_gap(run.model, data.x_train, data.y_train, [4, 16],
                                      seed=1).gap)
    assert np.all(grid.values("floor_train") > 0)


def test_recalibration_compares_the_layers_variances_before_and_after(data):
    torch.manual_seed(0)
    run = gap_after_training(data, seed=0, batch_sizes=[4], **TRAIN)
    before = run.model.blocks[1].norm.running_var.clone()  # the second BN layer
    effect = recalibration_effect(run.model, data, batch_size=32, seed=0)
    after = run.model.blocks[1].norm.running_var
    assert not torch.equal(before, after)
    assert effect.rel_var_change == float(((before - after).abs() / after).median())
    assert effect.floor_train == floor_gap(run.model, data.x_train, data.y_train)
    assert 0.0 <= effect.acc_before <= 1.0 and 0.0 <= effect.acc_after <= 1.0
