"""Object separability of a guidance representation (MSF Sec. 4.2, Table 4).

Per image, the super-pixels of a representation (B, c, h, w) are clustered by k-means into as
many clusters as the image has ground-truth segments (objects plus background); the
inter-cluster distance (mean distance between cluster centres, higher = objects further
apart) and the intra-cluster distance (mean distance of super-pixels to their centre, lower =
tighter objects) are averaged over images. Super-pixels are L2-normalised first so that
representations of different magnitude (a single-scale and an MSF VQ-VAE) compare on one
scale; the paper does not say how it normalises.
"""

from __future__ import annotations

import torch
from torch import Tensor


def kmeans(points: Tensor, k: int, generator: torch.Generator, iterations: int = 25) -> tuple[Tensor, Tensor]:
    """Lloyd's k-means with k-means++ seeding: (labels (N,), centres (k, c))."""
    n = points.shape[0]
    centres = points[torch.randint(n, (1,), generator=generator)]
    for _ in range(1, k):
        d2 = torch.cdist(points, centres).min(1).values.pow(2)
        weights = d2 / d2.sum() if d2.sum() > 0 else torch.full_like(d2, 1.0 / n)
        centres = torch.cat([centres, points[torch.multinomial(weights, 1, generator=generator)]])
    for _ in range(iterations):
        labels = torch.cdist(points, centres).argmin(1)
        for j in range(k):
            members = points[labels == j]
            if len(members):
                centres[j] = members.mean(0)
    return torch.cdist(points, centres).argmin(1), centres


def image_separability(features: Tensor, k: int, generator: torch.Generator) -> tuple[float, float]:
    """(inter, intra) of one image's super-pixels (N, c) clustered into k clusters."""
    points = torch.nn.functional.normalize(features.float(), dim=-1)
    k = max(1, min(k, points.shape[0]))
    labels, centres = kmeans(points, k, generator)
    intra = float((points - centres[labels]).norm(dim=-1).mean())
    if k < 2:
        return float("nan"), intra
    pairwise = torch.cdist(centres, centres)
    inter = float(pairwise.sum() / (k * (k - 1)))
    return inter, intra


class ObjectSeparability:
    """Accumulates (inter, intra) over batches of representations and instance masks."""

    def __init__(self, seed: int = 0):
        self.generator = torch.Generator().manual_seed(seed)
        self.inter: list[float] = []
        self.intra: list[float] = []

    def update(self, features: Tensor, instance_mask: Tensor, ignore_mask: Tensor | None = None) -> None:
        """``features`` (B, c, h, w); ``instance_mask`` (B, H, W) segment ids (0 = background)."""
        for b in range(features.shape[0]):
            ids = instance_mask[b] if ignore_mask is None else instance_mask[b][~ignore_mask[b].bool()]
            k = int(torch.unique(ids).numel())
            inter, intra = image_separability(features[b].flatten(1).transpose(0, 1), k, self.generator)
            if inter == inter:  # images with one segment have no inter-cluster distance
                self.inter.append(inter)
            self.intra.append(intra)

    def compute(self) -> dict[str, float]:
        def mean(values: list[float]) -> float:
            return sum(values) / len(values) if values else float("nan")

        return {"inter_cluster": mean(self.inter), "intra_cluster": mean(self.intra), "images": len(self.intra)}
