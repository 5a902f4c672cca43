"""SPOT (Kakogeorgiou et al., CVPR 2024): self-training with patch-order permutation.

Encoder (DINO ViT-B/16, last block without the final norm) -> slot attention (SPOT Eq. 3,
A_SLOT) -> autoregressive transformer decoder reconstructing the encoder tokens (SPOT
Eq. 1, 2), in one of nine patch orders with a [BOS] token each (SPOT Eq. 8, 9); its last
cross-attention is the decoder mask A_DEC (SPOT Eq. 4).

Stage 1 trains with L_REC and random orders. Stage 2 (``teacher``: a stage-1 model
directory) trains a new student with L = L_REC + lambda L_ATT (SPOT Eq. 7): the frozen
teacher's A_DEC, decoded in a random order, is distilled into the student's slot
attention (SPOT Eq. 5, 6). With ``encoder.trainable_blocks`` > 0 a frozen copy of the
encoder gives the reconstruction targets. ``decoder: null`` + ``mlp_decoder`` is the MLP
variant (raster only).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import torch
from torch import Tensor, nn

from slotlab.config import ConfigError
from slotlab.data.sample import Batch
from slotlab.io.checkpoints import is_model_dir
from slotlab.io.layout import MODEL_CONFIG_FILE, MODEL_DIR
from slotlab.methods.base import ObjectCentricModel
from slotlab.methods.spot_losses import attention_distillation, reconstruction_loss
from slotlab.nn.decoders.autoregressive import AutoregressiveDecoder, AutoregressiveDecoderConfig, xavier_linear
from slotlab.nn.decoders.orders import ORDER_NAMES, RASTER, PatchOrders, check_order_names
from slotlab.methods.encoder_parts import build_method_encoder
from slotlab.nn.encoders import EncoderConfig, ViTEncoderConfig
from slotlab.nn.decoders.mlp import MLPDecoder, MLPDecoderConfig
from slotlab.nn.slot_attention import SlotAttention, SlotAttentionConfig

MASK_SOURCES = ("decoder", "attention")
EVAL_ORDERS = ("raster", "ensemble")


@dataclass
class SpotConfig:
    """SPOT; sizes that follow from the encoder and the slots may be left null.

    orders:            patch orders the decoder is trained in (one [BOS] each; paper: all 9;
                       ``[left_top]`` = raster only, Table 1 (a)). Must include left_top.
    per_sample_orders: draw an order per sample instead of one per batch (SPOT: per batch).
    eval_orders:       "raster" or "ensemble" (ENS: average over all ``orders``).
    mask_source:       "decoder" (A_DEC, SPOT's default) or "attention" (A_SLOT).
    teacher:           stage 2: the directory of a trained stage-1 SPOT model.
    distill_weight:    lambda of SPOT Eq. 7 (paper 0.005; 0.001 with the MLP decoder).
    teacher_orders:    the teacher decodes in a random order ("random", paper default,
                       Table 2b) or in raster order ("raster").
    mlp_slot_projection: MLP variant: project the slots (Linear + LayerNorm) to the token
                       width before the decoder, as the authors' code does by default.
    """

    encoder: EncoderConfig = field(default_factory=lambda: ViTEncoderConfig(name="dino", image_size=224))
    slot_attention: SlotAttentionConfig = field(
        default_factory=lambda: SlotAttentionConfig(slot_dim=256, num_slots=7, iters=3, mlp_hidden=1024, eps=1e-8)
    )
    decoder: AutoregressiveDecoderConfig | None = field(default_factory=AutoregressiveDecoderConfig)
    mlp_decoder: MLPDecoderConfig | None = None
    orders: tuple[str, ...] = ORDER_NAMES
    per_sample_orders: bool = False
    eval_orders: str = "raster"
    mask_source: str = "decoder"
    teacher: str | None = None
    distill_weight: float = 0.005
    teacher_orders: str = "random"
    mlp_slot_projection: bool = True

    def __post_init__(self) -> None:
        if (self.decoder is None) == (self.mlp_decoder is None):
            raise ValueError("set exactly one of decoder (autoregressive) and mlp_decoder (set the other to null)")
        self.orders = check_order_names(self.orders)
        if RASTER not in self.orders:
            raise ValueError(f"orders={list(self.orders)} must include the raster order {RASTER!r} (evaluation uses it)")
        if self.mlp_decoder is not None and self.orders != (RASTER,):
            raise ValueError(f"the MLP decoder has no order: set orders=[{RASTER}]")
        for name, value, allowed in (
            ("eval_orders", self.eval_orders, EVAL_ORDERS),
            ("mask_source", self.mask_source, MASK_SOURCES),
            ("teacher_orders", self.teacher_orders, ("random", "raster")),
        ):
            if value not in allowed:
                raise ValueError(f"{name}={value!r}; choose one of {allowed}")
        if self.distill_weight < 0:
            raise ValueError(f"distill_weight={self.distill_weight} must be >= 0")


@dataclass
class SpotOutput:
    slots: Tensor  # (B, K, D)
    attention: Tensor  # (B, N, K) A_SLOT, last iteration
    logits: Tensor  # (B, N, K) last-iteration slot-attention logits
    decoder_attention: Tensor  # (B, N, K) A_DEC (raster order)
    reconstruction: Tensor  # (B, N, d_y) raster order
    targets: Tensor  # (B, N, d_y) the reconstruction targets Y
    features: Tensor  # (B, N, d_y) the tokens the slots group
    grid: tuple[int, int]
    teacher_attention: Tensor | None = None  # (B, N, K) the teacher's A_DEC (stage 2, training)


def load_teacher(directory: str) -> "Spot":
    """A stage-1 SPOT model, frozen, from its ``save_pretrained`` directory, or a clear error."""
    path = Path(directory)
    if not is_model_dir(path):
        hint = f" (the run's model is in {path / MODEL_DIR})" if is_model_dir(path / MODEL_DIR) else ""
        raise ConfigError(f"teacher={directory!r}: {path / MODEL_CONFIG_FILE} does not exist; point teacher to a trained "
                          f"stage-1 SPOT model directory{hint}")
    try:
        teacher = Spot.from_pretrained(path)
    except (ConfigError, FileNotFoundError) as err:
        raise ConfigError(f"teacher={directory!r}: {err}") from err
    if teacher.config.teacher:
        raise ConfigError(f"teacher={directory!r} is a stage-2 SPOT model; the teacher must be a stage-1 model (teacher: null)")
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def check_teacher(teacher: "Spot", grid: tuple[int, int], num_slots: int, directory: str) -> None:
    """The teacher's masks must cover the student's token grid with as many slots (SPOT matches them one to one)."""
    theirs = (teacher.grid, teacher.config.slot_attention.num_slots)
    if theirs != (grid, num_slots):
        raise ConfigError(f"teacher={directory!r} has a {theirs[0][0]}x{theirs[0][1]} token grid and {theirs[1]} slots; "
                          f"the student has {grid[0]}x{grid[1]} and {num_slots}: train the teacher with the student's "
                          "encoder and slot count")


class Spot(ObjectCentricModel):
    method = "spot"
    config_class = SpotConfig

    def __init__(self, config: SpotConfig, architectures: Mapping[str, dict] | None = None):
        super().__init__(config)
        stored = architectures or {}
        self.encoder = build_method_encoder(config.encoder, stored.get("encoder"))
        self.grid = self.encoder.grid_size()
        dim, tokens = self.encoder.dim, self.grid[0] * self.grid[1]
        self.target_encoder = None
        if config.encoder.trainable_blocks > 0:  # targets from a frozen copy (SPOT stage 2)
            frozen = dataclasses.replace(config.encoder, trainable_blocks=0)
            self.target_encoder = build_method_encoder(frozen, stored.get("target_encoder"))
        sa = config.slot_attention
        if sa.input_dim not in (None, dim):
            raise ValueError(f"slot_attention.input_dim={sa.input_dim} contradicts the encoder ({dim}); set it to {dim} or null")
        self.slot_attention = SlotAttention(dataclasses.replace(sa, input_dim=dim))
        self.orders = PatchOrders(config.orders, self.grid)
        if config.decoder is not None:
            if config.decoder.output_dim is None and config.decoder.width != dim:
                raise ValueError(
                    f"decoder.width={config.decoder.width} must equal the encoder's token width {dim}: SPOT's decoder "
                    f"predicts the tokens at its own width (or set decoder.output_dim={dim} for an output head)"
                )
            dec = dataclasses.replace(config.decoder, input_dim=dim, slot_dim=sa.slot_dim, num_tokens=tokens,
                                      num_bos=len(config.orders))
            self.decoder = AutoregressiveDecoder(dec)
            self.slot_projection = None
        else:
            width = dim if config.mlp_slot_projection else sa.slot_dim
            self.slot_projection = (
                nn.Sequential(xavier_linear(sa.slot_dim, dim), nn.LayerNorm(dim)) if config.mlp_slot_projection else None
            )
            mlp = dataclasses.replace(config.mlp_decoder, slot_dim=width, feature_dim=dim, num_tokens=tokens)
            self.decoder = MLPDecoder(mlp)
        # The teacher is kept out of the module tree: it is neither trained nor saved.
        self.__dict__["teacher"] = load_teacher(config.teacher) if config.teacher and architectures is None else None
        if self.teacher is not None:
            check_teacher(self.teacher, self.grid, sa.num_slots, config.teacher)

    def default_loss_weights(self) -> dict[str, float]:
        weights = {"reconstruction": 1.0}
        if self.config.teacher:
            weights["distillation"] = self.config.distill_weight
        return weights

    # ---- the network ------------------------------------------------------------------
    def decode(self, slots: Tensor, targets: Tensor, orders: Tensor | None) -> tuple[Tensor, Tensor]:
        """Reconstruction and A_DEC, both (B, N, .) in raster order.

        ``orders``: indices into this model's orders, (1,) for the batch or (B,) per sample;
        None decodes in every order and averages (ENS).
        """
        if isinstance(self.decoder, MLPDecoder):
            slots = self.slot_projection(slots) if self.slot_projection is not None else slots
            decoded = self.decoder(slots)
            return decoded.reconstruction, decoded.masks.transpose(1, 2)
        if orders is not None:
            order = self.orders.orders[orders]
            order = order[0] if len(orders) == 1 else order
            bos = orders[0] if len(orders) == 1 else orders
            out = self.decoder(targets, slots, order=order, bos_index=bos)
            return out.prediction, out.attention
        # ENS: every order at once, the batch repeated once per order.
        m, b = len(self.orders), targets.shape[0]
        index = torch.arange(m, device=targets.device).repeat_interleave(b)
        out = self.decoder(targets.repeat(m, 1, 1), slots.repeat(m, 1, 1), order=self.orders.orders[index], bos_index=index)
        return out.prediction.view(m, b, *out.prediction.shape[1:]).mean(0), out.attention.view(m, b, -1, slots.shape[1]).mean(0)

    def order_indices(self, batch_size: int, device: torch.device) -> Tensor | None:
        """The orders of this forward pass: sampled in training, raster or all (ENS) in eval."""
        if self.training:
            return self.orders.sample(batch_size, self.config.per_sample_orders)
        if self.config.eval_orders == "ensemble":
            return None
        return torch.tensor([self.orders.index(RASTER)], device=device)

    def from_tokens(
        self, features: Tensor, targets: Tensor, num_slots: int | None = None, orders: Tensor | None = None,
        ensemble: bool = False, noise: Tensor | None = None,
    ) -> SpotOutput:
        """Group encoder ``features`` and reconstruct ``targets`` (both (B, N, d_y)); ``orders``
        None picks them as :meth:`order_indices` does, unless ``ensemble``. ``noise`` replaces
        the slot initialiser's random draw (to replay recorded draws)."""
        grouping = self.slot_attention(features, self.grid, num_slots=num_slots, noise=noise)
        if orders is None and not ensemble:
            orders = self.order_indices(features.shape[0], features.device)
        reconstruction, decoder_attention = self.decode(grouping.slots, targets, orders)
        return SpotOutput(
            slots=grouping.slots, attention=grouping.attention, logits=grouping.logits,
            decoder_attention=decoder_attention, reconstruction=reconstruction, targets=targets,
            features=features, grid=self.grid,
        )

    def forward(self, batch: Batch | Tensor, num_slots: int | None = None) -> SpotOutput:
        images = batch.image if isinstance(batch, Batch) else batch
        features = self.encoder(images)
        if self.target_encoder is not None:
            with torch.no_grad():
                targets = self.target_encoder(images)
        else:
            targets = features.detach()
        outputs = self.from_tokens(features, targets, num_slots)
        if self.training and self.teacher is not None and self.loss_weights.get("distillation", 0) > 0:
            outputs.teacher_attention = self.teacher_masks(images)
        return outputs

    @torch.no_grad()
    def teacher_masks(self, images: Tensor) -> Tensor:
        """The frozen teacher's A_DEC (eval mode; a random or the raster order, SPOT Sec. 3.1)."""
        teacher = self.teacher.to(images.device).eval()
        features = teacher.encoder(images)
        if self.config.teacher_orders == "random" and not isinstance(teacher.decoder, MLPDecoder):
            orders = teacher.orders.sample(images.shape[0], self.config.per_sample_orders)
        else:
            orders = torch.tensor([teacher.orders.index(RASTER)], device=images.device)
        return teacher.from_tokens(features, features, orders=orders).decoder_attention

    # ---- the contract -----------------------------------------------------------------
    def losses(self, outputs: SpotOutput, batch: Batch) -> dict[str, Tensor]:
        """SPOT Eq. 7: L = L_REC + lambda L_ATT (stage 1: L_REC alone), with L_REC the token
        reconstruction of SPOT Eq. 1 (``reconstruction_loss``) and L_ATT the distillation of
        the teacher's decoder masks into the student's slot attention, SPOT Eq. 5, 6
        (``attention_distillation``); lambda is ``distill_weight``."""
        rec = reconstruction_loss(outputs.reconstruction, outputs.targets)
        terms = {"reconstruction": rec}
        weight = self.loss_weights.get("distillation", 0.0)
        if weight > 0:
            if outputs.teacher_attention is None:
                raise ValueError("the distillation loss needs the teacher's masks: compute the outputs in training mode")
            terms["distillation"] = attention_distillation(outputs.logits, outputs.attention, outputs.teacher_attention).loss
        total = sum(self.loss_weights[name] * value for name, value in terms.items())
        return {"loss": total, **terms}

    def encoder_tokens(self, outputs: SpotOutput) -> Tensor | None:
        return outputs.features

    def masks(self, outputs: SpotOutput) -> Tensor:
        m = outputs.decoder_attention if self.config.mask_source == "decoder" else outputs.attention
        return m.transpose(1, 2).reshape(m.shape[0], m.shape[2], *outputs.grid)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        decoder = list(self.decoder.parameters())
        if self.slot_projection is not None:
            decoder += list(self.slot_projection.parameters())
        groups = {
            "encoder": [p for m in self.encoder.trainable_modules for p in m.parameters()],
            "grouping": list(self.slot_attention.parameters()),
            "decoder": decoder,
        }
        return {name: params for name, params in groups.items() if params}
