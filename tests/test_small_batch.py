"""The small-batch experiment's pieces: the renorm schedule, non-i.i.d. batches, the norms, and
one short training run; the chapter's figures draw.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from bncore.book.small_batch_figures import error_vs_batch_figure, norm_axes_figure
from bncore.experiments.data import digits
from bncore.experiments.small_batch import (
    NORMS,
    class_batches,
    feature_values,
    norm_layer,
    renorm_limits,
    train_small_batch,
)


def test_renorm_schedule_starts_as_batch_norm_and_ends_at_the_papers_limits():
    assert renorm_limits(0.0) == (1.0, 0.0)
    assert renorm_limits(0.1) == (1.0, 0.0)
    assert renorm_limits(1.0) == (3.0, 5.0)
    r, d = renorm_limits(0.3)
    assert 1.0 < r < 3.0 and 0.0 < d < 5.0


def test_class_batches_hold_the_requested_number_of_labels_each_once():
    labels = torch.arange(10).repeat_interleave(40)
    gen = torch.Generator().manual_seed(0)
    seen = torch.zeros(len(labels), dtype=torch.long)
    for idx in class_batches(labels, 2, 16, gen):
        assert len(idx) == 32
        assert len(torch.unique(labels[idx])) == 2
        seen[idx] += 1
    assert int(seen.max()) == 1 and int(seen.sum()) > len(labels) // 2


@pytest.mark.parametrize("kind", NORMS)
def test_every_norm_keeps_the_feature_shape(kind):
    layer = norm_layer(kind, 16, 4, 0.1)
    assert layer(torch.randn(8, 16)).shape == (8, 16)


def test_an_unknown_norm_is_refused():
    with pytest.raises(ValueError, match="unknown norm"):
        norm_layer("batchnorm", 16, 4, 0.1)


def test_a_short_run_learns_and_bn_at_m_2_gives_plus_minus_one():
    data = digits()
    run = train_small_batch("gn", 64, data, seed=0, epochs=1)
    assert run.test_error < 0.5  # chance is 0.9
    train, evaluated = feature_values("bn", 2, data, batches_seen=32)
    pairs = train.reshape(-1, 2)  # at m = 2 the two values of a pair are ±x̂, |x̂| ≤ 1
    assert torch.allclose(pairs.sum(1), torch.zeros(len(pairs)), atol=1e-6)
    assert float(train.abs().max()) <= 1.0
    assert evaluated.shape == train.shape


def test_the_figures_draw():
    figs = [norm_axes_figure(),
            error_vs_batch_figure([2, 4], {"bn": np.array([0.2, 0.1])},
                                  {"bn": np.array([0.01, 0.01])})]
    assert all(len(f.axes) >= 1 for f in figs)
    for f in figs:
        plt.close(f)
