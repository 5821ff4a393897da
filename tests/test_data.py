"""Tests of bncore.experiments.data: the digits split, the synthetic tasks and the index batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bncore.experiments.data import Dataset, batches, digits, gaussian_mixture, teacher


def test_digits_split_shapes_and_labels():
    d = digits()
    assert d.x_train.shape == (1347, 64) and d.x_test.shape == (450, 64)
    assert d.x_train.dtype == torch.float32 and d.y_train.dtype == torch.int64
    assert d.in_dim == 64 and d.num_classes == 10 and d.n_train == 1347
    img = digits(image=True)
    assert img.x_train.shape == (1347, 1, 8, 8) and img.input_shape == (1, 8, 8)
    assert img.in_dim == 64


def test_digits_split_is_fixed_and_stratified():
    a, b = digits(), digits()
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    counts_train = np.bincount(a.y_train.numpy(), minlength=10) / a.n_train
    counts_test = np.bincount(a.y_test.numpy(), minlength=10) / len(a.y_test)
    assert np.abs(counts_train - counts_test).max() < 0.01  # stratified: same class fractions
    assert not torch.equal(digits(seed=1).y_test, a.y_test)


def test_digits_standardized_with_training_statistics():
    d = digits()
    mean, std = d.x_train.mean(0), d.x_train.std(0, correction=0)
    assert float(mean.abs().max()) < 1e-5
    nonconstant = std > 0
    torch.testing.assert_close(std[nonconstant], torch.ones(int(nonconstant.sum())))
    img = digits(image=True)
    assert abs(float(img.x_train.mean())) < 1e-5
    assert abs(float(img.x_train.std(correction=0)) - 1) < 1e-5


def test_gaussian_mixture_is_seeded_and_separable():
    a = gaussian_mixture(500, 200, 10, 4, seed=0, separation=6.0)
    b = gaussian_mixture(500, 200, 10, 4, seed=0, separation=6.0)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert a.x_train.shape == (500, 10) and a.num_classes == 4
    # nearest class mean (estimated on train) classifies the test set well at this separation
    means = torch.stack([a.x_train[a.y_train == c].mean(0) for c in range(4)])
    pred = torch.cdist(a.x_test, means).argmin(1)
    assert float((pred == a.y_test).float().mean()) > 0.95
    c = gaussian_mixture(500, 200, 10, 4, seed=1)
    assert not torch.equal(a.x_train, c.x_train)


def test_teacher_labels_are_reproducible_and_use_all_classes():
    a = teacher(300, 100, 8, 3, seed=2)
    b = teacher(300, 100, 8, 3, seed=2)
    assert torch.equal(a.y_train, b.y_train) and a.x_train.shape == (300, 8)
    assert set(a.y_train.tolist()) == {0, 1, 2}


def test_batches_cover_each_index_at_most_once_and_drop_last():
    gen = torch.Generator().manual_seed(0)
    out = list(batches(10, 3, gen))
    assert [len(b) for b in out] == [3, 3, 3]
    flat = torch.cat(out)
    assert len(set(flat.tolist())) == 9 and flat.max() < 10
    with pytest.raises(ValueError, match="exceeds"):
        list(batches(3, 4, gen))


def test_dataset_to_device_copies_all_tensors():
    d = Dataset(torch.zeros(4, 2), torch.zeros(4, dtype=torch.long),
                torch.zeros(2, 2), torch.ones(2, dtype=torch.long))
    e = d.to("cpu")
    assert e.num_classes == 2 and e.x_test.device.type == "cpu"
