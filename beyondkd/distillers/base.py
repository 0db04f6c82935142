"""The Distiller contract: one class per method, holding student, teacher and loss terms.

A :class:`Distiller` is a :class:`beyondkd.core.Trainable` (the contract the engine runs), so a
new method is one new module:

* ``training_step(batch, progress) -> StepOutput``: the loss to back-propagate, the student's
  logits (for training accuracy), the weighted loss terms and statistics to log (each statistic
  may declare its reduction over an epoch with :class:`~beyondkd.core.Stat`);
* ``forward(images)``: student logits (evaluation);
* ``param_groups()``: named parameter groups, each given its own optimizer and LR schedule by
  the trainer (``student`` holds the student and any connectors; SLKD adds ``sl_teachers``);
* ``checkpoint_state()`` / ``load_checkpoint_state()``: everything trainable or stateful except
  the frozen teacher (connectors, memory banks, learnable temperatures, extra networks).

Invariants kept here rather than in each method: the teacher is always in eval mode and runs
under ``torch.no_grad()``; its parameters never require gradient. With the bias plug-in on, the
epoch record gets the plug-in's fractions and the run summary its row counts
(:mod:`beyondkd.bias.reporting`).

A method declares its hyper-parameters as a pydantic ``Params`` model (unknown keys are a
one-line error) and whether it can take the BTKD plug-in (``supports_bias``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import torch
from pydantic import BaseModel, ConfigDict
from torch import Tensor, nn

from beyondkd.bias import reporting
from beyondkd.bias.loss import BiasConfig, BiasPlugin
from beyondkd.core import Batch, Progress, StepOutput, Trainable, freeze
from beyondkd.losses.kd import cross_entropy
from beyondkd.models.features import FeatureHooks

__all__ = ["Distiller", "DistillerContext", "NoParams", "StepOutput", "freeze"]


class NoParams(BaseModel):
    """A method without hyper-parameters."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class DistillerContext:
    """Facts about the run that some methods need at construction.

    Attributes:
        num_classes: classifier outputs.
        in_channels: image channels.
        image_size: side of training images.
        num_samples: size of the training set (CRD's memory bank).
        total_steps: optimizer steps in the whole run.
        total_epochs: epochs in the whole run.
        seed: the run's seed.
        teacher_model: the teacher's registry name, when the run built it from the registry
            (SLKD builds fresh networks of the same architecture from it).
        teacher_options: the architecture options the teacher was built with.
        gather_rows: concatenates a tensor over the processes of a distributed run along dim 0,
            without gradient (identity in one process). Methods with per-sample state (CRD's
            memory banks) apply every process's rows with it so their copies stay identical.
    """

    num_classes: int
    in_channels: int
    image_size: int
    num_samples: int
    total_steps: int = 1
    total_epochs: int = 1
    seed: int = 0
    teacher_model: str | None = None
    teacher_options: dict[str, Any] = field(default_factory=dict)
    gather_rows: Callable[[Tensor], Tensor] = field(default=lambda rows: rows, repr=False, compare=False)


class Distiller(Trainable):
    """Base class of every method (see the module docstring for the contract).

    Args:
        student: the network being trained.
        teacher: the frozen teacher (``None`` for methods that need none).
        params: the method's validated hyper-parameters (an instance of ``Params``).
        bias: the BTKD plug-in settings, or ``None`` for the method alone.
        context: :class:`DistillerContext`.
    """

    name: ClassVar[str] = ""
    Params: ClassVar[type[BaseModel]] = NoParams
    needs_teacher: ClassVar[bool] = True
    supports_bias: ClassVar[bool] = True
    #: teacher logits are all the method reads from the teacher (so they can be cached)
    teacher_logits_only: ClassVar[bool] = True
    description: ClassVar[str] = ""

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None,
        params: BaseModel,
        bias: BiasConfig | None,
        context: DistillerContext,
    ) -> None:
        super().__init__()
        self.student = student
        self.teacher = freeze(teacher) if teacher is not None else None
        self.params = params
        self.context = context
        self.bias = BiasPlugin(bias) if bias is not None else None

    # -- the contract ------------------------------------------------------------------------
    def training_step(self, batch: Batch, progress: Progress) -> StepOutput:  # pragma: no cover
        raise NotImplementedError

    def forward(self, images: Tensor) -> Tensor:
        """Student logits (used for evaluation)."""
        return self.student(images)

    @classmethod
    def length_dependence(cls, params: BaseModel, bias: BiasConfig | None) -> str | None:
        """Why this method's run depends on ``train.epochs`` beyond its LR schedule (``None``: it does not).

        A resumed run may change ``train.epochs`` only when nothing it computes depends on the
        run's length. Default: only the plug-in's γ schedule can (:mod:`beyondkd.bias.reporting`).
        """
        return reporting.length_dependence(bias)

    def epoch_fields(self, reduced: dict[str, float]) -> dict[str, float]:
        """The plug-in's fractions of rows (``frac_right``, ...) when it is on."""
        return reporting.epoch_fields(reduced) if self.bias is not None else {}

    def summary_fields(self, history: list[dict[str, Any]]) -> dict[str, Any]:
        """The plug-in's row counts over the run (``rows_rectified``, ``rows_teacher_wrong``) when it is on."""
        return reporting.summary_fields(history) if self.bias is not None else {}

    # -- helpers for methods -------------------------------------------------------------------
    def teacher_logits(self, batch: Batch) -> Tensor:
        """The teacher's logits on the batch (cached ones when the batch carries them)."""
        if batch.teacher_logits is not None:
            return batch.teacher_logits
        if self.teacher is None:
            raise RuntimeError(f"method '{self.name}' has no teacher")
        with torch.no_grad():
            return self.teacher(batch.images)

    def teacher_forward_with_features(self, images: Tensor, hooks: FeatureHooks) -> tuple[Tensor, dict[str, Tensor]]:
        """Teacher logits and hooked features, without gradient."""
        assert self.teacher is not None
        with torch.no_grad():
            logits = self.teacher(images)
        return logits, dict(hooks.features)

    def logit_distillation(
        self,
        student_logits: Tensor,
        teacher_logits: Tensor,
        targets: Tensor,
        progress: Progress,
        per_sample: Any,
        temperature: float,
        ce_weight: float,
        kd_weight: float,
        ce: Tensor | None = None,
    ) -> tuple[Tensor, dict[str, Tensor], dict[str, Any]]:
        """CE plus a per-sample logit distillation term, through the bias plug-in when it is on.

        Args:
            per_sample: ``per_sample(student_logits, teacher_logits) -> (N,)`` the method's
                distillation loss (already scaled as the method defines, e.g. by ``T²``).
            temperature: the temperature at which the plug-in rectifies the teacher.
            ce: per-sample CE if already computed (else computed here).

        Returns:
            ``(loss, terms, stats)``; ``stats`` are the plug-in's, with their reductions.
        """
        if ce is None:
            ce = cross_entropy(student_logits, targets)
        if self.bias is None:
            kd = per_sample(student_logits, teacher_logits).mean()
            ce_term, kd_term = ce_weight * ce.mean(), kd_weight * kd
            return ce_term + kd_term, {"ce": ce_term.detach(), "kd": kd_term.detach()}, {}
        bias_targets = self.bias.teacher_targets(teacher_logits, targets, temperature)
        distill = per_sample(student_logits, bias_targets.teacher_logits)
        loss, parts = self.bias.combine(ce, distill, bias_targets, progress, ce_weight, kd_weight)
        terms = {k: parts[k] for k in ("ce", "kd_easy", "kd_hard")}
        return loss, terms, reporting.step_stats(parts)
