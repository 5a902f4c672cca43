"""The denoising objective (GLASS Eq. 3, L_recon, as a denoising loss): the forward process,
the regression target of each prediction type, and one training step of a slot-conditioned
decoder (:func:`denoising_step`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from slotlab.ops.random import randn_on

if TYPE_CHECKING:
    from slotlab.diffusion.decoder import SlotDiffusionDecoder

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


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


@dataclass
class Denoising:
    """One training step of the denoiser: its prediction at a random t and the target it regresses."""

    prediction: Tensor  # (B, C, h, w) the UNet's output for x_t
    target: Tensor  # (B, C, h, w) eps, v or x_0 (see diffusion_target)


def check_images(images: Tensor, batch_size: int, resolution: int) -> None:
    """Images a decoder trains on: (B, 3, R, R) in [0, 1], one per sample of the slots, or a clear error."""
    if images.dim() != 4 or images.shape[1] != 3 or images.shape[-2:] != (resolution, resolution):
        raise ValueError(
            f"images must be (B, 3, {resolution}, {resolution}) (DiffusionDecoderConfig.resolution); got "
            f"{tuple(images.shape)}: resize with slotlab.ops.resize.resize_image"
        )
    if images.shape[0] != batch_size:
        raise ValueError(f"images batch {images.shape[0]} != slots batch {batch_size}")
    low, high = (float(v) for v in images.detach().aminmax())
    if low < -1e-3 or high > 1.0 + 1e-3:
        raise ValueError(
            f"images must be in [0, 1] (got {low:.3f}..{high:.3f}); the decoder maps them to its "
            f"autoencoder's range itself"
        )


def sample_timesteps(num_steps: int, batch_size: int, generator: torch.Generator | None, device) -> Tensor:
    """t ~ U{0, ..., T-1} per sample (T = ``num_steps``)."""
    rand_device = generator.device if generator is not None else device
    return torch.randint(0, num_steps, (batch_size,), generator=generator, device=rand_device).to(device)


def denoising_step(
    decoder: SlotDiffusionDecoder, images: Tensor, slots: Tensor, generator: torch.Generator | None = None
) -> Denoising:
    """The network side of L_recon for ``decoder`` (its :meth:`~SlotDiffusionDecoder.denoising`):
    images (B, 3, R, R) in [0, 1] encoded by its frozen autoencoder, t ~ U{0..T-1},
    x_t = sqrt(a_t) x_0 + sqrt(1 - a_t) eps, some conditions dropped for classifier-free
    guidance, and the UNet's prediction of the target of its prediction type."""
    check_images(images, slots.shape[0], decoder.config.resolution)
    latents = decoder.autoencoder.encode(images, generator=generator)
    noise = randn_on(latents.shape, generator, latents.device, latents.dtype)
    timesteps = sample_timesteps(decoder.alphas_cumprod.shape[0], latents.shape[0], generator, latents.device)
    alpha_bar = decoder.alphas_cumprod[timesteps]
    noisy = forward_diffuse(latents, noise, alpha_bar)
    prediction = decoder.denoise(noisy, timesteps, decoder.drop_conditions(slots, generator))
    return Denoising(prediction, diffusion_target(latents, noise, alpha_bar, decoder.prediction_type))


def denoising_loss(denoising: Denoising) -> Tensor:
    """GLASS Eq. 3, L_recon = MSE(I_gen, I_recon), as latent diffusion trains it: the mean
    squared error between the denoiser's prediction and its target (in fp32)."""
    return F.mse_loss(denoising.prediction.float(), denoising.target.float())
