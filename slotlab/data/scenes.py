"""Built-in procedural scenes: multi-object images rendered from a seed, no download.

Each scene paints 2-6 coloured shapes (six classes) over a flat or textured background.
Several instances of one class in one image are common, so a model must separate
semantic grouping (all circles) from instance grouping (each circle). Shapes are signed
distance fields evaluated on the pixel grid, which gives exact hard labels (pixel centre
inside the shape) and antialiased colour edges (coverage from the distance) without
supersampling. Objects are painted in order; an object is resampled when it would hide
more than ``1 - min_visible`` of an earlier object, so every instance stays visible; an
object that overlaps or touches one of its preferred colour takes another colour, so two
instances never merge into one blob.

Class id = index in ``SCENE_CLASSES`` + 1; 0 is the background.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Sequence

import numpy as np
import torch
from scipy import ndimage
from torch.utils.data import Dataset

from slotlab.data.sample import Sample

#: Shape classes; class id = index + 1 (0 = background).
SCENE_CLASSES: tuple[str, ...] = ("circle", "square", "triangle", "star", "hexagon", "heart")

#: Named object colours (RGB in [0, 1]). All are bright or saturated, far from the dark,
#: desaturated backgrounds, so objects always stand out and captions name them correctly.
SCENE_COLORS: dict[str, tuple[float, float, float]] = {
    "red": (0.90, 0.12, 0.12),
    "green": (0.15, 0.75, 0.20),
    "blue": (0.15, 0.35, 0.95),
    "yellow": (0.95, 0.88, 0.15),
    "purple": (0.60, 0.25, 0.85),
    "orange": (1.00, 0.55, 0.10),
    "cyan": (0.15, 0.85, 0.90),
    "pink": (1.00, 0.50, 0.78),
    "white": (0.95, 0.95, 0.95),
}

#: Dataset splits; each draws from its own seed stream, so splits never share a sample.
SCENE_SPLITS: tuple[str, ...] = ("train", "val", "test")

_NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")

# Per-channel colour jitter of objects: small enough that a colour keeps its name.
_COLOR_JITTER = 0.04
# Backgrounds: grey level range and tint, kept dark and desaturated (see SCENE_COLORS).
_BACKGROUND_LEVEL = (0.08, 0.30)
_BACKGROUND_TINT = 0.05
# Textures stay low-contrast so they never look like objects.
_STRIPE_AMPLITUDE = (0.03, 0.07)
_STRIPE_CYCLES = (3.0, 8.0)
_NOISE_AMPLITUDE = 0.07
_NOISE_CELLS = 6
# Hearts are only tilted, never turned upside down, so they stay recognisable.
_HEART_MAX_TILT = math.pi / 6
# Any 8-neighbour of a shape's pixel lies within sqrt(2) pixels of the shape.
_TOUCH_DISTANCE = 1.5
# Inner/outer radius of the five-pointed star.
_STAR_INNER_RATIO = 0.45


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


def class_name(class_id: int) -> str:
    """Name of a scene class id (1..len(SCENE_CLASSES)); 0 is ``"background"``."""
    if class_id == 0:
        return "background"
    if not 1 <= class_id <= len(SCENE_CLASSES):
        raise ValueError(f"scene class id must be in 0..{len(SCENE_CLASSES)}, got {class_id}")
    return SCENE_CLASSES[class_id - 1]


def class_id(name: str) -> int:
    """Class id (index + 1) of a scene class name."""
    if name not in SCENE_CLASSES:
        raise ValueError(f"unknown scene class {name!r}; valid classes: {', '.join(SCENE_CLASSES)}")
    return SCENE_CLASSES.index(name) + 1


# ----------------------------------------------------------------------------- captions


def _count_phrase(count: int, color: str, shape: str) -> str:
    if count == 1:
        article = "an" if color[0] in "aeiou" else "a"
        return f"{article} {color} {shape}"
    number = _NUMBER_WORDS[count] if count < len(_NUMBER_WORDS) else str(count)
    return f"{number} {color} {shape}s"  # every scene class has a regular plural


def describe_objects(colors: Sequence[str], classes: Sequence[str]) -> str:
    """Caption naming objects grouped by colour and class, e.g. "two red circles and a blue star".

    Groups appear in the order of their first object.
    """
    counts: dict[tuple[str, str], int] = {}
    for key in zip(colors, classes, strict=True):
        counts[key] = counts.get(key, 0) + 1
    phrases = [_count_phrase(n, color, shape) for (color, shape), n in counts.items()]
    if len(phrases) <= 1:
        return "".join(phrases)
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


# ----------------------------------------------------------------------------- shapes
# Signed distance functions in a local frame (u right, v up, units of the image side);
# negative inside. ``radius`` is the circumradius of the shape.


def _symmetric_segment_sdf(u: np.ndarray, v: np.ndarray, folds: int, outer: float, inner: float) -> np.ndarray:
    """Signed distance to a shape with ``folds``-fold mirror symmetry and a vertex on +u.

    Folding the plane into the half-sector [0, pi/folds] leaves one boundary segment, from
    the vertex (outer, 0) to the point at angle pi/folds and radius ``inner``. A regular
    polygon has inner = outer * cos(pi/folds) (edge midpoint); a star a smaller inner radius.
    """
    half = math.pi / folds
    angle = np.abs((np.arctan2(v, u) + half) % (2 * half) - half)
    radius = np.hypot(u, v)
    qx = radius * np.cos(angle) - outer  # relative to the vertex
    qy = radius * np.sin(angle)
    ex, ey = inner * math.cos(half) - outer, inner * math.sin(half)
    t = np.clip((qx * ex + qy * ey) / (ex * ex + ey * ey), 0.0, 1.0)
    distance = np.hypot(qx - t * ex, qy - t * ey)
    origin_side = ex * qy - ey * qx > 0  # the centre lies on this side of the segment
    return np.where(origin_side, -distance, distance)


def _circle_sdf(u: np.ndarray, v: np.ndarray, radius: float) -> np.ndarray:
    return np.hypot(u, v) - 0.85 * radius  # slightly smaller: a disc looks larger than polygons


def _polygon_sdf(sides: int) -> Callable[[np.ndarray, np.ndarray, float], np.ndarray]:
    def sdf(u: np.ndarray, v: np.ndarray, radius: float) -> np.ndarray:
        return _symmetric_segment_sdf(u, v, sides, radius, radius * math.cos(math.pi / sides))

    return sdf


def _star_sdf(u: np.ndarray, v: np.ndarray, radius: float) -> np.ndarray:
    return _symmetric_segment_sdf(u, v, 5, radius, radius * _STAR_INNER_RATIO)


def _heart_sdf(u: np.ndarray, v: np.ndarray, radius: float) -> np.ndarray:
    """A square standing on a corner with a disc on each upper edge; tip points down (-v)."""
    half_diagonal = radius / 1.345  # 1.345 * half_diagonal = farthest point of the lobes
    centre_v = -0.1035 * half_diagonal  # centres the heart's height on the origin
    lobe_radius = half_diagonal / math.sqrt(2.0)
    diamond = _symmetric_segment_sdf(u, v - centre_v, 4, half_diagonal, half_diagonal * math.cos(math.pi / 4))
    lobe_v = v - centre_v - half_diagonal / 2
    left = np.hypot(u + half_diagonal / 2, lobe_v) - lobe_radius
    right = np.hypot(u - half_diagonal / 2, lobe_v) - lobe_radius
    return np.minimum(diamond, np.minimum(left, right))


_SHAPE_SDFS: dict[str, Callable[[np.ndarray, np.ndarray, float], np.ndarray]] = {
    "circle": _circle_sdf,
    "square": _polygon_sdf(4),
    "triangle": _polygon_sdf(3),
    "star": _star_sdf,
    "hexagon": _polygon_sdf(6),
    "heart": _heart_sdf,
}


@lru_cache(maxsize=16)
def _pixel_centres(resolution: int) -> np.ndarray:
    """Pixel-centre coordinates along one axis, in units of the image side."""
    return (np.arange(resolution, dtype=np.float32) + 0.5) / resolution


@dataclass
class _Shape:
    """One object's distance field over the pixel window it can touch."""

    window: tuple[slice, slice]
    sdf: np.ndarray  # (h, w) float32 signed distance in pixels over ``window``


def _draw_pose(rng: np.random.Generator, shape: str, max_size: float, config: ScenesConfig) -> dict:
    """Size (circumradius), centre and rotation of ``shape``, the whole shape inside the image."""
    # Python floats keep the float32 grid in float32 (numpy scalars would promote it).
    size = float(rng.uniform(config.min_size, max_size))
    cx, cy = rng.uniform(size, 1.0 - size, size=2).tolist()
    tilt = _HEART_MAX_TILT if shape == "heart" else math.pi
    return {"class": shape, "center": (cx, cy), "size": size, "angle": float(rng.uniform(-tilt, tilt))}


def _distance_field(pose: dict, resolution: int) -> _Shape:
    """Evaluate the shape's distance field on the pixels within its circumcircle (+1 pixel)."""
    (cx, cy), size, res = pose["center"], pose["size"], resolution
    x0, x1 = max(int((cx - size) * res) - 1, 0), min(math.ceil((cx + size) * res) + 1, res)
    y0, y1 = max(int((cy - size) * res) - 1, 0), min(math.ceil((cy + size) * res) + 1, res)
    centres = _pixel_centres(res)
    dx = centres[x0:x1][None, :] - cx
    dy = cy - centres[y0:y1][:, None]  # image rows grow downwards, v grows upwards
    cos, sin = math.cos(pose["angle"]), math.sin(pose["angle"])
    u = cos * dx + sin * dy
    v = cos * dy - sin * dx
    sdf = _SHAPE_SDFS[pose["class"]](u, v, size) * res
    return _Shape(window=(slice(y0, y1), slice(x0, x1)), sdf=sdf)


def object_mask(obj: dict, resolution: int) -> np.ndarray:
    """(H, W) bool mask of one object of ``Sample.meta["objects"]`` as if nothing hid it."""
    field = _distance_field(obj, resolution)
    mask = np.zeros((resolution, resolution), dtype=bool)
    mask[field.window] = field.sdf < 0
    return mask


# ----------------------------------------------------------------------------- backgrounds


def _muted_color(rng: np.random.Generator) -> np.ndarray:
    """(3, 1, 1) float32: a dark, desaturated colour."""
    level = rng.uniform(*_BACKGROUND_LEVEL)
    color = level + rng.uniform(-_BACKGROUND_TINT, _BACKGROUND_TINT, size=3)
    return color.astype(np.float32).reshape(3, 1, 1)


@lru_cache(maxsize=16)
def _noise_upsampler(resolution: int) -> np.ndarray:
    """(resolution, _NOISE_CELLS) matrix of linear interpolation weights from a coarse grid."""
    position = np.clip(_pixel_centres(resolution) * (_NOISE_CELLS - 1), 0, _NOISE_CELLS - 1)
    weights = np.maximum(0.0, 1.0 - np.abs(position[:, None] - np.arange(_NOISE_CELLS)[None, :]))
    return weights.astype(np.float32)


def _render_background(rng: np.random.Generator, config: ScenesConfig) -> np.ndarray:
    """(3, H, W) float32: flat colour, or a gradient, stripes or smooth low-contrast noise."""
    res = config.resolution
    base = _muted_color(rng)
    if rng.random() >= config.textured_background:
        return np.broadcast_to(base, (3, res, res)).copy()
    centres = _pixel_centres(res)
    kind = rng.integers(3)
    if kind == 2:  # smooth noise: a coarse random grid interpolated bilinearly
        up = _noise_upsampler(res)
        coarse = rng.uniform(-1.0, 1.0, size=(3, _NOISE_CELLS, _NOISE_CELLS)).astype(np.float32)
        return base + _NOISE_AMPLITUDE * (up @ coarse @ up.T)
    direction = float(rng.uniform(0.0, 2 * math.pi))
    along = math.cos(direction) * centres[None, :] + math.sin(direction) * centres[:, None]  # (H, W)
    if kind == 0:  # linear gradient between two muted colours
        other = _muted_color(rng)
        t = (along - along.min()) / (along.max() - along.min())
        return base + t * (other - base)
    cycles = float(rng.uniform(*_STRIPE_CYCLES))  # soft stripes
    amplitude = float(rng.uniform(*_STRIPE_AMPLITUDE))
    return base + amplitude * np.sin((2 * math.pi * cycles) * along)


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
) -> tuple[dict, _Shape, np.ndarray, np.ndarray, np.ndarray]:
    """Sample a pose of ``shape`` until it leaves every earlier object >= min_visible of its area.

    Returns the pose, its distance field, its hard mask over the field's window, the pixels
    it hides of each earlier object, and which earlier objects it overlaps or touches (any
    8-neighbour of the shape lies within sqrt(2) pixels of it). Later tries draw smaller
    sizes, which makes crowded scenes fit.
    """
    num_placed = len(areas)
    for attempt in range(config.max_placement_tries):
        max_size = config.max_size - (config.max_size - config.min_size) * attempt / config.max_placement_tries
        pose = _draw_pose(rng, shape, max_size, config)
        candidate = _distance_field(pose, config.resolution)
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

    image = _render_background(rng, config)
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
