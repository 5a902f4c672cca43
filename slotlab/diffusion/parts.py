"""The decoder's parts built from its config: UNet and noise schedule from the size knobs,
the image autoencoder of each latent space, the unconditional embedding, or the parts
of a local Stable Diffusion directory; and the parts' shapes as a checkpoint stores them
(:func:`architecture_of`, rebuilt by :func:`parts_from_architecture`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from slotlab.diffusion.config import BETA_RANGES, DiffusionDecoderConfig
from slotlab.diffusion.sd import (
    empty_prompt_from_directory,
    SD_DOWNLOAD_HINT,
    encode_empty_prompt,
    load_sd_components,
    tiny_clip_tokenizer,
    tiny_text_encoder,
    tiny_vae,
)
from slotlab.nn.autoencoders import ImageAutoencoder, KLAutoencoder, PixelSpace, SpaceToDepth, TinyAutoencoder


def unet_from_config(config: DiffusionDecoderConfig, channels: int, sample_size: int) -> nn.Module:
    from diffusers import UNet2DConditionModel

    down = tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in config.cross_attention_levels)
    up = tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(config.cross_attention_levels))
    heads = tuple(width // config.attention_head_dim for width in config.block_out_channels)
    return UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=channels + (2 if config.coordinate_channels else 0),
        out_channels=channels,
        down_block_types=down,
        up_block_types=up,
        block_out_channels=config.block_out_channels,
        layers_per_block=config.layers_per_block,
        attention_head_dim=heads,  # diffusers' name for the number of heads per level
        cross_attention_dim=config.cross_attention_dim,
        norm_num_groups=config.norm_num_groups,
    )


def scheduler_from_config(config: DiffusionDecoderConfig) -> "object":
    from diffusers import DDPMScheduler

    beta_range = BETA_RANGES[config.beta_schedule]
    betas = {} if beta_range is None else dict(beta_start=beta_range[0], beta_end=beta_range[1])
    return DDPMScheduler(
        num_train_timesteps=config.num_train_timesteps,
        beta_schedule=config.beta_schedule,
        prediction_type=config.prediction_type or "v_prediction",
        clip_sample=False,  # latents are not bounded to [-1, 1]
        **betas,
    )


def load_pretrained_parts(config: DiffusionDecoderConfig) -> tuple[nn.Module, nn.Module, object]:
    """UNet, VAE and the training noise schedule (DDPM, on the directory's betas) of the local
    Stable Diffusion directory ``config.pretrained_path``."""
    from diffusers import DDPMScheduler

    parts = load_sd_components(config.pretrained_path, ("unet", "vae", "scheduler"), "diffusion_decoder.pretrained_path")
    prediction = {} if config.prediction_type is None else {"prediction_type": config.prediction_type}
    return parts.unet, parts.vae, DDPMScheduler.from_config(parts.scheduler.config, **prediction)


def assemble_parts(
    config: DiffusionDecoderConfig, unet: nn.Module | None, vae: nn.Module | None, scheduler,
    autoencoder: ImageAutoencoder | None,
) -> tuple[nn.Module, ImageAutoencoder, object]:
    """The UNet, image autoencoder and training noise scheduler of a decoder: those passed,
    else loaded from ``config.pretrained_path``, else built from the config."""
    if config.pretrained_path is not None and (unet is None or vae is None or scheduler is None):
        loaded_unet, loaded_vae, loaded_scheduler = load_pretrained_parts(config)
        unet = loaded_unet if unet is None else unet
        vae = loaded_vae if vae is None else vae
        scheduler = loaded_scheduler if scheduler is None else scheduler
    if vae is not None and config.latent != "vae":
        raise ValueError(f"a vae was passed but DiffusionDecoderConfig.latent={config.latent!r}; set latent='vae'")
    autoencoder = autoencoder if autoencoder is not None else build_autoencoder(config, vae)
    if unet is None:
        unet = unet_from_config(config, autoencoder.latent_channels, config.resolution // autoencoder.downscale_factor)
    return unet, autoencoder, scheduler if scheduler is not None else scheduler_from_config(config)


def build_autoencoder(config: DiffusionDecoderConfig, vae: nn.Module | None) -> ImageAutoencoder:
    if config.latent == "pixel":
        return PixelSpace()
    if config.latent == "space_to_depth":
        return SpaceToDepth(config.space_to_depth_factor)
    if config.latent == "taesd":
        if config.taesd_path is not None:
            return TinyAutoencoder.from_files(config.taesd_path, config.taesd_latent_scale)
        if config.tiny:
            return TinyAutoencoder.random(latent_channels=4, width=16)
        raise ValueError(
            "DiffusionDecoderConfig: latent='taesd' needs taesd_path, a directory with TAESD weight "
            "files (e.g. taef2_encoder.pth and taef2_decoder.pth of the FLUX.2 tiny autoencoder), "
            "or tiny=True for a random test twin, or latent='pixel'."
        )
    if vae is not None:
        return KLAutoencoder(vae)
    if config.tiny:
        return KLAutoencoder(tiny_vae(config.resolution))
    raise ValueError(
        "DiffusionDecoderConfig: latent='vae' needs Stable Diffusion's VAE: set pretrained_path "
        f"(or pass vae=...), tiny=True for a random test twin, or latent='pixel'/'taesd'. {SD_DOWNLOAD_HINT}"
    )


def empty_prompt_embedding(config: DiffusionDecoderConfig) -> Tensor:
    """The (L, D) empty-prompt embedding for configs that do not receive one explicitly."""
    if config.pretrained_path is not None:
        return empty_prompt_from_directory(config.pretrained_path)
    if config.tiny:
        tokenizer = tiny_clip_tokenizer(())
        return encode_empty_prompt(tiny_text_encoder(config.cross_attention_dim, len(tokenizer)), tokenizer)
    raise ValueError(
        "DiffusionDecoderConfig: unconditional='empty_prompt' needs the CLIP embedding of the empty "
        "prompt, which comes from Stable Diffusion's text encoder (pretrained_path with text_encoder/ "
        "and tokenizer/) or is passed as unconditional_embedding=(L, D) tensor. A UNet trained from "
        "scratch never saw that embedding: use unconditional='null_slots' instead."
    )


def check_parts(config: DiffusionDecoderConfig, unet: nn.Module, autoencoder: ImageAutoencoder) -> None:
    """The UNet fits the slots, the latent space and the resolution, or a clear error."""
    if unet.config.cross_attention_dim != config.cross_attention_dim:
        raise ValueError(
            f"UNet cross_attention_dim={unet.config.cross_attention_dim} but "
            f"DiffusionDecoderConfig.cross_attention_dim={config.cross_attention_dim}: slots must "
            f"have the width the UNet cross-attends to (SD 2.1: 1024)"
        )
    expected = autoencoder.latent_channels + (2 if config.coordinate_channels else 0)
    if unet.config.in_channels != expected:
        raise ValueError(
            f"UNet in_channels={unet.config.in_channels} does not match the {config.latent!r} "
            f"space's {autoencoder.latent_channels} channels"
            + (" + 2 coordinate channels" if config.coordinate_channels else "")
        )
    levels = len(unet.config.block_out_channels)
    multiple = autoencoder.downscale_factor * 2 ** (levels - 1)
    if config.resolution % multiple:
        raise ValueError(
            f"DiffusionDecoderConfig.resolution={config.resolution} must be a multiple of {multiple} "
            f"(autoencoder downscale {autoencoder.downscale_factor} x {levels - 1} UNet downsamplings)"
        )


def _public_config(config) -> dict:
    """A diffusers config without its bookkeeping entries (``_name_or_path`` is a Path, not JSON)."""
    return {key: value for key, value in dict(config).items() if not key.startswith("_")}


def architecture_of(
    unet: nn.Module, scheduler, autoencoder: ImageAutoencoder, empty_prompt: Tensor | None
) -> dict:
    """Every part's shape as JSON (``SlotDiffusionDecoder.architecture``): what
    :func:`parts_from_architecture` rebuilds without the Stable Diffusion directory or TAESD files."""
    record = {"unet": _public_config(unet.config), "scheduler": _public_config(scheduler.config)}
    if isinstance(autoencoder, KLAutoencoder):
        record["vae"] = _public_config(autoencoder.vae.config)
    if isinstance(autoencoder, TinyAutoencoder):
        record["taesd"] = autoencoder.architecture()
    if empty_prompt is not None:
        record["empty_prompt_shape"] = list(empty_prompt.shape)
    return record


def parts_from_architecture(architecture: dict) -> dict:
    """The decoder's parts in a stored shape (``SlotDiffusionDecoder.architecture``) with
    placeholder weights; nothing is read from a Stable Diffusion directory or TAESD files."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

    parts: dict = {
        "unet": UNet2DConditionModel.from_config(architecture["unet"]),
        "scheduler": DDPMScheduler.from_config(architecture["scheduler"]),
    }
    if "vae" in architecture:
        parts["vae"] = AutoencoderKL.from_config(architecture["vae"]).eval()
    if "taesd" in architecture:
        parts["autoencoder"] = TinyAutoencoder.from_architecture(architecture["taesd"])
    if "empty_prompt_shape" in architecture:
        parts["unconditional_embedding"] = torch.zeros(architecture["empty_prompt_shape"])
    return parts
