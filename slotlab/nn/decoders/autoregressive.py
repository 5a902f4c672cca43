"""Autoregressive transformer decoder conditioned on slots (SLATE; SPOT Eq. 2, 4, 8, 9).

The decoder predicts token ``t`` of a sequence from the tokens before it and the slots:
its input is ``[BOS; y_1 ... y_{n-1}]`` (SPOT Eq. 2 and 8), each block runs causal
self-attention, cross-attention from the patches to the slots and a ReLU feed-forward
network (4x width), all pre-LayerNorm and bias-free in the attention projections, and a
final LayerNorm closes the stack. The last block's patch-to-slot attention, averaged over
heads and renormalised over slots, is SPOT's decoder mask ``A_DEC`` (SPOT Eq. 4).

Shared by SPOT (no position embedding: the encoder features carry position; no output
head: the prediction is the feature itself) and SLATE (a learned position embedding and
an output head over a code book, both options here).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class AutoregressiveDecoderConfig:
    """Sizes of the decoder; methods fill the ``None`` fields from their encoder and slots.

    input_dim:   d_y, width of the tokens the decoder reads and (without a head) predicts.
    slot_dim:    d_u, width of the slots.
    width:       transformer width (SPOT: 768).
    blocks:      number of transformer blocks (SPOT: 4).
    heads:       attention heads (SPOT: 6).
    num_tokens:  n, sequence length (tokens of the encoder grid).
    num_bos:     learned [BOS] tokens, one per patch order (SPOT: 9, SLATE: 1).
    dropout:     on attention probabilities and block outputs (SPOT and SLATE: 0).
    position_embedding: add a learned position embedding to the projected input (SLATE).
    output_dim:  a bias-free Linear head to this width after the final LayerNorm (SLATE:
                 the code-book size); None = no head (SPOT).
    """

    input_dim: int | None = None
    slot_dim: int | None = None
    width: int = 768
    blocks: int = 4
    heads: int = 6
    num_tokens: int | None = None
    num_bos: int = 1
    dropout: float = 0.0
    position_embedding: bool = False
    output_dim: int | None = None

    def __post_init__(self) -> None:
        if self.width % self.heads:
            raise ValueError(f"decoder.width={self.width} is not divisible by decoder.heads={self.heads}")
        if self.blocks < 1:
            raise ValueError(f"decoder.blocks={self.blocks} must be >= 1")
        if self.num_bos < 1:
            raise ValueError(f"decoder.num_bos={self.num_bos} must be >= 1")


@dataclass
class AutoregressiveDecoderOutput:
    prediction: Tensor  # (B, N, output_dim or width), in the order of the input tokens
    attention: Tensor  # (B, N, K) A_DEC: last block's cross-attention, mean over heads


def xavier_linear(in_dim: int, out_dim: int, gain: float = 1.0, bias: bool = False) -> nn.Linear:
    """Linear layer with Xavier-uniform weights (and zero bias), the SLATE/SPOT initialisation."""
    layer = nn.Linear(in_dim, out_dim, bias=bias)
    nn.init.xavier_uniform_(layer.weight, gain)
    if bias:
        nn.init.zeros_(layer.bias)
    return layer


class Attention(nn.Module):
    """Multi-head attention with bias-free projections; q is scaled by head_dim^-1/2."""

    def __init__(self, width: int, heads: int, dropout: float, gain: float):
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.q = xavier_linear(width, width)
        self.k = xavier_linear(width, width)
        self.v = xavier_linear(width, width)
        self.out = xavier_linear(width, width, gain)

    def split(self, x: Tensor) -> Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.heads, -1).transpose(1, 2)

    def forward(self, query: Tensor, context: Tensor, causal: bool = False, return_probs: bool = False):
        """(B, T, W) queries attend to (B, S, W) context -> (B, T, W) [, probs (B, H, T, S)]."""
        b, t, w = query.shape
        q, k, v = self.split(self.q(query)), self.split(self.k(context)), self.split(self.v(context))
        drop = self.dropout if self.training else 0.0
        probs = None
        if return_probs:  # materialise the probabilities (A_DEC needs them)
            logits = (q * q.shape[-1] ** -0.5) @ k.transpose(-1, -2)
            if causal:
                future = torch.ones(t, k.shape[2], dtype=torch.bool, device=q.device).triu(1)
                logits = logits.masked_fill(future, float("-inf"))
            probs = logits.softmax(-1)
            mixed = F.dropout(probs, drop, self.training) @ v
        else:  # the fused kernel: same values, no (T, S) matrix kept for backward
            mixed = F.scaled_dot_product_attention(q, k, v, dropout_p=drop, is_causal=causal)
        out = F.dropout(self.out(mixed.transpose(1, 2).reshape(b, t, w)), drop, self.training)
        return (out, probs) if return_probs else out


class DecoderBlock(nn.Module):
    """Pre-LN block: causal self-attention, patch-to-slot cross-attention, ReLU FFN.

    The first block starts its residual stream from the normalised input (as the
    SLATE/SPOT code does), the others from the raw stream.
    """

    def __init__(self, width: int, heads: int, dropout: float, gain: float, first: bool):
        super().__init__()
        self.first = first
        self.self_norm = nn.LayerNorm(width)
        self.self_attention = Attention(width, heads, dropout, gain)
        self.cross_norm = nn.LayerNorm(width)
        self.cross_attention = Attention(width, heads, dropout, gain)
        self.ffn_norm = nn.LayerNorm(width)
        hidden = nn.Linear(width, 4 * width)
        nn.init.kaiming_uniform_(hidden.weight, nonlinearity="relu")
        nn.init.zeros_(hidden.bias)
        self.ffn = nn.Sequential(hidden, nn.ReLU(), xavier_linear(4 * width, width, gain, bias=True), nn.Dropout(dropout))

    def forward(self, x: Tensor, slots: Tensor, causal: bool, return_probs: bool):
        if self.first:
            x = self.self_norm(x)
            x = x + self.self_attention(x, x, causal)
        else:
            h = self.self_norm(x)
            x = x + self.self_attention(h, h, causal)
        crossed = self.cross_attention(self.cross_norm(x), slots, return_probs=return_probs)
        crossed, probs = crossed if return_probs else (crossed, None)
        x = x + crossed
        return x + self.ffn(self.ffn_norm(x)), probs


def gather_tokens(x: Tensor, order: Tensor) -> Tensor:
    """``x[:, order]`` for an order (N,) shared by the batch or (B, N) per sample."""
    if order.ndim == 1:
        return x[:, order]
    return x.gather(1, order.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


class AutoregressiveDecoder(nn.Module):
    """Autoregressive transformer decoder over slots (SPOT Eq. 2; with orders Eq. 8, 9)."""

    def __init__(self, config: AutoregressiveDecoderConfig):
        super().__init__()
        c = self.config = config
        if c.input_dim is None or c.slot_dim is None or c.num_tokens is None:
            raise ValueError(
                "AutoregressiveDecoderConfig.input_dim, slot_dim and num_tokens must be set (methods fill them)"
            )
        self.bos = nn.Parameter(torch.randn(c.num_bos, c.input_dim) * 0.02)
        self.input_projection = nn.Sequential(xavier_linear(c.input_dim, c.width), nn.LayerNorm(c.width))
        self.slot_projection = nn.Sequential(xavier_linear(c.slot_dim, c.width), nn.LayerNorm(c.width))
        self.position = nn.Parameter(torch.randn(1, c.num_tokens, c.width) * 0.02) if c.position_embedding else None
        gain = (3 * c.blocks) ** -0.5
        self.blocks = nn.ModuleList(
            DecoderBlock(c.width, c.heads, c.dropout, gain, first=i == 0) for i in range(c.blocks)
        )
        self.norm = nn.LayerNorm(c.width)
        self.head = xavier_linear(c.width, c.output_dim) if c.output_dim else None

    def forward(
        self,
        tokens: Tensor,
        slots: Tensor,
        order: Tensor | None = None,
        bos_index: int | Tensor = 0,
        causal: bool = True,
    ) -> AutoregressiveDecoderOutput:
        """Predict (B, N, d_y) ``tokens`` from themselves (shifted) and (B, K, d_u) ``slots``.

        ``order`` (N,) or (B, N) is the patch order to decode in: position t of the
        decoded sequence reads token ``order[t]`` (SPOT Eq. 8). Prediction and A_DEC are
        returned in the tokens' own order (the inverse permutation, SPOT Eq. 9).
        ``bos_index`` (an int, or (B,) per sample) picks the [BOS] token of that order.
        """
        b, n, _ = tokens.shape
        if n != self.config.num_tokens:
            raise ValueError(f"the decoder was built for {self.config.num_tokens} tokens, got {n}")
        sequence = tokens if order is None else gather_tokens(tokens, order)
        bos = self.bos[bos_index]
        bos = bos.expand(b, 1, -1) if bos.ndim == 1 else bos.unsqueeze(1)
        x = self.input_projection(torch.cat([bos.to(tokens.dtype), sequence[:, :-1]], dim=1))
        if self.position is not None:
            x = x + self.position
        x, attention = self.run_blocks(x, self.slot_projection(slots), causal)
        prediction = self.head(x) if self.head is not None else x
        if order is not None:
            inverse = order.argsort(-1)
            prediction, attention = gather_tokens(prediction, inverse), gather_tokens(attention, inverse)
        return AutoregressiveDecoderOutput(prediction=prediction, attention=attention)

    def run_blocks(self, x: Tensor, memory: Tensor, causal: bool = True) -> tuple[Tensor, Tensor]:
        """The transformer stack on projected inputs (B, N, W) and slots (B, K, W): returns
        the final-LayerNorm output and A_DEC (B, N, K) (SPOT Eq. 4: the last block's
        cross-attention, summed over heads, renormalised over slots = the mean over heads)."""
        probs = None
        for i, block in enumerate(self.blocks):
            x, probs = block(x, memory, causal, return_probs=i == len(self.blocks) - 1)
        heads_summed = probs.sum(1)
        return self.norm(x), heads_summed / heads_summed.sum(-1, keepdim=True)
