"""The CPU encoders side by side on the scenes test split, as JSON.

    python benchmarks/bench_cpu_encoder.py --out bench-cpu-encoder.json [--seeds 0 1 2]
        [--encoders patch segmenter ssl regions shapes] [--ssl DIR] [--regions DIR] [--shapes DIR] [--segmenter DIR]
        [--dinosaur-steps N] [--dinosaur-set KEY=VALUE ...] [--ar-steps N] [--network-scale S]
        [--colour-pooling colour|features] [--probe-epochs N]

Encoders (each row says what supervision it saw):
- patch: the patch encoder, label-free (colour and random Fourier colour features; no
  training): glass-tiny's and dinosaur-tiny-patch's;
- segmenter: the same plus the class probabilities of the segmenter (segmenter-scenes-tiny,
  trained WITH the scenes' class labels);
- ssl: the network trained by self-distillation on scenes train images WITHOUT labels
  (ssl-scenes-tiny);
- regions: the network trained by region contrast on the colour regions of scenes train
  images WITHOUT labels (ssl-regions-scenes-tiny), each token with its colour features;
- shapes: the network trained by contrast of the silhouettes of the colour regions of scenes
  train images WITHOUT labels (ssl-shapes-scenes-tiny), each token with its colour features:
  dinosaur-tiny's, with ``--shapes shipped:ssl-shapes-scenes-tiny``.

Per encoder and seed: the class probe of the features under the true instance masks
(slotlab.metrics.encoder_features; scenes train 500 -> test 256; each trains until early
stopping or ``--probe-epochs``, and the row says which ended it), as is and on standardised
features (``_standardised``: the reading no longer depends on the scale of the dims), the
left-neighbour copy ratio of the tokens (test 256; both on the 32 x 32 grid), DINOSAUR-MLP
(dinosaur-tiny with this encoder at its patch size and position features) evaluated on the
test split with its decoder masks and with its slot-attention masks (and how far the
decoder's alpha masks are from uniform: their mean largest value against 1 / K), and the slot-swap
test of an autoregressive decoder: spot-tiny-raster (SPOT stage 1, raster order) with this
encoder (tokens wider than its decoder get the decoder's linear output head), its
reconstruction MSE on test with each image's own slots and with the slots of the previous
image in the batch (bench_spot.slot_use), the MSE of copying the previous token, and the
left-neighbour copy ratio of its 16 x 16 tokens. ``--dinosaur-steps 0`` / ``--ar-steps 0`` skip
DINOSAUR / the slot-swap test. ``--dinosaur-set`` changes the DINOSAUR runs only (e.g.
``model.encoder.position_scale=0``: the class probe and copy ratio read the encoder
without position either way).
``--ssl``/``--regions``/``--shapes``/``--segmenter`` reuse trained runs (one for every seed)
instead of training one per seed. ``--network-scale`` and ``--colour-pooling`` (default:
dinosaur-tiny's) set the regions and shapes encoders' ``network_scale`` (the weight of the
network's dims against the colour dims in the tokens) and ``colour_pooling`` (the colour
features of a cell's mean colour or the mean of its pixels' colour features).
"""

from __future__ import annotations

import argparse
import functools
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from bench_spot import slot_use
from report import emit, machine_info
from torch.utils.data import DataLoader

from slotlab.config import load_preset
from slotlab.data.registry import build_dataset
from slotlab.data.sample import collate
from slotlab.methods.encoder_parts import build_method_encoder
from slotlab.metrics.encoder_features import (
    class_probe_of_pairs,
    left_neighbour_copy_ratio,
    object_feature_pairs,
)
from slotlab.nn.encoders import encoder_config
from slotlab.nn.encoders.ssl import COLOUR_POOLINGS
from slotlab.train.config import build_train_config
from slotlab.train.evaluate import evaluate_blocks, evaluate_model, predict
from slotlab.train.trainer import train
from slotlab.viz.report import flatten

TEST = "scenes?split=test&size=256"
AR_PRESET = "spot-tiny-raster"
DINOSAUR_PRESET = "dinosaur-tiny"
PROBE_TRAIN = "scenes?split=train&size=500"
SUPERVISION = {
    "patch": "none: fixed colour features",
    "segmenter": "scenes class labels (supervised segmenter-scenes-tiny)",
    "ssl": "none: self-distillation on scenes train images (ssl-scenes-tiny)",
    "regions": "none: region contrast over the colour regions of scenes train images (ssl-regions-scenes-tiny)"
               " + each token's colour features",
    "shapes": "none: contrast of the silhouettes of the colour regions of scenes train images"
              " (ssl-shapes-scenes-tiny) + each token's colour features",
}
PATCH_COLOUR_FREQUENCIES, PATCH_COLOUR_SIGMA = 16, 3.0
PATCH = {"name": "patch", "image_size": 64, "dim": 64, "colour_frequencies": PATCH_COLOUR_FREQUENCIES,
         "colour_sigma": PATCH_COLOUR_SIGMA}
#: The colour features the regions and shapes encoders append to their networks' tokens (the patch encoder's).
REGION_COLOUR = {"colour_frequencies": PATCH_COLOUR_FREQUENCIES, "colour_sigma": PATCH_COLOUR_SIGMA}


def encoder_settings(name: str, patch_size: int, prerequisites: dict[str, Path], network_colour: dict) -> dict:
    """model.encoder of a preset for encoder ``name`` (patch encoders at ``patch_size``;
    ``network_colour``: the ssl encoder's network_scale and colour_pooling, for regions and shapes)."""
    if name == "patch":
        return PATCH | {"patch_size": patch_size}
    if name == "segmenter":
        return PATCH | {"patch_size": patch_size, "semantic_model": str(prerequisites["segmenter"]), "semantic_gain": 1.0}
    if name in ("regions", "shapes"):
        return {"name": "ssl", "image_size": 64, "path": str(prerequisites[name]), "patch_size": patch_size,
                **REGION_COLOUR, **network_colour}
    return {"name": "ssl", "image_size": 64, "path": str(prerequisites["ssl"])}


def train_preset(preset_name: str, out: Path, seed: int, overrides: list[str]) -> object:
    config = build_train_config(load_preset(preset_name), [f"seed={seed}", *overrides])
    return train(config, out, progress=False)


@functools.cache
def dinosaur_preset_encoder() -> dict:
    """model.encoder of the DINOSAUR preset, read once."""
    return load_preset(DINOSAUR_PRESET)["model"]["encoder"]


def dinosaur_encoder(name: str, prerequisites: dict[str, Path], network_colour: dict) -> dict:
    """model.encoder of the DINOSAUR rows: encoder ``name`` at dinosaur-tiny's patch size and position features."""
    preset = dinosaur_preset_encoder()
    position = {key: preset[key] for key in ("position_frequencies", "position_scale")}
    return encoder_settings(name, preset["patch_size"], prerequisites, network_colour) | position


def dinosaur_row(encoder: dict, seed: int, steps: int | None, out: Path, extra: list[str] = ()) -> dict:
    # The encoder replaces the preset's, and whatever it reads is given with it: no preset input remains.
    overrides = [f"model.encoder={encoder}", "inputs={}"] + ([f"stages.0.steps={steps}"] if steps else [])
    overrides += list(extra)
    result = train_preset(DINOSAUR_PRESET, out, seed, overrides)
    test = build_dataset(TEST)
    row = {"train_seconds": round(result.train_seconds, 1), "steps": result.steps,
           "token_grid": list(result.model.grid)}  # the row's own: --dinosaur-set may change the patch size
    for source in ("decoder", "attention"):
        result.model.config.mask_source = source
        metrics = evaluate_model(result.model, test, progress=False, seed=seed)["metrics"]
        row[f"{source}_masks_mbo_i"] = metrics["mbo_i"]
        row[f"{source}_masks_miou_i"] = metrics["miou_i"]
    row["decoder_alpha_max_mean"] = decoder_alpha_max_mean(result.model, test, seed)
    row["uniform_alpha"] = 1 / result.model.config.slot_attention.num_slots
    return row


def decoder_alpha_max_mean(model, dataset, seed: int) -> float:
    """Mean over test tokens of the largest decoder alpha: 1 / K when the alpha masks are
    uniform over the K slots (the argmax then follows a constant per-slot offset), 1 when
    one slot takes each token entirely."""
    model.config.mask_source = "decoder"
    largest = [masks.amax(dim=1).flatten() for masks, _ in predict(model, dataset, progress=False, seed=seed)]
    return torch.cat(largest).mean().item()


@torch.no_grad()
def copy_previous_token_mse(model, dataset, batch_size: int = 32) -> float:
    """MSE of predicting each token by the previous one in raster order (the decoder's targets)."""
    errors = [float(F.mse_loss(tokens[:, :-1], tokens[:, 1:]))
              for tokens in (model.encoder(batch.image) for batch in
                             DataLoader(dataset, batch_size=batch_size, collate_fn=collate))]
    return statistics.fmean(errors)


def ar_overrides(encoder: dict, token_width: int, steps: int | None) -> list[str]:
    """Overrides of AR_PRESET for ``encoder``, whose tokens are ``token_width`` wide. SPOT's
    decoder predicts the tokens at its own width (no head); tokens of another width (the
    regions and shapes encoders' network + colour features) get the decoder's optional
    linear output head to their width, the decoder itself unchanged."""
    overrides = [f"model.encoder={encoder}"] + ([f"stages.0.steps={steps}"] if steps else [])
    if token_width != load_preset(AR_PRESET)["model"]["decoder"]["width"]:
        overrides.append(f"model.decoder.output_dim={token_width}")
    return overrides


def ar_row(encoder: dict, token_width: int, seed: int, steps: int | None, out: Path) -> dict:
    result = train_preset(AR_PRESET, out, seed, ar_overrides(encoder, token_width, steps))
    test = build_dataset(TEST)
    row = {"train_seconds": round(result.train_seconds, 1), "steps": result.steps,
           "decoder_output_head": result.model.decoder.head is not None} | slot_use(result.model, test)
    row["swap_increase"] = row["mse_other_image_slots"] / row["mse_own_slots"] - 1
    row["mse_copy_previous_token"] = copy_previous_token_mse(result.model, test)
    row["left_neighbour_copy_ratio"] = left_neighbour_copy_ratio(result.model.encoder, test)
    return row


def prerequisites_for(seed: int, args, work: Path) -> dict[str, Path]:
    """The trained segmenter and ssl runs the encoders read (given, or trained with ``seed``)."""
    found, seconds = {}, {}
    for name, given, preset in (("segmenter", args.segmenter, "segmenter-scenes-tiny"), ("ssl", args.ssl, "ssl-scenes-tiny"),
                                ("regions", args.regions, "ssl-regions-scenes-tiny"),
                                ("shapes", args.shapes, "ssl-shapes-scenes-tiny")):
        if name not in args.encoders:
            continue
        if given is not None:
            found[name] = given
            continue
        result = train_preset(preset, work / f"{name}-{seed}", seed, [])
        found[name], seconds[name] = result.model_dir, round(result.train_seconds, 1)
    found["train_seconds"] = seconds
    return found


def summarise(rows: list[dict]) -> dict:
    """Mean and standard deviation over seeds of every number in the rows."""
    summary = {}
    for key in rows[0]:
        values = [row[key] for row in rows if isinstance(row.get(key), (int, float))]
        if len(values) == len(rows):
            summary[key] = {"mean": statistics.fmean(values), "std": statistics.pstdev(values)}
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=None, help="write the JSON here as well as to stdout")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--encoders", nargs="+", default=list(SUPERVISION), choices=list(SUPERVISION))
    parser.add_argument("--ssl", type=Path, default=None, help="a trained ssl-scenes-tiny model directory")
    parser.add_argument("--regions", type=Path, default=None, help="a trained ssl-regions-scenes-tiny model directory")
    parser.add_argument("--shapes", type=Path, default=None, help="a trained ssl-shapes-scenes-tiny model directory")
    parser.add_argument("--segmenter", type=Path, default=None, help="a trained segmenter-scenes-tiny model directory")
    parser.add_argument("--dinosaur-steps", type=int, default=None, help="default: dinosaur-tiny's; 0 skips DINOSAUR")
    parser.add_argument("--ar-steps", type=int, default=None, help="default: spot-tiny-raster's; 0 skips the test")
    parser.add_argument("--dinosaur-set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="overrides of dinosaur-tiny after the encoder's, as slotlab train --set (DINOSAUR rows only)")
    preset_encoder = dinosaur_preset_encoder()
    parser.add_argument("--network-scale", type=float, default=preset_encoder["network_scale"],
                        help="factor on the regions/shapes network's dims in the tokens (encoder.network_scale; "
                        "default: dinosaur-tiny's, %(default)s)")
    parser.add_argument("--colour-pooling", default=preset_encoder["colour_pooling"], choices=COLOUR_POOLINGS,
                        help="the regions/shapes tokens' colour features (encoder.colour_pooling; default: "
                        "dinosaur-tiny's, %(default)s)")
    parser.add_argument("--probe-epochs", type=int, default=1000,
                        help="the class probes' epoch limit (they stop early once their held-out loss has not "
                        "improved for 5 epochs; runs stored before this option had 100, which ends the plain "
                        "probe on small-scale dims before it converges)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    network_colour = {"network_scale": args.network_scale, "colour_pooling": args.colour_pooling}
    start = time.perf_counter()
    rows: dict[str, list[dict]] = {name: [] for name in args.encoders}
    prerequisite_seconds = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for seed in args.seeds:
            prerequisites = prerequisites_for(seed, args, work)
            prerequisite_seconds[seed] = prerequisites.pop("train_seconds")
            for name in args.encoders:
                run = work / f"{name}-seed{seed}"
                probe_encoder = encoder_settings(name, 2, prerequisites, network_colour)
                encoder = build_method_encoder(encoder_config(**probe_encoder))
                probe_train, test = build_dataset(PROBE_TRAIN), build_dataset(TEST)
                train_pairs, test_pairs = object_feature_pairs(encoder, probe_train), object_feature_pairs(encoder, test)
                row = {"seed": seed}
                for suffix, standardise in (("", False), ("_standardised", True)):
                    probe = class_probe_of_pairs(train_pairs, test_pairs, seed, standardise, args.probe_epochs)
                    row |= {f"object_features_class_accuracy{suffix}": probe.accuracy,
                            f"object_features_class_probe_epochs{suffix}": probe.epochs,
                            f"object_features_class_probe_stopped_early{suffix}": probe.stopped_early}
                row |= {"left_neighbour_copy_ratio": left_neighbour_copy_ratio(encoder, test),
                        "token_grid": list(encoder.grid_size())}
                if args.dinosaur_steps != 0:
                    row["dinosaur"] = dinosaur_row(dinosaur_encoder(name, prerequisites, network_colour), seed,
                                                   args.dinosaur_steps, run / "dinosaur", args.dinosaur_set)
                if args.ar_steps != 0:
                    spot_encoder = encoder_settings(name, 4, prerequisites, network_colour)
                    row["autoregressive"] = ar_row(spot_encoder, encoder.dim, seed, args.ar_steps, run / "spot")
                rows[name].append(row)
                print(name, seed, row, flush=True)
    blocks = evaluate_blocks(build_dataset(TEST), num_slots=7, grid=(16, 16))["metrics"]
    report = {
        "benchmark": "CPU encoders on the scenes test split",
        "test": TEST,
        "blocks_mbo_i": blocks["mbo_i"],
        "blocks_miou_i": blocks["miou_i"],
        "encoders": {
            name: {"supervision": SUPERVISION[name], "seeds": runs,
                   "mean_std": summarise([flatten(r) for r in runs])}
            for name, runs in rows.items()
        },
        "class_probe_max_epochs": args.probe_epochs,
        "prerequisite_train_seconds": prerequisite_seconds,
        "dinosaur_overrides": args.dinosaur_set,
        "regions_shapes_encoder": network_colour,
        "dinosaur": "not run (--dinosaur-steps 0)" if args.dinosaur_steps == 0 else DINOSAUR_PRESET,
        "autoregressive_test": "not run (--ar-steps 0)" if args.ar_steps == 0 else AR_PRESET,
        "wall_seconds": round(time.perf_counter() - start, 1),
        "machine": machine_info(),
    }
    emit(report, args.out)


if __name__ == "__main__":
    main()
