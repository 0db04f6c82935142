"""The bias-aware distillation loss (BTKD eq. 8–9) and the plug-in that any method can use.

Two layers:

* :class:`BiasPlugin` is method-agnostic. ``teacher_targets`` splits a batch into the rows the
  teacher gets right and wrong (elimination) and, if asked, replaces the teacher's wrong rows by
  rectified ones re-expressed as logits (rectification). ``combine`` then weighs a method's
  *per-sample* distillation loss over the two sets with the dynamic weight γ (eq. 9). KD, DKD,
  CTKD and the logit term of feature methods all go through these two calls.
* :class:`BiasAwareKD` is the drop-in for a hand-written loop: Hinton KD + the plug-in.

How the switches combine (Table 5 of the paper is the ablation of ``eliminate``/``rectify``):

=============  =============  ===========================================================
eliminate      rectify        loss (``w_ce``, ``w_kd`` the method's weights)
=============  =============  ===========================================================
off            off            ``w_ce CE + w_kd KD(all rows)``: plain KD
on             off            ``w_ce CE + w_kd KD(right rows)``: wrong rows dropped
off            on             ``w_ce CE + w_kd KD(all rows, wrong rows rectified)``
on             on             ``(1-γ)(w_ce CE + w_kd L_easy) + γ w_kd L_hard`` (eq. 9)
=============  =============  ===========================================================

γ only exists when both are on (it weighs the easy set against the *rectified* hard set). With
the schedule ``none`` the last row uses constant weights ``w_ce CE + w_kd (L_easy + L_hard)``.
``ce_under_gamma=False`` keeps CE outside the ``(1-γ)`` factor, as the authors' code does.

Reductions: ``batch`` divides each set's sum by the batch size ``N`` (never NaN; the default),
``subbatch`` divides by the set's own size as the authors' code does (an empty set gives 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, Union

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import Tensor, nn

from beyondkd.bias.mask import teacher_right_mask
from beyondkd.bias.rectify import RectifyVariant, paper_formula_on_logits, rectified_teacher_logits
from beyondkd.bias.schedule import GammaSchedule, Progress, schedule_names
from beyondkd.errors import ConfigError, suggest
from beyondkd.losses.kd import cross_entropy, kd_kl

Reduction = Literal["batch", "subbatch"]


class ScheduleConfig(BaseModel):
    """Validated settings of a :class:`GammaSchedule` (``schedule: linear`` is shorthand)."""

    model_config = ConfigDict(extra="forbid")
    name: str = "linear"
    per: Literal["step", "epoch"] = "step"
    value: float = Field(0.5, ge=0.0, le=1.0)
    cap: float = Field(1.0, ge=0.0, le=1.0)
    warmup: float = Field(0.0, ge=0.0, lt=1.0)

    @field_validator("name")
    @classmethod
    def _known_shape(cls, v: str) -> str:
        if v not in schedule_names():
            raise ValueError(f"unknown gamma schedule '{v}'{suggest(v, schedule_names())}: choose one of {', '.join(schedule_names())}")
        return v

    def build(self) -> GammaSchedule:
        return GammaSchedule(**self.model_dump())


class BiasConfig(BaseModel):
    """Settings of the bias plug-in. Every field is a research option; presets name the sets.

    Attributes:
        eliminate: split right and wrong rows (bias elimination).
        rectify: rectify the teacher's wrong rows (bias rectification).
        variant: rectification rule, see :mod:`beyondkd.bias.rectify`.
        smoothing: ``eps`` of the ``label_smooth`` variant.
        space: ``probs`` rectifies ``softmax(z/T)`` (the paper); ``logits`` applies eq. 4–7 to
            the raw logits like one version of the authors' code (guarded; ``paper`` variant only).
        schedule: the γ schedule (eq. 9).
        reduction: ``batch`` or ``subbatch`` (see module docstring).
        ce_under_gamma: multiply CE by ``(1-γ)`` as eq. 9 does.
    """

    model_config = ConfigDict(extra="forbid")
    eliminate: bool = True
    rectify: bool = True
    variant: RectifyVariant = "paper"
    smoothing: float = Field(0.1, ge=0.0, lt=1.0)
    space: Literal["probs", "logits"] = "probs"
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    reduction: Reduction = "batch"
    ce_under_gamma: bool = True

    @field_validator("schedule", mode="before")
    @classmethod
    def _schedule_shorthand(cls, v: object) -> object:
        return {"name": v} if isinstance(v, str) else v


# Named presets of the plug-in alone (the method's temperature and weights live in the method).
BIAS_PRESETS: dict[str, dict] = {
    # BTKD as written: eq. 4-7 on probabilities, γ = e/E per iteration, CE inside (1-γ).
    "paper": dict(variant="paper", schedule={"name": "linear", "per": "step"}),
    # What the authors' public code does (see shared/papers/README.md item 2).
    "official-code": dict(
        variant="swap",
        schedule={"name": "sin2", "per": "epoch"},
        reduction="subbatch",
        ce_under_gamma=False,
    ),
    # Elimination + rectification with constant weights (no dynamic γ).
    "constant": dict(variant="paper", schedule={"name": "none"}),
    # As "constant" but the rectified row always has the label on top.
    "strict": dict(variant="strict", schedule={"name": "none"}),
    # Table 5 ablation rows.
    "eliminate-only": dict(eliminate=True, rectify=False, schedule={"name": "none"}),
    "rectify-only": dict(eliminate=False, rectify=True, schedule={"name": "none"}),
}

# The preset a bare ``BiasAwareKD()`` / ``bias: {}`` uses. Chosen by measurement; see
# BENCHMARKS.md ("Bias plug-in variants on Fashion-MNIST"): over 3 seeds, elimination alone beat
# KD by +0.97 points, elimination + rectification by +0.42; the paper's γ = e/E did not help.
DEFAULT_BIAS_PRESET = "eliminate-only"


def bias_config(preset: str | None = None, **overrides: object) -> BiasConfig:
    """A validated :class:`BiasConfig` from a preset name plus field overrides."""
    preset = DEFAULT_BIAS_PRESET if preset is None else preset
    if preset not in BIAS_PRESETS:
        raise ConfigError(
            f"unknown bias preset '{preset}'{suggest(preset, list(BIAS_PRESETS))}: "
            f"choose one of {', '.join(BIAS_PRESETS)}"
        )
    return BiasConfig(**{**BIAS_PRESETS[preset], **overrides})


@dataclass(frozen=True)
class BiasTargets:
    """What the teacher contributes to one batch after elimination and rectification.

    Attributes:
        right: ``(N,)`` bool, the teacher's top class equals the label.
        teacher_logits: ``(N, C)`` the teacher logits the distillation term should use: the raw
            logits, with the wrong rows replaced by rectified ones when rectification is on.
        rectified: ``(N,)`` bool, rows that were rectified.
        rectified_top_is_label: ``(N,)`` bool, rectified rows whose top class is now the label.
    """

    right: Tensor
    teacher_logits: Tensor
    rectified: Tensor
    rectified_top_is_label: Tensor


class BiasPlugin:
    """Method-agnostic bias elimination, rectification and dynamic weighting (BTKD)."""

    def __init__(self, config: BiasConfig | None = None, **overrides: object) -> None:
        if config is None:
            config = bias_config(None, **overrides)
        elif overrides:
            config = BiasConfig(**{**config.model_dump(), **overrides})
        if config.space == "logits" and config.variant != "paper":
            raise ConfigError("bias 'space: logits' supports only 'variant: paper'")
        self.config = config
        self.schedule = config.schedule.build()

    @property
    def uses_gamma(self) -> bool:
        """True when the loss follows eq. 9 with a dynamic γ."""
        return self.config.eliminate and self.config.rectify and self.schedule.dynamic

    def gamma(self, progress: Progress | float | None) -> float:
        """γ at ``progress``; 0 when dynamic learning is off."""
        if not self.uses_gamma:
            return 0.0
        if progress is None:
            raise ValueError(
                "progress is required by a dynamic gamma schedule: pass progress=step/total_steps"
            )
        return self.schedule(progress)

    @torch.no_grad()
    def teacher_targets(self, teacher_logits: Tensor, target: Tensor, temperature: float = 1.0) -> BiasTargets:
        """Split and (optionally) rectify a batch of teacher logits.

        Args:
            teacher_logits: ``(N, C)`` raw teacher logits (detached here).
            target: ``(N,)`` labels.
            temperature: the temperature at which the method compares distributions; the
                teacher distribution is rectified at it (eq. 4–7 act on ``softmax(z/T)``).

        Returns:
            :class:`BiasTargets`.
        """
        z = teacher_logits.detach()
        right = teacher_right_mask(z, target)
        if not self.config.rectify:
            none = torch.zeros_like(right)
            return BiasTargets(right, z, none, none)
        if self.config.space == "logits":
            z_rect = paper_formula_on_logits(z, target)
        else:
            z_rect = rectified_teacher_logits(
                z, target, temperature, self.config.variant, smoothing=self.config.smoothing
            )
        rectified = ~right
        top_is_label = rectified & (z_rect.argmax(dim=1) == target)
        return BiasTargets(right, z_rect.to(z.dtype), rectified, top_is_label)

    def _reduce(self, values: Tensor, mask: Tensor) -> Tensor:
        masked = torch.where(mask, values, torch.zeros_like(values)).sum()
        if self.config.reduction == "batch":
            return masked / max(values.numel(), 1)
        return masked / mask.sum().clamp_min(1)  # an empty set contributes 0, never NaN

    def combine(
        self,
        ce: Tensor | None,
        distill: Tensor,
        targets: BiasTargets,
        progress: Progress | float | None,
        ce_weight: float = 1.0,
        kd_weight: float = 1.0,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Eq. 9: weigh a method's per-sample CE and distillation losses over the two sets.

        Args:
            ce: ``(N,)`` per-sample cross-entropy, or ``None`` if the method has none.
            distill: ``(N,)`` per-sample distillation loss computed against
                ``targets.teacher_logits``.
            targets: from :meth:`teacher_targets` on the same batch.
            progress: training progress (needed only for a dynamic schedule).
            ce_weight, kd_weight: the method's weights of CE and of its distillation term.

        Returns:
            ``(loss, parts)``: the scalar loss and a dict of its weighted terms (``ce``,
            ``kd_easy``, ``kd_hard``) and statistics (``gamma``, ``rows``, ``rows_right``,
            ``rows_rectified``, ``rows_rectified_top_is_label``), all detached tensors.
        """
        cfg = self.config
        right = targets.right
        n = distill.shape[0]
        gamma = self.gamma(progress)
        ce_mean = ce.mean() if ce is not None else distill.new_zeros(())
        zero = distill.new_zeros(())
        if cfg.eliminate and cfg.rectify:
            easy, hard = self._reduce(distill, right), self._reduce(distill, ~right)
            if self.uses_gamma:
                ce_term = (1.0 - gamma) * ce_weight * ce_mean if cfg.ce_under_gamma else ce_weight * ce_mean
                easy_term, hard_term = (1.0 - gamma) * kd_weight * easy, gamma * kd_weight * hard
            else:
                ce_term, easy_term, hard_term = ce_weight * ce_mean, kd_weight * easy, kd_weight * hard
        elif cfg.eliminate:
            ce_term, easy_term, hard_term = ce_weight * ce_mean, kd_weight * self._reduce(distill, right), zero
        else:  # no split: one term over all rows (wrong rows rectified if rectification is on);
            # its parts are reported by row kind, both divided by N, so they add up to the mean.
            ce_term = ce_weight * ce_mean
            easy_term = kd_weight * torch.where(right, distill, zero).sum() / max(n, 1)
            hard_term = kd_weight * torch.where(right, zero, distill).sum() / max(n, 1)
        loss = ce_term + easy_term + hard_term
        parts = {
            "ce": ce_term.detach(),
            "kd_easy": easy_term.detach(),
            "kd_hard": hard_term.detach(),
            "gamma": torch.tensor(gamma),
            "rows": torch.tensor(n),
            "rows_right": right.sum().detach(),
            "rows_rectified": targets.rectified.sum().detach(),
            "rows_rectified_top_is_label": targets.rectified_top_is_label.sum().detach(),
        }
        return loss, parts


PerSampleLoss = Callable[[Tensor, Tensor], Tensor]


class BiasAwareKD(nn.Module):
    """Hinton KD with the BTKD plug-in: ``(1-γ)(L_CE + L_easy) + γ L_hard`` (eq. 8–9).

    Drop it into any training loop::

        criterion = BiasAwareKD.from_preset("paper")
        with torch.no_grad():
            teacher_logits = teacher(x)
        loss, parts = criterion(student(x), teacher_logits, y, progress=step / total_steps)

    Args:
        temperature: KD temperature ``T`` (the KL is multiplied by ``T²``).
        ce_weight: weight of the cross-entropy with the labels.
        kd_weight: weight of the distillation terms.
        config: a :class:`BiasConfig`; by default the :data:`DEFAULT_BIAS_PRESET`.
        **overrides: :class:`BiasConfig` fields, e.g. ``variant="strict"``.
    """

    def __init__(
        self,
        temperature: float = 4.0,
        ce_weight: float = 1.0,
        kd_weight: float = 1.0,
        config: BiasConfig | None = None,
        **overrides: object,
    ) -> None:
        super().__init__()
        if temperature <= 0:
            raise ConfigError(f"temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)
        self.ce_weight = float(ce_weight)
        self.kd_weight = float(kd_weight)
        self.plugin = BiasPlugin(config, **overrides)

    @classmethod
    def from_preset(
        cls,
        preset: str,
        temperature: float = 4.0,
        ce_weight: float | None = None,
        kd_weight: float | None = None,
        **overrides: object,
    ) -> "BiasAwareKD":
        """Build from a named preset (``paper``, ``official-code``, ``constant``, ...).

        ``official-code`` also sets the CE and KD weights to 0.5 as that code does, unless given.
        """
        default_w = 0.5 if preset == "official-code" else 1.0
        return cls(
            temperature,
            default_w if ce_weight is None else ce_weight,
            default_w if kd_weight is None else kd_weight,
            config=bias_config(preset, **overrides),
        )

    @property
    def config(self) -> BiasConfig:
        return self.plugin.config

    def forward(
        self,
        student_logits: Tensor,
        teacher_logits: Tensor,
        target: Tensor,
        progress: Union[Progress, float, None] = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Total loss and its parts.

        Args:
            student_logits: ``(N, C)``.
            teacher_logits: ``(N, C)``; detached here, the teacher never receives gradient.
            target: ``(N,)`` labels.
            progress: a fraction of training done in ``[0, 1]`` or a :class:`Progress`.

        Returns:
            ``(loss, parts)`` as in :meth:`BiasPlugin.combine`.
        """
        if student_logits.shape != teacher_logits.shape:
            raise ValueError(
                f"student logits {tuple(student_logits.shape)} and teacher logits "
                f"{tuple(teacher_logits.shape)} differ: both models must have the same number of classes"
            )
        targets = self.plugin.teacher_targets(teacher_logits, target, self.temperature)
        distill = kd_kl(student_logits, targets.teacher_logits, self.temperature)
        ce = cross_entropy(student_logits, target)
        return self.plugin.combine(ce, distill, targets, progress, self.ce_weight, self.kd_weight)
