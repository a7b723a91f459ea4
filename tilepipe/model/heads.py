"""Output heads: segmentation (hypercolumn or finest map), deep supervision, classification."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tilepipe.model.layers import conv1x1, conv3x3, init_weights


def upsample_to_finest(decoded: list[torch.Tensor]) -> list[torch.Tensor]:
    """Return the decoder outputs (coarsest first), bilinearly upsampled (align_corners) to the last one's (h, w)."""
    size = decoded[-1].shape[-2:]
    return [F.interpolate(y, size=size, mode="bilinear", align_corners=True) for y in decoded[:-1]] + [decoded[-1]]


class HypercolumnHead(nn.Module):
    """Concatenated full-resolution decoder maps -> conv3x3 -> ELU -> conv1x1: returns (b, 1, h, w) logits."""

    uses_all_levels = True

    def __init__(self, channels: int, levels: int):
        super().__init__()
        self.layers = nn.Sequential(conv3x3(levels * channels, channels), nn.ELU(inplace=True), conv1x1(channels, 1))
        self.layers.apply(init_weights)

    def forward(self, columns: list[torch.Tensor]) -> torch.Tensor:
        return self.layers(torch.cat(columns, dim=1))


class FinestMapHead(nn.Module):
    """conv1x1 on the finest decoder map (the last of ``columns``): returns (b, 1, h, w) logits."""

    uses_all_levels = False

    def __init__(self, channels: int):
        super().__init__()
        self.conv = conv1x1(channels, 1)
        self.conv.apply(init_weights)

    def forward(self, columns: list[torch.Tensor]) -> torch.Tensor:
        return self.conv(columns[-1])


class DeepSupervisionHeads(nn.Module):
    """One conv1x1 per upsampled coarse decoder map: returns a list of (b, 1, h, w) logits, coarsest first."""

    def __init__(self, channels: int, levels: int):
        super().__init__()
        self.convs = nn.ModuleList(conv1x1(channels, 1) for _ in range(levels))
        self.convs.apply(init_weights)

    def forward(self, columns: list[torch.Tensor]) -> list[torch.Tensor]:
        return [conv(column) for conv, column in zip(self.convs, columns, strict=True)]


class ClassificationHead(nn.Module):
    """Global average pool of (b, c, h, w) -> BN, Linear(c, hidden), ELU, BN, Linear(hidden, 1): returns (b, 1) logits.

    In training mode the batch norms need a batch of at least 2.
    """

    def __init__(self, in_channels: int, hidden: int = 512):
        super().__init__()
        self.layers = nn.Sequential(
            nn.BatchNorm1d(in_channels),
            nn.Linear(in_channels, hidden),
            nn.ELU(inplace=True),
            nn.BatchNorm1d(hidden),
            nn.Linear(hidden, 1),
        )
        self.layers.apply(init_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x.mean(dim=(2, 3)))
