"""Image datasets in class-per-folder layout: ``imagenet`` (ILSVRC-2012) and ``image_folder`` (yours).

Layout (torchvision ``ImageFolder``): ``<root>/train/<class>/<image>`` and
``<root>/val/<class>/<image>``; class indices are the sorted folder names, identical in both
splits. For ImageNet, ``val`` must be sorted into its 1000 synset folders (the usual
preparation of ``ILSVRC2012_img_val.tar``); nothing is downloaded.

These go through the ``DataLoader`` path (:class:`~beyondkd.data.loaders.DatasetLoader`) with
worker processes and PIL decoding. Standard transforms (crop side ``S = data.image_size``, 224
by default):

* train: ``RandomResizedCrop(S)`` (scale 0.08–1) and ``RandomHorizontalFlip``;
* val (and train with ``data.augment: false``): ``Resize(round(S · 256/224))`` then
  ``CenterCrop(S)`` — 256 → 224 at the default size;
* then ``ToTensor`` and normalisation with the ImageNet statistics mean (0.485, 0.456, 0.406),
  std (0.229, 0.224, 0.225) (pixels in [0, 1]). Images are converted to RGB (3 channels).

``image_folder`` takes ``data.options`` (:class:`ImageFolderOptions`, validated): ``mean`` and
``std`` of your images, ``image_size`` (the crop side), ``crop_padding`` (an integer switches to
the CIFAR-style recipe: resize to ``S×S``, then a random ``S×S`` crop of the image zero-padded
by that many pixels; 0 = no crop; validation: the resize alone) and ``flip``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from pydantic import BaseModel, ConfigDict, Field, field_validator

from beyondkd.data.base import DatasetInfo, Splits
from beyondkd.data.registry import register_dataset
from beyondkd.errors import DataError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_IMAGENET_ROOT = "data/imagenet"
IMAGENET_INFO = DatasetInfo("imagenet", 1000, 3, 224, IMAGENET_MEAN, IMAGENET_STD, crop_padding=0, flip=True)


class ImageFolderOptions(BaseModel):
    """``data.options`` of ``image_folder`` (see the module docstring).

    Attributes:
        mean, std: per-channel (R, G, B) statistics of your images, pixels in [0, 1].
        image_size: side of the crop the networks see (default: ``data.image_size``, else 224).
        crop_padding: ``None`` = ImageNet recipe (random-resized crop; resize + centre crop for
            validation); an integer = resize to ``S×S``, random ``S×S`` crop with that zero padding.
        flip: random horizontal flips in training.
    """

    model_config = ConfigDict(extra="forbid")
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    image_size: int | None = Field(None, ge=8)
    crop_padding: int | None = Field(None, ge=0)
    flip: bool = True

    @field_validator("mean", "std", mode="before")
    @classmethod
    def _three_values(cls, value: object) -> object:
        if not isinstance(value, (list, tuple)) or len(value) != 3:
            raise ValueError("give 3 values, one per RGB channel")
        return value

    @field_validator("mean")
    @classmethod
    def _unit_pixels(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if not all(0.0 <= v <= 1.0 for v in value):
            raise ValueError("mean is in [0, 1] pixel units (divide 0-255 statistics by 255)")
        return value

    @field_validator("std")
    @classmethod
    def _positive(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if not all(0.0 < v <= 1.0 for v in value):
            raise ValueError("std must be in (0, 1] pixel units (divide 0-255 statistics by 255)")
        return value


def image_transforms(image_size: int, train: bool, mean: Sequence[float], std: Sequence[float],
                     crop_padding: int | None = None, flip: bool = True):
    """The torchvision transform of one split (see the module docstring)."""
    from torchvision import transforms as T

    if crop_padding is None:
        if train:
            head = [T.RandomResizedCrop(image_size)]
        else:
            head = [T.Resize(round(image_size * 256 / 224)), T.CenterCrop(image_size)]
    else:
        head = [T.Resize((image_size, image_size))]
        if train and crop_padding > 0:
            head.append(T.RandomCrop(image_size, padding=crop_padding))
    if train and flip:
        head.append(T.RandomHorizontalFlip())
    return T.Compose([*head, T.ToTensor(), T.Normalize(list(mean), list(std))])


def _rgb_loader(path: str):
    from PIL import Image

    with open(path, "rb") as f:
        return Image.open(f).convert("RGB")


def load_image_folders(
    name: str,
    root: str | Path,
    image_size: int | None,
    augment: bool,
    mean: Sequence[float],
    std: Sequence[float],
    expected_classes: int | None = None,
    crop_padding: int | None = None,
    flip: bool = True,
) -> Splits:
    """``ImageFolder`` splits of ``root/train`` and ``root/val`` with the standard transforms."""
    from torchvision.datasets import ImageFolder

    root = Path(root)
    for split in ("train", "val"):
        if not (root / split).is_dir():
            raise DataError(
                f"{name}: folder {root / split} not found: put the images as {root}/train/<class>/*.jpg and "
                f"{root}/val/<class>/*.jpg, or set data.root"
            )
    size = image_size or 224
    try:
        train = ImageFolder(str(root / "train"), image_transforms(size, augment, mean, std, crop_padding, flip),
                            loader=_rgb_loader)
        val = ImageFolder(str(root / "val"), image_transforms(size, False, mean, std, crop_padding, flip), loader=_rgb_loader)
    except (FileNotFoundError, RuntimeError) as exc:
        raise DataError(f"{name}: {str(exc).splitlines()[0]} (each class folder needs at least one image)") from None
    if train.classes != val.classes:
        only = sorted(set(train.classes) ^ set(val.classes))
        raise DataError(
            f"{name}: train and val have different class folders (e.g. '{only[0]}'): give both splits the same "
            "class folders (ImageNet val must be sorted into synset folders)"
        )
    if expected_classes is not None and len(train.classes) != expected_classes:
        raise DataError(f"{name}: {root / 'train'} has {len(train.classes)} class folders, expected {expected_classes}")
    info = DatasetInfo(name, len(train.classes), 3, size, tuple(mean), tuple(std), tuple(train.classes),
                       crop_padding=(crop_padding or 0) if augment else 0, flip=augment and flip)
    return Splits(train, val, info)


@register_dataset("imagenet", default_root=DEFAULT_IMAGENET_ROOT, description="ImageNet-1k (ILSVRC-2012), ImageFolder layout root/{train,val}/<synset>")
def imagenet(root: str | None = None, download: bool = False, image_size: int | None = None, augment: bool = True, **_: object) -> Splits:
    """ImageNet-1k from class folders; cannot be downloaded (licence), ``download`` is refused."""
    if download:
        raise DataError("imagenet cannot be downloaded automatically: get ILSVRC-2012 from image-net.org, "
                        "extract it as root/train/<synset> and root/val/<synset>, and set data.download: false")
    return load_image_folders("imagenet", root or DEFAULT_IMAGENET_ROOT, image_size, augment, IMAGENET_MEAN, IMAGENET_STD, 1000)


@register_dataset("image_folder", default_root=None, description="your images, ImageFolder layout root/{train,val}/<class>",
                  options=ImageFolderOptions)
def image_folder(
    root: str | None = None,
    download: bool = False,
    image_size: int | None = None,
    augment: bool = True,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    crop_padding: int | None = None,
    flip: bool = True,
    **_: object,
) -> Splits:
    """Any class-per-folder dataset; ``data.options`` as :class:`ImageFolderOptions` (ImageNet statistics by default)."""
    if root is None:
        raise DataError("image_folder needs data.root: the folder holding train/<class>/ and val/<class>/")
    if download:
        raise DataError("image_folder reads your own files and cannot download: set data.download: false")
    return load_image_folders("image_folder", root, image_size, augment, mean, std, crop_padding=crop_padding, flip=flip)
