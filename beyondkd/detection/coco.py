"""COCO-format detection data through pycocotools.

:class:`CocoDetectionData` reads an annotation json and an image folder. COCO category ids
(sparse: 1..90 for 80 classes) map to contiguous labels ``1..K`` in the order of increasing id;
label 0 is background, as torchvision's Faster R-CNN expects. Crowd annotations and boxes with
no area are dropped from the targets (the field's practice); training drops images left with
no box (they give the RoI head nothing to learn and torchvision's sampler needs none).

Transforms are torchvision's ``transforms.v2``: image to float tensor in ``[0, 1]`` and, for
training, a random horizontal flip that also flips the boxes. Resizing and normalisation are
the detector's ``GeneralizedRCNNTransform``.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Iterator

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from beyondkd.data.loaders import EpochSampler, ShardedEpochs, epoch_seed
from beyondkd.errors import DataError

Target = dict[str, Tensor]


#: how to get the optional dependency of ``beyondkd detect``
INSTALL_DETECTION = "pip install 'beyondkd[detection]' (or pip install pycocotools)"


def require_pycocotools() -> None:
    """A one-line error naming the install command when pycocotools (COCO data and COCOeval) is missing."""
    try:
        import pycocotools.coco  # noqa: F401
        import pycocotools.cocoeval  # noqa: F401
    except ImportError:
        raise DataError(f"detection needs pycocotools, which is not installed: {INSTALL_DETECTION}") from None


@dataclass
class DetBatch:
    """One detection batch: images of different sizes and their targets, on the training device.

    Attributes:
        images: ``B`` float images ``(3, H_i, W_i)`` in ``[0, 1]``.
        targets: per image ``boxes`` ``(M_i, 4)``, ``labels`` ``(M_i,)`` and ``image_id``.
    """

    images: list[Tensor]
    targets: list[Target]

    def __len__(self) -> int:
        return len(self.images)


def load_coco(annotation_file: str | Path) -> Any:
    """A ``pycocotools.coco.COCO`` of ``annotation_file`` with one-line errors."""
    require_pycocotools()
    from pycocotools.coco import COCO

    path = Path(annotation_file)
    if not path.is_file():
        raise DataError(f"COCO annotation file not found: {path} (set data.train_annotations / data.val_annotations)")
    try:
        json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path} is not valid JSON ({exc}): give a COCO instances_*.json file") from None
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            coco = COCO(str(path))
    except (KeyError, TypeError, AssertionError) as exc:
        raise DataError(f"{path} is not a COCO annotation file (problem: {exc!r}); it needs images, annotations and categories") from None
    if not coco.getCatIds():
        raise DataError(f"{path} lists no categories: a COCO detection file needs a 'categories' list")
    return coco


class CocoDetectionData(Dataset):
    """``(image, target)`` pairs of a COCO-format dataset.

    Args:
        images_dir: folder holding the ``file_name`` of every image.
        annotation_file: COCO instances json.
        train: training mode (random flip; images without boxes dropped).
        hflip: flip probability in training mode.
        subset: keep a seeded random subset of this many images.
        first: keep the first ``first`` image ids (deterministic evaluation subsets).
        seed: seed of the subset draw.

    Each target has ``boxes`` ``(M, 4)`` float xyxy in pixels, ``labels`` ``(M,)`` int64 in
    ``1..K`` and ``image_id`` (the COCO id, a 0-dim int64 tensor).
    """

    def __init__(
        self,
        images_dir: str | Path,
        annotation_file: str | Path,
        train: bool,
        hflip: float = 0.5,
        subset: int | None = None,
        first: int | None = None,
        seed: int = 0,
    ) -> None:
        self.images_dir = Path(images_dir)
        if not self.images_dir.is_dir():
            raise DataError(f"COCO image folder not found: {self.images_dir} (set data.train_images / data.val_images)")
        self.coco = load_coco(annotation_file)
        self.cat_ids: list[int] = sorted(self.coco.getCatIds())
        self.cat_to_label = {c: i + 1 for i, c in enumerate(self.cat_ids)}
        self.label_to_cat = {i + 1: c for i, c in enumerate(self.cat_ids)}
        ids = sorted(self.coco.getImgIds())
        if train:
            ids = [i for i in ids if self._boxes(i)[0].shape[0] > 0]
        if subset is not None and subset < len(ids):
            g = torch.Generator().manual_seed(seed)
            ids = sorted(ids[j] for j in torch.randperm(len(ids), generator=g)[:subset].tolist())
        if first is not None:
            ids = ids[:first]
        if not ids:
            raise DataError(f"{annotation_file}: no usable images (training needs images with at least one box)")
        self.ids = ids
        steps: list[Any] = [v2.ToImage()]
        if train and hflip > 0:
            steps.append(v2.RandomHorizontalFlip(hflip))
        steps.append(v2.ToDtype(torch.float32, scale=True))
        self.transform = v2.Compose(steps)

    @property
    def num_classes(self) -> int:
        """Foreground classes ``K`` (labels run ``1..K``)."""
        return len(self.cat_ids)

    def _boxes(self, image_id: int) -> tuple[Tensor, Tensor]:
        anns = self.coco.imgToAnns.get(image_id, [])
        boxes, labels = [], []
        for a in anns:
            if a.get("iscrowd", 0):
                continue
            x, y, w, h = a["bbox"]
            if w <= 0 or h <= 0:
                continue
            boxes.append([x, y, x + w, y + h])
            labels.append(self.cat_to_label[a["category_id"]])
        return (
            torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            torch.tensor(labels, dtype=torch.int64),
        )

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple[Tensor, Target]:
        image_id = self.ids[index]
        info = self.coco.imgs[image_id]
        path = self.images_dir / info["file_name"]
        try:
            with Image.open(path) as im:
                image = im.convert("RGB")
        except (FileNotFoundError, OSError) as exc:
            raise DataError(f"cannot read image {path} of COCO id {image_id}: {exc}") from None
        boxes, labels = self._boxes(image_id)
        h, w = image.height, image.width
        target = {
            "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(h, w)),
            "labels": labels,
            "image_id": torch.tensor(image_id, dtype=torch.int64),
        }
        img, target = self.transform(image, target)
        target["boxes"] = target["boxes"].as_subclass(Tensor)
        return img.as_subclass(Tensor), target


def collate(batch: list[tuple[Tensor, Target]]) -> tuple[list[Tensor], list[Target]]:
    """Detection batches are lists: images differ in size."""
    images, targets = zip(*batch)
    return list(images), list(targets)


def detection_loader(dataset: CocoDetectionData, batch_size: int, shuffle: bool, num_workers: int, seed: int = 0) -> DataLoader:
    """A ``DataLoader`` of lists of images and targets (seeded shuffling)."""
    g = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        collate_fn=collate,
        generator=g,
        drop_last=False,
        persistent_workers=num_workers > 0,
        pin_memory=torch.cuda.is_available(),
    )


class DetectionLoader(ShardedEpochs):
    """:class:`DetBatch` batches of a :class:`CocoDetectionData`, with deterministic, resumable order.

    Each epoch's order is drawn from ``(seed, epoch)`` and sharded over the processes exactly as
    the classification loaders do (:mod:`beyondkd.data.loaders`), so ``set_epoch(e, skip_batches=k)``
    resumes an interrupted epoch where it stopped and every process runs the same number of steps.

    Args:
        dataset: the images and targets.
        batch_size: images per batch.
        train: shuffle each epoch and drop the last incomplete batch.
        device: where batches are moved.
        seed: seed of the orders.
        num_workers: ``DataLoader`` worker processes.
        rank, world_size: this process's share of each epoch.
        max_batches: stop each epoch after this many batches (``train.max_steps_per_epoch``).
    """

    def __init__(
        self,
        dataset: CocoDetectionData,
        batch_size: int,
        *,
        train: bool,
        device: torch.device | str = "cpu",
        seed: int = 0,
        num_workers: int = 0,
        rank: int = 0,
        world_size: int = 1,
        max_batches: int | None = None,
    ) -> None:
        self.dataset = dataset
        self.device = torch.device(device)
        self.max_batches = max_batches
        self._init_epochs(batch_size, train, seed, rank, world_size)
        self._worker_seeds = torch.Generator()
        self._loader = DataLoader(
            dataset, batch_size=batch_size, sampler=EpochSampler(self), num_workers=num_workers, collate_fn=collate,
            pin_memory=self.device.type == "cuda", drop_last=self.drop_last, generator=self._worker_seeds,
        )

    @property
    def num_samples(self) -> int:
        """Images in the whole dataset (all ranks)."""
        return len(self.dataset)

    def __len__(self) -> int:
        n = super().__len__()
        return n if self.max_batches is None else min(n, self.max_batches)

    def __iter__(self) -> Iterator[DetBatch]:
        # with num_workers=0 the flips draw from the process RNG, which the trainer checkpoints
        self._worker_seeds.manual_seed((epoch_seed(self.seed, self._epoch) + self._skip) * 131 + self.rank)
        end = len(self)
        for i, (images, targets) in enumerate(self._loader, start=self._skip):
            if i >= end:
                break
            yield DetBatch([im.to(self.device, non_blocking=True) for im in images],
                           [{k: v.to(self.device, non_blocking=True) for k, v in t.items()} for t in targets])
        self._skip = 0
