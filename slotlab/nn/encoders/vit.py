"""Pretrained vision transformers (DINOv2, DINO, MAE) loaded with ``transformers`` from a local
directory only, and their tiny random twins.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from slotlab.io.hub import TRANSFORMERS_FILES, resolve_pretrained
from slotlab.nn.encoders.base import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Encoder,
    PretrainedEncoderConfig,
    last_blocks,
)
from slotlab.ops.random import fixed_randomness

VIT_ENCODER_NAMES = ("dinov2", "dino", "mae")


# Output after the final LayerNorm? Defaults follow the authors' code of the paper that
# uses each model: GLASS takes DINOv2's normed output; SPOT (and DINOSAUR's feature
# extractor) take DINO's last block output without the norm. No paper here uses MAE;
# it follows the same block-output convention as DINO.
DEFAULT_FINAL_NORM = {"dinov2": True, "dino": False, "mae": False}


@dataclass
class ViTEncoderConfig(PretrainedEncoderConfig):
    """A pretrained ViT: ``dinov2``, ``dino`` or ``mae``. ``tiny`` twins have 3 layers,
    hidden 32 and 2 heads.

    Attributes:
        final_norm: take the output after the final LayerNorm; ``None`` = the per-model
            default in ``DEFAULT_FINAL_NORM``.
        patch_size: tiny twins: patch size of the twin (default: the real model's). Loaded
            ViTs: checked against the model.
    """

    name: str = "dinov2"
    final_norm: bool | None = None
    patch_size: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.name not in VIT_ENCODER_NAMES:
            raise ValueError(f"encoder.name={self.name!r} is not a ViT: choose one of {', '.join(VIT_ENCODER_NAMES)}")


WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


@dataclass(frozen=True)
class ViTSpec:
    """What differs between the ViT encoders."""

    hub_id: str  # suggested download, named in errors only; nothing is fetched
    model_types: tuple[str, ...]  # accepted ``model_type`` values of config.json
    real_patch_size: int
    real_grid: int  # tokens per side at the pretraining resolution
    # LayerNorm epsilon of the original weights where the published config says otherwise:
    # DINO was trained with 1e-6, its transformers config.json says 1e-12.
    layer_norm_eps: float | None = None


VIT_SPECS = {
    "dinov2": ViTSpec("facebook/dinov2-base", ("dinov2", "dinov2_with_registers"), 14, 37),
    "dino": ViTSpec("facebook/dino-vitb16", ("vit",), 16, 14, layer_norm_eps=1e-6),
    "mae": ViTSpec("facebook/vit-mae-base", ("vit_mae",), 16, 14),
}


def offline_weights_hint(name: str) -> str:
    hub_id = VIT_SPECS[name].hub_id
    return (
        f"pass encoder.path={hub_id} with --allow-download on a machine that is online, or download it there "
        f"(hf download {hub_id} --local-dir DIR), copy DIR here and pass encoder.path=DIR; or set "
        f"encoder.tiny=True for a random twin"
    )


def check_pretrained_dir(name: str, path: str | None) -> Path:
    """A local Hugging Face model directory with config.json and weights, or a clear error."""
    if path is None:
        raise ValueError(f"the {name} encoder needs weights: {offline_weights_hint(name)}")
    directory = resolve_pretrained(path, "encoder.path", TRANSFORMERS_FILES)
    if not directory.is_dir():
        raise FileNotFoundError(f"encoder.path={path!r} is not a directory: {offline_weights_hint(name)}")
    if not (directory / "config.json").is_file():
        raise FileNotFoundError(f"encoder.path={path!r} has no config.json: {offline_weights_hint(name)}")
    if not any((directory / file).is_file() for file in WEIGHT_FILES):
        raise FileNotFoundError(
            f"encoder.path={path!r} has no weights (one of {', '.join(WEIGHT_FILES)}): "
            f"{offline_weights_hint(name)}"
        )
    model_type = json.loads((directory / "config.json").read_text()).get("model_type")
    if model_type not in VIT_SPECS[name].model_types:
        raise ValueError(
            f"{directory / 'config.json'}: model_type {model_type!r} is not a {name} model "
            f"(expected one of {VIT_SPECS[name].model_types}); check encoder.name and encoder.path"
        )
    return directory


def vit_blocks(model: nn.Module) -> nn.ModuleList:
    """The transformer blocks of a ``transformers`` ViT (their attribute moved across versions)."""
    for attribute in ("layers", "encoder.layer", "encoder.layers"):
        module: nn.Module | None = model
        for part in attribute.split("."):
            module = getattr(module, part, None)
        if isinstance(module, nn.ModuleList):
            return module
    raise TypeError(f"cannot find the transformer blocks of {type(model).__name__}")


class ViTEncoder(Encoder):
    """Patch tokens of a ``transformers`` ViT: CLS and register tokens dropped, raster order.

    Position embeddings are interpolated (bicubic, by ``transformers``) when
    ``image_size`` differs from the pretraining size. Inputs get ImageNet normalisation.
    """

    def __init__(self, model: nn.Module, image_size: int, final_norm: bool, trainable_blocks: int, name: str):
        config = model.config
        patch_size = config.patch_size
        if image_size % patch_size:
            raise ValueError(
                f"encoder.image_size={image_size} must be a multiple of the {name} patch size {patch_size}"
            )
        super().__init__(config.hidden_size, image_size, IMAGENET_MEAN, IMAGENET_STD)
        self.model = model.float()
        self.patch_size = patch_size
        self.final_norm = final_norm
        self.num_prefix_tokens = 1 + getattr(config, "num_register_tokens", 0)
        trainable = last_blocks(vit_blocks(model), trainable_blocks, name)
        if trainable and final_norm:
            trainable.append(model.layernorm)
        self.set_trainable(trainable)

    def grid_size(self) -> tuple[int, int]:
        side = self.image_size // self.patch_size
        return side, side

    def architecture(self) -> dict:
        return {"config": self.model.config.to_dict()}

    def model_inputs(self, pixels: Tensor) -> dict[str, Tensor | bool]:
        """Extra keyword arguments of the model's forward."""
        return {"interpolate_pos_encoding": True}

    def encode(self, pixels: Tensor) -> Tensor:
        output = self.model(
            pixel_values=pixels, output_hidden_states=not self.final_norm, **self.model_inputs(pixels)
        )
        # hidden_states[-1] is the last block's output before the final LayerNorm.
        hidden = output.last_hidden_state if self.final_norm else output.hidden_states[-1]
        return hidden[:, self.num_prefix_tokens :]


class DINOv2Encoder(ViTEncoder):
    """DINOv2: ``transformers`` always interpolates its position embeddings."""

    def model_inputs(self, pixels: Tensor) -> dict[str, Tensor | bool]:
        return {}


class MAEEncoder(ViTEncoder):
    """MAE with random masking disabled: mask ratio 0 and an increasing noise.

    ``ViTMAEModel`` shuffles tokens by ``argsort(noise)``; a strictly increasing noise
    makes that the identity, so all tokens are kept in raster order, deterministically.
    """

    def __init__(self, model: nn.Module, image_size: int, final_norm: bool, trainable_blocks: int, name: str):
        model.config.mask_ratio = 0.0
        super().__init__(model, image_size, final_norm, trainable_blocks, name)

    def model_inputs(self, pixels: Tensor) -> dict[str, Tensor | bool]:
        order = torch.arange(self.num_tokens, device=pixels.device, dtype=pixels.dtype)
        return {"interpolate_pos_encoding": True, "noise": order.expand(pixels.shape[0], -1)}


def vit_classes(name: str) -> dict[str, Callable[..., nn.Module]]:
    """``model_type`` of config.json -> ``transformers`` model class, per ViT encoder."""
    import transformers

    if name == "dinov2":
        return {"dinov2": transformers.Dinov2Model, "dinov2_with_registers": transformers.Dinov2WithRegistersModel}
    if name == "dino":
        return {"vit": transformers.ViTModel}
    return {"vit_mae": transformers.ViTMAEModel}


def tiny_vit(name: str, patch_size: int | None, seed: int) -> nn.Module:
    """A random small model of the same class (3 layers, hidden 32, 2 heads), built offline.

    Its pretraining grid equals the real model's, so position embeddings are interpolated
    exactly when they would be for the real model.
    """
    import transformers

    spec = VIT_SPECS[name]
    patch = spec.real_patch_size if patch_size is None else patch_size
    sizes = dict(
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=2,
        intermediate_size=64,
        patch_size=patch,
        image_size=spec.real_grid * patch,
    )
    if spec.layer_norm_eps is not None:
        sizes["layer_norm_eps"] = spec.layer_norm_eps
    with fixed_randomness(seed):
        if name == "dinov2":
            return transformers.Dinov2Model(transformers.Dinov2Config(**sizes)).eval()
        if name == "dino":
            return transformers.ViTModel(transformers.ViTConfig(**sizes), add_pooling_layer=False).eval()
        return transformers.ViTMAEModel(transformers.ViTMAEConfig(mask_ratio=0.0, **sizes)).eval()


def load_vit(name: str, path: str | None) -> nn.Module:
    """Load a pretrained ViT from a local directory only (``local_files_only=True``)."""
    directory = check_pretrained_dir(name, path)
    model_type = json.loads((directory / "config.json").read_text())["model_type"]
    model_class = vit_classes(name)[model_type]
    extra = {"add_pooling_layer": False} if name == "dino" else {}
    if VIT_SPECS[name].layer_norm_eps is not None:
        extra["layer_norm_eps"] = VIT_SPECS[name].layer_norm_eps
    return model_class.from_pretrained(str(directory), local_files_only=True, **extra).eval()


def vit_from_architecture(name: str, architecture: dict) -> nn.Module:
    """A ViT of the stored shape with placeholder weights (the checkpoint's weights follow)."""
    import transformers

    config = transformers.AutoConfig.for_model(**architecture["config"])
    model_class = vit_classes(name)[config.model_type]
    extra = {"add_pooling_layer": False} if name == "dino" else {}
    return model_class(config, **extra).eval()


def build_vit_encoder(config: ViTEncoderConfig, architecture: dict | None = None) -> Encoder:
    if architecture is not None:
        model = vit_from_architecture(config.name, architecture)
    elif config.tiny:
        model = tiny_vit(config.name, config.patch_size, config.seed)
    else:
        model = load_vit(config.name, config.path)
        config.check_matches_model("patch_size", model.config.patch_size)
    config.check_matches_model("dim", model.config.hidden_size)
    final_norm = DEFAULT_FINAL_NORM[config.name] if config.final_norm is None else config.final_norm
    encoder_class = {"dinov2": DINOv2Encoder, "dino": ViTEncoder, "mae": MAEEncoder}[config.name]
    return encoder_class(model, config.image_size, final_norm, config.trainable_blocks, config.name)
