"""The CPU scenes backend: built-in scenes of the prompt's classes, with a class-level pseudo
mask that behaves like the diffusion one (uncertain borders, optional noise).
"""

from __future__ import annotations

import json
from typing import Sequence

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor

from slotlab.config import to_dict
from slotlab.data.sample import IGNORE_INDEX, Sample
from slotlab.datagen.backends.base import BACKEND_STREAM, Generation
from slotlab.datagen.config import ScenesBackendConfig
from slotlab.datagen.lexicon import LabelSet
from slotlab.datagen.prompts import Prompt


def _unknown_mask(image: Tensor) -> Tensor:
    """Pseudo mask of a scene whose prompt names no class: every pixel uncertain."""
    return torch.full(image.shape[-2:], IGNORE_INDEX, dtype=torch.int64)


class ScenesBackend:
    """Built-in scenes of the prompt's classes with a diffusion-like class-level pseudo mask."""

    def __init__(self, config: ScenesBackendConfig, labels: LabelSet) -> None:
        from slotlab.data.scenes import ScenesConfig

        if labels.name != "scenes":
            raise ValueError(f"the scenes backend needs the 'scenes' label set, got {labels.name!r}")
        self.config = config
        self.labels = labels
        self.scene_config = ScenesConfig(resolution=config.resolution)
        self.settings = {"backend": "scenes", **to_dict(config)}

    def generate(self, prompts: Sequence[Prompt], seeds: Sequence[int]) -> list[Generation]:
        return [self._generate_one(p, s) for p, s in zip(prompts, seeds)]

    def _generate_one(self, prompt: Prompt, seed: int) -> Generation:
        from slotlab.data.scenes import render_scene

        rng = np.random.default_rng([seed, BACKEND_STREAM])
        if not prompt.classes:
            scene = render_scene(rng, self.scene_config)
            return Generation(image=scene.image, pseudo_mask=_unknown_mask(scene.image), meta=_scene_meta(scene))
        low, high = self.config.instances_per_class
        objects = [c for c in prompt.classes for _ in range(int(rng.integers(low, high + 1)))]
        rng.shuffle(objects)
        scene = render_scene(rng, self.scene_config, classes=objects)
        return Generation(image=scene.image, pseudo_mask=self.pseudo_mask(scene, rng), meta=_scene_meta(scene))

    def pseudo_mask(self, scene: Sample, rng: np.random.Generator) -> Tensor:
        """Semantic mask (instances of a class merged) -> optional noise -> uncertain band."""
        mask = scene.semantic_mask.numpy().copy()
        if self.config.class_dropout > 0 or self.config.dilation > 0:
            mask = perturb_class_regions(mask, rng, self.config.dilation, self.config.class_dropout)
        return torch.from_numpy(uncertain_boundary_band(mask, self.config.uncertain_radius))


def _scene_meta(scene: Sample) -> dict:
    """The painted instances (class, colour, pose; ``render_scene``'s meta) as plain JSON."""
    return {"objects": json.loads(json.dumps(scene.meta["objects"], default=float))}


def perturb_class_regions(mask: np.ndarray, rng: np.random.Generator, dilation: int, dropout: float) -> np.ndarray:
    """Noise like imprecise attention: drop whole classes to background with probability
    ``dropout``; grow or shrink each remaining class by a random radius in [-dilation, dilation]
    (growth only claims background pixels)."""
    out = mask.copy()
    for class_id in np.unique(mask[mask > 0]):
        region = mask == class_id
        if rng.random() < dropout:
            out[region] = 0
            continue
        radius = int(rng.integers(-dilation, dilation + 1)) if dilation > 0 else 0
        if radius > 0:
            grown = ndimage.binary_dilation(region, iterations=radius)
            out[grown & (out == 0)] = class_id
        elif radius < 0:
            kept = ndimage.binary_erosion(region, iterations=-radius)
            out[region & ~kept] = 0
    return out


def uncertain_boundary_band(mask: np.ndarray, radius: int) -> np.ndarray:
    """Pixels with a differently labelled pixel within Chebyshev distance ``radius`` -> IGNORE_INDEX."""
    if radius == 0:
        return mask.astype(np.int64)
    size = 2 * radius + 1
    near_max = ndimage.maximum_filter(mask, size=size, mode="nearest")
    near_min = ndimage.minimum_filter(mask, size=size, mode="nearest")
    return np.where(near_max != near_min, IGNORE_INDEX, mask).astype(np.int64)
