"""ImageNet and user image folders through the DataLoader path, on a tree of tiny PNGs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from beyondkd.data import DatasetLoader, build_splits
from beyondkd.data.image_folder import IMAGENET_MEAN, IMAGENET_STD
from beyondkd.errors import DataError


def make_tree(root, classes=("cat", "dog"), per_class: int = 3, size: int = 20, splits=("train", "val")) -> None:
    rng = np.random.default_rng(0)
    for split in splits:
        for c in classes:
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                mode_grey = i == 0  # a grey image: must come out as 3 channels
                arr = rng.integers(0, 256, size=(size, size + 4) if mode_grey else (size, size + 4, 3), dtype=np.uint8)
                Image.fromarray(arr).save(root / split / c / f"{i}.png")


def test_image_folder_batches(tmp_path):
    make_tree(tmp_path)
    splits = build_splits("image_folder", root=str(tmp_path), image_size=16)
    info = splits.info
    assert info.num_classes == 2 and info.classes == ("cat", "dog") and info.in_channels == 3
    assert info.mean == IMAGENET_MEAN and info.std == IMAGENET_STD
    loader = DatasetLoader(splits.train, info, 4, train=True, seed=0)
    batch = next(iter(loader))
    assert batch.images.shape == (4, 3, 16, 16) and set(batch.targets.tolist()) <= {0, 1}
    val = DatasetLoader(splits.val, info, 6, train=False)
    vb = next(iter(val))
    assert vb.targets.tolist() == [0, 0, 0, 1, 1, 1] and vb.indices.tolist() == list(range(6))


def test_val_transform_is_resize_then_center_crop(tmp_path):
    make_tree(tmp_path, per_class=1)
    splits = build_splits("image_folder", root=str(tmp_path), image_size=16)
    image, _ = splits.val[1]
    path, _ = splits.val.samples[1]
    from torchvision import transforms as T

    pil = Image.open(path).convert("RGB")
    ref = T.Normalize(IMAGENET_MEAN, IMAGENET_STD)(T.ToTensor()(T.CenterCrop(16)(T.Resize(18)(pil))))
    assert torch.allclose(image, ref)


def test_image_folder_through_build_loaders(tmp_path):
    from beyondkd.config import load_config
    from beyondkd.engine.build import build_loaders

    make_tree(tmp_path)
    cfg = load_config(raw={"data": {"name": "image_folder", "root": str(tmp_path), "batch_size": 2, "image_size": 16},
                           "model": {"name": "resnet8"}})
    train, ordered, val, info, _ = build_loaders(cfg, torch.device("cpu"))
    assert isinstance(train, DatasetLoader) and ordered is None and info.num_classes == 2
    assert next(iter(train)).images.shape == (2, 3, 16, 16)


def test_missing_split_and_mismatched_classes(tmp_path):
    make_tree(tmp_path, splits=("train",))
    with pytest.raises(DataError, match="val not found") as err:
        build_splits("image_folder", root=str(tmp_path))
    assert "\n" not in str(err.value)
    make_tree(tmp_path, classes=("cat", "emu"), splits=("val",))
    with pytest.raises(DataError, match="different class folders"):
        build_splits("image_folder", root=str(tmp_path))


def test_imagenet_checks_class_count_and_refuses_download(tmp_path):
    make_tree(tmp_path, per_class=1)
    with pytest.raises(DataError, match="2 class folders, expected 1000"):
        build_splits("imagenet", root=str(tmp_path))
    with pytest.raises(DataError, match="cannot be downloaded"):
        build_splits("imagenet", root=str(tmp_path), download=True)
    with pytest.raises(DataError, match="train not found"):
        build_splits("imagenet", root=str(tmp_path / "none"))


def test_image_folder_needs_a_root():
    with pytest.raises(DataError, match="needs data.root"):
        build_splits("image_folder")
