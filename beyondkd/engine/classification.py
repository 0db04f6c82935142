"""The classification task: top-1 / top-5 evaluation, training accuracy, the classification summary.

Batches are :class:`beyondkd.core.Batch`; a step's logits give the training accuracy. Each
parameter group of the method gets the optimizer ``train.extra_optimizers.<group>`` (else a
copy of ``train.optimizer``) and its own per-iteration LR schedule over the epochs the method's
``schedule_spans`` gives it. See :mod:`beyondkd.engine.task` for the protocol.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

from beyondkd.config import OptimizerConfig, TrainConfig
from beyondkd.core import StepOutput, Trainable
from beyondkd.engine.distributed import DistEnv
from beyondkd.engine.evaluate import evaluation_sums, metrics_from_sums
from beyondkd.engine.optim import build_optimizer, build_scheduler
from beyondkd.engine.plots import plot_accuracy
from beyondkd.engine.task import Optimizers, Schedulers
from beyondkd.errors import BeyondKDError


class ClassificationTask:
    """Image classification (every ``beyondkd train-teacher`` / ``distill`` run)."""

    name = "classification"
    metric = "val_acc"
    nonfinite_hint = "lower train.optimizer.lr, use train.precision fp32 or set train.grad_clip"

    def build_optimizers(self, method: Trainable, cfg: TrainConfig, steps_per_epoch: int,
                         device: torch.device) -> tuple[Optimizers, Schedulers]:
        optimizers: Optimizers = {}
        schedulers: Schedulers = {}
        spans = method.schedule_spans()
        for group, params in method.param_groups().items():
            if not params:
                continue
            opt_cfg: OptimizerConfig = cfg.extra_optimizers.get(group, cfg.optimizer)
            optimizers[group] = build_optimizer(params, opt_cfg, device)
            first, end = spans.get(group, (0, cfg.epochs))
            schedulers[group] = build_scheduler(
                optimizers[group], cfg.scheduler, steps_per_epoch,
                steps_per_epoch * (end - first), start_step=steps_per_epoch * first,
            )
        unknown = set(cfg.extra_optimizers) - set(optimizers)
        if unknown:
            raise BeyondKDError(
                f"train.extra_optimizers names groups {sorted(unknown)} that method '{method.name}' does not have "
                f"(it has {sorted(optimizers)})"
            )
        return optimizers, schedulers

    def length_dependence(self, cfg: TrainConfig) -> str | None:
        if cfg.scheduler.name == "cosine":
            return "the cosine LR schedule decays over train.epochs"
        return None

    def train_sums(self, out: StepOutput, batch: Any) -> dict[str, Tensor]:
        if out.logits is None:
            return {}
        return {"correct": (out.logits.detach().argmax(1) == batch.targets).sum()}

    def train_fields(self, sums: dict[str, float], samples: float) -> dict[str, float]:
        if "correct" not in sums:
            return {}
        return {"train_acc": 100.0 * sums["correct"] / max(samples, 1.0)}

    def evaluate(self, method: Trainable, loader: Any, autocast: Callable[[], Any], env: DistEnv) -> dict[str, float]:
        method.eval()
        loader.set_epoch(0)
        return metrics_from_sums(env.all_reduce_sum(evaluation_sums(method, loader, autocast)))

    def summary(self, history: list[dict[str, Any]], best: float, best_epoch: int,
                meta: dict[str, Any], epochs: int, method: str) -> dict[str, Any]:
        record = meta.get("record") or {}
        return {
            "name": meta.get("name"),
            "method": record.get("method") or method,
            # the resolved method parameters and plug-in settings (preset, name, every field)
            "params": record.get("params"),
            "bias": record.get("bias"),
            "teacher_on_train_rows": meta.get("teacher_on_train_rows"),
            "best_acc": best,
            "best_epoch": best_epoch,
            "last_acc": next((r["val_acc"] for r in reversed(history) if "val_acc" in r), float("nan")),
            "epochs": epochs,
            "teacher_acc": meta.get("teacher_acc"),
            "train_seconds": sum(r.get("epoch_seconds", 0.0) for r in history),
        }

    def plot(self, history: list[dict[str, Any]], output_dir: Path, meta: dict[str, Any]) -> None:
        plot_accuracy({meta.get("name") or "student": history}, output_dir / "accuracy.png",
                      title=f"{meta.get('name') or 'run'}: validation accuracy", teacher_acc=meta.get("teacher_acc"))
