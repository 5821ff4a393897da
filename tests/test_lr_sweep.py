"""Learning-rate sweeps over seeds (bncore.experiments.lr_sweep) and the paired log-ratio
interval (bncore.experiments.log_ratio).
"""

from __future__ import annotations

import numpy as np
import pytest

from bncore.experiments.data import gaussian_mixture
from bncore.experiments.log_ratio import log_ratio_interval
from bncore.experiments.lr_sweep import lr_sweep
from bncore.experiments.nets import MLP


def test_lr_sweep_and_log_ratio_interval() -> None:
    data = gaussian_mixture(128, 64, 8, 3, seed=0, separation=4.0)
    sw = lr_sweep(lambda: MLP(8, 16, 2, 3, norm="none"), data, [0.05, 1e4], [0, 1], steps=20)
    assert sw.acc.shape == sw.diverged.shape == (2, 2)
    assert sw.diverged[:, 1].all() and (sw.acc[:, 1] == 0).all()
    assert sw.largest_stable_lr() == 0.05
    np.testing.assert_array_equal(sw.largest_stable_lr(per_seed=True), [0.05, 0.05])
    # hand computation: ratios 2, 8 → log-mean log 4; sd(log r) = log(4)/√2; t(0.975, 1) = 12.706
    k, lo, hi = log_ratio_interval([2.0, 8.0], [1.0, 1.0])
    assert k == pytest.approx(4.0)
    half = 12.706205 * (np.log(4.0) / np.sqrt(2)) / np.sqrt(2)
    assert lo == pytest.approx(4.0 * np.exp(-half), rel=1e-5)
    assert hi == pytest.approx(4.0 * np.exp(half), rel=1e-5)
    with pytest.raises(ValueError, match="positive"):
        log_ratio_interval([1.0, -1.0], [1.0, 1.0])
