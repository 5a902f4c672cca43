"""A small convolutional encoder for the built-in scenes, trained without labels.

The CPU presets' stand-in for DINO: ``slotlab train --preset ssl-scenes-tiny`` trains it by
self-distillation (``slotlab.methods.self_distillation``), then the presets read the frozen
teacher network as their encoder (``encoder: {name: ssl, path: runs/ssl/model}``).

Layout (:class:`ConvNet`): a stride-2 3x3 conv (a skip path at half resolution), a stride-2
3x3 conv to the quarter-resolution grid, residual dilated 3x3 convs there that widen the
receptive field to a whole object of the scenes, and a 1x1 output projection with a
per-token LayerNorm (as DINOv2's output is normed). With ``output_stride=2`` the quarter
map is upsampled and joined with the skip path, so tokens lie on a 32 x 32 grid at 64 px.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slotlab.config import from_dict
from slotlab.nn.encoders.base import SYMMETRIC_MEAN, SYMMETRIC_STD, Encoder, EncoderConfig

OUTPUT_STRIDES = (2, 4)
GROUPS = 8  # GroupNorm groups: channels must be multiples of it


@dataclass
class ConvNetConfig:
    """Shape of :class:`ConvNet`.

    Attributes:
        channels: width on the quarter-resolution grid (a multiple of 8).
        skip_channels: width of the half-resolution stem (a multiple of 8).
        dim: token dim.
        dilations: one residual 3x3 conv per entry, at that dilation, on the quarter grid.
        output_stride: 4 (tokens on the quarter grid) or 2 (upsampled, joined with the stem).
    """

    channels: int = 64
    skip_channels: int = 16
    dim: int = 64
    dilations: tuple[int, ...] = (1, 2, 4)
    output_stride: int = 4

    def __post_init__(self) -> None:
        for name in ("channels", "skip_channels"):
            value = getattr(self, name)
            if value < GROUPS or value % GROUPS:
                raise ValueError(f"{name}={value} must be a positive multiple of {GROUPS}")
        if self.dim < 1:
            raise ValueError(f"dim={self.dim} must be >= 1")
        if any(d < 1 for d in self.dilations):
            raise ValueError(f"dilations={list(self.dilations)} must all be >= 1")
        if self.output_stride not in OUTPUT_STRIDES:
            raise ValueError(f"output_stride={self.output_stride}: choose one of {OUTPUT_STRIDES}")


def conv_block(in_channels: int, out_channels: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=dilation, dilation=dilation),
        nn.GroupNorm(GROUPS, out_channels),
        nn.GELU(),
    )


class ConvNet(nn.Module):
    """Pixels normalised to [-1, 1] (B, 3, H, W) -> token map (B, dim, H/s, W/s), H and W multiples of 4."""

    def __init__(self, config: ConvNetConfig):
        super().__init__()
        self.config = config
        c, skip = config.channels, config.skip_channels
        self.stem = conv_block(3, skip, stride=2)
        self.down = conv_block(skip, c, stride=2)
        self.context = nn.ModuleList(conv_block(c, c, dilation=d) for d in config.dilations)
        joined = c + (skip if config.output_stride == 2 else 0)
        self.project = nn.Conv2d(joined, config.dim, 1)
        self.norm = nn.LayerNorm(config.dim)

    def forward(self, pixels: Tensor) -> Tensor:
        if pixels.shape[-1] % 4 or pixels.shape[-2] % 4:
            raise ValueError(f"the ssl network needs input sides that are multiples of 4, got {tuple(pixels.shape[-2:])}")
        half = self.stem(pixels)
        x = self.down(half)
        for block in self.context:
            x = x + block(x)
        if self.config.output_stride == 2:
            x = torch.cat([F.interpolate(x, size=half.shape[-2:], mode="bilinear", align_corners=False), half], dim=1)
        x = self.project(x)
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class SSLEncoder(Encoder):
    """A trained, frozen :class:`ConvNet` as an encoder: tokens in raster order."""

    def __init__(self, network: ConvNet, image_size: int):
        stride = network.config.output_stride
        if image_size % 4:
            raise ValueError(f"encoder.image_size={image_size} must be a multiple of 4 for the ssl encoder")
        super().__init__(network.config.dim, image_size, SYMMETRIC_MEAN, SYMMETRIC_STD)
        self.network = network.eval()
        self.patch_size = stride
        self.set_trainable([])

    def grid_size(self) -> tuple[int, int]:
        side = self.image_size // self.patch_size
        return side, side

    def architecture(self) -> dict:
        return {"network": asdict(self.network.config)}

    def encode(self, pixels: Tensor) -> Tensor:
        return self.network(pixels).flatten(2).transpose(1, 2)


@dataclass
class SSLEncoderConfig(EncoderConfig):
    """The ``ssl`` encoder: the frozen teacher of a self-distillation run.

    Attributes:
        path: the run's model directory (``slotlab train --preset ssl-scenes-tiny``); the
            method that builds the encoder loads it and hands the network over
            (``build_encoder(..., network=...)``).
        patch_size: checked against the trained network's output stride.
    """

    name: str = "ssl"
    path: str | None = None
    patch_size: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.trainable_blocks:
            raise ValueError("the ssl encoder is frozen (encoder.trainable_blocks must be 0): train it with its own preset")


def build_ssl_encoder(
    config: SSLEncoderConfig, architecture: dict | None = None, network: ConvNet | None = None
) -> SSLEncoder:
    """The ``ssl`` encoder: the teacher ``network`` the caller loaded from ``config.path``, or
    (``architecture``, as a checkpoint stores it) a network of that shape whose weights the
    caller loads."""
    if architecture is not None:
        network = ConvNet(from_dict(ConvNetConfig, architecture["network"], "stored ssl network"))
    elif network is None:
        raise ValueError(
            "the ssl encoder needs a trained network: set encoder.path to a self-distillation run's model "
            "directory (slotlab train --preset ssl-scenes-tiny --out DIR gives DIR/model); the method that "
            "builds the encoder loads it and passes it as network"
        )
    for field, value in (("dim", network.config.dim), ("patch_size", network.config.output_stride)):
        wanted = getattr(config, field)
        if wanted is not None and wanted != value:
            raise ValueError(f"encoder.{field}={wanted} but the ssl network at {config.path} has {value}: unset it or fix it")
    return SSLEncoder(network, config.image_size)
