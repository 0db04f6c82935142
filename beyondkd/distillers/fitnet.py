"""FitNets (Romero et al., ICLR 2015): a hint on a middle stage through a conv regressor.

The student's *guided* layer (default: its middle stage) is mapped by a regressor
(3×3 conv + BN + ReLU, as in the field's implementations) to the width of the teacher's
*hint* layer (default: the teacher's middle stage) and pulled towards it with an L2 loss
(:func:`beyondkd.losses.fitnet.hint_loss`). Field default on CIFAR-100: β = 100, CE weight 1.
The paper's two-stage schedule (hint pre-training, then KD) is replaced, as in the field's
benchmarks, by one stage with CE + β·hint.
"""

from __future__ import annotations

from pydantic import Field
from torch import Tensor, nn

from beyondkd.bias.schedule import Progress
from beyondkd.distillers.feature_base import ConnectorBatchNorm2d, FeatureDistiller, FeatureParams, as_map, match_spatial
from beyondkd.distillers.registry import register_distiller
from beyondkd.losses.fitnet import hint_loss


class FitNetParams(FeatureParams):
    """FitNet hyper-parameters: ``feature_weight`` is β of the hint loss."""

    feature_weight: float = Field(100.0, ge=0.0)


def conv_regressor(c_in: int, c_out: int) -> nn.Module:
    """3×3 conv + BN + ReLU mapping ``c_in`` to ``c_out`` channels (spatial size kept)."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, 1, 1, bias=False), ConnectorBatchNorm2d(c_out), nn.ReLU(inplace=True))


@register_distiller("fitnet")
class FitNet(FeatureDistiller):
    """Hint learning on one middle stage with a convolutional regressor."""

    Params = FitNetParams
    description = "hint on a middle stage via a conv regressor (Romero et al. 2015)"

    def default_points(self, model: nn.Module, role: str) -> list[str]:
        stages = self.stages(model, role)
        return [stages[(len(stages) + 1) // 2 - 1]]

    def build_connectors(self, student_shapes, teacher_shapes) -> None:
        self.regressors = nn.ModuleList(conv_regressor(s[0], t[0]) for s, t in zip(student_shapes, teacher_shapes))

    def feature_loss(self, student_feats: list[Tensor], teacher_feats: list[Tensor], progress: Progress) -> Tensor:
        total = 0
        for reg, s, t in zip(self.regressors, student_feats, teacher_feats):
            s, t = match_spatial(reg(as_map(s)), as_map(t))
            total = total + hint_loss(s, t)
        return self.params.feature_weight * total
