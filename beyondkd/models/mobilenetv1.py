"""MobileNetV1 (Howard et al. 2017) for 224×224 images: ``mobilenetv1_imagenet``.

The ImageNet student of the KD literature's ResNet-50 → MobileNet-V1 benchmark (BTKD Table 3;
≈ 4.23 M parameters at 1000 classes): a 3×3 stride-2 conv to 32 channels, thirteen depthwise
separable layers (3×3 depthwise + BN + ReLU, 1×1 pointwise + BN + ReLU) with widths
64, 128, 128, 256, 256, 512 ×6, 1024, 1024 and strides 1,2,1,2,1,2,1,1,1,1,1,2,1, global
average pooling and a linear classifier. Torchvision has no MobileNetV1, hence this module.

Module names follow mdistiller's ImageNet MobileNetV1 (``model.I.J``, ``fc``), so its weight
files load unchanged. Features: ``stageK`` is the output of layer 3, 5, 11 and 13 (128c at
56², 256c at 28², 512c at 14², 1024c at 7²); ``preact_stageK`` is that layer's last BN output,
read as the input of its final ReLU (``model.I.5:in``).
"""

from __future__ import annotations

from torch import Tensor, nn

from beyondkd.models.registry import register_model
from beyondkd.models._init import init_cnn_

# (output channels, stride) of the thirteen depthwise separable layers
LAYERS: tuple[tuple[int, int], ...] = (
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1),
)


def _conv_bn(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def _separable(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False),
        nn.BatchNorm2d(cin),
        nn.ReLU(inplace=True),
        nn.Conv2d(cin, cout, 1, 1, 0, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(),
    )


class MobileNetV1(nn.Module):
    """MobileNetV1 1.0×.

    Args:
        num_classes: classifier outputs.
        in_channels: image channels.
    """

    def __init__(self, num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = [_conv_bn(in_channels, 32, 2)]
        prev = 32
        for cout, stride in LAYERS:
            layers.append(_separable(prev, cout, stride))
            prev = cout
        layers.append(nn.AdaptiveAvgPool2d(1))
        self.model = nn.Sequential(*layers)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(prev, num_classes)
        init_cnn_(self, linear_std=0.01)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.flatten(self.model(x)))


_STAGE_LAYERS = (3, 5, 11, 13)
_POINTS = {"stem": "model.0"}
_POINTS.update({f"stage{k}": f"model.{i}" for k, i in enumerate(_STAGE_LAYERS, start=1)})
_POINTS.update({f"preact_stage{k}": f"model.{i}.5:in" for k, i in enumerate(_STAGE_LAYERS, start=1)})
_POINTS["pool"] = "flatten"


@register_model(
    "mobilenetv1_imagenet",
    family="imagenet",
    input_size=224,
    feature_points=_POINTS,
    description="MobileNetV1 1.0x for 224x224 (mdistiller layout)",
)
def mobilenetv1_imagenet(num_classes: int, in_channels: int = 3) -> nn.Module:
    return MobileNetV1(num_classes, in_channels)
