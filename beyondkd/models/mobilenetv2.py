"""MobileNetV2 (Sandler et al. 2018) for 32×32 images: ``mobilenetv2`` and ``mobilenetv2_x0_5``.

The CIFAR variant of CRD and mdistiller: a 3×3 stride-2 stem (32 → 16), the seven inverted
residual stages ``(t, c, n, s)`` = (1,16,1,1) (6,24,2,1) (6,32,3,2) (6,64,4,2) (6,96,3,1)
(6,160,3,2) (6,320,1,1) with channels scaled by the width multiplier, a 1×1 conv to 1280
channels, global average pooling and a linear classifier. Unlike torchvision's, every block
(including the t = 1 one) keeps its 1×1 expansion conv. ``mobilenetv2_x0_5`` (width 0.5) is
what the KD literature's CIFAR-100 tables call "MobileNetV2" (mdistiller's ``mobile_half``).

Module names follow the CRD/mdistiller checkpoints (``conv1.I``, ``blocks.S.J.conv.I``,
``conv2.I``, ``classifier.0``), so their ``cifar_teachers`` files load unchanged.

Features (as the field reads them): ``stage1`` = stage 1 (24c, 16×16), ``stage2`` = stage 2
(32c, 8×8), ``stage3`` = stage 4 (96c, 4×4), ``stage4`` = stage 6 (320c, 2×2). Block outputs are
linear bottlenecks (no ReLU), so ``preact_stageK`` is the same tensor as ``stageK``.
"""

from __future__ import annotations

from torch import Tensor, nn

from beyondkd.models.registry import register_model
from beyondkd.models._init import init_cnn_

SETTINGS: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1),
)


def _conv_bn_relu(cin: int, cout: int, kernel: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class InvertedResidual(nn.Module):
    """1×1 expand (×t), 3×3 depthwise (strided), 1×1 linear projection; identity when shapes match."""

    def __init__(self, inp: int, oup: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = inp * expand
        self.use_residual = stride == 1 and inp == oup
        self.conv = nn.Sequential(
            nn.Conv2d(inp, hidden, 1, 1, 0, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, oup, 1, 1, 0, bias=False),
            nn.BatchNorm2d(oup),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x) if self.use_residual else self.conv(x)


class CifarMobileNetV2(nn.Module):
    """MobileNetV2 for small images.

    Args:
        width_mult: channel multiplier (the last conv stays 1280 for ``width_mult <= 1``).
        num_classes: classifier outputs.
        in_channels: image channels.
        expand: expansion ratio ``t`` of the blocks after the first.
    """

    def __init__(self, width_mult: float, num_classes: int, in_channels: int = 3, expand: int = 6) -> None:
        super().__init__()
        channels = int(32 * width_mult)
        self.conv1 = _conv_bn_relu(in_channels, channels, 3, 2)
        self.blocks = nn.ModuleList()
        for t, c, n, s in SETTINGS:
            out = int(c * width_mult)
            layers = []
            for i in range(n):
                layers.append(InvertedResidual(channels, out, s if i == 0 else 1, t if t == 1 else expand))
                channels = out
            self.blocks.append(nn.Sequential(*layers))
        last = int(1280 * width_mult) if width_mult > 1.0 else 1280
        self.conv2 = _conv_bn_relu(channels, last, 1, 1)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Sequential(nn.Linear(last, num_classes))
        init_cnn_(self, linear_std=0.01)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1(x)
        for block in self.blocks:
            x = block(x)
        return self.classifier(self.flatten(self.avgpool(self.conv2(x))))


_POINTS = {"stem": "conv1"}
for _k, _stage in enumerate((1, 2, 4, 6), start=1):
    _POINTS[f"stage{_k}"] = f"blocks.{_stage}"
    _POINTS[f"preact_stage{_k}"] = f"blocks.{_stage}"
_POINTS["pool"] = "flatten"


def _register(name: str, width: float) -> None:
    @register_model(
        name,
        family="cifar",
        input_size=32,
        feature_points=_POINTS,
        description=f"MobileNetV2 width {width} for 32x32 (CRD/mdistiller layout)",
    )
    def build(num_classes: int, in_channels: int = 3) -> nn.Module:
        return CifarMobileNetV2(width, num_classes, in_channels)


_register("mobilenetv2", 1.0)
_register("mobilenetv2_x0_5", 0.5)
