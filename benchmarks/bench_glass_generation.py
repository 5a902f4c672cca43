"""What the CPU decoder's pretraining buys GLASS's reconstructions and edits (JSON out).

    python benchmarks/bench_glass_generation.py --decoder-steps 150 600 1200 2400 \
        [--glass-at 150 600 1200 2400] [--segmenter DIR] [--set KEY=VALUE ...] [--keep DIR] [--out FILE]

One ``glass-tiny-decoder`` run of the largest step count (its warmup-cosine schedule spans
that count, so a smaller count is a checkpoint in mid-schedule, learning rate still high),
checkpointed at every count, in a worker process; each checkpoint is scored as it appears
(two processes, one thread each; each row is also appended to ``rows.jsonl`` in the work
directory as it ends):

- ``described``: the decoder alone, conditioned on the ground-truth description tokens of 32
  held-out generated scenes (another generation seed than the training data): the share of
  scenes whose largest object passes the demo's colour test (``slotlab.metrics.edits``) and
  PSNR from a scene's own tokens / from the next scene's (how much the decoder uses its
  conditioning). The best conditioning this decoder can get.
- ``glass`` (counts in ``--glass-at``): ``glass-tiny`` trained from that decoder
  (``model.decoder_init``) at the preset's steps, scored with the demo's generation tasks on
  the first 32 scenes val (``recon_object_visible``, ``removal_success`` and its two
  controls, ``recon_psnr``) and segmentation on scenes val (protocol ``native``).

``--set`` overrides apply to both presets (e.g. ``model.diffusion_decoder.coordinate_channels=true``).
Supervision: the decoder is pretrained on description tokens written from the generated
scenes' ground-truth class segments and pixels; the encoder is the presets' (label-free), or
with ``--segmenter DIR`` reads a segmenter trained on the scenes' class maps. Single thread
per process, as in the demo.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from concurrent.futures import Future, ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import torch
from bench_glass import generate
from report import emit, machine_info

from slotlab.config import load_preset
from slotlab.data.registry import build_dataset
from slotlab.data.sample import collate
from slotlab.io.layout import MODEL_CONFIG_FILE
from slotlab.methods import ObjectCentricModel
from slotlab.metrics.edits import largest_objects, object_visible, region_mean_colour
from slotlab.metrics.generation import psnr
from slotlab.ops.random import seeded_generator
from slotlab.ops.resize import resize_image
from slotlab.train.config import build_train_config
from slotlab.train.demo import die_with_parent
from slotlab.train.evaluate import evaluate_model
from slotlab.train.generation_tasks import (
    NUM_IMAGES,
    SAMPLER_STEPS,
    run_generation_tasks,
)
from slotlab.train.trainer import train

VAL = "scenes?split=val&size=256"
HELD_OUT_SEED = 1  # generation seed of the held-out scenes (the training data: the preset's, 0)


def pretrain_decoder(data: str, common: list[str], counts: list[int], work: Path) -> dict:
    """One glass-tiny-decoder run of max(counts) steps with a checkpoint at every count."""
    torch.set_num_threads(1)
    steps = max(counts)
    every = counts[0] if all(c % counts[0] == 0 for c in counts) else 1
    overrides = [f"data.train={data}", *common, f"stages.0.steps={steps}", f"checkpoint_every={every}",
                 f"keep_checkpoints={steps // every + 1}"]
    config = build_train_config(load_preset("glass-tiny-decoder"), overrides)
    result = train(config, work / "decoder", progress=False)
    return {"steps": steps, "train_seconds": round(result.train_seconds, 1),
            "seconds_per_step": round(result.train_seconds / steps, 3), "precision": result.precision,
            "checkpoints": {n: str(checkpoint_dir(work, n)) for n in counts}}


def checkpoint_dir(work: Path, step: int) -> Path:
    return work / "decoder" / "checkpoints" / f"step-{step:08d}"


def wait_for(directory: Path, pretraining: Future) -> str:
    """``directory`` once the pretraining has written it (checkpoints are renamed into place whole)."""
    while not (directory / MODEL_CONFIG_FILE).is_file():
        if pretraining.done():
            pretraining.result()  # raises the worker's error
            raise FileNotFoundError(f"the decoder's pretraining ended without writing {directory}")
        time.sleep(10)
    return str(directory)


@torch.no_grad()
def described(model_dir: str, held_out: str) -> dict:
    """The decoder alone from ground-truth description tokens of held-out scenes (module docstring)."""
    model = ObjectCentricModel.from_pretrained(model_dir).eval()
    decoder = model.diffusion_decoder
    dataset = build_dataset(held_out)
    batch = collate([dataset[i] for i in range(min(NUM_IMAGES, len(dataset)))])
    tokens = model.describer(batch, decoder.unconditional_tokens(1, 1)[0, 0])
    objects = largest_objects(batch.instance_mask)
    regions = (batch.instance_mask == objects[:, None, None]) & (objects[:, None, None] > 0)
    colours = region_mean_colour(batch.image, regions), region_mean_colour(batch.image, batch.instance_mask == 0)
    row = {}
    for name, context in (("own", tokens), ("other", tokens.roll(1, 0))):
        images = decoder.sample(context, num_steps=SAMPLER_STEPS, generator=seeded_generator(0))
        real = resize_image(batch.image, tuple(images.shape[-2:]))
        row[f"psnr_{name}_tokens"] = round(float(psnr(images, real).mean()), 2)
        if name == "own":
            row["object_visible"] = float(object_visible(images, regions, *colours).float().mean())
    return row


def glass_from(decoder_dir: str, data: str, common: list[str], work: Path) -> dict:
    """glass-tiny from the decoder at the preset's steps, scored as the demo scores it."""
    config = build_train_config(load_preset("glass-tiny"), [f"data.train={data}", *common,
                                                            f"model.decoder_init={decoder_dir}"])
    result = train(config, work, progress=False)
    val = build_dataset(VAL)
    segmentation = evaluate_model(result.model, val, protocol="native", progress=False)["metrics"]
    generation, _ = run_generation_tasks(result.model, val, work / "tasks", seed=0)
    return {"train_seconds": round(result.train_seconds, 1), "train_steps": result.steps,
            **{k: segmentation[k] for k in ("mbo_i", "miou_i")}, **generation}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--segmenter", type=Path, default=None, metavar="DIR",
                        help="a trained segmenter checkpoint for glass-tiny's encoder to read (supervised on class "
                             "maps; slotlab train --preset segmenter-scenes-tiny); default: the presets' encoder")
    parser.add_argument("--decoder-steps", type=int, nargs="+", default=[150, 600, 1200, 2400])
    parser.add_argument("--glass-at", type=int, nargs="*", default=None,
                        help="decoder steps to train glass-tiny from (default: every --decoder-steps)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override for both presets (repeatable)")
    parser.add_argument("--keep", type=Path, default=None, metavar="DIR", help="work in DIR and keep what was trained")
    parser.add_argument("--out", default=None, help="write the JSON here as well as to stdout")
    args = parser.parse_args()
    torch.set_num_threads(1)
    counts = sorted(set(args.decoder_steps))
    glass_at = counts if args.glass_at is None else sorted(set(args.glass_at))
    if not set(glass_at) <= set(counts):
        parser.error("--glass-at counts must be among --decoder-steps")
    common = ["seed=0", *args.overrides]
    glass_common = [*common, *([f"model.encoder.semantic_model={args.segmenter}"] if args.segmenter else [])]
    report: dict = {"benchmark": "glass-generation", "overrides": args.overrides, "val": VAL,
                    "generation_images": NUM_IMAGES, "sampler_steps": SAMPLER_STEPS,
                    "supervision": ("encoder reads a segmenter trained on scenes class maps" if args.segmenter else
                                    "label-free encoder") + "; the decoder is pretrained on description tokens written "
                                   "from the generated scenes' masks and pixels"}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        data = generate(work / "generated")
        held_out = generate(work / "held-out", seed=HELD_OUT_SEED, num=NUM_IMAGES)
        rows = {}
        with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn"), initializer=die_with_parent) as pool:
            pretraining = pool.submit(pretrain_decoder, data, common, counts, work)
            for count in counts:
                checkpoint = wait_for(checkpoint_dir(work, count), pretraining)
                rows[count] = {"described": described(checkpoint, held_out)}
                if count in glass_at:
                    rows[count]["glass"] = glass_from(checkpoint, data, glass_common, work / f"glass-{count}")
                print(count, json.dumps(rows[count]), flush=True)
                with open(work / "rows.jsonl", "a") as log:  # each row as it ends, should the whole not finish
                    log.write(json.dumps({"decoder_steps": count, **rows[count]}) + "\n")
            report["decoder"] = pretraining.result()
        report["by_decoder_steps"] = rows
    report["seconds"] = round(time.perf_counter() - start, 1)
    report["machine"] = machine_info()
    emit(report, args.out)


if __name__ == "__main__":
    main()
