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

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

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


@dataclass(frozen=True)
class Contingency:
    """Pixel counts of one batch, float64 (exact integers).

    overlap:   (B, K, M) scored pixels of slot k inside ground-truth channel m.
    slot_area: (B, K) scored pixels of slot k, unlabelled pixels included.
    """

    overlap: Tensor
    slot_area: Tensor

    @property
    def target_area(self) -> Tensor:
        """(B, M) scored pixels of each ground-truth channel (0 = absent)."""
        return self.overlap.sum(1)


def check_empty_ari(if_empty: str) -> None:
    if if_empty not in EMPTY_ARI_CHOICES:
        raise ValueError(f"if_empty must be one of {EMPTY_ARI_CHOICES}, got {if_empty!r}")


# Pixels per chunk of images processed together: keeps the running maximum and the index
# planes of a chunk in cache (about 2 MB), which makes the passes below memory-friendly.
_CHUNK_PIXELS = 1 << 19


@contextmanager
def single_threaded() -> Iterator[None]:
    """Run torch's CPU ops on one intra-op thread inside the block; the setting is restored.

    The counting passes are memory-bound and many; splitting each over OpenMP threads gains
    nothing and, on a shared CPU, idle threads spinning at every barrier made the metrics
    5-20x slower (measured on 2 cores under load; see docs/metrics.md).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def images_per_chunk(pixels_per_image: int) -> int:
    """How many images of this size to process together (at least one)."""
    return max(1, _CHUNK_PIXELS // max(1, pixels_per_image))


def slot_assignment(pred: Tensor, dtype: torch.dtype = torch.int64) -> Tensor:
    """(B, K, H, W) scores -> (B, H, W) index of the best slot (first one on ties, as argmax).

    A running maximum over the K slot planes, a few images at a time: it reads each plane
    once, contiguously, which on CPU is several times faster than ``argmax`` over the
    strided slot dimension.
    """
    if pred.ndim != 4 or pred.shape[1] == 0:
        raise ValueError(f"pred must be (B, K, H, W) with K >= 1 slots, got {tuple(pred.shape)}")
    batch, num_slots, height, width = pred.shape
    index = torch.zeros(batch, height, width, dtype=dtype, device=pred.device)
    step = images_per_chunk(height * width)
    for start in range(0, batch, step):
        chunk = pred[start : start + step]
        best = chunk[:, 0].clone()
        out = index[start : start + step]
        for k in range(1, num_slots):
            plane = chunk[:, k]
            out.masked_fill_(plane > best, k)
            torch.maximum(best, plane, out=best)
    return index


def target_labels(target: Tensor, dtype: torch.dtype = torch.int64) -> Tensor:
    """(B, M, H, W) one-hot -> (B, H, W) channel index, -1 where no channel is set.

    Raises if a pixel has several channels set or a non-binary value: overlapping
    ground-truth pixels must go into ``ignore`` (as the protocols do), not into two channels.
    """
    if target.ndim != 4 or target.shape[1] == 0:
        raise ValueError(f"target must be (B, M, H, W) one-hot with M >= 1 channels, got {tuple(target.shape)}")
    batch, channels, height, width = target.shape
    flat = target.reshape(batch, channels, -1)
    # Per pixel, with t_m the channel values: count = sum t_m, first = sum (m+1) t_m and
    # second = sum (m+1)^2 t_m. A one-hot pixel has count 1 and second = first^2 (zero
    # variance), an unlabelled one count 0: one matmul yields the label and the check.
    ids = torch.arange(1, channels + 1, dtype=torch.float64)
    weights = torch.stack([torch.ones(channels, dtype=torch.float64), ids, ids**2])
    work_dtype = torch.float64 if flat.dtype == torch.float64 or channels > 2048 else torch.float32
    weights = weights.to(device=flat.device, dtype=work_dtype)
    labels = torch.empty(batch, height * width, dtype=dtype, device=target.device)
    step = images_per_chunk(height * width)
    for start in range(0, batch, step):
        count, first, second = torch.matmul(weights, flat[start : start + step].to(work_dtype)).unbind(1)
        if bool(((count * (count - 1) != 0) | (second != first * first)).any()):
            raise ValueError(
                "target must be one-hot: some pixels have several channels or non-binary values; "
                "put overlapping ground-truth pixels into `ignore` instead"
            )
        labels[start : start + step] = first.sub_(1)
    return labels.view(batch, height, width)


def contingency_from_labels(
    slots: Tensor, labels: Tensor, num_slots: int, num_labels: int, ignore: Tensor | None = None
) -> Contingency:
    """Count pixels per (slot, label) pair from index maps.

    slots:  (B, H, W) int slot index in [0, num_slots).
    labels: (B, H, W) int ground-truth channel; values outside [0, num_labels) are unlabelled.
    ignore: (B, H, W) bool pixels to drop, or None.
    """
    if slots.shape != labels.shape:
        raise ValueError(f"slot map {tuple(slots.shape)} and label map {tuple(labels.shape)} differ in shape")
    if slots.numel():
        low, high = torch.aminmax(slots)
        if int(low) < 0 or int(high) >= num_slots:
            raise ValueError(f"slot indices must lie in [0, {num_slots}), got [{int(low)}, {int(high)}]")
    if ignore is not None and ignore.shape != labels.shape:
        raise ValueError(f"ignore must be (B, H, W) = {tuple(labels.shape)}, got {tuple(ignore.shape)}")
    batch = slots.shape[0]
    unlabelled, dropped = num_labels, num_labels + 1
    columns = num_labels + 2
    bins = batch * num_slots * columns
    # int32 indices halve the memory traffic of the bincount input whenever they fit.
    dtype = torch.int32 if bins < 2**31 else torch.int64
    labels = labels.to(dtype)
    labels = torch.where((labels >= 0) & (labels < num_labels), labels, unlabelled)
    if ignore is not None:
        labels.masked_fill_(ignore.bool(), dropped)
    offset = torch.arange(batch, dtype=dtype, device=slots.device).mul_(num_slots).view(batch, 1, 1)
    index = slots.to(dtype).add(offset).mul_(columns).add_(labels)
    counts = torch.bincount(index.reshape(-1), minlength=bins).view(batch, num_slots, columns).double()
    return Contingency(overlap=counts[..., :num_labels], slot_area=counts[..., : num_labels + 1].sum(-1))


def contingency(pred: Tensor, target: Tensor, ignore: Tensor | None = None) -> Contingency:
    """The contingency table of slot masks ``pred`` against one-hot ``target``."""
    if pred.ndim != 4 or pred.shape[1] == 0:
        raise ValueError(f"pred must be (B, K, H, W) with K >= 1 slots, got {tuple(pred.shape)}")
    if target.ndim != 4 or target.shape[1] == 0:
        raise ValueError(f"target must be (B, M, H, W) one-hot with M >= 1 channels, got {tuple(target.shape)}")
    if pred.shape[0] != target.shape[0] or pred.shape[2:] != target.shape[2:]:
        raise ValueError(
            f"pred {tuple(pred.shape)} and target {tuple(target.shape)} must share batch size and (H, W); "
            "resize the predicted masks to the ground truth first (resize_masks_soft)"
        )
    if ignore is not None and ignore.shape != (pred.shape[0], *pred.shape[2:]):
        raise ValueError(f"ignore must be (B, H, W) = {(pred.shape[0], *pred.shape[2:])}, got {tuple(ignore.shape)}")
    # A few images at a time, so that slot map, label map and bin indices stay in cache.
    step = images_per_chunk(pred.shape[2] * pred.shape[3])
    with single_threaded():
        parts = [
            contingency_from_labels(
                slot_assignment(pred[start : start + step], torch.int32),
                target_labels(target[start : start + step], torch.int32),
                pred.shape[1],
                target.shape[1],
                None if ignore is None else ignore[start : start + step],
            )
            for start in range(0, pred.shape[0], step)
        ]
    return Contingency(torch.cat([p.overlap for p in parts]), torch.cat([p.slot_area for p in parts]))


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
