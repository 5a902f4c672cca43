"""GLASS downstream tasks on built-in scenes: reconstruction quality, object removal, sampling
speed and property probes, as JSON.

    python benchmarks/bench_downstream.py --glass RUN/model --dinosaur RUN/model --out F [--images 32]

Removal test (colour test on scenes): for each image, the largest object is removed by
dropping the slot that best covers it; the removal succeeds when, inside that object's
region, the edited sample's mean colour is closer to the original background's mean colour
than to the object's own mean colour. Reconstruction and edit use the same seed. The same test
on the unedited reconstruction is the control: a removal rate is only meaningful above it.
"""

from __future__ import annotations

import argparse
import time

import torch
from report import emit, machine_info

from slotlab.data.registry import build_dataset
from slotlab.data.sample import collate
from slotlab.data.transforms import resize_image, resize_mask
from slotlab.engine.compose import SamplingOptions, generate, remove_slots, slot_for_region
from slotlab.methods import ObjectCentricModel
from slotlab.metrics.generation import psnr, ssim
from slotlab.metrics.probe import run_probes


def mean_colour(image: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    return image[:, region].mean(1)


def looks_removed(sample: torch.Tensor, real: torch.Tensor, region: torch.Tensor, background: torch.Tensor) -> bool:
    """Is the sample's colour inside ``region`` nearer the real background's than the object's?"""
    inside = mean_colour(sample, region)
    return bool((inside - mean_colour(real, background)).norm() < (inside - mean_colour(real, region)).norm())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--glass", required=True, help="trained GLASS model directory")
    parser.add_argument("--dinosaur", default=None, help="trained DINOSAUR model directory (probe comparison)")
    parser.add_argument("--images", type=int, default=32, help="val images for reconstruction/removal")
    parser.add_argument("--steps", type=int, default=50, help="sampler steps")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = ObjectCentricModel.from_pretrained(args.glass)
    val = build_dataset(f"scenes?split=val&size={args.images}")
    batch = collate([val[i] for i in range(len(val))])
    options = SamplingOptions(steps=args.steps)
    decomposition = model.decompose(batch.image)
    start = time.perf_counter()
    recon = generate(model, decomposition.slots, options)
    sample_seconds = time.perf_counter() - start
    size = tuple(recon.shape[-2:])
    real = resize_image(batch.image, size)
    successes, control = [], []
    for b in range(len(batch)):
        areas = batch.instance_mask[b].flatten().bincount(minlength=2)[1:]
        obj = int(areas.argmax()) + 1
        region = batch.instance_mask[b] == obj
        k = slot_for_region(decomposition.masks[b], region)
        edited = generate(model, remove_slots(decomposition.slots[b], [k]).unsqueeze(0), options)[0]
        small = resize_mask(region, size)
        background = resize_mask(batch.instance_mask[b] == 0, size)
        if not small.any() or not background.any():
            continue
        successes.append(looks_removed(edited, real[b], small, background))
        control.append(looks_removed(recon[b], real[b], small, background))
    report = {
        "benchmark": "glass downstream on scenes",
        "images": len(batch),
        "decoder_resolution": size[0],
        "reconstruction": {"psnr": float(psnr(recon, real).mean()), "ssim": float(ssim(recon, real).mean())},
        "removal_success_rate": sum(successes) / max(1, len(successes)),
        "removal_images": len(successes),
        "removal_control_rate_without_edit": sum(control) / max(1, len(control)),
        "sampling_images_per_second": round(len(batch) / sample_seconds, 3),
        "sampling_steps": args.steps,
    }
    train_set, test_set = build_dataset("scenes?split=train&size=500"), build_dataset("scenes?split=val&size=256")
    report["probe_glass"] = run_probes(model, train_set, test_set)
    if args.dinosaur:
        report["probe_dinosaur"] = run_probes(ObjectCentricModel.from_pretrained(args.dinosaur), train_set, test_set)
    report["machine"] = machine_info()
    emit(report, args.out)


if __name__ == "__main__":
    main()
