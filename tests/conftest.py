"""Session settings and hooks for the test suite (shared drivers live in ``bn_testing``)."""

from __future__ import annotations

import os

import torch
from hypothesis import settings

# Property tests: deterministic and without an example database by default (CI runs them);
# HYPOTHESIS_PROFILE=explore searches fresh random examples, more of them.
settings.register_profile("ci", max_examples=40, deadline=None, derandomize=True, database=None)
settings.register_profile("explore", max_examples=500, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# The tensors here are tiny: intra-op threads only add start-up and contention (a 5× slow-down
# on a loaded 2-core machine), so the suite runs torch single-threaded.
torch.set_num_threads(1)
