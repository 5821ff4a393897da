"""``bncore.norm.torch_bn`` under every mode of differentiation torch has: forward mode
(``torch.autograd.forward_ad``), ``torch.func`` (``jvp``, ``grad``, ``jacrev``, ``jacfwd``,
``vmap``), and forward-over-reverse Hessian-vector products, each against torch's own
``F.batch_norm`` and, where it is the definition, against finite differences (float64).

Tolerances: in float64 two correct implementations differ by summation order only, ~1e-15
relative on these O(1) values, so ``assert_close``'s float64 defaults (rtol 1e-7) leave a margin
of 10⁸ while any formula error (a missing term of the Jacobian) is O(1). Centred differences
with h = 1e-6 have error O(h²·f''') + O(u/h) ≈ 1e-10.
"""

from __future__ import annotations

import pytest
import torch
import torch.autograd.forward_ad as fwad
import torch.nn.functional as F
from torch import Tensor

from bncore.norm import torch_bn
from bncore.norm.gradcheck import norm_rel_error

FUNCTIONS = [pytest.param(torch_bn.batch_norm, id="bncore"),
             pytest.param(F.batch_norm, id="torch")]
MODES = [pytest.param(True, id="train"), pytest.param(False, id="eval")]


def _problem(seed: int, shape: tuple[int, ...] = (6, 3, 2)) -> dict[str, Tensor]:
    """float64 primals and tangents for (x, γ, β), and running statistics (var > 0)."""
    gen = torch.Generator().manual_seed(seed)
    c = shape[1]

    def normal(*size: int) -> Tensor:
        return torch.randn(*size, generator=gen, dtype=torch.float64)

    return {"x": normal(*shape), "dx": normal(*shape), "w": normal(c), "dw": normal(c),
            "b": normal(c), "db": normal(c), "rm": normal(c),
            "rv": torch.rand(c, generator=gen, dtype=torch.float64) + 0.5}


def _call(fn, p: dict[str, Tensor], training: bool, x: Tensor, w: Tensor, b: Tensor) -> Tensor:
    """``fn`` on copies of the running statistics (training updates them in place)."""
    return fn(x, p["rm"].clone(), p["rv"].clone(), w, b, training)


def _forward_ad_tangent(fn, p: dict[str, Tensor], training: bool) -> Tensor:
    with fwad.dual_level():
        duals = [fwad.make_dual(p[k], p["d" + k]) for k in ("x", "w", "b")]
        return fwad.unpack_dual(_call(fn, p, training, *duals)).tangent


@pytest.mark.parametrize("training", MODES)
def test_forward_ad_matches_torch_and_finite_differences(training):
    p = _problem(seed=1)
    ours = _forward_ad_tangent(torch_bn.batch_norm, p, training)
    torch.testing.assert_close(ours, _forward_ad_tangent(F.batch_norm, p, training))
    h = 1e-6
    plus, minus = (_call(torch_bn.batch_norm, p, training,
                         *(p[k] + sign * h * p["d" + k] for k in ("x", "w", "b")))
                   for sign in (1.0, -1.0))
    assert norm_rel_error(ours, (plus - minus) / (2 * h)) < 1e-8


@pytest.mark.parametrize("training", MODES)
def test_torch_func_jvp_matches_torch(training):
    p = _problem(seed=2)
    outs = [torch.func.jvp(lambda x, w, b, fn=fn: _call(fn, p, training, x, w, b),
                           (p["x"], p["w"], p["b"]), (p["dx"], p["dw"], p["db"]))
            for fn in (torch_bn.batch_norm, F.batch_norm)]
    torch.testing.assert_close(outs[0], outs[1])


@pytest.mark.parametrize("fn", FUNCTIONS)
@pytest.mark.parametrize("stat", ["rm", "rv"])
def test_running_stat_tangent_is_an_error_in_eval_as_in_torch(stat, fn):
    p = _problem(seed=3)
    with fwad.dual_level(), pytest.raises(RuntimeError, match="not differentiable wrt "
                                          "running_mean and running_var"):
        running = {k: p[k].clone() for k in ("rm", "rv")}
        running[stat] = fwad.make_dual(running[stat], torch.ones_like(running[stat]))
        fn(fwad.make_dual(p["x"], p["dx"]), running["rm"], running["rv"], p["w"], p["b"], False)


@pytest.mark.parametrize("fn", FUNCTIONS)
def test_running_stat_tangent_is_ignored_in_training_as_in_torch(fn):
    p = _problem(seed=4)
    expected = _forward_ad_tangent(fn, p, True)
    with fwad.dual_level():
        rm = fwad.make_dual(p["rm"].clone(), torch.ones(3, dtype=torch.float64))
        rv = fwad.make_dual(p["rv"].clone(), torch.ones(3, dtype=torch.float64))
        y = fn(fwad.make_dual(p["x"], p["dx"]), rm, rv, fwad.make_dual(p["w"], p["dw"]),
               fwad.make_dual(p["b"], p["db"]), True)
        torch.testing.assert_close(fwad.unpack_dual(y).tangent, expected)


def _bn_loss(fn, training: bool, p: dict[str, Tensor]):
    """A loss with a non-trivial Hessian: Σ r·tanh(BN(x)), with γ, β and running stats fixed."""
    def loss(x: Tensor) -> Tensor:
        return (p["dw"][None, :, None] * torch.tanh(_call(fn, p, training, x, p["w"], p["b"]))
                ).sum()
    return loss


@pytest.mark.parametrize("training", MODES)
def test_torch_func_grad_jacrev_and_jacfwd_match_torch(training):
    p = _problem(seed=5)
    for transform in (torch.func.grad, torch.func.jacrev, torch.func.jacfwd):
        ours, ref = (transform(_bn_loss(fn, training, p))(p["x"])
                     for fn in (torch_bn.batch_norm, F.batch_norm))
        torch.testing.assert_close(ours, ref)
    jac_rev, jac_fwd = (transform(lambda x: _call(torch_bn.batch_norm, p, training, x, p["w"],
                                                  p["b"]))(p["x"])
                        for transform in (torch.func.jacrev, torch.func.jacfwd))
    torch.testing.assert_close(jac_fwd, jac_rev)


@pytest.mark.parametrize("training", MODES)
def test_hessian_vector_product_forward_over_reverse_equals_double_backward(training):
    p = _problem(seed=6)
    loss = _bn_loss(torch_bn.batch_norm, training, p)
    _, hvp_fwd = torch.func.jvp(torch.func.grad(loss), (p["x"],), (p["dx"],))
    hvp_rev = torch.autograd.functional.hvp(loss, p["x"], p["dx"])[1]  # reverse over reverse
    torch.testing.assert_close(hvp_fwd, hvp_rev)
    _, hvp_torch = torch.func.jvp(torch.func.grad(_bn_loss(F.batch_norm, training, p)),
                                  (p["x"],), (p["dx"],))
    torch.testing.assert_close(hvp_fwd, hvp_torch)


def _vmapped_and_looped(training: bool, batched_stats: bool):
    """``vmap`` over a leading axis of 4 inputs, and the same 4 calls one by one."""
    p = _problem(seed=7)
    xs = torch.randn(4, 6, 3, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    stats = [p["rm"].expand(4, 3).clone(), p["rv"].expand(4, 3).clone()]
    loop_stats = [s.clone() for s in stats]
    in_dims = (0, 0, 0) if batched_stats else (0, None, None)
    if not batched_stats:
        stats = [s[0] for s in stats]
    vmapped = torch.func.vmap(
        lambda x, rm, rv: torch_bn.batch_norm(x, rm, rv, p["w"], p["b"], training),
        in_dims=in_dims,
    )(xs, *stats)
    looped = torch.stack([torch_bn.batch_norm(x, loop_stats[0][i], loop_stats[1][i], p["w"],
                                              p["b"], training) for i, x in enumerate(xs)])
    return vmapped, looped, stats, loop_stats


@pytest.mark.parametrize("training, batched_stats",
                         [(False, False), (False, True), (True, True)],
                         ids=["eval", "eval-batched-stats", "train-batched-stats"])
def test_vmap_over_a_batch_of_inputs_equals_a_loop(training, batched_stats):
    vmapped, looped, stats, loop_stats = _vmapped_and_looped(training, batched_stats)
    torch.testing.assert_close(vmapped, looped)
    if batched_stats:  # each input of the batch updated its own running statistics
        for s, ls in zip(stats, loop_stats, strict=True):
            torch.testing.assert_close(s, ls)


def test_vmap_over_a_batch_of_inputs_without_running_stats_equals_a_loop():
    xs = torch.randn(4, 6, 3, 2, dtype=torch.float64)
    vmapped = torch.func.vmap(lambda x: torch_bn.batch_norm(x, None, None, training=True))(xs)
    looped = torch.stack([torch_bn.batch_norm(x, None, None, training=True) for x in xs])
    torch.testing.assert_close(vmapped, looped)


@pytest.mark.parametrize("fn", FUNCTIONS)
def test_vmap_with_shared_running_stats_in_training_is_an_error_as_in_torch(fn):
    # one pair of running statistics cannot be updated in place by four batches at once
    xs, rm, rv = torch.randn(4, 6, 3), torch.zeros(3), torch.ones(3)
    with pytest.raises(RuntimeError):
        torch.func.vmap(lambda x: fn(x, rm, rv, None, None, True))(xs)
