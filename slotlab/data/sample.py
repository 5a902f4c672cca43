"""The one sample type that flows from every dataset to every method and metric."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

#: Label value for pixels whose class is unknown (VOC borders, uncertain pseudo-mask pixels).
IGNORE_INDEX = 255


@runtime_checkable
class NamedClasses(Protocol):
    """A dataset that names its classes: ``class_names[i]`` names class id i."""

    class_names: list[str]


@runtime_checkable
class NamedDataset(Protocol):
    """A dataset that names itself (every ``FileDataset``; the built-in scenes do not)."""

    name: str


def dataset_name(dataset: object) -> str:
    """The dataset's ``name``, else the name of its type."""
    return dataset.name if isinstance(dataset, NamedDataset) else type(dataset).__name__


def class_names_of(dataset: object) -> list[str]:
    """The dataset's ``class_names`` (index = class id), else none."""
    return list(dataset.class_names) if isinstance(dataset, NamedClasses) else []


@dataclass
class Sample:
    """One annotated image.

    image:          (3, H, W) float in [0, 1]
    instance_mask:  (H, W) int64, 0 = background, 1..M objects
    semantic_mask:  (H, W) int64 class id, 0 = background
    ignore_mask:    (H, W) bool, pixels that no metric or loss may use
    class_ids:      (M,) int64 class of object m+1 (instance id m+1)
    boxes:          (M, 4) float, normalised (x0, y0, x1, y1)
    caption:        a sentence describing the image ("" if none)
    meta:           free-form provenance (file name, index, seed, ...)
    """

    image: Tensor
    instance_mask: Tensor
    semantic_mask: Tensor
    ignore_mask: Tensor
    class_ids: Tensor
    boxes: Tensor
    caption: str = ""
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        h, w = self.image.shape[-2:]
        if self.image.ndim != 3 or self.image.shape[0] != 3:
            raise ValueError(f"Sample.image must be (3, H, W), got {tuple(self.image.shape)}")
        for name in ("instance_mask", "semantic_mask", "ignore_mask"):
            shape = tuple(getattr(self, name).shape)
            if shape != (h, w):
                raise ValueError(f"Sample.{name} must be ({h}, {w}) like the image, got {shape}")
        if self.boxes.shape != (len(self.class_ids), 4):
            raise ValueError(
                f"Sample.boxes must be ({len(self.class_ids)}, 4) to match class_ids, "
                f"got {tuple(self.boxes.shape)}"
            )

    @property
    def num_objects(self) -> int:
        return len(self.class_ids)


@dataclass
class Batch:
    """A collated list of samples of equal size; per-object fields stay lists."""

    image: Tensor  # (B, 3, H, W)
    instance_mask: Tensor  # (B, H, W)
    semantic_mask: Tensor  # (B, H, W)
    ignore_mask: Tensor  # (B, H, W)
    class_ids: list[Tensor]
    boxes: list[Tensor]
    caption: list[str]
    meta: list[dict]

    def __len__(self) -> int:
        return self.image.shape[0]

    def to(self, device: torch.device | str) -> "Batch":
        moved = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Tensor):
                value = value.to(device)
            elif f.name in ("class_ids", "boxes"):
                value = [v.to(device) for v in value]
            moved[f.name] = value
        return Batch(**moved)


def collate(samples: list[Sample]) -> Batch:
    """Stack samples into a Batch (use as a DataLoader ``collate_fn``)."""
    if not samples:
        raise ValueError("collate() needs at least one sample")
    sizes = {tuple(s.image.shape) for s in samples}
    if len(sizes) > 1:
        raise ValueError(f"cannot batch images of different sizes {sorted(sizes)}: add a resize/crop transform")
    return Batch(
        image=torch.stack([s.image for s in samples]),
        instance_mask=torch.stack([s.instance_mask for s in samples]),
        semantic_mask=torch.stack([s.semantic_mask for s in samples]),
        ignore_mask=torch.stack([s.ignore_mask for s in samples]),
        class_ids=[s.class_ids for s in samples],
        boxes=[s.boxes for s in samples],
        caption=[s.caption for s in samples],
        meta=[s.meta for s in samples],
    )


def one_hot_masks(label_map: Tensor, num_channels: int | None = None) -> Tensor:
    """(B, H, W) integer labels -> (B, C, H, W) float one-hot, channel 0 = background.

    ``num_channels`` defaults to ``label_map.max() + 1``. Labels equal to IGNORE_INDEX
    (or any label >= num_channels) get no channel: those pixels are all-zero.
    """
    label_map = label_map.long()
    if num_channels is None:
        valid = label_map[label_map != IGNORE_INDEX]
        num_channels = int(valid.max()) + 1 if valid.numel() else 1
    inside = label_map < num_channels
    safe = torch.where(inside, label_map, torch.zeros_like(label_map))
    out = torch.nn.functional.one_hot(safe, num_channels).movedim(-1, 1).float()
    return out * inside.unsqueeze(1)


def boxes_from_instance_mask(instance_mask: Tensor, num_objects: int) -> Tensor:
    """Normalised (x0, y0, x1, y1) box of each instance id 1..num_objects; zeros if absent."""
    h, w = instance_mask.shape
    if num_objects == 0:
        return torch.zeros(0, 4)
    ids = torch.arange(1, num_objects + 1, device=instance_mask.device)
    rows = (instance_mask.unsqueeze(0) == ids[:, None, None]).any(2)  # (M, H): rows holding object m
    cols = (instance_mask.unsqueeze(0) == ids[:, None, None]).any(1)  # (M, W)
    present = rows.any(1)
    y0 = rows.float().argmax(1)
    y1 = h - rows.flip(1).float().argmax(1)
    x0 = cols.float().argmax(1)
    x1 = w - cols.flip(1).float().argmax(1)
    boxes = torch.stack([x0 / w, y0 / h, x1 / w, y1 / h], dim=1).float()
    return boxes * present[:, None]
