"""The denoising objective's maths: the forward process and the regression target of each
prediction type (GLASS Eq. 3, L_recon, as a denoising loss).
"""

from __future__ import annotations

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
