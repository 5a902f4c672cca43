"""The contract every method follows, plus checkpoint directories (safetensors + config).

A method is ``forward(batch) -> outputs`` (all network computation), ``losses(outputs,
batch) -> dict`` (tensor math on the outputs; key "loss" is the total weighted by
``loss_weights``) and ``masks(outputs)
-> (B, K, h, w)``. Training, evaluation, the CLI and the report rely on nothing else.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Sequence

import torch
from safetensors.torch import save_file
from torch import Tensor, nn

from slotlab.config import ConfigError, apply_overrides, from_dict, to_dict
from slotlab.data.sample import Batch
from slotlab.ops.random import fixed_randomness
from slotlab.ops.resize import resize_masks_soft
from slotlab.io.files import write_atomic
from slotlab.io.weights import load_weights

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


@contextmanager
def evaluating(model: nn.Module):
    """Inside: ``model`` in eval mode; after: back in the mode it was in."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


@dataclass
class Decomposition:
    """What ``model.decompose(images)`` gives: slots and one mask per slot at image size."""

    slots: Tensor  # (B, K, D)
    masks: Tensor  # (B, K, H, W) soft masks, sum to 1 over K
    segmentation: Tensor  # (B, H, W) argmax slot index per pixel
    features: Tensor | None = None  # (B, D, h, w) the encoder tokens the slots group; None without


def load_trained(cls: type["ObjectCentricModel"], directory: str | Path, option: str, hint: str) -> "ObjectCentricModel":
    """A checkpoint directory that must hold a ``cls`` model (e.g. the segmenter an encoder
    reads); errors name ``option`` (the setting that gave the directory) and end with ``hint``
    (how to train one)."""
    if not Path(directory, CONFIG_FILE).is_file():
        raise FileNotFoundError(f"{option}={str(directory)!r} is not a {cls.method} checkpoint directory: {hint}")
    model = ObjectCentricModel.from_pretrained(directory)
    if not isinstance(model, cls):
        raise ValueError(f"{option}={str(directory)!r} holds a {model.method!r} model, not a {cls.method} model: {hint}")
    return model


class ObjectCentricModel(nn.Module):
    """Base class: subclasses set ``method`` and ``config_class`` and implement the contract."""

    method: ClassVar[str]
    config_class: ClassVar[type]
    slot_model: ClassVar[bool] = True  # False: a stage that trains no slots (a VQ-VAE), nothing to evaluate as masks

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

    # ---- the contract -------------------------------------------------------------
    def forward(self, batch: Batch | Tensor, num_slots: int | None = None) -> Any:
        raise NotImplementedError

    def losses(self, outputs: Any, batch: Batch) -> dict[str, Tensor]:
        raise NotImplementedError

    def masks(self, outputs: Any) -> Tensor:
        raise NotImplementedError

    def slots(self, outputs: Any) -> Tensor:
        return outputs.slots

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Named groups of trainable parameters; a training stage gives each its learning rate."""
        raise NotImplementedError

    def on_step(self, step: int, total_steps: int) -> None:
        """Called by the training loop before each step (global ``step`` of ``total_steps``):
        where schedules that are not learning rates advance (annealed slot sigma, Gumbel
        scale, annealed residual). Default: nothing."""

    # ---- user API -----------------------------------------------------------------
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
        tokens = getattr(outputs, "features", None)
        features = self.token_map(tokens) if tokens is not None and hasattr(self, "grid") else None
        return Decomposition(slots=self.slots(outputs), masks=masks, segmentation=masks.argmax(1), features=features)

    @torch.no_grad()
    def feature_map(self, images: Tensor) -> Tensor:
        """The frozen encoder's tokens of images (B, 3, H, W) in [0, 1] as a map (B, D, h, w):
        what the slot attention groups (methods with an ``encoder`` and its token ``grid``)."""
        if not (hasattr(self, "encoder") and hasattr(self, "grid")):
            raise NotImplementedError(f"{type(self).__name__} has no encoder tokens on a grid to return")
        with evaluating(self):
            return self.token_map(self.encoder(images.to(self.device)))

    def token_map(self, tokens: Tensor) -> Tensor:
        """Encoder tokens (B, N, D) -> a map (B, D, h, w) over the token ``grid``."""
        return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], *self.grid)

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
            architecture = getattr(module, "architecture", None)
            record = architecture() if callable(architecture) else None
            if record is not None:
                records[name] = record
        return records

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write config.json + model.safetensors into ``directory`` (atomically per file)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = {"method": self.method, "config": to_dict(self.config), "architectures": self.architectures()}
        write_atomic(directory / CONFIG_FILE, json.dumps(config, indent=2))
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        tmp = directory / (WEIGHTS_FILE + ".tmp")
        save_file(state, str(tmp))
        tmp.replace(directory / WEIGHTS_FILE)
        return directory

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, map_location: str = "cpu", overrides: Sequence[str] = ()
    ) -> "ObjectCentricModel":
        """Load a directory written by ``save_pretrained`` (never unpickles anything).

        Parts read from weight files at training time (a DINOv2 or Stable Diffusion
        directory...) are rebuilt from the architectures stored in ``config.json`` (see
        :meth:`architectures`), so those files are not needed. ``overrides`` ('key.path=value',
        as ``slotlab train --set`` but relative to the model config) change the stored config
        before the model is built: e.g. ``slot_attention.iters=5`` to evaluate with more
        iterations, or ``encoder.path=DIR`` for a checkpoint without stored architectures
        whose encoder directory moved. Changes that alter the weights' shapes fail with the
        mismatch named.
        """
        from slotlab.methods import get_method

        directory = Path(directory)
        config_path, weights_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
        for path in (config_path, weights_path):
            if not path.is_file():
                raise FileNotFoundError(
                    f"{path} is missing: {directory} is not a slotlab checkpoint "
                    f"(expected {CONFIG_FILE} and {WEIGHTS_FILE} written by save_pretrained)"
                )
        try:
            meta = json.loads(config_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ConfigError(f"{config_path} is not valid JSON ({err}); the checkpoint is damaged") from err
        missing = [key for key in ("method", "config") if not isinstance(meta, dict) or key not in meta]
        if missing:
            raise ConfigError(f"{config_path} has no {' or '.join(map(repr, missing))} entry: it is not a model config "
                              "written by save_pretrained")
        method, raw = meta["method"], meta["config"]
        if not isinstance(raw, dict):
            raise ConfigError(f"{config_path}: 'config' must be a mapping of the model's settings, got {raw!r}")
        raw = apply_overrides(raw, list(overrides))
        try:
            model_cls = get_method(method)
        except ValueError as err:
            raise ConfigError(f"{config_path}: 'method' names no method of this slotlab: {err}") from err
        if cls is not ObjectCentricModel and not issubclass(model_cls, cls):
            raise ConfigError(f"{directory} holds a {method!r} model, not a {cls.method!r} model")
        try:
            model = model_cls(from_dict(model_cls.config_class, raw, f"{config_path}:config"), meta.get("architectures"))
        except FileNotFoundError as err:  # a checkpoint without architectures names a missing directory
            raise FileNotFoundError(
                f"{err}\nThe checkpoint {directory} names that location in its config.json. If the files are "
                "elsewhere on this machine, point to them: from_pretrained(..., overrides=['encoder.path=DIR']) "
                "or --set encoder.path=DIR (diffusion_decoder.pretrained_path / taesd_path likewise)."
            ) from err
        state = load_weights(weights_path, map_location)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as err:
            raise ConfigError(f"{weights_path} does not fit the {method!r} config in {config_path}: {err}") from err
        return model.to(map_location).eval()
