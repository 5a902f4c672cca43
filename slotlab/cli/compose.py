"""`slotlab reconstruct` and `slotlab compose`: sample images back from their GLASS slots, or
edit the slot set first (remove, add, swap) and sample the edited scene.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from slotlab.cli.common import add_checkpoint_arguments, command, load_model_from_args
from slotlab.config import float_option, int_option
from slotlab.data.imageio import read_image
from slotlab.io.files import output_dir
from slotlab.io.layout import EXAMPLES_FILE, METRICS_FILE
from slotlab.io.results import results_json, write_results
from slotlab.methods.base import ObjectCentricModel
from slotlab.methods.slot_edits import (
    REMOVE_MODES,
    SamplingOptions,
    check_indices,
    decoder_tokens,
    edit_slots,
    generate,
    slot_for_class,
    slot_listing,
)
from slotlab.metrics.generation import GLASS_FID_IMAGES
from slotlab.ops.matching import slot_for_region
from slotlab.train.reconstruction import reconstruct_split
from slotlab.viz.overlays import save_image, side_by_side


def add_reconstruct(sub) -> None:
    command(sub, "reconstruct", "sample images back from their GLASS slots",
             "Decompose each image into slots and sample it back with the GLASS diffusion decoder (DPM-Solver++); "
             "writes original | reconstruction PNGs. With --data, reconstructs a dataset split and scores it as GLASS "
             "Table 7 does (PSNR, SSIM, and LPIPS / FID from local weight files).",
             lambda p: add_arguments(p, compose=False), run_reconstruct)


def add_compose(sub) -> None:
    command(sub, "compose", "edit a scene by removing, adding or swapping GLASS slots",
             "Remove slots of --image, add slots of --with, or swap slots between them, then sample the edited "
             "scene; writes original (edited slot outlined) | reconstruction | edit.",
             lambda p: add_arguments(p, compose=True), run_compose)


def _read_class_map(path: str, size: tuple[int, int]) -> Tensor:
    from slotlab.data.imageio import read_label_map

    return torch.from_numpy(read_label_map(path, size=tuple(size)))


def _load(model: ObjectCentricModel, path: str, seed: int) -> tuple[Tensor, Tensor, Tensor]:
    """Image, decoder tokens (:func:`decoder_tokens`) and masks; seeded, so slot indices printed
    by --list name the same slots in the next call with the same --seed."""
    image = read_image(path)
    result = model.decompose(image.unsqueeze(0), seed=seed)
    return image, decoder_tokens(model, result)[0], result.masks[0]


def ask_slots(answer: str, num_slots: int) -> list[int]:
    """Slot indices typed at the --interactive prompt, checked against the ``num_slots`` listed."""
    try:
        indices = [int(word) for word in answer.replace(",", " ").split()]
    except ValueError:
        raise ValueError(f"--interactive: {answer!r} is not a list of slot indices (e.g. '2 5')") from None
    check_indices(indices, num_slots, source="--interactive: slot")
    return indices


def add_arguments(parser: argparse.ArgumentParser, compose: bool) -> None:
    add_checkpoint_arguments(parser, help="a GLASS model directory (save_pretrained / run/model)")
    parser.add_argument("--out", required=True, help="output directory for the PNGs")
    parser.add_argument("--steps", type=int_option(low=1), default=50, help="sampler steps (default: %(default)s)")
    parser.add_argument("--guidance", type=float_option(low=0), default=1.0, help="classifier-free guidance scale (default: %(default)s)")
    parser.add_argument("--seed", type=int_option(low=0), default=0, help="seed of the slot initialisation and of the sampler; keep it between --list and an edit so slot indices match (default: %(default)s)")
    if not compose:
        source = parser.add_mutually_exclusive_group(required=True)
        source.add_argument("--images", nargs="+", help="image files to reconstruct")
        source.add_argument("--data", metavar="SPEC",
                            help="dataset spec (e.g. 'coco:/data/coco?split=val2017&resize=256&crop=256'): reconstruct "
                            "its first --num-images images and write the GLASS Table 7 metrics to OUT/metrics.json")
        parser.add_argument("--num-images", type=int_option(low=1), default=GLASS_FID_IMAGES,
                            help="--data: images reconstructed and scored; FID uses them all (default: %(default)s, "
                            "GLASS Table 7)")
        parser.add_argument("--batch-size", type=int_option(low=1), default=16, help="--data: images per sampling call (default: %(default)s)")
        parser.add_argument("--fid-weights", default=None, metavar="PTH",
                            help="--data: InceptionV3 FID weights (pt_inception-2015-12-05-6726825d.pth or a safetensors "
                            "copy); without it no FID")
        parser.add_argument("--lpips-vgg", default=None, metavar="FILE",
                            help="--data: VGG16 state dict (torchvision layout) for LPIPS; needs --lpips-linear")
        parser.add_argument("--lpips-linear", default=None, metavar="FILE",
                            help="--data: LPIPS v0.1 linear-layer weights (vgg.pth of the LPIPS release) for LPIPS")
        return
    parser.add_argument("--image", required=True, help="the image to edit")
    parser.add_argument("--with", dest="other", default=None, help="second image for --add / --swap")
    parser.add_argument("--remove", type=int_option(low=0), nargs="+", default=[], metavar="K", help="slot indices to remove")
    parser.add_argument("--remove-box", type=float_option(low=0, high=1), nargs=4, default=None, metavar=("X0", "Y0", "X1", "Y1"),
                        help="also remove the slot that best covers this box (normalised image coordinates)")
    parser.add_argument("--class-map", default=None, metavar="PNG",
                        help="label PNG of --image (palette index or grey level = class id, same size as the image) "
                        "for --remove-class")
    parser.add_argument("--remove-class", type=int_option(low=0), nargs="+", default=[], metavar="ID",
                        help="also remove, per class id, the slot that best covers that class's pixels in --class-map")
    parser.add_argument("--remove-mode", choices=REMOVE_MODES, default="drop",
                        help="drop the slot token (default) or zero it, as the reference code does")
    parser.add_argument("--add", type=int_option(low=0), nargs="+", default=[], metavar="K", help="slot indices of --with to add")
    parser.add_argument("--swap", default=None, metavar="I:J", help="swap slot I of --image with slot J of --with")
    parser.add_argument("--list", action="store_true",
                        help="print each slot's mask area (and, with --class-map, the classes it covers) and exit")
    parser.add_argument("--interactive", action="store_true",
                        help="print that list, then ask on the terminal which slots to remove (added to --remove)")


def _run_reconstruct_split(args, model: ObjectCentricModel, options: SamplingOptions, out: Path) -> int:
    from slotlab.data.registry import build_dataset
    from slotlab.metrics.generation import LPIPS

    if (args.lpips_vgg is None) != (args.lpips_linear is None):
        raise ValueError("LPIPS needs both --lpips-vgg and --lpips-linear")
    lpips = LPIPS.vgg_from_files(args.lpips_vgg, args.lpips_linear) if args.lpips_vgg else None
    metrics, real, recon = reconstruct_split(model, build_dataset(args.data), options, args.num_images,
                                             args.batch_size, lpips, args.fid_weights)
    metrics |= {"data": args.data, "sampler_steps": options.steps, "guidance_scale": options.guidance_scale,
                "seed": options.seed}
    examples = min(8, len(real))
    size = max(128, *real.shape[-2:])
    rows = [np.asarray(side_by_side([real[i], recon[i]], [None, None], size)) for i in range(examples)]
    save_image(Image.fromarray(np.concatenate(rows, axis=0)), out / EXAMPLES_FILE)
    write_results(out / METRICS_FILE, metrics)
    print(results_json(metrics))
    print(f"wrote {out / METRICS_FILE} and {out / EXAMPLES_FILE} (image | reconstruction)")
    return 0


def run_reconstruct(args) -> int:
    out = output_dir(args.out)  # before the model loads: a wrong --out fails at once
    model = load_model_from_args(args)
    options = SamplingOptions(args.steps, args.guidance, args.seed)
    if args.data is not None:
        return _run_reconstruct_split(args, model, options, out)
    for path in args.images:
        image, slots, _ = _load(model, path, args.seed)
        recon = generate(model, slots.unsqueeze(0), options)[0]
        size = max(256, *image.shape[-2:])
        target = out / f"{Path(path).stem}-reconstruction.png"
        save_image(side_by_side([image, recon], [None, None], size), target)
        print(f"wrote {target}")
    return 0


def _parse_swap(text: str) -> tuple[int, int]:
    try:
        i, j = (int(v) for v in text.split(":"))
    except ValueError:
        raise ValueError(f"--swap {text!r}: expected I:J (slot I of --image, slot J of --with), e.g. 2:0") from None
    return i, j


def run_compose(args) -> int:
    out = output_dir(args.out)
    model = load_model_from_args(args)
    image, slots, masks = _load(model, args.image, args.seed)
    class_map = _read_class_map(args.class_map, masks.shape[-2:]) if args.class_map else None
    if args.list or args.interactive:
        for line in slot_listing(masks, class_map):
            print(line)
        if args.list:
            return 0
    remove = list(args.remove)
    if args.interactive:
        try:
            answer = input("slots to remove (indices separated by spaces; empty for none): ")
        except EOFError:  # stdin closed or not a terminal
            raise ValueError("--interactive: the input ended before an answer; type the slot indices at the prompt, "
                             "or pass them with --remove K [K ...]") from None
        remove += ask_slots(answer, len(slots))
    if args.remove_class:
        if class_map is None:
            raise ValueError("--remove-class needs --class-map PNG (the class id of every pixel of --image)")
        remove += [slot_for_class(masks, class_map, c) for c in args.remove_class]
    if args.remove_box is not None:
        h, w = masks.shape[-2:]
        x0, y0, x1, y1 = args.remove_box
        region = torch.zeros(h, w, dtype=torch.bool)
        region[int(y0 * h) : max(int(y0 * h) + 1, int(y1 * h)), int(x0 * w) : max(int(x0 * w) + 1, int(x1 * w))] = True
        remove.append(slot_for_region(masks, region))
    if not (remove or args.add or args.swap):
        raise ValueError("nothing to do: give --remove, --remove-box, --remove-class, --add or --swap (or --list, "
                         "--interactive)")
    options = SamplingOptions(args.steps, args.guidance, args.seed)
    swap = _parse_swap(args.swap) if args.swap else None
    donor = _load(model, args.other, args.seed)[1] if args.other is not None else None
    edited = edit_slots(slots, donor, remove, args.add, swap, args.remove_mode)
    outline = torch.isin(masks.argmax(0), torch.tensor(remove + ([swap[0]] if swap else []), dtype=torch.long))
    recon = generate(model, slots.unsqueeze(0), options)[0]
    edit = generate(model, edited.unsqueeze(0), options)[0]
    target = out / f"{Path(args.image).stem}-composition.png"
    size = max(256, *image.shape[-2:])
    save_image(side_by_side([image, recon, edit], [outline, None, None], size), target)
    print(f"wrote {target} (original with the edited slot outlined | reconstruction | edit)")
    return 0
