"""Run a function in k local processes joined by ``torch.distributed``, and collect the results.

:func:`launch` spawns ``world_size`` processes (``torch.multiprocessing``'s spawn context), joins
them into one process group through a :class:`torch.distributed.FileStore` in a temporary
directory (nothing listens on the network), calls ``fn(rank, world_size, *args)`` in each and
returns the ranks' return values in rank order. gloo runs on CPU tensors, so a laptop can run a
real multi-process job; on a machine with GPUs, ``backend="nccl"`` gives each rank the GPU
``rank % device_count`` (:func:`rank_device`).

Every step has a timeout: the process group's collectives (``init_process_group(timeout=…)``),
the wait for results and the final join. A rank that raises makes :func:`launch` raise
``RuntimeError`` with that rank's traceback, and a job that outlives ``timeout`` raises
``TimeoutError``; either way every process still alive is killed, so a failing rank fails the
caller and never hangs it. ``fn`` must be importable (a module-level function of a package or a
test module) and should return plain Python or NumPy values.
"""

from __future__ import annotations

import os
import queue
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

__all__ = ["launch", "rank_device"]


def rank_device(backend: str, rank: int) -> torch.device:
    """The device a rank computes on: its GPU under NCCL, else the CPU."""
    if backend == "nccl":
        return torch.device("cuda", rank % torch.cuda.device_count())
    return torch.device("cpu")


def _worker(
    fn: Callable[..., Any], rank: int, world_size: int, args: Sequence[Any], backend: str,
    store_path: str, timeout: float, threads: int, results: Any,
) -> None:
    """One rank: join the group, run ``fn``, report ``(rank, ok, value or traceback)``."""
    try:
        torch.set_num_threads(threads)
        if backend == "nccl":
            torch.cuda.set_device(rank_device(backend, rank))
        store = dist.FileStore(store_path, world_size)
        dist.init_process_group(backend, store=store, rank=rank, world_size=world_size,
                                timeout=timedelta(seconds=timeout))
        try:
            value = fn(rank, world_size, *args)
        finally:
            dist.destroy_process_group()
        results.put((rank, True, value))
    except BaseException:  # reported to the parent, which raises it
        results.put((rank, False, traceback.format_exc()))


def launch(
    fn: Callable[..., Any], world_size: int, args: Sequence[Any] = (), *, backend: str = "gloo",
    timeout: float = 60.0, threads: int = 1,
) -> list[Any]:
    """Run ``fn(rank, world_size, *args)`` in ``world_size`` processes; return the results.

    Parameters
    ----------
    fn
        A module-level function; it runs after ``init_process_group`` in every rank.
    world_size
        The number of processes k.
    args
        Extra arguments, the same for every rank (picklable).
    backend
        ``"gloo"`` (CPU tensors) or ``"nccl"`` (CUDA tensors, one GPU a rank).
    timeout
        Seconds for the whole job and for any one collective.
    threads
        torch's intra-op threads in each process (1: k processes share the cores).

    Returns
    -------
    The ranks' return values, in rank order.
    """
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    with tempfile.TemporaryDirectory() as tmp:
        store_path = os.path.join(tmp, "store")
        procs = [ctx.Process(target=_worker, daemon=True,
                             args=(fn, rank, world_size, tuple(args), backend, store_path,
                                   timeout, threads, results))
                 for rank in range(world_size)]
        for p in procs:
            p.start()
        try:
            values = _collect(procs, results, time.monotonic() + timeout)
        except BaseException:
            _stop(procs, grace=0.0)
            raise
        _stop(procs, grace=5.0)
        return values


def _stop(procs: list[Any], grace: float) -> None:
    """Join each process for up to ``grace`` seconds, then kill what is still alive."""
    end = time.monotonic() + grace
    for p in procs:
        p.join(timeout=max(end - time.monotonic(), 0.0))
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join(timeout=5.0)


def _collect(procs: list[Any], results: Any, deadline: float) -> list[Any]:
    """Wait for every rank's report; raise on the first failure, a silent death or the deadline."""
    values: dict[int, Any] = {}
    while len(values) < len(procs):
        left = deadline - time.monotonic()
        if left <= 0:
            missing = sorted(set(range(len(procs))) - set(values))
            raise TimeoutError(f"ranks {missing} did not finish in time; they were killed")
        try:
            rank, ok, value = results.get(timeout=min(left, 0.5))
        except queue.Empty:
            for rank, p in enumerate(procs):
                if rank not in values and p.exitcode not in (None, 0):
                    raise RuntimeError(f"rank {rank} died with exit code {p.exitcode}") from None
            continue
        if not ok:
            raise RuntimeError(_failures(results, {rank: value}))
        values[rank] = value
    return [values[r] for r in range(len(procs))]


def _failures(results: Any, failed: dict[int, str], grace: float = 1.0) -> str:
    """Every rank's traceback that arrives within ``grace`` seconds of the first failure.

    A rank that raises often makes its peers fail too (a peer's collective sees the connection
    reset), and the first report need not be the cause; the message shows all of them.
    """
    end = time.monotonic() + grace
    while time.monotonic() < end:
        try:
            rank, ok, value = results.get(timeout=max(end - time.monotonic(), 0.01))
        except queue.Empty:
            break
        if not ok:
            failed[rank] = value
    return "\n".join(f"rank {r} failed:\n{tb}" for r, tb in sorted(failed.items()))
