"""Hinton et al. (2015) knowledge distillation, optionally with the BTKD plug-in.

``L = w_ce · CE + w_kd · T² · KL(p_t^T ‖ p_s^T)``; with the plug-in, the KL term is split into
easy/hard sets, the hard set rectified and weighted by γ (BTKD eq. 8–9).
"""

from __future__ import annotations

from functools import partial

from pydantic import BaseModel, ConfigDict, Field

from beyondkd.bias.schedule import Progress
from beyondkd.data.base import Batch
from beyondkd.distillers.base import Distiller, StepOutput
from beyondkd.distillers.registry import register_distiller
from beyondkd.losses.kd import kd_kl


class KDParams(BaseModel):
    """KD hyper-parameters (field defaults for CIFAR-100: T = 4, CE 0.1, KD 0.9)."""

    model_config = ConfigDict(extra="forbid")
    temperature: float = Field(4.0, gt=0.0)
    ce_weight: float = Field(0.1, ge=0.0)
    kd_weight: float = Field(0.9, ge=0.0)


@register_distiller("kd")
class KD(Distiller):
    """Logit distillation with temperature (Hinton et al. 2015)."""

    Params = KDParams
    description = "soft teacher logits, KL at temperature T"

    def training_step(self, batch: Batch, progress: Progress) -> StepOutput:
        p = self.params
        teacher_logits = self.teacher_logits(batch)
        logits = self.student(batch.images)
        loss, terms, stats = self.logit_distillation(
            logits,
            teacher_logits,
            batch.targets,
            progress,
            partial(kd_kl, temperature=p.temperature),
            p.temperature,
            p.ce_weight,
            p.kd_weight,
        )
        return StepOutput(loss, logits, terms, stats)
