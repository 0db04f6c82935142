"""Curriculum temperature KD (CTKD, Li et al., AAAI 2023), with KD (``ctkd``) or DKD (``ctkd_dkd``).

The distillation temperature is learned by a small module trained *against* the student through
a gradient-reversal layer whose strength ``λ`` rises along a cosine curriculum
(:mod:`beyondkd.losses.ctkd`). Two modes:

* ``global``: one learnable scalar ``θ`` for the whole run;
* ``instance``: a two-layer MLP maps ``[teacher logits, student logits]`` of each sample to its
  own ``θ_i``. The logits are detached on their way into the MLP, so the student is trained only
  through the distillation loss, never through the temperature module's input.

``T = t_min + (t_max − t_min) · sigmoid(θ)`` keeps every temperature in ``(t_min, t_max)``. The
module is a submodule of the distiller, so its parameters are in the ``student`` parameter group
(trained by the student's optimizer: the GRL makes the same optimizer step *ascend* the loss in
``θ``) and in the checkpoint.

Plug-in (``method.bias``): the teacher is rectified *at the learned temperature* of each sample
(detached: the rectification itself carries no gradient). Concretely the teacher logits are
divided by the detached ``T``, rectified at temperature 1, and multiplied back, which equals
rectifying ``softmax(z_t / T)``. The distillation term (KD or DKD at the live ``T``, through the
GRL) is then split into easy/hard sets and weighted by γ as for plain KD.
"""

from __future__ import annotations

from functools import partial
from typing import Callable, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor, nn

from beyondkd.core import Batch, Progress, StepOutput
from beyondkd.distillers.base import Distiller, DistillerContext
from beyondkd.distillers.registry import register_distiller
from beyondkd.errors import ConfigError
from beyondkd.losses.ctkd import bounded_temperature, cosine_lambda, grad_reverse, temperature_to_theta
from beyondkd.losses.dkd import dkd_loss, warmup_factor
from beyondkd.losses.kd import kd_kl
from beyondkd.losses.precision import loss_dtype


class GlobalTemperature(nn.Module):
    """One learnable temperature for all samples.

    Args:
        init_temperature: starting ``T``; ``t_min < init_temperature < t_max``.
        t_min, t_max: the range of ``T``.
    """

    def __init__(self, init_temperature: float, t_min: float, t_max: float) -> None:
        super().__init__()
        self.t_min, self.t_max = float(t_min), float(t_max)
        self.theta = nn.Parameter(torch.tensor(temperature_to_theta(init_temperature, t_min, t_max)))

    def forward(self, teacher_logits: Tensor, student_logits: Tensor, lambda_: float) -> Tensor:
        """A 0-dim temperature; gradient reaching it is reversed and scaled by ``λ``."""
        return bounded_temperature(grad_reverse(self.theta, lambda_), self.t_min, self.t_max)


class InstanceTemperature(nn.Module):
    """A temperature per sample from an MLP over the (detached) teacher and student logits.

    Args:
        num_classes: logits per model (the MLP reads ``2 · num_classes`` values).
        hidden: width of the hidden layer.
        init_temperature, t_min, t_max: as :class:`GlobalTemperature`; the output layer's bias
            starts at the ``θ`` of ``init_temperature`` and its weights at 0, so every sample
            starts at ``init_temperature``.
    """

    def __init__(self, num_classes: int, hidden: int, init_temperature: float, t_min: float, t_max: float) -> None:
        super().__init__()
        self.t_min, self.t_max = float(t_min), float(t_max)
        self.mlp = nn.Sequential(nn.Linear(2 * num_classes, hidden), nn.LeakyReLU(0.1), nn.Linear(hidden, 1))
        last = self.mlp[-1]
        nn.init.zeros_(last.weight)
        nn.init.constant_(last.bias, temperature_to_theta(init_temperature, t_min, t_max))

    def forward(self, teacher_logits: Tensor, student_logits: Tensor, lambda_: float) -> Tensor:
        """``(N,)`` temperatures; gradient reaching them is reversed and scaled by ``λ``."""
        dtype = loss_dtype(teacher_logits, student_logits)
        x = torch.cat([teacher_logits.detach().to(dtype), student_logits.detach().to(dtype)], dim=1)
        theta = self.mlp(x).squeeze(1)
        return bounded_temperature(grad_reverse(theta, lambda_), self.t_min, self.t_max)


class CurriculumParams(BaseModel):
    """Settings of the learnable temperature shared by ``ctkd`` and ``ctkd_dkd``.

    Defaults follow the CTKD paper on CIFAR-100: ``T ∈ (1, 21)`` (the authors' code uses
    ``1 + 20 · sigmoid(θ)``), ``λ`` from 0 to 1 over 10 epochs.
    """

    model_config = ConfigDict(extra="forbid")
    mode: Literal["global", "instance"] = "global"
    t_min: float = Field(1.0, gt=0.0)
    t_max: float = Field(21.0, gt=0.0)
    init_temperature: float = Field(4.0, gt=0.0, description="starting temperature, inside (t_min, t_max)")
    lambda_min: float = Field(0.0, ge=0.0)
    lambda_max: float = Field(1.0, ge=0.0)
    cos_epochs: float = Field(10.0, ge=0.0, description="epochs over which λ rises from lambda_min to lambda_max")
    hidden: int = Field(256, ge=1, description="hidden width of the instance-mode MLP")

    @model_validator(mode="after")
    def _ranges(self) -> "CurriculumParams":
        if not self.t_min < self.t_max:
            raise ValueError(f"t_min ({self.t_min}) must be smaller than t_max ({self.t_max})")
        if not self.t_min < self.init_temperature < self.t_max:
            raise ValueError(f"init_temperature ({self.init_temperature}) must lie strictly inside (t_min, t_max) = ({self.t_min}, {self.t_max})")
        if self.lambda_min > self.lambda_max:
            raise ValueError(f"lambda_min ({self.lambda_min}) must not exceed lambda_max ({self.lambda_max})")
        return self


class CTKDParams(CurriculumParams):
    """CTKD on top of KD (CE and KD weights as our ``kd``: 0.1 / 0.9)."""

    ce_weight: float = Field(0.1, ge=0.0)
    kd_weight: float = Field(0.9, ge=0.0)


class CTKDDKDParams(CurriculumParams):
    """CTKD on top of DKD (CE 1, α 1, β 8, warm-up as ``dkd``)."""

    ce_weight: float = Field(1.0, ge=0.0)
    alpha: float = Field(1.0, ge=0.0)
    beta: float = Field(8.0, ge=0.0)
    warmup_epochs: float = Field(20.0, ge=0.0)


class _CurriculumTemperatureDistiller(Distiller):
    """Shared machinery: the temperature module, ``λ`` and the plug-in at the learned ``T``."""

    def __init__(self, student, teacher, params, bias, context: DistillerContext) -> None:
        super().__init__(student, teacher, params, bias, context)
        p = params
        if p.mode == "global":
            self.temperature_module: nn.Module = GlobalTemperature(p.init_temperature, p.t_min, p.t_max)
        else:
            if context.num_classes < 1:
                raise ConfigError("ctkd instance mode needs the number of classes")
            self.temperature_module = InstanceTemperature(context.num_classes, p.hidden, p.init_temperature, p.t_min, p.t_max)

    def current_lambda(self, progress: Progress) -> float:
        """``λ`` of the cosine curriculum at this epoch (CTKD eq. 8).

        ``n`` is the 1-based epoch number, as in the authors' code (and our DKD and ReviewKD
        warm-ups): the first epoch has ``λ = λ_min + ½(λ_max − λ_min)(1 − cos(π / E))`` and epoch
        ``E`` (0-based index ``E − 1``) reaches ``λ_max``.
        """
        p = self.params
        return cosine_lambda(progress.epoch + 1, p.cos_epochs, p.lambda_min, p.lambda_max)

    def distill_at_learned_temperature(
        self,
        logits: Tensor,
        teacher_logits: Tensor,
        targets: Tensor,
        progress: Progress,
        loss_at: Callable[[Tensor, Tensor, Tensor], Tensor],
        ce_weight: float,
        kd_weight: float,
    ) -> StepOutput:
        """CE + ``loss_at(student, teacher, T)`` through the plug-in, at the learned ``T``.

        ``loss_at`` is the per-sample distillation loss at temperature ``T`` (0-dim or ``(N,)``).
        """
        lam = self.current_lambda(progress)
        temperature = self.temperature_module(teacher_logits, logits, lam)
        t_col = temperature.detach().reshape(-1, 1) if temperature.dim() else temperature.detach()
        # Rectifying softmax(z/T) == rectifying softmax((z/T)/1): hand the plug-in z/T at T = 1
        # and scale its (possibly rectified) logits back by T before the loss sees them.
        scaled_teacher = teacher_logits.detach().to(loss_dtype(teacher_logits)) / t_col

        def per_sample(student: Tensor, teacher_scaled: Tensor) -> Tensor:
            return loss_at(student, teacher_scaled * t_col, temperature)

        loss, terms, stats = self.logit_distillation(
            logits, scaled_teacher, targets, progress, per_sample, 1.0, ce_weight, kd_weight
        )
        t = temperature.detach()
        stats.update(temperature=t.mean(), temperature_min=t.min(), temperature_max=t.max(), grl_lambda=torch.tensor(lam))
        return StepOutput(loss, logits, terms, stats)


@register_distiller("ctkd")
class CTKD(_CurriculumTemperatureDistiller):
    """KD at a temperature learned adversarially with a curriculum (Li et al. 2023)."""

    Params = CTKDParams
    description = "KD with a learnable, adversarial curriculum temperature (global or per instance)"

    def training_step(self, batch: Batch, progress: Progress) -> StepOutput:
        p = self.params
        teacher_logits = self.teacher_logits(batch)
        logits = self.student(batch.images)
        return self.distill_at_learned_temperature(
            logits, teacher_logits, batch.targets, progress, kd_kl, p.ce_weight, p.kd_weight
        )


@register_distiller("ctkd_dkd")
class CTKDDKD(_CurriculumTemperatureDistiller):
    """DKD at a learned curriculum temperature (CTKD applied to DKD, as in the CTKD paper)."""

    Params = CTKDDKDParams
    description = "DKD with a learnable, adversarial curriculum temperature"

    def training_step(self, batch: Batch, progress: Progress) -> StepOutput:
        p = self.params
        teacher_logits = self.teacher_logits(batch)
        logits = self.student(batch.images)
        loss_at = partial(_dkd_at, target=batch.targets, alpha=p.alpha, beta=p.beta)
        warm = warmup_factor(progress.epoch, p.warmup_epochs)
        out = self.distill_at_learned_temperature(
            logits, teacher_logits, batch.targets, progress, loss_at, p.ce_weight, warm
        )
        out.stats["dkd_warmup"] = torch.tensor(warm)  # a host number: no device copy
        return out


def _dkd_at(student: Tensor, teacher: Tensor, temperature: Tensor, *, target: Tensor, alpha: float, beta: float) -> Tensor:
    return dkd_loss(student, teacher, target, alpha, beta, temperature)
