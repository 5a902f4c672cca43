"""A plain folder of images (a user's own photos), with or without masks.

Every image under ROOT (recursively, sorted by path) is one sample. With ``masks=DIR``,
the mask of ``ROOT/a/b.jpg`` is ``DIR/a/b.png``: a label PNG whose nonzero values are
instances (renumbered 1..M, class 1 "object"); ``ignore_value`` names a value to ignore
(e.g. 255 for VOC-style borders). An image without a mask comes without ground truth
(``meta["has_masks"] = False``, every pixel in ``ignore_mask``). Photos are turned
upright by their EXIF orientation unless ``exif_transpose=false``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Unpack

import numpy as np

from slotlab.data.imageio import (
    IMAGE_EXTENSIONS,
    DatasetError,
    FileReading,
    ObjectFileDataset,
    require_dir,
    resolve_under,
    unannotated_sample,
)
from slotlab.data.sample import Sample


class ImageFolder(ObjectFileDataset):
    """Images found under a folder, optionally with label PNGs (see the module docstring)."""

    name = "folder"

    def __init__(
        self,
        root: str | Path,
        masks: str | None = None,
        ignore_value: int | None = None,
        recursive: bool = True,
        exif_transpose: bool = True,
        **reading: Unpack[FileReading],
    ) -> None:
        super().__init__(**reading)
        self.root = require_dir(Path(root), "image", "folder:DIR needs an existing directory")
        self.mask_dir = require_dir(resolve_under(self.root, masks), "mask", "pass masks=DIR") if masks else None
        self.ignore_value = ignore_value
        self.exif_transpose = exif_transpose
        found = self.root.rglob("*") if recursive else self.root.iterdir()
        self.images = sorted(
            p for p in found
            if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
            and (self.mask_dir is None or self.mask_dir not in p.parents)
        )
        if not self.images:
            raise DatasetError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {self.root}")

    def __len__(self) -> int:
        return len(self.images)

    def mask_path(self, index: int) -> Path | None:
        if self.mask_dir is None:
            return None
        return (self.mask_dir / self.images[index].relative_to(self.root)).with_suffix(".png")

    def load(self, index: int) -> Sample:
        path = self.images[index]
        image = self.read_image(path, exif_transpose=self.exif_transpose)
        meta = self.sample_meta(index, path)
        mask_path = self.mask_path(index)
        if mask_path is None or not mask_path.is_file():
            return unannotated_sample(image, meta)
        labels = self.read_label_map(mask_path, tuple(image.shape[-2:]))
        ignore = None
        if self.ignore_value is not None:
            ignore = labels == self.ignore_value
            labels = np.where(ignore, 0, labels)
        return self.objects_sample(image, labels, {**meta, "has_masks": True}, ignore=ignore)
