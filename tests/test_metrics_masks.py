"""slotlab.metrics.masks against scikit-learn, an independent per-image reference and
hand-made cases with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score

from slotlab.data.sample import one_hot_masks
from slotlab.metrics.contingency import (
    contingency,
    contingency_from_labels,
    single_threaded,
    slot_assignment,
    target_labels,
)
from slotlab.metrics.masks import BindingThresholds, ari, mask_metrics, mbo, miou, slot_binding, slot_binding_counts

# ---------------------------------------------------------------------------------------
# Independent reference: numpy loops over one image, scipy Hungarian, sklearn ARI.
# Inputs: slot label map (H, W) in [0, K), ground-truth label map (H, W) in [0, M] with M
# meaning "unlabelled", ignore map (H, W) bool.
# ---------------------------------------------------------------------------------------


def ref_iou_matrix(slots, gt, scored, num_slots, objects):
    iou = np.zeros((num_slots, len(objects)))
    for j, m in enumerate(objects):
        for k in range(num_slots):
            inter = np.sum((slots == k) & (gt == m) & scored)
            union = np.sum(((slots == k) | (gt == m)) & scored)
            iou[k, j] = inter / union if union else 0.0
    return iou


def ref_present_objects(gt, scored, num_channels, ignore_background):
    first = 1 if ignore_background else 0
    return [m for m in range(first, num_channels) if np.any((gt == m) & scored)]


def ref_mbo(slots, gt, ignore, num_slots, num_channels, ignore_background=True):
    scored = ~ignore
    objects = ref_present_objects(gt, scored, num_channels, ignore_background)
    if not objects:
        return math.nan
    return ref_iou_matrix(slots, gt, scored, num_slots, objects).max(0).mean()


def ref_miou(slots, gt, ignore, num_slots, num_channels, ignore_background=True):
    scored = ~ignore
    objects = ref_present_objects(gt, scored, num_channels, ignore_background)
    if not objects:
        return math.nan
    iou = ref_iou_matrix(slots, gt, scored, num_slots, objects)
    rows, cols = linear_sum_assignment(iou, maximize=True)
    return iou[rows, cols].sum() / len(objects)


def ref_ari(slots, gt, ignore, num_channels, foreground):
    first = 1 if foreground else 0
    keep = ~ignore & (gt >= first) & (gt < num_channels)
    if not keep.any():
        return math.nan
    return adjusted_rand_score(gt[keep], slots[keep])


def ref_binding(slots, gt, ignore, num_slots, num_channels, cover=0.5, bg_share=0.5):
    """Counts (SO, PO, GO, BG) by the documented rules, one slot at a time."""
    scored = ~ignore
    counts = [0, 0, 0, 0]
    for k in range(num_slots):
        slot = (slots == k) & scored
        area = slot.sum()
        if area == 0:
            continue
        on_objects = sum(np.sum(slot & (gt == m)) for m in range(1, num_channels))
        if 1 - on_objects / area >= bg_share:
            counts[3] += 1
            continue
        covered = 0
        for m in range(1, num_channels):
            obj = (gt == m) & scored
            if obj.sum() and np.sum(slot & obj) / obj.sum() > cover:
                covered += 1
        counts[0 if covered == 1 else 1 if covered == 0 else 2] += 1
    return counts


def make_inputs(slot_maps, gt_maps, num_slots, num_channels, ignore=None):
    """Hard one-hot predictions and targets (M = num_channels means unlabelled)."""
    slot_maps = torch.as_tensor(np.asarray(slot_maps))
    gt_maps = torch.as_tensor(np.asarray(gt_maps))
    pred = torch.nn.functional.one_hot(slot_maps.long(), num_slots).movedim(-1, 1).float()
    target = one_hot_masks(gt_maps.long(), num_channels)
    ignore = None if ignore is None else torch.as_tensor(np.asarray(ignore), dtype=torch.bool)
    return pred, target, ignore


def random_case(seed, batch=4, size=(9, 11), num_slots=5, num_channels=5, unlabelled=0.1, ignored=0.1):
    rng = np.random.default_rng(seed)
    slots = rng.integers(0, num_slots, (batch, *size))
    # Blocky ground truth so objects have sizeable areas; some pixels unlabelled, some ignored.
    gt = rng.integers(0, num_channels, (batch, size[0] // 3 + 1, size[1] // 3 + 1)).repeat(3, 1).repeat(3, 2)
    gt = gt[:, : size[0], : size[1]]
    gt = np.where(rng.random(gt.shape) < unlabelled, num_channels, gt)
    ignore = rng.random(gt.shape) < ignored
    return slots, gt, ignore


def assert_close(actual: torch.Tensor, expected: list[float], tol=1e-12):
    expected = torch.tensor(expected, dtype=torch.float64)
    assert actual.dtype == torch.float64
    assert torch.equal(torch.isnan(actual), torch.isnan(expected)), (actual, expected)
    defined = ~torch.isnan(expected)
    assert torch.allclose(actual[defined], expected[defined], atol=tol, rtol=0), (actual, expected)


# ---------------------------------------------------------------------------------------
# Against the references
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("foreground", [False, True])
def test_ari_matches_sklearn(seed, foreground):
    slots, gt, ignore = random_case(seed)
    pred, target, ign = make_inputs(slots, gt, 5, 5, ignore)
    expected = [ref_ari(s, g, i, 5, foreground) for s, g, i in zip(slots, gt, ignore)]
    assert_close(ari(pred, target, ign, foreground=foreground), expected)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("ignore_background", [True, False])
def test_mbo_and_miou_match_bruteforce(seed, ignore_background):
    slots, gt, ignore = random_case(seed, num_slots=4, num_channels=6)
    pred, target, ign = make_inputs(slots, gt, 4, 6, ignore)
    expected_mbo = [ref_mbo(s, g, i, 4, 6, ignore_background) for s, g, i in zip(slots, gt, ignore)]
    expected_miou = [ref_miou(s, g, i, 4, 6, ignore_background) for s, g, i in zip(slots, gt, ignore)]
    assert_close(mbo(pred, target, ign, ignore_background), expected_mbo)
    assert_close(miou(pred, target, ign, ignore_background), expected_miou)


@pytest.mark.parametrize("seed", range(6))
def test_slot_binding_matches_bruteforce(seed):
    slots, gt, ignore = random_case(seed, num_slots=6, num_channels=4, unlabelled=0.2)
    pred, target, ign = make_inputs(slots, gt, 6, 4, ignore)
    counts = slot_binding_counts(pred, target, ign)
    expected = [ref_binding(s, g, i, 6, 4) for s, g, i in zip(slots, gt, ignore)]
    assert torch.equal(counts, torch.tensor(expected, dtype=torch.float64))


def test_soft_predictions_use_the_argmax():
    rng = np.random.default_rng(0)
    scores = torch.as_tensor(rng.random((3, 4, 8, 8)), dtype=torch.float32)
    slots = scores.argmax(1).numpy()
    _, gt, ignore = random_case(1, batch=3, size=(8, 8), num_slots=4, num_channels=4)
    _, target, ign = make_inputs(slots, gt, 4, 4, ignore)
    expected = [ref_mbo(s, g, i, 4, 4) for s, g, i in zip(slots, gt, ignore)]
    assert_close(mbo(scores, target, ign), expected)


def test_mask_metrics_equals_the_single_functions():
    slots, gt, ignore = random_case(3)
    pred, target, ign = make_inputs(slots, gt, 5, 5, ignore)
    out = mask_metrics(pred, target, ign, ("ari", "fg_ari", "mbo", "miou", "slot_binding"), if_empty="one")
    assert torch.equal(out["ari"], ari(pred, target, ign, if_empty="one"))
    assert torch.equal(out["fg_ari"], ari(pred, target, ign, foreground=True, if_empty="one"))
    assert torch.equal(out["mbo"], mbo(pred, target, ign))
    assert torch.equal(out["miou"], miou(pred, target, ign))
    shares = slot_binding(pred, target, ign)
    for key in ("so", "po", "go", "bg"):
        assert torch.equal(out[key], shares[key])


# ---------------------------------------------------------------------------------------
# Hand-made cases with known answers
# ---------------------------------------------------------------------------------------


def two_objects_gt():
    """8x8: background, object 1 = top-left 4x4 (16 px), object 2 = bottom-right 2x4 (8 px)."""
    gt = np.zeros((8, 8), int)
    gt[:4, :4] = 1
    gt[6:, 4:] = 2
    return gt


def test_perfect_segmentation_scores_one_everywhere():
    gt = two_objects_gt()
    pred, target, _ = make_inputs([gt], [gt], 3, 3)
    out = mask_metrics(pred, target, None, ("ari", "fg_ari", "mbo", "miou", "slot_binding"), ignore_background=True)
    for key in ("ari", "fg_ari", "mbo", "miou"):
        assert_close(out[key], [1.0])
    assert_close(mbo(pred, target, ignore_background=False), [1.0])
    assert torch.equal(slot_binding_counts(pred, target), torch.tensor([[2.0, 0.0, 0.0, 1.0]], dtype=torch.float64))


def test_everything_in_one_slot():
    gt = two_objects_gt()
    pred, target, _ = make_inputs([np.zeros_like(gt)], [gt], 4, 3)
    # One predicted cluster against two ground-truth clusters: ARI 0.
    assert_close(ari(pred, target, foreground=True), [0.0])
    # IoU of each object with the whole image: 16/64 and 8/64.
    assert_close(mbo(pred, target), [(16 / 64 + 8 / 64) / 2])
    # One non-empty slot can be matched to one object only: the larger.
    assert_close(miou(pred, target), [(16 / 64 + 0) / 2])
    # The slot lies mostly (40/64) on background.
    assert torch.equal(slot_binding_counts(pred, target), torch.tensor([[0.0, 0.0, 0.0, 1.0]], dtype=torch.float64))


def test_more_objects_than_slots_counts_unmatched_objects_as_zero():
    gt = np.zeros((6, 6), int)
    gt[:, :2], gt[:, 2:4], gt[:, 4:] = 1, 2, 3  # three 12-px columns, no background
    slots = np.zeros_like(gt)
    slots[:, 2:] = 1  # slot 0 = object 1 exactly, slot 1 = objects 2 + 3
    pred, target, _ = make_inputs([slots], [gt], 2, 4)
    assert_close(mbo(pred, target), [(1.0 + 0.5 + 0.5) / 3])
    assert_close(miou(pred, target), [(1.0 + 0.5 + 0.0) / 3])
    # Slot 1 covers all of objects 2 and 3: a group of objects.
    assert torch.equal(slot_binding_counts(pred, target), torch.tensor([[1.0, 0.0, 1.0, 0.0]], dtype=torch.float64))


def test_object_split_into_parts_counts_parts():
    gt = np.zeros((4, 8), int)
    gt[:, :6] = 1  # object of 24 px, background 8 px
    slots = np.zeros_like(gt)
    slots[:, 3:6] = 1
    slots[:, 6:] = 2
    pred, target, _ = make_inputs([slots], [gt], 3, 2)
    # Each half holds exactly half of the object: not more than `cover`, so both are parts.
    assert torch.equal(slot_binding_counts(pred, target), torch.tensor([[0.0, 2.0, 0.0, 1.0]], dtype=torch.float64))
    assert torch.equal(
        slot_binding_counts(pred, target, thresholds=BindingThresholds(cover=0.4)),
        torch.tensor([[2.0, 0.0, 0.0, 1.0]], dtype=torch.float64),
    )
    shares = slot_binding(pred, target)
    assert_close(shares["po"], [2 / 3])
    assert_close(shares["bg"], [1 / 3])


def test_image_without_objects():
    gt = np.zeros((5, 5), int)
    pred, target, _ = make_inputs([np.arange(25).reshape(5, 5) % 2], [gt], 2, 1)
    assert_close(mbo(pred, target), [math.nan])
    assert_close(miou(pred, target), [math.nan])
    assert_close(ari(pred, target, foreground=True), [math.nan])
    assert_close(ari(pred, target, foreground=True, if_empty="one"), [1.0])
    # Counting the background as a segment makes the image defined again.
    assert_close(mbo(pred, target, ignore_background=False), [max(13, 12) / 25])
    # All slots are background slots.
    assert_close(slot_binding(pred, target)["bg"], [1.0])


def test_degenerate_ari_is_one():
    gt = np.ones((4, 4), int)  # a single object, no background
    pred, target, _ = make_inputs([np.zeros_like(gt)], [gt], 3, 2)
    assert_close(ari(pred, target, foreground=True), [1.0])
    assert adjusted_rand_score(gt.ravel(), np.zeros(16)) == 1.0


def test_ignored_pixels_are_dropped_from_prediction_and_target():
    gt = two_objects_gt()
    slots = gt.copy()
    slots[:4, 4:] = 1  # slot 1 also covers a 4x4 background area ...
    ignore = np.zeros_like(gt, bool)
    ignore[:4, 4:] = True  # ... which is ignored
    pred, target, ign = make_inputs([slots], [gt], 3, 3, [ignore])
    assert_close(mbo(pred, target), [(16 / 32 + 1.0) / 2])
    assert_close(mbo(pred, target, ign), [1.0])
    assert_close(miou(pred, target, ign), [1.0])
    # Whatever the prediction says on ignored pixels does not matter.
    other = slots.copy()
    other[ignore] = 2
    pred2, _, _ = make_inputs([other], [gt], 3, 3)
    for metric in (mbo, miou):
        assert torch.equal(metric(pred2, target, ign), metric(pred, target, ign))


def test_unlabelled_pixels_count_in_slot_areas_but_in_no_segment():
    gt = np.zeros((4, 4), int)
    gt[:2] = 1
    gt[2:] = 2  # value 2 = M: unlabelled
    slots = np.zeros_like(gt)  # one slot over everything
    pred, target, _ = make_inputs([slots], [gt], 2, 2)
    assert_close(mbo(pred, target), [8 / 16])  # the slot area includes the unlabelled half
    assert_close(mbo(pred, target, ignore_background=False), [8 / 16])  # background absent
    assert_close(ari(pred, target), [1.0])  # only the 8 labelled pixels: one cluster each


def test_absent_channels_are_not_objects():
    gt = two_objects_gt()
    pred, target, _ = make_inputs([gt], [gt], 3, 3)
    padded = torch.cat([target, torch.zeros(1, 4, 8, 8)], 1)  # channels 3..6 empty
    for metric in (mbo, miou):
        assert torch.equal(metric(pred, padded), metric(pred, target))


def test_empty_prediction_channels_and_more_slots_than_objects():
    gt = two_objects_gt()
    pred, target, _ = make_inputs([gt], [gt], 7, 3)  # slots 3..6 never win
    assert_close(miou(pred, target), [1.0])
    assert torch.equal(slot_binding_counts(pred, target).sum(), torch.tensor(3.0, dtype=torch.float64))


# ---------------------------------------------------------------------------------------
# Invariances
# ---------------------------------------------------------------------------------------


@st.composite
def segmentation_case(draw):
    height, width = draw(st.integers(2, 7)), draw(st.integers(2, 7))
    num_slots, num_channels = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    pixels = height * width
    slots = np.array(draw(st.lists(st.integers(0, num_slots - 1), min_size=pixels, max_size=pixels))).reshape(height, width)
    gt = np.array(draw(st.lists(st.integers(0, num_channels), min_size=pixels, max_size=pixels))).reshape(height, width)
    ignore = np.array(draw(st.lists(st.booleans(), min_size=pixels, max_size=pixels))).reshape(height, width)
    slot_perm = np.array(draw(st.permutations(range(num_slots))))
    object_perm = np.array([0] + list(draw(st.permutations(range(1, num_channels)))))
    return slots, gt, ignore, num_slots, num_channels, slot_perm, object_perm


def all_scores(slots, gt, ignore, num_slots, num_channels):
    pred, target, ign = make_inputs([slots], [gt], num_slots, num_channels, [ignore])
    out = mask_metrics(pred, target, ign, ("ari", "fg_ari", "mbo", "miou", "slot_binding"))
    out["mbo_bg"] = mbo(pred, target, ign, ignore_background=False)
    out["miou_bg"] = miou(pred, target, ign, ignore_background=False)
    return out


@settings(max_examples=60, deadline=None)
@given(segmentation_case())
def test_scores_do_not_depend_on_slot_or_object_order(case):
    slots, gt, ignore, num_slots, num_channels, slot_perm, object_perm = case
    base = all_scores(slots, gt, ignore, num_slots, num_channels)
    relabelled_gt = np.where(gt < num_channels, object_perm[np.minimum(gt, num_channels - 1)], gt)
    permuted = all_scores(slot_perm[slots], relabelled_gt, ignore, num_slots, num_channels)
    for key, value in base.items():
        assert torch.allclose(value, permuted[key], atol=1e-12, equal_nan=True), key


@settings(max_examples=40, deadline=None)
@given(segmentation_case())
def test_bruteforce_agreement_on_arbitrary_cases(case):
    slots, gt, ignore, num_slots, num_channels, _, _ = case
    out = all_scores(slots, gt, ignore, num_slots, num_channels)
    assert_close(out["mbo"], [ref_mbo(slots, gt, ignore, num_slots, num_channels)])
    assert_close(out["miou_bg"], [ref_miou(slots, gt, ignore, num_slots, num_channels, False)])
    assert_close(out["fg_ari"], [ref_ari(slots, gt, ignore, num_channels, True)])


# ---------------------------------------------------------------------------------------
# Building blocks and input checks
# ---------------------------------------------------------------------------------------


def test_slot_assignment_equals_argmax_including_ties():
    scores = torch.randint(0, 3, (5, 6, 13, 17)).float()  # many ties
    assert torch.equal(slot_assignment(scores), scores.argmax(1))
    half = scores.half()
    assert torch.equal(slot_assignment(half), half.float().argmax(1))


def test_target_labels_and_contingency_counts():
    gt = torch.tensor([[[0, 1, 2], [2, 2, 3]]])
    target = one_hot_masks(gt, 3)  # label 3 -> no channel
    assert torch.equal(target_labels(target), torch.tensor([[[0, 1, 2], [2, 2, -1]]]))
    pred = torch.nn.functional.one_hot(torch.tensor([[[0, 0, 1], [1, 1, 1]]]), 2).movedim(-1, 1).float()
    table = contingency(pred, target)
    assert torch.equal(table.overlap, torch.tensor([[[1.0, 1.0, 0.0], [0.0, 0.0, 3.0]]], dtype=torch.float64))
    assert torch.equal(table.slot_area, torch.tensor([[2.0, 4.0]], dtype=torch.float64))


def test_slot_indices_out_of_range_are_rejected():
    labels = torch.zeros(1, 2, 2, dtype=torch.long)
    with pytest.raises(ValueError, match=r"slot indices must lie in \[0, 3\)"):
        contingency_from_labels(torch.full((1, 2, 2), 3), labels, num_slots=3, num_labels=1)


def test_single_threaded_restores_the_thread_count():
    before = torch.get_num_threads()
    with pytest.raises(RuntimeError):
        with single_threaded():
            assert torch.get_num_threads() == 1
            raise RuntimeError
    assert torch.get_num_threads() == before


def test_bool_targets_are_accepted():
    gt = two_objects_gt()
    pred, target, _ = make_inputs([gt], [gt], 3, 3)
    assert torch.equal(mbo(pred, target.bool()), mbo(pred, target))


@pytest.mark.parametrize(
    "bad_value, where",
    [(1.0, (0, 1, 0, 0)), (0.5, (0, 0, 0, 0))],  # a second channel set / a non-binary value
)
def test_non_one_hot_targets_are_rejected(bad_value, where):
    target = one_hot_masks(torch.zeros(1, 2, 2, dtype=torch.long), 2)
    target[where] = bad_value
    with pytest.raises(ValueError, match="one-hot"):
        mbo(torch.rand(1, 3, 2, 2), target)


def test_shape_errors_name_the_fix():
    with pytest.raises(ValueError, match="resize_masks_soft"):
        mbo(torch.rand(1, 3, 4, 4), one_hot_masks(torch.zeros(1, 5, 5, dtype=torch.long), 2))
    with pytest.raises(ValueError, match="pred must be"):
        mbo(torch.rand(3, 4, 4), one_hot_masks(torch.zeros(1, 4, 4, dtype=torch.long), 2))
    with pytest.raises(ValueError, match="ignore must be"):
        target = one_hot_masks(torch.zeros(1, 4, 4, dtype=torch.long), 2)
        mbo(torch.rand(1, 3, 4, 4), target, torch.zeros(4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="if_empty"):
        ari(torch.rand(1, 3, 4, 4), one_hot_masks(torch.zeros(1, 4, 4, dtype=torch.long), 2), if_empty="zero")
    with pytest.raises(ValueError, match="valid names"):
        mask_metrics(torch.rand(1, 3, 4, 4), one_hot_masks(torch.zeros(1, 4, 4, dtype=torch.long), 2), metrics=("fgari",))
    with pytest.raises(ValueError, match="cover"):
        BindingThresholds(cover=1.5)


def test_large_batch_spans_several_chunks():
    """Chunked processing (a few images at a time) must equal per-image results."""
    slots, gt, ignore = random_case(7, batch=3, size=(600, 600), num_slots=7, num_channels=8)
    pred, target, ign = make_inputs(slots, gt, 7, 8, ignore)
    together = mask_metrics(pred, target, ign, ("ari", "mbo", "miou", "slot_binding"))
    for b in range(3):
        alone = mask_metrics(pred[b : b + 1], target[b : b + 1], ign[b : b + 1], ("ari", "mbo", "miou", "slot_binding"))
        for key, value in alone.items():
            assert torch.allclose(together[key][b : b + 1], value, equal_nan=True), key
