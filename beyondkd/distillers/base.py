"""The Distiller contract: one class per method, holding student, teacher and loss terms.

The trainer only ever calls the methods defined here, so a new method is one new module:

* ``training_step(batch, progress) -> StepOutput``: the loss to back-propagate, the student's
  logits (for training accuracy), the weighted loss terms and statistics to log;
* ``forward(images)``: student logits (evaluation);
* ``param_groups()``: named parameter groups, each given its own optimizer and LR schedule by
  the trainer (``student`` holds the student and any connectors; SLKD adds ``sl_teachers``);
* ``checkpoint_state()`` / ``load_checkpoint_state()``: everything trainable or stateful except
  the frozen teacher (connectors, memory banks, learnable temperatures, extra networks).

Invariants kept here rather than in each method: the teacher is always in eval mode and runs
under ``torch.no_grad()``; its parameters never require gradient.

A method declares its hyper-parameters as a pydantic ``Params`` model (unknown keys are a
one-line error) and whether it can take the BTKD plug-in (``supports_bias``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict
from torch import Tensor, nn

from beyondkd.bias.loss import BiasConfig, BiasPlugin
from beyondkd.bias.schedule import Progress
from beyondkd.data.base import Batch
from beyondkd.losses.kd import cross_entropy
from beyondkd.models.features import FeatureHooks


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


@dataclass
class StepOutput:
    """Result of one training step.

    Attributes:
        loss: scalar to back-propagate (the sum of every group's losses; groups own disjoint
            parameters, so one backward gives each its own gradient).
        logits: ``(N, C)`` student logits on the batch.
        terms: weighted loss terms, detached (logged; checked for finiteness).
        stats: other statistics, detached (γ, rows right, rows rectified, ...).
    """

    loss: Tensor
    logits: Tensor
    terms: dict[str, Tensor] = field(default_factory=dict)
    stats: dict[str, Tensor] = field(default_factory=dict)


def freeze(module: nn.Module) -> nn.Module:
    """Put ``module`` in eval mode with no parameter requiring gradient."""
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


class Distiller(nn.Module):
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

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Named groups of trainable parameters; each gets its own optimizer."""
        params = [p for n, p in self.named_parameters() if not n.startswith("teacher.") and p.requires_grad]
        return {"student": params}

    def schedule_spans(self) -> dict[str, tuple[int, int]]:
        """Per parameter group, the epochs ``[first, end)`` its LR schedule spans.

        Groups not named span the whole run (the default for every group). A method that trains
        its groups one after another (SLKD's sequential mode) gives each group its own window,
        so warm-up, cosine decay and milestones run over that group's phase.
        """
        return {}

    def checkpoint_state(self) -> dict[str, Tensor]:
        """State to save: everything except the frozen teacher."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("teacher.")}

    def load_checkpoint_state(self, state: dict[str, Tensor]) -> None:
        """Restore :meth:`checkpoint_state` output (the teacher stays as loaded)."""
        missing, unexpected = self.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith("teacher.")]
        if missing or unexpected:
            raise RuntimeError(f"checkpoint does not match this method: missing {missing[:3]}, unexpected {unexpected[:3]}")

    def train(self, mode: bool = True) -> "Distiller":
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    def on_epoch_start(self, epoch: int) -> None:
        """Called by the trainer before each training epoch (no-op by default)."""

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
    ) -> tuple[Tensor, dict[str, Tensor], dict[str, Tensor]]:
        """CE plus a per-sample logit distillation term, through the bias plug-in when it is on.

        Args:
            per_sample: ``per_sample(student_logits, teacher_logits) -> (N,)`` the method's
                distillation loss (already scaled as the method defines, e.g. by ``T²``).
            temperature: the temperature at which the plug-in rectifies the teacher.
            ce: per-sample CE if already computed (else computed here).

        Returns:
            ``(loss, terms, stats)``.
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
        terms = {k: parts.pop(k) for k in ("ce", "kd_easy", "kd_hard")}
        return loss, terms, parts
