"""Speed of the GLASS data engine: pseudo-mask refinement, scenes backend, attention capture.

Usage: python benchmarks/bench_pseudo_masks.py [--images 4] [--max-classes 10] [--threads 1] [--out FILE]

Writes JSON with three parts:

- refinement: M_ref = A_SA^4 A_CA for 32x32 self-attention (1024 x 1024) and 1..K class
  maps, batched over images, against forming torch.linalg.matrix_power per image: the
  largest absolute difference and the time per image of each (median of repeats);
- scenes_backend: samples/s of ScenesBackend.generate (render + pseudo mask) and of a
  whole run written to disk (prompts, PNG files, manifests);
- attention_capture: the denoising loop of the tiny random SD model with capture
  (cross 8x8 and self 16x16 attention every step) relative to the same loop without it.

Times are wall clock and process CPU time; on a shared machine the CPU time is the
steadier number.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from report import emit, machine_info, median_seconds

from slotlab.datagen.pseudo_masks import refine_with_self_attention


def bench_refinement(images: int, max_classes: int, repeat: int, side: int = 32, power: int = 4) -> list[dict]:
    generator = torch.Generator().manual_seed(0)
    n = side * side
    attention = torch.softmax(torch.randn(images, n, n, generator=generator) * 4, dim=-1)
    rows = []
    for k in range(1, max_classes + 1):
        cross = torch.rand(images, k, side, side, generator=generator)

        def ours():
            return refine_with_self_attention(cross, attention, power)

        def explicit():
            flat = cross.reshape(images, k, n)
            return torch.stack([(torch.linalg.matrix_power(a, power) @ m.T).T for a, m in zip(attention, flat)])

        difference = (ours().reshape(images, k, n) - explicit()).abs().max().item()
        ours_wall, ours_cpu = median_seconds(ours, repeat)
        explicit_wall, explicit_cpu = median_seconds(explicit, repeat)
        rows.append({
            "classes": k,
            "max_abs_difference": difference,
            "ours_ms_per_image": round(1000 * ours_wall / images, 3),
            "matrix_power_ms_per_image": round(1000 * explicit_wall / images, 3),
            "speedup_wall": round(explicit_wall / ours_wall, 1),
            "speedup_cpu": round(explicit_cpu / max(ours_cpu, 1e-9), 1),
        })  # fmt: skip
    return rows


def bench_scenes(num: int) -> dict:
    from slotlab.datagen.backends.scenes import ScenesBackend
    from slotlab.datagen.config import GenerateConfig, PromptConfig, ScenesBackendConfig
    from slotlab.datagen.run import run_generation
    from slotlab.datagen.lexicon import label_set
    from slotlab.datagen.prompts import build_prompt

    backend = ScenesBackend(ScenesBackendConfig(resolution=64), label_set("scenes"))
    prompts = [build_prompt("shapes", ["circle", "star"] if i % 2 else ["square"]) for i in range(num)]
    wall, cpu = median_seconds(lambda: backend.generate(prompts, list(range(num))), 1)
    config = GenerateConfig(
        backend="scenes", num=num, prompts=PromptConfig(label_set="scenes", dataset="scenes?split=train&size=500")
    )
    with tempfile.TemporaryDirectory() as tmp:
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        run_generation(config, Path(tmp) / "run", progress=False)
        run_wall, run_cpu = time.perf_counter() - start_wall, time.process_time() - start_cpu
    return {
        "resolution": 64,
        "samples": num,
        "backend_samples_per_s": round(num / wall, 1),
        "backend_cpu_samples_per_s": round(num / cpu, 1),
        "run_to_disk_samples_per_s": round(num / run_wall, 1),
        "run_to_disk_cpu_samples_per_s": round(num / run_cpu, 1),
    }


def bench_capture(steps: int, repeat: int) -> dict:
    from slotlab.datagen.attention import capturing
    from slotlab.datagen.backends.sd import TINY_SD_CAPTURE, SDBackend, class_tokens, tiny_engine_sd
    from slotlab.datagen.config import SDConfig
    from slotlab.diffusion.sd import encode_text
    from slotlab.datagen.lexicon import label_set

    config = SDConfig(num_inference_steps=steps, image_size=32, batch_size=2, capture=TINY_SD_CAPTURE)
    backend = SDBackend(tiny_engine_sd(), config, label_set("coco"), "cpu")
    parts, device = backend.parts, torch.device("cpu")
    text = encode_text(parts.tokenizer, parts.text_encoder, ["", "", "a dog and a cat", "a traffic light"], device)
    tokens = class_tokens(parts.tokenizer, parts.text_encoder, [["dog", "cat"], ["traffic light"]], "per-class", device)
    latents = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(0))

    @torch.no_grad()
    def plain():
        backend._denoise(latents, text, [0, 1])

    @torch.no_grad()
    def captured():
        backend.capture.start(tokens, slice(2, 4))
        with capturing(parts.unet, backend.capture):
            backend._denoise(latents, text, [0, 1])

    plain_wall, plain_cpu = median_seconds(plain, repeat)
    capture_wall, capture_cpu = median_seconds(captured, repeat)
    return {
        "model": "tiny_engine_sd (32x32 images, 16x16 latents)",
        "steps": steps,
        "batch": 2,
        "plain_s": round(plain_wall, 4),
        "capture_s": round(capture_wall, 4),
        "relative_cost_wall": round(capture_wall / plain_wall, 3),
        "relative_cost_cpu": round(capture_cpu / plain_cpu, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4, help="images per refinement batch")
    parser.add_argument("--max-classes", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--scenes", type=int, default=1000, help="samples for the scenes-backend throughput")
    parser.add_argument("--steps", type=int, default=10, help="denoising steps for the capture cost")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch intra-op threads")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    refinement = bench_refinement(args.images, args.max_classes, args.repeat)
    report = {
        "benchmark": "pseudo_masks",
        "refinement": {
            "self_attention": "1024x1024 (32x32), power 4, float32",
            "images_per_batch": args.images,
            "rows": refinement,
            "max_abs_difference": max(r["max_abs_difference"] for r in refinement),
            "min_speedup_wall": min(r["speedup_wall"] for r in refinement),
        },
        "scenes_backend": bench_scenes(args.scenes),
        "attention_capture": bench_capture(args.steps, args.repeat),
        "threads": args.threads,
        "machine": machine_info(),
    }
    emit(report, args.out)


if __name__ == "__main__":
    main()
