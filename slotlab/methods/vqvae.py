"""VQ-VAE pretraining (MSF A.3, first stage): a single-scale or MSF VQ-VAE trained alone, then
read frozen by SLATE and SlotDiffusion (their ``vqvae`` setting names the saved directory)."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch.nn.functional as F
from torch import Tensor, nn

from slotlab.config import ConfigError, from_dict
from slotlab.data.sample import Batch
from slotlab.io.checkpoints import is_model_dir
from slotlab.io.layout import MODEL_CONFIG_FILE
from slotlab.methods.base import Method, ObjectCentricModel
from slotlab.nn.quantize.vq import vq_losses
from slotlab.nn.quantize.vqvae import VQVAE, VQVAEConfig, VQVAEOutput
from slotlab.ops.schedules import cosine_ramp


class VQVAEPretraining(Method):
    """Trains a :class:`VQVAE` with its reconstruction and quantisation losses; no slots."""

    method = "vqvae"
    config_class = VQVAEConfig

    def __init__(self, config: VQVAEConfig, architectures: Mapping[str, dict] | None = None):
        super().__init__(config)
        self.vqvae = VQVAE(config)

    def forward(self, batch: Batch | Tensor, num_slots: int | None = None) -> VQVAEOutput:
        images = batch.image if isinstance(batch, Batch) else batch
        return self.vqvae(images)

    def losses(self, outputs: VQVAEOutput, batch: Batch) -> dict[str, Tensor]:
        """MSF Sec. 3.2: N sets of reconstruction and quantisation losses, one per scale,
        summed: the reconstruction MSE to the pyramid level T_n, VQ-VAE's codebook and
        commitment losses (``vq_losses``, commitment weighted by ``commitment_weight``) and,
        with ``encoding_norm_weight``, the public code's pull of the encodings towards their
        group-normalised values."""
        c = self.config
        recon = codebook = commitment = norm = 0.0
        for target, scale, rec in zip(outputs.pyramid, outputs.scales, outputs.reconstructions):
            if rec.shape[-2:] != target.shape[-2:]:
                target = F.interpolate(target, size=rec.shape[-2:], mode="bilinear")
            recon = recon + F.mse_loss(rec, target)
            for encoding, codes, residual in scale.parts:
                book, commit = vq_losses(encoding, codes, residual)
                codebook, commitment = codebook + book, commitment + commit
            if c.encoding_norm_weight:
                norm = norm + F.mse_loss(scale.encoding, F.group_norm(scale.encoding.detach(), 1))
        total = recon + codebook + c.commitment_weight * commitment + c.encoding_norm_weight * norm
        terms = {"loss": total, "reconstruction": recon, "codebook": codebook, "commitment": commitment}
        if c.encoding_norm_weight:
            terms["encoding_norm"] = norm
        return terms

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        # The projected codebook's random codes are frozen: they stay out of every group.
        return {"vqvae": [p for p in self.vqvae.parameters() if p.requires_grad]}

    def on_step(self, step: int, total_steps: int) -> None:
        self.vqvae.set_schedules(step / max(1, total_steps))


def load_frozen_vqvae(path: str | None, architecture: Mapping | None, setting: str = "vqvae") -> VQVAE:
    """The VQ-VAE a guided method reads, frozen and in eval mode: rebuilt from the stored
    ``architecture`` when the method's own checkpoint is loaded, else from the directory
    ``path`` written by ``slotlab train --preset vqvae-...``."""
    if architecture is not None:
        return freeze(VQVAE(from_dict(VQVAEConfig, dict(architecture), f"{setting} architecture")))
    if not path:
        raise ConfigError(f"{setting} is not set: train a VQ-VAE first (slotlab train --preset vqvae-...) "
                          f"and set {setting} to its model directory")
    directory = Path(path)
    if not is_model_dir(directory):
        raise ConfigError(f"{setting}={path}: no VQ-VAE checkpoint there ({MODEL_CONFIG_FILE} missing); train one with "
                          f"slotlab train --preset vqvae-... --out DIR and set {setting}=DIR/model")
    model = Method.from_pretrained(directory)
    if not isinstance(model, VQVAEPretraining):
        raise ConfigError(f"{setting}={path} holds a {model.method!r} model, not a VQ-VAE (method 'vqvae')")
    return freeze(model.vqvae)


def freeze(vqvae: VQVAE) -> VQVAE:
    for p in vqvae.parameters():
        p.requires_grad_(False)
    return vqvae.eval()


class GuidedByVQVAE(ObjectCentricModel):
    """Shared by SLATE and SlotDiffusion: a frozen VQ-VAE, the annealed slot sigma.

    Subclasses hold ``vqvae`` and ``slot_attention``; ``target_gumbel_scale`` > 0 keeps the
    VQ-VAE sampling its codes in training (the public MSF code's SLATE).
    """

    target_gumbel_scale: float = 0.0

    def attach_vqvae(self, architectures: Mapping[str, dict] | None) -> VQVAE:
        vqvae = load_frozen_vqvae(self.config.vqvae, (architectures or {}).get("vqvae"), "model.vqvae")
        for quantizer in vqvae.vector_quantizers():
            quantizer.dead_threshold = 0.0  # the guidance never changes
            quantizer.gumbel_scale.fill_(self.target_gumbel_scale)
        return vqvae

    def train(self, mode: bool = True):
        super().train(mode)
        # Frozen guidance: eval mode, unless its targets are Gumbel-sampled (public code).
        self.vqvae.train(mode and self.target_gumbel_scale > 0)
        return self

    def on_step(self, step: int, total_steps: int) -> None:
        """Slot initialisation sigma: cosine from sigma_start to 0 over training (MSF A.3)."""
        sa = self.config.slot_attention
        if sa.init == "annealed_gaussian":
            self.slot_attention.initializer.set_sigma(cosine_ramp(sa.sigma_start, 0.0, step / max(1, total_steps)))
