"""Bad input fails at the public boundary with torch's exception type and the gist of its message,
then advice, the same way in both implementations (``bncore.norm.validate`` holds the checks).

A channel mismatch is a ``RuntimeError`` as in torch and also a ``ValueError``; a bad eps or one
value per channel in training is a ``ValueError``; a non-floating input is a ``TypeError``, a
``ValueError`` and, as in torch, a ``NotImplementedError``. A layer's channel mismatch names the
tensor torch names (``running_mean``, else ``weight``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch
from bn_testing import MODULE_NAMES, to_numpy

from bncore.norm import numpy_bn, torch_bn
from bncore.norm.validate import BatchNormDTypeError, ChannelMismatchError


@dataclass(frozen=True)
class Call:
    """One call of batch norm: input shape and dtype, eps, mode, and the layer's channel count
    (also the length of γ, β and the running statistics); ``None`` means the input's C.
    """

    shape: tuple[int, ...]
    dtype: str = "float64"
    eps: float = 1e-5
    training: bool = True
    channels: int | None = None

    def x(self) -> np.ndarray:
        return np.ones(self.shape, dtype=self.dtype)

    def per_channel(self) -> int:
        return self.channels if self.channels is not None else self.shape[1]


def numpy_function(call: Call) -> Any:
    c = call.per_channel()
    if call.training:
        return numpy_bn.batch_norm_forward(call.x(), np.ones(c), np.zeros(c), call.eps)
    return numpy_bn.batch_norm_inference(
        call.x(), np.ones(c), np.zeros(c), np.zeros(c), np.ones(c), call.eps
    )


def numpy_layer(call: Call) -> Any:
    return numpy_bn.BatchNorm(call.per_channel(), eps=call.eps).train(call.training)(call.x())


def torch_function(call: Call) -> Any:
    c = call.per_channel()
    ones, zeros = torch.ones(c, dtype=torch.float64), torch.zeros(c, dtype=torch.float64)
    return torch_bn.batch_norm(
        torch.from_numpy(call.x()), zeros, ones.clone(), ones, zeros.clone(), call.training,
        eps=call.eps,
    )


def torch_module(call: Call) -> Any:
    module = getattr(torch_bn, MODULE_NAMES[len(call.shape)])(call.per_channel(), eps=call.eps)
    return module.train(call.training)(torch.from_numpy(call.x()))


ENTRY_POINTS: dict[str, Callable[[Call], Any]] = {
    "numpy-function": numpy_function,
    "numpy-layer": numpy_layer,
    "torch-function": torch_function,
    "torch-module": torch_module,
}

#: (call, message pattern, entry points that accept this rank)
BAD_CALLS = {
    "channel-mismatch": (Call((4, 3, 2), channels=4), r"should contain 3 elements not 4"),
    "channel-mismatch-eval": (Call((4, 3, 2, 2), channels=2, training=False),
                              r"should contain 3 elements not 2"),
    "one-value-per-channel": (Call((1, 3)), r"more than 1 value per channel when training"),
    "one-value-per-channel-spatial": (Call((1, 3, 1, 1)), r"N·∏spatial = 1"),
    "zero-eps-training": (Call((4, 3), eps=0.0),
                          r"^batch_norm eps must be positive during training, but got 0\.0; "),
    "negative-eps-training": (
        Call((4, 3, 2), eps=-1e-3),
        r"^batch_norm eps must be positive during training, but got -0\.001; ",
    ),
    "negative-eps-eval": (Call((4, 3), eps=-1e-3, training=False),
                          r"^batch_norm eps must be non-negative, but got -0\.001; "),
    "integer-input": (Call((4, 3), dtype="int64"),
                      r"floating-point input, got dtype (torch\.)?int64"),
    "bool-input": (Call((4, 3, 2), dtype="bool", training=False),
                   r"floating-point input, got dtype (torch\.)?bool"),
}


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize("case", BAD_CALLS)
def test_bad_input_raises_value_error_naming_the_problem(case, entry):
    call, pattern = BAD_CALLS[case]
    with pytest.raises(ValueError, match=pattern):
        ENTRY_POINTS[entry](call)


@pytest.mark.parametrize("case", BAD_CALLS)
def test_numpy_layer_and_torch_module_fail_with_the_same_message(case):
    call, _ = BAD_CALLS[case]
    messages = []
    for entry in (numpy_layer, torch_module):
        with pytest.raises(ValueError) as info:
            entry(call)
        messages.append(str(info.value))
    # identical, except that a dtype is named in each library's spelling (int64, torch.int64)
    assert messages[0] == messages[1].replace("torch.", "")


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize("dtype", ["int64", "int32", "bool"])
def test_non_floating_input_is_also_a_type_error(entry, dtype):
    with pytest.raises(TypeError, match="floating-point") as info:
        ENTRY_POINTS[entry](Call((4, 3), dtype=dtype))
    assert isinstance(info.value, BatchNormDTypeError)


@pytest.mark.parametrize("entry", ["numpy-function", "numpy-layer", "torch-function"])
@pytest.mark.parametrize("shape", [(5,), ()], ids=["1d", "0d"])
def test_functions_reject_input_with_fewer_than_two_dims(entry, shape):
    with pytest.raises(ValueError, match=r"at least 2 dimensions, got shape"):
        ENTRY_POINTS[entry](Call(shape, channels=3))


@pytest.mark.parametrize(
    "name, ndim, pattern",
    [("BatchNorm1d", 1, "2D or 3D"), ("BatchNorm1d", 4, "2D or 3D"),
     ("BatchNorm2d", 3, "4D"), ("BatchNorm2d", 5, "4D"),
     ("BatchNorm3d", 4, "5D"), ("BatchNorm3d", 2, "5D")],
)
def test_module_rejects_wrong_rank(name, ndim, pattern):
    x = torch.ones((4, 3, 2, 2, 2)[:ndim], dtype=torch.float64) if ndim > 1 else torch.ones(3)
    with pytest.raises(ValueError, match=rf"{name}: expected {pattern} input .* got {ndim}D"):
        getattr(torch_bn, name)(3, dtype=torch.float64)(x)
    with pytest.raises(ValueError):  # torch.nn refuses the same ranks
        getattr(torch.nn, name)(3, dtype=torch.float64)(x)


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize("shape", [(1, 3), (1, 3, 1, 1)], ids=["1x3", "1x3x1x1"])
def test_eval_accepts_one_value_per_channel_and_zero_eps(entry, shape):
    y = ENTRY_POINTS[entry](Call(shape, eps=0.0, training=False))
    y = y[0] if isinstance(y, tuple) else y
    np.testing.assert_array_equal(to_numpy(y), np.ones(shape))  # (1 − 0)/√(1 + 0)·1 + 0


def test_torch_function_needs_running_statistics_in_eval():
    with pytest.raises(RuntimeError, match="running_mean must be defined in evaluation mode"):
        torch_bn.batch_norm(torch.ones(4, 3), None, None, training=False)
    with pytest.raises(RuntimeError, match="running_mean must be defined"):  # torch agrees
        torch.nn.functional.batch_norm(torch.ones(4, 3), None, None, training=False)


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_channel_mismatch_is_torchs_runtime_error(entry):
    with pytest.raises(RuntimeError, match="should contain 3 elements not 4") as info:
        ENTRY_POINTS[entry](Call((4, 3, 2), channels=4))
    assert isinstance(info.value, ChannelMismatchError)
    with pytest.raises(RuntimeError, match="should contain 3 elements not 4"):  # torch's own
        torch.nn.functional.batch_norm(torch.ones(4, 3, 2), torch.zeros(4), torch.ones(4),
                                       training=True)


def test_torch_modules_refuse_one_value_per_channel_like_torch_nn():
    x = torch.ones(1, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        torch.nn.BatchNorm1d(3, dtype=torch.float64)(x)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        torch_bn.BatchNorm1d(3, dtype=torch.float64)(x)


@pytest.mark.parametrize(
    "options, first",
    [({}, "running_mean should contain 4 elements not 3"),
     ({"track_running_stats": False}, "weight should contain 4 elements not 3"),
     ({"affine": False, "track_running_stats": False}, "expected input with 3 channels, got 4")],
    ids=["defaults", "untracked", "neither"],
)
def test_layers_name_the_tensor_torch_names_for_a_channel_mismatch(options, first):
    x = np.ones((5, 4))
    messages = []
    for call in (lambda: numpy_bn.BatchNorm(3, **options)(x),
                 lambda: torch_bn.BatchNorm1d(3, dtype=torch.float64, **options)(
                     torch.from_numpy(x))):
        with pytest.raises(RuntimeError) as info:
            call()
        assert isinstance(info.value, ChannelMismatchError)
        messages.append(str(info.value))
    assert messages[0] == messages[1]
    assert messages[0].startswith(first + ": the layer was built for 3 channels")


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_non_floating_input_is_also_torchs_not_implemented_error(entry):
    with pytest.raises(NotImplementedError, match=r'^"batch_norm" not implemented'):
        ENTRY_POINTS[entry](Call((4, 3), dtype="int64"))
