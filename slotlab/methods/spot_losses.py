"""SPOT's losses: feature reconstruction (SPOT Eq. 1) and slot-attention distillation from
the teacher's decoder masks to the student's slot attention (SPOT Eq. 5, 6; total Eq. 7)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from slotlab.ops.matching import hungarian_match, pairwise_iou


def reconstruction_loss(prediction: Tensor, target: Tensor) -> Tensor:
    """SPOT Eq. 1: L_REC = ||Y - Y_hat||^2 / (n * d_y), averaged over the batch."""
    return F.mse_loss(prediction, target.detach())


def hard_assignment(attention: Tensor) -> Tensor:
    """SPOT Eq. 5: one-hot(argmax) of (B, N, K) masks, as (B, K, N) float."""
    return F.one_hot(attention.argmax(-1), attention.shape[-1]).transpose(1, 2).float()


@dataclass
class Distillation:
    loss: Tensor  # L_ATT, scalar
    permutation: Tensor  # (B, K): student slot matched to teacher slot i
    iou: Tensor  # (B, K): IoU of each matched pair
    targets: Tensor  # (B, N): teacher slot index per patch (argmax of A_T)
    logits: Tensor  # (B, N, K): student logits, slot i = the one matched to teacher slot i


def match_student_to_teacher(student_attention: Tensor, teacher_attention: Tensor) -> tuple[Tensor, Tensor]:
    """Hungarian matching of the hard masks (SPOT Sec. 3.1) on the cost 1 - IoU.

    Both (B, N, K). Returns (permutation (B, K), iou (B, K)): teacher slot i is matched to
    student slot permutation[b, i], with that IoU.
    """
    iou = pairwise_iou(hard_assignment(teacher_attention), hard_assignment(student_attention))  # (B, K_t, K_s)
    cols = torch.stack([c for _, c in hungarian_match(1 - iou, maximize=False)]).to(iou.device)
    return cols, iou.gather(2, cols.unsqueeze(-1)).squeeze(-1)


def attention_distillation(student_logits: Tensor, student_attention: Tensor, teacher_attention: Tensor) -> Distillation:
    """SPOT Eq. 6: L_ATT = cross-entropy between the matched teacher hard masks A''_T and the
    student's slot attention A_S = softmax(logits), averaged over the n patches (and batch).

    student_logits:    (B, N, K) last-iteration slot-attention logits (before the softmax).
    student_attention: (B, N, K) the student's slot-attention masks (for the matching).
    teacher_attention: (B, N, K) the teacher's decoder masks A_DEC = A_T (no gradient).
    """
    teacher_attention = teacher_attention.detach()
    permutation, iou = match_student_to_teacher(student_attention.detach(), teacher_attention)
    logits = student_logits.gather(2, permutation.unsqueeze(1).expand(-1, student_logits.shape[1], -1))
    targets = teacher_attention.argmax(-1)
    loss = F.cross_entropy(logits.transpose(1, 2), targets)
    return Distillation(loss=loss, permutation=permutation, iou=iou, targets=targets, logits=logits)
