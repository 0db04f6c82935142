"""Training loop of detection runs: teachers on labels, students by RoI distillation.

SGD with momentum and weight decay, a linear warm-up over ``warmup_iters`` iterations from
``warmup_factor × lr`` (torchvision's detection reference), and ×``lr_gamma`` at each epoch in
``milestones`` (the 1× schedule: 12 epochs, steps at 8 and 11). The LR is set every iteration.
After every epoch ``last.pt`` is written atomically (:func:`beyondkd.engine.checkpoint.atomic_save`)
with the model, optimizer, scheduler, RNG state and metric history, so ``--resume`` continues
exactly where the run stopped; ``best.pt`` keeps the model with the best COCO AP. Each epoch's
record (loss terms, LR, AP, AP50, AP75, APs, APm, APl) is a line of ``metrics.jsonl``. A NaN or
infinite loss stops the run with one line naming the term.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import yaml
from torch import nn

from beyondkd.bias.schedule import Progress
from beyondkd.detection.coco import CocoDetectionData, detection_loader
from beyondkd.detection.config import DetDataConfig, DetModelConfig, DetRunConfig, DetTrainConfig
from beyondkd.detection.evaluate import evaluate_detector, format_metrics
from beyondkd.detection.models import build_detector, load_detector_weights, model_meta
from beyondkd.detection.roi_distill import RoIDistiller, SupervisedDetector
from beyondkd.engine.build import parse_bias, resolve_device, seed_everything
from beyondkd.engine.checkpoint import atomic_save, atomic_write_text, capture_rng_state, load_checkpoint, restore_rng_state
from beyondkd.engine.logging import MetricsLogger
from beyondkd.errors import BeyondKDError, ConfigError, NonFiniteLossError

_log = logging.getLogger("beyondkd")

Mode = Literal["train-teacher", "distill"]


def lr_factor(step: int, steps_per_epoch: int, cfg: DetTrainConfig) -> float:
    """Multiplier of the base LR at iteration ``step`` (0-based): warm-up × multistep decay."""
    warm = 1.0
    if step < cfg.warmup_iters:
        alpha = step / cfg.warmup_iters
        warm = cfg.warmup_factor * (1.0 - alpha) + alpha
    epoch = step // max(steps_per_epoch, 1)
    return warm * cfg.lr_gamma ** sum(epoch >= m for m in cfg.milestones)


@dataclass
class DetData:
    """Datasets and loaders of a run."""

    train: CocoDetectionData
    val: CocoDetectionData
    train_loader: Any
    val_loader: Any


def build_data(cfg: DetRunConfig, train: bool = True) -> DetData:
    """COCO train/val datasets and loaders (``train=False`` skips the training set)."""
    d = cfg.data
    val = CocoDetectionData(d.val_images, d.val_annotations, train=False, first=d.val_subset)
    train_ds = CocoDetectionData(d.train_images, d.train_annotations, train=True, hflip=d.hflip, subset=d.subset, seed=cfg.seed) if train else val
    if train and train_ds.cat_ids != val.cat_ids:
        raise ConfigError(
            f"{d.train_annotations} and {d.val_annotations} list different categories "
            f"({len(train_ds.cat_ids)} vs {len(val.cat_ids)}): use annotation files of one dataset"
        )
    return DetData(
        train_ds,
        val,
        detection_loader(train_ds, d.batch_size, True, d.num_workers, cfg.seed),
        detection_loader(val, d.val_batch_size, False, d.num_workers),
    )


def check_classes(role: str, mcfg: DetModelConfig, data: CocoDetectionData, annotation_file: str) -> None:
    """One-line error when a model's class count is not the dataset's."""
    if mcfg.num_classes != data.num_classes:
        raise ConfigError(
            f"{role}.num_classes={mcfg.num_classes} but {annotation_file} has {data.num_classes} categories: "
            f"set {role}.num_classes={data.num_classes}"
        )


def build_method(cfg: DetRunConfig, mode: Mode, num_classes_data: CocoDetectionData) -> nn.Module:
    """The trained module: a :class:`SupervisedDetector` or a :class:`RoIDistiller`."""
    ann = cfg.data.train_annotations
    if mode == "train-teacher":
        if cfg.model is None:
            raise ConfigError("detect train-teacher needs a 'model' section (got 'student'; use detect distill)")
        check_classes("model", cfg.model, num_classes_data, ann)
        return SupervisedDetector(build_detector(cfg.model, cfg.data))
    if cfg.student is None or cfg.teacher is None:
        raise ConfigError("detect distill needs 'student' and 'teacher' sections")
    if cfg.teacher.checkpoint is None:
        raise ConfigError("teacher.checkpoint is required for detect distill: train one with detect train-teacher")
    check_classes("student", cfg.student, num_classes_data, ann)
    check_classes("teacher", cfg.teacher, num_classes_data, ann)
    student = build_detector(cfg.student, cfg.data)
    teacher = build_detector(cfg.teacher, cfg.data)
    return RoIDistiller(student, teacher, cfg.method, parse_bias(cfg.method.bias))


@dataclass
class DetResult:
    """What a finished run returns."""

    output_dir: Path
    history: list[dict[str, Any]]
    best: dict[str, float] = field(default_factory=dict)
    best_epoch: int = 0
    teacher: dict[str, float] = field(default_factory=dict)

    @property
    def last(self) -> dict[str, Any]:
        return self.history[-1] if self.history else {}


def _check_finite(loss: torch.Tensor, terms: dict[str, torch.Tensor], epoch: int, step: int, last_path: Path) -> None:
    if bool(torch.isfinite(loss)):
        return
    bad = next((k for k, v in terms.items() if not bool(torch.isfinite(v).all())), "loss")
    value = float(terms[bad]) if bad in terms else float(loss)
    kept = f"the last good checkpoint {last_path} is intact" if last_path.is_file() else "no checkpoint was written"
    raise NonFiniteLossError(
        f"non-finite loss ({bad} = {value}) at epoch {epoch + 1}, step {step + 1}: "
        f"lower train.lr, raise train.warmup_iters or set train.grad_clip; {kept}"
    )


def train_detection(config: DetRunConfig, mode: Mode, resume: bool = False, echo: bool = True) -> DetResult:
    """Train a teacher (``train-teacher``) or distil a student (``distill``); see the module docstring."""
    tcfg = config.train
    if tcfg.threads:
        torch.set_num_threads(tcfg.threads)
    seed_everything(config.seed)
    device = resolve_device(tcfg.device)
    out = config.resolved_output_dir()
    last_path, best_path = out / "last.pt", out / "best.pt"
    if resume and not last_path.is_file():
        raise BeyondKDError(f"--resume: no checkpoint {last_path} to continue from (run without --resume)")
    data = build_data(config)
    method = build_method(config, mode, data.train).to(device)
    trained_cfg = config.trained
    params = [p for p in method.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=tcfg.lr, momentum=tcfg.momentum, weight_decay=tcfg.weight_decay)
    steps_per_epoch = len(data.train_loader)
    if tcfg.max_steps_per_epoch is not None:
        steps_per_epoch = min(steps_per_epoch, tcfg.max_steps_per_epoch)
    total_steps = steps_per_epoch * tcfg.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, steps_per_epoch, tcfg))

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False), out / "config.yaml")
    logger = MetricsLogger(out, tensorboard=tcfg.tensorboard)
    start_epoch, step, best_ap, best_epoch, best = 0, 0, -math.inf, 0, {}
    teacher_metrics: dict[str, float] = {}
    if resume:
        ckpt = load_checkpoint(last_path)
        method.student.load_state_dict(ckpt["model"])
        method.load_checkpoint_extra(ckpt.get("extra", {}))
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        start_epoch, step = int(ckpt["epoch"]), int(ckpt["step"])
        best_ap, best_epoch, best = float(ckpt["best_ap"]), int(ckpt["best_epoch"]), dict(ckpt["best"])
        teacher_metrics = dict(ckpt.get("teacher_metrics", {}))
        logger.restore(list(ckpt["history"]))
        restore_rng_state(ckpt["rng"])
        if echo:
            _log.info(f"resumed {last_path} at epoch {start_epoch}")
    if mode == "distill" and tcfg.eval_teacher and not teacher_metrics:
        teacher_metrics, _ = evaluate_detector(method.teacher, data.val_loader, data.val.coco, data.val.label_to_cat, device)
        if echo:
            _log.info(f"teacher {config.teacher.backbone}: {format_metrics(teacher_metrics)}")  # type: ignore[union-attr]
    meta = model_meta(trained_cfg)
    input_meta = {"min_size": config.data.min_size, "max_size": config.data.max_size}
    try:
        for epoch in range(start_epoch, tcfg.epochs):
            method.train()
            data.train_loader.generator.manual_seed(config.seed * 100_003 + epoch)  # same order on resume
            sums: dict[str, float] = {}
            stat_sums: dict[str, float] = {}
            n = 0
            t0 = time.time()
            for i, (images, targets) in enumerate(data.train_loader):
                if i >= steps_per_epoch:
                    break
                images = [im.to(device, non_blocking=True) for im in images]
                targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
                progress = Progress(step=step, total_steps=total_steps, epoch=epoch, total_epochs=tcfg.epochs)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=tcfg.precision == "bf16"):
                    result = method.step(images, targets, progress)
                _check_finite(result.loss, result.terms, epoch, i, last_path)
                optimizer.zero_grad(set_to_none=True)
                result.loss.backward()
                if tcfg.grad_clip is not None:
                    nn.utils.clip_grad_norm_(params, tcfg.grad_clip)
                optimizer.step()
                scheduler.step()
                step += 1
                n += 1
                sums["loss"] = sums.get("loss", 0.0) + float(result.loss.detach())
                for k, v in result.terms.items():
                    sums[k] = sums.get(k, 0.0) + float(v)
                for k, v in result.stats.items():
                    stat_sums[k] = stat_sums.get(k, 0.0) + float(v)
                if echo and (i + 1) % tcfg.log_every == 0:
                    _log.info(f"epoch {epoch + 1} step {i + 1}/{steps_per_epoch} loss {float(result.loss.detach()):.4f} lr {optimizer.param_groups[0]['lr']:.5f}")
            record: dict[str, Any] = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"], "steps": n, "epoch_seconds": time.time() - t0}
            record.update({f"train_{k}": v / max(n, 1) for k, v in sums.items()})
            if "rois" in stat_sums and stat_sums["rois"] > 0:
                record["teacher_roi_acc"] = stat_sums["teacher_right"] / stat_sums["rois"]
                if stat_sums.get("rois_fg", 0) > 0:
                    record["teacher_roi_acc_fg"] = stat_sums["teacher_right_fg"] / stat_sums["rois_fg"]
            if "gamma" in stat_sums:
                record["gamma"] = stat_sums["gamma"] / max(n, 1)
            if (epoch + 1) % tcfg.eval_every == 0 or epoch + 1 == tcfg.epochs:
                metrics, _ = evaluate_detector(method.student, data.val_loader, data.val.coco, data.val.label_to_cat, device)
                record.update(metrics)
                if echo:
                    _log.info(f"epoch {epoch + 1}/{tcfg.epochs}: {format_metrics(metrics)}")
                if metrics["AP"] > best_ap:
                    best_ap, best_epoch, best = metrics["AP"], epoch + 1, {k: metrics[k] for k in metrics}
                    atomic_save({"model": method.student.state_dict(), "model_meta": meta, "input": input_meta, "epoch": epoch + 1, "metrics": best}, best_path)
            logger.log_epoch(record)
            atomic_save(
                {
                    "model": method.student.state_dict(),
                    "model_meta": meta,
                    "input": input_meta,
                    "extra": method.checkpoint_extra(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "epoch": epoch + 1,
                    "step": step,
                    "best_ap": best_ap,
                    "best_epoch": best_epoch,
                    "best": best,
                    "history": logger.history,
                    "teacher_metrics": teacher_metrics,
                    "rng": capture_rng_state(),
                },
                last_path,
            )
    finally:
        logger.close()
    summary = {
        "name": config.name,
        "mode": mode,
        "best_epoch": best_epoch,
        **{f"best_{k}": v for k, v in best.items()},
        **{f"teacher_{k}": v for k, v in teacher_metrics.items()},
    }
    atomic_write_text(json.dumps(summary, indent=1) + "\n", out / "summary.json")
    return DetResult(out, logger.history, best, best_epoch, teacher_metrics)


def evaluate_checkpoint(checkpoint: str | Path, data_cfg: DetDataConfig, device: str = "auto", use_checkpoint_input: bool = True) -> dict[str, float]:
    """COCO metrics of a saved detector on ``data_cfg``'s validation set.

    The network is rebuilt from the checkpoint's ``model_meta``; its input resolution is the
    one it was trained at unless ``use_checkpoint_input`` is False.
    """
    ckpt = load_checkpoint(checkpoint)
    meta = ckpt.get("model_meta")
    if not meta:
        raise BeyondKDError(f"{checkpoint} has no 'model_meta': it is not a beyondkd detection checkpoint")
    mcfg = DetModelConfig(**meta)
    if use_checkpoint_input and ckpt.get("input"):
        data_cfg = data_cfg.model_copy(update=dict(ckpt["input"]))
    val = CocoDetectionData(data_cfg.val_images, data_cfg.val_annotations, train=False, first=data_cfg.val_subset)
    check_classes("checkpoint model", mcfg, val, data_cfg.val_annotations)
    dev = resolve_device(device)
    model = build_detector(mcfg, data_cfg)
    load_detector_weights(model, checkpoint, mcfg)
    model.to(dev)
    loader = detection_loader(val, data_cfg.val_batch_size, False, data_cfg.num_workers)
    metrics, _ = evaluate_detector(model, loader, val.coco, val.label_to_cat, dev)
    return metrics
