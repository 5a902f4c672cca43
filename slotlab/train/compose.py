"""Conditional and compositional generation from GLASS slots (GLASS Sec. 5.3, Figs. 5-6).

Reconstruct an image from its slots, or edit the slot set first: remove slots, add slots of
another image, swap slots between images; the diffusion decoder then samples the edited
scene. Slots are chosen by index or by the class of the object they cover.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from slotlab.config import float_option, int_option
from slotlab.data.imageio import read_image
from slotlab.ops.resize import resize_image, resize_mask
from slotlab.io.checkpoints import add_checkpoint_arguments, load_model_from_args
from slotlab.io.files import output_dir
from slotlab.io.results import results_json, write_results
from slotlab.methods.base import Decomposition, ObjectCentricModel
from slotlab.metrics.generation import GLASS_FID_IMAGES
from slotlab.viz.overlays import boundaries, save_image, to_uint8
from slotlab.ops.random import seeded_generator

REMOVE_MODES = ("drop", "zero")


@dataclass
class SamplingOptions:
    steps: int = 50
    guidance_scale: float = 1.0
    seed: int = 0


def remove_slots(slots: Tensor, indices: list[int], mode: str = "drop") -> Tensor:
    """Remove slots (K, D) -> (K - n, D) ("drop", the token leaves the cross-attention) or zero
    them in place ("zero", as the reference code does)."""
    if mode not in REMOVE_MODES:
        raise ValueError(f"remove mode {mode!r}; choose one of {REMOVE_MODES}")
    _check_indices(indices, slots.shape[0])
    if mode == "zero":
        out = slots.clone()
        out[indices] = 0
        return out
    keep = [k for k in range(slots.shape[0]) if k not in set(indices)]
    return slots[keep]


def add_slots(slots: Tensor, donor: Tensor, indices: list[int]) -> Tensor:
    """Append the donor image's slots ``indices`` to ``slots`` (K, D) -> (K + n, D)."""
    _check_indices(indices, donor.shape[0])
    return torch.cat([slots, donor[indices]], dim=0)


def swap_slots(a: Tensor, b: Tensor, i: int, j: int) -> tuple[Tensor, Tensor]:
    """Exchange slot i of image a with slot j of image b."""
    _check_indices([i], a.shape[0])
    _check_indices([j], b.shape[0])
    a2, b2 = a.clone(), b.clone()
    a2[i], b2[j] = b[j], a[i]
    return a2, b2


def edit_slots(
    slots: Tensor, donor: Tensor | None, remove: list[int], add: list[int], swap: tuple[int, int] | None,
    mode: str = "drop",
) -> Tensor:
    """One image's slots (K, D) after an edit whose indices all name the *original* slots:
    the swap first (it keeps positions), then the removal, then the donor's added slots."""
    if (add or swap) and donor is None:
        raise ValueError("--add and --swap need a second image: --with PATH")
    if swap is not None:
        slots, _ = swap_slots(slots, donor, *swap)
    if remove:
        slots = remove_slots(slots, remove, mode)
    if add:
        slots = add_slots(slots, donor, add)
    return slots


def slot_for_region(masks: Tensor, region: Tensor) -> int:
    """The slot whose hard mask (argmax of masks (K, H, W)) best overlaps ``region`` (H, W) by IoU."""
    hard = torch.nn.functional.one_hot(masks.argmax(0), masks.shape[0]).permute(2, 0, 1).bool()
    region = region.bool()
    inter = (hard & region).flatten(1).sum(1).float()
    union = (hard | region).flatten(1).sum(1).float().clamp_min(1)
    return int((inter / union).argmax())


def slot_for_class(masks: Tensor, class_map: Tensor, class_id: int) -> int:
    """The slot that best covers the pixels of ``class_id`` in ``class_map`` (H, W)."""
    region = class_map == class_id
    if not region.any():
        present = sorted(set(class_map.unique().tolist()) - {0})
        raise ValueError(f"class {class_id} has no pixel in the class map; its classes are {present}")
    return slot_for_region(masks, region)


def slot_listing(masks: Tensor, class_map: Tensor | None = None) -> list[str]:
    """One line per slot: its share of the image and, given a class map, the classes it covers
    (share of the slot's pixels), largest first."""
    labels = masks.argmax(0)
    lines = []
    for k in range(masks.shape[0]):
        mine = labels == k
        line = f"slot {k}: {mine.float().mean():.1%} of the image"
        if class_map is not None and mine.any():
            ids, counts = class_map[mine].unique(return_counts=True)
            shares = sorted(zip(counts.tolist(), ids.tolist()), reverse=True)
            line += "; covers " + ", ".join(f"class {c} ({n / mine.sum():.0%})" for n, c in shares if c != 0)
        lines.append(line)
    return lines


def _read_class_map(path: str, size: tuple[int, int]) -> Tensor:
    from slotlab.data.imageio import read_label_map

    return torch.from_numpy(read_label_map(path, size=tuple(size)))


def _check_indices(indices: list[int], k: int, source: str = "slot index") -> None:
    bad = [i for i in indices if not 0 <= i < k]
    if bad:
        raise ValueError(f"{source} {bad} out of range: this image has {k} slots (0..{k - 1})")


def _decoder(model: ObjectCentricModel):
    decoder = getattr(model, "diffusion_decoder", None)
    if decoder is None:
        raise ValueError(f"a {model.method!r} model without a diffusion decoder cannot generate images")
    return decoder


def decoder_tokens(model: ObjectCentricModel, decomposition: Decomposition) -> Tensor:
    """The tokens (B, K, C) the model's diffusion decoder conditions on: the slots, carrying their
    masks when the decoder is mask-biased (``mask_bias_grid``). Edits act on these tokens."""
    return _decoder(model).context(decomposition.slots, decomposition.masks)


def generate(model: ObjectCentricModel, tokens: Tensor, options: SamplingOptions) -> Tensor:
    """Sample images (B, 3, R, R) from decoder tokens (B, K, C) (:func:`decoder_tokens`)."""
    decoder = _decoder(model)
    generator = seeded_generator(options.seed)
    return decoder.sample(tokens, num_steps=options.steps, guidance_scale=options.guidance_scale, generator=generator)


def side_by_side(images: list[Tensor], outlines: list[Tensor | None], size: int) -> Image.Image:
    """Images (3, h, w) resized to ``size``, in a row; a bool mask outlines a region in white."""
    tiles = []
    for image, outline in zip(images, outlines):
        tile = to_uint8(resize_image(image, (size, size)).clamp(0, 1))
        if outline is not None:
            edge = boundaries(resize_mask(outline, (size, size)).numpy().astype(np.int64))
            tile[edge] = 255
        tiles.append(tile)
    return Image.fromarray(np.concatenate(tiles, axis=1))


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
    _check_indices(indices, num_slots, source="--interactive: slot")
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


def reconstruct_split(
    model: ObjectCentricModel,
    dataset,
    options: SamplingOptions,
    num_images: int,
    batch_size: int = 16,
    lpips=None,
    fid_extractor=None,
    progress: bool = True,
) -> tuple[dict[str, float], Tensor, Tensor]:
    """GLASS Table 7 on the first ``num_images`` images of ``dataset``: each is decomposed and
    sampled back from its slots (batch i with seed ``options.seed + i``), and compared with the
    image resized to the decoder's resolution. FID runs on all ``num_images`` pairs. Returns
    the metrics and the first batch's (real, reconstruction) for pictures."""
    from torch.utils.data import DataLoader, Subset
    from tqdm.auto import tqdm

    from slotlab.data.sample import collate
    from slotlab.metrics.generation import evaluate_reconstructions

    if num_images > len(dataset):
        raise ValueError(f"--num-images {num_images} but the dataset has {len(dataset)} images")
    loader = DataLoader(Subset(dataset, range(num_images)), batch_size=batch_size, collate_fn=collate)
    pairs: list[tuple[Tensor, Tensor]] = []
    for i, batch in enumerate(tqdm(loader, desc="reconstruct", unit="batch", disable=not progress)):
        slots = decoder_tokens(model, model.decompose(batch.image, seed=options.seed + i))
        recon = generate(model, slots, SamplingOptions(options.steps, options.guidance_scale, options.seed + i))
        pairs.append((resize_image(batch.image, tuple(recon.shape[-2:])), recon))
    metrics = evaluate_reconstructions([r for r, _ in pairs], [g for _, g in pairs], lpips=lpips,
                                       fid_extractor=fid_extractor, fid_num_images=num_images)
    return metrics, *pairs[0]


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
    save_image(Image.fromarray(np.concatenate(rows, axis=0)), out / "examples.png")
    write_results(out / "metrics.json", metrics)
    print(results_json(metrics))
    print(f"wrote {out / 'metrics.json'} and {out / 'examples.png'} (image | reconstruction)")
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
