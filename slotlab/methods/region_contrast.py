"""Region-level contrast without labels (DetCon, Hénaff et al. 2021) for the CPU encoder of the scenes.

DetCon pools a network's features under unsupervised masks of each image (Felzenszwalb or
SLIC segments in the paper) in two augmented views and trains the pooled vector of a
region in one view to pick out the same region of the other view among all regions of the
batch (its contrastive loss, Eq. 1: InfoNCE over regions at temperature ``temperature``).
Here the unsupervised masks are the images' flat-colour regions (:func:`colour_regions`:
quantised colour, connected components; read from the pixels, never from the labels). The
views (:mod:`slotlab.methods.ssl_views`) rotate, zoom, shift, mirror and recolour each
image, so a region can only be found again by what does not change under them: its
outline, i.e. its shape, which is what the scenes' classes are. The exact correspondence
of the views places the regions on each view's token grid.

No label is read: the method uses ``batch.image`` only. The trained network is an encoder
the CPU presets can read (``encoder: {name: ssl, path: RUN/model}``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import Tensor, nn

from slotlab.config import bounded
from slotlab.data.sample import Batch
from slotlab.methods.base import Method
from slotlab.methods.ssl_views import (
    LabelFreeConfig,
    ViewsConfig,
    image_points,
    method_input,
    projection_head,
    random_views,
)
from slotlab.nn.encoders.ssl import ConvNet


def default_views() -> ViewsConfig:
    return ViewsConfig(global_views=2, local_views=0, global_zoom=(0.7, 1.4), max_shift=0.2)


@dataclass
class RegionContrastConfig(LabelFreeConfig):
    """:class:`LabelFreeConfig` (``views``: exactly two global views are contrasted) and:

    Attributes:
        projector_hidden, projector_dim: DetCon's projection MLP (small here).
        temperature: the InfoNCE temperature (DetCon: 0.1).
        colour_levels: levels per channel of the colour quantisation that forms the regions.
        min_region_pixels: smaller regions (antialiased rims, texture specks) are left out.
    """

    views: ViewsConfig = field(default_factory=default_views)
    projector_hidden: int = 256
    projector_dim: int = 64
    temperature: float = bounded(0.1, low=0, low_open=True)
    colour_levels: int = bounded(4, low=2)
    min_region_pixels: int = bounded(8, low=1)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.views.global_views != 2 or self.views.local_views != 0:
            raise ValueError("views: region contrast compares exactly two views (global_views: 2, local_views: 0)")


def colour_regions(images: Tensor, levels: int, min_pixels: int) -> Tensor:
    """Unsupervised regions of (B, 3, H, W) images in [0, 1]: (B, H, W) region ids, numbered
    from 0 over the batch, -1 where a pixel belongs to no region of ``min_pixels`` or more.

    A region is a connected set of pixels whose colour falls in one cell of a grid with
    ``levels`` levels per channel: on the scenes, an object or a piece of background.
    """
    quantised = (images.detach().clamp(0, 1) * (levels - 1)).round().long().cpu()
    codes = ((quantised[:, 0] * levels + quantised[:, 1]) * levels + quantised[:, 2]).numpy()
    ids = np.full(codes.shape, -1, dtype=np.int64)
    next_id = 0
    for b, code in enumerate(codes):
        for value in np.unique(code):
            labels, count = ndimage.label(code == value)
            sizes = np.bincount(labels.ravel(), minlength=count + 1)
            for component in np.flatnonzero(sizes[1:] >= min_pixels) + 1:
                ids[b][labels == component] = next_id
                next_id += 1
    return torch.from_numpy(ids).to(images.device)


def pool_regions(feature_map: Tensor, regions: Tensor, theta: Tensor, num_regions: int) -> tuple[Tensor, Tensor]:
    """Mean feature of each region in a view: (B, num_regions, D) and token counts (B, num_regions).

    ``theta`` maps the view to the image (:func:`image_points`), so each token of the view's
    grid takes the region id of the image point it shows (none off the image)."""
    b, _, h, w = feature_map.shape
    points = image_points(theta, (h, w))
    ids = F.grid_sample(regions[:, None].float(), points, mode="nearest", align_corners=False)[:, 0].long()
    ids = torch.where((points.abs() <= 1).all(-1), ids, -1)
    onehot = F.one_hot(ids + 1, num_regions + 1)[..., 1:].to(feature_map.dtype)  # id -1 -> dropped column
    counts = onehot.sum((1, 2))
    sums = torch.einsum("bhwr,bdhw->brd", onehot, feature_map)
    return sums / counts.clamp_min(1)[..., None], counts


def region_contrastive_loss(first: Tensor, second: Tensor, temperature: float) -> Tensor:
    """DetCon Eq. 1, symmetrised: each region's projection in one view must pick out the same
    region's projection in the other view among all regions (InfoNCE, cosine similarity /
    temperature). ``first`` and ``second``: (R, d), row i of both is region i."""
    logits = F.normalize(first, dim=-1) @ F.normalize(second, dim=-1).T / temperature
    targets = torch.arange(len(logits), device=logits.device)
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2


@dataclass
class RegionContrastOutput:
    loss: Tensor  # () the contrastive loss over the regions seen in both views
    regions: Tensor  # () how many regions were contrasted


class RegionContrast(Method):
    """Trains the encoder network; no slots and no masks (a stage, like the VQ-VAE)."""

    method = "region_contrast"
    config_class = RegionContrastConfig

    def __init__(self, config: RegionContrastConfig, architectures: Mapping[str, dict] | None = None):
        super().__init__(config)
        self.network = ConvNet(config.network)
        self.projector = projection_head(config.network.dim, config.projector_hidden, config.projector_dim)

    def forward(self, batch: Batch | Tensor, num_slots: int | None = None) -> RegionContrastOutput:
        images = method_input(batch, num_slots, self.config, "region contrast")
        regions = colour_regions(images, self.config.colour_levels, self.config.min_region_pixels)
        num_regions = int(regions.max()) + 1
        pooled = []
        for view in random_views(images, self.config.views):
            pooled.append(pool_regions(self.network(view.pixels * 2 - 1), regions, view.theta, num_regions))
        (first, first_counts), (second, second_counts) = pooled
        seen = (first_counts > 0) & (second_counts > 0)
        if int(seen.sum()) < 2:
            zero = sum(p.sum() for p in self.parameters()) * 0
            return RegionContrastOutput(zero, seen.sum())
        loss = region_contrastive_loss(self.projector(first[seen]), self.projector(second[seen]), self.config.temperature)
        return RegionContrastOutput(loss, seen.sum())

    def losses(self, outputs: RegionContrastOutput, batch: Batch) -> dict[str, Tensor]:
        return {"loss": outputs.loss, "regions": outputs.regions.float()}

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"network": list(self.network.parameters()) + list(self.projector.parameters())}
