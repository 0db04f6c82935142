"""Small convolutional networks for 28×28 images (Fashion-MNIST), fast on a CPU.

``cnn_small`` (≈ 0.42 M parameters) is the default teacher of the demo; ``cnn_tiny``
(≈ 0.03 M) is a deliberately weak student.
"""

from __future__ import annotations

from torch import Tensor, nn

from beyondkd.models.registry import register_model


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class SmallCNN(nn.Module):
    """Two conv stages (each conv-BN-ReLU ×``convs`` then 2×2 max-pool) and an MLP head.

    Args:
        widths: channels of the two stages.
        hidden: width of the hidden fully connected layer.
        num_classes: classifier outputs.
        in_channels: image channels.
        convs: convolutions per stage.
    """

    def __init__(self, widths: tuple[int, int], hidden: int, num_classes: int, in_channels: int = 1, convs: int = 1) -> None:
        super().__init__()
        layers1 = [_conv_bn_relu(in_channels, widths[0])] + [_conv_bn_relu(widths[0], widths[0]) for _ in range(convs - 1)]
        layers2 = [_conv_bn_relu(widths[0], widths[1])] + [_conv_bn_relu(widths[1], widths[1]) for _ in range(convs - 1)]
        self.stage1 = nn.Sequential(*layers1, nn.MaxPool2d(2))
        self.stage2 = nn.Sequential(*layers2, nn.MaxPool2d(2))
        self.pool = nn.AdaptiveAvgPool2d(7)  # any input side >= 28 maps to 7x7
        self.flatten = nn.Flatten()
        self.hidden = nn.Sequential(nn.Linear(widths[1] * 49, hidden), nn.ReLU(inplace=True))
        self.fc = nn.Linear(hidden, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.flatten(self.pool(self.stage2(self.stage1(x))))
        return self.fc(self.hidden(x))


# ``preact_stageK``: input of the ReLU of the stage's last conv-BN-ReLU (before max-pooling)
_POINTS = {"stage1": "stage1", "stage2": "stage2", "pool": "hidden",
           "preact_stage1": "stage1.0.2:in", "preact_stage2": "stage2.0.2:in"}


@register_model("cnn_small", family="mnist", input_size=28, feature_points=_POINTS,
                description="2-stage CNN (32/64 channels), MLP head 128")
def cnn_small(num_classes: int, in_channels: int = 1) -> nn.Module:
    return SmallCNN((32, 64), 128, num_classes, in_channels, convs=1)


@register_model("cnn_tiny", family="mnist", input_size=28, feature_points=_POINTS,
                description="2-stage CNN (8/16 channels), MLP head 32")
def cnn_tiny(num_classes: int, in_channels: int = 1) -> nn.Module:
    return SmallCNN((8, 16), 32, num_classes, in_channels, convs=1)
