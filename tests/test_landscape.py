"""Landscape probes along the gradient (Santurkar et al. 2018, §3) and their traces over
training (bncore.experiments.landscape, landscape_trace).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bncore.experiments.data import gaussian_mixture
from bncore.experiments.landscape import landscape_probe, preserved_state, probe_landscape
from bncore.experiments.landscape_trace import trace_landscape
from bncore.experiments.nets import MLP
from bncore.experiments.runtime import seed_everything
from bncore.experiments.train import train
from bncore.norm.torch_bn import BatchNorm1d

DT = torch.float64


def _least_squares(seed: int = 0, n: int = 20, d: int = 5):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=gen, dtype=DT)
    y = torch.randn(n, generator=gen, dtype=DT)
    model = nn.Linear(d, 1, bias=False).to(DT)
    with torch.no_grad():
        model.weight.copy_(torch.randn(1, d, generator=gen, dtype=DT))

    def loss_fn(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return 0.5 * (out[:, 0] - target).square().sum()

    return model, x, y, loss_fn


def test_quadratic_loss_matches_hand_computed_probe() -> None:
    # L(w) = ½‖Xw − y‖², A = XᵀX, g = Xᵀ(Xw − y):
    # L(w − ηg) = L − η‖g‖² + ½η² gᵀAg,  ∇L(w) − ∇L(w − ηg) = ηAg,  β_eff = ‖Ag‖/‖g‖.
    model, x, y, loss_fn = _least_squares()
    w = model.weight.detach()[0]
    a = x.T @ x
    g = x.T @ (x @ w - y)
    loss0 = 0.5 * float((x @ w - y).square().sum())
    etas = np.geomspace(1e-3, 1e-1, 7)
    probe = probe_landscape(model, x, y, etas, loss_fn=loss_fn)
    gg, gag, ag = float(g @ g), float(g @ a @ g), float(torch.linalg.vector_norm(a @ g))
    np.testing.assert_allclose(probe.loss0, loss0, rtol=1e-12)
    np.testing.assert_allclose(probe.grad_norm, np.sqrt(gg), rtol=1e-12)
    np.testing.assert_allclose(probe.losses, loss0 - etas * gg + 0.5 * etas**2 * gag, rtol=1e-10)
    np.testing.assert_allclose(probe.grad_change, etas * ag, rtol=1e-10)
    np.testing.assert_allclose(probe.beta_smoothness, ag / np.sqrt(gg), rtol=1e-10)
    np.testing.assert_allclose(probe.step_lengths, etas * np.sqrt(gg), rtol=1e-12)
    assert probe.loss_range == (float(probe.losses.min()), float(probe.losses.max()))


def test_beta_smoothness_is_at_most_the_largest_hessian_eigenvalue() -> None:
    model, x, y, loss_fn = _least_squares(seed=3)
    probe = probe_landscape(model, x, y, [1e-2, 1e-1], loss_fn=loss_fn)
    lam_max = float(torch.linalg.eigvalsh(x.T @ x).max())
    assert probe.beta_smoothness <= lam_max * (1 + 1e-12)


def _bn_mlp(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(6, 16), BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 16), BatchNorm1d(16),
        nn.ReLU(), nn.Linear(16, 3),
    )


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_probe_restores_parameters_buffers_grads_modes_and_rng() -> None:
    model = _bn_mlp(0)
    x = torch.randn(32, 6)
    y = torch.randint(0, 3, (32,))
    model.train()
    F.cross_entropy(model(x), y).backward()  # running stats move, grads exist
    model[4].weight.grad = None  # a parameter without .grad must stay without
    model.eval()
    model[1].train()  # a mixed set of modes must come back as it was
    before = _snapshot(model)
    grads = [None if p.grad is None else p.grad.clone() for p in model.parameters()]
    modes = [m.training for m in model.modules()]
    rng = torch.get_rng_state()

    probe_landscape(model, x, y, [0.01, 0.1, 1.0])

    after = _snapshot(model)
    assert before.keys() == after.keys()
    for k in before:
        assert torch.equal(before[k], after[k]), k
    for p, g in zip(model.parameters(), grads, strict=True):
        assert (p.grad is None) == (g is None)
        if g is not None:
            assert torch.equal(p.grad, g)
    assert [m.training for m in model.modules()] == modes
    assert torch.equal(torch.get_rng_state(), rng)


def test_probe_uses_training_mode_statistics() -> None:
    model = _bn_mlp(1)
    x = torch.randn(32, 6)
    y = torch.randint(0, 3, (32,))
    model.eval()
    probe = probe_landscape(model, x, y, [0.1])
    with preserved_state(model):
        model.train()
        with torch.no_grad():
            expected = float(F.cross_entropy(model(x), y))
    assert probe.loss0 == pytest.approx(expected, rel=1e-6)
    probe_eval = probe_landscape(model, x, y, [0.1], train_mode=False)
    with torch.no_grad():
        assert probe_eval.loss0 == pytest.approx(float(F.cross_entropy(model(x), y)), rel=1e-6)


class _NoisyScale(nn.Module):
    """Multiplies by fresh noise from its own generator at each call (like noisy BN)."""

    def __init__(self) -> None:
        super().__init__()
        self.gen = torch.Generator().manual_seed(5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * (1 + 0.1 * torch.randn(x.shape, generator=self.gen))


def test_probe_restores_module_generators() -> None:
    model = nn.Sequential(nn.Linear(4, 4), _NoisyScale(), nn.Linear(4, 2))
    x, y = torch.randn(8, 4), torch.randint(0, 2, (8,))
    state = model[1].gen.get_state()
    probe_landscape(model, x, y, [0.1, 0.2])
    assert torch.equal(model[1].gen.get_state(), state)


def test_probe_is_deterministic_and_training_probe_matches() -> None:
    model = _bn_mlp(2)
    x = torch.randn(32, 6)
    y = torch.randint(0, 3, (32,))
    etas = np.geomspace(0.01, 1.0, 5)
    p1 = probe_landscape(model, x, y, etas)
    p2 = landscape_probe(etas)(model, x, y, 17)
    np.testing.assert_array_equal(p1.losses, p2.losses)
    np.testing.assert_array_equal(p1.grad_change, p2.grad_change)
    assert p1.loss0 == p2.loss0


def test_probe_rejects_bad_step_sizes() -> None:
    model = _bn_mlp(0)
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    for bad in ([], [0.1, -0.2], [0.0], [float("nan")]):
        with pytest.raises(ValueError, match="etas"):
            probe_landscape(model, x, y, bad)
    with pytest.raises(ValueError, match="etas"):
        landscape_probe([])


def test_trace_landscape_records_probes_without_changing_training() -> None:
    data = gaussian_mixture(128, 64, 8, 3, seed=0)
    build = lambda: MLP(8, 16, 2, 3, norm="bn")  # noqa: E731
    tr = trace_landscape(build, data, lr=0.1, steps=30, etas=[0.05, 0.1], probe_every=10, seed=1)
    assert tr.step.tolist() == [0, 10, 20]
    assert tr.losses.shape == tr.grad_change.shape == (3, 2)
    assert tr.beta.shape == (3,) and not tr.diverged and tr.last_step == 29
    np.testing.assert_allclose(tr.loss_variation, tr.losses.max(1) - tr.losses.min(1))
    seed_everything(1)
    plain = train(build(), data, steps=30, lr=0.1, seed=1, eval_every=0, progress=False)
    assert tr.final_test_acc == plain.final_test_acc  # probes leave the trajectory unchanged
