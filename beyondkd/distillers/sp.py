"""Similarity-preserving KD (Tung & Mori, ICCV 2019) on the last stage.

Matches the row-normalised batch similarity matrices ``G̃`` of student and teacher activations
(:func:`beyondkd.losses.sp.sp_loss`); no connector (the matrices are ``b × b``). Field default
(CIFAR): γ = 3000 on the last stage, CE weight 1. The loss is batch-relational: the per-sample
values are each row's share, whose mean is the paper's loss.
"""

from __future__ import annotations

from pydantic import Field
from torch import Tensor, nn

from beyondkd.bias.schedule import Progress
from beyondkd.distillers.feature_base import FeatureDistiller, FeatureParams
from beyondkd.distillers.registry import register_distiller
from beyondkd.losses.sp import sp_loss


class SPParams(FeatureParams):
    """SP hyper-parameters: ``feature_weight`` is γ."""

    feature_weight: float = Field(3000.0, ge=0.0)


@register_distiller("sp")
class SP(FeatureDistiller):
    """Similarity-preserving distillation of batch similarity matrices."""

    per_sample_feature_loss = False  # batch-relational: a row's value depends on the other rows
    Params = SPParams
    description = "batch similarity matrices of the last stage (Tung & Mori 2019)"
    FEATURE_RANKS = (1, 2, 3)  # features are flattened per sample

    def default_points(self, model: nn.Module, role: str) -> list[str]:
        return self.stages(model, role)[-1:]

    def feature_loss(self, student_feats: list[Tensor], teacher_feats: list[Tensor], progress: Progress) -> Tensor:
        total = 0
        for s, t in zip(student_feats, teacher_feats):
            total = total + sp_loss(s, t)
        return self.params.feature_weight * total
