"""Capture of diffusion attention maps for pseudo masks (GLASS Sec. 4, Dataset Diffusion).

diffusers' default attention processors never materialise attention probabilities, so
``CapturingAttnProcessor`` replaces them in the UNet. At the captured resolutions and
denoising steps it computes the probabilities explicitly and adds, to running sums in an
``AttentionCapture``:

- self-attention of the conditional branch (image queries and keys), summed over heads;
- class cross-attention: each class is encoded as its own prompt (``ClassTokens``); its
  keys come from the layer's own key projection and the queries are the image queries
  of the conditional branch, the softmax runs over that class prompt's tokens and the
  class's tokens are averaged (start token skipped; "traffic light" = mean of two).

The UNet's own output is unchanged: the class prompts only read the layer's queries.
Sums are over (step, layer, head); only one map per class and one self-attention matrix
per image are kept, never one per step. Everywhere else the processor defers to
diffusers' ``AttnProcessor2_0``.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

if TYPE_CHECKING:
    from diffusers.models.attention_processor import Attention

#: UNet parts attention can be captured from, named after diffusers' module prefixes.
UNET_PLACES: dict[str, str] = {"down_blocks": "down", "mid_block": "mid", "up_blocks": "up"}


@dataclass(frozen=True)
class CaptureConfig:
    """Which attention maps are averaged into the pseudo-mask inputs.

    cross_resolutions: side lengths of the latent-grid attention layers whose class
      cross-attention is averaged (Dataset Diffusion: 16 for 512x512 images); each
      resolution's mean is resized to ``self_resolution`` and the results averaged.
    self_resolution: the one self-attention resolution (32 for 512x512 images).
    places: UNet parts to read, any of "down", "mid", "up".
    steps: [start, end) fraction of the denoising steps that are captured; (0, 1) = all.
    """

    cross_resolutions: tuple[int, ...] = (16,)
    self_resolution: int = 32
    places: tuple[str, ...] = ("down", "mid", "up")
    steps: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self) -> None:
        unknown = set(self.places) - set(UNET_PLACES.values())
        if unknown or not self.places:
            raise ValueError(f"capture.places must be a non-empty subset of {sorted(UNET_PLACES.values())}, got {self.places}")
        if not self.cross_resolutions or min(self.cross_resolutions) < 1 or self.self_resolution < 1:
            raise ValueError("capture resolutions must be positive side lengths, e.g. cross_resolutions: [16]")
        start, end = self.steps
        if not 0.0 <= start < end <= 1.0:
            raise ValueError(f"capture.steps must be [start, end) fractions with 0 <= start < end <= 1, got {self.steps}")

    def step_is_captured(self, step: int, num_steps: int) -> bool:
        start, end = self.steps
        return start <= step / num_steps < end


@dataclass
class ClassTokens:
    """The class prompts of a batch, one row per (image, class) pair.

    embeddings: (P, L, D) text-encoder output of each pair's prompt;
    token_weights: (P, L) weight of each token in the class map (1/n on the n tokens of
      the class name, 0 on start, end and padding tokens);
    image_index: (P,) the image of the batch each pair belongs to.
    """

    embeddings: Tensor
    token_weights: Tensor
    image_index: Tensor

    def __post_init__(self) -> None:
        p, length = self.token_weights.shape
        if self.embeddings.shape[:2] != (p, length) or self.image_index.shape != (p,):
            raise ValueError(
                f"ClassTokens fields disagree: embeddings {tuple(self.embeddings.shape)}, token_weights "
                f"{tuple(self.token_weights.shape)}, image_index {tuple(self.image_index.shape)}"
            )


class AttentionCapture:
    """Running sums of attention maps over steps, layers and heads for one batch."""

    def __init__(self, config: CaptureConfig) -> None:
        self.config = config
        self.active = False
        self._cond: slice = slice(None)
        self._classes: ClassTokens | None = None
        self._cross_sum: dict[int, Tensor] = {}
        self._cross_count: dict[int, int] = {}
        self._self_sum: Tensor | None = None
        self._self_count = 0
        self.seen_resolutions: set[int] = set()

    def start(self, classes: ClassTokens, conditional: slice) -> None:
        """Reset the sums for a new batch. ``conditional`` selects the conditional
        branch in the UNet batch (the second half under classifier-free guidance)."""
        self._classes = classes
        self._cond = conditional
        self._cross_sum, self._cross_count = {}, {}
        self._self_sum, self._self_count = None, 0
        self.seen_resolutions = set()
        self.active = False

    def wants(self, is_cross: bool, place: str, resolution: int) -> bool:
        if not self.active or place not in self.config.places:
            return False
        if is_cross:
            return resolution in self.config.cross_resolutions and self._classes is not None
        return resolution == self.config.self_resolution

    def add_cross(self, query: Tensor, attn: Attention, resolution: int) -> None:
        """Class cross-attention from the layer's image queries (B2, N, C)."""
        classes = self._classes
        heads = attn.heads
        q = _split_heads(query[self._cond][classes.image_index], heads)  # (P, H, N, d)
        k = _split_heads(attn.to_k(classes.embeddings.to(query.dtype)), heads)  # (P, H, L, d)
        probs = torch.softmax(q.float() @ k.float().transpose(-1, -2) * attn.scale, dim=-1)
        maps = (probs @ classes.token_weights.float()[:, None, :, None]).squeeze(-1)  # (P, H, N)
        self._accumulate_cross(resolution, maps.sum(1), heads)

    def add_self(self, probs: Tensor, resolution: int) -> None:
        """Self-attention probabilities (B2, H, N, N) of a layer; the conditional branch is kept."""
        conditional = probs[self._cond].float()
        summed = conditional.sum(1)
        self._self_sum = summed if self._self_sum is None else self._self_sum + summed
        self._self_count += conditional.shape[1]

    def _accumulate_cross(self, resolution: int, summed: Tensor, count: int) -> None:
        if resolution in self._cross_sum:
            self._cross_sum[resolution] += summed
        else:
            self._cross_sum[resolution] = summed
            self._cross_count[resolution] = 0
        self._cross_count[resolution] += count

    def cross_maps(self) -> dict[int, Tensor]:
        """{resolution r: (P, r, r)} class maps averaged over steps, layers and heads."""
        missing = set(self.config.cross_resolutions) - set(self._cross_sum)
        if missing:
            raise ValueError(self._missing_message("cross", sorted(missing)))
        return {
            r: (total / self._cross_count[r]).reshape(-1, r, r) for r, total in sorted(self._cross_sum.items())
        }

    def self_attention(self) -> Tensor:
        """(B, N, N) conditional self-attention averaged over steps, layers and heads."""
        if self._self_sum is None:
            raise ValueError(self._missing_message("self", [self.config.self_resolution]))
        return self._self_sum / self._self_count

    def _missing_message(self, kind: str, resolutions: list[int]) -> str:
        return (
            f"no {kind}-attention was captured at resolution(s) {resolutions}: the UNet has attention layers at "
            f"{sorted(self.seen_resolutions) or 'no captured step'} in places {list(self.config.places)} for this "
            "image size; set capture resolutions to those (e.g. cross 16 / self 32 for 512x512 images)"
        )


def _split_heads(x: Tensor, heads: int) -> Tensor:
    """(B, N, heads * d) -> (B, heads, N, d)."""
    b, n, c = x.shape
    return x.view(b, n, heads, c // heads).transpose(1, 2)


def _merge_heads(x: Tensor) -> Tensor:
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


class CapturingAttnProcessor:
    """A diffusers attention processor that feeds an ``AttentionCapture``."""

    def __init__(self, capture: AttentionCapture, place: str) -> None:
        from diffusers.models.attention_processor import AttnProcessor2_0

        self.capture = capture
        self.place = place
        self.plain = AttnProcessor2_0()

    def __call__(
        self, attn: Attention, hidden_states: Tensor, encoder_hidden_states: Tensor | None = None,
        attention_mask: Tensor | None = None, temb: Tensor | None = None, *args, **kwargs,
    ) -> Tensor:
        is_cross = encoder_hidden_states is not None
        resolution = _square_side(hidden_states)
        if resolution is not None and self.capture.active:
            self.capture.seen_resolutions.add(resolution)
        if resolution is None or attention_mask is not None or not self.capture.wants(is_cross, self.place, resolution):
            return self.plain(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
        _check_plain_attention(attn)
        query = attn.to_q(hidden_states)
        if is_cross:
            self.capture.add_cross(query, attn, resolution)
            key, value = attn.to_k(encoder_hidden_states), attn.to_v(encoder_hidden_states)
            out = F.scaled_dot_product_attention(
                _split_heads(query, attn.heads), _split_heads(key, attn.heads), _split_heads(value, attn.heads),
                scale=attn.scale,
            )
        else:
            key, value = attn.to_k(hidden_states), attn.to_v(hidden_states)
            q, k = _split_heads(query, attn.heads), _split_heads(key, attn.heads)
            probs = torch.softmax(q.float() @ k.float().transpose(-1, -2) * attn.scale, dim=-1)
            self.capture.add_self(probs, resolution)
            out = probs.to(value.dtype) @ _split_heads(value, attn.heads)
        out = attn.to_out[0](_merge_heads(out).to(query.dtype))
        return attn.to_out[1](out) / attn.rescale_output_factor


def _square_side(hidden_states: Tensor) -> int | None:
    """Side of the square latent grid of (B, N, C) tokens, None for other inputs."""
    if hidden_states.ndim != 3:
        return None
    side = math.isqrt(hidden_states.shape[1])
    return side if side * side == hidden_states.shape[1] else None


def _check_plain_attention(attn: Attention) -> None:
    extras = {
        "spatial_norm": attn.spatial_norm, "group_norm": attn.group_norm, "norm_cross": attn.norm_cross,
        "norm_q": attn.norm_q, "norm_k": attn.norm_k,
    }
    used = [name for name, module in extras.items() if module is not None]
    if used or attn.residual_connection:
        raise NotImplementedError(
            f"attention capture supports the plain transformer attention of Stable Diffusion UNets; this layer "
            f"also uses {used or ['residual_connection']}"
        )


def unet_place(processor_name: str) -> str:
    """'down_blocks.1.attentions.0....processor' -> 'down' (also 'mid', 'up')."""
    prefix = processor_name.split(".", 1)[0]
    if prefix not in UNET_PLACES:
        raise ValueError(f"attention processor {processor_name!r} is outside the UNet's down/mid/up blocks")
    return UNET_PLACES[prefix]


@contextmanager
def capturing(unet, capture: AttentionCapture) -> Iterator[AttentionCapture]:
    """Install capturing processors in ``unet`` for the duration of the block."""
    original = unet.attn_processors
    unet.set_attn_processor({name: CapturingAttnProcessor(capture, unet_place(name)) for name in original})
    try:
        yield capture
    finally:
        unet.set_attn_processor(original)
