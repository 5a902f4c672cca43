"""Random views of images for self-distillation (DINO's multi-crop, with exact correspondence).

A view is the image under a random similarity transform (rotation, zoom, shift, mirror; the
scenes' objects come in every rotation, so the features should not depend on it) and a
random colour change (channel permutation, gain, offset, sometimes grey: the class of an
object of the scenes does not depend on its colour, so the features should say more than
colour). Global views zoom little; local views zoom in on a part of the image, about one
object of the scenes (DINO's local crops). The transform of each view is kept, so the point
of the original image under any token of the view is known (:func:`image_points`).

:class:`LabelFreeConfig` holds what the label-free encoder methods (self-distillation, region
contrast) share: the network they train, its views and the input size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slotlab.config import check_ranges
from slotlab.data.sample import Batch
from slotlab.nn.encoders.ssl import ConvNetConfig
from slotlab.ops.resize import resize_image

#: Grey level that blanks masked cells: far from the scenes' dark backgrounds and their objects' colours.
MASK_FILL = 0.5


@dataclass
class ViewsConfig:
    """Attributes:
        global_views, local_views: student views per image of each kind.
        global_zoom, local_zoom: (min, max) magnification of each kind of view.
        max_shift: largest shift of a view's centre, as a fraction of the half side.
        mask_ratio: share of mask_cell x mask_cell cells blanked in global views (iBOT's
            masked image modelling); 0 blanks none.
        mask_cell: side in pixels of the blanked cells.
        gain: (min, max) per-channel colour gain.
        offset: largest per-channel colour offset.
        grey_probability: chance that a view is turned grey.
    """

    global_views: int = 2
    local_views: int = 2
    global_zoom: tuple[float, float] = (0.8, 1.5)
    local_zoom: tuple[float, float] = (2.0, 3.0)
    max_shift: float = 0.3
    mask_ratio: float = 0.0
    mask_cell: int = 8
    gain: tuple[float, float] = (0.6, 1.2)
    offset: float = 0.1
    grey_probability: float = 0.2

    def __post_init__(self) -> None:
        if self.global_views < 1 or self.local_views < 0:
            raise ValueError(f"views: global_views={self.global_views} must be >= 1, local_views >= 0")
        for name in ("global_zoom", "local_zoom", "gain"):
            low, high = getattr(self, name)
            if not 0 < low <= high:
                raise ValueError(f"views.{name}={[low, high]} must be (min, max) with 0 < min <= max")
        if not 0 <= self.mask_ratio < 1:
            raise ValueError(f"views.mask_ratio={self.mask_ratio} must be in [0, 1)")
        if self.mask_cell < 1 or not 0 <= self.grey_probability <= 1 or self.offset < 0 or self.max_shift < 0:
            raise ValueError("views: mask_cell >= 1, grey_probability in [0, 1], offset >= 0 and max_shift >= 0")


@dataclass
class LabelFreeConfig:
    """What a label-free encoder method's config starts with.

    Attributes:
        network: the encoder network it trains.
        views: how the views are drawn from each image.
        image_size: square input size (a multiple of 4); other sizes are resized.

    Numeric fields declared with :func:`~slotlab.config.bounded` (here and in the subclasses)
    are checked against their ranges on construction.
    """

    network: ConvNetConfig = field(default_factory=ConvNetConfig)
    views: ViewsConfig = field(default_factory=ViewsConfig)
    image_size: int = 64

    def __post_init__(self) -> None:
        check_ranges(self)
        if self.image_size < 4 or self.image_size % 4:
            raise ValueError(f"image_size={self.image_size} must be a positive multiple of 4")


def method_input(batch: Batch | Tensor, num_slots: int | None, config: LabelFreeConfig, what: str) -> Tensor:
    """The images a label-free encoder method (``what``) reads, at its ``image_size``; such a
    method has no slots, so ``num_slots`` must be None."""
    if num_slots is not None:
        raise ValueError(f"{what} trains an encoder and has no slots: num_slots does not apply")
    images = batch.image if isinstance(batch, Batch) else batch
    return resize_image(images, (config.image_size,) * 2)


@dataclass
class View:
    pixels: Tensor  # (B, 3, H, W) in [0, 1]
    theta: Tensor  # (B, 2, 3) view coordinates -> image coordinates (affine_grid convention)
    is_global: bool


def colour_jitter(images: Tensor, config: ViewsConfig) -> Tensor:
    """Per image: permute the channels, scale and shift each, sometimes average them to grey."""
    b = images.shape[0]
    order = torch.rand(b, 3, device=images.device).argsort(dim=1)
    images = torch.gather(images, 1, order[:, :, None, None].expand_as(images))
    gain = torch.empty(b, 3, 1, 1, device=images.device).uniform_(*config.gain)
    offset = torch.empty(b, 3, 1, 1, device=images.device).uniform_(-config.offset, config.offset)
    images = images * gain + offset
    grey = (torch.rand(b, 1, 1, 1, device=images.device) < config.grey_probability).to(images.dtype)
    images = grey * images.mean(1, keepdim=True).expand_as(images) + (1 - grey) * images
    return images.clamp(0, 1)


def random_similarity(batch: int, zoom: tuple[float, float], max_shift: float, device=None) -> Tensor:
    """(B, 2, 3) random rotation, zoom, shift and mirror, mapping view to image coordinates."""
    angle = torch.empty(batch, device=device).uniform_(-math.pi, math.pi)
    scale = 1 / torch.empty(batch, device=device).uniform_(*zoom)
    mirror = torch.where(torch.rand(batch, device=device) < 0.5, -1.0, 1.0)
    shift = torch.empty(batch, 2, device=device).uniform_(-max_shift, max_shift)
    cos, sin = angle.cos() * scale, angle.sin() * scale
    rows = [torch.stack([cos * mirror, -sin, shift[:, 0]], 1), torch.stack([sin * mirror, cos, shift[:, 1]], 1)]
    return torch.stack(rows, 1)


def image_points(theta: Tensor, size: tuple[int, int]) -> Tensor:
    """(B, h, w, 2) image coordinates in [-1, 1] (outside: off the image) of the centres of an
    h x w grid over the view."""
    return F.affine_grid(theta, (theta.shape[0], 1, *size), align_corners=False)


def blank_cells(images: Tensor, ratio: float, cell: int) -> Tensor:
    """Images with a random ``ratio`` of cell x cell cells set to ``MASK_FILL``."""
    b, _, h, w = images.shape
    grid = (torch.rand(b, 1, -(-h // cell), -(-w // cell), device=images.device) < ratio).to(images.dtype)
    mask = F.interpolate(grid, scale_factor=cell, mode="nearest")[..., :h, :w]
    return images * (1 - mask) + MASK_FILL * mask


def random_views(images: Tensor, config: ViewsConfig) -> list[View]:
    """The global then local views of a batch of images (B, 3, H, W) in [0, 1]."""
    kinds = [(config.global_zoom, True)] * config.global_views + [(config.local_zoom, False)] * config.local_views
    views = []
    for zoom, is_global in kinds:
        theta = random_similarity(images.shape[0], zoom, config.max_shift, images.device)
        grid = F.affine_grid(theta, tuple(images.shape), align_corners=False)
        pixels = F.grid_sample(colour_jitter(images, config), grid, align_corners=False)
        if is_global and config.mask_ratio > 0:
            pixels = blank_cells(pixels, config.mask_ratio, config.mask_cell)
        views.append(View(pixels, theta, is_global))
    return views


def projection_head(dim: int, hidden: int, out: int) -> nn.Sequential:
    """The contrastive methods' projection MLP (SimCLR's g, DetCon's projector): linear, GELU,
    linear; the loss reads its output, the encoder keeps the input."""
    return nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, out))
