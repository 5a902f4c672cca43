"""`slotlab generate`: make a GLASS training set (images + pseudo semantic masks).

    slotlab generate --preset scenes-tiny --out gen/scenes
    slotlab generate --preset coco --out gen/coco --weights SD_DIR --captioner-weights BLIP2_DIR \
        --source "coco:data/coco?split=train2017"
    torchrun --nproc_per_node 4 -m slotlab.cli.generate --preset coco ...   (one process per GPU;
        under torchrun write --set num=N, since torchrun reads --num as its own --numa-binding)

Presets are slotlab/presets/generate-NAME.yaml (NAME: coco, voc, scenes-tiny) or a path
to a YAML file. Kill a run at any time and continue it with the same command plus --resume.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

from slotlab.cli.common import command
from slotlab.config import GENERATE_PREFIX as PRESET_PREFIX
from slotlab.config import PRESET_DIR, apply_overrides, from_dict, int_option, load_preset
from slotlab.datagen.config import PROMPT_SOURCES, GenerateConfig
from slotlab.datagen.pseudo_masks import THRESHOLD_PRESETS
from slotlab.datagen.run import run_generation


def generate_presets() -> list[str]:
    """Names of the shipped generation presets (without the file prefix)."""
    return sorted(p.stem[len(PRESET_PREFIX) :] for p in PRESET_DIR.glob(f"{PRESET_PREFIX}*.yaml"))


def add_command(sub) -> None:
    command(sub, "generate", "generate GLASS training data: images + pseudo semantic masks",
             "The GLASS data engine: prompts -> generator (Stable Diffusion from a local directory, or the CPU "
             "scenes backend) -> images and pseudo semantic masks read off attention, written as resumable shards.",
             add_arguments, run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", required=True, help=f"generation preset ({', '.join(generate_presets())}) or a YAML path")
    parser.add_argument("--out", required=True, help="output directory (must be new or empty unless --resume)")
    parser.add_argument("--source", default=None, metavar="DATASET_SPEC",
                        help="source dataset of the prompts, e.g. 'coco:data/coco?split=train2017' (default: the preset's)")
    parser.add_argument("--num", type=int_option(low=1), default=None, help="number of samples (default: the preset's)")
    parser.add_argument("--seed", type=int_option(low=0), default=None, help="run seed; sample i uses a seed derived from it and i")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run in --out with the same settings")
    parser.add_argument("--weights", default=None, metavar="DIR", help="local Stable Diffusion directory (sd backend)")
    parser.add_argument("--captioner-weights", default=None, metavar="DIR", help="local BLIP-2 directory (prompts blip2)")
    parser.add_argument("--prompts", choices=PROMPT_SOURCES, default=None,
                        help="prompt source: BLIP-2 captions, ground-truth labels, dataset captions or the Table 13 template")
    parser.add_argument("--thresholds", choices=sorted(THRESHOLD_PRESETS), default=None,
                        help="pseudo-mask range thresholds: paper (0.4/0.6) or reference-code (0.5/0.6)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override any preset value, e.g. --set sd.num_inference_steps=50 (repeatable)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def preset_data(name: str) -> dict:
    """The YAML of generation preset ``name`` ("coco" -> generate-coco.yaml) or of a file path."""
    if Path(name).suffix in (".yaml", ".yml") or name.startswith(PRESET_PREFIX):
        return load_preset(name)
    return load_preset(PRESET_PREFIX + name)


def build_config(args: argparse.Namespace) -> GenerateConfig:
    """Preset + command-line options -> a validated GenerateConfig."""
    data = preset_data(args.preset)
    overrides = list(args.overrides)
    named = {
        "prompts.dataset": args.source, "num": args.num, "seed": args.seed, "sd.weights": args.weights,
        "prompts.captioner_weights": args.captioner_weights, "prompts.source": args.prompts,
    }  # fmt: skip
    overrides = [f"{key}={value}" for key, value in named.items() if value is not None] + overrides
    if args.thresholds is not None:
        backend = apply_overrides(copy.deepcopy(data), list(args.overrides)).get("backend", GenerateConfig.backend)
        if backend != "sd":
            raise ValueError(f"--thresholds sets the range thresholds of the sd backend's pseudo masks; preset "
                             f"{args.preset!r} uses the {backend!r} backend, whose masks are not thresholded: drop --thresholds")
        low, high = THRESHOLD_PRESETS[args.thresholds]
        overrides = [f"sd.pseudo_masks.threshold_low={low}", f"sd.pseudo_masks.threshold_high={high}"] + overrides
    return from_dict(GenerateConfig, apply_overrides(data, overrides), where=f"preset {args.preset}")


def run(args: argparse.Namespace) -> int:
    config = build_config(args)
    summary = run_generation(config, Path(args.out), resume=args.resume, progress=not args.no_progress)
    if summary is not None:
        print(
            f"{summary['samples']} of {summary['num']} samples in {args.out}: mean class coverage "
            f"{summary['mean_class_coverage']:.3f}, mean uncertain fraction {summary['mean_ignore_fraction']:.3f}"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``python -m slotlab.cli.generate`` (and torchrun)."""
    parser = argparse.ArgumentParser(prog="slotlab generate", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"slotlab generate: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
