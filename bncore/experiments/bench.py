r"""The batch-norm benchmark: every implementation against ``torch.nn.functional.batch_norm``.

Variants: ``native`` (torch's kernel, with autograd), ``torch_bn`` (:mod:`bncore.norm.torch_bn`),
``numpy_bn`` (:mod:`bncore.norm.numpy_bn`, float32 only, CPU only) and ``fast``
(:mod:`bncore.norm.fast`, compiled). Passes: ``forward`` (training, graph recorded), ``backward``
(alone, after an untimed forward), ``train`` (forward + backward) and ``eval`` (no grad).

Timing is for a shared machine: after ``warmup`` calls, ``reps`` rounds each time every variant
once, interleaved, so a burst of load hits all of them alike; a variant's figure is the median of
its times and its ratio to native the median of the per-round ratios.

Bytes: the least traffic of a pass is what must be read and written once,

.. math::

    B_\text{forward} = 2\,n\,b,\quad B_\text{backward} = 3\,n\,b,\quad
    B_\text{train} = 5\,n\,b,\quad B_\text{eval} = 2\,n\,b

for n values of b bytes (forward: read x, write y; backward: read x and δ, write dx). The
effective bandwidth B/t is set against the copy bandwidth 2nb/t of ``clone`` on the same machine
and tensor size (the roofline of a memory-bound kernel). ``python -m bncore.experiments.bench``
runs it (``--quick`` for a small configuration) and writes ``bench.json`` and ``bench.png``
under ``_build/bench/``; it uses the GPU when one is present.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.ticker import ScalarFormatter
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from bncore.norm import fast, numpy_bn, torch_bn

__all__ = [
    "ACCESSES",
    "TRAFFIC",
    "Case",
    "Result",
    "bn_share",
    "copy_bandwidth",
    "full_size_tensors",
    "main",
    "min_bytes",
    "run",
    "small_cnn",
    "time_interleaved",
    "write_costs",
]

VARIANTS = ("native", "torch_bn", "numpy_bn", "fast")
PASSES = ("forward", "backward", "train", "eval")
#: Overhead-bound to memory-bound; (1024, 512) and (8192, 1024) are fully connected layers'
#: activations, the second larger than a CPU's last-level cache.
SHAPES = ((32, 16, 8, 8), (64, 64, 16, 16), (1024, 512), (256, 64, 32, 32), (8192, 1024))
QUICK_SHAPES = ((32, 16, 8, 8), (64, 64, 16, 16))
#: Tensor-sized reads and writes of each pass at the minimum (each value moved once).
ACCESSES = {"forward": 2, "backward": 3, "train": 5, "eval": 2}
#: Tensor-sized reads + writes per pass by algorithm (Source: ATen's CPU kernels; Welford's one
#: pass reads x once for both statistics). A separate ReLU reads and writes once more forward and
#: reads y, δ and writes its gradient backward.
TRAFFIC = {
    "minimum": {"forward": 2, "backward": 3},
    "two-pass (native CPU)": {"forward": 4, "backward": 5},
    "one-pass Welford": {"forward": 3, "backward": 5},
    "separate ReLU": {"forward": 2, "backward": 3},
}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class Case:
    """One input: shape ``(N, C, *spatial)``, dtype name and layout (``nchw``/``channels_last``)."""

    shape: tuple[int, ...]
    dtype: str = "float32"
    layout: str = "nchw"

    @property
    def numel(self) -> int:
        """n, the number of values."""
        return int(np.prod(self.shape))

    @property
    def itemsize(self) -> int:
        """b, bytes per value."""
        return torch.tensor([], dtype=DTYPES[self.dtype]).element_size()


@dataclass
class Result:
    """One (case, pass, variant): median seconds, ratio to native, effective bandwidth."""

    case: Case
    pass_: str
    variant: str
    median_s: float
    ratio: float
    gbytes_per_s: float
    copy_fraction: float
    times_s: list[float] = field(default_factory=list)


def min_bytes(pass_: str, numel: int, itemsize: int) -> int:
    """The least traffic of a pass in bytes: ``ACCESSES[pass_]`` tensors of n·b bytes."""
    return ACCESSES[pass_] * numel * itemsize


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def copy_bandwidth(numel: int, dtype: torch.dtype, device: torch.device, reps: int = 5) -> float:
    """Bytes per second of ``clone`` (read n values, write n) for a tensor of ``numel`` values."""
    x = torch.empty(numel, dtype=dtype, device=device).uniform_()
    times = []
    for _ in range(reps + 1):
        _sync(device)
        start = time.perf_counter()
        x.clone()
        _sync(device)
        times.append(time.perf_counter() - start)
    return 2 * x.numel() * x.element_size() / statistics.median(times[1:])


def _torch_step(fn: Callable, case: Case, pass_: str, device: torch.device) -> Callable:
    """A closure running one ``pass_`` of the functional batch norm ``fn`` on a fixed input.

    A closure that returns another closure is a timed step with untimed set-up (the backward).
    """
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(case.shape, generator=gen).to(device, DTYPES[case.dtype])
    if case.layout == "channels_last" and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    dy = torch.randn(case.shape, generator=gen).to(device, x.dtype).contiguous(
        memory_format=torch.channels_last if case.layout == "channels_last" and x.dim() == 4
        else torch.contiguous_format)
    c = case.shape[1]
    weight = torch.ones(c, device=device, requires_grad=True)
    bias = torch.zeros(c, device=device, requires_grad=True)
    running = torch.zeros(c, device=device), torch.ones(c, device=device)
    x.requires_grad_(pass_ != "eval")

    def forward() -> torch.Tensor:
        return fn(x, *running, weight, bias, pass_ != "eval", 0.1, 1e-5)

    if pass_ == "eval":
        def step() -> object:
            with torch.no_grad():
                return forward()
        return step
    if pass_ == "forward":
        return forward
    if pass_ == "train":
        return lambda: forward().backward(dy)

    def prepared_backward() -> Callable:  # untimed forward, then the timed backward
        y = forward()
        return lambda: y.backward(dy)

    return prepared_backward


def _numpy_step(case: Case, pass_: str) -> Callable:
    """The same for :class:`bncore.norm.numpy_bn.BatchNorm` (float32 arrays, CPU)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(case.shape, dtype=np.float32)
    if case.layout == "channels_last" and x.ndim == 4:  # NHWC memory, NCHW indexing
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    dy = rng.standard_normal(case.shape, dtype=np.float32)
    layer = numpy_bn.BatchNorm(case.shape[1])
    layer.weight, layer.bias = (np.ones(case.shape[1], np.float32),
                                np.zeros(case.shape[1], np.float32))
    layer.running_mean, layer.running_var = (np.zeros(case.shape[1], np.float32),
                                             np.ones(case.shape[1], np.float32))
    layer.train(pass_ != "eval")
    if pass_ in ("forward", "eval"):
        return lambda: layer.forward(x)

    def train() -> None:
        layer.forward(x)
        layer.backward(dy)

    def prepared_backward() -> Callable:
        layer.forward(x)
        return lambda: layer.backward(dy)

    return train if pass_ == "train" else prepared_backward


def _steps(case: Case, pass_: str, variants: tuple[str, ...], device: torch.device
           ) -> dict[str, Callable]:
    """The timed step of each variant that applies (numpy: float32 on the CPU only)."""
    fns = {"native": torch.nn.functional.batch_norm, "torch_bn": torch_bn.batch_norm,
           "fast": fast.batch_norm}
    steps = {}
    for v in variants:
        if v == "numpy_bn":
            if case.dtype == "float32" and device.type == "cpu":
                steps[v] = _numpy_step(case, pass_)
        else:
            steps[v] = _torch_step(fns[v], case, pass_, device)
    return steps


def _time_once(step: Callable, backward: bool, device: torch.device) -> float:
    """Seconds of one call; for the backward pass, of the closure that the call returns."""
    if backward:
        step = step()
    _sync(device)
    start = time.perf_counter()
    step()
    _sync(device)
    return time.perf_counter() - start


def time_interleaved(
    steps: dict[str, Callable], reps: int, warmup: int, device: torch.device,
    backward: bool = False,
) -> dict[str, list[float]]:
    """Per variant, ``reps`` times, each round timing every variant once in turn."""
    for _ in range(warmup):
        for step in steps.values():
            _time_once(step, backward, device)
    times: dict[str, list[float]] = {v: [] for v in steps}
    for _ in range(reps):
        for v, step in steps.items():
            times[v].append(_time_once(step, backward, device))
    return times


def write_costs(numel: int, reps: int = 7, device: torch.device | None = None
                ) -> tuple[float, float]:
    """Median seconds to write n values ``x − 1`` into a new tensor and into one already in use
    (``out=``), interleaved: the same pass, with and without a fresh tensor.

    The difference is what a new tensor costs beyond its pass: the allocation and, on a CPU, the
    operating system's first touch of every fresh page (large tensors are mapped anew on each
    allocation and returned on each free).
    """
    device = device or torch.device("cpu")
    x = torch.empty(numel, device=device).uniform_()
    steps: dict[str, Callable] = {"fresh": partial(torch.sub, x, 1.0),
                                  "reused": partial(torch.sub, x, 1.0, out=torch.zeros_like(x))}
    times = time_interleaved(steps, reps, 1, device)
    return statistics.median(times["fresh"]), statistics.median(times["reused"])


def run(
    cases: list[Case], passes: tuple[str, ...] = PASSES, variants: tuple[str, ...] = VARIANTS,
    reps: int = 7, warmup: int = 2, device: torch.device | None = None,
) -> list[Result]:
    """Time every variant on every case and pass; ratios to ``native`` of the same rounds."""
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    results = []
    for case in cases:
        copy = copy_bandwidth(case.numel, DTYPES[case.dtype], device)
        for pass_ in passes:
            steps = _steps(case, pass_, variants, device)
            times = time_interleaved(steps, reps, warmup, device, backward=pass_ == "backward")
            for v, ts in times.items():
                ratios = [t / n for t, n in zip(ts, times["native"], strict=True)] \
                    if "native" in times else [float("nan")]
                bw = min_bytes(pass_, case.numel, case.itemsize) / statistics.median(ts)
                results.append(Result(case, pass_, v, statistics.median(ts),
                                      statistics.median(ratios), bw / 1e9, bw / copy, ts))
    return results


class _FullSizeCounter(TorchDispatchMode):
    """Counts the new tensors of at least ``numel`` values that aten operations create."""

    def __init__(self, numel: int) -> None:
        super().__init__()
        self.numel, self.count = numel, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        fresh = not func._schema.is_mutable and not func.is_view
        outs = out if isinstance(out, (tuple, list)) else (out,)
        self.count += sum(fresh and isinstance(t, torch.Tensor) and t.numel() >= self.numel
                          for t in outs)
        return out


def full_size_tensors(step: Callable[[], object], numel: int) -> int:
    """How many input-sized tensors one call of ``step`` creates (in-place work and views are
    free): a structural count of the passes that write memory, the same on every machine.
    """
    counter = _FullSizeCounter(numel)
    with counter:
        step()
    return counter.count


def small_cnn(bn: type[nn.Module] = nn.BatchNorm2d, channels: int = 32) -> nn.Sequential:
    """Two ``Conv2d(3×3) → BN → ReLU`` blocks, pooling and a linear head, for 3-channel images."""
    return nn.Sequential(
        nn.Conv2d(3, channels, 3, padding=1), bn(channels), nn.ReLU(),
        nn.Conv2d(channels, channels, 3, padding=1), bn(channels), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, 10),
    )


#: Profiler events of one batch norm, forward and backward (native and bncore's).
BN_EVENTS = ("aten::batch_norm", "NativeBatchNormBackward0", "BatchNormFunction",
             "BatchNormFunctionBackward")


def bn_share(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> float:
    """Share of a training step's operator CPU time spent in batch norm (forward and backward).

    One step (forward, cross-entropy, backward) under ``torch.profiler``: the inclusive time of
    the BN events over the sum of every operator's own time.
    """
    model.train()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        nn.functional.cross_entropy(model(x), target).backward()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    return sum(e.cpu_time_total for e in events if e.key in BN_EVENTS) / total


def _plot(results: list[Result], path: Path) -> None:
    """Two panels: train-pass ratio to native per shape, and effective/copy bandwidth."""
    train = sorted((r for r in results if r.pass_ == "train" and r.case.dtype == "float32"
                    and r.case.layout == "nchw"), key=lambda r: r.case.numel)
    labels = list(dict.fromkeys(str(r.case.shape) for r in train))  # by size, small first
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6), layout="constrained")
    for i, v in enumerate(dict.fromkeys(r.variant for r in train)):
        rows = {str(r.case.shape): r for r in train if r.variant == v}
        xs = [j + 0.2 * i for j, s in enumerate(labels) if s in rows]
        left.bar(xs, [rows[s].ratio for s in labels if s in rows], width=0.2, label=v)
        right.plot([rows[s].case.numel for s in labels if s in rows],
                   [rows[s].copy_fraction for s in labels if s in rows], "o-", label=v)
    left.axhline(1.0, color="k", lw=0.8)
    left.set(xticks=range(len(labels)), ylabel="time / native (train)", yscale="log")
    left.yaxis.set_major_formatter(ScalarFormatter())
    left.yaxis.set_minor_formatter(ScalarFormatter())
    left.set_xticklabels(labels, rotation=20, fontsize=8)
    right.set(xscale="log", xlabel="values n", ylabel="effective / copy bandwidth")
    right.legend(fontsize=9)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> list[Result]:
    """The command line: ``python -m bncore.experiments.bench [--quick] [--out DIR] ...``."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="two small shapes, float32, NCHW")
    p.add_argument("--shapes", default=None, help="e.g. 32x16x8x8,1024x512 (default: SHAPES)")
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--passes", default=",".join(PASSES))
    p.add_argument("--dtypes", default="float32,bfloat16")
    p.add_argument("--layouts", default="nchw,channels_last")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads (1: as NumPy, and steady on a shared machine)")
    p.add_argument("--out", default="_build/bench")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    shapes: tuple[tuple[int, ...], ...] = QUICK_SHAPES if args.quick else SHAPES
    if args.shapes:
        shapes = tuple(tuple(int(d) for d in s.split("x")) for s in args.shapes.split(","))
    dtypes = ["float32"] if args.quick else args.dtypes.split(",")
    layouts = ["nchw"] if args.quick else args.layouts.split(",")
    cases = [Case(s, d, lay) for s in shapes for d in dtypes for lay in layouts
             if lay == "nchw" or len(s) == 4]
    results = run(cases, tuple(args.passes.split(",")), tuple(args.variants.split(",")),
                  args.reps, args.warmup)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"threads": torch.get_num_threads(), "device": str(
        torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu")}
    rows = [{**asdict(r), "case": asdict(r.case)} for r in results]
    (out / "bench.json").write_text(json.dumps({"meta": meta, "results": rows}, indent=1))
    _plot(results, out / "bench.png")
    for r in results:
        print(f"{r.case.shape!s:18} {r.case.dtype:8} {r.case.layout:13} {r.pass_:8} "
              f"{r.variant:8} {r.median_s * 1e3:9.3f} ms  ×{r.ratio:5.2f}  "
              f"{r.copy_fraction:5.2f} of copy")
    return results


if __name__ == "__main__":
    main()
