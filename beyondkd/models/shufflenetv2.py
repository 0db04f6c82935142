"""ShuffleNet V2 (Ma et al. 2018) for 32×32 images: ``shufflenetv2``.

The CIFAR variant of CRD and mdistiller (their ``ShuffleV2``, net size 1×): a 1×1 stem to 24
channels (no stride, no max-pool), three stages of widths 116/232/464, each a stride-2 down
unit followed by 3/7/3 basic units (split half the channels, 1×1–3×3 dw–1×1 on the other half,
concatenate, shuffle); a 1×1 conv to 1024 channels, global average pooling, linear classifier.

Module names follow the CRD/mdistiller checkpoints (``layerK.J.convI``/``bnI``, ``conv2``,
``bn2``, ``linear``), so their ``cifar_teachers`` files load unchanged.

Features: ``stageK`` is the output of stage K; ``preact_stageK`` is the concatenation
``[x1, bn3(...)]`` of its last unit before the ReLU and the shuffle, read as
``layerK.J.act_out:in``. Applying the ReLU to the whole concatenation equals applying it to the
branch alone, since the passed-through half ``x1`` is a ReLU output and therefore ≥ 0.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from beyondkd.models.registry import register_model
from beyondkd.models.shufflenetv1 import channel_shuffle


class BasicUnit(nn.Module):
    """Keep half the channels, transform the other half, concatenate and shuffle (stride 1)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        half = channels // 2
        self.half = half
        self.conv1 = nn.Conv2d(half, half, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(half)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(half, half, 3, 1, 1, groups=half, bias=False)
        self.bn2 = nn.BatchNorm2d(half)
        self.conv3 = nn.Conv2d(half, half, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(half)
        self.act_out = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        x1, x2 = x[:, : self.half], x[:, self.half :]
        out = self.bn3(self.conv3(self.bn2(self.conv2(self.act1(self.bn1(self.conv1(x2)))))))
        return channel_shuffle(self.act_out(torch.cat([x1, out], 1)), 2)


class DownUnit(nn.Module):
    """Two strided branches (dw3×3–1×1 and 1×1–dw3×3–1×1), each to half the output channels."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        mid = out_channels // 2
        self.conv1 = nn.Conv2d(in_channels, in_channels, 3, 2, 1, groups=in_channels, bias=False)
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv2 = nn.Conv2d(in_channels, mid, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(in_channels, mid, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(mid)
        self.conv4 = nn.Conv2d(mid, mid, 3, 2, 1, groups=mid, bias=False)
        self.bn4 = nn.BatchNorm2d(mid)
        self.conv5 = nn.Conv2d(mid, mid, 1, bias=False)
        self.bn5 = nn.BatchNorm2d(mid)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        left = self.relu(self.bn2(self.conv2(self.bn1(self.conv1(x)))))
        right = self.relu(self.bn3(self.conv3(x)))
        right = self.relu(self.bn5(self.conv5(self.bn4(self.conv4(right)))))
        return channel_shuffle(torch.cat([left, right], 1), 2)


class CifarShuffleNetV2(nn.Module):
    """ShuffleNet V2 for small images.

    Args:
        num_classes: classifier outputs.
        in_channels: image channels.
        widths: output channels of the three stages and of the last 1×1 conv.
        num_blocks: basic units per stage (after its down unit).
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        widths: tuple[int, int, int, int] = (116, 232, 464, 1024),
        num_blocks: tuple[int, int, int] = (3, 7, 3),
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 24, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        self.act1 = nn.ReLU(inplace=True)
        prev = 24
        stages = []
        for width, count in zip(widths[:3], num_blocks):
            stages.append(nn.Sequential(DownUnit(prev, width), *[BasicUnit(width) for _ in range(count)]))
            prev = width
        self.layer1, self.layer2, self.layer3 = stages
        self.conv2 = nn.Conv2d(prev, widths[3], 1, bias=False)
        self.bn2 = nn.BatchNorm2d(widths[3])
        self.act2 = nn.ReLU(inplace=True)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.linear = nn.Linear(widths[3], num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = self.act2(self.bn2(self.conv2(x)))
        return self.linear(self.flatten(self.avgpool(x)))


_BLOCKS = (3, 7, 3)
_POINTS = {"stem": "act1"}
_POINTS.update({f"stage{k}": f"layer{k}" for k in (1, 2, 3)})
# index J of the last unit: the down unit is 0, basic units 1..n
_POINTS.update({f"preact_stage{k}": f"layer{k}.{_BLOCKS[k - 1]}.act_out:in" for k in (1, 2, 3)})
_POINTS["pool"] = "flatten"


@register_model(
    "shufflenetv2",
    family="cifar",
    input_size=32,
    feature_points=_POINTS,
    description="ShuffleNetV2 1x for 32x32 (CRD/mdistiller ShuffleV2 layout)",
)
def shufflenetv2(num_classes: int, in_channels: int = 3) -> nn.Module:
    return CifarShuffleNetV2(num_classes, in_channels)
