"""The scenes' shapes as signed distance fields on the pixel grid.

A field gives exact hard labels (pixel centre inside the shape, distance < 0) and
antialiased colour edges (coverage from the distance) without supersampling.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import numpy as np

# Hearts are only tilted, never turned upside down, so they stay recognisable.
_HEART_MAX_TILT = math.pi / 6
# Inner/outer radius of the five-pointed star.
_STAR_INNER_RATIO = 0.45


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
def pixel_centres(resolution: int) -> np.ndarray:
    """Pixel-centre coordinates along one axis, in units of the image side."""
    return (np.arange(resolution, dtype=np.float32) + 0.5) / resolution


@dataclass
class ShapeField:
    """One object's distance field over the pixel window it can touch."""

    window: tuple[slice, slice]
    sdf: np.ndarray  # (h, w) float32 signed distance in pixels over ``window``


def draw_pose(rng: np.random.Generator, shape: str, min_size: float, max_size: float) -> dict:
    """Size (circumradius), centre and rotation of ``shape``, the whole shape inside the image."""
    # Python floats keep the float32 grid in float32 (numpy scalars would promote it).
    size = float(rng.uniform(min_size, max_size))
    cx, cy = rng.uniform(size, 1.0 - size, size=2).tolist()
    tilt = _HEART_MAX_TILT if shape == "heart" else math.pi
    return {"class": shape, "center": (cx, cy), "size": size, "angle": float(rng.uniform(-tilt, tilt))}


def distance_field(pose: dict, resolution: int) -> ShapeField:
    """Evaluate the shape's distance field on the pixels within its circumcircle (+1 pixel)."""
    (cx, cy), size, res = pose["center"], pose["size"], resolution
    x0, x1 = max(int((cx - size) * res) - 1, 0), min(math.ceil((cx + size) * res) + 1, res)
    y0, y1 = max(int((cy - size) * res) - 1, 0), min(math.ceil((cy + size) * res) + 1, res)
    centres = pixel_centres(res)
    dx = centres[x0:x1][None, :] - cx
    dy = cy - centres[y0:y1][:, None]  # image rows grow downwards, v grows upwards
    cos, sin = math.cos(pose["angle"]), math.sin(pose["angle"])
    u = cos * dx + sin * dy
    v = cos * dy - sin * dx
    sdf = _SHAPE_SDFS[pose["class"]](u, v, size) * res
    return ShapeField(window=(slice(y0, y1), slice(x0, x1)), sdf=sdf)


def object_mask(obj: dict, resolution: int) -> np.ndarray:
    """(H, W) bool mask of one object of ``Sample.meta["objects"]`` as if nothing hid it."""
    field = distance_field(obj, resolution)
    mask = np.zeros((resolution, resolution), dtype=bool)
    mask[field.window] = field.sdf < 0
    return mask
