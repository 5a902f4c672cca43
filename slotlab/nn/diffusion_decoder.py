"""Slot-conditioned latent diffusion decoder (GLASS Sec. 4, Eq. 3 L_recon; Stable-LSD recipe).

GLASS decodes slots with Stable Diffusion 2.1: the K slots (B, K, 1024) take the place of the
77 CLIP text tokens in every cross-attention layer of the UNet (K = 7 tokens instead of 77).
Training minimises the denoising loss on the frozen VAE's latents (the image reconstruction
term L_recon of GLASS Eq. 3); sampling runs DPM-Solver++ with optional classifier-free guidance.

Four working spaces (``DiffusionDecoderConfig.latent``): ``"vae"`` (AutoencoderKL, the paper),
``"pixel"`` (no autoencoder), ``"space_to_depth"`` (pixels with f x f blocks folded into
channels) and ``"taesd"`` (a tiny frozen TAESD-family autoencoder). A UNet is
either loaded from a local Stable Diffusion directory (``pretrained_path``) or built from
scratch from the size knobs of the config (the CPU configuration and ``tiny`` test twins).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slotlab.io.hub import SD_FILES, resolve_pretrained
from slotlab.nn.autoencoders import ImageAutoencoder, KLAutoencoder, PixelSpace, SpaceToDepth, TinyAutoencoder
from slotlab.nn.mask_attention import install_mask_biased_attention, pack_slot_masks, uniform_masks

__all__ = [
    "DiffusionDecoderConfig",
    "SlotDiffusionDecoder",
    "cpu_config",
    "diffusion_target",
    "forward_diffuse",
    "classifier_free_guidance",
    "encode_empty_prompt",
    "tiny_text_encoder_twin",
    "sd21_unet_config",
    "sd21_vae_config",
    "make_sampler",
    "SAMPLERS",
]

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
LATENT_SPACES = ("vae", "pixel", "taesd", "space_to_depth")
UNCONDITIONAL_BRANCHES = ("empty_prompt", "null_slots")
# beta_start/beta_end of each schedule: Stable Diffusion's "scaled_linear" and DDPM's "linear".
BETA_RANGES = {"scaled_linear": (0.00085, 0.012), "linear": (1e-4, 0.02), "squaredcos_cap_v2": None}
# Conditioning dropout when none is configured: the reference recipe trains without it and relies
# on the pretrained UNet's own empty-prompt branch; a learned null token needs dropout to learn.
DEFAULT_CONDITION_DROPOUT = {"empty_prompt": 0.0, "null_slots": 0.1}
WEIGHTS_FORMAT = "slotlab.diffusion_decoder"

SD_DOWNLOAD_HINT = (
    "On a machine that is online, set pretrained_path to a hub id and pass --allow-download, or "
    "download a Stable Diffusion 2.x repository in diffusers layout there, e.g. "
    "huggingface_hub.snapshot_download('stabilityai/stable-diffusion-2-1', local_dir=DIR) "
    "(the v-prediction model GLASS uses) or 'stabilityai/stable-diffusion-2-1-base' "
    "(epsilon prediction, 512 px), copy DIR to this machine and set pretrained_path=DIR. "
    "For tests without weights use tiny=True."
)


@dataclass
class DiffusionDecoderConfig:
    """Configuration of :class:`SlotDiffusionDecoder`.

    Defaults follow GLASS (SD 2.1 UNet + VAE at 256x256, 1024-d slots, the scheduler's own
    v-prediction, empty-prompt unconditional branch). The UNet/scheduler knobs below
    ``beta_schedule`` apply only to a UNet built from scratch (no ``pretrained_path``).

    Attributes:
        pretrained_path: local SD 2.x directory in diffusers layout (unet/, vae/, scheduler/;
            text_encoder/ and tokenizer/ for the empty-prompt branch). Loaded with
            ``local_files_only=True``.
        tiny: random test twins for the parts that would need weights: a tiny AutoencoderKL
            (latent="vae"), a random TAESD (latent="taesd" without ``taesd_path``) and a tiny
            random CLIP text encoder for the empty-prompt embedding.
        latent: "vae" (AutoencoderKL), "pixel" (diffuse pixels), "space_to_depth" (pixels with
            each f x f block folded into channels, f = ``space_to_depth_factor``: 64x64x3 ->
            16x16x48 for f = 4) or "taesd" (tiny autoencoder).
        space_to_depth_factor: f of latent="space_to_depth".
        taesd_path: directory with ``<name>_encoder.pth`` / ``<name>_decoder.pth`` TAESD weights.
        taesd_latent_scale: divisor of raw TAESD latents (default: the measured FLUX.2 value).
        resolution: side of the square images the decoder reconstructs (GLASS: 256).
        cross_attention_dim: slot width the UNet cross-attends to (SD 2.1: 1024).
        prediction_type: "epsilon" | "v_prediction" | "sample"; None = the scheduler's own
            (SD 2.1: v_prediction; a scheduler built from scratch also uses v_prediction).
        unconditional: classifier-free guidance branch. "empty_prompt": the CLIP embedding of
            the empty prompt cut to K tokens (GLASS's released sampling code); "null_slots": a
            learned null token, trained through ``condition_dropout``.
        condition_dropout: probability of replacing a sample's slots by the unconditional
            tokens in training; None = 0.0 for "empty_prompt", 0.1 for "null_slots".
        num_train_timesteps, beta_schedule: noise schedule of a from-scratch scheduler
            ("scaled_linear" = Stable Diffusion's betas 0.00085..0.012, "linear" = DDPM's
            1e-4..0.02, "squaredcos_cap_v2" = cosine).
        block_out_channels: UNet widths per resolution level.
        layers_per_block: ResNet layers per level.
        attention_head_dim: width of one attention head (heads = level width / this).
        cross_attention_levels: which levels have (self- and cross-) attention; the mid block
            always has it. Keep attention at low resolutions on a CPU.
        norm_num_groups: GroupNorm groups in the UNet.
        coordinate_channels: append two fixed channels with the (x, y) position in [-1, 1] to
            the UNet input, an absolute position signal beyond what zero padding gives a small
            UNet. Not in the paper; off by default (no measurable gain in short CPU runs).
        mask_bias_grid: not in the paper. ``G``: each context token is a slot followed by its
            mask pooled to G x G, and cross-attention adds ``log mask`` at each position to
            the logits (:mod:`slotlab.nn.mask_attention`), telling the decoder where each
            slot's object is; build tokens with :meth:`SlotDiffusionDecoder.context`.
            ``None`` (default): GLASS's plain cross-attention to the slots.
        mask_bias_hard: with ``mask_bias_grid``, pool one-hot argmax masks instead of the soft
            ones: a slot gets no weight where it does not own the pixels, so dropping it
            leaves nothing to draw its object from.
    """

    pretrained_path: str | None = None
    tiny: bool = False
    latent: str = "vae"
    taesd_path: str | None = None
    taesd_latent_scale: float | None = None
    space_to_depth_factor: int = 4
    resolution: int = 256
    cross_attention_dim: int = 1024
    prediction_type: str | None = None
    unconditional: str = "empty_prompt"
    condition_dropout: float | None = None
    num_train_timesteps: int = 1000
    beta_schedule: str = "scaled_linear"
    block_out_channels: tuple[int, ...] = (32, 64)
    layers_per_block: int = 1
    attention_head_dim: int = 32
    cross_attention_levels: tuple[bool, ...] = (False, True)
    norm_num_groups: int = 8
    coordinate_channels: bool = False
    mask_bias_grid: int | None = None
    mask_bias_hard: bool = False

    def __post_init__(self) -> None:
        self.block_out_channels = tuple(int(c) for c in self.block_out_channels)
        self.cross_attention_levels = tuple(bool(c) for c in self.cross_attention_levels)
        _check_choice("latent", self.latent, LATENT_SPACES)
        _check_choice("unconditional", self.unconditional, UNCONDITIONAL_BRANCHES)
        _check_choice("beta_schedule", self.beta_schedule, tuple(BETA_RANGES))
        if self.prediction_type is not None:
            _check_choice("prediction_type", self.prediction_type, PREDICTION_TYPES)
        if self.latent != "taesd" and (self.taesd_path is not None or self.taesd_latent_scale is not None):
            raise ValueError(
                f"DiffusionDecoderConfig: taesd_path/taesd_latent_scale apply to latent='taesd' only "
                f"(latent={self.latent!r}); remove them or set latent='taesd'"
            )
        if self.latent != "space_to_depth" and self.space_to_depth_factor != 4:
            raise ValueError(
                f"DiffusionDecoderConfig: space_to_depth_factor applies to latent='space_to_depth' only "
                f"(latent={self.latent!r}); remove it or set latent='space_to_depth'"
            )
        if self.space_to_depth_factor < 1:
            raise ValueError(f"DiffusionDecoderConfig.space_to_depth_factor must be >= 1, got {self.space_to_depth_factor}")
        if self.mask_bias_grid is not None and self.mask_bias_grid < 1:
            raise ValueError(f"DiffusionDecoderConfig.mask_bias_grid must be >= 1 (or None), got {self.mask_bias_grid}")
        if self.mask_bias_hard and self.mask_bias_grid is None:
            raise ValueError("DiffusionDecoderConfig.mask_bias_hard needs mask_bias_grid: set it, or drop mask_bias_hard")
        if self.condition_dropout is not None and not 0.0 <= self.condition_dropout < 1.0:
            raise ValueError(f"DiffusionDecoderConfig.condition_dropout must be in [0, 1), got {self.condition_dropout}")
        if self.unconditional == "null_slots" and self.effective_condition_dropout == 0.0:
            raise ValueError(
                "DiffusionDecoderConfig: unconditional='null_slots' learns its null token only "
                "through condition_dropout > 0 (e.g. 0.1); set it, or use 'empty_prompt'."
            )
        if len(self.cross_attention_levels) != len(self.block_out_channels):
            raise ValueError(
                f"DiffusionDecoderConfig.cross_attention_levels {self.cross_attention_levels} needs "
                f"one entry per block_out_channels level {self.block_out_channels}"
            )
        for width in self.block_out_channels:
            if width % self.attention_head_dim or width % self.norm_num_groups:
                raise ValueError(
                    f"DiffusionDecoderConfig: UNet width {width} must be divisible by "
                    f"attention_head_dim={self.attention_head_dim} and norm_num_groups={self.norm_num_groups}"
                )
        if self.pretrained_path is not None:
            self._check_pretrained_combination()

    def _check_pretrained_combination(self) -> None:
        if self.tiny:
            raise ValueError("DiffusionDecoderConfig: tiny=True builds random twins; drop it or pretrained_path")
        if self.latent != "vae":
            raise ValueError(
                f"DiffusionDecoderConfig: a pretrained Stable Diffusion UNet works in its VAE's latent "
                f"space; latent='{self.latent}' needs a UNet built from scratch (pretrained_path=None)"
            )
        changed = [f.name for f in fields(self) if f.name in _FROM_SCRATCH_FIELDS and getattr(self, f.name) != f.default]
        if changed:
            raise ValueError(
                f"DiffusionDecoderConfig: {', '.join(changed)} shape a UNet/scheduler built from scratch "
                f"and have no effect with pretrained_path (the directory brings its own); remove them"
            )

    @property
    def effective_condition_dropout(self) -> float:
        """The configured dropout, or the default of the unconditional branch."""
        if self.condition_dropout is not None:
            return float(self.condition_dropout)
        return DEFAULT_CONDITION_DROPOUT[self.unconditional]


_FROM_SCRATCH_FIELDS = frozenset(
    {"num_train_timesteps", "beta_schedule", "block_out_channels", "layers_per_block",
     "attention_head_dim", "cross_attention_levels", "norm_num_groups", "coordinate_channels"}
)  # fmt: skip


def cpu_config(cross_attention_dim: int = 64, taesd_path: str | None = None, **overrides) -> DiffusionDecoderConfig:
    """A configuration that learns on the 64x64 built-in scenes on a 2-core CPU in minutes.

    Without ``taesd_path``: pixel-space diffusion at 32x32 (downsample the scenes), a two-level
    UNet (32, 64) with self/cross-attention only at 16x16 and in the mid block (about 1 M
    parameters). With ``taesd_path`` (a TAESD-family weight directory, e.g. the FLUX.2 tiny
    autoencoder): the full 64x64 images as 8x8x32 latents and a UNet (64, 128) with attention
    at both levels (about 4 M parameters; faster and better per minute, see
    benchmarks/bench_diffusion_decoder.py). Both use a learned null token for guidance (no
    Stable Diffusion text encoder on a CPU). ``overrides`` replace any field, e.g.
    ``coordinate_channels=True``.
    """
    settings = dict(
        latent="pixel",
        resolution=32,
        cross_attention_dim=cross_attention_dim,
        unconditional="null_slots",
        block_out_channels=(32, 64),
        layers_per_block=1,
        attention_head_dim=32,
        cross_attention_levels=(False, True),
        norm_num_groups=8,
    )
    if taesd_path is not None:
        settings.update(
            latent="taesd", taesd_path=str(taesd_path), resolution=64,
            block_out_channels=(64, 128), cross_attention_levels=(True, True),
        )  # fmt: skip
    settings.update(overrides)
    return DiffusionDecoderConfig(**settings)


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"DiffusionDecoderConfig.{name}={value!r} is not one of {', '.join(choices)}")


# ----------------------------------------------------------------------------- diffusion maths


def _broadcast(per_sample: Tensor, like: Tensor) -> Tensor:
    return per_sample.reshape(-1, *([1] * (like.dim() - 1))).to(like.dtype)


def forward_diffuse(x0: Tensor, noise: Tensor, alpha_bar: Tensor) -> Tensor:
    """Forward process q(x_t | x_0): x_t = sqrt(a_t) x_0 + sqrt(1 - a_t) eps, a_t = alpha_bar (B,)."""
    a = _broadcast(alpha_bar, x0)
    return a.sqrt() * x0 + (1.0 - a).sqrt() * noise


def diffusion_target(x0: Tensor, noise: Tensor, alpha_bar: Tensor, prediction_type: str) -> Tensor:
    """Regression target of the denoiser in L_recon (GLASS Eq. 3 as a denoising loss).

    ``epsilon``: eps; ``v_prediction``: v = sqrt(a_t) eps - sqrt(1 - a_t) x_0 (Salimans & Ho,
    2022; SD 2.1); ``sample``: x_0. ``alpha_bar`` holds a_t per sample (B,).
    """
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "sample":
        return x0
    if prediction_type == "v_prediction":
        a = _broadcast(alpha_bar, x0)
        return a.sqrt() * noise - (1.0 - a).sqrt() * x0
    raise ValueError(f"prediction_type {prediction_type!r} is not one of {', '.join(PREDICTION_TYPES)}")


def classifier_free_guidance(unconditional: Tensor, conditional: Tensor, scale: float) -> Tensor:
    """Classifier-free guidance (Ho & Salimans, 2022): u + s (c - u); s = 1 is the conditional model."""
    return unconditional + scale * (conditional - unconditional)


# ----------------------------------------------------------------------------- samplers


def _dpmsolver_pp(config) -> "object":
    from diffusers import DPMSolverMultistepScheduler

    return DPMSolverMultistepScheduler.from_config(config, algorithm_type="dpmsolver++")


def _ddim(config) -> "object":
    from diffusers import DDIMScheduler

    return DDIMScheduler.from_config(config)


def _ddpm(config) -> "object":
    from diffusers import DDPMScheduler

    return DDPMScheduler.from_config(config)


# Sampler name -> factory taking the training scheduler's config (same betas, prediction type).
SAMPLERS: dict[str, Callable] = {"dpmsolver++": _dpmsolver_pp, "ddim": _ddim, "ddpm": _ddpm}


def make_sampler(name: str, training_scheduler_config) -> "object":
    """A fresh diffusers scheduler for sampling, sharing the training noise schedule."""
    if name not in SAMPLERS:
        raise ValueError(f"sampler {name!r} is not one of {', '.join(SAMPLERS)}")
    return SAMPLERS[name](training_scheduler_config)


# ----------------------------------------------------------------------------- parts


def sd21_unet_config(**overrides) -> dict:
    """UNet2DConditionModel configuration of Stable Diffusion 2.1 (about 866M parameters)."""
    config = dict(
        sample_size=96,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(320, 640, 1280, 1280),
        layers_per_block=2,
        attention_head_dim=(5, 10, 20, 20),  # diffusers' name for the number of heads
        cross_attention_dim=1024,
        use_linear_projection=True,
        upcast_attention=True,
        norm_num_groups=32,
    )
    config.update(overrides)
    return config


def sd21_vae_config(**overrides) -> dict:
    """AutoencoderKL configuration of Stable Diffusion 2.1 (about 84M parameters, 8x down)."""
    config = dict(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(128, 256, 512, 512),
        layers_per_block=2,
        latent_channels=4,
        norm_num_groups=32,
        sample_size=768,
        scaling_factor=0.18215,
    )
    config.update(overrides)
    return config


def _tiny_vae(resolution: int) -> nn.Module:
    """A random two-level AutoencoderKL (2x down, 4 latent channels) with SD's scaling factor."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(16, 32),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=resolution,
        scaling_factor=0.18215,
    )


def _unet_from_config(config: DiffusionDecoderConfig, channels: int, sample_size: int) -> nn.Module:
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


def _scheduler_from_config(config: DiffusionDecoderConfig) -> "object":
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


def _pretrained_root(config: DiffusionDecoderConfig) -> Path:
    """The local directory of ``pretrained_path`` (a directory or a hub id, see slotlab.io.hub)."""
    return resolve_pretrained(config.pretrained_path, "diffusion_decoder.pretrained_path", SD_FILES)


def _require_sd_parts(root: Path, parts: tuple[str, ...]) -> None:
    """Fail early, naming every missing part of a local Stable Diffusion directory."""
    if not root.is_dir():
        raise FileNotFoundError(f"DiffusionDecoderConfig.pretrained_path={root} is not a directory. {SD_DOWNLOAD_HINT}")
    missing = [part + "/" for part in parts if not (root / part).is_dir()]
    if missing:
        raise FileNotFoundError(
            f"Stable Diffusion directory {root} lacks {', '.join(missing)} (diffusers layout: "
            f"unet/, vae/, scheduler/, text_encoder/, tokenizer/). {SD_DOWNLOAD_HINT}"
        )


def _load_pretrained_parts(config: DiffusionDecoderConfig) -> tuple[nn.Module, nn.Module, object]:
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

    root = _pretrained_root(config)
    _require_sd_parts(root, ("unet", "vae", "scheduler"))
    unet = UNet2DConditionModel.from_pretrained(root, subfolder="unet", local_files_only=True)
    vae = AutoencoderKL.from_pretrained(root, subfolder="vae", local_files_only=True)
    scheduler = DDPMScheduler.from_pretrained(root, subfolder="scheduler", local_files_only=True)
    if config.prediction_type is not None:
        scheduler = DDPMScheduler.from_config(scheduler.config, prediction_type=config.prediction_type)
    return unet, vae, scheduler


def encode_prompt_ids(text_encoder: nn.Module, input_ids: Tensor) -> Tensor:
    """Token ids (1, L) -> the text encoder's last hidden states (L, D), as SD conditions on them."""
    with torch.no_grad():
        return text_encoder(input_ids.to(text_encoder.device)).last_hidden_state[0].float()


def encode_empty_prompt(text_encoder: nn.Module, tokenizer) -> Tensor:
    """CLIP embedding (L, D) of the empty prompt padded to the tokenizer's length (SD: 77).

    CLIP's text transformer is causal, so its first K rows equal the embedding of the empty
    prompt padded to only K tokens, which is what GLASS's sampling code feeds as the negative
    branch; the decoder therefore stores all L rows once and cuts them to K when sampling.
    """
    input_ids = tokenizer(
        "", padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids
    return encode_prompt_ids(text_encoder, input_ids)


def empty_prompt_from_directory(root: Path) -> Tensor:
    """The (L, D) empty-prompt embedding of the text encoder in a local SD directory."""
    from transformers import CLIPTextModel, CLIPTokenizer

    _require_sd_parts(root, ("text_encoder", "tokenizer"))
    tokenizer = CLIPTokenizer.from_pretrained(root, subfolder="tokenizer", local_files_only=True)
    text_encoder = CLIPTextModel.from_pretrained(root, subfolder="text_encoder", local_files_only=True).eval()
    return encode_empty_prompt(text_encoder, tokenizer)


def tiny_text_encoder_twin(dim: int, length: int = 77) -> tuple[nn.Module, Tensor]:
    """A random 2-layer CLIP text encoder of width ``dim`` and the ids (1, length) of the empty prompt.

    Tests only: it runs the empty-prompt path without Stable Diffusion weights (ids: start
    token, end token, padding).
    """
    from transformers import CLIPTextConfig, CLIPTextModel

    bos, eos, pad = 0, 1, 2
    text_config = CLIPTextConfig(
        vocab_size=16, hidden_size=dim, intermediate_size=2 * dim, num_hidden_layers=2,
        num_attention_heads=1, max_position_embeddings=length,
        bos_token_id=bos, eos_token_id=eos, pad_token_id=pad,
    )  # fmt: skip
    input_ids = torch.tensor([[bos, eos] + [pad] * (length - 2)])
    return CLIPTextModel(text_config).eval(), input_ids


def _build_autoencoder(config: DiffusionDecoderConfig, vae: nn.Module | None) -> ImageAutoencoder:
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
        return KLAutoencoder(_tiny_vae(config.resolution))
    raise ValueError(
        "DiffusionDecoderConfig: latent='vae' needs Stable Diffusion's VAE: set pretrained_path "
        f"(or pass vae=...), tiny=True for a random test twin, or latent='pixel'/'taesd'. {SD_DOWNLOAD_HINT}"
    )


def _empty_prompt_embedding(config: DiffusionDecoderConfig) -> Tensor:
    """The (L, D) empty-prompt embedding for configs that do not receive one explicitly."""
    if config.pretrained_path is not None:
        return empty_prompt_from_directory(_pretrained_root(config))
    if config.tiny:
        text_encoder, input_ids = tiny_text_encoder_twin(config.cross_attention_dim)
        return encode_prompt_ids(text_encoder, input_ids)
    raise ValueError(
        "DiffusionDecoderConfig: unconditional='empty_prompt' needs the CLIP embedding of the empty "
        "prompt, which comes from Stable Diffusion's text encoder (pretrained_path with text_encoder/ "
        "and tokenizer/) or is passed as unconditional_embedding=(L, D) tensor. A UNet trained from "
        "scratch never saw that embedding: use unconditional='null_slots' instead."
    )


# ----------------------------------------------------------------------------- the decoder


class SlotDiffusionDecoder(nn.Module):
    """Slot-conditioned diffusion decoder: slots replace the text tokens of a UNet's cross-attention.

    Builds every part the config names; parts passed explicitly take precedence. With
    ``config.pretrained_path`` the UNet, VAE and scheduler load from the local SD directory
    (``local_files_only=True``) and the empty-prompt embedding is computed once with its text
    encoder; otherwise the UNet is random from the config's size knobs.

    Args:
        config: the decoder configuration.
        unet: a ``UNet2DConditionModel`` whose ``cross_attention_dim`` equals the slot width.
        vae: an ``AutoencoderKL`` for ``latent="vae"`` (frozen here).
        scheduler: the training noise scheduler (diffusers ``DDPMScheduler``).
        unconditional_embedding: (L, D) empty-prompt embedding for
            ``unconditional="empty_prompt"``, instead of computing it; stored as a buffer
            (saved with the weights).
        autoencoder: the image autoencoder, instead of building the one ``latent`` names.
    """

    def __init__(
        self,
        config: DiffusionDecoderConfig,
        unet: nn.Module | None = None,
        vae: nn.Module | None = None,
        scheduler=None,
        unconditional_embedding: Tensor | None = None,
        autoencoder: ImageAutoencoder | None = None,
    ) -> None:
        super().__init__()
        if config.pretrained_path is not None and (unet is None or vae is None or scheduler is None):
            loaded_unet, loaded_vae, loaded_scheduler = _load_pretrained_parts(config)
            unet = loaded_unet if unet is None else unet
            vae = loaded_vae if vae is None else vae
            scheduler = loaded_scheduler if scheduler is None else scheduler
        if vae is not None and config.latent != "vae":
            raise ValueError(f"a vae was passed but DiffusionDecoderConfig.latent={config.latent!r}; set latent='vae'")
        self.config = config
        self.autoencoder = autoencoder if autoencoder is not None else _build_autoencoder(config, vae)
        if unet is None:
            side = config.resolution // self.autoencoder.downscale_factor
            unet = _unet_from_config(config, self.autoencoder.latent_channels, side)
        self.unet = unet
        self.noise_scheduler = scheduler if scheduler is not None else _scheduler_from_config(config)
        if config.mask_bias_grid is not None:
            install_mask_biased_attention(self.unet, config.cross_attention_dim, config.mask_bias_grid)
        self.prediction_type: str = config.prediction_type or self.noise_scheduler.config.prediction_type
        self.condition_dropout = config.effective_condition_dropout
        self._check_parts()
        alphas_cumprod = self.noise_scheduler.alphas_cumprod.detach().clone().float()
        self.register_buffer("alphas_cumprod", alphas_cumprod, persistent=False)
        self.null_slot: nn.Parameter | None = None
        self.empty_prompt_embedding: Tensor | None
        if config.unconditional == "null_slots":
            # One token: K identical keys attend exactly like one, so it serves every K.
            self.null_slot = nn.Parameter(torch.randn(1, config.cross_attention_dim) * 0.02)
            self.register_buffer("empty_prompt_embedding", None)
        else:
            if unconditional_embedding is None:
                unconditional_embedding = _empty_prompt_embedding(config)
            self._check_embedding(unconditional_embedding)
            self.register_buffer("empty_prompt_embedding", unconditional_embedding.detach().clone().float())

    # -- construction --------------------------------------------------------------------

    @classmethod
    def from_config(cls, config: DiffusionDecoderConfig, **parts) -> "SlotDiffusionDecoder":
        """``SlotDiffusionDecoder(config, **parts)``: the name other slotlab modules use."""
        return cls(config, **parts)

    def architecture(self) -> dict:
        """Every part's shape as JSON: :meth:`from_architecture` rebuilds the decoder from it
        without the Stable Diffusion directory or TAESD files (a checkpoint stores it)."""
        record = {"unet": _public_config(self.unet.config), "scheduler": _public_config(self.noise_scheduler.config)}
        if isinstance(self.autoencoder, KLAutoencoder):
            record["vae"] = _public_config(self.autoencoder.vae.config)
        if isinstance(self.autoencoder, TinyAutoencoder):
            record["taesd"] = self.autoencoder.architecture()
        if self.empty_prompt_embedding is not None:
            record["empty_prompt_shape"] = list(self.empty_prompt_embedding.shape)
        return record

    @classmethod
    def from_architecture(cls, config: DiffusionDecoderConfig, architecture: dict) -> "SlotDiffusionDecoder":
        """A decoder of a stored shape with placeholder weights; the checkpoint's weights follow.

        Nothing is read from ``config.pretrained_path`` or ``config.taesd_path``.
        """
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
        return cls(config, **parts)

    def _check_parts(self) -> None:
        config, unet, autoencoder = self.config, self.unet, self.autoencoder
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

    def _check_embedding(self, embedding: Tensor) -> None:
        if embedding.dim() != 2 or embedding.shape[1] != self.config.cross_attention_dim:
            raise ValueError(
                f"unconditional_embedding must be (L, {self.config.cross_attention_dim}), got {tuple(embedding.shape)}"
            )

    # -- properties ------------------------------------------------------------------------

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """(C, h, w) of the diffused tensor."""
        side = self.config.resolution // self.autoencoder.downscale_factor
        return (self.autoencoder.latent_channels, side, side)

    def denoise(self, noisy: Tensor, timesteps: Tensor, context: Tensor) -> Tensor:
        """The UNet's prediction for x_t at t given the context tokens (B, K, D)."""
        if self.config.coordinate_channels:
            noisy = torch.cat([noisy, _coordinate_grid(noisy).expand(noisy.shape[0], -1, -1, -1)], dim=1)
        return self.unet(noisy, timesteps, encoder_hidden_states=context).sample

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The UNet's parameters (and the null token): the autoencoder stays frozen."""
        frozen = {id(p) for p in self.autoencoder.parameters()}
        return [p for p in self.parameters() if id(p) not in frozen]

    # -- conditioning ------------------------------------------------------------------------

    @property
    def context_dim(self) -> int:
        """Width of a context token: the slot width, plus G^2 mask values with ``mask_bias_grid``."""
        grid = self.config.mask_bias_grid
        return self.config.cross_attention_dim + (grid * grid if grid is not None else 0)

    def context(self, slots: Tensor, masks: Tensor | None = None) -> Tensor:
        """The context tokens (B, K, context_dim) the decoder conditions on, from slots (B, K, D)
        and, with ``mask_bias_grid``, their masks (B, K, H, W) in [0, 1]; edits (removing,
        adding, swapping) act on these tokens."""
        grid = self.config.mask_bias_grid
        if grid is None:
            return slots
        if masks is None:
            raise ValueError("this decoder has mask_bias_grid set: pass the slots' masks (B, K, H, W) as well")
        return pack_slot_masks(slots, masks, grid, hard=self.config.mask_bias_hard)

    def unconditional_tokens(self, batch_size: int, num_slots: int) -> Tensor:
        """(B, K, context_dim) tokens of the unconditional branch (empty prompt cut to K, or the
        null token; with ``mask_bias_grid``, masks of ones: no bias)."""
        if self.null_slot is not None:
            tokens = self.null_slot.expand(batch_size, num_slots, -1)
        else:
            available = self.empty_prompt_embedding.shape[0]
            if num_slots > available:
                raise ValueError(f"{num_slots} slots exceed the {available} tokens of the empty-prompt embedding")
            tokens = self.empty_prompt_embedding[:num_slots].expand(batch_size, -1, -1)
        if self.config.mask_bias_grid is not None:
            tokens = uniform_masks(tokens, self.config.mask_bias_grid)
        return tokens

    def drop_conditions(self, slots: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """In training, replace each sample's slots by the unconditional tokens with p = condition_dropout."""
        if not self.training or self.condition_dropout == 0.0:
            return slots
        batch, num_slots, _ = slots.shape
        rand_device = generator.device if generator is not None else slots.device
        dropped = torch.rand(batch, generator=generator, device=rand_device).to(slots.device) < self.condition_dropout
        unconditional = self.unconditional_tokens(batch, num_slots).to(slots.dtype)
        return torch.where(dropped[:, None, None], unconditional, slots)

    # -- training ------------------------------------------------------------------------------

    def _check_slots(self, slots: Tensor) -> None:
        if slots.dim() != 3 or slots.shape[-1] != self.context_dim:
            what = "cross_attention_dim" if self.config.mask_bias_grid is None else "slots + masks, see context()"
            raise ValueError(f"slots must be (B, K, {self.context_dim}) ({what}), got {tuple(slots.shape)}")

    def _check_images(self, images: Tensor, slots: Tensor) -> None:
        size = self.config.resolution
        if images.dim() != 4 or images.shape[1] != 3 or images.shape[-2:] != (size, size):
            raise ValueError(
                f"images must be (B, 3, {size}, {size}) (DiffusionDecoderConfig.resolution); got "
                f"{tuple(images.shape)}: resize with slotlab.ops.resize.resize_image"
            )
        if images.shape[0] != slots.shape[0]:
            raise ValueError(f"images batch {images.shape[0]} != slots batch {slots.shape[0]}")
        low, high = (float(v) for v in images.detach().aminmax())
        if low < -1e-3 or high > 1.0 + 1e-3:
            raise ValueError(
                f"images must be in [0, 1] (got {low:.3f}..{high:.3f}); the decoder maps them to its "
                f"autoencoder's range itself"
            )

    def sample_timesteps(self, batch_size: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
        """t ~ U{0, ..., T-1} per sample."""
        rand_device = generator.device if generator is not None else device
        num_steps = self.alphas_cumprod.shape[0]
        return torch.randint(0, num_steps, (batch_size,), generator=generator, device=rand_device).to(device)

    def loss(self, images: Tensor, slots: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """GLASS Eq. 3, L_recon: the denoising MSE of the slot-conditioned UNet.

        Images (B, 3, R, R) in [0, 1] are encoded by the frozen autoencoder (scaled latents),
        t ~ U{0..T-1}, x_t = sqrt(a_t) x_0 + sqrt(1 - a_t) eps, and the UNet, cross-attending to
        the slots (B, K, D) (with ``mask_bias_grid``: the tokens of :meth:`context`), regresses
        the target of the prediction type (eps, v or x_0).
        Gradients reach the UNet and the slots, never the autoencoder.
        """
        self._check_slots(slots)
        self._check_images(images, slots)
        latents = self.autoencoder.encode(images, generator=generator)
        noise = _randn(latents.shape, generator, latents.device, latents.dtype)
        timesteps = self.sample_timesteps(latents.shape[0], generator, latents.device)
        alpha_bar = self.alphas_cumprod[timesteps]
        noisy = forward_diffuse(latents, noise, alpha_bar)
        context = self.drop_conditions(slots, generator)
        prediction = self.denoise(noisy, timesteps, context)
        target = diffusion_target(latents, noise, alpha_bar, self.prediction_type)
        return F.mse_loss(prediction.float(), target.float())

    # -- sampling ------------------------------------------------------------------------------

    @torch.no_grad()
    def sample(
        self,
        slots: Tensor,
        num_steps: int = 50,
        guidance_scale: float = 1.0,
        generator: torch.Generator | None = None,
        scheduler: str = "dpmsolver++",
    ) -> Tensor:
        """Generate images (B, 3, R, R) in [0, 1] from slots (B, K, D) (or :meth:`context` tokens).

        DPM-Solver++ (multistep, 2nd order) by default, on the training noise schedule.
        ``guidance_scale`` != 1 applies classifier-free guidance with the configured
        unconditional branch (GLASS: 1.3 for FID images, 3 for composition; 0 samples the
        unconditional model). Deterministic for a given ``generator``.
        """
        self._check_slots(slots)
        sampler = make_sampler(scheduler, self.noise_scheduler.config)
        sampler.set_timesteps(num_steps, device=slots.device)
        batch, num_slots, _ = slots.shape
        latents = _randn((batch, *self.latent_shape), generator, slots.device, slots.dtype)
        latents = latents * sampler.init_noise_sigma
        guided = guidance_scale != 1.0
        context = slots
        if guided:
            context = torch.cat([self.unconditional_tokens(batch, num_slots).to(slots.dtype), slots])
        for t in sampler.timesteps:
            model_input = torch.cat([latents, latents]) if guided else latents
            model_input = sampler.scale_model_input(model_input, t)
            prediction = self.denoise(model_input, t, context)
            if guided:
                prediction = classifier_free_guidance(*prediction.chunk(2), guidance_scale)
            latents = sampler.step(prediction, t, latents, generator=generator).prev_sample
        return self.autoencoder.decode(latents)

    # -- weights --------------------------------------------------------------------------------

    def _own_state(self) -> dict[str, Tensor]:
        """Everything except the frozen autoencoder (which comes from its own weight files)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("autoencoder.")}

    def save_weights(self, path: str | Path) -> None:
        """Write the UNet, the null token / empty-prompt embedding and the config to safetensors."""
        from safetensors.torch import save_file

        tensors = {k: v.detach().contiguous().cpu() for k, v in self._own_state().items()}
        metadata = {"format": WEIGHTS_FORMAT, "config": json.dumps(asdict(self.config))}
        save_file(tensors, str(path), metadata=metadata)

    def load_weights(self, path: str | Path) -> None:
        """Load weights written by :meth:`save_weights`; every tensor must match."""
        from safetensors.torch import load_file

        state = load_file(str(path))
        expected = self._own_state()
        missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
        if missing or unexpected:
            raise ValueError(
                f"{path}: weights do not fit this decoder's configuration (missing {missing[:5]}, "
                f"unexpected {unexpected[:5]}); build it with SlotDiffusionDecoder.from_weights"
            )
        self.load_state_dict(state, strict=False)

    @classmethod
    def from_weights(cls, path: str | Path, **config_overrides) -> "SlotDiffusionDecoder":
        """Rebuild a decoder from :meth:`save_weights` output (config read from the file).

        ``config_overrides`` replace stored fields, e.g. ``pretrained_path`` or ``taesd_path``
        on another machine.
        """
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            embedding = handle.get_tensor("empty_prompt_embedding") if "empty_prompt_embedding" in handle.keys() else None
        if metadata.get("format") != WEIGHTS_FORMAT:
            raise ValueError(f"{path}: not a slotlab diffusion decoder weight file (metadata format missing)")
        stored = json.loads(metadata["config"])
        stored.update(config_overrides)
        decoder = cls.from_config(DiffusionDecoderConfig(**stored), unconditional_embedding=embedding)
        decoder.load_weights(path)
        return decoder


def _public_config(config) -> dict:
    """A diffusers config without its bookkeeping entries (``_name_or_path`` is a Path, not JSON)."""
    return {key: value for key, value in dict(config).items() if not key.startswith("_")}


def _coordinate_grid(like: Tensor) -> Tensor:
    """(1, 2, h, w) coordinates x, y running from -1 (first column/row) to 1 (last)."""
    height, width = like.shape[-2:]
    ys = torch.linspace(-1.0, 1.0, height, device=like.device, dtype=like.dtype)
    xs = torch.linspace(-1.0, 1.0, width, device=like.device, dtype=like.dtype)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([grid_x, grid_y])[None]


def _randn(shape, generator: torch.Generator | None, device: torch.device, dtype: torch.dtype) -> Tensor:
    """Standard normal noise drawn on the generator's device (reproducible), then moved."""
    rand_device = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=rand_device, dtype=dtype).to(device)
