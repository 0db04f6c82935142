"""VGG networks with batch norm for 32×32 images: ``vgg8``, ``vgg11``, ``vgg13``, ``vgg16``, ``vgg19``.

The CIFAR variant used by CRD and mdistiller: five conv blocks (3×3 conv, BN, ReLU; the last
ReLU of each block is applied outside it), max-pooling after blocks 0–2 (32 → 16 → 8 → 4; the
fourth pool is skipped at 32×32), global average pooling and a single linear classifier on 512
channels. ``vgg8`` is the field's 8-layer configuration (one conv per block).

Module names follow the CRD/mdistiller checkpoints (``blockK.I`` inside each block,
``classifier``), so their ``cifar_teachers`` files load unchanged.

Features: ``stageK`` (K = 1..4) is block K after its ReLU (``reluK``); ``preact_stageK`` is the
block's output before it (``reluK:in``), the features OFD distils; ``stem`` is block 0.
"""

from __future__ import annotations

from torch import Tensor, nn

from beyondkd.models.registry import register_model
from beyondkd.models._init import init_cnn_

# channels of each conv, per block, for each depth
CONFIGS: dict[int, tuple[tuple[int, ...], ...]] = {
    8: ((64,), (128,), (256,), (512,), (512,)),
    11: ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    13: ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
    16: ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
    19: ((64, 64), (128, 128), (256, 256, 256, 256), (512, 512, 512, 512), (512, 512, 512, 512)),
}


def _block(widths: tuple[int, ...], in_channels: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for w in widths:
        layers += [nn.Conv2d(in_channels, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
        in_channels = w
    return nn.Sequential(*layers[:-1])  # the block's last ReLU is the separate ``reluK``


class CifarVGG(nn.Module):
    """VGG-``depth`` with batch norm for small images.

    Args:
        depth: one of 8, 11, 13, 16, 19.
        num_classes: classifier outputs.
        in_channels: image channels.
    """

    def __init__(self, depth: int, num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        cfg = CONFIGS[depth]
        prev = in_channels
        for k, widths in enumerate(cfg):
            setattr(self, f"block{k}", _block(widths, prev))
            setattr(self, f"relu{k}", nn.ReLU())
            prev = widths[-1]
        self.pool0 = nn.MaxPool2d(2, 2)
        self.pool1 = nn.MaxPool2d(2, 2)
        self.pool2 = nn.MaxPool2d(2, 2)
        self.pool3 = nn.MaxPool2d(2, 2)
        self.pool4 = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(prev, num_classes)
        init_cnn_(self, linear_std=0.01, zero_biases=True)

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool0(self.relu0(self.block0(x)))
        x = self.pool1(self.relu1(self.block1(x)))
        x = self.pool2(self.relu2(self.block2(x)))
        x = self.relu3(self.block3(x))
        if x.shape[-1] >= 8:  # the fourth pool runs from 64×64 inputs up (as the field does at 64), never at 32
            x = self.pool3(x)
        x = self.relu4(self.block4(x))
        return self.classifier(self.flatten(self.pool4(x)))


_POINTS = {"stem": "relu0"}
_POINTS.update({f"stage{k}": f"relu{k}" for k in (1, 2, 3, 4)})
_POINTS.update({f"preact_stage{k}": f"relu{k}:in" for k in (1, 2, 3, 4)})
_POINTS["pool"] = "flatten"


def _register(depth: int) -> None:
    @register_model(
        f"vgg{depth}",
        family="cifar",
        input_size=32,
        feature_points=_POINTS,
        description=f"VGG-{depth} with batch norm for 32x32 (CRD/mdistiller layout)",
    )
    def build(num_classes: int, in_channels: int = 3) -> nn.Module:
        return CifarVGG(depth, num_classes, in_channels)


for _depth in CONFIGS:
    _register(_depth)
