"""CLEVR-family synthetic scenes: ClevrTex and the CLEVR-with-masks PNG export.

ClevrTex layout (as distributed)::

    ROOT/clevrtex_<variant>/<any sub-folders>/CLEVRTEX_<variant>_000123.png       image (RGBA)
    ROOT/clevrtex_<variant>/<any sub-folders>/CLEVRTEX_<variant>_000123_flat.png  mask
    (ROOT may also be the clevrtex_<variant> folder itself)

The ``_flat.png`` mask holds one index per pixel: 0 background, k = object k. Splits
follow the authors' evaluation code: images sorted by number, the first 10% are
``test``, the next 10% ``val``, the rest ``train`` (``all`` = every image; variant
``outd`` has no splits). Every object has class 1 ("object"); the authors evaluate at a
centre crop of 0.8 x the shorter side (192 of 240) resized to 128, which is
``CenterCrop(192)`` followed by a resize in slotlab's transforms.

CLEVR-with-masks layout (images exported from the Multi-Object Datasets records)::

    ROOT/CLEVR_image_<i>.png
    ROOT/CLEVR_mask_<i>_<k>.png    one binary mask per slot k; k = 0 is the background

Empty slot masks are dropped and objects renumbered 1..M in slot order.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Unpack

import numpy as np

from slotlab.data.imageio import BadSampleError, DatasetError, FileReading, ObjectFileDataset, require_dir
from slotlab.data.sample import Sample

CLEVRTEX_VARIANTS = ("full", "pbg", "vbg", "grassbg", "camo", "outd")
#: (start, end) fractions of the sorted image list, as in the authors' evaluation code.
CLEVRTEX_SPLITS: dict[str, tuple[float, float]] = {"test": (0.0, 0.1), "val": (0.1, 0.2), "train": (0.2, 1.0),
                                                   "all": (0.0, 1.0)}

_CLEVR_IMAGE = re.compile(r"CLEVR_image_(\d+)\.png$")
_CLEVR_MASK = re.compile(r"CLEVR_mask_(\d+)_(\d+)\.png$")


class ClevrTex(ObjectFileDataset):
    """ClevrTex images with their ``_flat.png`` instance masks (see the module docstring)."""

    name = "clevrtex"

    def __init__(
        self, root: str | Path, split: str = "train", variant: str = "full", **reading: Unpack[FileReading]
    ) -> None:
        super().__init__(**reading)
        if variant not in CLEVRTEX_VARIANTS:
            choices = ", ".join(CLEVRTEX_VARIANTS)
            raise DatasetError(f"ClevrTex variant={variant!r} is not valid; choose one of {choices}")
        if split not in CLEVRTEX_SPLITS:
            raise DatasetError(f"ClevrTex split={split!r} is not valid; choose one of {', '.join(CLEVRTEX_SPLITS)}")
        self.root = Path(root)
        self.split = split
        self.variant = variant
        folder = self.root if self.root.name == f"clevrtex_{variant}" else self.root / f"clevrtex_{variant}"
        self.folder = require_dir(folder, "ClevrTex", f"ROOT must be or contain clevrtex_{variant}/")
        images = self._index()
        start, end = CLEVRTEX_SPLITS["all" if variant == "outd" else split]
        self.images = images[int(start * len(images)) : int(end * len(images))]

    def _index(self) -> list[Path]:
        pattern = re.compile(rf"CLEVRTEX_{self.variant}_(\d{{6}})\.png$")
        numbered = {}
        for path in self.folder.rglob(f"CLEVRTEX_{self.variant}_*.png"):
            match = pattern.search(path.name)
            if match:
                numbered[int(match.group(1))] = path
        if not numbered:
            raise DatasetError(f"no CLEVRTEX_{self.variant}_NNNNNN.png images under {self.folder}")
        return [numbered[k] for k in sorted(numbered)]

    def __len__(self) -> int:
        return len(self.images)

    def load(self, index: int) -> Sample:
        path = self.images[index]
        image = self.read_image(path)
        labels = self.read_label_map(path.with_name(path.stem + "_flat.png"), tuple(image.shape[-2:]))
        return self.objects_sample(image, labels, self.sample_meta(index, path))


class ClevrMasks(ObjectFileDataset):
    """CLEVR images with one binary PNG per object slot (see the module docstring)."""

    name = "clevr-masks"

    def __init__(self, root: str | Path, **reading: Unpack[FileReading]) -> None:
        super().__init__(**reading)
        self.root = require_dir(Path(root), "CLEVR masks", "ROOT must hold CLEVR_image_<i>.png files")
        masks: dict[int, dict[int, Path]] = {}
        for path in self.root.glob("CLEVR_mask_*.png"):
            match = _CLEVR_MASK.search(path.name)
            if match:
                masks.setdefault(int(match.group(1)), {})[int(match.group(2))] = path
        images = {int(m.group(1)): p for p in self.root.glob("CLEVR_image_*.png") if (m := _CLEVR_IMAGE.search(p.name))}
        if not images:
            raise DatasetError(f"no CLEVR_image_<i>.png files in {self.root}")
        self.numbers = sorted(images)
        self.images = [images[i] for i in self.numbers]
        self.masks = [sorted(masks.get(i, {}).items()) for i in self.numbers]

    def __len__(self) -> int:
        return len(self.images)

    def load(self, index: int) -> Sample:
        path = self.images[index]
        image = self.read_image(path)
        size = tuple(image.shape[-2:])
        if not self.masks[index]:
            raise BadSampleError(path, f"no CLEVR_mask_{self.numbers[index]}_<k>.png files beside it")
        # Slot 0 is the background; object slot k >= 1 is painted where its mask is set.
        labels = np.zeros(size, np.int64)
        coverage = np.zeros(size, np.int64)
        for k, mask_path in self.masks[index]:
            if k > 0:
                mask = self.read_label_map(mask_path, size) > 0
                labels[mask] = k
                coverage += mask
        return self.objects_sample(image, labels, self.sample_meta(index, path), ignore=coverage > 1)
