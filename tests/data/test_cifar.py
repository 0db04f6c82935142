"""CIFAR-10/100 from tiny files written in the exact python-pickle layout."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from beyondkd.data import Augment, TensorLoader, build_splits
from beyondkd.data.cifar import CIFAR10_INFO, CIFAR100_INFO, read_batch
from beyondkd.errors import DataError


def _batch(rng: np.random.Generator, n: int, classes: int, label_key: str, bytes_keys: bool) -> dict:
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    labels = [int(v) for v in rng.integers(0, classes, size=n)]
    d = {"batch_label": "training batch", label_key: labels, "data": data, "filenames": [f"img_{i}.png" for i in range(n)]}
    if bytes_keys:  # what a reader gets from Python 2 files decoded as bytes
        d = {k.encode(): v for k, v in d.items()}
    return d


def _dump(obj: object, path) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=4)


def write_cifar10(root, n: int = 3, bytes_keys: bool = False) -> dict[str, dict]:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    written = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        written[name] = _batch(rng, n, 10, "labels", bytes_keys)
        _dump(written[name], folder / name)
    _dump({"label_names": [f"class{i}" for i in range(10)], "num_cases_per_batch": n, "num_vis": 3072}, folder / "batches.meta")
    return written


def write_cifar100(root, n: int = 4) -> dict[str, dict]:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    written = {}
    for name in ("train", "test"):
        written[name] = _batch(rng, n, 100, "fine_labels", False)
        written[name]["coarse_labels"] = [0] * n
        _dump(written[name], folder / name)
    _dump({"fine_label_names": [f"fine{i}" for i in range(100)], "coarse_label_names": [f"c{i}" for i in range(20)]}, folder / "meta")
    return written


@pytest.mark.parametrize("bytes_keys", [False, True])
def test_cifar10_reads_pixels_labels_and_names(tmp_path, bytes_keys):
    written = write_cifar10(tmp_path, n=3, bytes_keys=bytes_keys)
    splits = build_splits("cifar10", root=str(tmp_path))
    assert splits.info.num_classes == 10 and splits.info.classes[3] == "class3"
    assert splits.train.images.shape == (15, 3, 32, 32) and splits.val.images.shape == (3, 3, 32, 32)
    first = written["data_batch_1"]
    data, labels = first[b"data" if bytes_keys else "data"], first[b"labels" if bytes_keys else "labels"]
    # channel-major rows: pixel (c, y, x) is data[i, c*1024 + y*32 + x]
    assert splits.train.images[1, 2, 5, 7].item() == data[1, 2 * 1024 + 5 * 32 + 7]
    assert splits.train.targets[:3].tolist() == labels
    last = written["data_batch_5"][b"data" if bytes_keys else "data"]
    assert torch.equal(splits.train.images[12:].reshape(3, -1), torch.from_numpy(last))


def test_cifar100_fine_labels_and_root_may_be_the_folder_itself(tmp_path):
    written = write_cifar100(tmp_path)
    for root in (tmp_path, tmp_path / "cifar-100-python"):
        splits = build_splits("cifar100", root=str(root))
        assert splits.info.num_classes == 100 and splits.info.classes[42] == "fine42"
        assert splits.train.targets.tolist() == written["train"]["fine_labels"]
        assert splits.val.targets.tolist() == written["test"]["fine_labels"]
        assert splits.info.mean == CIFAR100_INFO.mean and splits.info.crop_padding == 4 and splits.info.flip


def test_cifar_goes_through_the_in_memory_loader_with_pad4_crop(tmp_path):
    from beyondkd.config import load_config
    from beyondkd.engine.build import build_loaders

    write_cifar10(tmp_path, n=4)
    cfg = load_config(raw={"data": {"name": "cifar10", "root": str(tmp_path), "batch_size": 8}, "model": {"name": "resnet8"}})
    train, ordered, val, info, _ = build_loaders(cfg, torch.device("cpu"))
    assert isinstance(train, TensorLoader) and train.augment == Augment(pad=4, flip=True)
    batch = next(iter(train))
    assert batch.images.shape == (8, 3, 32, 32) and batch.images.dtype == torch.float32
    assert info.name == "cifar10" and len(val) == 1


def test_normalisation_uses_the_documented_statistics(tmp_path):
    write_cifar10(tmp_path, n=2)
    splits = build_splits("cifar10", root=str(tmp_path))
    loader = TensorLoader(splits.val, 2, train=False)
    batch = next(iter(loader))
    mean = torch.tensor(CIFAR10_INFO.mean).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR10_INFO.std).view(1, 3, 1, 1)
    expected = (splits.val.images[:2].float() / 255 - mean) / std
    assert torch.allclose(batch.images, expected, atol=1e-6)


def test_missing_files_one_line_error_saying_where(tmp_path):
    with pytest.raises(DataError) as err:
        build_splits("cifar100", root=str(tmp_path / "nothing"))
    msg = str(err.value)
    assert "\n" not in msg and "cifar-100-python" in msg and "data.download" in msg


def test_missing_test_batch_is_named(tmp_path):
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "test_batch").unlink()
    with pytest.raises(DataError, match="test_batch is missing"):
        build_splits("cifar10", root=str(tmp_path))


def test_download_uses_torchvision_and_reports_failure_on_one_line(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    calls = []

    def fake_cifar10(root, train, download):
        calls.append((root, train, download))
        write_cifar10(tmp_path, n=2)

    monkeypatch.setattr(tvd, "CIFAR10", fake_cifar10)
    splits = build_splits("cifar10", root=str(tmp_path), download=True)
    assert calls == [(str(tmp_path), True, True)] and len(splits.train) == 10

    def offline(root, train, download):
        raise RuntimeError("Temporary failure in name resolution\nmore")

    monkeypatch.setattr(tvd, "CIFAR100", offline)
    with pytest.raises(DataError) as err:
        build_splits("cifar100", root=str(tmp_path / "empty"), download=True)
    assert "\n" not in str(err.value) and "cifar-100-python.tar.gz" in str(err.value)


def test_pickles_with_code_are_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    path = tmp_path / "data_batch_1"
    with open(path, "wb") as f:
        pickle.dump({"data": Evil()}, f)
    with pytest.raises(DataError, match="not a CIFAR python-pickle batch file"):
        read_batch(path)


def test_wrong_shape_is_reported(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    for name in ("train", "test"):
        _dump({"data": np.zeros((2, 100), np.uint8), "fine_labels": [0, 1]}, folder / name)
    with pytest.raises(DataError, match="expected N×3072"):
        build_splits("cifar100", root=str(tmp_path))
