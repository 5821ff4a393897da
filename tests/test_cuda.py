"""``bncore.norm.torch_bn`` on a CUDA GPU against ``torch.nn`` on the same GPU.

The checks are the CPU ones, not copies: the contracts of ``conftest`` (forward, backward and
running statistics over training and eval steps in float64; the functional form; float16 and
bfloat16 input with float32 statistics; channels-last) run here with ``device = "cuda"``.
Everything here is skipped where no GPU is present.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from bn_testing import (
    FLOAT64_TOL,
    RANKS,
    ModuleContract,
    TorchContract,
    TorchLayer,
    assert_same_results,
    bn_shape,
    random_affine,
    random_batch,
    requires_cuda,
)

pytestmark = [pytest.mark.cuda, requires_cuda]


class TestTorchBatchNormOnCuda(ModuleContract):
    """The layer contract (semantics and float64 parity with torch.nn) on the GPU."""

    layer = TorchLayer
    device = "cuda"


class TestTorchOnCuda(TorchContract):
    """Functional parity, float16/bfloat16 and channels-last on the GPU."""

    device = "cuda"


@pytest.mark.parametrize("ndim", RANKS)
def test_gpu_and_cpu_results_agree_in_float64(ndim):
    layers = {device: TorchLayer(3, ndim, device=device) for device in ("cpu", "cuda")}
    gamma, beta = random_affine(3, seed=1)
    for layer in layers.values():
        layer.set_affine(gamma, beta)
    for step, training in enumerate([True, True, False]):
        x, dy = random_batch(bn_shape(ndim), seed=2 + step), random_batch(bn_shape(ndim), 5)
        out = {d: layer.train(training).step(x, dy) for d, layer in layers.items()}
        assert out["cuda"]["y"].device.type == "cuda"
        assert_same_results(out["cuda"], out["cpu"], **FLOAT64_TOL)


def test_module_moved_to_gpu_keeps_its_state_there():
    layer = TorchLayer(3, 4)  # built on the CPU, then moved as a user would
    layer.module.to("cuda")
    layer.device = torch.device("cuda")
    layer.step(random_batch(bn_shape(4), seed=6), np.ones(bn_shape(4)))
    for name, tensor in [*layer.module.named_parameters(), *layer.module.named_buffers()]:
        assert tensor.device.type == "cuda", name
    assert int(layer.module.num_batches_tracked) == 1
