"""The weight initialisation the CIFAR/ImageNet CNNs of the field share."""

from __future__ import annotations

from torch import nn


def init_cnn_(model: nn.Module, linear_std: float | None = None, zero_biases: bool = False) -> None:
    """Initialise ``model`` in place, module by module (the RNG draws follow module order).

    Conv2d: Kaiming normal (fan-out, ReLU); BatchNorm2d: weight 1, bias 0.

    Args:
        linear_std: if given, Linear weights ~ N(0, std²) and Linear biases 0.
        zero_biases: also set the biases of Conv2d and Linear layers to 0.
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if zero_biases and m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            if linear_std is not None:
                nn.init.normal_(m.weight, 0.0, linear_std)
            if (linear_std is not None or zero_biases) and m.bias is not None:
                nn.init.zeros_(m.bias)
