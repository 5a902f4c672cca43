"""Did a slot-removal edit remove the object? A colour test with controls (GLASS Sec. 5.3, Fig. 6).

GLASS edits a scene by removing a slot and sampling the diffusion decoder again. A removal
rate alone says little: an object the reconstruction never showed is "removed" by any edit.
This module therefore measures, per test image:

1. **Target.** The largest ground-truth object (most pixels of the instance mask) and the slot
   that covers it (:func:`slotlab.ops.matching.slot_for_region`, best IoU of the slot's
   argmax mask with the object).
2. **Samples**, all from the same initial noise (one seed) unless stated:
   the reconstruction from all K slots; the edit (the object's slot dropped, K - 1 tokens);
   the *other-slot control* (a random different slot dropped, one that covers at most
   ``CONTROL_MAX_OVERLAP`` of the object's pixels and at least one pixel of the image);
   the *reseed control* (all K slots, the next seed).
3. **Visibility** (:func:`object_visible`), a colour test valid on the built-in scenes, whose
   objects are bright and saturated over dark, desaturated backgrounds: inside the object's
   ground-truth region (nearest-resized to the sample's size), a pixel is *object-coloured*
   when it is closer (Euclidean RGB) to the object's real mean colour than to the real
   background's mean colour *and* within ``COLOUR_TOLERANCE`` of the object's colour (so a
   wrong hue, a washed-out blend or saturated noise does not count); the object is visible
   when at least ``VISIBLE_FRACTION`` of the region's pixels are object-coloured. The named
   scene colours lie 0.35 or more apart (orange-yellow is the closest pair), the tolerance
   0.3 below that.

Rates (:class:`RemovalResult.summary`):

- ``reconstructed_rate``: objects visible in the reconstruction / objects tested.
- ``removal_success_rate``: among objects visible in the reconstruction, the share *not*
  visible in the edit.
- ``control_other_slot_rate``: among objects visible in the reconstruction that have a control
  slot, the share not visible after dropping the control slot. Removing a slot perturbs every
  sample; the success rate means something only well above this rate.
- ``control_reseed_rate``: among objects visible in the reconstruction, the share not visible
  in the reconstruction drawn with the next seed (sampling instability alone).

Sampling is batched: four calls of the sampler for the whole batch of images. The result
keeps the reconstruction and the edit, for pictures and reconstruction metrics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from slotlab.ops.matching import slot_for_region
from slotlab.ops.random import seeded_generator
from slotlab.ops.resize import resize_mask

__all__ = [
    "VISIBLE_FRACTION",
    "COLOUR_TOLERANCE",
    "CONTROL_MAX_OVERLAP",
    "SampleFn",
    "RemovalResult",
    "region_mean_colour",
    "object_visible",
    "largest_objects",
    "control_slots",
    "drop_slot",
    "removal_test",
]

#: Share of an object's region that must be object-coloured for the object to count as visible.
VISIBLE_FRACTION = 0.5
#: Largest RGB distance (colours in [0, 1]) of an object-coloured pixel from the object's colour.
COLOUR_TOLERANCE = 0.3
#: A control slot covers at most this share of the object's pixels (argmax slot masks).
CONTROL_MAX_OVERLAP = 0.1

#: ``sample(slots (B, K, D), seed) -> images (B, 3, h, w)`` in [0, 1]; the same seed must give
#: the same initial noise for the same batch shape.
SampleFn = Callable[[Tensor, int], Tensor]


def region_mean_colour(images: Tensor, regions: Tensor) -> Tensor:
    """Mean RGB (B, 3) of images (B, 3, H, W) over bool regions (B, H, W); NaN where a region is empty."""
    weights = regions.to(images.dtype).unsqueeze(1)
    return (images * weights).sum((2, 3)) / weights.sum((2, 3))


def object_visible(
    samples: Tensor,
    regions: Tensor,
    object_colours: Tensor,
    background_colours: Tensor,
    min_fraction: float = VISIBLE_FRACTION,
    tolerance: float = COLOUR_TOLERANCE,
) -> Tensor:
    """Is the object visible in each sample? (B,) bool.

    samples (B, 3, h, w) in [0, 1]; regions (B, H, W) bool, the object's ground-truth pixels,
    resized (nearest) to (h, w); object_colours / background_colours (B, 3), the real mean
    colours. A region pixel is object-coloured when it is closer to the object's colour than
    to the background's and at most ``tolerance`` from the object's colour; visible =
    object-coloured share >= ``min_fraction``. An empty region (after resizing) is never
    visible.
    """
    if samples.dim() != 4 or samples.shape[1] != 3:
        raise ValueError(f"samples must be (B, 3, h, w), got {tuple(samples.shape)}")
    regions = resize_mask(regions.bool(), tuple(samples.shape[-2:]))
    to_object = (samples - object_colours[:, :, None, None]).norm(dim=1)
    to_background = (samples - background_colours[:, :, None, None]).norm(dim=1)
    object_coloured = (to_object < to_background) & (to_object <= tolerance) & regions
    area = regions.flatten(1).sum(1)
    share = object_coloured.flatten(1).sum(1).float() / area.clamp_min(1)
    return (share >= min_fraction) & (area > 0)


def largest_objects(instance_masks: Tensor) -> Tensor:
    """Id of the largest instance (most pixels) per image (B, H, W) -> (B,); 0 for no object."""
    batch = instance_masks.shape[0]
    flat = instance_masks.reshape(batch, -1).long()
    areas = torch.zeros(batch, int(flat.max()) + 1, dtype=torch.long).scatter_add_(1, flat, torch.ones_like(flat))
    areas[:, 0] = 0
    return torch.where(areas.amax(1) > 0, areas.argmax(1), torch.zeros(batch, dtype=torch.long))


def control_slots(
    segmentation: Tensor,
    regions: Tensor,
    removed: Tensor,
    num_slots: int,
    generator: torch.Generator,
    max_overlap: float = CONTROL_MAX_OVERLAP,
) -> Tensor:
    """A random control slot per image (B,), or -1 where none qualifies.

    segmentation (B, H, W): argmax slot index per pixel; regions (B, H, W) bool: the object;
    removed (B,): the object's slot. A control slot differs from ``removed``, owns at least one
    pixel of the image and at most ``max_overlap`` of the object's pixels.
    """
    hard = torch.nn.functional.one_hot(segmentation.long(), num_slots).permute(0, 3, 1, 2).bool()
    owned = hard.flatten(2).sum(2)
    on_object = (hard & regions[:, None].bool()).flatten(2).sum(2).float()
    share = on_object / regions.flatten(1).sum(1, keepdim=True).clamp_min(1)
    eligible = (owned > 0) & (share <= max_overlap)
    eligible[torch.arange(len(removed)), removed] = False
    scores = torch.rand(eligible.shape, generator=generator).masked_fill(~eligible, -1.0)
    return torch.where(eligible.any(1), scores.argmax(1), torch.full_like(removed, -1))


def drop_slot(slots: Tensor, index: Tensor) -> Tensor:
    """Drop slot ``index[b]`` of each image: (B, K, D) -> (B, K - 1, D) (compose's "drop" mode)."""
    batch, num_slots, _ = slots.shape
    keep = torch.ones(batch, num_slots, dtype=torch.bool)
    keep[torch.arange(batch), index] = False
    return slots[keep].reshape(batch, num_slots - 1, -1)


@dataclass
class RemovalResult:
    """Per-image outcomes (B,) bool of the removal test; see the module docstring."""

    tested: Tensor  # the image has an object
    reconstructed: Tensor  # object visible in the reconstruction
    visible_after_edit: Tensor  # object visible with its slot dropped
    has_control: Tensor  # a control slot exists
    visible_after_control: Tensor  # object visible with the control slot dropped
    visible_after_reseed: Tensor  # object visible in the reconstruction from the next seed
    removed_slot: Tensor  # (B,) the object's slot
    control_slot: Tensor  # (B,) the control slot, -1 for none
    reconstruction: Tensor  # (B, 3, h, w) the sample from all slots
    edited: Tensor  # (B, 3, h, w) the sample with the object's slot dropped

    def summary(self) -> dict[str, float | int]:
        """Counts and rates; a rate with an empty denominator is NaN."""
        seen = self.tested & self.reconstructed
        with_control = seen & self.has_control
        return {
            "objects_tested": int(self.tested.sum()),
            "reconstructed": int(seen.sum()),
            "reconstructed_rate": _rate(seen, self.tested),
            "removal_success_rate": _rate(seen & ~self.visible_after_edit, seen),
            "control_other_slot_rate": _rate(with_control & ~self.visible_after_control, with_control),
            "control_other_slot_objects": int(with_control.sum()),
            "control_reseed_rate": _rate(seen & ~self.visible_after_reseed, seen),
        }


def _rate(hits: Tensor, among: Tensor) -> float:
    count = int(among.sum())
    return float(hits.sum()) / count if count else float("nan")


def removal_test(
    sample: SampleFn,
    slots: Tensor,
    slot_masks: Tensor,
    images: Tensor,
    instance_masks: Tensor,
    seed: int = 0,
    min_fraction: float = VISIBLE_FRACTION,
    tolerance: float = COLOUR_TOLERANCE,
) -> RemovalResult:
    """Run the removal test (module docstring) on a batch.

    Args:
        sample: the decoder, ``sample(slots, seed) -> images``.
        slots: (B, K, D) slots of the images, as the decoder takes them (its context tokens).
        slot_masks: (B, K, H, W) the slots' masks at image resolution (argmax taken here).
        images: (B, 3, H, W) the real images in [0, 1] (object and background colours).
        instance_masks: (B, H, W) ground-truth instances, 0 = background.
        seed: seed of the reconstruction, edit and other-slot control (seed + 1: reseed
            control; also seeds the choice of control slots).
        min_fraction, tolerance: see :func:`object_visible`.
    """
    _check_batch(slots, slot_masks, images, instance_masks)
    batch, num_slots, _ = slots.shape
    objects = largest_objects(instance_masks)
    regions = (instance_masks == objects[:, None, None]) & (objects[:, None, None] > 0)
    background = instance_masks == 0
    object_colours = region_mean_colour(images, regions)
    background_colours = region_mean_colour(images, background)
    tested = (objects > 0) & background.flatten(1).any(1)
    removed = torch.tensor([slot_for_region(slot_masks[b], regions[b]) for b in range(batch)])
    generator = seeded_generator(seed)
    control = control_slots(slot_masks.argmax(1), regions, removed, num_slots, generator)
    has_control = control >= 0

    def visible(samples: Tensor) -> Tensor:
        return object_visible(samples, regions, object_colours, background_colours, min_fraction, tolerance) & tested

    reconstruction = sample(slots, seed)
    edited = sample(drop_slot(slots, removed), seed)
    return RemovalResult(
        tested=tested,
        reconstructed=visible(reconstruction),
        visible_after_edit=visible(edited),
        has_control=has_control,
        visible_after_control=visible(sample(drop_slot(slots, control.clamp_min(0)), seed)),
        visible_after_reseed=visible(sample(slots, seed + 1)),
        removed_slot=removed,
        control_slot=control,
        reconstruction=reconstruction,
        edited=edited,
    )


def _check_batch(slots: Tensor, slot_masks: Tensor, images: Tensor, instance_masks: Tensor) -> None:
    batch, num_slots = slots.shape[:2]
    if slots.dim() != 3 or num_slots < 2:
        raise ValueError(f"slots must be (B, K >= 2, D), got {tuple(slots.shape)}")
    expected = {"slot_masks": (batch, num_slots, *images.shape[-2:]), "instance_masks": (batch, *images.shape[-2:])}
    for name, tensor in (("slot_masks", slot_masks), ("instance_masks", instance_masks)):
        if tuple(tensor.shape) != expected[name]:
            raise ValueError(f"{name} must be {expected[name]} (slots and images), got {tuple(tensor.shape)}")
    if images.dim() != 4 or images.shape[:2] != (batch, 3):
        raise ValueError(f"images must be (B={batch}, 3, H, W), got {tuple(images.shape)}")
