"""Slot attention (Locatello et al., 2020), as used by GLASS (GLASS Eq. 1), SPOT and MSF."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

INITS = ("gaussian", "learned_queries", "annealed_gaussian")


@dataclass
class SlotAttentionConfig:
    """Settings of the grouping module.

    input_dim:        dimension of the encoder tokens (None = slot_dim; methods fill it from
                      their encoder).
    slot_dim:         D, slot (and attention) dimension; GLASS 768, SPOT 256.
    num_slots:        K, default number of slots (can be overridden per call).
    iters:            T, attention iterations; GLASS 5, SPOT 3.
    mlp_hidden:       hidden size of the residual slot MLP.
    heads:            attention heads (1 in every paper).
    eps:              added to the attention before renormalising over inputs (1e-6 in GLASS code,
                      1e-8 in Locatello et al.).
    input_mlp:        LayerNorm -> MLP -> LayerNorm on the tokens before grouping (DINOSAUR/GLASS/SPOT).
    position_embedding: add a learned projection of the 4-channel Cartesian grid (x, y, 1-x, 1-y).
    output_dim:       if set, LayerNorm + Linear(slot_dim -> output_dim) on the returned slots
                      (GLASS: 1024, the SD 2.1 cross-attention width).
    init:             "gaussian" (one shared learned Gaussian; GLASS, SPOT teacher),
                      "learned_queries" (one learned vector per slot with bi-level optimisation,
                      BO-QSA; SPOT student), "annealed_gaussian" (learned per-slot means with a
                      shared non-trainable sigma annealed to 0 at evaluation; MSF).
    """

    input_dim: int | None = None
    slot_dim: int = 768
    num_slots: int = 7
    iters: int = 5
    mlp_hidden: int = 768
    heads: int = 1
    eps: float = 1e-6
    input_mlp: bool = True
    input_mlp_hidden: int | None = None
    position_embedding: bool = True
    output_dim: int | None = None
    init: str = "gaussian"
    sigma_start: float = 1.0  # annealed_gaussian: sigma at step 0

    def __post_init__(self) -> None:
        if self.init not in INITS:
            raise ValueError(f"slot_attention.init={self.init!r} is unknown; choose one of {INITS}")
        if self.slot_dim % self.heads:
            raise ValueError(f"slot_attention.slot_dim={self.slot_dim} is not divisible by heads={self.heads}")


@dataclass
class GroupingOutput:
    slots: Tensor  # (B, K, D) or (B, K, output_dim)
    attention: Tensor  # (B, N, K) last iteration, softmax over slots (before renormalisation)
    logits: Tensor  # (B, N, K) last iteration's pre-softmax logits (head-averaged)
    slots_pre_projection: Tensor  # (B, K, D)


def cartesian_grid(height: int, width: int, device=None) -> Tensor:
    """(H*W, 4) position features (x, y, 1-x, 1-y) with x, y in [0, 1], raster order."""
    ys = torch.linspace(0.0, 1.0, height, device=device)
    xs = torch.linspace(0.0, 1.0, width, device=device)
    y, x = torch.meshgrid(ys, xs, indexing="ij")
    grid = torch.stack([x, y, 1 - x, 1 - y], dim=-1)
    return grid.reshape(height * width, 4)


class SlotInitializer(nn.Module):
    """Initial slots for each of the three schemes listed in SlotAttentionConfig.init."""

    def __init__(self, config: SlotAttentionConfig):
        super().__init__()
        self.init = config.init
        self.num_slots = config.num_slots
        d = config.slot_dim
        if config.init == "gaussian":
            self.mu = nn.Parameter(torch.empty(1, 1, d))
            self.log_sigma = nn.Parameter(torch.empty(1, 1, d))
            nn.init.xavier_uniform_(self.mu)
            nn.init.xavier_uniform_(self.log_sigma)
        else:
            self.queries = nn.Parameter(torch.empty(1, config.num_slots, d))
            nn.init.xavier_uniform_(self.queries)
            # Annealed externally (see set_sigma); a buffer, so it is saved but never trained.
            self.register_buffer("sigma", torch.tensor(float(config.sigma_start)))

    def set_sigma(self, sigma: float) -> None:
        """MSF: the shared sigma follows a cosine schedule to 0, set by the training loop."""
        if self.init != "annealed_gaussian":
            raise ValueError("set_sigma only applies to slot_attention.init='annealed_gaussian'")
        self.sigma.fill_(float(sigma))

    def forward(self, batch_size: int, num_slots: int | None, generator: torch.Generator | None = None) -> Tensor:
        k = num_slots or self.num_slots
        if self.init == "gaussian":
            shape = (batch_size, k, self.mu.shape[-1])
            noise = torch.randn(shape, generator=generator, device=self.mu.device, dtype=self.mu.dtype)
            return self.mu + self.log_sigma.exp() * noise
        if k != self.num_slots:
            raise ValueError(
                f"init={self.init!r} learns exactly {self.num_slots} slot queries; "
                f"num_slots={k} needs init='gaussian'"
            )
        slots = self.queries.expand(batch_size, -1, -1)
        if self.init == "annealed_gaussian" and self.training and float(self.sigma) > 0:
            noise = torch.randn(slots.shape, generator=generator, device=slots.device, dtype=slots.dtype)
            slots = slots + self.sigma * noise
        return slots


class SlotAttention(nn.Module):
    """Iterative slot attention (GLASS Eq. 1; Locatello et al. 2020, Alg. 1).

    Each iteration: A = softmax over slots of k(H) q(S)^T / sqrt(D); A + eps is renormalised
    over the N inputs; the weighted mean of v(H) updates the slots with a GRU followed by a
    residual MLP.
    """

    def __init__(self, config: SlotAttentionConfig):
        super().__init__()
        self.config = config
        c = config
        d = c.slot_dim
        in_dim = c.input_dim or d
        self.position = nn.Linear(4, in_dim) if c.position_embedding else None
        if c.input_mlp:
            hidden = c.input_mlp_hidden or in_dim
            self.input_mlp = nn.Sequential(
                nn.LayerNorm(in_dim), nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, d)
            )
        elif in_dim != d:
            self.input_mlp = nn.Linear(in_dim, d)
        else:
            self.input_mlp = nn.Identity()
        self.norm_inputs = nn.LayerNorm(d)
        self.norm_slots = nn.LayerNorm(d)
        self.norm_mlp = nn.LayerNorm(d)
        self.to_q = nn.Linear(d, d, bias=False)
        self.to_k = nn.Linear(d, d, bias=False)
        self.to_v = nn.Linear(d, d, bias=False)
        self.gru = nn.GRUCell(d, d)
        self.mlp = nn.Sequential(nn.Linear(d, c.mlp_hidden), nn.ReLU(), nn.Linear(c.mlp_hidden, d))
        self.initializer = SlotInitializer(c)
        self.output = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, c.output_dim)) if c.output_dim else None

    def embed_inputs(self, tokens: Tensor, grid: tuple[int, int]) -> Tensor:
        """Position embedding, then LayerNorm -> MLP -> LayerNorm on the (B, N, input_dim) tokens."""
        if self.position is not None:
            tokens = tokens + self.position(cartesian_grid(*grid, device=tokens.device).to(tokens.dtype))
        return self.norm_inputs(self.input_mlp(tokens))

    def attend(self, slots: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """One attention step: returns (updates (B,K,D), attention (B,N,K), logits (B,N,K))."""
        b, n, d = k.shape
        h = self.config.heads
        q = self.to_q(self.norm_slots(slots))
        qh = q.view(b, -1, h, d // h)
        kh = k.view(b, n, h, d // h)
        vh = v.view(b, n, h, d // h)
        logits = torch.einsum("bnhd,bkhd->bhnk", kh, qh) / math.sqrt(d // h)
        attn = logits.softmax(dim=-1)  # competition: softmax over slots
        weights = attn + self.config.eps
        weights = weights / weights.sum(dim=2, keepdim=True)  # weighted mean over inputs
        updates = torch.einsum("bhnk,bnhd->bkhd", weights, vh).reshape(b, -1, d)
        return updates, attn.mean(1), logits.mean(1)

    def forward(
        self,
        tokens: Tensor,
        grid: tuple[int, int],
        num_slots: int | None = None,
        slots: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> GroupingOutput:
        """Group (B, N, input_dim) tokens laid out on ``grid`` = (h, w) into slots.

        ``slots`` overrides the initial slots (e.g. for test-time manipulation).
        """
        b, n, _ = tokens.shape
        if grid[0] * grid[1] != n:
            raise ValueError(f"grid {grid} does not match {n} tokens")
        x = self.embed_inputs(tokens, grid)
        k, v = self.to_k(x), self.to_v(x)
        init = self.initializer(b, num_slots, generator) if slots is None else slots
        slots = init
        for i in range(self.config.iters):
            if i == self.config.iters - 1 and self.config.init == "learned_queries":
                # BO-QSA bi-level optimisation: the last iteration sees the converged slots as a
                # constant plus the queries as a straight-through path, so queries get gradients.
                slots = slots.detach() + init - init.detach()
            updates, attn, logits = self.attend(slots, k, v)
            d = slots.shape[-1]
            slots = self.gru(updates.reshape(-1, d), slots.reshape(-1, d)).view(b, -1, d)
            slots = slots + self.mlp(self.norm_mlp(slots))
        out = self.output(slots) if self.output is not None else slots
        return GroupingOutput(slots=out, attention=attn, logits=logits, slots_pre_projection=slots)
