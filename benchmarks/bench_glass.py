"""GLASS on a CPU: the Table 6a ablation on built-in scenes and training speed, as JSON.

    python benchmarks/bench_glass.py --out bench-glass.json [--seeds 0 1 2] [--steps N] [--decoder-steps N | --decoder DIR] [--segmenter DIR] [--jobs N] [--skip-ablation | --skip-speed] [--keep DIR]

Ablation: each row of GLASS Table 6a (recon only, recon + semantic, recon + instance, full)
is trained with its CPU preset on the same generated scenes for every seed and evaluated on
the scenes val split (where settings are chosen) and the test split (which reports them),
protocol 'native'; mean and standard deviation over seeds. Every row has L_recon in phase 1
through the same frozen pretrained decoder (glass-tiny-decoder), trained once first (seed 0),
as the demo does. The encoder is the presets' (label-free); --segmenter DIR makes it read a
trained segmenter (segmenter-scenes-tiny, supervised on the scenes' class maps), and the
report's supervision says which. With --keep the generated data, the pretrained decoder and
every trained model stay in DIR (e.g. to score the models' reconstructions afterwards).
Speed: steps/s of the tiny preset (phase 1 and phase 2), and forward+backward steps/s of
the paper configuration's modules (DINOv2 + SD UNet + VAE + MLP decoder + matching) on tiny
random weights.
Ceilings: the instance scores of four oracle "models" on the same val split, scored exactly
like a model (soft masks at a token grid, upsampled bilinearly): the ground-truth class
segments as slots (the best that grouping by class alone can reach: instances of one class
share a slot), the instances merged by colour name (the best of grouping by colour alone, what
the colour features of the patch encoder offer), the instances merged by colour name and class
together (what features carrying both offer, such as the learned ``ssl`` encoder's) and the
ground-truth instances as slots (the limit of the token grid). Each at the 16x16, 32x32 (the
presets': 64 px images in 2 px patches) and 64x64 token grids, to show what the patch size
allows.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import torch
import torch.nn.functional as F
from report import emit, machine_info

from slotlab.config import from_dict, load_preset
from slotlab.data.registry import build_dataset
from slotlab.data.sample import collate, one_hot_masks
from slotlab.datagen.config import GenerateConfig
from slotlab.datagen.run import run_generation
from slotlab.methods.glass import PAPER_TWIN_OVERRIDES
from slotlab.metrics.evaluation import evaluate_masks
from slotlab.metrics.protocols import get_protocol
from slotlab.train.config import build_train_config, to_dict
from slotlab.train.demo import die_with_parent, pretrain, steps_overrides
from slotlab.train.demo_methods import select_methods
from slotlab.train.evaluate import evaluate_model
from slotlab.train.supervision import describe_supervision
from slotlab.train.trainer import train

ROWS = {  # Table 6a row -> CPU preset
    "recon": "glass-tiny-recon",
    "recon+semantic": "glass-tiny-recon-semantic",
    "recon+instance": "glass-tiny-recon-instance",
    "full": "glass-tiny",
}
VAL = "scenes?split=val&size=256"
TEST = "scenes?split=test&size=256"
TOKEN_GRIDS = (16, 32, 64)  # 64 px images in 4, 2 (the CPU presets) and 1 px patches


def oracle_ceilings(grids: tuple[int, ...]) -> dict:
    """Instance scores of the class, colour, colour-and-class and instance oracles per token grid
    (module docstring)."""
    val = build_dataset(VAL)
    batch = collate([val[i] for i in range(len(val))])
    oracles = (("class_segments_as_slots", batch.semantic_mask),
               ("colour_groups_as_slots", instance_groups(batch, ("color",))),
               ("colour_and_class_groups_as_slots", instance_groups(batch, ("color", "class"))),
               ("instances_as_slots", batch.instance_mask))
    results: dict = {}
    for grid in grids:
        for name, labels in oracles:
            masks = F.adaptive_avg_pool2d(one_hot_masks(labels).float(), grid)
            metrics = evaluate_masks([(masks, batch)], get_protocol("native"))["metrics"]
            results.setdefault(str(grid), {})[name] = {k: metrics[k] for k in ("mbo_i", "miou_i", "fg_ari")}
    return results


def instance_groups(batch, keys: tuple[str, ...]) -> torch.Tensor:
    """(B, H, W) labels: the instances of each image merged when their scene metadata agree on
    every key (("color",): by colour name; ("color", "class"): by colour name and class)."""
    labels = torch.zeros_like(batch.instance_mask)
    for item, meta in enumerate(batch.meta):
        groups: dict[tuple, int] = {}
        for index, obj in enumerate(meta["objects"], start=1):  # instance id = position in the list + 1
            group = groups.setdefault(tuple(obj[key] for key in keys), len(groups) + 1)
            labels[item][batch.instance_mask[item] == index] = group
    return labels


def generate(out: Path, seed: int | None = None, num: int | None = None) -> str:
    """Scenes of the generate-scenes-tiny preset in ``out`` (its seed and count unless given)."""
    settings = load_preset("generate-scenes-tiny")
    if seed is not None:
        settings |= {"seed": seed}
    if num is not None:
        settings |= {"num": num, "shard_size": num}
    run_generation(from_dict(GenerateConfig, settings), out, resume=False, progress=False)
    return f"generated:{out}"


def ablation_run(preset: str, data: str, shared: list[str], seed: int, steps: int | None, work: Path) -> dict:
    """Train one ablation row's preset with one seed and score it on scenes val."""
    torch.set_num_threads(1)  # one core per run, as in the demo
    preset_data = load_preset(preset)
    overrides = [f"data.train={data}", *shared, f"seed={seed}", *steps_overrides(preset_data, steps)]
    config = build_train_config(preset_data, overrides)
    result = train(config, work / f"{preset}-{seed}", progress=False)
    run = {"seed": seed, "supervision": describe_supervision(to_dict(config)), "train_steps": result.steps,
           "train_seconds": round(result.train_seconds, 1), "precision": result.precision}
    for split, spec in (("val", VAL), ("test", TEST)):
        metrics = evaluate_model(result.model, build_dataset(spec), protocol="native", progress=False)["metrics"]
        run[split] = {k: metrics[k] for k in ("miou_i", "mbo_i", "fg_ari")}
    print(preset, run, flush=True)
    with open(work / "ablation-runs.jsonl", "a") as log:  # each run as it ends, should the whole not finish
        log.write(json.dumps({"preset": preset, **run}) + "\n")
    return run


def ablation(data: str, shared: list[str], seeds: list[int], steps: int | None, work: Path, jobs: int) -> dict:
    """Every (row, seed) run, ``jobs`` at a time in worker processes; per row the runs and their mean and std."""
    pairs = [(row, seed) for seed in seeds for row in ROWS]  # seed by seed: every row of a seed finishes together
    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn"), initializer=die_with_parent) as pool:
        futures = [pool.submit(ablation_run, ROWS[row], data, shared, seed, steps, work) for row, seed in pairs]
        results = [future.result() for future in futures]
    rows = {}
    for row, preset in ROWS.items():
        runs = [run for (name, _), run in zip(pairs, results) if name == row]
        summary: dict = {}
        for split in ("val", "test"):
            for key in ("miou_i", "mbo_i", "fg_ari"):
                values = [r[split][key] for r in runs]
                summary.setdefault(split, {})[key] = {"mean": statistics.fmean(values), "std": statistics.pstdev(values)}
        rows[row] = {"preset": preset, "supervision": runs[0]["supervision"], "runs": runs, **summary}
    return rows


def stage_speed(config_overrides: list[str], preset: str, data: str, steps: int, work: Path, name: str) -> dict:
    """steps/s of each stage, timed by training ``steps`` steps of that stage alone."""
    speeds = {}
    for index, stage in enumerate(load_preset(preset)["stages"]):
        only = [f"stages=[{json.dumps(stage | {'steps': steps})}]"]
        config = build_train_config(load_preset(preset), [f"data.train={data}", *config_overrides, *only])
        start = time.perf_counter()
        result = train(config, work / f"{name}-{index}", progress=False)
        speeds[stage["name"]] = {"steps_per_second": round(steps / (time.perf_counter() - start), 3),
                                 "batch_size": config.data.batch_size}
        del result
    return speeds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=None, help="write the JSON here as well as to stdout")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds per ablation row")
    parser.add_argument("--steps", type=int, default=None, help="training steps per ablation run (default: presets')")
    parser.add_argument("--segmenter", type=Path, default=None, metavar="DIR",
                        help="a trained segmenter checkpoint for the encoder to read (supervised on class maps; "
                        "default: none, the presets' label-free encoder)")
    parser.add_argument("--decoder", type=Path, default=None, metavar="DIR",
                        help="a decoder pretrained with glass-tiny-decoder (its model directory) instead of pretraining one")
    parser.add_argument("--decoder-steps", type=int, default=None,
                        help="pretraining steps of the decoder every row starts from (default: glass-tiny-decoder's)")
    parser.add_argument("--skip-ablation", action="store_true", help="measure speed only")
    parser.add_argument("--skip-speed", action="store_true", help="run the ablation only")
    parser.add_argument("--keep", type=Path, default=None, metavar="DIR", help="work in DIR and keep what was trained")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="ablation runs trained at once, one process and one core each (default: the CPU count)")
    args = parser.parse_args()
    features = ("encoder reads a segmenter trained on scenes class maps" if args.segmenter else
                "encoder: fixed colour features (no labels)")
    report: dict = {"benchmark": "glass", "protocol": "native", "val": VAL, "test": TEST,
                    "supervision": f"{features}; the decoder is pretrained on description tokens written from the "
                                   "generated scenes' masks and pixels"}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        report["ceilings_by_token_grid"] = oracle_ceilings(TOKEN_GRIDS)
        data = generate(work / "generated")
        # The decoder's pretraining does not read the encoder: never the segmenter.
        glass = select_methods(["glass"])[0]
        report["decoder"] = ({"given": str(args.decoder), "model": str(args.decoder)} if args.decoder else
                             pretrain(glass, work, ["seed=0", f"data.train={data}"], args.decoder_steps, False))
        report["segmenter"] = {"given": str(args.segmenter)} if args.segmenter else "none"
        shared = [f"model.decoder_init={report['decoder'].pop('model')}"]
        if args.segmenter:
            shared.append(f"model.encoder.semantic_model={args.segmenter}")
        if not args.skip_speed:
            report["speed_tiny_preset"] = stage_speed(shared, "glass-tiny", data, 30, work, "speed-tiny")
            twin = [*PAPER_TWIN_OVERRIDES, "data.batch_size=2"]
            report["speed_paper_modules_tiny_weights"] = stage_speed(twin, "glass-coco", data, 5, work, "speed-paper")
        if not args.skip_ablation:
            report["ablation_steps"] = args.steps or "the presets'"
            report["ablation_encoder"] = load_preset(ROWS["full"])["model"]["encoder"]
            report["ablation_table6a"] = ablation(data, shared, args.seeds, args.steps, work, args.jobs)
    report["seconds"] = round(time.perf_counter() - start, 1)
    report["machine"] = machine_info()
    emit(report, args.out)


if __name__ == "__main__":
    main()
