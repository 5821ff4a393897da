r"""One runner for every experiment of the form "each setting × each seed", and its statistics.

A chapter's measurement is a function ``fn(setting, seed) -> result``. :func:`run_grid` seeds
every run (:func:`~bncore.experiments.runtime.seed_everything`), shows one progress bar, and
returns a :class:`Grid` whose :meth:`Grid.values` is the ``(settings, seeds)`` array of a field
of the results and whose :meth:`Grid.mean_sem` gives the mean over seeds with its standard error

.. math:: \bar v = \frac1S \sum_s v_s, \qquad \mathrm{se} = \mathrm{sd}(v) / \sqrt S,

with the sample standard deviation (``ddof=1``); :func:`standard_error` is that formula for any
array of per-seed values. A setting that is a ``dict`` is passed as
keyword arguments, ``fn(**setting, seed=seed, **fixed)``; any other setting positionally,
``fn(setting, seed=seed, **fixed)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np

from bncore.experiments.runtime import progress, seed_everything

R = TypeVar("R")


@dataclass(frozen=True)
class Grid(Generic[R]):
    """Results of :func:`run_grid`: ``results[i][j]`` is setting ``settings[i]`` at ``seeds[j]``."""

    settings: tuple[Any, ...]
    seeds: tuple[int, ...]
    results: tuple[tuple[R, ...], ...]

    def values(self, field: str | None = None) -> np.ndarray:
        """The ``(len(settings), len(seeds), *shape)`` float array of ``field`` of every result.

        ``field`` names an attribute or a mapping key of the results, dotted for a nested one
        (``"test.gap"``); ``None`` takes the results themselves (for a ``fn`` that returns a
        number). A field that is an array of ``shape`` adds its axes after the seeds'.
        """
        return np.array(
            [[_field(r, field) for r in row] for row in self.results], dtype=float
        )

    def mean_sem(self, field: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Mean over seeds and its standard error sd/√S (``ddof=1``; ``nan`` for one seed).

        Both have the shape of :meth:`values` without the seeds' axis.
        """
        v = self.values(field)
        return v.mean(axis=1), standard_error(v, axis=1)

    def items(self) -> Iterator[tuple[tuple[Any, int], R]]:
        """``((setting, seed), result)`` for every run, in the order they ran."""
        for setting, row in zip(self.settings, self.results, strict=True):
            for seed, result in zip(self.seeds, row, strict=True):
                yield (setting, seed), result

    def row(self, setting: Any) -> tuple[R, ...]:
        """The results of one setting, over the seeds."""
        return self.results[self.settings.index(setting)]


def standard_error(samples: Any, axis: int | None = 0) -> Any:
    r"""Standard error of the mean, sd/√n with the sample standard deviation (``ddof=1``).

    ``samples`` holds one value per seed along ``axis`` (``None``: all values). Returns a float
    for a 1-d input (``axis=0``) or ``axis=None``, else an array; ``nan`` where n < 2.
    """
    v = np.asarray(samples, dtype=float)
    n = v.size if axis is None else v.shape[axis]
    if n < 2:
        shape = () if axis is None else np.delete(np.array(v.shape), axis)
        se = np.full(shape, np.nan)
    else:
        se = v.std(axis=axis, ddof=1) / np.sqrt(n)
    return float(se) if np.ndim(se) == 0 else se


def standard_error_of_difference(a: Any, b: Any, *, paired: bool = False) -> Any:
    r"""Standard error of mean(a) − mean(b) over seeds.

    Independent samples: √(se(a)² + se(b)²). Paired samples (seed s gives both runs the same
    initialization and batch order): se(a − b), which removes the variance the pair shares.
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if paired:
        if a.shape != b.shape:
            raise ValueError(f"paired samples need the same shape, got {a.shape} and {b.shape}")
        return standard_error(a - b, axis=None if a.ndim == 1 else 0)
    return float(np.hypot(standard_error(a, axis=None), standard_error(b, axis=None)))


def _field(result: Any, field: str | None) -> Any:
    value = result
    for name in [] if field is None else field.split("."):
        value = value[name] if isinstance(value, Mapping) else getattr(value, name)
    return np.asarray(value, dtype=float)


def run_grid(
    fn: Callable[..., R],
    settings: Iterable[Any],
    seeds: Sequence[int] | Iterable[int],
    *,
    desc: str | None = None,
    **fixed: Any,
) -> Grid[R]:
    """Run ``fn`` once for every setting and seed, each run seeded, and collect the results.

    Before each run, :func:`~bncore.experiments.runtime.seed_everything` (seed) fixes the
    initialization; ``fn`` receives ``seed`` too, for its own generators (batch order, data).
    ``fixed`` keyword arguments are passed to every run. Raises ``ValueError`` for an empty grid.
    """
    settings_t, seeds_t = tuple(settings), tuple(int(s) for s in seeds)
    if not settings_t or not seeds_t:
        raise ValueError(
            f"run_grid needs at least one setting and one seed, got {len(settings_t)} settings "
            f"and {len(seeds_t)} seeds"
        )
    runs = [(i, s) for i in range(len(settings_t)) for s in seeds_t]
    out: list[list[R]] = [[] for _ in settings_t]
    for i, seed in progress(runs, desc=desc or getattr(fn, "__name__", "grid")):
        setting = settings_t[i]
        seed_everything(seed)
        if isinstance(setting, Mapping):
            out[i].append(fn(**setting, seed=seed, **fixed))
        else:
            out[i].append(fn(setting, seed=seed, **fixed))
    return Grid(settings_t, seeds_t, tuple(tuple(r) for r in out))
