"""``bncore.norm.fast``: the compiled batch norm holds to the same contracts as ``torch_bn``.

The layer contract (float64 semantics and parity with ``torch.nn``) and the torch contract
(functional form, float16/bfloat16, channels-last) run on the fused path. Each new input layout,
dtype or ``requires_grad`` pattern compiles once (seconds; Inductor caches on disk), so the
inputs here are few shapes by design. Double backward is out of scope (see the module).
"""

from __future__ import annotations

import warnings

import pytest
import torch
from bn_testing import ModuleContract, TorchContract, TorchNNLayer

from bncore.norm import fast, torch_bn

pytestmark = pytest.mark.skipif(fast.compiler_missing("cpu") is not None,
                                reason="no C++ compiler for torch.compile")


class FastLayer(TorchNNLayer):
    """Drives ``bncore.norm.fast.BatchNorm1d/2d/3d``."""

    modules = fast


class TestFastBatchNorm(ModuleContract):
    """The shared layer contract on the fused modules."""

    layer = FastLayer


class TestFastOnCpu(TorchContract):
    """Functional parity, half precision and channels-last on the fused path."""

    layer = FastLayer
    functional = staticmethod(fast.batch_norm)


def test_fast_modules_are_torch_bn_modules_with_a_fused_function():
    layer = fast.BatchNorm2d(3)
    assert isinstance(layer, torch_bn.BatchNorm2d)
    assert layer._functional is fast._batch_norm


def test_missing_compiler_falls_back_with_one_warning(monkeypatch):
    monkeypatch.setattr(fast, "compiler_missing", lambda device_type: "no compiler (test)")
    x = torch.randn(4, 3, dtype=torch.float64)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        y = fast.batch_norm(x, None, None, training=True)
    assert [str(w.message).count("\n") for w in caught] == [0]
    assert "no compiler (test)" in str(caught[0].message)
    torch.testing.assert_close(y, torch.nn.functional.batch_norm(x, None, None, training=True))


@pytest.mark.parametrize("shape", [(fast._ROWS * 3, 5), (fast._ROWS * 3 + 1, 5), (8, 5, 4, 6)])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_fused_training_step_matches_torch_in_float64(shape, layout):
    """Output, running statistics and the three gradients equal torch's, also where the channel
    sums run in blocks of rows (a row count divisible by ``_ROWS``) and where they cannot.
    """
    if layout == "channels_last" and len(shape) != 4:
        pytest.skip("channels-last is a 4-d layout")
    gen = torch.Generator().manual_seed(len(shape) + shape[0])
    x = 3 * torch.randn(shape, generator=gen, dtype=torch.float64) + 2
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    dy = torch.randn(shape, generator=gen, dtype=torch.float64)
    c = shape[1]
    weight = torch.rand(c, generator=gen, dtype=torch.float64) + 0.5
    bias = torch.randn(c, generator=gen, dtype=torch.float64)
    grads, outputs = [], []
    for fn in (fast.batch_norm, torch.nn.functional.batch_norm):
        xi, w, b = (t.clone().requires_grad_() for t in (x, weight, bias))
        running = torch.zeros(c, dtype=torch.float64), torch.ones(c, dtype=torch.float64)
        y = fn(xi, *running, w, b, True, 0.1, 1e-5)
        outputs.append((y, *running))
        grads.append(torch.autograd.grad(y, (xi, w, b), dy))
    for ours, theirs in zip(outputs[0] + grads[0], outputs[1] + grads[1], strict=True):
        torch.testing.assert_close(ours, theirs)
