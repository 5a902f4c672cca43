"""The patch encoder: per-patch pixel features with a fixed random, learned or no projection."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from slotlab.config import bounded
from slotlab.nn.encoders.base import CPU_DEFAULT_DIM, CPUEncoder, CPUEncoderConfig, Encoder
from slotlab.nn.encoders.pixel_features import (
    check_position_options,
    colour_fourier_features,
    edge_context_features,
    image_to_patches,
    position_fourier_features,
    structure_tensor_features,
)
from slotlab.nn.segmenter import SegmenterNetwork, SegmenterNetworkConfig
from slotlab.ops.random import seeded_generator

PATCH_PROJECTIONS = ("random", "learned", "pixels")


@dataclass
class PatchEncoderConfig(CPUEncoderConfig):
    """The ``patch`` encoder (see :class:`PatchEncoder`).

    Attributes:
        patch_size: patch side in pixels (default 4); ``image_size`` must be a multiple.
        projection: ``"random"`` (fixed Gaussian projection, default), ``"learned"``
            (trainable linear) or ``"pixels"`` (raw features, no projection).
        colour_frequencies: number of fixed random Fourier frequencies of the pixel colour
            appended to each pixel (sin and cos each); default 0.
        colour_sigma: std of those frequencies (default 1.0).
        position_frequencies: number of fixed Fourier frequencies of each pixel's (x, y)
            position appended per pixel (sin and cos of each coordinate); default 0. Gives
            the tokens the position information ViT features carry.
        position_scale: amplitude of those position features (default 1.0, the unit
            sin/cos). Below 1 the tokens carry position weakly: slot attention still groups
            by colour, while each slot's weighted mean carries its object's place.
        edge_scales: Gaussian scales (pixels) of edge-context features appended per pixel
            (see :func:`edge_context_features`); default none. They tell a pixel where the
            nearest colour edges lie, i.e. where it sits inside its object, part-relative
            information ViT features carry and colour alone does not.
        structure_scales: Gaussian scales (pixels) of structure-tensor features appended per
            pixel (see :func:`structure_tensor_features`); default none. They say whether a
            pixel lies near a straight edge, a corner or a tight curve: local shape.
        semantic_model: a trained ``segmenter`` checkpoint directory (from ``slotlab train
            --preset segmenter-scenes-tiny``), a network SUPERVISED on the scenes' class
            maps; its per-pixel class probabilities, times ``semantic_gain``, are appended
            to each pixel's features. The method that builds the encoder loads it and hands
            its network over (``build_encoder(..., semantic_network=...)``); it is frozen and
            stored in the model's checkpoint, so a trained model no longer needs the directory.
        semantic_gain: scale of those probabilities against the colour features (default
            1.0). Larger gains make slot attention group by class more than by colour.
    """

    name: str = "patch"
    projection: str = "random"
    colour_frequencies: int = bounded(0, low=0)
    colour_sigma: float = 1.0
    position_frequencies: int = bounded(0, low=0)
    position_scale: float = bounded(1.0, low=0, low_open=True)
    edge_scales: tuple[float, ...] = bounded((), low=0, low_open=True)
    structure_scales: tuple[float, ...] = bounded((), low=0, low_open=True)
    semantic_model: str | None = None
    semantic_gain: float = bounded(1.0, low=0, low_open=True)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.trainable_blocks:
            raise ValueError(
                "the patch encoder has no blocks to fine-tune (encoder.trainable_blocks must be 0): "
                "use encoder.projection='learned' for a trainable projection"
            )
        check_position_options(self.position_frequencies, self.position_scale)
        if self.semantic_gain != 1.0 and self.semantic_model is None:
            raise ValueError("encoder.semantic_gain scales encoder.semantic_model's output: set semantic_model or unset it")


class PatchEncoder(CPUEncoder):
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
        position_scale: float = 1.0,
    ):
        if projection not in PATCH_PROJECTIONS:
            raise ValueError(f"encoder.projection={projection!r}: choose one of {PATCH_PROJECTIONS}")
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
        super().__init__(dim, image_size, patch_size)
        self.projection_kind = projection
        generator = seeded_generator(seed)
        frequencies = torch.randn(colour_frequencies, 3, generator=generator) * colour_sigma
        self.register_buffer("colour_frequencies", frequencies)
        self.position_frequencies = position_frequencies
        self.position_scale = float(position_scale)
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
            position = self.position_scale * position
            pixels = torch.cat([pixels, position.expand(b, -1, -1, -1)], dim=1)
        patches = image_to_patches(pixels, self.patch_size)
        if self.projection_kind == "random":
            return patches @ self.random_projection
        if self.projection is not None:
            return self.projection(patches)
        return patches


def build_patch_encoder(
    config: PatchEncoderConfig, architecture: dict | None = None, semantic_network: SegmenterNetwork | None = None
) -> Encoder:
    return PatchEncoder(
        config.image_size,
        config.patch_size,
        config.dim,
        config.projection,
        config.colour_frequencies,
        config.colour_sigma,
        config.seed,
        config.position_frequencies,
        tuple(config.edge_scales),
        tuple(config.structure_scales),
        semantic_network_for(config, architecture, semantic_network),
        config.semantic_gain,
        config.position_scale,
    )


def semantic_network_for(
    config: PatchEncoderConfig, architecture: dict | None, network: SegmenterNetwork | None
) -> SegmenterNetwork | None:
    """The patch encoder's semantic network: rebuilt in a checkpoint's stored shape (weights
    follow), the one the caller loaded from ``encoder.semantic_model``, or none."""
    if architecture is not None:
        if "semantic_network" not in architecture:
            raise ValueError(
                f"a stored patch-encoder architecture holds its semantic network's shape, got keys {sorted(architecture)}"
            )
        return SegmenterNetwork(SegmenterNetworkConfig(**architecture["semantic_network"]))
    if (config.semantic_model is None) != (network is None):
        raise ValueError(
            "encoder.semantic_model names a segmenter whose network the caller loads and passes as "
            "semantic_network (the methods do: slotlab.methods.encoder_parts.build_method_encoder); "
            "give both or neither"
        )
    return network
