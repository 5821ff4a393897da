"""The runtime switches the book build relies on: seeding, progress bars, widgets, report."""

from __future__ import annotations

import io

import torch

from bncore.experiments import runtime


def test_progress_is_disabled_by_tqdm_disable(monkeypatch):
    monkeypatch.setenv("TQDM_DISABLE", "1")
    bar = runtime.progress(range(3), desc="x")
    assert bar.disable
    assert list(bar) == [0, 1, 2]


def test_progress_is_enabled_without_tqdm_disable(monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    assert not runtime.progress(range(3), file=io.StringIO()).disable
    assert runtime.progress(range(3), enabled=False).disable


def test_widgets_switch_follows_bncore_widgets(monkeypatch):
    monkeypatch.setenv("BNCORE_WIDGETS", "0")
    assert not runtime.widgets_enabled()
    monkeypatch.setenv("BNCORE_WIDGETS", "1")
    assert runtime.widgets_enabled()


def test_seed_everything_makes_torch_and_numpy_draws_repeat():
    rng_a = runtime.seed_everything(3)
    a = (torch.randn(4), rng_a.normal(size=4))
    rng_b = runtime.seed_everything(3)
    b = (torch.randn(4), rng_b.normal(size=4))
    assert torch.equal(a[0], b[0])
    assert (a[1] == b[1]).all()


def test_environment_report_names_versions_and_device():
    report = runtime.environment_report()
    assert report["torch"] == torch.__version__
    assert report["device"].startswith("GPU" if torch.cuda.is_available() else "CPU")
    assert {"python", "bncore", "numpy", "jupyter-book"} <= report.keys()
