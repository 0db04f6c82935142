"""The detection task: Faster R-CNN FPN teachers and RoI-distilled students on the engine's trainer.

``beyondkd detect train-teacher`` / ``distill`` build a :class:`DetectionTask` and run it with
:class:`beyondkd.engine.trainer.Trainer`, the loop of every classification run, so detection has
the same checkpoints (``last.pt``, ``best.pt``: model, method state, optimizer, schedule, RNG,
partial epoch), exact mid-epoch resume with the same settings check, the on-device NaN guard,
bf16/fp16 autocast, torchrun (DistributedDataParallel, sharded COCO, COCOeval over every
process's predictions) and the same run record (``config.yaml``, ``metrics.jsonl``,
``summary.json``).

What is detection's own:

* batches are :class:`~beyondkd.detection.coco.DetBatch` (lists of images and targets);
* the optimizer is SGD with momentum and weight decay; the LR warms up linearly over
  ``warmup_iters`` iterations from ``warmup_factor × lr`` (torchvision's detection reference)
  and is multiplied by ``lr_gamma`` at each epoch in ``milestones`` (the 1× schedule: 12
  epochs, steps at 8 and 11), set every iteration;
* the evaluator is pycocotools' COCOeval (AP, AP50, AP75, APs, APm, APl); ``best.pt`` keeps
  the model with the best AP;
* the summary holds the best epoch's COCO metrics (``best_AP``, ...) and, for ``distill``,
  the teacher's, scored once before training (``teacher_AP``, ...; not again on resume).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

import torch
from torch import Tensor

from beyondkd.bias import reporting
from beyondkd.bias.config import bias_record
from beyondkd.core import StepOutput, Trainable
from beyondkd.detection.coco import CocoDetectionData, DetectionLoader, detection_loader
from beyondkd.detection.config import DetDataConfig, DetModelConfig, DetRunConfig, DetTrainConfig
from beyondkd.detection.evaluate import METRIC_NAMES, coco_bbox_metrics, predict
from beyondkd.detection.models import build_detector, load_detector_weights, model_meta
from beyondkd.detection.roi_distill import RoIDistiller, SupervisedDetector
from beyondkd.engine.build import parse_bias, parse_bias_with_preset, resolve_device, seed_everything
from beyondkd.engine.checkpoint import load_checkpoint
from beyondkd.engine.distributed import DistEnv, world_size_from_env
from beyondkd.engine.logging import MetricsLogger
from beyondkd.engine.resume import check_run_folder
from beyondkd.engine.task import Optimizers, Schedulers
from beyondkd.engine.trainer import Trainer, TrainResult
from beyondkd.errors import BeyondKDError, ConfigError

Mode = Literal["train-teacher", "distill"]


def lr_factor(step: int, steps_per_epoch: int, cfg: DetTrainConfig) -> float:
    """Multiplier of the base LR at iteration ``step`` (0-based): warm-up × multistep decay."""
    warm = 1.0
    if step < cfg.warmup_iters:
        alpha = step / cfg.warmup_iters
        warm = cfg.warmup_factor * (1.0 - alpha) + alpha
    epoch = step // max(steps_per_epoch, 1)
    return warm * cfg.lr_gamma ** sum(epoch >= m for m in cfg.milestones)


class DetectionTask:
    """Object detection on COCO-format data (see the module docstring).

    Args:
        val: the validation dataset (its COCO ground truth and category ids score predictions).
    """

    name = "detection"
    metric = "AP"
    nonfinite_hint = "lower train.lr, raise train.warmup_iters or set train.grad_clip"

    def __init__(self, val: CocoDetectionData) -> None:
        self.val = val

    def build_optimizers(self, method: Trainable, cfg: DetTrainConfig, steps_per_epoch: int,
                         device: torch.device) -> tuple[Optimizers, Schedulers]:
        optimizers: Optimizers = {}
        schedulers: Schedulers = {}
        for group, params in method.param_groups().items():
            if not params:
                continue
            optimizers[group] = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
            schedulers[group] = torch.optim.lr_scheduler.LambdaLR(
                optimizers[group], lambda s: lr_factor(s, steps_per_epoch, cfg))
        return optimizers, schedulers

    def length_dependence(self, cfg: DetTrainConfig) -> str | None:
        return None  # warm-up in iterations, milestones in epochs: neither follows train.epochs

    def train_sums(self, out: StepOutput, batch: Any) -> dict[str, Tensor]:
        return {}

    def train_fields(self, sums: dict[str, float], samples: float) -> dict[str, float]:
        return {}

    def evaluate(self, method: Trainable, loader: Any, autocast: Callable[[], Any], env: DistEnv) -> dict[str, float]:
        """COCOeval of the student's detections (fp32)."""
        return self.score(method.student, loader, env)

    def score(self, detector: torch.nn.Module, loader: Any, env: DistEnv) -> dict[str, float]:
        """COCOeval of ``detector``, every process predicting its share of the images."""
        device = next(detector.parameters()).device
        loader.set_epoch(0)
        results, ids = predict(detector, loader, self.val.label_to_cat, device)
        metrics = None
        shares = env.all_gather_objects((results, ids))
        if env.is_main:
            every = [r for res, _ in shares for r in res]
            metrics, _ = coco_bbox_metrics(self.val.coco, every, [i for _, seen in shares for i in seen])
            metrics["detections"] = float(len(every))
        return env.broadcast_object(metrics)

    def summary(self, history: list[dict[str, Any]], best: float, best_epoch: int,
                meta: dict[str, Any], epochs: int, method: str) -> dict[str, Any]:
        best_record = next((r for r in history if r["epoch"] == best_epoch - 1), {})
        return {
            "name": meta.get("name"),
            "mode": meta.get("mode"),
            "method": method,
            "bias": (meta.get("record") or {}).get("bias"),
            "best_epoch": best_epoch,
            **{f"best_{k}": best_record[k] for k in METRIC_NAMES if k in best_record},
            **{f"teacher_{k}": v for k, v in (meta.get("teacher_metrics") or {}).items()},
            "epochs": epochs,
            "train_seconds": sum(r.get("epoch_seconds", 0.0) for r in history),
        }

    def plot(self, history: list[dict[str, Any]], output_dir: Path, meta: dict[str, Any]) -> None:
        """Detection runs write no plot."""


def resolved_detection_config(cfg: DetRunConfig) -> dict[str, Any]:
    """``cfg`` as recorded: the plug-in written out as ``{preset, every field}`` (compared on resume)."""
    raw = cfg.model_dump(mode="json")
    bias = parse_bias_with_preset(cfg.method.bias)
    raw["method"]["bias"] = None if bias is None else {"preset": bias[1], **bias[0].model_dump(mode="json")}
    return raw


def check_classes(role: str, mcfg: DetModelConfig, data: CocoDetectionData, annotation_file: str) -> None:
    """One-line error when a model's class count is not the dataset's."""
    if mcfg.num_classes != data.num_classes:
        raise ConfigError(
            f"{role}.num_classes={mcfg.num_classes} but {annotation_file} has {data.num_classes} categories: "
            f"set {role}.num_classes={data.num_classes}"
        )


def check_sections(cfg: DetRunConfig, mode: Mode) -> None:
    """The config has the sections ``mode`` trains (one-line errors otherwise)."""
    if mode == "train-teacher":
        if cfg.model is None:
            raise ConfigError("detect train-teacher needs a 'model' section (got 'student'; use detect distill)")
        return
    if cfg.student is None or cfg.teacher is None:
        raise ConfigError("detect distill needs 'student' and 'teacher' sections")
    if cfg.teacher.checkpoint is None:
        raise ConfigError("teacher.checkpoint is required for detect distill: train one with detect train-teacher")


@dataclass
class DetectionData:
    """Datasets and loaders of a run."""

    train: CocoDetectionData
    val: CocoDetectionData
    train_loader: DetectionLoader
    val_loader: DetectionLoader


def build_detection_data(cfg: DetRunConfig, device: torch.device, env: DistEnv) -> DetectionData:
    """COCO train/val datasets and this process's loaders."""
    d = cfg.data
    val = CocoDetectionData(d.val_images, d.val_annotations, train=False, first=d.val_subset)
    train = CocoDetectionData(d.train_images, d.train_annotations, train=True, hflip=d.hflip, subset=d.subset, seed=cfg.seed)
    if train.cat_ids != val.cat_ids:
        raise ConfigError(
            f"{d.train_annotations} and {d.val_annotations} list different categories "
            f"({len(train.cat_ids)} vs {len(val.cat_ids)}): use annotation files of one dataset"
        )
    shards = dict(device=device, num_workers=d.num_workers, rank=env.rank, world_size=env.world_size)
    return DetectionData(
        train, val,
        DetectionLoader(train, d.batch_size, train=True, seed=cfg.seed, max_batches=cfg.train.max_steps_per_epoch, **shards),
        DetectionLoader(val, d.val_batch_size, train=False, **shards),
    )


def build_detection_method(cfg: DetRunConfig, mode: Mode, data: CocoDetectionData) -> Trainable:
    """The trained module: a :class:`SupervisedDetector` or a :class:`RoIDistiller`."""
    ann = cfg.data.train_annotations
    if mode == "train-teacher":
        assert cfg.model is not None
        check_classes("model", cfg.model, data, ann)
        return SupervisedDetector(build_detector(cfg.model, cfg.data))
    assert cfg.student is not None and cfg.teacher is not None
    check_classes("student", cfg.student, data, ann)
    check_classes("teacher", cfg.teacher, data, ann)
    student = build_detector(cfg.student, cfg.data)
    teacher = build_detector(cfg.teacher, cfg.data)
    return RoIDistiller(student, teacher, cfg.method, parse_bias(cfg.method.bias))


@dataclass
class PreparedDetection:
    """Everything built for a detection run, ready for ``trainer.fit``."""

    config: DetRunConfig
    mode: Mode
    device: torch.device
    method: Trainable
    trainer: Trainer
    teacher_metrics: dict[str, float]
    output_dir: Path


def prepare_detection_run(config: DetRunConfig, mode: Mode, resume: bool | None = None,
                          dist: DistEnv | None = None) -> PreparedDetection:
    """Build data, detectors, method and trainer; check the run folder first (every process)."""
    cfg = config
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    check_sections(cfg, mode)
    resolved = resolved_detection_config(cfg)
    bias = parse_bias_with_preset(cfg.method.bias) if mode == "distill" else None
    length = reporting.length_dependence(bias[0]) if bias is not None else None
    output_dir = cfg.resolved_output_dir()
    recorded = None
    if resume is not None:
        recorded = check_run_folder(output_dir, resume, resolved, length, dist.world_size if dist is not None else world_size_from_env())
    device = resolve_device(cfg.train.device)
    if dist is None:
        dist = DistEnv.from_env(device.type)
    if dist.enabled and device.type == "cuda":
        device = torch.device("cuda", dist.local_rank)
    seed_everything(cfg.seed)
    data = build_detection_data(cfg, device, dist)
    method = build_detection_method(cfg, mode, data.train).to(device)
    task = DetectionTask(data.val)
    teacher_metrics: dict[str, float] = dict(((recorded or {}).get("record") or {}).get("teacher") or {})
    if mode == "distill" and cfg.train.eval_teacher and not teacher_metrics:
        teacher_metrics = task.score(method.teacher, data.val_loader, dist)
    trained = cfg.trained
    meta: dict[str, Any] = {
        "name": cfg.name,
        "mode": mode,
        "model_meta": {**model_meta(trained), "input": {"min_size": cfg.data.min_size, "max_size": cfg.data.max_size}},
        "config": resolved,
        "record": {"method": method.name, "bias": None if bias is None else bias_record(*bias), "teacher": teacher_metrics},
        "length_dependence": length,
        "teacher_metrics": teacher_metrics,
    }
    logger = MetricsLogger(output_dir, enabled=dist.is_main, tensorboard=cfg.train.tensorboard)
    trainer = Trainer(method, data.train_loader, data.val_loader, cfg.train, output_dir, device, meta, dist, task, logger)
    return PreparedDetection(cfg, mode, device, method, trainer, teacher_metrics, output_dir)


def run_detection(config: DetRunConfig, mode: Mode, resume: bool = False) -> TrainResult:
    """Train a teacher (``train-teacher``) or distil a student (``distill``); see the module docstring."""
    prepared = prepare_detection_run(config, mode, resume=resume)
    return prepared.trainer.fit(resume=resume)


def evaluate_checkpoint(checkpoint: str | Path, data_cfg: DetDataConfig, device: str = "auto", use_checkpoint_input: bool = True) -> dict[str, float]:
    """COCO metrics of a saved detector on ``data_cfg``'s validation set.

    The network is rebuilt from the checkpoint's ``model_meta``; its input resolution is the
    one it was trained at unless ``use_checkpoint_input`` is False.
    """
    ckpt = load_checkpoint(checkpoint)
    meta = dict(ckpt.get("model_meta") or {})
    if not meta:
        raise BeyondKDError(f"{checkpoint} has no 'model_meta': it is not a beyondkd detection checkpoint")
    trained_input = meta.pop("input", None) or ckpt.get("input")
    mcfg = DetModelConfig(**meta)
    if use_checkpoint_input and trained_input:
        data_cfg = data_cfg.model_copy(update=dict(trained_input))
    val = CocoDetectionData(data_cfg.val_images, data_cfg.val_annotations, train=False, first=data_cfg.val_subset)
    check_classes("checkpoint model", mcfg, val, data_cfg.val_annotations)
    dev = resolve_device(device)
    model = build_detector(mcfg, data_cfg)
    load_detector_weights(model, checkpoint, mcfg)
    model.to(dev)
    loader = detection_loader(val, data_cfg.val_batch_size, False, data_cfg.num_workers)
    results, ids = predict(model, loader, val.label_to_cat, dev)
    metrics, _ = coco_bbox_metrics(val.coco, results, ids)
    metrics["detections"] = float(len(results))
    return metrics
