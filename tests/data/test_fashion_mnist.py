"""Fashion-MNIST read from the real Debian package files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from beyondkd.data import build_splits
from beyondkd.data.fashion_mnist import read_idx
from beyondkd.errors import ConfigError, DataError
from tests.conftest import write_idx


def test_real_dataset_shapes_and_stats(fmnist_splits):
    s = fmnist_splits
    assert s.train.images.shape == (60000, 1, 28, 28) and s.val.images.shape == (10000, 1, 28, 28)
    assert s.train.images.dtype == torch.uint8
    assert torch.bincount(s.train.targets).tolist() == [6000] * 10
    assert torch.bincount(s.val.targets).tolist() == [1000] * 10
    x = s.train.images.float() / 255
    assert x.mean().item() == pytest.approx(s.info.mean[0], abs=1e-3)
    assert x.std().item() == pytest.approx(s.info.std[0], abs=1e-3)


def test_idx_roundtrip(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "x.gz", arr)
    assert np.array_equal(read_idx(tmp_path / "x.gz"), arr)


def test_not_an_idx_file(tmp_path):
    (tmp_path / "bad").write_bytes(b"hello world")
    with pytest.raises(DataError, match="not an idx file"):
        read_idx(tmp_path / "bad")


def test_missing_dataset_says_how_to_install(tmp_path):
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        build_splits("fashion_mnist", str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        build_splits("fashion_mnist", str(tmp_path))


def test_unknown_dataset():
    with pytest.raises(ConfigError, match="unknown dataset 'fashion_minst'.*did you mean"):
        build_splits("fashion_minst")


def test_slice_fixture_is_real_data(fmnist_slice, fmnist_splits):
    s = build_splits("fashion_mnist", str(fmnist_slice))
    assert len(s.train) == 2000 and len(s.val) == 1000
    assert torch.equal(s.train.images, fmnist_splits.train.images[:2000])
