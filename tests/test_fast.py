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
