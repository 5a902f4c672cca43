"""SPOT's distillation loss (Eq. 5-7): parity with the authors' att_matching + CE, properties."""

from __future__ import annotations

import torch

from slotlab.methods.spot_losses import attention_distillation, hard_assignment
from tests.parity_cases import load_case


def as_tokens(masks: torch.Tensor) -> torch.Tensor:
    """(B, K, H, W) -> (B, N, K)."""
    return masks.flatten(2).transpose(1, 2)


def test_distillation_matches_spots():
    case = load_case("spot", "spot_distill")
    x, y = case.inputs, case.outputs
    out = attention_distillation(
        x["student_attn_logits"], as_tokens(x["student_slots_attns"]), as_tokens(x["teacher_dec_slots_attns"])
    )
    b, k, h, w = x["teacher_dec_slots_attns"].shape
    assert torch.equal(out.targets.view(b, h, w), y["dec_masks"])
    assert torch.equal(out.permutation, y["permutation_indices"])
    torch.testing.assert_close(out.iou.float(), y["matching_scores"], atol=1e-6, rtol=0)
    torch.testing.assert_close(out.logits.transpose(1, 2).reshape(b, k, h, w), y["logits_permuted"], atol=1e-6, rtol=0)
    torch.testing.assert_close(out.loss, y["ce_loss"], atol=1e-5, rtol=1e-5)
    weight = case.meta["constructor_args"]["ce_weight"]
    torch.testing.assert_close(x["student_loss_mse"] + weight * out.loss, y["total_loss"], atol=1e-5, rtol=1e-5)


def test_matching_undoes_a_relabelling_and_the_loss_reaches_the_logits():
    torch.manual_seed(0)
    logits = torch.randn(2, 12, 4, requires_grad=True)
    student = logits.softmax(-1)
    shuffle = torch.tensor([2, 0, 3, 1])
    teacher = student.detach()[..., shuffle]  # the teacher's slot i is the student's slot shuffle[i]
    out = attention_distillation(logits, student, teacher)
    assert torch.equal(out.permutation, shuffle.expand(2, -1))
    occupied = hard_assignment(teacher).sum(-1) > 0
    assert occupied.any() and torch.allclose(out.iou[occupied], torch.ones(int(occupied.sum())))
    out.loss.backward()
    assert logits.grad.abs().sum() > 0
