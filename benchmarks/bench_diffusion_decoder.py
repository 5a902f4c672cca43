"""Speed and learning benchmark of the slot diffusion decoder (JSON out).

Sections (each can be skipped):
- ``speed``: training steps/s (loss forward + backward + AdamW step) and sampling images/s
  (DPM-Solver++, guided) for the CPU configurations.
- ``sd21``: the paper's architecture (SD 2.1 UNet + VAE, random weights) at 256x256, batch 1:
  one training step and per-step sampling time, with the process's peak memory.
- ``taesd_latent_stats``: spread of FLUX.2 tiny-autoencoder latents on the fixture photos
  (the source of ``TAEF2_LATENT_SCALE``) and their reconstruction PSNR.
- ``learning``: the CPU configuration trained for a few minutes on built-in 64x64 scenes
  (downsampled to the decoder's resolution), conditioned on *oracle object slots* (class,
  mean colour and box of each object through a learned MLP), then sampled on held-out
  scenes. PSNR with the scene's own slots vs. with another scene's slots shows whether the
  decoder learned to use its conditioning.

Usage: python benchmarks/bench_diffusion_decoder.py --out bench_diffusion_decoder.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from report import emit, machine_info
from torch import Tensor, nn

from slotlab.data.imageio import read_image
from slotlab.ops.resize import center_crop, resize_image
from slotlab.nn.autoencoders import TinyAutoencoder
from slotlab.diffusion.config import DiffusionDecoderConfig, cpu_config
from slotlab.diffusion.decoder import SlotDiffusionDecoder
from slotlab.diffusion.sd import sd21_unet_config, sd21_vae_config

# Optional real weights and photos: $SLOTLAB_SHARED, else a `shared` folder beside this checkout.
SHARED = Path(os.environ.get("SLOTLAB_SHARED") or Path(__file__).resolve().parents[2] / "shared")
SLOT_WIDTH = 64
NUM_SLOTS = 7


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def timed(fn, repeats: int) -> float:
    """Mean seconds per call after one warm-up call."""
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def speed_of(decoder: SlotDiffusionDecoder, batch: int, train_repeats: int, sample_batch: int, sample_steps: int) -> dict:
    config = decoder.config
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(batch, 3, config.resolution, config.resolution, generator=generator)
    slots = torch.randn(batch, NUM_SLOTS, config.cross_attention_dim, generator=generator)
    optimiser = torch.optim.AdamW(decoder.trainable_parameters(), lr=1e-4)

    def train_step() -> None:
        optimiser.zero_grad()
        decoder.loss(images, slots, generator=generator).backward()
        optimiser.step()

    decoder.train()
    step_seconds = timed(train_step, train_repeats)
    decoder.eval()
    sample_seconds = timed(
        lambda: decoder.sample(slots[:sample_batch], num_steps=sample_steps, guidance_scale=2.0, generator=generator), 1
    )
    return {
        "trainable_parameters_m": round(sum(p.numel() for p in decoder.trainable_parameters()) / 1e6, 3),
        "latent_shape": list(decoder.latent_shape),
        "train_batch": batch,
        "train_steps_per_s": round(1 / step_seconds, 3),
        "train_images_per_s": round(batch / step_seconds, 2),
        "sample_batch": sample_batch,
        "sample_steps": sample_steps,
        "sample_guidance_scale": 2.0,
        "sample_images_per_s": round(sample_batch / sample_seconds, 3),
    }


def cpu_configs() -> dict[str, DiffusionDecoderConfig]:
    configs = {"pixel32": cpu_config(cross_attention_dim=SLOT_WIDTH)}
    taef2 = SHARED / "assets" / "taef2"
    if taef2.is_dir():
        configs["taef2_64"] = cpu_config(cross_attention_dim=SLOT_WIDTH, taesd_path=str(taef2))
    return configs


def bench_speed(args) -> dict:
    results = {}
    for name, config in cpu_configs().items():
        torch.manual_seed(0)
        decoder = SlotDiffusionDecoder.from_config(config)
        results[name] = speed_of(decoder, batch=16, train_repeats=args.repeats, sample_batch=8, sample_steps=50)
        print(name, results[name], flush=True)
    return results


def bench_sd21(args) -> dict:
    """The SD 2.1 UNet + VAE architecture on random weights at 256x256 (latents 32x32x4)."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(**sd21_unet_config())
    vae = AutoencoderKL(**sd21_vae_config())
    scheduler = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                              prediction_type="v_prediction", clip_sample=False)  # fmt: skip
    config = DiffusionDecoderConfig(resolution=256, cross_attention_dim=1024)
    decoder = SlotDiffusionDecoder(config, unet, vae, scheduler, unconditional_embedding=torch.randn(77, 1024))
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(1, 3, 256, 256, generator=generator)
    slots = torch.randn(1, NUM_SLOTS, 1024, generator=generator)

    def train_step() -> None:
        decoder.unet.zero_grad(set_to_none=True)
        decoder.loss(images, slots, generator=generator).backward()

    step_seconds = timed(train_step, 1)
    after_train_rss = peak_rss_gb()
    decoder.unet.zero_grad(set_to_none=True)
    decoder.eval()
    steps = args.sd21_sample_steps
    sample_seconds = timed(lambda: decoder.sample(slots, num_steps=steps, guidance_scale=2.0, generator=generator), 1)
    return {
        "unet_parameters_m": round(sum(p.numel() for p in unet.parameters()) / 1e6, 1),
        "vae_parameters_m": round(sum(p.numel() for p in vae.parameters()) / 1e6, 1),
        "resolution": 256,
        "train_batch": 1,
        "train_step_seconds": round(step_seconds, 2),
        "train_steps_per_s": round(1 / step_seconds, 4),
        "peak_rss_gb_after_train_step": round(after_train_rss, 2),
        "sample_steps_measured": steps,
        "sample_guidance_scale": 2.0,
        "sample_seconds_per_step": round(sample_seconds / steps, 2),
        "sample_images_per_s_at_50_steps_extrapolated": round(1 / (50 * sample_seconds / steps), 5),
        "note": "random weights, fp32, no gradient checkpointing; AdamW state (2x params) not included",
    }


def load_photo(path: Path, size: int) -> Tensor:
    """The photo's centred square, resized to ``size`` (bicubic), as (3, size, size) in [0, 1]."""
    image = read_image(path)
    side = min(image.shape[-2:])
    return resize_image(center_crop(image, (side, side)), (size, size), mode="bicubic").clamp(0, 1)


def bench_taesd_latent_stats(args) -> dict:
    taef2 = SHARED / "assets" / "taef2"
    photos = sorted((SHARED / "fixtures").glob("*/images/*.jpg")) + sorted((SHARED / "fixtures").glob("*/JPEGImages/*.jpg"))
    if not taef2.is_dir() or not photos:
        return {"skipped": "FLUX.2 tiny autoencoder weights or fixture photos absent"}
    autoencoder = TinyAutoencoder.from_files(taef2)
    images = torch.stack([load_photo(p, 256) for p in photos])
    raw = autoencoder.encode_raw(images)
    reconstruction = autoencoder.decode(autoencoder.encode(images))
    psnr = -10 * torch.log10(((reconstruction - images) ** 2).mean(dim=(1, 2, 3)))
    return {
        "photos": len(photos),
        "resolution": 256,
        "raw_latent_std": round(float(raw.std()), 4),
        "raw_latent_mean": round(float(raw.mean()), 4),
        "reconstruction_psnr_db_mean": round(float(psnr.mean()), 2),
        "reconstruction_psnr_db_min": round(float(psnr.min()), 2),
    }


# ----------------------------------------------------------------------------- learning


def box_features(box: Tensor) -> Tensor:
    """Box (x0, y0, x1, y1) -> centre, size and Fourier features of the centre (16 values)."""
    centre, size = (box[:2] + box[2:]) / 2, box[2:] - box[:2]
    angles = torch.pi * centre[None, :] * torch.tensor([1.0, 2.0, 4.0])[:, None]
    return torch.cat([centre, size, angles.sin().flatten(), angles.cos().flatten()])


def oracle_slot_features(sample, num_slots: int, num_classes: int) -> Tensor:
    """(num_slots, F) per-object descriptions: class one-hot, mean colour, box, presence.

    Slot 0 describes the background (its mean colour, whole-image box); unused slots are zero.
    """
    colour, box = num_classes + 1, num_classes + 4
    features = torch.zeros(num_slots, box + 16 + 1)
    image, instances = sample.image, sample.instance_mask
    boxes = [torch.tensor([0.0, 0.0, 1.0, 1.0])] + list(sample.boxes)
    classes = [None] + sample.class_ids.tolist()
    for slot, (class_id, object_box) in enumerate(zip(classes, boxes)):
        if slot >= num_slots:
            break
        pixels = instances == slot  # slot 0 = background pixels
        row = features[slot]
        row[num_classes if class_id is None else class_id - 1] = 1.0
        row[colour:box] = image[:, pixels].mean(dim=1) if pixels.any() else 0.0
        row[box:-1] = box_features(object_box)
        row[-1] = 1.0
    return features


def scene_tensors(split: str, size: int, resolution: int) -> tuple[Tensor, Tensor]:
    from slotlab.data.scene_words import SCENE_CLASSES
    from slotlab.data.scenes import ScenesConfig, ScenesDataset

    scenes = ScenesDataset(split, size=size, config=ScenesConfig(resolution=64), cache=False)
    samples = [scenes[i] for i in range(size)]
    images = resize_image(torch.stack([s.image for s in samples]), (resolution, resolution)).clamp(0, 1)
    features = torch.stack([oracle_slot_features(s, NUM_SLOTS, len(SCENE_CLASSES)) for s in samples])
    return images, features


def psnr(a: Tensor, b: Tensor) -> float:
    return float((-10 * torch.log10(((a - b) ** 2).mean(dim=(1, 2, 3)))).mean())


CPU_CONFIG_NOTES = {
    "pixel32": "cpu_config(): pixel space 32x32, UNet (32, 64), attention at 16x16 + mid",
    "taef2_64": "cpu_config(taesd_path=taef2): 64x64 as FLUX.2 tiny AE latents 8x8x32, UNet (64, 128)",
}
CPU_CONFIG_NOTES.update({f"{name}_xy": f"{note}, coordinate_channels=True" for name, note in CPU_CONFIG_NOTES.items()})


def learning_configs() -> dict[str, DiffusionDecoderConfig]:
    """The CPU configurations and their ``coordinate_channels=True`` variants (suffix _xy)."""
    configs = cpu_configs()
    variants = {f"{n}_xy": DiffusionDecoderConfig(**{**asdict(c), "coordinate_channels": True}) for n, c in configs.items()}
    return {**configs, **variants}


def learn_one(name: str, config: DiffusionDecoderConfig, args) -> dict:
    torch.manual_seed(0)
    decoder = SlotDiffusionDecoder.from_config(config)
    train_images, train_features = scene_tensors("train", args.learn_scenes, config.resolution)
    val_images, val_features = scene_tensors("val", 16, config.resolution)
    slot_map = nn.Sequential(nn.Linear(train_features.shape[-1], 128), nn.ReLU(), nn.Linear(128, SLOT_WIDTH))
    parameters = decoder.trainable_parameters() + list(slot_map.parameters())
    optimiser = torch.optim.AdamW(parameters, lr=args.learn_lr, weight_decay=1e-2)
    generator = torch.Generator().manual_seed(0)
    losses, start = [], time.perf_counter()
    decoder.train()
    for _ in range(args.learn_steps):
        index = torch.randint(0, len(train_images), (16,), generator=generator)
        optimiser.zero_grad()
        loss = decoder.loss(train_images[index], slot_map(train_features[index]), generator=generator)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimiser.step()
        losses.append(loss.item())
    train_seconds = time.perf_counter() - start
    decoder.eval()
    with torch.no_grad():
        own, other = slot_map(val_features), slot_map(val_features.roll(1, dims=0))
    results = {}
    for scale in (1.0, 2.0):
        def sample(s: Tensor) -> Tensor:
            return decoder.sample(s, num_steps=25, guidance_scale=scale, generator=torch.Generator().manual_seed(1))

        own_images = sample(own)
        results[f"guidance_{scale:g}"] = {
            "psnr_own_slots_db": round(psnr(own_images, val_images), 2),
            "psnr_other_scene_slots_db": round(psnr(sample(other), val_images), 2),
        }
        if args.learn_images is not None:
            save_grid(torch.cat([val_images[:8], own_images[:8]]), args.learn_images / f"{name}_guidance_{scale:g}.png")
    window = max(1, args.learn_steps // 10)
    return {
        "config": CPU_CONFIG_NOTES[name],
        "train_scenes": args.learn_scenes,
        "steps": args.learn_steps,
        "batch": 16,
        "lr": args.learn_lr,
        "train_minutes": round(train_seconds / 60, 2),
        "loss_first_10pct": round(float(np.mean(losses[:window])), 4),
        "loss_last_10pct": round(float(np.mean(losses[-window:])), 4),
        "val_scenes": 16,
        "sampler": "dpmsolver++ 25 steps",
        **results,
    }


def save_grid(images: Tensor, path: Path) -> None:
    """Two rows of 8: ground truth above, samples below."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = images.reshape(2, 8, *images.shape[1:]).permute(0, 3, 1, 4, 2).reshape(2 * images.shape[-2], -1, 3)
    Image.fromarray((rows.clamp(0, 1) * 255).round().byte().numpy()).save(path)


def bench_learning(args) -> dict:
    available = learning_configs()
    chosen = [n.strip() for n in args.learn_configs.split(",") if n.strip()]
    results = {}
    for name in chosen:
        if name not in available:
            results[name] = {"skipped": f"unknown or unavailable configuration (available: {', '.join(available)})"}
            continue
        results[name] = learn_one(name, available[name], args)
        print(name, results[name], flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench_diffusion_decoder.json"))
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="torch threads (1 is fastest for these small models on a busy CPU)")
    parser.add_argument("--repeats", type=int, default=5, help="timed training steps per CPU configuration")
    parser.add_argument("--sections", default="speed,sd21,taesd_latent_stats,learning")
    parser.add_argument("--sd21-sample-steps", type=int, default=2)
    parser.add_argument("--learn-steps", type=int, default=600)
    parser.add_argument("--learn-scenes", type=int, default=2000)
    parser.add_argument("--learn-lr", type=float, default=1e-3)
    parser.add_argument("--learn-configs", default="pixel32,taef2_64",
                        help="comma list of pixel32, taef2_64 and their _xy (coordinate channels) variants")
    parser.add_argument("--learn-images", type=Path, default=None, help="folder for sample grids (optional)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sections = {"speed": bench_speed, "sd21": bench_sd21, "taesd_latent_stats": bench_taesd_latent_stats,
                "learning": bench_learning}  # fmt: skip
    chosen = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = sorted(set(chosen) - set(sections))
    if unknown:
        parser.error(f"unknown sections {unknown}; choose from {', '.join(sections)}")
    report = {}
    for name in chosen:
        start = time.perf_counter()
        report[name] = sections[name](args)
        report[name]["section_seconds"] = round(time.perf_counter() - start, 1)
        print(name, json.dumps(report[name]), flush=True)
    report["machine"] = {**machine_info(), "peak_rss_gb": round(peak_rss_gb(), 2)}
    emit(report, args.out)


if __name__ == "__main__":
    main()
