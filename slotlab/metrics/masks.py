"""Object-discovery metrics on slot masks: ARI / FG-ARI, mBO, mIoU and slot binding (SO/PO/GO).

One convention for every function of this module:

- ``pred``   (B, K, H, W) per-slot scores (soft masks, logits or one-hot); each pixel belongs
  to the slot of highest score (ties go to the lowest slot index, like ``torch.argmax``).
- ``target`` (B, M, H, W) one-hot ground truth, channel 0 = background, channels 1.. the
  objects (instances, or classes for class-level scores). An all-zero channel is an absent
  object. A pixel with no channel set is *unlabelled*: it belongs to no ground-truth segment
  but still counts in the area of its slot (as the padding of OCLF and the void of MSF do).
  Build it from label maps with :func:`slotlab.data.sample.one_hot_masks`.
- ``ignore`` (B, H, W) bool, optional: pixels dropped from everything (prediction included).

Every score comes from one contingency table per image (pixels of slot k in channel m),
counted exactly with one ``bincount``; the scores are float64, one value per image (B,).
An image where a score is undefined (no ground-truth object) gets NaN; aggregators skip
NaN images and count them (see ``docs/metrics.md`` for how each paper treated them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from slotlab.metrics.contingency import Contingency, contingency
from slotlab.ops.matching import hungarian_match

#: How ARI reports an image without any scored ground-truth pixel: "nan" (undefined, skipped
#: by aggregators; slotlab's default and MSF's code) or "one" (OCLF's code, used by SPOT,
#: DINOSAUR and GLASS, where a zero denominator always gives 1).
EmptyARI = Literal["nan", "one"]
EMPTY_ARI_CHOICES = ("nan", "one")

#: Names accepted by :func:`mask_metrics` and :class:`slotlab.metrics.aggregators.MaskMetrics`.
MASK_METRICS = ("ari", "fg_ari", "mbo", "miou", "object_recovery", "cor_loc", "slot_binding")
#: A ground-truth segment is *discovered* when its best IoU with a slot exceeds this (OCLF).
DISCOVERY_IOU = 0.5
#: Keys :func:`slot_binding` returns, in this order everywhere.
BINDING_KEYS = ("so", "po", "go", "bg")


@dataclass(frozen=True)
class BindingThresholds:
    """Thresholds of the slot-binding categories (see :func:`slot_binding`).

    cover:    a slot *covers* an object when it holds more than this share of the object's pixels.
    bg_share: a slot is a background slot when at least this share of its pixels lies outside
              every object.
    """

    cover: float = 0.5
    bg_share: float = 0.5

    def __post_init__(self) -> None:
        for name in ("cover", "bg_share"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"BindingThresholds.{name} must lie in [0, 1], got {value}")


def check_empty_ari(if_empty: str) -> None:
    if if_empty not in EMPTY_ARI_CHOICES:
        raise ValueError(f"if_empty must be one of {EMPTY_ARI_CHOICES}, got {if_empty!r}")


def iou_from_contingency(table: Contingency) -> Tensor:
    """(B, K, M) IoU of every slot with every ground-truth channel; 0 where both are empty."""
    union = table.slot_area.unsqueeze(-1) + table.target_area.unsqueeze(1) - table.overlap
    return torch.where(union > 0, table.overlap / union.clamp_min(1), torch.zeros_like(union))


def _object_columns(ignore_background: bool) -> slice:
    return slice(1, None) if ignore_background else slice(None)


def ari_from_contingency(table: Contingency, foreground: bool, if_empty: EmptyARI = "nan") -> Tensor:
    """Adjusted Rand index (Hubert & Arabie 1985) per image from the contingency table.

    Only labelled pixels enter (with ``foreground`` only the object channels 1..). When the
    index is degenerate (both partitions a single cluster, or both all singletons) its
    denominator is 0 and ARI = 1, as in OCLF and scikit-learn. An image without any such
    pixel gives NaN (``if_empty="nan"``) or 1 (``"one"``, OCLF).
    """
    check_empty_ari(if_empty)
    n = table.overlap[:, :, 1:] if foreground else table.overlap
    gt_sizes, slot_sizes = n.sum(1), n.sum(2)
    total = gt_sizes.sum(1)
    # Pair counts times 2; exact integers in float64 for images below ~10^7 pixels.
    pairs_both = (n * (n - 1)).sum((1, 2))
    pairs_gt = (gt_sizes * (gt_sizes - 1)).sum(1)
    pairs_slot = (slot_sizes * (slot_sizes - 1)).sum(1)
    pairs_all = total * (total - 1)
    expected = pairs_gt * pairs_slot / pairs_all.clamp_min(1)
    maximum = (pairs_gt + pairs_slot) / 2
    degenerate = ((pairs_gt == 0) & (pairs_slot == 0)) | ((pairs_gt == pairs_all) & (pairs_slot == pairs_all))
    denominator = torch.where(degenerate, torch.ones_like(maximum), maximum - expected)
    score = torch.where(degenerate, torch.ones_like(maximum), (pairs_both - expected) / denominator)
    if if_empty == "nan":
        score = score.masked_fill(total == 0, float("nan"))
    return score


def best_overlap_from_contingency(table: Contingency, ignore_background: bool = True) -> tuple[Tensor, Tensor]:
    """(B, M') best IoU of any slot with each ground-truth segment, and (B, M') which of them
    are present (have a scored pixel); channel 0 is left out with ``ignore_background``."""
    columns = _object_columns(ignore_background)
    return iou_from_contingency(table)[:, :, columns].amax(1), table.target_area[:, columns] > 0


def mbo_from_contingency(table: Contingency, ignore_background: bool = True) -> Tensor:
    """Mean best overlap: the best IoU of any slot with each present ground-truth object,
    averaged over the present objects of the image (NaN if none)."""
    return _mean_over_present(*best_overlap_from_contingency(table, ignore_background))


def object_recovery_from_contingency(table: Contingency, ignore_background: bool = True) -> Tensor:
    """Share of the present ground-truth segments whose best IoU exceeds DISCOVERY_IOU (OCLF's
    ``BestOverlapObjectRecoveryMetric``, reported by GLASS's evaluation script); NaN if none."""
    best, present = best_overlap_from_contingency(table, ignore_background)
    return _mean_over_present((best > DISCOVERY_IOU).double(), present)


def cor_loc_from_contingency(table: Contingency, ignore_background: bool = True) -> Tensor:
    """1 if some present ground-truth segment has a best IoU above DISCOVERY_IOU, else 0
    (OCLF's ``MaskCorLocMetric``, reported by GLASS's evaluation script); NaN if none present."""
    best, present = best_overlap_from_contingency(table, ignore_background)
    found = ((best > DISCOVERY_IOU) & present).any(1).double()
    return found.masked_fill(~present.any(1), float("nan"))


def miou_from_contingency(table: Contingency, ignore_background: bool = True) -> Tensor:
    """Mean IoU under the one-to-one Hungarian matching of slots to ground-truth objects that
    maximises the total IoU; objects left without a slot (M > K) count as 0. Averaged over
    the present objects of the image (NaN if none)."""
    columns = _object_columns(ignore_background)
    iou = iou_from_contingency(table)[:, :, columns]
    present = table.target_area[:, columns] > 0
    # Absent objects have IoU 0 with every slot, so they never raise the optimal total.
    matched = torch.zeros_like(present, dtype=iou.dtype)
    for b, (rows, cols) in enumerate(hungarian_match(iou)):
        matched[b, cols.to(iou.device)] = iou[b, rows.to(iou.device), cols.to(iou.device)]
    return _mean_over_present(matched, present)


def _mean_over_present(values: Tensor, present: Tensor) -> Tensor:
    count = present.sum(1)
    total = (values * present).sum(1)
    return torch.where(count > 0, total / count.clamp_min(1), torch.full_like(total, float("nan")))


def binding_counts_from_contingency(table: Contingency, thresholds: BindingThresholds = BindingThresholds()) -> Tensor:
    """(B, 4) float64 number of slots per category SO, PO, GO, BG (see :func:`slot_binding`)."""
    objects = table.overlap[:, :, 1:]
    object_area = table.target_area[:, 1:]
    used = table.slot_area > 0
    inside_objects = objects.sum(-1) / table.slot_area.clamp_min(1)
    background = used & (1 - inside_objects >= thresholds.bg_share)
    coverage = objects / object_area.unsqueeze(1).clamp_min(1)
    covered = (coverage > thresholds.cover).sum(-1)
    foreground = used & ~background
    single, part, group = foreground & (covered == 1), foreground & (covered == 0), foreground & (covered >= 2)
    categories = torch.stack([single, part, group, background], -1)  # BINDING_KEYS order
    return categories.sum(1).double()


def ari(
    pred: Tensor, target: Tensor, ignore: Tensor | None = None, foreground: bool = False, if_empty: EmptyARI = "nan"
) -> Tensor:
    """ARI per image (B,) float64; FG-ARI with ``foreground=True`` (background pixels dropped).

    Unlabelled and ignored pixels never enter. ``if_empty`` names how an image without any
    scored ground-truth pixel (e.g. no foreground for FG-ARI) is reported: ``"nan"``
    (slotlab default, skipped by aggregators; MSF's code skips such images) or ``"one"``
    (OCLF's code, which SPOT, DINOSAUR and GLASS used: it scores such an image 1).
    """
    return ari_from_contingency(contingency(pred, target, ignore), foreground, if_empty)


def mbo(pred: Tensor, target: Tensor, ignore: Tensor | None = None, ignore_background: bool = True) -> Tensor:
    """Mean best overlap per image (B,) float64 (mBO_i on instances, mBO_c on classes).

    For each ground-truth object present in the image (channel with a scored pixel; channel 0
    excluded with ``ignore_background``), the best IoU over all slots; averaged over objects.
    Slot areas always include background and unlabelled pixels. NaN when no object is present.
    """
    return mbo_from_contingency(contingency(pred, target, ignore), ignore_background)


def miou(pred: Tensor, target: Tensor, ignore: Tensor | None = None, ignore_background: bool = True) -> Tensor:
    """Mean IoU per image (B,) float64 under one-to-one Hungarian matching of slots to objects.

    Uses :func:`slotlab.ops.matching.hungarian_match` on the IoU matrix; objects without
    a slot (more objects than slots) count as 0. NaN when no object is present.
    """
    return miou_from_contingency(contingency(pred, target, ignore), ignore_background)


def slot_binding_counts(
    pred: Tensor, target: Tensor, ignore: Tensor | None = None, thresholds: BindingThresholds = BindingThresholds()
) -> Tensor:
    """(B, 4) float64 number of slots per category (SO, PO, GO, BG) in each image."""
    return binding_counts_from_contingency(contingency(pred, target, ignore), thresholds)


def slot_binding(
    pred: Tensor, target: Tensor, ignore: Tensor | None = None, thresholds: BindingThresholds = BindingThresholds()
) -> dict[str, Tensor]:
    """Share of slots bound to a single object, part of an object, a group of objects or the
    background (SO/PO/GO/BG of GLASS Tab. 3, after Fan et al., ICCV 2023), per image.

    Only slots that own at least one scored pixel are classified; objects are channels 1..
    of ``target``; everything else (channel 0, unlabelled pixels) is background. With the
    defaults ``cover = bg_share = 0.5`` a slot is, in this order:

    - BG if at least ``bg_share`` of its pixels lie outside every object;
    - GO if it covers (holds more than ``cover`` of the pixels of) two or more objects;
    - SO if it covers exactly one object;
    - PO otherwise: it lies mostly on objects but covers none of them (a part, or parts).

    Returns {"so", "po", "go", "bg"} -> (B,) float64 shares summing to 1 (NaN for an image
    without any scored slot). Dataset percentages pool the slot counts over images (see
    :func:`slot_binding_counts` and ``MaskMetrics``).
    """
    counts = slot_binding_counts(pred, target, ignore, thresholds)
    return binding_shares(counts)


def binding_shares(counts: Tensor) -> dict[str, Tensor]:
    """(..., 4) slot counts -> {"so", "po", "go", "bg"} shares (NaN where there is no slot)."""
    total = counts.sum(-1, keepdim=True)
    shares = torch.where(total > 0, counts / total.clamp_min(1), torch.full_like(counts, float("nan")))
    return dict(zip(BINDING_KEYS, shares.unbind(-1)))


def check_metric_names(metrics: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    unknown = [m for m in metrics if m not in MASK_METRICS]
    if unknown or not metrics:
        raise ValueError(f"unknown mask metrics {unknown or '(none given)'}; valid names: {MASK_METRICS}")
    return tuple(metrics)


def scores_from_contingency(
    table: Contingency,
    metrics: tuple[str, ...],
    ignore_background: bool = True,
    if_empty: EmptyARI = "nan",
    thresholds: BindingThresholds = BindingThresholds(),
) -> dict[str, Tensor]:
    """The per-image (B,) values of ``metrics`` from one table; "slot_binding" expands to
    the four shares "so", "po", "go", "bg"."""
    out: dict[str, Tensor] = {}
    for name in check_metric_names(metrics):
        if name == "ari":
            out[name] = ari_from_contingency(table, foreground=False, if_empty=if_empty)
        elif name == "fg_ari":
            out[name] = ari_from_contingency(table, foreground=True, if_empty=if_empty)
        elif name == "mbo":
            out[name] = mbo_from_contingency(table, ignore_background)
        elif name == "miou":
            out[name] = miou_from_contingency(table, ignore_background)
        elif name == "object_recovery":
            out[name] = object_recovery_from_contingency(table, ignore_background)
        elif name == "cor_loc":
            out[name] = cor_loc_from_contingency(table, ignore_background)
        else:
            out.update(binding_shares(binding_counts_from_contingency(table, thresholds)))
    return out


def mask_metrics(
    pred: Tensor,
    target: Tensor,
    ignore: Tensor | None = None,
    metrics: tuple[str, ...] = ("mbo", "miou", "fg_ari"),
    ignore_background: bool = True,
    if_empty: EmptyARI = "nan",
    thresholds: BindingThresholds = BindingThresholds(),
) -> dict[str, Tensor]:
    """Several metrics from one contingency table (one pass over the pixels).

    ``metrics`` from :data:`MASK_METRICS`; ``ignore_background`` applies to the IoU scores,
    ``if_empty`` to ari/fg_ari, ``thresholds`` to slot_binding. Returns name -> (B,) float64.
    """
    return scores_from_contingency(contingency(pred, target, ignore), metrics, ignore_background, if_empty, thresholds)
