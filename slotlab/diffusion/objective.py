"""The denoising objective's maths: the forward process and the regression target of each
prediction type (GLASS Eq. 3, L_recon, as a denoising loss).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

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


def denoising_loss(denoising: Denoising) -> Tensor:
    """GLASS Eq. 3, L_recon = MSE(I_gen, I_recon), as latent diffusion trains it: the mean
    squared error between the denoiser's prediction and its target (in fp32)."""
    return F.mse_loss(denoising.prediction.float(), denoising.target.float())
