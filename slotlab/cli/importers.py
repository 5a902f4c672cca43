"""`slotlab import`: the authors' checkpoints turned into slotlab model directories."""

from __future__ import annotations

import argparse
from pathlib import Path

from slotlab.cli.common import command
from slotlab.config import ConfigError, int_option
from slotlab.io.importers.glass_checkpoint import SLOT_ATTENTION_DIR, UNET_DIR, import_glass
from slotlab.io.importers.spot_checkpoint import AUTHORS_DEFAULTS, import_spot, read_checkpoint


def add_command(sub) -> None:
    p = sub.add_parser("import", help="turn the authors' checkpoints into slotlab model directories",
                       description="Read an authors' checkpoint (tensors only, never code) and write a slotlab model "
                       "directory that eval, decompose and from_pretrained use; prints the mapped, unused and missing keys.")
    import_sub = p.add_subparsers(dest="import_command", required=True, metavar="METHOD")
    command(import_sub, "glass", "the authors' GLASS release (visinf/glass): multiheadstevesa/ + unet2dconditionmodel/",
            "Their slot attention and UNet, with VAE, scheduler and empty-prompt embedding from a local SD 2.1 "
            "directory and DINOv2 from a local directory; no MLP decoder (the release has none).",
            add_glass_arguments, run_glass)
    command(import_sub, "spot", "the authors' SPOT checkpoint.pt.tar (gkakogeorgiou/spot)",
             "The authors' SPOT checkpoint (stage 1 or 2, transformer or MLP decoder, also the old tf_dec. prefix) "
             "with its DINO ViT mapped onto the transformers ViTModel.",
             add_spot_arguments, run_spot)


def add_spot_arguments(p) -> None:
    p.add_argument("path", help="the authors' checkpoint.pt.tar (stage 1 or 2, transformer or MLP decoder)")
    p.add_argument("--out", required=True, help="slotlab model directory to write (config.json + model.safetensors)")
    p.add_argument("--num-slots", type=int_option(low=1), default=None,
                   help="slots of a stage-1 (shared-Gaussian) model, which its weights do not store (paper: COCO 7, "
                   "VOC 6, MOVi-C 11, MOVi-E 24)")
    p.add_argument("--iters", type=int_option(low=1), default=AUTHORS_DEFAULTS["num_iterations"], help="slot-attention iterations (default: %(default)s)")
    p.add_argument("--decoder-heads", type=int_option(low=1), default=AUTHORS_DEFAULTS["num_heads"], help="decoder heads (default: %(default)s)")
    p.add_argument("--slot-heads", type=int_option(low=1), default=AUTHORS_DEFAULTS["sa_heads"], help="slot-attention heads (default: %(default)s)")
    p.add_argument("--vit-heads", type=int_option(low=1), default=None, help="ViT heads (default: width / 64, 12 for ViT-B)")
    p.add_argument("--image-size", type=int_option(low=1), default=AUTHORS_DEFAULTS["image_size"], help="encoder input size (default: %(default)s)")


def run_spot(args) -> int:
    flags = {"num_iterations": args.iters, "num_heads": args.decoder_heads, "sa_heads": args.slot_heads,
             "vit_heads": args.vit_heads, "image_size": args.image_size}
    if args.num_slots is not None:
        flags["num_slots"] = args.num_slots
    result = import_spot(read_checkpoint(args.path), flags)
    report = result.report
    if report.missing:
        raise ConfigError(f"{args.path}: slotlab's SPOT needs weights the checkpoint lacks: {', '.join(report.missing)}")
    result.model.save_pretrained(args.out)
    print(f"SPOT stage {result.stage} checkpoint {args.path}")
    print(report.summary())
    print(f"wrote {args.out} (ObjectCentricModel.from_pretrained, slotlab eval --checkpoint {args.out} --protocol spot)")
    return 0


def add_glass_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("release", metavar="DIR", help=f"the authors' release: {SLOT_ATTENTION_DIR}/ and {UNET_DIR}/")
    parser.add_argument("--out", required=True, help="slotlab model directory to write")
    parser.add_argument("--encoder", required=True, metavar="DIR", help="local DINOv2 ViT-B/14 directory (transformers)")
    parser.add_argument("--sd", required=True, metavar="DIR",
                        help="local Stable Diffusion 2.1 directory (vae/, scheduler/, text_encoder/, tokenizer/)")
    parser.add_argument("--image-size", type=int_option(low=1), default=448, help="encoder input size (GLASS: 448)")
    parser.add_argument("--resolution", type=int_option(low=1), default=256, help="diffusion decoder resolution (GLASS: 256)")
    parser.add_argument("--position-grid", choices=("centres", "corners"), default="centres",
                        help="keep their cell-centre position grid (default) or convert the projection exactly to "
                        "slotlab's end-point grid")


def run_glass(args: argparse.Namespace) -> int:
    model, report = import_glass(
        Path(args.release), Path(args.encoder), Path(args.sd), args.image_size, args.resolution, args.position_grid
    )
    model.save_pretrained(Path(args.out))
    print(report.summary())
    print(f"wrote {args.out} (no MLP decoder: the release has none; eval, decompose, reconstruct and compose use it)")
    return 0
