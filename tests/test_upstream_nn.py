"""PyTorch's ``test_batchnorm_*``/``test_BatchNorm_*`` tests of test/test_nn.py and the batch-norm
tests of test/nn/test_load_state_dict.py, ported to bncore's modules and functional.

Each test keeps the name of the upstream test it ports, the upstream inputs and the upstream
assertions (exception types included); where the upstream test compares two torch code paths,
the port compares bncore with torch. CUDA/cuDNN-only tests are listed at the end and skipped.
"""

from __future__ import annotations

from collections import OrderedDict
from functools import partial

import pytest
import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch import nn
from upstream import (
    REDUCED,
    assert_as_accurate_as_torch,
    assert_same,
    checker,
    gradcheck,
    gradgradcheck,
    module_empty_input_check,
)

import bncore

pytestmark = pytest.mark.upstream


def _swap(swap: bool):
    old = torch.__future__.get_swap_module_params_on_conversion()
    torch.__future__.set_swap_module_params_on_conversion(swap)
    return old


# --- TestNN -----------------------------------------------------------------------------------

NHWC_SHAPES = [(bncore.BatchNorm2d, nn.BatchNorm2d, shape, torch.channels_last)
               for shape in [(4, 8, 10, 10), (4, 1, 9, 9), (4, 9, 1, 1)]] + [
    (bncore.BatchNorm3d, nn.BatchNorm3d, shape, torch.channels_last_3d)
    for shape in [(4, 8, 2, 10, 10), (4, 1, 2, 9, 9), (4, 9, 1, 1, 1)]]


def _nhwc_id(case) -> str:
    cls, _, shape, _ = case
    return f"{cls.__name__}-{'x'.join(map(str, shape))}"


def _bn_run(bn: nn.Module, x: torch.Tensor, grad: torch.Tensor) -> list[torch.Tensor]:
    """Output, input gradient, weight and bias gradients of one training step."""
    x = x.detach().clone().requires_grad_()
    out = bn(x)
    out.backward(grad)
    return [out.detach(), x.grad, bn.weight.grad, bn.bias.grad]


@pytest.mark.parametrize("case", NHWC_SHAPES, ids=[_nhwc_id(c) for c in NHWC_SHAPES])
@pytest.mark.parametrize("dtype", [torch.float, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("mixed", [False, True], ids=["same-dtype-module", "float-module"])
def test_batchnorm_nhwc_cpu(case, dtype, mixed):
    """A channels-last input (2-d and 3-d) gives a channels-last output and the input, weight and
    bias gradients of torch's module on the contiguous input; mixed: a float module on reduced
    precision input. In float16/bfloat16 bncore must be as close to the float64 result as torch
    is (the ±1 ulp bound of ``assert_as_accurate_as_torch``), not merely within a loose atol;
    float32 results (all of them for a float input, γ and β gradients of a float module) are
    compared with torch's at the default float32 tolerance.
    """
    cls, ref_cls, shape, fmt = case
    gen = torch.Generator().manual_seed(7)
    channels = shape[1]
    x = torch.randn(shape, generator=gen).to(dtype).contiguous(memory_format=fmt)
    grad = torch.randn(shape, generator=gen).to(dtype).contiguous(memory_format=fmt)
    bn = cls(channels).to(dtype)
    with torch.no_grad():
        bn.weight.uniform_(generator=gen)
        bn.bias.uniform_(generator=gen)
    ref_bn = ref_cls(channels).to(dtype)
    ref_bn.load_state_dict(bn.state_dict())
    exact_bn = ref_cls(channels).double()
    exact_bn.load_state_dict(bn.state_dict())
    if mixed:
        bn.float()
        ref_bn.float()
    ours = _bn_run(bn, x, grad)
    ref = _bn_run(ref_bn, x.contiguous(), grad.contiguous())
    assert ours[0].is_contiguous(memory_format=fmt)
    names = ("output", "input grad", "weight grad", "bias grad")
    exact = _bn_run(exact_bn, x.double(), grad.double())
    for name, a, b, c in zip(names, ours, ref, exact, strict=True):
        if a.dtype in REDUCED:
            assert_as_accurate_as_torch(a, b, c, name)
        else:  # float32 (a float module's γ, β gradients): torch's default tolerance
            assert_same(a, b, name)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_batchnorm_non_contig_cpu(dtype):
    """A permuted (channels-last-like) input in eval mode: channels-last output equal to torch's;
    then a permuted reduced-precision input through a float module in eval (mixed) agrees with
    the float input's output (upstream's 0.05) and is as accurate as torch's mixed output.
    """
    x = torch.arange(6, dtype=torch.float).reshape(1, 3, 2, 1).permute(0, 2, 1, 3)
    bn = bncore.BatchNorm2d(2).float().eval()
    with torch.no_grad():
        bn.weight.uniform_(generator=torch.Generator().manual_seed(8))
        bn.bias.uniform_(generator=torch.Generator().manual_seed(9))
    ref_bn = nn.BatchNorm2d(2).float().eval()
    ref_bn.load_state_dict(bn.state_dict())
    out, ref_out = bn(x), ref_bn(x.contiguous())
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert_same(out, ref_out, "output")

    x_low = torch.arange(24, dtype=dtype).reshape(1, 3, 2, 4).permute(0, 2, 1, 3)
    bn_mix = bncore.BatchNorm2d(2).float().eval()
    ref_mix = nn.BatchNorm2d(2).float().eval()
    ref_mix.load_state_dict(bn_mix.state_dict())
    out_low = bn_mix(x_low)
    assert out_low.dtype == dtype
    assert_same(out_low.float(), bn_mix(x_low.float()), "mixed vs float input",
                atol=0.05, rtol=0.05)
    exact = ref_mix.double()(x_low.double())
    assert_as_accurate_as_torch(out_low, nn.BatchNorm2d(2).float().eval()(x_low), exact,
                                "mixed output")


def test_batchnorm_raises_error_if_less_than_one_value_per_channel():
    x = torch.rand(10)[None, :, None]
    with pytest.raises(ValueError):
        bncore.BatchNorm1d(10)(x)


@pytest.mark.parametrize("size", [9, 11])
def test_batchnorm_raises_error_if_running_mean_is_not_same_size_as_input(size):
    x, running_var = torch.rand(2, 10), torch.rand(10)
    with pytest.raises(RuntimeError):
        bncore.batch_norm(x, torch.rand(size), running_var)


@pytest.mark.parametrize("size", [9, 11])
def test_batchnorm_raises_error_if_running_var_is_not_same_size_as_input(size):
    x, running_mean = torch.rand(2, 10), torch.rand(10)
    with pytest.raises(RuntimeError):
        bncore.batch_norm(x, running_mean, torch.rand(size))


@pytest.mark.parametrize("size", [9, 11])
def test_batchnorm_raises_error_if_weight_is_not_same_size_as_input(size):
    x, running_mean, running_var = torch.rand(2, 10), torch.rand(10), torch.rand(10)
    with pytest.raises(RuntimeError):
        bncore.batch_norm(x, running_mean, running_var, weight=nn.Parameter(torch.rand(size)))


@pytest.mark.parametrize("size", [9, 11])
def test_batchnorm_raises_error_if_bias_is_not_same_size_as_input(size):
    x, running_mean, running_var = torch.rand(2, 10), torch.rand(10), torch.rand(10)
    with pytest.raises(RuntimeError):
        bncore.batch_norm(x, running_mean, running_var, bias=nn.Parameter(torch.rand(size)))


@pytest.mark.parametrize("dual_indices", [(0,), (1,), (1, 2), (0, 1), (0, 1, 2)],
                         ids=lambda d: "dual-" + "".join(map(str, d)))
def test_batchnorm_raises_error_if_running_var_or_running_mean_have_forward_grad(dual_indices):
    """A forward-mode tangent on running_mean/running_var (with one on the input) raises
    RuntimeError 'batch_norm is not differentiable wrt running_mean and running_var'.
    """
    gen = torch.Generator().manual_seed(10)
    args = (torch.randn(3, 2, 5, generator=gen), torch.randn(2, generator=gen),
            torch.randn(2, generator=gen))
    fn = partial(bncore.batch_norm, training=False, momentum=-1.2)
    tangents = tuple(torch.rand(x.shape, generator=gen) for x in args)
    with fwAD.dual_level():
        duals = [fwAD.make_dual(p, t) if i in dual_indices else p
                 for i, (p, t) in enumerate(zip(args, tangents, strict=True))]
        msg = "batch_norm is not differentiable wrt running_mean and running_var"
        if (1 in dual_indices or 2 in dual_indices) and 0 in dual_indices:
            with pytest.raises(RuntimeError, match=msg):
                fn(*duals)
        else:
            fn(*duals)


def test_batchnorm_buffer_update_when_stats_are_not_tracked():
    """Buffers exist but ``track_running_stats`` was turned off: they are used, not updated."""
    bn = bncore.BatchNorm1d(4, track_running_stats=True)
    bn.track_running_stats = False
    num_batches = bn.num_batches_tracked.clone()
    running_mean, running_var = bn.running_mean.clone(), bn.running_var.clone()
    bn(torch.rand(32, 4))
    assert torch.equal(num_batches, bn.num_batches_tracked)
    assert torch.equal(running_mean, bn.running_mean)
    assert torch.equal(running_var, bn.running_var)


def test_batchnorm_load_state_dict():
    """An empty (non-strict) state dict leaves num_batches_tracked alone; on the meta device,
    loading it with ``assign=True`` still gives a real counter at 0.
    """
    bn = bncore.BatchNorm2d(3)
    assert torch.equal(bn.state_dict()["num_batches_tracked"], torch.tensor(0))
    bn.num_batches_tracked = torch.tensor(10)
    assert torch.equal(bn.state_dict()["num_batches_tracked"], torch.tensor(10))
    empty: OrderedDict[str, torch.Tensor] = OrderedDict()
    bn.load_state_dict(empty, strict=False)
    assert torch.equal(bn.state_dict()["num_batches_tracked"], torch.tensor(10))
    with torch.device("meta"):
        meta_bn = bncore.BatchNorm2d(3)
    assert meta_bn.num_batches_tracked.device == torch.device("meta")
    meta_bn.load_state_dict(empty, assign=True, strict=False)
    assert torch.equal(meta_bn.state_dict()["num_batches_tracked"], torch.tensor(0))


# --- TestNNDeviceType (CPU) -------------------------------------------------------------------

def test_BatchNorm_empty():
    """A (0, 3, 2, 2) batch in training: empty output, zero gradients, running stats unchanged."""
    mod = bncore.BatchNorm2d(3)
    module_empty_input_check(mod, torch.randn(0, 3, 2, 2))
    assert torch.equal(mod.running_mean, torch.tensor([0.0, 0, 0]))
    assert torch.equal(mod.running_var, torch.tensor([1.0, 1, 1]))
    assert torch.equal(mod.weight.grad, torch.tensor([0.0, 0, 0]))
    assert torch.equal(mod.bias.grad, torch.tensor([0.0, 0, 0]))


def test_batchnorm_empty_batch_counts_as_a_tracked_batch_like_torch():
    """The empty batch of test_BatchNorm_empty, against torch.nn: same num_batches_tracked."""
    ours, ref = bncore.BatchNorm2d(3), nn.BatchNorm2d(3)
    x = torch.randn(0, 3, 2, 2)
    ref(x)
    ours(x)
    assert_same(ours.state_dict(), ref.state_dict(), "state after an empty batch")


#: (input dtype, module dtype): upstream's float and CUDA bfloat16 cases, and the CPU-only
#: ``*_mixed`` tests (bfloat16 or float16 input through a float module).
MODULE_DTYPES = [(torch.float, torch.float), (torch.bfloat16, torch.bfloat16),
                 (torch.bfloat16, torch.float), (torch.float16, torch.float)]
MODULE_DTYPE_IDS = ["float", "bfloat16", "bfloat16-float-module", "float16-float-module"]


@pytest.mark.parametrize("dtype, module_dtype", MODULE_DTYPES, ids=MODULE_DTYPE_IDS)
def test_batchnorm_simple_average(dtype, module_dtype):
    """``momentum=None``: after reset, two passes give the mean of the two single-pass stats
    (``test_batchnorm_simple_average`` and, with a float module, ``..._mixed``).
    """
    module = bncore.BatchNorm1d(3, momentum=None).to(dtype=module_dtype)
    zeros = torch.zeros(3, dtype=module_dtype)
    ones = torch.ones(3, dtype=module_dtype)
    assert_same(module.running_mean, zeros, "initial running_mean")
    assert_same(module.running_var, ones, "initial running_var")
    gen = torch.Generator().manual_seed(11)
    data1, data2 = torch.rand(4, 3, generator=gen).to(dtype), torch.rand(4, 3, generator=gen).to(
        dtype)
    res1 = module(data1)
    running_mean1, running_var1 = module.running_mean.clone(), module.running_var.clone()
    assert not torch.equal(running_mean1, zeros) and not torch.equal(running_var1, ones)
    module.reset_running_stats()
    assert_same(module.running_mean, zeros, "reset running_mean")
    res2 = module(data2)
    running_mean2, running_var2 = module.running_mean.clone(), module.running_var.clone()
    module.reset_running_stats()
    res3, res4 = module(data1), module(data2)
    assert_same(res3, res1, "first output")
    assert_same(res4, res2, "second output")
    assert_same(module.running_mean, (running_mean1 + running_mean2) / 2, "averaged mean")
    assert_same(module.running_var, (running_var1 + running_var2) / 2, "averaged var")
    ref = nn.BatchNorm1d(3, momentum=None).to(dtype=module_dtype)
    expected = [ref(data1), ref(data2)]
    if dtype not in REDUCED and module_dtype not in REDUCED:
        assert_same([res3, res4], expected, "outputs vs torch.nn")
        assert_same(module.state_dict(), ref.state_dict(), "averaged statistics vs torch.nn")
        return
    # reduced precision: torch's CPU kernel is itself a few ulp off, so bncore must be at
    # least as close as torch to the same steps in float64
    exact = nn.BatchNorm1d(3, momentum=None).double()
    for name, ours, theirs, d in (("first output", res3, expected[0], data1),
                                  ("second output", res4, expected[1], data2)):
        assert_as_accurate_as_torch(ours, theirs, exact(d.double()), f"{name} vs torch.nn")
    for key in ("running_mean", "running_var"):
        assert_as_accurate_as_torch(getattr(module, key), getattr(ref, key),
                                    getattr(exact, key), f"averaged {key} vs torch.nn")


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("dtype, module_dtype", MODULE_DTYPES, ids=MODULE_DTYPE_IDS)
def test_batchnorm_eval(ndim, dtype, module_dtype):
    """In eval mode two passes give the same output and input gradient; an untracked module
    gives the same output in train and in eval.
    """
    gen = torch.Generator().manual_seed(12)
    shape = (4, 3) if ndim == 2 else (4, 3, 2)
    module = bncore.BatchNorm1d(3).to(dtype=module_dtype).eval()
    data = torch.rand(shape, generator=gen).to(dtype).requires_grad_()
    grad = torch.rand(shape, generator=gen).to(dtype)
    res1 = module(data)
    res1.backward(grad)
    grad1 = data.grad.clone()
    data.grad = None
    res2 = module(data)
    res2.backward(grad)
    assert_same(res1, res2, "eval output, two passes")
    assert_same(grad1, data.grad, "eval input grad, two passes")
    module = bncore.BatchNorm1d(3, track_running_stats=False).to(dtype=module_dtype)
    data = torch.rand(4, 3, generator=gen).to(dtype).requires_grad_()
    res1 = module(data)
    res1.backward(torch.rand(4, 3, generator=gen).to(dtype))
    module.eval()
    assert_same(module(data), res1, "untracked: eval output equals train output")


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("dtype, module_dtype", MODULE_DTYPES, ids=MODULE_DTYPE_IDS)
def test_batchnorm_affine(ndim, dtype, module_dtype):
    """affine=False equals affine=True with γ = 1, β = 0: outputs and input gradients."""
    gen = torch.Generator().manual_seed(13)
    shape = (4, 3) if ndim == 2 else (4, 3, 2)
    module = bncore.BatchNorm1d(3, affine=False).to(dtype=module_dtype)
    module_affine = bncore.BatchNorm1d(3, affine=True).to(dtype=module_dtype)
    with torch.no_grad():
        module_affine.weight.fill_(1.0)
        module_affine.bias.zero_()
    data = torch.rand(shape, generator=gen).to(dtype).requires_grad_()
    grad = torch.ones_like(data)
    res1 = module_affine(data)
    res1.backward(grad)
    grad1 = data.grad.clone()
    data.grad = None
    res2 = module(data)
    res2.backward(grad)
    assert_same(res1, res2, "output")
    assert_same(grad1, data.grad, "input grad")


@pytest.mark.parametrize("dtype", [torch.float, torch.double], ids=str)
def test_batchnorm_update_stats(dtype):
    """Training updates the running statistics and counts the batch; eval changes nothing; both
    equal torch.nn's.
    """
    gen = torch.Generator().manual_seed(14)
    data = torch.rand(4, 3, generator=gen).to(dtype)
    ours, ref = bncore.BatchNorm1d(3).to(dtype), nn.BatchNorm1d(3).to(dtype)
    for training in (True, False):
        ours.train(training)
        ref.train(training)
        before = {k: v.clone() for k, v in ours.state_dict().items()}
        ours(data)
        ref(data)
        after = ours.state_dict()
        changed = not torch.equal(before["running_mean"], after["running_mean"])
        assert changed == training
        assert not torch.equal(before["running_var"], after["running_var"]) == training
        expected_count = before["num_batches_tracked"] + (1 if training else 0)
        assert torch.equal(after["num_batches_tracked"], expected_count)
        assert_same(ours.state_dict(), ref.state_dict(), f"state (training={training})")


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_batchnorm_grad(training):
    """F.batch_norm's gradcheck and gradgradcheck on arange data (float64), as upstream."""
    bs, n_feat, size_feat = 4, 5, 6
    x = torch.arange(bs * n_feat * size_feat, dtype=torch.double).view(
        bs, n_feat, size_feat).requires_grad_()
    weight = torch.arange(1, n_feat + 1, dtype=torch.double).requires_grad_()
    bias = torch.arange(n_feat, dtype=torch.double).requires_grad_()
    running_mean = 1 - torch.arange(n_feat, dtype=torch.double)
    running_var = 2 * torch.arange(n_feat, dtype=torch.double)
    inputs = (x, running_mean, running_var, weight, bias, training, 0.1, 0.0001)
    assert gradcheck(bncore.batch_norm, inputs)
    assert gradgradcheck(bncore.batch_norm, inputs)


@pytest.mark.parametrize("dtype", [torch.float, torch.double], ids=str)
def test_batchnorm_large_batch(dtype):
    """A large batch (65 537 × 1 × 1 × 1) gives torch's output and running statistics."""
    gen = torch.Generator().manual_seed(15)
    x = torch.rand(65537, 1, 1, 1, generator=gen).to(dtype) * 10 + 3
    ours, ref = bncore.BatchNorm2d(1).to(dtype), nn.BatchNorm2d(1).to(dtype)
    assert_same(ours(x), ref(x), "output", atol=1e-4, rtol=1e-4)
    assert_same(ours.state_dict(), ref.state_dict(), "running statistics", atol=1e-4, rtol=1e-4)


# --- test/nn/test_load_state_dict.py ----------------------------------------------------------

@pytest.mark.parametrize("swap", [True, False], ids=["swap", "no-swap"])
def test_load_state_dict_BC(swap):
    """A version-1 state dict, or one without a version, has no num_batches_tracked: it loads
    (strict) with the counter 0 as a long.
    """
    old = _swap(swap)
    try:
        bn = bncore.BatchNorm2d(3)
        state_dict = bn.state_dict()
        del state_dict["num_batches_tracked"]
        state_dict._metadata[""]["version"] = 1
        bn.load_state_dict(state_dict)
        assert bn.num_batches_tracked.dtype == torch.long
        assert bn.num_batches_tracked.item() == 0
        del state_dict._metadata[""]["version"]
        bn.load_state_dict(state_dict)
        assert bn.num_batches_tracked.dtype == torch.long
        assert bn.num_batches_tracked.item() == 0
    finally:
        torch.__future__.set_swap_module_params_on_conversion(old)


def test_state_dict_records_torch_version_of_batchnorm():
    """Torch saves BatchNorm state dicts as version 2 (the version with num_batches_tracked);
    bncore's carry the same version, so torch's loader reads them as new-style.
    """
    ours = bncore.BatchNorm2d(3).state_dict()._metadata[""].get("version")
    assert ours == nn.BatchNorm2d(3).state_dict()._metadata[""].get("version") == 2


@pytest.mark.parametrize("counter", [0, 5])
@pytest.mark.parametrize("source", ["torch", "bncore"])
def test_old_checkpoint_loads_as_into_torch(source, counter):
    """A version-1 checkpoint (no num_batches_tracked), written by either side, loads (strict)
    into bncore's module exactly as into torch's: torch keeps the module's own counter (a fresh
    module's is 0), as its ``_load_from_state_dict`` hook does.
    """
    src = (nn.BatchNorm2d if source == "torch" else bncore.BatchNorm2d)(3)
    src(torch.randn(4, 3, 2, 2, generator=torch.Generator().manual_seed(18)))
    state_dict = src.state_dict()
    del state_dict["num_batches_tracked"]
    state_dict._metadata[""]["version"] = 1
    ours, ref = bncore.BatchNorm2d(3), nn.BatchNorm2d(3)
    for m in (ours, ref):
        m.num_batches_tracked.fill_(counter)
    ref.load_state_dict(state_dict)
    ours.load_state_dict(state_dict)
    assert ours.num_batches_tracked.dtype == torch.long
    assert_same(ours.state_dict(), ref.state_dict(), "state after loading a version-1 dict")


@pytest.mark.parametrize("swap", [True, False], ids=["swap", "no-swap"])
def test_load_state_dict(swap):
    """The batch-norm part of upstream test_load_state_dict: in a net, a partial non-strict load
    sets ``bn.running_mean`` and leaves the rest; an unexpected key is an error when strict.
    """
    old = _swap(swap)
    try:
        net = nn.Sequential(OrderedDict([("linear1", nn.Linear(5, 5)),
                                         ("bn", bncore.BatchNorm2d(2))]))
        old_state = {k: v.clone() for k, v in net.state_dict().items()}
        new_mean = torch.randn(2, generator=torch.Generator().manual_seed(16))
        net.load_state_dict({"bn.running_mean": new_mean, "nonexistent_key": torch.rand(3)},
                            strict=False)
        assert torch.equal(net.bn.running_mean, new_mean)
        for k, v in net.state_dict().items():
            if k != "bn.running_mean":
                assert torch.equal(v, old_state[k]), k
        full = dict(net.state_dict())
        full["bn.extra"] = torch.rand(2)
        with checker().assertRaisesRegex(RuntimeError, "Unexpected key"):
            net.load_state_dict(full)
    finally:
        torch.__future__.set_swap_module_params_on_conversion(old)


def test_state_dict_loads_both_ways_with_torch():
    """A trained torch.nn BatchNorm's state dict loads into bncore's (strict) and back."""
    ref = nn.BatchNorm2d(3)
    ref(torch.randn(4, 3, 2, 2, generator=torch.Generator().manual_seed(17)))
    ours = bncore.BatchNorm2d(3)
    ours.load_state_dict(ref.state_dict())
    back = nn.BatchNorm2d(3)
    back.load_state_dict(ours.state_dict())
    assert_same(back.state_dict(), ref.state_dict(), "round trip")


# --- CUDA/cuDNN-only upstream tests -----------------------------------------------------------

CUDA_ONLY = {
    "test_batchnorm_cudnn_nhwc": "needs cuDNN (channels-last cuDNN kernel)",
    "test_batchnorm_cudnn_half": "needs CUDA (THNN vs cuDNN half kernels)",
    "test_batchnorm_nhwc_cuda": "@onlyCUDA: CUDA channels-last eval kernel",
    "test_batchnorm_nonaffine_cuda_half_input": "@onlyCUDA: half input on a CUDA float module",
}


@pytest.mark.parametrize("name", sorted(CUDA_ONLY))
def test_cuda_only_upstream_batchnorm_tests(name):
    """Upstream tests that exercise CUDA/cuDNN kernels; bncore's CUDA twins live in test_cuda."""
    pytest.skip(f"{name}: {CUDA_ONLY[name]}")


def test_functional_matches_torch_on_upstream_grad_inputs():
    """The arange inputs of test_batchnorm_grad: bncore's output equals F.batch_norm's."""
    bs, n_feat, size_feat = 4, 5, 6
    x = torch.arange(bs * n_feat * size_feat, dtype=torch.double).view(bs, n_feat, size_feat)
    w = torch.arange(1, n_feat + 1, dtype=torch.double)
    b = torch.arange(n_feat, dtype=torch.double)
    for training in (False, True):
        rm, rv = 1 - torch.arange(n_feat, dtype=torch.double), 2 * torch.arange(
            n_feat, dtype=torch.double)
        rm2, rv2 = rm.clone(), rv.clone()
        out = bncore.batch_norm(x, rm, rv, w, b, training, 0.1, 1e-4)
        expected = F.batch_norm(x, rm2, rv2, w, b, training, 0.1, 1e-4)
        assert_same(out, expected, f"output (training={training})")
        assert_same((rm, rv), (rm2, rv2), f"running stats (training={training})")
