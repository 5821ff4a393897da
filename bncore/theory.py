"""Closed-form predictions of batch-norm theory, each with its paper and equation.

Theory lives here, apart from the simulations that test it (``explosion``, ``signal_prop``,
``gdnp``, ``landscape``), so that a chapter can draw one against the other.
"""

from __future__ import annotations

# --- Santurkar et al. 2018: gradient and Hessian bounds through BN (Thm 4.1, 4.2) ---

# --- Yang et al. 2019: gradient explosion at initialization ---

# --- De & Smith 2020; Brock et al. 2021: residual-stream variance ---

# --- Kohler et al. 2019: length-direction decoupling (GDNP) ---
