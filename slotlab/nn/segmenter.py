"""A small fully convolutional per-pixel classifier: normalised pixels -> class logits.

The CPU presets' stand-in for what DINOv2 features carry and colour does not: an object's
semantic class, the same for every pixel of the object. Trained with supervision (the
``segmenter`` method) and then frozen inside the patch encoder (``encoder.semantic_model``),
it adds each pixel's class probabilities to the pixel's colour features.

Layout: two stride-2 stages (3x3 convs) to a quarter-resolution map, two dilated 3x3 convs
(dilation 2 and 4) that widen the receptive field to a whole object of the scenes (about
45 pixels), a 1x1 head on both quarter-resolution maps, and bilinear upsampling back to
the input size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class SegmenterNetworkConfig:
    """num_classes: output classes, background included (the scenes: 7). channels: width."""

    num_classes: int = 7
    channels: int = 32

    def __post_init__(self) -> None:
        if self.num_classes < 2:
            raise ValueError(f"num_classes={self.num_classes} must be >= 2 (background and one class)")
        if self.channels < 1:
            raise ValueError(f"channels={self.channels} must be >= 1")


def _conv(in_channels: int, out_channels: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=dilation, dilation=dilation), nn.ReLU()
    )


class SegmenterNetwork(nn.Module):
    """(B, 3, H, W) pixels normalised to [-1, 1] -> (B, num_classes, H, W) logits (H, W multiples of 4)."""

    def __init__(self, config: SegmenterNetworkConfig):
        super().__init__()
        self.config = config
        c = config.channels
        self.down = nn.Sequential(_conv(3, c), _conv(c, c, stride=2), _conv(c, c), _conv(c, c, stride=2))
        self.context = nn.Sequential(_conv(c, c, dilation=2), _conv(c, c, dilation=4))
        self.head = nn.Conv2d(2 * c, config.num_classes, 1)

    def forward(self, pixels: Tensor) -> Tensor:
        if pixels.shape[-1] % 4 or pixels.shape[-2] % 4:
            raise ValueError(f"segmenter input sides must be multiples of 4, got {tuple(pixels.shape[-2:])}")
        local = self.down(pixels)
        logits = self.head(torch.cat([local, self.context(local)], dim=1))
        return F.interpolate(logits, size=pixels.shape[-2:], mode="bilinear", align_corners=False)

