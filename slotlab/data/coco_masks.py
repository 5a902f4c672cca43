"""COCO segmentations (polygons, RLEs) as masks, and masks painted into one label map."""

from __future__ import annotations

import warnings

import numpy as np
from pycocotools import mask as mask_utils

# A polygon needs three (x, y) points; pycocotools reads a 4-number list as a box instead.
_MIN_POLYGON_COORDS = 6


def segmentation_rle(segmentation: list | dict, height: int, width: int) -> dict:
    """One RLE for a COCO segmentation (polygons, uncompressed or compressed RLE).

    Same result as pycocotools' ``COCO.annToRLE``; polygon parts with fewer than three
    points are left out (pycocotools would misread them as boxes). Raises ValueError
    when nothing usable remains.
    """
    if isinstance(segmentation, list):
        polygons = [p for p in segmentation if valid_polygon(p)]
        if not polygons:
            raise ValueError("no polygon with at least three points")
        return mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    if isinstance(segmentation, dict) and "counts" in segmentation and "size" in segmentation:
        if list(segmentation["size"]) != [height, width]:
            raise ValueError(f"RLE size {segmentation['size']} differs from the image size {[height, width]}")
        if isinstance(segmentation["counts"], list):
            return mask_utils.frPyObjects(segmentation, height, width)
        return segmentation
    raise ValueError(f"segmentation must be polygons or an RLE dict, got {type(segmentation).__name__}")


def valid_polygon(polygon: object) -> bool:
    """At least three (x, y) points."""
    return isinstance(polygon, list) and len(polygon) >= _MIN_POLYGON_COORDS and len(polygon) % 2 == 0


def decode_rles(rles: list[dict], height: int, width: int) -> np.ndarray:
    """(N, H, W) bool masks of RLEs."""
    if not rles:
        return np.zeros((0, height, width), dtype=bool)
    with warnings.catch_warnings():
        # pycocotools' Cython decoder predates NumPy 2's copy keyword; the result is unaffected.
        warnings.filterwarnings("ignore", message="__array__ implementation", category=DeprecationWarning)
        return np.moveaxis(mask_utils.decode(rles), -1, 0).astype(bool)


def decode_segmentations(segmentations: list, height: int, width: int) -> np.ndarray:
    """(N, H, W) bool masks of COCO segmentations (equal to pycocotools' ``annToMask``)."""
    return decode_rles([segmentation_rle(s, height, width) for s in segmentations], height, width)


def paint_instances(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, H, W) bool -> (label map with later masks on top, pixels covered more than once)."""
    small = len(masks) < np.iinfo(np.uint8).max  # uint8 arithmetic is several times faster
    dtype = np.uint8 if small else np.int32
    if not len(masks):
        return np.zeros(masks.shape[1:], np.int64), np.zeros(masks.shape[1:], bool)
    ids = np.arange(1, len(masks) + 1, dtype=dtype).reshape(-1, 1, 1)
    labels = (masks * ids).max(axis=0).astype(np.int64)  # the highest id, i.e. the latest mask, wins
    return labels, masks.sum(axis=0, dtype=dtype) > 1
