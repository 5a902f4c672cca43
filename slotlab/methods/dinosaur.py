"""DINOSAUR-MLP (Seitzer et al., 2023): slot attention on frozen features, trained by
reconstructing those features with the spatial-broadcast MLP decoder."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from slotlab.data.sample import Batch
from slotlab.methods.base import ObjectCentricModel
from slotlab.methods.encoder_parts import build_method_encoder
from slotlab.nn.encoders import EncoderConfig, PatchEncoderConfig
from slotlab.nn.decoders.mlp import MLPDecoder, MLPDecoderConfig
from slotlab.nn.slot_attention import SlotAttention, SlotAttentionConfig

MASK_SOURCES = ("decoder", "attention")


@dataclass
class DinosaurConfig:
    """encoder -> slot attention -> MLP decoder; sizes that follow from the encoder
    (slot_attention.input_dim, decoder.feature_dim, decoder.num_tokens) may be left null."""

    encoder: EncoderConfig = field(default_factory=PatchEncoderConfig)
    slot_attention: SlotAttentionConfig = field(default_factory=SlotAttentionConfig)
    decoder: MLPDecoderConfig = field(default_factory=MLPDecoderConfig)
    mask_source: str = "decoder"  # DINOSAUR evaluates the decoder's alpha masks

    def __post_init__(self) -> None:
        if self.mask_source not in MASK_SOURCES:
            raise ValueError(f"mask_source={self.mask_source!r}; choose one of {MASK_SOURCES}")


def fit_to_encoder(sa: SlotAttentionConfig, dec: MLPDecoderConfig, dim: int, grid: tuple[int, int]):
    """Fill the sizes that the encoder determines; refuse contradicting explicit values."""
    tokens = grid[0] * grid[1]
    for name, value, want in (
        ("slot_attention.input_dim", sa.input_dim, dim),
        ("decoder.feature_dim", dec.feature_dim, dim),
        ("decoder.num_tokens", dec.num_tokens, tokens),
    ):
        if value is not None and value != want:
            raise ValueError(f"{name}={value} contradicts the encoder ({want}); set it to {want} or null")
    sa = dataclasses.replace(sa, input_dim=dim)
    dec = dataclasses.replace(dec, feature_dim=dim, num_tokens=tokens, slot_dim=sa.slot_dim)
    return sa, dec


@dataclass
class DinosaurOutput:
    slots: Tensor  # (B, K, D)
    attention: Tensor  # (B, N, K)
    decoder_masks: Tensor  # (B, K, N)
    reconstruction: Tensor  # (B, N, D_feat)
    features: Tensor  # (B, N, D_feat) encoder tokens: the target
    grid: tuple[int, int]


def feature_reconstruction_loss(reconstruction: Tensor, features: Tensor) -> Tensor:
    """DINOSAUR's objective (and GLASS Eq. 3, L_instance): MSE to the frozen encoder features."""
    return F.mse_loss(reconstruction, features.detach())


class Dinosaur(ObjectCentricModel):
    method = "dinosaur"
    config_class = DinosaurConfig

    def __init__(self, config: DinosaurConfig, architectures: Mapping[str, dict] | None = None):
        super().__init__(config)
        self.encoder = build_method_encoder(config.encoder, (architectures or {}).get("encoder"))
        self.grid = self.encoder.grid_size()
        sa, dec = fit_to_encoder(config.slot_attention, config.decoder, self.encoder.dim, self.grid)
        self.slot_attention = SlotAttention(sa)
        self.decoder = MLPDecoder(dec)

    def forward(self, batch: Batch | Tensor, num_slots: int | None = None) -> DinosaurOutput:
        images = batch.image if isinstance(batch, Batch) else batch
        features = self.encoder(images)
        grouping = self.slot_attention(features, self.grid, num_slots=num_slots)
        decoded = self.decoder(grouping.slots)
        return DinosaurOutput(
            slots=grouping.slots,
            attention=grouping.attention,
            decoder_masks=decoded.masks,
            reconstruction=decoded.reconstruction,
            features=features,
            grid=self.grid,
        )

    def losses(self, outputs: DinosaurOutput, batch: Batch) -> dict[str, Tensor]:
        """DINOSAUR's one term: the MSE of the MLP decoder's reconstruction of the frozen
        encoder features (``feature_reconstruction_loss``)."""
        mse = feature_reconstruction_loss(outputs.reconstruction, outputs.features)
        return {"loss": mse, "feature_mse": mse}

    def encoder_tokens(self, outputs: DinosaurOutput) -> Tensor | None:
        return outputs.features

    def masks(self, outputs: DinosaurOutput) -> Tensor:
        if self.config.mask_source == "decoder":
            m = outputs.decoder_masks
        else:
            m = outputs.attention.transpose(1, 2)
        return m.reshape(m.shape[0], m.shape[1], *outputs.grid)

    def parameter_groups(self) -> dict[str, list[torch.nn.Parameter]]:
        groups = {
            "encoder": [p for m in self.encoder.trainable_modules for p in m.parameters()],
            "grouping": list(self.slot_attention.parameters()),
            "decoder": list(self.decoder.parameters()),
        }
        return {name: params for name, params in groups.items() if params}
