"""SLATE (Singh et al., 2022) guided by a frozen VQ-VAE, with or without MSF (MSF Sec. 3.1).

encoder -> slot attention -> slots; the frozen VQ-VAE turns the image into scale-1 discrete
tokens X (the fused representation when the VQ-VAE is an MSF one); the shared autoregressive
decoder (learned position embedding, output head over the code book(s)) predicts each token's
code index from the tokens before it and the slots, trained with cross-entropy. With MSF each
token has two indices (shared, scale-specific) and the loss is the sum of one cross-entropy per
codebook (the grouped cross-entropy of the public code). Masks: the slot attention's.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slotlab.config import ConfigError
from slotlab.data.sample import Batch
from slotlab.methods.vqvae import GuidedByVQVAE
from slotlab.nn.decoders.autoregressive import AutoregressiveDecoder, AutoregressiveDecoderConfig
from slotlab.methods.encoder_parts import build_method_encoder
from slotlab.nn.encoders import EncoderConfig, PatchEncoderConfig
from slotlab.nn.slot_attention import SlotAttention, SlotAttentionConfig


@dataclass
class SlateConfig:
    """encoder -> slot attention -> AR decoder over a frozen VQ-VAE's tokens.

    vqvae:              model directory of a pretrained VQ-VAE (``slotlab train --preset
                        vqvae-...``, then RUN/model).
    target_gumbel_scale: 0 (paper): the tokens are the VQ-VAE's nearest codes; the public code
                        keeps the VQ-VAE in training mode with a Gumbel scale of 5, so the
                        targets are sampled (set 5 for that).
    mask_source:        ``attention`` (the slot attention's masks, what MSF evaluates) or
                        ``decoder`` (the AR decoder's cross-attention).
    """

    encoder: EncoderConfig = field(default_factory=PatchEncoderConfig)
    slot_attention: SlotAttentionConfig = field(
        default_factory=lambda: SlotAttentionConfig(slot_dim=256, num_slots=11, iters=3, mlp_hidden=1024,
                                                    init="annealed_gaussian")
    )
    decoder: AutoregressiveDecoderConfig = field(
        default_factory=lambda: AutoregressiveDecoderConfig(width=256, blocks=4, heads=4, position_embedding=True)
    )
    vqvae: str | None = None
    target_gumbel_scale: float = 0.0
    mask_source: str = "attention"

    def __post_init__(self) -> None:
        if self.mask_source not in ("attention", "decoder"):
            raise ValueError(f"mask_source={self.mask_source!r}; choose 'attention' or 'decoder'")


@dataclass
class SlateOutput:
    slots: Tensor  # (B, K, D)
    attention: Tensor  # (B, N, K) slot attention, encoder grid
    decoder_attention: Tensor  # (B, T, K) AR decoder cross-attention, VQ-VAE grid
    logits: Tensor  # (B, T, sum(groups))
    targets: Tensor  # (B, T, G) code indices
    grid: tuple[int, int]
    token_grid: tuple[int, int]


def grouped_cross_entropy(logits: Tensor, targets: Tensor, groups: list[int]) -> Tensor:
    """Sum over codebooks of the cross-entropy of each token's index (SLATE's loss; with MSF,
    one term for the shared and one for the scale-specific codebook)."""
    pieces = logits.split(groups, dim=-1)
    return sum(F.cross_entropy(p.flatten(0, -2), targets[..., g].flatten()) for g, p in enumerate(pieces))


class Slate(GuidedByVQVAE):
    method = "slate"
    config_class = SlateConfig

    def __init__(self, config: SlateConfig, architectures: Mapping[str, dict] | None = None):
        super().__init__(config)
        self.vqvae = self.attach_vqvae(architectures)
        self.encoder = build_method_encoder(config.encoder, (architectures or {}).get("encoder"))
        self.grid = self.encoder.grid_size()
        vq = self.vqvae.config
        self.groups = vq.code_groups
        self.token_grid = vq.grid
        sa = dataclasses.replace(config.slot_attention, input_dim=self.encoder.dim)
        self.slot_attention = SlotAttention(sa)
        dec = config.decoder
        for name, value, want in (("input_dim", dec.input_dim, vq.code_dim), ("output_dim", dec.output_dim, sum(self.groups))):
            if value is not None and value != want:
                raise ConfigError(f"model.decoder.{name}={value} does not fit the VQ-VAE in model.vqvae "
                                  f"({want}); set it to {want} or null")
        dec = dataclasses.replace(dec, input_dim=vq.code_dim, slot_dim=sa.slot_dim,
                                  num_tokens=self.token_grid[0] * self.token_grid[1], output_dim=sum(self.groups))
        self.decoder = AutoregressiveDecoder(dec)

    @property
    def target_gumbel_scale(self) -> float:
        return self.config.target_gumbel_scale

    def forward(self, batch: Batch | Tensor, num_slots: int | None = None) -> SlateOutput:
        images = batch.image if isinstance(batch, Batch) else batch
        grouping = self.slot_attention(self.encoder(images), self.grid, num_slots=num_slots)
        with torch.no_grad():
            guidance = self.vqvae(images, decode=False).scales[0]
        tokens = guidance.output.flatten(2).transpose(1, 2)  # (B, T, c)
        targets = guidance.indices.flatten(2).transpose(1, 2)  # (B, T, G)
        decoded = self.decoder(tokens, grouping.slots)
        return SlateOutput(grouping.slots, grouping.attention, decoded.attention, decoded.prediction, targets,
                           self.grid, self.token_grid)

    def losses(self, outputs: SlateOutput, batch: Batch) -> dict[str, Tensor]:
        """SLATE's one term: the cross-entropy of the AR decoder's prediction of each token's
        code index; with an MSF VQ-VAE one cross-entropy per codebook, summed (MSF Sec. 3.1,
        ``grouped_cross_entropy``)."""
        ce = grouped_cross_entropy(outputs.logits, outputs.targets, self.groups)
        return {"loss": ce, "cross_entropy": ce}

    def masks(self, outputs: SlateOutput) -> Tensor:
        if self.config.mask_source == "attention":
            m, grid = outputs.attention, outputs.grid
        else:
            m, grid = outputs.decoder_attention, outputs.token_grid
        return m.transpose(1, 2).reshape(m.shape[0], m.shape[2], *grid)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        groups = {
            "encoder": [p for m in self.encoder.trainable_modules for p in m.parameters()],
            "grouping": list(self.slot_attention.parameters()),
            "decoder": list(self.decoder.parameters()),
        }
        return {name: params for name, params in groups.items() if params}
