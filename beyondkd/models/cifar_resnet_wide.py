"""Four-stage ResNets for 32×32 images: ResNet-18/34/50/101 with a 3×3 stem and no max-pool.

The CIFAR versions of He et al.'s ImageNet ResNets used as teachers and students by CRD and
mdistiller (their ``resnetv2``): a 64-channel 3×3 stride-1 stem, four stages of widths
64/128/256/512 (×4 for bottlenecks) at strides 1/2/2/2, global average pooling and a linear
classifier. Registered as ``resnet18_cifar`` ... ``resnet101_cifar``.

Module names follow the CRD/mdistiller checkpoints (``layerK.J.shortcut``, ``linear``), so their
``cifar_teachers`` files load without renaming. Each block ends in its own ``act_out`` ReLU, so
its pre-activation is readable as ``layerK.J.act_out:in`` (OFD's pre-ReLU features).
"""

from __future__ import annotations

from torch import Tensor, nn

from beyondkd.models.registry import register_model
from beyondkd.models._init import init_cnn_


def _shortcut(in_planes: int, out_planes: int, stride: int) -> nn.Sequential:
    if stride == 1 and in_planes == out_planes:
        return nn.Sequential()
    return nn.Sequential(nn.Conv2d(in_planes, out_planes, 1, stride, bias=False), nn.BatchNorm2d(out_planes))


class BasicBlock(nn.Module):
    """Two 3×3 convolutions; output channels ``planes``."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = _shortcut(in_planes, planes, stride)
        self.act_out = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act_out(out + self.shortcut(x))


class Bottleneck(nn.Module):
    """1×1 reduce, 3×3 (strided), 1×1 expand ×4; output channels ``4 * planes``."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out_planes = planes * self.expansion
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.act2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(planes, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut = _shortcut(in_planes, out_planes, stride)
        self.act_out = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.act2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.act_out(out + self.shortcut(x))


class WideStemResNet(nn.Module):
    """ResNet-18/34/50/101 for small images.

    Args:
        block: :class:`BasicBlock` or :class:`Bottleneck`.
        num_blocks: blocks per stage (four stages).
        num_classes: classifier outputs.
        in_channels: image channels.
    """

    def __init__(self, block: type[BasicBlock] | type[Bottleneck], num_blocks: tuple[int, int, int, int], num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.act1 = nn.ReLU(inplace=True)
        in_planes = 64
        stages = []
        for i, (planes, count) in enumerate(zip((64, 128, 256, 512), num_blocks)):
            blocks = []
            for j in range(count):
                blocks.append(block(in_planes, planes, stride=2 if (i > 0 and j == 0) else 1))
                in_planes = planes * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.linear = nn.Linear(in_planes, num_classes)
        init_cnn_(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.linear(self.flatten(self.avgpool(x)))


_CONFIGS: dict[int, tuple[type[BasicBlock] | type[Bottleneck], tuple[int, int, int, int]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
}


def _register(depth: int) -> None:
    block, num_blocks = _CONFIGS[depth]
    points = {"stem": "act1"}
    points.update({f"stage{k}": f"layer{k}" for k in (1, 2, 3, 4)})
    points.update({f"preact_stage{k}": f"layer{k}.{num_blocks[k - 1] - 1}.act_out:in" for k in (1, 2, 3, 4)})
    points["pool"] = "flatten"

    @register_model(
        f"resnet{depth}_cifar",
        family="cifar",
        input_size=32,
        feature_points=points,
        description=f"ResNet-{depth} for 32x32 (3x3 stem, no max-pool; CRD/mdistiller resnetv2)",
    )
    def build(num_classes: int, in_channels: int = 3) -> nn.Module:
        return WideStemResNet(block, num_blocks, num_classes, in_channels)


for _depth in _CONFIGS:
    _register(_depth)
