r"""Data-parallel batch norm: the live job of the chapter, the bytes it moves, and its accuracy.

With the batch split over k processes, process i holding n_i examples, a BN layer can take its
statistics over the k·n examples of all processes (:class:`~bncore.norm.sync_bn.SyncBatchNorm`)
or over its own n_i (plain BN under ``DistributedDataParallel``): *ghost* batch norm with ghost
batches of the per-process size, :func:`ghost_batch_norm`.

- :func:`layer_job` runs in every rank of a :func:`~bncore.experiments.distributed.launch` job:
  one training step of SyncBN and of unsynchronized BN on the rank's slice of a batch, and the
  wall time of the collectives; :func:`one_process_step` is the same step on the whole batch.
- :func:`sync_bytes` counts the numbers each collective moves per BN layer and step: the
  forward gathers (2C + 1)·k, the backward all-reduces 2C, against the P of DDP's gradient.
- :func:`simulate_data_parallel` trains on k processes × n examples, synchronized or not,
  in one process (unsynchronized = each process's slice through the network on its own; DDP
  broadcasts rank 0's buffers, so the running estimates are rank 0's); the tests check it
  against real DDP processes. :func:`train_data_parallel` returns the test accuracy.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from bncore.experiments.data import Dataset, batches
from bncore.experiments.nets import MLP
from bncore.experiments.train import evaluate, loss_fn
from bncore.norm.fold import is_bn
from bncore.norm.sync_bn import SyncBatchNorm
from bncore.norm.torch_bn import BatchNorm1d

__all__ = [
    "LayerBatch",
    "ghost_batch_norm",
    "layer_batch",
    "layer_job",
    "one_process_step",
    "simulate_data_parallel",
    "sync_bytes",
    "train_data_parallel",
]


@dataclass
class LayerBatch:
    """A float64 batch for one BN layer: ``x`` ``(m, C)``, output gradient ``dy``, γ, β."""

    x: Tensor
    dy: Tensor
    weight: Tensor
    bias: Tensor


def layer_batch(m: int, channels: int, seed: int) -> LayerBatch:
    """A batch of m examples of C channels with per-channel means in ±3 and scales in [0.5, 2]."""
    gen = torch.Generator().manual_seed(seed)
    shift = 3 * (2 * torch.rand(channels, generator=gen, dtype=torch.float64) - 1)
    scale = 0.5 + 1.5 * torch.rand(channels, generator=gen, dtype=torch.float64)
    x = torch.randn(m, channels, generator=gen, dtype=torch.float64) * scale + shift
    return LayerBatch(x, torch.randn(m, channels, generator=gen, dtype=torch.float64),
                      1 + 0.3 * torch.randn(channels, generator=gen, dtype=torch.float64),
                      torch.randn(channels, generator=gen, dtype=torch.float64))


def _step(layer: BatchNorm1d | SyncBatchNorm, batch: LayerBatch, part: slice,
          ) -> dict[str, np.ndarray]:
    """One training step of ``layer`` on ``batch.x[part]``: y, dx, (dγ, dβ), running stats."""
    weight, bias = layer.weight, layer.bias
    mean, var = layer.running_mean, layer.running_var
    assert weight is not None and bias is not None and mean is not None and var is not None
    with torch.no_grad():
        weight.copy_(batch.weight)
        bias.copy_(batch.bias)
    x = batch.x[part].clone().requires_grad_(True)
    y = layer(x)
    (y * batch.dy[part]).sum().backward()
    assert x.grad is not None and weight.grad is not None and bias.grad is not None
    return {"y": y.detach().numpy(), "dx": x.grad.numpy(),
            "dgamma_dbeta": torch.cat([weight.grad, bias.grad]).numpy(),
            "running": torch.cat([mean, var]).numpy()}


def one_process_step(batch: LayerBatch) -> dict[str, np.ndarray]:
    """The step of :func:`layer_job` in one process on the whole batch (bncore's BN)."""
    layer = BatchNorm1d(batch.x.shape[1], dtype=torch.float64)
    return _step(layer, batch, slice(None))


def ghost_batch_norm(x: Tensor, split: Sequence[int], eps: float = 1e-5) -> Tensor:
    """x̂ of k unsynchronized processes, in one process: each chunk of ``split`` normalized by its
    own mean and biased variance (ghost batch norm with the chunks as ghost batches).
    """
    chunks = [c for c in x.split(list(split)) if c.shape[0] > 0]
    return torch.cat([(c - c.mean(0)) / torch.sqrt(c.var(0, unbiased=False) + eps)
                      for c in chunks])


def _time(op: Any, repeats: int) -> float:
    """Median wall time of ``op()`` over ``repeats`` calls, each after a barrier."""
    times = []
    for _ in range(repeats):
        dist.barrier()
        start = time.perf_counter()
        op()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def layer_job(rank: int, world: int, split: Sequence[int], seed: int, channels: int,
              params: int, repeats: int) -> dict[str, Any]:
    """One rank's part of the chapter's live job (run it with ``launch(layer_job, k, ...)``).

    Returns the rank's slice of the SyncBN step (``"sync"``, :func:`_step`'s dict), the output of
    an unsynchronized bncore ``BatchNorm1d`` on the slice (``"local_y"``), and the median wall
    times (s) of the forward's all-gather of 2C + 1 numbers, the backward's all-reduce of 2C and
    DDP's all-reduce of ``params`` numbers (``"seconds"``).
    """
    batch = layer_batch(sum(split), channels, seed)
    lo = sum(split[:rank])
    part = slice(lo, lo + split[rank])
    out: dict[str, Any] = {"sync": _step(SyncBatchNorm(channels, dtype=torch.float64), batch,
                                         part)}
    local = BatchNorm1d(channels, dtype=torch.float64)
    out["local_y"] = local(batch.x[part]).detach().numpy() if split[rank] > 1 else None
    stats = torch.zeros(2 * channels + 1, dtype=torch.float64)
    gathered = [torch.empty_like(stats) for _ in range(world)]
    sums = torch.zeros(2 * channels, dtype=torch.float64)
    grads = torch.zeros(params, dtype=torch.float32)
    out["seconds"] = {
        "forward all-gather": _time(lambda: dist.all_gather(gathered, stats), repeats),
        "backward all-reduce": _time(lambda: dist.all_reduce(sums), repeats),
        "DDP gradient all-reduce": _time(lambda: dist.all_reduce(grads), repeats),
    }
    return out


def sync_bytes(channels: Sequence[int], world: int, params: int,
               bytes_per_number: int = 4) -> dict[str, int]:
    """Bytes each process receives per step: SyncBN's two collectives against DDP's gradient.

    Per BN layer of C channels the forward all-gathers (2C + 1) numbers from each of the k
    processes, (2C + 1)·k, and the backward all-reduces 2C; DDP all-reduces the P gradients.
    (An all-reduce by ring moves about 2·(k − 1)/k times its size per process; the counts here
    are the collectives' sizes, the same for both.)
    """
    forward = sum((2 * c + 1) * world for c in channels) * bytes_per_number
    backward = sum(2 * c for c in channels) * bytes_per_number
    return {"forward": forward, "backward": backward, "ddp": params * bytes_per_number}


@contextmanager
def _frozen_buffers(model: nn.Module) -> Iterator[None]:
    """Restore every BN buffer on exit: the steps inside leave the running estimates alone."""
    saved = [(b, b.clone()) for m in model.modules() if is_bn(m) for b in m.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for b, v in saved:
                b.copy_(v)


def _index_stream(n: int, batch_size: int, gen: torch.Generator) -> Iterator[Tensor]:
    """Shuffled index batches, epoch after epoch, without end."""
    while True:
        yield from batches(n, batch_size, gen)


def simulate_data_parallel(model: nn.Module, data: Dataset, *, processes: int,
                           per_process: int, sync: bool, seed: int, steps: int,
                           lr: float = 0.1) -> nn.Module:
    """Train ``model`` in place as k = ``processes`` DDP processes of n examples would; return it.

    Each step takes k·n shuffled training examples (``seed`` fixes the order), process i the
    i-th n of them. ``sync=True``: BN statistics over all k·n (SyncBN, which equals one process
    on the k·n batch). ``sync=False``: each process's n examples through the network on their
    own (DDP without SyncBN); the loss is the mean over processes of their mean losses (DDP's
    average of gradients), and the running estimates are those of process 0, which DDP
    broadcasts from rank 0 before every forward. SGD with momentum 0.9.
    """
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    gen = torch.Generator().manual_seed(seed)
    stream = _index_stream(data.n_train, processes * per_process, gen)
    model.train()
    for _ in range(steps):
        idx = next(stream)
        xb, yb = data.x_train[idx], data.y_train[idx]
        opt.zero_grad()
        if sync:
            loss = loss_fn(model(xb), yb)
        else:
            losses = [loss_fn(model(xb[:per_process]), yb[:per_process])]
            with _frozen_buffers(model):
                losses += [loss_fn(model(x), y) for x, y in
                           zip(xb[per_process:].split(per_process),
                               yb[per_process:].split(per_process), strict=True)]
            loss = torch.stack(losses).mean()
        loss.backward()
        opt.step()
    return model


def train_data_parallel(data: Dataset, *, processes: int, per_process: int, sync: bool,
                        seed: int, steps: int = 300, lr: float = 0.1, width: int = 64,
                        ) -> float:
    """Test accuracy of an MLP (one hidden BN layer of ``width``) trained by
    :func:`simulate_data_parallel`; the initialization uses the global RNG (seed it first).
    """
    model = MLP(data.in_dim, width, 1, data.num_classes)
    simulate_data_parallel(model, data, processes=processes, per_process=per_process,
                           sync=sync, seed=seed, steps=steps, lr=lr)
    return evaluate(model, data.x_test, data.y_test)[1]
