"""Decoupled knowledge distillation (Zhao et al., CVPR 2022), optionally with the BTKD plug-in.

``L = w_ce · CE + w(e) · T² (α · TCKD + β · NCKD)`` where ``w(e) = min((e + 1) / E_w, 1)`` ramps
the distillation term linearly over the first ``E_w = warmup_epochs`` epochs (``e`` is the
0-based epoch, so the first epoch already gets ``1 / E_w``, as the authors' code does with its
1-based epoch counter). See :mod:`beyondkd.losses.dkd` for TCKD/NCKD.

With the plug-in (``method.bias``), the teacher's wrong rows are rectified at ``T`` *before*
TCKD and NCKD are computed, and the per-sample DKD loss is split into easy (teacher right) and
hard (teacher wrong, rectified) sets weighted by γ (BTKD eq. 9). For a rectified row, TCKD then
transfers the binary confidence of the *rectified* label probability (raised from ``t_a`` to
``t'_a``), and NCKD transfers the non-target distribution in which the teacher's wrong top class
``b`` has lost the mass that moved to the label (``t'_b < t_b``, other classes unchanged before
renormalisation among the non-target classes).
"""

from __future__ import annotations

from functools import partial

import torch
from pydantic import BaseModel, ConfigDict, Field

from beyondkd.core import Batch, Progress, StepOutput
from beyondkd.distillers.base import Distiller
from beyondkd.distillers.registry import register_distiller
from beyondkd.losses.dkd import dkd_loss, warmup_factor

__all__ = ["DKD", "DKDParams", "dkd_per_sample", "warmup_factor"]


class DKDParams(BaseModel):
    """DKD hyper-parameters (field defaults on CIFAR-100: CE 1, α 1, β 8, T 4, 20 warm-up epochs)."""

    model_config = ConfigDict(extra="forbid")
    ce_weight: float = Field(1.0, ge=0.0)
    alpha: float = Field(1.0, ge=0.0, description="weight of TCKD")
    beta: float = Field(8.0, ge=0.0, description="weight of NCKD (6 or 2 for some CIFAR pairs)")
    temperature: float = Field(4.0, gt=0.0)
    warmup_epochs: float = Field(20.0, ge=0.0, description="epochs of linear warm-up of the DKD weight (0: none)")


@register_distiller("dkd")
class DKD(Distiller):
    """Target and non-target class KD with separate weights (Zhao et al. 2022)."""

    Params = DKDParams
    description = "decoupled KD: TCKD (α) + NCKD (β), linear warm-up"

    def training_step(self, batch: Batch, progress: Progress) -> StepOutput:
        p = self.params
        teacher_logits = self.teacher_logits(batch)
        logits = self.student(batch.images)
        targets = batch.targets
        per_sample = partial(dkd_per_sample, target=targets, alpha=p.alpha, beta=p.beta, temperature=p.temperature)
        warm = warmup_factor(progress.epoch, p.warmup_epochs)
        loss, terms, stats = self.logit_distillation(
            logits, teacher_logits, targets, progress, per_sample, p.temperature, p.ce_weight, warm
        )
        stats["dkd_warmup"] = torch.tensor(warm)  # a host number: no device copy
        return StepOutput(loss, logits, terms, stats)


def dkd_per_sample(student_logits, teacher_logits, *, target, alpha, beta, temperature):
    """:func:`dkd_loss` with the labels bound, in the ``(student, teacher) -> (N,)`` form of
    :meth:`Distiller.logit_distillation`."""
    return dkd_loss(student_logits, teacher_logits, target, alpha, beta, temperature)
