"""MSF (Genera1Z/MultiScaleFusion) key names -> slotlab's quantisers and VQ-VAE.

The authors' ``VQVAEZMultiScale`` holds ``encode.*``, ``decode.*`` (their Sequentials),
``quant.0.*`` (the shared codebook) and ``quant.{1+n}.*`` (the codebook of scale n), each a
``QuantiZ`` with a frozen ``codebook.weight`` and a trained ``project`` Linear; ``LinearPinv``
holds ``weight`` and ``bias``. Keys that cannot be placed are returned as unused.
"""

from __future__ import annotations

from torch import Tensor

from slotlab.io.importers.spot import map_keys

# QuantiZ -> VectorQuantizer(codebook="projected"): the same names.
QUANTIZER_RENAMES = ((r"^(codebook\.weight|project\.(weight|bias))$", r"\1"),)
# VQVAEZMultiScale -> VQVAE with a "code"-variant MultiScaleQuantizer.
VQVAE_RENAMES = (
    (r"^encode\.", "encoder."),
    (r"^decode\.", "decoder."),
    (r"^quant\.0\.", "quantizer.shared."),
)


def vqvae_multiscale_state(state: dict[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    """The authors' multi-scale VQ-VAE state dict -> :class:`slotlab.nn.quantize.vqvae.VQVAE`
    with ``msf.variant='code'`` (returns mapped, unused). Their encoder and decoder
    Sequentials keep their indices, so the slotlab model must be built with the same layers."""
    specific = [(rf"^quant\.{n + 1}\.", f"quantizer.specific.{n}.") for n in range(len(state))]
    return map_keys(state, VQVAE_RENAMES + tuple(specific))
