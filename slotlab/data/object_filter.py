"""Leave out images by their objects' count and box sizes (MSF A.2, "ClevrTex, COCO & VOC").

MSF trains and evaluates on COCO and VOC at 128 x 128 and filters out "images with more than
10 objects or objects smaller than a 16-pixel bounding box area". The datasets that offer it
(``coco``, ``coco-panoptic``, ``voc``) take three spec keys (:class:`ObjectFiltering`); the
filter reads annotations (boxes of the JSON, or the object PNG for VOC), never images.

Reading: an image is dropped when it has more than ``max_objects`` objects, or when ANY of
its objects has a box of fewer than ``min_box_area`` pixels (an area equal to it is kept).
The objects are those the dataset yields as instances (COCO panoptic: things; stuff is
background and does not count). With ``filter_resolution=S`` boxes are measured in the view
``resize=S&crop=S`` gives (shorter side resized to S, centre S x S crop, as MSF's 128 x 128
preprocessing): each box is scaled, clipped to the crop, and an object whose box falls wholly
outside the crop is not in the image (neither counted nor measured). Without it boxes are
measured in the image's own pixels and every object counts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypedDict, TypeVar

import numpy as np

from slotlab.data.imageio import DatasetError, FileReading
from slotlab.ops.resize import center_crop_box, shorter_side_size

logger = logging.getLogger("slotlab.data")

T = TypeVar("T")

#: What a dataset tells the filter about one image: (N, 4) pixel boxes (x0, y0, x1, y1) of its
#: objects and the image's height and width; None when the image has no annotation to judge.
Measured = tuple[np.ndarray, int, int] | None


class ObjectFiltering(TypedDict, total=False):
    """The filter's dataset spec keys (all unset: no filtering).

    Keys:
        max_objects: drop images with more objects than this.
        min_box_area: drop images with an object whose box has fewer pixels than this.
        filter_resolution: measure in the ``resize=S&crop=S`` view of this side S (MSF: 128).
    """

    max_objects: int | None
    min_box_area: float | None
    filter_resolution: int | None


class FilteredReading(FileReading, ObjectFiltering, total=False):
    """The reading options plus the filter's keys, for datasets that offer the filter."""


def boxes_in_square_view(boxes: np.ndarray, height: int, width: int, side: int) -> np.ndarray:
    """(N, 4) pixel boxes (x0, y0, x1, y1) of a (height, width) image -> the same boxes in its
    ``ShorterSideResize(side)`` + ``CenterCrop(side)`` view, clipped to the crop; boxes left
    with no area (outside the crop) are removed."""
    resized_h, resized_w = shorter_side_size(height, width, side)
    top, left, _, _ = center_crop_box(resized_h, resized_w, (side, side))
    scale = np.array([resized_w / width, resized_h / height] * 2)
    shift = np.array([left, top] * 2)
    moved = np.clip(np.asarray(boxes, dtype=np.float64).reshape(-1, 4) * scale - shift, 0, side)
    inside = (moved[:, 2] > moved[:, 0]) & (moved[:, 3] > moved[:, 1])
    return moved[inside]


def xywh_to_xyxy(boxes: Iterable[Iterable[float]]) -> np.ndarray:
    """COCO ``bbox`` entries [x, y, w, h] -> (N, 4) (x0, y0, x1, y1)."""
    xywh = np.asarray(list(boxes), dtype=np.float64).reshape(-1, 4)
    return np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)


@dataclass(frozen=True)
class ObjectFilter:
    """The MSF A.2 image filter (see the module docstring); all None keeps every image."""

    max_objects: int | None = None
    min_box_area: float | None = None
    resolution: int | None = None

    def __post_init__(self) -> None:
        if self.max_objects is not None and self.max_objects < 1:
            raise DatasetError(f"max_objects={self.max_objects} would drop every image with an object; give a "
                               "positive count (MSF: 10) or none")
        if self.min_box_area is not None and not self.min_box_area > 0:
            raise DatasetError(f"min_box_area={self.min_box_area} filters nothing; give a positive area in pixels "
                               "(MSF: 16) or none")
        if self.resolution is not None and self.resolution < 1:
            raise DatasetError(f"filter_resolution={self.resolution} is not an image side; give a positive number "
                               "of pixels (MSF: 128) or none")
        if self.resolution is not None and not self.active:
            raise DatasetError(f"filter_resolution={self.resolution} does nothing on its own; set max_objects "
                               "and/or min_box_area too, or leave it out")

    @classmethod
    def pop_from(cls, options: dict) -> ObjectFilter:
        """The filter named by the :class:`ObjectFiltering` keys of ``options``, which are removed."""
        return cls(options.pop("max_objects", None), options.pop("min_box_area", None),
                   options.pop("filter_resolution", None))

    @property
    def active(self) -> bool:
        return self.max_objects is not None or self.min_box_area is not None

    def keeps(self, boxes: np.ndarray, height: int, width: int) -> bool:
        """Whether an image of (height, width) whose objects have these pixel boxes passes."""
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        if self.resolution is not None:
            boxes = boxes_in_square_view(boxes, height, width, self.resolution)
        if self.max_objects is not None and len(boxes) > self.max_objects:
            return False
        areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        return self.min_box_area is None or not (areas < self.min_box_area).any()

    def apply(self, items: list[T], measure: Callable[[T], Measured], name: str) -> list[T]:
        """The items whose images pass, in order (an unmeasurable one is kept); one log line."""
        if not self.active:
            return items
        kept = [item for item in items if (found := measure(item)) is None or self.keeps(*found)]
        if items and not kept:  # an empty split would only fail later, far from its cause
            raise DatasetError(f"{name}: {self} keeps none of its {len(items)} images; raise max_objects, lower "
                               "min_box_area or leave them out")
        logger.info("%s: %s kept %d of %d images", name, self, len(kept), len(items))
        return kept
