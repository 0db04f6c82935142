"""A tiny COCO-format dataset drawn on the fly: coloured squares, disks and bars on noise.

Category ids are deliberately sparse (3, 7, 11) so the id → contiguous-label mapping is tested.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

CATEGORIES = [{"id": 3, "name": "square"}, {"id": 7, "name": "disk"}, {"id": 11, "name": "bar"}]
_COLOURS = {3: (230, 40, 40), 7: (40, 200, 60), 11: (50, 80, 230)}


def _draw(draw: ImageDraw.ImageDraw, cat: int, x: int, y: int, s: int) -> list[float]:
    if cat == 3:
        draw.rectangle([x, y, x + s - 1, y + s - 1], fill=_COLOURS[cat])
        return [x, y, s, s]
    if cat == 7:
        draw.ellipse([x, y, x + s - 1, y + s - 1], fill=_COLOURS[cat])
        return [x, y, s, s]
    h = max(s // 3, 4)
    draw.rectangle([x, y, x + s - 1, y + h - 1], fill=_COLOURS[cat])
    return [x, y, s, h]


def write_split(root: Path, split: str, n_images: int, size: int, seed: int, crowd: bool = False) -> tuple[Path, Path]:
    """Draw ``n_images`` images under ``root/split`` and write ``root/annotations/instances_split.json``."""
    rng = np.random.default_rng(seed)
    img_dir = root / split
    img_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    ann_id = 1
    for i in range(n_images):
        image_id = 100 + i
        noise = rng.integers(0, 60, size=(size, size, 3), dtype=np.uint8)
        im = Image.fromarray(noise)
        draw = ImageDraw.Draw(im)
        n_obj = int(rng.integers(1, 3))
        for k in range(n_obj):
            cat = int(rng.choice([3, 7, 11]))
            s = int(rng.integers(size // 4, size // 2))
            # objects in separate horizontal halves so they do not overlap
            x = int(rng.integers(0, size // 2 - s // 2)) + (size // 2 if k else 0)
            x = min(x, size - s)
            y = int(rng.integers(0, size - s))
            x0, y0, w, h = _draw(draw, cat, x, y, s)
            annotations.append({"id": ann_id, "image_id": image_id, "category_id": cat, "bbox": [float(x0), float(y0), float(w), float(h)],
                                "area": float(w * h), "iscrowd": 0})
            ann_id += 1
        if crowd and i == 0:
            annotations.append({"id": ann_id, "image_id": image_id, "category_id": 3, "bbox": [0.0, 0.0, 8.0, 8.0], "area": 64.0, "iscrowd": 1})
            ann_id += 1
        name = f"{image_id:012d}.png"
        im.save(img_dir / name)
        images.append({"id": image_id, "file_name": name, "width": size, "height": size})
    ann_dir = root / "annotations"
    ann_dir.mkdir(parents=True, exist_ok=True)
    ann_file = ann_dir / f"instances_{split}.json"
    ann_file.write_text(json.dumps({"images": images, "annotations": annotations, "categories": CATEGORIES}))
    return img_dir, ann_file


def make_tiny_coco(root: Path, n_train: int = 8, n_val: int = 4, size: int = 64) -> dict[str, str]:
    """Write train and val splits; returns the ``data`` section of a detection config."""
    tr_img, tr_ann = write_split(root, "train", n_train, size, seed=0, crowd=True)
    va_img, va_ann = write_split(root, "val", n_val, size, seed=1)
    return {"train_images": str(tr_img), "train_annotations": str(tr_ann), "val_images": str(va_img), "val_annotations": str(va_ann)}


def tiny_model(backbone: str = "resnet18", **extra: object) -> dict[str, object]:
    """A small detector section: BatchNorm, narrow FPN and heads, few proposals and RoIs."""
    return {
        "backbone": backbone,
        "num_classes": 3,
        "norm": "batch",
        "trainable_layers": 5,
        "fpn_channels": 16,
        "representation_size": 32,
        "rpn_pre_nms_top_n_train": 64,
        "rpn_post_nms_top_n_train": 32,
        "rpn_pre_nms_top_n_test": 32,
        "rpn_post_nms_top_n_test": 16,
        "rpn_batch_size_per_image": 32,
        "box_batch_size_per_image": 16,
        "box_score_thresh": 0.0,
        "box_detections_per_img": 10,
        "anchor_sizes": [8, 16, 32, 64, 128],
        **extra,
    }


def tiny_run(data: dict[str, str], out: Path, **sections: object) -> dict[str, object]:
    """A raw detection config for CPU smoke runs."""
    raw: dict[str, object] = {
        "name": "tiny",
        "output_dir": str(out),
        "data": {**data, "batch_size": 2, "val_batch_size": 4, "num_workers": 0, "min_size": 64, "max_size": 64},
        "train": {"epochs": 1, "lr": 0.01, "warmup_iters": 2, "milestones": [1], "device": "cpu", "log_every": 100, "tensorboard": False},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **value}  # type: ignore[dict-item]
        else:
            raw[key] = value
    return raw
