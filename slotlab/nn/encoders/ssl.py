"""Small encoders for the built-in scenes, trained without labels.

The CPU presets' stand-ins for DINO: ``slotlab train --preset ssl-scenes-tiny`` trains a
:class:`ConvNet` by self-distillation (``slotlab.methods.self_distillation``; region contrast
trains the same net), ``--preset ssl-shapes-scenes-tiny`` a
:class:`~slotlab.nn.encoders.silhouettes.SilhouetteNet` by contrast of region silhouettes;
the presets read the frozen network as their encoder (``encoder: {name: ssl, path: runs/ssl/model}``).

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

from slotlab.config import bounded, from_dict
from slotlab.nn.encoders.base import SYMMETRIC_MEAN, SYMMETRIC_STD, Encoder, EncoderConfig
from slotlab.nn.encoders.blocks import GROUPS, conv_block
from slotlab.nn.encoders.pixel_features import (
    check_position_options,
    colour_fourier_features,
    position_fourier_features,
)
from slotlab.nn.encoders.shipped import resolve_network_path
from slotlab.nn.encoders.silhouettes import (
    REGION_MIN_PIXELS,
    REGION_THRESHOLD,
    SilhouetteNet,
    SilhouetteNetConfig,
    flat_regions,
    region_centroid_features,
)
from slotlab.ops.random import seeded_generator

OUTPUT_STRIDES = (2, 4)
#: How a token's colour features are taken from its cell: the Fourier features of the cell's
#: mean colour, or each pixel's Fourier features averaged over the cell (as the patch encoder).
COLOUR_POOLINGS = ("colour", "features")


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


#: The label-free networks an ``ssl`` encoder reads, by the name its checkpoint stores.
NETWORKS: dict[str, tuple[type[nn.Module], type]] = {
    "conv": (ConvNet, ConvNetConfig),
    "silhouettes": (SilhouetteNet, SilhouetteNetConfig),
}


def network_kind(network: nn.Module) -> str:
    for kind, (network_class, _) in NETWORKS.items():
        if isinstance(network, network_class):
            return kind
    raise TypeError(f"the ssl encoder reads a {' or '.join(c.__name__ for c, _ in NETWORKS.values())}, "
                    f"got {type(network).__name__}")


def network_architecture(network: nn.Module) -> dict:
    """The shape of a label-free network as checkpoints and network directories store it."""
    return {"network": asdict(network.config), "network_kind": network_kind(network)}


def network_from_architecture(architecture: dict, where: str = "stored ssl network") -> nn.Module:
    """A network of the stored shape (:func:`network_architecture`; records written before
    silhouette networks existed name no kind and describe a conv net), weights not loaded."""
    kind = architecture.get("network_kind", "conv")
    if kind not in NETWORKS:
        raise ValueError(f"{where}: network kind {kind!r} is unknown: choose one of {', '.join(NETWORKS)}")
    network_class, config_class = NETWORKS[kind]
    return network_class(from_dict(config_class, architecture["network"], where))


def check_token_options(network_scale: float, colour_pooling: str) -> None:
    """Validate the ssl encoder's token options (config and encoder alike)."""
    if not network_scale > 0:
        raise ValueError(f"encoder.network_scale={network_scale} must be > 0")
    if colour_pooling not in COLOUR_POOLINGS:
        raise ValueError(f"encoder.colour_pooling={colour_pooling!r}: choose one of {COLOUR_POOLINGS}")


class SSLEncoder(Encoder):
    """A trained, frozen label-free network (:data:`NETWORKS`) as an encoder: tokens in raster order.

    Tokens lie on the ``image_size / patch_size`` grid (the network's map is resized to it
    when ``patch_size`` is finer than the network's stride, averaged when coarser). With ``colour_frequencies`` set,
    each token also carries the mean colour of its cell and that many random Fourier
    features of it (as the patch encoder's): the network is trained to ignore colour, while
    on the scenes colour is what tells two objects of one class apart. ``colour_pooling``
    (:data:`COLOUR_POOLINGS`) says whether those features are of the cell's mean colour or
    the mean of its pixels' features; ``network_scale`` multiplies the network's dims (not
    the colour dims) in the tokens. ``position_frequencies`` appends the mean over the cell of
    each pixel's Fourier position features (the patch encoder's), times ``position_scale``.
    ``region_frequencies`` appends the mean over the cell of each pixel's Fourier features of
    its flat-colour region's centroid (:func:`region_centroid_features`), times ``region_scale``.
    """

    def __init__(self, network: nn.Module, image_size: int, patch_size: int | None = None,
                 colour_frequencies: int | None = None, colour_sigma: float = 1.0, seed: int = 0,
                 network_scale: float = 1.0, colour_pooling: str = "colour",
                 position_frequencies: int = 0, position_scale: float = 1.0,
                 region_frequencies: int = 0, region_scale: float = 1.0):
        self.network_kind = network_kind(network)
        stride = network.config.output_stride
        patch_size = stride if patch_size is None else patch_size
        if image_size % 4 or image_size % patch_size:
            raise ValueError(f"encoder.image_size={image_size} must be a multiple of 4 and of encoder.patch_size={patch_size}")
        if stride % patch_size and patch_size % stride:
            raise ValueError(f"encoder.patch_size={patch_size} must divide the ssl network's stride {stride} "
                             f"or be a multiple of it")
        check_token_options(network_scale, colour_pooling)
        check_position_options(position_frequencies, position_scale)
        check_position_options(region_frequencies, region_scale, kind="region")
        colour_dim = 0 if colour_frequencies is None else 3 + 2 * colour_frequencies
        position_dim = 4 * (position_frequencies + region_frequencies)
        super().__init__(network.config.dim + colour_dim + position_dim, image_size, SYMMETRIC_MEAN, SYMMETRIC_STD)
        self.network = network.eval()
        self.patch_size = patch_size
        self.network_scale = network_scale
        self.colour_pooling = colour_pooling
        self.with_colour = colour_frequencies is not None
        self.position_frequencies = position_frequencies
        self.position_scale = float(position_scale)
        self.region_frequencies = region_frequencies
        self.region_scale = float(region_scale)
        frequencies = torch.randn(colour_frequencies or 0, 3, generator=seeded_generator(seed)) * colour_sigma
        self.register_buffer("colour_frequencies", frequencies)
        self.set_trainable([])

    def grid_size(self) -> tuple[int, int]:
        side = self.image_size // self.patch_size
        return side, side

    def architecture(self) -> dict:
        return network_architecture(self.network)

    def encode(self, pixels: Tensor) -> Tensor:
        grid = self.grid_size()
        regions = self.find_regions(pixels) if self.region_frequencies else None
        if regions is not None and isinstance(self.network, SilhouetteNet):  # found once for both
            tokens = self.network(pixels, regions) * self.network_scale
        else:
            tokens = self.network(pixels) * self.network_scale
        if tuple(tokens.shape[-2:]) != grid:
            stride = self.network.config.output_stride
            if self.patch_size > stride:  # a cell covers several of the network's: their mean
                tokens = F.avg_pool2d(tokens, self.patch_size // stride)
            else:
                tokens = F.interpolate(tokens, size=grid, mode="bilinear", align_corners=False)
        if self.with_colour:
            tokens = torch.cat([tokens, self.colour_features(pixels)], dim=1)
        if self.position_frequencies:
            tokens = torch.cat([tokens, self.position_features(pixels)], dim=1)
        if regions is not None:
            tokens = torch.cat([tokens, self.region_features(regions).to(pixels.dtype)], dim=1)
        return tokens.flatten(2).transpose(1, 2)

    def find_regions(self, pixels: Tensor) -> Tensor:
        """Flat-colour region ids (B, H, W) of pixels normalised to [-1, 1]: the silhouette
        network's own (its threshold), else :func:`flat_regions` at its defaults."""
        if isinstance(self.network, SilhouetteNet):
            return self.network.regions(pixels)
        return flat_regions((pixels + 1) / 2, REGION_THRESHOLD, REGION_MIN_PIXELS)

    def region_features(self, regions: Tensor) -> Tensor:
        """(B, 4F, grid): each cell's mean of its pixels' region-centroid features, scaled."""
        features = region_centroid_features(regions, self.region_frequencies)
        return F.avg_pool2d(features, self.patch_size) * self.region_scale

    def position_features(self, pixels: Tensor) -> Tensor:
        """(B, 4F, grid): each cell's mean of its pixels' Fourier position features, scaled."""
        b, _, h, w = pixels.shape
        position = position_fourier_features(h, w, self.position_frequencies, pixels.device).to(pixels.dtype)
        position = F.avg_pool2d(position[None], self.patch_size) * self.position_scale
        return position.expand(b, -1, -1, -1)

    def colour_features(self, pixels: Tensor) -> Tensor:
        """(B, 3 + 2F, grid): each cell's mean colour and its Fourier colour features."""
        colours = F.avg_pool2d(pixels, self.patch_size)
        if self.colour_pooling == "features":
            fourier = F.avg_pool2d(colour_fourier_features(pixels, self.colour_frequencies), self.patch_size)
        else:
            fourier = colour_fourier_features(colours, self.colour_frequencies)
        return torch.cat([colours, fourier], dim=1)


@dataclass
class SSLEncoderConfig(EncoderConfig):
    """The ``ssl`` encoder: the frozen network of a label-free run (the teacher of a
    self-distillation run, the network of a region- or silhouette-contrast run).

    Attributes:
        path: the run's model directory (``slotlab train --preset ssl-shapes-scenes-tiny``), a
            network directory, or ``shipped:NAME``, a network that ships with slotlab
            (:mod:`slotlab.nn.encoders.shipped`; checked here, so a wrong name fails when the
            config is read); the method that builds the encoder loads it and hands the
            network over (``build_encoder(..., network=...)``).
        patch_size: token cell side in pixels; default the network's stride, which it must
            divide (a finer grid resizes the network's map) or be a multiple of (a coarser
            grid averages it).
        colour_frequencies: null (tokens are the network's alone) or ``k >= 0``: each token
            also gets its cell's mean colour and ``k`` random Fourier colour features
            (``dim`` then grows by ``3 + 2 k``).
        colour_sigma: std of those frequencies.
        colour_pooling: ``colour`` (the Fourier features of the cell's mean colour) or
            ``features`` (each pixel's Fourier features averaged over the cell, as the patch
            encoder takes them). A cell on the border of two objects gets, with ``colour``,
            the features of a blended colour that neither object has; with ``features``, a
            mixture of both objects' features (on the scenes it helped DINOSAUR's slot
            attention only at short budgets; docs/ssl-encoder.md).
        network_scale: factor on the network's dims in the tokens (> 0; the colour dims keep
            theirs). A slot method normalises each token over all its dims (LayerNorm) and
            reconstructs all of them, so this sets how much the network's features weigh
            against the colour features in grouping and in the loss. A converged linear
            probe reads them at any scale; slotlab's probe (unstandardised, at most 100
            epochs) reads less of them at smaller scales. On the scenes 0.5 lifted DINOSAUR's
            slot attention with the 800-step silhouette network, not with a 400-step one
            (docs/ssl-encoder.md).
        position_frequencies: number of Fourier frequencies of each pixel's (x, y) position,
            averaged over the token's cell and appended (``dim`` grows by ``4 k``); default 0.
            On the scenes DINOSAUR's decoder masks separate objects only when the
            reconstruction target carries position (docs/ssl-encoder.md).
        position_scale: amplitude of those features (default 1.0).
        region_frequencies: number of Fourier frequencies of the centroid of each pixel's
            flat-colour region (found in the pixels, no label), averaged over the token's cell
            and appended after the position features (``dim`` grows by ``4 k``); default 0.
            Every token of one region carries the same place, so two separated objects of one
            colour and class differ. On the scenes, 4 frequencies lifted `dinosaur-tiny`'s
            decoder masks from 0.395 to 0.445 mIoU_i over three seeds, and not GLASS
            (docs/ssl-encoder.md, "What bounds GLASS's lead here").
        region_scale: amplitude of those features (default 1.0).
    """

    name: str = "ssl"
    path: str | None = None
    patch_size: int | None = None
    colour_frequencies: int | None = None
    colour_sigma: float = 1.0
    network_scale: float = 1.0
    colour_pooling: str = "colour"
    position_frequencies: int = bounded(0, low=0)
    position_scale: float = bounded(1.0, low=0, low_open=True)
    region_frequencies: int = bounded(0, low=0)
    region_scale: float = bounded(1.0, low=0, low_open=True)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_token_options(self.network_scale, self.colour_pooling)
        check_position_options(self.position_frequencies, self.position_scale)
        check_position_options(self.region_frequencies, self.region_scale, kind="region")
        if self.colour_frequencies is not None and self.colour_frequencies < 0:
            raise ValueError(f"encoder.colour_frequencies={self.colour_frequencies} must be >= 0 (or null: no colour)")
        if self.patch_size is not None and self.patch_size < 1:
            raise ValueError(f"encoder.patch_size={self.patch_size} must be >= 1")
        if self.path is not None:
            resolve_network_path(self.path)
        if self.trainable_blocks:
            raise ValueError("the ssl encoder is frozen (encoder.trainable_blocks must be 0): train it with its own preset")


def build_ssl_encoder(
    config: SSLEncoderConfig, architecture: dict | None = None, network: nn.Module | None = None
) -> SSLEncoder:
    """The ``ssl`` encoder: the ``network`` the caller loaded from ``config.path``, or
    (``architecture``, as a checkpoint stores it; checkpoints written before silhouette
    networks existed name no kind and hold a conv net) a network of that shape whose weights
    the caller loads."""
    if architecture is not None:
        network = network_from_architecture(architecture)
    elif network is None:
        raise ValueError(
            "the ssl encoder needs a trained network: set encoder.path to a label-free run's model "
            "directory (slotlab train --preset ssl-shapes-scenes-tiny --out DIR gives DIR/model); the method that "
            "builds the encoder loads it and passes it as network"
        )
    encoder = SSLEncoder(network, config.image_size, config.patch_size, config.colour_frequencies,
                         config.colour_sigma, config.seed, config.network_scale,
                         config.colour_pooling, config.position_frequencies, config.position_scale,
                         config.region_frequencies, config.region_scale)
    if config.dim is not None and config.dim != encoder.dim:
        raise ValueError(f"encoder.dim={config.dim} but the ssl network at {config.path} (with its colour and position features) "
                         f"gives {encoder.dim}: unset it or fix it")
    return encoder
