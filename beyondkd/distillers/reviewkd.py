"""Review KD (Chen et al., CVPR 2021): attention-based fusion and hierarchical context loss.

The student's features of every stage plus its pooled embedding (``stage1..K``, ``pool``) are
*reviewed* from the deepest to the shallowest: an **ABF** (attention-based fusion) module per
level reduces the level's feature to ``mid`` channels (1×1 conv + BN), fuses it with the fused
output of the deeper level (resized to its size) using two spatial attention maps predicted by
a 1×1 conv + sigmoid from both, and maps the result to the teacher's width (3×3 conv + BN,
resized to the teacher's map). Each output is compared with the teacher's feature at the same
level by the **HCL** (:func:`beyondkd.losses.reviewkd.hcl_loss`), summed over levels.

Field defaults (CIFAR-100): weight 1, linear warm-up of the weight over 20 epochs,
``mid = min(512, C of the deepest student feature)``, pyramid levels 4, 2, 1; CE weight 1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from beyondkd.bias.schedule import Progress
from beyondkd.distillers.feature_base import ConnectorBatchNorm2d, FeatureDistiller, FeatureParams, as_map
from beyondkd.distillers.registry import register_distiller
from beyondkd.losses.reviewkd import hcl_loss


class ReviewKDParams(FeatureParams):
    """ReviewKD hyper-parameters.

    Attributes:
        feature_weight: weight of the summed HCL.
        warmup_epochs: the weight grows linearly over the first epochs (``(e+1)/warmup``).
        levels: pooled sizes of the HCL pyramid.
        max_mid_channels: cap of the fusion width.
    """

    feature_weight: float = Field(1.0, ge=0.0)
    warmup_epochs: int = Field(20, ge=0)
    levels: list[int] = Field(default_factory=lambda: [4, 2, 1])
    max_mid_channels: int = Field(512, ge=1)


class ABF(nn.Module):
    """Attention-based fusion of one level with the fused output of the deeper level.

    Args:
        c_in: channels of the student's feature at this level.
        mid: fusion width.
        c_out: channels of the teacher's feature at this level.
        fuse: whether a deeper level exists (the deepest level has nothing to fuse).
    """

    def __init__(self, c_in: int, mid: int, c_out: int, fuse: bool) -> None:
        super().__init__()
        self.reduce = nn.Sequential(nn.Conv2d(c_in, mid, 1, bias=False), ConnectorBatchNorm2d(mid))
        self.expand = nn.Sequential(nn.Conv2d(mid, c_out, 3, 1, 1, bias=False), ConnectorBatchNorm2d(c_out))
        self.attention = nn.Sequential(nn.Conv2d(2 * mid, 2, 1), nn.Sigmoid()) if fuse else None
        for m in (self.reduce[0], self.expand[0]):
            nn.init.kaiming_uniform_(m.weight, a=1)

    def forward(self, x: Tensor, deeper: Tensor | None, out_size: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """Returns ``(output at the teacher's size, fused mid-width feature for the next level)``."""
        x = self.reduce(x)
        if self.attention is not None and deeper is not None:
            deeper = F.interpolate(deeper, size=x.shape[-2:], mode="nearest")
            w = self.attention(torch.cat([x, deeper], dim=1))
            x = x * w[:, 0:1] + deeper * w[:, 1:2]
        y = self.expand(x)
        if tuple(y.shape[-2:]) != tuple(out_size):
            y = F.interpolate(y, size=out_size, mode="nearest")
        return y, x


@register_distiller("reviewkd")
class ReviewKD(FeatureDistiller):
    """Knowledge review: multi-level fused student features against each teacher level."""

    Params = ReviewKDParams
    description = "attention-based fusion + hierarchical context loss over all levels (Chen et al. 2021)"

    def default_points(self, model: nn.Module, role: str) -> list[str]:
        return self.stages(model, role) + self.require_points(model, role, ["pool"])

    def build_connectors(self, student_shapes, teacher_shapes) -> None:
        s_ch = [int(s[0]) for s in student_shapes]
        t_ch = [int(t[0]) for t in teacher_shapes]
        mid = min(self.params.max_mid_channels, s_ch[-1])
        n = len(s_ch)
        self.abfs = nn.ModuleList(ABF(s_ch[i], mid, t_ch[i], fuse=i < n - 1) for i in range(n))
        self.teacher_sizes = [tuple(t[1:]) if len(t) == 3 else (1, 1) for t in teacher_shapes]

    def fused_features(self, student_feats: list[Tensor]) -> list[Tensor]:
        """The review path: ABF outputs, shallowest first, each at its teacher level's size."""
        outs: list[Tensor] = [None] * len(student_feats)  # type: ignore[list-item]
        deeper = None
        for i in range(len(student_feats) - 1, -1, -1):
            outs[i], deeper = self.abfs[i](as_map(student_feats[i]), deeper, self.teacher_sizes[i])
        return outs

    def feature_loss(self, student_feats: list[Tensor], teacher_feats: list[Tensor], progress: Progress) -> Tensor:
        p = self.params
        total = 0
        for s, t in zip(self.fused_features(student_feats), teacher_feats):
            total = total + hcl_loss(s, as_map(t), p.levels)
        ramp = 1.0 if p.warmup_epochs == 0 else min((progress.epoch + 1) / p.warmup_epochs, 1.0)
        return p.feature_weight * ramp * total
