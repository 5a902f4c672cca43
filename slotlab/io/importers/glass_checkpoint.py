"""The authors' GLASS release -> a slotlab GLASS model directory (``slotlab import glass``).

The release (visinf/glass) is two diffusers folders, each ``config.json`` + weights:

    DIR/multiheadstevesa/       their slot attention (MultiHeadSTEVESA's constructor arguments)
    DIR/unet2dconditionmodel/   their fine-tuned SD 2.1 UNet (UNet2DConditionModel)

Their MLP decoder is not released; evaluation does not need it, so the model is built
without one (``instance_decoder: null``, lambda_instance 0). What the release does not hold
comes from local directories: the DINOv2 encoder (``--encoder``) and, from Stable Diffusion
2.1 (``--sd``), the VAE, the training scheduler and the text encoder whose empty-prompt
embedding is the unconditional branch at sampling. The written directory needs none of
them again: it stores every part's architecture and weights.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from torch import Tensor

from slotlab.config import int_option
from slotlab.io.importers.glass import map_slot_attention

SLOT_ATTENTION_DIR, UNET_DIR = "multiheadstevesa", "unet2dconditionmodel"
WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors", "model.safetensors", "diffusion_pytorch_model.bin")


def read_folder(folder: Path) -> tuple[dict, dict[str, Tensor]]:
    """config.json and the weights of one diffusers folder (safetensors, else a tensors-only .bin)."""
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path} is missing: expected the authors' folder layout ({SLOT_ATTENTION_DIR}/, {UNET_DIR}/)")
    weights = next((folder / n for n in WEIGHT_NAMES if (folder / n).is_file()), None)
    if weights is None:
        raise FileNotFoundError(f"{folder} holds no weights ({', '.join(WEIGHT_NAMES)})")
    if weights.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(weights))
    else:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    return json.loads(config_path.read_text()), state


def import_glass(
    release: Path, encoder: Path, sd: Path, image_size: int = 448, resolution: int = 256, position_grid: str = "centres"
):
    """Build the slotlab GLASS model of the authors' release; returns (model, ImportReport)."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

    from slotlab.methods.glass import Glass, GlassConfig
    from slotlab.nn.diffusion_decoder import DiffusionDecoderConfig, SlotDiffusionDecoder, empty_prompt_from_directory
    from slotlab.nn.encoders import encoder_config

    authors_config, state = read_folder(release / SLOT_ATTENTION_DIR)
    authors_config = {k: v for k, v in authors_config.items() if not k.startswith("_")}  # diffusers' bookkeeping
    imported = map_slot_attention(state, authors_config, position_grid=position_grid)
    if imported.report.missing:
        raise ValueError(f"{release / SLOT_ATTENTION_DIR}: no weights for {imported.report.missing}")
    read_folder(release / UNET_DIR)  # checks the layout before the large load
    unet = UNet2DConditionModel.from_pretrained(release / UNET_DIR, local_files_only=True)
    width = imported.config.output_dim
    decoder_config = DiffusionDecoderConfig(pretrained_path=str(sd), resolution=resolution, cross_attention_dim=width)
    decoder = SlotDiffusionDecoder(
        decoder_config,
        unet=unet,
        vae=AutoencoderKL.from_pretrained(sd, subfolder="vae", local_files_only=True),
        scheduler=DDPMScheduler.from_pretrained(sd, subfolder="scheduler", local_files_only=True),
        unconditional_embedding=empty_prompt_from_directory(sd),
    )
    config = GlassConfig(
        encoder=encoder_config(name="dinov2", path=str(encoder), image_size=image_size),
        slot_attention=imported.config,
        instance_decoder=None,
        diffusion_decoder=decoder_config,
        lambda_instance=0.0,
    )
    # The decoder's architecture lets the model skip loading SD's own UNet; the parts follow.
    model = Glass(config, {"diffusion_decoder": decoder.architecture()})
    model.diffusion_decoder = decoder
    model.slot_attention.load_state_dict(imported.state_dict)
    return model.eval(), imported.report


def add_arguments(parser: argparse.ArgumentParser) -> None:
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


def run(args: argparse.Namespace) -> int:
    model, report = import_glass(
        Path(args.release), Path(args.encoder), Path(args.sd), args.image_size, args.resolution, args.position_grid
    )
    model.save_pretrained(Path(args.out))
    print(report.summary())
    print(f"wrote {args.out} (no MLP decoder: the release has none; eval, decompose, reconstruct and compose use it)")
    return 0
