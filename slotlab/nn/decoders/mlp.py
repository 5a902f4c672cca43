"""Spatial-broadcast MLP decoder of DINOSAUR (Seitzer et al., 2023).

It is DINOSAUR's decoder, GLASS's instance guidance (the MLP feature decoder of GLASS
Eq. 3, L_instance) and SPOT's MLP variant; the authors' GLASS and SPOT decoders compute the
same function (tests/test_parity_mlp_decoder.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from slotlab.nn.slot_attention import cartesian_grid

POSITION_INITS = ("normal", "grid")


@dataclass
class MLPDecoderConfig:
    """slot_dim -> (hidden x layers, ReLU) -> feature_dim + 1 alpha channel, per token.

    The reference GLASS code uses 3 hidden layers of 2048; the GLASS paper's table says
    hidden 1536. DINOSAUR uses 4 layers of 1024 (ViT-B). Defaults follow GLASS's paper.

    position_init: how the learned position table (added to every broadcast slot) starts.
    "normal": random normal, std 0.02 (DINOSAUR's and GLASS's code). "grid": a random linear
    projection of the 4-channel Cartesian grid (Slot Attention's soft position embedding,
    ``cartesian_grid``), so neighbouring tokens start with similar embeddings at the scale
    of nn.Linear's initialisation; needs a square token grid. Either way the table is then
    trained freely.
    """

    slot_dim: int = 768
    feature_dim: int | None = None  # None: filled from the encoder by the method
    num_tokens: int | None = None
    hidden_dim: int = 1536
    hidden_layers: int = 3
    zero_bias_init: bool = False
    position_init: str = "normal"

    def __post_init__(self) -> None:
        if self.position_init not in POSITION_INITS:
            raise ValueError(f"decoder.position_init={self.position_init!r} is unknown; choose one of {POSITION_INITS}")


@dataclass
class MLPDecoderOutput:
    reconstruction: Tensor  # (B, N, feature_dim)
    masks: Tensor  # (B, K, N) alpha, softmax over slots
    per_slot: Tensor  # (B, K, N, feature_dim)


def smooth_position_table(num_tokens: int, dim: int) -> Tensor:
    """(1, 1, N, dim): a random nn.Linear(4, dim) of the square grid's ``cartesian_grid``."""
    side = math.isqrt(num_tokens)
    if side * side != num_tokens:
        raise ValueError(
            f"decoder.position_init='grid' needs a square token grid, got {num_tokens} tokens; use position_init='normal'"
        )
    with torch.no_grad():
        return nn.Linear(4, dim)(cartesian_grid(side, side))[None, None]


class MLPDecoder(nn.Module):
    def __init__(self, config: MLPDecoderConfig):
        super().__init__()
        self.config = config
        c = config
        if c.feature_dim is None or c.num_tokens is None:
            raise ValueError("MLPDecoderConfig.feature_dim and num_tokens must be set (methods fill them from the encoder)")
        self.position = nn.Parameter(torch.randn(1, 1, c.num_tokens, c.slot_dim) * 0.02)
        layers: list[nn.Module] = []
        width = c.slot_dim
        for _ in range(c.hidden_layers):
            layers += [nn.Linear(width, c.hidden_dim), nn.ReLU()]
            width = c.hidden_dim
        layers.append(nn.Linear(width, c.feature_dim + 1))
        self.mlp = nn.Sequential(*layers)
        if c.position_init == "grid":  # after the MLP, so its seeded init is unchanged
            with torch.no_grad():
                self.position.copy_(smooth_position_table(c.num_tokens, c.slot_dim))
        if c.zero_bias_init:  # after construction, so the weights' seeded init is unchanged
            for layer in self.mlp:
                if isinstance(layer, nn.Linear):
                    nn.init.zeros_(layer.bias)

    def forward(self, slots: Tensor) -> MLPDecoderOutput:
        """GLASS Eq. 3's feature decoder (F_recon of L_instance): decode (B, K, slot_dim) slots
        into features sum_k alpha_k * f_k, alpha softmaxed over K."""
        # The first layer sees slot + position embedding at every (slot, token) pair. Being
        # linear, it is applied to each term on its own and the results broadcast-added:
        # the same values without a matmul over all B * K * N pairs.
        first, rest = self.mlp[0], self.mlp[1:]
        x = first(slots).unsqueeze(2) + self.position @ first.weight.T
        out = rest(x)
        features, alpha_logits = out[..., :-1], out[..., -1]
        alpha = alpha_logits.softmax(dim=1)
        reconstruction = torch.einsum("bkn,bknd->bnd", alpha, features)
        return MLPDecoderOutput(reconstruction=reconstruction, masks=alpha, per_slot=features)
