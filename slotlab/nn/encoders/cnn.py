"""A small random conv net encoder (CPU, no weights)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from slotlab.nn.encoders.base import CPU_DEFAULT_DIM, CPUEncoder, CPUEncoderConfig, Encoder, last_blocks
from slotlab.ops.random import fixed_randomness


@dataclass
class CNNEncoderConfig(CPUEncoderConfig):
    """The ``cnn`` encoder. patch_size: total stride, a power of 2 (default 4); cnn_layers:
    number of 3x3 conv layers (default 4)."""

    name: str = "cnn"
    cnn_layers: int = 4

    def __post_init__(self) -> None:
        super().__post_init__()
        conv_strides(self.cnn_layers, self.patch_size)


def conv_strides(num_layers: int, total_stride: int) -> list[int]:
    """Strides of ``num_layers`` convs whose product is ``total_stride`` (a power of 2)."""
    downsamplings = int(math.log2(total_stride))
    if 2**downsamplings != total_stride or downsamplings > num_layers:
        raise ValueError(
            f"encoder.patch_size={total_stride} for the cnn encoder must be a power of 2 "
            f"reachable with encoder.cnn_layers={num_layers} stride-2 convs"
        )
    return [2] * downsamplings + [1] * (num_layers - downsamplings)


class CNNEncoder(CPUEncoder):
    """A small conv net: ``cnn_layers`` 3x3 convs (stride 2 first, to reach the grid), ReLU between.

    The last conv has no ReLU so tokens are not clipped at zero. Random and frozen by
    default; ``trainable_blocks`` counts conv layers from the end.
    """

    def __init__(self, image_size: int, patch_size: int, dim: int, num_layers: int, trainable_blocks: int, seed: int):
        super().__init__(dim, image_size, patch_size)
        strides = conv_strides(num_layers, patch_size)
        with fixed_randomness(seed):
            self.convs = nn.ModuleList(
                nn.Conv2d(3 if i == 0 else dim, dim, kernel_size=3, stride=s, padding=1)
                for i, s in enumerate(strides)
            )
        self.set_trainable(last_blocks(self.convs, trainable_blocks, "cnn"))

    def encode(self, pixels: Tensor) -> Tensor:
        x = pixels
        for i, conv in enumerate(self.convs):
            x = conv(x)
            if i < len(self.convs) - 1:
                x = F.relu(x)
        return x.flatten(2).transpose(1, 2)


def build_cnn_encoder(config: CNNEncoderConfig, architecture: dict | None = None) -> Encoder:
    if architecture is not None:
        raise ValueError("the cnn encoder is built from its config alone: it takes no stored architecture")
    dim = CPU_DEFAULT_DIM if config.dim is None else config.dim
    return CNNEncoder(config.image_size, config.patch_size, dim, config.cnn_layers, config.trainable_blocks, config.seed)
