"""What every layer shares: where training stands, a batch, what a step returns, what the engine trains.

This module imports only torch, so ``bias/``, ``data/``, ``distillers/``, ``detection/`` and
``engine/`` all build on it without importing each other:

* :class:`Progress`: iterations and epochs done, of how many (γ schedules, curricula);
* :class:`Batch`: one classification batch (images, labels, dataset indices, cached teacher logits);
* :class:`Stat` and :class:`StepOutput`: one training step's loss, logits, loss terms and
  statistics, each statistic with the reduction that turns its per-step values into the epoch's
  figure (``sum``, ``mean`` or ``last``);
* :class:`Trainable`: the module contract the engine's trainer runs (a distillation method of
  :mod:`beyondkd.distillers`, or a detector of :mod:`beyondkd.detection`).

The old import paths stay valid: ``beyondkd.bias.schedule.Progress``, ``beyondkd.data.base.Batch``
and ``beyondkd.distillers.base.StepOutput`` are these classes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, get_args

import torch
from torch import Tensor, nn

Reduction = Literal["sum", "mean", "last"]
REDUCTIONS: tuple[str, ...] = get_args(Reduction)


@dataclass(frozen=True)
class Progress:
    """Where training stands.

    Attributes:
        step: iterations done so far in the whole run (0-based).
        total_steps: iterations in the whole run.
        epoch: epochs done so far (0-based index of the current epoch).
        total_epochs: epochs in the whole run.
    """

    step: int
    total_steps: int
    epoch: int = 0
    total_epochs: int = 1

    @property
    def fraction(self) -> float:
        """Iterations done over the total, in ``[0, 1]``."""
        return min(max(self.step / max(self.total_steps, 1), 0.0), 1.0)

    @property
    def epoch_fraction(self) -> float:
        """Whole epochs done over the total, in ``[0, 1]``."""
        return min(max(self.epoch / max(self.total_epochs, 1), 0.0), 1.0)

    @classmethod
    def from_fraction(cls, fraction: float, total_epochs: int = 1) -> "Progress":
        """A progress from a float in ``[0, 1]`` (what a hand-written training loop knows)."""
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"progress must be in [0, 1], got {fraction}")
        resolution = 1_000_000
        return cls(
            step=round(fraction * resolution),
            total_steps=resolution,
            epoch=min(int(fraction * total_epochs), total_epochs),
            total_epochs=total_epochs,
        )


@dataclass
class Batch:
    """One classification batch.

    Attributes:
        images: ``(N, C, H, W)`` float images, normalised.
        targets: ``(N,)`` int64 labels.
        indices: ``(N,)`` int64 positions of the samples in their dataset (CRD, caches).
        teacher_logits: ``(N, K)`` cached teacher logits, when a cache is in use.
    """

    images: Tensor
    targets: Tensor
    indices: Tensor | None = None
    teacher_logits: Tensor | None = None

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "Batch":
        def move(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(device, non_blocking=non_blocking)

        return Batch(move(self.images), move(self.targets), move(self.indices), move(self.teacher_logits))  # type: ignore[arg-type]

    def __len__(self) -> int:
        return int(self.targets.shape[0])


@dataclass(frozen=True)
class Stat:
    """A statistic of one step with the reduction that makes the epoch's figure of it.

    ``sum`` adds the steps' values (counts: rows right, rows rectified), ``mean`` averages them
    (γ over the epoch) and ``last`` keeps the last step's (γ at the end of the epoch). Across the
    processes of a distributed run sums are added and means and last values averaged.
    """

    value: Tensor
    reduce: Reduction = "mean"

    def __post_init__(self) -> None:
        if self.reduce not in REDUCTIONS:
            raise ValueError(f"unknown reduction '{self.reduce}': use one of {', '.join(REDUCTIONS)}")


@dataclass
class StepOutput:
    """Result of one training step.

    Attributes:
        loss: scalar to back-propagate (the sum of every group's losses; groups own disjoint
            parameters, so one backward gives each its own gradient).
        logits: ``(N, C)`` student logits on the batch (training accuracy), or ``None`` for a
            task without per-sample logits (detection).
        terms: weighted loss terms, detached (logged as per-step means; checked for finiteness).
        stats: other statistics, detached. A value given as :class:`Stat` declares its
            reduction; a plain tensor is averaged over the epoch's steps. After construction
            ``stats`` holds plain tensors and ``reductions`` every declared reduction.
        reductions: stat name -> ``sum`` / ``mean`` / ``last`` (missing names: ``mean``).
    """

    loss: Tensor
    logits: Tensor | None
    terms: dict[str, Tensor] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    reductions: dict[str, Reduction] = field(default_factory=dict)

    def __post_init__(self) -> None:
        plain: dict[str, Tensor] = {}
        for key, value in self.stats.items():
            if isinstance(value, Stat):
                plain[key] = value.value
                self.reductions[key] = value.reduce
            else:
                plain[key] = value
        self.stats = plain

    def reduction(self, key: str) -> Reduction:
        """How stat ``key`` is reduced over an epoch."""
        return self.reductions.get(key, "mean")


def freeze(module: nn.Module) -> nn.Module:
    """Put ``module`` in eval mode with no parameter requiring gradient."""
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


class Trainable(nn.Module):
    """What the engine's trainer runs: a network being trained, possibly with a frozen teacher.

    Subclasses set ``student`` (the network whose weights a checkpoint's ``model`` holds) and
    ``teacher`` (frozen, or ``None``) and implement :meth:`training_step`. Everything else has a
    default:

    * :meth:`param_groups`: named groups of trainable parameters, each given its own optimizer
      and LR schedule (default: one group ``student`` with every trainable parameter outside
      ``teacher``);
    * :meth:`schedule_spans`: per group, the epochs its LR schedule spans (default: the run);
    * :meth:`checkpoint_state` / :meth:`load_checkpoint_state`: everything but the teacher;
    * :meth:`replicated_modules`: the children a distributed run wraps in
      ``DistributedDataParallel`` (every child but the teacher); :attr:`find_unused_parameters`
      is True for a method whose steps leave some trainable parameter without gradient;
    * :meth:`epoch_fields` / :meth:`summary_fields`: figures the method derives from its own
      statistics for the epoch record and the run summary (default: none);
    * :meth:`on_epoch_start`: a hook before each training epoch.

    The teacher stays in eval mode whatever ``train()`` is called with.
    """

    name: ClassVar[str] = ""
    student: nn.Module
    teacher: nn.Module | None

    def training_step(self, batch: Any, progress: Progress) -> StepOutput:  # pragma: no cover
        raise NotImplementedError

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

    def replicated_modules(self) -> dict[str, nn.Module]:
        """The children trained (and replicated by ``DistributedDataParallel``): all but the teacher."""
        return {name: child for name, child in self.named_children() if name != "teacher"}

    @property
    def find_unused_parameters(self) -> bool:
        """True when some step leaves a trainable parameter without gradient (DDP must search)."""
        return False

    def epoch_fields(self, reduced: dict[str, float]) -> dict[str, float]:
        """Figures derived from an epoch's reduced statistics (e.g. fractions of counts)."""
        return {}

    def summary_fields(self, history: list[dict[str, Any]]) -> dict[str, Any]:
        """Method-specific fields of the run summary, from the epoch records."""
        return {}

    def on_epoch_start(self, epoch: int) -> None:
        """Called by the trainer before each training epoch (no-op by default)."""

    def train(self, mode: bool = True) -> "Trainable":
        super().train(mode)
        if getattr(self, "teacher", None) is not None:
            self.teacher.eval()
        return self
