"""Faster R-CNN FPN detectors built from torchvision's parts, never downloading weights.

:func:`build_detector` assembles ``torchvision.models.detection.FasterRCNN`` from

* a backbone body from torchvision's classification models (``weights=None``), optionally
  loaded from a local classification ``state_dict`` (``backbone_checkpoint``);
* torchvision's ``BackboneWithFPN`` over four stages (strides 4, 8, 16, 32) plus the
  ``LastLevelMaxPool`` level ``pool``. ResNets return ``layer1..layer4`` exactly like
  ``resnet_fpn_backbone``; MobileNetV2 returns the last block of its stride-4/8/16/32 stages
  (``features.3``, ``.6``, ``.13``, ``.18``; 24/32/96/1280 channels), so teacher and student
  pyramids have the same levels and strides (the FitNet feature term relies on it);
* one anchor size per level (``anchor_sizes``) with aspect ratios 0.5/1/2, ``MultiScaleRoIAlign``
  7×7 over levels ``0..3``, ``TwoMLPHead`` and ``FastRCNNPredictor`` with ``num_classes + 1``
  outputs (index 0 = background).

Registered backbones: :data:`BACKBONES`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import torch
import torchvision
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool
from torchvision.ops.misc import FrozenBatchNorm2d

from beyondkd.detection.config import DetDataConfig, DetModelConfig
from beyondkd.errors import ConfigError, suggest
from beyondkd.torch_files import unreadable_reason

FPN_LEVELS: tuple[str, ...] = ("0", "1", "2", "3", "pool")
ROI_LEVELS: list[str] = ["0", "1", "2", "3"]


def norm_layer(kind: str) -> Callable[[int], nn.Module]:
    """The normalisation layer factory of a backbone (``frozen``, ``batch`` or ``group``)."""
    if kind == "frozen":
        return FrozenBatchNorm2d
    if kind == "batch":
        return nn.BatchNorm2d
    if kind == "group":
        return lambda c: nn.GroupNorm(math.gcd(32, c), c)
    raise ConfigError(f"unknown norm '{kind}': choose frozen, batch or group")


def _load_backbone_weights(body: nn.Module, path: str | None, name: str) -> None:
    if path is None:
        return
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"backbone_checkpoint not found: {p} (give a local torchvision {name} state_dict)")
    state = torch.load(p, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    state = {k: v for k, v in state.items() if not k.startswith("fc.") and not k.startswith("classifier.")}
    missing, unexpected = body.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith(("fc.", "classifier."))]
    if missing or unexpected:
        first = (missing or unexpected)[0]
        raise ConfigError(
            f"{p} does not fit backbone {name}: {len(missing)} missing and {len(unexpected)} unexpected "
            f"keys (first: '{first}'); give a torchvision {name} classification state_dict"
        )


def _freeze_prefixes(body: nn.Module, trainable: list[str]) -> None:
    for pname, param in body.named_parameters():
        if not any(pname.startswith(prefix) for prefix in trainable):
            param.requires_grad_(False)


def _resnet_fpn(name: str, cfg: DetModelConfig) -> BackboneWithFPN:
    body = getattr(torchvision.models, name)(weights=None, norm_layer=norm_layer(cfg.norm))
    _load_backbone_weights(body, cfg.backbone_checkpoint, name)
    # the same stage order as torchvision's resnet_fpn_backbone: deepest stages train first
    stages = ["layer4", "layer3", "layer2", "layer1", "conv1"][: cfg.trainable_layers]
    if cfg.trainable_layers == 5:
        stages.append("bn1")
    _freeze_prefixes(body, stages)
    c5 = body.inplanes  # 512 * expansion after layer4
    in_channels = [c5 // 8, c5 // 4, c5 // 2, c5]
    return_layers = {"layer1": "0", "layer2": "1", "layer3": "2", "layer4": "3"}
    return BackboneWithFPN(body, return_layers, in_channels, cfg.fpn_channels, extra_blocks=LastLevelMaxPool())


# last block index of MobileNetV2's stride-4/8/16/32 stages, and where its 5 stages start
_MV2_RETURN = {"3": "0", "6": "1", "13": "2", "18": "3"}
_MV2_CHANNELS = [24, 32, 96, 1280]
_MV2_STAGE_STARTS = [0, 2, 4, 7, 14]


def _mobilenet_v2_fpn(name: str, cfg: DetModelConfig) -> BackboneWithFPN:
    net = torchvision.models.mobilenet_v2(weights=None, norm_layer=norm_layer(cfg.norm))
    _load_backbone_weights(net, cfg.backbone_checkpoint, name)
    body = net.features
    first_trained = _MV2_STAGE_STARTS[5 - cfg.trainable_layers] if cfg.trainable_layers else len(body)
    _freeze_prefixes(body, [f"{i}." for i in range(first_trained, len(body))])
    return BackboneWithFPN(body, _MV2_RETURN, _MV2_CHANNELS, cfg.fpn_channels, extra_blocks=LastLevelMaxPool())


BACKBONES: dict[str, Callable[[str, DetModelConfig], BackboneWithFPN]] = {
    "resnet18": _resnet_fpn,
    "resnet34": _resnet_fpn,
    "resnet50": _resnet_fpn,
    "resnet101": _resnet_fpn,
    "mobilenet_v2": _mobilenet_v2_fpn,
}


def build_backbone(cfg: DetModelConfig) -> BackboneWithFPN:
    """The FPN backbone named by ``cfg.backbone`` (one-line error for an unknown name)."""
    if cfg.backbone not in BACKBONES:
        raise ConfigError(
            f"unknown detection backbone '{cfg.backbone}'{suggest(cfg.backbone, list(BACKBONES))}: "
            f"choose one of {', '.join(BACKBONES)}"
        )
    return BACKBONES[cfg.backbone](cfg.backbone, cfg)


def build_detector(cfg: DetModelConfig, data: DetDataConfig) -> FasterRCNN:
    """A Faster R-CNN FPN with ``cfg.num_classes + 1`` outputs, loaded from ``cfg.checkpoint`` if given."""
    if len(cfg.anchor_sizes) != len(FPN_LEVELS):
        raise ConfigError(f"anchor_sizes needs one size per FPN level ({len(FPN_LEVELS)}), got {len(cfg.anchor_sizes)}")
    backbone = build_backbone(cfg)
    anchors = AnchorGenerator(tuple((s,) for s in cfg.anchor_sizes), ((0.5, 1.0, 2.0),) * len(FPN_LEVELS))
    roi_pool = MultiScaleRoIAlign(featmap_names=ROI_LEVELS, output_size=7, sampling_ratio=2)
    box_head = TwoMLPHead(cfg.fpn_channels * 7 * 7, cfg.representation_size)
    predictor = FastRCNNPredictor(cfg.representation_size, cfg.num_classes + 1)
    model = FasterRCNN(
        backbone,
        num_classes=None,
        min_size=data.min_size,
        max_size=data.max_size,
        rpn_anchor_generator=anchors,
        rpn_pre_nms_top_n_train=cfg.rpn_pre_nms_top_n_train,
        rpn_post_nms_top_n_train=cfg.rpn_post_nms_top_n_train,
        rpn_pre_nms_top_n_test=cfg.rpn_pre_nms_top_n_test,
        rpn_post_nms_top_n_test=cfg.rpn_post_nms_top_n_test,
        rpn_batch_size_per_image=cfg.rpn_batch_size_per_image,
        box_roi_pool=roi_pool,
        box_head=box_head,
        box_predictor=predictor,
        box_score_thresh=cfg.box_score_thresh,
        box_detections_per_img=cfg.box_detections_per_img,
        box_batch_size_per_image=cfg.box_batch_size_per_image,
    )
    if cfg.checkpoint is not None:
        load_detector_weights(model, cfg.checkpoint, cfg)
    return model


def model_meta(cfg: DetModelConfig) -> dict[str, Any]:
    """What a checkpoint records about the network it holds."""
    meta = cfg.model_dump(exclude={"checkpoint", "backbone_checkpoint"})
    meta["anchor_sizes"] = list(meta["anchor_sizes"])
    return meta


def load_detector_weights(model: nn.Module, path: str | Path, cfg: DetModelConfig) -> dict[str, Any]:
    """Load a detector checkpoint (ours or a plain ``state_dict``) with one-line errors."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"detector checkpoint not found: {p}")
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - unreadable file is the user's input
        raise ConfigError(f"cannot read detector checkpoint {p}: {unreadable_reason(p, exc, True)}") from None
    state = ckpt["model"] if isinstance(ckpt, dict) and isinstance(ckpt.get("model"), dict) else ckpt
    meta = ckpt.get("model_meta", {}) if isinstance(ckpt, dict) else {}
    if meta:
        if meta.get("backbone") != cfg.backbone:
            raise ConfigError(f"{p} holds a {meta.get('backbone')} detector but the config says backbone {cfg.backbone}")
        if int(meta.get("num_classes", cfg.num_classes)) != cfg.num_classes:
            raise ConfigError(
                f"{p} predicts {meta['num_classes']} classes but the config says num_classes={cfg.num_classes}"
            )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = first[1].strip() if len(first) > 1 else first[0]
        raise ConfigError(f"{p} does not fit a {cfg.backbone} Faster R-CNN with {cfg.num_classes} classes: {detail}") from None
    return meta if isinstance(meta, dict) else {}
