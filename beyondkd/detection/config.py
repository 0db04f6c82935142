"""Validated configuration of a detection run (Faster R-CNN FPN on COCO), read from YAML.

A run file has the sections ``data``, ``model`` (``detect train-teacher``) or ``student`` +
``teacher`` (``detect distill``), ``method`` and ``train``; see ``beyondkd/configs/detection/``.
``base:`` inheritance and ``key=value`` overrides work as for classification runs
(:mod:`beyondkd.config`). Every section forbids unknown keys; every problem is one line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from beyondkd.config import apply_override, deep_merge, read_yaml, resolve_config_path
from beyondkd.errors import ConfigError, suggest


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class DetDataConfig(_Strict):
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


class DetModelConfig(_Strict):
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


class BoxDistillConfig(_Strict):
    """Optional box-regression distillation on the student's foreground RoIs."""

    weight: float = Field(0.0, ge=0.0)
    loss: Literal["l2", "smooth_l1"] = "smooth_l1"
    beta: float = Field(1.0 / 9.0, gt=0.0, description="smooth-L1 transition point")


class FeatureDistillConfig(_Strict):
    """Optional FitNet-style term: MSE between adapted student and teacher FPN levels."""

    weight: float = Field(0.0, ge=0.0)
    levels: list[str] = Field(default_factory=lambda: ["0", "1", "2", "3", "pool"])


class DetMethodConfig(_Strict):
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


class DetTrainConfig(_Strict):
    """SGD with linear warm-up and a multistep decay at epoch milestones (the 1x schedule)."""

    epochs: int = Field(12, ge=1)
    lr: float = Field(0.02, gt=0.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    weight_decay: float = Field(1e-4, ge=0.0)
    warmup_iters: int = Field(1000, ge=0)
    warmup_factor: float = Field(0.001, gt=0.0, le=1.0)
    milestones: list[int] = Field(default_factory=lambda: [8, 11])
    lr_gamma: float = Field(0.1, gt=0.0)
    grad_clip: float | None = Field(None, gt=0.0)
    precision: Literal["fp32", "bf16"] = Field("fp32", description="bf16 autocast of the training forward")
    device: str = "auto"
    threads: int | None = Field(None, ge=1)
    log_every: int = Field(20, ge=1)
    max_steps_per_epoch: int | None = Field(None, ge=1, description="cap on iterations per epoch (smoke runs)")
    eval_every: int = Field(1, ge=1)
    eval_teacher: bool = Field(True, description="distill: score the teacher on the validation set once")
    tensorboard: bool = True


class DetRunConfig(_Strict):
    """A whole detection run."""

    name: str = "detection"
    seed: int = 0
    output_dir: str | None = None
    data: DetDataConfig = Field(default_factory=DetDataConfig)
    model: DetModelConfig | None = None
    student: DetModelConfig | None = None
    teacher: DetModelConfig | None = None
    method: DetMethodConfig = Field(default_factory=DetMethodConfig)
    train: DetTrainConfig = Field(default_factory=DetTrainConfig)

    @model_validator(mode="after")
    def _one_trained_network(self) -> "DetRunConfig":
        if self.model is not None and self.student is not None:
            raise ValueError("give either 'model' (detect train-teacher) or 'student' (detect distill), not both")
        return self

    @property
    def trained(self) -> DetModelConfig:
        net = self.model or self.student
        if net is None:
            raise ConfigError("the config has neither 'model' (detect train-teacher) nor 'student' (detect distill)")
        return net

    def resolved_output_dir(self) -> Path:
        return Path(self.output_dir) if self.output_dir else Path("runs") / self.name


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    model: Any = DetRunConfig
    for part in loc[:-1]:
        field = model.model_fields.get(str(part)) if hasattr(model, "model_fields") else None
        if field is None:
            return []
        ann = field.annotation
        candidates = [ann, *(getattr(ann, "__args__", ()) or ())]
        model = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if model is None:
            return []
    return sorted(model.model_fields) if hasattr(model, "model_fields") else []


def validate_detection_config(raw: dict[str, Any], source: str = "config") -> DetRunConfig:
    """Validate a raw mapping into a :class:`DetRunConfig`, raising a one-line :class:`ConfigError`."""
    try:
        return DetRunConfig(**raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(err["loc"])
        dotted = ".".join(str(p) for p in loc)
        if err["type"] == "extra_forbidden":
            allowed = _allowed_keys(loc)
            hint = suggest(str(loc[-1]), allowed)
            raise ConfigError(f"{source}: unknown key '{dotted}'{hint}; allowed here: {', '.join(allowed)}") from None
        if err["type"] == "missing":
            raise ConfigError(f"{source}: missing key '{dotted}'") from None
        msg = err["msg"].removeprefix("Value error, ")
        if not dotted:
            raise ConfigError(f"{source}: {msg}") from None
        raise ConfigError(f"{source}: bad value for '{dotted}': {msg} (got {err.get('input')!r})") from None


def load_detection_config(
    path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (), raw: dict[str, Any] | None = None
) -> DetRunConfig:
    """Read (``base:`` chains resolved), merge, override and validate a detection config."""
    source = "config"
    data: dict[str, Any] = {}
    if path is not None:
        data = read_yaml(resolve_config_path(path))
        source = str(path)
    if raw is not None:
        data = deep_merge(data, raw)
    for o in overrides:
        apply_override(data, o)
    return validate_detection_config(data, source)
