"""CBAM (Woo et al. 2018) as the 1st-place decoder uses it: channel, then spatial attention."""

from __future__ import annotations

import torch
from torch import nn

from tilepipe.model.layers import conv1x1, conv3x3, init_weights


class ChannelAttention(nn.Module):
    """Per-channel gate in (0, 1): shared MLP on the global max and average pools; returns (b, c, 1, 1)."""

    def __init__(self, channels: int, reduction: int):
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.mlp = nn.Sequential(conv1x1(channels, hidden), nn.ReLU(inplace=True), conv1x1(hidden, channels))
        self.mlp.apply(init_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled_max = torch.amax(x, dim=(2, 3), keepdim=True)
        pooled_mean = torch.mean(x, dim=(2, 3), keepdim=True)
        return torch.sigmoid(self.mlp(pooled_max) + self.mlp(pooled_mean))


class SpatialAttention(nn.Module):
    """Per-pixel gate in (0, 1): 3x3 conv over the channel max and mean; returns (b, 1, h, w)."""

    def __init__(self):
        super().__init__()
        self.conv = conv3x3(2, 1)
        self.conv.apply(init_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channel_max = torch.amax(x, dim=1, keepdim=True)
        channel_mean = torch.mean(x, dim=1, keepdim=True)
        return torch.sigmoid(self.conv(torch.cat([channel_max, channel_mean], dim=1)))


class CBAM(nn.Module):
    """Convolutional block attention: (b, c, h, w) -> (b, c, h, w), gated by channel then by pixel."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.channel_attention = ChannelAttention(channels, reduction)
        self.spatial_attention = SpatialAttention()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * self.channel_attention(x)
        return x * self.spatial_attention(x)
