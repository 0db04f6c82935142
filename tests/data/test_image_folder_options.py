"""data.options of image_folder: statistics, crop side, CIFAR-style padded crops, flips, validation."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from beyondkd.config import load_config
from beyondkd.data import build_splits
from beyondkd.engine.build import build_loaders
from beyondkd.errors import ConfigError
from tests.data.test_image_folder import make_tree

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


def _splits(root, **options):
    return build_splits("image_folder", root=str(root), options=options)


def test_statistics_and_side_come_from_the_options(tmp_path):
    make_tree(tmp_path, per_class=1)
    splits = _splits(tmp_path, mean=list(MEAN), std=list(STD), image_size=12, crop_padding=2)
    assert splits.info.mean == MEAN and splits.info.std == STD and splits.info.image_size == 12
    assert splits.info.crop_padding == 2 and splits.info.flip
    image, _ = splits.val[1]
    pil = Image.open(splits.val.samples[1][0]).convert("RGB")
    torch.testing.assert_close(image, T.Normalize(MEAN, STD)(T.ToTensor()(T.Resize((12, 12))(pil))))


def test_padded_crops_and_flips_of_the_training_split(tmp_path):
    make_tree(tmp_path, per_class=1)
    plain = _splits(tmp_path, image_size=12, crop_padding=0, flip=False)
    pil = Image.open(plain.train.samples[0][0]).convert("RGB")
    ref = T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))(T.ToTensor()(T.Resize((12, 12))(pil)))
    assert torch.equal(plain.train[0][0], ref)  # nothing random left
    flips = _splits(tmp_path, image_size=12, crop_padding=0, flip=True)
    torch.manual_seed(0)
    seen = [flips.train[0][0] for _ in range(16)]
    assert all(torch.equal(x, ref) or torch.equal(x, ref.flip(2)) for x in seen)
    assert any(torch.equal(x, ref.flip(2)) for x in seen) and any(torch.equal(x, ref) for x in seen)
    padded = _splits(tmp_path, image_size=12, crop_padding=3, flip=False, mean=list(MEAN), std=list(STD))
    zero = ((0 - torch.tensor(MEAN)) / torch.tensor(STD))[:, None]
    border = [x[:, :, 0] for x in (padded.train[0][0] for _ in range(32))]
    assert any(torch.allclose(col, zero.expand_as(col)) for col in border)  # a zero-padded column came in


@pytest.mark.parametrize("options,message", [
    ({"meen": [0.5] * 3}, r"unknown key 'data.options.meen' for dataset 'image_folder' \(did you mean 'mean'\?\): allowed are crop_padding"),
    ({"mean": [125.3, 123.0, 113.9]}, r"'data.options.mean'.*\[0, 1\] pixel units \(divide 0-255"),
    ({"std": [0.2, 0.0, 0.2]}, r"'data.options.std'.*std must be in \(0, 1\]"),
    ({"mean": [0.5, 0.5]}, r"bad value for 'data.options.mean' of dataset 'image_folder': give 3 values, one per RGB"),
    ({"crop_padding": -1}, r"'data.options.crop_padding'"),
])
def test_bad_options_are_one_line(tmp_path, options, message):
    make_tree(tmp_path, per_class=1)
    with pytest.raises(ConfigError, match=message) as e:
        _splits(tmp_path, **options)
    assert "\n" not in str(e.value)


def test_options_through_the_config_and_their_conflicts(tmp_path):
    make_tree(tmp_path)
    raw = {"data": {"name": "image_folder", "root": str(tmp_path), "batch_size": 2,
                    "options": {"image_size": 16, "mean": list(MEAN), "std": list(STD), "flip": False}},
           "model": {"name": "resnet8"}}
    train, _, _, info, _ = build_loaders(load_config(raw=raw), torch.device("cpu"))
    assert info.image_size == 16 and info.mean == MEAN and not info.flip
    assert next(iter(train)).images.shape == (2, 3, 16, 16)
    raw["data"]["image_size"] = 24
    with pytest.raises(ConfigError, match=r"data.image_size is 24 but data.options.image_size is 16: give it once"):
        build_loaders(load_config(raw=raw), torch.device("cpu"))
    with pytest.raises(ConfigError, match=r"dataset 'fashion_mnist' takes no data.options \(got flip\)"):
        build_loaders(load_config(raw={"data": {"options": {"flip": False}}, "model": {"name": "resnet8"}}), torch.device("cpu"))
