"""What the rest of slotlab may ask of a method, as typing protocols.

Two roles, kept apart:

- :class:`Trainable`: what the trainer needs. ``forward(batch)`` does all network
  computation; ``losses(outputs, batch)`` is tensor maths on those outputs that reads the
  paper's total-loss equation top to bottom (key "loss" holds the total); parameter groups
  get a learning rate each per stage; ``on_step`` advances schedules that are not learning
  rates. Every method is one (``methods.base.Method``).
- :class:`SlotModel`: what evaluation, the CLI and the report read: slots and one mask per
  slot (``decompose``). DINOSAUR, GLASS, SPOT, SLATE and SlotDiffusion are; the VQ-VAE
  stage and the supervised segmenter are not. :class:`MaskModel` is the part evaluation
  scores: one soft mask per group (the self-distillation run's prototype assignments are
  such groups without slots).

Optional capabilities are named protocols too, tested with ``isinstance`` where they are
used, never by probing attributes: :class:`EncoderGrid` (tokens of an encoder on a known
grid), :class:`DiffusionGenerator` (a diffusion decoder that draws images from slots),
:class:`StoredArchitecture` (a part whose shape a checkpoint stores).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from torch import Tensor, nn

from slotlab.data.sample import Batch

if TYPE_CHECKING:
    from slotlab.diffusion.decoder import SlotDiffusionDecoder
    from slotlab.methods.base import Method
    from slotlab.nn.encoders import Encoder


@dataclass
class Decomposition:
    """What ``model.decompose(images)`` gives: slots and one mask per slot at image size."""

    slots: Tensor  # (B, K, D)
    masks: Tensor  # (B, K, H, W) soft masks, sum to 1 over K
    segmentation: Tensor  # (B, H, W) argmax slot index per pixel
    features: Tensor | None = None  # (B, D, h, w) the encoder tokens the slots group; None without


@runtime_checkable
class Trainable(Protocol):
    """What the training loop calls, in this order at every step: ``on_step``, ``forward``,
    ``losses``; ``parameter_groups`` and ``set_loss_weights`` at the start of each stage."""

    def forward(self, batch: Batch | Tensor) -> Any: ...

    def losses(self, outputs: Any, batch: Batch) -> dict[str, Tensor]: ...

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]: ...

    def set_loss_weights(self, overrides: dict[str, float]) -> None: ...

    def on_step(self, step: int, total_steps: int) -> None: ...


@runtime_checkable
class MaskModel(Protocol):
    """A model whose outputs group the image: one soft mask per group, what evaluation scores."""

    def forward(self, batch: Batch | Tensor) -> Any: ...

    def masks(self, outputs: Any) -> Tensor: ...


@runtime_checkable
class SlotModel(MaskModel, Protocol):
    """An object-centric model: slots, one mask per slot, and their decomposition of images."""

    def slots(self, outputs: Any) -> Tensor: ...

    def decompose(self, images: Tensor, num_slots: int | None = None, seed: int | None = None) -> Decomposition: ...


@runtime_checkable
class EncoderGrid(Protocol):
    """A model whose slots group the tokens (B, N, D) of ``encoder`` laid on ``grid`` (h, w)."""

    encoder: Encoder
    grid: tuple[int, int]


@runtime_checkable
class DiffusionGenerator(Protocol):
    """A slot model with a slot-conditioned diffusion decoder that draws images from slots
    (GLASS; None in a configuration without one)."""

    diffusion_decoder: SlotDiffusionDecoder | None


@runtime_checkable
class StoredArchitecture(Protocol):
    """A part built from weight files (a DINOv2 or Stable Diffusion directory...) whose shape
    a checkpoint stores, so it rebuilds without those files (None: nothing to store)."""

    def architecture(self) -> dict | None: ...


def generative_decoder(model: Method) -> SlotDiffusionDecoder:
    """The diffusion decoder that draws ``model``'s images, or a clear error without one."""
    decoder = model.diffusion_decoder if isinstance(model, DiffusionGenerator) else None
    if decoder is None:
        raise ValueError(f"a {model.method!r} model without a diffusion decoder cannot generate images")
    return decoder


def can_generate(model: Method) -> bool:
    """Whether ``model`` draws images from slots (see :func:`generative_decoder`)."""
    return isinstance(model, DiffusionGenerator) and model.diffusion_decoder is not None
