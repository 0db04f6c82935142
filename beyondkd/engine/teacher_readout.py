"""How often the teacher is right on the student's training rows, measured before training.

The bias plug-in acts only on rows the teacher gets wrong (it drops or rectifies them), so
that fraction says in advance how much the plug-in can change. With cached teacher logits it
is exact over every training row at no cost; otherwise the teacher runs on the first batches of
epoch 0, exactly as the student will see them (augmented when augmentation is on).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable

import torch
from torch import nn

from beyondkd.engine.distributed import DistEnv

#: below this fraction of wrong rows the plug-in has almost nothing to act on
FEW_WRONG_ROWS = 0.01


@dataclass(frozen=True)
class TeacherReadout:
    """The teacher's top-1 on the student's training rows.

    Attributes:
        rows: rows measured.
        right: rows whose teacher top-1 is the label.
        total_rows: training rows of the run.
        source: how the rows were measured.
    """

    rows: int
    right: int
    total_rows: int
    source: str

    @property
    def frac_right(self) -> float:
        return self.right / max(self.rows, 1)

    @property
    def frac_wrong(self) -> float:
        return 1.0 - self.frac_right

    def reading(self) -> str:
        """One line for the user: is there anything for the plug-in to act on?"""
        where = "" if self.rows == self.total_rows else f" (measured on {self.rows:,} of {self.total_rows:,})"
        if self.frac_wrong >= FEW_WRONG_ROWS:
            return (f"the teacher is wrong on {100 * self.frac_wrong:.1f} % of your training rows{where}: "
                    "the plug-in has rows to act on")
        return (f"the teacher is right on {100 * self.frac_right:.1f} % of your training rows{where}: "
                "the plug-in will change little")

    def record(self) -> dict[str, Any]:
        """What the run record stores."""
        return {**asdict(self), "frac_right": self.frac_right, "reading": self.reading()}


@torch.no_grad()
def measure_teacher_on_train_rows(
    teacher: nn.Module,
    train_loader: Any,
    total_rows: int,
    max_rows: int,
    autocast: Callable[[], Any],
    dist: DistEnv = DistEnv(),
) -> TeacherReadout:
    """Measure :class:`TeacherReadout` before training.

    Args:
        teacher: the frozen teacher (in eval mode).
        train_loader: the run's training loader; a cached-logit loader (``logits`` and
            ``targets`` over every row) is read without running the teacher.
        total_rows: training rows of the run.
        max_rows: without cached logits, measure about this many rows (all ranks together).
        autocast: the run's autocast context factory.
        dist: the run's process group (counts are summed over ranks).
    """
    logits = getattr(train_loader, "logits", None)
    targets = getattr(train_loader, "targets", None)
    if logits is not None and targets is not None and len(logits) == len(targets):
        right = int((logits.argmax(1).cpu() == targets.cpu()).sum())
        return TeacherReadout(len(targets), right, total_rows, "cached teacher logits, every training row")
    teacher.eval()
    budget = max(1, max_rows // max(dist.world_size, 1))
    device_right = device_rows = None
    seen = 0
    train_loader.set_epoch(0)
    for batch in train_loader:
        with autocast():
            pred = teacher(batch.images).argmax(1)
        hits = (pred == batch.targets).sum().to(torch.float64)
        n = torch.tensor(float(len(batch)), dtype=torch.float64, device=hits.device)
        device_right = hits if device_right is None else device_right + hits
        device_rows = n if device_rows is None else device_rows + n
        seen += len(batch)
        if seen >= budget:
            break
    if device_right is None or device_rows is None:
        return TeacherReadout(0, 0, total_rows, "no training rows")
    sums = dist.all_reduce_sum(torch.stack([device_right, device_rows]))
    rows, right = int(sums[1]), int(sums[0])
    how = "every training row of epoch 0" if rows >= total_rows else "the first batches of epoch 0"
    return TeacherReadout(rows, right, total_rows, f"{how}, as the student sees them")
