"""Resizing and cropping of images and masks: the one implementation in slotlab.

Images (float, (..., C, H, W)) are resized bilinearly with antialiasing; label maps and
boolean masks ((..., H, W)) with nearest neighbour, so labels never blend.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def resize_image(image: Tensor, size: tuple[int, int], mode: str = "bilinear") -> Tensor:
    """Resize a float image (C, H, W) or batch (B, C, H, W) to ``size`` = (H, W)."""
    batched = image.ndim == 4
    x = image if batched else image.unsqueeze(0)
    if tuple(x.shape[-2:]) != tuple(size):
        antialias = mode in ("bilinear", "bicubic")
        align = False if mode in ("bilinear", "bicubic") else None
        x = F.interpolate(x.float(), size=size, mode=mode, align_corners=align, antialias=antialias)
    return x if batched else x[0]


def resize_mask(mask: Tensor, size: tuple[int, int]) -> Tensor:
    """Nearest-neighbour resize of a label map or bool mask (H, W) or (B, H, W)."""
    if tuple(mask.shape[-2:]) == tuple(size):
        return mask
    dtype = mask.dtype
    x = mask.reshape(-1, 1, *mask.shape[-2:]).float()
    x = F.interpolate(x, size=size, mode="nearest-exact")
    return x.reshape(*mask.shape[:-2], *size).to(dtype)


def resize_masks_soft(masks: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear resize of per-slot soft masks (B, K, h, w) -> (B, K, H, W), no antialias.

    This is how predicted slot masks are upsampled before the argmax of every protocol.
    """
    if tuple(masks.shape[-2:]) == tuple(size):
        return masks
    return F.interpolate(masks.float(), size=size, mode="bilinear", align_corners=False)


def shorter_side_size(height: int, width: int, shorter: int) -> tuple[int, int]:
    """(H, W) after resizing so that the shorter side equals ``shorter`` (aspect kept)."""
    if height <= width:
        return shorter, max(1, round(width * shorter / height))
    return max(1, round(height * shorter / width)), shorter


def center_crop_box(height: int, width: int, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """(top, left, crop_h, crop_w) of the centred crop of ``size`` inside (height, width)."""
    ch, cw = size
    if ch > height or cw > width:
        raise ValueError(f"cannot crop {size} out of ({height}, {width}): resize first")
    return (height - ch) // 2, (width - cw) // 2, ch, cw


def crop(x: Tensor, top: int, left: int, height: int, width: int) -> Tensor:
    """Crop the last two dimensions of any tensor."""
    return x[..., top : top + height, left : left + width]


def center_crop(x: Tensor, size: tuple[int, int]) -> Tensor:
    return crop(x, *center_crop_box(x.shape[-2], x.shape[-1], size))


def hflip(x: Tensor) -> Tensor:
    return torch.flip(x, dims=(-1,))
