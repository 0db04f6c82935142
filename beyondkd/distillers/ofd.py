"""Overhaul of feature distillation (Heo et al., ICCV 2019).

* **Position**: pre-ReLU features (``preact_stageK`` points, i.e. ``path:in`` of the ReLU that
  ends each stage), every stage by default.
* **Teacher transform**: margin ReLU ``max(x, m)`` with the per-channel margin
  ``m = E[x | x < 0]`` computed once from the teacher's batch norm before that ReLU
  (:func:`beyondkd.losses.ofd.margin_from_bn`; the BN is found automatically as the batch norm
  that runs last before the point on the main path, shortcuts skipped
  (:func:`~beyondkd.distillers.feature_base.producing_module`), or named in ``teacher_bn``).
* **Student transform**: a connector 1×1 conv + BN to the teacher's width.
* **Distance**: partial L2, summed over channels and positions per sample.

Stage ``k`` of ``K`` is weighted ``2^{-(K−k)}`` (the deepest 1) and the total by
``feature_weight = 1e-3`` (the authors' CIFAR code divides the per-sample sum by 1000), CE
weight 1.
"""

from __future__ import annotations

import math

from pydantic import Field
from torch import Tensor, nn

from beyondkd.bias.schedule import Progress
from beyondkd.distillers.feature_base import ConnectorBatchNorm2d, FeatureDistiller, FeatureParams, as_map, match_spatial, producing_module
from beyondkd.distillers.registry import register_distiller
from beyondkd.errors import ConfigError
from beyondkd.losses.ofd import margin_from_bn, ofd_loss


class OFDParams(FeatureParams):
    """OFD hyper-parameters.

    Attributes:
        feature_weight: weight of the summed partial-L2 term.
        teacher_bn: module names of the teacher's batch norms giving the margins, one per
            teacher point (``None`` = found automatically).
    """

    feature_weight: float = Field(1e-3, ge=0.0)
    teacher_bn: list[str] | None = None


def ofd_connector(c_in: int, c_out: int) -> nn.Module:
    """1×1 conv + BN (the paper's student transform), He-initialised."""
    conv = nn.Conv2d(c_in, c_out, 1, bias=False)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    bn = ConnectorBatchNorm2d(c_out)
    return nn.Sequential(conv, bn)


@register_distiller("ofd")
class OFD(FeatureDistiller):
    """Pre-ReLU feature distillation with margin ReLU and partial L2."""

    Params = OFDParams
    description = "pre-ReLU features, margin ReLU, partial L2 (Heo et al. 2019)"

    def default_points(self, model: nn.Module, role: str) -> list[str]:
        stages = self.stages(model, role)
        return self.require_points(model, role, [f"preact_{s}" for s in stages])

    def _teacher_bns(self, teacher_shapes) -> list[nn.BatchNorm2d]:
        assert self.teacher is not None
        names = self.params.teacher_bn
        modules = dict(self.teacher.named_modules())
        if names is not None:
            if len(names) != len(self.teacher_points):
                raise ConfigError(f"method 'ofd': teacher_bn has {len(names)} names for {len(self.teacher_points)} teacher points")
            bad = [n for n in names if not isinstance(modules.get(n), nn.BatchNorm2d)]
            if bad:
                raise ConfigError(f"method 'ofd': teacher_bn '{bad[0]}' is not a BatchNorm2d of the teacher")
            return [modules[n] for n in names]
        bns = []
        example = self.example_input(self.teacher)
        for point, shape in zip(self.teacher_points, teacher_shapes):
            bn = producing_module(self.teacher, point, nn.BatchNorm2d, int(shape[0]), "num_features", example)
            if bn is None:
                raise ConfigError(
                    f"method 'ofd': no batch norm found before teacher point '{point}': "
                    "set method.params.teacher_bn to the BatchNorm2d module names (one per point)"
                )
            bns.append(bn)
        return bns

    def build_connectors(self, student_shapes, teacher_shapes) -> None:
        self.connectors = nn.ModuleList(ofd_connector(s[0], t[0]) for s, t in zip(student_shapes, teacher_shapes))
        for k, bn in enumerate(self._teacher_bns(teacher_shapes)):
            self.register_buffer(f"margin{k}", margin_from_bn(bn.weight, bn.bias).float())
        n = len(self.connectors)
        self.stage_weights = [math.pow(2.0, -(n - 1 - k)) for k in range(n)]

    def margins(self) -> list[Tensor]:
        return [getattr(self, f"margin{k}") for k in range(len(self.connectors))]

    def feature_loss(self, student_feats: list[Tensor], teacher_feats: list[Tensor], progress: Progress) -> Tensor:
        total = 0
        for conn, margin, w, s, t in zip(self.connectors, self.margins(), self.stage_weights, student_feats, teacher_feats):
            s, t = match_spatial(conn(as_map(s)), as_map(t))
            total = total + w * ofd_loss(s, t, margin)
        return self.params.feature_weight * total
