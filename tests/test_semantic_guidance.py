"""GLASS Eq. 2-3 semantic guidance: segments, Hungarian matching, masked BCE."""

import torch

from slotlab.data.sample import IGNORE_INDEX
from slotlab.methods.semantic_guidance import match_slots_to_segments, pseudo_mask_segments, semantic_guidance_loss


def test_segments_one_per_present_class_padded():
    sem = torch.tensor([[[0, 3, 3], [5, 5, 0]], [[0, 0, 2], [0, 0, 0]]])
    ignore = torch.zeros_like(sem, dtype=torch.bool)
    seg, valid = pseudo_mask_segments(sem, ignore)
    assert seg.shape == (2, 2, 2, 3)
    assert valid.tolist() == [[True, True], [True, False]]
    torch.testing.assert_close(seg[0, 0], (sem[0] == 3).float())
    torch.testing.assert_close(seg[0, 1], (sem[0] == 5).float())
    torch.testing.assert_close(seg[1, 0], (sem[1] == 2).float())
    assert seg[1, 1].sum() == 0


def test_ignored_pixels_are_in_no_segment():
    sem = torch.tensor([[[1, 1, IGNORE_INDEX], [2, 2, 0]]])
    ignore = sem == IGNORE_INDEX
    seg, valid = pseudo_mask_segments(torch.where(ignore, 0, sem), ignore)
    assert seg[0, :, 0, 2].sum() == 0
    assert valid.all()


def _slot_masks_from_labels(labels: torch.Tensor, k: int, sharp: float = 8.0) -> torch.Tensor:
    onehot = torch.nn.functional.one_hot(labels, k).permute(0, 3, 1, 2).float()
    return (onehot * sharp).softmax(1)


def test_matching_finds_the_known_assignment():
    # slot 2 covers class 1, slot 0 covers class 4, slot 1 the background
    slots = torch.tensor([[[2, 2, 0, 0], [2, 2, 0, 0], [1, 1, 1, 1]]])
    sem = torch.tensor([[[1, 1, 4, 4], [1, 1, 4, 4], [0, 0, 0, 0]]])
    seg, valid = pseudo_mask_segments(sem, torch.zeros_like(sem, dtype=torch.bool))
    for cost in ("soft", "hard"):
        assignment = match_slots_to_segments(_slot_masks_from_labels(slots, 3), seg, valid, cost)
        assert assignment.tolist() == [[2, 0]]


def test_more_segments_than_slots_leaves_some_unmatched():
    sem = torch.tensor([[[1, 2, 3, 4]]])
    seg, valid = pseudo_mask_segments(sem, torch.zeros_like(sem, dtype=torch.bool))
    masks = _slot_masks_from_labels(torch.tensor([[[0, 1, 0, 1]]]), 2)
    assignment = match_slots_to_segments(masks, seg, valid)
    assert (assignment >= 0).sum() == 2
    assert sorted(assignment[assignment >= 0].tolist()) == [0, 1]


def test_bce_is_low_for_matching_masks_and_high_for_wrong_ones():
    sem = torch.tensor([[[1, 1, 0, 0], [1, 1, 0, 0]]])
    ignore = torch.zeros_like(sem, dtype=torch.bool)
    good = _slot_masks_from_labels(torch.tensor([[[1, 1, 0, 0], [1, 1, 0, 0]]]), 2, sharp=20)
    bad = _slot_masks_from_labels(torch.tensor([[[1, 0, 1, 0], [0, 1, 0, 1]]]), 2, sharp=20)
    assert semantic_guidance_loss(good, sem, ignore).loss < 1e-3
    assert semantic_guidance_loss(bad, sem, ignore).loss > 1.0


def test_ignored_pixels_get_no_gradient():
    torch.manual_seed(0)
    sem = torch.tensor([[[1, 1, 0, 2], [1, 0, 0, 2]]])
    ignore = torch.tensor([[[False, True, False, False], [False, False, True, False]]])
    logits = torch.randn(1, 3, 2, 4, requires_grad=True)
    semantic_guidance_loss(logits.softmax(1), sem, ignore).loss.backward()
    grad = logits.grad.abs().sum(1)[0]
    assert grad[0, 1] == 0 and grad[1, 2] == 0
    assert grad[0, 0] > 0 and grad[0, 3] > 0


def test_unmatched_slots_get_no_gradient():
    sem = torch.tensor([[[1, 1, 0, 0]]])
    ignore = torch.zeros_like(sem, dtype=torch.bool)
    masks = torch.rand(1, 3, 1, 4, requires_grad=True)
    result = semantic_guidance_loss(masks, sem, ignore)
    result.loss.backward()
    matched = int(result.assignment[0, 0])
    for k in range(3):
        assert (masks.grad[0, k].abs().sum() > 0) == (k == matched)


def test_no_segments_gives_zero_loss_with_graph():
    sem = torch.zeros(1, 2, 2, dtype=torch.long)
    masks = torch.rand(1, 3, 2, 2, requires_grad=True)
    loss = semantic_guidance_loss(masks, sem, torch.zeros_like(sem, dtype=torch.bool)).loss
    assert float(loss.detach()) == 0.0
    loss.backward()


def test_connected_components_are_8_connected_and_labelled_consistently():
    from slotlab.methods.semantic_guidance import connected_components

    mask = torch.tensor([[1, 1, 0, 0, 0],
                         [0, 0, 1, 0, 1],
                         [0, 0, 0, 0, 1],
                         [1, 0, 0, 0, 0]], dtype=torch.bool)
    labels = connected_components(torch.stack([mask, torch.zeros_like(mask)]))
    first = labels[0]
    assert (first[~mask] == 0).all() and (first[mask] > 0).all()
    # the diagonal step (0,1)-(1,2) joins; the right pair and the lone corner are their own pieces
    assert first[0, 0] == first[0, 1] == first[1, 2]
    assert first[1, 4] == first[2, 4]
    assert len({int(first[0, 0]), int(first[1, 4]), int(first[3, 0])}) == 3
    assert (labels[1] == 0).all()


def _two_squares_and_a_bar() -> torch.Tensor:
    """24x24: class 1 twice (separate squares), class 2 once (a bar), one speckle pixel of class 2."""
    sem = torch.zeros(1, 24, 24, dtype=torch.long)
    sem[0, 2:8, 2:8] = 1
    sem[0, 14:20, 14:20] = 1
    sem[0, 2:5, 12:22] = 2
    sem[0, 22, 2] = 2
    return sem


def test_component_segments_split_separated_instances_of_a_class():
    sem = _two_squares_and_a_bar()
    ignore = torch.zeros_like(sem, dtype=torch.bool)
    classes, _ = pseudo_mask_segments(sem, ignore)
    pieces, valid = pseudo_mask_segments(sem, ignore, kind="components")
    assert classes.shape[1] == 2
    # the speckle (1 pixel < MIN_COMPONENT_SHARE of 576) is dropped; three objects remain
    assert valid.tolist() == [[True, True, True]]
    expected = [(sem[0] == 1) & (torch.arange(24)[:, None] < 10), (sem[0] == 1) & (torch.arange(24)[:, None] >= 10),
                (sem[0] == 2) & (torch.arange(24)[:, None] < 10)]
    found = {tuple(p.flatten().tolist()) for p in pieces[0].bool()}
    assert found == {tuple(e.flatten().tolist()) for e in expected}


def test_component_guidance_rewards_one_slot_per_instance():
    sem = _two_squares_and_a_bar()
    ignore = torch.zeros_like(sem, dtype=torch.bool)
    rows = torch.arange(24)[:, None]
    per_instance = torch.stack([(sem[0] == 1) & (rows < 10), (sem[0] == 1) & (rows >= 10), sem[0] == 2]).float()
    background = 1 - per_instance.sum(0, keepdim=True)
    masks = torch.cat([per_instance, background])[None].clamp(1e-4, 1)
    by_component = semantic_guidance_loss(masks, sem, ignore, segment_kind="components").loss
    by_class = semantic_guidance_loss(masks, sem, ignore).loss
    assert by_component < 0.01 < by_class


def test_unknown_segment_kind_is_an_error():
    import pytest

    from slotlab.methods.glass import GlassConfig

    sem = _two_squares_and_a_bar()
    with pytest.raises(ValueError, match="components"):
        pseudo_mask_segments(sem, torch.zeros_like(sem, dtype=torch.bool), kind="instances")
    with pytest.raises(ValueError, match="semantic_segments"):
        GlassConfig(semantic_segments="instances")
