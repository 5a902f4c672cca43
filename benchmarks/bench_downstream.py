"""GLASS downstream tasks on built-in scenes: reconstruction quality, object removal, sampling
speed and property probes, as JSON.

    python benchmarks/bench_downstream.py --glass RUN/model --dinosaur RUN/model --out F [--images 64]

Reconstruction: PSNR/SSIM of samples from each image's own slots and, as the reference a
decoder that ignores its slots would also reach, from another scene's slots (same seed).

Removal: ``slotlab.metrics.edits.removal_test`` (the largest object's slot dropped; colour
test inside the object's ground-truth region; controls: a random slot away from the object
dropped, and the reconstruction from another seed). Read ``removal_success_rate`` only
together with ``reconstructed_rate`` (how many objects the reconstruction showed at all) and
the two control rates.

Sampling speed: images/s of the trained decoder and of the paper configuration on tiny
random weights; every section reports the seconds it took.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import torch
from report import emit, machine_info

from slotlab.config import load_preset
from slotlab.data.registry import build_dataset
from slotlab.data.sample import collate
from slotlab.ops.resize import resize_image
from slotlab.train.compose import SamplingOptions, decoder_tokens, generate
from slotlab.train.config import build_train_config
from slotlab.train.trainer import build_model
from slotlab.methods import ObjectCentricModel
from slotlab.methods.glass import PAPER_TWIN_OVERRIDES
from slotlab.metrics.edits import COLOUR_TOLERANCE, CONTROL_MAX_OVERLAP, VISIBLE_FRACTION, removal_test
from slotlab.metrics.generation import psnr, ssim
from slotlab.metrics.probe import run_probes


def reconstruction_quality(recon: torch.Tensor, other: torch.Tensor, images: torch.Tensor) -> dict:
    real = resize_image(images, tuple(recon.shape[-2:])).clamp(0, 1)
    return {
        "psnr_own_slots": round(float(psnr(recon, real).mean()), 2),
        "psnr_other_scene_slots": round(float(psnr(other, real).mean()), 2),
        "ssim_own_slots": round(float(ssim(recon, real).mean()), 3),
        "ssim_other_scene_slots": round(float(ssim(other, real).mean()), 3),
    }


def paper_twin_sampling(images: int, options: SamplingOptions) -> dict:
    """Sampling speed of the paper configuration (glass-coco: DINOv2, SD 2.1 UNet + VAE) on
    its tiny random-weight twins (``PAPER_TWIN_OVERRIDES``)."""
    model = build_model(build_train_config(load_preset("glass-coco"), list(PAPER_TWIN_OVERRIDES))).eval()
    pictures = torch.rand(images, 3, model.encoder.image_size, model.encoder.image_size)
    slots = decoder_tokens(model, model.decompose(pictures))
    start = time.perf_counter()
    generate(model, slots, options)
    seconds = time.perf_counter() - start
    return {"images": images, "images_per_second": round(images / seconds, 3),
            "decoder_resolution": model.diffusion_decoder.config.resolution}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--glass", required=True, help="trained GLASS model directory")
    parser.add_argument("--dinosaur", default=None, help="trained DINOSAUR model directory (probe comparison)")
    parser.add_argument("--images", type=int, default=64, help="val images for reconstruction/removal")
    parser.add_argument("--steps", type=int, default=25, help="sampler steps")
    parser.add_argument("--guidance", type=float, default=1.0, help="classifier-free guidance scale")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (and slot initialisation)")
    parser.add_argument("--no-probes", action="store_true", help="skip the property probes")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    begin = time.perf_counter()
    model = ObjectCentricModel.from_pretrained(args.glass)
    val = build_dataset(f"scenes?split=val&size={args.images}")
    batch = collate([val[i] for i in range(len(val))])
    options = SamplingOptions(steps=args.steps, guidance_scale=args.guidance, seed=args.seed)
    decomposition = model.decompose(batch.image, seed=args.seed)

    sample_seconds: list[float] = []

    def sample(slots: torch.Tensor, seed: int) -> torch.Tensor:
        start = time.perf_counter()
        images = generate(model, slots, replace(options, seed=seed))
        sample_seconds.append(time.perf_counter() - start)
        return images

    tokens = decoder_tokens(model, decomposition)
    removal = removal_test(sample, tokens, decomposition.masks, batch.image, batch.instance_mask, args.seed)
    recon = removal.reconstruction
    other = sample(tokens.roll(1, dims=0), args.seed)
    report = {
        "benchmark": "glass downstream on scenes",
        "images": len(batch),
        "decoder_resolution": recon.shape[-1],
        "sampling": {"steps": args.steps, "guidance_scale": args.guidance, "seed": args.seed},
        "reconstruction": reconstruction_quality(recon, other, batch.image),
        "removal": {
            **removal.summary(),
            "test": {"visible_fraction": VISIBLE_FRACTION, "colour_tolerance": COLOUR_TOLERANCE,
                     "control_max_overlap": CONTROL_MAX_OVERLAP},
        },  # fmt: skip
        "sampling_images_per_second": round(len(batch) / (sum(sample_seconds) / len(sample_seconds)), 3),
        "sampling_paper_configuration_tiny_weights": paper_twin_sampling(8, options),
        "generation_seconds": round(time.perf_counter() - begin, 1),
    }
    if not args.no_probes:
        start = time.perf_counter()
        train_set, test_set = build_dataset("scenes?split=train&size=500"), build_dataset("scenes?split=val&size=256")
        report["probe_glass"] = run_probes(model, train_set, test_set)
        if args.dinosaur:
            report["probe_dinosaur"] = run_probes(ObjectCentricModel.from_pretrained(args.dinosaur), train_set, test_set)
        report["probe_seconds"] = round(time.perf_counter() - start, 1)
    report["seconds"] = round(time.perf_counter() - begin, 1)
    report["machine"] = machine_info()
    emit(report, args.out)


if __name__ == "__main__":
    main()
