"""``bncore.experiments.bench`` runs end to end on a tiny configuration (not a timed test)."""

from __future__ import annotations

import json

import pytest
import torch

from bncore.experiments import bench


def test_min_bytes_counts_each_tensor_once():
    # forward reads x and writes y; backward reads x and δ and writes dx
    assert bench.min_bytes("forward", 10, 4) == 80
    assert bench.min_bytes("backward", 10, 4) == 120
    assert bench.min_bytes("train", 10, 2) == 100


def test_native_ratio_is_one_and_every_variant_is_timed():
    cases = [bench.Case((4, 3, 2, 2))]
    results = bench.run(cases, variants=("native", "torch_bn", "numpy_bn"), reps=2, warmup=0,
                        device=torch.device("cpu"))
    assert {(r.pass_, r.variant) for r in results} == {
        (p, v) for p in bench.PASSES for v in ("native", "torch_bn", "numpy_bn")}
    for r in results:
        assert r.median_s > 0 and len(r.times_s) == 2
        if r.variant == "native":
            assert r.ratio == pytest.approx(1.0)


def test_cli_writes_json_and_plot(tmp_path):
    bench.main(["--shapes", "4x3x2x2,6x3", "--dtypes", "float32", "--layouts", "nchw",
                "--reps", "1", "--warmup", "0", "--passes", "train,eval",
                "--variants", "native,numpy_bn", "--out", str(tmp_path)])
    data = json.loads((tmp_path / "bench.json").read_text())
    assert data["meta"]["threads"] == 1
    assert {r["variant"] for r in data["results"]} == {"native", "numpy_bn"}
    assert (tmp_path / "bench.png").stat().st_size > 0


def test_write_costs_times_the_same_pass_into_new_and_reused_memory():
    fresh, reused = bench.write_costs(1000, reps=2)
    assert fresh > 0 and reused > 0
