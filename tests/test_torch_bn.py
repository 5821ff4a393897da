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


# --- torch's own rules (issue 8): each behaviour against torch.nn / F.batch_norm itself ---


def _both(name: str, *args, **kwargs):
    """A bncore module and the torch.nn module of the same name, built alike."""
    return getattr(torch_bn, name)(*args, **kwargs), getattr(torch.nn, name)(*args, **kwargs)


@pytest.mark.parametrize("momentum", [0.1, None], ids=["momentum", "cumulative"])
@pytest.mark.parametrize("shape", [(0, 3), (0, 3, 2, 2), (0, 3, 2, 2, 2), (2, 3, 0)],
                         ids=["N=0-1d", "N=0-2d", "N=0-3d", "L=0"])
def test_empty_batch_trains_like_torch_nn(shape, momentum):
    name = MODULE_NAMES[len(shape)]
    results = []
    for module in _both(name, 3, momentum=momentum):
        x = torch.randn(shape, requires_grad=True)
        y = module(x)
        y.sum().backward()
        results.append((y.shape, x.grad.shape, module.weight.grad, module.bias.grad,
                        module.running_mean, module.running_var, module.num_batches_tracked))
    ours, ref = results
    assert ours[:2] == ref[:2] == (shape, shape)
    for a, b in zip(ours[2:], ref[2:], strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(ours[2], torch.zeros(3))  # zero grads for γ and β,
    torch.testing.assert_close(ours[4], torch.zeros(3))  # running statistics left alone,
    assert int(ours[6]) == 1  # and the empty batch counted


def test_empty_batch_in_the_functional_form_leaves_running_stats_alone():
    rm, rv = torch.randn(3), torch.rand(3) + 0.5
    before = rm.clone(), rv.clone()
    for training in (True, False):
        y = torch_bn.batch_norm(torch.randn(0, 3, 4), rm, rv, torch.ones(3), torch.zeros(3),
                                training)
        assert y.shape == (0, 3, 4)
    torch.testing.assert_close((rm, rv), before, rtol=0, atol=0)


def test_exactly_one_value_per_channel_is_the_error_as_in_torch():
    for module in _both("BatchNorm2d", 3):
        with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
            module(torch.randn(1, 3, 1, 1))
        assert module(torch.randn(0, 3, 1, 1)).shape == (0, 3, 1, 1)  # zero values are fine


@pytest.mark.parametrize("training", MODES)
def test_opinfo_sample_of_shape_0_behaves_as_in_torch(training):
    # sample_inputs_batch_norm's degenerate case: input (0,), running statistics of length 0
    outs = []
    for fn in (torch_bn.batch_norm, torch.nn.functional.batch_norm):
        x = torch.randn(0, requires_grad=True)
        y = fn(x, torch.zeros(0), torch.ones(0), training=training)
        y.sum().backward()
        outs.append((y.shape, y.dtype, x.grad.shape))
    assert outs[0] == outs[1] == (torch.Size([0]), torch.float32, torch.Size([0]))


PER_CHANNEL = ["running_mean", "running_var", "weight", "bias"]


@pytest.mark.parametrize("name", PER_CHANNEL)
@pytest.mark.parametrize("training", MODES)
def test_wrong_length_per_channel_tensor_is_torchs_runtime_error(name, training):
    x = torch.randn(4, 3, 2)
    args = {"running_mean": torch.zeros(3), "running_var": torch.ones(3),
            "weight": torch.ones(3), "bias": torch.zeros(3)}
    args[name] = torch.ones(2)
    messages = []
    for fn in (torch.nn.functional.batch_norm, torch_bn.batch_norm):
        with pytest.raises(RuntimeError) as info:
            fn(x, args["running_mean"], args["running_var"], args["weight"], args["bias"],
               training)
        messages.append(str(info.value))
    assert messages[1].startswith(messages[0] + ":")  # torch's words, then advice
    assert "one entry per channel" in messages[1]


@pytest.mark.parametrize("options", FLAGS[:3])
@pytest.mark.parametrize("training", MODES)
def test_module_given_the_wrong_channel_count_raises_torchs_runtime_error(options, training):
    ours, ref = (m.train(training) for m in _both("BatchNorm1d", 3, **options))
    x = torch.randn(4, 5)
    with pytest.raises(RuntimeError) as torch_info:
        ref(x)
    with pytest.raises(RuntimeError) as info:
        ours(x)
    assert str(info.value).startswith(str(torch_info.value) + ":")
    assert "build it with num_features=5" in str(info.value)


def test_module_with_nothing_per_channel_still_refuses_the_wrong_channel_count():
    # torch.nn has no tensor to check the count against and accepts the input; bncore refuses
    ours, ref = _both("BatchNorm1d", 3, affine=False, track_running_stats=False)
    assert ref(torch.randn(4, 5)).shape == (4, 5)
    with pytest.raises(RuntimeError, match="expected input with 3 channels, got 5"):
        ours(torch.randn(4, 5))


@pytest.mark.parametrize("eps, training", [(0.0, True), (-1.0, True), (-1.0, False)],
                         ids=["zero-train", "negative-train", "negative-eval"])
def test_eps_message_is_torchs_then_advice(eps, training):
    x, rm, rv = torch.randn(4, 3), torch.zeros(3), torch.ones(3)
    messages = []
    for fn in (torch.nn.functional.batch_norm, torch_bn.batch_norm):
        with pytest.raises(ValueError) as info:
            fn(x, rm, rv, training=training, eps=eps)
        messages.append(str(info.value))
    assert messages[1].startswith(messages[0] + "; ")


def test_non_floating_input_is_torchs_not_implemented_error():
    x = torch.ones(4, 3, dtype=torch.long)
    for fn in (torch.nn.functional.batch_norm, torch_bn.batch_norm):
        with pytest.raises(NotImplementedError, match='"batch_norm" not implemented for'):
            fn(x, None, None, training=True)


def test_eval_without_running_stats_is_torchs_runtime_error():
    for fn in (torch.nn.functional.batch_norm, torch_bn.batch_norm):
        with pytest.raises(RuntimeError, match=r"^running_var must be defined in evaluation mode"):
            fn(torch.randn(4, 3), torch.zeros(3), None, training=False)


# --- old checkpoints ---


def test_state_dict_is_version_2_as_torchs():
    ours, ref = _both("BatchNorm2d", 3)
    assert ours._version == ref._version == 2
    assert ours.state_dict()._metadata[""] == ref.state_dict()._metadata[""]


@pytest.mark.parametrize("version", [1, None], ids=["version-1", "no-metadata"])
def test_old_checkpoint_without_counter_loads_as_in_torch(version):
    source = torch.nn.BatchNorm2d(3)
    source(torch.randn(4, 3, 2, 2))
    state = source.state_dict()
    del state["num_batches_tracked"]
    if version is None:
        del state._metadata
    else:
        state._metadata[""]["version"] = version
    ours, ref = _both("BatchNorm2d", 3)
    for module in (ours, ref):
        module.load_state_dict(state, strict=True)
    assert int(ours.num_batches_tracked) == int(ref.num_batches_tracked) == 0
    torch.testing.assert_close(ours.running_mean, source.running_mean, rtol=0, atol=0)


def test_old_checkpoint_keeps_the_modules_own_counter_as_in_torch():
    state = torch.nn.BatchNorm1d(3).state_dict()
    del state["num_batches_tracked"]
    state._metadata[""]["version"] = 1
    counters = []
    for module in _both("BatchNorm1d", 3):
        module(torch.randn(4, 3))  # the module's counter is 1 before loading
        module.load_state_dict(state)
        counters.append(int(module.num_batches_tracked))
    assert counters == [1, 1]


def test_current_checkpoint_without_counter_is_missing_a_key_as_in_torch():
    state = torch.nn.BatchNorm1d(3).state_dict()
    del state["num_batches_tracked"]  # version 2 metadata: the counter should be there
    for module in _both("BatchNorm1d", 3):
        with pytest.raises(RuntimeError, match=r"Missing key.*num_batches_tracked"):
            module.load_state_dict(state)


# --- half precision in eval, and no host synchronization ---

#: torch.testing.assert_close's own defaults for these dtypes (what torch's tests use).
HALF_TOL = {torch.float16: {"rtol": 1e-3, "atol": 1e-5},
            torch.bfloat16: {"rtol": 1.6e-2, "atol": 1e-5}}


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_half_eval_with_half_running_stats_computes_in_float32_and_rounds_once(dtype):
    ours, ref = _both("BatchNorm2d", 4)
    gen = torch.Generator().manual_seed(40)
    state = {"running_mean": torch.randn(4, generator=gen) * 3,
             "running_var": torch.rand(4, generator=gen) * 4 + 1e-3,
             "weight": torch.linspace(0.5, 2.0, 4), "bias": torch.linspace(-1.0, 1.0, 4)}
    for module in (ours, ref):
        module.load_state_dict(state, strict=False)
    ours, ref = ours.to(dtype).eval(), ref.to(dtype).eval()
    x = (torch.randn(8, 4, 3, 3, generator=gen) * 2).to(dtype)
    y = ours(x)
    assert y.dtype == dtype
    torch.testing.assert_close(y, ref(x), **HALF_TOL[dtype])
    # the float32 computation, rounded once: within half a unit in the last place of dtype
    exact = torch.nn.functional.batch_norm(
        x.float(), *(t.float() for t in (ours.running_mean, ours.running_var, ours.weight,
                                         ours.bias)), False, 0.0, ours.eps)
    ulp = torch.finfo(dtype).eps * exact.abs().clamp_min(torch.finfo(dtype).tiny)
    assert ((y.float() - exact).abs() <= 0.5 * ulp + 1e-6 * exact.abs()).all()


@pytest.mark.parametrize("lib", [torch_bn, torch.nn], ids=["bncore", "torch"])
def test_counter_is_read_on_the_host_only_for_the_cumulative_average(lib):
    # a meta tensor has no value to read: a training step on the meta device reads none
    x = torch.empty(4, 3, 2, 2, device="meta")
    assert lib.BatchNorm2d(3, device="meta", momentum=0.1)(x).shape == x.shape
    with pytest.raises(RuntimeError, match="meta"):  # momentum=None needs 1/t on the host
        lib.BatchNorm2d(3, device="meta", momentum=None)(x)


@pytest.mark.parametrize("training", MODES)
def test_a_module_call_validates_its_input_once(monkeypatch, training):
    calls = []
    real = torch_bn.check_input
    monkeypatch.setattr(torch_bn, "check_input", lambda *a, **k: calls.append(a) or real(*a, **k))
    torch_bn.BatchNorm2d(3).train(training)(torch.randn(4, 3, 2, 2))
    assert len(calls) == 1
    torch_bn.batch_norm(torch.randn(4, 3), None, None, training=True)
    assert len(calls) == 2


# --- the phases, reused with other reduction axes ---


def test_phases_with_instance_axes_are_instance_norm():
    # instance norm is batch norm's phases reduced over the spatial axes only: (N, C) statistics
    gen = torch.Generator().manual_seed(50)
    x = torch.randn(3, 4, 5, 6, dtype=torch.float64, generator=gen).requires_grad_()
    w, b = (torch.randn(4, dtype=torch.float64, generator=gen) for _ in range(2))
    dy = torch.randn(x.shape, dtype=torch.float64, generator=gen)
    dims, eps = (2, 3), 1e-5
    mean, var = torch_bn.mean_var(x, dims)
    assert mean.shape == var.shape == (3, 4)
    s = torch_bn.invstd(var, eps)
    y = torch_bn.normalize(x, mean, s, w, b, dims)
    ref = torch.nn.functional.instance_norm(x, weight=w, bias=b, eps=eps)
    torch.testing.assert_close(y, ref)
    xhat = torch_bn.normalize(x, mean, s, None, None, dims).detach()
    sums = torch_bn.backward_reduce(dy, xhat, dims)
    dx = torch_bn.backward_elemt(dy, xhat, s.detach(), w, *sums, 5 * 6, dims)
    torch.testing.assert_close(dx, torch.autograd.grad(ref, x, dy)[0])
