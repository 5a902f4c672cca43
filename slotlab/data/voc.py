"""PASCAL VOC 2012 segmentation: ``SegmentationObject`` + ``SegmentationClass`` palette PNGs.

Layout (the official one)::

    ROOT/JPEGImages/<id>.jpg
    ROOT/SegmentationObject/<id>.png     palette indices: 0 background, 1..N objects, 255 border
    ROOT/SegmentationClass/<id>.png      palette indices: 0 background, 1..20 classes, 255 border
    ROOT/ImageSets/Segmentation/<split>.txt   one image id per line

Pixels labelled 255 in either PNG (the "void" border around objects) go to
``ignore_mask`` and get label 0 in both masks; a protocol that counts them as background
(OCLF) simply does not read ``ignore_mask``. Object ids are renumbered 1..M in
increasing order; an object's class is the most frequent class of its pixels.

``split="trainaug"`` reads the id list ``ImageSets/Segmentation/trainaug.txt`` (the 10,582
images of the SBD-augmented training set). Most of its images have no instance PNG:
``require_masks`` defaults to False for it, and such images come without ground truth
(``meta["has_masks"] = False``, every pixel ignored). ``split="all"`` takes every image
that has a ``SegmentationObject`` PNG; ``split_file`` points at any other id list.

``max_objects`` / ``min_box_area`` / ``filter_resolution``: MSF's image filter
(:mod:`slotlab.data.object_filter`), on the boxes of the ``SegmentationObject`` objects
(the PNGs are read once, when the dataset is built); an image without one is kept.
"""

from __future__ import annotations

from pathlib import Path
from typing import Unpack

import numpy as np
import torch

from slotlab.data.imageio import (
    BadSampleError,
    DatasetError,
    FileDataset,
    make_sample,
    relabel_consecutive,
    require_dir,
    require_file,
    resolve_under,
    unannotated_sample,
)
from slotlab.data.object_filter import FilteredReading, Measured, ObjectFilter
from slotlab.data.sample import Sample, boxes_from_instance_mask

VOC_CLASSES: tuple[str, ...] = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip

#: Palette index of the unlabelled border in VOC segmentation PNGs.
VOC_BORDER = 255

TRAINAUG = "trainaug"
ALL_SPLIT = "all"


def object_classes(objects: np.ndarray, classes: np.ndarray, num_objects: int) -> np.ndarray:
    """Most frequent class (1..20) under each object 1..num_objects; 0 if it has none."""
    valid = (objects > 0) & (classes > 0) & (classes < len(VOC_CLASSES))
    votes = np.zeros((num_objects + 1, len(VOC_CLASSES)), dtype=np.int64)
    np.add.at(votes, (objects[valid], classes[valid]), 1)
    return votes[1:].argmax(axis=1) * (votes[1:].max(axis=1) > 0)


class VOCSegmentation(FileDataset):
    """PASCAL VOC instance + semantic segmentation (see the module docstring)."""

    name = "voc"
    class_names = list(VOC_CLASSES)

    def __init__(
        self,
        root: str | Path,
        split: str = "val",
        split_file: str | None = None,
        require_masks: bool | None = None,
        **reading: Unpack[FilteredReading],
    ) -> None:
        self.object_filter = ObjectFilter.pop_from(reading)
        super().__init__(**reading)
        self.root = Path(root)
        self.split = split
        self.require_masks = split != TRAINAUG if require_masks is None else require_masks
        self.image_dir = require_dir(self.root / "JPEGImages", "VOC image", "ROOT must hold JPEGImages/")
        self.object_dir = self.root / "SegmentationObject"
        self.class_dir = self.root / "SegmentationClass"
        self.ids = self.object_filter.apply(self._read_ids(split_file), self._measure, self.name)

    def _measure(self, image_id: str) -> Measured:
        """The filter's view of an image: the pixel boxes of its objects and its size (None
        without a readable object PNG: the image is kept and the loader deals with it)."""
        try:
            objects = self.read_label_map(self.object_dir / f"{image_id}.png")
        except BadSampleError:
            return None
        labels, original_ids = relabel_consecutive(objects, exclude=(0, VOC_BORDER))
        height, width = objects.shape
        unit_boxes = boxes_from_instance_mask(torch.from_numpy(labels), len(original_ids)).numpy()
        # Mask boxes are whole pixels; rounding undoes the float32 error of the normalised form.
        return np.rint(unit_boxes * np.array([width, height, width, height])), height, width

    def _read_ids(self, split_file: str | None) -> list[str]:
        if split_file is None and self.split == ALL_SPLIT:
            require_dir(self.object_dir, "VOC SegmentationObject", "split=all lists the PNGs found there")
            return sorted(p.stem for p in self.object_dir.glob("*.png"))
        sets = self.root / "ImageSets" / "Segmentation"
        if split_file is None:
            path = sets / f"{self.split}.txt"
            if not path.is_file():
                found = sorted(p.stem for p in sets.glob("*.txt")) if sets.is_dir() else []
                raise DatasetError(
                    f"VOC split list {path} does not exist; splits found: {found or 'none'}; use split=all, "
                    f"or split_file=PATH (for trainaug, put the SBD id list at {sets / 'trainaug.txt'})"
                )
        else:
            path = require_file(resolve_under(self.root, split_file), "VOC split list", "pass split_file=PATH")
        ids = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
        if not ids:
            raise DatasetError(f"VOC split list {path} is empty")
        return ids

    def __len__(self) -> int:
        return len(self.ids)

    def image_path(self, index: int) -> Path:
        return self.image_dir / f"{self.ids[index]}.jpg"

    def load(self, index: int) -> Sample:
        path = self.image_path(index)
        image = self.read_image(path)
        meta = self.sample_meta(index, path, image_id=self.ids[index])
        object_path = self.object_dir / f"{self.ids[index]}.png"
        class_path = self.class_dir / f"{self.ids[index]}.png"
        if not (object_path.is_file() and class_path.is_file()):
            if self.require_masks:
                missing = object_path if not object_path.is_file() else class_path
                raise BadSampleError(missing, "file not found (pass require_masks=false to load it unannotated)")
            return unannotated_sample(image, meta)
        size = tuple(image.shape[-2:])
        objects = self.read_label_map(object_path, size)
        classes = self.read_label_map(class_path, size)
        ignore = (objects == VOC_BORDER) | (classes == VOC_BORDER)
        instance_mask, original_ids = relabel_consecutive(objects, exclude=(0, VOC_BORDER))
        semantic = np.where(ignore, 0, classes)
        meta.update(has_masks=True, object_ids=original_ids.tolist())
        class_ids = object_classes(instance_mask, semantic, len(original_ids))
        return make_sample(image, instance_mask, class_ids, semantic_mask=semantic, ignore_mask=ignore, meta=meta)
