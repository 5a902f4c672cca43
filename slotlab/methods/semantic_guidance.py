"""GLASS's semantic guidance: pseudo-mask segments matched to slots, then BCE (GLASS Eq. 2-3)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence

from slotlab.data.sample import IGNORE_INDEX, one_hot_masks
from slotlab.ops.matching import hungarian_match, pairwise_iou

MATCH_COSTS = ("soft", "hard")
#: What a pseudo-mask segment is: one per class present (GLASS), or each 8-connected piece of
#: a class's region ("components", not in GLASS: separated instances of a class get a segment each).
SEGMENT_KINDS = ("classes", "components")
#: With "components", pieces smaller than this share of the pseudo mask are speckle, not objects.
MIN_COMPONENT_SHARE = 0.002


def connected_components(masks: Tensor) -> Tensor:
    """8-connected component labels of bool masks (..., H, W) -> long tensor of the same shape.

    0 off the masks; each piece of each (H, W) mask has its own label, unique over the whole
    tensor. One ``scipy.ndimage.label`` call whose structure connects pixels within a mask
    only; on the CPU it is about 100x faster than label propagation by max-pooling in torch.
    """
    structure = np.zeros((3,) * masks.dim(), dtype=bool)
    structure[(1,) * (masks.dim() - 2)] = True  # the 3 x 3 neighbourhood inside one mask
    labels, _ = ndimage.label(masks.detach().cpu().numpy(), structure=structure)
    return torch.from_numpy(labels.astype(np.int64)).to(masks.device)


def split_into_components(segments: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
    """Class segments (B, S, H, W) with valid (B, S) -> one segment per connected piece.

    Pieces smaller than ``MIN_COMPONENT_SHARE`` of the mask are dropped. Returns segments
    (B, S', H, W) float padded with empty ones and valid (B, S') bool, pieces in label order.
    """
    h, w = segments.shape[-2:]
    inside = (segments > 0.5) & valid[:, :, None, None]
    # Class segments are disjoint, so one map per image holds every piece's label.
    labels = connected_components(inside).sum(1)
    min_pixels = MIN_COMPONENT_SHARE * h * w
    kept = []
    for image_labels in labels:
        ids, counts = torch.unique(image_labels, return_counts=True)
        kept.append(ids[(ids > 0) & (counts >= min_pixels)])
    ids = pad_sequence(kept, batch_first=True)  # (B, S'), padded with label 0 = no piece
    pieces = (labels[:, None] == ids[:, :, None, None]) & (ids[:, :, None, None] > 0)
    return pieces.to(segments.dtype), ids > 0


def pseudo_mask_segments(
    semantic: Tensor, ignore: Tensor, include_background: bool = False, kind: str = "classes",
) -> tuple[Tensor, Tensor]:
    """Split class-level pseudo masks into binary segments: one per class present (``kind="classes"``,
    GLASS) or one per connected piece of each class's region (``"components"``).

    semantic (B, H, W) class ids (0 background, IGNORE_INDEX uncertain); ignore (B, H, W).
    Returns segments (B, S, H, W) float, S = most segments in one image, padded with
    empty segments, and valid (B, S) bool marking real ones. Ignored pixels are 0 everywhere.
    """
    if kind not in SEGMENT_KINDS:
        raise ValueError(f"semantic segments {kind!r}; choose one of {SEGMENT_KINDS}")
    labels = torch.where(ignore, torch.full_like(semantic, IGNORE_INDEX), semantic.long())
    num_classes = int(labels[labels != IGNORE_INDEX].max().item()) + 1 if (labels != IGNORE_INDEX).any() else 1
    onehot = one_hot_masks(labels, num_classes)  # (B, C, H, W); ignored pixels all-zero
    present = onehot.flatten(2).sum(-1) > 0  # (B, C)
    if not include_background:
        present[:, 0] = False
    count = int(present.sum(1).max().item()) if present.numel() else 0
    # Stable sort puts present classes first, in class order; keep the first ``count`` of them.
    order = torch.sort((~present).to(torch.int8), dim=1, stable=True).indices[:, :count]
    segments = torch.gather(onehot, 1, order[:, :, None, None].expand(-1, -1, *onehot.shape[-2:]))
    valid = torch.gather(present, 1, order)
    segments = segments * valid[:, :, None, None]
    return split_into_components(segments, valid) if kind == "components" else (segments, valid)


def match_slots_to_segments(slot_masks: Tensor, segments: Tensor, valid: Tensor, cost: str = "soft") -> Tensor:
    """GLASS Eq. 2: argmin_P sum_ij -c_ij p_ij with c_ij the IoU of slot i and segment j.

    ``cost="soft"`` (default) scores IoU with the soft slot masks, so early in training,
    when argmax masks are still blobs that overlap no segment, the assignment still follows
    the attention; ``cost="hard"`` uses argmax one-hot slot masks (the usual IoU).
    Returns (B, S) the slot index of each segment, -1 for padding / unmatched segments.
    """
    if cost not in MATCH_COSTS:
        raise ValueError(f"semantic match cost {cost!r}; choose one of {MATCH_COSTS}")
    masks = slot_masks.detach()
    if cost == "hard":
        masks = F.one_hot(masks.argmax(1), masks.shape[1]).movedim(-1, 1).to(masks.dtype)
    iou = pairwise_iou(masks.flatten(2), segments.flatten(2))  # (B, K, S)
    iou = torch.where(valid[:, None, :], iou, torch.full_like(iou, -1.0))  # padding is matched last
    assignment = torch.full(valid.shape, -1, dtype=torch.long)
    for b, (rows, cols) in enumerate(hungarian_match(iou)):
        assignment[b, cols] = rows
    return torch.where(valid.cpu(), assignment, torch.full_like(assignment, -1)).to(slot_masks.device)


@dataclass
class SemanticGuidance:
    loss: Tensor  # scalar
    assignment: Tensor  # (B, S) slot index per segment, -1 if none
    segments: Tensor  # (B, S, H, W)


def semantic_guidance_loss(
    slot_masks: Tensor, semantic: Tensor, ignore: Tensor, cost: str = "soft", include_background: bool = False,
    segment_kind: str = "classes", eps: float = 1e-6,
) -> SemanticGuidance:
    """GLASS Eq. 3, L_semantic: BCE between each matched slot's mask and its pseudo segment.

    slot_masks (B, K, H, W) slot-attention masks in [0, 1], already resized to the pseudo
    mask's resolution. Averaged over matched slots and non-ignored pixels only; unmatched
    slots and ignored (255) pixels contribute nothing, not even gradient. ``segment_kind``:
    what a segment is (:data:`SEGMENT_KINDS`; GLASS: "classes").
    """
    segments, valid = pseudo_mask_segments(semantic, ignore, include_background, segment_kind)
    assignment = match_slots_to_segments(slot_masks, segments, valid, cost)
    b, s = torch.nonzero(assignment >= 0, as_tuple=True)
    if len(b) == 0:
        zero = slot_masks.sum() * 0.0
        return SemanticGuidance(zero, assignment, segments)
    predicted = slot_masks[b, assignment[b, s]].clamp(eps, 1 - eps)
    target = segments[b, s]
    keep = (~ignore[b]).to(predicted.dtype)
    bce = F.binary_cross_entropy(predicted, target, reduction="none") * keep
    loss = bce.sum() / keep.sum().clamp_min(1.0)
    return SemanticGuidance(loss, assignment, segments)
