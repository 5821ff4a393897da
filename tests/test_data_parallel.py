"""``bncore.experiments.data_parallel`` and ``population_stats``: one process, small and fast.

The multi-process parts (``layer_job``, ``simulate_data_parallel`` against real DDP) are checked
in ``test_sync_bn``'s one spawned job; here the one-process pieces and the counts.
"""

from __future__ import annotations

import pytest
import torch

from bncore.experiments import data_parallel as dp
from bncore.experiments.data import digits
from bncore.experiments.population_stats import ema_vs_precise
from bncore.experiments.runtime import seed_everything


@pytest.fixture(scope="module")
def data():
    return digits()


def test_ghost_batch_norm_normalizes_each_chunk_on_its_own():
    x = dp.layer_batch(9, 3, seed=0).x
    ghost = dp.ghost_batch_norm(x, [2, 0, 7])
    for chunk in (ghost[:2], ghost[2:]):
        torch.testing.assert_close(chunk.mean(0), torch.zeros(3, dtype=torch.float64),
                                   rtol=0, atol=1e-12)
    torch.testing.assert_close(dp.ghost_batch_norm(x, [9]), dp.ghost_batch_norm(x, [9]))


def test_one_process_step_matches_torch_nn():
    batch = dp.layer_batch(8, 4, seed=1)
    got = dp.one_process_step(batch)
    ref = torch.nn.BatchNorm1d(4, dtype=torch.float64)
    with torch.no_grad():
        ref.weight.copy_(batch.weight)
        ref.bias.copy_(batch.bias)
    torch.testing.assert_close(torch.from_numpy(got["y"]), ref(batch.x).detach())


def test_sync_bytes_counts_2c_plus_1_per_process_forward_and_2c_backward():
    counts = dp.sync_bytes([64, 32], world=4, params=1000)
    assert counts == {"forward": (129 + 65) * 4 * 4, "backward": (128 + 64) * 4, "ddp": 4000}


@pytest.mark.parametrize("sync", [True, False])
def test_train_data_parallel_runs_and_is_deterministic(data, sync):
    accs = []
    for _ in range(2):
        seed_everything(0)
        accs.append(dp.train_data_parallel(data, processes=4, per_process=2, sync=sync,
                                           seed=0, steps=3, width=8))
    assert accs[0] == accs[1] and 0 <= accs[0] <= 1


def test_ema_vs_precise_freezes_to_one_map(data):
    seed_everything(0)
    result = ema_vs_precise(data, seed=0, steps=5, frozen_steps=2, width=8)
    assert result.train_eval_gap_frozen == 0.0
    assert result.distance_resample >= 0 and result.distance_ema > 0
