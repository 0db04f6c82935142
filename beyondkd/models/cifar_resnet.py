"""CIFAR-style ResNets (He et al. 2016, §4.2): 3×3 stem, no max-pool, three stages.

Depth ``6n + 2`` with ``n`` basic blocks per stage. ``resnetD`` uses widths 16/32/64;
``resnetDx4`` (the field's resnet8x4 / resnet32x4) uses 64/128/256 after a 32-channel stem.
These are the students and teachers of the KD literature on CIFAR (CRD, mdistiller).

Each block ends in a separate ``act_out`` ReLU, so its pre-activation is hookable as
``layerK.J.act_out:in`` (OFD needs pre-ReLU features).
"""

from __future__ import annotations

from torch import Tensor, nn

from beyondkd.models.registry import register_model
from beyondkd.models._init import init_cnn_


class BasicBlock(nn.Module):
    """Two 3×3 convolutions with batch norm and an identity (or 1×1 projection) shortcut."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )
        self.act_out = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act_out(out + self.downsample(x))


class CifarResNet(nn.Module):
    """ResNet for small images.

    Args:
        depth: ``6n + 2``.
        widths: ``(stem, stage1, stage2, stage3)`` channel counts.
        num_classes: classifier outputs.
        in_channels: image channels.
    """

    def __init__(self, depth: int, widths: tuple[int, int, int, int], num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.act1 = nn.ReLU(inplace=True)
        stages, in_planes = [], widths[0]
        for i, planes in enumerate(widths[1:]):
            blocks = []
            for j in range(n):
                blocks.append(BasicBlock(in_planes, planes, stride=2 if (i > 0 and j == 0) else 1))
                in_planes = planes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(in_planes, num_classes)
        init_cnn_(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.flatten(self.avgpool(x)))


def _feature_points(depth: int) -> dict[str, str]:
    last = (depth - 2) // 6 - 1
    points = {"stem": "act1"}
    points.update({f"stage{k}": f"layer{k}" for k in (1, 2, 3)})
    points.update({f"preact_stage{k}": f"layer{k}.{last}.act_out:in" for k in (1, 2, 3)})
    points["pool"] = "flatten"
    return points


def _register(depth: int, widths: tuple[int, int, int, int], suffix: str = "") -> None:
    name = f"resnet{depth}{suffix}"

    @register_model(
        name,
        family="cifar",
        input_size=32,
        feature_points=_feature_points(depth),
        description=f"CIFAR ResNet-{depth}{suffix}, widths {widths}",
    )
    def build(num_classes: int, in_channels: int = 3) -> nn.Module:
        return CifarResNet(depth, widths, num_classes, in_channels)


for _depth in (8, 14, 20, 32, 44, 56, 110):
    _register(_depth, (16, 16, 32, 64))
for _depth in (8, 32):
    _register(_depth, (32, 64, 128, 256), "x4")
