"""What several commands share: the options of a command that loads a trained model, and
how a command's options and action are registered."""

from __future__ import annotations

import argparse

DEFAULT_HELP = "model directory written by save_pretrained (a run's model/ or checkpoints/step-N)"


def add_checkpoint_arguments(parser: argparse.ArgumentParser, help: str = DEFAULT_HELP) -> None:
    """--checkpoint DIR and --set KEY=VALUE (overrides of the stored model config)."""
    parser.add_argument("--checkpoint", required=True, metavar="DIR", help=help)
    parser.add_argument(
        "--set", dest="checkpoint_overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a value of the checkpoint's model config before loading (repeatable; YAML values), "
        "e.g. slot_attention.iters=5, or encoder.path=DIR for a checkpoint written before checkpoints "
        "stored their parts' architectures, whose encoder weights now live in DIR",
    )


def load_model_from_args(args: argparse.Namespace, map_location: str = "cpu"):
    """The model named by the arguments of :func:`add_checkpoint_arguments`."""
    from slotlab.methods import Method

    return Method.from_pretrained(args.checkpoint, map_location, args.checkpoint_overrides)


def command(sub, name: str, help: str, description: str, add_arguments, run):
    """A subcommand whose options (``add_arguments(parser)``, or None) and action live in the
    module that does the work."""
    p = sub.add_parser(name, help=help, description=description)
    if add_arguments is not None:
        add_arguments(p)
    p.set_defaults(func=run)
    return p
