"""Tests of bncore.experiments.train: determinism, evaluation, divergence and probes."""

from __future__ import annotations

import math

import pytest
import torch

from bncore.experiments.data import gaussian_mixture
from bncore.experiments.diagnostics import ics_probe, moments_probe
from bncore.experiments.grid import run_grid
from bncore.experiments.nets import MLP
from bncore.experiments.runtime import seed_everything
from bncore.experiments.train import History, Run, evaluate, train, train_mlp


@pytest.fixture(scope="module")
def data():
    return gaussian_mixture(256, 128, 8, 3, seed=0, separation=3.0)


def _fresh(norm: str, seed: int = 0) -> MLP:
    torch.manual_seed(seed)
    return MLP(8, 16, 2, 3, norm=norm, noise={"seed": seed})


@pytest.mark.parametrize("norm", ["none", "bn", "noisy_bn"])
def test_same_seed_gives_identical_history(data, norm):
    kw = dict(steps=40, lr=0.1, batch_size=32, eval_every=10, progress=False, device="cpu")
    h1 = train(_fresh(norm), data, seed=7, **kw)
    h2 = train(_fresh(norm), data, seed=7, **kw)
    assert h1.loss == h2.loss and h1.test_acc == h2.test_acc and h1.acc == h2.acc
    h3 = train(_fresh(norm), data, seed=8, **kw)
    assert h3.loss != h1.loss  # another batch order


def test_history_lengths_and_learning(data):
    h = train(_fresh("bn"), data, steps=120, lr=0.2, batch_size=32, eval_every=50,
              progress=False, device="cpu")
    assert isinstance(h, History) and not h.diverged
    assert h.step == list(range(120)) and len(h.loss) == len(h.acc) == 120
    assert h.eval_step == [50, 100, 120]
    assert h.final_test_acc > 0.8  # separable blobs; chance is 1/3
    assert sum(h.loss[-10:]) < sum(h.loss[:10])


def test_evaluate_matches_manual_computation(data):
    net = _fresh("bn").eval()
    loss, acc = evaluate(net, data.x_test, data.y_test, batch_size=50)
    with torch.no_grad():
        logits = net(data.x_test)
    assert math.isclose(loss, float(torch.nn.functional.cross_entropy(logits, data.y_test)),
                        rel_tol=1e-5)
    assert acc == float((logits.argmax(1) == data.y_test).float().mean())


def test_divergence_stops_training(data):
    h = train(_fresh("none"), data, steps=200, lr=1e4, batch_size=32, progress=False,
              device="cpu")
    assert h.diverged and len(h.step) < 200 and math.isnan(h.final_test_acc)


def test_probes_run_on_schedule_and_do_not_change_training(data):
    kw = dict(steps=25, lr=0.1, batch_size=32, progress=False, device="cpu", seed=3)
    plain = train(_fresh("noisy_bn"), data, **kw)
    probes = {"m": moments_probe(data.x_train[:64]), "ics": ics_probe(0.1),
              "step": lambda m, xb, yb, t: t}
    probed = train(_fresh("noisy_bn"), data, probes=probes, probe_every=10, **kw)
    assert probed.probe_step == [0, 10, 20] and probed.probes["step"] == [0, 10, 20]
    assert len(probed.probes["m"][0]) == 2  # one (mean, std) pair per block
    assert probed.loss == plain.loss and probed.test_acc == plain.test_acc


def test_bad_arguments_raise(data):
    with pytest.raises(ValueError, match="lr"):
        train(_fresh("bn"), data, steps=1, lr=0.0, progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        train(_fresh("bn"), data, steps=1, lr=0.1, batch_size=10_000, progress=False)
    with pytest.raises(ValueError, match="optimizer"):
        train(_fresh("bn"), data, steps=1, lr=0.1, optimizer="lbfgs", progress=False)


def test_train_mlp_builds_from_the_global_rng_and_seeds_noise_and_batch_order():
    data = gaussian_mixture(n_train=128, n_test=64, dim=5, num_classes=3, seed=0)
    runs = []
    for _ in range(2):
        seed_everything(3)
        runs.append(train_mlp(data, seed=3, norm="noisy_bn", width=8, depth=2, steps=5,
                              lr=0.1, batch_size=16, eval_every=5, progress=False,
                              noise={"mean_scale": 1.0, "std_scale": 2.0}))
    assert runs[0].history.loss == runs[1].history.loss
    assert runs[0].model.blocks[0].norm.seed == 3000  # noise seed 1000·seed + block index


def test_grid_items_pair_each_result_with_its_setting_and_seed():
    grid = run_grid(train_mlp, [{"norm": "bn"}], [0, 1], data=gaussian_mixture(
        n_train=64, n_test=32, dim=4, num_classes=2, seed=0), width=4, depth=1, steps=2,
        lr=0.1, batch_size=16, eval_every=2, progress=False)
    keys = [key for key, _ in grid.items()]
    assert keys == [({"norm": "bn"}, 0), ({"norm": "bn"}, 1)]
    assert all(isinstance(run, Run) for _, run in grid.items())
