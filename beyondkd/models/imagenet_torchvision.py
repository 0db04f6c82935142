"""ImageNet-style networks (224×224, strided stem with max-pool) from torchvision's builders.

``resnet18_imagenet`` ... ``resnet101_imagenet``, ``mobilenetv2_imagenet``,
``shufflenetv2_imagenet`` (1.0×) and ``vgg16_imagenet`` (torchvision ``vgg16_bn``: VGG-16 with
batch norm) are thin wrappers: built with ``weights=None`` (nothing is downloaded) and
``num_classes``; for ``in_channels != 3`` the first convolution is replaced by one of the same
shape taking ``in_channels``. Pretrained torchvision weights load from a local file through
``model.checkpoint`` / ``build_model(pretrained=...)`` (their key names are torchvision's), or
by name with ``pretrained: true`` (torchvision's ``DEFAULT`` weights through the torch hub
cache, :mod:`beyondkd.models.pretrained`).

Feature points: ResNets read ``layerK`` and, for the pre-ReLU output, the input of the block's
ReLU module (``layerK.J.relu:in``; torchvision's block calls its one ReLU several times and the
hook keeps the last call, the one after the residual sum). Torchvision models pool in
``forward`` without a module, so ``pool`` is the input of the classifier.
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from beyondkd.models.registry import register_model


def replace_first_conv(model: nn.Module, in_channels: int) -> nn.Module:
    """Swap the model's first ``Conv2d`` for one taking ``in_channels`` (same other settings)."""
    if in_channels == 3:
        return model
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
            new = nn.Conv2d(
                in_channels, module.out_channels, module.kernel_size, module.stride, module.padding,
                module.dilation, module.groups if module.groups == 1 else in_channels, module.bias is not None,
            )
            setattr(parent, name.rpartition(".")[2], new)
            return model
    raise ValueError(f"{type(model).__name__} has no Conv2d to adapt to {in_channels} channels")


def _tv(builder_name: str) -> Callable[..., nn.Module]:
    def build(num_classes: int, in_channels: int = 3, **kwargs: object) -> nn.Module:
        import torchvision.models as tvm

        model = getattr(tvm, builder_name)(weights=None, num_classes=num_classes, **kwargs)
        return replace_first_conv(model, in_channels)

    return build


_RESNET_BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}

for _depth, _blocks in _RESNET_BLOCKS.items():
    _points = {"stem": "maxpool"}
    _points.update({f"stage{k}": f"layer{k}" for k in (1, 2, 3, 4)})
    _points.update({f"preact_stage{k}": f"layer{k}.{_blocks[k - 1] - 1}.relu:in" for k in (1, 2, 3, 4)})
    _points["pool"] = "fc:in"
    register_model(
        f"resnet{_depth}_imagenet",
        family="imagenet",
        input_size=224,
        feature_points=_points,
        description=f"torchvision ResNet-{_depth} (weights=None)",
        weights=f"torchvision:resnet{_depth}",
    )(_tv(f"resnet{_depth}"))

# torchvision mobilenet_v2 ``features``: 0 stem (112), 1 (16c, 112), 2-3 (24c, 56), 4-6 (32c, 28),
# 7-13 (64c/96c, 14), 14-17 (160c/320c, 7), 18 the 1×1 conv to 1280. Block outputs are linear.
_MV2 = {"stage1": "features.3", "stage2": "features.6", "stage3": "features.13", "stage4": "features.17"}
register_model(
    "mobilenetv2_imagenet",
    family="imagenet",
    input_size=224,
    feature_points={"stem": "features.1", **_MV2, **{f"preact_{k}": v for k, v in _MV2.items()}, "pool": "classifier:in"},
    description="torchvision MobileNetV2 1.0x (weights=None)",
    weights="torchvision:mobilenet_v2",
)(_tv("mobilenet_v2"))

register_model(
    "shufflenetv2_imagenet",
    family="imagenet",
    input_size=224,
    feature_points={"stem": "maxpool", "stage1": "stage2", "stage2": "stage3", "stage3": "stage4", "pool": "fc:in"},
    description="torchvision ShuffleNetV2 1.0x (weights=None)",
    weights="torchvision:shufflenet_v2_x1_0",
)(_tv("shufflenet_v2_x1_0"))

# torchvision vgg16_bn ``features``: conv-BN-ReLU triples with max-pools at 6, 13, 23, 33, 43;
# the ReLU before each pool ends a stage (stage1 = the 128-channel block at 112×112).
_VGG_STAGE_RELUS = (12, 22, 32, 42)
register_model(
    "vgg16_imagenet",
    family="imagenet",
    input_size=224,
    feature_points={
        "stem": "features.5",
        **{f"stage{k}": f"features.{i}" for k, i in enumerate(_VGG_STAGE_RELUS, start=1)},
        **{f"preact_stage{k}": f"features.{i}:in" for k, i in enumerate(_VGG_STAGE_RELUS, start=1)},
        "pool": "classifier:in",
    },
    description="torchvision VGG-16 with batch norm (vgg16_bn, weights=None)",
    weights="torchvision:vgg16_bn",
)(_tv("vgg16_bn"))
