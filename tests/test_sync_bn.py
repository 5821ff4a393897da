"""SyncBatchNorm across real processes (gloo on 127.0.0.1-free file stores), and on one process.

One spawned job of 4 ranks runs every split of ``sync_workers.CASES`` on sub-groups of 2, 3 and
4 ranks, and a converted convnet under DistributedDataParallel: spawning costs ~1 s of CPU a
process, so the checks share one job. Every job has a timeout; a failing rank fails the test.

Tolerance: in float64 each statistic is a sum of at most m = 72 values of size O(1) (after the
per-channel shift of up to ~10), summed in a different order on k processes than on one: the
difference is bounded by ~m·u·max|x| ≈ 72 · 1.1e-16 · 10 ≈ 1e-13 relative, and the Chan merge
adds a few u. A formula error (averaged variances, a missing all-reduce, a local count) is
> 1e-3. TOL = 1e-11 leaves two orders for the conditioning of 1/√σ².
"""

from __future__ import annotations

import numpy as np
import pytest
import sync_workers
import torch
from torch import nn

from bncore.experiments import data_parallel
from bncore.experiments.distributed import launch
from bncore.norm.sync_bn import SyncBatchNorm, convert_sync_batchnorm
from bncore.norm.torch_bn import BatchNorm1d, BatchNorm2d

TOL = 1e-11
SEED = 7


@pytest.fixture(scope="module")
def job() -> list[dict]:
    """Run every multi-process check once, in one 4-rank gloo job (≤ 180 s wall or it fails:
    ~25 s of CPU, but a loaded 2-core machine stretches the wall time several-fold).
    """
    return launch(sync_workers.check_all, 4, (SEED,), timeout=180.0)


@pytest.mark.parametrize("split, feature_shape", sync_workers.CASES, ids=str)
def test_sync_bn_equals_one_process_on_the_concatenated_batch(job, split, feature_shape):
    key = f"{split} {feature_shape}"
    for rank in range(len(split)):
        errors = job[rank][key]
        bad = {name: e for name, e in errors.items() if not e <= TOL}
        assert not bad, f"rank {rank} of split {split}: {bad}"


def test_ddp_with_converted_sync_bn_trains_like_one_process(job):
    errors = [job[rank]["ddp (3, 5)"] for rank in range(2)]
    assert max(errors) <= TOL, errors


@pytest.mark.parametrize("sync", [False, True])
def test_the_one_process_simulation_of_ddp_is_exact(job, sync):
    # float32, 4 steps of a 6-5-3 MLP: sums of ≤ 12 terms, round-off ~1e-6 relative; a wrong
    # rule (running estimates of all ranks, not rank 0's; a global instead of local BN) is O(0.1)
    errors = [job[rank][f"simulation sync={sync}"] for rank in range(4)]
    assert max(errors) <= 1e-5, errors


def test_the_chapters_layer_job_matches_one_process_and_times_three_collectives(job):
    split = sync_workers.LAYER_JOB_SPLIT
    one = data_parallel.one_process_step(data_parallel.layer_batch(sum(split), 4, SEED))
    ranks = [job[rank]["layer_job"] for rank in range(4)]
    for key in ("y", "dx"):
        got = np.concatenate([r["sync"][key] for r in ranks])
        np.testing.assert_allclose(got, one[key], rtol=0, atol=TOL)
    summed = sum(r["sync"]["dgamma_dbeta"] for r in ranks)
    np.testing.assert_allclose(summed, one["dgamma_dbeta"], rtol=TOL, atol=TOL)
    ghost = data_parallel.ghost_batch_norm(data_parallel.layer_batch(sum(split), 4, SEED).x,
                                           split).numpy()
    np.testing.assert_allclose(np.concatenate([r["local_y"] for r in ranks]), ghost,
                               rtol=0, atol=TOL)
    assert all(len(r["seconds"]) == 3 and min(r["seconds"].values()) > 0 for r in ranks)


def test_a_failing_rank_fails_the_job():
    with pytest.raises(RuntimeError, match="rank 1 fails on purpose"):
        launch(sync_workers.fail_on_rank_one, 2, timeout=120.0)


def test_a_hanging_job_times_out():
    with pytest.raises(TimeoutError, match="did not finish"):
        launch(sync_workers.sleep_forever, 2, timeout=4.0)


@pytest.mark.cuda
@pytest.mark.skipif(torch.cuda.device_count() < 1, reason="needs a CUDA GPU")
def test_sync_bn_on_cuda_tensors():
    backend = "nccl" if torch.cuda.device_count() >= 2 else "gloo"  # NCCL: a GPU per rank
    results = launch(sync_workers.cuda_case, 2, (SEED,), backend=backend, timeout=120.0)
    for errors in results:
        assert max(errors.values()) <= TOL, errors


# --- one process: no process group, world size 1 ---


def test_without_a_process_group_sync_bn_is_batch_norm():
    torch.manual_seed(0)
    x = torch.randn(6, 3, 4, 4, dtype=torch.float64)
    sync, ref = SyncBatchNorm(3).double(), nn.BatchNorm2d(3).double()
    torch.testing.assert_close(sync(x), ref(x))
    torch.testing.assert_close(sync.running_var, ref.running_var)
    sync.eval(), ref.eval()
    torch.testing.assert_close(sync(x), ref(x))


@pytest.mark.parametrize("bad, error, words", [
    (torch.randn(4), ValueError, "expected 2D or 3D"),
    (torch.randn(4, 5), RuntimeError, "should contain 5 elements not 3"),
    (torch.randn(1, 3), ValueError, "more than 1 value per channel"),
])
def test_bad_input_gets_batch_norm_errors(bad, error, words):
    with pytest.raises(error, match=words):
        SyncBatchNorm(3)(bad)


def test_convert_keeps_parameters_buffers_and_mode():
    net = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3),
                        nn.Sequential(BatchNorm1d(5, momentum=None), BatchNorm2d(2, affine=False)))
    net[1].num_batches_tracked.fill_(4)
    net[2].eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    weight = net[1].weight
    out = convert_sync_batchnorm(net, process_group=None)
    layers = [out[1], out[2][0], out[2][1]]
    assert all(type(m) is SyncBatchNorm for m in layers)
    assert out[1].weight is weight  # the same Parameter: an optimizer built before still works
    assert [m.training for m in layers] == [True, False, False]
    assert out[2][0].momentum is None and out[2][1].weight is None
    for k, v in out.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)


def test_convert_a_bare_batch_norm_returns_a_sync_layer():
    assert isinstance(convert_sync_batchnorm(nn.BatchNorm1d(4)), SyncBatchNorm)
