"""SlotDiffusion (Wu et al., 2023) guided by a frozen VQ-VAE, with or without MSF (MSF Sec. 3.1).

encoder -> slot attention -> slots; the slot-conditioned latent diffusion decoder (the one GLASS
uses, a UNet trained from scratch here) learns to predict the noise added to the VQ-VAE's
scale-1 representation (4 channels; with MSF the fused one), conditioned on the slots:
L = || eps - eps_theta(x_t, t, S) ||^2 (noise prediction, the default DDPM scheduler).
``forward`` runs the UNet in training, ``losses`` takes the mean squared error.
Masks: the slot attention's.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Mapping

import torch
from torch import Tensor, nn

from slotlab.config import ConfigError
from slotlab.data.sample import Batch
from slotlab.ops.resize import resize_image
from slotlab.methods.vqvae import GuidedByVQVAE
from slotlab.nn.autoencoders import ImageAutoencoder
from slotlab.diffusion.config import DiffusionDecoderConfig
from slotlab.diffusion.decoder import SlotDiffusionDecoder
from slotlab.diffusion.objective import Denoising, denoising_loss
from slotlab.methods.encoder_parts import build_method_encoder
from slotlab.nn.encoders import EncoderConfig, PatchEncoderConfig
from slotlab.nn.quantize.vqvae import DOWNSAMPLING, VQVAE
from slotlab.nn.slot_attention import SlotAttention, SlotAttentionConfig


class VQVAELatent(ImageAutoencoder):
    """A frozen VQ-VAE as the diffusion decoder's latent space: images -> the scale-1
    (fused) quantised representation, and back through the VQ-VAE decoder."""

    downscale_factor = DOWNSAMPLING

    def __init__(self, vqvae: VQVAE):
        super().__init__()
        self.vqvae = vqvae
        self.latent_channels = vqvae.config.code_dim
        self.freeze()

    def encode(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return self.vqvae.tokenize(images).output

    def decode(self, latents: Tensor) -> Tensor:
        return ((self.vqvae.decoder(latents) + 1) / 2).clamp(0, 1)


@dataclass
class SlotDiffusionConfig:
    """encoder -> slot attention -> slot-conditioned diffusion over a frozen VQ-VAE's latent.

    vqvae:  model directory of a pretrained VQ-VAE with code_dim 4 (``vqvae-...-c4`` presets).
    diffusion_decoder: the UNet and noise schedule (no ``pretrained_path``: SlotDiffusion trains
            its UNet from scratch; ``resolution`` is the VQ-VAE's image size, filled in). DDPM's
            linear betas and noise prediction. SlotDiffusion has no unconditional branch; the
            shared decoder requires one, so a learned null token is trained on 10% of samples
            (it only matters for guided sampling).
    """

    encoder: EncoderConfig = field(default_factory=PatchEncoderConfig)
    slot_attention: SlotAttentionConfig = field(
        default_factory=lambda: SlotAttentionConfig(slot_dim=256, num_slots=11, iters=3, mlp_hidden=1024,
                                                    init="annealed_gaussian")
    )
    diffusion_decoder: DiffusionDecoderConfig = field(
        default_factory=lambda: DiffusionDecoderConfig(latent="pixel", cross_attention_dim=256, prediction_type="epsilon",
                                                       beta_schedule="linear", unconditional="null_slots",
                                                       condition_dropout=0.1)
    )
    vqvae: str | None = None


@dataclass
class SlotDiffusionOutput:
    slots: Tensor
    attention: Tensor  # (B, N, K)
    grid: tuple[int, int]
    denoising: Denoising | None = None  # the decoder conditioned on the slots (training only)


class SlotDiffusion(GuidedByVQVAE):
    method = "slotdiffusion"
    config_class = SlotDiffusionConfig

    def __init__(self, config: SlotDiffusionConfig, architectures: Mapping[str, dict] | None = None):
        super().__init__(config)
        vqvae = self.attach_vqvae(architectures)
        dd = config.diffusion_decoder
        if dd.pretrained_path is not None:
            raise ConfigError("model.diffusion_decoder.pretrained_path: SlotDiffusion trains its UNet from scratch "
                              "on the VQ-VAE latent; leave it null")
        if dd.resolution != vqvae.config.image_size:
            dd = dataclasses.replace(dd, resolution=vqvae.config.image_size)
        self.encoder = build_method_encoder(config.encoder, (architectures or {}).get("encoder"))
        self.grid = self.encoder.grid_size()
        sa = dataclasses.replace(config.slot_attention, input_dim=self.encoder.dim)
        if sa.slot_dim != dd.cross_attention_dim and sa.output_dim != dd.cross_attention_dim:
            raise ConfigError(f"model.diffusion_decoder.cross_attention_dim={dd.cross_attention_dim} must equal the "
                              f"slot width (slot_attention.slot_dim={sa.slot_dim})")
        self.slot_attention = SlotAttention(sa)
        self.decoder = SlotDiffusionDecoder(dd, autoencoder=VQVAELatent(vqvae))

    @property
    def vqvae(self) -> VQVAE:
        return self.decoder.autoencoder.vqvae

    def architectures(self) -> dict[str, dict]:
        # The UNet is rebuilt from the config; the VQ-VAE sits inside the decoder's latent space.
        records = {k: v for k, v in super().architectures().items() if k != "decoder"}
        return records | {"vqvae": self.vqvae.architecture()}

    def forward(self, batch: Batch | Tensor, num_slots: int | None = None) -> SlotDiffusionOutput:
        images = batch.image if isinstance(batch, Batch) else batch
        grouping = self.slot_attention(self.encoder(images), self.grid, num_slots=num_slots)
        outputs = SlotDiffusionOutput(grouping.slots, grouping.attention, self.grid)
        if self.training:
            size = self.decoder.config.resolution
            if images.shape[-2:] != (size, size):
                images = resize_image(images, (size, size)).clamp(0, 1)
            outputs.denoising = self.decoder.denoising(images, grouping.slots)
        return outputs

    def losses(self, outputs: SlotDiffusionOutput, batch: Batch) -> dict[str, Tensor]:
        """SlotDiffusion's one term: the denoising MSE of the slot-conditioned UNet on the
        VQ-VAE latent (``denoising_loss``; the noise eps with the default scheduler)."""
        if outputs.denoising is None:
            raise ValueError("the denoising loss needs the decoder's prediction: compute the outputs in training mode")
        mse = denoising_loss(outputs.denoising)
        return {"loss": mse, "denoising_mse": mse}

    def masks(self, outputs: SlotDiffusionOutput) -> Tensor:
        m = outputs.attention
        return m.transpose(1, 2).reshape(m.shape[0], m.shape[2], *outputs.grid)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        groups = {
            "encoder": [p for m in self.encoder.trainable_modules for p in m.parameters()],
            "grouping": list(self.slot_attention.parameters()),
            "decoder": self.decoder.trainable_parameters(),
        }
        return {name: params for name, params in groups.items() if params}
