"""PyTorch's ModuleInfo cases for ``nn.BatchNorm1d/2d/3d``, run through bncore's modules.

Each case is one of torch's module inputs (``module_inputs_torch_nn_BatchNorm*``), in training and
in eval mode, driven the way ``test/test_modules.py`` drives it (forward, factory kwargs, repr,
save/load, non-contiguous input, gradcheck/gradgradcheck in float64, memory formats, the
train/eval flag, error inputs, ``.to``/``.to_empty``, meta-device construction). Where torch's
test only checks that a call does not raise, the harness also compares bncore's result with
torch's module, built from the same arguments and given the same state (the oracle).
"""

from __future__ import annotations

import copy
import io
from itertools import product
from typing import Any

import pytest
import torch
from torch import nn
from torch._subclasses.meta_utils import assert_metadata_eq
from upstream import (
    BN_MODULE_INFOS,
    OURS,
    ModuleErrorEnum,
    assert_same,
    build_pair,
    checker,
    flat_fn,
    gradcheck,
    gradgradcheck,
    iter_partial_inputs,
    module_cases,
    module_inputs,
)

pytestmark = pytest.mark.upstream

CASES = module_cases()
TRAINING = pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
DTYPES = pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)


def _state(m: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


@pytest.mark.parametrize("info, index", CASES)
@TRAINING
@DTYPES
def test_forward_output_and_buffers_match_torch(info, index, training, dtype):
    """test_forward, with torch.nn as reference: two forward passes (so that ``momentum=None``'s
    cumulative average and ``num_batches_tracked`` are exercised), outputs and state equal.
    """
    pair = build_pair(info, index, dtype, training)
    for step in range(2):
        x_ours, x_ref = pair.fresh_input(False)
        out, expected = pair.ours(x_ours), pair.ref(x_ref)
        assert_same(out, expected, f"output, pass {step}")
        assert_same(_state(pair.ours), _state(pair.ref), f"state_dict after pass {step}")


@pytest.mark.parametrize("info, index", CASES)
@TRAINING
@DTYPES
def test_dtype_methods_convert_parameters_and_buffers(info, index, training, dtype):
    """test_forward's second half: after ``.float()``/``.double()`` and a forward pass, every
    floating parameter and buffer has the dtype and device.
    """
    pair = build_pair(info, index, dtype, training)
    m = pair.ours
    m(pair.input.detach().clone())
    {torch.float32: m.float, torch.float64: m.double}[dtype]()
    m(pair.input.detach().clone())
    for name, t in list(m.named_parameters()) + list(m.named_buffers()):
        assert t.device == torch.device("cpu"), name
        if t.is_floating_point():
            assert t.dtype == dtype, name


@pytest.mark.parametrize("info, index", CASES)
@DTYPES
def test_factory_kwargs_place_parameters_and_buffers(info, index, dtype):
    """test_factory_kwargs: ``device=``/``dtype=`` reach every parameter and floating buffer."""
    mi = module_inputs(info, dtype, True)[index]
    args, kwargs = mi.constructor_input.args, dict(mi.constructor_input.kwargs)
    kwargs.update(device="cpu", dtype=dtype)
    m = OURS[info.module_cls](*args, **kwargs)
    ref = info.module_cls(*args, **kwargs)
    for (name, t), (ref_name, r) in zip(
        list(m.named_parameters()) + list(m.named_buffers()),
        list(ref.named_parameters()) + list(ref.named_buffers()),
        strict=True,
    ):
        assert name == ref_name
        assert t.device == torch.device("cpu") and t.dtype == r.dtype, name
        if t.is_floating_point():
            assert t.dtype == dtype, name


@pytest.mark.parametrize("info, index", CASES)
def test_repr_matches_torch(info, index):
    """test_repr: ``repr``/``str`` work; as a drop-in, the text equals torch's but for the name."""
    pair = build_pair(info, index, torch.float32, True)
    assert str(pair.ours) == repr(pair.ours)
    assert repr(pair.ours) == repr(pair.ref)


@pytest.mark.parametrize("info, index", CASES)
@TRAINING
def test_save_load_gives_same_output_and_state_dict(info, index, training):
    """test_save_load: a pickled module gives the same output; the state dict round-trips through
    ``torch.save``/``torch.load`` with and without ``weights_only``.
    """
    pair = build_pair(info, index, torch.float32, training)
    m = pair.ours
    sd = _state(m)
    out = m(pair.input.detach().clone())
    with io.BytesIO() as f:
        torch.save(m, f)
        f.seek(0)
        loaded = torch.load(f, weights_only=False)
    assert type(loaded) is type(m)
    assert_same(loaded(pair.input.detach().clone()), out, "output of the loaded copy")
    with io.BytesIO() as f:
        torch.save(sd, f)
        for weights_only in (False, True):
            f.seek(0)
            assert_same(torch.load(f, weights_only=weights_only), sd, "state_dict round trip")


@pytest.mark.parametrize("info, index", CASES)
@TRAINING
def test_deepcopy_is_independent_and_equal(info, index, training):
    """A ``copy.deepcopy`` computes the same, and its buffers are not shared with the original."""
    pair = build_pair(info, index, torch.float64, training)
    twin = copy.deepcopy(pair.ours)
    assert_same(twin(pair.input.detach().clone()), pair.ours(pair.input.detach().clone()),
                "deepcopy output")
    for (name, a), (_, b) in zip(twin.named_buffers(), pair.ours.named_buffers(), strict=True):
        assert a.data_ptr() != b.data_ptr() or a.numel() == 0, name


def _non_contiguous(t: torch.Tensor) -> torch.Tensor:
    """test_modules' recipe: repeat along the last dim and take every other element."""
    out = torch.repeat_interleave(t, 2, dim=-1)[..., ::2].detach()
    return out.requires_grad_(t.requires_grad)


@pytest.mark.parametrize("info, index", CASES)
@TRAINING
def test_non_contiguous_input_and_grad_give_same_results(info, index, training):
    """test_non_contiguous_tensors: every mix of (non-)contiguous input and grad_output gives the
    output, input gradient and parameter gradients of the contiguous run; those equal torch's.
    """
    dtype = torch.float64
    pair = build_pair(info, index, dtype, training, requires_grad=True)
    m = pair.ours
    ref_state = _state(m)
    x = pair.input.detach().clone().requires_grad_()
    out = m(x)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(3), dtype=dtype)
    out.backward(g)
    default = (out.detach(), x.grad.clone(), [None if p.grad is None else p.grad.clone()
                                              for p in m.parameters()])
    x_ref = pair.input.detach().clone().requires_grad_()
    out_ref = pair.ref(x_ref)
    out_ref.backward(g)
    assert_same(default[0], out_ref, "output vs torch")
    assert_same(default[1], x_ref.grad, "input grad vs torch")
    assert_same(default[2], [p.grad for p in pair.ref.parameters()], "param grads vs torch")
    for nc_x, nc_g in product([False, True], repeat=2):
        m.load_state_dict(ref_state)  # same running statistics as the default run
        m.zero_grad(set_to_none=True)
        xi = pair.input.detach().clone().requires_grad_()
        xi = _non_contiguous(xi) if nc_x else xi
        gi = _non_contiguous(g) if nc_g else g
        assert not nc_x or not xi.is_contiguous() or xi.numel() <= 1
        o = m(xi)
        o.backward(gi)
        assert_same(o.detach(), default[0], f"output (nc input={nc_x}, nc grad={nc_g})")
        assert_same(xi.grad, default[1], f"input grad (nc input={nc_x}, nc grad={nc_g})",
                    atol=1e-4, rtol=0)
        assert_same([p.grad for p in m.parameters()], default[2], "param grads")


def _gradients_check(info, index, training, check) -> None:
    """test_modules' _test_gradients_helper: the total derivative w.r.t. (input, parameters), then
    each parameter's partial derivative, with torch's gradcheck wrappers (float64).
    """
    pair = build_pair(info, index, torch.float64, training, requires_grad=True)
    m = pair.ours
    x = pair.input.detach().clone().requires_grad_()
    params = tuple(m.parameters())
    for grad_input in iter_partial_inputs((x,), params):
        flat, spec = torch.utils._pytree.tree_flatten(grad_input)
        assert check(flat_fn(m, 1, spec), flat, nondet_tol=0.0,
                     fast_mode=info.gradcheck_fast_mode)


@pytest.mark.parametrize("info, index", CASES)
@TRAINING
def test_gradcheck(info, index, training):
    """test_grad (float64): torch's gradcheck, batched gradients included."""
    _gradients_check(info, index, training, gradcheck)


@pytest.mark.parametrize("info, index", [c for c in CASES if c.values[0].supports_gradgrad])
@TRAINING
def test_gradgradcheck(info, index, training):
    """test_gradgrad (float64): torch's gradgradcheck, batched gradients included."""
    _gradients_check(info, index, training, gradgradcheck)


def _mem_formats(x: torch.Tensor) -> tuple[list[torch.memory_format], list[torch.memory_format]]:
    if x.dim() == 4:
        return ([torch.contiguous_format, torch.channels_last],
                [torch.preserve_format, torch.contiguous_format, torch.channels_last])
    if x.dim() == 5:
        return ([torch.contiguous_format, torch.channels_last_3d],
                [torch.preserve_format, torch.contiguous_format, torch.channels_last_3d])
    return [torch.contiguous_format], [torch.preserve_format, torch.contiguous_format]


def _check_out_mem_format(t: torch.Tensor, input_format: torch.memory_format, what: str) -> None:
    """As test_modules: 4-d/5-d results follow a channels-last input, others are contiguous
    (BatchNorm's ModuleInfo has ``module_memformat_affects_out=False``).
    """
    if t.dim() == 4 and input_format == torch.channels_last:
        assert t.numel() == 0 or t.is_contiguous(memory_format=torch.channels_last), what
    elif t.dim() == 5 and input_format == torch.channels_last_3d:
        assert t.numel() == 0 or t.is_contiguous(memory_format=torch.channels_last_3d), what
    else:
        assert t.is_contiguous(), what


@pytest.mark.parametrize("info, index", CASES)
@TRAINING
def test_memory_format(info, index, training):
    """test_memory_format (float32): every (input, module) memory format gives the contiguous
    result and gradients, in the memory format torch's test requires.
    """
    dtype = torch.float32
    pair = build_pair(info, index, dtype, training, requires_grad=True)
    m = pair.ours
    start = _state(m)
    x = pair.input.detach().clone().requires_grad_()
    desired = m(x)
    grad_out = torch.rand(desired.shape, generator=torch.Generator().manual_seed(4), dtype=dtype)
    params = tuple(m.parameters())
    ref_grads = torch.autograd.grad(desired, (x, *params), grad_out) if training else None
    input_formats, module_formats = _mem_formats(x)
    for input_format, module_format in product(input_formats, module_formats):
        m.load_state_dict(start)  # the running statistics the desired output was computed from
        m.to(memory_format=module_format)
        xi = pair.input.detach().clone().to(memory_format=input_format).requires_grad_()
        out = m(xi)
        what = f"input {input_format}, module {module_format}"
        assert_same(out, desired, f"output, {what}")
        _check_out_mem_format(out, input_format, f"output memory format, {what}")
        if training:
            params = tuple(m.parameters())
            grads = torch.autograd.grad(out, (xi, *params),
                                        torch.empty_like(out).copy_(grad_out))
            assert_same(grads, ref_grads, f"gradients, {what}")
            for g in grads:
                _check_out_mem_format(g, input_format, f"gradient memory format, {what}")


@pytest.mark.parametrize("info, index", CASES)
def test_train_and_eval_differ_flag_holds(info, index):
    """test_if_train_and_eval_modes_differ: without a ``training`` attribute, forward either
    works or fails on that attribute, and the ModuleInfo says train and eval differ.
    """
    pair = build_pair(info, index, torch.float32, True)
    m = pair.ours
    delattr(m, "training")
    try:
        m(pair.input.detach().clone())
    except AttributeError as e:
        assert "'training'" in str(e), e
        assert info.train_and_eval_differ


@pytest.mark.parametrize("info", BN_MODULE_INFOS, ids=lambda i: i.module_cls.__name__)
@TRAINING
def test_error_inputs_raise_torch_type_and_message(info, training):
    """test_errors: each ErrorModuleInput raises its error type, matching its regex."""
    torch.manual_seed(0)
    error_inputs = list(info.module_error_inputs_func(
        info, device="cpu", dtype=torch.float32, requires_grad=False, training=training))
    assert error_inputs
    tc = checker()
    for err in error_inputs:
        mi = err.module_error_input
        c_args, c_kwargs = mi.constructor_input.args, mi.constructor_input.kwargs
        cls = OURS[info.module_cls]
        if err.error_on == ModuleErrorEnum.CONSTRUCTION_ERROR:
            with tc.assertRaisesRegex(err.error_type, err.error_regex):
                cls(*c_args, **c_kwargs)
        else:  # as upstream's test_errors: a freshly built module, so in training mode
            m = cls(*c_args, **c_kwargs)
            with tc.assertRaisesRegex(err.error_type, err.error_regex):
                m(*mi.forward_input.args, **mi.forward_input.kwargs)


def _swap_future(swap: bool) -> Any:
    class _Ctx:
        def __enter__(self) -> None:
            self.old = torch.__future__.get_swap_module_params_on_conversion()
            torch.__future__.set_swap_module_params_on_conversion(swap)

        def __exit__(self, *exc: object) -> None:
            torch.__future__.set_swap_module_params_on_conversion(self.old)

    return _Ctx()


@pytest.mark.parametrize("info, index", CASES)
@pytest.mark.parametrize("swap", [True, False], ids=["swap", "no-swap"])
@pytest.mark.parametrize("set_grad", [True, False], ids=["grad", "no-grad"])
def test_to_converts_parameters_in_place_or_by_swap(info, index, swap, set_grad):
    """test_to (float32): ``.to(dtype)`` over the ModuleInfo's dtypes keeps Parameters, converts
    them and their grads, and keeps identities as torch's swap/no-swap rules say.
    """
    mi = module_inputs(info, torch.float32, True)[index]
    m = OURS[info.module_cls](*mi.constructor_input.args, **mi.constructor_input.kwargs)
    if set_grad:
        for p in m.parameters():
            p.grad = torch.randn_like(p)
    with _swap_future(swap):
        if swap and not set_grad and any(True for _ in m.parameters()):
            m(mi.forward_input.args[0]).sum().backward()
            m.to(dtype=torch.half)
            m.to(dtype=torch.float32)
        prev = torch.float32
        for dtype in info.dtypes:
            ids_before = [id(p) for p in m.parameters()]
            cdatas_before = [p._cdata for p in m.parameters()]
            m.to(device="cpu", dtype=dtype)
            assert all(isinstance(p, nn.Parameter) and p.dtype == dtype for p in m.parameters())
            if set_grad:
                assert all(p.grad.dtype == dtype for p in m.parameters())
            assert [id(p) for p in m.parameters()] == ids_before
            cdatas_after = [p._cdata for p in m.parameters()]
            if swap and dtype != prev:
                assert all(a != b for a, b in zip(cdatas_before, cdatas_after, strict=True))
            elif not swap:
                assert cdatas_after == cdatas_before
            prev = dtype


@pytest.mark.parametrize("info, index", CASES)
@pytest.mark.parametrize("swap", [True, False], ids=["swap", "no-swap"])
def test_to_empty_from_meta(info, index, swap):
    """test_to_empty: a module built on the meta device materializes on the CPU as Parameters."""
    with torch.device("meta"):
        mi = module_inputs(info, torch.float32, True)[index]
    with _swap_future(swap):
        with torch.device("meta"):
            m = OURS[info.module_cls](*mi.constructor_input.args, **mi.constructor_input.kwargs)
        ids_before = [id(p) for p in m.parameters()]
        m.to_empty(device="cpu")
        assert all(isinstance(p, nn.Parameter) for p in m.parameters())
        assert all(p.device == torch.device("cpu") for p in m.parameters())
        ids_after = [id(p) for p in m.parameters()]
        assert (ids_after == ids_before) if swap else all(
            a != b for a, b in zip(ids_before, ids_after, strict=True))


@pytest.mark.parametrize("info, index", CASES)
def test_device_ctx_init_matches_cpu_metadata(info, index):
    """test_device_ctx_init: built under ``torch.device('meta')``, every parameter and buffer is
    meta with the CPU module's metadata.
    """
    mi = module_inputs(info, torch.float32, True)[index]
    cls = OURS[info.module_cls]
    cpu = cls(*mi.constructor_input.args, **mi.constructor_input.kwargs)
    with torch.device("meta"):
        meta = cls(*mi.constructor_input.args, **mi.constructor_input.kwargs)
    tc = checker()
    for a, b in zip(list(meta.parameters()) + list(meta.buffers()),
                    list(cpu.parameters()) + list(cpu.buffers()), strict=True):
        assert a.is_meta
        assert_metadata_eq(tc.assertEqual, a, b)


@pytest.mark.parametrize("name", ["test_cpu_gpu_parity", "test_multiple_device_transfer"])
def test_accelerator_only_module_tests(name):
    """test_modules' accelerator-only tests need a second device."""
    if not torch.cuda.is_available():
        pytest.skip(f"{name} is @onlyAccelerator in test_modules: needs a CUDA device")
    pytest.skip(f"{name}: the CUDA run belongs to the cuda-marked suite, not this CPU harness")
