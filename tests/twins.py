"""Overrides that let a preset build offline in seconds: the pretrained parts it names become
tiny random twins of the same classes, and its widths shrink with them.

Only sizes change; every option that selects behaviour (losses, attention variants, schedules,
quantizers) stays the preset's own.
"""

from __future__ import annotations

from slotlab.methods.glass import PAPER_TWIN_OVERRIDES
from slotlab.nn.encoders.vit import VIT_ENCODER_NAMES

#: A ViT preset's encoder as a random twin (3 layers, width 32) on a 4 x 4 token grid.
VIT_TWIN = ("model.encoder.path=null", "model.encoder.tiny=true", "model.encoder.image_size=32",
            "model.encoder.patch_size=8")
SLOTS_TWIN = ("model.slot_attention.slot_dim=32", "model.slot_attention.mlp_hidden=32")
TRANSFORMER_DECODER_TWIN = ("model.decoder.width=32", "model.decoder.heads=2", "model.decoder.blocks=1")
# A two-level UNet with cross-attention (at the slot width) at the lower level only.
UNET_TWIN = ("model.diffusion_decoder.cross_attention_dim=32", "model.diffusion_decoder.block_out_channels=[8, 16]",
             "model.diffusion_decoder.cross_attention_levels=[false, true]",
             "model.diffusion_decoder.attention_head_dim=8", "model.diffusion_decoder.norm_num_groups=4",
             "model.diffusion_decoder.layers_per_block=1")


def twin_overrides(raw: dict) -> list[str]:
    """The size overrides of preset ``raw`` (a loaded preset dict); none for the CPU presets
    whose sizes are already small, except MSF's, whose VQ-VAE the OCL models must fit."""
    method, model = raw["method"], raw["model"]
    encoder = model.get("encoder") or {}
    pretrained = encoder.get("name") in VIT_ENCODER_NAMES
    if method == "glass":
        return list(PAPER_TWIN_OVERRIDES) if pretrained else []
    if method == "vqvae":
        return ["model.image_size=32", "model.width=8", *(["model.code_dim=8"] if model["code_dim"] > 8 else [])]
    if method in ("slate", "slotdiffusion"):  # on the 32 px VQ-VAE twin
        extra = list(VIT_TWIN) if pretrained else ["model.encoder.image_size=32", "model.encoder.dim=16"]
        extra += SLOTS_TWIN
        extra += TRANSFORMER_DECODER_TWIN if model.get("decoder") else UNET_TWIN
        return extra
    if not pretrained:
        return []
    extra = [*VIT_TWIN, *SLOTS_TWIN]
    if encoder.get("trainable_blocks"):
        extra.append("model.encoder.trainable_blocks=2")  # the twin has 3 blocks
    if method == "dinosaur":
        extra.append("model.decoder.hidden_dim=32")
    if method == "spot":
        extra += TRANSFORMER_DECODER_TWIN if model.get("decoder") else []
        extra += ["model.mlp_decoder.hidden_dim=16"] if model.get("mlp_decoder") else []
    return extra
