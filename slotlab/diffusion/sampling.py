"""Sampling images from a trained slot-conditioned decoder: samplers on the training noise
schedule and classifier-free guidance.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from slotlab.ops.random import randn_on


def classifier_free_guidance(unconditional: Tensor, conditional: Tensor, scale: float) -> Tensor:
    """Classifier-free guidance (Ho & Salimans, 2022): u + s (c - u); s = 1 is the conditional model."""
    return unconditional + scale * (conditional - unconditional)


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


def sample_images(
    decoder, slots: Tensor, num_steps: int, guidance_scale: float, generator: torch.Generator | None, scheduler: str
) -> Tensor:
    """Images (B, 3, R, R) in [0, 1] sampled by a ``SlotDiffusionDecoder`` from context tokens
    (B, K, D): ``scheduler`` on the training noise schedule, with classifier-free guidance on
    the decoder's unconditional branch when ``guidance_scale`` != 1."""
    sampler = make_sampler(scheduler, decoder.noise_scheduler.config)
    sampler.set_timesteps(num_steps, device=slots.device)
    batch, num_slots, _ = slots.shape
    latents = randn_on((batch, *decoder.latent_shape), generator, slots.device, slots.dtype)
    latents = latents * sampler.init_noise_sigma
    guided = guidance_scale != 1.0
    context = slots
    if guided:
        context = torch.cat([decoder.unconditional_tokens(batch, num_slots).to(slots.dtype), slots])
    for t in sampler.timesteps:
        model_input = torch.cat([latents, latents]) if guided else latents
        model_input = sampler.scale_model_input(model_input, t)
        prediction = decoder.denoise(model_input, t, context)
        if guided:
            prediction = classifier_free_guidance(*prediction.chunk(2), guidance_scale)
        latents = sampler.step(prediction, t, latents, generator=generator).prev_sample
    return decoder.autoencoder.decode(latents)
