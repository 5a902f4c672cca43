"""The demo's generation tasks for a model with a diffusion decoder (GLASS Sec. 5.3, Figs. 5-6):
reconstruction quality, the removal test of :mod:`slotlab.metrics.edits`, and pictures of
one removal and one addition per shown scene.

Removal drops the slot covering a scene's largest object; addition appends to scene i the
slot covering the largest object of scene i + 1. Reconstructions and edits share one
sampling seed, so a difference between them comes from the edit alone.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from slotlab.data.sample import collate
from slotlab.methods.base import ObjectCentricModel
from slotlab.methods.slot_edits import SamplingOptions, add_slots, decoder_tokens, generate
from slotlab.metrics.edits import RemovalResult, largest_objects, removal_test
from slotlab.metrics.generation import psnr, ssim
from slotlab.ops.resize import resize_image
from slotlab.viz.overlays import save_image, side_by_side

NUM_IMAGES = 32  # scenes reconstructed and tested
NUM_PICTURED = 4  # of which pictured (with an addition too)
PICTURE_SIZE = 128  # side of one picture tile, pixels
SAMPLER_STEPS = 25

GENERATION_NOTE = (
    f"Generation (GLASS model): the first {NUM_IMAGES} val scenes reconstructed from their slots and edited, "
    f"DPM-Solver++ {SAMPLER_STEPS} steps; recon_* and removal_* are defined in the glossary."
)


def evaluate_removal(
    model: ObjectCentricModel, images: Tensor, instance_masks: Tensor, options: SamplingOptions | None = None
) -> tuple[RemovalResult, Tensor]:
    """The removal test (:func:`slotlab.metrics.edits.removal_test`) for a model with a diffusion
    decoder (GLASS), sampled with ``options`` (its seed seeds the decomposition and the test);
    returns the result and the decoder tokens it edited (one row of slots per image)."""
    options = options or SamplingOptions()
    decomposition = model.decompose(images, seed=options.seed)

    def sample(slots: Tensor, seed: int) -> Tensor:
        return generate(model, slots, replace(options, seed=seed))

    tokens = decoder_tokens(model, decomposition)
    return removal_test(sample, tokens, decomposition.masks, images, instance_masks, seed=options.seed), tokens


def run_generation_tasks(
    model: ObjectCentricModel, dataset: Dataset, out: Path, seed: int = 0, num_images: int = NUM_IMAGES,
) -> tuple[dict[str, float], list[Path]]:
    """Reconstruct and run the removal test on ``num_images`` scenes of ``dataset``, picture a
    removal and an addition; returns metrics and the pictures (captions in their PNG metadata)
    written into ``out``."""
    batch = collate([dataset[i] for i in range(min(num_images, len(dataset)))])
    options = SamplingOptions(steps=SAMPLER_STEPS, seed=seed)
    removal, tokens = evaluate_removal(model, batch.image, batch.instance_mask, options)
    reconstructions = removal.reconstruction
    real = resize_image(batch.image, tuple(reconstructions.shape[-2:]))
    summary = removal.summary()
    metrics = {
        "recon_psnr": float(psnr(reconstructions, real).mean()),
        "recon_ssim": float(ssim(reconstructions, real).mean()),
        "recon_object_visible": summary["reconstructed_rate"],
        "removal_objects": summary["reconstructed"],
        "removal_success": summary["removal_success_rate"],
        "removal_control_other_slot": summary["control_other_slot_rate"],
        "removal_control_reseed": summary["control_reseed_rate"],
    }
    out.mkdir(parents=True, exist_ok=True)
    return metrics, _pictures(model, batch, tokens, reconstructions, removal.edited, removal.removed_slot, options, out)


def _pictures(model, batch, tokens, reconstructions, removed, removed_slot, options, out: Path) -> list[Path]:
    shown = min(NUM_PICTURED, len(batch))
    objects = largest_objects(batch.instance_mask[:shown])
    regions = batch.instance_mask[:shown] == objects[:, None, None]
    donors = torch.arange(shown).roll(-1)  # scene i receives the largest object of scene i + 1
    slots = tokens[:shown]
    added = generate(model, torch.stack([add_slots(slots[i], slots[j], [int(removed_slot[j])])
                                         for i, j in enumerate(donors.tolist())]), options)
    removal_rows = [side_by_side([batch.image[i], reconstructions[i], removed[i]], [regions[i], None, None], PICTURE_SIZE)
                    for i in range(shown)]
    addition_rows = [side_by_side([batch.image[i], batch.image[j], added[i]], [None, regions[j], None], PICTURE_SIZE)
                     for i, j in enumerate(donors.tolist())]
    return [
        save_image(_stack(removal_rows), out / "removal.png",
                   "Removal, one scene a row: the scene (largest object outlined) | its reconstruction from its slots "
                   "| the same with that object's slot removed"),
        save_image(_stack(addition_rows), out / "addition.png",
                   "Addition, one scene a row: the scene | a donor scene (largest object outlined) | the scene's "
                   "slots plus that object's slot"),
    ]


def _stack(rows: list[Image.Image]) -> Image.Image:
    return Image.fromarray(np.concatenate([np.asarray(r) for r in rows], axis=0))
