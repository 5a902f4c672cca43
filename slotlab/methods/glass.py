"""GLASS: Guided Latent Slot Diffusion (GLASS Sec. 4, Eq. 1-3, supplement Sec. 2).

Frozen encoder -> slot attention (GLASS Eq. 1) -> two decoders: the MLP feature decoder
(instance guidance, L_instance) and a slot-conditioned diffusion decoder (L_recon); the
slot-attention masks are guided by pseudo semantic masks (L_semantic, matched by GLASS
Eq. 2). ``Glass.forward`` runs the networks; ``Glass.losses`` is GLASS Eq. 3, L = L_recon +
lambda_s L_semantic + lambda_i L_instance, each term one function. Masks for evaluation are
the slot attention of the last iteration (GLASS Sec. 5.1).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import torch
from safetensors.torch import load_file
from torch import Tensor

from slotlab.data.sample import Batch
from slotlab.ops.resize import resize_image, resize_mask, resize_masks_soft
from slotlab.methods.semantic_guidance import MATCH_COSTS, SEGMENT_KINDS, semantic_guidance_loss
from slotlab.io.layout import WEIGHTS_FILE
from slotlab.methods.base import ObjectCentricModel
from slotlab.methods.dinosaur import feature_reconstruction_loss, fit_to_encoder
from slotlab.methods.scene_descriptions import DescriptionConfig, SceneDescriber
from slotlab.diffusion.config import DiffusionDecoderConfig
from slotlab.diffusion.decoder import SlotDiffusionDecoder
from slotlab.diffusion.objective import Denoising, denoising_loss
from slotlab.methods.encoder_parts import build_method_encoder
from slotlab.nn.encoders import EncoderConfig, ViTEncoderConfig
from slotlab.nn.decoders.mlp import MLPDecoder, MLPDecoderConfig
from slotlab.nn.slot_attention import SlotAttention, SlotAttentionConfig


#: ``--set`` overrides that swap every pretrained part of a GLASS paper preset for its tiny
#: random twin and shrink the widths, keeping the architecture: the whole paper path runs
#: offline in seconds (tests, benchmarks).
PAPER_TWIN_OVERRIDES = (
    "model.encoder.path=null", "model.encoder.tiny=true", "model.encoder.image_size=56",
    "model.slot_attention.slot_dim=32", "model.slot_attention.mlp_hidden=32",
    "model.instance_decoder.hidden_dim=32",
    "model.diffusion_decoder.pretrained_path=null", "model.diffusion_decoder.tiny=true",
    "model.diffusion_decoder.resolution=32", "model.diffusion_decoder.cross_attention_dim=32",
    "data.num_workers=0", "mixed_precision=fp32",
)


def _glass_slot_attention() -> SlotAttentionConfig:
    # Released GLASS model: 7 slots, 5 iterations, 768 everywhere, eps 1e-6, position
    # embedding + input MLP; output projection to the UNet's cross-attention width.
    return SlotAttentionConfig(slot_dim=768, num_slots=7, iters=5, mlp_hidden=768, eps=1e-6, output_dim=None)


@dataclass
class GlassConfig:
    """GLASS. ``diffusion_decoder: null`` drops the diffusion decoder (then lambda_recon
    must be 0): the slot attention is then trained by the two guidances alone.
    ``instance_decoder: null`` drops the MLP decoder (then lambda_instance must be 0), as in
    the authors' released checkpoint (``slotlab import glass``).

    lambda_semantic / lambda_instance / lambda_recon: the weights of GLASS Eq. 3 (paper:
    0.7 / 0.9 / 1). semantic_cost: how Eq. 2 scores IoU ("soft" slot masks or "hard"
    argmax masks). semantic_background: also match the background as a segment.
    semantic_segments: "classes" (GLASS: one segment per class, so one slot per class) or
    "components" (not in GLASS: each connected piece of a class's region is a segment, so
    separated instances of one class are matched to different slots).
    semantic_resolution: resize pseudo masks (nearest) to this side before matching,
    instead of upsampling slot masks to the pseudo-mask size (None = the paper's way).
    description: pretrain the diffusion decoder before GLASS trains, conditioned on
    description tokens of the scenes (``slotlab.methods.scene_descriptions``; loss term
    ``pretrain_recon``, weight 0 unless a stage sets it). For decoders without a pretrained
    prior (the CPU presets); None for SD 2.1, which comes pretrained.
    decoder_init: a GLASS model directory whose diffusion decoder (and describer) this model
    starts from, e.g. the output of ``slotlab train --preset glass-tiny-decoder``: the CPU
    presets' pretrained decoder, which phase 1 keeps frozen (its lr is not set there).
    """

    encoder: EncoderConfig = field(default_factory=lambda: ViTEncoderConfig(name="dinov2", image_size=448))
    slot_attention: SlotAttentionConfig = field(default_factory=_glass_slot_attention)
    instance_decoder: MLPDecoderConfig | None = field(default_factory=MLPDecoderConfig)
    diffusion_decoder: DiffusionDecoderConfig | None = field(default_factory=DiffusionDecoderConfig)
    lambda_semantic: float = 0.7
    lambda_instance: float = 0.9
    lambda_recon: float = 1.0
    semantic_cost: str = "soft"
    semantic_background: bool = False
    semantic_segments: str = "classes"
    semantic_resolution: int | None = None
    description: DescriptionConfig | None = None
    decoder_init: str | None = None

    def __post_init__(self) -> None:
        if self.semantic_cost not in MATCH_COSTS:
            raise ValueError(f"semantic_cost={self.semantic_cost!r}; choose one of {MATCH_COSTS}")
        if self.semantic_segments not in SEGMENT_KINDS:
            raise ValueError(f"semantic_segments={self.semantic_segments!r}; choose one of {SEGMENT_KINDS}")
        if self.diffusion_decoder is None and self.lambda_recon:
            raise ValueError("lambda_recon > 0 needs a diffusion_decoder; set lambda_recon=0 or configure one")
        if self.instance_decoder is None and self.lambda_instance:
            raise ValueError("lambda_instance > 0 needs an instance_decoder; set lambda_instance=0 or configure one")
        if self.diffusion_decoder is None and (self.description is not None or self.decoder_init is not None):
            raise ValueError("description and decoder_init concern the diffusion decoder: configure one or drop them")


def load_decoder_init(model: "Glass", directory: Path) -> None:
    """Copy the diffusion decoder and describer weights of the GLASS model in ``directory``."""
    path = directory / WEIGHTS_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"decoder_init={directory}: no {WEIGHTS_FILE} there; train the decoder first "
            "(slotlab train --preset glass-tiny-decoder --out DIR) and point decoder_init at DIR/model"
        )
    prefixes = ("diffusion_decoder.", "describer.") if model.describer is not None else ("diffusion_decoder.",)
    own = {k: v for k, v in model.state_dict().items() if k.startswith(prefixes)}
    stored = {k: v for k, v in load_file(str(path)).items() if k.startswith(prefixes)}
    if set(own) != set(stored) or any(own[k].shape != stored[k].shape for k in own):
        raise ValueError(
            f"decoder_init={directory}: its diffusion decoder / describer do not match this model's "
            "(train it with the same model.diffusion_decoder and model.description settings)"
        )
    model.load_state_dict(stored, strict=False)


@dataclass
class GlassOutput:
    slots: Tensor | None  # (B, K, D_out): the decoder's conditioning tokens (None: decoder pretraining)
    attention: Tensor | None  # (B, N, K) last slot-attention iteration
    grid: tuple[int, int]
    features: Tensor | None  # (B, N, D) encoder tokens
    feature_reconstruction: Tensor | None = None  # (B, N, D) from the MLP decoder
    denoising: Denoising | None = None  # the diffusion decoder conditioned on the slots (L_recon)
    pretrain_denoising: Denoising | None = None  # the decoder conditioned on description tokens


class Glass(ObjectCentricModel):
    method = "glass"
    config_class = GlassConfig

    def __init__(self, config: GlassConfig, architectures: Mapping[str, dict] | None = None):
        super().__init__(config)
        stored = architectures or {}
        self.encoder = build_method_encoder(config.encoder, stored.get("encoder"))
        self.grid = self.encoder.grid_size()
        # Without an MLP decoder (the authors' released checkpoint) its sizes are filled but unused.
        sa, dec = fit_to_encoder(config.slot_attention, config.instance_decoder or MLPDecoderConfig(), self.encoder.dim, self.grid)
        if config.diffusion_decoder is not None:
            width = config.diffusion_decoder.cross_attention_dim
            if sa.output_dim not in (None, width):
                raise ValueError(
                    f"slot_attention.output_dim={sa.output_dim} must equal diffusion_decoder.cross_attention_dim={width}"
                )
            sa = dataclasses.replace(sa, output_dim=width)
        self.slot_attention = SlotAttention(sa)
        self.instance_decoder = MLPDecoder(dec) if config.instance_decoder is not None else None
        self.diffusion_decoder = None
        if config.diffusion_decoder is not None:
            architecture = stored.get("diffusion_decoder")
            self.diffusion_decoder = (
                SlotDiffusionDecoder.from_config(config.diffusion_decoder)
                if architecture is None
                else SlotDiffusionDecoder.from_architecture(config.diffusion_decoder, architecture)
            )
        self.describer = None
        if config.description is not None:
            self.describer = SceneDescriber(config.description, config.diffusion_decoder.cross_attention_dim)
        if config.decoder_init is not None and architectures is None:  # a checkpoint brings its own weights
            load_decoder_init(self, Path(config.decoder_init))

    def default_loss_weights(self) -> dict[str, float]:
        c = self.config
        return {"recon": c.lambda_recon, "semantic": c.lambda_semantic, "instance": c.lambda_instance, "pretrain_recon": 0.0}

    def forward(self, batch: Batch | Tensor, num_slots: int | None = None) -> GlassOutput:
        """Encoder -> slot attention; in training also the decoders the weighted terms read."""
        w = self.loss_weights
        if self.training and w["pretrain_recon"] and not (w["recon"] or w["semantic"] or w["instance"]):
            # Pretraining the decoder alone: nothing of the slot model is needed.
            return GlassOutput(None, None, self.grid, None, pretrain_denoising=self.pretrain_denoising(batch))
        images = batch.image if isinstance(batch, Batch) else batch
        features = self.encoder(images)
        grouping = self.slot_attention(features, self.grid, num_slots=num_slots)
        out = GlassOutput(slots=grouping.slots, attention=grouping.attention, grid=self.grid, features=features)
        if not self.training:
            return out
        if w["instance"]:
            out.feature_reconstruction = self.instance_decoder(grouping.slots_pre_projection).reconstruction
        if w["recon"]:
            size = (self.config.diffusion_decoder.resolution,) * 2
            # With mask_bias_grid the decoder reads where the masks are; it does not reshape them.
            context = self.diffusion_decoder.context(grouping.slots, self.attention_masks(out).detach())
            out.denoising = self.diffusion_decoder.denoising(resize_image(images, size).clamp(0, 1), context)
        if w["pretrain_recon"]:
            out.pretrain_denoising = self.pretrain_denoising(batch)
        return out

    def pretrain_denoising(self, batch: Batch | Tensor) -> Denoising:
        """The diffusion decoder conditioned on the batch's description tokens (its pretraining,
        before GLASS trains; see ``slotlab.methods.scene_descriptions``)."""
        if self.describer is None or not isinstance(batch, Batch):
            raise ValueError("loss term pretrain_recon needs model.description and batches with pseudo masks")
        decoder = self.diffusion_decoder
        pad = decoder.unconditional_tokens(1, 1)[0, 0]
        tokens = self.describer(batch, pad)
        size = (self.config.diffusion_decoder.resolution,) * 2
        return decoder.denoising(resize_image(batch.image, size).clamp(0, 1), tokens)

    def attention_masks(self, outputs: GlassOutput) -> Tensor:
        a = outputs.attention.transpose(1, 2)
        return a.reshape(a.shape[0], a.shape[1], *outputs.grid)

    def masks(self, outputs: GlassOutput) -> Tensor:
        return self.attention_masks(outputs)

    def encoder_tokens(self, outputs: GlassOutput) -> Tensor | None:
        return outputs.features

    def semantic_loss(self, outputs: GlassOutput, batch: Batch):
        """L_semantic on the batch's pseudo masks (semantic_mask, with ignore_mask as 255)."""
        semantic, ignore = batch.semantic_mask, batch.ignore_mask
        if self.config.semantic_resolution:
            size = (self.config.semantic_resolution,) * 2
            semantic, ignore = resize_mask(semantic, size), resize_mask(ignore, size)
        masks = resize_masks_soft(self.attention_masks(outputs), tuple(semantic.shape[-2:]))
        c = self.config
        return semantic_guidance_loss(masks, semantic, ignore, c.semantic_cost, c.semantic_background, c.semantic_segments)

    def losses(self, outputs: GlassOutput, batch: Batch) -> dict[str, Tensor]:
        """GLASS Eq. 3: L = L_recon + lambda_s L_semantic + lambda_i L_instance, with

        - L_recon = MSE(I_gen, I_recon): the diffusion decoder's denoising loss, conditioned
          on the slots (``denoising_loss``);
        - L_semantic = BCE(P(M_gen, A(S, H))): the slot-attention masks A matched to the
          pseudo-mask segments by GLASS Eq. 2, BCE on the matched pairs
          (``semantic_guidance_loss``);
        - L_instance = MSE(F_inp, F_recon): the MLP decoder's reconstruction of the encoder
          features (``feature_reconstruction_loss``).

        The weights are ``loss_weights`` ("recon", "semantic", "instance": lambda_recon = 1,
        lambda_semantic, lambda_instance); a term of weight 0 is skipped. Not in Eq. 3:
        "pretrain_recon", the decoder's denoising loss on description tokens (its
        pretraining on the CPU presets, weight 0 unless a stage sets it).
        """
        w = self.loss_weights
        terms: dict[str, Tensor] = {}
        if w["recon"]:
            terms["recon"] = denoising_loss(outputs.denoising)
        if w["semantic"]:
            terms["semantic"] = self.semantic_loss(outputs, batch).loss
        if w["instance"]:
            terms["instance"] = feature_reconstruction_loss(outputs.feature_reconstruction, outputs.features)
        if w["pretrain_recon"]:
            terms["pretrain_recon"] = denoising_loss(outputs.pretrain_denoising)
        if not terms:
            raise ValueError("every GLASS loss weight is 0 in this stage: nothing to train")
        total = sum(w[name] * value for name, value in terms.items())
        return {"loss": total, **terms}

    def parameter_groups(self) -> dict[str, list[torch.nn.Parameter]]:
        groups = {
            "encoder": [p for m in self.encoder.trainable_modules for p in m.parameters()],
            "grouping": list(self.slot_attention.parameters()),
            "instance_decoder": list(self.instance_decoder.parameters()) if self.instance_decoder else [],
            "diffusion_decoder": self.diffusion_decoder.trainable_parameters() if self.diffusion_decoder else [],
            "describer": list(self.describer.parameters()) if self.describer else [],
        }
        return {name: params for name, params in groups.items() if params}
