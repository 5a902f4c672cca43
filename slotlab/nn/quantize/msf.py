"""Multi-scale quantised fusion (MSF, Zhao et al., ICLR 2025, Sec. 3.3), two named variants.

``paper`` (the default) follows the paper: each scale's encoding Z_n is projected up by the
pseudo-inverse of W and split into a scale-invariant and a scale-variant copy (Eq. 3); the
scale-invariant copies of adjacent scales are matched against one shared codebook and each
position keeps the code of highest probability over the scales (inter-scale fusion, Eq. 1 and
Eq. 4); the scale-variant copy is quantised with a codebook of its own scale; the two are
concatenated and projected down by W (intra-scale fusion, Eq. 5). Learned codebooks, 64 codes
each (m^0.5 of the 4096 non-grouped codes).

``code`` follows the authors' public re-implementation: no projection and no split (both
quantisers see all channels), fusion over all scales, intra-scale fusion by the mean of the two
codes, frozen random codebooks through a trained projection (see ``vq.py``), codebook sizes of
its configs (shared 256, scale n 256 / 2^(n-1)).

Both return, per scale, the straight-through output that a decoder (VQ-VAE pretraining) or an
object-centric model (guidance) reads, the continuous and quantised values the VQ losses need,
and the (shared, specific) code indices.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slotlab.nn.quantize.projection import PinvProjection
from slotlab.nn.quantize.vq import VectorQuantizer, annealed_residual, straight_through

VARIANTS = ("paper", "code")
SPECIFIC_CODEBOOKS = ("per_scale", "shared")


@dataclass
class MSFConfig:
    """Settings of the multi-scale quantiser; None fields take the variant's value.

    variant:            ``paper`` or ``code`` (see the module doc).
    num_scales:         N, scales of the image pyramid (paper 3; Table 5 tries 2 and 4).
    shared_codes:       size of the shared scale-invariant codebook (paper 64, code 256).
    specific_codes:     size of each scale-variant codebook (paper 64 each, code 256/2^(n-1)).
    inter_fusion:       fuse the scale-invariant codes over scales (Eq. 4); off: each scale
                        keeps its own match (Table 5).
    intra_fusion:       combine scale-invariant and scale-variant codes (Eq. 5); off: the
                        scale-invariant path alone, on the unprojected encoding (Table 5).
    specific_codebooks: ``per_scale`` (paper) or one ``shared`` scale-variant codebook (Table 5).
    codebook:           ``learned`` (paper) or ``projected`` (code).
    in_dim:             ``projected``: dimension of the frozen random codes (code: 1024).
    dead_threshold:     replace codes used less than this share of uniform (0 = never).
    """

    variant: str = "paper"
    num_scales: int = 3
    shared_codes: int | None = None
    specific_codes: list[int] | None = None
    inter_fusion: bool = True
    intra_fusion: bool = True
    specific_codebooks: str = "per_scale"
    codebook: str | None = None
    in_dim: int = 1024
    dead_threshold: float = 0.0

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"msf.variant={self.variant!r} is unknown; choose one of {VARIANTS}")
        if self.specific_codebooks not in SPECIFIC_CODEBOOKS:
            raise ValueError(f"msf.specific_codebooks={self.specific_codebooks!r}; choose one of {SPECIFIC_CODEBOOKS}")
        if self.num_scales < 1:
            raise ValueError(f"msf.num_scales must be >= 1, got {self.num_scales}")
        paper = self.variant == "paper"
        if self.shared_codes is None:
            self.shared_codes = 64 if paper else 256
        if self.specific_codes is None:
            self.specific_codes = [64 if paper else max(2, 256 // 2**n) for n in range(self.num_scales)]
        if self.codebook is None:
            self.codebook = "learned" if paper else "projected"
        wanted = 1 if self.specific_codebooks == "shared" else self.num_scales
        if len(self.specific_codes) != wanted:
            raise ValueError(
                f"msf.specific_codes has {len(self.specific_codes)} sizes; {wanted} needed "
                f"(num_scales={self.num_scales}, specific_codebooks={self.specific_codebooks!r})"
            )


@dataclass
class ScaleQuantized:
    """One scale's quantisation (channels first, (B, c, h, w))."""

    output: Tensor  # straight-through value X_n: what the decoder or the OCL model reads
    encoding: Tensor  # the combined continuous value the output's gradient flows to
    quantized: Tensor  # the combined codes, before the residual and the straight-through
    residual: Tensor  # annealed residual of encoding and quantized
    indices: Tensor  # (B, G, h, w): G = 1 (single scale) or 2 (shared, specific)
    parts: list[tuple[Tensor, Tensor, Tensor]]  # (encoding, codes, residual) per VQ loss term


def to_grid(encoding: Tensor, source: int, target: int) -> Tensor:
    """Scale ``source``'s map (B, c, h, w) on scale ``target``'s grid: a finer map is averaged
    over the 2^k x 2^k cells each target cell covers, a coarser one repeated (MSF Sec. 3.3,
    step 1: Z_{n-1}^(2i:2i+2, 2j:2j+2) meaned; Z_{n+1}^(floor(i/2), floor(j/2)))."""
    if source < target:
        return F.avg_pool2d(encoding, 2 ** (target - source))
    if source > target:
        return F.interpolate(encoding, scale_factor=2 ** (source - target), mode="nearest")
    return encoding


def fuse_over_scales(probs: Tensor) -> tuple[Tensor, Tensor]:
    """MSF Eq. 4: I = argmax_m(max_n p_n) for probabilities (S, B, h, w, m) of S scales.

    Returns (winning scale (B, h, w), code index (B, h, w)). Equivalent to taking, at each
    position, the scale whose best code is most probable (the first such scale on ties) and
    that scale's best code.
    """
    best, codes = probs.max(-1)  # (S, B, h, w)
    scale = best.argmax(0)
    return scale, codes.gather(0, scale[None])[0]


def _channels_last(x: Tensor) -> Tensor:
    return x.permute(0, 2, 3, 1)


def _channels_first(x: Tensor) -> Tensor:
    return x.permute(0, 3, 1, 2)


class MultiScaleQuantizer(nn.Module):
    """Inter- and intra-scale quantised fusion over the encodings of an image pyramid."""

    def __init__(self, code_dim: int, config: MSFConfig):
        super().__init__()
        self.config, self.code_dim = config, code_dim
        c = config

        def quantizer(codes: int) -> VectorQuantizer:
            return VectorQuantizer(codes, code_dim, c.codebook, c.in_dim, dead_threshold=c.dead_threshold)

        self.shared = quantizer(c.shared_codes)
        self.specific = nn.ModuleList(quantizer(m) for m in c.specific_codes) if c.intra_fusion else None
        self.projection = PinvProjection(2 * code_dim, code_dim) if c.variant == "paper" and c.intra_fusion else None

    def window(self, target: int) -> list[int]:
        """Scales fused into scale ``target``: the adjacent ones (paper), all (code), or only
        itself (inter-scale fusion off)."""
        n = self.config.num_scales
        if not self.config.inter_fusion:
            return [target]
        if self.config.variant == "paper":
            return [s for s in (target - 1, target, target + 1) if 0 <= s < n]
        return list(range(n))

    def split(self, encoding: Tensor) -> tuple[Tensor, Tensor]:
        """MSF Eq. 3: Z^si, Z^sv = chunk(Z . pinv(W)) (paper); the code gives both quantisers
        the whole encoding. Channels last."""
        if self.projection is None:
            return encoding, encoding
        return self.projection.inverse(encoding).chunk(2, dim=-1)

    def combine(self, invariant: Tensor, variant: Tensor | None) -> Tensor:
        """MSF Eq. 5: X = concat(X^si, X^sv) . W (paper); the mean of the two (code); the
        scale-invariant part alone with intra-scale fusion off. Channels last."""
        if variant is None:
            return invariant
        if self.projection is None:
            return (invariant + variant) / 2
        return self.projection(torch.cat([invariant, variant], dim=-1))

    def specific_quantizer(self, scale: int) -> VectorQuantizer:
        return self.specific[0 if self.config.specific_codebooks == "shared" else scale]

    def forward(self, encodings: list[Tensor], alpha: float = 0.0,
                gumbel: Iterator[Tensor] | None = None) -> list[ScaleQuantized]:
        """Quantise the pyramid's encodings [(B, c, h_n, w_n)], finest first.

        ``alpha`` weighs the annealed residual; ``gumbel`` yields the Gumbel noise of each
        matching call in order (shared codebook per target scale, then the scale-specific
        codebooks) to replay recorded draws, else noise is drawn when sampling.
        """
        if len(encodings) != self.config.num_scales:
            raise ValueError(f"{len(encodings)} encodings for num_scales={self.config.num_scales}")
        parts = [self.split(_channels_last(z)) for z in encodings]
        invariant = [_channels_first(p[0]) for p in parts]
        shared_codes = self.shared.codes()
        fused = []
        for target in range(len(encodings)):
            window = self.window(target)
            stack = torch.stack([_channels_last(to_grid(invariant[s], s, target)) for s in window])
            match = self.shared.match(stack.flatten(0, 1), next(gumbel, None) if gumbel is not None else None, shared_codes)
            winner, index = fuse_over_scales(match.probs.unflatten(0, stack.shape[:2]))
            chosen = stack.gather(0, winner[None, ..., None].expand(1, *stack.shape[1:]))[0]
            if self.training:
                self.shared.record_usage(index, chosen)
            fused.append((chosen, index, self.shared.select(index, shared_codes)))
        specific = [None] * len(encodings)
        if self.specific is not None:
            for scale, (_, z_sv) in enumerate(parts):
                quantizer = self.specific_quantizer(scale)
                codes = quantizer.codes()
                match = quantizer.match(z_sv, next(gumbel, None) if gumbel is not None else None, codes)
                if self.training:
                    quantizer.record_usage(match.indices, z_sv)
                specific[scale] = (z_sv, match.indices, quantizer.select(match.indices, codes))
        return [self._assemble(f, s, alpha) for f, s in zip(fused, specific)]

    def _assemble(self, invariant, variant, alpha: float) -> ScaleQuantized:
        """Residual and straight-through per part, then intra-scale fusion of every value."""
        pieces = [invariant] + ([variant] if variant is not None else [])
        values = []
        for encoding, _, codes in pieces:
            residual = annealed_residual(encoding, codes, alpha)
            values.append((encoding, codes, residual, straight_through(encoding, residual)))

        def combined(i: int) -> Tensor:
            return _channels_first(self.combine(values[0][i], values[1][i] if len(values) > 1 else None))

        encoding, quantized, residual, output = (combined(i) for i in range(4))
        indices = torch.stack([p[1] for p in pieces], dim=1)
        if self.config.variant == "code":  # the code's losses act on the fused (mean) values
            loss_parts = [(encoding, quantized, residual)]
        else:
            loss_parts = [tuple(_channels_first(t) for t in v[:3]) for v in values]
        return ScaleQuantized(output, encoding, quantized, residual, indices, loss_parts)
