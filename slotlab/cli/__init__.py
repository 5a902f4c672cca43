"""The `slotlab` command: one module per command family, and all argument parsing of slotlab.

Each module registers its subcommands (options and action); heavy imports happen inside the
actions, so `slotlab --help` stays fast.
"""

from __future__ import annotations

import argparse
import sys

from slotlab.cli import compose, data, demo, generate, importers, probe, train
from slotlab.config import int_option
from slotlab.io.hub import downloads_allowed


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="slotlab",
        description="Object-centric learning with slots: GLASS, DINOSAUR, SPOT, and MSF with SLATE and SlotDiffusion, on shared parts, with the metric protocols of GLASS, SPOT and MSF.",
    )
    parser.add_argument("--threads", type=int_option(low=1), default=None,
                        help="torch intra-op CPU threads (default: torch's own; `demo` uses 1 per worker process, which is fastest for "
                        "the small CPU presets and keeps several processes from oversubscribing the cores)")
    parser.add_argument("--allow-download", action="store_true",
                        help="fetch pretrained parts named by a hub id (e.g. encoder.path=facebook/dinov2-base) into the "
                        "Hugging Face cache when they are not there yet; without it only the cache and local directories "
                        "are read (the same as allow_download: true in a training config)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (demo.add_command, train.add_train, train.add_eval, train.add_report, generate.add_command,
                data.add_command, probe.add_command, compose.add_reconstruct, compose.add_compose, importers.add_command,
                train.add_presets):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # a wrong option exits here (code 2), before the heavy imports below
    from slotlab.config import ConfigError
    from slotlab.data.imageio import BadSampleError
    from slotlab.train.trainer import NonFiniteLossError

    threads = args.threads if args.threads is not None else (1 if args.command == "demo" else None)
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    try:
        with downloads_allowed(args.allow_download):
            return args.func(args)
    except (ConfigError, BadSampleError, FileNotFoundError, ValueError, NonFiniteLossError) as err:
        print(f"slotlab {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except OSError as err:  # the file system refused (a full disk, permissions...): say so, not where in slotlab
        print(f"slotlab {args.command}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

