"""Loading speed of COCO-format data: raw files vs the packed tar shards (JSON out).

Generates a COCO-like set (default 200 JPEGs of 640x480 with ~7 polygon instances each),
then measures samples/s of

- ``raw``:              COCOInstances (JPEG decode + polygon decode) + resize 256 / centre crop 256
- ``packed_full``:      the same samples packed at full size (PNG), read + the same transform
- ``packed_full_jpeg``: likewise with images stored as JPEG (quality 95)
- ``packed_transformed``: packed after the deterministic transform, read as is

and the conversion time of each packed copy. Torch runs one thread per process (as in
DataLoader workers). Usage::

    python benchmarks/bench_data.py --out bench_data.json [--images 200] [--workers 0]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from report import emit, machine_info
from torch.utils.data import DataLoader, Dataset

from slotlab.data.coco import COCOInstances
from slotlab.data.packed import PackedDataset, convert
from slotlab.data.sample import collate
from slotlab.data.sample_transforms import resize_center_crop

HEIGHT, WIDTH = 480, 640
CROP = 256
NUM_CATEGORIES = 80


def _polygon(rng: np.random.Generator) -> list[float]:
    """A star-shaped polygon of 8-20 vertices around a random centre."""
    cx, cy = rng.uniform(40, WIDTH - 40), rng.uniform(40, HEIGHT - 40)
    n = int(rng.integers(8, 21))
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    radii = rng.uniform(15, 110) * rng.uniform(0.6, 1.0, n)
    xs = np.clip(cx + radii * np.cos(angles), 0, WIDTH - 1)
    ys = np.clip(cy + radii * np.sin(angles), 0, HEIGHT - 1)
    return np.stack([xs, ys], axis=1).round(2).reshape(-1).tolist()


def _photo(rng: np.random.Generator) -> np.ndarray:
    """Smooth gradients, blocks and noise: JPEG sizes like photos' (~100 kB at 640x480)."""
    ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    base = np.stack([xs / WIDTH, ys / HEIGHT, (xs + ys) / (WIDTH + HEIGHT)], axis=-1) * rng.uniform(80, 200, 3)
    for _ in range(12):
        x0, y0 = rng.integers(0, WIDTH - 60), rng.integers(0, HEIGHT - 60)
        base[y0 : y0 + rng.integers(20, 160), x0 : x0 + rng.integers(20, 160)] += rng.uniform(-60, 60, 3)
    base += rng.normal(0, 12, base.shape)
    return base.clip(0, 255).astype(np.uint8)


def make_coco_like(root: Path, num_images: int, objects_per_image: float, seed: int = 0) -> None:
    """COCO layout under ``root``: annotations/instances_bench.json and bench/*.jpg."""
    rng = np.random.default_rng(seed)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "bench").mkdir(exist_ok=True)
    images, annotations = [], []
    for image_id in range(1, num_images + 1):
        name = f"{image_id:012d}.jpg"
        Image.fromarray(_photo(rng)).save(root / "bench" / name, quality=90)
        images.append({"id": image_id, "file_name": name, "height": HEIGHT, "width": WIDTH})
        for _ in range(rng.poisson(objects_per_image)):
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "iscrowd": 0,
                "category_id": int(rng.integers(1, NUM_CATEGORIES + 1)),
                "segmentation": [_polygon(rng)], "bbox": [0, 0, 1, 1], "area": 1.0,
            })
    categories = [{"id": k, "name": f"class{k}"} for k in range(1, NUM_CATEGORIES + 1)]
    data = {"images": images, "annotations": annotations, "categories": categories}
    (root / "annotations" / "instances_bench.json").write_text(json.dumps(data))


def samples_per_second(dataset: Dataset, workers: int, passes: int) -> float:
    loader = DataLoader(dataset, batch_size=16, num_workers=workers, collate_fn=collate)
    count, start = 0, time.perf_counter()
    for _ in range(passes):
        for batch in loader:
            count += len(batch)
    return count / (time.perf_counter() - start)


def _size_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench_data.json"))
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--objects", type=float, default=7.0, help="mean polygons per image")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    parser.add_argument("--passes", type=int, default=2, help="epochs timed per variant")
    parser.add_argument("--workdir", type=Path, default=None, help="where to generate data (default: a temp dir)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.workdir or Path(tmp)
        start = time.perf_counter()
        make_coco_like(root, args.images, args.objects)
        generate_s = time.perf_counter() - start
        transform = resize_center_crop(CROP)
        raw = COCOInstances(root, split="bench", transform=transform)
        untransformed = COCOInstances(root, split="bench")

        start = time.perf_counter()
        convert(untransformed, root / "packed_full", shard_size=100, num_workers=args.workers, progress=False)
        convert_full_s = time.perf_counter() - start
        start = time.perf_counter()
        convert(untransformed, root / "packed_full_jpeg", shard_size=100, image_format="jpeg",
                num_workers=args.workers, progress=False)
        convert_full_jpeg_s = time.perf_counter() - start
        start = time.perf_counter()
        convert(raw, root / "packed_256", shard_size=100, num_workers=args.workers, progress=False)
        convert_transformed_s = time.perf_counter() - start

        results = {
            "raw": samples_per_second(raw, args.workers, args.passes),
            "packed_full": samples_per_second(PackedDataset(root / "packed_full", transform=transform),
                                              args.workers, args.passes),
            "packed_full_jpeg": samples_per_second(PackedDataset(root / "packed_full_jpeg", transform=transform),
                                                   args.workers, args.passes),
            "packed_transformed": samples_per_second(PackedDataset(root / "packed_256"), args.workers, args.passes),
        }
        report = {
            "benchmark": "bench_data",
            "images": args.images,
            "image_size_hw": [HEIGHT, WIDTH],
            "instances": sum(len(a) for a in untransformed._annotations),
            "transform": f"shorter side {CROP}, centre crop {CROP}",
            "workers": args.workers,
            "torch_threads": torch.get_num_threads(),
            "passes": args.passes,
            "samples_per_second": {k: round(v, 1) for k, v in results.items()},
            "speedup_vs_raw": {k: round(v / results["raw"], 2) for k, v in results.items()},
            "seconds": {"generate": round(generate_s, 1), "convert_full": round(convert_full_s, 1),
                        "convert_full_jpeg": round(convert_full_jpeg_s, 1),
                        "convert_transformed": round(convert_transformed_s, 1)},
            "disk_mb": {"raw_jpeg": round(_size_mb(root / "bench"), 1),
                        "packed_full": round(_size_mb(root / "packed_full"), 1),
                        "packed_full_jpeg": round(_size_mb(root / "packed_full_jpeg"), 1),
                        "packed_transformed": round(_size_mb(root / "packed_256"), 1)},
            "machine": machine_info(),
        }
    emit(report, args.out)


if __name__ == "__main__":
    main()
