"""Stable Diffusion parts from a local diffusers directory, and their tiny random twins."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor

from slotlab.io.hub import SD_FILES, resolve_pretrained


@dataclass
class SDComponents:
    """The parts of a Stable Diffusion model the engine drives."""

    unet: torch.nn.Module
    vae: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: object
    scheduler: object

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def save(self, directory: str | Path) -> Path:
        """Write the diffusers directory layout ``load_sd_components`` reads."""
        directory = Path(directory)
        for name in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
            getattr(self, name).save_pretrained(directory / name)
        return directory

    def to(self, device: torch.device | str, dtype: torch.dtype = torch.float32) -> "SDComponents":
        for module in (self.unet, self.vae, self.text_encoder):
            module.to(device=device).eval().requires_grad_(False)
            if module.dtype != dtype:
                module.to(dtype=dtype)
        return self


def load_sd_components(directory: str | Path) -> SDComponents:
    """Stable Diffusion (e.g. 2.1-base) from a local diffusers directory or a hub id (fetched only
    where downloads are allowed, see slotlab.io.hub)."""
    import diffusers
    from transformers import CLIPTextModel, CLIPTokenizer

    directory = resolve_pretrained(directory, "--weights", SD_FILES)
    missing = [p for p in ("unet", "vae", "text_encoder", "tokenizer", "scheduler") if not (directory / p).is_dir()]
    if missing:
        raise FileNotFoundError(
            f"{directory} is not a Stable Diffusion directory (missing {', '.join(missing)}/). Download one where a "
            "network is available, e.g. `hf download stabilityai/stable-diffusion-2-1-base --local-dir DIR`, copy "
            "DIR here and pass it with --weights DIR; or pass the hub id with --allow-download where it is online"
        )
    config = json.loads((directory / "scheduler" / "scheduler_config.json").read_text())
    scheduler_cls = getattr(diffusers, config.get("_class_name", ""), None)
    if scheduler_cls is None:
        raise ValueError(f"{directory}/scheduler/scheduler_config.json names no diffusers scheduler class")
    return SDComponents(
        unet=diffusers.UNet2DConditionModel.from_pretrained(directory / "unet", local_files_only=True),
        vae=diffusers.AutoencoderKL.from_pretrained(directory / "vae", local_files_only=True),
        text_encoder=CLIPTextModel.from_pretrained(directory / "text_encoder", local_files_only=True),
        tokenizer=CLIPTokenizer.from_pretrained(directory / "tokenizer", local_files_only=True),
        scheduler=scheduler_cls.from_pretrained(directory / "scheduler", local_files_only=True),
    )


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


def tiny_sd_components(seed: int = 0, vocabulary: Sequence[str] = ()) -> SDComponents:
    """Random toy Stable Diffusion parts with the real classes, for tests and benchmarks.

    Images are 32x32 (VAE factor 2 -> 16x16 latents); the UNet has attention at 16x16
    and 8x8 in its down, mid and up blocks, so ``TINY_SD_CAPTURE`` reads cross-attention
    at 8 and self-attention at 16.
    """
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    tokenizer = tiny_clip_tokenizer(vocabulary)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_attention_heads=4,
            num_hidden_layers=2, max_position_embeddings=77, bos_token_id=0, eos_token_id=1, pad_token_id=1,
        )
    )
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32,
        attention_head_dim=4, norm_num_groups=8,
    )
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, block_out_channels=(16, 16), latent_channels=4, norm_num_groups=8,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2, sample_size=32,
    )
    scheduler = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False)
    return SDComponents(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler)


@torch.no_grad()
def encode_text(tokenizer, text_encoder, texts: Sequence[str], device: torch.device) -> Tensor:
    """(len(texts), 77, D) CLIP token embeddings, padded to the model length."""
    if not texts:
        return torch.zeros(0, tokenizer.model_max_length, text_encoder.config.hidden_size, device=device)
    ids = tokenizer(
        list(texts), padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids
    return text_encoder(ids.to(device))[0]
