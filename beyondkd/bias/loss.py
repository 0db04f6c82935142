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
from typing import Callable, Union

import torch
from torch import Tensor, nn

from beyondkd.bias.config import (  # noqa: F401  (re-exported: the plug-in's settings live there)
    BIAS_PRESETS,
    DEFAULT_BIAS_PRESET,
    BiasConfig,
    ScheduleConfig,
    bias_config,
)
from beyondkd.bias.mask import teacher_right_mask
from beyondkd.bias.rectify import paper_formula_on_logits, rectified_teacher_logits
from beyondkd.bias.schedule import Progress
from beyondkd.errors import ConfigError
from beyondkd.losses.kd import cross_entropy, kd_kl


@dataclass(frozen=True)
class BiasTargets:
    """What the teacher contributes to one batch after elimination and rectification.

    Attributes:
        right: ``(N,)`` bool, the teacher's top class equals the label.
        teacher_logits: ``(N, C)`` the teacher logits the distillation term should use: the raw
            logits, with the wrong rows replaced by rectified ones when rectification is on.
        rectified: ``(N,)`` bool, rows that were rectified.
        rectified_top_is_label: ``(N,)`` bool, rectified rows whose top class is now the label.
        label_prob: ``(N,)`` the teacher's probability of the label at ``T = 1``, before any
            rectification (the per-row weights of ``row_weight`` use it).
    """

    right: Tensor
    teacher_logits: Tensor
    rectified: Tensor
    rectified_top_is_label: Tensor
    label_prob: Tensor


def wsl_weights(student_ce: Tensor, teacher_label_prob: Tensor, eps: float = 1e-7) -> Tensor:
    """Weighted soft labels (Zhou et al., ICLR 2021, eq. 9 there): ``1 - exp(-CE_s / CE_t)`` per row.

    Args:
        student_ce: ``(N,)`` the student's cross-entropy with the label at ``T = 1``.
        teacher_label_prob: ``(N,)`` the teacher's probability of the label at ``T = 1``.
        eps: keeps the ratio finite when the teacher is certain of the label.

    Returns:
        ``(N,)`` detached weights in ``[0, 1]`` (1 only by rounding): near 0 where the student already fits the label
        much better than the teacher does, near 1 where the student is far worse.
    """
    teacher_ce = -teacher_label_prob.detach().clamp_min(torch.finfo(teacher_label_prob.dtype).tiny).log()
    ratio = (student_ce.detach() / (teacher_ce + eps)).clamp_min(0.0)
    return 1.0 - torch.exp(-ratio)


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
        cfg = self.config
        z = teacher_logits.detach()
        right = teacher_right_mask(z, target)  # the one mask: rectification is told, never re-derives it
        label_prob = torch.softmax(z.float() if z.dtype not in (torch.float32, torch.float64) else z, dim=1)
        label_prob = label_prob.gather(1, target.long().unsqueeze(1)).squeeze(1)
        if not cfg.rectify:
            none = torch.zeros_like(right)
            return BiasTargets(right, z, none, none, label_prob)
        if cfg.space == "logits":
            z_rect = paper_formula_on_logits(z, target, right=right)
        else:
            t_rect = temperature if cfg.rectify_temperature is None else cfg.rectify_temperature
            # softmax(z_rect / t_rect) is the rectified distribution; the method then compares
            # at its own temperature (with t_rect = 1: the rectified prediction, softened by T)
            z_rect = rectified_teacher_logits(z, target, t_rect, cfg.variant, smoothing=cfg.smoothing, right=right)
        rectified = ~right
        top_is_label = rectified & (z_rect.argmax(dim=1) == target)
        return BiasTargets(right, z_rect.to(z.dtype), rectified, top_is_label, label_prob)

    def row_weights(self, ce: Tensor | None, targets: BiasTargets) -> Tensor:
        """``(N,)`` detached per-row weights of the distillation term (``row_weight``; ones for ``none``)."""
        kind = self.config.row_weight
        if kind == "none":
            return torch.ones_like(targets.label_prob)
        if kind == "label_prob":
            return targets.label_prob.detach()
        if ce is None:
            raise ConfigError("bias row_weight 'wsl' needs the student's cross-entropy, and this method has none: use label_prob or none")
        return wsl_weights(ce, targets.label_prob)

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

        With ``row_weight`` set, ``distill`` is first multiplied row by row by
        :meth:`row_weights` (detached), before elimination and reduction.

        Returns:
            ``(loss, parts)``: the scalar loss and a dict of its weighted terms (``ce``,
            ``kd_easy``, ``kd_hard``) and statistics (``gamma``, ``rows``, ``rows_right``,
            ``rows_rectified``, ``rows_rectified_top_is_label``), all detached tensors.
        """
        cfg = self.config
        right = targets.right
        n = distill.shape[0]
        gamma = self.gamma(progress)
        if cfg.row_weight != "none":
            distill = distill * self.row_weights(ce, targets).to(distill.dtype)
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
