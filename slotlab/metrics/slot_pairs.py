"""(slot, object) pairs of a frozen model: its slot masks matched one-to-one to the ground-truth
objects (Hungarian, IoU), each pair with the object's properties and reference features; what
the probes of ``slotlab.metrics.probe`` learn from."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from slotlab.data.sample import IGNORE_INDEX, Batch, boxes_from_instance_mask, collate
from slotlab.ops.matching import hungarian_match, pairwise_iou
from slotlab.ops.random import fixed_randomness
from slotlab.ops.resize import resize_masks_soft

MatchOn = Literal["instance", "semantic"]
MATCH_TARGETS: tuple[str, ...] = ("instance", "semantic")
#: SlotPairs fields probed beside the slots, as references (see ``slotlab.metrics.probe``).
REFERENCE_FEATURES: tuple[str, ...] = ("object_features", "image_features")


@dataclass
class SlotPairs:
    """Matched (slot, object) pairs: slot vectors and the matched object's properties."""

    slots: Tensor  # (P, D) float
    class_ids: Tensor  # (P,) int64
    centres: Tensor  # (P, 2) float, normalised (x, y) box centre
    mask_mass: Tensor  # (P,) float, see :func:`mask_mass_on_objects`
    object_features: Tensor  # (P, F) float, encoder features under the object's mask
    image_features: Tensor  # (P, F) float, encoder features of the pair's whole image

    def __len__(self) -> int:
        return self.slots.shape[0]

    def with_slots_from(self, reference: str) -> "SlotPairs":
        """The same pairs with a reference (one of ``REFERENCE_FEATURES``) in place of the
        slots, to probe it."""
        if reference not in REFERENCE_FEATURES:
            raise ValueError(f"reference={reference!r}; choose one of {REFERENCE_FEATURES}")
        return replace(self, slots=getattr(self, reference))

    def subset(self, index: Tensor) -> "SlotPairs":
        return SlotPairs(*(getattr(self, f.name)[index] for f in fields(self)))

    @classmethod
    def concatenate(cls, parts: list["SlotPairs"]) -> "SlotPairs":
        if not parts:
            raise ValueError("no slot pairs to concatenate")
        return cls(*(torch.cat([getattr(p, f.name) for p in parts]) for f in fields(cls)))


@dataclass
class ObjectTargets:
    """Ground-truth objects of a batch: label maps 1..M, and per item class ids and centres."""

    label_map: Tensor  # (B, H, W) int64, 0 = background / no object
    class_ids: list[Tensor]  # per item (M_b,)
    centres: list[Tensor]  # per item (M_b, 2)


def box_centres(boxes: Tensor) -> Tensor:
    """Normalised (x0, y0, x1, y1) boxes (M, 4) -> centres (M, 2) as (x, y)."""
    return torch.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], dim=1)


def semantic_objects(semantic_mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """One object per class present in (H, W): (label map 1..M, class ids (M,), boxes (M, 4))."""
    classes = semantic_mask.unique()
    classes = classes[(classes != 0) & (classes != IGNORE_INDEX)]
    label_map = torch.zeros_like(semantic_mask)
    for index, cls in enumerate(classes.tolist(), start=1):
        label_map[semantic_mask == cls] = index
    return label_map, classes.long(), boxes_from_instance_mask(label_map, len(classes))


def object_targets(batch: Batch, match_on: MatchOn = "instance") -> ObjectTargets:
    """The ground-truth objects slots are matched to: instances, or semantic classes (VOC)."""
    if match_on == "instance":
        centres = [box_centres(b.float()) for b in batch.boxes]
        return ObjectTargets(batch.instance_mask.long(), [c.long() for c in batch.class_ids], centres)
    if match_on == "semantic":
        parts = [semantic_objects(m) for m in batch.semantic_mask]
        return ObjectTargets(
            torch.stack([p[0] for p in parts]), [p[1] for p in parts], [box_centres(p[2]) for p in parts]
        )
    raise ValueError(f"match_on={match_on!r}; choose one of {MATCH_TARGETS}")


def valid_pixels(label_map: Tensor, ignore: Tensor | None) -> Tensor:
    """(B, H, W) bool: the pixels that count, i.e. all but the ``ignore`` ones."""
    return torch.ones_like(label_map, dtype=torch.bool) if ignore is None else ~ignore.bool()


def match_slots_to_objects(
    slot_masks: Tensor, label_map: Tensor, num_objects: list[int], ignore: Tensor | None = None
) -> list[tuple[Tensor, Tensor]]:
    """Hungarian matching of slots to objects by IoU of hard masks; keeps matches with IoU > 0.

    slot_masks (B, K, h, w) soft masks, resized bilinearly to the label map and arg-maxed;
    label_map (B, H, W) object ids 1..M (0 = none); ``ignore`` (B, H, W) pixels count for
    neither side. Returns per item (slot indices, object indices 0..M-1).
    """
    size = tuple(label_map.shape[-2:])
    segmentation = resize_masks_soft(slot_masks, size).argmax(1)  # (B, H, W)
    k = slot_masks.shape[1]
    valid = valid_pixels(label_map, ignore)
    slot_hard = F.one_hot(segmentation, k).movedim(-1, 1) * valid.unsqueeze(1)  # (B, K, H, W)
    max_objects = max(max(num_objects, default=0), 1)
    ids = torch.arange(1, max_objects + 1, device=label_map.device).reshape(1, -1, 1, 1)
    object_hard = (label_map.unsqueeze(1) == ids) & valid.unsqueeze(1)  # (B, M, H, W)
    iou = pairwise_iou(slot_hard.flatten(2).float(), object_hard.flatten(2).float())  # (B, K, M)
    present = torch.arange(max_objects, device=iou.device) < torch.tensor(num_objects, device=iou.device)[:, None]
    iou = iou * present.unsqueeze(1)  # objects beyond an item's count never match
    matches = []
    for item, (rows, cols) in enumerate(hungarian_match(iou)):
        keep = iou[item, rows, cols].cpu() > 0
        matches.append((rows[keep], cols[keep]))
    return matches


def matched_object_masks(label_map: Tensor, cols: Tensor) -> Tensor:
    """(H, W) object ids 1..M and matched object indices (P,) 0..M-1 -> their masks (P, H, W) bool."""
    return label_map.unsqueeze(0) == (cols + 1).to(label_map.device).reshape(-1, 1, 1)


def mask_mass_on_objects(
    slot_masks: Tensor, label_map: Tensor, matches: list[tuple[Tensor, Tensor]], ignore: Tensor | None = None
) -> Tensor:
    """Share of each matched slot's soft mask that lies on its object: (P,) in [0, 1].

    slot_masks (B, K, H, W) soft masks at the label map's size; ``matches`` from
    :func:`match_slots_to_objects`; ignored pixels count nowhere. With slot-attention masks this
    is the weight the slot's update (a weighted mean over the inputs) gives its own object:
    near 1, the slot vector describes the object; near the object's share of the image, it
    describes the whole image, and a probe cannot read the object from it.
    """
    valid = valid_pixels(label_map, ignore)
    shares = []
    for item, (rows, cols) in enumerate(matches):
        masks = slot_masks[item, rows] * valid[item]  # (P_b, H, W)
        on_object = matched_object_masks(label_map[item], cols)
        shares.append((masks * on_object).flatten(1).sum(1) / masks.flatten(1).sum(1).clamp_min(1e-12))
    return torch.cat(shares) if shares else slot_masks.new_zeros(0)


def pool_features(feature_map: Tensor, masks: Tensor) -> Tensor:
    """Features averaged under pixel masks: (F, h, w) tokens, (P, H, W) bool -> (P, F).

    Each mask is area-averaged to the token grid, so a token weighs by the share of its patch
    the mask covers; an empty mask gives zeros.
    """
    weights = F.interpolate(masks.unsqueeze(0).float(), size=tuple(feature_map.shape[-2:]), mode="area")[0]
    total = weights.flatten(1).sum(1, keepdim=True).clamp_min(1e-12)
    return torch.einsum("phw,fhw->pf", weights, feature_map.float()) / total


def reference_features(
    feature_map: Tensor, label_map: Tensor, matches: list[tuple[Tensor, Tensor]], ignore: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Per matched pair, encoder features under its object's ground-truth mask and over its
    whole image, ignored pixels left out: two (P, F).

    feature_map (B, F, h, w) encoder tokens; label_map (B, H, W) object ids; ``matches`` from
    :func:`match_slots_to_objects`.
    """
    valid = valid_pixels(label_map, ignore)
    objects, images = [], []
    for item, (_, cols) in enumerate(matches):
        masks = matched_object_masks(label_map[item], cols) & valid[item]
        objects.append(pool_features(feature_map[item], masks))
        images.append(pool_features(feature_map[item], valid[item].unsqueeze(0)).expand(len(cols), -1))
    if not objects:
        empty = feature_map.new_zeros(0, feature_map.shape[1])
        return empty, empty
    return torch.cat(objects), torch.cat(images)


@torch.no_grad()
def batch_slot_pairs(model: nn.Module, batch: Batch, match_on: MatchOn = "instance") -> SlotPairs:
    """Decompose one batch with the frozen model and return its matched (slot, object) pairs."""
    decomposition = model.decompose(batch.image)  # slot noise from the caller's stream
    targets = object_targets(batch, match_on)
    counts = [len(c) for c in targets.class_ids]
    device = decomposition.masks.device
    label_map, ignore = targets.label_map.to(device), batch.ignore_mask.to(device)
    masks = resize_masks_soft(decomposition.masks, tuple(label_map.shape[-2:]))
    matches = match_slots_to_objects(masks, label_map, counts, ignore)
    masses = mask_mass_on_objects(masks, label_map, matches, ignore).float().cpu()
    if decomposition.features is None:
        raise NotImplementedError(
            f"{type(model).__name__}.decompose gives no encoder tokens, which the probe's reference features pool"
        )
    object_features, image_features = reference_features(decomposition.features, label_map, matches, ignore)
    slots = decomposition.slots.detach().float().cpu()
    return SlotPairs(
        torch.cat([slots[item, rows] for item, (rows, _) in enumerate(matches)]),
        torch.cat([targets.class_ids[item][cols].cpu() for item, (_, cols) in enumerate(matches)]),
        torch.cat([targets.centres[item][cols].float().cpu() for item, (_, cols) in enumerate(matches)]),
        masses,
        object_features.cpu(),
        image_features.cpu(),
    )


def collect_slot_pairs(
    model: nn.Module, dataset: Dataset, batch_size: int = 8, match_on: MatchOn = "instance", num_workers: int = 0,
    seed: int = 0,
) -> SlotPairs:
    """All matched (slot, object) pairs of a dataset under the frozen ``model``; ``seed``
    fixes the slot-initialisation noise, so the pairs depend on the model and data alone."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate, num_workers=num_workers)
    with fixed_randomness(seed, model.device):
        pairs = SlotPairs.concatenate([batch_slot_pairs(model, batch, match_on) for batch in loader])
    if len(pairs) == 0:
        raise ValueError(
            "no slot matched any ground-truth object (all IoUs were 0): does the dataset have object annotations?"
        )
    return pairs
