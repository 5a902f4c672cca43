"""The encoder contract: images (B, 3, H, W) float in [0, 1] -> tokens (B, N, D) on a known grid,
and the config fields every encoder family shares.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from slotlab.config import ConfigFamily, check_ranges
from slotlab.ops.resize import resize_image

IMAGENET_MEAN = (0.485, 0.456, 0.406)


IMAGENET_STD = (0.229, 0.224, 0.225)


# The patch and cnn encoders map [0, 1] to [-1, 1].
SYMMETRIC_MEAN = (0.5, 0.5, 0.5)


SYMMETRIC_STD = (0.5, 0.5, 0.5)

# Defaults of the CPU encoders (patch, cnn).
CPU_DEFAULT_PATCH_SIZE = 4
CPU_DEFAULT_DIM = 64


@dataclass
class EncoderConfig(ConfigFamily):
    """The fields every encoder family shares; each family adds its own in a subclass
    (``PatchEncoderConfig``, ``CNNEncoderConfig``, ``CifarResNetEncoderConfig``,
    ``ViTEncoderConfig``), chosen by ``name`` when a config is parsed.

    Attributes:
        name: the encoder (``slotlab.nn.encoders.ENCODERS``).
        image_size: square encoder input size; inputs of another size are resized.
        trainable_blocks: 0 = frozen; ``k`` = fine-tune the last ``k`` blocks.
        dim: token dim. CPU encoders: the output width (default 64). Others: checked
            against the model.
        seed: seed of every random weight (random projections, random CNN, tiny twins).

    Fields declared with :func:`~slotlab.config.bounded` (in any family) are checked against
    their ranges on construction.
    """

    name: str = "patch"
    image_size: int = 224
    trainable_blocks: int = 0
    dim: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        check_ranges(self, "encoder.")
        if self.image_size < 1:
            raise ValueError(f"encoder.image_size={self.image_size} must be positive")
        if self.trainable_blocks < 0:
            raise ValueError(f"encoder.trainable_blocks={self.trainable_blocks} must be >= 0 (0 = frozen)")

    @classmethod
    def config_class_for(cls, data: dict) -> type[EncoderConfig]:
        """The family config class ``data["name"]`` names (config parsing picks it by this)."""
        from slotlab.nn.encoders import encoder_family

        return encoder_family(data.get("name", cls.name)).config


@dataclass
class PretrainedEncoderConfig(EncoderConfig):
    """An encoder whose network comes from weight files.

    Attributes:
        path: the weights (ViTs: a local directory in the Hugging Face layout;
            ``cifar_resnet``: the weight file). ``None`` with ``tiny=True`` builds a twin.
        tiny: build a small random-config twin of the same class, offline, for tests.
    """

    path: str | None = None
    tiny: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.tiny and self.path is not None:
            raise ValueError("encoder.tiny=True builds a random twin and takes no encoder.path: set one of them")

    def check_matches_model(self, field: str, model_value: int) -> None:
        """A size the config sets (``dim``, ``patch_size``) must be the loaded model's."""
        value = getattr(self, field)
        if value is not None and value != model_value:
            raise ValueError(
                f"encoder.{field}={value} but the {self.name} model has {field} {model_value}: "
                f"unset encoder.{field} or fix it"
            )


@dataclass
class CPUEncoderConfig(EncoderConfig):
    """An encoder that needs no weight files (patch, cnn): one token per ``patch_size`` cell
    (default 4), ``image_size`` a multiple of it."""

    patch_size: int = CPU_DEFAULT_PATCH_SIZE

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.patch_size < 1 or self.image_size % self.patch_size:
            raise ValueError(
                f"encoder.image_size={self.image_size} must be a multiple of encoder.patch_size={self.patch_size}"
            )


class Encoder(nn.Module):
    """Base of every encoder: images (B, 3, H, W) in [0, 1] -> tokens (B, h*w, dim).

    Subclasses implement ``encode`` (normalised pixels at ``image_size`` -> tokens) and
    ``grid_size``, and call ``set_trainable`` once their modules exist.
    """

    def __init__(self, dim: int, image_size: int, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.dim = dim
        self.image_size = image_size
        self.register_buffer("pixel_mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self._trainable: list[nn.Module] = []

    def grid_size(self) -> tuple[int, int]:
        """(h, w) of the token grid for the configured ``image_size``."""
        raise NotImplementedError

    def architecture(self) -> dict | None:
        """The network's shape as JSON, for encoders whose network comes from weight files.

        A checkpoint stores it next to the weights, so :func:`build_encoder` rebuilds the
        network from it without the files. ``None``: the config alone rebuilds the encoder.
        """
        return None

    @property
    def num_tokens(self) -> int:
        h, w = self.grid_size()
        return h * w

    @property
    def trainable_modules(self) -> list[nn.Module]:
        """The modules being fine-tuned (empty when frozen)."""
        return list(self._trainable)

    def encode(self, pixels: Tensor) -> Tensor:
        """Normalised pixels (B, 3, image_size, image_size) -> tokens (B, N, dim)."""
        raise NotImplementedError

    def preprocess(self, images: Tensor) -> Tensor:
        """Check, resize to ``image_size`` and normalise images in [0, 1]."""
        if images.ndim != 4 or images.shape[1] != 3 or not images.is_floating_point():
            raise ValueError(
                f"encoder input must be float images (B, 3, H, W) in [0, 1]; got "
                f"{tuple(images.shape)} {images.dtype}"
            )
        size = (self.image_size, self.image_size)
        images = resize_image(images, size)
        return (images - self.pixel_mean) / self.pixel_std

    def forward(self, images: Tensor) -> Tensor:
        tokens = self.encode(self.preprocess(images))
        expected = (images.shape[0], self.num_tokens, self.dim)
        if tuple(tokens.shape) != expected:
            raise RuntimeError(
                f"{type(self).__name__} produced tokens {tuple(tokens.shape)}, expected {expected}"
            )
        return tokens

    def set_trainable(self, modules: list[nn.Module]) -> None:
        """Freeze everything except ``modules`` and set the train/eval modes accordingly."""
        self.requires_grad_(False)
        for module in modules:
            module.requires_grad_(True)
        self._trainable = list(modules)
        self.train(self.training)

    def train(self, mode: bool = True) -> Encoder:
        """Only the trainable modules follow ``mode``; frozen parts always stay in eval."""
        super().train(False)
        for module in self._trainable:
            module.train(mode)
        self.training = mode and bool(self._trainable)
        return self


def last_blocks(blocks: nn.ModuleList | list[nn.Module], count: int, encoder: str) -> list[nn.Module]:
    """The last ``count`` of ``blocks``; a clear error when there are fewer."""
    if not 0 <= count <= len(blocks):
        raise ValueError(
            f"encoder.trainable_blocks={count} but the {encoder} encoder has {len(blocks)} "
            f"blocks: use 0 (frozen) to {len(blocks)}"
        )
    return list(blocks)[len(blocks) - count :]


class CPUEncoder(Encoder):
    """Base of the encoders of :class:`CPUEncoderConfig`: pixels mapped to [-1, 1], tokens on
    the grid of ``patch_size`` cells."""

    def __init__(self, dim: int, image_size: int, patch_size: int):
        super().__init__(dim, image_size, SYMMETRIC_MEAN, SYMMETRIC_STD)
        self.patch_size = patch_size

    def grid_size(self) -> tuple[int, int]:
        side = self.image_size // self.patch_size
        return side, side
