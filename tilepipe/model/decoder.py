"""The U-Net decoder of the 1st-place model: a centre conv and five upsampling blocks with CBAM."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tilepipe.model.cbam import CBAM
from tilepipe.model.layers import conv1x1, conv3x3, init_weights


class DecodeBlock(nn.Module):
    """(b, in, h, w) -> (b, out, 2h, 2w): BN-ReLU, nearest x2, conv3x3, BN-ReLU, conv3x3, CBAM, plus a 1x1 shortcut."""

    def __init__(self, in_channels: int, out_channels: int, cbam: bool, reduction: int = 16):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = conv3x3(in_channels, in_channels)
        self.bn2 = nn.BatchNorm2d(in_channels)
        self.conv2 = conv3x3(in_channels, out_channels)
        self.shortcut = conv1x1(in_channels, out_channels)
        for layer in (self.bn1, self.conv1, self.bn2, self.conv2, self.shortcut):
            layer.apply(init_weights)
        self.attention = CBAM(out_channels, reduction) if cbam else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.interpolate(F.relu(self.bn1(x)), scale_factor=2, mode="nearest")
        y = self.conv2(F.relu(self.bn2(self.conv1(y))))
        y = self.attention(y)
        return y + self.shortcut(F.interpolate(x, scale_factor=2, mode="nearest"))


class UnetDecoder(nn.Module):
    """Centre conv3x3 on the deepest features, then five DecodeBlocks fed with the encoder's skips.

    ``forward(features)`` takes the encoder's five maps (finest first, strides
    2..32) and returns the five block outputs, coarsest first: strides 16, 8,
    4, 2, 1, each with ``decoder_channels`` channels. The stride-2 encoder map
    is not used as a skip, as in the original.
    """

    def __init__(self, encoder_channels: tuple[int, ...], center_channels: int, decoder_channels: int, cbam: bool):
        super().__init__()
        deepest = encoder_channels[4]
        self.center = conv3x3(deepest, center_channels)
        self.center.apply(init_weights)
        block_inputs = [
            deepest + center_channels,
            encoder_channels[3] + decoder_channels,
            encoder_channels[2] + decoder_channels,
            encoder_channels[1] + decoder_channels,
            decoder_channels,
        ]
        self.blocks = nn.ModuleList(DecodeBlock(n, decoder_channels, cbam) for n in block_inputs)

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        skips = [features[4], features[3], features[2], features[1], None]
        y = self.center(features[4])
        outputs = []
        for block, skip in zip(self.blocks, skips, strict=False):
            y = block(y if skip is None else torch.cat([skip, y], dim=1))
            outputs.append(y)
        return outputs
