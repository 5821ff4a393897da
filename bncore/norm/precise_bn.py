r"""PreciseBN: population statistics recomputed with the weights frozen (Wu & Johnson 2021, §3).

During training a BN layer's running estimates are an exponential moving average (EMA) of batch
statistics taken under *past* weights; after a phase of fast change (a high learning rate) they
describe a network that no longer exists. PreciseBN fixes the weights, runs the network in
training mode over many batches, and aggregates the batches' statistics into the population
statistics of the features the final network computes:

.. math::

    n = \sum_b n_b,\qquad \mu = \frac1n\sum_b n_b\,\mu_b,\qquad
    \sigma^2 = \frac1n\Big(\sum_b n_b\,\sigma_b^2 + \sum_b n_b\,(\mu_b-\mu)^2\Big),

with ``n_b`` the values per channel of batch ``b`` and σ_b² its *biased* variance: the mean and
variance of all the values seen, weighted by count, so that a short last batch counts for what it
holds. Averaging the Bessel-corrected batch variances n_b/(n_b − 1)·σ_b² (what a cumulative
``running_var`` holds, and Ioffe & Szegedy's Alg. 2) estimates σ² only when every batch is a
random sample of the population: it drops the spread of the batch means Σn_b(μ_b − μ)², large
when batches are grouped (by class, by domain) and noisy when they are small. Following
Wu & Johnson, the per-batch correction is undone (σ_b² biased) and the spread added back, which
makes the result the variance of all the values whatever the grouping. It is the biased variance
of all n values (n is large, n/(n − 1) ≈ 1), as in fvcore's ``update_bn_stats``.

The merge is Chan's (:mod:`.merge`), one batch at a time, in the statistics' dtype.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from bncore.norm import stats
from bncore.norm.fold import is_bn
from bncore.norm.merge import chan_merge
from bncore.norm.torch_phases import mean_var

__all__ = ["precise_bn"]


class _Accumulator:
    """Running (n, μ, M₂) of one BN layer's inputs, merged batch by batch."""

    def __init__(self) -> None:
        self.part: tuple[Tensor, Tensor, Tensor] | None = None

    def __call__(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        x = args[0].detach()
        count = stats.count_per_channel(x.shape)
        if count == 0:
            return
        acc = x.to(torch.promote_types(x.dtype, torch.float32))
        mean, var = mean_var(acc)
        part = (acc.new_tensor(float(count)), mean, var * count)
        self.part = part if self.part is None else chan_merge(*self.part, *part)


@torch.no_grad()
def precise_bn(model: nn.Module, batches: Iterable[Tensor]) -> int:
    """Set every BN layer's running estimates to the population statistics over ``batches``.

    Parameters
    ----------
    model
        A network with batch-norm layers (bncore's, ``torch.nn``'s or :class:`SyncBatchNorm`)
        that track running statistics. Its weights are not changed.
    batches
        Inputs to the model, e.g. the training set in batches of the training size (the
        features of a later layer depend on the batch through the earlier BN layers, as in
        training). Any sizes the model accepts in training (≥ 2 values per channel).

    Returns
    -------
    The number of batches seen. Each BN layer gets running_mean = μ and running_var = σ² of all
    the values it saw (count-weighted, biased, see the module docstring); ``num_batches_tracked``
    and the model's mode are left as they were.
    """
    bns = [m for m in model.modules() if is_bn(m) and m.running_mean is not None]
    if not bns:
        raise ValueError("precise_bn: the model has no BN layer with running statistics; "
                         "build it with track_running_stats=True")
    accumulators = [_Accumulator() for _ in bns]
    handles = [bn.register_forward_pre_hook(a) for bn, a in zip(bns, accumulators, strict=True)]
    counters = [None if bn.num_batches_tracked is None else bn.num_batches_tracked.clone()
                for bn in bns]
    was_training = model.training
    seen = 0
    try:
        model.train()
        for x in batches:
            model(x)
            seen += 1
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    for bn, acc, counter in zip(bns, accumulators, counters, strict=True):
        if counter is not None and bn.num_batches_tracked is not None:
            bn.num_batches_tracked.copy_(counter)
        if acc.part is None:
            raise ValueError("precise_bn: no values reached a BN layer; pass non-empty batches")
        n, mean, m2 = acc.part
        running_mean, running_var = bn.running_mean, bn.running_var
        assert running_mean is not None and running_var is not None  # chosen so above
        running_mean.copy_(mean)
        running_var.copy_(m2 / n)
    return seen
