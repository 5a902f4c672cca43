"""Image encoders: images (B, 3, H, W) float in [0, 1] -> tokens (B, N, D) on a known grid.

Every encoder resizes its input to the configured square ``image_size`` (with
``slotlab.ops.resize.resize_image``), normalises it the way its weights expect and
returns ``N = h * w`` tokens in raster order, where ``(h, w) = encoder.grid_size()``.

Pretrained vision transformers (loaded with ``transformers`` from a local directory only):

- ``dinov2``: DINOv2 (``Dinov2Model``; a ``Dinov2WithRegistersModel`` directory works too).
  GLASS uses ViT-B/14 at 448 -> 32 x 32 x 768, final layer after the final LayerNorm,
  patch tokens only.
- ``dino``: DINO v1 (``ViTModel``). SPOT uses ViT-B/16 at 224 -> 14 x 14 x 768, output of
  the last block without the final LayerNorm.
- ``mae``: MAE (``ViTMAEModel``) with random masking disabled (mask ratio 0, tokens kept
  in raster order).

CPU encoders that need no download: ``patch`` (per-patch pixel features with a fixed
random, learned or no projection), ``cnn`` (a small conv net), ``cifar_resnet`` (the
classic CIFAR ResNet-20/56, real pretrained weights small enough for CPU experiments) and
``ssl`` (a small conv net trained on the scenes without labels, ``slotlab.nn.ssl_encoder``).

Encoders are frozen by default: no parameter requires grad and every frozen part stays in
eval mode even when a parent module calls ``.train()``. ``trainable_blocks = k`` fine-tunes
exactly the last ``k`` blocks (plus the final LayerNorm of a ViT whose output uses it).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slotlab.io.hub import TRANSFORMERS_FILES, resolve_pretrained
from slotlab.ops.random import fixed_randomness, seeded_generator
from slotlab.ops.resize import resize_image
from slotlab.nn.segmenter import SegmenterNetwork, SegmenterNetworkConfig

ENCODER_NAMES = ("dinov2", "dino", "mae", "patch", "cnn", "cifar_resnet", "ssl")
VIT_ENCODER_NAMES = ("dinov2", "dino", "mae")
PATCH_PROJECTIONS = ("random", "learned", "pixels")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The public CIFAR ResNet-20/56 weights were trained on inputs normalised with the
# ImageNet statistics above (their training script says so), not the CIFAR-10 ones.
CIFAR_RESNET_MEAN = IMAGENET_MEAN
CIFAR_RESNET_STD = IMAGENET_STD
# The patch and cnn encoders map [0, 1] to [-1, 1].
SYMMETRIC_MEAN = (0.5, 0.5, 0.5)
SYMMETRIC_STD = (0.5, 0.5, 0.5)

# Output after the final LayerNorm? Defaults follow the authors' code of the paper that
# uses each model: GLASS takes DINOv2's normed output; SPOT (and DINOSAUR's feature
# extractor) take DINO's last block output without the norm. No paper here uses MAE;
# it follows the same block-output convention as DINO.
DEFAULT_FINAL_NORM = {"dinov2": True, "dino": False, "mae": False}

CPU_DEFAULT_PATCH_SIZE = 4
CPU_DEFAULT_DIM = 64
CNN_DEFAULT_LAYERS = 4
DEFAULT_COLOUR_SIGMA = 1.0
CIFAR_RESNET_DEFAULT_LAYER = 3
CIFAR_RESNET_STAGE_CHANNELS = (16, 32, 64)


@dataclass
class EncoderConfig:
    """Which encoder to build and how.

    Fields marked "only X" must stay ``None`` for other encoders (a clear error says so),
    so a config never carries a setting that silently does nothing.

    Attributes:
        name: one of ``ENCODER_NAMES``.
        path: ViTs: a local directory in the Hugging Face layout (``config.json`` plus
            weights). ``cifar_resnet``: the weight file. ``None`` with ``tiny=True`` builds
            a random twin. ``ssl``: a ``self_distillation`` run's model directory (from
            ``slotlab train --preset ssl-scenes-tiny``). ``patch``/``cnn`` take no weights.
        tiny: build a small random-config twin of the same class (ViTs: 3 layers, hidden
            32, 2 heads; ``cifar_resnet``: one block per stage), offline, for tests. The
            ``patch`` and ``cnn`` encoders are already small and ignore it.
        image_size: square encoder input size; inputs of another size are resized.
        trainable_blocks: 0 = frozen; ``k`` = fine-tune the last ``k`` blocks.
        final_norm: only ViTs. Take the output after the final LayerNorm; ``None`` = the
            per-model default in ``DEFAULT_FINAL_NORM``.
        patch_size: ``patch``/``cnn``: patch size / total stride (default 4). ``ssl``:
            checked against the trained network's output stride. ViT tiny
            twins: patch size of the twin (default: the real model's). Loaded ViTs:
            checked against the model.
        dim: token dim. ``patch``/``cnn``: default 64. Others: checked against the model.
        projection: only ``patch``: ``"random"`` (fixed Gaussian projection, default),
            ``"learned"`` (trainable linear) or ``"pixels"`` (raw features, no projection).
        colour_frequencies: only ``patch``: number of fixed random Fourier frequencies of
            the pixel colour appended to each pixel (sin and cos each); default 0.
        colour_sigma: only ``patch``: std of those frequencies (default 1.0).
        position_frequencies: only ``patch``: number of fixed Fourier frequencies of each
            pixel's (x, y) position appended per pixel (sin and cos of each coordinate);
            default 0. Gives the tokens the position information ViT features carry.
        edge_scales: only ``patch``: Gaussian scales (pixels) of edge-context features
            appended per pixel (see :func:`edge_context_features`); default none. They tell
            a pixel where the nearest colour edges lie, i.e. where it sits inside its object,
            part-relative information ViT features carry and colour alone does not.
        structure_scales: only ``patch``: Gaussian scales (pixels) of structure-tensor
            features appended per pixel (see :func:`structure_tensor_features`); default
            none. They say whether a pixel lies near a straight edge, a corner or a tight
            curve: local shape, which ViT features carry and colour alone does not.
        semantic_model: only ``patch``: a trained ``segmenter`` checkpoint directory (from
            ``slotlab train --preset segmenter-scenes-tiny``); its per-pixel class
            probabilities, times ``semantic_gain``, are appended to each pixel's features.
            They give the tokens an object's class, the same over the whole object, which
            DINOv2 features carry and colour does not. The network is frozen and stored in
            the model's checkpoint, so a trained model no longer needs the directory.
        semantic_gain: only ``patch``, with ``semantic_model``: scale of those probabilities
            against the colour features (default 1.0). Larger gains make slot attention group
            by class more than by colour, merging instances of a class.
        cnn_layers: only ``cnn``: number of 3x3 conv layers (default 4).
        layer: only ``cifar_resnet``: output stage 1, 2 or 3 (default 3).
        seed: seed of every random weight (random projections, random CNN, tiny twins).
    """

    name: str = "patch"
    path: str | None = None
    tiny: bool = False
    image_size: int = 224
    trainable_blocks: int = 0
    final_norm: bool | None = None
    patch_size: int | None = None
    dim: int | None = None
    projection: str | None = None
    colour_frequencies: int | None = None
    colour_sigma: float | None = None
    position_frequencies: int | None = None
    edge_scales: tuple[float, ...] | None = None
    structure_scales: tuple[float, ...] | None = None
    semantic_model: str | None = None
    semantic_gain: float | None = None
    cnn_layers: int | None = None
    layer: int | None = None
    seed: int = 0


# Encoder-specific fields and the encoders that read them; the rest must stay None.
_SPECIFIC_FIELDS = {
    "final_norm": VIT_ENCODER_NAMES,
    "patch_size": ("patch", "cnn", "ssl", *VIT_ENCODER_NAMES),
    "dim": ENCODER_NAMES,
    "projection": ("patch",),
    "colour_frequencies": ("patch",),
    "colour_sigma": ("patch",),
    "position_frequencies": ("patch",),
    "edge_scales": ("patch",),
    "structure_scales": ("patch",),
    "semantic_model": ("patch",),
    "semantic_gain": ("patch",),
    "cnn_layers": ("cnn",),
    "layer": ("cifar_resnet",),
}


class Encoder(nn.Module):
    """Base of every encoder: images (B, 3, H, W) in [0, 1] -> tokens (B, h*w, dim).

    Subclasses implement ``encode`` (normalised pixels at ``image_size`` -> tokens) and
    ``grid_size``, and call ``set_trainable`` once their modules exist.
    """

    def __init__(self, dim: int, image_size: int, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.dim = dim
        self.image_size = image_size
        self.register_buffer("pixel_mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self._trainable: list[nn.Module] = []

    def grid_size(self) -> tuple[int, int]:
        """(h, w) of the token grid for the configured ``image_size``."""
        raise NotImplementedError

    def architecture(self) -> dict | None:
        """The network's shape as JSON, for encoders whose network comes from weight files.

        A checkpoint stores it next to the weights, so :func:`build_encoder` rebuilds the
        network from it without the files. ``None``: the config alone rebuilds the encoder.
        """
        return None

    @property
    def num_tokens(self) -> int:
        h, w = self.grid_size()
        return h * w

    @property
    def trainable_modules(self) -> list[nn.Module]:
        """The modules being fine-tuned (empty when frozen)."""
        return list(self._trainable)

    def encode(self, pixels: Tensor) -> Tensor:
        """Normalised pixels (B, 3, image_size, image_size) -> tokens (B, N, dim)."""
        raise NotImplementedError

    def preprocess(self, images: Tensor) -> Tensor:
        """Check, resize to ``image_size`` and normalise images in [0, 1]."""
        if images.ndim != 4 or images.shape[1] != 3 or not images.is_floating_point():
            raise ValueError(
                f"encoder input must be float images (B, 3, H, W) in [0, 1]; got "
                f"{tuple(images.shape)} {images.dtype}"
            )
        size = (self.image_size, self.image_size)
        images = resize_image(images, size)
        return (images - self.pixel_mean) / self.pixel_std

    def forward(self, images: Tensor) -> Tensor:
        tokens = self.encode(self.preprocess(images))
        expected = (images.shape[0], self.num_tokens, self.dim)
        if tuple(tokens.shape) != expected:
            raise RuntimeError(
                f"{type(self).__name__} produced tokens {tuple(tokens.shape)}, expected {expected}"
            )
        return tokens

    def set_trainable(self, modules: list[nn.Module]) -> None:
        """Freeze everything except ``modules`` and set the train/eval modes accordingly."""
        self.requires_grad_(False)
        for module in modules:
            module.requires_grad_(True)
        self._trainable = list(modules)
        self.train(self.training)

    def train(self, mode: bool = True) -> Encoder:
        """Only the trainable modules follow ``mode``; frozen parts always stay in eval."""
        super().train(False)
        for module in self._trainable:
            module.train(mode)
        self.training = mode and bool(self._trainable)
        return self


def last_blocks(blocks: nn.ModuleList | list[nn.Module], count: int, encoder: str) -> list[nn.Module]:
    """The last ``count`` of ``blocks``; a clear error when there are fewer."""
    if not 0 <= count <= len(blocks):
        raise ValueError(
            f"encoder.trainable_blocks={count} but the {encoder} encoder has {len(blocks)} "
            f"blocks: use 0 (frozen) to {len(blocks)}"
        )
    return list(blocks)[len(blocks) - count :]


# --------------------------------------------------------------------------------------
# CPU encoders
# --------------------------------------------------------------------------------------


def colour_fourier_features(pixels: Tensor, frequencies: Tensor) -> Tensor:
    """Random Fourier features of each pixel's colour: (B, 3, H, W) -> (B, 2F, H, W).

    ``[sin(2 pi B c), cos(2 pi B c)]`` for a fixed frequency matrix ``B`` (F, 3): a fixed
    non-linear colour expansion that makes colour clusters easier to separate linearly.
    """
    phase = 2 * math.pi * torch.einsum("fc,bchw->bfhw", frequencies, pixels)
    return torch.cat([phase.sin(), phase.cos()], dim=1)


def position_fourier_features(height: int, width: int, frequencies: int, device=None) -> Tensor:
    """(4F, H, W): sin and cos of pi 2^k x and pi 2^k y, k < F, with x, y in [0, 1]."""
    ys = torch.linspace(0.0, 1.0, height, device=device)
    xs = torch.linspace(0.0, 1.0, width, device=device)
    y, x = torch.meshgrid(ys, xs, indexing="ij")
    scales = math.pi * 2.0 ** torch.arange(frequencies, device=device)
    phase = torch.cat([x[None] * scales[:, None, None], y[None] * scales[:, None, None]])
    return torch.cat([phase.sin(), phase.cos()])


def gaussian_blur(images: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of (B, C, H, W), reflecting at the borders (radius 3 sigma)."""
    radius = max(1, math.ceil(3 * sigma))
    offsets = torch.arange(-radius, radius + 1, device=images.device, dtype=images.dtype)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    channels = images.shape[1]
    pad = (radius, radius, radius, radius)
    x = F.pad(images, pad, mode="reflect" if min(images.shape[-2:]) > radius else "replicate")
    x = F.conv2d(x, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    return F.conv2d(x, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)


def image_gradients(images: Tensor) -> tuple[Tensor, Tensor]:
    """Central differences (d/dx, d/dy) of (B, C, H, W), replicated at the borders."""
    x = F.pad(images, (1, 1, 1, 1), mode="replicate")
    return (x[..., 1:-1, 2:] - x[..., 1:-1, :-2]) / 2, (x[..., 2:, 1:-1] - x[..., :-2, 1:-1]) / 2


def edge_context_features(pixels: Tensor, scales: tuple[float, ...]) -> Tensor:
    """Where the colour edges around each pixel lie: (B, 3, H, W) -> (B, 3 S, H, W).

    The colour edge strength (norm of the RGB gradient) is blurred at each scale ``s``; per
    scale a pixel gets the blurred strength and its gradient, scaled by ``s``. The gradient
    points to the nearby edges, so inside an object it says which side of the object the
    pixel is on, at the scale of the blur. Fixed filters: no weights.
    """
    gx, gy = image_gradients(pixels)
    edges = (gx.pow(2) + gy.pow(2)).sum(1, keepdim=True).sqrt()
    features = []
    for scale in scales:
        blurred = gaussian_blur(edges, scale)
        bx, by = image_gradients(blurred)
        features += [blurred * scale, bx * scale**2, by * scale**2]
    return torch.cat(features, dim=1)


#: Gain of the structure-tensor features: their spread on the scenes (std 0.07-0.24 per
#: channel) times 4 comes near that of the colour Fourier features (0.71), so the random
#: projection does not drown them.
STRUCTURE_FEATURE_GAIN = 4.0


def structure_tensor_features(pixels: Tensor, scales: tuple[float, ...]) -> Tensor:
    """Local edge geometry around each pixel: (B, 3, H, W) -> (B, 2 S, H, W).

    The colour structure tensor (outer products of the RGB gradients, summed over channels)
    is blurred at each scale ``s``; per scale a pixel gets the square roots of its two
    eigenvalues, times ``STRUCTURE_FEATURE_GAIN``. Both are 0 on flat colour; near a straight
    edge only the larger one is large; near a corner or a tight curve both are. Averaged
    over an object they describe its outline (how much straight edge, how many corners)
    whatever its rotation. Fixed filters: no weights.
    """
    gx, gy = image_gradients(pixels)
    products = [(gx * gx).sum(1, keepdim=True), (gx * gy).sum(1, keepdim=True), (gy * gy).sum(1, keepdim=True)]
    tensor = torch.cat(products, dim=1)
    features = []
    for scale in scales:
        jxx, jxy, jyy = gaussian_blur(tensor, scale).unbind(1)
        half_trace = (jxx + jyy) / 2
        spread = ((jxx - jyy).pow(2) / 4 + jxy.pow(2)).sqrt()
        features += [(half_trace + spread).clamp_min(0).sqrt(), (half_trace - spread).clamp_min(0).sqrt()]
    return STRUCTURE_FEATURE_GAIN * torch.stack(features, dim=1)


def image_to_patches(pixels: Tensor, patch_size: int) -> Tensor:
    """(B, C, H, W) -> (B, N, C * p * p), non-overlapping patches in raster order."""
    patches = F.unfold(pixels, kernel_size=patch_size, stride=patch_size)
    return patches.transpose(1, 2)


class PatchEncoder(Encoder):
    """Non-overlapping patches -> per-patch features, with a fixed random, learned or no projection.

    Per pixel: the normalised colour (3 values) plus ``colour_frequencies`` random Fourier
    colour features (sin and cos each); per patch: those values of its ``p * p`` pixels,
    then the projection. Frozen and random by default, so it needs no weights.
    """

    def __init__(
        self,
        image_size: int,
        patch_size: int,
        dim: int | None,
        projection: str,
        colour_frequencies: int,
        colour_sigma: float,
        seed: int,
        position_frequencies: int = 0,
        edge_scales: tuple[float, ...] = (),
        structure_scales: tuple[float, ...] = (),
        semantic_network: SegmenterNetwork | None = None,
        semantic_gain: float = 1.0,
    ):
        if projection not in PATCH_PROJECTIONS:
            raise ValueError(f"encoder.projection={projection!r}: choose one of {PATCH_PROJECTIONS}")
        if colour_frequencies < 0:
            raise ValueError(f"encoder.colour_frequencies={colour_frequencies} must be >= 0")
        if position_frequencies < 0:
            raise ValueError(f"encoder.position_frequencies={position_frequencies} must be >= 0")
        if any(scale <= 0 for scale in edge_scales):
            raise ValueError(f"encoder.edge_scales={list(edge_scales)} must all be > 0")
        if any(scale <= 0 for scale in structure_scales):
            raise ValueError(f"encoder.structure_scales={list(structure_scales)} must all be > 0")
        per_pixel = 3 + 2 * colour_frequencies + 4 * position_frequencies
        per_pixel += 3 * len(edge_scales) + 2 * len(structure_scales)
        if semantic_network is not None:
            per_pixel += semantic_network.config.num_classes
        in_dim = per_pixel * patch_size**2
        if projection == "pixels":
            if dim is not None and dim != in_dim:
                raise ValueError(
                    f"encoder.dim={dim} but projection='pixels' gives (3 + 2 * colour_frequencies + 4 * position_frequencies"
                    " + 3 * len(edge_scales) + 2 * len(structure_scales) + semantic classes)"
                    f" * patch_size^2 = {in_dim} features: leave encoder.dim unset"
                )
            dim = in_dim
        dim = CPU_DEFAULT_DIM if dim is None else dim
        super().__init__(dim, image_size, SYMMETRIC_MEAN, SYMMETRIC_STD)
        self.patch_size = patch_size
        self.projection_kind = projection
        generator = seeded_generator(seed)
        frequencies = torch.randn(colour_frequencies, 3, generator=generator) * colour_sigma
        self.register_buffer("colour_frequencies", frequencies)
        self.position_frequencies = position_frequencies
        self.edge_scales = tuple(float(scale) for scale in edge_scales)
        self.structure_scales = tuple(float(scale) for scale in structure_scales)
        self.semantic_network = semantic_network
        self.semantic_gain = float(semantic_gain)
        self.projection: nn.Module | None = None
        if projection == "random":
            weight = torch.randn(in_dim, dim, generator=generator) / math.sqrt(in_dim)
            self.register_buffer("random_projection", weight)
        elif projection == "learned":
            self.projection = nn.Linear(in_dim, dim)
        self.set_trainable([self.projection] if self.projection is not None else [])

    def grid_size(self) -> tuple[int, int]:
        side = self.image_size // self.patch_size
        return side, side

    def architecture(self) -> dict | None:
        if self.semantic_network is None:
            return None
        return {"semantic_network": asdict(self.semantic_network.config)}

    def encode(self, pixels: Tensor) -> Tensor:
        colours = pixels
        if self.colour_frequencies.shape[0] > 0:
            pixels = torch.cat([pixels, colour_fourier_features(colours, self.colour_frequencies)], dim=1)
        if self.edge_scales:
            pixels = torch.cat([pixels, edge_context_features(colours, self.edge_scales)], dim=1)
        if self.structure_scales:
            pixels = torch.cat([pixels, structure_tensor_features(colours, self.structure_scales)], dim=1)
        if self.semantic_network is not None:
            probabilities = self.semantic_network(colours).float().softmax(dim=1).to(pixels.dtype)
            pixels = torch.cat([pixels, self.semantic_gain * probabilities], dim=1)
        if self.position_frequencies:
            b, _, h, w = pixels.shape
            position = position_fourier_features(h, w, self.position_frequencies, pixels.device).to(pixels.dtype)
            pixels = torch.cat([pixels, position.expand(b, -1, -1, -1)], dim=1)
        patches = image_to_patches(pixels, self.patch_size)
        if self.projection_kind == "random":
            return patches @ self.random_projection
        if self.projection is not None:
            return self.projection(patches)
        return patches


def conv_strides(num_layers: int, total_stride: int) -> list[int]:
    """Strides of ``num_layers`` convs whose product is ``total_stride`` (a power of 2)."""
    downsamplings = int(math.log2(total_stride))
    if 2**downsamplings != total_stride or downsamplings > num_layers:
        raise ValueError(
            f"encoder.patch_size={total_stride} for the cnn encoder must be a power of 2 "
            f"reachable with encoder.cnn_layers={num_layers} stride-2 convs"
        )
    return [2] * downsamplings + [1] * (num_layers - downsamplings)


class CNNEncoder(Encoder):
    """A small conv net: ``cnn_layers`` 3x3 convs (stride 2 first, to reach the grid), ReLU between.

    The last conv has no ReLU so tokens are not clipped at zero. Random and frozen by
    default; ``trainable_blocks`` counts conv layers from the end.
    """

    def __init__(self, image_size: int, patch_size: int, dim: int, num_layers: int, trainable_blocks: int, seed: int):
        super().__init__(dim, image_size, SYMMETRIC_MEAN, SYMMETRIC_STD)
        self.patch_size = patch_size
        strides = conv_strides(num_layers, patch_size)
        with fixed_randomness(seed):
            self.convs = nn.ModuleList(
                nn.Conv2d(3 if i == 0 else dim, dim, kernel_size=3, stride=s, padding=1)
                for i, s in enumerate(strides)
            )
        self.set_trainable(last_blocks(self.convs, trainable_blocks, "cnn"))

    def grid_size(self) -> tuple[int, int]:
        side = self.image_size // self.patch_size
        return side, side

    def encode(self, pixels: Tensor) -> Tensor:
        x = pixels
        for i, conv in enumerate(self.convs):
            x = conv(x)
            if i < len(self.convs) - 1:
                x = F.relu(x)
        return x.flatten(2).transpose(1, 2)


class CifarBasicBlock(nn.Module):
    """BasicBlock of the CIFAR ResNet: two 3x3 conv-BN, ReLU, option-A shortcut.

    Option A: when the block downsamples, the shortcut takes every second pixel and pads
    the new channels with zeros (no parameters).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.stride = stride
        self.extra_channels = out_channels - in_channels

    def shortcut(self, x: Tensor) -> Tensor:
        if self.stride == 1 and self.extra_channels == 0:
            return x
        x = x[:, :, :: self.stride, :: self.stride]
        pad = self.extra_channels // 2
        return F.pad(x, (0, 0, 0, 0, pad, self.extra_channels - pad))

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """The classic 3-stage CIFAR ResNet (16/32/64 channels, depth 6n+2, option-A shortcuts).

    Parameter names match the public CIFAR-10 checkpoints (``conv1``, ``bn1``,
    ``layer1..3``, ``linear``) so they load strictly.
    """

    def __init__(self, blocks_per_stage: tuple[int, int, int], num_classes: int = 10):
        super().__init__()
        c1, c2, c3 = CIFAR_RESNET_STAGE_CHANNELS
        self.conv1 = nn.Conv2d(3, c1, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c1)
        self.layer1 = self._stage(c1, c1, blocks_per_stage[0], stride=1)
        self.layer2 = self._stage(c1, c2, blocks_per_stage[1], stride=2)
        self.layer3 = self._stage(c2, c3, blocks_per_stage[2], stride=2)
        self.linear = nn.Linear(c3, num_classes)

    @staticmethod
    def _stage(in_channels: int, out_channels: int, num_blocks: int, stride: int) -> nn.Sequential:
        blocks = [CifarBasicBlock(in_channels, out_channels, stride)]
        blocks += [CifarBasicBlock(out_channels, out_channels, 1) for _ in range(num_blocks - 1)]
        return nn.Sequential(*blocks)

    @property
    def stages(self) -> tuple[nn.Sequential, nn.Sequential, nn.Sequential]:
        return self.layer1, self.layer2, self.layer3

    def features(self, x: Tensor, stage: int) -> Tensor:
        """Normalised images -> feature map (B, C, h, w) after ``stage`` (1, 2 or 3)."""
        x = F.relu(self.bn1(self.conv1(x)))
        for layer in self.stages[:stage]:
            x = layer(x)
        return x

    def forward(self, x: Tensor) -> Tensor:
        """Normalised images -> class logits (B, num_classes)."""
        return self.linear(self.features(x, 3).mean(dim=(2, 3)))


def cifar_resnet_blocks_per_stage(state_dict: dict[str, Tensor]) -> tuple[int, int, int]:
    """Number of BasicBlocks per stage, read off the tensor names ``layerS.I.*``."""
    counts = []
    for stage in (1, 2, 3):
        prefix = f"layer{stage}."
        indices = {int(key[len(prefix) :].split(".")[0]) for key in state_dict if key.startswith(prefix)}
        counts.append(len(indices))
    return counts[0], counts[1], counts[2]


def load_cifar_resnet(path: str | Path) -> CifarResNet:
    """Build the CIFAR ResNet described by a checkpoint file and load it strictly.

    The file is a dict with ``state_dict`` (keys prefixed ``module.`` by DataParallel) or a
    bare state dict; it is read with ``weights_only=True`` onto the CPU.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"encoder.path={str(path)!r}: no CIFAR ResNet weight file there. Pass the path of a "
            f"resnet20/resnet56 CIFAR-10 checkpoint (a dict with 'state_dict'), or tiny=True "
            f"for a random twin"
        )
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    state_dict = checkpoint.get("state_dict", checkpoint)
    state_dict = {key.removeprefix("module."): value for key, value in state_dict.items()}
    blocks = cifar_resnet_blocks_per_stage(state_dict)
    if min(blocks) == 0 or "linear.weight" not in state_dict:
        raise ValueError(f"{path}: not a CIFAR ResNet checkpoint (stages {blocks}, keys {list(state_dict)[:4]}...)")
    network = CifarResNet(blocks, num_classes=state_dict["linear.weight"].shape[0])
    network.load_state_dict(state_dict, strict=True)
    return network


class CifarResNetEncoder(Encoder):
    """Features of a CIFAR ResNet after stage ``layer`` as tokens.

    Stage strides are 1, 2 and 4 and channels 16, 32 and 64, so a 64 x 64 input gives
    64 x 64 x 16, 32 x 32 x 32 or 16 x 16 x 64 tokens (a 32 x 32 input: 16 x 16 x 32 from
    stage 2, 8 x 8 x 64 from stage 3). ``trainable_blocks`` counts BasicBlocks of the used
    stages from the end; BatchNorm statistics of frozen blocks stay fixed (eval mode).
    """

    def __init__(self, network: CifarResNet, image_size: int, layer: int, trainable_blocks: int):
        if layer not in (1, 2, 3):
            raise ValueError(f"encoder.layer={layer}: the CIFAR ResNet has stages 1, 2 and 3")
        super().__init__(CIFAR_RESNET_STAGE_CHANNELS[layer - 1], image_size, CIFAR_RESNET_MEAN, CIFAR_RESNET_STD)
        self.network = network
        self.layer = layer
        used_blocks = [block for stage in network.stages[:layer] for block in stage]
        self.set_trainable(last_blocks(used_blocks, trainable_blocks, "cifar_resnet"))

    def grid_size(self) -> tuple[int, int]:
        side = self.image_size
        for _ in range(self.layer - 1):  # each later stage halves the grid (rounding up)
            side = -(-side // 2)
        return side, side

    def encode(self, pixels: Tensor) -> Tensor:
        return self.network.features(pixels, self.layer).flatten(2).transpose(1, 2)

    def architecture(self) -> dict:
        return {
            "blocks_per_stage": [len(stage) for stage in self.network.stages],
            "num_classes": self.network.linear.out_features,
        }


# --------------------------------------------------------------------------------------
# Pretrained vision transformers (transformers)
# --------------------------------------------------------------------------------------

WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


@dataclass(frozen=True)
class ViTSpec:
    """What differs between the ViT encoders."""

    hub_id: str  # suggested download, named in errors only; nothing is fetched
    model_types: tuple[str, ...]  # accepted ``model_type`` values of config.json
    real_patch_size: int
    real_grid: int  # tokens per side at the pretraining resolution
    # LayerNorm epsilon of the original weights where the published config says otherwise:
    # DINO was trained with 1e-6, its transformers config.json says 1e-12.
    layer_norm_eps: float | None = None


VIT_SPECS = {
    "dinov2": ViTSpec("facebook/dinov2-base", ("dinov2", "dinov2_with_registers"), 14, 37),
    "dino": ViTSpec("facebook/dino-vitb16", ("vit",), 16, 14, layer_norm_eps=1e-6),
    "mae": ViTSpec("facebook/vit-mae-base", ("vit_mae",), 16, 14),
}


def offline_weights_hint(name: str) -> str:
    hub_id = VIT_SPECS[name].hub_id
    return (
        f"pass encoder.path={hub_id} with --allow-download on a machine that is online, or download it there "
        f"(hf download {hub_id} --local-dir DIR), copy DIR here and pass encoder.path=DIR; or set "
        f"encoder.tiny=True for a random twin"
    )


def check_pretrained_dir(name: str, path: str | None) -> Path:
    """A local Hugging Face model directory with config.json and weights, or a clear error."""
    if path is None:
        raise ValueError(f"the {name} encoder needs weights: {offline_weights_hint(name)}")
    directory = resolve_pretrained(path, "encoder.path", TRANSFORMERS_FILES)
    if not directory.is_dir():
        raise FileNotFoundError(f"encoder.path={path!r} is not a directory: {offline_weights_hint(name)}")
    if not (directory / "config.json").is_file():
        raise FileNotFoundError(f"encoder.path={path!r} has no config.json: {offline_weights_hint(name)}")
    if not any((directory / file).is_file() for file in WEIGHT_FILES):
        raise FileNotFoundError(
            f"encoder.path={path!r} has no weights (one of {', '.join(WEIGHT_FILES)}): "
            f"{offline_weights_hint(name)}"
        )
    model_type = json.loads((directory / "config.json").read_text()).get("model_type")
    if model_type not in VIT_SPECS[name].model_types:
        raise ValueError(
            f"{directory / 'config.json'}: model_type {model_type!r} is not a {name} model "
            f"(expected one of {VIT_SPECS[name].model_types}); check encoder.name and encoder.path"
        )
    return directory


def vit_blocks(model: nn.Module) -> nn.ModuleList:
    """The transformer blocks of a ``transformers`` ViT (their attribute moved across versions)."""
    for attribute in ("layers", "encoder.layer", "encoder.layers"):
        module: nn.Module | None = model
        for part in attribute.split("."):
            module = getattr(module, part, None)
        if isinstance(module, nn.ModuleList):
            return module
    raise TypeError(f"cannot find the transformer blocks of {type(model).__name__}")


class ViTEncoder(Encoder):
    """Patch tokens of a ``transformers`` ViT: CLS and register tokens dropped, raster order.

    Position embeddings are interpolated (bicubic, by ``transformers``) when
    ``image_size`` differs from the pretraining size. Inputs get ImageNet normalisation.
    """

    def __init__(self, model: nn.Module, image_size: int, final_norm: bool, trainable_blocks: int, name: str):
        config = model.config
        patch_size = config.patch_size
        if image_size % patch_size:
            raise ValueError(
                f"encoder.image_size={image_size} must be a multiple of the {name} patch size {patch_size}"
            )
        super().__init__(config.hidden_size, image_size, IMAGENET_MEAN, IMAGENET_STD)
        self.model = model.float()
        self.patch_size = patch_size
        self.final_norm = final_norm
        self.num_prefix_tokens = 1 + getattr(config, "num_register_tokens", 0)
        trainable = last_blocks(vit_blocks(model), trainable_blocks, name)
        if trainable and final_norm:
            trainable.append(model.layernorm)
        self.set_trainable(trainable)

    def grid_size(self) -> tuple[int, int]:
        side = self.image_size // self.patch_size
        return side, side

    def architecture(self) -> dict:
        return {"config": self.model.config.to_dict()}

    def model_inputs(self, pixels: Tensor) -> dict[str, Tensor | bool]:
        """Extra keyword arguments of the model's forward."""
        return {"interpolate_pos_encoding": True}

    def encode(self, pixels: Tensor) -> Tensor:
        output = self.model(
            pixel_values=pixels, output_hidden_states=not self.final_norm, **self.model_inputs(pixels)
        )
        # hidden_states[-1] is the last block's output before the final LayerNorm.
        hidden = output.last_hidden_state if self.final_norm else output.hidden_states[-1]
        return hidden[:, self.num_prefix_tokens :]


class DINOv2Encoder(ViTEncoder):
    """DINOv2: ``transformers`` always interpolates its position embeddings."""

    def model_inputs(self, pixels: Tensor) -> dict[str, Tensor | bool]:
        return {}


class MAEEncoder(ViTEncoder):
    """MAE with random masking disabled: mask ratio 0 and an increasing noise.

    ``ViTMAEModel`` shuffles tokens by ``argsort(noise)``; a strictly increasing noise
    makes that the identity, so all tokens are kept in raster order, deterministically.
    """

    def __init__(self, model: nn.Module, image_size: int, final_norm: bool, trainable_blocks: int, name: str):
        model.config.mask_ratio = 0.0
        super().__init__(model, image_size, final_norm, trainable_blocks, name)

    def model_inputs(self, pixels: Tensor) -> dict[str, Tensor | bool]:
        order = torch.arange(self.num_tokens, device=pixels.device, dtype=pixels.dtype)
        return {"interpolate_pos_encoding": True, "noise": order.expand(pixels.shape[0], -1)}


def vit_classes(name: str) -> dict[str, Callable[..., nn.Module]]:
    """``model_type`` of config.json -> ``transformers`` model class, per ViT encoder."""
    import transformers

    if name == "dinov2":
        return {"dinov2": transformers.Dinov2Model, "dinov2_with_registers": transformers.Dinov2WithRegistersModel}
    if name == "dino":
        return {"vit": transformers.ViTModel}
    return {"vit_mae": transformers.ViTMAEModel}


def tiny_vit(name: str, patch_size: int | None, seed: int) -> nn.Module:
    """A random small model of the same class (3 layers, hidden 32, 2 heads), built offline.

    Its pretraining grid equals the real model's, so position embeddings are interpolated
    exactly when they would be for the real model.
    """
    import transformers

    spec = VIT_SPECS[name]
    patch = spec.real_patch_size if patch_size is None else patch_size
    sizes = dict(
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=2,
        intermediate_size=64,
        patch_size=patch,
        image_size=spec.real_grid * patch,
    )
    if spec.layer_norm_eps is not None:
        sizes["layer_norm_eps"] = spec.layer_norm_eps
    with fixed_randomness(seed):
        if name == "dinov2":
            return transformers.Dinov2Model(transformers.Dinov2Config(**sizes)).eval()
        if name == "dino":
            return transformers.ViTModel(transformers.ViTConfig(**sizes), add_pooling_layer=False).eval()
        return transformers.ViTMAEModel(transformers.ViTMAEConfig(mask_ratio=0.0, **sizes)).eval()


def load_vit(name: str, path: str | None) -> nn.Module:
    """Load a pretrained ViT from a local directory only (``local_files_only=True``)."""
    directory = check_pretrained_dir(name, path)
    model_type = json.loads((directory / "config.json").read_text())["model_type"]
    model_class = vit_classes(name)[model_type]
    extra = {"add_pooling_layer": False} if name == "dino" else {}
    if VIT_SPECS[name].layer_norm_eps is not None:
        extra["layer_norm_eps"] = VIT_SPECS[name].layer_norm_eps
    return model_class.from_pretrained(str(directory), local_files_only=True, **extra).eval()


def check_matches_model(config: EncoderConfig, field: str, model_value: int) -> None:
    value = getattr(config, field)
    if value is not None and value != model_value:
        raise ValueError(
            f"encoder.{field}={value} but the {config.name} model has {field} {model_value}: "
            f"unset encoder.{field} or fix it"
        )


def vit_from_architecture(name: str, architecture: dict) -> nn.Module:
    """A ViT of the stored shape with placeholder weights (the checkpoint's weights follow)."""
    import transformers

    config = transformers.AutoConfig.for_model(**architecture["config"])
    model_class = vit_classes(name)[config.model_type]
    extra = {"add_pooling_layer": False} if name == "dino" else {}
    return model_class(config, **extra).eval()


def build_vit_encoder(config: EncoderConfig, architecture: dict | None = None) -> Encoder:
    if architecture is not None:
        model = vit_from_architecture(config.name, architecture)
    elif config.tiny:
        if config.path is not None:
            raise ValueError("encoder.tiny=True builds a random twin and takes no encoder.path: set one of them")
        model = tiny_vit(config.name, config.patch_size, config.seed)
    else:
        model = load_vit(config.name, config.path)
        check_matches_model(config, "patch_size", model.config.patch_size)
    check_matches_model(config, "dim", model.config.hidden_size)
    final_norm = DEFAULT_FINAL_NORM[config.name] if config.final_norm is None else config.final_norm
    encoder_class = {"dinov2": DINOv2Encoder, "dino": ViTEncoder, "mae": MAEEncoder}[config.name]
    return encoder_class(model, config.image_size, final_norm, config.trainable_blocks, config.name)


def build_patch_encoder(config: EncoderConfig, architecture: dict | None = None) -> Encoder:
    reject_path(config)
    patch_size = check_cpu_grid(config)
    if config.trainable_blocks:
        raise ValueError(
            "the patch encoder has no blocks to fine-tune (encoder.trainable_blocks must be 0): "
            "use encoder.projection='learned' for a trainable projection"
        )
    return PatchEncoder(
        config.image_size,
        patch_size,
        config.dim,
        config.projection or "random",
        config.colour_frequencies or 0,
        DEFAULT_COLOUR_SIGMA if config.colour_sigma is None else config.colour_sigma,
        config.seed,
        config.position_frequencies or 0,
        tuple(config.edge_scales or ()),
        tuple(config.structure_scales or ()),
        semantic_network_for(config, architecture),
        1.0 if config.semantic_gain is None else config.semantic_gain,
    )


def semantic_network_for(config: EncoderConfig, architecture: dict | None) -> SegmenterNetwork | None:
    """The patch encoder's semantic network: rebuilt in a checkpoint's stored shape (weights
    follow), read from ``encoder.semantic_model``, or none."""
    if config.semantic_gain is not None and config.semantic_model is None:
        raise ValueError("encoder.semantic_gain scales encoder.semantic_model's output: set semantic_model or unset it")
    if config.semantic_gain is not None and config.semantic_gain <= 0:
        raise ValueError(f"encoder.semantic_gain={config.semantic_gain} must be > 0")
    if architecture is not None:
        if "semantic_network" not in architecture:
            raise ValueError(
                f"a stored patch-encoder architecture holds its semantic network's shape, got keys {sorted(architecture)}"
            )
        return SegmenterNetwork(SegmenterNetworkConfig(**architecture["semantic_network"]))
    if config.semantic_model is None:
        return None
    from slotlab.methods.segmenter import load_segmenter  # the methods build encoders: import late

    return load_segmenter(config.semantic_model, "encoder.semantic_model").network


def build_cnn_encoder(config: EncoderConfig) -> Encoder:
    reject_path(config)
    patch_size = check_cpu_grid(config)
    num_layers = CNN_DEFAULT_LAYERS if config.cnn_layers is None else config.cnn_layers
    dim = CPU_DEFAULT_DIM if config.dim is None else config.dim
    return CNNEncoder(config.image_size, patch_size, dim, num_layers, config.trainable_blocks, config.seed)


def build_cifar_resnet_encoder(config: EncoderConfig, architecture: dict | None = None) -> Encoder:
    if architecture is not None:
        network = CifarResNet(tuple(architecture["blocks_per_stage"]), architecture["num_classes"])
    elif config.tiny:
        if config.path is not None:
            raise ValueError("encoder.tiny=True builds a random twin and takes no encoder.path: set one of them")
        with fixed_randomness(config.seed):
            network = CifarResNet((1, 1, 1))
    elif config.path is None:
        raise ValueError(
            "the cifar_resnet encoder needs weights: pass encoder.path=FILE (a CIFAR-10 "
            "resnet20/resnet56 checkpoint with 'state_dict'), or tiny=True for a random twin"
        )
    else:
        network = load_cifar_resnet(config.path)
    layer = CIFAR_RESNET_DEFAULT_LAYER if config.layer is None else config.layer
    encoder = CifarResNetEncoder(network.eval(), config.image_size, layer, config.trainable_blocks)
    check_matches_model(config, "dim", encoder.dim)
    return encoder


def build_ssl_encoder(config: EncoderConfig, architecture: dict | None = None) -> Encoder:
    """The frozen teacher network of a self-distillation run (``encoder.path``), or a network
    of a stored shape whose weights follow (``architecture``)."""
    from slotlab.nn.ssl_encoder import build_ssl_encoder as build  # it imports this module

    return build(config, architecture)


def reject_path(config: EncoderConfig) -> None:
    if config.path is not None:
        raise ValueError(f"the {config.name} encoder has no pretrained weights: unset encoder.path")


def check_cpu_grid(config: EncoderConfig) -> int:
    """The patch size of the patch/cnn encoders; image_size must be a multiple of it."""
    patch_size = CPU_DEFAULT_PATCH_SIZE if config.patch_size is None else config.patch_size
    if patch_size < 1 or config.image_size % patch_size:
        raise ValueError(
            f"encoder.image_size={config.image_size} must be a multiple of encoder.patch_size={patch_size}"
        )
    return patch_size


_BUILDERS: dict[str, Callable[[EncoderConfig], Encoder]] = {
    "dinov2": build_vit_encoder,
    "dino": build_vit_encoder,
    "mae": build_vit_encoder,
    "patch": build_patch_encoder,
    "cnn": build_cnn_encoder,
    "cifar_resnet": build_cifar_resnet_encoder,
    "ssl": build_ssl_encoder,
}


def validate_encoder_config(config: EncoderConfig) -> None:
    """Name, sizes and encoder-specific fields; clear errors naming the field."""
    if config.name not in ENCODER_NAMES:
        raise ValueError(f"encoder.name={config.name!r} is unknown: choose one of {', '.join(ENCODER_NAMES)}")
    if config.image_size < 1:
        raise ValueError(f"encoder.image_size={config.image_size} must be positive")
    if config.trainable_blocks < 0:
        raise ValueError(f"encoder.trainable_blocks={config.trainable_blocks} must be >= 0 (0 = frozen)")
    for field, encoders in _SPECIFIC_FIELDS.items():
        if getattr(config, field) is not None and config.name not in encoders:
            raise ValueError(
                f"encoder.{field} applies only to the {', '.join(encoders)} encoder(s), "
                f"not {config.name!r}: unset it"
            )


# Encoders whose network comes from weight files, and their builders from a stored architecture.
_ARCHITECTURE_BUILDERS: dict[str, Callable[[EncoderConfig, dict], Encoder]] = {
    "dinov2": build_vit_encoder,
    "dino": build_vit_encoder,
    "mae": build_vit_encoder,
    "patch": build_patch_encoder,
    "cifar_resnet": build_cifar_resnet_encoder,
    "ssl": build_ssl_encoder,
}


def build_encoder(config: EncoderConfig, architecture: dict | None = None) -> Encoder:
    """Build the encoder a config describes (frozen unless ``trainable_blocks > 0``).

    ``architecture`` (from :meth:`Encoder.architecture`, as a checkpoint stores it) builds
    the network in that shape instead of reading ``config.path``; its weights are then
    expected to be loaded by the caller (``from_pretrained`` does).
    """
    validate_encoder_config(config)
    if architecture is None:
        return _BUILDERS[config.name](config)
    if config.name not in _ARCHITECTURE_BUILDERS:
        raise ValueError(f"the {config.name} encoder is built from its config alone: it takes no stored architecture")
    return _ARCHITECTURE_BUILDERS[config.name](config, architecture)
