"""The base classes of the methods (the contract itself: ``slotlab.methods.contract``).

:class:`Method` is what every method is: a :class:`~slotlab.methods.contract.Trainable`
(forward, losses, parameter groups, the per-step hook, loss weights per stage) that saves to
and loads from a model directory (safetensors + config.json). :class:`ObjectCentricModel`
adds what a :class:`~slotlab.methods.contract.SlotModel` offers: masks, slots and
``decompose``. A method with slots subclasses :class:`ObjectCentricModel`; a stage without
slots (the VQ-VAE, the supervised segmenter, the self-distilled encoder) subclasses
:class:`Method`.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, Sequence

import torch
from torch import Tensor, nn

from slotlab.config import ConfigError, apply_overrides, from_dict, to_dict
from slotlab.data.sample import Batch
from slotlab.io.checkpoints import is_model_dir, read_model_record, write_model_dir
from slotlab.io.layout import MODEL_CONFIG_FILE
from slotlab.io.weights import load_weights
from slotlab.methods.contract import Decomposition, EncoderGrid, StoredArchitecture
from slotlab.ops.random import fixed_randomness
from slotlab.ops.resize import resize_masks_soft


@contextmanager
def evaluating(model: nn.Module):
    """Inside: ``model`` in eval mode; after: back in the mode it was in."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def load_trained(cls: type[Method], directory: str | Path, option: str, hint: str) -> Method:
    """A checkpoint directory that must hold a ``cls`` model (e.g. the segmenter an encoder
    reads); errors name ``option`` (the setting that gave the directory) and end with ``hint``
    (how to train one)."""
    if not is_model_dir(directory):
        raise FileNotFoundError(f"{option}={str(directory)!r} is not a {cls.method} checkpoint directory: {hint}")
    model = Method.from_pretrained(directory)
    if not isinstance(model, cls):
        raise ValueError(f"{option}={str(directory)!r} holds a {model.method!r} model, not a {cls.method} model: {hint}")
    return model


class Method(nn.Module):
    """What every method is: trainable (:class:`~slotlab.methods.contract.Trainable`) and
    saved as a model directory. Subclasses set ``method`` (the registry name) and
    ``config_class`` (the dataclass a preset's ``model:`` section is parsed into)."""

    method: ClassVar[str]
    config_class: ClassVar[type]

    def __init__(self, config: Any):
        """Subclasses take ``(config, architectures=None)``: ``architectures`` are the stored
        shapes of the parts built from weight files, by attribute name (see
        :meth:`architectures`); those parts are then built in that shape instead of being read
        from the files the config names."""
        super().__init__()
        self.config = config
        self.loss_weights = self.default_loss_weights()

    def default_loss_weights(self) -> dict[str, float]:
        """Weight of each loss term, from the config (a weight of 0 skips the term)."""
        return {}

    def set_loss_weights(self, overrides: dict[str, float]) -> None:
        """Weights for the current training stage: the config's, with ``overrides`` applied."""
        defaults = self.default_loss_weights()
        unknown = set(overrides) - set(defaults)
        if unknown:
            raise ConfigError(
                f"loss_weights names unknown term(s) {sorted(unknown)}; {self.method} has {sorted(defaults) or 'none'}"
            )
        self.loss_weights = defaults | dict(overrides)

    # ---- what training needs ----------------------------------------------------------
    def forward(self, batch: Batch | Tensor, num_slots: int | None = None) -> Any:
        """All network computation of one batch (images (B, 3, H, W) in [0, 1] or a Batch)."""
        raise NotImplementedError

    def losses(self, outputs: Any, batch: Batch) -> dict[str, Tensor]:
        """The paper's total loss on ``outputs`` (key "loss", weighted by ``loss_weights``)
        and each of its terms."""
        raise NotImplementedError

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Named groups of trainable parameters; a training stage gives each its learning rate."""
        raise NotImplementedError

    def on_step(self, step: int, total_steps: int) -> None:
        """Called by the training loop before each step (global ``step`` of ``total_steps``):
        where schedules that are not learning rates advance (annealed slot sigma, Gumbel
        scale, the teacher's moving average). Default: nothing."""

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # ---- checkpoints --------------------------------------------------------------
    def architectures(self) -> dict[str, dict]:
        """The shapes of parts built from weight files (a DINOv2 directory, Stable Diffusion's
        UNet and VAE...), by attribute name, from each part's ``architecture()``.

        ``save_pretrained`` stores them, so ``from_pretrained`` rebuilds every part without
        the original files: the checkpoint's weights are all it needs.
        """
        records = {}
        for name, module in self.named_children():
            record = module.architecture() if isinstance(module, StoredArchitecture) else None
            if record is not None:
                records[name] = record
        return records

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write the model directory (config + weights, ``slotlab.io.layout``) into ``directory``."""
        record = {"method": self.method, "config": to_dict(self.config), "architectures": self.architectures()}
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        return write_model_dir(directory, record, state)

    @classmethod
    def from_pretrained(cls, directory: str | Path, map_location: str = "cpu", overrides: Sequence[str] = ()) -> Method:
        """Load a directory written by ``save_pretrained`` (never unpickles anything).

        Parts read from weight files at training time (a DINOv2 or Stable Diffusion
        directory...) are rebuilt from the architectures stored in the config file (see
        :meth:`architectures`), so those files are not needed. ``overrides`` ('key.path=value',
        as ``slotlab train --set`` but relative to the model config) change the stored config
        before the model is built: e.g. ``slot_attention.iters=5`` to evaluate with more
        iterations, or ``encoder.path=DIR`` for a checkpoint without stored architectures
        whose encoder directory moved. Changes that alter the weights' shapes fail with the
        mismatch named. Called on a subclass, it refuses a directory of another kind of model.
        """
        from slotlab.methods import get_method

        directory = Path(directory)
        record, weights_path = read_model_record(directory)
        config_path = directory / MODEL_CONFIG_FILE
        method, raw = record["method"], apply_overrides(record["config"], list(overrides))
        try:
            model_cls = get_method(method)
        except ValueError as err:
            raise ConfigError(f"{config_path}: 'method' names no method of this slotlab: {err}") from err
        if not issubclass(model_cls, cls):
            wanted = "slot" if cls is ObjectCentricModel else repr(cls.method)
            raise ConfigError(f"{directory} holds a {method!r} model, not a {wanted} model")
        try:
            model = model_cls(from_dict(model_cls.config_class, raw, f"{config_path}:config"), record.get("architectures"))
        except FileNotFoundError as err:  # a checkpoint without architectures names a missing directory
            raise FileNotFoundError(
                f"{err}\nThe checkpoint {directory} names that location in its {MODEL_CONFIG_FILE}. If the files are "
                "elsewhere on this machine, point to them: from_pretrained(..., overrides=['encoder.path=DIR']) "
                "or --set encoder.path=DIR (diffusion_decoder.pretrained_path / taesd_path likewise)."
            ) from err
        state = load_weights(weights_path, map_location)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as err:
            raise ConfigError(f"{weights_path} does not fit the {method!r} config in {config_path}: {err}") from err
        return model.to(map_location).eval()


class ObjectCentricModel(Method):
    """A method with slots (:class:`~slotlab.methods.contract.SlotModel`): subclasses add
    ``masks(outputs)``; ``decompose`` and ``feature_map`` follow from the contract."""

    def masks(self, outputs: Any) -> Tensor:
        """One soft mask per slot (B, K, h, w) from ``forward``'s outputs."""
        raise NotImplementedError

    def slots(self, outputs: Any) -> Tensor:
        return outputs.slots

    def encoder_tokens(self, outputs: Any) -> Tensor | None:
        """The encoder tokens (B, N, D) the slots grouped, where the outputs carry them."""
        return None

    @torch.no_grad()
    def decompose(self, images: Tensor, num_slots: int | None = None, seed: int | None = None) -> Decomposition:
        """Slots and per-slot masks for a batch of images (B, 3, H, W) in [0, 1].

        The slot initialisation draws noise: ``seed`` fixes it (leaving the caller's random
        stream untouched); ``None`` draws from the global stream.
        """
        if images.ndim == 3:
            images = images.unsqueeze(0)
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"decompose() expects images (B, 3, H, W) in [0, 1], got {tuple(images.shape)}")
        with evaluating(self), fixed_randomness(seed, self.device):
            outputs = self(images.to(self.device), num_slots=num_slots)
        masks = resize_masks_soft(self.masks(outputs), tuple(images.shape[-2:]))
        tokens = self.encoder_tokens(outputs)
        features = self.token_map(tokens) if tokens is not None else None
        return Decomposition(slots=self.slots(outputs), masks=masks, segmentation=masks.argmax(1), features=features)

    @torch.no_grad()
    def feature_map(self, images: Tensor) -> Tensor:
        """The frozen encoder's tokens of images (B, 3, H, W) in [0, 1] as a map (B, D, h, w):
        what the slot attention groups (methods with encoder tokens on a grid)."""
        if not isinstance(self, EncoderGrid):
            raise NotImplementedError(f"{type(self).__name__} has no encoder tokens on a grid to return")
        with evaluating(self):
            return self.token_map(self.encoder(images.to(self.device)))

    def token_map(self, tokens: Tensor) -> Tensor:
        """Encoder tokens (B, N, D) -> a map (B, D, h, w) over the token ``grid``."""
        return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], *self.grid)
