"""Functions that spawned ranks run for ``test_sync_bn`` (importable, so spawn can pickle them).

Each rank builds the same full batch from a seed, takes its slice of a split such as (2, 0, 6),
runs bncore's :class:`~bncore.norm.sync_bn.SyncBatchNorm` over a process group of
``len(split)`` ranks, and compares with ``torch.nn``'s batch norm on the whole batch in one
process. The functions return the largest errors (NumPy floats), never raise on a mismatch, so
that the parent test reports every number at once.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from bncore.experiments.data import Dataset, batches
from bncore.experiments.data_parallel import layer_job, simulate_data_parallel
from bncore.experiments.nets import MLP
from bncore.norm.sync_bn import SyncBatchNorm, convert_sync_batchnorm

#: (split, input shape without N) cases: ranks 0..len(split)-1 of the world take part.
CASES = [
    ((4, 4), (3,)),
    ((3, 5), (3, 2, 2)),
    ((2, 0, 6), (3, 2)),
    ((2, 0, 6), (3, 2, 2)),
    ((1, 3, 0, 4), (3, 2, 2)),
    ((2, 2, 2, 2), (3,)),
]

#: The split of the chapter's live job (``data_parallel.layer_job``), run here with C = 4.
LAYER_JOB_SPLIT = (2, 3, 5, 6)


def _error(a: torch.Tensor, b: torch.Tensor) -> float:
    """The error relative to the values' scale: max |a − b| / max(1, max |b|)."""
    if b.numel() == 0:
        return 0.0
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max() / max(1.0, float(b.abs().max())))


def _full_batch(split: tuple[int, ...], feature_shape: tuple[int, ...], seed: int) -> dict:
    """The concatenated batch, an output gradient and γ, β, all float64 from ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    m, c = sum(split), feature_shape[0]
    shape = (m, *feature_shape)
    scale = 0.5 + torch.rand(c, generator=gen, dtype=torch.float64)
    shift = 3 * torch.randn(c, generator=gen, dtype=torch.float64)
    view = (1, c) + (1,) * (len(shape) - 2)
    return {
        "x": [torch.randn(shape, generator=gen, dtype=torch.float64) * scale.view(view)
              + shift.view(view) for _ in range(2)],
        "dy": torch.randn(shape, generator=gen, dtype=torch.float64),
        "weight": 1 + 0.3 * torch.randn(c, generator=gen, dtype=torch.float64),
        "bias": torch.randn(c, generator=gen, dtype=torch.float64),
    }


def _one_case(rank: int, split: tuple[int, ...], feature_shape: tuple[int, ...], group: Any,
              seed: int, device: str = "cpu") -> dict[str, float]:
    """Two training steps of SyncBN (momentum 0.1) against ``nn.BatchNorm1d`` on the union."""
    data = {k: [t.to(device) for t in v] if isinstance(v, list) else v.to(device)
            for k, v in _full_batch(split, feature_shape, seed).items()}
    c = feature_shape[0]
    lo = sum(split[:rank])
    part = slice(lo, lo + split[rank])
    sync = SyncBatchNorm(c, process_group=group, dtype=torch.float64, device=device)
    ref = (nn.BatchNorm1d if len(feature_shape) < 3 else nn.BatchNorm2d)(
        c, dtype=torch.float64, device=device)
    for layer in (sync, ref):
        with torch.no_grad():
            layer.weight.copy_(data["weight"])
            layer.bias.copy_(data["bias"])
    errors: dict[str, float] = {}
    for step, x_full in enumerate(data["x"]):
        x = x_full[part].clone().requires_grad_(True)
        xr = x_full.clone().requires_grad_(True)
        for layer in (sync, ref):
            layer.zero_grad()
        y, yr = sync(x), ref(xr)
        (y * data["dy"][part]).sum().backward()
        (yr * data["dy"]).sum().backward()
        grads = torch.cat([sync.weight.grad, sync.bias.grad])
        dist.all_reduce(grads, group=group)  # what DDP would sum (then average)
        errors[f"output{step}"] = _error(y.detach(), yr.detach()[part])
        errors[f"input grad{step}"] = _error(x.grad, xr.grad[part])
        errors[f"gamma beta grad{step}"] = _error(grads, torch.cat([ref.weight.grad,
                                                                    ref.bias.grad]))
    errors["running stats"] = max(_error(sync.running_mean, ref.running_mean),
                                  _error(sync.running_var, ref.running_var))
    errors["batches tracked"] = float(sync.num_batches_tracked != ref.num_batches_tracked)
    sync.eval()  # eval: no collective, the running estimates, as torch's layer
    errors["eval"] = _error(sync(data["x"][0][part]), ref.eval()(data["x"][0])[part])
    return errors


def _convnet() -> nn.Module:
    """A two-conv net with torch.nn batch norm (converted to SyncBN by the ranks)."""
    return nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3),
    ).double()


def _train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, total: int, steps: int,
           world: int) -> None:
    """SGD with momentum; the loss is the summed cross-entropy ·world/total, so that DDP's average
    of the ranks' gradients is the gradient of the mean loss over all ``total`` examples.
    """
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(steps):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y, reduction="sum") * (world / total)
        loss.backward()
        opt.step()


def _ddp_case(rank: int, split: tuple[int, ...], group: Any, seed: int, steps: int = 3) -> float:
    """A converted convnet under DDP against one process on the whole batch: parameter error."""
    gen = torch.Generator().manual_seed(seed)
    total = sum(split)
    x = torch.randn(total, 1, 8, 8, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, 3, (total,), generator=gen)
    torch.manual_seed(seed)
    reference = _convnet()
    model = convert_sync_batchnorm(_convnet(), process_group=group)
    model.load_state_dict(reference.state_dict())
    ddp = DistributedDataParallel(model, process_group=group)
    lo = sum(split[:rank])
    part = slice(lo, lo + split[rank])
    _train(ddp, x[part], labels[part], total, steps, len(split))
    _train(reference, x, labels, total, steps, 1)
    ref_state = reference.state_dict()
    return max(_error(v.double(), ref_state[k].double()) for k, v in model.state_dict().items())


def _simulation_case(rank: int, world: int, sync: bool, seed: int, steps: int = 4,
                     n: int = 3) -> float:
    """Real DDP over ``world`` ranks of n examples against ``simulate_data_parallel``: the
    largest error over the parameters, and on rank 0 the BN buffers too (float32).
    """
    gen = torch.Generator().manual_seed(seed)
    data = Dataset(torch.randn(40, 6, generator=gen), torch.randint(0, 3, (40,), generator=gen),
                   torch.randn(8, 6, generator=gen), torch.randint(0, 3, (8,), generator=gen))
    torch.manual_seed(seed)
    model = MLP(6, 5, 1, 3)
    simulated = simulate_data_parallel(copy.deepcopy(model), data, processes=world,
                                       per_process=n, sync=sync, seed=seed, steps=steps)
    net = DistributedDataParallel(convert_sync_batchnorm(model) if sync else model)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    order = torch.Generator().manual_seed(seed)
    stream = (i for _ in range(steps) for i in batches(40, world * n, order))
    for _ in range(steps):
        idx = next(stream)[rank * n:(rank + 1) * n]
        opt.zero_grad()
        nn.functional.cross_entropy(net(data.x_train[idx]), data.y_train[idx]).backward()
        opt.step()
    # parameters agree on every rank; the running estimates are rank 0's (DDP broadcasts them
    # before each forward, so another rank's hold its own last batch on top)
    ref = simulated.state_dict()
    names = {k for k, _ in model.named_parameters()} if rank else set(ref)
    return max(_error(v.float(), ref[k].float()) for k, v in model.state_dict().items()
               if k in names)


def check_all(rank: int, world: int, seed: int) -> dict[str, Any]:
    """Every case of :data:`CASES` and the DDP convnet, in one job of ``world`` ≥ 4 ranks."""
    sizes = sorted({len(split) for split, _ in CASES})
    groups = {k: dist.new_group(list(range(k))) for k in sizes}  # every rank makes every group
    out: dict[str, Any] = {}
    for i, (split, feature_shape) in enumerate(CASES):
        if rank < len(split):
            out[f"{split} {feature_shape}"] = _one_case(rank, split, feature_shape,
                                                        groups[len(split)], seed + i)
    if rank < 2:
        out["ddp (3, 5)"] = _ddp_case(rank, (3, 5), groups[2], seed)
    for sync in (False, True):
        out[f"simulation sync={sync}"] = _simulation_case(rank, world, sync, seed)
    out["layer_job"] = layer_job(rank, world, LAYER_JOB_SPLIT, seed, 4, 100, 1)
    dist.barrier()
    return out


def fail_on_rank_one(rank: int, world: int) -> None:
    """Rank 1 raises while rank 0 waits in a collective: the job must fail, not hang."""
    if rank == 1:
        raise ValueError("rank 1 fails on purpose")
    dist.all_reduce(torch.zeros(1))


def sleep_forever(rank: int, world: int) -> None:
    """Never returns: the job must time out and its processes be killed."""
    time.sleep(3600)


def cuda_case(rank: int, world: int, seed: int) -> dict[str, float]:
    """The (3, 5) case on GPUs: NCCL with one GPU a rank, or gloo with CUDA tensors on one GPU."""
    del world
    device = f"cuda:{rank % torch.cuda.device_count()}"
    return _one_case(rank, (3, 5), (3, 2, 2), dist.group.WORLD, seed, device)
