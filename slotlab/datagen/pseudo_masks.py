"""Pseudo semantic masks from diffusion attention: aggregate, refine, threshold.

GLASS Sec. 4, "Pseudo ground-truth generation module", following Dataset Diffusion:

1. ``combine_resolutions``: the per-class cross-attention maps A_CA, averaged over steps,
   layers and heads at each captured resolution, resized to the self-attention
   resolution and averaged over resolutions.
2. ``refine_with_self_attention``: M_ref = (A_SA)^k A_CA with k = 4, computed as k
   batched matrix-vector products (never a matrix power).
3. ``minmax_normalise``: each refined class map scaled to [0, 1].
4. ``upsample_to_image``: bicubic resize to the image size.
5. ``threshold_pseudo_mask``: per-pixel argmax over classes and range thresholding
   (supplement Sec. 2, "Pseudo labels").

``pseudo_semantic_mask`` runs all five. Batches hold a different number of classes per
image: class maps are padded to the largest count and padding is marked by class id 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from slotlab.data.sample import IGNORE_INDEX

#: Range thresholds (low, high) on the objectness score: the GLASS supplement (Sec. 2,
#: "Pseudo labels") says 0.4 / 0.6; the Dataset Diffusion code uses 0.5 / 0.6.
THRESHOLD_PRESETS: dict[str, tuple[float, float]] = {"paper": (0.4, 0.6), "reference-code": (0.5, 0.6)}


@dataclass(frozen=True)
class PseudoMaskConfig:
    """Refinement power k and the range thresholds (defaults: the paper)."""

    refine_power: int = 4
    threshold_low: float = THRESHOLD_PRESETS["paper"][0]
    threshold_high: float = THRESHOLD_PRESETS["paper"][1]

    def __post_init__(self) -> None:
        if self.refine_power < 0:
            raise ValueError(f"pseudo_masks.refine_power must be >= 0, got {self.refine_power}")
        if not 0.0 <= self.threshold_low <= self.threshold_high <= 1.0:
            raise ValueError(
                "pseudo_masks thresholds need 0 <= threshold_low <= threshold_high <= 1, got "
                f"{self.threshold_low} and {self.threshold_high}"
            )


def combine_resolutions(maps_by_resolution: dict[int, Tensor], size: int) -> Tensor:
    """GLASS Sec. 4: A_CA = mean over resolutions of the class maps resized to ``size``.

    ``maps_by_resolution[r]``: (B, K, r, r) maps already averaged over steps, layers and
    heads at resolution r. Resizing is bicubic, as in the Dataset Diffusion code.
    """
    if not maps_by_resolution:
        raise ValueError("no cross-attention maps were captured: check the capture resolutions and steps")
    resized = [
        maps if maps.shape[-1] == size else F.interpolate(maps, size=(size, size), mode="bicubic", align_corners=False)
        for maps in maps_by_resolution.values()
    ]
    return torch.stack(resized).mean(0)


def refine_with_self_attention(cross: Tensor, self_attention: Tensor, power: int = 4) -> Tensor:
    """GLASS Sec. 4 (Dataset Diffusion's self-attention exponentiation): M_ref = A_SA^k A_CA.

    cross: (B, K, h, w) class maps; self_attention: (B, N, N) with N = h*w, row = query
    pixel. Applies A_SA ``power`` times to the K maps as batched matrix products, which
    costs k N^2 K instead of the ~2 log2(k) N^3 of forming the matrix power.
    """
    b, k, h, w = cross.shape
    if self_attention.shape != (b, h * w, h * w):
        raise ValueError(
            f"self-attention must be (B, N, N) = ({b}, {h * w}, {h * w}) for {h}x{w} class maps, "
            f"got {tuple(self_attention.shape)}"
        )
    # Rows of x are class maps: x A^T = (A x^T)^T applies A to every map; multiplying by
    # the transposed view runs as one GEMM per image without copying A.
    x = cross.reshape(b, k, h * w)
    transposed = self_attention.mT
    for _ in range(power):
        x = x @ transposed
    return x.reshape(b, k, h, w)


def minmax_normalise(maps: Tensor, eps: float = 1e-12) -> Tensor:
    """Each map of (B, K, h, w) scaled to [0, 1] over its pixels; a constant map -> 0."""
    flat = maps.flatten(2)
    low = flat.amin(-1, keepdim=True)
    high = flat.amax(-1, keepdim=True)
    return ((flat - low) / (high - low).clamp_min(eps)).reshape(maps.shape)


def upsample_to_image(maps: Tensor, size: tuple[int, int]) -> Tensor:
    """Bicubic resize of (B, K, h, w) maps to the image size (H, W) (as Dataset Diffusion)."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps, size=size, mode="bicubic", align_corners=False)


def threshold_pseudo_mask(maps: Tensor, class_ids: Tensor, low: float, high: float) -> Tensor:
    """Supplement Sec. 2 "Pseudo labels": range thresholding of the refined class maps.

    maps: (B, K, H, W) normalised scores; class_ids: (B, K) class id of each map, 0 for
    padding. The objectness score of a pixel is its highest class score: below ``low``
    the pixel is background (0), at or above ``high`` it takes the class with the
    highest score, in between it is uncertain (IGNORE_INDEX = 255). An image without a
    class says nothing about its pixels: all of them are uncertain.
    """
    valid = (class_ids > 0)[:, :, None, None]
    scores = maps.masked_fill(~valid, float("-inf"))
    objectness, best = scores.max(dim=1)  # (B, H, W)
    labels = torch.gather(class_ids, 1, best.flatten(1)).reshape(best.shape)
    mask = torch.where(objectness >= high, labels, torch.full_like(labels, IGNORE_INDEX))
    mask = torch.where(objectness < low, torch.zeros_like(mask), mask)
    no_class = ~valid.flatten(1).any(1)
    mask[no_class] = IGNORE_INDEX
    return mask


def pseudo_semantic_mask(
    cross_by_resolution: dict[int, Tensor],
    self_attention: Tensor,
    class_ids: Tensor,
    image_size: tuple[int, int],
    config: PseudoMaskConfig = PseudoMaskConfig(),
) -> Tensor:
    """GLASS Sec. 4 pseudo ground truth M_gen: (B, H, W) int64 class ids, 0 background, 255 uncertain.

    cross_by_resolution: {r: (B, K, r, r)}; self_attention: (B, N, N) at resolution
    sqrt(N); class_ids: (B, K) label-set ids of the K class maps (0 = padding).
    """
    size = int(round(self_attention.shape[-1] ** 0.5))
    cross = combine_resolutions(cross_by_resolution, size)
    refined = refine_with_self_attention(cross, self_attention, config.refine_power)
    scores = upsample_to_image(minmax_normalise(refined), image_size)
    return threshold_pseudo_mask(scores, class_ids, config.threshold_low, config.threshold_high)
