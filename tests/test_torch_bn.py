"""``bncore.norm.torch_bn``: the modules' semantics and parity with ``torch.nn``, the functional
form, mixed precision and channels-last (the contracts also run on the GPU in ``test_cuda``),
``state_dict`` exchange with ``torch.nn``, and the twice-differentiable backward.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from bn_testing import (
    FLOAT64_TOL,
    MODULE_NAMES,
    ModuleContract,
    TorchContract,
    TorchLayer,
    TorchNNLayer,
    assert_same_results,
    bn_shape,
    random_affine,
    random_batch,
)
from torch.autograd import gradcheck, gradgradcheck

from bncore.norm import torch_bn
from bncore.norm.gradcheck import norm_rel_error


class TestTorchBatchNorm(ModuleContract):
    """The shared layer contract, run on ``bncore.norm.torch_bn.BatchNorm1d/2d/3d`` on the CPU."""

    layer = TorchLayer


class TestTorchOnCpu(TorchContract):
    """Functional parity, float16/bfloat16 and channels-last on the CPU."""


FLAGS = [
    pytest.param({}, id="defaults"),
    pytest.param({"affine": False}, id="no-affine"),
    pytest.param({"track_running_stats": False}, id="untracked"),
    pytest.param({"affine": False, "track_running_stats": False}, id="neither"),
]


def _pair(ndim: int, **options):
    """A bncore module and a torch.nn module of the same kind and options (float64)."""
    name = MODULE_NAMES[ndim]
    return (getattr(torch_bn, name)(3, dtype=torch.float64, **options),
            getattr(torch.nn, name)(3, dtype=torch.float64, **options))


@pytest.mark.parametrize("options", FLAGS)
@pytest.mark.parametrize("ndim", [3, 4, 5])
def test_state_dict_keys_shapes_and_dtypes_match_torch(ndim, options):
    ours, ref = (m.state_dict() for m in _pair(ndim, **options))
    assert list(ours) == list(ref)
    for key in ref:
        assert (ours[key].shape, ours[key].dtype) == (ref[key].shape, ref[key].dtype), key
    # parameters and buffers are registered as in torch.nn (None where absent)
    bn, nn_bn = _pair(ndim, **options)
    assert [n for n, _ in bn.named_parameters()] == [n for n, _ in nn_bn.named_parameters()]
    assert [n for n, _ in bn.named_buffers()] == [n for n, _ in nn_bn.named_buffers()]


def _train_a_little(layer: TorchNNLayer, ndim: int) -> None:
    layer.set_affine(*random_affine(3, seed=1))
    for step in range(3):
        layer.train(True).step(random_batch(bn_shape(ndim), seed=2 + step),
                               random_batch(bn_shape(ndim), seed=9))


@pytest.mark.parametrize("direction", ["torch-to-bncore", "bncore-to-torch"])
@pytest.mark.parametrize("ndim", [2, 4, 5])
def test_state_dict_loads_strictly_both_ways(ndim, direction):
    # momentum=None makes the next running update depend on num_batches_tracked too
    source_cls, target_cls = (
        (TorchNNLayer, TorchLayer) if direction == "torch-to-bncore" else (TorchLayer, TorchNNLayer)
    )
    source, target = source_cls(3, ndim, momentum=None), target_cls(3, ndim, momentum=None)
    _train_a_little(source, ndim)
    result = target.module.load_state_dict(source.module.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    for training in (True, False):  # a further training step, then eval, agree
        x, dy = random_batch(bn_shape(ndim), seed=20), random_batch(bn_shape(ndim), seed=21)
        assert_same_results(target.train(training).step(x, dy),
                            source.train(training).step(x, dy), **FLOAT64_TOL)


def _bn_inputs(training: bool, affine: bool, shape=(4, 2, 3)):
    """float64 leaves for gradcheck: x (and γ, β), plus fixed running statistics for eval."""
    x = torch.from_numpy(random_batch(shape, seed=30)).requires_grad_()
    gamma, beta = (torch.from_numpy(a).requires_grad_() for a in random_affine(shape[1], 31))
    running = None if training else (torch.tensor([0.3, -0.5], dtype=torch.float64),
                                     torch.tensor([0.8, 1.7], dtype=torch.float64))

    def fn(x, *affine_params):
        weight, bias = affine_params or (None, None)
        rm, rv = running or (None, None)
        return torch_bn.batch_norm(x, rm, rv, weight, bias, training, 0.1, 1e-3)

    return fn, (x, gamma, beta) if affine else (x,)


MODES = [pytest.param(True, id="train"), pytest.param(False, id="eval")]
AFFINE = [pytest.param(True, id="affine"), pytest.param(False, id="no-affine")]


@pytest.mark.parametrize("affine", AFFINE)
@pytest.mark.parametrize("training", MODES)
def test_batch_norm_passes_gradcheck(training, affine):
    fn, inputs = _bn_inputs(training, affine)
    assert gradcheck(fn, inputs, eps=1e-6, atol=1e-8, rtol=1e-6)


@pytest.mark.parametrize("affine", AFFINE)
@pytest.mark.parametrize("training", MODES)
def test_batch_norm_passes_gradgradcheck(training, affine):
    fn, inputs = _bn_inputs(training, affine)
    assert gradgradcheck(fn, inputs, eps=1e-6, atol=1e-8, rtol=1e-6)


def _loss(batch_norm, x, gamma, beta, w):
    """A non-quadratic loss through batch norm: Σ w·y², so that its Hessian is not trivial."""
    return (w * batch_norm(x, None, None, gamma, beta, True, 0.1, 1e-3) ** 2).sum()


def _gradient(batch_norm, params, w, create_graph=False):
    return torch.autograd.grad(_loss(batch_norm, *params, w), params, create_graph=create_graph)


def _hvp(batch_norm, params, v, w):
    """H·v by double backward: ∇(∇ℓ·v)."""
    grads = _gradient(batch_norm, params, w, create_graph=True)
    dot = sum((g * vi).sum() for g, vi in zip(grads, v, strict=True))
    return torch.autograd.grad(dot, params)


def _hvp_problem():
    _, params = _bn_inputs(True, True)
    rng = np.random.default_rng(32)
    v = [torch.from_numpy(rng.standard_normal(p.shape)) for p in params]
    w = torch.from_numpy(rng.standard_normal(params[0].shape))
    return params, v, w


def test_hessian_vector_product_matches_finite_differences_of_gradient():
    params, v, w = _hvp_problem()
    hvp = _hvp(torch_bn.batch_norm, params, v, w)
    h = 1e-5  # centred: (∇ℓ(p + h·v) − ∇ℓ(p − h·v)) / 2h, error O(h²) ≈ 1e-10

    def grad_at(sign):
        shifted = [(p + sign * h * vi).detach().requires_grad_() for p, vi in zip(params, v,
                                                                                  strict=True)]
        return _gradient(torch_bn.batch_norm, shifted, w)

    plus, minus = grad_at(1.0), grad_at(-1.0)
    for name, hv, gp, gm in zip(["x", "gamma", "beta"], hvp, plus, minus, strict=True):
        assert norm_rel_error(hv, (gp - gm) / (2 * h)) < 1e-7, name


def test_hessian_vector_product_matches_torch_double_backward():
    params, v, w = _hvp_problem()
    ours = _hvp(torch_bn.batch_norm, params, v, w)
    ref = _hvp(torch.nn.functional.batch_norm, params, v, w)
    for name, a, b in zip(["x", "gamma", "beta"], ours, ref, strict=True):
        assert norm_rel_error(a, b) < 1e-12, name


def test_reset_running_stats_restores_initial_state():
    layer = TorchLayer(3, 4)
    _train_a_little(layer, 4)
    layer.module.reset_parameters()
    fresh = TorchLayer(3, 4)
    assert_same_results(layer.state(), fresh.state(), rtol=0, atol=0)
    assert_same_results(layer.params(), fresh.params(), rtol=0, atol=0)



@pytest.mark.parametrize("bias", [True, False])
def test_bias_keyword_matches_torch(bias):
    ours = torch_bn.BatchNorm2d(3, bias=bias).double()
    ref = torch.nn.BatchNorm2d(3, bias=bias).double()
    assert repr(ours) == repr(ref)
    assert list(ours.state_dict()) == list(ref.state_dict())
    with torch.no_grad():
        ours.weight.uniform_(0.5, 1.5)
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(4, 3, 2, 2, dtype=torch.float64)
    torch.testing.assert_close(ours(x), ref(x), rtol=0, atol=1e-14)


def test_empty_batch_trains_like_torch_nn():
    ours, ref = torch_bn.BatchNorm2d(3), torch.nn.BatchNorm2d(3)
    for module in (ours, ref):
        x = torch.randn(0, 3, 2, 2, requires_grad=True)
        y = module(x)
        y.sum().backward()
        assert y.shape == (0, 3, 2, 2)
        assert int(module.num_batches_tracked) == 1
        torch.testing.assert_close(module.weight.grad, torch.zeros(3))
        torch.testing.assert_close(module.running_mean, torch.zeros(3))


def test_forward_mode_matches_torch_func_jvp_in_float64():
    gen = torch.Generator().manual_seed(3)
    x, dx = (torch.randn(6, 3, 2, generator=gen, dtype=torch.float64) for _ in range(2))
    w, dw, b, db = (torch.randn(3, generator=gen, dtype=torch.float64) for _ in range(4))
    rm, rv = torch.randn(3, dtype=torch.float64), torch.rand(3, dtype=torch.float64) + 0.5
    for training in (True, False):
        def ours(x, w, b, training=training):
            return torch_bn.batch_norm(x, rm.clone(), rv.clone(), w, b, training)

        def ref(x, w, b, training=training):
            return torch.nn.functional.batch_norm(x, rm.clone(), rv.clone(), w, b, training)

        out, tangent = torch.func.jvp(ours, (x, w, b), (dx, dw, db))
        out_ref, tangent_ref = torch.func.jvp(ref, (x, w, b), (dx, dw, db))
        torch.testing.assert_close(out, out_ref)
        torch.testing.assert_close(tangent, tangent_ref)


def test_hessian_vector_product_forward_over_reverse_equals_double_backward():
    gen = torch.Generator().manual_seed(4)
    x, v, r = (torch.randn(5, 2, 3, generator=gen, dtype=torch.float64) for _ in range(3))
    w = torch.rand(2, generator=gen, dtype=torch.float64) + 0.5

    def loss(x):
        return (r * torch.tanh(torch_bn.batch_norm(x, None, None, w, None, True))).sum()

    _, hvp_fwd = torch.func.jvp(torch.func.grad(loss), (x,), (v,))
    hvp_rev = torch.autograd.functional.hvp(loss, x, v)[1]
    torch.testing.assert_close(hvp_fwd, hvp_rev)


def test_old_checkpoint_without_counter_loads():
    state = torch_bn.BatchNorm2d(3).state_dict()
    del state["num_batches_tracked"]
    state._metadata[""]["version"] = 1
    module = torch_bn.BatchNorm2d(3)
    module.load_state_dict(state)
    assert int(module.num_batches_tracked) == 0
