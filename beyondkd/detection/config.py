"""Validated configuration of a detection run (Faster R-CNN FPN on COCO), read from YAML.

A run file has the sections ``data``, ``model`` (``detect train-teacher``) or ``student`` +
``teacher`` (``detect distill``), ``method`` and ``train``; see ``beyondkd/configs/detection/``.
``base:`` inheritance and ``key=value`` overrides work as for classification runs
(:mod:`beyondkd.config`). Every section forbids unknown keys; every problem is one line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from beyondkd.config import RunBase, StrictSection, load_as, validate_as


class DetDataConfig(StrictSection):
    """COCO-format data (annotation json + image folder) and the input resolution.

    ``min_size``/``max_size`` configure the models' ``GeneralizedRCNNTransform`` (the shorter
    side is resized to ``min_size`` unless the longer one would exceed ``max_size``); teacher and
    student always share them so that both see the very same resized image.
    """

    train_images: str = "data/coco/train2017"
    train_annotations: str = "data/coco/annotations/instances_train2017.json"
    val_images: str = "data/coco/val2017"
    val_annotations: str = "data/coco/annotations/instances_val2017.json"
    batch_size: int = Field(16, ge=1, description="images per optimizer step")
    val_batch_size: int = Field(8, ge=1)
    num_workers: int = Field(4, ge=0)
    hflip: float = Field(0.5, ge=0.0, le=1.0, description="horizontal-flip probability (train)")
    subset: int | None = Field(None, ge=1, description="training images used (seeded random subset)")
    val_subset: int | None = Field(None, ge=1, description="validation images used (first N ids)")
    min_size: int = Field(800, ge=16)
    max_size: int = Field(1333, ge=16)


class DetModelConfig(StrictSection):
    """A Faster R-CNN FPN detector.

    Attributes:
        backbone: ``resnet18``, ``resnet34``, ``resnet50``, ``resnet101`` or ``mobilenet_v2``.
        num_classes: foreground classes (80 for COCO); the predictor has ``num_classes + 1``
            outputs, index 0 being background.
        checkpoint: a local detector checkpoint (ours, or a plain ``state_dict``).
        backbone_checkpoint: a local torchvision classification ``state_dict`` of the backbone
            (e.g. ImageNet weights you already have); nothing is ever downloaded.
        norm: ``frozen`` (FrozenBatchNorm, the field's choice with pretrained backbones),
            ``batch`` (trainable BatchNorm, for training from scratch) or ``group`` (GroupNorm 32).
        trainable_layers: backbone stages that are trained (5 = all; the field uses 3).
    """

    backbone: str
    num_classes: int = Field(80, ge=1)
    checkpoint: str | None = None
    backbone_checkpoint: str | None = None
    norm: Literal["frozen", "batch", "group"] = "frozen"
    trainable_layers: int = Field(3, ge=0, le=5)
    fpn_channels: int = Field(256, ge=1)
    representation_size: int = Field(1024, ge=1)
    rpn_pre_nms_top_n_train: int = Field(2000, ge=1)
    rpn_post_nms_top_n_train: int = Field(2000, ge=1)
    rpn_pre_nms_top_n_test: int = Field(1000, ge=1)
    rpn_post_nms_top_n_test: int = Field(1000, ge=1)
    rpn_batch_size_per_image: int = Field(256, ge=1)
    box_batch_size_per_image: int = Field(512, ge=1)
    box_score_thresh: float = Field(0.05, ge=0.0, le=1.0)
    box_detections_per_img: int = Field(100, ge=1)
    anchor_sizes: list[int] = Field(default_factory=lambda: [32, 64, 128, 256, 512])


class BoxDistillConfig(StrictSection):
    """Optional box-regression distillation on the student's foreground RoIs."""

    weight: float = Field(0.0, ge=0.0)
    loss: Literal["l2", "smooth_l1"] = "smooth_l1"
    beta: float = Field(1.0 / 9.0, gt=0.0, description="smooth-L1 transition point")


class FeatureDistillConfig(StrictSection):
    """Optional FitNet-style term: MSE between adapted student and teacher FPN levels."""

    weight: float = Field(0.0, ge=0.0)
    levels: list[str] = Field(default_factory=lambda: ["0", "1", "2", "3", "pool"])


class DetMethodConfig(StrictSection):
    """Distillation on the RoI classification head.

    ``kd`` is Hinton KD between the student's and the teacher's ``(R, C+1)`` class logits on the
    student's sampled RoIs; ``bias`` turns on the BTKD plug-in (``{}`` = default preset,
    ``{preset: paper}``, or :class:`~beyondkd.bias.loss.BiasConfig` fields).
    """

    name: Literal["kd"] = "kd"
    temperature: float = Field(1.0, gt=0.0)
    ce_weight: float = Field(1.0, ge=0.0)
    kd_weight: float = Field(1.0, ge=0.0)
    bias: dict[str, Any] | None = None
    box: BoxDistillConfig = Field(default_factory=BoxDistillConfig)
    feature: FeatureDistillConfig = Field(default_factory=FeatureDistillConfig)


class DetTrainConfig(StrictSection):
    """SGD with linear warm-up and a multistep decay at epoch milestones (the 1x schedule).

    The engine settings (precision, NaN check, checkpoints, evaluation, progress bar) mean what
    they mean for classification runs (:class:`beyondkd.config.TrainConfig`)."""

    epochs: int = Field(12, ge=1)
    lr: float = Field(0.02, gt=0.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    weight_decay: float = Field(1e-4, ge=0.0)
    warmup_iters: int = Field(1000, ge=0)
    warmup_factor: float = Field(0.001, gt=0.0, le=1.0)
    milestones: list[int] = Field(default_factory=lambda: [8, 11])
    lr_gamma: float = Field(0.1, gt=0.0)
    grad_clip: float | None = Field(None, gt=0.0)
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32", description="autocast of the training forward (fp16 with loss scaling, CUDA only)"
    )
    device: str = "auto"
    threads: int | None = Field(None, ge=1)
    log_every: int = Field(20, ge=1)
    nan_check_every: int = Field(
        50, ge=1, description="steps between reads of the on-device non-finite loss flag (it is set every step)"
    )
    checkpoint_every_steps: int | None = Field(None, ge=1, description="also write last.pt every N steps (mid-epoch)")
    max_steps_per_epoch: int | None = Field(None, ge=1, description="cap on iterations per epoch (smoke runs)")
    eval_every: int = Field(1, ge=1)
    eval_teacher: bool = Field(True, description="distill: score the teacher on the validation set once")
    tensorboard: bool = True
    progress_bar: bool = True


class DetRunConfig(RunBase):
    """A whole detection run."""

    commands: ClassVar[tuple[str, str]] = ("detect train-teacher", "detect distill")
    name: str = "detection"
    data: DetDataConfig = Field(default_factory=DetDataConfig)
    model: DetModelConfig | None = None
    student: DetModelConfig | None = None
    teacher: DetModelConfig | None = None
    method: DetMethodConfig = Field(default_factory=DetMethodConfig)
    train: DetTrainConfig = Field(default_factory=DetTrainConfig)

    @property
    def trained(self) -> DetModelConfig:
        """The detector this run trains."""
        return super().trained


def validate_detection_config(raw: dict[str, Any], source: str = "config") -> DetRunConfig:
    """Validate a raw mapping into a :class:`DetRunConfig`, raising a one-line :class:`ConfigError`."""
    return validate_as(DetRunConfig, raw, source)


def load_detection_config(
    path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (), raw: dict[str, Any] | None = None
) -> DetRunConfig:
    """Read (``base:`` chains resolved), merge, override and validate a detection config."""
    return load_as(DetRunConfig, path, overrides, raw)
