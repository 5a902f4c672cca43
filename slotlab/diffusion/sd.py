"""Stable Diffusion: the one loader of its parts from a local diffusers directory (never
downloads), text encoding, the SD 2.1 shapes, and the one set of tiny random twins (a CLIP
tokenizer and text encoder, a VAE, a UNet) that the decoder, the data engine and the tests use.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor

from slotlab.io.hub import SD_FILES, resolve_pretrained
from slotlab.ops.random import fixed_randomness

#: The sub-directories of a diffusers Stable Diffusion directory.
SD_PARTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")

SD_DOWNLOAD_HINT = (
    "On a machine that is online, pass the hub id with --allow-download, or download a Stable "
    "Diffusion 2.x repository in diffusers layout there, e.g. "
    "huggingface_hub.snapshot_download('stabilityai/stable-diffusion-2-1', local_dir=DIR) "
    "(the v-prediction model GLASS uses) or 'stabilityai/stable-diffusion-2-1-base' "
    "(epsilon prediction, 512 px), copy DIR to this machine and set pretrained_path=DIR. "
    "For tests without weights use tiny=True."
)


@dataclass
class SDComponents:
    """The parts of a Stable Diffusion model; parts that were not loaded are None."""

    unet: torch.nn.Module | None = None
    vae: torch.nn.Module | None = None
    text_encoder: torch.nn.Module | None = None
    tokenizer: object | None = None
    scheduler: object | None = None

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def save(self, directory: str | Path) -> Path:
        """Write the diffusers directory layout ``load_sd_components`` reads."""
        directory = Path(directory)
        for name in SD_PARTS:
            if getattr(self, name) is not None:
                getattr(self, name).save_pretrained(directory / name)
        return directory

    def to(self, device: torch.device | str, dtype: torch.dtype = torch.float32) -> "SDComponents":
        for module in (self.unet, self.vae, self.text_encoder):
            module.to(device=device).eval().requires_grad_(False)
            if module.dtype != dtype:
                module.to(dtype=dtype)
        return self


def load_sd_components(directory: str | Path, parts: Sequence[str] = SD_PARTS, option: str = "--weights") -> SDComponents:
    """``parts`` of Stable Diffusion (e.g. 2.1) from a local diffusers directory or a hub id
    (fetched only where downloads are allowed, see slotlab.io.hub).

    Errors name every missing part and ``option``, the setting that gave the directory.
    """
    import diffusers
    from transformers import CLIPTextModel, CLIPTokenizer

    directory = resolve_pretrained(directory, option, SD_FILES)
    if not directory.is_dir():
        raise FileNotFoundError(f"{option}={directory} is not a directory. {SD_DOWNLOAD_HINT}")
    missing = [p + "/" for p in parts if not (directory / p).is_dir()]
    if missing:
        raise FileNotFoundError(
            f"Stable Diffusion directory {directory} ({option}) lacks {', '.join(missing)} (diffusers layout: "
            f"{', '.join(p + '/' for p in SD_PARTS)}). {SD_DOWNLOAD_HINT}"
        )
    loaders = {
        "unet": lambda path: diffusers.UNet2DConditionModel.from_pretrained(path, local_files_only=True),
        "vae": lambda path: diffusers.AutoencoderKL.from_pretrained(path, local_files_only=True),
        "text_encoder": lambda path: CLIPTextModel.from_pretrained(path, local_files_only=True).eval(),
        "tokenizer": lambda path: CLIPTokenizer.from_pretrained(path, local_files_only=True),
        "scheduler": lambda path: _scheduler_class(path).from_pretrained(path, local_files_only=True),
    }
    return SDComponents(**{part: loaders[part](directory / part) for part in parts})


def _scheduler_class(path: Path):
    import diffusers

    config = json.loads((path / "scheduler_config.json").read_text())
    scheduler_cls = getattr(diffusers, config.get("_class_name", ""), None)
    if scheduler_cls is None:
        raise ValueError(f"{path}/scheduler_config.json names no diffusers scheduler class")
    return scheduler_cls


@torch.no_grad()
def encode_text(tokenizer, text_encoder, texts: Sequence[str], device: torch.device) -> Tensor:
    """(len(texts), 77, D) CLIP token embeddings, padded to the model length."""
    if not texts:
        return torch.zeros(0, tokenizer.model_max_length, text_encoder.config.hidden_size, device=device)
    ids = tokenizer(
        list(texts), padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids
    return text_encoder(ids.to(device))[0]


def empty_prompt_from_directory(directory: str | Path, option: str = "diffusion_decoder.pretrained_path") -> Tensor:
    """The (L, D) empty-prompt embedding of the text encoder of a Stable Diffusion directory."""
    parts = load_sd_components(directory, ("text_encoder", "tokenizer"), option)
    return encode_empty_prompt(parts.text_encoder, parts.tokenizer)


def encode_empty_prompt(text_encoder: torch.nn.Module, tokenizer) -> Tensor:
    """CLIP embedding (L, D) of the empty prompt padded to the tokenizer's length (SD: 77).

    CLIP's text transformer is causal, so its first K rows equal the embedding of the empty
    prompt padded to only K tokens, which is what GLASS's sampling code feeds as the negative
    branch; the decoder therefore stores all L rows once and cuts them to K when sampling.
    """
    return encode_text(tokenizer, text_encoder, [""], text_encoder.device)[0].float()


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


# ----------------------------------------------------------------------------- tiny twins


def tiny_clip_tokenizer(vocabulary: Sequence[str]):
    """An offline CLIP tokenizer with a tiny vocabulary, trained here as a byte-level BPE
    on ``vocabulary`` (each word becomes one token); other words split into
    several tokens, which exercises multi-token class names."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import CLIPTokenizer

    special = ["<|startoftext|>", "<|endoftext|>"]
    bpe = Tokenizer(models.BPE(end_of_word_suffix="</w>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=1_000_000, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        end_of_word_suffix="</w>", show_progress=False,
    )
    bpe.train_from_iterator(sorted(set(vocabulary)), trainer)
    model = json.loads(bpe.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    return CLIPTokenizer(vocab=model["vocab"], merges=merges, model_max_length=77)


def tiny_text_encoder(hidden_size: int, vocab_size: int, num_heads: int = 1) -> torch.nn.Module:
    """A random 2-layer CLIP text encoder of width ``hidden_size`` (token ids: start 0, end 1,
    padding 1, as ``tiny_clip_tokenizer`` makes them)."""
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=2 * hidden_size, num_attention_heads=num_heads,
        num_hidden_layers=2, max_position_embeddings=77, bos_token_id=0, eos_token_id=1, pad_token_id=1,
    )  # fmt: skip
    return CLIPTextModel(config).eval()


def tiny_vae(sample_size: int) -> torch.nn.Module:
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
        sample_size=sample_size,
        scaling_factor=0.18215,
    )


def tiny_sd_components(seed: int = 0, vocabulary: Sequence[str] = ()) -> SDComponents:
    """Random toy Stable Diffusion parts with the real classes, for tests and benchmarks.

    Images are 32x32 (VAE factor 2 -> 16x16 latents); the UNet cross-attends to 32-wide
    tokens and has attention at 16x16 and 8x8 in its down, mid and up blocks. The tokenizer
    keeps each word of ``vocabulary`` whole.
    """
    from diffusers import DDIMScheduler, UNet2DConditionModel

    with fixed_randomness(seed):
        tokenizer = tiny_clip_tokenizer(vocabulary)
        text_encoder = tiny_text_encoder(32, len(tokenizer), num_heads=4)
        unet = UNet2DConditionModel(
            sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
            down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32,
            attention_head_dim=4, norm_num_groups=8,
        )
        vae = tiny_vae(32)
    scheduler = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False)
    return SDComponents(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler)
