"""A trainable VQ-VAE with a single-scale (baseline) or multi-scale fused (MSF) quantiser.

Images in [0, 1] are mapped to [-1, 1] (MSF A.2), an image pyramid of ``num_scales`` levels is
made by bilinear downsampling by 2^(n-1) (MSF Sec. 3.2), one encoder with 4x downsampling
encodes every level, the quantiser fuses them (MSF Sec. 3.3) and, during pretraining, one
decoder reconstructs every level. OCL methods read the scale-1 output frozen (``tokenize``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slotlab.config import ConfigError, to_dict
from slotlab.ops.resize import resize_image
from slotlab.nn.autoencoders import tiny_autoencoder_decoder, tiny_autoencoder_encoder
from slotlab.nn.quantize.msf import MSFConfig, MultiScaleQuantizer, ScaleQuantized
from slotlab.ops.schedules import cosine_ramp
from slotlab.nn.quantize.vq import CODEBOOKS, VectorQuantizer, annealed_residual, straight_through

BACKBONES = ("cnn", "taesd")
QUANTIZERS = ("single", "msf")
DOWNSAMPLING = 4  # MSF A.1: the VAE encoder downsamples 4x


@dataclass
class VQVAEConfig:
    """The VQ-VAE and its pretraining recipe.

    backbone:        ``cnn`` (a small 4x CNN as in SLATE) or ``taesd`` (TAESD blocks of
                     ``slotlab.nn.autoencoders`` cut to 4x, as the public MSF code uses them).
    image_size:      input side (the paper trains at 128).
    code_dim:        c, the code dimension (SLATE 256, SlotDiffusion 4).
    width:           channels of the encoder/decoder.
    quantizer:       ``single`` (VQ-VAE baseline) or ``msf``.
    num_codes:       ``single``: codebook size (paper 4096).
    codebook:        ``single``: ``learned`` or ``projected`` (see quantize/vq.py).
    msf:             ``msf``: the multi-scale quantiser (variant, scales, codebooks, ablations).
    commitment_weight, encoding_norm_weight: loss weights (VQ-VAE 0.25; the public MSF code
                     also pulls encodings towards their group-normalised values with 0.1).
    gumbel_start, gumbel_end: Gumbel sampling scale annealed by cosine over training. None:
                     1 -> 2 for a ``projected`` codebook (the public code, whose logits are
                     chi-normalised), 0 (off) for a ``learned`` one: its raw distances have no
                     fixed scale, and sampling at the code's scale made the codebook and
                     commitment losses diverge once the residual was annealed away (measured on
                     the scenes; the paper names Gumbel matching but no scale).
    residual_anneal: fraction of training over which the annealed residual's alpha falls
                     1 -> 0 by cosine (code: 0.5; 0 disables the residual).
    dead_threshold:  replace codes used below this share of uniform (0 = never).
    """

    backbone: str = "cnn"
    image_size: int = 128
    code_dim: int = 256
    width: int = 64
    quantizer: str = "msf"
    num_codes: int = 4096
    codebook: str = "learned"
    in_dim: int = 1024
    msf: MSFConfig = field(default_factory=MSFConfig)
    commitment_weight: float = 0.25
    encoding_norm_weight: float = 0.0
    gumbel_start: float | None = None
    gumbel_end: float | None = None
    residual_anneal: float = 0.5
    dead_threshold: float = 0.0

    def __post_init__(self) -> None:
        for name, value, choices in (("backbone", self.backbone, BACKBONES), ("quantizer", self.quantizer, QUANTIZERS),
                                     ("codebook", self.codebook, CODEBOOKS)):
            if value not in choices:
                raise ConfigError(f"vqvae {name}={value!r} is unknown; choose one of {choices}")
        kind = self.msf.codebook if self.quantizer == "msf" else self.codebook
        on = kind == "projected"
        self.gumbel_start = (1.0 if on else 0.0) if self.gumbel_start is None else self.gumbel_start
        self.gumbel_end = (2.0 if on else 0.0) if self.gumbel_end is None else self.gumbel_end
        smallest = self.image_size // DOWNSAMPLING // 2 ** (self.num_scales - 1)
        if self.image_size % (DOWNSAMPLING * 2 ** (self.num_scales - 1)) or smallest < 1:
            raise ConfigError(
                f"msf.num_scales={self.num_scales} does not fit image_size={self.image_size}: scale "
                f"{self.num_scales} would have {self.image_size / DOWNSAMPLING / 2 ** (self.num_scales - 1):g} tokens "
                f"per side; use fewer scales or an image_size divisible by {DOWNSAMPLING * 2 ** (self.num_scales - 1)}"
            )

    @property
    def num_scales(self) -> int:
        return self.msf.num_scales if self.quantizer == "msf" else 1

    @property
    def grid(self) -> tuple[int, int]:
        """Token grid of scale 1."""
        side = self.image_size // DOWNSAMPLING
        return side, side

    @property
    def code_groups(self) -> list[int]:
        """Sizes of the codebooks each scale-1 token indexes: [m] or [shared, specific]."""
        if self.quantizer == "single":
            return [self.num_codes]
        if not self.msf.intra_fusion:
            return [self.msf.shared_codes]
        return [self.msf.shared_codes, self.msf.specific_codes[0]]


def cnn_encoder(code_dim: int, width: int) -> nn.Sequential:
    """Image (B, 3, H, W) -> encoding (B, c, H/4, W/4): two stride-2 convolutions."""
    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1), nn.ReLU(),
        nn.Conv2d(width, width, 4, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(width, width, 4, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(width, width, 3, padding=1), nn.GroupNorm(1, width), nn.ReLU(),
        nn.Conv2d(width, code_dim, 1),
    )  # fmt: skip


def cnn_decoder(code_dim: int, width: int) -> nn.Sequential:
    """Encoding (B, c, h, w) -> image (B, 3, 4h, 4w): two nearest 2x upsamplings."""
    return nn.Sequential(
        nn.Conv2d(code_dim, width, 1), nn.GroupNorm(1, width), nn.ReLU(),
        nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
        nn.Upsample(scale_factor=2), nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
        nn.Upsample(scale_factor=2), nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
        nn.Conv2d(width, 3, 3, padding=1),
    )  # fmt: skip


def taesd_encoder(code_dim: int, width: int) -> nn.Sequential:
    """The TAESD encoder's first two downsampling stages (4x), then GroupNorm + 1x1 to c."""
    stages = tiny_autoencoder_encoder(latent_channels=code_dim, global_norm=False, width=width)[:10]
    return nn.Sequential(*stages, nn.GroupNorm(1, width), nn.Conv2d(width, code_dim, 1))


def taesd_decoder(code_dim: int, width: int) -> nn.Sequential:
    """1x1 from c + GroupNorm, then the TAESD decoder's last two upsampling stages (4x)."""
    stages = tiny_autoencoder_decoder(latent_channels=code_dim, global_norm=False, width=width)[8:]
    return nn.Sequential(nn.Conv2d(code_dim, width, 1), nn.GroupNorm(1, width), nn.ReLU(), *stages)


class SingleScaleQuantizer(nn.Module):
    """The baseline VQ (MSF Eq. 1, 2) behind the multi-scale quantiser's interface."""

    def __init__(self, config: VQVAEConfig):
        super().__init__()
        self.quantizer = VectorQuantizer(config.num_codes, config.code_dim, config.codebook, config.in_dim,
                                         dead_threshold=config.dead_threshold)

    def forward(self, encodings: list[Tensor], alpha: float = 0.0,
                gumbel: Iterator[Tensor] | None = None) -> list[ScaleQuantized]:
        z = encodings[0].permute(0, 2, 3, 1)
        match, codes = self.quantizer(z, next(gumbel, None) if gumbel is not None else None)
        residual = annealed_residual(z, codes, alpha)
        z, codes, residual, output = (t.permute(0, 3, 1, 2) for t in (z, codes, residual, straight_through(z, residual)))
        return [ScaleQuantized(output, z, codes, residual, match.indices[:, None], [(z, codes, residual)])]

    def quantizers(self) -> list[VectorQuantizer]:
        return [self.quantizer]


@dataclass
class VQVAEOutput:
    pyramid: list[Tensor]  # T_n in [-1, 1], finest first
    raw: list[Tensor]  # encoder outputs Z_n (B, c, h_n, w_n)
    scales: list[ScaleQuantized]
    reconstructions: list[Tensor] | None  # decoder outputs in [-1, 1] (pretraining only)


class VQVAE(nn.Module):
    """Encoder, (multi-scale) quantiser and decoder; ``alpha`` is the annealed residual weight."""

    def __init__(self, config: VQVAEConfig):
        super().__init__()
        self.config = c = config
        build = {"cnn": (cnn_encoder, cnn_decoder), "taesd": (taesd_encoder, taesd_decoder)}[c.backbone]
        self.encoder = build[0](c.code_dim, c.width)
        self.decoder = build[1](c.code_dim, c.width)
        self.quantizer = (
            MultiScaleQuantizer(c.code_dim, c.msf) if c.quantizer == "msf" else SingleScaleQuantizer(c)
        )
        self.register_buffer("alpha", torch.tensor(0.0), persistent=False)

    def architecture(self) -> dict:
        """The config that rebuilds this VQ-VAE (a guided method stores it with its weights)."""
        return to_dict(self.config)

    def pyramid(self, images: Tensor) -> list[Tensor]:
        """T_1 = the image in [-1, 1] at ``image_size``, T_n = bilinear downsampling by 2^(n-1)
        (MSF Sec. 3.2)."""
        size = self.config.image_size
        images = resize_image(images, (size, size))
        x = images * 2 - 1
        return [x] + [F.interpolate(x, scale_factor=2.0**-n, mode="bilinear") for n in range(1, self.config.num_scales)]

    def forward(self, images: Tensor, decode: bool = True, gumbel: Iterator[Tensor] | None = None) -> VQVAEOutput:
        pyramid = self.pyramid(images)
        raw = [self.encoder(t) for t in pyramid]
        scales = self.quantizer(raw, float(self.alpha), gumbel)
        reconstructions = [self.decoder(s.output) for s in scales] if decode else None
        return VQVAEOutput(pyramid, raw, scales, reconstructions)

    @torch.no_grad()
    def tokenize(self, images: Tensor) -> ScaleQuantized:
        """The scale-1 quantisation that guides OCL (MSF Sec. 3.2: only scale 1 is used)."""
        return self(images, decode=False).scales[0]

    def set_schedules(self, progress: float) -> None:
        """Gumbel scale and residual alpha at training ``progress`` in [0, 1] (cosine ramps)."""
        c = self.config
        gumbel = cosine_ramp(c.gumbel_start, c.gumbel_end, progress)
        for quantizer in self.vector_quantizers():
            quantizer.gumbel_scale.fill_(gumbel)
        alpha = cosine_ramp(1.0, 0.0, progress / c.residual_anneal) if c.residual_anneal > 0 else 0.0
        self.alpha.fill_(alpha)

    def vector_quantizers(self) -> list[VectorQuantizer]:
        return [m for m in self.quantizer.modules() if isinstance(m, VectorQuantizer)]

