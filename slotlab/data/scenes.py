"""Built-in procedural scenes: multi-object images rendered from a seed, no download.

Each scene paints 2-6 coloured shapes (six classes, ``scene_words``) over a flat or
textured background (``scene_backgrounds``). Several instances of one class in one image
are common, so a model must separate semantic grouping (all circles) from instance grouping
(each circle). Shapes are signed distance fields on the pixel grid (``scene_shapes``).
Objects are painted in order; an object is resampled when it would hide more than
``1 - min_visible`` of an earlier object, so every instance stays visible; an object that
overlaps or touches one of its preferred colour takes another colour, so two instances never
merge into one blob.

Class id = index in ``SCENE_CLASSES`` + 1; 0 is the background.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from scipy import ndimage
from torch.utils.data import Dataset

from slotlab.data.sample import Sample
from slotlab.data.scene_backgrounds import render_background
from slotlab.data.scene_shapes import ShapeField, distance_field, draw_pose
from slotlab.data.scene_words import SCENE_CLASSES, SCENE_COLORS, class_id, describe_objects

#: Dataset splits; each draws from its own seed stream, so splits never share a sample.
SCENE_SPLITS: tuple[str, ...] = ("train", "val", "test")

# Per-channel colour jitter of objects: small enough that a colour keeps its name.
_COLOR_JITTER = 0.04
# Any 8-neighbour of a shape's pixel lies within sqrt(2) pixels of the shape.
_TOUCH_DISTANCE = 1.5


@dataclass(frozen=True)
class ScenesConfig:
    """How scenes are drawn. Sizes are circumradii as a fraction of the image side."""

    resolution: int = 64
    min_objects: int = 2
    max_objects: int = 6
    textured_background: float = 0.5  # probability of a textured background
    min_visible: float = 0.4  # fraction of an object's area that must stay visible
    min_size: float = 0.10
    max_size: float = 0.22
    max_classes_per_image: int = 3  # classes are drawn from a small per-image subset
    max_colors_per_image: int = 3  # colours likewise, so "two red circles" is common
    max_placement_tries: int = 50  # resamples of one object before giving up

    def __post_init__(self) -> None:
        checks = [
            ("resolution", self.resolution >= 8, "an integer >= 8"),
            ("min_objects", self.min_objects >= 1, "an integer >= 1"),
            ("max_objects", self.max_objects >= self.min_objects, f"an integer >= min_objects ({self.min_objects})"),
            ("textured_background", 0.0 <= self.textured_background <= 1.0, "a probability in [0, 1]"),
            ("min_visible", 0.0 < self.min_visible <= 1.0, "a fraction in (0, 1]"),
            ("min_size", 0.0 < self.min_size <= 0.5, "a fraction in (0, 0.5]"),
            ("max_size", self.min_size <= self.max_size <= 0.5, f"a fraction in [min_size ({self.min_size}), 0.5]"),
            ("max_classes_per_image", self.max_classes_per_image >= 1, "an integer >= 1"),
            ("max_colors_per_image", self.max_colors_per_image >= 1, "an integer >= 1"),
            ("max_placement_tries", self.max_placement_tries >= 1, "an integer >= 1"),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise ValueError(f"ScenesConfig.{name} must be {expected}, got {getattr(self, name)!r}")


# ----------------------------------------------------------------------------- scenes


def _validate_classes(classes: Sequence[str]) -> list[str]:
    if isinstance(classes, str):
        raise ValueError(f"classes must be a sequence of class names such as [{classes!r}], not a string")
    names = list(classes)
    if not names:
        raise ValueError("classes must name at least one object; pass None to sample objects at random")
    for name in names:
        class_id(name)  # raises ValueError listing the valid classes
    return names


def _sample_classes(rng: np.random.Generator, config: ScenesConfig) -> list[str]:
    """Object count and classes, drawn from a small per-image subset so classes repeat."""
    count = int(rng.integers(config.min_objects, config.max_objects + 1))
    num_classes = int(rng.integers(1, min(config.max_classes_per_image, len(SCENE_CLASSES), count) + 1))
    subset = rng.choice(len(SCENE_CLASSES), size=num_classes, replace=False)
    return [SCENE_CLASSES[i] for i in rng.choice(subset, size=count)]


def _sample_colors(rng: np.random.Generator, count: int, config: ScenesConfig) -> tuple[list[str], list[str]]:
    """A small per-image colour subset and a preferred colour from it for each of ``count`` objects."""
    names = list(SCENE_COLORS)
    num_colors = int(rng.integers(1, min(config.max_colors_per_image, len(names), count) + 1))
    subset = [names[i] for i in rng.choice(len(names), size=num_colors, replace=False)]
    return subset, [subset[i] for i in rng.integers(num_colors, size=count)]


def _place(
    rng: np.random.Generator, shape: str, labels: np.ndarray, areas: np.ndarray, visible: np.ndarray,
    config: ScenesConfig,
) -> tuple[dict, ShapeField, np.ndarray, np.ndarray, np.ndarray]:
    """Sample a pose of ``shape`` until it leaves every earlier object >= min_visible of its area.

    Returns the pose, its distance field, its hard mask over the field's window, the pixels
    it hides of each earlier object, and which earlier objects it overlaps or touches (any
    8-neighbour of the shape lies within sqrt(2) pixels of it). Later tries draw smaller
    sizes, which makes crowded scenes fit.
    """
    num_placed = len(areas)
    for attempt in range(config.max_placement_tries):
        max_size = config.max_size - (config.max_size - config.min_size) * attempt / config.max_placement_tries
        pose = draw_pose(rng, shape, config.min_size, max_size)
        candidate = distance_field(pose, config.resolution)
        mask = candidate.sdf < 0
        if not mask.any():
            continue
        region = labels[candidate.window]
        hidden = np.bincount(region[mask], minlength=num_placed + 1)[1:]
        if np.all(visible - hidden >= config.min_visible * areas):
            touched = np.bincount(region[candidate.sdf < _TOUCH_DISTANCE], minlength=num_placed + 1)[1:] > 0
            return pose, candidate, mask, hidden, touched
    raise RuntimeError(
        f"could not place a {shape} among {num_placed} objects in {config.max_placement_tries} tries with "
        f"min_visible={config.min_visible}: use fewer objects, smaller sizes or a lower min_visible"
    )


def _separable_color(rng: np.random.Generator, preferred: str, subset: list[str], neighbours: set[str]) -> str:
    """``preferred`` unless a touching object has it (the two would merge into one blob);
    then another colour of the image's subset, else any free palette colour."""
    if preferred not in neighbours:
        return preferred
    free = [c for c in subset if c not in neighbours] or [c for c in SCENE_COLORS if c not in neighbours]
    return free[rng.integers(len(free))]


def render_scene(
    rng: np.random.Generator, config: ScenesConfig = ScenesConfig(), classes: Sequence[str] | None = None
) -> Sample:
    """Render one scene.

    classes=None samples the object count and classes from ``config``; otherwise exactly
    the named objects are painted, in the given order (one object per entry).
    ``meta = {"dataset": "scenes", "objects": [...]}`` with one dict per instance:
    ``{"class", "color", "center": (x, y), "size", "angle"}`` (lengths in units of the image
    side, y downwards, size = circumradius, angle in radians counter-clockwise).
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator (numpy.random.default_rng(seed)), got {type(rng)}")
    names = _sample_classes(rng, config) if classes is None else _validate_classes(classes)
    color_subset, preferred_colors = _sample_colors(rng, len(names), config)
    res = config.resolution

    image = render_background(rng, res, config.textured_background)
    labels = np.zeros((res, res), dtype=np.int64)
    areas = np.zeros(0, dtype=np.int64)
    visible = np.zeros(0, dtype=np.int64)
    objects: list[dict] = []
    for index, (shape, preferred) in enumerate(zip(names, preferred_colors)):
        pose, placed, mask, hidden, touched = _place(rng, shape, labels, areas, visible, config)
        neighbours = {objects[m]["color"] for m in np.flatnonzero(touched)}
        color = _separable_color(rng, preferred, color_subset, neighbours)
        objects.append({**pose, "color": color})
        labels[placed.window][mask] = index + 1
        area = int(mask.sum())
        areas = np.append(areas, area)
        visible = np.append(visible - hidden, area)
        rgb = np.asarray(SCENE_COLORS[color]) + rng.uniform(-_COLOR_JITTER, _COLOR_JITTER, 3)
        coverage = np.clip(0.5 - placed.sdf, 0.0, 1.0)  # antialiased edge, one pixel wide
        region = image[(slice(None), *placed.window)]
        region += coverage * (rgb.astype(np.float32).reshape(3, 1, 1) - region)

    ids = np.asarray([class_id(name) for name in names], dtype=np.int64)
    semantic = np.concatenate([[0], ids])[labels]
    return Sample(
        image=torch.from_numpy(np.clip(image, 0.0, 1.0, out=image)),
        instance_mask=torch.from_numpy(labels),
        semantic_mask=torch.from_numpy(semantic),
        ignore_mask=torch.zeros((res, res), dtype=torch.bool),
        class_ids=torch.from_numpy(ids),
        boxes=_boxes(labels, len(names)),
        caption=describe_objects([obj["color"] for obj in objects], names),
        meta={"dataset": "scenes", "objects": objects},
    )


def _boxes(labels: np.ndarray, num_objects: int) -> torch.Tensor:
    """Same result as ``boxes_from_instance_mask``, from one pass over the label map."""
    h, w = labels.shape
    boxes = np.zeros((num_objects, 4), dtype=np.float32)
    for m, found in enumerate(ndimage.find_objects(labels, max_label=num_objects)):
        if found is not None:
            rows, cols = found
            boxes[m] = (cols.start / w, rows.start / h, cols.stop / w, rows.stop / h)
    return torch.from_numpy(boxes)


# ----------------------------------------------------------------------------- dataset


class ScenesDataset(Dataset):
    """A fixed-size split of procedural scenes.

    Sample i of a split is rendered from ``SeedSequence([seed, split index, i])``: splits
    never share a sample and any sample can be regenerated on its own. With cache=True a
    rendered sample is kept and the same object is returned on later calls, so transforms
    must not modify samples in place.
    """

    def __init__(
        self, split: str = "train", size: int = 1000, config: ScenesConfig = ScenesConfig(), seed: int = 0,
        cache: bool = True,
    ) -> None:
        if split not in SCENE_SPLITS:
            raise ValueError(f"unknown scenes split {split!r}; valid splits: {', '.join(SCENE_SPLITS)}")
        if size < 0:
            raise ValueError(f"ScenesDataset size must be >= 0, got {size}")
        if seed < 0:
            raise ValueError(f"ScenesDataset seed must be >= 0 (a SeedSequence entropy), got {seed}")
        self.split = split
        self.size = size
        self.config = config
        self.seed = seed
        self.cache = cache
        self._cached: dict[int, Sample] = {}

    def __len__(self) -> int:
        return self.size

    def rng(self, index: int) -> np.random.Generator:
        """The generator that renders sample ``index`` of this split."""
        entropy = [self.seed, SCENE_SPLITS.index(self.split), index]
        return np.random.default_rng(np.random.SeedSequence(entropy))

    def __getitem__(self, index: int) -> Sample:
        if not -self.size <= index < self.size:
            raise IndexError(f"ScenesDataset index {index} out of range for size {self.size}")
        index %= self.size
        if index in self._cached:
            return self._cached[index]
        sample = render_scene(self.rng(index), self.config)
        sample.meta.update(split=self.split, index=index, seed=self.seed)
        if self.cache:
            self._cached[index] = sample
        return sample
