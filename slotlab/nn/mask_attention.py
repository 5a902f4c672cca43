"""Mask-biased cross-attention: the decoder is told where each slot's object is.

Not part of GLASS, whose decoder reads positions off the slot vectors alone (DINOv2 slots
carry them). Slots learned in a few thousand CPU steps on colour features do not (measured
in docs/diffusion-decoder.md), so the small decoder cannot place objects. With
``DiffusionDecoderConfig.mask_bias_grid = G`` each context token is the slot followed by
its mask pooled to a G x G grid (:func:`pack_slot_masks`); at every UNet cross-attention
layer the query at position p attends to slot k with the logit ``q.k / sqrt(d) +
log m_k(p)`` (:class:`MaskBiasedCrossAttention`), keys and values coming from the slot
part only. Because a token carries its own mask, removing, adding or swapping tokens
edits the layout with the content, with no other bookkeeping.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from slotlab.data.sample import one_hot_masks
from slotlab.ops.resize import resize_masks_soft

#: Mask values are clamped to this floor before the log: a slot absent from a position is
#: attended to about 1e-3 as much as with a zero bias, not infinitely less (no NaN rows).
MASK_FLOOR = 1e-3


def pack_slot_masks(slots: Tensor, masks: Tensor, grid: int, hard: bool = False) -> Tensor:
    """Slots (B, K, D) and masks (B, K, H, W) in [0, 1] -> tokens (B, K, D + grid^2).

    ``hard``: each pixel first goes to its argmax slot (one-hot masks), so the pooled mask is
    the share of each grid cell the slot owns and a slot absent from a cell gets no weight.
    """
    if masks.dim() != 4 or masks.shape[:2] != slots.shape[:2]:
        raise ValueError(
            f"masks must be (B, K, H, W) for slots {tuple(slots.shape)}, got {tuple(masks.shape)}"
        )
    if hard:
        masks = one_hot_masks(masks.argmax(1), masks.shape[1])
    pooled = F.adaptive_avg_pool2d(masks.to(slots.dtype), grid)
    return torch.cat([slots, pooled.flatten(2)], dim=-1)


def uniform_masks(tokens: Tensor, grid: int) -> Tensor:
    """Tokens (B, K, D) with an all-ones mask appended (log 1 = 0: no bias), e.g. null tokens."""
    return torch.cat([tokens, tokens.new_ones(*tokens.shape[:2], grid * grid)], dim=-1)


def mask_bias(masks: Tensor, grid: int, num_queries: int) -> Tensor:
    """Flattened G x G masks (B, K, G^2) -> additive logits (B, 1, N, K) on the N-query square grid."""
    side = math.isqrt(num_queries)
    if side * side != num_queries:
        raise ValueError(f"mask-biased attention needs a square query grid, got {num_queries} queries")
    maps = resize_masks_soft(masks.reshape(masks.shape[0], masks.shape[1], grid, grid), (side, side))
    return maps.to(masks.dtype).clamp(MASK_FLOOR, 1.0).log().flatten(2).transpose(1, 2).unsqueeze(1)


class MaskBiasedCrossAttention:
    """A diffusers attention processor for cross-attention layers (``attn2``) of a UNet.

    The context tokens are (B, K, D + G^2) as :func:`pack_slot_masks` makes them; keys and
    values come from the first D channels, the rest bias the logits (:func:`mask_bias`).
    """

    def __init__(self, slot_dim: int, grid: int):
        self.slot_dim = slot_dim
        self.grid = grid

    def __call__(self, attn, hidden_states: Tensor, encoder_hidden_states: Tensor | None = None,
                 attention_mask: Tensor | None = None, temb: Tensor | None = None, *args, **kwargs) -> Tensor:  # fmt: skip
        if encoder_hidden_states is None or attention_mask is not None:
            raise ValueError("MaskBiasedCrossAttention serves cross-attention layers without an attention mask")
        residual = hidden_states
        slots = encoder_hidden_states[..., : self.slot_dim]
        masks = encoder_hidden_states[..., self.slot_dim :]
        if attn.norm_cross:
            slots = attn.norm_encoder_hidden_states(slots)
        batch, queries, _ = hidden_states.shape
        heads = attn.heads

        def split(x: Tensor) -> Tensor:
            return x.reshape(batch, -1, heads, x.shape[-1] // heads).transpose(1, 2)

        q, k, v = split(attn.to_q(hidden_states)), split(attn.to_k(slots)), split(attn.to_v(slots))
        bias = mask_bias(masks.to(q.dtype), self.grid, queries)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        out = attn.to_out[1](attn.to_out[0](out.transpose(1, 2).reshape(batch, queries, -1)))
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


def install_mask_biased_attention(unet, slot_dim: int, grid: int) -> None:
    """Give every cross-attention layer (``attn2``) of a diffusers UNet the mask-biased processor."""
    processors = dict(unet.attn_processors)
    for name in processors:
        if name.endswith("attn2.processor"):
            processors[name] = MaskBiasedCrossAttention(slot_dim, grid)
    unet.set_attn_processor(processors)
