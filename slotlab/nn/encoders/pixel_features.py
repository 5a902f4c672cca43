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


def position_fourier_features(height: int, width: int, frequencies: int, device=None) -> Tensor:
    """(4F, H, W): sin and cos of pi 2^k x and pi 2^k y, k < F, with x, y in [0, 1]."""
    ys = torch.linspace(0.0, 1.0, height, device=device)
    xs = torch.linspace(0.0, 1.0, width, device=device)
    y, x = torch.meshgrid(ys, xs, indexing="ij")
    scales = math.pi * 2.0 ** torch.arange(frequencies, device=device)
    phase = torch.cat([x[None] * scales[:, None, None], y[None] * scales[:, None, None]])
    return torch.cat([phase.sin(), phase.cos()])


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


def pooling_factor(scale: float) -> int:
    """Power of two to pool by before a windowed operation at ``scale`` pixels, so that the
    scale is at most 2 cells of the pooled grid and the window stays small (the scenes'
    colours are flat, so pooling loses little)."""
    factor = 1
    while scale / factor > 2:
        factor *= 2
    return factor


def colour_neighbour_weights(pixels: Tensor, scale: float, colour_sigma: float) -> tuple[Tensor, int]:
    """Bilateral weights ``G_scale(i - j) exp(-|c_i - c_j|^2 / 2 colour_sigma^2)`` of each
    pixel ``i`` of (B, 3, H, W) to the pixels ``j`` of its window: (B, k * k, H * W), and the
    window radius. The spatial Gaussian sums to 1 over the window."""
    radius = max(1, math.ceil(2.5 * scale))
    b, c, h, w = pixels.shape
    padded = F.pad(pixels, (radius,) * 4, mode="replicate")
    window = F.unfold(padded, 2 * radius + 1).view(b, c, -1, h * w)
    colour = torch.exp(-(window - pixels.reshape(b, c, 1, h * w)).pow(2).sum(1) / (2 * colour_sigma**2))
    offsets = torch.arange(-radius, radius + 1, device=pixels.device, dtype=pixels.dtype)
    spatial = torch.exp(-0.5 * (offsets[:, None] ** 2 + offsets[None] ** 2) / scale**2).flatten()
    return colour * (spatial / spatial.sum())[None, :, None], radius


def colour_affinity_features(pixels: Tensor, scales: tuple[float, ...], colour_sigma: float) -> Tensor:
    """How much of each pixel's surroundings has its colour: (B, 3, H, W) -> (B, S, H, W).

    Per scale ``s``, the Gaussian-weighted share (window std ``s``) of the pixels whose
    colour is close to the pixel's own (bilateral weights, :func:`colour_neighbour_weights`).
    Inside a flat-coloured object it is near 1 at small scales and falls as the window
    outgrows the object; at a convex tip it is low, in a concave notch high. Averaged over
    an object, the profile over scales describes its outline (compact, thin, pointed).
    Computed on a grid pooled by :func:`pooling_factor` and resized back. No weights.
    """
    features = []
    for scale in scales:
        factor = pooling_factor(scale)
        pooled = F.avg_pool2d(pixels, factor) if factor > 1 else pixels
        weights, _ = colour_neighbour_weights(pooled, scale / factor, colour_sigma)
        share = weights.sum(1).view(pooled.shape[0], 1, *pooled.shape[-2:])
        features.append(F.interpolate(share, size=pixels.shape[-2:], mode="bilinear", align_corners=False)
                        if factor > 1 else share)
    return torch.cat(features, dim=1)


def colour_guided_mean(pixels: Tensor, features: Tensor, scale: float, colour_sigma: float) -> Tensor:
    """Each pixel's ``features`` averaged over the surrounding pixels of its own colour
    (a bilateral filter at spatial std ``scale``): (B, 3, H, W), (B, C, H, W) -> (B, C, H, W).

    On the scenes, where an object is one flat colour, this spreads the mean of a local
    description over the object: every pixel of it then says what the object looks like as
    a whole, as a DINO token does, not what its own corner looks like.
    """
    factor = pooling_factor(scale)
    pooled = F.avg_pool2d(pixels, factor) if factor > 1 else pixels
    values = F.avg_pool2d(features, factor) if factor > 1 else features
    weights, radius = colour_neighbour_weights(pooled, scale / factor, colour_sigma)
    b, c, h, w = values.shape
    window = F.unfold(F.pad(values, (radius,) * 4, mode="replicate"), 2 * radius + 1).view(b, c, -1, h * w)
    mean = (window * weights[:, None]).sum(2) / weights.sum(1, keepdim=True).clamp_min(1e-8)
    mean = mean.view(b, c, h, w)
    return F.interpolate(mean, size=features.shape[-2:], mode="bilinear", align_corners=False) if factor > 1 else mean
