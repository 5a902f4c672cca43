"""The slot-conditioned latent diffusion decoder (GLASS Sec. 4, Eq. 3 L_recon; Stable-LSD recipe).

GLASS decodes slots with Stable Diffusion 2.1: the K slots (B, K, 1024) take the place of the
77 CLIP text tokens in every cross-attention layer of the UNet (K = 7 tokens instead of 77).
Training minimises the denoising loss on the frozen autoencoder's latents (``denoising`` runs
the network, ``slotlab.diffusion.objective.denoising_loss`` is the image reconstruction term
L_recon of GLASS Eq. 3; ``loss`` composes the two);
sampling runs DPM-Solver++ with optional classifier-free guidance (``slotlab.diffusion.sampling``).
The class holds the network and its conditioning; the training step lives in
``slotlab.diffusion.objective``, the sampling loop in ``slotlab.diffusion.sampling`` and the
parts (loading, building, their stored shapes) in ``slotlab.diffusion.parts``.

Four working spaces (``DiffusionDecoderConfig.latent``): ``"vae"`` (AutoencoderKL, the paper),
``"pixel"`` (no autoencoder), ``"space_to_depth"`` (pixels with f x f blocks folded into
channels) and ``"taesd"`` (a tiny frozen TAESD-family autoencoder). A UNet is either loaded
from a local Stable Diffusion directory (``pretrained_path``) or built from scratch from the
size knobs of the config (the CPU configuration and ``tiny`` test twins).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from slotlab.diffusion.config import DiffusionDecoderConfig
from slotlab.diffusion.mask_attention import install_mask_biased_attention, pack_slot_masks, uniform_masks
from slotlab.diffusion.objective import Denoising, denoising_loss, denoising_step
from slotlab.diffusion.parts import (
    architecture_of,
    assemble_parts,
    check_parts,
    empty_prompt_embedding,
    parts_from_architecture,
)
from slotlab.diffusion.sampling import sample_images
from slotlab.nn.autoencoders import ImageAutoencoder


class SlotDiffusionDecoder(nn.Module):
    """Slot-conditioned diffusion decoder: slots replace the text tokens of a UNet's cross-attention.

    Builds every part the config names; parts passed explicitly take precedence. With
    ``config.pretrained_path`` the UNet, VAE and scheduler load from the local SD directory
    (``local_files_only=True``) and the empty-prompt embedding is computed once with its text
    encoder; otherwise the UNet is random from the config's size knobs.

    Args:
        config: the decoder configuration.
        unet: a ``UNet2DConditionModel`` whose ``cross_attention_dim`` equals the slot width.
        vae: an ``AutoencoderKL`` for ``latent="vae"`` (frozen here).
        scheduler: the training noise scheduler (diffusers ``DDPMScheduler``).
        unconditional_embedding: (L, D) empty-prompt embedding for
            ``unconditional="empty_prompt"``, instead of computing it; stored as a buffer
            (saved with the weights).
        autoencoder: the image autoencoder, instead of building the one ``latent`` names.
    """

    def __init__(
        self,
        config: DiffusionDecoderConfig,
        unet: nn.Module | None = None,
        vae: nn.Module | None = None,
        scheduler=None,
        unconditional_embedding: Tensor | None = None,
        autoencoder: ImageAutoencoder | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.unet, self.autoencoder, self.noise_scheduler = assemble_parts(config, unet, vae, scheduler, autoencoder)
        if config.mask_bias_grid is not None:
            install_mask_biased_attention(self.unet, config.cross_attention_dim, config.mask_bias_grid)
        self.prediction_type: str = config.prediction_type or self.noise_scheduler.config.prediction_type
        self.condition_dropout = config.effective_condition_dropout
        check_parts(config, self.unet, self.autoencoder)
        alphas_cumprod = self.noise_scheduler.alphas_cumprod.detach().clone().float()
        self.register_buffer("alphas_cumprod", alphas_cumprod, persistent=False)
        self.null_slot: nn.Parameter | None = None
        self.empty_prompt_embedding: Tensor | None
        if config.unconditional == "null_slots":
            # One token: K identical keys attend exactly like one, so it serves every K.
            self.null_slot = nn.Parameter(torch.randn(1, config.cross_attention_dim) * 0.02)
            self.register_buffer("empty_prompt_embedding", None)
        else:
            if unconditional_embedding is None:
                unconditional_embedding = empty_prompt_embedding(config)
            self._check_embedding(unconditional_embedding)
            self.register_buffer("empty_prompt_embedding", unconditional_embedding.detach().clone().float())

    # -- construction --------------------------------------------------------------------

    @classmethod
    def from_config(cls, config: DiffusionDecoderConfig, **parts) -> "SlotDiffusionDecoder":
        """``SlotDiffusionDecoder(config, **parts)``: the name other slotlab modules use."""
        return cls(config, **parts)

    def architecture(self) -> dict:
        """Every part's shape as JSON: :meth:`from_architecture` rebuilds the decoder from it
        without the Stable Diffusion directory or TAESD files (a checkpoint stores it)."""
        return architecture_of(self.unet, self.noise_scheduler, self.autoencoder, self.empty_prompt_embedding)

    @classmethod
    def from_architecture(cls, config: DiffusionDecoderConfig, architecture: dict) -> "SlotDiffusionDecoder":
        """A decoder of a stored shape with placeholder weights; the checkpoint's weights follow.

        Nothing is read from ``config.pretrained_path`` or ``config.taesd_path``.
        """
        return cls(config, **parts_from_architecture(architecture))

    def _check_embedding(self, embedding: Tensor) -> None:
        if embedding.dim() != 2 or embedding.shape[1] != self.config.cross_attention_dim:
            raise ValueError(
                f"unconditional_embedding must be (L, {self.config.cross_attention_dim}), got {tuple(embedding.shape)}"
            )

    # -- properties ------------------------------------------------------------------------

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """(C, h, w) of the diffused tensor."""
        side = self.config.resolution // self.autoencoder.downscale_factor
        return (self.autoencoder.latent_channels, side, side)

    def denoise(self, noisy: Tensor, timesteps: Tensor, context: Tensor) -> Tensor:
        """The UNet's prediction for x_t at t given the context tokens (B, K, D)."""
        if self.config.coordinate_channels:
            noisy = torch.cat([noisy, _coordinate_grid(noisy).expand(noisy.shape[0], -1, -1, -1)], dim=1)
        return self.unet(noisy, timesteps, encoder_hidden_states=context).sample

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The UNet's parameters (and the null token): the autoencoder stays frozen."""
        frozen = {id(p) for p in self.autoencoder.parameters()}
        return [p for p in self.parameters() if id(p) not in frozen]

    # -- conditioning ------------------------------------------------------------------------

    @property
    def context_dim(self) -> int:
        """Width of a context token: the slot width, plus G^2 mask values with ``mask_bias_grid``."""
        grid = self.config.mask_bias_grid
        return self.config.cross_attention_dim + (grid * grid if grid is not None else 0)

    def context(self, slots: Tensor, masks: Tensor | None = None) -> Tensor:
        """The context tokens (B, K, context_dim) the decoder conditions on, from slots (B, K, D)
        and, with ``mask_bias_grid``, their masks (B, K, H, W) in [0, 1]; edits (removing,
        adding, swapping) act on these tokens."""
        grid = self.config.mask_bias_grid
        if grid is None:
            return slots
        if masks is None:
            raise ValueError("this decoder has mask_bias_grid set: pass the slots' masks (B, K, H, W) as well")
        return pack_slot_masks(slots, masks, grid, hard=self.config.mask_bias_hard)

    def unconditional_tokens(self, batch_size: int, num_slots: int) -> Tensor:
        """(B, K, context_dim) tokens of the unconditional branch (empty prompt cut to K, or the
        null token; with ``mask_bias_grid``, masks of ones: no bias)."""
        if self.null_slot is not None:
            tokens = self.null_slot.expand(batch_size, num_slots, -1)
        else:
            available = self.empty_prompt_embedding.shape[0]
            if num_slots > available:
                raise ValueError(f"{num_slots} slots exceed the {available} tokens of the empty-prompt embedding")
            tokens = self.empty_prompt_embedding[:num_slots].expand(batch_size, -1, -1)
        if self.config.mask_bias_grid is not None:
            tokens = uniform_masks(tokens, self.config.mask_bias_grid)
        return tokens

    def drop_conditions(self, slots: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """In training, replace each sample's slots by the unconditional tokens with p = condition_dropout."""
        if not self.training or self.condition_dropout == 0.0:
            return slots
        batch, num_slots, _ = slots.shape
        rand_device = generator.device if generator is not None else slots.device
        dropped = torch.rand(batch, generator=generator, device=rand_device).to(slots.device) < self.condition_dropout
        unconditional = self.unconditional_tokens(batch, num_slots).to(slots.dtype)
        return torch.where(dropped[:, None, None], unconditional, slots)

    # -- training ------------------------------------------------------------------------------

    def _check_slots(self, slots: Tensor) -> None:
        if slots.dim() != 3 or slots.shape[-1] != self.context_dim:
            what = "cross_attention_dim" if self.config.mask_bias_grid is None else "slots + masks, see context()"
            raise ValueError(f"slots must be (B, K, {self.context_dim}) ({what}), got {tuple(slots.shape)}")

    def denoising(self, images: Tensor, slots: Tensor, generator: torch.Generator | None = None) -> Denoising:
        """The network side of L_recon: the slot-conditioned UNet's prediction and its target.

        Images (B, 3, R, R) in [0, 1] are encoded by the frozen autoencoder (scaled latents),
        t ~ U{0..T-1}, x_t = sqrt(a_t) x_0 + sqrt(1 - a_t) eps, and the UNet, cross-attending to
        the slots (B, K, D) (with ``mask_bias_grid``: the tokens of :meth:`context`), predicts
        the target of the prediction type (eps, v or x_0).
        Gradients reach the UNet and the slots, never the autoencoder
        (:func:`~slotlab.diffusion.objective.denoising_step`).
        """
        self._check_slots(slots)
        return denoising_step(self, images, slots, generator)

    def loss(self, images: Tensor, slots: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """GLASS Eq. 3, L_recon: the denoising MSE of the slot-conditioned UNet
        (:meth:`denoising`, then :func:`~slotlab.diffusion.objective.denoising_loss`)."""
        return denoising_loss(self.denoising(images, slots, generator))

    # -- sampling ------------------------------------------------------------------------------

    @torch.no_grad()
    def sample(
        self,
        slots: Tensor,
        num_steps: int = 50,
        guidance_scale: float = 1.0,
        generator: torch.Generator | None = None,
        scheduler: str = "dpmsolver++",
    ) -> Tensor:
        """Generate images (B, 3, R, R) in [0, 1] from slots (B, K, D) (or :meth:`context` tokens).

        DPM-Solver++ (multistep, 2nd order) by default, on the training noise schedule.
        ``guidance_scale`` != 1 applies classifier-free guidance with the configured
        unconditional branch (GLASS: 1.3 for FID images, 3 for composition; 0 samples the
        unconditional model). Deterministic for a given ``generator``.
        """
        self._check_slots(slots)
        return sample_images(self, slots, num_steps, guidance_scale, generator, scheduler)


def _coordinate_grid(like: Tensor) -> Tensor:
    """(1, 2, h, w) coordinates x, y running from -1 (first column/row) to 1 (last)."""
    height, width = like.shape[-2:]
    ys = torch.linspace(-1.0, 1.0, height, device=like.device, dtype=like.dtype)
    xs = torch.linspace(-1.0, 1.0, width, device=like.device, dtype=like.dtype)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([grid_x, grid_y])[None]
