"""Wide residual networks for 32×32 images (Zagoruyko & Komodakis 2016): WRN-d-k.

Depth ``d = 6n + 4`` (``n`` pre-activation basic blocks per stage), widths 16k/32k/64k after a
16-channel 3×3 stem. Registered as ``wrn_16_1``, ``wrn_16_2``, ``wrn_40_1``, ``wrn_40_2`` (the
KD literature's teachers and students; no dropout).

Module names follow the CRD/mdistiller checkpoints (``blockK.layer.J.{bn1,conv1,bn2,conv2,
convShortcut}``, final ``bn1``, ``fc``), so their ``cifar_teachers`` files load unchanged.

Features: ``stageK`` is the output of stage K (pre-activation, before the next BN);
``preact_stageK`` is that output after the next batch norm and before its ReLU, read as the
input of the ReLU that follows it (``block2.layer.0.relu1:in``, ..., ``relu:in``) — the
features OFD distils.
"""

from __future__ import annotations

from torch import Tensor, nn

from beyondkd.models.registry import register_model
from beyondkd.models._init import init_cnn_


class PreActBlock(nn.Module):
    """BN-ReLU-conv3×3 twice; a 1×1 projection (``convShortcut``) when the shape changes."""

    def __init__(self, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, 1, 1, bias=False)
        self.equal_in_out = in_planes == out_planes and stride == 1
        self.convShortcut = None if self.equal_in_out else nn.Conv2d(in_planes, out_planes, 1, stride, 0, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        act = self.relu1(self.bn1(x))
        out = self.conv2(self.relu2(self.bn2(self.conv1(act))))
        # the projection reads the activated input; the identity reads the raw input
        return out + (x if self.convShortcut is None else self.convShortcut(act))


class NetworkBlock(nn.Module):
    """One stage: ``count`` blocks, the first one strided."""

    def __init__(self, count: int, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        self.layer = nn.Sequential(
            *[PreActBlock(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1) for i in range(count)]
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.layer(x)


class WideResNet(nn.Module):
    """WRN-``depth``-``widen``.

    Args:
        depth: ``6n + 4``.
        widen: width multiplier ``k``.
        num_classes: classifier outputs.
        in_channels: image channels.
    """

    def __init__(self, depth: int, widen: int, num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        if (depth - 4) % 6 != 0:
            raise ValueError(f"WRN depth must be 6n+4, got {depth}")
        n = (depth - 4) // 6
        widths = (16, 16 * widen, 32 * widen, 64 * widen)
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.block1 = NetworkBlock(n, widths[0], widths[1], 1)
        self.block2 = NetworkBlock(n, widths[1], widths[2], 2)
        self.block3 = NetworkBlock(n, widths[2], widths[3], 2)
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.relu = nn.ReLU(inplace=True)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(widths[3], num_classes)
        init_cnn_(self, zero_biases=True)

    def forward(self, x: Tensor) -> Tensor:
        x = self.block3(self.block2(self.block1(self.conv1(x))))
        return self.fc(self.flatten(self.avgpool(self.relu(self.bn1(x)))))


_POINTS = {
    "stem": "conv1",
    "stage1": "block1",
    "stage2": "block2",
    "stage3": "block3",
    "preact_stage1": "block2.layer.0.relu1:in",
    "preact_stage2": "block3.layer.0.relu1:in",
    "preact_stage3": "relu:in",
    "pool": "flatten",
}


def _register(depth: int, widen: int) -> None:
    @register_model(
        f"wrn_{depth}_{widen}",
        family="cifar",
        input_size=32,
        feature_points=_POINTS,
        description=f"Wide ResNet WRN-{depth}-{widen} for 32x32",
    )
    def build(num_classes: int, in_channels: int = 3) -> nn.Module:
        return WideResNet(depth, widen, num_classes, in_channels)


for _depth, _widen in ((16, 1), (16, 2), (40, 1), (40, 2)):
    _register(_depth, _widen)
