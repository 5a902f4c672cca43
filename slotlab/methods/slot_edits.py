"""Slot edits and generation from slots (GLASS Sec. 5.3, Figs. 5-6): operations on a model
with a generative (diffusion) decoder. Remove slots, add slots of another image, swap slots
between images; the decoder then samples the edited scene. Slots are chosen by index or by
the region or class of the object they cover.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from slotlab.methods.base import ObjectCentricModel
from slotlab.methods.contract import Decomposition, generative_decoder
from slotlab.ops.matching import slot_for_region
from slotlab.ops.random import seeded_generator

REMOVE_MODES = ("drop", "zero")


@dataclass
class SamplingOptions:
    steps: int = 50
    guidance_scale: float = 1.0
    seed: int = 0


def remove_slots(slots: Tensor, indices: list[int], mode: str = "drop") -> Tensor:
    """Remove slots (K, D) -> (K - n, D) ("drop", the token leaves the cross-attention) or zero
    them in place ("zero", as the reference code does)."""
    if mode not in REMOVE_MODES:
        raise ValueError(f"remove mode {mode!r}; choose one of {REMOVE_MODES}")
    check_indices(indices, slots.shape[0])
    if mode == "zero":
        out = slots.clone()
        out[indices] = 0
        return out
    keep = [k for k in range(slots.shape[0]) if k not in set(indices)]
    return slots[keep]


def add_slots(slots: Tensor, donor: Tensor, indices: list[int]) -> Tensor:
    """Append the donor image's slots ``indices`` to ``slots`` (K, D) -> (K + n, D)."""
    check_indices(indices, donor.shape[0])
    return torch.cat([slots, donor[indices]], dim=0)


def swap_slots(a: Tensor, b: Tensor, i: int, j: int) -> tuple[Tensor, Tensor]:
    """Exchange slot i of image a with slot j of image b."""
    check_indices([i], a.shape[0])
    check_indices([j], b.shape[0])
    a2, b2 = a.clone(), b.clone()
    a2[i], b2[j] = b[j], a[i]
    return a2, b2


def edit_slots(
    slots: Tensor, donor: Tensor | None, remove: list[int], add: list[int], swap: tuple[int, int] | None,
    mode: str = "drop",
) -> Tensor:
    """One image's slots (K, D) after an edit whose indices all name the *original* slots:
    the swap first (it keeps positions), then the removal, then the donor's added slots."""
    if (add or swap) and donor is None:
        raise ValueError("--add and --swap need a second image: --with PATH")
    if swap is not None:
        slots, _ = swap_slots(slots, donor, *swap)
    if remove:
        slots = remove_slots(slots, remove, mode)
    if add:
        slots = add_slots(slots, donor, add)
    return slots


def slot_for_class(masks: Tensor, class_map: Tensor, class_id: int) -> int:
    """The slot that best covers the pixels of ``class_id`` in ``class_map`` (H, W)."""
    region = class_map == class_id
    if not region.any():
        present = sorted(set(class_map.unique().tolist()) - {0})
        raise ValueError(f"class {class_id} has no pixel in the class map; its classes are {present}")
    return slot_for_region(masks, region)


def slot_listing(masks: Tensor, class_map: Tensor | None = None) -> list[str]:
    """One line per slot: its share of the image and, given a class map, the classes it covers
    (share of the slot's pixels), largest first."""
    labels = masks.argmax(0)
    lines = []
    for k in range(masks.shape[0]):
        mine = labels == k
        line = f"slot {k}: {mine.float().mean():.1%} of the image"
        if class_map is not None and mine.any():
            ids, counts = class_map[mine].unique(return_counts=True)
            shares = sorted(zip(counts.tolist(), ids.tolist()), reverse=True)
            line += "; covers " + ", ".join(f"class {c} ({n / mine.sum():.0%})" for n, c in shares if c != 0)
        lines.append(line)
    return lines


def check_indices(indices: list[int], k: int, source: str = "slot index") -> None:
    bad = [i for i in indices if not 0 <= i < k]
    if bad:
        raise ValueError(f"{source} {bad} out of range: this image has {k} slots (0..{k - 1})")


def decoder_tokens(model: ObjectCentricModel, decomposition: Decomposition) -> Tensor:
    """The tokens (B, K, C) the model's diffusion decoder conditions on: the slots, carrying their
    masks when the decoder is mask-biased (``mask_bias_grid``). Edits act on these tokens."""
    return generative_decoder(model).context(decomposition.slots, decomposition.masks)


def generate(model: ObjectCentricModel, tokens: Tensor, options: SamplingOptions) -> Tensor:
    """Sample images (B, 3, R, R) from decoder tokens (B, K, C) (:func:`decoder_tokens`)."""
    decoder = generative_decoder(model)
    generator = seeded_generator(options.seed)
    return decoder.sample(tokens, num_steps=options.steps, guidance_scale=options.guidance_scale, generator=generator)
