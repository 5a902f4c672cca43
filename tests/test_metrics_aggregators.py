"""Aggregators: means over images with NaN skipping, pooled slot binding, state merging
(what multi-process evaluation relies on) and the dataset-level class mIoU."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from slotlab.data.sample import one_hot_masks
from slotlab.metrics.aggregators import DatasetSemanticIoU, MaskMetrics
from slotlab.metrics.masks import mask_metrics, slot_binding_counts


def random_batch(seed, batch=4, size=(12, 10), num_slots=4, num_channels=4, empty_images=()):
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, num_channels, (batch, size[0] // 2, size[1] // 2), generator=gen)
    labels = labels.repeat_interleave(2, 1).repeat_interleave(2, 2)
    for b in empty_images:
        labels[b] = 0  # background only: no object
    pred = torch.rand(batch, num_slots, *size, generator=gen)
    ignore = torch.rand(batch, *size, generator=gen) < 0.1
    return pred, one_hot_masks(labels, num_channels), ignore


METRICS = ("ari", "fg_ari", "mbo", "miou", "slot_binding")


def test_means_skip_nan_images_and_count_them():
    batches = [random_batch(0, empty_images=(1,)), random_batch(1, empty_images=(0, 3))]
    metric = MaskMetrics(metrics=METRICS)
    per_image = {k: [] for k in ("ari", "fg_ari", "mbo", "miou")}
    counts = torch.zeros(4, dtype=torch.float64)
    for pred, target, ignore in batches:
        metric.update(pred, target, ignore)
        values = mask_metrics(pred, target, ignore, METRICS)
        for key in per_image:
            per_image[key].append(values[key])
        counts += slot_binding_counts(pred, target, ignore).sum(0)
    result = metric.compute()
    for key, chunks in per_image.items():
        values = torch.cat(chunks)
        defined = ~torch.isnan(values)
        assert result[key] == pytest.approx(float(values[defined].mean()), abs=1e-12)
        assert result[f"n_{key}"] == int(defined.sum())
        assert result[f"skipped_{key}"] == int((~defined).sum())
    assert result["skipped_mbo"] == 3 and result["skipped_fg_ari"] == 3 and result["skipped_ari"] == 0
    # Slot binding pools slots over the dataset.
    for index, key in enumerate(("so", "po", "go", "bg")):
        assert result[key] == pytest.approx(float(counts[index] / counts.sum()), abs=1e-12)
    assert result["n_slots"] == int(counts.sum())


def test_merged_states_equal_one_pass():
    """Sum states: two workers' states merged give the single-process result exactly."""
    batches = [random_batch(seed) for seed in range(4)]
    whole, first, second = (MaskMetrics(metrics=METRICS) for _ in range(3))
    for i, batch in enumerate(batches):
        whole.update(*batch)
        (first if i % 2 else second).update(*batch)
    first.merge_state(second)
    assert first.compute() == pytest.approx(whole.compute(), abs=1e-12)


def test_if_empty_one_counts_images_without_foreground_as_one():
    pred, target, ignore = random_batch(2, batch=2, empty_images=(0,))
    one = MaskMetrics(metrics=("fg_ari",), if_empty="one")
    one.update(pred, target, ignore)
    values = mask_metrics(pred, target, ignore, ("fg_ari",))["fg_ari"]
    assert one.compute()["fg_ari"] == pytest.approx((1.0 + float(values[1])) / 2)
    assert one.compute()["n_fg_ari"] == 2


def test_nothing_defined_gives_nan_not_an_error():
    metric = MaskMetrics(metrics=("mbo",))
    pred, target, ignore = random_batch(3, batch=2, empty_images=(0, 1))
    metric.update(pred, target, ignore)
    result = metric.compute()
    assert math.isnan(result["mbo"]) and result["n_mbo"] == 0 and result["skipped_mbo"] == 2


def test_bad_arguments():
    with pytest.raises(ValueError, match="valid names"):
        MaskMetrics(metrics=("mBO",))
    with pytest.raises(ValueError, match="if_empty"):
        MaskMetrics(if_empty="zero")
    with pytest.raises(ValueError, match="num_classes"):
        DatasetSemanticIoU(num_classes=0)


# ---------------------------------------------------------------------------------------
# Dataset-level class mIoU
# ---------------------------------------------------------------------------------------


def semantic_reference(batches, num_classes, ignore_background):
    """Per image: Hungarian slot -> present class; unmatched slots predict background (or
    nothing); accumulate a confusion matrix; IoU per class present in the ground truth."""
    confusion = np.zeros((num_classes + 1, num_classes))
    for pred, labels, ignore in batches:
        slots = pred.argmax(1).numpy()
        labels, ignore = labels.numpy(), ignore.numpy()
        for s, g, i in zip(slots, labels, ignore):
            scored = ~i & ~((g == 0) if ignore_background else np.zeros_like(i))
            present = [c for c in range(1 if ignore_background else 0, num_classes) if np.any((g == c) & scored)]
            iou = np.zeros((pred.shape[1], len(present)))
            for k in range(pred.shape[1]):
                for j, c in enumerate(present):
                    inter = np.sum((s == k) & (g == c) & scored)
                    union = np.sum((s == k) & ~i) + np.sum((g == c) & scored) - inter
                    iou[k, j] = inter / union if union else 0
            predicted = np.full(pred.shape[1], num_classes if ignore_background else 0)
            rows, cols = linear_sum_assignment(iou, maximize=True)
            predicted[rows] = np.array(present)[cols] if len(present) else predicted[rows]
            for k in range(pred.shape[1]):
                for c in range(num_classes):
                    confusion[predicted[k], c] += np.sum((s == k) & (g == c) & scored)
    ious = []
    for c in range(1 if ignore_background else 0, num_classes):
        gt_area = confusion[:, c].sum()
        if gt_area:
            tp = confusion[c, c]
            ious.append(tp / (gt_area + confusion[c].sum() - tp))
    return float(np.mean(ious))


@pytest.mark.parametrize("ignore_background", [False, True])
def test_dataset_class_miou_matches_reference(ignore_background):
    num_classes = 6
    batches = []
    for seed in range(3):
        gen = torch.Generator().manual_seed(seed)
        labels = torch.randint(0, num_classes, (3, 4, 5), generator=gen).repeat_interleave(2, 1).repeat_interleave(2, 2)
        labels[:, :, :2] = 0
        batches.append((torch.rand(3, 4, 8, 10, generator=gen), labels, torch.rand(3, 8, 10, generator=gen) < 0.1))
    metric = DatasetSemanticIoU(num_classes, ignore_background=ignore_background)
    for pred, labels, ignore in batches:
        metric.update(pred, one_hot_masks(labels, labels.max().item() + 1), ignore)
    expected = semantic_reference(batches, num_classes, ignore_background)
    assert metric.compute()["miou_c"] == pytest.approx(expected, abs=1e-12)


def test_dataset_class_miou_known_case():
    # Image 1: classes 0 (left half) and 3 (right half), predicted perfectly.
    # Image 2: class 3 everywhere but one slot covers the left half, another the right half:
    # the Hungarian match gives class 3 to one slot, the other predicts background.
    labels = torch.tensor([[[0, 0, 3, 3]] * 2, [[3, 3, 3, 3]] * 2])
    slots = torch.tensor([[[0, 0, 1, 1]] * 2, [[0, 0, 1, 1]] * 2])
    pred = torch.nn.functional.one_hot(slots, 2).movedim(-1, 1).float()
    metric = DatasetSemanticIoU(num_classes=4)
    metric.update(pred, one_hot_masks(labels, 4))
    # class 0: TP 4, FP 4 (image 2's unmatched slot) -> 4/8; class 3: TP 8, FN 4 -> 8/12.
    iou = metric.class_iou()
    assert iou[0].item() == pytest.approx(0.5) and iou[3].item() == pytest.approx(8 / 12)
    assert torch.isnan(iou[1]) and torch.isnan(iou[2])
    assert metric.compute() == {"miou_c": pytest.approx((0.5 + 8 / 12) / 2), "n_classes": 2}


def test_dataset_matching_of_slot_clusters():
    """Clusters that consistently mean one class each score 1 whatever their ids."""
    labels = torch.tensor([[[0, 1, 2, 2]], [[2, 2, 1, 0]]])
    slots = torch.tensor([[[0, 1, 2, 2]], [[0, 0, 1, 2]]])
    pred = torch.nn.functional.one_hot(slots, 3).movedim(-1, 1).float()
    # Image 1: slot0=class0, slot1=class1, slot2=class2; image 2: slot0=class2, slot1=class1, slot2=class0.
    clusters = torch.tensor([[5, 3, 0], [0, 3, 5]])
    metric = DatasetSemanticIoU(num_classes=3, num_clusters=6)
    metric.update(pred, one_hot_masks(labels, 3), slot_clusters=clusters)
    assert metric.compute() == {"miou_c": pytest.approx(1.0), "n_classes": 3}
    # A cluster that mixes two classes over the dataset lowers their IoU.
    mixed = DatasetSemanticIoU(num_classes=3, num_clusters=6)
    mixed.update(pred, one_hot_masks(labels, 3), slot_clusters=torch.tensor([[5, 3, 0], [0, 3, 0]]))
    assert mixed.compute()["miou_c"] < 1.0


def test_dataset_class_miou_argument_errors():
    pred = torch.rand(1, 2, 2, 2)
    target = one_hot_masks(torch.tensor([[[0, 4], [1, 1]]]), 5)
    with pytest.raises(ValueError, match="num_classes=3"):
        DatasetSemanticIoU(num_classes=3).update(pred, target)
    with pytest.raises(ValueError, match="needs slot_clusters"):
        DatasetSemanticIoU(num_classes=5, num_clusters=4).update(pred, target)
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        DatasetSemanticIoU(num_classes=5, num_clusters=4).update(pred, target, slot_clusters=torch.tensor([[0, 4]]))
    with pytest.raises(ValueError, match="num_clusters=None"):
        DatasetSemanticIoU(num_classes=5).update(pred, target, slot_clusters=torch.tensor([[0, 1]]))
