"""Tests for bncore.norm.fold: folding eval-mode BN into the preceding Linear/Conv layer."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bncore.experiments.nets import MLP, ConvNet
from bncore.norm import torch_bn
from bncore.norm.fold import (
    LinearNormBlock,
    bn_affine,
    bn_eval_cost,
    fold_bn,
    fold_model,
    fold_sequential,
)

BN_CLASSES = {
    "bncore": {1: torch_bn.BatchNorm1d, 2: torch_bn.BatchNorm2d, 3: torch_bn.BatchNorm3d},
    "torch": {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d},
}


def _randomize_bn(bn: nn.Module, gen: torch.Generator) -> None:
    """Give a BN non-trivial running statistics and (if affine) γ, β."""
    c = bn.num_features
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(c, generator=gen, dtype=torch.float64))
        bn.running_var.copy_(torch.rand(c, generator=gen, dtype=torch.float64) * 3 + 0.1)
        if bn.weight is not None:
            bn.weight.copy_(torch.randn(c, generator=gen, dtype=torch.float64))
            bn.bias.copy_(torch.randn(c, generator=gen, dtype=torch.float64))


def _pair(kind: str, rank: int, bias: bool, affine: bool, impl: str, dtype: torch.dtype):
    gen = torch.Generator().manual_seed(1234)
    torch.manual_seed(0)
    if kind == "linear":
        layer = nn.Linear(7, 5, bias=bias, dtype=dtype)
        x = torch.randn(11, 7, generator=gen, dtype=torch.float64).to(dtype)
    else:
        conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[rank]
        layer = conv(4, 6, kernel_size=3, padding=1, stride=2, groups=2, bias=bias, dtype=dtype)
        x = torch.randn((3, 4) + (6,) * rank, generator=gen, dtype=torch.float64).to(dtype)
    bn = BN_CLASSES[impl][rank](layer.weight.shape[0], affine=affine, dtype=dtype)
    _randomize_bn(bn, gen)
    return layer.eval(), bn.eval(), x


CASES = [("linear", 1)] + [("conv", r) for r in (1, 2, 3)]


@pytest.mark.parametrize("kind,rank", CASES)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("impl", ["bncore", "torch"])
def test_folded_layer_matches_bn_of_layer_float64(kind, rank, bias, affine, impl):
    layer, bn, x = _pair(kind, rank, bias, affine, impl, torch.float64)
    folded = fold_bn(layer, bn)
    with torch.no_grad():
        ref = bn(layer(x))
        got = folded(x)
    assert type(folded) is type(layer)
    assert folded.bias is not None
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("kind,rank", CASES)
def test_folded_layer_matches_in_float32(kind, rank):
    layer, bn, x = _pair(kind, rank, True, True, "bncore", torch.float32)
    folded = fold_bn(layer, bn)
    with torch.no_grad():
        err = (folded(x) - bn(layer(x))).abs().max().item()
    assert folded.weight.dtype == torch.float32
    assert err < 1e-5  # float32 rounding of O(1) values, a few ulps (ulp ~ 1.2e-7)


def test_fold_formula_hand_computed():
    """1-in, 2-out linear layer; W' = aW and b' = a(b − μ̂) + β checked by hand."""
    layer = nn.Linear(1, 2).double()
    bn = torch_bn.BatchNorm1d(2, eps=0.0, dtype=torch.float64).eval()
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[2.0], [-1.0]]))
        layer.bias.copy_(torch.tensor([1.0, 3.0]))
        bn.running_mean.copy_(torch.tensor([0.5, 1.0]))
        bn.running_var.copy_(torch.tensor([4.0, 0.25]))
        bn.weight.copy_(torch.tensor([3.0, 1.0]))
        bn.bias.copy_(torch.tensor([0.0, -2.0]))
    folded = fold_bn(layer, bn)
    # a = γ/σ̂ = [3/2, 1/0.5] = [1.5, 2]
    torch.testing.assert_close(folded.weight, torch.tensor([[3.0], [-2.0]], dtype=torch.float64))
    # b' = a(b − μ̂) + β = [1.5·0.5 + 0, 2·2 − 2] = [0.75, 2]
    torch.testing.assert_close(folded.bias, torch.tensor([0.75, 2.0], dtype=torch.float64))


def test_bn_affine_matches_eval_forward():
    gen = torch.Generator().manual_seed(3)
    bn = torch_bn.BatchNorm1d(4, dtype=torch.float64)
    _randomize_bn(bn, gen)
    bn.eval()
    a, c = bn_affine(bn)
    z = torch.randn(9, 4, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(bn(z), a * z + c, rtol=0, atol=1e-13)


def test_fold_does_not_modify_inputs():
    layer, bn, _ = _pair("conv", 2, True, True, "torch", torch.float64)
    w, b, rm = layer.weight.clone(), layer.bias.clone(), bn.running_mean.clone()
    fold_bn(layer, bn)
    assert torch.equal(layer.weight, w) and torch.equal(layer.bias, b)
    assert torch.equal(bn.running_mean, rm)


def test_training_mode_bn_is_rejected():
    layer, bn, _ = _pair("linear", 1, True, True, "bncore", torch.float64)
    bn.train()
    with pytest.raises(ValueError, match="training mode"):
        fold_bn(layer, bn)


def test_bn_without_running_stats_is_rejected():
    layer = nn.Linear(3, 2)
    bn = nn.BatchNorm1d(2, track_running_stats=False).eval()
    with pytest.raises(ValueError, match="running statistics"):
        fold_bn(layer, bn)


def test_channel_mismatch_is_rejected():
    layer = nn.Conv2d(3, 8, 3)
    bn = torch_bn.BatchNorm2d(4).eval()
    with pytest.raises(ValueError, match="channel mismatch"):
        fold_bn(layer, bn)


def test_rank_mismatch_is_rejected():
    layer = nn.Conv2d(3, 4, 3)
    bn = torch_bn.BatchNorm1d(4).eval()
    with pytest.raises(ValueError, match="BatchNorm2d"):
        fold_bn(layer, bn)


def test_unsupported_types_are_rejected():
    with pytest.raises(TypeError, match="Linear"):
        fold_bn(nn.ConvTranspose2d(3, 4, 3), torch_bn.BatchNorm2d(4).eval())
    with pytest.raises(TypeError, match="BatchNorm"):
        fold_bn(nn.Linear(3, 4), nn.LayerNorm(4))
    with pytest.raises(TypeError, match="Sequential"):
        fold_sequential(nn.Linear(3, 4))


def _cnn(dtype: torch.dtype) -> nn.Sequential:
    torch.manual_seed(1)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1, bias=False), torch_bn.BatchNorm2d(4), nn.ReLU(),
        nn.Sequential(nn.Conv2d(4, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU()),
        nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(6 * 4 * 4, 10), torch_bn.BatchNorm1d(10), nn.ReLU(),
        torch_bn.BatchNorm1d(10),  # follows a ReLU: stays
        nn.Linear(10, 3),
    ).to(dtype)


def test_fold_sequential_matches_and_removes_foldable_bns():
    model = _cnn(torch.float64)
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(16, 1, 8, 8, generator=gen, dtype=torch.float64)
    model.train()
    with torch.no_grad():
        for _ in range(5):  # non-trivial running statistics
            model(x + torch.randn(x.shape, generator=gen, dtype=torch.float64))
    model.eval()
    folded = fold_sequential(model)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=0, atol=1e-12)
    before, after = bn_eval_cost(model, x), bn_eval_cost(folded, x)
    assert before.layers == 4 and after.layers == 1
    assert before.elements == 16 * (4 * 64 + 6 * 64 + 10 + 10)
    assert after.elements == 16 * 10 and after.flops == 2 * 16 * 10
    # stored: 4 per channel + num_batches_tracked per BN
    assert before.stored == 4 * (4 + 6 + 10 + 10) + 4
    assert not folded.training
    assert model[0].bias is None  # original untouched


def test_fold_sequential_rejects_training_bn():
    model = _cnn(torch.float32)
    model.eval()
    model[3][1].train()
    with pytest.raises(ValueError, match=r"3\.1"):
        fold_sequential(model)


def test_bn_eval_cost_requires_eval_mode():
    with pytest.raises(ValueError, match="eval"):
        bn_eval_cost(_cnn(torch.float32).train(), torch.zeros(2, 1, 8, 8))


@pytest.mark.parametrize("kind", ["mlp", "convnet"])
def test_fold_model_folds_the_books_nets(kind):
    torch.manual_seed(2)
    if kind == "mlp":
        model = MLP(64, 32, 3, 10, norm="bn").double()
        x = torch.randn(20, 64, dtype=torch.float64)
    else:
        model = ConvNet(channels=(4, 8, 8), norm="bn").double()
        x = torch.randn(20, 1, 8, 8, dtype=torch.float64)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(x * 1.5 + 0.3)
    model.eval()
    folded = fold_model(model)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=0, atol=1e-12)
    assert bn_eval_cost(folded, x).layers == 0
    assert bn_eval_cost(model, x).layers == 3
    assert all(torch_bn.BatchNorm1d not in map(type, b.modules()) for b in folded.blocks)


def test_fold_model_rejects_training_mode():
    with pytest.raises(ValueError, match="training mode"):
        fold_model(MLP(4, 4, 1, 2).train())


class _Unit(nn.Module):
    """A block defined outside bncore with the shape fold recognizes: relu(norm(linear(x)))."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(6, 5)
        self.norm = nn.BatchNorm1d(5)

    def forward_pre(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.linear(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.forward_pre(x))


def test_fold_model_recognizes_any_linear_norm_block_by_its_structure():
    torch.manual_seed(3)
    model = nn.ModuleList([_Unit(), _Unit()]).double()
    assert isinstance(model[0], LinearNormBlock)
    assert not isinstance(model[0].linear, LinearNormBlock)
    assert isinstance(MLP(4, 4, 1, 2).blocks[0], LinearNormBlock)
    x = torch.randn(16, 6, dtype=torch.float64)
    for unit in model:
        unit.train()
        with torch.no_grad():
            unit(2 * x + 1)
    model.eval()
    folded = fold_model(model)
    assert all(isinstance(u.norm, nn.Identity) for u in folded)
    with torch.no_grad():
        for unit, original in zip(folded, model, strict=True):
            torch.testing.assert_close(unit(x), original(x), rtol=0, atol=1e-12)
