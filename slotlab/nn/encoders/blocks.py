"""The conv block of the small label-free networks (``ssl``'s conv net, the silhouette net)."""

from __future__ import annotations

from torch import nn

GROUPS = 8  # GroupNorm groups: channels must be multiples of it


def conv_block(in_channels: int, out_channels: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    """3x3 conv (padding keeps the size at stride 1), GroupNorm, GELU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=dilation, dilation=dilation),
        nn.GroupNorm(GROUPS, out_channels),
        nn.GELU(),
    )
