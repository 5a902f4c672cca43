"""Matching of masks by IoU: the one Hungarian matching used by GLASS's semantic guidance
(GLASS Eq. 2), SPOT's attention distillation and the mIoU metrics, and the slot that best
covers a region (slot edits, the removal test)."""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor


def pairwise_iou(a: Tensor, b: Tensor, eps: float = 1e-8) -> Tensor:
    """IoU between every mask of ``a`` (B, K, P) and of ``b`` (B, M, P) -> (B, K, M).

    Masks may be soft (values in [0, 1]): intersection = sum(a*b) and
    union = sum(a) + sum(b) - intersection, which equals the usual IoU for hard masks.
    Pixels are flattened into P; pass hard masks as float for exact counts.
    """
    a = a.flatten(2).double() if a.dtype == torch.float64 else a.flatten(2).float()
    b = b.flatten(2).to(a.dtype)
    inter = torch.einsum("bkp,bmp->bkm", a, b)
    union = a.sum(-1).unsqueeze(-1) + b.sum(-1).unsqueeze(-2) - inter
    return inter / union.clamp_min(eps)


def hungarian_match(score: Tensor, maximize: bool = True) -> list[tuple[Tensor, Tensor]]:
    """One-to-one assignment for each item of a batch of score matrices (B, K, M).

    Returns, per batch item, (rows, cols) index tensors of length min(K, M): row rows[i]
    is assigned to column cols[i]. With ``maximize`` the total score is maximised
    (GLASS Eq. 2 minimises -sum c_ij p_ij, i.e. maximises the total IoU).
    """
    if score.ndim != 3:
        raise ValueError(f"hungarian_match expects (B, K, M) scores, got {tuple(score.shape)}")
    values = score.detach().cpu().double().numpy()
    out = []
    for matrix in values:
        rows, cols = linear_sum_assignment(np.nan_to_num(matrix), maximize=maximize)
        out.append((torch.as_tensor(rows, dtype=torch.long), torch.as_tensor(cols, dtype=torch.long)))
    return out


def slot_for_region(masks: Tensor, region: Tensor) -> int:
    """The slot whose hard mask (argmax of masks (K, H, W)) best overlaps ``region`` (H, W) by IoU."""
    hard = torch.nn.functional.one_hot(masks.argmax(0), masks.shape[0]).permute(2, 0, 1)
    return int(pairwise_iou(hard[None].float(), region[None, None].float())[0, :, 0].argmax())
