"""Group, layer and instance norm against torch.nn's modules, and their invariances.

Outputs and gradients agree with ``torch.nn`` in float64 to the round-off bound of
:func:`norm_testing.tolerance`, in training and eval, and state dicts load both ways; the NumPy
twins agree too; the torch layers are twice differentiable; hypothesis checks the invariance each
norm has (and layer norm's missing one); bad input fails as torch fails.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from norm_testing import CASES, close, randomize, run_both, tolerance
from torch import nn

import bncore
from bncore.norm import numpy_norms
from bncore.norm.group_norm import group_norm
from bncore.norm.instance_norm import instance_norm
from bncore.norm.layer_norm import layer_norm


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("name", list(CASES))
def test_outputs_and_gradients_match_torch_nn_in_float64(name: str, mode: str):
    make_ours, make_theirs, shape, m = CASES[name]
    ours, theirs = make_ours(), make_theirs()
    randomize(ours, theirs, seed=1)
    ours.train(mode == "train")
    theirs.train(mode == "train")
    a, b = run_both(ours, theirs, shape, seed=2)
    assert len(a) == len(b)
    for got, want in zip(a, b, strict=True):
        assert got.shape == want.shape and close(got, want, m)
    for key, want in theirs.state_dict().items():  # the running statistics moved the same way
        assert close(ours.state_dict()[key].double(), want.double(), m), key


@pytest.mark.parametrize("name", list(CASES))
def test_state_dicts_load_both_ways(name: str):
    make_ours, make_theirs, _, _ = CASES[name]
    ours, theirs = make_ours(), make_theirs()
    assert list(ours.state_dict()) == list(theirs.state_dict())
    randomize(ours, theirs, seed=3)  # theirs → ours
    back = make_theirs()
    back.load_state_dict(ours.state_dict())  # ours → theirs
    for key, want in theirs.state_dict().items():
        assert torch.equal(back.state_dict()[key], want)
    assert [p.shape for p in ours.parameters()] == [p.shape for p in theirs.parameters()]


def test_constructor_defaults_match_torch():
    assert (bncore.InstanceNorm2d(3).affine, bncore.InstanceNorm2d(3).track_running_stats) \
        == (False, False)
    assert bncore.GroupNorm(2, 4).eps == nn.GroupNorm(2, 4).eps
    assert bncore.LayerNorm(5).normalized_shape == nn.LayerNorm(5).normalized_shape


def _twice(fn, *shapes):
    g = torch.Generator().manual_seed(0)
    args = [torch.randn(s, generator=g, dtype=torch.float64, requires_grad=True)
            for s in shapes]
    assert torch.autograd.gradcheck(fn, args)
    assert torch.autograd.gradgradcheck(fn, args)


def test_group_norm_is_twice_differentiable():
    _twice(lambda x, w, b: group_norm(x, 2, w, b), (2, 4, 3), (4,), (4,))


def test_layer_norm_is_twice_differentiable():
    _twice(lambda x, w, b: layer_norm(x, (2, 3), w, b), (2, 2, 3), (2, 3), (2, 3))


def test_instance_norm_is_twice_differentiable():
    _twice(lambda x, w, b: instance_norm(x, weight=w, bias=b), (2, 3, 4), (3,), (3,))


def _torch_grads(fn, x, params, dy):
    xs = [torch.tensor(a, requires_grad=True) for a in (x, *params)]
    y = fn(*xs)
    return [y.detach().numpy(), *(g.numpy() for g in torch.autograd.grad(y, xs, torch.tensor(dy)))]


def test_numpy_twins_match_torch_nn():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 6, 5)) * 2 + 1
    dy = rng.normal(size=x.shape)
    gamma, beta = rng.uniform(0.5, 1.5, 6), rng.normal(size=6)
    y, cache = numpy_norms.group_norm_forward(x, 3, gamma, beta)
    ours = [y, *numpy_norms.group_norm_backward(dy, cache)]
    theirs = _torch_grads(lambda x, g, b: nn.functional.group_norm(x, 3, g, b), x, (gamma, beta),
                          dy)
    y, cache = numpy_norms.instance_norm_forward(x, gamma, beta)
    ours += [y, *numpy_norms.instance_norm_backward(dy, cache)]
    theirs += _torch_grads(lambda x, g, b: nn.functional.instance_norm(x, weight=g, bias=b), x,
                           (gamma, beta), dy)
    lg, lb = rng.uniform(0.5, 1.5, (6, 5)), rng.normal(size=(6, 5))
    y, cache = numpy_norms.layer_norm_forward(x, lg, lb)
    ours += [y, *numpy_norms.layer_norm_backward(dy, cache)]
    theirs += _torch_grads(lambda x, g, b: nn.functional.layer_norm(x, (6, 5), g, b), x, (lg, lb),
                           dy)
    for got, want in zip(ours, theirs, strict=True):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=0, atol=tolerance(30) * np.abs(want).max())


finite = st.floats(-3, 3)
positive = st.floats(0.2, 5)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), scale=positive, shift=finite)
def test_group_norm_is_invariant_to_scaling_and_shifting_one_samples_group(seed, scale, shift):
    x = torch.randn(3, 4, 5, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    x2 = x.clone()
    x2[1, 2:] = x2[1, 2:] * scale + shift  # sample 1, group 1 of G = 2
    y, y2 = group_norm(x, 2, eps=0.0 + 1e-12), group_norm(x2, 2, eps=1e-12)
    assert torch.allclose(y, y2, atol=1e-8)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), scale=positive, shift=finite)
def test_instance_norm_is_invariant_to_an_affine_map_of_one_instance_channel(seed, scale, shift):
    x = torch.randn(2, 3, 6, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    x2 = x.clone()
    x2[0, 1] = x2[0, 1] * scale + shift
    assert torch.allclose(instance_norm(x, eps=1e-12), instance_norm(x2, eps=1e-12), atol=1e-8)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), scale=positive, row=st.integers(0, 5))
def test_layer_norm_is_invariant_to_rescaling_the_weight_matrix_not_one_weight_vector(
    seed, scale, row
):
    """Ba et al. (2016), Table 1: LN is invariant to scaling W, BN to scaling one row of W."""
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(8, 4, generator=g, dtype=torch.float64)
    w = torch.randn(6, 4, generator=g, dtype=torch.float64)
    w_row = w.clone()
    w_row[row] *= scale + 1.0  # the factor is ≥ 1.2: one weight vector really rescaled
    ln = bncore.LayerNorm(6, eps=1e-12, dtype=torch.float64)
    bn = bncore.BatchNorm1d(6, eps=1e-12, dtype=torch.float64)
    assert torch.allclose(ln(u @ w.T), ln(u @ (scale * w).T), atol=1e-8)
    assert torch.allclose(bn(u @ w.T), bn(u @ w_row.T), atol=1e-8)
    assert not torch.allclose(ln(u @ w.T), ln(u @ w_row.T), atol=1e-3)


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda m: m.GroupNorm(4, 6), ValueError),
        (lambda m: m.GroupNorm(2, 6)(torch.randn(2, 4, 3)), RuntimeError),
        (lambda m: m.GroupNorm(2, 2)(torch.randn(1, 2)), ValueError),
        (lambda m: m.LayerNorm(4)(torch.randn(2, 3)), RuntimeError),
        (lambda m: m.LayerNorm([2, 3])(torch.randn(3, 2)), RuntimeError),
        (lambda m: m.InstanceNorm1d(3)(torch.randn(2, 3, 1)), ValueError),
        (lambda m: m.InstanceNorm2d(3)(torch.randn(2, 3)), ValueError),
        (lambda m: m.InstanceNorm1d(3, affine=True)(torch.randn(2, 4, 5)), ValueError),
    ],
    ids=["C%G", "channels", "one-value", "LN-shape", "LN-2d-shape", "IN-one-spatial", "IN-rank",
         "IN-channels"],
)
def test_bad_input_raises_torchs_error_with_advice(call, error):
    with pytest.raises(error) as theirs:
        call(nn)
    with pytest.raises(error) as ours:
        call(bncore)
    gist = str(theirs.value).split(",")[0][:30]
    assert str(ours.value).startswith(gist), (str(ours.value), gist)
    assert ";" in str(ours.value)  # the advice after torch's words
