"""The scenes' backgrounds: dark, desaturated and low-contrast, so they never look like objects."""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from slotlab.data.scene_shapes import pixel_centres

# Grey level range and tint (objects are bright or saturated, see SCENE_COLORS).
_BACKGROUND_LEVEL = (0.08, 0.30)
_BACKGROUND_TINT = 0.05
# Textures stay low-contrast so they never look like objects.
_STRIPE_AMPLITUDE = (0.03, 0.07)
_STRIPE_CYCLES = (3.0, 8.0)
_NOISE_AMPLITUDE = 0.07
_NOISE_CELLS = 6


def _muted_color(rng: np.random.Generator) -> np.ndarray:
    """(3, 1, 1) float32: a dark, desaturated colour."""
    level = rng.uniform(*_BACKGROUND_LEVEL)
    color = level + rng.uniform(-_BACKGROUND_TINT, _BACKGROUND_TINT, size=3)
    return color.astype(np.float32).reshape(3, 1, 1)


@lru_cache(maxsize=16)
def _noise_upsampler(resolution: int) -> np.ndarray:
    """(resolution, _NOISE_CELLS) matrix of linear interpolation weights from a coarse grid."""
    position = np.clip(pixel_centres(resolution) * (_NOISE_CELLS - 1), 0, _NOISE_CELLS - 1)
    weights = np.maximum(0.0, 1.0 - np.abs(position[:, None] - np.arange(_NOISE_CELLS)[None, :]))
    return weights.astype(np.float32)


def render_background(rng: np.random.Generator, res: int, textured: float) -> np.ndarray:
    """(3, res, res) float32: flat colour or, with probability ``textured``, a gradient, stripes
    or smooth low-contrast noise."""
    base = _muted_color(rng)
    if rng.random() >= textured:
        return np.broadcast_to(base, (3, res, res)).copy()
    centres = pixel_centres(res)
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
