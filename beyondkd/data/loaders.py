"""Loaders that yield :class:`~beyondkd.data.base.Batch`, with deterministic, resumable order.

Both loaders draw the order of an epoch from ``(seed, epoch)`` alone, and the augmentation of a
batch from ``(seed, epoch, batch index)`` alone, so ``set_epoch(e, skip_batches=k)`` resumes
an interrupted epoch exactly where it stopped.

* :class:`TensorLoader` keeps a whole split on the training device as ``uint8`` and augments
  there (random crop with zero padding, horizontal flip): no worker processes, no PIL, no
  host-to-device copies. Used for Fashion-MNIST and CIFAR.
* :class:`DatasetLoader` wraps a map-style ``Dataset`` in a ``torch.utils.data.DataLoader``
  (worker processes, pinned memory) for datasets too large for memory (ImageNet, folders).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from beyondkd.data.base import Batch, DatasetInfo, TensorImages

_SEED_STRIDE = 1_000_003


def epoch_seed(seed: int, epoch: int) -> int:
    """Seed of an epoch's sample order."""
    return (seed * _SEED_STRIDE + epoch) % (2**63 - 1)


def epoch_permutation(n: int, seed: int, epoch: int) -> Tensor:
    """The order in which the ``n`` samples are visited in ``epoch``."""
    g = torch.Generator().manual_seed(epoch_seed(seed, epoch))
    return torch.randperm(n, generator=g)


def shard(order: Tensor, rank: int, world_size: int, equal: bool) -> Tensor:
    """Rank ``rank``'s share of ``order``: every ``world_size``-th element from ``rank``.

    With ``equal`` the order is first trimmed to a multiple of ``world_size`` so that every
    rank gets the same count (training); without it nothing is dropped (evaluation), so the
    ranks together visit every sample exactly once.
    """
    if world_size <= 1:
        return order
    if equal:
        order = order[: len(order) - len(order) % world_size]
    return order[rank::world_size]


def shard_size(n: int, rank: int, world_size: int, equal: bool) -> int:
    """``len(shard(range(n), rank, world_size, equal))`` without building it."""
    if world_size <= 1:
        return n
    if equal:
        return n // world_size
    return len(range(rank, n, world_size))


@dataclass(frozen=True)
class Augment:
    """On-device augmentation: random crop with ``pad`` pixels of zero padding, optional flip."""

    pad: int = 2
    flip: bool = True

    def __call__(self, images: Tensor, generator: torch.Generator) -> Tensor:
        """Augment a ``(N, C, H, W)`` batch; randomness comes only from ``generator``."""
        n, c, h, w = images.shape
        device = images.device
        if self.pad > 0:
            padded = F.pad(images, (self.pad,) * 4)
            dy = torch.randint(0, 2 * self.pad + 1, (n,), generator=generator, device=device)
            dx = torch.randint(0, 2 * self.pad + 1, (n,), generator=generator, device=device)
            rows = (dy[:, None] + torch.arange(h, device=device)[None, :])[:, None, :, None]
            cols = (dx[:, None] + torch.arange(w, device=device)[None, :])[:, None, None, :]
            batch_idx = torch.arange(n, device=device)[:, None, None, None]
            chan_idx = torch.arange(c, device=device)[None, :, None, None]
            images = padded[batch_idx, chan_idx, rows, cols]
        if self.flip:
            flip = torch.rand(n, generator=generator, device=device) < 0.5
            images = torch.where(flip[:, None, None, None], images.flip(3), images)
        return images


class ShardedEpochs:
    """What every loader shares: this rank's share of each epoch, its batch count and the epoch cursor.

    Subclasses set ``batch_size``, ``train``, ``seed``, ``rank`` and ``world_size`` through
    :meth:`_init_epochs` and define :attr:`num_samples`.
    """

    batch_size: int
    train: bool
    seed: int
    rank: int
    world_size: int

    def _init_epochs(self, batch_size: int, train: bool, seed: int, rank: int, world_size: int) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size, self.train, self.seed = batch_size, train, seed
        self.rank, self.world_size = rank, world_size
        self._epoch, self._skip = 0, 0
        self.drop_last = train and self._shard_size() >= batch_size

    @property
    def num_samples(self) -> int:
        """Samples in the whole split (all ranks)."""
        raise NotImplementedError

    def _shard_size(self) -> int:
        return shard_size(self.num_samples, self.rank, self.world_size, equal=self.train)

    def __len__(self) -> int:
        n = self._shard_size()
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        """Select the epoch whose order to produce, starting after ``skip_batches`` batches."""
        self._epoch, self._skip = epoch, skip_batches


class TensorLoader(ShardedEpochs):
    """Batches of an in-memory split, built on ``device``.

    Args:
        data: the split.
        batch_size: samples per batch.
        train: shuffle each epoch and drop the last incomplete batch.
        augment: an :class:`Augment`, or ``None`` for none.
        device: where the split lives and batches are built.
        seed: seed of orders and augmentations.
        image_size: resize (bilinear) to this side if given and different from the data's.
        channels_last: return images in channels-last memory format.
        rank, world_size: this process's share of each epoch (see :func:`shard`).
    """

    def __init__(
        self,
        data: TensorImages,
        batch_size: int,
        *,
        train: bool,
        augment: Augment | None = None,
        device: torch.device | str = "cpu",
        seed: int = 0,
        image_size: int | None = None,
        channels_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.info: DatasetInfo = data.info
        self.device = torch.device(device)
        self.images = data.images.to(self.device)
        self.targets = data.targets.to(self.device)
        self.augment = augment
        self.image_size = image_size
        self.channels_last = channels_last
        self.mean = torch.tensor(data.info.mean, device=self.device).view(1, -1, 1, 1)
        self.std = torch.tensor(data.info.std, device=self.device).view(1, -1, 1, 1)
        self._init_epochs(batch_size, train, seed, rank, world_size)
        self._generator = torch.Generator(device=self.device)

    @property
    def num_samples(self) -> int:
        """Samples in the whole split (all ranks)."""
        return int(self.targets.shape[0])

    def order(self) -> Tensor:
        """This rank's sample positions in the order of the current epoch."""
        if self.train:
            order = epoch_permutation(self.num_samples, self.seed, self._epoch)
        else:
            order = torch.arange(self.num_samples)
        return shard(order, self.rank, self.world_size, equal=self.train).to(self.device)

    def __iter__(self) -> Iterator[Batch]:
        order = self.order()
        for i in range(self._skip, len(self)):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            images = self.images[idx].float().div_(255.0)
            if self.augment is not None:
                self._generator.manual_seed((epoch_seed(self.seed, self._epoch) * 7919 + i) * 131 + self.rank)
                images = self.augment(images, self._generator)
            if self.image_size is not None and self.image_size != images.shape[-1]:
                images = F.interpolate(images, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
            images = (images - self.mean) / self.std
            if self.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            yield Batch(images, self.targets[idx], idx)
        self._skip = 0


class EpochSampler(Sampler[int]):
    """The sample order of a map-style loader's current epoch: its shard of the epoch's order, from the resume point.

    ``loader`` is a :class:`ShardedEpochs` with a ``dataset``.
    """

    def __init__(self, loader: "ShardedEpochs") -> None:
        self.loader = loader

    def __iter__(self) -> Iterator[int]:
        ld = self.loader
        n = len(ld.dataset)  # type: ignore[attr-defined]
        order = epoch_permutation(n, ld.seed, ld._epoch) if ld.train else torch.arange(n)
        order = shard(order, ld.rank, ld.world_size, equal=ld.train)
        start = ld._skip * ld.batch_size
        return iter(order[start:].tolist())

    def __len__(self) -> int:
        return self.loader._shard_size() - self.loader._skip * self.loader.batch_size


class _Indexed(Dataset):
    """Adds the sample index to ``(image, target)`` items."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> tuple[Tensor, int, int]:
        image, target = self.dataset[i]
        return image, int(target), i


class DatasetLoader(ShardedEpochs):
    """A ``DataLoader`` over a map-style dataset of ``(image_tensor, label)`` items.

    Args:
        dataset: items are normalised ``(C, H, W)`` float tensors and int labels.
        info: the dataset's :class:`DatasetInfo`.
        batch_size, train, seed: as for :class:`TensorLoader`.
        device: batches are moved there.
        num_workers: worker processes.
        channels_last: return images in channels-last memory format.
        rank, world_size: this process's share of each epoch (see :func:`shard`).
    """

    def __init__(
        self,
        dataset: Dataset,
        info: DatasetInfo,
        batch_size: int,
        *,
        train: bool,
        device: torch.device | str = "cpu",
        seed: int = 0,
        num_workers: int = 0,
        channels_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.dataset = dataset
        self.info = info
        self.device = torch.device(device)
        self.channels_last = channels_last
        self._init_epochs(batch_size, train, seed, rank, world_size)
        self._worker_seeds = torch.Generator()
        self._loader = DataLoader(
            _Indexed(dataset),
            batch_size=batch_size,
            sampler=EpochSampler(self),
            num_workers=num_workers,
            pin_memory=self.device.type == "cuda",
            drop_last=self.drop_last,
            persistent_workers=False,
            generator=self._worker_seeds,
        )

    @property
    def num_samples(self) -> int:
        """Samples in the whole dataset (all ranks)."""
        return len(self.dataset)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[Batch]:
        # Workers' augmentation seeds derive from (seed, epoch, skip); with num_workers=0 the
        # transforms draw from the process RNG, which the trainer seeds and checkpoints.
        self._worker_seeds.manual_seed((epoch_seed(self.seed, self._epoch) + self._skip) * 131 + self.rank)
        for images, targets, idx in self._loader:
            images = images.to(self.device, non_blocking=True)
            if self.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            yield Batch(images, targets.to(self.device, non_blocking=True), idx.to(self.device, non_blocking=True))
        self._skip = 0
