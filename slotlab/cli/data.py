"""`slotlab data inspect`: check a dataset before training."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from slotlab.cli.common import command
from slotlab.config import int_option
from slotlab.data.imageio import DatasetError
from slotlab.data.inspect import format_summary, summarise
from slotlab.data.registry import build_dataset, describe_datasets
from slotlab.io.files import output_dir


def add_command(sub) -> None:
    p = sub.add_parser("data", help="dataset tools", description="Dataset tools.")
    data_sub = p.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")
    command(data_sub, "inspect", "print counts, classes and bad files of a dataset and write a few overlays",
             "Check a dataset before training: counts, class histogram, objects per image, image sizes, bad files, "
             "and overlay PNGs.", add_arguments, run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = "Summarise a dataset, list its bad files and write overlay PNGs."
    parser.epilog = "dataset specs:\n" + describe_datasets()
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("spec", help="dataset spec, e.g. coco:/data/coco?split=val2017 (see below)")
    parser.add_argument("--out", type=Path, default=None, help="directory for overlay PNGs and summary.json")
    parser.add_argument("--num", type=int_option(low=0), default=4, help="number of overlay PNGs to write (default 4)")
    parser.add_argument("--max-samples", type=int_option(low=1), default=None, help="scan only the first N samples")
    parser.add_argument("--strict", action="store_true", help="stop at the first bad file instead of listing it")


def run(args: argparse.Namespace) -> int:
    if args.out is not None:
        output_dir(args.out)
    try:
        dataset = build_dataset(args.spec, strict=args.strict)
        summary, overlays = summarise(dataset, args.max_samples, args.num if args.out else 0, args.strict)
    except DatasetError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(format_summary(summary))
    if args.out is not None:
        for k, image in enumerate(overlays):
            image.save(args.out / f"overlay_{k:03d}.png")
        (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
        print(f"wrote {len(overlays)} overlays and summary.json to {args.out}")
    return 0
