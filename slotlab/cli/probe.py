"""`slotlab probe`: linear probes on frozen slots (GLASS Table 8)."""

from __future__ import annotations

import argparse
import sys

from slotlab.cli.common import add_checkpoint_arguments, command, load_model_from_args
from slotlab.config import float_option, int_option
from slotlab.io.results import results_json, write_results
from slotlab.metrics.probe import DEFAULT_VAL_FRACTION, PAPER_PATIENCE, run_probes
from slotlab.metrics.slot_pairs import MATCH_TARGETS


def add_command(sub) -> None:
    command(sub, "probe", "linear probes on frozen slots: object class and box centre (GLASS Table 8)",
             "Match a trained model's slots to ground-truth objects by mask IoU and fit linear probes for the object "
             "class (top-1 accuracy) and the box centre (MSE), AdamW 3e-4 with early stopping. The same probes on the "
             "encoder features under each object's true mask (object_features_*) and over its whole image "
             "(image_features_*) tell whether the encoder carries the property and whether the slots beat an image "
             "summary.",
             add_arguments, run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_checkpoint_arguments(parser)
    parser.add_argument("--train", required=True, metavar="DATASET_SPEC", help="dataset the probes are trained on")
    parser.add_argument("--test", required=True, metavar="DATASET_SPEC", help="dataset the probes are scored on")
    parser.add_argument("--out", default=None, metavar="FILE", help="write the results as JSON to FILE")
    parser.add_argument("--batch-size", type=int_option(low=1), default=8, help="images per decomposition batch")
    parser.add_argument("--match-on", choices=MATCH_TARGETS, default="instance",
                        help="match slots to instance masks, or to semantic classes (VOC, which lacks instances)")
    parser.add_argument("--max-epochs", type=int_option(low=1), default=100, help="probe epochs at most (paper: 50 VOC, 10 COCO)")
    parser.add_argument("--patience", type=int_option(low=1), default=PAPER_PATIENCE, help="early-stopping patience in epochs")
    parser.add_argument("--val-fraction", type=float_option(low=0, high=1, low_open=True, high_open=True), default=DEFAULT_VAL_FRACTION,
                        help="share of the training pairs held out for early stopping")
    parser.add_argument("--seed", type=int_option(low=0), default=0, help="seed of the split and the probes")
    parser.add_argument("--device", default="cpu", help="device the model runs on")


def run(args: argparse.Namespace) -> int:
    from slotlab.data.registry import build_dataset
    from slotlab.io.files import output_file

    out = output_file(args.out) if args.out is not None else None  # checked before the probes train
    model = load_model_from_args(args, map_location=args.device)
    results = run_probes(
        model, build_dataset(args.train), build_dataset(args.test), batch_size=args.batch_size,
        match_on=args.match_on, val_fraction=args.val_fraction, seed=args.seed,
        max_epochs=args.max_epochs, patience=args.patience,
    )
    print(results_json(results), file=sys.stdout)
    if out is not None:
        write_results(out, results)
    return 0
