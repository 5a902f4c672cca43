"""Forward speed of the encoders on the CPU (images per second, no gradient).

Usage: python benchmarks/bench_encoders.py [--image-size 64] [--batch 16] [--repeat 5]
       [--threads 1] [--cifar-weights FILE] [--out FILE]

Times the CPU encoders (patch, cnn, random cifar_resnet twin, and the real CIFAR ResNet
when --cifar-weights is given) and the tiny ViT twins, and writes JSON: per encoder the
token grid and dim, and the best and median images/s over the repeats.
"""

from __future__ import annotations

import argparse
import time

import torch
from report import best_and_median, emit, machine_info

from slotlab.nn.encoders import EncoderConfig, build_encoder, encoder_config


def encoder_configs(image_size: int, cifar_weights: str | None) -> dict[str, EncoderConfig]:
    vit_size = image_size // 14 * 14  # DINOv2's patch is 14
    configs = {
        "patch": encoder_config(name="patch", image_size=image_size),
        "patch+colour8": encoder_config(name="patch", image_size=image_size, colour_frequencies=8),
        "cnn": encoder_config(name="cnn", image_size=image_size),
        "cifar_resnet-tiny-layer2": encoder_config(name="cifar_resnet", tiny=True, image_size=image_size, layer=2),
        "dinov2-tiny": encoder_config(name="dinov2", tiny=True, image_size=vit_size),
        "dino-tiny": encoder_config(name="dino", tiny=True, image_size=image_size),
        "mae-tiny": encoder_config(name="mae", tiny=True, image_size=image_size),
    }
    if cifar_weights:
        for layer in (2, 3):
            configs[f"cifar_resnet-layer{layer}"] = encoder_config(
                name="cifar_resnet", path=cifar_weights, image_size=image_size, layer=layer
            )
    return configs


def images_per_second(config: EncoderConfig, batch: int, repeat: int) -> tuple[dict, list[float]]:
    encoder = build_encoder(config).eval()
    images = torch.rand(batch, 3, config.image_size, config.image_size)
    rates = []
    with torch.no_grad():
        encoder(images)  # warm-up
        for _ in range(repeat):
            start = time.perf_counter()
            encoder(images)
            rates.append(batch / (time.perf_counter() - start))
    shape = {"grid": list(encoder.grid_size()), "dim": encoder.dim, "image_size": config.image_size}
    return shape, rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cifar-weights", help="a CIFAR ResNet checkpoint to time the real network too")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    results = {}
    for name, config in encoder_configs(args.image_size, args.cifar_weights).items():
        shape, rates = images_per_second(config, args.batch, args.repeat)
        results[name] = {**shape, **best_and_median(rates, "images_per_s")}
    report = {
        "benchmark": "encoders_forward",
        "batch": args.batch,
        "repeat": args.repeat,
        "threads": args.threads,
        "results": results,
        "machine": machine_info(),
    }
    emit(report, args.out)


if __name__ == "__main__":
    main()
