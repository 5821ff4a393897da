"""Where computations run and how they are seeded: the one place the device is chosen.

Chapters call :func:`default_device` (CUDA when a GPU is present, else the CPU) and
:func:`seed_everything` before any random draw, so every number the book prints is reproducible.
"""

from __future__ import annotations

import os
import platform
import random
from collections.abc import Iterable
from importlib.metadata import PackageNotFoundError, version
from typing import TypeVar

import numpy as np
import torch
from tqdm.auto import tqdm

__all__ = [
    "default_device",
    "environment_report",
    "progress",
    "progress_enabled",
    "seed_everything",
    "widgets_enabled",
]


def default_device() -> torch.device:
    """``cuda`` if a GPU is available, else ``cpu``."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def seed_everything(seed: int) -> np.random.Generator:
    """Seed Python's, NumPy's and torch's global generators; return a fresh NumPy ``Generator``."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002  (libraries that draw from the global state)
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def widgets_enabled() -> bool:
    """Whether to show live ipywidgets panels.

    True in a Jupyter session. The book build and the test suite set ``BNCORE_WIDGETS=0`` so
    that the rendered pages carry static figures instead of widget state (which would need
    scripts from the network).
    """
    return os.environ.get("BNCORE_WIDGETS", "1") != "0"


def progress_enabled() -> bool:
    """Whether loops show tqdm progress bars (off when ``TQDM_DISABLE`` is set)."""
    return os.environ.get("TQDM_DISABLE", "") in ("", "0")


def progress(iterable: Iterable[T], desc: str | None = None, enabled: bool = True, **kw) -> tqdm:
    """A ``tqdm.auto`` progress bar over ``iterable``, off when ``TQDM_DISABLE`` is set.

    tqdm's notebook bar does not read ``TQDM_DISABLE`` itself; the book build sets it so that
    no widget (whose scripts would come from the network) ends up in the rendered pages.
    """
    return tqdm(iterable, desc=desc, disable=not (enabled and progress_enabled()), **kw)


T = TypeVar("T")

KEY_PACKAGES = (
    "bncore", "torch", "numpy", "scikit-learn", "matplotlib", "jupyter-book", "myst-nb", "sphinx",
)


def environment_report() -> dict[str, str]:
    """Python and key package versions, and the device the chapters run on (GPU or CPU)."""
    report = {"python": platform.python_version()}
    for name in KEY_PACKAGES:
        try:
            report[name] = version(name)
        except PackageNotFoundError:
            report[name] = "not installed"
    device = default_device()
    report["device"] = (
        f"GPU: {torch.cuda.get_device_name(device)}" if device.type == "cuda" else "CPU (no GPU)"
    )
    report["torch threads"] = str(torch.get_num_threads())
    return report
