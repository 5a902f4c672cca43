"""Slot attention (Locatello et al., 2020): GLASS Eq. 1 and the slot attention of SPOT and MSF.

One module. Where the three authors' codes differ from each other (or from slotlab's own
earlier choices), SlotAttentionConfig names the choice; docs/glass.md, docs/spot.md and
docs/msf.md ("Slot attention") list each option with the paper's and the code's reading.
The defaults reproduce slotlab's original module bit for bit (tests/test_slot_attention_golden.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

INITS = ("gaussian", "learned_queries", "annealed_gaussian")
POSITION_GRIDS = ("corners", "centres")
KV_WIDTHS = ("slot", "input")
KEY_SCALES = ("head", "slot")
SOFTMAXES = ("per_head", "joint")
HEAD_REDUCTIONS = ("mean", "sum")
EPS_MODES = ("entry", "sum")
ACTIVATIONS = ("relu", "gelu")
TRUNCATIONS = ("none", "fixed-point", "bi-level")


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
    eps:              stabiliser of the weighted mean over inputs (GLASS code 1e-6, SPOT code
                      1e-8, MSF code 1e-5); where it goes is ``eps_mode``.
    input_mlp:        LayerNorm -> MLP on the tokens before the LayerNorm of the keys/values
                      (DINOSAUR/GLASS/SPOT).
    input_mlp_hidden: hidden width of that MLP (None = input_dim).
    position_embedding: add a learned projection of the 4-channel Cartesian grid.
    position_grid:    "corners" (slotlab: end points linspace(0, 1, n), channels column, row,
                      1 - column, 1 - row) or "centres" (GLASS code: cell centres (i + 0.5) / n,
                      channels row, column, 1 - row, 1 - column).
    kv_width:         "slot" (slotlab: the input MLP ends at the slot width, keys/values are
                      D -> D) or "input" (GLASS, SPOT and MSF code: the tokens stay at the input
                      width through the MLP and the second LayerNorm; keys/values project
                      input width -> D). Equal shapes when input_dim == slot_dim.
    key_scale:        logits divided by sqrt(D / heads) ("head"; SPOT code, Locatello) or by
                      sqrt(D) ("slot"; GLASS code, also with several heads). MSF scales q by
                      D^-0.5 with one head, which is both.
    softmax:          "per_head" (each head's slots compete) or "joint" (one softmax over
                      heads x slots per input; GLASS and SPOT code). Equal with one head.
    mask_heads:       the returned mask is the softmax averaged ("mean") or summed ("sum"; SPOT
                      code) over heads, before eps.
    eps_mode:         "entry": eps added to every attention weight before renormalising over
                      inputs (Locatello, GLASS, SPOT); "sum": weights / (sum over inputs + eps)
                      (MSF code), so a masked slot gets zero weights and a zero update.
    mlp_activation:   "relu" (Locatello, GLASS, SPOT) or "gelu" (MSF code's FFN).
    mlp_dropout:      dropout after the activation of the residual MLP (MSF code; 0 = none).
    output_dim:       if set, LayerNorm + Linear(slot_dim -> output_dim) on the returned slots
                      (GLASS: 1024, the SD 2.1 cross-attention width).
    init:             "gaussian" (one shared learned Gaussian, noise drawn on every call, also
                      in eval; GLASS, SPOT teacher), "learned_queries" (one learned vector per
                      slot, BO-QSA; SPOT student), "annealed_gaussian" (learned per-slot means
                      with a shared non-trainable sigma annealed to 0, no noise in eval; MSF paper).
    truncation:       gradient through the iterations, applied before the last one: "none",
                      "fixed-point" (slots detached), "bi-level" (BO-QSA: detached slots plus a
                      straight-through path to the initial slots). None = "bi-level" for
                      learned_queries and "none" otherwise (slotlab's original behaviour).
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
    position_grid: str = "corners"
    kv_width: str = "slot"
    key_scale: str = "head"
    softmax: str = "per_head"
    mask_heads: str = "mean"
    eps_mode: str = "entry"
    mlp_activation: str = "relu"
    mlp_dropout: float = 0.0
    output_dim: int | None = None
    init: str = "gaussian"
    sigma_start: float = 1.0  # annealed_gaussian: sigma at step 0
    truncation: str | None = None

    def __post_init__(self) -> None:
        choices = {
            "init": INITS, "position_grid": POSITION_GRIDS, "kv_width": KV_WIDTHS, "key_scale": KEY_SCALES,
            "softmax": SOFTMAXES, "mask_heads": HEAD_REDUCTIONS, "eps_mode": EPS_MODES,
            "mlp_activation": ACTIVATIONS,
        }
        if self.truncation is not None:
            choices["truncation"] = TRUNCATIONS
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"slot_attention.{name}={getattr(self, name)!r} is unknown; choose one of {allowed}")
        if self.slot_dim % self.heads:
            raise ValueError(f"slot_attention.slot_dim={self.slot_dim} is not divisible by heads={self.heads}")

    @property
    def effective_truncation(self) -> str:
        if self.truncation is not None:
            return self.truncation
        return "bi-level" if self.init == "learned_queries" else "none"


@dataclass
class GroupingOutput:
    slots: Tensor  # (B, K, D) or (B, K, output_dim)
    attention: Tensor  # (B, N, K) last iteration's softmax, reduced over heads (mask_heads), before eps
    logits: Tensor  # (B, N, K) last iteration's logits averaged over heads (SPOT's distillation target)
    slots_pre_projection: Tensor  # (B, K, D)
    attention_heads: Tensor  # (B, heads, N, K) last iteration's softmax per head, before eps
    logits_heads: Tensor  # (B, heads, N, K) last iteration's logits per head
    initial_slots: Tensor  # (B, K, D) the slots the first iteration started from


def cartesian_grid(height: int, width: int, variant: str = "corners", device=None) -> Tensor:
    """(H*W, 4) position features in raster order.

    "corners": x = column, y = row at the end points linspace(0, 1, n); channels (x, y, 1-x, 1-y).
    "centres" (GLASS code): cell centres (i + 0.5) / n, the midpoints of the n cells of [0, 1];
    channels (row, column, 1 - row, 1 - column).
    """
    if variant == "corners":
        ys = torch.linspace(0.0, 1.0, height, device=device)
        xs = torch.linspace(0.0, 1.0, width, device=device)
        y, x = torch.meshgrid(ys, xs, indexing="ij")
        grid = torch.stack([x, y, 1 - x, 1 - y], dim=-1)
    elif variant == "centres":
        edges_r = torch.linspace(0.0, 1.0, height + 1, device=device)
        edges_c = torch.linspace(0.0, 1.0, width + 1, device=device)
        r, c = torch.meshgrid(0.5 * (edges_r[:-1] + edges_r[1:]), 0.5 * (edges_c[:-1] + edges_c[1:]), indexing="ij")
        grid = torch.stack([r, c, 1 - r, 1 - c], dim=-1)
    else:
        raise ValueError(f"position grid {variant!r} is unknown; choose one of {POSITION_GRIDS}")
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
            # learned_queries: Xavier over the (K, d) matrix, bound sqrt(6 / (K + d)), as BO-QSA and SPOT
            # initialise their nn.Embedding(K, d); annealed_gaussian keeps the (1, K, d) tensor's
            # sqrt(6 / ((K + 1) d)).
            nn.init.xavier_uniform_(self.queries[0] if config.init == "learned_queries" else self.queries)
            # Annealed externally (see set_sigma); a buffer, so it is saved but never trained.
            self.register_buffer("sigma", torch.tensor(float(config.sigma_start)))

    def set_sigma(self, sigma: float) -> None:
        """MSF: the shared sigma follows a cosine schedule to 0, set by the training loop."""
        if self.init != "annealed_gaussian":
            raise ValueError("set_sigma only applies to slot_attention.init='annealed_gaussian'")
        self.sigma.fill_(float(sigma))

    def draws_noise(self) -> bool:
        if self.init == "annealed_gaussian":
            return self.training and float(self.sigma) > 0
        return self.init == "gaussian"

    def forward(
        self,
        batch_size: int,
        num_slots: int | None,
        generator: torch.Generator | None = None,
        noise: Tensor | None = None,
    ) -> Tensor:
        """``noise`` (B, K, D) replaces the standard-normal draw (e.g. to replay recorded draws)."""
        k = num_slots or self.num_slots
        if noise is not None and not self.draws_noise():
            raise ValueError(f"slot_attention.init={self.init!r} draws no noise here; do not pass noise")
        if self.init == "gaussian":
            shape = (batch_size, k, self.mu.shape[-1])
            if noise is None:
                noise = torch.randn(shape, generator=generator, device=self.mu.device, dtype=self.mu.dtype)
            _check_shape(noise, shape, "noise")
            return self.mu + self.log_sigma.exp() * noise
        if k != self.num_slots:
            raise ValueError(
                f"init={self.init!r} learns exactly {self.num_slots} slot queries; "
                f"num_slots={k} needs init='gaussian'"
            )
        slots = self.queries.expand(batch_size, -1, -1)
        if self.draws_noise():
            if noise is None:
                noise = torch.randn(slots.shape, generator=generator, device=slots.device, dtype=slots.dtype)
            _check_shape(noise, tuple(slots.shape), "noise")
            slots = slots + self.sigma * noise
        return slots


def _check_shape(tensor: Tensor, shape: tuple[int, ...], name: str) -> None:
    if tuple(tensor.shape) != tuple(shape):
        raise ValueError(f"slot attention: {name} has shape {tuple(tensor.shape)}, expected {tuple(shape)}")


def _update_mlp(c: SlotAttentionConfig) -> nn.Sequential:
    """The residual slot MLP: Linear, ReLU or GELU, optional dropout (MSF code), Linear."""
    act = nn.ReLU() if c.mlp_activation == "relu" else nn.GELU()
    dropout = [nn.Dropout(c.mlp_dropout)] if c.mlp_dropout > 0 else []
    return nn.Sequential(nn.Linear(c.slot_dim, c.mlp_hidden), act, *dropout, nn.Linear(c.mlp_hidden, c.slot_dim))


class SlotAttention(nn.Module):
    """Iterative slot attention (Locatello et al. 2020, Alg. 1): GLASS Eq. 1; SPOT Eq. 3 is its
    last iteration's mask A_SLOT; MSF Sec. 3.1's phi_sa: (S_0, F) -> (S, M).

    Each iteration: A = softmax over slots of k(H) q(S)^T / sqrt(D); A (+ eps) is renormalised
    over the N inputs; the weighted mean of v(H) updates the slots with a GRU followed by a
    residual MLP. The config's options select the GLASS, SPOT and MSF code's variants.
    """

    def __init__(self, config: SlotAttentionConfig):
        super().__init__()
        self.config = config
        c = config
        d = c.slot_dim
        in_dim = c.input_dim or d
        kv_dim = in_dim if c.kv_width == "input" else d
        # Modules are created in the original order so that seeded initialisation is unchanged.
        self.position = nn.Linear(4, in_dim) if c.position_embedding else None
        if c.input_mlp:
            hidden = c.input_mlp_hidden or in_dim
            self.input_mlp = nn.Sequential(
                nn.LayerNorm(in_dim), nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, kv_dim)
            )
        elif in_dim != kv_dim:
            self.input_mlp = nn.Linear(in_dim, kv_dim)
        else:
            self.input_mlp = nn.Identity()
        self.norm_inputs = nn.LayerNorm(kv_dim)
        self.norm_slots = nn.LayerNorm(d)
        self.norm_mlp = nn.LayerNorm(d)
        self.to_q = nn.Linear(d, d, bias=False)
        self.to_k = nn.Linear(kv_dim, d, bias=False)
        self.to_v = nn.Linear(kv_dim, d, bias=False)
        self.gru = nn.GRUCell(d, d)
        self.mlp = _update_mlp(c)
        self.initializer = SlotInitializer(c)
        self.output = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, c.output_dim)) if c.output_dim else None
        self.logit_root = math.sqrt(d // c.heads if c.key_scale == "head" else d)

    def embed_inputs(self, tokens: Tensor, grid: tuple[int, int]) -> Tensor:
        """Position embedding, then LayerNorm -> MLP -> LayerNorm on the (B, N, input_dim) tokens."""
        if self.position is not None:
            positions = cartesian_grid(*grid, variant=self.config.position_grid, device=tokens.device)
            tokens = tokens + self.position(positions.to(tokens.dtype))
        return self.norm_inputs(self.input_mlp(tokens))

    def attend(
        self, slots: Tensor, k: Tensor, v: Tensor, slot_mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """One attention step (GLASS Eq. 1): returns updates (B, K, D), the softmax before eps
        (B, heads, N, K) and the logits (B, heads, N, K)."""
        c = self.config
        b, n, d = k.shape
        h = c.heads
        q = self.to_q(self.norm_slots(slots))
        qh = q.view(b, -1, h, d // h)
        kh = k.view(b, n, h, d // h)
        vh = v.view(b, n, h, d // h)
        logits = torch.einsum("bnhd,bkhd->bhnk", kh, qh) / self.logit_root
        if slot_mask is not None:  # GLASS use_mask / MSF smask: absent slots take no part
            logits = logits.masked_fill(~slot_mask[:, None, None, :], float("-inf"))
        if c.softmax == "per_head":
            attn = logits.softmax(dim=-1)  # competition: softmax over slots
        else:  # one competition over heads x slots per input
            num = logits.shape[-1]
            attn = logits.transpose(1, 2).reshape(b, n, h * num).softmax(-1).view(b, n, h, num).transpose(1, 2)
        if c.eps_mode == "entry":
            weights = attn + c.eps
            weights = weights / weights.sum(dim=2, keepdim=True)  # weighted mean over inputs
        else:
            weights = attn / (attn.sum(dim=2, keepdim=True) + c.eps)
        updates = torch.einsum("bhnk,bnhd->bkhd", weights, vh).reshape(b, -1, d)
        return updates, attn, logits

    def truncate(self, slots: Tensor, init: Tensor) -> Tensor:
        """Gradient truncation before the last iteration (BO-QSA's bi-level optimisation: the
        converged slots as a constant plus a straight-through path to the initial slots)."""
        mode = self.config.effective_truncation
        if mode == "bi-level":
            return slots.detach() + init - init.detach()
        if mode == "fixed-point":
            return slots.detach()
        return slots

    def forward(
        self,
        tokens: Tensor,
        grid: tuple[int, int],
        num_slots: int | None = None,
        slots: Tensor | None = None,
        generator: torch.Generator | None = None,
        noise: Tensor | None = None,
        slot_mask: Tensor | None = None,
    ) -> GroupingOutput:
        """Group (B, N, input_dim) tokens laid out on ``grid`` = (h, w) into slots.

        ``slots`` overrides the initial slots (test-time manipulation, or the previous frame's
        ``slots_pre_projection`` to carry slots over a video as GLASS's code does); ``noise``
        replaces the initializer's random draw; ``slot_mask`` (B, K) bool, True = slot present,
        gives absent slots -inf logits (GLASS ``use_mask``, MSF ``smask``).
        """
        b, n, _ = tokens.shape
        if grid[0] * grid[1] != n:
            raise ValueError(f"grid {grid} does not match {n} tokens")
        if slots is not None and noise is not None:
            raise ValueError("pass either initial slots or noise for the initializer, not both")
        x = self.embed_inputs(tokens, grid)
        k, v = self.to_k(x), self.to_v(x)
        init = self.initializer(b, num_slots, generator, noise) if slots is None else slots
        if slot_mask is not None:
            _check_shape(slot_mask, (b, init.shape[1]), "slot_mask")
            if slot_mask.dtype != torch.bool or not slot_mask.any(dim=1).all():
                raise ValueError("slot_mask must be boolean and keep at least one slot per image")
        slots = init
        for i in range(self.config.iters):
            if i == self.config.iters - 1:
                slots = self.truncate(slots, init)
            updates, attn, logits = self.attend(slots, k, v, slot_mask)
            d = slots.shape[-1]
            slots = self.gru(updates.reshape(-1, d), slots.reshape(-1, d)).view(b, -1, d)
            slots = slots + self.mlp(self.norm_mlp(slots))
        out = self.output(slots) if self.output is not None else slots
        mask = attn.mean(1) if self.config.mask_heads == "mean" else attn.sum(1)
        return GroupingOutput(
            slots=out, attention=mask, logits=logits.mean(1), slots_pre_projection=slots,
            attention_heads=attn, logits_heads=logits, initial_slots=init,
        )
