"""Hierarchical context loss of ReviewKD (Chen et al., CVPR 2021, §3.3), per sample.

For one stage, the fused student feature ``F_s`` and teacher feature ``F_t`` ``(N, C, H, W)``
are compared at several pyramid levels: the full resolution, then adaptive average pooling to
``4×4``, ``2×2`` and ``1×1`` (levels smaller than the map only). Level ``k`` (0 = full) has
weight ``2^{-k}``; the distances (MSE) are averaged with these weights (sum / total weight),
as in the authors' implementation.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor

from beyondkd.losses.precision import full_precision

#: the pyramid pooling sizes of the paper
DEFAULT_LEVELS: tuple[int, ...] = (4, 2, 1)


@full_precision
def hcl_loss(student: Tensor, teacher: Tensor, levels: Sequence[int] = DEFAULT_LEVELS) -> Tensor:
    """Per-sample hierarchical context loss for one stage.

    Args:
        student: ``(N, C, H, W)`` fused student feature.
        teacher: ``(N, C, H, W)``; gradients do not flow into it.
        levels: pooled sizes; a level is used only when it is smaller than ``H``.

    Returns:
        ``(N,)`` weighted mean of per-level MSEs.
    """
    s, t = student, teacher.detach()
    loss = (s - t).pow(2).flatten(1).mean(1)
    weight, total = 1.0, 1.0
    for size in levels:
        if size >= s.shape[2]:
            continue
        weight /= 2.0
        ps, pt = F.adaptive_avg_pool2d(s, size), F.adaptive_avg_pool2d(t, size)
        loss = loss + weight * (ps - pt).pow(2).flatten(1).mean(1)
        total += weight
    return loss / total
