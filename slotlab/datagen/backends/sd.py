"""The Stable Diffusion backend (GLASS Sec. 4): sampling with classifier-free guidance while the
cross- and self-attention are captured and turned into a pseudo semantic mask.
"""

from __future__ import annotations

import inspect
from typing import Sequence

import torch
from torch import Tensor

from slotlab.data.sample import IGNORE_INDEX
from slotlab.datagen.attention import AttentionCapture, CaptureConfig, ClassTokens, capturing
from slotlab.datagen.backends.base import Generation
from slotlab.datagen.config import DTYPES, SCHEDULERS, SDConfig
from slotlab.datagen.lexicon import LABEL_SET_NAMES, LabelSet, label_set
from slotlab.datagen.prompts import Prompt
from slotlab.datagen.pseudo_masks import pseudo_semantic_mask
from slotlab.diffusion.sd import SDComponents, encode_text, tiny_sd_components
from slotlab.ops.random import seeded_generator


def caption_words() -> list[str]:
    """Words the tiny tokenizer keeps whole: class names, aliases and common caption words."""
    words = set("a an the of on in with and photo image high quality two three next to".split())
    for name in LABEL_SET_NAMES:
        for form in label_set(name).forms:
            words.update(form.split())
    return sorted(words)


def tiny_engine_sd(seed: int = 0) -> SDComponents:
    """The tiny Stable Diffusion twin whose tokenizer keeps every class name and common
    caption word whole (tests and benchmarks of this backend)."""
    return tiny_sd_components(seed, caption_words())


#: Capture settings that fit ``tiny_sd_components`` (32x32 images).
TINY_SD_CAPTURE = CaptureConfig(cross_resolutions=(8,), self_resolution=16)


def class_token_span(tokenizer, name: str) -> int:
    """Number of tokens of a class name (without start and end tokens)."""
    return len(tokenizer(name, add_special_tokens=False).input_ids)


def class_tokens(
    tokenizer, text_encoder, classes_per_image: Sequence[Sequence[str]], mode: str, device: torch.device
) -> ClassTokens:
    """Encode the class prompts of a batch (GLASS Sec. 4: one prompt per class).

    Token positions skip the start token; a name of n tokens gets weight 1/n on each.
    mode "joint" (Dataset Diffusion code) encodes "c1 c2 ..." once per image instead.
    """
    length = tokenizer.model_max_length
    texts, spans, image_index = [], [], []
    for b, classes in enumerate(classes_per_image):
        offset = 1  # skip the start token
        for name in classes:
            size = class_token_span(tokenizer, name)
            start = offset if mode == "joint" else 1
            spans.append((start, start + size))
            offset += size
        texts += [" ".join(classes)] * len(classes) if mode == "joint" else list(classes)
        image_index += [b] * len(classes)
    if any(end >= length for _, end in spans):
        raise ValueError(f"class prompt longer than the text encoder's {length} tokens: use class_prompts 'per-class'")
    weights = torch.zeros(len(texts), length)
    for p, (start, end) in enumerate(spans):
        weights[p, start:end] = 1.0 / (end - start)
    return ClassTokens(
        embeddings=encode_text(tokenizer, text_encoder, texts, device),
        token_weights=weights.to(device),
        image_index=torch.tensor(image_index, dtype=torch.long, device=device),
    )


def initial_latents(seeds: Sequence[int], shape: tuple[int, ...], device: torch.device, dtype: torch.dtype) -> Tensor:
    """One standard-normal latent per seed, drawn on the CPU so any device gives the same."""
    noise = [torch.randn(shape, generator=seeded_generator(int(s))) for s in seeds]
    return torch.stack(noise).to(device=device, dtype=dtype)


class SDBackend:
    """Stable Diffusion sampling with classifier-free guidance and attention capture."""

    def __init__(self, components: SDComponents, config: SDConfig, labels: LabelSet, device: torch.device | str) -> None:
        import diffusers

        self.config = config
        self.labels = labels
        self.device = torch.device(device)
        self.dtype = DTYPES[config.dtype]
        self.parts = components.to(self.device, self.dtype)
        if config.scheduler is not None:
            scheduler_cls = getattr(diffusers, SCHEDULERS[config.scheduler])
            self.parts.scheduler = scheduler_cls.from_config(self.parts.scheduler.config)
        factor = components.vae_scale_factor
        if config.image_size % factor:
            raise ValueError(f"sd.image_size {config.image_size} must be a multiple of the VAE factor {factor}")
        self.latent_side = config.image_size // factor
        self.capture = AttentionCapture(config.capture)
        self.captured_steps = 0
        self.settings = {
            "backend": "sd",
            "scheduler": type(self.parts.scheduler).__name__,
            "num_inference_steps": config.num_inference_steps,
            "guidance_scale": config.guidance_scale,
            "negative_prompt": config.negative_prompt,
            "image_size": config.image_size,
            "class_prompts": config.class_prompts,
            "thresholds": [config.pseudo_masks.threshold_low, config.pseudo_masks.threshold_high],
        }

    @property
    def uses_guidance(self) -> bool:
        return self.config.guidance_scale > 1.0

    def generate(self, prompts: Sequence[Prompt], seeds: Sequence[int]) -> list[Generation]:
        out: list[Generation] = []
        for start in range(0, len(prompts), self.config.batch_size):
            stop = start + self.config.batch_size
            out += self._generate_batch(prompts[start:stop], seeds[start:stop])
        return out

    @torch.no_grad()
    def _generate_batch(self, prompts: Sequence[Prompt], seeds: Sequence[int]) -> list[Generation]:
        parts, b = self.parts, len(prompts)
        text = encode_text(parts.tokenizer, parts.text_encoder, [p.text for p in prompts], self.device)
        if self.uses_guidance:
            negative = encode_text(parts.tokenizer, parts.text_encoder, [self.config.negative_prompt] * b, self.device)
            text = torch.cat([negative, text])
        classes = class_tokens(
            parts.tokenizer, parts.text_encoder, [p.classes for p in prompts], self.config.class_prompts, self.device
        )
        shape = (parts.unet.config.in_channels, self.latent_side, self.latent_side)
        latents = initial_latents(seeds, shape, self.device, self.dtype)
        self.capture.start(classes, slice(b, 2 * b) if self.uses_guidance else slice(0, b))
        with capturing(parts.unet, self.capture):
            latents = self._denoise(latents, text, seeds)
        images = self._decode(latents)
        masks = self._pseudo_masks(prompts)
        meta = {"captured_steps": self.captured_steps}
        return [Generation(image=images[i], pseudo_mask=masks[i], meta=meta) for i in range(b)]

    def _denoise(self, latents: Tensor, text: Tensor, seeds: Sequence[int]) -> Tensor:
        scheduler = self.parts.scheduler
        scheduler.set_timesteps(self.config.num_inference_steps, device=self.device)
        latents = latents * scheduler.init_noise_sigma
        step_kwargs = {}
        if "generator" in inspect.signature(scheduler.step).parameters:  # stochastic samplers
            step_kwargs["generator"] = [seeded_generator(int(s) + 1) for s in seeds]
        num_steps = len(scheduler.timesteps)
        self.captured_steps = 0
        for step, t in enumerate(scheduler.timesteps):
            self.capture.active = self.config.capture.step_is_captured(step, num_steps)
            self.captured_steps += self.capture.active
            model_input = torch.cat([latents] * 2) if self.uses_guidance else latents
            model_input = scheduler.scale_model_input(model_input, t)
            prediction = self.parts.unet(model_input, t, encoder_hidden_states=text).sample
            if self.uses_guidance:
                unconditional, conditional = prediction.chunk(2)
                prediction = unconditional + self.config.guidance_scale * (conditional - unconditional)
            latents = scheduler.step(prediction, t, latents, **step_kwargs).prev_sample
        self.capture.active = False
        return latents

    def _decode(self, latents: Tensor) -> Tensor:
        vae = self.parts.vae
        images = vae.decode(latents / vae.config.scaling_factor).sample
        return (images.float() / 2 + 0.5).clamp(0, 1).cpu()

    def _pseudo_masks(self, prompts: Sequence[Prompt]) -> Tensor:
        size = (self.config.image_size, self.config.image_size)
        counts = [len(p.classes) for p in prompts]
        if max(counts) == 0:  # no class named: nothing is known about any pixel
            return torch.full((len(prompts), *size), IGNORE_INDEX, dtype=torch.int64)
        cross = self.capture.cross_maps()  # {r: (P, r, r)}
        ids = torch.zeros(len(prompts), max(counts), dtype=torch.long)
        padded = {r: torch.zeros(len(prompts), max(counts), r, r) for r in cross}
        offset = 0
        for i, prompt in enumerate(prompts):
            n = counts[i]
            ids[i, :n] = torch.tensor([self.labels.class_id(c) for c in prompt.classes], dtype=torch.long)
            for r, maps in cross.items():
                padded[r][i, :n] = maps[offset : offset + n].float().cpu()
            offset += n
        self_attention = self.capture.self_attention().float().cpu()
        return pseudo_semantic_mask(padded, self_attention, ids, size, self.config.pseudo_masks)
