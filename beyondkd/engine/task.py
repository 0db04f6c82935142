"""The task protocol: what the trainer asks of classification, detection, or a task to come.

:class:`beyondkd.engine.trainer.Trainer` runs one loop for every task: autocast, the on-device
non-finite guard, one backward, every group's optimizer and per-iteration LR schedule,
``DistributedDataParallel``, epoch records, atomic checkpoints, exact resume. What differs
between tasks is only what a :class:`Task` provides:

* the **batch type** its loaders yield (anything with ``len(batch)``, the samples it holds, on
  the training device; loaders have ``set_epoch(epoch, skip_batches)`` and ``len``);
* what its method's **step output** adds to the epoch's training figures
  (:meth:`~Task.train_sums`, :meth:`~Task.train_fields`: top-1 on training batches for
  classification, nothing for detection);
* its **evaluator** (:meth:`~Task.evaluate`: top-1 / top-5 for classification, COCOeval AP for
  detection) and the **metric** that picks ``best.pt`` (:attr:`~Task.metric`, higher is better);
* its **optimizers and LR schedules** from its own config section (:meth:`~Task.build_optimizers`)
  and whether those schedules depend on the run's length (:meth:`~Task.length_dependence`, used
  by the resume check);
* the **per-task summary** of a finished run (:meth:`~Task.summary`) and its plots.

A new task (segmentation, say) is one module implementing this protocol plus its data and its
:class:`~beyondkd.core.Trainable` methods; see :mod:`beyondkd.engine.classification` and
:mod:`beyondkd.detection.task`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Protocol

import torch
from torch import Tensor

from beyondkd.core import StepOutput, Trainable
from beyondkd.engine.distributed import DistEnv

Optimizers = dict[str, torch.optim.Optimizer]
Schedulers = dict[str, torch.optim.lr_scheduler.LRScheduler]


class EngineSettings(Protocol):
    """The fields of a task's ``train`` config section that the trainer reads."""

    epochs: int
    precision: str
    grad_clip: float | None
    log_every: int
    nan_check_every: int
    checkpoint_every_steps: int | None
    eval_every: int
    progress_bar: bool


class Task(Protocol):
    """See the module docstring."""

    name: str
    #: the evaluation figure that selects ``best.pt`` (higher is better)
    metric: str
    #: what to change when a loss becomes non-finite (ends the one-line error)
    nonfinite_hint: str

    def build_optimizers(self, method: Trainable, cfg: Any, steps_per_epoch: int,
                         device: torch.device) -> tuple[Optimizers, Schedulers]:
        """One optimizer and one per-iteration LR schedule per parameter group of ``method``."""
        ...

    def length_dependence(self, cfg: Any) -> str | None:
        """Why the LR schedules of ``cfg`` depend on ``cfg.epochs`` (``None`` when they do not)."""
        ...

    def train_sums(self, out: StepOutput, batch: Any) -> dict[str, Tensor]:
        """Per-step device tensors summed over the epoch (e.g. correct top-1 predictions)."""
        ...

    def train_fields(self, sums: dict[str, float], samples: float) -> dict[str, float]:
        """Epoch figures from :meth:`train_sums` summed over the epoch and the processes."""
        ...

    def evaluate(self, method: Trainable, loader: Any, autocast: Callable[[], Any], env: DistEnv) -> dict[str, float]:
        """Validation figures of ``method``'s student over the whole validation set (every rank gets them)."""
        ...

    def summary(self, history: list[dict[str, Any]], best: float, best_epoch: int,
                meta: dict[str, Any], epochs: int, method: str) -> dict[str, Any]:
        """The run summary (``summary.json``) before the method's own fields are added."""
        ...

    def plot(self, history: list[dict[str, Any]], output_dir: Path, meta: dict[str, Any]) -> None:
        """Write the task's plots of a run (may write none)."""
        ...
