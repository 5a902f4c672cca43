"""Contrast of region silhouettes without labels (SimCLR, Chen et al. 2020) for the CPU
encoder of the scenes.

SimCLR trains a network so that two random augmentations of one example embed close and
those of other examples far: its NT-Xent loss (Eq. 1), softmax cross-entropy over the
cosine similarities / temperature of each view against the other 2N - 1 views of the batch,
the other view of the same example being the target. Here an example is one flat-colour
region of an image (:func:`~slotlab.nn.encoders.silhouettes.flat_regions`, found in the
pixels, never in the labels), and a view is its silhouette alone: the region's binary mask
cut out, centred and scaled to its RMS radius, under an independent random rotation,
mirror, zoom, shear, shift and erosion or dilation. Colour, size, place and neighbouring
regions are gone from both views, so the outline is the only cue that tells a region from
the other regions of the batch; on the scenes that is what an object's class is. (Region
contrast over whole views, ``region_contrast``, matched regions by their context instead:
docs/ssl-encoder.md.)

No label is read: the method uses ``batch.image`` only. The trained network is an encoder
the CPU presets can read (``encoder: {name: ssl, path: RUN/model}``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slotlab.config import bounded, check_ranges
from slotlab.data.sample import Batch
from slotlab.methods.base import Method
from slotlab.methods.ssl_views import method_input, projection_head
from slotlab.nn.encoders.silhouettes import SilhouetteNet, SilhouetteNetConfig


@dataclass
class SilhouetteViewsConfig:
    """Random transforms of a silhouette crop, drawn independently per region and view.

    Attributes:
        rotation: largest rotation in degrees either way (180: any angle).
        mirror: probability of a left-right mirror.
        zoom: scale drawn from [1 - zoom, 1 + zoom].
        shear: shear factor drawn from [-shear, shear].
        shift: centre moved by up to this share of the crop's half side on each axis.
        morphology: probability of a one-pixel erosion or dilation (half each) of the crop.
    """

    rotation: float = bounded(180.0, low=0, high=180)
    mirror: float = bounded(0.5, low=0, high=1)
    zoom: float = bounded(0.15, low=0, high=1, high_open=True)
    shear: float = bounded(0.15, low=0)
    shift: float = bounded(0.1, low=0)
    morphology: float = bounded(0.3, low=0, high=1)

    def __post_init__(self) -> None:
        check_ranges(self, "views.")


@dataclass
class SilhouetteContrastConfig:
    """Attributes:
        network: the encoder network (its crop size, region threshold and token stride).
        views: how each view of a silhouette is transformed.
        image_size: square input size (a multiple of the network's output stride).
        projector_hidden, projector_dim: SimCLR's projection head g (an MLP; small here).
        temperature: the NT-Xent temperature (SimCLR's tau).
    """

    network: SilhouetteNetConfig = field(default_factory=SilhouetteNetConfig)
    views: SilhouetteViewsConfig = field(default_factory=SilhouetteViewsConfig)
    image_size: int = bounded(64, low=1)
    projector_hidden: int = bounded(256, low=1)
    projector_dim: int = bounded(64, low=1)
    temperature: float = bounded(0.1, low=0, low_open=True)

    def __post_init__(self) -> None:
        check_ranges(self)
        if self.image_size % self.network.output_stride:
            raise ValueError(f"image_size={self.image_size} must be a multiple of network.output_stride="
                             f"{self.network.output_stride}")


def random_transforms(count: int, views: SilhouetteViewsConfig, generator: torch.Generator | None = None
                      ) -> tuple[Tensor, Tensor]:
    """``count`` random linear maps (count, 2, 2) (rotation @ shear @ mirror, times a zoom)
    and shifts (count, 2) of silhouette crops."""
    u = torch.rand(count, 6, generator=generator)
    angle = math.radians(views.rotation) * (2 * u[:, 0] - 1)
    cos, sin = angle.cos(), angle.sin()
    rotation = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
    shear = torch.eye(2).repeat(count, 1, 1)
    shear[:, 0, 1] = views.shear * (2 * u[:, 1] - 1)
    mirror = torch.eye(2).repeat(count, 1, 1)
    mirror[:, 0, 0] = torch.where(u[:, 2] < views.mirror, -1.0, 1.0)
    zoom = 1 + views.zoom * (2 * u[:, 3] - 1)
    shifts = views.shift * (2 * torch.rand(count, 2, generator=generator) - 1)
    return rotation @ shear @ mirror * zoom[:, None, None], shifts


def random_morphology(crops: Tensor, probability: float, generator: torch.Generator | None = None) -> Tensor:
    """Dilate (3x3 max) a share ``probability / 2`` of the crops and erode another: outlines
    one pixel off, as antialiasing and occlusion leave them."""
    draw = torch.rand(len(crops), generator=generator)[:, None, None, None]
    dilated = F.max_pool2d(crops, 3, 1, 1)
    eroded = -F.max_pool2d(-crops, 3, 1, 1)
    return torch.where(draw < probability / 2, dilated, torch.where(draw > 1 - probability / 2, eroded, crops))


def nt_xent(first: Tensor, second: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
    """SimCLR Eq. 1 (NT-Xent) averaged over all 2N views, and the share of views whose most
    similar other view is their pair. ``first`` and ``second``: (N, d), row i of both is
    example i."""
    views = F.normalize(torch.cat([first, second]), dim=-1)
    logits = views @ views.T / temperature
    logits = logits.masked_fill(torch.eye(len(views), dtype=torch.bool, device=views.device), float("-inf"))
    n = len(first)
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(views.device)
    return F.cross_entropy(logits, targets), (logits.argmax(1) == targets).float().mean()


@dataclass
class SilhouetteContrastOutput:
    loss: Tensor  # () NT-Xent over the regions of the batch
    regions: Tensor  # () how many regions were contrasted
    match: Tensor  # () share of views whose nearest other view is their pair


class SilhouetteContrast(Method):
    """Trains the encoder network; no slots and no masks (a stage, like the VQ-VAE)."""

    method = "silhouette_contrast"
    config_class = SilhouetteContrastConfig

    def __init__(self, config: SilhouetteContrastConfig, architectures: Mapping[str, dict] | None = None):
        super().__init__(config)
        self.network = SilhouetteNet(config.network)
        self.projector = projection_head(config.network.dim, config.projector_hidden, config.projector_dim)

    def forward(self, batch: Batch | Tensor, num_slots: int | None = None) -> SilhouetteContrastOutput:
        images = method_input(batch, num_slots, self.config, "silhouette contrast")
        regions = self.network.regions(images * 2 - 1)
        count = int(regions.max()) + 1
        if count < 2:
            zero = sum(p.sum() for p in self.parameters()) * 0
            return SilhouetteContrastOutput(zero, torch.tensor(count), torch.tensor(0.0))
        views = self.config.views
        embedded = []
        for _ in range(2):
            transforms, shifts = random_transforms(count, views)
            crops = random_morphology(self.network.crops(regions, transforms.to(images), shifts.to(images)),
                                      views.morphology)
            embedded.append(self.projector(self.network.embed(crops)))
        loss, match = nt_xent(*embedded, self.config.temperature)
        return SilhouetteContrastOutput(loss, torch.tensor(count), match.detach())

    def losses(self, outputs: SilhouetteContrastOutput, batch: Batch) -> dict[str, Tensor]:
        return {"loss": outputs.loss, "regions": outputs.regions.float(), "match": outputs.match}

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"network": list(self.network.parameters()) + list(self.projector.parameters())}
