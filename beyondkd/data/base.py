"""What every dataset and loader provides: a :class:`Batch`, :class:`DatasetInfo`, and splits.

Small datasets (Fashion-MNIST, CIFAR) are held whole in memory as ``uint8`` tensors
(:class:`TensorImages`) and batched by :class:`beyondkd.data.loaders.TensorLoader` on the
training device, with augmentation done there. Large ones (ImageNet, image folders) go through
a classic ``torch.utils.data.DataLoader``. Both loaders yield :class:`Batch`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from beyondkd.core import Batch

__all__ = ["Batch", "DatasetInfo", "Splits", "TensorImages"]


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a dataset.

    Attributes:
        name: registry name.
        num_classes: number of labels.
        in_channels: image channels.
        image_size: side of the (square) training crop.
        mean, std: per-channel normalisation statistics (of the training split, in [0, 1] units).
        classes: class names.
        crop_padding: zero padding of the training random crop (0: no crop augmentation).
        flip: random horizontal flips in training.
    """

    name: str
    num_classes: int
    in_channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: tuple[str, ...] = field(default_factory=tuple)
    crop_padding: int = 4
    flip: bool = True


@dataclass
class TensorImages:
    """A whole split in memory: ``images`` ``(N, C, H, W)`` uint8 and ``targets`` ``(N,)`` int64."""

    images: Tensor
    targets: Tensor
    info: DatasetInfo

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError("TensorImages.images must be a (N, C, H, W) uint8 tensor")
        if self.targets.shape != self.images.shape[:1]:
            raise ValueError("TensorImages.targets must be (N,) matching images")
        self.targets = self.targets.long()

    def __len__(self) -> int:
        return int(self.targets.shape[0])

    def subset(self, count: int | None, seed: int) -> "TensorImages":
        """A seeded random subset of ``count`` samples (all of them if ``count`` is None)."""
        if count is None or count >= len(self):
            return self
        if count < 1:
            raise ValueError(f"subset size must be >= 1, got {count}")
        g = torch.Generator().manual_seed(seed)
        keep = torch.randperm(len(self), generator=g)[:count].sort().values
        return replace(self, images=self.images[keep], targets=self.targets[keep])


@dataclass
class Splits:
    """A dataset's training and validation data (``TensorImages`` or a torch ``Dataset``)."""

    train: object
    val: object
    info: DatasetInfo
