"""Batch renormalization (Ioffe 2017, Alg. 1) and ghost batch norm (Hoffer et al. 2017).

Batch renorm with r_max = 1, d_max = 0 is batch norm in training (outputs and gradients, to the
float64 round-off bound); r and d are constants of the gradient; the moving averages are of μ
and σ. Ghost batch norm is batch norm per ghost batch with one running update each.
"""

from __future__ import annotations

import pytest
import torch
from norm_testing import close, tolerance
from torch import nn

import bncore

F64 = torch.float64


def _x(shape=(8, 5), seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=F64) * 2 + 1


@pytest.mark.parametrize(("ours", "theirs", "shape"), [
    (bncore.BatchRenorm1d, nn.BatchNorm1d, (8, 5)),
    (bncore.BatchRenorm2d, nn.BatchNorm2d, (4, 5, 3, 2)),
])
def test_batch_renorm_with_r_max_1_and_d_max_0_is_batch_norm(ours, theirs, shape):
    renorm, bn = ours(5, dtype=F64), theirs(5, dtype=F64)
    for _ in range(3):  # running statistics away from their initial values
        renorm(_x(shape, seed=_ + 10))
    x = _x(shape)
    grads = []
    for layer in (renorm, bn):
        xi = x.clone().requires_grad_()
        y = layer(xi)
        grads.append([y, *torch.autograd.grad(y, [xi, *layer.parameters()], torch.cos(x))])
    for got, want in zip(*grads, strict=True):
        assert close(got.detach(), want.detach(), x.numel() // 5)


def test_batch_renorm_treats_r_and_d_as_constants_in_the_backward():
    layer = bncore.BatchRenorm1d(5, r_max=3.0, d_max=5.0, dtype=F64)
    with torch.no_grad():
        layer.running_mean.fill_(0.7)
        layer.running_std.fill_(1.6)
    x = _x().requires_grad_()
    r, d = layer.correction(x)
    assert not torch.all(r == 1) and not torch.all(d == 0)
    dy = torch.cos(x.detach())
    (dx,) = torch.autograd.grad(layer(x), [x], dy)
    mean, var = x.mean(0), x.var(0, unbiased=False)
    want_y = (x - mean) / torch.sqrt(var + layer.eps) * r + d  # r, d detached constants
    (want,) = torch.autograd.grad(want_y, [x], dy)
    assert close(dx, want, 8)


def test_batch_renorm_keeps_moving_averages_of_the_mean_and_the_std():
    layer = bncore.BatchRenorm1d(5, momentum=0.25, dtype=F64)
    x = _x()
    layer(x)
    std = torch.sqrt(x.var(0, unbiased=False) + layer.eps)
    assert close(layer.running_mean, 0.25 * x.mean(0), 8)
    assert close(layer.running_std, 0.75 + 0.25 * std, 8)
    layer.eval()
    want = (x - layer.running_mean) / layer.running_std
    assert close(layer(x).detach(), want, 8)
    assert sorted(layer.state_dict()) == ["bias", "num_batches_tracked", "running_mean",
                                          "running_std", "weight"]


def test_batch_renorm_schedule_is_settable_and_changes_the_output():
    layer = bncore.BatchRenorm1d(5, dtype=F64)
    with torch.no_grad():
        layer.running_std.fill_(3.0)
    x = _x()
    plain = layer(x)
    layer.r_max, layer.d_max = 3.0, 5.0
    assert not torch.allclose(plain, layer(x))


def test_ghost_batch_norm_is_batch_norm_per_ghost_batch_with_one_update_each():
    ghost = bncore.GhostBatchNorm1d(5, virtual_batch_size=3, dtype=F64)
    bn = nn.BatchNorm1d(5, dtype=F64)
    x = _x((8, 5))
    y = ghost(x)
    want = torch.cat([bn(chunk) for chunk in x.split(3)])  # sequential updates: 3, 3, 2
    assert close(y.detach(), want.detach(), 3)
    assert int(ghost.num_batches_tracked) == 3
    for key in ("running_mean", "running_var"):
        assert close(ghost.state_dict()[key], bn.state_dict()[key], 3)
    ghost.eval()
    bn.eval()
    assert close(ghost(x).detach(), bn(x).detach(), 8)


def test_ghost_batch_norm_with_one_ghost_batch_is_batch_norm():
    ghost, bn = bncore.GhostBatchNorm2d(2, virtual_batch_size=64, dtype=F64), \
        nn.BatchNorm2d(2, dtype=F64)
    x = _x((4, 2, 3, 3))
    assert close(ghost(x).detach(), bn(x).detach(), 36)
    assert tolerance(36) < 1e-12


def test_ghost_batch_norm_refuses_a_nonpositive_virtual_batch_size():
    with pytest.raises(ValueError, match="virtual_batch_size must be positive"):
        bncore.GhostBatchNorm1d(5, virtual_batch_size=0)


def test_ghost_batch_norm_state_dict_loads_both_ways_with_batch_norm():
    ghost, bn = bncore.GhostBatchNorm1d(5, virtual_batch_size=2), nn.BatchNorm1d(5)
    ghost(torch.randn(8, 5))
    bn.load_state_dict(ghost.state_dict())
    back = bncore.GhostBatchNorm1d(5, virtual_batch_size=2)
    back.load_state_dict(bn.state_dict())
    for key, value in ghost.state_dict().items():
        assert torch.equal(back.state_dict()[key], value)


def test_batch_renorm_is_twice_differentiable_where_r_and_d_are_clipped():
    """With r and d at their clip limits they are locally constant, so the stop-gradient
    derivative is the true one and gradcheck can compare it with finite differences.
    """
    layer = bncore.BatchRenorm1d(3, momentum=0.0, r_max=2.0, d_max=1.0, dtype=F64)
    with torch.no_grad():
        layer.running_std.fill_(100.0)  # σ_B/σ < 1/2: r = 1/2
        layer.running_mean.fill_(-500.0)  # (μ_B − μ)/σ > 1: d = 1
    x = _x((6, 3)).requires_grad_()
    assert torch.autograd.gradcheck(layer, (x,))
    assert torch.autograd.gradgradcheck(layer, (x,))
