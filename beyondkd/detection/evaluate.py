"""COCO bbox evaluation of a detector with pycocotools' ``COCOeval``.

Predictions (xyxy boxes in original-image pixels, contiguous labels) are turned into COCO
results (xywh boxes, category ids) and scored against the ground truth of the evaluated images
only (``params.imgIds``), so a validation subset is scored on itself. ``COCOeval`` returns
``-1`` for a metric with no ground truth (e.g. ``APl`` when no large object exists). When the
detector returns no box at all, an empty result set is scored (AP 0 where ground truth exists).
"""

from __future__ import annotations

import contextlib
import io
from typing import Any, Iterable

import numpy as np
import torch
from torch import nn

METRIC_NAMES: tuple[str, ...] = ("AP", "AP50", "AP75", "APs", "APm", "APl")


@torch.no_grad()
def predict(model: nn.Module, loader: Iterable, label_to_cat: dict[int, int], device: torch.device) -> tuple[list[dict[str, Any]], list[int]]:
    """COCO-format detections of ``model`` on every batch of ``loader`` and the image ids seen."""
    was_training = model.training
    model.eval()
    results: list[dict[str, Any]] = []
    image_ids: list[int] = []
    try:
        for batch in loader:  # DetBatch, or (images, targets) from a DataLoader
            images, targets = (batch.images, batch.targets) if hasattr(batch, "images") else batch
            outputs = model([im.to(device) for im in images])
            for out, tgt in zip(outputs, targets):
                image_id = int(tgt["image_id"])
                image_ids.append(image_id)
                boxes = out["boxes"].float().cpu()
                xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1).tolist()
                for box, score, label in zip(xywh, out["scores"].cpu().tolist(), out["labels"].cpu().tolist()):
                    results.append({"image_id": image_id, "category_id": label_to_cat[int(label)], "bbox": box, "score": float(score)})
    finally:
        model.train(was_training)
    return results, image_ids


def coco_bbox_metrics(coco_gt: Any, results: list[dict[str, Any]], image_ids: list[int]) -> tuple[dict[str, float], str]:
    """``COCOeval`` bbox metrics of ``results`` on ``image_ids``.

    Returns:
        ``({AP, AP50, AP75, APs, APm, APl}, summary_text)``; values in ``[0, 1]`` or ``-1``.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        if results:
            coco_dt = coco_gt.loadRes(results)
        else:
            coco_dt = COCO()
            coco_dt.dataset = {"images": list(coco_gt.dataset["images"]), "categories": list(coco_gt.dataset["categories"]), "annotations": []}
            coco_dt.createIndex()
        ev = COCOeval(coco_gt, coco_dt, iouType="bbox")
        ev.params.imgIds = sorted(set(image_ids))
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    stats = np.asarray(ev.stats, dtype=float)
    metrics = {name: float(stats[i]) for i, name in enumerate(METRIC_NAMES)}
    return metrics, buf.getvalue()


def evaluate_detector(model: nn.Module, loader: Iterable, coco_gt: Any, label_to_cat: dict[int, int], device: torch.device) -> tuple[dict[str, float], str]:
    """Predict on ``loader`` and score with COCOeval; see :func:`coco_bbox_metrics`."""
    results, ids = predict(model, loader, label_to_cat, device)
    metrics, text = coco_bbox_metrics(coco_gt, results, ids)
    metrics["detections"] = float(len(results))
    return metrics, text


def format_metrics(metrics: dict[str, float]) -> str:
    """``AP 0.123 | AP50 ... `` in percent-free COCO units."""
    return " | ".join(f"{k} {metrics[k]:.4f}" for k in METRIC_NAMES if k in metrics)


