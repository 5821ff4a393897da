"""Drivers and contracts shared by the tests of bncore's batch-norm core.

The test modules import what they need with ``from bn_testing import ...`` (``pythonpath`` in
pyproject.toml puts ``tests/`` on ``sys.path``); ``conftest.py`` holds only the session's
settings and hooks.
Relative errors come from :mod:`bncore.norm.gradcheck` (``rel_error``, ``norm_rel_error``).

- Numbers: :func:`numerical_gradient` (centred differences in place over an array),
  :func:`random_batch`, :func:`random_affine`, :func:`assert_same_results`.
- Drivers with one interface, so that a check is written once and run on every implementation:
  :class:`NumpyLayer` (``bncore.norm.numpy_bn.BatchNorm``), :class:`TorchLayer`
  (``bncore.norm.torch_bn.BatchNorm1d/2d/3d``) and the reference :class:`TorchNNLayer`
  (``torch.nn.BatchNorm1d/2d/3d``); :func:`normalize` and :func:`normalize_backward` for the
  functional forms.
- Contracts, i.e. test classes run by several modules: :class:`ModuleContract` (semantics and
  float64 parity with ``torch.nn``; run by ``test_numpy_bn``, ``test_torch_bn`` and, on the GPU,
  ``test_cuda``) and :class:`TorchContract` (functional parity, float16/bfloat16 and
  channels-last; run on the CPU by ``test_torch_bn`` and on the GPU by ``test_cuda``). A module
  runs a contract by subclassing it and setting ``layer`` and ``device``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

from bncore.norm import gradcheck, numpy_bn, stats, torch_bn

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

#: The torch.nn module for each input rank: (N, C), (N, C, L), (N, C, H, W), (N, C, D, H, W).
MODULE_NAMES = {2: "BatchNorm1d", 3: "BatchNorm1d", 4: "BatchNorm2d", 5: "BatchNorm3d"}
RANKS = tuple(MODULE_NAMES)
IMPLS = ("numpy", "torch")

#: float64 agreement between implementations. The values are O(1) and each statistic is a sum
#: of at most ~150 terms, so different summation orders differ by ~1e-14; any formula
#: difference (eps outside the root, a biased running variance...) is > 1e-4.
FLOAT64_TOL = {"rtol": 1e-10, "atol": 1e-12}


def bn_shape(ndim: int, n: int = 4, channels: int = 3) -> tuple[int, ...]:
    """A small (N, C, *spatial) shape of rank ``ndim``, with spatial sizes (3, 2, 2)[:ndim-2]."""
    return (n, channels, *(3, 2, 2)[: ndim - 2])


def bcast(v: np.ndarray, ndim: int) -> np.ndarray:
    """Reshape a per-channel vector (C,) to (1, C, 1, ...) for broadcasting."""
    return np.asarray(v).reshape((1, -1) + (1,) * (ndim - 2))


def random_batch(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """float64 normal data with a different mean (in [−3, 3]) and std (in [0.5, 2]) per channel.

    Per-channel differences make a wrong reduction axis show up as a wrong result.
    """
    rng = np.random.default_rng(seed)
    ndim, channels = len(shape), shape[1]
    loc = bcast(rng.uniform(-3.0, 3.0, channels), ndim)
    scale = bcast(rng.uniform(0.5, 2.0, channels), ndim)
    return rng.standard_normal(shape) * scale + loc


def random_affine(channels: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random γ in [0.5, 2] and β ~ N(0, 1), so that a missing γ or β shows up."""
    rng = np.random.default_rng(seed)
    return rng.uniform(0.5, 2.0, channels), rng.standard_normal(channels)


def numerical_gradient(f: Callable[[], float], p: np.ndarray, h: float = 1e-5) -> np.ndarray:
    """∇f over ``p`` for an ``f`` that reads ``p`` in place (a layer's parameter or input).

    The centred differences are :func:`bncore.norm.gradcheck.numerical_gradient`'s; this only
    writes each probe into ``p``, and restores ``p`` afterwards. The error is
    O(h²·f''') + O(u·|f|/h) ≈ 1e-10 for h = 1e-5 and the O(1) functions used here.
    """
    saved = p.copy()

    def at(z: np.ndarray) -> float:
        p[...] = z
        return f()

    try:
        return gradcheck.numerical_gradient(at, saved, h)
    finally:
        p[...] = saved


def to_numpy(value: Any) -> np.ndarray | None:
    """A tensor, array or number as a float64 NumPy array (``None`` stays ``None``)."""
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().to(torch.float64).numpy()
    return np.asarray(value, dtype=np.float64)


def assert_same_results(
    ours: dict[str, Any], ref: dict[str, Any], *, rtol: float, atol: float, context: str = ""
) -> None:
    """Assert two result dicts have the same keys, the same ``None`` entries and close values.

    NaN must appear in the same places in both (``equal_nan``), as must ±Inf.
    """
    assert ours.keys() == ref.keys()
    for key, expected in ref.items():
        got = ours[key]
        assert (got is None) == (expected is None), f"{context}{key}: {got!r} vs {expected!r}"
        if expected is not None:
            np.testing.assert_allclose(
                to_numpy(got), to_numpy(expected), rtol=rtol, atol=atol, err_msg=f"{context}{key}"
            )


# --- functional forms -------------------------------------------------------------------------


def normalize(impl: str, x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float):
    """Training-mode batch norm of float64 ``x`` by ``impl`` ("numpy" or "torch"), as NumPy."""
    if impl == "numpy":
        return numpy_bn.batch_norm_forward(x, gamma, beta, eps)[0]
    y = torch_bn.batch_norm(
        torch.from_numpy(x), None, None, torch.from_numpy(gamma), torch.from_numpy(beta),
        training=True, eps=eps,
    )
    return y.numpy()


def normalize_backward(
    impl: str, x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, dy: np.ndarray, eps: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(dx, dγ, dβ) of training-mode batch norm for upstream gradient ``dy``, by ``impl``."""
    if impl == "numpy":
        return numpy_bn.batch_norm_backward(dy, numpy_bn.batch_norm_forward(x, gamma, beta, eps)[1])
    inputs = [torch.from_numpy(a.copy()).requires_grad_() for a in (x, gamma, beta)]
    y = torch_bn.batch_norm(inputs[0], None, None, inputs[1], inputs[2], training=True, eps=eps)
    grads = torch.autograd.grad(y, inputs, torch.from_numpy(dy))
    return tuple(g.numpy() for g in grads)  # type: ignore[return-value]


# --- layer drivers ----------------------------------------------------------------------------


class TorchNNLayer:
    """Drives ``torch.nn.BatchNorm{1,2,3}d``: the reference every implementation is held to.

    :meth:`step` runs one forward and backward and returns the output, the gradients and the
    state afterwards, all under the same keys for every driver.
    """

    modules: Any = torch.nn

    def __init__(
        self,
        num_features: int,
        ndim: int,
        *,
        device: str = "cpu",
        dtype: torch.dtype = torch.float64,
        **options: Any,
    ) -> None:
        cls = getattr(self.modules, MODULE_NAMES[ndim])
        self.module = cls(num_features, device=device, dtype=dtype, **options)
        self.device = torch.device(device)
        self.eps = self.module.eps

    def train(self, mode: bool = True) -> TorchNNLayer:
        self.module.train(mode)
        return self

    def set_affine(self, gamma: np.ndarray, beta: np.ndarray) -> None:
        with torch.no_grad():
            self.module.weight.copy_(torch.as_tensor(gamma))
            self.module.bias.copy_(torch.as_tensor(beta))

    def params(self) -> dict[str, Any]:
        return {"weight": self.module.weight, "bias": self.module.bias}

    def state(self) -> dict[str, Any]:
        m = self.module
        clone = (lambda t: None if t is None else t.detach().clone())  # noqa: E731
        return {
            "running_mean": clone(m.running_mean),
            "running_var": clone(m.running_var),
            "num_batches_tracked": clone(m.num_batches_tracked),
        }

    def step(
        self, x: Any, dy: Any, memory_format: torch.memory_format = torch.contiguous_format
    ) -> dict[str, Any]:
        """Forward ``x`` (array or tensor, its dtype kept), backward ``dy``; return tensors."""
        x = torch.as_tensor(x, device=self.device).clone(memory_format=memory_format)
        dy = torch.as_tensor(dy, device=self.device).to(x.dtype)
        x.requires_grad_(True)
        self.module.zero_grad(set_to_none=True)
        y = self.module(x)
        y.backward(dy)
        p = self.params()
        return {
            "y": y.detach(),
            "dx": x.grad,
            "dweight": None if p["weight"] is None else p["weight"].grad,
            "dbias": None if p["bias"] is None else p["bias"].grad,
            **self.state(),
        }


class TorchLayer(TorchNNLayer):
    """Drives ``bncore.norm.torch_bn.BatchNorm{1,2,3}d`` (the drop-ins for ``torch.nn``'s)."""

    modules = torch_bn


class NumpyLayer:
    """Drives ``bncore.norm.numpy_bn.BatchNorm`` through the same interface (float64, CPU only)."""

    def __init__(self, num_features: int, ndim: int, *, device: str = "cpu", **options: Any):
        assert device == "cpu", "the NumPy layer runs on the CPU only"
        self.layer = numpy_bn.BatchNorm(num_features, **options)
        self.eps = self.layer.eps

    def train(self, mode: bool = True) -> NumpyLayer:
        self.layer.train(mode)
        return self

    def set_affine(self, gamma: np.ndarray, beta: np.ndarray) -> None:
        self.layer.weight, self.layer.bias = np.array(gamma), np.array(beta)

    def params(self) -> dict[str, Any]:
        return {"weight": self.layer.weight, "bias": self.layer.bias}

    def state(self) -> dict[str, Any]:
        layer = self.layer
        copy = (lambda a: None if a is None else np.array(a))  # noqa: E731
        return {
            "running_mean": copy(layer.running_mean),
            "running_var": copy(layer.running_var),
            "num_batches_tracked": layer.num_batches_tracked,
        }

    def step(self, x: Any, dy: Any) -> dict[str, Any]:
        y = self.layer.forward(np.asarray(x))
        dx = self.layer.backward(np.asarray(dy))
        return {
            "y": y,
            "dx": dx,
            "dweight": self.layer.grad_weight,
            "dbias": self.layer.grad_bias,
            **self.state(),
        }


# --- contracts --------------------------------------------------------------------------------

OPTION_SETS = [
    pytest.param({}, id="defaults"),
    pytest.param({"momentum": None}, id="cumulative"),
    pytest.param({"affine": False}, id="no-affine"),
    pytest.param({"track_running_stats": False}, id="untracked"),
    pytest.param({"momentum": 0.5, "eps": 1e-2}, id="momentum-0.5-eps-1e-2"),
]


def _unbiased_var(x: np.ndarray) -> np.ndarray:
    return np.var(x, axis=stats.reduce_axes(x.ndim), ddof=1)


def _mean(x: np.ndarray) -> np.ndarray:
    return np.mean(x, axis=stats.reduce_axes(x.ndim))


class ModuleContract:
    """Batch-norm layer semantics, each checked by hand and against ``torch.nn`` in float64.

    Subclasses set ``layer`` (a driver class) and ``device``.
    """

    layer: type = NumpyLayer
    device: str = "cpu"

    def make(self, ndim: int, num_features: int = 3, **options: Any):
        return self.layer(num_features, ndim, device=self.device, **options)

    def reference(self, ndim: int, num_features: int = 3, **options: Any) -> TorchNNLayer:
        return TorchNNLayer(num_features, ndim, device=self.device, **options)

    def run(self, layer, x: np.ndarray, dy: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """One step of ``layer`` with the results as float64 NumPy arrays."""
        out = layer.step(x, np.zeros_like(x) if dy is None else dy)
        return {k: to_numpy(v) for k, v in out.items()}

    @pytest.mark.parametrize("options", OPTION_SETS)
    @pytest.mark.parametrize("ndim", RANKS)
    def test_matches_torch_nn_in_float64_over_training_and_eval_steps(self, ndim, options):
        ours, ref = self.make(ndim, **options), self.reference(ndim, **options)
        if options.get("affine", True):
            gamma, beta = random_affine(3, seed=1)
            ours.set_affine(gamma, beta)
            ref.set_affine(gamma, beta)
        # three training steps move the running statistics; two eval steps then use them
        for step, training in enumerate([True, True, True, False, False]):
            ours.train(training)
            ref.train(training)
            x = random_batch(bn_shape(ndim), seed=10 + step)
            dy = random_batch(bn_shape(ndim), seed=100 + step)
            assert_same_results(
                ours.step(x, dy), ref.step(x, dy), **FLOAT64_TOL, context=f"step {step}: "
            )

    def test_normalizes_with_biased_variance_and_eps_inside_sqrt(self):
        # channel 0: values 0, 2 (mean 1, biased variance 1); channel 1: 1, 5 (mean 3, var 4)
        x = np.array([[0.0, 1.0], [2.0, 5.0]])
        eps = 3.0  # large, so that eps outside the root or an unbiased variance would show
        y = self.run(self.make(2, num_features=2, eps=eps), x)["y"]
        expected = np.array([[-1 / math.sqrt(1 + eps), -2 / math.sqrt(4 + eps)],
                             [1 / math.sqrt(1 + eps), 2 / math.sqrt(4 + eps)]])
        np.testing.assert_allclose(y, expected, rtol=1e-14)
        np.testing.assert_allclose(y[:, 0], [-0.5, 0.5], rtol=1e-14)

    def test_running_var_uses_unbiased_estimate(self):
        x = random_batch(bn_shape(3), seed=3)  # m = 4·3 = 12 values per channel
        out = self.run(self.make(3, momentum=1.0), x)  # momentum 1: running = this batch's
        np.testing.assert_allclose(out["running_mean"], _mean(x), rtol=1e-12)
        np.testing.assert_allclose(out["running_var"], _unbiased_var(x), rtol=1e-12)
        biased = np.var(x, axis=(0, 2))
        np.testing.assert_allclose(out["running_var"] / biased, 12 / 11, rtol=1e-12)

    def test_running_stats_move_toward_batch_by_momentum(self):
        layer, momentum = self.make(4, momentum=0.25), 0.25
        mean, var = np.zeros(3), np.ones(3)  # the initial running estimates
        for step in range(3):
            x = random_batch(bn_shape(4), seed=20 + step)
            out = self.run(layer, x)
            mean = (1 - momentum) * mean + momentum * _mean(x)
            var = (1 - momentum) * var + momentum * _unbiased_var(x)
            np.testing.assert_allclose(out["running_mean"], mean, rtol=1e-12, atol=1e-15)
            np.testing.assert_allclose(out["running_var"], var, rtol=1e-12)
            assert out["num_batches_tracked"] == step + 1

    def test_momentum_none_gives_cumulative_average(self):
        layer = self.make(5, momentum=None)
        batches = [random_batch(bn_shape(5), seed=30 + t) for t in range(4)]
        for x in batches:
            out = self.run(layer, x)
        # the initial (0, 1) is forgotten at t = 1, where the weight of the new batch is 1/1
        np.testing.assert_allclose(
            out["running_mean"], np.mean([_mean(x) for x in batches], axis=0), rtol=1e-12
        )
        np.testing.assert_allclose(
            out["running_var"], np.mean([_unbiased_var(x) for x in batches], axis=0), rtol=1e-12
        )
        assert out["num_batches_tracked"] == 4

    def _trained(self, ndim: int, **options: Any):
        layer = self.make(ndim, **options)
        gamma, beta = random_affine(3, seed=2)
        layer.set_affine(gamma, beta)
        for step in range(2):
            self.run(layer, random_batch(bn_shape(ndim), seed=40 + step))
        return layer.train(False), gamma, beta

    def test_eval_uses_running_statistics(self):
        layer, gamma, beta = self._trained(4)
        before = {k: to_numpy(v) for k, v in layer.state().items()}
        x = random_batch(bn_shape(4), seed=50)
        out = self.run(layer, x)
        rm, rv = bcast(before["running_mean"], 4), bcast(before["running_var"], 4)
        expected = bcast(gamma, 4) * (x - rm) / np.sqrt(rv + layer.eps) + bcast(beta, 4)
        np.testing.assert_allclose(out["y"], expected, rtol=1e-12, atol=1e-13)
        for key, value in before.items():  # eval does not update the running statistics
            np.testing.assert_array_equal(out[key], value)

    def test_eval_backward_is_plain_affine_scaling(self):
        layer, gamma, _ = self._trained(3)
        rm, rv = (bcast(to_numpy(layer.state()[k]), 3) for k in ("running_mean", "running_var"))
        x, dy = random_batch(bn_shape(3), seed=51), random_batch(bn_shape(3), seed=52)
        out = self.run(layer, x, dy)
        scale = bcast(gamma, 3) / np.sqrt(rv + layer.eps)
        np.testing.assert_allclose(out["dx"], dy * scale, rtol=1e-12, atol=1e-13)
        xhat = (x - rm) / np.sqrt(rv + layer.eps)
        np.testing.assert_allclose(out["dweight"], (dy * xhat).sum(axis=(0, 2)), rtol=1e-12)
        np.testing.assert_allclose(out["dbias"], dy.sum(axis=(0, 2)), rtol=1e-12)

    def test_untracked_layer_uses_batch_statistics_in_eval(self):
        layer = self.make(4, track_running_stats=False)
        layer.set_affine(*random_affine(3, seed=4))
        x, dy = random_batch(bn_shape(4), seed=60), random_batch(bn_shape(4), seed=61)
        train_out = self.run(layer.train(True), x, dy)
        eval_out = self.run(layer.train(False), x, dy)
        for key in ("y", "dx", "dweight", "dbias"):
            np.testing.assert_allclose(eval_out[key], train_out[key], rtol=1e-14, atol=1e-14)
        assert all(eval_out[k] is None for k in ("running_mean", "running_var"))
        assert eval_out["num_batches_tracked"] is None

    def test_affine_false_has_no_weight_or_bias(self):
        layer = self.make(4, affine=False)
        assert layer.params() == {"weight": None, "bias": None}
        x, dy = random_batch(bn_shape(4), seed=70), random_batch(bn_shape(4), seed=71)
        out = self.run(layer, x, dy)
        assert out["dweight"] is None and out["dbias"] is None
        xhat = (x - bcast(_mean(x), 4)) / np.sqrt(bcast(np.var(x, axis=(0, 2, 3)), 4) + layer.eps)
        np.testing.assert_allclose(out["y"], xhat, rtol=1e-12, atol=1e-13)

    @pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
    def test_nan_and_inf_propagate_per_channel_as_in_torch(self, bad):
        ours, ref = self.make(3, num_features=2), self.reference(3, num_features=2)
        x, dy = random_batch((4, 2, 3), seed=80), random_batch((4, 2, 3), seed=81)
        x[1, 0, 2] = bad  # one bad value in channel 0
        with np.errstate(invalid="ignore"):  # NaN arises by design
            ours_out, ref_out = ours.step(x, dy), ref.step(x, dy)
            assert_same_results(ours_out, ref_out, **FLOAT64_TOL)  # NaN where torch has NaN
            out = {k: to_numpy(v) for k, v in ours_out.items()}
            assert np.isnan(out["y"][:, 0]).all() and np.isnan(out["dx"][:, 0]).all()
            assert np.isfinite(out["y"][:, 1]).all() and np.isfinite(out["dx"][:, 1]).all()
            assert np.isfinite(out["running_var"][1]) and not np.isfinite(out["running_var"][0])
            # eval then uses the non-finite running statistics of channel 0 only
            ours.train(False)
            ref.train(False)
            x_clean = random_batch((4, 2, 3), seed=82)
            assert_same_results(ours.step(x_clean, dy), ref.step(x_clean, dy), **FLOAT64_TOL)


class TorchContract:
    """``bncore.norm.torch_bn`` against ``torch.nn`` on one device: the functional form, float16 and
    bfloat16 input with float32 parameters (mixed precision), and channels-last memory.
    """

    device: str = "cpu"
    layer: type = TorchLayer  # the driver and the functional form held to torch's
    functional = staticmethod(torch_bn.batch_norm)

    def tensor(self, a: np.ndarray, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        return torch.as_tensor(a, device=self.device).to(dtype)

    @pytest.mark.parametrize("affine", [True, False], ids=["affine", "no-affine"])
    @pytest.mark.parametrize("mode", ["train", "train-untracked", "eval"])
    @pytest.mark.parametrize("ndim", RANKS)
    def test_functional_matches_torch_functional_in_float64(self, ndim, mode, affine):
        shape = bn_shape(ndim)
        x = self.tensor(random_batch(shape, seed=90))
        dy = self.tensor(random_batch(shape, seed=91))
        gamma, beta = (self.tensor(a) for a in random_affine(3, seed=92))
        running = (self.tensor(np.array([0.5, -1.0, 2.0])), self.tensor(np.array([0.5, 2.0, 3.0])))
        results = []
        for fn in (self.functional, torch.nn.functional.batch_norm):
            inputs = [t.clone().requires_grad_() for t in (x, gamma, beta)]
            rm, rv = (None, None) if mode == "train-untracked" else (t.clone() for t in running)
            weight, bias = inputs[1:] if affine else (None, None)
            y = fn(inputs[0], rm, rv, weight, bias, mode != "eval", 0.3, 1e-3)
            y.backward(dy)
            grads = [t.grad for t in inputs]  # None for weight and bias when not affine
            results.append({"y": y, "dx": grads[0], "dweight": grads[1], "dbias": grads[2],
                            "running_mean": rm, "running_var": rv})
        assert_same_results(*results, **FLOAT64_TOL)

    @pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
    def test_half_precision_keeps_input_dtype_and_float32_running_stats(self, dtype):
        layer = self.layer(3, 4, device=self.device, dtype=torch.float32)
        x, dy = (self.tensor(random_batch(bn_shape(4), seed=s), dtype) for s in (93, 94))
        out = layer.step(x, dy)
        assert out["y"].dtype == dtype and out["dx"].dtype == dtype
        for key in ("dweight", "dbias", "running_mean", "running_var"):
            assert out[key].dtype == torch.float32, key

    def _half_vs(self, ref_dtype: torch.dtype, dtype: torch.dtype, ndim: int) -> None:
        """Compare bncore on ``dtype`` input with torch.nn on the same values in ``ref_dtype``.

        The statistics are float32 in both, so y and dx differ only by rounding the float32
        result to ``dtype``: at most one unit in the last place, ≤ finfo(dtype).eps·|value|
        (atol 1e-5 covers float32 noise near zero). The float32 gradients of γ, β and the running
        statistics differ by float32 summation order only.
        """
        shape = bn_shape(ndim, n=8)
        x, dy = (self.tensor(random_batch(shape, seed=s), dtype) for s in (95, 96))
        gamma, beta = random_affine(3, seed=97)
        ours = self.layer(3, ndim, device=self.device, dtype=torch.float32)
        ref = TorchNNLayer(3, ndim, device=self.device, dtype=torch.float32)
        for layer in (ours, ref):
            layer.set_affine(gamma, beta)
        for step in range(2):
            out = ours.train(step == 0).step(x, dy)
            expected = ref.train(step == 0).step(x.to(ref_dtype), dy.to(ref_dtype))
            for key in ("y", "dx"):
                assert out[key].dtype == dtype
                torch.testing.assert_close(
                    out[key].float(), expected[key].float(),
                    rtol=torch.finfo(dtype).eps, atol=1e-5, msg=lambda m, k=key: f"{k}: {m}"
                )
            for key in ("dweight", "dbias", "running_mean", "running_var"):
                torch.testing.assert_close(out[key], expected[key], rtol=1e-5, atol=1e-5)

    @pytest.mark.parametrize("ndim", [2, 4])
    @pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
    def test_half_precision_is_close_to_float32_reference(self, dtype, ndim):
        self._half_vs(torch.float32, dtype, ndim)

    @pytest.mark.parametrize("ndim", [2, 4])
    @pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
    def test_half_precision_matches_torch_nn_mixed_precision(self, dtype, ndim):
        self._half_vs(dtype, dtype, ndim)

    @pytest.mark.parametrize(
        "ndim, memory_format",
        [(4, torch.channels_last), (5, torch.channels_last_3d)],
        ids=["2d-channels-last", "3d-channels-last-3d"],
    )
    def test_channels_last_matches_contiguous_and_torch(self, ndim, memory_format):
        gamma, beta = random_affine(3, seed=98)
        layers = {name: cls(3, ndim, device=self.device)
                  for name, cls in [("cl", self.layer), ("contig", self.layer),
                                    ("torch", TorchNNLayer)]}
        for layer in layers.values():
            layer.set_affine(gamma, beta)
        for step, training in enumerate([True, True, False]):
            x, dy = random_batch(bn_shape(ndim), seed=99 + step), random_batch(bn_shape(ndim), 9)
            out = {name: layer.train(training).step(
                       x, dy, memory_format=torch.contiguous_format if name == "contig"
                       else memory_format)
                   for name, layer in layers.items()}
            assert_same_results(out["cl"], out["contig"], **FLOAT64_TOL)
            assert_same_results(out["cl"], out["torch"], **FLOAT64_TOL)
            # the output is in channels-last memory exactly when torch.nn's is
            assert out["cl"]["y"].is_contiguous(memory_format=memory_format) == out["torch"][
                "y"].is_contiguous(memory_format=memory_format)
