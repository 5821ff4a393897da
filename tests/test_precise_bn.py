"""PreciseBN (population statistics by count-weighted merge) and FrozenBN (a fixed affine map)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bncore.norm.frozen_bn import FrozenBatchNorm, freeze_batchnorm
from bncore.norm.precise_bn import precise_bn
from bncore.norm.torch_bn import BatchNorm1d

TOL = {"rtol": 1e-12, "atol": 1e-12}  # float64 sums of ≤ 64 values: round-off ~1e-14


def data(n: int = 38, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return 2 + 3 * torch.randn(n, 4, generator=gen, dtype=torch.float64)


@pytest.mark.parametrize("batch_size", [2, 5, 38])
def test_precise_bn_gives_the_statistics_of_all_values_for_any_batch_size(batch_size):
    x = data()
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(4, 3), BatchNorm1d(3)).double()
    model.eval()
    seen = precise_bn(model, x.split(batch_size))
    h = model[0](x).detach()
    assert seen == -(-len(x) // batch_size)
    torch.testing.assert_close(model[1].running_mean, h.mean(0), **TOL)
    torch.testing.assert_close(model[1].running_var, h.var(0, unbiased=False), **TOL)
    assert not model.training and int(model[1].num_batches_tracked) == 0


def test_precise_bn_is_exact_where_averaged_batch_variances_are_not():
    # batches grouped by value (sorted): the average of m/(m-1)·σ_B² misses the spread of the
    # batch means; PreciseBN's merge gives the variance of all values whatever the grouping
    x = data(40)
    x = x[x[:, 0].argsort()]
    bn = nn.BatchNorm1d(4, momentum=None).double()
    for chunk in x.split(2):
        bn(chunk)
    cumulative = bn.running_var.clone()
    precise_bn(bn, x.split(2))
    torch.testing.assert_close(bn.running_var, x.var(0, unbiased=False), **TOL)
    assert (cumulative - bn.running_var).abs().max() > 1e-3


def test_precise_bn_refuses_a_model_without_bn():
    with pytest.raises(ValueError, match="no BN layer"):
        precise_bn(nn.Linear(2, 2), [torch.randn(3, 2)])


def test_frozen_bn_is_the_same_map_in_training_and_eval():
    bn = nn.BatchNorm1d(4).double()
    bn(data())
    bn.eval()
    frozen = FrozenBatchNorm.from_batchnorm(bn)
    x = data(9, seed=3).requires_grad_(True)
    y_train = frozen.train()(x)
    torch.testing.assert_close(y_train, frozen.eval()(x), rtol=0, atol=0)
    torch.testing.assert_close(y_train, bn(x), **TOL)
    y_train.sum().backward()  # no coupling between examples: dx = γ·s for every row
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    torch.testing.assert_close(x.grad, scale.expand_as(x).detach(), **TOL)


def test_freeze_batchnorm_converts_recursively_and_keeps_gamma_beta():
    net = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3), nn.Sequential(BatchNorm1d(3)))
    weight = net[1].weight
    net = freeze_batchnorm(net)
    assert isinstance(net[1], FrozenBatchNorm) and isinstance(net[2][0], FrozenBatchNorm)
    assert net[1].weight is weight
    with pytest.raises(RuntimeError, match="should contain 3 elements not 5"):
        FrozenBatchNorm(5)(torch.randn(2, 3))
