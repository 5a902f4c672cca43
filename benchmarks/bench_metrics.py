"""Speed of slotlab's batched mask metrics against a per-image numpy + scipy loop.

The setting mirrors COCO val2017 under the SPOT protocol: 5,000 images, 7 slots, masks at
320x320, background not an object, instance overlaps ignored, FG-ARI of an image without
foreground = 1. Inputs are synthetic but shaped like the real thing: ground truth of 1-10
random elliptic objects (later objects paint over earlier ones; overlap pixels are
ignored) and predictions that are random 14x14 slot logits upsampled bilinearly to 320,
as a ViT-B/16 model at 224 would give.

Both implementations score the same batches (mBO, mIoU, FG-ARI); the values must agree to
1e-6. Only the metric computation is timed, not the input generation.

    python benchmarks/bench_metrics.py --out bench_metrics.json            # full run
    python benchmarks/bench_metrics.py --num-images 500 --out small.json   # quick run
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from report import emit, machine_info
from scipy.optimize import linear_sum_assignment

from slotlab.data.sample import one_hot_masks
from slotlab.metrics.masks import mask_metrics

METRICS = ("mbo", "miou", "fg_ari")
TOLERANCE = 1e-6


def random_ground_truth(
    generator: torch.Generator, batch: int, size: int, max_objects: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Instance label maps (B, S, S) with 1..max_objects elliptic objects and their overlap mask."""
    coords = torch.arange(size, dtype=torch.float32)
    ys, xs = coords.view(-1, 1), coords.view(1, -1)
    labels = torch.zeros(batch, size, size, dtype=torch.int64)
    cover = torch.zeros(batch, size, size, dtype=torch.int64)
    counts = torch.randint(1, max_objects + 1, (batch,), generator=generator)
    for b in range(batch):
        for m in range(int(counts[b])):
            cy, cx = torch.rand(2, generator=generator) * size
            ry, rx = 6 + torch.rand(2, generator=generator) * size / 4
            inside = ((ys - cy) / ry) ** 2 + ((xs - cx) / rx) ** 2 <= 1
            labels[b][inside] = m + 1
            cover[b] += inside
    return labels, cover > 1


def random_predictions(generator: torch.Generator, batch: int, slots: int, size: int, tokens: int) -> torch.Tensor:
    logits = torch.randn(batch, slots, tokens, tokens, generator=generator)
    return F.interpolate(logits.softmax(1), size=(size, size), mode="bilinear", align_corners=False)


def reference_image(pred: np.ndarray, target: np.ndarray, ignore: np.ndarray) -> dict[str, float]:
    """One image, the straightforward way (as OCLF's per-image loop): boolean masks,
    pairwise IoU by broadcasting, scipy Hungarian, ARI from a float64 contingency table."""
    num_slots = pred.shape[0]
    slot_of_pixel = pred.reshape(num_slots, -1).argmax(0)
    slot_masks = slot_of_pixel[None, :] == np.arange(num_slots)[:, None]
    gt = target.reshape(target.shape[0], -1) > 0
    keep = ~ignore.reshape(-1)
    slot_masks, gt = slot_masks[:, keep], gt[:, keep]
    objects = gt[1:]
    objects = objects[objects.any(1)]
    out = {}
    if len(objects):
        inter = (slot_masks[:, None] & objects[None]).sum(-1).astype(np.float64)
        union = (slot_masks[:, None] | objects[None]).sum(-1).astype(np.float64)
        iou = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
        out["mbo"] = float(iou.max(0).mean())
        rows, cols = linear_sum_assignment(iou, maximize=True)
        out["miou"] = float(iou[rows, cols].sum() / len(objects))
    else:
        out["mbo"] = out["miou"] = float("nan")
    n = np.einsum("kp,mp->km", slot_masks.astype(np.float64), gt[1:].astype(np.float64))
    a, b = n.sum(0), n.sum(1)
    total = a.sum()
    rindex = (n * (n - 1)).sum()
    aindex, bindex = (a * (a - 1)).sum(), (b * (b - 1)).sum()
    expected = aindex * bindex / max(total * (total - 1), 1)
    denominator = (aindex + bindex) / 2 - expected
    out["fg_ari"] = float((rindex - expected) / denominator) if denominator > 0 else 1.0
    return out


class Clock:
    """Wall-clock and process CPU time of a block (CPU time is robust to other processes
    sharing the machine; wall time is what a user waits)."""

    def __enter__(self) -> "Clock":
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


def score_slotlab(pred: torch.Tensor, target: torch.Tensor, ignore: torch.Tensor) -> dict[str, np.ndarray]:
    scores = mask_metrics(pred, target, ignore, METRICS, ignore_background=True, if_empty="one")
    return {k: v.numpy() for k, v in scores.items()}


def score_reference(pred: torch.Tensor, target: torch.Tensor, ignore: torch.Tensor) -> dict[str, np.ndarray]:
    rows = [reference_image(p, t, i) for p, t, i in zip(pred.numpy(), target.numpy(), ignore.numpy())]
    return {k: np.array([r[k] for r in rows]) for k in METRICS}


def max_difference(a: np.ndarray, b: np.ndarray) -> float:
    if not np.array_equal(np.isnan(a), np.isnan(b)):
        return float("inf")
    defined = ~np.isnan(a)
    return float(np.abs(a[defined] - b[defined]).max()) if defined.any() else 0.0


def run(args: argparse.Namespace) -> dict:
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(args.seed)
    scorers = {"slotlab": score_slotlab, "reference_loop": score_reference}
    wall = dict.fromkeys(scorers, 0.0)
    cpu = dict.fromkeys(scorers, 0.0)
    values: dict[str, dict[str, list]] = {name: {k: [] for k in METRICS} for name in scorers}
    done = 0
    while done < args.num_images:
        batch = min(args.batch_size, args.num_images - done)
        labels, overlap = random_ground_truth(generator, batch, args.size, args.max_objects)
        target = one_hot_masks(labels, args.max_objects + 1)
        pred = random_predictions(generator, batch, args.slots, args.size, args.tokens)
        for name, scorer in scorers.items():
            with Clock() as clock:
                scores = scorer(pred, target, overlap)
            wall[name] += clock.wall
            cpu[name] += clock.cpu
            for k in METRICS:
                values[name][k].append(scores[k])
        done += batch
        print(f"{done}/{args.num_images} images  wall s: " + "  ".join(f"{n} {wall[n]:.1f}" for n in scorers), flush=True)
    merged = {name: {k: np.concatenate(v) for k, v in per.items()} for name, per in values.items()}
    differences = {k: max_difference(merged["slotlab"][k], merged["reference_loop"][k]) for k in METRICS}
    return {
        "setting": {
            "num_images": args.num_images,
            "batch_size": args.batch_size,
            "slots": args.slots,
            "mask_size": args.size,
            "max_objects": args.max_objects,
            "seed": args.seed,
            "metrics": list(METRICS),
            "protocol": "spot (ignore_background, overlaps ignored, if_empty='one')",
        },
        "machine": machine_info(),
        "wall_seconds": wall,
        "cpu_seconds": cpu,
        "speedup_wall": wall["reference_loop"] / wall["slotlab"],
        "speedup_cpu": cpu["reference_loop"] / cpu["slotlab"],
        "images_per_second_wall": {name: args.num_images / seconds for name, seconds in wall.items()},
        "means": {name: {k: float(np.nanmean(v)) for k, v in per.items()} for name, per in merged.items()},
        "max_abs_difference": differences,
        "agree": all(d <= TOLERANCE for d in differences.values()),
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-images", type=int, default=5000, help="images to score (COCO val2017: 5000)")
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--slots", type=int, default=7)
    parser.add_argument("--size", type=int, default=320, help="side of the square evaluation masks")
    parser.add_argument("--tokens", type=int, default=14, help="side of the predicted token grid before upsampling")
    parser.add_argument("--max-objects", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    result = run(args)
    emit(result, args.out)
    return 0 if result["agree"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
