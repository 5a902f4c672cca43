"""`slotlab demo`: the CPU presets trained, evaluated and reported on the built-in scenes."""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

from slotlab.cli.common import command
from slotlab.config import int_option
from slotlab.io.results import results_json
from slotlab.train.demo_methods import DEMO_METHODS, SEGMENTER_MINUTES, WIDTH, methods_help


def add_command(sub) -> None:
    p = command(
        sub, "demo", "train the CPU presets on built-in scenes, evaluate, write metrics/pictures/report",
        textwrap.fill(
            "Generate built-in scenes, train each method's CPU preset, evaluate it on the scenes val split "
            "(protocol 'native') next to the K-equal-blocks baseline, and write DIR/metrics.json, DIR/overlays.png "
            "and DIR/report.html. Runs in minutes on a 2-core CPU. The presets' encoders are label-free "
            "(DINOSAUR's and spot-mlp's: a small network shipped with slotlab, trained on scenes images without "
            "labels, with colour and position; GLASS's and spot's: colour features of the pixels; SLATE and "
            "SlotDiffusion train a CNN guided by a VQ-VAE trained on the scenes); the -segmenter methods add the "
            "class probabilities of a segmenter trained first on the scenes' class maps, and their rows say so.",
            WIDTH, break_on_hyphens=False),
        _demo_arguments, _run_demo,
    )
    p.epilog, p.formatter_class = methods_help(), argparse.RawDescriptionHelpFormatter  # keep the table's lines


def _demo_arguments(p) -> None:
    p.add_argument("--out", default="slotlab-demo", help="output directory (default: %(default)s)")
    p.add_argument("--steps", type=int_option(low=1), default=None, help="training steps per method (and for the segmenter, if one is trained), spread over its stages in the "
                   "preset's proportions (default: each preset's own)")
    p.add_argument("--seed", type=int_option(low=0), default=0, help="seed for data, initialisation and training order (default: %(default)s)")
    p.add_argument("--tasks", default="all", metavar="LIST",
                   help="downstream tasks beside the segmentation metrics, comma-separated: 'probe' (linear probes "
                   "of object class and centre on frozen slots), 'generation' (GLASS reconstructions, the removal test and "
                   "pictures of a removal and an addition), 'all' or 'none' (default: %(default)s)")
    p.add_argument("--methods", default=None, metavar="LIST",
                   help=f"methods to train, comma-separated: any of those listed below with the time each takes "
                   f"(default: {','.join(m.name for m in DEMO_METHODS)})")
    p.add_argument("--preset", action="append", default=[], metavar="NAME=PRESET",
                   help="train demo method NAME (one of --methods) with another preset of the same method, e.g. "
                   "glass=glass-tiny-compose (a longer GLASS run whose decoder reads the slot masks: the removal test "
                   "then sees objects removed; about 20 minutes on 2 cores) or glass=glass-tiny-long (phase 1 at 2,200 steps "
                   "instead of 400: GLASS then leads DINOSAUR by about +0.12 mIoU_i on scenes test instead of +0.06; "
                   "about 30 minutes on 2 cores); repeatable (default: dinosaur-tiny and glass-tiny)")
    p.add_argument("--segmenter", type=Path, default=None, metavar="DIR",
                   help="a trained segmenter checkpoint for the -segmenter methods to read (e.g. an earlier demo's "
                   "DIR/runs/segmenter/model, or slotlab train --preset segmenter-scenes-tiny) instead of training one "
                   f"first, which takes about {SEGMENTER_MINUTES:g} minutes (default: train it when one of them runs)")
    p.add_argument("--jobs", type=int_option(low=1), default=None,
                   help="methods trained at once in worker processes, each with --threads divided among them "
                   "(default: one per method, at most one per CPU core; 1 = one after the other in this process)")


def _run_demo(args) -> int:
    from slotlab.train.demo import parse_tasks, run_demo
    from slotlab.train.demo_methods import select_methods, with_presets

    names = None if args.methods is None else [n.strip() for n in args.methods.split(",") if n.strip()]
    methods = with_presets(select_methods(names), args.preset)
    metrics = run_demo(Path(args.out), steps=args.steps, seed=args.seed, methods=methods, tasks=parse_tasks(args.tasks),
                       jobs=args.jobs, segmenter=args.segmenter)
    print(results_json(metrics))
    print(f"wrote {Path(args.out) / 'metrics.json'}, overlays.png and report.html")
    return 0
