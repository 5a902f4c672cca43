"""Robust reading of images and label PNGs, and the skip-and-replace policy of datasets.

Every file-backed dataset in slotlab derives from :class:`FileDataset`. A subclass says
how to ``load(index)`` one sample and raises :class:`BadSampleError` when a file is
missing, corrupt, truncated, too large or inconsistent with its annotation. The base
class turns that into ONE warning line naming the file, records it in
``dataset.skipped``, and serves the next loadable index instead (wrapping around), so a
DataLoader never sees an exception and an epoch keeps its length (the replacement
sample is seen twice). Files are validated lazily, when first read: a pre-scan would
have to decode every image (truncation is only found by decoding), which costs as much
as an epoch. ``strict=True`` raises :class:`DatasetError` instead of skipping.

With DataLoader workers each worker holds its own copy of the dataset, so
``dataset.skipped`` in the main process only sees its own reads; every served sample
therefore also carries the skips made while serving it in ``sample.meta["skipped"]``.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, TypedDict

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import Dataset

from slotlab.data.sample import Sample, boxes_from_instance_mask
from slotlab.data.sample_transforms import SampleTransform

logger = logging.getLogger("slotlab.data")

#: Images with more pixels than this are refused (a 8192 x 8192 photo is 67 M pixels, and a
#: decoded float copy of it takes 800 MB). Pass ``max_pixels`` to change it per dataset.
DEFAULT_MAX_PIXELS = 64 * 1024 * 1024

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif")

# Pillow modes that hold 16- or 32-bit integer grey levels; convert("RGB") would clip them.
_WIDE_GREY_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
_UINT16_MAX = 65535.0


class BadSampleError(Exception):
    """A sample cannot be built from its files; ``file`` names the culprit."""

    def __init__(self, file: str | os.PathLike, reason: str) -> None:
        super().__init__(f"{file}: {reason}")
        self.file = str(file)
        self.reason = reason


class DatasetError(ValueError):
    """A dataset cannot be built or read; the message names the file/field and the fix."""


@dataclass(frozen=True)
class SkippedSample:
    """One sample that could not be loaded."""

    index: int
    file: str
    reason: str

    def as_dict(self) -> dict:
        return {"index": self.index, "file": self.file, "reason": self.reason}


# ----------------------------------------------------------------------------- images


def _open(path: str | os.PathLike, max_pixels: int) -> Image.Image:
    """Open and fully decode an image, mapping every failure to BadSampleError."""
    path = Path(path)
    if not path.is_file():
        raise BadSampleError(path, "file not found")
    try:
        with warnings.catch_warnings():
            # max_pixels below is the size policy; Pillow's own warning would only add noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
    except Image.DecompressionBombError as err:
        raise BadSampleError(path, f"image too large to decode safely ({err})") from err
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise BadSampleError(path, f"not a readable image ({err})") from err
    width, height = image.size
    if width * height > max_pixels:
        image.close()
        raise BadSampleError(
            path, f"image is {width}x{height} = {width * height} pixels, above max_pixels={max_pixels}"
        )
    try:
        image.load()
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        image.close()
        raise BadSampleError(path, f"corrupt or truncated image ({err})") from err
    return image


def image_size(path: str | os.PathLike) -> tuple[int, int] | None:
    """(H, W) of an image from its header (no pixels decoded); None when it cannot be opened."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError, Image.DecompressionBombError):
        return None
    return height, width


def _rgb_float(image: Image.Image) -> np.ndarray:
    """(H, W, 3) float32 in [0, 1] from any Pillow mode.

    Grey and palette images are replicated to RGB; alpha is dropped (not composited);
    16-bit grey images are scaled by 1/65535 instead of being clipped at 255.
    """
    if image.mode in _WIDE_GREY_MODES:
        grey = np.asarray(image, dtype=np.float32) / _UINT16_MAX
        return np.repeat(np.clip(grey, 0.0, 1.0)[..., None], 3, axis=-1)
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image, dtype=np.float32) / 255.0


def read_image(
    path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS, exif_transpose: bool = False
) -> Tensor:
    """Read any image file as (3, H, W) float in [0, 1]; raise BadSampleError on failure.

    ``exif_transpose`` applies the camera orientation tag; leave it off for annotated
    datasets, whose masks refer to the stored pixel grid.
    """
    with _open(path, max_pixels) as image:
        if exif_transpose:
            image = ImageOps.exif_transpose(image)
        array = _rgb_float(image)
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


def read_label_map(
    path: str | os.PathLike, size: tuple[int, int] | None = None, max_pixels: int = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """Read a label PNG as raw integer ids (H, W) int64; raise BadSampleError on failure.

    Palette ('P') images give their palette indices, grey images their grey levels and
    RGB images the id R + 256 G + 256^2 B (the COCO panoptic encoding; black = 0). An
    alpha channel is ignored. ``size`` = (H, W) the label map must have.
    """
    with _open(path, max_pixels) as image:
        if image.mode in ("RGBA", "RGBa", "RGBX"):
            image = image.convert("RGB")
        elif image.mode in ("LA", "La", "PA"):
            image = image.getchannel(0)
        array = np.asarray(image)
    if array.ndim == 3:
        array = array.astype(np.int64)
        array = array[..., 0] + 256 * array[..., 1] + 256 * 256 * array[..., 2]
    array = array.astype(np.int64)
    if size is not None and array.shape != tuple(size):
        raise BadSampleError(
            path, f"label map is {array.shape[1]}x{array.shape[0]} but the image is {size[1]}x{size[0]} (WxH)"
        )
    return array


def relabel_consecutive(ids: np.ndarray, exclude: Sequence[int] = (0,)) -> tuple[np.ndarray, np.ndarray]:
    """Map the distinct ids of ``ids`` (except ``exclude``) to 1..M in increasing order.

    Returns (label map with excluded ids -> 0, the original id of each new label 1..M).
    """
    values, inverse = np.unique(ids, return_inverse=True)
    keep = ~np.isin(values, np.asarray(exclude))
    new_labels = np.where(keep, np.cumsum(keep), 0)
    return new_labels[inverse.reshape(ids.shape)].astype(np.int64), values[keep]


def make_sample(
    image: Tensor,
    instance_mask: np.ndarray | Tensor,
    class_ids: Sequence[int] | np.ndarray,
    *,
    semantic_mask: np.ndarray | Tensor | None = None,
    ignore_mask: np.ndarray | Tensor | None = None,
    caption: str = "",
    meta: dict | None = None,
) -> Sample:
    """Assemble a Sample; the semantic mask defaults to the class of each instance pixel.

    Boxes are the tight boxes of each instance's visible pixels in ``instance_mask``
    (all zeros for an instance hidden or cropped away), the one box convention of slotlab.
    """
    instance = torch.as_tensor(np.asarray(instance_mask), dtype=torch.int64)
    classes = torch.as_tensor(np.asarray(class_ids, dtype=np.int64).reshape(-1))
    if semantic_mask is None:
        lookup = torch.cat([torch.zeros(1, dtype=torch.int64), classes])
        semantic = lookup[instance]
    else:
        semantic = torch.as_tensor(np.asarray(semantic_mask), dtype=torch.int64)
    if ignore_mask is None:
        ignore = torch.zeros(instance.shape, dtype=torch.bool)
    else:
        ignore = torch.as_tensor(np.asarray(ignore_mask), dtype=torch.bool)
    return Sample(
        image=image,
        instance_mask=instance,
        semantic_mask=semantic,
        ignore_mask=ignore,
        class_ids=classes,
        boxes=boxes_from_instance_mask(instance, len(classes)),
        caption=caption,
        meta=dict(meta or {}),
    )


def unannotated_sample(image: Tensor, meta: dict | None = None) -> Sample:
    """A sample without ground truth: no objects, every pixel ignored by metrics and losses."""
    h, w = image.shape[-2:]
    meta = {**(meta or {}), "has_masks": False}
    return make_sample(image, np.zeros((h, w), np.int64), [], ignore_mask=np.ones((h, w), bool), meta=meta)


# ----------------------------------------------------------------------------- datasets


class FileReading(TypedDict, total=False):
    """The options every :class:`FileDataset` takes (each a dataset spec key but ``transform``
    and ``strict``), declared once: a subclass takes ``**reading: Unpack[FileReading]`` and
    hands them to ``FileDataset.__init__``, which holds their defaults.

    Keys:
        max_pixels: images with more pixels are bad samples (default ``DEFAULT_MAX_PIXELS``).
        transform: applied to every loaded sample.
        strict: raise on a bad file or a repaired annotation instead of skipping/repairing.
    """

    max_pixels: int
    transform: SampleTransform | None
    strict: bool


class FileDataset(Dataset):
    """Base of datasets read from files: lazy validation, skip-and-replace, a report.

    Subclasses set ``name`` and ``class_names`` (index = class id, 0 = "background"),
    implement ``__len__`` and ``load(index)`` (raising BadSampleError for bad files) and
    call ``note_issue`` for repairs made while indexing (dropped annotations, ...).
    """

    name = "files"
    class_names: list[str] = ["background"]

    def __init__(
        self, transform: SampleTransform | None = None, strict: bool = False, max_pixels: int = DEFAULT_MAX_PIXELS
    ) -> None:
        self.transform = transform
        self.strict = strict
        self.max_pixels = max_pixels  # larger images are bad samples, refused before decoding
        self.issues: list[str] = []
        self._skipped: dict[int, SkippedSample] = {}

    def __len__(self) -> int:
        raise NotImplementedError

    def load(self, index: int) -> Sample:
        """Sample ``index`` without transform; raises BadSampleError if its files are bad."""
        raise NotImplementedError

    def read_image(self, path: str | os.PathLike, exif_transpose: bool = False) -> Tensor:
        """:func:`read_image` within this dataset's ``max_pixels``."""
        return read_image(path, self.max_pixels, exif_transpose)

    def read_label_map(self, path: str | os.PathLike, size: tuple[int, int] | None = None) -> np.ndarray:
        """:func:`read_label_map` within this dataset's ``max_pixels``."""
        return read_label_map(path, size, self.max_pixels)

    def sample_meta(self, index: int, path: str | os.PathLike, **more) -> dict:
        """The ``meta`` of sample ``index`` read from ``path``: dataset, index and file, then ``more``."""
        return {"dataset": self.name, "index": index, "file": str(path), **more}

    def load_transformed(self, index: int) -> Sample:
        """``load(index)`` followed by the transform; raises BadSampleError, never replaces."""
        sample = self.load(index)
        return self.transform(sample) if self.transform is not None else sample

    @property
    def skipped(self) -> list[SkippedSample]:
        """Samples this process found unloadable so far, in index order."""
        return [self._skipped[i] for i in sorted(self._skipped)]

    def note_issue(self, message: str) -> None:
        """Record (and warn once about) a repair of the input; an error when strict."""
        if self.strict:
            raise DatasetError(f"{message} (strict=True; pass strict=False to repair and continue)")
        logger.warning("%s: %s", self.name, message)
        self.issues.append(message)

    def _skip(self, index: int, err: BadSampleError) -> SkippedSample:
        if self.strict:
            raise DatasetError(
                f"{self.name} sample {index}: {err} (strict=True; fix or remove the file, "
                "or pass strict=False to skip it)"
            ) from err
        record = SkippedSample(index, err.file, err.reason)
        self._skipped[index] = record
        logger.warning("%s: skipped sample %d: %s", self.name, index, err)
        return record

    def __getitem__(self, index: int) -> Sample:
        size = len(self)
        if not -size <= index < size:
            raise IndexError(f"{self.name} index {index} out of range for {size} samples")
        index %= size
        skipped_now: list[SkippedSample] = []
        for offset in range(size):
            candidate = (index + offset) % size
            if candidate in self._skipped:
                continue
            try:
                sample = self.load(candidate)
            except BadSampleError as err:
                skipped_now.append(self._skip(candidate, err))
                continue
            if candidate != index:
                sample.meta["replaces"] = index
            if skipped_now:
                sample.meta["skipped"] = [s.as_dict() for s in skipped_now]
            return self.transform(sample) if self.transform is not None else sample
        raise DatasetError(
            f"{self.name}: none of the {size} samples could be loaded; first failure: "
            f"{self.skipped[0].file}: {self.skipped[0].reason}"
        )

    def report(self) -> dict:
        """Counts, repairs and skipped files seen by this process (JSON-serialisable)."""
        return {
            "dataset": self.name,
            "samples": len(self),
            "issues": list(self.issues),
            "skipped": [s.as_dict() for s in self.skipped],
        }


class ObjectFileDataset(FileDataset):
    """A :class:`FileDataset` whose objects have no class of their own (CLEVR, MOVi, a folder's
    masks): every object is class 1, "object"."""

    class_names = ["background", "object"]

    def objects_sample(self, image: Tensor, labels: np.ndarray, meta: dict, ignore: np.ndarray | None = None) -> Sample:
        """A sample whose nonzero label values are the objects (renumbered 1..M; their values
        in ``labels`` go to ``meta["object_ids"]``)."""
        instance_mask, original = relabel_consecutive(labels, exclude=(0,))
        meta = {**meta, "object_ids": original.tolist()}
        return make_sample(image, instance_mask, np.ones(len(original), np.int64), ignore_mask=ignore, meta=meta)


class ReadableSamples(Dataset):
    """``dataset`` without the replacement of unreadable samples: index i gives sample i, or
    its :class:`SkippedSample` (logged and recorded like any skip) when its files are bad.

    Evaluation reads through this, so that each readable sample is scored exactly once and
    the unreadable ones are reported; training streams keep the replacement, which keeps
    an epoch's length. Datasets not read from files, and strict ones, are passed through.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Sample | SkippedSample:
        dataset = self.dataset
        if not isinstance(dataset, FileDataset) or dataset.strict:
            return dataset[index]
        try:
            return dataset.load_transformed(index)
        except BadSampleError as err:
            return dataset._skip(index, err)


def resolve_under(root: Path, path: str | os.PathLike) -> Path:
    """``path`` if absolute, else relative to ``root``."""
    path = Path(path)
    return path if path.is_absolute() else root / path


def require_dir(path: Path, what: str, hint: str) -> Path:
    if not path.is_dir():
        raise DatasetError(f"{what} directory {path} does not exist; {hint}")
    return path


def require_file(path: Path, what: str, hint: str) -> Path:
    if not path.is_file():
        raise DatasetError(f"{what} file {path} does not exist; {hint}")
    return path
