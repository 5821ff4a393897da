"""``bncore.norm.numpy_bn``: the layer's semantics and parity with ``torch.nn``, the functions
against ``torch.nn.functional.batch_norm``, and the hand-derived backwards against finite
differences.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from bn_testing import (
    FLOAT64_TOL,
    MODULE_NAMES,
    RANKS,
    ModuleContract,
    NumpyLayer,
    TorchNNLayer,
    assert_same_results,
    bn_shape,
    numerical_gradient,
    random_affine,
    random_batch,
)

from bncore.norm import numpy_bn, torch_bn, torch_phases
from bncore.norm.gradcheck import norm_rel_error

#: cs231n's bound for a correct float64 backward checked by centred differences (h = 1e-5).
FD_TOL = 1e-7


class TestNumpyBatchNorm(ModuleContract):
    """The shared layer contract, run on ``bncore.norm.numpy_bn.BatchNorm``."""

    layer = NumpyLayer


def _problem(ndim: int, seed: int = 0):
    x = random_batch(bn_shape(ndim), seed=seed)
    dy = random_batch(bn_shape(ndim), seed=seed + 1)
    gamma, beta = random_affine(bn_shape(ndim)[1], seed=seed + 2)
    return x, dy, gamma, beta


@pytest.mark.parametrize("ndim", RANKS)
def test_forward_and_backward_functions_match_torch_functional(ndim):
    x, dy, gamma, beta = _problem(ndim)
    y, cache = numpy_bn.batch_norm_forward(x, gamma, beta, eps=1e-3)
    dx, dgamma, dbeta = numpy_bn.batch_norm_backward(dy, cache)
    inputs = [torch.from_numpy(a.copy()).requires_grad_() for a in (x, gamma, beta)]
    y_ref = torch.nn.functional.batch_norm(
        inputs[0], None, None, inputs[1], inputs[2], training=True, eps=1e-3
    )
    y_ref.backward(torch.from_numpy(dy))
    assert_same_results(
        {"y": y, "dx": dx, "dgamma": dgamma, "dbeta": dbeta},
        {"y": y_ref, "dx": inputs[0].grad, "dgamma": inputs[1].grad, "dbeta": inputs[2].grad},
        **FLOAT64_TOL,
    )


@pytest.mark.parametrize("ndim", RANKS)
def test_inference_function_matches_torch_functional_in_eval(ndim):
    x, _, gamma, beta = _problem(ndim)
    rng = np.random.default_rng(5)
    running_mean, running_var = rng.standard_normal(3), rng.uniform(0.5, 2.0, 3)
    y = numpy_bn.batch_norm_inference(x, gamma, beta, running_mean, running_var, eps=1e-3)
    t = [torch.from_numpy(a) for a in (x, running_mean, running_var, gamma, beta)]
    y_ref = torch.nn.functional.batch_norm(*t, training=False, eps=1e-3)
    np.testing.assert_allclose(y, y_ref.numpy(), **FLOAT64_TOL)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_forward_returns_the_input_dtype(dtype):
    x, _, gamma, beta = _problem(4)
    y, _ = numpy_bn.batch_norm_forward(x.astype(dtype), gamma, beta)
    assert y.dtype == dtype


def _loss_and_grads(backward, ndim: int):
    """Loss ℓ = Σ dy·y of the training forward, and (dx, dγ, dβ) from ``backward``."""
    x, dy, gamma, beta = _problem(ndim, seed=10 * ndim)

    def loss() -> float:
        return float(np.sum(dy * numpy_bn.batch_norm_forward(x, gamma, beta)[0]))

    grads = backward(dy, numpy_bn.batch_norm_forward(x, gamma, beta)[1])
    return loss, (x, gamma, beta), grads


@pytest.mark.parametrize("backward", [numpy_bn.batch_norm_backward,
                                      numpy_bn.batch_norm_backward_graph],
                         ids=["compact", "graph"])
@pytest.mark.parametrize("ndim", RANKS)
def test_backward_matches_centred_finite_differences(ndim, backward):
    loss, params, grads = _loss_and_grads(backward, ndim)
    for name, p, analytic in zip(["dx", "dgamma", "dbeta"], params, grads, strict=True):
        assert norm_rel_error(analytic, numerical_gradient(loss, p)) < FD_TOL, name


@pytest.mark.parametrize("ndim", RANKS)
def test_graph_backward_equals_compact_backward(ndim):
    # the two forms differ only by rounding (and the identically-zero Σ(x − μ) term)
    _, _, compact = _loss_and_grads(numpy_bn.batch_norm_backward, ndim)
    _, _, graph = _loss_and_grads(numpy_bn.batch_norm_backward_graph, ndim)
    for a, b in zip(compact, graph, strict=True):
        assert norm_rel_error(a, b) < 1e-13


def test_eval_backward_matches_centred_finite_differences():
    layer = numpy_bn.BatchNorm(3)
    layer.weight, layer.bias = random_affine(3, seed=6)
    layer.forward(random_batch(bn_shape(4), seed=7))  # move the running statistics
    layer.eval()
    x, dy = random_batch(bn_shape(4), seed=8), random_batch(bn_shape(4), seed=9)

    def loss() -> float:
        return float(np.sum(dy * layer.forward(x)))

    layer.forward(x)
    dx = layer.backward(dy)
    analytic = [dx, layer.grad_weight, layer.grad_bias]
    for name, p, a in zip(["dx", "dgamma", "dbeta"], [x, layer.weight, layer.bias], analytic,
                          strict=True):
        assert norm_rel_error(a, numerical_gradient(loss, p)) < FD_TOL, name


def test_backward_before_forward_raises():
    with pytest.raises(RuntimeError, match="before forward"):
        numpy_bn.BatchNorm(3).backward(np.zeros((4, 3)))


STATE_KEYS = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]


@pytest.mark.parametrize("ndim", [2, 4])
def test_layer_state_uses_torch_state_dict_names_both_ways(ndim):
    # torch → NumPy: copy a trained torch module's state_dict into the layer's attributes
    torch_layer = TorchNNLayer(3, ndim, momentum=None)
    torch_layer.set_affine(*random_affine(3, seed=11))
    for step in range(2):
        torch_layer.step(random_batch(bn_shape(ndim), seed=12 + step), np.ones(bn_shape(ndim)))
    ours = NumpyLayer(3, ndim, momentum=None)
    state = torch_layer.module.state_dict()
    assert sorted(state) == sorted(STATE_KEYS)
    for key in STATE_KEYS:
        value = state[key].numpy()
        setattr(ours.layer, key, int(value) if key == "num_batches_tracked" else value.copy())
    # one more training step (momentum None uses num_batches_tracked) and one eval step agree
    for training in (True, False):
        x, dy = random_batch(bn_shape(ndim), seed=14), random_batch(bn_shape(ndim), seed=15)
        assert_same_results(ours.train(training).step(x, dy),
                            torch_layer.train(training).step(x, dy), **FLOAT64_TOL)
    # NumPy → torch: the layer's attributes are a strict state_dict for a fresh torch module
    fresh = getattr(torch.nn, MODULE_NAMES[ndim])(3, momentum=None, dtype=torch.float64)
    fresh.load_state_dict(
        {key: torch.as_tensor(getattr(ours.layer, key)) for key in STATE_KEYS}, strict=True
    )
    x = random_batch(bn_shape(ndim), seed=16)
    np.testing.assert_allclose(
        fresh.eval()(torch.from_numpy(x)).detach().numpy(), ours.layer.eval().forward(x),
        **FLOAT64_TOL,
    )


def test_empty_batch_gives_empty_output_and_leaves_running_stats_like_torch():
    layer, ref = numpy_bn.BatchNorm(3), torch.nn.BatchNorm2d(3, dtype=torch.float64)
    x = np.zeros((0, 3, 2, 2))
    y = layer(x)
    y_ref = ref(torch.from_numpy(x))
    assert y.shape == tuple(y_ref.shape) == (0, 3, 2, 2)
    assert layer.num_batches_tracked == int(ref.num_batches_tracked) == 1
    np.testing.assert_array_equal(layer.running_mean, ref.running_mean.numpy())
    np.testing.assert_array_equal(layer.running_var, ref.running_var.numpy())
    assert layer.backward(np.zeros_like(x)).shape == x.shape
    np.testing.assert_array_equal(layer.grad_weight, np.zeros(3))


def test_the_phases_compose_to_the_compact_backward():
    x = np.random.default_rng(0).standard_normal((5, 3, 2))
    dy = np.random.default_rng(1).standard_normal((5, 3, 2))
    gamma, beta = np.array([1.0, 2.0, 0.5]), np.zeros(3)
    _, cache = numpy_bn.batch_norm_forward(x, gamma, beta)
    sum_dy, sum_dy_xhat = numpy_bn.backward_reduce(dy, cache.xhat)
    dx = numpy_bn.backward_elemt(dy, cache.xhat, cache.invstd, gamma, sum_dy, sum_dy_xhat,
                                 cache.m)
    dx_ref, dgamma, dbeta = numpy_bn.batch_norm_backward_graph(dy, cache)
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(sum_dy_xhat, dgamma, rtol=1e-12)
    np.testing.assert_allclose(sum_dy, dbeta, rtol=1e-12)


PHASES = ["mean_var", "invstd", "normalize", "update_running", "backward_reduce",
          "backward_elemt", "expand"]


def test_numpy_and_torch_phases_share_their_names():
    assert set(PHASES) <= set(numpy_bn.__all__)
    assert set(PHASES) == set(torch_phases.__all__)


@pytest.mark.parametrize("axes", [None, (2, 3)], ids=["batch-axes", "instance-axes"])
def test_numpy_phases_equal_the_torch_phases(axes):
    x, dy, gamma, beta = _problem(4, seed=60)
    tx, tdy, tg, tb = (torch.from_numpy(a) for a in (x, dy, gamma, beta))
    mean, var = numpy_bn.mean_var(x, axes)
    tmean, tvar = torch_bn.mean_var(tx, axes)
    s, ts = numpy_bn.invstd(var, 1e-5), torch_bn.invstd(tvar, 1e-5)
    y, xhat = numpy_bn.normalize(x, mean, s, gamma, beta, axes)
    ty = torch_bn.normalize(tx, tmean, ts, tg, tb, axes)
    sums = numpy_bn.backward_reduce(dy, xhat, axes)
    tsums = torch_bn.backward_reduce(tdy, torch.from_numpy(xhat), axes)
    m = x.size // mean.size
    dx = numpy_bn.backward_elemt(dy, xhat, s, gamma, *sums, m, axes)
    tdx = torch_bn.backward_elemt(tdy, torch.from_numpy(xhat), ts, tg, *tsums, m, axes)
    pairs = [(mean, tmean), (var, tvar), (y, ty), (sums[0], tsums[0]), (sums[1], tsums[1]),
             (dx, tdx)]
    for ours, ref in pairs:
        np.testing.assert_allclose(ours, ref.numpy(), **FLOAT64_TOL)


@pytest.mark.parametrize("momentum", [0.1, None], ids=["momentum", "cumulative"])
def test_empty_spatial_axis_counts_a_batch_and_leaves_running_stats_like_torch(momentum):
    layer = numpy_bn.BatchNorm(3, momentum=momentum)
    ref = torch.nn.BatchNorm1d(3, momentum=momentum, dtype=torch.float64)
    x = np.zeros((2, 3, 0))
    assert layer(x).shape == tuple(ref(torch.from_numpy(x)).shape) == (2, 3, 0)
    assert layer.num_batches_tracked == int(ref.num_batches_tracked) == 1
    np.testing.assert_array_equal(layer.running_mean, ref.running_mean.numpy())
    np.testing.assert_array_equal(layer.running_var, ref.running_var.numpy())
