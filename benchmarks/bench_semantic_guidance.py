"""Cost of GLASS's semantic guidance per training batch, one segment per class vs per connected piece.

    python benchmarks/bench_semantic_guidance.py [--batch 16] [--sides 64 128 512] [--repeat 3] [--out FILE]

For scenes val class maps standing in for pseudo masks (B images at each side), the JSON gives:
- semantic_guidance_loss (segments, Hungarian matching, BCE) forward with
  ``segment_kind="classes"`` and ``"components"``, median seconds per batch;
- connected_components over all class segments of the batch (one scipy call), and how many
  segments each kind gives.
"""

from __future__ import annotations

import argparse

import torch
from report import emit, machine_info, median_seconds

from slotlab.data.registry import build_dataset
from slotlab.data.sample import collate
from slotlab.ops.resize import resize_mask
from slotlab.methods.semantic_guidance import connected_components, pseudo_mask_segments, semantic_guidance_loss

NUM_SLOTS = 7


def bench_side(batch, side: int, repeat: int) -> dict:
    semantic = resize_mask(batch.semantic_mask, (side, side))
    ignore = torch.zeros_like(semantic, dtype=torch.bool)
    masks = torch.rand(semantic.shape[0], NUM_SLOTS, side, side, generator=torch.Generator().manual_seed(0)).softmax(1)
    segments, valid = pseudo_mask_segments(semantic, ignore)
    inside = (segments > 0.5) & valid[:, :, None, None]
    row = {"side": side, "images": semantic.shape[0], "class_segments": int(valid.sum())}
    for kind in ("classes", "components"):
        wall, _ = median_seconds(lambda: semantic_guidance_loss(masks, semantic, ignore, segment_kind=kind), repeat)
        row[f"loss_{kind}_s"] = round(wall, 5)
    row["connected_components_s"] = round(median_seconds(lambda: connected_components(inside), repeat)[0], 5)
    row["component_segments"] = int(pseudo_mask_segments(semantic, ignore, kind="components")[1].sum())
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=16, help="images per batch (glass-tiny trains with 16)")
    parser.add_argument("--sides", type=int, nargs="+", default=[64, 128, 512], help="pseudo-mask sides to measure")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None, help="write the JSON here as well as to stdout")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dataset = build_dataset(f"scenes?split=val&size={args.batch}")
    batch = collate([dataset[i] for i in range(args.batch)])
    report = {
        "benchmark": "semantic guidance: class segments vs connected pieces",
        "rows": [bench_side(batch, side, args.repeat) for side in args.sides],
        "machine": machine_info(),
    }
    emit(report, args.out)


if __name__ == "__main__":
    main()
