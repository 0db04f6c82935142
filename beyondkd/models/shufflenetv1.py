"""ShuffleNet V1 (Zhang et al. 2018) for 32×32 images: ``shufflenetv1``.

The CIFAR variant of CRD and mdistiller (their ``ShuffleV1``): a 1×1 stem to 24 channels (no
stride, no max-pool), three stages of 4/8/4 bottlenecks with 3 groups and output widths
240/480/960, each stage starting with a stride-2 unit whose shortcut is a 3×3 average pool
concatenated to the branch; global average pooling and a linear classifier.

Module names follow the CRD/mdistiller checkpoints (``layerK.J.{conv1,bn1,conv2,bn2,conv3,bn3}``,
``linear``), so their ``cifar_teachers`` files load unchanged. Each unit ends in its own
``act_out`` ReLU, so ``preact_stageK`` (``layerK.J.act_out:in``) is the pre-ReLU output.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from beyondkd.models.registry import register_model


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """Interleave ``groups`` channel groups: ``(N, g·c, H, W)`` -> ``(N, c·g, H, W)``."""
    n, c, h, w = x.shape
    return x.reshape(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ShuffleUnit(nn.Module):
    """Grouped 1×1, channel shuffle, 3×3 depthwise (strided), grouped 1×1; add or concat the shortcut.

    Args:
        in_planes: input channels.
        out_planes: channels of the branch (the stride-2 unit concatenates ``in_planes`` more).
        stride: 1 (residual add) or 2 (average-pool shortcut, concatenated).
        groups: groups of the 1×1 convs (the first unit after the 24-channel stem uses 1).
    """

    def __init__(self, in_planes: int, out_planes: int, stride: int, groups: int) -> None:
        super().__init__()
        mid = out_planes // 4
        self.first_groups = 1 if in_planes == 24 else groups
        self.stride = stride
        self.conv1 = nn.Conv2d(in_planes, mid, 1, groups=self.first_groups, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.act2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(mid, out_planes, 1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut = nn.Sequential(nn.AvgPool2d(3, stride=2, padding=1)) if stride == 2 else nn.Sequential()
        self.act_out = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        out = channel_shuffle(self.act1(self.bn1(self.conv1(x))), self.first_groups)
        out = self.act2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        res = self.shortcut(x)
        return self.act_out(torch.cat([out, res], 1) if self.stride == 2 else out + res)


class CifarShuffleNetV1(nn.Module):
    """ShuffleNet V1 (g = 3) for small images.

    Args:
        num_classes: classifier outputs.
        in_channels: image channels.
        out_planes: output channels of the three stages.
        num_blocks: units per stage.
        groups: groups of the 1×1 convolutions.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        out_planes: tuple[int, int, int] = (240, 480, 960),
        num_blocks: tuple[int, int, int] = (4, 8, 4),
        groups: int = 3,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 24, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        self.act1 = nn.ReLU(inplace=True)
        planes = 24
        stages = []
        for width, count in zip(out_planes, num_blocks):
            units = []
            for i in range(count):
                cat = planes if i == 0 else 0
                units.append(ShuffleUnit(planes, width - cat, 2 if i == 0 else 1, groups))
                planes = width
            stages.append(nn.Sequential(*units))
        self.layer1, self.layer2, self.layer3 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.linear = nn.Linear(planes, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.linear(self.flatten(self.avgpool(x)))


_BLOCKS = (4, 8, 4)
_POINTS = {"stem": "act1"}
_POINTS.update({f"stage{k}": f"layer{k}" for k in (1, 2, 3)})
_POINTS.update({f"preact_stage{k}": f"layer{k}.{_BLOCKS[k - 1] - 1}.act_out:in" for k in (1, 2, 3)})
_POINTS["pool"] = "flatten"


@register_model(
    "shufflenetv1",
    family="cifar",
    input_size=32,
    feature_points=_POINTS,
    description="ShuffleNetV1 g=3 for 32x32 (CRD/mdistiller ShuffleV1 layout)",
)
def shufflenetv1(num_classes: int, in_channels: int = 3) -> nn.Module:
    return CifarShuffleNetV1(num_classes, in_channels)
