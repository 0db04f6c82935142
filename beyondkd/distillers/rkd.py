"""Relational KD (Park et al., CVPR 2019): distance and angle relations of pooled embeddings.

Applied to the pooled embeddings (the ``pool`` feature point: the input of the classifier) of
student and teacher; relations are dimension-free, so no connector is needed. Field defaults:
λ_D = 25 (distance), λ_A = 50 (angle), CE weight 1. Batch-relational: the per-sample values
are per-row means whose mean is the usual loss (:mod:`beyondkd.losses.rkd`).
"""

from __future__ import annotations

from pydantic import Field
from torch import Tensor, nn

from beyondkd.bias.schedule import Progress
from beyondkd.distillers.feature_base import FeatureDistiller, FeatureParams
from beyondkd.distillers.registry import register_distiller
from beyondkd.losses.rkd import rkd_loss


class RKDParams(FeatureParams):
    """RKD hyper-parameters: weights of the distance and angle terms."""

    distance_weight: float = Field(25.0, ge=0.0)
    angle_weight: float = Field(50.0, ge=0.0)


@register_distiller("rkd")
class RKD(FeatureDistiller):
    """Distance-wise and angle-wise relational distillation."""

    per_sample_feature_loss = False  # batch-relational: a row's value depends on the other rows
    Params = RKDParams
    description = "distance + angle relations of pooled embeddings (Park et al. 2019)"
    FEATURE_RANKS = (1, 2, 3)  # features are flattened per sample

    def default_points(self, model: nn.Module, role: str) -> list[str]:
        return self.require_points(model, role, ["pool"])

    def feature_loss(self, student_feats: list[Tensor], teacher_feats: list[Tensor], progress: Progress) -> Tensor:
        p = self.params
        total = 0
        for s, t in zip(student_feats, teacher_feats):
            total = total + rkd_loss(s.flatten(1), t.flatten(1), p.distance_weight, p.angle_weight)
        return total
