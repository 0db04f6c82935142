"""The training loop, the one of every task and method. It knows no task and no method.

Per epoch: ``training_step`` of the method on each batch (under autocast when asked, through
``DistributedDataParallel`` under torchrun), the on-device non-finite guard, one backward, a
step of every parameter group's optimizer and per-iteration LR schedule; then the epoch's
record (the method's statistics reduced as each declares, the LR of every parameter group),
evaluation by the task, one line in ``metrics.jsonl``, TensorBoard scalars and an atomic
checkpoint (``last.pt``, and ``best.pt`` when the task's metric improves).

``fit(resume=True)`` continues from ``last.pt``, mid-epoch included, with the optimizer,
schedule, scaler, RNG states and the interrupted epoch's partial sums restored, after checking
that the run's settings are the recorded ones (:mod:`beyondkd.engine.resume`).

What differs between classification and detection is the :class:`~beyondkd.engine.task.Task`;
what differs between methods is the :class:`~beyondkd.core.Trainable`.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from beyondkd.core import Progress, Trainable
from beyondkd.engine.checkpoint import (
    CHECKPOINT_VERSION,
    atomic_save,
    atomic_write_text,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
)
from beyondkd.engine.classification import ClassificationTask
from beyondkd.engine.distributed import DistEnv, average_buffers, wrap_replicated
from beyondkd.engine.epoch_sums import EpochSums
from beyondkd.engine.logging import MetricsLogger, epoch_progress
from beyondkd.engine.nonfinite import NonFiniteGuard
from beyondkd.engine.optim import clip_gradients_per_optimizer
from beyondkd.engine.resume import check_run_folder
from beyondkd.engine.sinks import RunInfo
from beyondkd.engine.task import EngineSettings, Task
from beyondkd.errors import BeyondKDError


@dataclass
class TrainResult:
    """Outcome of :meth:`Trainer.fit`.

    ``best`` and ``last`` are the task's metric (``val_acc`` in percent for classification,
    COCO ``AP`` for detection) at the best and at the last evaluated epoch.
    """

    output_dir: Path
    best: float
    best_epoch: int
    last: float
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    metric: str = "val_acc"

    @property
    def best_acc(self) -> float:
        return self.best

    @property
    def last_acc(self) -> float:
        return self.last


def _has_gradient(optimizer: torch.optim.Optimizer) -> bool:
    """True when some parameter of ``optimizer`` received a gradient in this step."""
    return any(p.grad is not None for group in optimizer.param_groups for p in group["params"])


class Trainer:
    """Trains a :class:`~beyondkd.core.Trainable` (a distiller, a detector) for a task.

    Args:
        distiller: the method (already on ``device``).
        train_loader, val_loader: loaders of the task's batches with ``set_epoch`` and ``len``.
        cfg: the ``train`` section of the run config (:class:`~beyondkd.engine.task.EngineSettings`
            plus what the task's optimizers read).
        output_dir: run folder (checkpoints, metrics, plots).
        device: training device.
        meta: facts written into checkpoints and the summary: ``name``, ``model_meta``,
            ``config`` (the resolved config, compared on resume), ``record`` (the resolved
            method and plug-in), ``length_dependence`` (why ``train.epochs`` may not change on
            resume), ``epoch_constants`` (added to every epoch record, e.g. ``teacher_acc``)
            and whatever the task's summary reads.
        dist: distributed context (the trainable part is wrapped in DistributedDataParallel).
        task: the task (default: classification).
        logger: the run's metrics logger (default: ``metrics.jsonl`` and TensorBoard on rank 0).
    """

    def __init__(
        self,
        distiller: Trainable,
        train_loader: Any,
        val_loader: Any,
        cfg: EngineSettings,
        output_dir: str | Path,
        device: torch.device,
        meta: dict[str, Any] | None = None,
        dist: DistEnv = DistEnv(),
        task: Task | None = None,
        logger: MetricsLogger | None = None,
    ) -> None:
        self.distiller = distiller
        self.train_loader = train_loader
        self.val_loader = val_loader
        self.cfg = cfg
        self.output_dir = Path(output_dir)
        self.device = device
        self.meta = dict(meta or {})
        self.dist = dist
        self.task: Task = task if task is not None else ClassificationTask()
        self.steps_per_epoch = len(train_loader)
        if self.steps_per_epoch == 0:
            raise BeyondKDError("the training set is smaller than one batch: lower data.batch_size or raise data.subset")
        self.total_steps = self.steps_per_epoch * cfg.epochs
        self.optimizers, self.schedulers = self.task.build_optimizers(distiller, cfg, self.steps_per_epoch, device)
        if cfg.precision == "fp16" and device.type != "cuda":
            raise BeyondKDError("train.precision fp16 needs a CUDA device: use bf16 or fp32 on the CPU")
        self._amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.precision)
        self.scaler = torch.amp.GradScaler("cuda", enabled=cfg.precision == "fp16")
        self.logger = logger if logger is not None else MetricsLogger(
            self.output_dir, enabled=dist.is_main, loggers=getattr(cfg, "loggers", None),
            run=RunInfo(str(self.meta.get("name", "run")), dict(self.meta.get("config", {}))))
        self._replicated = wrap_replicated(distiller, dist, device) if dist.enabled else None
        self.epoch = 0
        self.step_in_epoch = 0
        self.global_step = 0
        self.best_value = -math.inf
        self.best_epoch = -1
        self._partial: dict[str, Any] | None = None  # the interrupted epoch's sums, after a resume
        self.guard = self._new_guard()

    # ------------------------------------------------------------------------------------
    def autocast(self):
        if self._amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self._amp_dtype)

    @property
    def last_path(self) -> Path:
        return self.output_dir / "last.pt"

    @property
    def best_path(self) -> Path:
        return self.output_dir / "best.pt"

    def _new_guard(self) -> NonFiniteGuard:
        return NonFiniteGuard(self.device, self.global_step, self.steps_per_epoch, self.last_path,
                              self.task.nonfinite_hint, self.dist)

    def _checkpoint(self, partial: dict[str, Any] | None) -> dict[str, Any]:
        state = self.distiller.checkpoint_state()
        model = {k[len("student.") :]: v for k, v in state.items() if k.startswith("student.")}
        extra = {k: v for k, v in state.items() if not k.startswith("student.")}
        return {
            "version": CHECKPOINT_VERSION,
            "task": self.task.name,
            "model": model,
            "distiller": extra,
            "model_meta": self.meta.get("model_meta", {}),
            "config": self.meta.get("config", {}),
            "record": self.meta.get("record", {}),
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
            "scaler": self.scaler.state_dict(),
            "rng": capture_rng_state(),
            "world_size": self.dist.world_size,
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "global_step": self.global_step,
            "epoch_partial": partial,
            "metric": self.task.metric,
            "best_value": self.best_value,
            "best_epoch": self.best_epoch,
            "history": self.logger.history,
        }

    def _sync_buffers(self) -> None:
        """Every process's replicated buffers (BatchNorm statistics) made equal (a collective call)."""
        if self._replicated is not None:
            average_buffers(self._replicated.module, self.dist)

    def save(self, path: Path, partial: EpochSums | None = None, sync: bool = True) -> None:
        """Write a checkpoint (rank 0), never after a non-finite loss (a collective call under torchrun).

        Args:
            partial: the running epoch's sums, for a mid-epoch checkpoint.
            sync: average the replicated buffers first (skipped when just done).
        """
        self.guard.check()
        if sync:
            self._sync_buffers()
        state = partial.reduced_state(self.dist) if partial is not None else None
        if self.dist.is_main:
            atomic_save(self._checkpoint(state), path)

    def resume(self, path: str | Path | None = None) -> bool:
        """Restore state from ``path`` (default ``last.pt``); False if there is nothing to resume."""
        path = Path(path) if path is not None else self.last_path
        if not path.is_file():
            return False
        ckpt = load_checkpoint(path)
        state = {f"student.{k}": v for k, v in ckpt["model"].items()}
        state.update(ckpt.get("distiller", {}))
        try:
            self.distiller.load_checkpoint_state(state)
            for k, o in self.optimizers.items():
                o.load_state_dict(ckpt["optimizers"][k])
            for k, s in self.schedulers.items():
                s.load_state_dict(ckpt["schedulers"][k])
        except (RuntimeError, KeyError, ValueError) as exc:
            raise BeyondKDError(f"cannot resume from {path}: {str(exc).splitlines()[0]} (was it written by another config?)") from None
        self.scaler.load_state_dict(ckpt["scaler"])
        restore_rng_state(ckpt["rng"])
        self.epoch = int(ckpt["epoch"])
        self.step_in_epoch = int(ckpt["step_in_epoch"])
        self.global_step = int(ckpt["global_step"])
        self.best_value = float(ckpt.get("best_value", ckpt.get("best_acc", -math.inf)))
        self.best_epoch = int(ckpt["best_epoch"])
        self._partial = ckpt.get("epoch_partial") if self.step_in_epoch else None
        self.logger.restore([r for r in ckpt["history"] if r["epoch"] < self.epoch])
        self.guard = self._new_guard()
        return True

    # ------------------------------------------------------------------------------------
    def _train_epoch(self) -> dict[str, Any]:
        d = self.distiller
        d.train()
        d.on_epoch_start(self.epoch)
        self.train_loader.set_epoch(self.epoch, skip_batches=self.step_in_epoch)
        sums = EpochSums(self.device)
        if self._partial is not None:
            sums.load_state(self._partial, holds_sums=self.dist.is_main)
            self._partial = None
        step = self._replicated if self._replicated is not None else d.training_step
        t0 = time.perf_counter()
        bar = self._progress_bar()
        for batch in self.train_loader:
            progress = Progress(self.global_step, self.total_steps, self.epoch, self.cfg.epochs)
            with self.autocast():
                out = step(batch, progress)
            self.guard.observe(out.loss, out.terms)
            for opt in self.optimizers.values():
                opt.zero_grad(set_to_none=True)
            self.scaler.scale(out.loss).backward()
            # a group the step left without gradient (a phase that trains other groups) is not stepped
            stepping = [opt for opt in self.optimizers.values() if _has_gradient(opt)]
            if self.cfg.grad_clip is not None:
                for opt in stepping:
                    self.scaler.unscale_(opt)
                clip_gradients_per_optimizer(stepping, self.cfg.grad_clip)
            for opt in stepping:
                self.scaler.step(opt)
            self.scaler.update()
            for group, sched in self.schedulers.items():
                if self.optimizers[group] in stepping:
                    sched.step()
                else:  # the schedule follows the run's iterations, stepped or not
                    with warnings.catch_warnings():
                        warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before")
                        sched.step()
            sums.add(out, len(batch), self.task.train_sums(out, batch))  # device operations only
            self.global_step += 1
            self.step_in_epoch += 1
            if self.global_step % self.cfg.log_every == 0:
                self.logger.log_step(self.global_step, {"loss": float(out.loss.detach()), **{k: float(v) for k, v in out.terms.items()}})
                if bar is not None:
                    bar.set_postfix(loss=f"{float(out.loss.detach()):.4f}")
            if bar is not None:
                bar.update(1)
            if self.global_step % self.cfg.nan_check_every == 0:
                self.guard.check()
            if self.cfg.checkpoint_every_steps and self.global_step % self.cfg.checkpoint_every_steps == 0:
                self.save(self.last_path, partial=sums)
        if bar is not None:
            if "loss" in sums.sums:  # the epoch's mean (this process's rows)
                bar.set_postfix(loss=f"{float(sums.sums['loss'] / sums.sums['samples'].clamp_min(1)):.4f}")
            bar.close()
        self.guard.check()
        return sums.record(self.dist, self.task, d, time.perf_counter() - t0)

    def _learning_rates(self) -> dict[str, float]:
        """``lr_<group>`` of every parameter group (``lr_<group>_<i>`` within one optimizer), and
        ``lr``, the first group's."""
        lrs: dict[str, float] = {}
        for name, opt in self.optimizers.items():
            groups = opt.param_groups
            for i, g in enumerate(groups):
                lrs[f"lr_{name}" if len(groups) == 1 else f"lr_{name}_{i}"] = float(g["lr"])
        return {"lr": next(iter(lrs.values()), 0.0), **lrs}

    def _progress_bar(self):
        if not (self.cfg.progress_bar and self.dist.is_main):
            return None
        return epoch_progress(self.steps_per_epoch, self.step_in_epoch,
                              f"{self.meta.get('name', 'train')} epoch {self.epoch + 1}/{self.cfg.epochs}")

    def evaluate(self) -> dict[str, float]:
        """The task's validation figures of the student over the whole validation set."""
        return self.task.evaluate(self.distiller, self.val_loader, self.autocast, self.dist)

    def fit(self, resume: bool = False) -> TrainResult:
        """Train for ``cfg.epochs`` epochs (continuing from ``last.pt`` if ``resume``).

        Every process checks the run folder first (:func:`~beyondkd.engine.resume.check_run_folder`).
        """
        check_run_folder(self.output_dir, resume, self.meta.get("config") or None,
                         self.meta.get("length_dependence"), self.dist.world_size)
        if self.dist.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            if resume:  # half-written files of a killed run (the real ones are intact)
                for stale in self.output_dir.glob(".*.pt.*.tmp"):
                    stale.unlink(missing_ok=True)
        if resume:
            self.resume()
        if self.dist.is_main and self.meta.get("config"):
            atomic_write_text(yaml.safe_dump(self.meta["config"], sort_keys=False), self.output_dir / "config.yaml")
        while self.epoch < self.cfg.epochs:
            record: dict[str, Any] = {"epoch": self.epoch}
            record.update(self._train_epoch())
            record.update(self._learning_rates())
            self._sync_buffers()  # the evaluated model is the saved one
            if (self.epoch + 1) % self.cfg.eval_every == 0 or self.epoch + 1 == self.cfg.epochs:
                record.update(self.evaluate())
            record.update(self.meta.get("epoch_constants", {}))
            value = record.get(self.task.metric)
            is_best = value is not None and value > self.best_value
            if is_best:
                self.best_value, self.best_epoch = float(value), self.epoch
            self.logger.log_epoch(record)
            self.epoch += 1
            self.step_in_epoch = 0
            self.save(self.last_path, sync=False)
            if is_best:
                self.save(self.best_path, sync=False)
        return self._finish()

    def _finish(self) -> TrainResult:
        history = self.logger.history
        metric = self.task.metric
        best = self.best_value if self.best_epoch >= 0 else None
        last = next((r[metric] for r in reversed(history) if metric in r), float("nan"))
        summary = self.task.summary(history, best, self.best_epoch + 1, self.meta, self.cfg.epochs, self.distiller.name)
        summary.update(self.distiller.summary_fields(history))
        if self.dist.is_main:
            atomic_write_text(json.dumps(summary, indent=2) + "\n", self.output_dir / "summary.json")
            self.task.plot(history, self.output_dir, self.meta)
        self.logger.close()
        return TrainResult(self.output_dir, float("nan") if best is None else best, self.best_epoch + 1, last,
                           history, summary, metric)
