"""The `slotlab` command."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from slotlab.config import int_option
from slotlab.io.checkpoints import add_checkpoint_arguments, load_model_from_args
from slotlab.io.files import output_file
from slotlab.io.hub import downloads_allowed
from slotlab.io.results import results_json, write_results


def _add_demo(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="train the CPU presets on built-in scenes, evaluate, write metrics/pictures/report",
        description="Train the segmenter the presets' encoder reads, generate built-in scenes, train each "
        "method's CPU preset, evaluate it on the scenes val split (protocol 'native') next to the "
        "K-equal-blocks baseline, and write DIR/metrics.json, DIR/overlays.png and DIR/report.html. Runs in "
        "minutes on a 2-core CPU.",
    )
    p.add_argument("--out", default="slotlab-demo", help="output directory (default: %(default)s)")
    p.add_argument("--steps", type=int_option(low=1), default=None, help="training steps per method (and for the segmenter), spread over its stages in the "
                   "preset's proportions (default: each preset's own)")
    p.add_argument("--seed", type=int_option(low=0), default=0, help="seed for data, initialisation and training order (default: %(default)s)")
    p.add_argument("--tasks", default="all", metavar="LIST",
                   help="downstream tasks beside the segmentation metrics, comma-separated: 'probe' (linear probes "
                   "of object class and centre on frozen slots), 'generation' (GLASS reconstructions, the removal test and "
                   "pictures of a removal and an addition), 'all' or 'none' (default: %(default)s)")
    p.add_argument("--methods", default=None, metavar="LIST",
                   help="methods to train, comma-separated: dinosaur (dinosaur-tiny), glass (glass-tiny, on data its "
                   "engine generates first), spot (spot-tiny, SPOT's first stage; its time on 2 cores is not measured "
                   "yet) (default: dinosaur,glass)")
    p.add_argument("--preset", action="append", default=[], metavar="NAME=PRESET",
                   help="train demo method NAME ('dinosaur' or 'glass') with another preset of the same method, e.g. "
                   "glass=glass-tiny-compose (a longer GLASS run whose decoder reads the slot masks: the removal test "
                   "then sees objects removed; about 20 minutes on 2 cores); repeatable (default: dinosaur-tiny and glass-tiny)")
    p.add_argument("--segmenter", type=Path, default=None, metavar="DIR",
                   help="a trained segmenter checkpoint for the presets' encoders to read (e.g. an earlier demo's "
                   "DIR/runs/segmenter/model, or slotlab train --preset segmenter-scenes-tiny) instead of training one "
                   "first, which takes about 2.5 minutes (default: train it)")
    p.add_argument("--jobs", type=int_option(low=1), default=None,
                   help="methods trained at once in worker processes, each with --threads divided among them "
                   "(default: one per method, at most one per CPU core; 1 = one after the other in this process)")
    p.set_defaults(func=_run_demo)


def _demo_tasks(text: str) -> tuple[str, ...]:
    from slotlab.train.demo import DEMO_TASKS, check_tasks

    names = {"all": DEMO_TASKS, "none": ()}.get(text)
    return check_tasks(names if names is not None else tuple(t.strip() for t in text.split(",") if t.strip()))


def _run_demo(args) -> int:
    from slotlab.train.demo import run_demo, select_methods, with_presets

    names = None if args.methods is None else [n.strip() for n in args.methods.split(",") if n.strip()]
    methods = with_presets(select_methods(names), args.preset)
    metrics = run_demo(Path(args.out), steps=args.steps, seed=args.seed, methods=methods, tasks=_demo_tasks(args.tasks),
                       jobs=args.jobs, segmenter=args.segmenter)
    print(results_json(metrics))
    print(f"wrote {Path(args.out) / 'metrics.json'}, overlays.png and report.html")
    return 0


def _add_train(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train a method from a preset",
        description="Train a method from a preset (slotlab presets lists them) into --out: checkpoints/, "
        "metrics.jsonl, config.yaml and, at the end, model/ (load with ObjectCentricModel.from_pretrained). "
        "Multi-GPU / multi-node: start the same command with `accelerate launch` or `torchrun`.",
    )
    p.add_argument("--preset", required=True, help="preset name or path to a YAML file")
    p.add_argument("--out", default=None, help="run directory (default: runs/PRESET)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set stages.0.steps=100 or --set model.slot_attention.num_slots=5 "
                   "(repeatable; values are parsed as YAML)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--no-eval", action="store_true", help="skip the evaluation on data.val after training")
    p.set_defaults(func=_run_train)


def _run_train(args) -> int:
    from slotlab.config import load_preset
    from slotlab.train.config import build_train_config
    from slotlab.train.trainer import train

    config = build_train_config(load_preset(args.preset), args.overrides)
    out = Path(args.out or Path("runs") / Path(args.preset).stem)
    result = train(config, out, resume=args.resume)
    resumed = f" (resumed at step {result.start_step} of {result.steps})" if result.start_step else ""
    print(f"trained {result.steps_trained} steps{resumed} in {result.train_seconds:.1f} s ({result.steps_per_second:.2f} steps/s, "
          f"{result.precision}); model in {result.model_dir}")
    if not args.no_eval and result.model.slot_model:
        from slotlab.methods import ObjectCentricModel

        saved = ObjectCentricModel.from_pretrained(result.model_dir)  # evaluates what was saved
        _evaluate_and_write(saved, config.data.val, config.eval_protocol, out / "eval.json")
    return 0


def _add_eval(sub) -> None:
    p = sub.add_parser(
        "eval",
        help="evaluate a trained model's masks under a metric protocol",
        description="Load a model directory (save_pretrained / a run's model/ or checkpoints/step-N) and "
        "report mBO, mIoU and FG-ARI on a dataset under a named protocol.",
    )
    add_checkpoint_arguments(p)
    p.add_argument("--data", default=None, help="dataset spec (default: the val set of the run that wrote the checkpoint, "
                   "else the built-in scenes val split)")
    p.add_argument("--protocol", default=None, help="metric protocol: native, spot, spot-voc, glass, glass-authors, msf (default: the "
                   "eval_protocol of the run that wrote the checkpoint, else native)")
    p.add_argument("--batch-size", type=int_option(low=1), default=32, help="images per forward pass (default: %(default)s)")
    p.add_argument("--out", default=None, help="also write the metrics as JSON to this file")
    p.set_defaults(func=_run_eval)


def _run_eval(args) -> int:
    run = _run_config(Path(args.checkpoint))
    data = args.data or run.get("data", {}).get("val") or "scenes?split=val&size=256"
    protocol = args.protocol or run.get("eval_protocol") or "native"
    out = output_file(args.out) if args.out else None  # checked before the evaluation, not after
    model = load_model_from_args(args)
    _evaluate_and_write(model, data, protocol, out, args.batch_size)
    return 0


def _run_config(checkpoint: Path) -> dict:
    """The config.yaml of the run a checkpoint belongs to (run/model or run/checkpoints/step-N)."""
    import yaml

    for run in (checkpoint.parent, checkpoint.parent.parent):
        config = run / "config.yaml"
        if config.is_file():
            return yaml.safe_load(config.read_text()) or {}
    return {}


def _evaluate_and_write(model, data: str, protocol: str, out: Path | None, batch_size: int = 32) -> dict:
    from slotlab.data.registry import build_dataset
    from slotlab.train.evaluate import evaluate_model

    metrics = evaluate_model(model, build_dataset(data), protocol=protocol, batch_size=batch_size)
    print(f"protocol: {protocol}  data: {data}")
    print(results_json(metrics))
    if out is not None:
        write_results(out, metrics)
    return metrics


def _add_report(sub) -> None:
    p = sub.add_parser(
        "report",
        help="write report.html for training runs or demo outputs: metrics, curves, overlays",
        description="Write one HTML page for the given directories (slotlab train --out runs, slotlab demo --out "
        "outputs, or a mix): a compact table of mBO_i, mIoU_i, FG-ARI, supervision, train time and steps, then per "
        "run every other number, its training-loss curves per term and its overlay pictures. A run still training "
        "or stopped, without logs or without eval.json is reported with what it lacks.",
    )
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR", help="run or demo directories")
    p.add_argument("--out", type=Path, default=None,
                   help="the HTML file to write (default: RUN_DIR/report.html for one directory; required for several)")
    p.set_defaults(func=_run_report)


def _run_report(args) -> int:
    from slotlab.viz.run_report import write_runs_report

    print(f"wrote {write_runs_report(args.runs, args.out)}")
    return 0


def _add_presets(sub) -> None:
    p = sub.add_parser("presets", help="list the training presets", description="List the training presets shipped with slotlab.")
    p.set_defaults(func=_run_presets)


def _run_presets(args) -> int:
    from slotlab.config import list_presets

    print("\n".join(list_presets()))
    return 0


def _command(sub, name: str, help: str, description: str, add_arguments, run):
    """A subcommand whose options and action live in the module that does the work."""
    p = sub.add_parser(name, help=help, description=description)
    add_arguments(p)
    p.set_defaults(func=run)
    return p


def _add_generate(sub) -> None:
    from slotlab.datagen import generate_cli

    _command(sub, "generate", "generate GLASS training data: images + pseudo semantic masks",
             "The GLASS data engine: prompts -> generator (Stable Diffusion from a local directory, or the CPU "
             "scenes backend) -> images and pseudo semantic masks read off attention, written as resumable shards.",
             generate_cli.add_arguments, generate_cli.run)


def _add_data(sub) -> None:
    from slotlab.data import inspect as data_inspect

    p = sub.add_parser("data", help="dataset tools", description="Dataset tools.")
    data_sub = p.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")
    _command(data_sub, "inspect", "print counts, classes and bad files of a dataset and write a few overlays",
             "Check a dataset before training: counts, class histogram, objects per image, image sizes, bad files, "
             "and overlay PNGs.", data_inspect.add_arguments, data_inspect.run)


def _add_probe(sub) -> None:
    from slotlab.metrics import probe

    _command(sub, "probe", "linear probes on frozen slots: object class and box centre (GLASS Table 8)",
             "Match a trained model's slots to ground-truth objects by mask IoU and fit linear probes for the object "
             "class (top-1 accuracy) and the box centre (MSE), AdamW 3e-4 with early stopping. The same probes on the "
             "encoder features under each object's true mask (object_features_*) and over its whole image "
             "(image_features_*) tell whether the encoder carries the property and whether the slots beat an image "
             "summary.",
             probe.add_arguments, probe.run)


def _add_reconstruct(sub) -> None:
    from slotlab.train import compose

    _command(sub, "reconstruct", "sample images back from their GLASS slots",
             "Decompose each image into slots and sample it back with the GLASS diffusion decoder (DPM-Solver++); "
             "writes original | reconstruction PNGs. With --data, reconstructs a dataset split and scores it as GLASS "
             "Table 7 does (PSNR, SSIM, and LPIPS / FID from local weight files).",
             lambda p: compose.add_arguments(p, compose=False), compose.run_reconstruct)


def _add_compose(sub) -> None:
    from slotlab.train import compose

    _command(sub, "compose", "edit a scene by removing, adding or swapping GLASS slots",
             "Remove slots of --image, add slots of --with, or swap slots between them, then sample the edited "
             "scene; writes original (edited slot outlined) | reconstruction | edit.",
             lambda p: compose.add_arguments(p, compose=True), compose.run_compose)


def _add_import(sub) -> None:
    from slotlab.io.importers import glass_checkpoint, spot_checkpoint

    p = sub.add_parser("import", help="turn the authors' checkpoints into slotlab model directories",
                       description="Read an authors' checkpoint (tensors only, never code) and write a slotlab model "
                       "directory that eval, decompose and from_pretrained use; prints the mapped, unused and missing keys.")
    import_sub = p.add_subparsers(dest="import_command", required=True, metavar="METHOD")
    _command(import_sub, "spot", "the authors' SPOT checkpoint.pt.tar (gkakogeorgiou/spot)",
             "The authors' SPOT checkpoint (stage 1 or 2, transformer or MLP decoder, also the old tf_dec. prefix) "
             "with its DINO ViT mapped onto the transformers ViTModel.",
             spot_checkpoint.add_arguments, spot_checkpoint.run)
    _command(import_sub, "glass", "the authors' GLASS release (visinf/glass): multiheadstevesa/ + unet2dconditionmodel/",
             "Their slot attention and UNet, with VAE, scheduler and empty-prompt embedding from a local SD 2.1 "
             "directory and DINOv2 from a local directory; no MLP decoder (the release has none).",
             glass_checkpoint.add_arguments, glass_checkpoint.run)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="slotlab",
        description="Object-centric learning with slots: GLASS and DINOSAUR on shared parts, with the metric protocols of GLASS, SPOT and MSF.",
    )
    parser.add_argument("--threads", type=int_option(low=1), default=None,
                        help="torch intra-op CPU threads (default: torch's own; `demo` uses 1 per worker process, which is fastest for "
                        "the small CPU presets and keeps several processes from oversubscribing the cores)")
    parser.add_argument("--allow-download", action="store_true",
                        help="fetch pretrained parts named by a hub id (e.g. encoder.path=facebook/dinov2-base) into the "
                        "Hugging Face cache when they are not there yet; without it only the cache and local directories "
                        "are read (the same as allow_download: true in a training config)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_demo, _add_train, _add_eval, _add_report, _add_generate, _add_data, _add_probe, _add_reconstruct,
                _add_compose, _add_import, _add_presets):
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
