"""The training loop, shared by every method. It knows nothing method-specific.

Per epoch: ``distiller.training_step`` on each batch (under autocast when asked), a
finiteness check naming the offending term, one backward, a step of every parameter group's
optimizer and per-iteration LR schedule; then evaluation, one line in ``metrics.jsonl``,
TensorBoard scalars and an atomic checkpoint (``last.pt``, and ``best.pt`` when the validation
accuracy improves). ``fit(resume=True)`` continues from ``last.pt``, mid-epoch included, with
the optimizer, schedule, scaler and RNG states restored.
"""

from __future__ import annotations

import json
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor

from beyondkd.bias.schedule import Progress
from beyondkd.config import OptimizerConfig, TrainConfig
from beyondkd.distillers.base import Distiller
from beyondkd.engine.distributed import DistEnv
from beyondkd.engine.checkpoint import (
    CHECKPOINT_VERSION,
    atomic_save,
    atomic_write_text,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
)
from beyondkd.engine.evaluate import evaluation_sums, metrics_from_sums
from beyondkd.engine.logging import MetricsLogger, epoch_progress
from beyondkd.engine.optim import build_optimizer, build_scheduler, clip_gradients_per_optimizer
from beyondkd.engine.plots import plot_accuracy
from beyondkd.engine.sinks import RunInfo
from beyondkd.errors import BeyondKDError, NonFiniteLossError


@dataclass
class TrainResult:
    """Outcome of :meth:`Trainer.fit`."""

    output_dir: Path
    best_acc: float
    best_epoch: int
    last_acc: float
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)


def _has_gradient(optimizer: torch.optim.Optimizer) -> bool:
    """True when some parameter of ``optimizer`` received a gradient in this step."""
    return any(p.grad is not None for group in optimizer.param_groups for p in group["params"])


class Trainer:
    """Trains a :class:`Distiller`.

    Args:
        distiller: the method (already on ``device``).
        train_loader, val_loader: loaders yielding :class:`Batch` with ``set_epoch`` and ``len``.
        cfg: the ``train`` section of the run config.
        output_dir: run folder (checkpoints, metrics, plots).
        device: training device.
        meta: facts written into checkpoints and the summary (``model_meta``, ``config``,
            ``teacher_acc``, ...).
        dist: distributed context (gradients and metrics are averaged over its ranks).
    """

    def __init__(
        self,
        distiller: Distiller,
        train_loader: Any,
        val_loader: Any,
        cfg: TrainConfig,
        output_dir: str | Path,
        device: torch.device,
        meta: dict[str, Any] | None = None,
        dist: DistEnv = DistEnv(),
    ) -> None:
        self.distiller = distiller
        self.train_loader = train_loader
        self.val_loader = val_loader
        self.cfg = cfg
        self.output_dir = Path(output_dir)
        self.device = device
        self.meta = dict(meta or {})
        self.dist = dist
        self.steps_per_epoch = len(train_loader)
        if self.steps_per_epoch == 0:
            raise BeyondKDError("the training set is smaller than one batch: lower data.batch_size or raise data.subset")
        self.total_steps = self.steps_per_epoch * cfg.epochs
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedulers: dict[str, torch.optim.lr_scheduler.LRScheduler] = {}
        spans = distiller.schedule_spans()
        for group, params in distiller.param_groups().items():
            if not params:
                continue
            opt_cfg: OptimizerConfig = cfg.extra_optimizers.get(group, cfg.optimizer)
            self.optimizers[group] = build_optimizer(params, opt_cfg, device)
            first, end = spans.get(group, (0, cfg.epochs))
            self.schedulers[group] = build_scheduler(
                self.optimizers[group], cfg.scheduler, self.steps_per_epoch,
                self.steps_per_epoch * (end - first), start_step=self.steps_per_epoch * first,
            )
        self._trainable = [p for params in distiller.param_groups().values() for p in params]
        unknown = set(cfg.extra_optimizers) - set(self.optimizers)
        if unknown:
            raise BeyondKDError(
                f"train.extra_optimizers names groups {sorted(unknown)} that method '{distiller.name}' does not have "
                f"(it has {sorted(self.optimizers)})"
            )
        amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.precision)
        if cfg.precision == "fp16" and device.type != "cuda":
            raise BeyondKDError("train.precision fp16 needs a CUDA device: use bf16 or fp32 on the CPU")
        self._amp_dtype = amp_dtype
        self.scaler = torch.amp.GradScaler("cuda", enabled=cfg.precision == "fp16")
        self.logger = MetricsLogger(self.output_dir, enabled=dist.is_main, loggers=cfg.loggers,
                                    run=RunInfo(str(self.meta.get("name", "run")), dict(self.meta.get("config", {}))))
        self.epoch = 0
        self.step_in_epoch = 0
        self.global_step = 0
        self.best_acc = -1.0
        self.best_epoch = -1

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

    def _checkpoint(self) -> dict[str, Any]:
        state = self.distiller.checkpoint_state()
        model = {k[len("student.") :]: v for k, v in state.items() if k.startswith("student.")}
        extra = {k: v for k, v in state.items() if not k.startswith("student.")}
        return {
            "version": CHECKPOINT_VERSION,
            "model": model,
            "distiller": extra,
            "model_meta": self.meta.get("model_meta", {}),
            "config": self.meta.get("config", {}),
            "record": self.meta.get("record", {}),
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
            "scaler": self.scaler.state_dict(),
            "rng": capture_rng_state(),
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "global_step": self.global_step,
            "best_acc": self.best_acc,
            "best_epoch": self.best_epoch,
            "history": self.logger.history,
        }

    def save(self, path: Path) -> None:
        if self.dist.is_main:
            atomic_save(self._checkpoint(), path)

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
        except RuntimeError as exc:
            raise BeyondKDError(f"cannot resume from {path}: {str(exc).splitlines()[0]} (was it written by another config?)") from None
        for k, o in self.optimizers.items():
            o.load_state_dict(ckpt["optimizers"][k])
        for k, s in self.schedulers.items():
            s.load_state_dict(ckpt["schedulers"][k])
        self.scaler.load_state_dict(ckpt["scaler"])
        restore_rng_state(ckpt["rng"])
        self.epoch = int(ckpt["epoch"])
        self.step_in_epoch = int(ckpt["step_in_epoch"])
        self.global_step = int(ckpt["global_step"])
        self.best_acc = float(ckpt["best_acc"])
        self.best_epoch = int(ckpt["best_epoch"])
        self.logger.restore([r for r in ckpt["history"] if r["epoch"] < self.epoch])
        return True

    # ------------------------------------------------------------------------------------
    def _check_finite(self, loss: Tensor, terms: dict[str, Tensor]) -> None:
        if self.dist.all_true(bool(torch.isfinite(loss)), self.device):
            return
        bad = next((k for k, v in terms.items() if not bool(torch.isfinite(v).all())), "loss")
        value = float(terms[bad]) if bad in terms else float(loss)
        kept = f"the last good checkpoint {self.last_path} is intact" if self.last_path.is_file() else "no checkpoint was written"
        raise NonFiniteLossError(
            f"non-finite loss ({bad} = {value}) at epoch {self.epoch + 1}, step {self.step_in_epoch + 1}: "
            f"lower train.optimizer.lr, use train.precision fp32 or set train.grad_clip; {kept}"
        )

    def _train_epoch(self) -> dict[str, float]:
        d = self.distiller
        d.train()
        d.on_epoch_start(self.epoch)
        self.train_loader.set_epoch(self.epoch, skip_batches=self.step_in_epoch)
        zero = torch.zeros((), device=self.device, dtype=torch.float64)
        loss_sum, correct, seen = zero.clone(), zero.clone(), zero.clone()
        term_sums: dict[str, Tensor] = {}
        stat_sums: dict[str, Tensor] = {}
        stat_last: dict[str, Tensor] = {}
        steps = 0
        t0 = time.perf_counter()
        bar = self._progress_bar()
        for batch in self.train_loader:
            progress = Progress(self.global_step, self.total_steps, self.epoch, self.cfg.epochs)
            with self.autocast():
                out = d.training_step(batch, progress)
            if (self.global_step + 1) % self.cfg.nan_check_every == 0:
                self._check_finite(out.loss, out.terms)
            for opt in self.optimizers.values():
                opt.zero_grad(set_to_none=True)
            self.scaler.scale(out.loss).backward()
            self.dist.average_gradients(self._trainable)
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
            # bookkeeping without host syncs
            n = len(batch)
            loss_sum += out.loss.detach().double() * n
            correct += (out.logits.detach().argmax(1) == batch.targets).sum()
            seen += n
            for k, v in out.terms.items():
                term_sums[k] = term_sums.get(k, zero) + v.double()
            for k, v in out.stats.items():
                stat_sums[k] = stat_sums.get(k, zero) + v.double()
                stat_last[k] = v
            steps += 1
            self.global_step += 1
            self.step_in_epoch += 1
            if self.global_step % self.cfg.log_every == 0:
                self.logger.log_step(self.global_step, {"loss": float(out.loss.detach()), **{k: float(v) for k, v in out.terms.items()}})
                if bar is not None:
                    bar.set_postfix(loss=f"{float(out.loss.detach()):.4f}")
            if bar is not None:
                bar.update(1)
            if self.cfg.checkpoint_every_steps and self.global_step % self.cfg.checkpoint_every_steps == 0:
                if not bool(torch.isfinite(loss_sum)):
                    self._check_finite(out.loss, out.terms)
                self.save(self.last_path)
        if bar is not None:
            bar.set_postfix(loss=f"{float(loss_sum / seen.clamp_min(1)):.4f}")  # the epoch's mean
            bar.close()
        elapsed = time.perf_counter() - t0
        if not bool(torch.isfinite(loss_sum)):
            self._check_finite(loss_sum.float(), {k: v for k, v in term_sums.items()})
        if self.dist.enabled:  # every rank's share of the epoch, added up
            totals = self.dist.all_reduce_sum(torch.stack([loss_sum, correct, seen]))
            loss_sum, correct, seen = totals[0], totals[1], totals[2]
            for sums in (term_sums, stat_sums):
                for k in sorted(sums):
                    sums[k] = self.dist.all_reduce_sum(sums[k].clone())
                    if not k.startswith("rows"):
                        sums[k] /= self.dist.world_size
        record: dict[str, float] = {}
        if steps:
            record["train_loss"] = float(loss_sum / seen)
            record["train_acc"] = float(100.0 * correct / seen)
            record.update({f"loss_{k}": float(v / steps) for k, v in term_sums.items()})
            rows = stat_sums.get("rows")
            for k, v in stat_sums.items():
                if k.startswith("rows"):
                    record[k] = int(v)
                    if rows is not None and k != "rows":
                        record["frac" + k[len("rows") :]] = float(v / rows.clamp_min(1))
                else:
                    record[k] = float(v / steps)
                    record[f"{k}_last"] = float(stat_last[k])
            record["epoch_seconds"] = elapsed
            record["images_per_second"] = float(seen) / max(elapsed, 1e-9)
        return record

    def _progress_bar(self):
        if not (self.cfg.progress_bar and self.dist.is_main):
            return None
        return epoch_progress(self.steps_per_epoch, self.step_in_epoch,
                              f"{self.meta.get('name', 'train')} epoch {self.epoch + 1}/{self.cfg.epochs}")

    def evaluate(self) -> dict[str, float]:
        """Validation metrics of the student over the whole validation set."""
        self.distiller.eval()
        self.val_loader.set_epoch(0)
        sums = evaluation_sums(self.distiller, self.val_loader, self.autocast)
        return metrics_from_sums(self.dist.all_reduce_sum(sums))

    def fit(self, resume: bool = False) -> TrainResult:
        """Train for ``cfg.epochs`` epochs (continuing from ``last.pt`` if ``resume``)."""
        if resume:
            if self.dist.is_main:  # half-written files of a killed run (the real ones are intact)
                for stale in self.output_dir.glob(".*.pt.*.tmp"):
                    stale.unlink(missing_ok=True)
            if not self.resume():
                raise BeyondKDError(f"nothing to resume: {self.last_path} does not exist (run without --resume to start)")
        elif self.last_path.exists() and self.dist.is_main:
            raise BeyondKDError(
                f"{self.output_dir} already holds a run: pass --resume to continue it, or choose another output_dir"
            )
        if self.dist.is_main:  # only once the start checks passed: a failed start leaves nothing
            self.output_dir.mkdir(parents=True, exist_ok=True)
        if self.dist.is_main and self.meta.get("config"):
            atomic_write_text(yaml.safe_dump(self.meta["config"], sort_keys=False), self.output_dir / "config.yaml")
        if self.epoch >= self.cfg.epochs:
            return self._finish()
        while self.epoch < self.cfg.epochs:
            record: dict[str, Any] = {"epoch": self.epoch}
            record.update(self._train_epoch())
            record["lr"] = self.optimizers["student"].param_groups[0]["lr"] if "student" in self.optimizers else 0.0
            if (self.epoch + 1) % self.cfg.eval_every == 0 or self.epoch + 1 == self.cfg.epochs:
                record.update(self.evaluate())
            if "teacher_acc" in self.meta:
                record["teacher_acc"] = self.meta["teacher_acc"]
            is_best = "val_acc" in record and record["val_acc"] > self.best_acc
            if is_best:
                self.best_acc, self.best_epoch = record["val_acc"], self.epoch
            self.logger.log_epoch(record)
            self.epoch += 1
            self.step_in_epoch = 0
            self.save(self.last_path)
            if is_best:
                self.save(self.best_path)
        return self._finish()

    def _finish(self) -> TrainResult:
        history = self.logger.history
        last_acc = next((r["val_acc"] for r in reversed(history) if "val_acc" in r), float("nan"))
        summary = {
            "name": self.meta.get("name"),
            "method": self.distiller.name,
            # the resolved method parameters and plug-in settings (preset, name, every field)
            "params": (self.meta.get("record") or {}).get("params"),
            "bias": (self.meta.get("record") or {}).get("bias"),
            "teacher_on_train_rows": self.meta.get("teacher_on_train_rows"),
            "best_acc": self.best_acc,
            "best_epoch": self.best_epoch + 1,
            "last_acc": last_acc,
            "epochs": self.cfg.epochs,
            "teacher_acc": self.meta.get("teacher_acc"),
            "train_seconds": sum(r.get("epoch_seconds", 0.0) for r in history),
            "rows_rectified": sum(r.get("rows_rectified", 0) for r in history),
            # rows on which the teacher was wrong: what the plug-in eliminated or rectified
            "rows_teacher_wrong": sum(r["rows"] - r["rows_right"] for r in history if "rows_right" in r),
        }
        if self.dist.is_main:
            atomic_write_text(json.dumps(summary, indent=2) + "\n", self.output_dir / "summary.json")
            plot_accuracy({self.meta.get("name", "student"): history}, self.output_dir / "accuracy.png",
                          title=f"{self.meta.get('name', 'run')}: validation accuracy", teacher_acc=self.meta.get("teacher_acc"))
        self.logger.close()
        return TrainResult(self.output_dir, self.best_acc, self.best_epoch + 1, last_acc, history, summary)
