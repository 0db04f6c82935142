"""COCO-format data: id mapping, crowd/degenerate filtering, flips, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from beyondkd.detection.coco import CocoDetectionData, collate, load_coco
from beyondkd.errors import DataError


def test_sparse_category_ids_map_to_contiguous_labels(tiny_coco: dict[str, str]) -> None:
    ds = CocoDetectionData(tiny_coco["train_images"], tiny_coco["train_annotations"], train=False)
    assert ds.num_classes == 3
    assert ds.cat_to_label == {3: 1, 7: 2, 11: 3}
    assert ds.label_to_cat == {1: 3, 2: 7, 3: 11}
    raw = json.loads(Path(tiny_coco["train_annotations"]).read_text())
    for i in range(len(ds)):
        image, target = ds[i]
        image_id = int(target["image_id"])
        anns = [a for a in raw["annotations"] if a["image_id"] == image_id and not a["iscrowd"]]
        expected = torch.tensor([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]] for a in anns])
        assert torch.allclose(target["boxes"], expected)
        assert target["labels"].tolist() == [ds.cat_to_label[a["category_id"]] for a in anns]
        assert image.dtype == torch.float32 and image.shape == (3, 64, 64)
        assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0


def test_crowd_annotations_are_dropped(tiny_coco: dict[str, str]) -> None:
    raw = json.loads(Path(tiny_coco["train_annotations"]).read_text())
    crowd_image = next(a["image_id"] for a in raw["annotations"] if a["iscrowd"])
    ds = CocoDetectionData(tiny_coco["train_images"], tiny_coco["train_annotations"], train=False)
    _, target = ds[ds.ids.index(crowd_image)]
    n_plain = sum(1 for a in raw["annotations"] if a["image_id"] == crowd_image and not a["iscrowd"])
    assert target["boxes"].shape[0] == n_plain


def test_horizontal_flip_moves_boxes_with_the_image(tiny_coco: dict[str, str]) -> None:
    plain = CocoDetectionData(tiny_coco["train_images"], tiny_coco["train_annotations"], train=False)
    flipped = CocoDetectionData(tiny_coco["train_images"], tiny_coco["train_annotations"], train=True, hflip=1.0)
    assert plain.ids == flipped.ids  # every tiny image has a box, none is dropped
    im0, t0 = plain[0]
    im1, t1 = flipped[0]
    assert torch.equal(im1, im0.flip(-1))
    w = im0.shape[-1]
    expected = torch.stack([w - t0["boxes"][:, 2], t0["boxes"][:, 1], w - t0["boxes"][:, 0], t0["boxes"][:, 3]], dim=1)
    assert torch.allclose(t1["boxes"], expected)
    assert torch.equal(t1["labels"], t0["labels"])


def test_subset_is_seeded_and_collate_keeps_lists(tiny_coco: dict[str, str]) -> None:
    a = CocoDetectionData(tiny_coco["train_images"], tiny_coco["train_annotations"], train=True, subset=3, seed=5)
    b = CocoDetectionData(tiny_coco["train_images"], tiny_coco["train_annotations"], train=True, subset=3, seed=5)
    assert a.ids == b.ids and len(a) == 3
    images, targets = collate([a[0], a[1]])
    assert isinstance(images, list) and len(images) == 2 and len(targets) == 2


def test_missing_annotation_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(DataError) as exc:
        load_coco(tmp_path / "nope.json")
    msg = str(exc.value)
    assert "not found" in msg and "nope.json" in msg and "\n" not in msg


def test_missing_image_folder_and_bad_json_are_one_line(tiny_coco: dict[str, str], tmp_path: Path) -> None:
    with pytest.raises(DataError, match="image folder not found"):
        CocoDetectionData(tmp_path / "missing", tiny_coco["train_annotations"], train=True)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON") as exc:
        load_coco(bad)
    assert "\n" not in str(exc.value)
    no_cats = tmp_path / "nocats.json"
    no_cats.write_text(json.dumps({"images": [], "annotations": [], "categories": []}))
    with pytest.raises(DataError, match="no categories"):
        load_coco(no_cats)
