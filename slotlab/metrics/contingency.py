"""Contingency tables of slot masks against ground truth: pixels of slot k in channel m, per
image, counted exactly with one ``bincount`` (the conventions of ``slotlab.metrics.masks``).
Every mask score is read off these tables."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor


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
