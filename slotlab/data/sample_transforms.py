"""Transforms of whole Samples: the image and every mask move together, boxes follow.

Images are resized bilinearly (antialiased), masks with nearest neighbour, through
``slotlab.ops.resize``. After geometric changes the boxes are recomputed from the
transformed instance mask (once per ``Compose`` run of geometric steps); an instance
cropped away keeps its id and gets an all-zero box. Transforms return new Samples and
never modify their input (datasets may cache).

Random transforms draw from ``generator`` when one is passed to the call, else from
torch's global generator: a DataLoader seeds that per worker from its own generator, so
``torch.manual_seed(s)`` (or ``DataLoader(generator=...)``) makes a run reproducible for a
fixed number of workers.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol, Sequence

import torch

from slotlab.data.sample import Sample, boxes_from_instance_mask
from slotlab.ops.resize import (
    center_crop_box,
    crop,
    hflip,
    resize_image,
    resize_mask,
    shorter_side_size,
)

_MASKS = ("instance_mask", "semantic_mask", "ignore_mask")


class SampleTransform(Protocol):
    def __call__(self, sample: Sample, generator: torch.Generator | None = None) -> Sample: ...


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    height, width = size
    return int(height), int(width)


def refresh_boxes(sample: Sample) -> Sample:
    """The sample with its boxes recomputed from its instance mask."""
    return dataclasses.replace(sample, boxes=boxes_from_instance_mask(sample.instance_mask, sample.num_objects))


def map_pixels(sample: Sample, on_image, on_mask) -> Sample:
    """Apply ``on_image`` to the image and ``on_mask`` to every mask; the boxes are left stale."""
    changes = {name: on_mask(getattr(sample, name)) for name in _MASKS}
    return dataclasses.replace(sample, image=on_image(sample.image), meta=dict(sample.meta), **changes)


def resize_sample(sample: Sample, size: tuple[int, int]) -> Sample:
    """Resize to ``size`` = (H, W): bilinear image, nearest masks (boxes left stale)."""
    return map_pixels(sample, lambda x: resize_image(x, size), lambda m: resize_mask(m, size))


def crop_sample(sample: Sample, top: int, left: int, height: int, width: int) -> Sample:
    """Crop the window (top, left, height, width) out of the image and every mask (boxes left stale)."""
    h, w = sample.image.shape[-2:]
    if top < 0 or left < 0 or top + height > h or left + width > w:
        raise ValueError(f"crop window ({top}, {left}, {height}, {width}) does not fit a {h}x{w} sample: resize first")
    return map_pixels(sample, lambda x: crop(x, top, left, height, width), lambda m: crop(m, top, left, height, width))


def flip_sample(sample: Sample) -> Sample:
    """Mirror left-right (boxes left stale)."""
    return map_pixels(sample, hflip, hflip)


class GeometricTransform:
    """A transform that moves pixels. ``move`` leaves boxes stale; calling it refreshes them.

    ``Compose`` calls ``move`` on consecutive geometric steps and refreshes the boxes once.
    """

    def move(self, sample: Sample, generator: torch.Generator | None = None) -> Sample:
        raise NotImplementedError

    def __call__(self, sample: Sample, generator: torch.Generator | None = None) -> Sample:
        moved = self.move(sample, generator)
        return sample if moved is sample else refresh_boxes(moved)


class ShorterSideResize(GeometricTransform):
    """Resize so that the shorter side equals ``size`` (aspect ratio kept)."""

    def __init__(self, size: int) -> None:
        self.size = size

    def move(self, sample: Sample, generator: torch.Generator | None = None) -> Sample:
        h, w = sample.image.shape[-2:]
        return resize_sample(sample, shorter_side_size(h, w, self.size))

    def __repr__(self) -> str:
        return f"ShorterSideResize({self.size})"


class Resize(GeometricTransform):
    """Resize to a fixed (H, W), ignoring the aspect ratio."""

    def __init__(self, size: int | Sequence[int]) -> None:
        self.size = _pair(size)

    def move(self, sample: Sample, generator: torch.Generator | None = None) -> Sample:
        return resize_sample(sample, self.size)

    def __repr__(self) -> str:
        return f"Resize({self.size})"


class CenterCrop(GeometricTransform):
    """Crop the centred window of ``size``; the sample must be at least that large."""

    def __init__(self, size: int | Sequence[int]) -> None:
        self.size = _pair(size)

    def move(self, sample: Sample, generator: torch.Generator | None = None) -> Sample:
        h, w = sample.image.shape[-2:]
        return crop_sample(sample, *center_crop_box(h, w, self.size))

    def __repr__(self) -> str:
        return f"CenterCrop({self.size})"


class RandomCrop(GeometricTransform):
    """Crop a window of ``size`` at a uniformly drawn position."""

    def __init__(self, size: int | Sequence[int]) -> None:
        self.size = _pair(size)

    def move(self, sample: Sample, generator: torch.Generator | None = None) -> Sample:
        h, w = sample.image.shape[-2:]
        ch, cw = self.size
        if ch > h or cw > w:
            raise ValueError(f"cannot crop {self.size} out of ({h}, {w}): resize first")
        top = int(torch.randint(h - ch + 1, (1,), generator=generator))
        left = int(torch.randint(w - cw + 1, (1,), generator=generator))
        return crop_sample(sample, top, left, ch, cw)

    def __repr__(self) -> str:
        return f"RandomCrop({self.size})"


class RandomHorizontalFlip(GeometricTransform):
    """Mirror left-right with probability ``p``."""

    def __init__(self, p: float = 0.5) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"flip probability must be in [0, 1], got {p}")
        self.p = p

    def move(self, sample: Sample, generator: torch.Generator | None = None) -> Sample:
        if float(torch.rand((), generator=generator)) < self.p:
            return flip_sample(sample)
        return sample

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip({self.p})"


class Compose:
    """Apply transforms in order, passing the same generator to each.

    Boxes are recomputed once after a run of geometric steps, not after each of them.
    """

    def __init__(self, transforms: Sequence[SampleTransform]) -> None:
        self.transforms = list(transforms)

    def __call__(self, sample: Sample, generator: torch.Generator | None = None) -> Sample:
        stale = False
        for transform in self.transforms:
            if isinstance(transform, GeometricTransform):
                moved = transform.move(sample, generator)
                stale, sample = stale or moved is not sample, moved
                continue
            if stale:
                sample, stale = refresh_boxes(sample), False
            sample = transform(sample, generator)
        return refresh_boxes(sample) if stale else sample

    def __repr__(self) -> str:
        return f"Compose({self.transforms})"


def resize_center_crop(size: int) -> Compose:
    """Shorter side to ``size`` then the centred ``size`` x ``size`` crop (every protocol's eval view)."""
    return Compose([ShorterSideResize(size), CenterCrop(size)])

