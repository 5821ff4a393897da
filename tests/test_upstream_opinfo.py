"""PyTorch's OpInfo for ``nn.functional.batch_norm``, run through ``bncore.batch_norm``.

Every sample of ``sample_inputs_batch_norm`` is called with ``bncore.batch_norm`` and with
``torch.nn.functional.batch_norm`` (the oracle) and compared: output, in-place running statistics,
gradients, non-contiguous samples (test_ops' TestCommon), then torch's own gradient checks with
the flags of the OpInfo, as test_ops' TestGradients/TestFwdGradients call them (float64):
gradcheck, gradgradcheck, forward-mode AD (``supports_forward_ad``) and forward-over-reverse
(``supports_fwgrad_bwgrad``). The torch.func transforms (vjp, grad, jvp, vmap, jacrev) of
functorch's op tests close the file, with torch's transform of F.batch_norm as the oracle.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch._subclasses.meta_utils import assert_metadata_eq
from torch.testing._internal.common_dtype import all_types_and_complex_and
from torch.testing._internal.common_utils import noncontiguous_like
from upstream import (
    BN_OPINFO,
    BN_OPINFO_VARIANTS,
    REDUCED,
    assert_as_accurate_as_torch,
    assert_same,
    checker,
    clone_sample_args,
    gradcheck,
    gradgradcheck,
    sample_cases,
    samples,
)

import bncore

pytestmark = pytest.mark.upstream

OP = BN_OPINFO
CASES = sample_cases()
ALL_DTYPES = sorted(OP.supported_dtypes("cpu"), key=str)
FLOAT_DTYPES = pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)


def _run(fn: Callable[..., torch.Tensor], sample: Any,
         cast: torch.dtype | None = None) -> tuple[torch.Tensor, list[Any]]:
    """Call ``fn`` on a private copy of the sample (converted to ``cast`` if given); return the
    output and the (updated) args.
    """
    args, kwargs = clone_sample_args(sample)
    if cast is not None:
        args = [a.to(cast) if isinstance(a, torch.Tensor) else a for a in args]
    x = sample.input.detach().clone().to(cast or sample.input.dtype)
    x.requires_grad_(sample.input.requires_grad)
    weight, bias = (None if a is None else a.detach().clone().requires_grad_(a.requires_grad)
                    for a in args[2:4])
    out = fn(x, args[0], args[1], weight, bias, **kwargs)
    return out, [x, args[0], args[1], weight, bias]


def test_opinfo_declares_what_the_harness_checks():
    """The flags this file relies on, read from torch's OpInfo (a change upstream shows here)."""
    assert OP.supports_autograd and OP.supports_gradgrad
    assert OP.supports_forward_ad and OP.supports_fwgrad_bwgrad
    assert not OP.supports_out
    assert OP.error_inputs_func is None  # torch's OpInfo has no error inputs for batch_norm
    assert {torch.float16, torch.bfloat16, torch.float32, torch.float64} <= set(ALL_DTYPES)


VARIANTS = [op.variant_test_name or "default" for op in BN_OPINFO_VARIANTS]


@pytest.mark.parametrize("variant", VARIANTS)
def test_cuda_only_opinfo_variants(variant):
    """The 'without_cudnn' variant is decorated @onlyCUDA, @disablecuDNN: no CPU dtypes."""
    op = next(o for o in BN_OPINFO_VARIANTS if (o.variant_test_name or "default") == variant)
    if not op.supported_dtypes("cpu"):
        pytest.skip(f"OpInfo variant {variant!r} runs only on CUDA (cuDNN disabled)")
    assert op is OP


@pytest.mark.parametrize("index", CASES)
@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=str)
def test_sample_forward_and_running_stats_match_torch(index, dtype):
    """Each sample, in every CPU dtype of the OpInfo: same output and same in-place update of
    ``running_mean``/``running_var`` as F.batch_norm (dtype-based default tolerances). In
    float16/bfloat16 torch's own kernel is off the exact result by a few units in the last
    place, so there bncore must be at least as close to the float64 result as torch is.
    """
    sample = samples(dtype, False)[index]
    out, args = _run(bncore.batch_norm, sample)
    expected, ref_args = _run(F.batch_norm, sample)
    assert out.dtype == expected.dtype and out.shape == expected.shape
    if dtype not in REDUCED:
        assert_same(out, expected, "output")
        assert_same(args[1:3], ref_args[1:3], "running_mean, running_var")
        return
    exact, exact_args = _run(F.batch_norm, sample, cast=torch.float64)
    assert_as_accurate_as_torch(out, expected, exact, "output")
    for i, name in ((1, "running_mean"), (2, "running_var")):
        if args[i] is not None:
            assert_as_accurate_as_torch(args[i], ref_args[i], exact_args[i], name)


@pytest.mark.parametrize("index", CASES)
@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=str)
def test_sample_backward_matches_torch(index, dtype):
    """Gradients w.r.t. input, weight and bias equal F.batch_norm's for the same grad_output
    (in float16/bfloat16: at least as close to the float64 gradients as torch's).
    """
    sample = samples(dtype, True)[index]
    g = torch.randn(sample.input.shape, generator=torch.Generator().manual_seed(5))

    def grads_of(fn: Callable[..., torch.Tensor], cast: torch.dtype | None = None):
        out, args = _run(fn, sample, cast)
        leaves = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
        return torch.autograd.grad(out, leaves, g.to(out.dtype), allow_unused=True)

    grads, expected = grads_of(bncore.batch_norm), grads_of(F.batch_norm)
    if dtype not in REDUCED:
        assert_same(grads, expected, "gradients (input, weight, bias)")
        return
    exact = grads_of(F.batch_norm, torch.float64)
    for name, a, b, c in zip(("input", "weight", "bias"), grads, expected, exact, strict=False):
        assert_as_accurate_as_torch(a, b, c, f"gradient w.r.t. {name}")


@pytest.mark.parametrize("index", CASES)
@FLOAT_DTYPES
def test_noncontiguous_sample_matches_contiguous(index, dtype):
    """test_noncontiguous_samples: ``sample.noncontiguous()`` gives the contiguous output and, for
    a non-contiguous grad_output too, the contiguous gradients w.r.t. input, weight and bias.
    """
    sample = samples(dtype, True)[index]
    nc = sample.noncontiguous()
    out, args = _run(bncore.batch_norm, sample)
    out_nc, args_nc = _run(bncore.batch_norm, nc)
    expected, _ = _run(F.batch_norm, sample)
    assert_same(out_nc, out, "non-contiguous output vs contiguous")
    assert_same(out_nc, expected, "non-contiguous output vs torch")
    leaves = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
    leaves_nc = [a for a in args_nc if isinstance(a, torch.Tensor) and a.requires_grad]
    if not leaves or not out.requires_grad:
        return
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(19), dtype=dtype)
    grads = torch.autograd.grad(out, leaves, g, allow_unused=True)
    grads_nc = torch.autograd.grad(out_nc, leaves_nc, noncontiguous_like(g), allow_unused=True)
    assert_same(grads_nc, grads, "non-contiguous gradients vs contiguous")


def _works(fn: Callable[..., torch.Tensor], sample: Any) -> bool:
    try:
        _run(fn, sample)
    except NotImplementedError:
        return False
    return True


UNLISTED_DTYPES = sorted(set(all_types_and_complex_and(torch.bool, torch.half, torch.bfloat16))
                         - set(ALL_DTYPES), key=str)


@pytest.mark.parametrize("dtype", UNLISTED_DTYPES, ids=str)
def test_dtypes_unlisted_dtype_is_unsupported_as_in_torch(dtype):
    """test_dtypes for a dtype the OpInfo does not list for the CPU (integers, bool, complex):
    the dtype counts as unsupported when some sample raises. Sample by sample, bncore raises
    where torch raises NotImplementedError ('"batch_norm" not implemented for ...'), with an
    error of that type and those words.
    """
    cases = samples(torch.float64, False)
    assert any(not _works(F.batch_norm, s.transform(
        lambda t: t.to(dtype) if isinstance(t, torch.Tensor) else t)) for s in cases)
    for sample in cases:
        cast = sample.transform(lambda t: t.to(dtype) if isinstance(t, torch.Tensor) else t)
        if not _works(F.batch_norm, cast):
            with pytest.raises(NotImplementedError, match='"batch_norm" not implemented'):
                _run(bncore.batch_norm, cast)


def _lazy_clones(sample: Any) -> tuple[list[Any], list[Any]]:
    """The sample's (input, *args) as copy-on-write lazy clones, with plain copies to compare."""
    raw = [sample.input, *sample.args]
    cow = [torch._lazy_clone(a.detach()).requires_grad_(a.requires_grad)
           if isinstance(a, torch.Tensor) else a for a in raw]
    copies = [a.detach().clone() if isinstance(a, torch.Tensor) else a for a in raw]
    return cow, copies


def _check_cow(cow: list[Any], copies: list[Any], allowed: list[int], phase: str) -> None:
    for i, (a, c) in enumerate(zip(cow, copies, strict=True)):
        if not isinstance(a, torch.Tensor) or i in allowed:
            continue
        assert torch._C._is_cow_tensor(a), f"{phase}: argument {i} was materialized"
        assert torch.equal(a.detach(), c), f"{phase}: argument {i} was mutated"


@pytest.mark.parametrize("index", CASES)
def test_cow_input_is_neither_materialized_nor_mutated(index):
    """TestCompositeCompliance.test_cow_input: given copy-on-write (lazy-cloned) arguments, the
    forward and the backward leave every one but those the OpInfo allows
    (``allow_cow_input_materialize_forward/backward``: the running statistics) unmaterialized and
    unchanged, and the backward does not materialize a copy-on-write grad_output.
    """
    sample = samples(torch.float64, True)[index]
    cow, copies = _lazy_clones(sample)
    out = bncore.batch_norm(*cow, **sample.kwargs)
    _check_cow(cow, copies, OP.allow_cow_input_materialize_forward, "forward")
    leaves = [a for a in cow if isinstance(a, torch.Tensor) and a.requires_grad]
    if not leaves or not out.requires_grad:
        return
    g = torch._lazy_clone(torch.ones_like(out))
    torch.autograd.grad(out, leaves, g, allow_unused=True)
    _check_cow(cow, copies, OP.allow_cow_input_materialize_backward, "backward")
    assert torch._C._is_cow_tensor(g), "backward: grad_output was materialized"


@pytest.mark.parametrize("index", CASES)
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_meta_device_sample_matches_torch(index, training):
    """TestMeta (test_meta_outplace): on meta tensors, the output's shape, dtype, strides and
    device equal F.batch_norm's, in both modes.
    """
    sample = samples(torch.float32, False)[index]
    meta = sample.transform(lambda t: t.to("meta") if isinstance(t, torch.Tensor) else t)
    meta.kwargs = {**meta.kwargs, "training": training}
    if not training and meta.args[0] is None:
        return  # eval without running statistics is an error input, not a meta case
    out, _ = _run(bncore.batch_norm, meta)
    expected, _ = _run(F.batch_norm, meta)
    assert out.is_meta
    assert_metadata_eq(checker().assertEqual, out, expected)


def _gradcheck_inputs(sample: Any) -> tuple[Callable[..., torch.Tensor], tuple[torch.Tensor, ...]]:
    """test_ops' _check_helper: gradcheck the tensors that require grad, recomposing the rest."""
    all_args = (sample.input, *sample.args, *sample.kwargs.values())
    diff = tuple(a for a in all_args if isinstance(a, torch.Tensor) and a.requires_grad)

    def fn(*inputs: torch.Tensor) -> torch.Tensor:
        it = iter(inputs)

        def pick(a: Any) -> Any:
            return next(it) if isinstance(a, torch.Tensor) and a.requires_grad else a

        x = pick(sample.input)
        args = [pick(a) for a in sample.args]
        kwargs = {k: pick(v) for k, v in sample.kwargs.items()}
        return OP.gradcheck_wrapper(bncore.batch_norm, x, *args, **kwargs)

    return fn, diff


@pytest.mark.parametrize("index", CASES)
def test_fn_grad(index):
    """TestGradients.test_fn_grad (float64): gradcheck with the OpInfo's batched-grad flag and
    undefined-grad check.
    """
    fn, diff = _gradcheck_inputs(samples(torch.float64, True)[index])
    assert gradcheck(fn, diff, check_batched_grad=OP.check_batched_grad, check_grad_dtypes=True,
                     nondet_tol=OP.gradcheck_nondet_tol, fast_mode=OP.gradcheck_fast_mode,
                     check_forward_ad=False, check_backward_ad=True, check_undefined_grad=True,
                     check_batched_forward_grad=False)


@pytest.mark.parametrize("non_contig_grad", [False, True], ids=["contig-gO", "noncontig-gO"])
@pytest.mark.parametrize("index", CASES)
def test_fn_gradgrad(index, non_contig_grad):
    """TestGradients.test_fn_gradgrad (float64): reverse-over-reverse gradgradcheck."""
    fn, diff = _gradcheck_inputs(samples(torch.float64, True)[index])
    assert gradgradcheck(fn, diff, gen_non_contig_grad_outputs=non_contig_grad,
                         check_batched_grad=OP.check_batched_gradgrad, check_grad_dtypes=True,
                         nondet_tol=OP.gradcheck_nondet_tol, fast_mode=OP.gradcheck_fast_mode)


@pytest.mark.parametrize("index", CASES)
def test_forward_mode_AD(index):
    """TestFwdGradients.test_forward_mode_AD (float64): the OpInfo declares supports_forward_ad,
    so gradcheck's forward-mode check (batched forward grad as the OpInfo says) must pass.
    """
    assert OP.supports_forward_ad
    fn, diff = _gradcheck_inputs(samples(torch.float64, True)[index])
    assert gradcheck(fn, diff, check_forward_ad=True, check_backward_ad=False,
                     check_batched_grad=False,
                     check_batched_forward_grad=OP.check_batched_forward_grad,
                     check_grad_dtypes=True, nondet_tol=OP.gradcheck_nondet_tol,
                     fast_mode=OP.gradcheck_fast_mode, check_undefined_grad=True)


@pytest.mark.parametrize("non_contig_grad", [False, True], ids=["contig-gO", "noncontig-gO"])
@pytest.mark.parametrize("index", CASES)
def test_fn_fwgrad_bwgrad(index, non_contig_grad):
    """TestFwdGradients.test_fn_fwgrad_bwgrad (float64): supports_fwgrad_bwgrad, so
    forward-over-reverse gradgradcheck must pass.
    """
    assert OP.supports_fwgrad_bwgrad
    fn, diff = _gradcheck_inputs(samples(torch.float64, True)[index])
    assert gradgradcheck(fn, diff, gen_non_contig_grad_outputs=non_contig_grad,
                         check_fwd_over_rev=True, check_rev_over_rev=False,
                         check_batched_grad=False, check_undefined_grad=False,
                         check_grad_dtypes=True, nondet_tol=OP.gradcheck_nondet_tol,
                         fast_mode=OP.gradcheck_fast_mode)


# --- torch.func (functorch's op tests: vjp, grad, jvp, vmap, jacrev) -------------------------

def _functional(fn: Callable[..., torch.Tensor], sample: Any
                ) -> tuple[Callable[..., torch.Tensor], tuple[torch.Tensor, ...]]:
    """``fn`` as a function of the differentiable tensors only, running statistics copied."""
    args, kwargs = clone_sample_args(sample)
    diff_names = [n for n, a in (("x", sample.input), ("w", sample.args[2]), ("b", sample.args[3]))
                  if isinstance(a, torch.Tensor) and a.requires_grad]
    primals = tuple(a.detach().clone() for n, a in (("x", sample.input), ("w", sample.args[2]),
                                                       ("b", sample.args[3])) if n in diff_names)

    def f(*diff: torch.Tensor) -> torch.Tensor:
        named = dict(zip(diff_names, diff, strict=True))
        return fn(named.get("x", sample.input.detach()), args[0], args[1],
                  named.get("w", args[2]), named.get("b", args[3]), **kwargs)

    return f, primals


def _both(index: int, transform: Callable[[Callable[..., torch.Tensor], tuple], Any]) -> None:
    """Apply ``transform`` to bncore's and torch's function; torch's result (or its exception
    type) is the oracle.
    """
    sample = samples(torch.float64, True)[index]
    f_ref, primals = _functional(F.batch_norm, sample)
    f_ours, _ = _functional(bncore.batch_norm, sample)
    try:
        expected = transform(f_ref, primals)
    except Exception as e:  # torch refuses: bncore must refuse with the same type
        with pytest.raises(type(e)):
            transform(f_ours, primals)
        return
    assert_same(transform(f_ours, primals), expected, "transform result")


@pytest.mark.parametrize("index", CASES)
def test_func_vjp_matches_torch(index):
    """The functorch test_vjp: torch.func.vjp's output and cotangents equal torch's."""
    def vjp(f, primals):
        out, pullback = torch.func.vjp(f, *primals)
        return out, pullback(torch.ones_like(out))
    _both(index, vjp)


@pytest.mark.parametrize("index", CASES)
def test_func_grad_matches_torch(index):
    """torch.func.grad of the summed squared output equals torch's."""
    _both(index, lambda f, p: torch.func.grad(lambda *a: f(*a).square().sum(),
                                              argnums=tuple(range(len(p))))(*p))


@pytest.mark.parametrize("index", CASES)
def test_func_jvp_matches_torch(index):
    """The functorch test_jvp: torch.func.jvp's output and tangent equal torch's."""
    def jvp(f, primals):
        gen = torch.Generator().manual_seed(6)
        tangents = tuple(torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in primals)
        return torch.func.jvp(f, primals, tangents)
    _both(index, jvp)


@pytest.mark.parametrize("index", CASES)
def test_func_vmap_matches_torch(index):
    """The functorch test_vmap_exhaustive (input batched): vmap over a stack of two inputs."""
    def vmapped(f, primals):
        x, *rest = primals
        batched = torch.stack([x, 2 * x + 1])
        return torch.func.vmap(lambda xb: f(xb, *rest))(batched)
    _both(index, vmapped)


@pytest.mark.parametrize("index", CASES)
def test_func_jacrev_matches_torch(index):
    """torch.func.jacrev w.r.t. every differentiable argument equals torch's."""
    _both(index, lambda f, p: torch.func.jacrev(f, argnums=tuple(range(len(p))))(*p))


@pytest.mark.parametrize("index", CASES)
def test_func_vmap_all_arguments_matches_torch(index):
    """test_vmap_exhaustive with every differentiable argument batched (input, weight, bias)."""
    def vmapped(f, primals):
        batched = tuple(torch.stack([p, 2 * p + 1]) for p in primals)
        return torch.func.vmap(f)(*batched)
    _both(index, vmapped)


@pytest.mark.parametrize("index", CASES)
def test_func_vmapvjp_matches_torch(index):
    """The functorch test_vmapvjp: the pullback vmapped over a batch of three cotangents."""
    def vmapvjp(f, primals):
        out, pullback = torch.func.vjp(f, *primals)
        gen = torch.Generator().manual_seed(20)
        cotangents = torch.randn((3, *out.shape), generator=gen, dtype=out.dtype)
        return torch.func.vmap(pullback)(cotangents)
    _both(index, vmapvjp)


@pytest.mark.parametrize("index", CASES)
def test_func_jvpvjp_matches_torch(index):
    """The functorch test_jvpvjp: forward mode through the pullback (primals and cotangent)."""
    def jvpvjp(f, primals):
        out = f(*primals)
        gen = torch.Generator().manual_seed(21)
        cotangent = torch.randn(out.shape, generator=gen, dtype=out.dtype)

        def pullback(*args):
            *p, ct = args
            return torch.func.vjp(f, *p)[1](ct)

        args = (*primals, cotangent)
        tangents = tuple(torch.randn(a.shape, generator=gen, dtype=a.dtype) for a in args)
        return torch.func.jvp(pullback, args, tangents)
    _both(index, jvpvjp)
