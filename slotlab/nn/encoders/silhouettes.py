"""The shapes of an image's flat-colour regions, embedded one at a time: a label-free
encoder network for the built-in scenes, whose classes are shapes.

:class:`SilhouetteNet` finds the regions of flat colour in the pixels (:func:`flat_regions`:
neighbouring pixels whose colours differ by less than a threshold are joined; no label is
read), cuts each region's silhouette out of the image, centred on its centroid and scaled by
its RMS radius (:func:`silhouette_crops`: a binary mask, so colour, size, place and
neighbours are gone and only the outline is left), embeds each crop with a small CNN, and
paints every region's embedding back over its pixels: each token is the mean embedding of
the regions in its cell (pixels of no region, such as antialiased rims, left out).

``slotlab.methods.silhouette_contrast`` trains it (SimCLR on two transformed crops of each
region); the ``ssl`` encoder reads it (``encoder: {name: ssl, path: RUN/model}``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from torch import Tensor, nn

from slotlab.config import bounded, check_ranges
from slotlab.nn.encoders.blocks import GROUPS, conv_block
from slotlab.nn.encoders.pixel_features import fourier_of_positions


#: Default region finding (:func:`flat_regions`): on 64 scenes train images every object's best
#: region has median IoU 0.86 with its true mask (docs/ssl-encoder.md, "Third round").
REGION_THRESHOLD = 0.06
REGION_MIN_PIXELS = 12


@dataclass
class SilhouetteNetConfig:
    """Shape of :class:`SilhouetteNet` and how it finds regions.

    Attributes:
        width: channels of the first conv (then 2x and 4x after each stride-2 stage; a
            multiple of 8).
        dim: embedding (token) dim.
        crop_size: side of a region's silhouette crop in pixels (a multiple of 8).
        extent: half the crop's side in units of the region's RMS radius.
        threshold: neighbouring pixels whose channels all differ by less than this (colours
            in [0, 1]) belong to one region.
        min_region_pixels: smaller regions (antialiased rims, specks) get no embedding.
        output_stride: token cell side in pixels.
    """

    width: int = 16
    dim: int = bounded(64, low=1)
    crop_size: int = 32
    extent: float = bounded(2.2, low=0, low_open=True)
    threshold: float = bounded(REGION_THRESHOLD, low=0, low_open=True)
    min_region_pixels: int = bounded(REGION_MIN_PIXELS, low=1)
    output_stride: int = bounded(2, low=1)

    def __post_init__(self) -> None:
        check_ranges(self)
        if self.width < GROUPS or self.width % GROUPS:
            raise ValueError(f"width={self.width} must be a positive multiple of {GROUPS}")
        if self.crop_size < 8 or self.crop_size % 8:  # three stride-2 stages
            raise ValueError(f"crop_size={self.crop_size} must be a positive multiple of 8")


def flat_regions(images: Tensor, threshold: float, min_pixels: int) -> Tensor:
    """Regions of flat colour of (B, 3, H, W) images in [0, 1]: (B, H, W) ids numbered from 0
    over the batch, -1 where a pixel lies in a region of fewer than ``min_pixels`` pixels.

    Two 4-neighbours join when every channel differs by less than ``threshold``; a region is
    a connected component of that graph (one sparse-graph pass over the whole batch). Smooth
    background textures stay one region, where quantising colours would cut them in bands.
    """
    x = images.detach().float().cpu().numpy()
    b, _, h, w = x.shape
    index = np.arange(b * h * w).reshape(b, h, w)
    across = np.abs(np.diff(x, axis=3)).max(1) < threshold
    down = np.abs(np.diff(x, axis=2)).max(1) < threshold
    rows = np.concatenate([index[:, :, :-1][across], index[:, :-1, :][down]])
    cols = np.concatenate([index[:, :, 1:][across], index[:, 1:, :][down]])
    graph = coo_matrix((np.ones(len(rows), np.int8), (rows, cols)), shape=(b * h * w,) * 2)
    count, labels = connected_components(graph, directed=False)
    kept = np.bincount(labels, minlength=count) >= min_pixels
    renumber = np.full(count, -1)
    renumber[kept] = np.arange(kept.sum())
    return torch.from_numpy(renumber[labels].reshape(b, h, w)).to(images.device)


@dataclass
class RegionFrames:
    """Where each region of a batch lies: its image, centroid (x, y) and RMS radius, both
    in ``grid_sample`` coordinates ([-1, 1] across the image)."""

    image: Tensor  # (R,) long
    centre: Tensor  # (R, 2)
    radius: Tensor  # (R,)


def region_frames(regions: Tensor) -> RegionFrames:
    """Frames of the regions of (B, H, W) ids (:func:`flat_regions`)."""
    b, h, w = regions.shape
    count = int(regions.max()) + 1
    ids = regions.reshape(-1)
    inside = ids >= 0
    ids, pixel = ids[inside], torch.arange(b * h * w, device=regions.device)[inside]
    column, row = (pixel % w).float(), (pixel // w % h).float()
    xy = torch.stack([(2 * column + 1) / w - 1, (2 * row + 1) / h - 1], -1)  # pixel centres, grid_sample's frame
    sizes = torch.zeros(count, device=regions.device).index_add_(0, ids, torch.ones(len(ids), device=regions.device))
    centre = torch.zeros(count, 2, device=regions.device).index_add_(0, ids, xy) / sizes[:, None]
    spread = torch.zeros(count, device=regions.device).index_add_(0, ids, (xy - centre[ids]).pow(2).sum(-1))
    image = torch.zeros(count, dtype=torch.long, device=regions.device).scatter_(0, ids, pixel // (h * w))
    # at least one pixel, so a region of a few pixels is not blown up to the crop
    return RegionFrames(image, centre, (spread / sizes).sqrt().clamp_min(2 / w))


def region_centroid_features(regions: Tensor, frequencies: int) -> Tensor:
    """(B, 4F, H, W) for (B, H, W) region ids (:func:`flat_regions`): every pixel of a region
    gets the Fourier features of its region's centroid (:func:`fourier_of_positions`, x and y
    in [0, 1]); pixels of no region get zeros. Two separated objects of one colour and shape
    differ here, where colour and shape features alike cannot tell them apart. The regions
    come from the pixels; no label."""
    out = torch.zeros(*regions.shape, 4 * frequencies, device=regions.device)
    inside = regions >= 0
    if inside.any():
        centres = (region_frames(regions).centre + 1) / 2
        out[inside] = fourier_of_positions(centres, frequencies)[regions[inside]]
    return out.permute(0, 3, 1, 2)


def silhouette_crops(regions: Tensor, frames: RegionFrames, size: int, extent: float,
                     transforms: Tensor | None = None, shifts: Tensor | None = None) -> Tensor:
    """Each region's binary mask (R, 1, size, size), centred on its centroid, the crop's half
    side ``extent`` RMS radii, sampled bilinearly.

    ``transforms`` (R, 2, 2) maps crop coordinates before scaling (rotation, mirror, zoom,
    shear of an augmented view) and ``shifts`` (R, 2) moves the centre in crop units."""
    count = len(frames.image)
    masks = (regions[frames.image] == torch.arange(count, device=regions.device)[:, None, None]).float()
    linear = torch.eye(2, device=regions.device).expand(count, 2, 2) if transforms is None else transforms
    linear = linear * (extent * frames.radius)[:, None, None]
    centre = frames.centre if shifts is None else frames.centre + (linear @ shifts[..., None])[..., 0]
    grid = F.affine_grid(torch.cat([linear, centre[..., None]], -1), [count, 1, size, size], align_corners=False)
    return F.grid_sample(masks[:, None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class SilhouetteNet(nn.Module):
    """Pixels normalised to [-1, 1] (B, 3, H, W) -> token map (B, dim, H/s, W/s) of the
    embeddings of the regions' silhouettes."""

    def __init__(self, config: SilhouetteNetConfig):
        super().__init__()
        self.config = config
        w = config.width
        widths = [(1, w, 1), (w, 2 * w, 2), (2 * w, 2 * w, 1), (2 * w, 4 * w, 2), (4 * w, 4 * w, 1),
                  (4 * w, 4 * w, 2), (4 * w, 4 * w, 1)]
        self.body = nn.Sequential(*(conv_block(i, o, s) for i, o, s in widths))
        self.project = nn.Linear(4 * w, config.dim)
        self.norm = nn.LayerNorm(config.dim)

    def regions(self, pixels: Tensor) -> Tensor:
        """Region ids (B, H, W) of pixels normalised to [-1, 1] (:func:`flat_regions`)."""
        return flat_regions((pixels + 1) / 2, self.config.threshold, self.config.min_region_pixels)

    def crops(self, regions: Tensor, transforms: Tensor | None = None, shifts: Tensor | None = None) -> Tensor:
        return silhouette_crops(regions, region_frames(regions), self.config.crop_size, self.config.extent,
                                transforms, shifts)

    def embed(self, crops: Tensor) -> Tensor:
        """Silhouette crops (R, 1, S, S) in [0, 1] -> embeddings (R, dim)."""
        return self.norm(self.project(self.body(crops * 2 - 1).mean((2, 3))))

    def forward(self, pixels: Tensor, regions: Tensor | None = None) -> Tensor:
        """``regions``: this batch's :meth:`regions`, when the caller has found them already."""
        stride = self.config.output_stride
        if pixels.shape[-1] % stride or pixels.shape[-2] % stride:
            raise ValueError(f"the silhouette network needs input sides that are multiples of its output_stride "
                             f"{stride}, got {tuple(pixels.shape[-2:])}")
        regions = self.regions(pixels) if regions is None else regions
        covered = (regions >= 0).to(pixels.dtype)[:, None]
        if not covered.any():
            b, _, h, w = pixels.shape
            return pixels.new_zeros(b, self.config.dim, h // stride, w // stride)
        table = torch.cat([pixels.new_zeros(1, self.config.dim), self.embed(self.crops(regions))])
        painted = table[regions + 1].permute(0, 3, 1, 2)
        return F.avg_pool2d(painted, stride) / F.avg_pool2d(covered, stride).clamp_min(1e-6)
