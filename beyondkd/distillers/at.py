"""Attention transfer (Zagoruyko & Komodakis, ICLR 2017) on every stage.

Spatial attention maps ``Σ_c |A_c|^p`` of student and teacher stages are L2-normalised and
matched (:func:`beyondkd.losses.at.at_loss`), summed over the stage pairs. Channel counts may
differ, so no connector is needed; maps of different sizes are average-pooled to the smaller.
Field defaults (CIFAR-100): p = 2, β = 1000, CE weight 1.
"""

from __future__ import annotations

from pydantic import Field
from torch import Tensor, nn

from beyondkd.bias.schedule import Progress
from beyondkd.distillers.feature_base import FeatureDistiller, FeatureParams, match_spatial
from beyondkd.distillers.registry import register_distiller
from beyondkd.errors import ConfigError
from beyondkd.losses.at import at_loss


class ATParams(FeatureParams):
    """AT hyper-parameters: ``feature_weight`` is β, ``p`` the attention exponent."""

    feature_weight: float = Field(1000.0, ge=0.0)
    p: float = Field(2.0, gt=0.0)


@register_distiller("at")
class AT(FeatureDistiller):
    """Activation-based attention transfer on all stages."""

    Params = ATParams
    description = "spatial attention maps of every stage (Zagoruyko & Komodakis 2017)"

    def default_points(self, model: nn.Module, role: str) -> list[str]:
        return self.stages(model, role)

    def build_connectors(self, student_shapes, teacher_shapes) -> None:
        for name, shape in zip(self.student_points + self.teacher_points, list(student_shapes) + list(teacher_shapes)):
            if len(shape) != 3:
                raise ConfigError(f"method 'at' needs spatial (N, C, H, W) features but point '{name}' has shape {tuple(shape)}: choose conv stages")

    def feature_loss(self, student_feats: list[Tensor], teacher_feats: list[Tensor], progress: Progress) -> Tensor:
        total = 0
        for s, t in zip(student_feats, teacher_feats):
            s, t = match_spatial(s, t)
            total = total + at_loss(s, t, self.params.p)
        return self.params.feature_weight * total
