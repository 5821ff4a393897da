"""Driver for PyTorch's own batch-norm test cases, run against ``bncore`` (issue 8).

PyTorch ships its test database in the wheel (``torch.testing._internal``): the ``ModuleInfo``
entries for ``nn.BatchNorm1d/2d/3d`` (constructor and forward inputs, error inputs) and the
``OpInfo`` for ``nn.functional.batch_norm`` (sample inputs and the flags ``supports_forward_ad``,
``supports_fwgrad_bwgrad``, ...). This module loads those entries and hands them to the test
modules ``test_upstream_modules``, ``test_upstream_opinfo`` and ``test_upstream_nn``, which run
them through ``bncore.BatchNorm1d/2d/3d`` and ``bncore.batch_norm`` with torch's own module or
functional as the oracle.

``torch.testing._internal.common_utils`` imports ``expecttest`` (a test dependency of bncore).

This is a helper module, not a conftest: tests import it by name (pytest puts ``tests/`` on
``sys.path``).
"""

from __future__ import annotations

import unittest
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
from torch import nn
from torch.testing._internal import common_utils
from torch.testing._internal.common_methods_invocations import op_db
from torch.testing._internal.common_modules import (
    ModuleErrorEnum,
    ModuleInfo,
    ModuleInput,
    module_db,
)
from torch.testing._internal.common_nn import _test_module_empty_input
from torch.testing._internal.opinfo.core import OpInfo, SampleInput

import bncore

__all__ = [
    "BN_MODULE_INFOS",
    "BN_OPINFO",
    "OURS",
    "REDUCED",
    "ModuleErrorEnum",
    "assert_as_accurate_as_torch",
    "assert_same",
    "build_pair",
    "checker",
    "gradcheck",
    "gradgradcheck",
    "module_cases",
    "module_empty_input_check",
    "sample_cases",
    "samples",
]

#: torch's checks with torch's defaults (batched grad on, fast mode), as test_modules/test_ops.
gradcheck = common_utils.gradcheck
gradgradcheck = common_utils.gradgradcheck

#: bncore's class for each torch.nn class under test.
OURS: dict[type[nn.Module], type[nn.Module]] = {
    nn.BatchNorm1d: bncore.BatchNorm1d,
    nn.BatchNorm2d: bncore.BatchNorm2d,
    nn.BatchNorm3d: bncore.BatchNorm3d,
}

BN_MODULE_INFOS: list[ModuleInfo] = [info for info in module_db if info.module_cls in OURS]
assert len(BN_MODULE_INFOS) == 3, "torch's module_db lost a BatchNorm entry"

#: The default OpInfo for F.batch_norm; the 'without_cudnn' variant is CUDA-only (no CPU dtypes).
BN_OPINFO: OpInfo = next(
    op for op in op_db if op.name == "nn.functional.batch_norm" and op.variant_test_name == ""
)
BN_OPINFO_VARIANTS: list[OpInfo] = [op for op in op_db if op.name == "nn.functional.batch_norm"]

SEED = 0


def module_inputs(info: ModuleInfo, dtype: torch.dtype, training: bool,
                  requires_grad: bool = False) -> list[ModuleInput]:
    """The ModuleInfo's inputs on the CPU, generated from a fixed seed (the values are random)."""
    torch.manual_seed(SEED)
    return list(info.module_inputs_func(info, device="cpu", dtype=dtype,
                                        requires_grad=requires_grad, training=training))


def module_cases() -> list[Any]:
    """One ``pytest.param(info, index)`` per (ModuleInfo, module input), id like
    ``BatchNorm2d-momentum``.
    """
    params = []
    for info in BN_MODULE_INFOS:
        for index, mi in enumerate(module_inputs(info, torch.float64, True)):
            desc = mi.desc or "default"
            params.append(pytest.param(info, index, id=f"{info.module_cls.__name__}-{desc}"))
    return params


class Pair:
    """torch's module (the oracle) and bncore's, built from the same ModuleInput and state."""

    def __init__(self, ref: nn.Module, ours: nn.Module, module_input: ModuleInput) -> None:
        self.ref, self.ours, self.module_input = ref, ours, module_input

    @property
    def input(self) -> torch.Tensor:
        return self.module_input.forward_input.args[0]

    def fresh_input(self, requires_grad: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Two independent copies of the forward input, one per module."""
        x = self.input.detach()
        return (x.clone().requires_grad_(requires_grad), x.clone().requires_grad_(requires_grad))


def _randomize_state(m: nn.Module, generator: torch.Generator) -> None:
    """Non-trivial γ, β and running statistics, so that eval mode is not ≈ the identity."""
    with torch.no_grad():
        for name, t in list(m.named_parameters()) + list(m.named_buffers()):
            if not t.is_floating_point() or t.numel() == 0:
                continue
            r = torch.rand(t.shape, generator=generator, dtype=torch.float64)
            if name == "running_var":
                t.copy_(0.5 + r)
            elif name == "weight":
                t.copy_(0.5 + r)
            else:
                t.copy_(2 * r - 1)


def build_pair(info: ModuleInfo, index: int, dtype: torch.dtype, training: bool,
               requires_grad: bool = False) -> Pair:
    """Build torch's module and bncore's from the ModuleInfo's constructor input, as
    test_modules does (``module_cls(*args, **kwargs).to(dtype).train(training)``), then give both
    the same random state: torch's is randomized and loaded into bncore's (strict).
    """
    mi = module_inputs(info, dtype, training, requires_grad)[index]
    args, kwargs = mi.constructor_input.args, mi.constructor_input.kwargs
    ref = info.module_cls(*args, **kwargs).to(dtype).train(training)
    ours = OURS[info.module_cls](*args, **kwargs).to(dtype).train(training)
    gen = torch.Generator().manual_seed(SEED + 1)
    _randomize_state(ref, gen)
    ours.load_state_dict(ref.state_dict())
    return Pair(ref, ours, mi)


_GENERATED: dict[tuple[int, torch.dtype, bool], list[SampleInput]] = {}


def _generated_samples(op: OpInfo, dtype: torch.dtype, requires_grad: bool) -> list[SampleInput]:
    """Generating them costs ~60 ms (OpInfo's sample tracking), so it is done once per key."""
    key = (id(op), dtype, requires_grad)
    if key not in _GENERATED:
        torch.manual_seed(SEED)
        _GENERATED[key] = list(op.sample_inputs("cpu", dtype, requires_grad=requires_grad))
    return _GENERATED[key]


def _fresh_leaf(t: Any) -> Any:
    if isinstance(t, torch.Tensor):
        return t.detach().clone().requires_grad_(t.requires_grad)
    return t


def samples(dtype: torch.dtype, requires_grad: bool, op: OpInfo | None = None) -> list[SampleInput]:
    """The OpInfo's CPU samples for ``dtype``, generated from a fixed seed; every call returns
    fresh leaf copies, so a test may update running statistics in place or accumulate grads.
    """
    return [s.transform(_fresh_leaf)
            for s in _generated_samples(op or BN_OPINFO, dtype, requires_grad)]


def _describe(sample: SampleInput) -> str:
    kw = sample.kwargs
    mode = {True: "train", False: "eval"}.get(kw.get("training"), "default")
    shape = "x".join(str(s) for s in sample.input.shape) or "scalar"
    parts = [shape if sample.input.dim() != 1 else f"({shape},)", mode]
    if any(a is None for a in sample.args):
        parts.append("nones")
    for key in ("momentum", "eps"):
        if key in kw:
            parts.append(f"{key}={kw[key]}")
    return "-".join(parts)


def sample_cases() -> list[Any]:
    """One ``pytest.param(index)`` per OpInfo sample, id ``s03-0-train`` (index, shape, mode)."""
    return [pytest.param(i, id=f"s{i:02d}-{_describe(s)}")
            for i, s in enumerate(samples(torch.float64, False))]


def clone_sample_args(sample: SampleInput) -> tuple[list[Any], dict[str, Any]]:
    """Detached copies of the sample's positional tensors (running stats are updated in place)."""
    args = [a.detach().clone() if isinstance(a, torch.Tensor) else a for a in sample.args]
    return args, dict(sample.kwargs)


def assert_same(ours: Any, ref: Any, what: str, **tol: Any) -> None:
    """``torch.testing.assert_close`` with its dtype-based defaults, naming the quantity."""
    torch.testing.assert_close(ours, ref, equal_nan=True, msg=lambda m: f"{what}: {m}", **tol)


REDUCED = (torch.float16, torch.bfloat16)


def assert_as_accurate_as_torch(ours: torch.Tensor, ref: torch.Tensor, exact: torch.Tensor,
                                what: str) -> None:
    """For float16/bfloat16, where torch's CPU kernel itself differs from the exact result by
    several units in the last place: bncore's error against ``exact`` (the same computation in
    float64) is at most torch's largest error plus one unit in the last place of the value.
    """
    assert ours.dtype == ref.dtype and ours.shape == ref.shape, what
    exact = exact.double()
    err_ours = (ours.double() - exact).abs()
    err_ref = (ref.double() - exact).abs()
    ulp = torch.finfo(ours.dtype).eps * exact.abs()
    bound = (err_ref.max() if err_ref.numel() else 0.0) + ulp
    bad = ~(err_ours <= bound)
    assert not bad.any(), (
        f"{what}: bncore's error {err_ours.max().item():.3g} exceeds torch's "
        f"{err_ref.max().item():.3g} + 1 ulp at {bad.sum().item()} of {bad.numel()} elements"
    )


def checker() -> unittest.TestCase:
    """A plain TestCase instance for torch helpers that take one (``_test_module_empty_input``)."""
    return common_utils.TestCase()


def module_empty_input_check(module: nn.Module, inp: torch.Tensor) -> None:
    """test_nn's ``_test_module_empty_input``: empty output of the same size, zero gradients."""
    _test_module_empty_input(checker(), module, inp)


def flat_fn(module: nn.Module, n_inputs: int,
            spec: Any) -> Callable[..., list[torch.Tensor]]:
    """The function test_modules gradchecks: unflatten (inputs, params) and run the module."""

    def fn(*flat: torch.Tensor) -> list[torch.Tensor]:
        inputs_and_params = torch.utils._pytree.tree_unflatten(list(flat), spec)
        out = module(*inputs_and_params[:n_inputs])
        return torch.utils._pytree.tree_leaves(out)

    return fn


def iter_partial_inputs(inputs: tuple[torch.Tensor, ...],
                        params: tuple[nn.Parameter, ...]) -> Iterator[tuple[torch.Tensor, ...]]:
    """test_modules' order: all of (inputs, params) at once, then each parameter on its own with
    the others' ``requires_grad`` turned off (restored afterwards).
    """
    yield inputs + params
    old = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(False)
        for p, was in zip(params, old, strict=True):
            p.requires_grad_(was)
            yield inputs + params
            p.requires_grad_(False)
    finally:
        for p, was in zip(params, old, strict=True):
            p.requires_grad_(was)
