"""MSF on a CPU: does multi-scale fused guidance help SLATE on scenes of widely varying object size?

    python benchmarks/bench_msf.py --out bench-msf.json [--seeds 0 1 2] [--vq-steps N] [--ocl-steps N] [--jobs N]
    python benchmarks/bench_msf.py --separability RUN/model [RUN2/model ...] [--data SPEC]

The second form only scores trained VQ-VAEs (``slotlab train --preset vqvae-...``) for object
separability on a dataset (default: the scenes test split below), before any slot model trains.

For every seed and row, a VQ-VAE is pretrained with its CPU preset (same encoder/decoder,
steps and recipe in every row), its scale-1 guidance is scored for object separability (MSF
Table 4: k-means with the number of ground-truth segments, inter- and intra-cluster distance of
L2-normalised super-pixels) and SLATE is trained on it with identical settings
(slate-scenes-tiny). Rows: ``vqvae`` (single scale, 256 codes), ``msf`` (paper variant, 3
scales, 16 shared + 16 per-scale codes: 256 combinations), ``msf-no-intra`` (MSF Table 5:
intra-scale fusion off, the shared codebook alone). Data: the built-in scenes with object
sizes from 6% to 45% of the image side (circumradius), at 32 px; models are scored on the test split under the
``msf`` protocol (slot-attention masks). Supervision: none (the scenes' ground truth is only
read by the metrics). ``--rows slotdiffusion slotdiffusion-msf`` trains SlotDiffusion on a
single-scale and an MSF VQ-VAE with 4-channel codes instead (the same measures, no target).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import torch
from report import emit, machine_info

from slotlab.config import load_preset
from slotlab.data.registry import build_dataset
from slotlab.data.sample import collate
from slotlab.train.config import build_train_config
from slotlab.train.evaluate import evaluate_model
from slotlab.train.trainer import train
from slotlab.metrics.separability import ObjectSeparability

SIZES = "resolution=32&min_size=0.06&max_size=0.45"
TRAIN = f"scenes?split=train&size=2000&{SIZES}"
TEST = f"scenes?split=test&size=256&{SIZES}"
# 32 px images (scale-1 guidance 8 x 8, scales 2 and 3 4 x 4 and 2 x 2) and batches of 16: a
# size at which three seeds of every row train on a shared 2-core CPU within an hour.
SMALL = ["model.image_size=32", "model.width=16", "data.batch_size=16"]
OCL_SMALL = ["model.encoder.image_size=32", "model.encoder.patch_size=2", "data.batch_size=16"]
# SlotDiffusion rows: the same, the UNet on the 8 x 8 x 4 latent.
ROWS = {  # row -> (VQ-VAE preset, overrides, OCL preset)
    "vqvae": ("vqvae-scenes-tiny", [], "slate-scenes-tiny"),
    "msf": ("vqvae-msf-scenes-tiny", [], "slate-scenes-tiny"),
    "msf-no-intra": ("vqvae-msf-scenes-tiny", ["model.msf.intra_fusion=false"], "slate-scenes-tiny"),
    # SlotDiffusion on 4-channel guidance: end to end at small size, no target.
    "slotdiffusion": ("vqvae-c4-scenes-tiny", [], "slotdiffusion-scenes-tiny"),
    "slotdiffusion-msf": ("vqvae-msf-c4-scenes-tiny", [], "slotdiffusion-scenes-tiny"),
}
DEFAULT_ROWS = ["vqvae", "msf", "msf-no-intra"]


def separability(vqvae, seed: int, data: str = TEST) -> dict:
    scores = ObjectSeparability(seed)
    test = build_dataset(data)
    for start in range(0, len(test), 32):
        batch = collate([test[i] for i in range(start, min(start + 32, len(test)))])
        with torch.no_grad():
            guidance = vqvae(batch.image, decode=False).scales[0].output
        scores.update(guidance, batch.instance_mask, batch.ignore_mask)
    return scores.compute()


def run(row: str, seed: int, vq_steps: int, ocl_steps: int, root: str) -> dict:
    torch.set_num_threads(1)
    preset, extra, ocl = ROWS[row]
    common = [f"seed={seed}", f"data.train={TRAIN}", f"data.val={TEST}"]
    out = Path(root) / f"{row}-{seed}"
    start = time.perf_counter()
    vq_config = build_train_config(load_preset(preset), common + SMALL + extra + [
        f"stages.0.steps={vq_steps}", f"stages.0.warmup_steps={max(1, vq_steps // 20)}"])
    vq = train(vq_config, out / "vqvae", progress=False)
    result = {"row": row, "seed": seed, "vqvae_seconds": round(time.perf_counter() - start, 1)}
    result["separability"] = separability(vq.model.vqvae.eval(), seed)
    start = time.perf_counter()
    ocl_config = build_train_config(load_preset(ocl), common + OCL_SMALL + [
        f"model.vqvae={vq.model_dir}", f"stages.0.steps={ocl_steps}",
        f"stages.0.warmup_steps={max(1, ocl_steps // 20)}"])
    model = train(ocl_config, out / "ocl", progress=False).model
    result["ocl_preset"], result["ocl_seconds"] = ocl, round(time.perf_counter() - start, 1)
    metrics = evaluate_model(model, build_dataset(TEST), protocol="msf", progress=False, seed=seed)
    result["ocl"] = dict(metrics["metrics"])
    return result


def summarise(results: list[dict]) -> dict:
    table = {}
    for row in ROWS:
        runs = [r for r in results if r["row"] == row]
        if not runs:
            continue
        values = {f"separability.{k}": [r["separability"][k] for r in runs] for k in ("inter_cluster", "intra_cluster")}
        values |= {f"ocl.{k}": [r["ocl"][k] for r in runs] for k in runs[0]["ocl"]}
        table[row] = {k: {"mean": statistics.mean(v), "std": statistics.stdev(v) if len(v) > 1 else 0.0, "values": v}
                      for k, v in values.items()}
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rows", nargs="+", default=DEFAULT_ROWS, choices=list(ROWS))
    parser.add_argument("--vq-steps", type=int, default=600)
    parser.add_argument("--ocl-steps", type=int, default=800)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--workdir", default=None, help="keep the runs here (default: a temporary directory)")
    parser.add_argument("--separability", nargs="+", default=None, metavar="DIR",
                        help="only score these VQ-VAE model directories for object separability")
    parser.add_argument("--data", default=TEST, help="dataset spec for --separability (default: %(default)s)")
    args = parser.parse_args()
    if args.separability:
        from slotlab.methods.vqvae import load_frozen_vqvae

        scores = {d: separability(load_frozen_vqvae(d, None, "--separability"), 0, args.data) for d in args.separability}
        emit({"benchmark": "msf-separability", "data": args.data, "scores": scores, "machine": machine_info()}, args.out)
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = args.workdir or tmp
        tasks = [(row, seed, args.vq_steps, args.ocl_steps, root) for seed in args.seeds for row in args.rows]
        with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:
            results = list(pool.map(run, *zip(*tasks)))
    emit({
        "benchmark": "msf",
        "command": "python benchmarks/bench_msf.py " + " ".join(
            f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
            for k, v in vars(args).items() if v is not None and k != "out"),
        "data": {"train": TRAIN, "test": TEST, "protocol": "msf", "masks": "slot attention"},
        "supervision": "none: VQ-VAE and SLATE see images only; ground truth is read by the metrics",
        "rows": summarise(results),
        "runs": results,
        "machine": machine_info(),
    }, args.out)


if __name__ == "__main__":
    main()
