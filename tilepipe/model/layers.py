"""Building blocks shared by the decoder and the heads, as in the 1st-place code."""

from __future__ import annotations

from torch import nn


def conv3x3(in_channels: int, out_channels: int) -> nn.Conv2d:
    """A 3x3 convolution, stride 1, padding 1, no bias: keeps (h, w)."""
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False)


def conv1x1(in_channels: int, out_channels: int) -> nn.Conv2d:
    """A 1x1 convolution without bias: keeps (h, w)."""
    return nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False)


def init_weights(module: nn.Module) -> None:
    """Initialise one layer the 1st-place way; use as ``block.apply(init_weights)``.

    Convolutions: Kaiming normal (fan in, ReLU gain); batch norms: weight
    N(1, 0.02), bias 0; linear layers: orthogonal, bias 0. Draws from torch's
    global RNG, so a seed set before building fixes the result.
    """
    if isinstance(module, nn.Conv2d):
        nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Linear):
        nn.init.orthogonal_(module.weight, gain=1)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
