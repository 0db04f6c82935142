"""COCOeval scoring: perfect, wrong-class, shifted and empty predictions through ``predict``."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from beyondkd.detection.coco import CocoDetectionData, detection_loader
from beyondkd.detection.evaluate import coco_bbox_metrics, evaluate_detector


class ReplayDetector(nn.Module):
    """Returns prepared outputs in call order (the val loader does not shuffle)."""

    def __init__(self, outputs: list[dict[str, torch.Tensor]]) -> None:
        super().__init__()
        self.outputs = outputs
        self.calls = 0

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        out = self.outputs[self.calls : self.calls + len(images)]
        self.calls += len(images)
        return out


def _val(tiny_coco: dict[str, str]) -> CocoDetectionData:
    return CocoDetectionData(tiny_coco["val_images"], tiny_coco["val_annotations"], train=False)


def _score(ds: CocoDetectionData, outputs: list[dict[str, torch.Tensor]]) -> dict[str, float]:
    loader = detection_loader(ds, 3, False, 0)
    metrics, text = evaluate_detector(ReplayDetector(outputs), loader, ds.coco, ds.label_to_cat, torch.device("cpu"))
    assert "Average Precision" in text
    return metrics


def _gt_outputs(ds: CocoDetectionData, relabel: dict[int, int] | None = None, shift: float = 0.0) -> list[dict[str, torch.Tensor]]:
    outs = []
    for i in range(len(ds)):
        _, t = ds[i]
        labels = t["labels"] if relabel is None else torch.tensor([relabel[int(x)] for x in t["labels"]])
        outs.append({"boxes": t["boxes"] + shift, "scores": torch.ones(len(labels)), "labels": labels})
    return outs


def test_ground_truth_as_predictions_scores_ap_one(tiny_coco: dict[str, str]) -> None:
    ds = _val(tiny_coco)
    m = _score(ds, _gt_outputs(ds))
    assert m["AP"] == pytest.approx(1.0) and m["AP50"] == pytest.approx(1.0) and m["AP75"] == pytest.approx(1.0)
    assert m["APl"] == -1.0  # no large object in 64×64 images: COCOeval's "no ground truth"


def test_wrong_classes_score_zero_and_shifted_boxes_lose_strict_ap(tiny_coco: dict[str, str]) -> None:
    ds = _val(tiny_coco)
    assert _score(ds, _gt_outputs(ds, relabel={1: 2, 2: 3, 3: 1}))["AP"] == 0.0
    shifted = _score(ds, _gt_outputs(ds, shift=3.0))
    assert shifted["AP75"] < 1.0 and shifted["AP"] < 1.0
    assert shifted["AP50"] >= shifted["AP75"]


def test_no_detections_scores_zero_instead_of_failing(tiny_coco: dict[str, str]) -> None:
    ds = _val(tiny_coco)
    empty = [{"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64)}] * len(ds)
    m = _score(ds, empty)
    assert m["AP"] == 0.0 and m["detections"] == 0.0


def test_a_subset_is_scored_on_its_own_images(tiny_coco: dict[str, str]) -> None:
    ds = _val(tiny_coco)
    first_two = CocoDetectionData(tiny_coco["val_images"], tiny_coco["val_annotations"], train=False, first=2)
    results = []
    for i in range(2):
        _, t = ds[i]
        for box, label in zip(t["boxes"].tolist(), t["labels"].tolist()):
            results.append({"image_id": int(t["image_id"]), "category_id": ds.label_to_cat[label],
                            "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]], "score": 1.0})
    metrics, _ = coco_bbox_metrics(first_two.coco, results, first_two.ids)
    assert metrics["AP"] == pytest.approx(1.0)  # the two other images' boxes are not counted as missed
