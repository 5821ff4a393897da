"""Residual networks: shapes, determinism, and the initialization each variant promises."""

from __future__ import annotations

import math

import pytest
import torch

from bncore.experiments.resnets import (
    RELU_WS_GAIN,
    VARIANTS,
    ResidualBlock,
    ResNet,
    ScaledWSConv2d,
    ScaledWSLinear,
    branch_weights,
    fixup_scale,
    nf_betas,
)
from bncore.experiments.runtime import seed_everything


def _input(dims: int, n: int = 32, c: int = 8) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    shape = (n, c) if dims == 1 else (n, c, 6, 6)
    return torch.randn(shape, generator=g)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("dims", [1, 2])
def test_shapes_of_logits_streams_and_branches(variant: str, dims: int) -> None:
    seed_everything(0)
    model = ResNet(8, 12, 3, 5, variant, dims=dims)
    x = _input(dims)
    logits, streams, branches = model.forward_collect(x)
    assert logits.shape == (32, 5)
    assert len(streams) == 4 and len(branches) == 3
    expected = (32, 12) if dims == 1 else (32, 12, 6, 6)
    assert all(t.shape == expected for t in streams + branches)
    assert torch.equal(model(x), logits)
    assert len(branch_weights(model)) == 6


@pytest.mark.parametrize("variant", VARIANTS)
def test_same_seed_builds_the_same_network(variant: str) -> None:
    x = _input(1)
    outs = []
    for _ in range(2):
        seed_everything(3)
        outs.append(ResNet(8, 16, 4, 10, variant)(x))
    assert torch.equal(outs[0], outs[1])


def test_stream_is_sum_of_branches() -> None:
    seed_everything(1)
    model = ResNet(8, 16, 5, 10, "bn")
    _, streams, branches = model.forward_collect(_input(1))
    torch.testing.assert_close(streams[-1], streams[0] + sum(branches), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dims", [1, 2])
def test_skipinit_is_the_identity_at_init(dims: int) -> None:
    seed_everything(0)
    model = ResNet(8, 8, 6, 10, "skipinit", dims=dims)
    with torch.no_grad():
        _, streams, branches = model.forward_collect(_input(dims))
    for s in streams[1:]:
        assert torch.equal(s, streams[0])
    assert all(float(b.abs().max()) == 0.0 for b in branches)
    assert all(float(block.alpha.detach()) == 0.0 for block in model.blocks)


def test_skipinit_alpha_scales_the_unnormalized_branch() -> None:
    x = _input(1)
    seed_everything(5)
    block = ResidualBlock(8, "skipinit", alpha=0.3)
    seed_everything(5)
    plain = ResidualBlock(8, "none")
    torch.testing.assert_close(block.branch(x), 0.3 * plain.branch(x))


@pytest.mark.parametrize("dims", [1, 2])
def test_fixup_branch_output_is_zero_at_init(dims: int) -> None:
    seed_everything(0)
    model = ResNet(8, 8, 4, 10, "fixup", dims=dims)
    with torch.no_grad():
        logits, streams, branches = model.forward_collect(_input(dims))
    assert all(float(b.abs().max()) == 0.0 for b in branches)
    assert torch.equal(streams[-1], streams[0])
    assert float(logits.abs().max()) == 0.0  # the classifier is zero too (rule 1)
    for block in model.blocks:
        assert float(block.layer2.weight.detach().abs().max()) == 0.0
        assert torch.equal(block.biases.detach(), torch.zeros(4))
        assert float(block.scale.detach()) == 1.0


def test_fixup_scales_first_layer_by_L_to_minus_half() -> None:
    # W₁ ~ N(0, 2/fan_in · L^{-1}); 256² = 65536 entries give the sample std to ~0.3% (1 s.e.).
    depth, width = 9, 256
    seed_everything(0)
    model = ResNet(4, width, depth, 10, "fixup")
    w = model.blocks[0].layer1.weight
    expected = math.sqrt(2.0 / width) * fixup_scale(depth)
    assert fixup_scale(depth) == pytest.approx(1 / 3)
    assert float(w.detach().std()) == pytest.approx(expected, rel=0.02)


def test_fixup_scale_formula() -> None:
    assert fixup_scale(16, 2) == pytest.approx(0.25)
    assert fixup_scale(8, 3) == pytest.approx(8 ** (-0.25))
    with pytest.raises(ValueError, match="m ≥ 2"):
        fixup_scale(4, 1)


def test_nf_betas_follow_the_predicted_variance() -> None:
    betas = nf_betas(3, 0.2)
    assert betas == pytest.approx([1.0, math.sqrt(1.04), math.sqrt(1.08)])
    model = ResNet(8, 8, 3, 10, "nf")
    assert [b.beta for b in model.blocks] == pytest.approx(betas)


@pytest.mark.parametrize("layer", [ScaledWSLinear(32, 16), ScaledWSConv2d(4, 6)])
def test_scaled_weight_standardization_rows_have_zero_mean_and_norm_gain(layer) -> None:
    w = layer.standardized_weight().detach().flatten(1)
    torch.testing.assert_close(w.mean(dim=1), torch.zeros(w.shape[0]), atol=1e-6, rtol=0)
    torch.testing.assert_close(w.norm(dim=1), torch.full((w.shape[0],), RELU_WS_GAIN),
                               atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("variant", ["bn", "none", "nf", "skipinit"])
def test_every_parameter_gets_a_gradient(variant: str) -> None:
    seed_everything(0)
    model = ResNet(8, 8, 2, 3, variant)
    model(_input(1)).sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match="variant"):
        ResNet(8, 8, 2, 3, "layernorm")
    with pytest.raises(ValueError, match="dims"):
        ResidualBlock(8, "bn", dims=3)
    with pytest.raises(ValueError, match="depth"):
        ResNet(8, 8, 0, 3)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        ResNet(8, 8, 2, 3, dims=2)(_input(1))
    with pytest.raises(TypeError, match="ResNet"):
        branch_weights(torch.nn.Linear(2, 2))  # type: ignore[arg-type]


def test_fixup_parameters_start_moving_in_order() -> None:
    # Step 1: only the classifier; step 2: also the stem, W₂ and the last scalar bias a₄;
    # step 3: everything (the chapter's Fixup exercise).
    seed_everything(0)
    model = ResNet(8, 8, 3, 4, "fixup")
    x, y = torch.randn(16, 8), torch.randint(0, 4, (16,))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    moving, bias_grads = [], []
    for _ in range(3):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        moving.append({n for n, p in model.named_parameters()
                       if p.grad is not None and float(p.grad.abs().max()) > 0})
        bias_grads.append(model.blocks[0].biases.grad.clone())
        opt.step()
    assert moving[0] == {"head.weight", "head.bias"}
    assert moving[1] == {"head.weight", "head.bias", "stem.weight"} | {
        f"blocks.{i}.{name}" for i in range(3) for name in ("layer2.weight", "biases")}
    assert torch.equal(bias_grads[1][:3], torch.zeros(3)) and float(bias_grads[1][3]) != 0.0
    assert moving[2] == {n for n, _ in model.named_parameters()}
