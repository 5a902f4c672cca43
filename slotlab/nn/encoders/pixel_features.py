"""Fixed per-pixel features of the CPU patch encoder: colour and position Fourier features,
edge context and structure-tensor features. No weights.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def colour_fourier_features(pixels: Tensor, frequencies: Tensor) -> Tensor:
    """Random Fourier features of each pixel's colour: (B, 3, H, W) -> (B, 2F, H, W).

    ``[sin(2 pi B c), cos(2 pi B c)]`` for a fixed frequency matrix ``B`` (F, 3): a fixed
    non-linear colour expansion that makes colour clusters easier to separate linearly.
    """
    phase = 2 * math.pi * torch.einsum("fc,bchw->bfhw", frequencies, pixels)
    return torch.cat([phase.sin(), phase.cos()], dim=1)


def fourier_of_positions(xy: Tensor, frequencies: int) -> Tensor:
    """(..., 2) positions (x, y) in [0, 1] -> (..., 4F): sin and cos of pi 2^k x and pi 2^k y, k < F."""
    scales = math.pi * 2.0 ** torch.arange(frequencies, device=xy.device)
    phase = torch.cat([xy[..., :1] * scales, xy[..., 1:] * scales], -1)
    return torch.cat([phase.sin(), phase.cos()], -1)


def position_fourier_features(height: int, width: int, frequencies: int, device=None) -> Tensor:
    """(4F, H, W): :func:`fourier_of_positions` of every pixel, with x, y in [0, 1] across the image."""
    ys = torch.linspace(0.0, 1.0, height, device=device)
    xs = torch.linspace(0.0, 1.0, width, device=device)
    y, x = torch.meshgrid(ys, xs, indexing="ij")
    return fourier_of_positions(torch.stack([x, y], -1), frequencies).permute(2, 0, 1)


def check_position_options(frequencies: int, scale: float, kind: str = "position") -> None:
    """A scale means nothing without the Fourier features it scales: refuse it (``kind``
    "position": the patch and ssl encoders' pixel positions; "region": the ssl encoder's
    region centroids)."""
    if scale != 1.0 and not frequencies:
        raise ValueError(f"encoder.{kind}_scale scales encoder.{kind}_frequencies' features: "
                         f"set {kind}_frequencies > 0 or unset it")


def gaussian_blur(images: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of (B, C, H, W), reflecting at the borders (radius 3 sigma)."""
    radius = max(1, math.ceil(3 * sigma))
    offsets = torch.arange(-radius, radius + 1, device=images.device, dtype=images.dtype)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    channels = images.shape[1]
    pad = (radius, radius, radius, radius)
    x = F.pad(images, pad, mode="reflect" if min(images.shape[-2:]) > radius else "replicate")
    x = F.conv2d(x, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    return F.conv2d(x, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)


def image_gradients(images: Tensor) -> tuple[Tensor, Tensor]:
    """Central differences (d/dx, d/dy) of (B, C, H, W), replicated at the borders."""
    x = F.pad(images, (1, 1, 1, 1), mode="replicate")
    return (x[..., 1:-1, 2:] - x[..., 1:-1, :-2]) / 2, (x[..., 2:, 1:-1] - x[..., :-2, 1:-1]) / 2


def edge_context_features(pixels: Tensor, scales: tuple[float, ...]) -> Tensor:
    """Where the colour edges around each pixel lie: (B, 3, H, W) -> (B, 3 S, H, W).

    The colour edge strength (norm of the RGB gradient) is blurred at each scale ``s``; per
    scale a pixel gets the blurred strength and its gradient, scaled by ``s``. The gradient
    points to the nearby edges, so inside an object it says which side of the object the
    pixel is on, at the scale of the blur. Fixed filters: no weights.
    """
    gx, gy = image_gradients(pixels)
    edges = (gx.pow(2) + gy.pow(2)).sum(1, keepdim=True).sqrt()
    features = []
    for scale in scales:
        blurred = gaussian_blur(edges, scale)
        bx, by = image_gradients(blurred)
        features += [blurred * scale, bx * scale**2, by * scale**2]
    return torch.cat(features, dim=1)


#: Gain of the structure-tensor features: their spread on the scenes (std 0.07-0.24 per
#: channel) times 4 comes near that of the colour Fourier features (0.71), so the random
#: projection does not drown them.
STRUCTURE_FEATURE_GAIN = 4.0


def structure_tensor_features(pixels: Tensor, scales: tuple[float, ...]) -> Tensor:
    """Local edge geometry around each pixel: (B, 3, H, W) -> (B, 2 S, H, W).

    The colour structure tensor (outer products of the RGB gradients, summed over channels)
    is blurred at each scale ``s``; per scale a pixel gets the square roots of its two
    eigenvalues, times ``STRUCTURE_FEATURE_GAIN``. Both are 0 on flat colour; near a straight
    edge only the larger one is large; near a corner or a tight curve both are. Averaged
    over an object they describe its outline (how much straight edge, how many corners)
    whatever its rotation. Fixed filters: no weights.
    """
    gx, gy = image_gradients(pixels)
    products = [(gx * gx).sum(1, keepdim=True), (gx * gy).sum(1, keepdim=True), (gy * gy).sum(1, keepdim=True)]
    tensor = torch.cat(products, dim=1)
    features = []
    for scale in scales:
        jxx, jxy, jyy = gaussian_blur(tensor, scale).unbind(1)
        half_trace = (jxx + jyy) / 2
        spread = ((jxx - jyy).pow(2) / 4 + jxy.pow(2)).sqrt()
        features += [(half_trace + spread).clamp_min(0).sqrt(), (half_trace - spread).clamp_min(0).sqrt()]
    return STRUCTURE_FEATURE_GAIN * torch.stack(features, dim=1)


def image_to_patches(pixels: Tensor, patch_size: int) -> Tensor:
    """(B, C, H, W) -> (B, N, C * p * p), non-overlapping patches in raster order."""
    patches = F.unfold(pixels, kernel_size=patch_size, stride=patch_size)
    return patches.transpose(1, 2)
