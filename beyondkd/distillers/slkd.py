"""SLKD: distillation from the teacher and from self-learning teachers (Liu, Li & Cheng).

``k`` self-learning teachers (SL-teachers; the paper uses 2) have the teacher's architecture and
start from random weights. Each learns from the frozen teacher with ``α·CE + (1 − α)·KD(τ)``
(eq. 4–5); their outputs are fused with weights ``ρ`` (eq. 6) and the fused output supervises the
student next to the teacher: ``L = λ·L_TS + η·L_SL-TS`` (eq. 7, with eq. 1 and 3). See
:mod:`beyondkd.losses.slkd` for the formulas and ``docs/slkd.md`` for the choices below.

* **Two parameter groups.** ``param_groups()`` returns ``student`` and ``sl_teachers``; the
  trainer gives each its own optimizer (``train.extra_optimizers.sl_teachers``, else a copy of
  ``train.optimizer``) and its own LR schedule.
* **Gradients.** The fused output is detached where it supervises the student (eq. 3 treats it
  as a teacher); the SL-teachers learn from the teacher only (eq. 4–5). One backward of the sum
  gives every group exactly its own gradient.
* **Modes.** ``parallel`` (the paper's main method, Fig. 4): SL-teachers and student learn in
  the same steps. ``sequential`` (SLKD*, Tables 5–6): the first ``sl_epochs`` epochs of the run
  train only the SL-teachers (the student is not run, so its weights, BN statistics and
  optimizer state are untouched); the remaining epochs train the student with the SL-teachers
  frozen (eval mode, no gradient). The phase is a function of the trainer's epoch counter,
  which checkpoints restore, so resuming in either phase is exact. ``schedule_spans`` gives each
  group its own phase, so each LR schedule runs over its own epochs.
* **Building the SL-teachers.** When the run built the teacher from the model registry
  (``context.teacher_model``), each SL-teacher is a fresh ``build_model(name, **options)``:
  the architecture's own initialisation. Otherwise (a hand-made teacher passed in code) each is
  ``copy.deepcopy(teacher)`` with every module's ``reset_parameters()`` called. Either way the
  weights are drawn under a forked RNG seeded with ``context.seed`` and the SL-teacher's index,
  so they are reproducible and building them leaves the run's global RNG untouched.
* **Bias plug-in.** With ``method.bias`` set, the teacher → student term goes through
  :meth:`Distiller.logit_distillation` (elimination, rectification, γ). ``bias_on_sl_term``
  also routes the fused SL-teacher → student term through it, treating the fused SL-teachers
  as the teacher whose wrong rows are eliminated or rectified.
"""

from __future__ import annotations

import copy
from functools import partial
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from torch import Tensor, nn

from beyondkd.bias import reporting
from beyondkd.bias.loss import BiasConfig
from beyondkd.core import Batch, Progress, StepOutput
from beyondkd.distillers.base import Distiller, DistillerContext
from beyondkd.distillers.registry import register_distiller
from beyondkd.errors import ConfigError
from beyondkd.losses.kd import cross_entropy, kd_kl
from beyondkd.losses.slkd import fuse_outputs, fusion_weights, teacher_student_loss


class SLKDParams(BaseModel):
    """SLKD hyper-parameters (defaults: the paper's CIFAR-100 values where it gives them).

    Attributes:
        sl_teachers: number ``k`` of SL-teachers (paper: 2).
        rho: fusion weights of eq. 6: a float ``ρ`` for ``k = 2``, a list of ``k`` weights
            summing to 1, or ``None`` for uniform weights (the paper gives no value of ρ).
        lambda_ts: ``λ`` of eq. 7, weight of the teacher → student loss (paper: 1).
        eta: ``η`` of eq. 7, weight of the SL-teacher → student loss (paper: 3).
        temperature: ``τ`` of every KD term (paper: 4).
        alpha: ``α``, the CE weight inside the student's terms (eq. 1, 3). The paper uses "the
            same weights" as the KD it compares with: CE 0.1, KD 0.9.
        sl_alpha: ``α`` inside the SL-teachers' losses (eq. 4–5).
        fusion: ``logits`` (eq. 6 as written: ``Σ ρ_i z_i``, softened by ``τ`` in eq. 3) or
            ``probs`` (the prose: ``Σ ρ_i softmax(z_i/τ)``).
        mode: ``parallel`` (the paper's method) or ``sequential`` (SLKD*, Tables 5–6).
        sl_epochs: sequential mode only: epochs at the start of the run that train the
            SL-teachers alone (the rest train the student).
        bias_on_sl_term: also apply the bias plug-in to the SL-teacher → student term.
    """

    model_config = ConfigDict(extra="forbid")
    sl_teachers: int = Field(2, ge=1)
    rho: float | list[float] | None = None
    lambda_ts: float = Field(1.0, ge=0.0)
    eta: float = Field(3.0, ge=0.0)
    temperature: float = Field(4.0, gt=0.0)
    alpha: float = Field(0.1, ge=0.0, le=1.0)
    sl_alpha: float = Field(0.1, ge=0.0, le=1.0)
    fusion: Literal["logits", "probs"] = "logits"
    mode: Literal["parallel", "sequential"] = "parallel"
    sl_epochs: int | None = Field(None, ge=1, validate_default=True)
    bias_on_sl_term: bool = False

    @field_validator("rho")
    @classmethod
    def _weights_fit_k(cls, v: float | list[float] | None, info: ValidationInfo) -> float | list[float] | None:
        if "sl_teachers" in info.data:
            fusion_weights(v, info.data["sl_teachers"])  # raises ValueError with the reason
        return v

    @field_validator("sl_epochs")
    @classmethod
    def _epochs_fit_mode(cls, v: int | None, info: ValidationInfo) -> int | None:
        mode = info.data.get("mode")
        if mode == "sequential" and v is None:
            raise ValueError("mode sequential needs sl_epochs (the epochs that train the SL-teachers first)")
        if mode == "parallel" and v is not None:
            raise ValueError("sl_epochs applies to mode sequential only: remove it or set mode: sequential")
        return v


def build_self_learning_teacher(teacher: nn.Module | None, context: DistillerContext, index: int) -> nn.Module:
    """A randomly initialised network with the teacher's architecture (SL-teacher ``index``).

    Args:
        teacher: the frozen teacher (used only when ``context.teacher_model`` is unset).
        context: run facts; ``teacher_model``/``teacher_options`` select the registry route.
        index: 0-based SL-teacher index (part of the seed).

    Returns:
        A trainable module in training mode.
    """
    from beyondkd.models.registry import build_model

    seed = (context.seed * 1_000_003 + 7919 * (index + 1)) % (2**63)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if context.teacher_model is not None:
            # never load weights: an SL-teacher starts from the architecture's random initialisation
            options = {k: v for k, v in context.teacher_options.items() if k != "pretrained"}
            net = build_model(context.teacher_model, context.num_classes, context.in_channels, **options)
        else:
            if teacher is None:
                raise ConfigError("SLKD needs a teacher to copy the architecture of its SL-teachers from")
            net = copy.deepcopy(teacher)
            _reinitialise(net)
    net.train()
    for p in net.parameters():
        p.requires_grad_(True)
    return net


def _reinitialise(net: nn.Module) -> None:
    """Call ``reset_parameters`` of every module; fail if a parameter would keep its value."""
    covered: set[int] = set()
    for module in net.modules():
        reset = getattr(module, "reset_parameters", None)
        if callable(reset):
            reset()
            covered.update(id(p) for p in module.parameters(recurse=False))
    left = [n for n, p in net.named_parameters() if id(p) not in covered]
    if left:
        raise ConfigError(
            f"cannot re-initialise the teacher copy for SLKD: parameters {left[:3]} belong to modules without "
            "reset_parameters; build the teacher from the model registry (teacher.name) instead"
        )


@register_distiller("slkd")
class SLKD(Distiller):
    """Self-learning teachers trained from the teacher, fused, supervising the student (SLKD)."""

    Params = SLKDParams
    description = "k self-learning teachers learn from the teacher and co-supervise the student"

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None,
        params: SLKDParams,
        bias: BiasConfig | None,
        context: DistillerContext,
    ) -> None:
        super().__init__(student, teacher, params, bias, context)
        p: SLKDParams = params
        if p.bias_on_sl_term and self.bias is None:
            raise ConfigError("slkd bias_on_sl_term needs the bias plug-in: add 'method.bias' (e.g. bias: {}) or set it to false")
        if p.mode == "sequential" and p.sl_epochs is not None and p.sl_epochs >= context.total_epochs:
            raise ConfigError(
                f"slkd sl_epochs ({p.sl_epochs}) must be smaller than train.epochs ({context.total_epochs}): "
                "the remaining epochs train the student"
            )
        self.weights = fusion_weights(p.rho, p.sl_teachers)
        self.sl_teachers = nn.ModuleList(build_self_learning_teacher(teacher, context, i) for i in range(p.sl_teachers))
        self._sl_frozen = False

    # -- phases ----------------------------------------------------------------------------
    def in_sl_phase(self, epoch: int) -> bool:
        """Sequential mode, first ``sl_epochs`` epochs: only the SL-teachers learn."""
        p = self.params
        return p.mode == "sequential" and epoch < p.sl_epochs

    def sl_teachers_frozen(self, epoch: int) -> bool:
        """Sequential mode, after ``sl_epochs``: the SL-teachers only supervise."""
        p = self.params
        return p.mode == "sequential" and epoch >= p.sl_epochs

    def _set_sl_frozen(self, frozen: bool) -> None:
        self._sl_frozen = frozen
        if frozen:
            self.sl_teachers.eval()
        elif self.training:
            self.sl_teachers.train()

    def train(self, mode: bool = True) -> "SLKD":
        super().train(mode)
        if mode and getattr(self, "_sl_frozen", False):
            self.sl_teachers.eval()
        return self

    def on_epoch_start(self, epoch: int) -> None:
        self._set_sl_frozen(self.sl_teachers_frozen(epoch))

    @property
    def find_unused_parameters(self) -> bool:
        """Sequential phases leave one group without gradient (the student, then the SL-teachers)."""
        return self.params.mode == "sequential"

    @classmethod
    def length_dependence(cls, params: BaseModel, bias: BiasConfig | None) -> str | None:
        if params.mode == "sequential":  # type: ignore[attr-defined]
            return "slkd's sequential phases and their LR schedules are laid out over train.epochs"
        return super().length_dependence(params, bias)

    def schedule_spans(self) -> dict[str, tuple[int, int]]:
        p = self.params
        if p.mode != "sequential":
            return {}
        return {"sl_teachers": (0, p.sl_epochs), "student": (p.sl_epochs, self.context.total_epochs)}

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        student = [
            p for n, p in self.named_parameters()
            if not n.startswith(("teacher.", "sl_teachers.")) and p.requires_grad
        ]
        return {"student": student, "sl_teachers": [p for p in self.sl_teachers.parameters() if p.requires_grad]}

    def _student_progress(self, progress: Progress) -> Progress:
        """Progress of the student's own phase (the whole run in parallel mode)."""
        p = self.params
        if p.mode != "sequential":
            return progress
        per_epoch = progress.total_steps // max(progress.total_epochs, 1)
        offset = p.sl_epochs * per_epoch
        return Progress(
            max(progress.step - offset, 0), max(progress.total_steps - offset, 1),
            max(progress.epoch - p.sl_epochs, 0), max(progress.total_epochs - p.sl_epochs, 1),
        )

    # -- the step ----------------------------------------------------------------------------
    def fused_logits(self, sl_logits: list[Tensor]) -> Tensor:
        """Eq. 6 on the SL-teachers' logits, detached (it supervises the student)."""
        p = self.params
        return fuse_outputs([z.detach() for z in sl_logits], self.weights, p.fusion, p.temperature)

    def training_step(self, batch: Batch, progress: Progress) -> StepOutput:
        p: SLKDParams = self.params
        frozen = self.sl_teachers_frozen(progress.epoch)
        if frozen != self._sl_frozen:
            self._set_sl_frozen(frozen)
        teacher_logits = self.teacher_logits(batch)
        terms: dict[str, Tensor] = {}
        stats: dict[str, Tensor] = {}
        loss = teacher_logits.new_zeros((), dtype=torch.float32)

        # eq. 4-5: every SL-teacher learns from the teacher (unless frozen in the student phase)
        if frozen:
            with torch.no_grad():
                sl_logits = [net(batch.images) for net in self.sl_teachers]
        else:
            sl_logits = [net(batch.images) for net in self.sl_teachers]
            for i, z in enumerate(sl_logits):
                l_i = teacher_student_loss(z, teacher_logits, batch.targets, p.sl_alpha, p.temperature).mean()
                loss = loss + l_i
                terms[f"sl_teacher_{i + 1}"] = l_i.detach()
        for i, z in enumerate(sl_logits):
            stats[f"sl_teacher_{i + 1}_acc"] = (z.detach().argmax(1) == batch.targets).float().mean() * 100.0
        fused = self.fused_logits(sl_logits)

        if self.in_sl_phase(progress.epoch):  # sequential, phase 1: the student is not run
            return StepOutput(loss, fused, terms, stats)

        # eq. 7 = λ·eq. 1 + η·eq. 3, each α·CE + (1-α)·KD
        student_progress = self._student_progress(progress)
        logits = self.student(batch.images)
        ce = cross_entropy(logits, batch.targets)
        kd = partial(kd_kl, temperature=p.temperature)
        ts_loss, ts_terms, ts_stats = self.logit_distillation(
            logits, teacher_logits, batch.targets, student_progress, kd, p.temperature,
            p.lambda_ts * p.alpha, p.lambda_ts * (1.0 - p.alpha), ce=ce,
        )
        sl_loss, sl_terms, sl_stats = self._sl_term(logits, fused, batch.targets, student_progress, ce)
        loss = loss + ts_loss + sl_loss
        terms.update(ts_terms)
        terms.update({f"sl_{k}": v for k, v in sl_terms.items()})
        stats.update(ts_stats)
        stats.update(sl_stats)
        return StepOutput(loss, logits, terms, stats)

    def _sl_term(
        self, logits: Tensor, fused: Tensor, targets: Tensor, progress: Progress, ce: Tensor
    ) -> tuple[Tensor, dict[str, Tensor], dict[str, Any]]:
        """``η·L_SL-TS`` (eq. 3), through the bias plug-in when ``bias_on_sl_term``."""
        p: SLKDParams = self.params
        w_ce, w_kd = p.eta * p.alpha, p.eta * (1.0 - p.alpha)
        if not p.bias_on_sl_term or self.bias is None:
            ce_term = w_ce * ce.mean()
            kd_term = w_kd * kd_kl(logits, fused, p.temperature).mean()
            return ce_term + kd_term, {"ce": ce_term.detach(), "kd": kd_term.detach()}, {}
        targets_b = self.bias.teacher_targets(fused, targets, p.temperature)
        distill = kd_kl(logits, targets_b.teacher_logits, p.temperature)
        loss, parts = self.bias.combine(ce, distill, targets_b, progress, w_ce, w_kd)
        terms = {k: parts[k] for k in ("ce", "kd_easy", "kd_hard")}
        return loss, terms, reporting.step_stats(parts, prefix="rows_sl")
