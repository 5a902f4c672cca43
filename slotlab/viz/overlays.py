"""Pictures of segmentations: colour overlays of label maps next to their images."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from PIL.PngImagePlugin import PngInfo
from torch import Tensor

from slotlab.io.files import write_atomic


def palette(n: int) -> np.ndarray:
    """n well-separated RGB colours (uint8); colour 0 (background) is dark grey."""
    golden = 0.618033988749895
    hues = (np.arange(n) * golden) % 1.0
    colours = [_hsv_to_rgb(h, 0.75, 0.95) for h in hues]
    colours[0] = (40, 40, 40)
    return np.array(colours, dtype=np.uint8)


def _hsv_to_rgb(h: float, s: float, v: float) -> tuple[int, int, int]:
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    r, g, b = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return int(r * 255), int(g * 255), int(b * 255)


def to_uint8(image: Tensor) -> np.ndarray:
    """(3, H, W) float [0, 1] -> (H, W, 3) uint8."""
    return (image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)


def boundaries(labels: np.ndarray) -> np.ndarray:
    """Pixels whose right or lower neighbour has another label."""
    edge = np.zeros(labels.shape, dtype=bool)
    edge[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    edge[:-1, :] |= labels[:-1, :] != labels[1:, :]
    return edge


def overlay(image: Tensor, labels: Tensor, alpha: float = 0.55) -> np.ndarray:
    """Blend a label map (H, W) over an image (3, H, W); label boundaries drawn in white."""
    rgb = to_uint8(image).astype(np.float32)
    lab = labels.detach().cpu().numpy().astype(np.int64)
    colours = palette(int(lab.max()) + 1)[lab].astype(np.float32)
    out = (1 - alpha) * rgb + alpha * colours
    out[boundaries(lab)] = 255
    return out.round().astype(np.uint8)


def overlay_grid(
    images: Tensor,
    columns: dict[str, Tensor],
    scale: int = 2,
    max_rows: int = 8,
) -> Image.Image:
    """A grid: one row per image; first column the image, then one overlay per label map.

    ``columns`` maps a title (e.g. "ground truth", "dinosaur") to (B, H, W) label maps.
    """
    rows = min(max_rows, images.shape[0])
    h, w = images.shape[-2:]
    title_h = 14
    cell_w, cell_h = w * scale, h * scale
    names = ["image", *columns]
    canvas = Image.new("RGB", (cell_w * len(names), title_h + cell_h * rows), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for c, name in enumerate(names):
        draw.text((c * cell_w + 2, 1), name[: cell_w // 6], fill=(0, 0, 0))
    for r in range(rows):
        cells = [to_uint8(images[r])] + [overlay(images[r], labels[r]) for labels in columns.values()]
        for c, cell in enumerate(cells):
            tile = Image.fromarray(cell).resize((cell_w, cell_h), Image.NEAREST)
            canvas.paste(tile, (c * cell_w, title_h + r * cell_h))
    return canvas


#: The PNG text field that carries a picture's caption (read back by reports).
CAPTION_FIELD = "Description"


def save_image(image: Image.Image, path: str | Path, caption: str | None = None) -> Path:
    """Write a PNG atomically (temp name, then rename), with ``caption`` in its metadata."""
    info = PngInfo()
    if caption is not None:
        info.add_itxt(CAPTION_FIELD, caption)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return write_atomic(Path(path), buffer.getvalue())


def image_caption(path: str | Path) -> str:
    """The caption :func:`save_image` stored in a PNG, else the file's name."""
    with Image.open(path) as image:
        return getattr(image, "text", {}).get(CAPTION_FIELD) or Path(path).name


def segmentation(masks: Tensor) -> Tensor:
    """(B, K, H, W) soft masks -> (B, H, W) label map with labels 1..K (0 stays free for background)."""
    return masks.argmax(1) + 1 if masks.shape[1] else torch.zeros(masks.shape[0], *masks.shape[2:], dtype=torch.long)
