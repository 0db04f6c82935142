"""Evaluation: top-1 / top-5 accuracy and mean cross-entropy over a loader."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor

from beyondkd.data.base import Batch


@torch.no_grad()
def evaluation_sums(
    model: Callable[[Tensor], Tensor],
    loader: Iterable[Batch],
    autocast: Callable[[], object] = nullcontext,
) -> Tensor:
    """Sums ``[correct top-1, correct top-5, CE sum, count]`` as a float64 tensor.

    Sums (not means) so that ranks of a distributed run can all-reduce them before dividing.
    """
    totals: Tensor | None = None
    for batch in loader:
        with autocast():
            logits = model(batch.images)
        logits = logits.float()
        k = min(5, logits.shape[1])
        topk = logits.topk(k, dim=1).indices
        hit = topk == batch.targets[:, None]
        row = torch.stack(
            [
                hit[:, 0].sum().double(),
                hit.any(dim=1).sum().double(),
                F.cross_entropy(logits, batch.targets, reduction="sum").double(),
                torch.tensor(float(len(batch)), dtype=torch.float64, device=logits.device),
            ]
        )
        totals = row if totals is None else totals + row
    if totals is None:
        raise ValueError("evaluation loader is empty")
    return totals


def metrics_from_sums(sums: Tensor) -> dict[str, float]:
    """``val_acc``, ``val_top5`` (percent), ``val_loss`` and ``val_count`` (samples seen) from
    :func:`evaluation_sums`."""
    top1, top5, loss, count = (float(x) for x in sums.cpu())
    return {"val_acc": 100.0 * top1 / count, "val_top5": 100.0 * top5 / count, "val_loss": loss / count, "val_count": int(count)}


def evaluate(model: Callable[[Tensor], Tensor], loader: Iterable[Batch], autocast: Callable[[], object] = nullcontext) -> dict[str, float]:
    """Accuracy and loss of ``model`` (put it in eval mode first) on ``loader``."""
    return metrics_from_sums(evaluation_sums(model, loader, autocast))
